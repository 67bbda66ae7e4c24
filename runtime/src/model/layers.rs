//! A model's convolution layers in the forms the runtime runs them in, each built alone and
//! timed on this CPU with the runtime's kernels: what `ocelli-compress quantize` chooses
//! between, and what `ocelli profile-layers` tables on a board for it.
//!
//! The forms, all standard ONNX:
//! - [`Form::WeightInt8`]: int8 weights (symmetric, per output channel) through
//!   DequantizeLinear into a float Conv. tract folds the dequantisation at load time, so the
//!   layer runs exactly as fast as float while the file stores a quarter of the bytes.
//! - [`Form::ConvInteger`]: QuantizeLinear (int8, calibrated scale) → ConvInteger (i8 × i8 →
//!   i32) → Cast → Mul by the per-channel scales → Add bias. The input's zero point is 0, or,
//!   where the input is bounded below (a ReLU's output, -128; a SiLU's), where 0 falls when
//!   its range takes all 256 levels rather than 128 a side: with every layer of UltraFace
//!   RFB-320 int8, the largest score drift on the calibration images fell from 0.164 to
//!   0.119, and two layers went back towards float for accuracy instead of five. tract lowers
//!   it to one int8 matmul whose float epilogue it fuses (the zero point's share taken off in
//!   it); QLinearConv and QDQ forms lower to unfused zero-point and requantisation passes (see
//!   `probe`).
//! - [`Form::Float`]: left as it was.
//!

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tract_onnx::pb;

use super::measure::{self, Plan};
use super::onnx::{
    Facts, Model, ModelError, attr, f32_proto, float_unshaped, float_value, i8_proto, node,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Form {
    Float,
    WeightInt8,
    ConvInteger,
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

/// What calibration measured: each observed tensor's clipping magnitude (inputs of
/// ConvInteger layers) and per-channel means (inputs of every layer, for bias correction).
#[derive(Clone, Debug, Default)]
pub struct Calibration {
    pub thresholds: HashMap<String, f32>,
    pub means: HashMap<String, Vec<f32>>,
}

/// Every Conv whose weights are constant, in graph order.
pub fn convolutions(m: &Model, facts: &Facts) -> Vec<Layer> {
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

pub fn conv_node<'a>(m: &'a Model, output: &str) -> &'a pb::NodeProto {
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
    // Each quantised input's i8 tensor, scale and zero point (where not 0), for the layers
    // that share it.
    let mut quantized_inputs: HashMap<String, (String, f32, Option<String>)> = HashMap::new();
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
        // The nodes written here go unnamed: tract names them by their outputs all the same,
        // and the names took 2% of a small model's int8 file (YuNet's, against a 0.35× target).
        match l.form {
            Form::WeightInt8 => {
                // No zero point: it defaults to 0 of the weights' type, and the file is smaller.
                let (s, d) = (fresh(&m, "w_scale"), fresh(&m, "w"));
                m.set_initializer(f32_proto(&s, &[o], &ws));
                let mut dq = node("DequantizeLinear", "", &[&wq_name, &s], &[&d]);
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
                let (xq, sx, zp) = match quantized_inputs.get(&l.input) {
                    Some(q) => q.clone(),
                    None => {
                        // Where the input is bounded below (a ReLU's output spans [0, thr]), its
                        // range takes all 256 levels, 0 at the zero point: -128 after a ReLU.
                        let thr = thr.max(1e-8);
                        let (sx, zero_point) = match lower_bound(&m, &l.input) {
                            Some(lo) => {
                                let lo = lo.max(-thr);
                                let sx = (thr - lo) / 255.0;
                                (sx, (-128.0 - lo / sx).round().clamp(-128.0, 127.0) as i8)
                            }
                            None => (thr / 127.0, 0),
                        };
                        let xq = m.fresh_name(&format!("{}.q", l.input));
                        let (s, z) = (
                            m.fresh_name(&format!("{}.q_scale", l.input)),
                            m.fresh_name(&format!("{}.q_zp", l.input)),
                        );
                        m.set_initializer(f32_proto(&s, &[], &[sx]));
                        m.set_initializer(i8_proto(&z, &[], &[zero_point]));
                        nodes.push(node("QuantizeLinear", "", &[&l.input, &s, &z], &[&xq]));
                        let q = (xq, sx, (zero_point != 0).then_some(z));
                        quantized_inputs.insert(l.input.clone(), q.clone());
                        q
                    }
                };
                let (yi, yf) = (fresh(&m, "acc"), fresh(&m, "acc_f"));
                let mut inputs = vec![xq.as_str(), wq_name.as_str()];
                if let Some(z) = &zp {
                    inputs.push(z);
                }
                let mut ci = node("ConvInteger", "", &inputs, &[&yi]);
                // Attributes at their defaults are left out, for the same reason.
                let default = |a: &pb::AttributeProto| match a.name.as_str() {
                    "dilations" | "strides" => a.ints.iter().all(|v| *v == 1),
                    "group" => a.i == 1,
                    _ => false,
                };
                ci.attribute = conv
                    .attribute
                    .iter()
                    .filter(|a| !default(a))
                    .cloned()
                    .collect();
                nodes.push(ci);
                let mut cast = node("Cast", "", &[&yi], &[&yf]);
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
                nodes.push(node("Mul", "", &[&yf, &scale], &[&scaled]));
                if let Some(bv) = &bias {
                    let bn = fresh(&m, "bias");
                    m.set_initializer(f32_proto(&bn, &[1, o, 1, 1], bv));
                    nodes.push(node("Add", "", &[&scaled, &bn], &[&l.output]));
                }
            }
            Form::Float => unreachable!("filtered"),
        }
        m.graph_mut().node.splice(idx..=idx, nodes);
    }
    m.remove_dead();
    Ok(m)
}

