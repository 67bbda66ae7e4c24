//! Post-training static int8 for tract, layer by layer: each convolution takes the fastest
//! form tract runs for its shape (measured), and layers whose quantisation costs accuracy go
//! back towards float until the agreement budget holds.
//!
//! The forms, all standard ONNX:
//! - [`Form::WeightInt8`]: int8 weights (symmetric, per output channel) through
//!   DequantizeLinear into a float Conv. tract folds the dequantisation at load time, so the
//!   layer runs exactly as fast as float while the file stores a quarter of the bytes.
//! - [`Form::ConvInteger`]: QuantizeLinear (int8, zero point 0, calibrated scale) →
//!   ConvInteger (i8 × i8 → i32) → Cast → Mul by the per-channel scales → Add bias. With no
//!   zero points tract lowers it to one int8 matmul whose float epilogue it fuses; QLinearConv
//!   and QDQ forms lower to unfused zero-point and requantisation passes (see `probe`).
//! - [`Form::Float`]: left as it was.
//!
//! Detection heads (convolutions that write a model output with no other convolution in
//! between) never take ConvInteger: their outputs are the scores and boxes themselves, where
//! the activations' rounding lands unaveraged on every anchor. UltraFace slim with its two
//! 3×3 heads as ConvInteger kept every detection on the calibration images (drift 0.017) yet
//! lost 4 of 10 on held-out photos (0.89 → below the 0.7 threshold).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use tract_onnx::pb;
use tract_onnx::prelude::*;

use crate::calib::{self, Method};
use crate::measure::{self, Plan};
use crate::onnx::{
    Model, ModelError, attr, f32_proto, float_unshaped, float_value, i8_proto, node,
};
use crate::{Error, data, eval, optimize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Form {
    Float,
    WeightInt8,
    ConvInteger,
}

#[derive(Clone, Debug)]
pub struct Options {
    pub method: Method,
    pub input_size: Option<[usize; 2]>,
    /// How the model is fed and decoded.
    pub setup: data::Setup,
    /// Least mAP@0.5 against the float model's detections on the calibration images.
    pub min_map: f64,
    /// Largest score change of a matched detection on the calibration images.
    pub max_score_drift: f32,
    /// Timed runs per layer form when choosing by speed.
    pub speed_rounds: usize,
    /// Activation int8 (ConvInteger) only where at least this much faster than float.
    pub min_speedup: f64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            method: Method::Entropy,
            input_size: None,
            setup: data::Setup::default(),
            min_map: 0.98,
            max_score_drift: 0.1,
            speed_rounds: 15,
            min_speedup: 1.05,
        }
    }
}

/// One convolution: what it is, what each form cost, what it became.
#[derive(Clone, Debug, Serialize)]
pub struct Layer {
    /// The Conv node's first output: unique, unlike node names.
    pub output: String,
    pub input: String,
    pub weight_shape: Vec<usize>,
    pub input_shape: Vec<usize>,
    /// Fastest run of the layer alone, float and ConvInteger, milliseconds.
    pub float_ms: f64,
    pub int8_ms: f64,
    pub form: Form,
    /// Writes a model output with no other convolution in between (a detection head): its
    /// activations are not quantised.
    pub head: bool,
    /// Relative output error of the whole model with only this layer quantised; computed
    /// only when the budget failed.
    pub sensitivity: Option<f64>,
}

