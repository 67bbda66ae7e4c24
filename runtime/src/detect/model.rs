//! A detector: the ONNX model loaded and optimised by tract once, its preprocessing and decoder.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::plan::SimpleState;
use tract_onnx::tract_hir::infer::Factoid;

use super::decode::{DecodeError, Decoder, decoder_for, recognise};
use super::extras::{Extras, Target};
use super::labels::Labels;
use super::{Detections, Family, Output, OutputInfo};
use crate::config::DetectorConfig;
use crate::imgproc::Image;
use crate::imgproc::geometry::{Letterbox, Preprocess};

/// Why a detector could not load or run.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// tract could not read or optimise the model: the file is truncated, not ONNX, or uses
    /// operators tract does not implement. Re-export it (opset 11–17, static shapes help).
    #[error("{path}: cannot load model: {reason}")]
    Load { path: PathBuf, reason: String },
    /// The model's input is not an image tensor [1,3,H,W], or its size is not fixed and
    /// `input_size` is not set in the config.
    #[error("{path}: input {found}, expected {expected}")]
    Input {
        path: PathBuf,
        found: String,
        expected: String,
    },
    /// The outputs do not fit the configured family, or no family could be recognised from
    /// them: set `family` in the config, or check the model is the one intended.
    #[error("{path}: {source}")]
    Decode { path: PathBuf, source: DecodeError },
    /// The family could not be recognised from the output shapes: set `family` in the config.
    #[error("{path}: cannot tell the model family: {reason}; set `family` in the config")]
    Unrecognised { path: PathBuf, reason: String },
    #[error(transparent)]
    Labels(#[from] super::labels::LabelsError),
    /// tract failed while running a frame.
    #[error("{name}: inference failed: {reason}")]
    Run { name: String, reason: String },
}

/// Stage times of one detection, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DetectTimes {
    pub preprocess_us: u64,
    pub inference_us: u64,
    pub postprocess_us: u64,
}

/// What `ocelli inspect` prints about a model.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    pub input_name: String,
    pub input_shape: Vec<usize>,
    pub outputs: Vec<OutputInfo>,
    pub family: Result<(Family, String), String>,
    /// Bytes of every tensor of the optimised model (weights and each node's output): what
    /// its plan can hold at once, an upper bound as tract frees outputs once consumed.
    pub tensor_bytes: u64,
}

/// A loaded, optimised model ready to run frames.
pub struct Detector {
    pub name: String,
    /// The model file, its sha256 and its card if one sits beside it: what the stream's
    /// `models` line names.
    pub model: crate::emit::RunningModel,
    pub family: Family,
    pub labels: Labels,
    preprocess: Preprocess,
    state: TypedSimpleState,
    decoder: Box<dyn Decoder>,
    outputs: Vec<OutputInfo>,
    extras: Extras,
}

/// Most model outputs a detector reads (YuNet has 12): their views live on the stack.
pub const MAX_OUTPUTS: usize = 16;

type TypedSimpleState = SimpleState<TypedFact, Box<dyn TypedOp>>;

impl Detector {
    /// Loads `cfg.model` (resolved with `resolve`), fixes its input shape, optimises it and
    /// checks its outputs fit the family.
    pub fn load(
        cfg: &DetectorConfig,
        resolve: impl Fn(&Path) -> PathBuf,
    ) -> Result<Self, DetectError> {
        let path = resolve(&cfg.model);
        let labels = Labels::named(&cfg.labels, &resolve)?;
        let bytes = read_model(&path)?;
        let (plan, info) = load_plan_from_bytes(&path, &bytes, cfg.input_size)?;
        let family =
            match cfg.family {
                Some(f) => f,
                None => info.family.clone().map(|(f, _)| f).map_err(|reason| {
                    DetectError::Unrecognised {
                        path: path.clone(),
                        reason,
                    }
                })?,
            };
        let input_wh = (info.input_shape[3], info.input_shape[2]);
        let decoder = decoder_for(family, &cfg.decode, input_wh, &info.outputs, &labels).map_err(
            |source| DetectError::Decode {
                path: path.clone(),
                source,
            },
        )?;
        let name = model_name(cfg.name.as_deref(), &path);
        let state = SimpleState::new(&plan).map_err(|e| load_err(&path, e))?;
        let preprocess = cfg.preprocess.plan(input_wh.0, input_wh.1);
        let model = running_model(&name, &path, &bytes);
        Ok(Self {
            name,
            model,
            family,
            labels,
            preprocess,
            state,
            decoder,
            outputs: info.outputs,
            extras: match cfg.decode.mask_polygons {
                true => Extras::with_polygons(cfg.decode.polygon_tolerance),
                false => Extras::new(),
            },
        })
    }