/// SiLU's least value, `x · σ(x)` at `x ≈ -1.2785`.
const SILU_MIN: f32 = -0.278_464_55;

/// The least value `tensor` can take, where what writes it bounds it: 0 after a ReLU, SiLU's
/// minimum after a SiLU, the least of its inputs' after a max-pooling or a concatenation.
fn lower_bound(m: &Model, tensor: &str) -> Option<f32> {
    let producer = |t: &str| {
        m.graph()
            .node
            .iter()
            .find(|n| n.output.iter().any(|o| o == t))
    };
    let n = producer(tensor)?;
    let silu = |[a, b]: [&String; 2]| {
        producer(b).is_some_and(|g| g.op_type == "Sigmoid" && g.input.first() == Some(a))
    };
    match (n.op_type.as_str(), n.input.as_slice()) {
        ("Relu", _) => Some(0.0),
        ("Mul", [a, b]) if silu([a, b]) || silu([b, a]) => Some(SILU_MIN),
        ("MaxPool", [x, ..]) => lower_bound(m, x),
        ("Concat", inputs) => inputs
            .iter()
            .try_fold(f32::INFINITY, |lo, i| Some(lo.min(lower_bound(m, i)?))),
        _ => None,
    }
}

/// The layer alone, as a model, in float and as a ConvInteger island, timed taking turns.
pub fn time_layer(
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
    let input = measure::pattern_input(shape, -1.0, 1.0);
    let t = measure::time_interleaved(&plans.iter().collect::<Vec<_>>(), &input, 2, rounds)
        .map_err(|e| alone.tract_err(&e))?;
    Ok(LayerTimes {
        float_ms: measure::min(&t[0]),
        int8_ms: measure::min(&t[1]),
        int8_median_faster: measure::median(&t[1]) < measure::median(&t[0]),
    })
}

/// What one layer shape cost in each form, alone.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerTimes {
    /// Fastest runs, milliseconds: other processes only ever add time.
    pub float_ms: f64,
    pub int8_ms: f64,
    /// The medians agree with the fastest runs, so no single lucky run decides.
    pub int8_median_faster: bool,
}