impl Layer {
    /// A layer in `form`, not yet timed, not a head, its sensitivity unmeasured.
    pub fn new(
        output: &str,
        input: &str,
        weight_shape: Vec<usize>,
        input_shape: Vec<usize>,
        form: Form,
    ) -> Self {
        Self {
            output: output.into(),
            input: input.into(),
            weight_shape,
            input_shape,
            float_ms: 0.0,
            int8_ms: 0.0,
            form,
            head: false,
            sensitivity: None,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub method: Method,
    pub calibration_images: usize,
    pub layers: Vec<Layer>,
    /// Agreement with the float model on the calibration images, after any reverts.
    pub map50: f64,
    pub score_drift_max: f32,
    /// Layers moved towards float for accuracy.
    pub reverted: usize,
}

impl Report {
    pub fn count(&self, form: Form) -> usize {
        self.layers.iter().filter(|l| l.form == form).count()
    }
}

/// What calibration measured: each observed tensor's clipping magnitude (inputs of
/// ConvInteger layers) and per-channel means (inputs of every layer, for bias correction).
#[derive(Clone, Debug, Default)]
pub struct Calibration {
    pub thresholds: HashMap<String, f32>,
    pub means: HashMap<String, Vec<f32>>,
}

/// Quantises `model` (a float model; `optimize` is applied first).
pub fn quantize(
    model: &Model,
    calib_dir: &Path,
    opts: &Options,
    mut progress: impl FnMut(&str),
) -> Result<(Model, Report), Error> {
    let cfg = data::detector_config(&model.path, &opts.setup)?;
    let mut float = model.clone();
    let opt = optimize::optimize(
        &mut float,
        &optimize::Options {
            input_size: opts.input_size.or(cfg.input_size),
        },
    )?;
    let shape = opt.input_shape;
    let inputs = data::input_tensors(calib_dir, &cfg.preprocess, shape)?;
    let facts = float.facts(shape)?;
    let mut layers = convolutions(&float, &facts);

    // Speed: each distinct layer shape timed alone in both forms.
    let mut timed: HashMap<String, LayerTimes> = HashMap::new();
    let total = layers.len();
    for (i, l) in layers.iter_mut().enumerate() {
        progress(&format!("quantize: timing layer {}/{total}", i + 1));
        let n = conv_node(&float, &l.output).clone();
        let key = format!("{:?}{:?}{:?}", l.weight_shape, l.input_shape, n.attribute);
        let t = match timed.get(&key) {
            Some(t) => *t,
            None => {
                let t = time_layer(&float, &n, &l.input_shape, opts.speed_rounds)?;
                timed.insert(key, t);
                t
            }
        };
        l.float_ms = t.float_ms;
        l.int8_ms = t.int8_ms;
        // Other processes only ever add time, so the fastest runs compare the layers' own
        // costs; the medians must agree, or one lucky run would decide.
        l.form = if !l.head && t.float_ms / t.int8_ms >= opts.min_speedup && t.int8_median_faster {
            Form::ConvInteger
        } else {
            Form::WeightInt8
        };
    }

    let observed: Vec<String> = layers
        .iter()
        .filter(|l| l.form == Form::ConvInteger)
        .map(|l| l.input.clone())
        .collect();
    let conv_inputs: Vec<String> = layers.iter().map(|l| l.input.clone()).collect();
    let means = calib::channel_means(&float, &conv_inputs, &inputs, shape, &mut progress)?;
    let thresholds = calib::calibrate(
        &float,
        &observed,
        &inputs,
        shape,
        opts.method,
        &mut progress,
    )?;

    // Accuracy: the whole model against float on the calibration images.
    let work = Scratch::new()?;
    let float_path = work.path(&format!("{}.float.onnx", stem(&model.path)));
    float.save(&float_path)?;
    let eval_opts = eval::Options {
        rounds: 0,
        setup: opts.setup.pinned(&cfg),
    };
    let cal = Calibration { thresholds, means };
    let mut quantized = apply(&float, &layers, &cal)?;
    let mut reverted = 0;
    let mut agreement;
    loop {
        let path = work.path(&format!("{}.int8.onnx", stem(&model.path)));
        quantized.save(&path)?;
        progress("quantize: checking agreement with float on the calibration images");
        agreement = eval::eval(&float_path, &path, calib_dir, &eval_opts, |_| {})?;
        if agreement.map50 >= opts.min_map && agreement.score_drift_max <= opts.max_score_drift {
            break;
        }
        if layers.iter().all(|l| l.sensitivity.is_none()) {
            sensitivities(&float, &mut layers, &cal, &inputs, shape, &mut progress)?;
        }
        // Move the most sensitive quantised layer one step towards float.
        let worst = (0..layers.len())
            .filter(|i| layers[*i].form != Form::Float)
            .max_by(|a, b| {
                let s = |i: &usize| layers[*i].sensitivity.unwrap_or(0.0);
                s(a).total_cmp(&s(b))
            });
        let Some(i) = worst else { break };
        layers[i].form = match layers[i].form {
            Form::ConvInteger => Form::WeightInt8,
            _ => Form::Float,
        };
        // What is left of its cost is that of the gentler form.
        layers[i].sensitivity = layers[i].sensitivity.map(|s| s / 4.0);
        reverted += 1;
        progress(&format!(
            "quantize: mAP@0.5 {:.3}, drift {:.3}: {reverted} layer(s) moved towards float",
            agreement.map50, agreement.score_drift_max
        ));
        quantized = apply(&float, &layers, &cal)?;
    }
    let report = Report {
        method: opts.method,
        calibration_images: inputs.len(),
        layers,
        map50: agreement.map50,
        score_drift_max: agreement.score_drift_max,
        reverted,
    };
    Ok((quantized, report))
}

fn stem(p: &Path) -> String {
    p.file_name()
        .map(|f| f.to_string_lossy().trim_end_matches(".onnx").to_string())
        .unwrap_or_default()
}

/// Every Conv whose weights are constant, in graph order.
fn convolutions(m: &Model, facts: &crate::onnx::Facts) -> Vec<Layer> {
    let heads = heads(m);
    m.graph()
        .node
        .iter()
        .filter(|n| n.op_type == "Conv" && n.domain.is_empty())
        .filter_map(|n| {
            let (wshape, _) = m.constant_f32(&n.input[1])?;
            let input_shape = facts.shape(&n.input[0])?.to_vec();
            (wshape.len() == 4 && input_shape.len() == 4).then(|| Layer {
                head: heads.contains(&n.output[0]),
                ..Layer::new(
                    &n.output[0],
                    &n.input[0],
                    wshape,
                    input_shape,
                    Form::WeightInt8,
                )
            })
        })
        .collect()
}

/// Outputs of the convolutions that reach a graph output through no other convolution.
fn heads(m: &Model) -> std::collections::HashSet<String> {
    let producers = m.producers();
    let mut heads = std::collections::HashSet::new();
    let mut seen = std::collections::HashSet::new();
    let mut todo: Vec<String> = m.graph().output.iter().map(|o| o.name.clone()).collect();
    while let Some(t) = todo.pop() {
        if !seen.insert(t.clone()) {
            continue;
        }
        let Some(&i) = producers.get(&t) else {
            continue;
        };
        let n = &m.graph().node[i];
        if n.op_type == "Conv" {
            heads.insert(t);
        } else {
            todo.extend(n.input.iter().filter(|x| !x.is_empty()).cloned());
        }
    }
    heads
}

fn conv_node<'a>(m: &'a Model, output: &str) -> &'a pb::NodeProto {
    m.graph()
        .node
        .iter()
        .find(|n| n.output.first().is_some_and(|o| o == output))
        .expect("layers come from this graph")
}