    /// The masks and keypoints of the detections the last frame gave, in source-image
    /// pixels: entry `i` belongs to detection `i`.
    pub fn extras(&self) -> &Extras {
        &self.extras
    }

    /// The model input's width and height.
    pub fn input_size(&self) -> (usize, usize) {
        (self.preprocess.width, self.preprocess.height)
    }

    /// Runs one RGB frame; `out` receives detections in source-image pixels, and
    /// [`extras`](Self::extras) their masks and keypoints.
    pub fn detect(
        &mut self,
        rgb: &Image,
        out: &mut Detections,
    ) -> Result<DetectTimes, DetectError> {
        let t0 = Instant::now();
        let fitted = self.preprocess(rgb)?;
        let t1 = Instant::now();
        let inferred = self.infer(fitted)?;
        let t2 = Instant::now();
        self.postprocess(&inferred, out)?;
        let t3 = Instant::now();
        Ok(DetectTimes {
            preprocess_us: (t1 - t0).as_micros() as u64,
            inference_us: (t2 - t1).as_micros() as u64,
            postprocess_us: (t3 - t2).as_micros() as u64,
        })
    }

    fn run_err(&self, e: anyhow::Error) -> DetectError {
        DetectError::Run {
            name: self.name.clone(),
            reason: format!("{e:#}"),
        }
    }

    /// Fits the frame into the model's input tensor.
    pub fn preprocess(&self, rgb: &Image) -> Result<Fitted, DetectError> {
        let (w, h) = self.input_size();
        let mut input = Tensor::zero::<f32>(&[1, 3, h, w]).map_err(|e| self.run_err(e))?;
        let letterbox = {
            let mut view = input.try_as_plain_ram_mut().map_err(|e| self.run_err(e))?;
            let slice = view.as_slice_mut::<f32>().map_err(|e| self.run_err(e))?;
            self.preprocess
                .run(rgb, slice)
                .map_err(|e| self.run_err(e.into()))?
        };
        Ok(Fitted {
            input,
            letterbox,
            source_wh: (rgb.width, rgb.height),
        })
    }

    /// Runs the model on a fitted frame.
    pub fn infer(&mut self, fitted: Fitted) -> Result<Inferred, DetectError> {
        let outputs = self
            .state
            .run(tvec!(fitted.input.into_tvalue()))
            .map_err(|e| self.run_err(e))?;
        // The decoders' exponentials are glibc's.
        crate::kernels::clean_upper_state();
        Ok(Inferred {
            outputs,
            letterbox: fitted.letterbox,
            source_wh: fitted.source_wh,
        })
    }

    /// Decodes the outputs into `out` and [`extras`](Self::extras), in source-image pixels.
    /// Allocates nothing once the buffers have grown to the frames' needs.
    pub fn postprocess(
        &mut self,
        inferred: &Inferred,
        out: &mut Detections,
    ) -> Result<(), DetectError> {
        let views: heapless::Vec<Output, MAX_OUTPUTS> = inferred
            .outputs
            .iter()
            .zip(&self.outputs)
            .map(|(t, info)| {
                Ok(Output {
                    name: &info.name,
                    shape: t.shape(),
                    data: t.try_as_plain_ram()?.as_slice::<f32>()?,
                })
            })
            .collect::<TractResult<_>>()
            .map_err(|e| self.run_err(e))?;
        out.clear();
        let run_err = |e: DecodeError| DetectError::Run {
            name: self.name.clone(),
            reason: e.to_string(),
        };
        self.decoder.decode(&views, out).map_err(run_err)?;
        let (sw, sh) = inferred.source_wh;
        let target = Target {
            letterbox: inferred.letterbox,
            width: sw,
            height: sh,
        };
        for d in out.iter_mut() {
            d.bbox = inferred.letterbox.box_to_source(&d.bbox, sw, sh);
            for p in d.landmarks.iter_mut().flatten() {
                let (x, y) = target.point(p[0], p[1]);
                *p = [x, y];
            }
        }
        self.decoder
            .extras(&views, &target, out, &mut self.extras)
            .map_err(run_err)
    }
}

/// A frame fitted into a model's input tensor, and how to map back to the frame.
pub struct Fitted {
    input: Tensor,
    letterbox: Letterbox,
    source_wh: (usize, usize),
}

/// A model's raw outputs for one frame.
pub struct Inferred {
    outputs: TVec<TValue>,
    letterbox: Letterbox,
    source_wh: (usize, usize),
}