/// What a convolution's cost depends on: the key of a timing table.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shape {
    /// `[out channels, in channels / group, kh, kw]`.
    pub weight: Vec<usize>,
    /// `[n, c, h, w]`.
    pub input: Vec<usize>,
    pub strides: Vec<i64>,
    /// ONNX order: begins, then ends.
    pub pads: Vec<i64>,
    pub dilations: Vec<i64>,
    pub group: i64,
    /// ONNX `auto_pad`, when the exporter used it instead of `pads`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_pad: Option<String>,
}

impl Shape {
    /// The shape of `conv` with these weights and input, ONNX's defaults filled in.
    pub fn of(conv: &pb::NodeProto, weight: &[usize], input: &[usize]) -> Self {
        let ints = |name: &str, default: Vec<i64>| attr::get_ints(conv, name).unwrap_or(default);
        Self {
            weight: weight.to_vec(),
            input: input.to_vec(),
            strides: ints("strides", vec![1, 1]),
            pads: ints("pads", vec![0; 4]),
            dilations: ints("dilations", vec![1, 1]),
            group: attr::get_int(conv, "group").unwrap_or(1),
            auto_pad: attr::get(conv, "auto_pad")
                .map(|a| String::from_utf8_lossy(&a.s).into_owned())
                .filter(|p| p != "NOTSET"),
        }
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "weights {:?} input {:?} strides {:?} pads {:?} group {}",
            self.weight, self.input, self.strides, self.pads, self.group
        )
    }
}

/// The CPU a timing was taken on, as far as it decides which kernels run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cpu {
    /// `aarch64`, `arm`, `x86_64`.
    pub arch: String,
    /// The core tract tunes its kernels for (aarch64: `CortexA53`, `CortexA72`, … from
    /// `TRACT_CPU_AARCH64_KIND` or the CPU part), or the x86 model name; `None` when unknown.
    pub kind: Option<String>,
    /// The instruction-set extensions the kernels choose between.
    pub features: Vec<String>,
}

impl Cpu {
    /// The CPU this process runs on.
    pub fn this() -> Self {
        // Nothing is detected on other architectures (armv7: NEON is the target's baseline).
        #[cfg_attr(
            not(any(target_arch = "x86_64", target_arch = "aarch64")),
            allow(unused_mut)
        )]
        let mut features = Vec::new();
        #[cfg(target_arch = "x86_64")]
        for (name, on) in [
            ("avx2", is_x86_feature_detected!("avx2")),
            ("fma", is_x86_feature_detected!("fma")),
            ("avx512f", is_x86_feature_detected!("avx512f")),
            ("avx512bw", is_x86_feature_detected!("avx512bw")),
            ("avx512vnni", is_x86_feature_detected!("avx512vnni")),
        ] {
            if on {
                features.push(name.to_string());
            }
        }
        #[cfg(target_arch = "aarch64")]
        for (name, on) in [
            (
                "dotprod",
                std::arch::is_aarch64_feature_detected!("dotprod"),
            ),
            ("i8mm", std::arch::is_aarch64_feature_detected!("i8mm")),
            ("fp16", std::arch::is_aarch64_feature_detected!("fp16")),
        ] {
            if on {
                features.push(name.to_string());
            }
        }
        #[cfg(target_arch = "aarch64")]
        let kind = Some(format!("{:?}", tract_linalg::arm64::Kind::choose()));
        #[cfg(not(target_arch = "aarch64"))]
        let kind = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|m| m.trim().to_string())
            });
        Self {
            arch: std::env::consts::ARCH.into(),
            kind,
            features,
        }
    }

    /// The CPU a board config names: its target triple's architecture and `tract_cpu`.
    pub fn of_board(board: &crate::config::Board) -> Option<Self> {
        let target = board.target.as_deref()?;
        let arch = target.split('-').next()?;
        Some(Self {
            // Rust names armv7 targets' architecture `arm`.
            arch: if arch.starts_with("armv7") {
                "arm"
            } else {
                arch
            }
            .into(),
            kind: board.tract_cpu.clone(),
            features: Vec::new(),
        })
    }

    /// Whether timings taken on `self` stand for `board`: the same architecture, and the same
    /// core where both name one (`cortex_a72` and `CortexA72` are the same core).
    pub fn stands_for(&self, board: &Cpu) -> bool {
        let norm = |k: &str| {
            k.chars()
                .filter(char::is_ascii_alphanumeric)
                .collect::<String>()
                .to_ascii_lowercase()
        };
        self.arch == board.arch
            && match (&self.kind, &board.kind) {
                (Some(a), Some(b)) => norm(a) == norm(b),
                _ => true,
            }
    }
}