/// Symmetric per-output-channel int8 weights and their scales.
pub fn quantize_weights(shape: &[usize], w: &[f32]) -> (Vec<i8>, Vec<f32>) {
    let per = w.len() / shape[0];
    let scales: Vec<f32> = w
        .chunks(per)
        .map(|c| {
            let m = c.iter().fold(0f32, |m, x| m.max(x.abs()));
            if m > 0.0 { m / 127.0 } else { 1.0 }
        })
        .collect();
    let q = w
        .iter()
        .enumerate()
        .map(|(i, x)| (x / scales[i / per]).round().clamp(-127.0, 127.0) as i8)
        .collect();
    (q, scales)
}

/// `model` with the convolution that reads graph input `x` and writes `output` as a ConvInteger
/// island, its input quantised over [-1, 1]: a layer's int8 form, built alone to be timed.
pub fn conv_integer_island(
    model: &Model,
    output: &str,
    input_shape: &[usize],
) -> Result<Model, ModelError> {
    let layer = Layer::new(output, "x", vec![], input_shape.to_vec(), Form::ConvInteger);
    let cal = Calibration {
        thresholds: HashMap::from([("x".to_string(), 1.0)]),
        means: HashMap::new(),
    };
    apply(model, &[layer], &cal)
}

/// The model with each layer in its form; biases absorb the mean shift of rounded weights
/// where the calibration has the layer's input means.
pub fn apply(float: &Model, layers: &[Layer], cal: &Calibration) -> Result<Model, ModelError> {
    let mut m = float.clone();
    let mut quantized_inputs: HashMap<String, String> = HashMap::new();
    for l in layers.iter().filter(|l| l.form != Form::Float) {
        let idx = m
            .graph()
            .node
            .iter()
            .position(|n| n.output.first() == Some(&l.output))
            .expect("layers come from this graph");
        let conv = m.graph().node[idx].clone();
        let (wshape, w) = m
            .constant_f32(&conv.input[1])
            .ok_or_else(|| m.graph_err(format!("{}: weights not constant", l.output)))?;
        let (wq, ws) = quantize_weights(&wshape, &w);
        let o = wshape[0];
        let bias_in = match conv.input.get(2).filter(|b| !b.is_empty()) {
            Some(b) => Some(
                m.constant_f32(b)
                    .ok_or_else(|| m.graph_err(format!("{}: bias not constant", l.output)))?
                    .1,
            ),
            None => None,
        };
        let bias = match cal.means.get(&l.input) {
            Some(mean) => {
                let mut b = bias_in.unwrap_or_else(|| vec![0.0; o]);
                let per = w.len() / o;
                let (cin_g, k) = (wshape[1], wshape[2] * wshape[3]);
                let groups = mean.len() / cin_g.max(1);
                for (oo, bo) in b.iter_mut().enumerate() {
                    let g = oo / (o / groups.max(1)).max(1);
                    let mut shift = 0f32;
                    for j in 0..per {
                        let c = g * cin_g + j / k;
                        let dw = w[oo * per + j] - wq[oo * per + j] as f32 * ws[oo];
                        shift += dw * mean.get(c).copied().unwrap_or(0.0);
                    }
                    *bo += shift;
                }
                Some(b)
            }
            None => bias_in,
        };
        let fresh = |m: &Model, s: &str| m.fresh_name(&format!("{}.{s}", l.output));
        let wq_name = fresh(&m, "wq");
        m.set_initializer(i8_proto(&wq_name, &wshape, &wq));
        let mut nodes = Vec::new();
        match l.form {
            Form::WeightInt8 => {
                // No zero point: it defaults to 0 of the weights' type, and the file is smaller.
                let (s, d) = (fresh(&m, "w_scale"), fresh(&m, "w"));
                m.set_initializer(f32_proto(&s, &[o], &ws));
                let mut dq = node("DequantizeLinear", &d, &[&wq_name, &s], &[&d]);
                dq.attribute.push(attr::int("axis", 0));
                nodes.push(dq);
                let mut c = conv.clone();
                c.input[1] = d;
                if let Some(b) = &bias {
                    let bn = fresh(&m, "bias");
                    m.set_initializer(f32_proto(&bn, &[o], b));
                    c.input.resize(3, String::new());
                    c.input[2] = bn;
                }
                nodes.push(c);
            }
            Form::ConvInteger => {
                let thr = *cal
                    .thresholds
                    .get(&l.input)
                    .ok_or_else(|| m.graph_err(format!("{}: input not calibrated", l.output)))?;
                let sx = thr.max(1e-8) / 127.0;
                let xq = match quantized_inputs.get(&l.input) {
                    Some(xq) => xq.clone(),
                    None => {
                        let xq = m.fresh_name(&format!("{}.q", l.input));
                        let (s, z) = (
                            m.fresh_name(&format!("{}.q_scale", l.input)),
                            m.fresh_name(&format!("{}.q_zp", l.input)),
                        );
                        m.set_initializer(f32_proto(&s, &[], &[sx]));
                        m.set_initializer(i8_proto(&z, &[], &[0]));
                        nodes.push(node("QuantizeLinear", &xq, &[&l.input, &s, &z], &[&xq]));
                        quantized_inputs.insert(l.input.clone(), xq.clone());
                        xq
                    }
                };
                let (yi, yf) = (fresh(&m, "acc"), fresh(&m, "acc_f"));
                let mut ci = node("ConvInteger", &yi, &[&xq, &wq_name], &[&yi]);
                ci.attribute = conv.attribute.clone();
                nodes.push(ci);
                let mut cast = node("Cast", &yf, &[&yi], &[&yf]);
                cast.attribute
                    .push(attr::int("to", pb::tensor_proto::DataType::Float as i64));
                nodes.push(cast);
                let scale = fresh(&m, "scale");
                let sc: Vec<f32> = ws.iter().map(|s| s * sx).collect();
                m.set_initializer(f32_proto(&scale, &[1, o, 1, 1], &sc));
                let scaled = if bias.is_some() {
                    fresh(&m, "scaled")
                } else {
                    l.output.clone()
                };
                nodes.push(node("Mul", &scaled, &[&yf, &scale], &[&scaled]));
                if let Some(bv) = &bias {
                    let bn = fresh(&m, "bias");
                    m.set_initializer(f32_proto(&bn, &[1, o, 1, 1], bv));
                    nodes.push(node("Add", &l.output, &[&scaled, &bn], &[&l.output]));
                }
            }
            Form::Float => unreachable!("filtered"),
        }
        m.graph_mut().node.splice(idx..=idx, nodes);
    }
    m.remove_dead();
    Ok(m)
}