/// A model's name for logs and the stream: the configured one, or its file stem.
pub(crate) fn model_name(configured: Option<&str>, path: &Path) -> String {
    configured.map(str::to_owned).unwrap_or_else(|| {
        path.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    })
}

/// What the stream's `models` line says of the model `name` runs: its file, the sha256 of
/// its `bytes` and its card, when one sits beside it.
pub(crate) fn running_model(name: &str, path: &Path, bytes: &[u8]) -> crate::emit::RunningModel {
    let card = crate::model::card::Card::path_for(path);
    crate::emit::RunningModel {
        detector: name.into(),
        model: path.display().to_string(),
        sha256: crate::model::card::sha256_hex(bytes),
        card: card.exists().then(|| card.display().to_string()),
    }
}

pub(crate) fn load_err(path: &Path, e: anyhow::Error) -> DetectError {
    // tract's error chains are long; the outermost two causes say what went wrong.
    let reason = e
        .chain()
        .take(2)
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ");
    DetectError::Load {
        path: path.into(),
        reason,
    }
}

/// Types and optimises a model whose image input is fixed to `w × h`: its `sizes` inputs
/// (from [`size_inputs`]) become constants and its outputs f32. With `ours`, the runtime's
/// ops that must stand in before tract's code generation do
/// ([`crate::kernels::depthwise_f32::swap_all`], and on x86-64 `kernels::conv_f32::swap_all`);
/// [`crate::kernels::accelerate`] swaps the
/// others in after. The first call times tract's matrix kernels
/// ([`crate::kernels::mmm_choice`]) before tract picks any.
pub(crate) fn optimize_for_image(
    model: InferenceModel,
    sizes: &[String],
    (w, h): (usize, usize),
    ours: bool,
) -> TractResult<TypedModel> {
    crate::kernels::mmm_choice::choose();
    let mut typed = model.into_typed()?;
    fix_sizes(&mut typed, sizes, (w, h))?;
    outputs_to_f32(&mut typed)?;
    if ours {
        typed = crate::kernels::depthwise_f32::swap_all(typed.into_decluttered()?)?;
        #[cfg(target_arch = "x86_64")]
        {
            // `OCELLI_CONV_F32=0` keeps tract's float convolutions, to compare the two.
            if std::env::var_os("OCELLI_CONV_F32").is_none_or(|v| v != "0") {
                typed = crate::kernels::conv_f32::swap_all(typed)?;
            }
        }
    }
    typed.into_optimized()
}

/// Finds the inputs beside the image: only an image size, as D-FINE's and RT-DETR's deploy
/// exports take (`orig_target_sizes`, `[1,2]` integers), is accepted; its fact is fixed to
/// `[1,2]` of its own integer type. Returns the size inputs' names, or what was found.
pub(crate) fn size_inputs(model: &mut InferenceModel) -> Result<Vec<String>, String> {
    let inputs = model.input_outlets().map_err(|e| e.to_string())?.to_vec();
    let mut sizes = Vec::new();
    for (ix, outlet) in inputs.iter().enumerate().skip(1) {
        let name = model.node(outlet.node).name.clone();
        let fact = model.input_fact(ix).map_err(|e| e.to_string())?;
        let dt = fact.datum_type.concretize().unwrap_or(i64::datum_type());
        let fits_shape = fact
            .shape
            .as_concrete_finite()
            .ok()
            .flatten()
            .is_none_or(|s| *s == [1, 2]);
        if !(name.to_ascii_lowercase().contains("size") && dt.is_integer() && fits_shape) {
            return Err(format!("a second input `{name}` {:?}", fact));
        }
        model
            .set_input_fact(ix, InferenceFact::dt_shape(dt, [1, 2]))
            .map_err(|e| e.to_string())?;
        sizes.push(name);
    }
    Ok(sizes)
}

/// Turns the size inputs into constants holding the model input's `(w, h)`: the boxes then
/// come out in input pixels, as every family's do, and the plan takes the image alone.
fn fix_sizes(model: &mut TypedModel, sizes: &[String], (w, h): (usize, usize)) -> TractResult<()> {
    for name in sizes {
        // Typing renumbers the nodes: find the input by name.
        let node = model.node_id_by_name(name)?;
        let dt = model.node(node).outputs[0].fact.datum_type;
        let value = tensor2(&[[w as i64, h as i64]])
            .cast_to_dt(dt)?
            .into_owned()
            .into_arc_tensor();
        let n = model.node_mut(node);
        n.op = Box::new(tract_onnx::tract_core::ops::konst::Const::new(
            value.clone(),
        )?);
        n.outputs[0].fact = TypedFact::try_from(value)?;
        model.inputs.retain(|o| o.node != node);
    }
    Ok(())
}