impl std::fmt::Display for Cpu {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}", self.arch)?;
        if let Some(k) = &self.kind {
            write!(f, " {k}")?;
        }
        Ok(())
    }
}

/// One layer shape's timings in a table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timed {
    pub shape: Shape,
    pub times: LayerTimes,
}

/// Each distinct convolution shape of some models, timed in each form on one CPU
/// (`ocelli profile-layers`), for `ocelli-compress quantize --layer-timings`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Table {
    pub cpu: Cpu,
    /// `[board] threads` the layers ran on.
    pub threads: usize,
    pub layers: Vec<Timed>,
}

/// Why a timing table could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The file could not be read, or is over the bound for tables: check the path.
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not JSON of a table's form: the message names the field and its place.
    /// Write it again with `ocelli profile-layers`.
    #[error("{path}: not a layer-timing table: {reason}")]
    Malformed { path: PathBuf, reason: String },
}

impl Table {
    /// The timings of `shape`, if the table has them.
    pub fn get(&self, shape: &Shape) -> Option<LayerTimes> {
        self.layers
            .iter()
            .find(|t| &t.shape == shape)
            .map(|t| t.times)
    }

    pub fn load(path: &Path) -> Result<Self, TableError> {
        let bytes = crate::limits::read_bounded(path, crate::limits::MAX_TIMINGS_BYTES).map_err(
            |source| TableError::Read {
                path: path.into(),
                source,
            },
        )?;
        let malformed = |reason: String| TableError::Malformed {
            path: path.into(),
            reason,
        };
        let table: Table = serde_json::from_slice(&bytes).map_err(|e| malformed(e.to_string()))?;
        for (i, t) in table.layers.iter().enumerate() {
            for (field, ms) in [("float_ms", t.times.float_ms), ("int8_ms", t.times.int8_ms)] {
                if !(ms.is_finite() && ms > 0.0) {
                    return Err(malformed(format!(
                        "layers[{i}].times.{field}: expected a time in milliseconds above 0, found {ms}"
                    )));
                }
            }
        }
        Ok(table)
    }
}

/// Times each distinct convolution shape of `models` (each with its input shape) in float and
/// as ConvInteger, on tract's current executor; `progress` hears of each layer.
pub fn profile(
    models: &[(Model, [usize; 4])],
    rounds: usize,
    threads: usize,
    mut progress: impl FnMut(&str),
) -> Result<Table, ModelError> {
    let mut layers: Vec<Timed> = Vec::new();
    for (model, input) in models {
        let facts = model.facts(*input)?;
        let convs = convolutions(model, &facts);
        for (i, l) in convs.iter().enumerate() {
            let conv = conv_node(model, &l.output);
            let shape = Shape::of(conv, &l.weight_shape, &l.input_shape);
            if layers.iter().any(|t| t.shape == shape) {
                continue;
            }
            progress(&format!(
                "{}: layer {}/{}: {shape}",
                model.path.display(),
                i + 1,
                convs.len()
            ));
            let times = time_layer(model, conv, &l.input_shape, rounds)?;
            layers.push(Timed { shape, times });
        }
    }
    Ok(Table {
        cpu: Cpu::this(),
        threads,
        layers,
    })
}