/// The layer alone, as a model, in float and as a ConvInteger island, timed taking turns.
fn time_layer(
    float: &Model,
    conv: &pb::NodeProto,
    input_shape: &[usize],
    rounds: usize,
) -> Result<LayerTimes, ModelError> {
    let mut c = conv.clone();
    c.input[0] = "x".into();
    c.output[0] = "y".into();
    let inits: Vec<pb::TensorProto> = conv.input[1..]
        .iter()
        .filter(|i| !i.is_empty())
        .filter_map(|i| {
            let (s, v) = float.constant_f32(i)?;
            Some(f32_proto(i, &s, &v))
        })
        .collect();
    let dims: Vec<Option<usize>> = input_shape.iter().map(|d| Some(*d)).collect();
    let alone = Model::build(
        13,
        vec![c],
        vec![float_value("x", &dims)],
        vec![float_unshaped("y")],
        inits,
    );
    let int8 = conv_integer_island(&alone, "y", input_shape)?;
    let shape: [usize; 4] = input_shape.try_into().expect("4-d");
    let plans: Vec<Plan> = vec![alone.plan(shape)?, int8.plan(shape)?];
    let input = crate::pattern_input(shape, -1.0, 1.0);
    let t = measure::time_interleaved(&plans.iter().collect::<Vec<_>>(), &input, 2, rounds)
        .map_err(|e| alone.tract_err(&e))?;
    Ok(LayerTimes {
        float_ms: measure::min(&t[0]),
        int8_ms: measure::min(&t[1]),
        int8_median_faster: measure::median(&t[1]) < measure::median(&t[0]),
    })
}