/// Casts every output that is not f32 (D-FINE's int64 labels) to f32, the decoders' type,
/// keeping the output's name.
fn outputs_to_f32(model: &mut TypedModel) -> TractResult<()> {
    let mut outlets = model.output_outlets()?.to_vec();
    for outlet in &mut outlets {
        if model.outlet_fact(*outlet)?.datum_type == f32::datum_type() {
            continue;
        }
        let name = model
            .outlet_label(*outlet)
            .unwrap_or(&model.node(outlet.node).name)
            .to_string();
        let cast = tract_onnx::tract_core::ops::cast::cast(f32::datum_type());
        *outlet = model.wire_node(format!("{name}.f32"), cast, &[*outlet])?[0];
        model.set_outlet_label(*outlet, name)?;
    }
    model.select_output_outlets(&outlets)
}

/// The first output of `graph` or of a subgraph that no node, initializer or input of its
/// graph defines. tract indexes its name table with it and panics, so it is refused first.
fn undefined_output(graph: &tract_onnx::pb::GraphProto) -> Option<&str> {
    let defined = |name: &str| {
        graph
            .node
            .iter()
            .any(|n| n.output.iter().any(|o| o == name))
            || graph.initializer.iter().any(|t| t.name == name)
            || graph.input.iter().any(|i| i.name == name)
    };
    graph
        .output
        .iter()
        .map(|o| o.name.as_str())
        .find(|name| !defined(name))
        .or_else(|| {
            let attributes = graph.node.iter().flat_map(|n| &n.attribute);
            let subgraphs = attributes.flat_map(|a| a.g.iter().chain(&a.graphs));
            subgraphs.into_iter().find_map(undefined_output)
        })
}

/// No tensor of a detector on a board comes near this; a malformed size (a garbage Resize
/// scale, say) does, and on 32-bit targets it may not even overflow the address space.
const MAX_TENSOR_BYTES: usize = 1 << 30;

/// Why the optimised model cannot run: a tensor whose fixed shape needs more than
/// [`MAX_TENSOR_BYTES`].
fn oversized_tensor(model: &TypedModel) -> Option<String> {
    model.nodes().iter().find_map(|node| {
        node.outputs.iter().find_map(|output| {
            let fact = &output.fact;
            let shape = fact.shape.as_concrete()?;
            let bytes = shape
                .iter()
                .try_fold(fact.datum_type.size_of(), |n, &d| n.checked_mul(d));
            bytes.is_none_or(|b| b > MAX_TENSOR_BYTES).then(|| {
                format!(
                    "tensor of node `{}` would have shape {shape:?}: over {} MiB",
                    node.name,
                    MAX_TENSOR_BYTES >> 20
                )
            })
        })
    })
}

/// The sum of the fixed-shape tensors every node produces (constants included).
fn tensor_bytes(model: &TypedModel) -> u64 {
    let facts = model
        .nodes()
        .iter()
        .flat_map(|n| &n.outputs)
        .map(|o| &o.fact);
    facts
        .filter_map(|f| {
            Some(f.shape.as_concrete()?.iter().product::<usize>() * f.datum_type.size_of())
        })
        .map(|b| b as u64)
        .sum()
}

/// Loads the model, fixes the input to [1,3,H,W] and optimises it; also returns what
/// `ocelli inspect` shows.
pub fn load_plan(
    path: &Path,
    input_size: Option<[usize; 2]>,
) -> Result<(Arc<TypedSimplePlan>, ModelInfo), DetectError> {
    load_plan_from_bytes(path, &read_model(path)?, input_size)
}

/// The model file's bytes, refused unread over [`MAX_MODEL_BYTES`](crate::limits::MAX_MODEL_BYTES).
pub(crate) fn read_model(path: &Path) -> Result<Vec<u8>, DetectError> {
    crate::limits::read_bounded(path, crate::limits::MAX_MODEL_BYTES).map_err(|e| {
        DetectError::Load {
            path: path.into(),
            reason: e.to_string(),
        }
    })
}

/// [`load_plan`] on a model already in memory; `path` only names it in errors.
///
/// tract asserts rather than errs on some malformed graphs (negative dims, dangling edges): a
/// panic while loading is caught and refuses the model like any other load error, so a bad
/// file given on SIGHUP cannot take the running service down.
pub fn load_plan_from_bytes(
    path: &Path,
    bytes: &[u8],
    input_size: Option<[usize; 2]>,
) -> Result<(Arc<TypedSimplePlan>, ModelInfo), DetectError> {
    // Everything built inside is dropped on a panic; nothing outside is touched.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        plan_from_bytes(path, bytes, input_size)
    }))
    .unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("a panic");
        Err(DetectError::Load {
            path: path.into(),
            reason: format!("tract failed on a malformed graph: {what}"),
        })
    })
}

fn plan_from_bytes(
    path: &Path,
    bytes: &[u8],
    input_size: Option<[usize; 2]>,
) -> Result<(Arc<TypedSimplePlan>, ModelInfo), DetectError> {
    // value_info is only a hint, and symbolic batch dims in it clash with a fixed input shape.
    let onnx = tract_onnx::onnx().with_ignore_value_info(true);
    let proto = onnx
        .proto_model_for_read(&mut std::io::Cursor::new(bytes))
        .map_err(|e| load_err(path, e))?;
    if let Some(name) = proto.graph.as_ref().and_then(undefined_output) {
        return Err(DetectError::Load {
            path: path.into(),
            reason: format!("graph output `{name}` is not produced by the graph"),
        });
    }
    let mut model = onnx
        .model_for_proto_model(&proto)
        .map_err(|e| load_err(path, e))?;
    let input_name = model
        .input_outlets()
        .ok()
        .and_then(|o| o.first().map(|o| model.node(o.node).name.clone()))
        .unwrap_or_default();
    let declared = model.input_fact(0).map_err(|e| load_err(path, e))?.clone();
    let dims = declared.shape.as_concrete_finite().ok().flatten();
    let declared_str = format!("{:?}", declared.shape);
    let input_err = |found: String| DetectError::Input {
        path: path.into(),
        found,
        expected: "an image tensor [1,3,H,W]".into(),
    };
    let rank_ok = declared.shape.rank().concretize().is_none_or(|r| r == 4);
    if !rank_ok {
        return Err(input_err(declared_str));
    }
    let (h, w) = match (input_size, &dims) {
        (Some([w, h]), _) => (h, w),
        (None, Some(d)) if d.len() == 4 && d[1] == 3 => (d[2], d[3]),
        (None, Some(d)) => return Err(input_err(format!("{d:?}"))),
        (None, None) => {
            return Err(DetectError::Input {
                path: path.into(),
                found: format!("{declared_str} (size not fixed)"),
                expected: "`input_size = [W, H]` in the detector's config".into(),
            });
        }
    };
    model
        .set_input_fact(0, f32::fact([1, 3, h, w]).into())
        .map_err(|e| load_err(path, e))?;
    let sizes = size_inputs(&mut model).map_err(|found| DetectError::Input {
        path: path.into(),
        found,
        expected: "the image, and at most D-FINE's `orig_target_sizes` [1,2]".into(),
    })?;
    let typed = optimize_for_image(model, &sizes, (w, h), true)
        .and_then(crate::kernels::accelerate)
        .map_err(|e| load_err(path, e))?;
    if let Some(reason) = oversized_tensor(&typed) {
        return Err(DetectError::Load {
            path: path.into(),
            reason,
        });
    }
    let outputs = typed
        .output_outlets()
        .map_err(|e| load_err(path, e))?
        .iter()
        .map(|o| {
            let name = typed
                .outlet_label(*o)
                .unwrap_or(&typed.node(o.node).name)
                .to_string();
            let fact = typed.outlet_fact(*o)?;
            let shape = fact
                .shape
                .as_concrete()
                .map(|s| s.to_vec())
                .ok_or_else(|| {
                    anyhow::anyhow!("output {name} has no fixed shape ({:?})", fact.shape)
                })?;
            Ok(OutputInfo { name, shape })
        })
        .collect::<TractResult<Vec<_>>>()
        .map_err(|e| load_err(path, e))?;
    if outputs.len() > MAX_OUTPUTS {
        return Err(DetectError::Load {
            path: path.into(),
            reason: format!(
                "{} outputs, Ocelli reads at most {MAX_OUTPUTS}",
                outputs.len()
            ),
        });
    }
    let family = recognise(&outputs);
    let tensor_bytes = tensor_bytes(&typed);
    let plan = typed.into_runnable().map_err(|e| load_err(path, e))?;
    Ok((
        plan,
        ModelInfo {
            input_name,
            input_shape: vec![1, 3, h, w],
            outputs,
            family,
            tensor_bytes,
        },
    ))
}