#[derive(Clone, Copy, Debug)]
struct LayerTimes {
    float_ms: f64,
    int8_ms: f64,
    int8_median_faster: bool,
}

/// Each quantised layer's cost alone: the whole model's relative output error with only that
/// layer in its form.
fn sensitivities(
    float: &Model,
    layers: &mut [Layer],
    cal: &Calibration,
    inputs: &[Tensor],
    shape: [usize; 4],
    progress: &mut impl FnMut(&str),
) -> Result<(), Error> {
    // A few images are enough to rank layers.
    let inputs = &inputs[..inputs.len().min(4)];
    let plan = float.plan(shape)?;
    let reference: Vec<Vec<Tensor>> = inputs
        .iter()
        .map(|i| measure::run(&plan, i))
        .collect::<TractResult<_>>()
        .map_err(|e| Error::run(&float.path, &e))?;
    let n = layers.len();
    for (i, layer) in layers.iter_mut().enumerate() {
        if layer.form == Form::Float {
            continue;
        }
        progress(&format!("quantize: sensitivity of layer {}/{n}", i + 1));
        let one = [layer.clone()];
        let m = apply(float, &one, cal)?;
        let plan = m.plan(shape)?;
        let mut err = 0.0;
        for (input, r) in inputs.iter().zip(&reference) {
            let out = measure::run(&plan, input).map_err(|e| Error::run(&float.path, &e))?;
            err += relative_l2(r, &out).map_err(|e| Error::run(&float.path, &e))?;
        }
        layer.sensitivity = Some(err / inputs.len() as f64);
    }
    Ok(())
}

/// ‖b − a‖ / ‖a‖ over all outputs, averaged per output.
pub fn relative_l2(a: &[Tensor], b: &[Tensor]) -> TractResult<f64> {
    let mut total = 0.0;
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (x.cast_to::<f32>()?, y.cast_to::<f32>()?);
        let (x, y) = (
            x.try_as_plain_ram()?.as_slice::<f32>()?.to_vec(),
            y.try_as_plain_ram()?.as_slice::<f32>()?.to_vec(),
        );
        let (mut num, mut den) = (0f64, 0f64);
        for (p, q) in x.iter().zip(&y) {
            num += ((q - p) as f64).powi(2);
            den += (*p as f64).powi(2);
        }
        total += (num / den.max(1e-12)).sqrt();
    }
    Ok(total / a.len().max(1) as f64)
}

/// A temporary folder removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Self, ModelError> {
        let dir = std::env::temp_dir().join(format!("ocelli-compress-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|source| ModelError::Write {
            path: dir.clone(),
            source,
        })?;
        Ok(Self(dir))
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
