//! The ONNX protobuf as tract-onnx reads it (`tract_onnx::pb`): loading, saving, and the graph
//! look-ups every rewrite needs.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use prost::Message;
use tract_onnx::pb::{self, tensor_proto::DataType};
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

/// Why a model could not be read, understood or written.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The file could not be read: check the path and its permissions.
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The bytes are not an ONNX model (not protobuf, or no graph): pass the `.onnx` file itself.
    #[error("{path}: not an ONNX model: {reason}")]
    NotOnnx { path: PathBuf, reason: String },
    /// tract could not load or optimise the model: an operator it does not implement, or
    /// shapes it cannot infer. Re-export it (opset 11–17, static shapes), or `optimize` it first.
    #[error("{path}: tract cannot load it: {reason}")]
    Tract { path: PathBuf, reason: String },
    /// The graph is inconsistent (a tensor nobody produces, an initializer of an unknown type):
    /// the file is damaged or was written by a faulty exporter.
    #[error("{path}: {reason}")]
    Graph { path: PathBuf, reason: String },
    /// The output file could not be written: check the folder exists and is writable.
    #[error("{path}: cannot write: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// tract's error chains are long; the outermost two causes say what went wrong.
pub fn short(e: &anyhow::Error) -> String {
    e.chain()
        .take(2)
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

/// An ONNX model held as its protobuf, with the path it came from for messages.
#[derive(Clone, Debug)]
pub struct Model {
    pub proto: pb::ModelProto,
    pub path: PathBuf,
}

/// The bytes of the model file at `path`, refused unread over
/// [`MAX_MODEL_BYTES`](crate::limits::MAX_MODEL_BYTES), as the runtime's loader refuses it.
pub fn read_bytes(path: &Path) -> Result<Vec<u8>, ModelError> {
    crate::limits::read_bounded(path, crate::limits::MAX_MODEL_BYTES).map_err(|source| {
        ModelError::Read {
            path: path.into(),
            source,
        }
    })
}

impl Model {
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        Self::from_bytes(&read_bytes(path)?, path)
    }

    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self, ModelError> {
        let not_onnx = |reason: String| ModelError::NotOnnx {
            path: path.into(),
            reason,
        };
        let proto = pb::ModelProto::decode(bytes).map_err(|e| not_onnx(e.to_string()))?;
        match &proto.graph {
            Some(g) if !g.node.is_empty() => {}
            _ => return Err(not_onnx("no graph, or a graph without nodes".into())),
        }
        Ok(Self {
            proto,
            path: path.into(),
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.proto.encode_to_vec()
    }

    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        std::fs::write(path, self.to_bytes()).map_err(|source| ModelError::Write {
            path: path.into(),
            source,
        })
    }

    pub fn graph(&self) -> &pb::GraphProto {
        self.proto.graph.as_ref().expect("checked on load")
    }

    pub fn graph_mut(&mut self) -> &mut pb::GraphProto {
        self.proto.graph.as_mut().expect("checked on load")
    }

    pub fn graph_err(&self, reason: impl Into<String>) -> ModelError {
        ModelError::Graph {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    pub fn tract_err(&self, e: &anyhow::Error) -> ModelError {
        ModelError::Tract {
            path: self.path.clone(),
            reason: short(e),
        }
    }

    /// The default-domain operator set the model imports.
    pub fn opset(&self) -> i64 {
        self.proto
            .opset_import
            .iter()
            .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
            .map(|o| o.version)
            .unwrap_or(0)
    }

    /// The graph inputs that are fed at run time (not initializers).
    pub fn inputs(&self) -> Vec<&pb::ValueInfoProto> {
        let inits: HashSet<&str> = self
            .graph()
            .initializer
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        self.graph()
            .input
            .iter()
            .filter(|i| !inits.contains(i.name.as_str()))
            .collect()
    }

    /// The input image tensor's declared shape; `None` for a dimension that is symbolic.
    pub fn input_dims(&self) -> Vec<Option<usize>> {
        self.inputs()
            .first()
            .and_then(|i| tensor_type(i))
            .and_then(|t| t.shape.as_ref())
            .map(|s| {
                s.dim
                    .iter()
                    .map(|d| match d.value {
                        Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) if v > 0 => {
                            Some(v as usize)
                        }
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The input's [1,C,H,W], with `size` (W,H) overriding the declared height and width.
    pub fn input_shape(&self, size: Option<[usize; 2]>) -> Result<[usize; 4], ModelError> {
        let dims = self.input_dims();
        if dims.len() != 4 {
            return Err(self.graph_err(format!(
                "input is {dims:?}, expected an image tensor [1,C,H,W]"
            )));
        }
        let c = dims[1].unwrap_or(3);
        match (size, dims[2], dims[3]) {
            (Some([w, h]), _, _) => Ok([1, c, h, w]),
            (None, Some(h), Some(w)) => Ok([1, c, h, w]),
            _ => {
                Err(self
                    .graph_err("the input's height and width are not fixed: pass --input-size W H"))
            }
        }
    }

    pub fn initializer(&self, name: &str) -> Option<&pb::TensorProto> {
        self.graph().initializer.iter().find(|t| t.name == name)
    }

    /// An initializer (or Constant node output) as f32 with its shape.
    pub fn constant_f32(&self, name: &str) -> Option<(Vec<usize>, Vec<f32>)> {
        let proto = self.initializer(name).cloned().or_else(|| {
            self.graph()
                .node
                .iter()
                .find(|n| n.op_type == "Constant" && n.output.first().is_some_and(|o| o == name))
                .and_then(|n| n.attribute.iter().find(|a| a.name == "value"))
                .and_then(|a| a.t.clone())
        })?;
        let t = load_tensor(&proto).ok()?;
        let shape = t.shape().to_vec();
        let t = t.cast_to::<f32>().ok()?;
        let data = t.try_as_plain_ram().ok()?.as_slice::<f32>().ok()?.to_vec();
        Some((shape, data))
    }

    /// Adds or replaces an initializer.
    pub fn set_initializer(&mut self, t: pb::TensorProto) {
        let g = self.graph_mut();
        match g.initializer.iter_mut().find(|i| i.name == t.name) {
            Some(slot) => *slot = t,
            None => g.initializer.push(t),
        }
    }

    /// Points input `slot` of node `node` at a new f32 initializer named after `base`.
    pub fn set_input_f32(
        &mut self,
        node: usize,
        slot: usize,
        base: &str,
        dims: &[usize],
        data: &[f32],
    ) {
        let name = self.fresh_name(base);
        self.set_initializer(f32_proto(&name, dims, data));
        let inputs = &mut self.graph_mut().node[node].input;
        if inputs.len() <= slot {
            inputs.resize(slot + 1, String::new());
        }
        inputs[slot] = name;
    }

    /// Node index producing each tensor.
    pub fn producers(&self) -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for (i, n) in self.graph().node.iter().enumerate() {
            for o in &n.output {
                m.insert(o.clone(), i);
            }
        }
        m
    }

    /// Node indices reading each tensor (a node reading it twice is listed twice).
    pub fn consumers(&self) -> HashMap<String, Vec<usize>> {
        let mut m: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, n) in self.graph().node.iter().enumerate() {
            for inp in n.input.iter().filter(|s| !s.is_empty()) {
                m.entry(inp.clone()).or_default().push(i);
            }
        }
        m
    }

    pub fn is_graph_output(&self, name: &str) -> bool {
        self.graph().output.iter().any(|o| o.name == name)
    }

    /// A tensor or node name not yet used in the graph.
    pub fn fresh_name(&self, base: &str) -> String {
        let g = self.graph();
        let used = |s: &str| {
            g.node
                .iter()
                .any(|n| n.name == s || n.output.iter().any(|o| o == s))
                || g.initializer.iter().any(|t| t.name == s)
                || g.input.iter().any(|i| i.name == s)
        };
        (0..)
            .map(|i| {
                if i == 0 {
                    base.to_string()
                } else {
                    format!("{base}_{i}")
                }
            })
            .find(|s| !used(s))
            .expect("unbounded")
    }

    /// Drops nodes whose outputs nobody reads and initializers nothing uses.
    pub fn remove_dead(&mut self) -> usize {
        let before = self.graph().node.len() + self.graph().initializer.len();
        loop {
            let g = self.graph();
            let mut live: HashSet<&str> = g.output.iter().map(|o| o.name.as_str()).collect();
            for n in &g.node {
                live.extend(n.input.iter().map(|s| s.as_str()));
            }
            let keep: Vec<bool> = g
                .node
                .iter()
                .map(|n| n.output.iter().any(|o| live.contains(o.as_str())))
                .collect();
            if keep.iter().all(|k| *k) {
                break;
            }
            let mut it = keep.into_iter();
            self.graph_mut().node.retain(|_| it.next().unwrap());
        }
        let g = self.graph();
        let mut used: HashSet<String> = g.output.iter().map(|o| o.name.clone()).collect();
        for n in &g.node {
            used.extend(n.input.iter().cloned());
        }
        let g = self.graph_mut();
        // Old exporters list initializers among the inputs too: drop those with them.
        let inits: HashSet<String> = g.initializer.iter().map(|t| t.name.clone()).collect();
        g.input
            .retain(|i| !inits.contains(&i.name) || used.contains(&i.name));
        g.initializer.retain(|t| used.contains(&t.name));
        before - (self.graph().node.len() + self.graph().initializer.len())
    }

    /// tract's inference model of this graph with the input fixed, analysed: every named
    /// tensor's shape and, where it is constant, its value.
    pub fn facts(&self, input: [usize; 4]) -> Result<Facts, ModelError> {
        let onnx = tract_onnx::onnx().with_ignore_value_info(true);
        let parsed = onnx
            .parse(&self.proto, None)
            .map_err(|e| self.tract_err(&e))?;
        let mut model = parsed.model;
        model
            .set_input_fact(0, f32::fact(input).into())
            .map_err(|e| self.tract_err(&e))?;
        model.analyse(false).map_err(|e| self.tract_err(&e))?;
        let mut facts = HashMap::new();
        for (name, outlet) in parsed.outlets_by_name {
            let fact = model.outlet_fact(outlet).map_err(|e| self.tract_err(&e))?;
            let shape = fact.shape.concretize().and_then(|dims| {
                dims.iter()
                    .map(|d| d.to_i64().ok().map(|v| v as usize))
                    .collect()
            });
            let value = fact.value.concretize();
            facts.insert(name, Fact { shape, value });
        }
        Ok(Facts(facts))
    }

    /// The model loaded by tract, input fixed, optimised as the runtime's loader does it and
    /// ready to run.
    pub fn plan(&self, input: [usize; 4]) -> Result<Arc<TypedSimplePlan>, ModelError> {
        self.plan_with(input, true)
    }

    /// [`Model::plan`], or with `fast_int8` false tract's plan exactly as it optimises it
    /// (its own QuantizeLinearI8, Im2col and depthwise convolutions, none of the runtime's
    /// [`crate::kernels`]).
    pub fn plan_with(
        &self,
        input: [usize; 4],
        fast_int8: bool,
    ) -> Result<Arc<TypedSimplePlan>, ModelError> {
        let run = || -> TractResult<_> {
            let mut model = tract_onnx::onnx()
                .with_ignore_value_info(true)
                .model_for_proto_model(&self.proto)?
                .with_input_fact(0, f32::fact(input).into())?;
            let sizes = crate::detect::model::size_inputs(&mut model).map_err(|found| {
                anyhow::anyhow!("{found}: only the image, and D-FINE's orig_target_sizes, are fed")
            })?;
            let typed = crate::detect::model::optimize_for_image(
                model,
                &sizes,
                (input[3], input[2]),
                fast_int8,
            )?;
            if fast_int8 {
                crate::kernels::accelerate(typed)?.into_runnable()
            } else {
                typed.into_runnable()
            }
        };
        run().map_err(|e| self.tract_err(&e))
    }
}

/// What tract's analysis knows about one tensor.
#[derive(Clone, Debug)]
pub struct Fact {
    pub shape: Option<Vec<usize>>,
    pub value: Option<Arc<Tensor>>,
}

/// Facts by tensor name.
#[derive(Clone, Debug, Default)]
pub struct Facts(pub HashMap<String, Fact>);

impl Facts {
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.0.get(name).and_then(|f| f.shape.as_deref())
    }
    pub fn rank(&self, name: &str) -> Option<usize> {
        self.shape(name).map(|s| s.len())
    }
    pub fn value(&self, name: &str) -> Option<&Arc<Tensor>> {
        self.0.get(name).and_then(|f| f.value.as_ref())
    }
}

pub fn tensor_type(v: &pb::ValueInfoProto) -> Option<&pb::type_proto::Tensor> {
    match v.r#type.as_ref()?.value.as_ref()? {
        pb::type_proto::Value::TensorType(t) => Some(t),
    }
}

/// A TensorProto as a tract tensor.
pub fn load_tensor(t: &pb::TensorProto) -> TractResult<Tensor> {
    tract_onnx::tensor::load_tensor(&*tract_onnx::data_resolver::default(), t, None)
}

/// A tract tensor as a TensorProto (raw little-endian data).
pub fn tensor_proto(name: &str, t: &Tensor) -> TractResult<pb::TensorProto> {
    let t = t.try_as_plain_ram()?;
    let (dt, raw): (DataType, Vec<u8>) = match t.datum_type() {
        DatumType::F32 => (DataType::Float, le(t.as_slice::<f32>()?, f32::to_le_bytes)),
        DatumType::I64 => (DataType::Int64, le(t.as_slice::<i64>()?, i64::to_le_bytes)),
        DatumType::I32 => (DataType::Int32, le(t.as_slice::<i32>()?, i32::to_le_bytes)),
        DatumType::I8 => (DataType::Int8, le(t.as_slice::<i8>()?, i8::to_le_bytes)),
        DatumType::U8 => (DataType::Uint8, t.as_slice::<u8>()?.to_vec()),
        DatumType::Bool => (
            DataType::Bool,
            t.as_slice::<bool>()?.iter().map(|b| *b as u8).collect(),
        ),
        dt => anyhow::bail!("{name}: cannot store a {dt:?} tensor"),
    };
    Ok(pb::TensorProto {
        name: name.into(),
        dims: t.shape().iter().map(|d| *d as i64).collect(),
        data_type: dt as i32,
        raw_data: raw,
        ..Default::default()
    })
}

fn le<T: Copy, const N: usize>(xs: &[T], f: fn(T) -> [u8; N]) -> Vec<u8> {
    xs.iter().flat_map(|x| f(*x)).collect()
}

/// An f32 initializer.
pub fn f32_proto(name: &str, dims: &[usize], data: &[f32]) -> pb::TensorProto {
    raw_proto(name, dims, DataType::Float, le(data, f32::to_le_bytes))
}

pub fn i64_proto(name: &str, dims: &[usize], data: &[i64]) -> pb::TensorProto {
    raw_proto(name, dims, DataType::Int64, le(data, i64::to_le_bytes))
}

pub fn i32_proto(name: &str, dims: &[usize], data: &[i32]) -> pb::TensorProto {
    raw_proto(name, dims, DataType::Int32, le(data, i32::to_le_bytes))
}

pub fn i8_proto(name: &str, dims: &[usize], data: &[i8]) -> pb::TensorProto {
    raw_proto(name, dims, DataType::Int8, le(data, i8::to_le_bytes))
}

pub fn u8_proto(name: &str, dims: &[usize], data: &[u8]) -> pb::TensorProto {
    raw_proto(name, dims, DataType::Uint8, data.to_vec())
}

fn raw_proto(name: &str, dims: &[usize], dt: DataType, raw: Vec<u8>) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.iter().map(|d| *d as i64).collect(),
        data_type: dt as i32,
        raw_data: raw,
        ..Default::default()
    }
}

/// Attribute builders and readers.
pub mod attr {
    use tract_onnx::pb::{self, attribute_proto::AttributeType};

    pub fn int(name: &str, i: i64) -> pb::AttributeProto {
        pb::AttributeProto {
            name: name.into(),
            r#type: AttributeType::Int as i32,
            i,
            ..Default::default()
        }
    }

    pub fn ints(name: &str, ints: &[i64]) -> pb::AttributeProto {
        pb::AttributeProto {
            name: name.into(),
            r#type: AttributeType::Ints as i32,
            ints: ints.to_vec(),
            ..Default::default()
        }
    }

    pub fn get<'a>(n: &'a pb::NodeProto, name: &str) -> Option<&'a pb::AttributeProto> {
        n.attribute.iter().find(|a| a.name == name)
    }

    pub fn get_int(n: &pb::NodeProto, name: &str) -> Option<i64> {
        get(n, name).map(|a| a.i)
    }

    pub fn get_ints(n: &pb::NodeProto, name: &str) -> Option<Vec<i64>> {
        get(n, name).map(|a| a.ints.clone())
    }

    pub fn get_float(n: &pb::NodeProto, name: &str) -> Option<f32> {
        get(n, name).map(|a| a.f)
    }

    /// Sets (or replaces) an attribute.
    pub fn set(n: &mut pb::NodeProto, a: pb::AttributeProto) {
        match n.attribute.iter_mut().find(|x| x.name == a.name) {
            Some(slot) => *slot = a,
            None => n.attribute.push(a),
        }
    }
}

/// A node builder: `node("Add", &[a, b], &[out])`.
pub fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.into(),
        name: name.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// A float tensor declaration; `None` dimensions are symbolic (`batch`).
pub fn float_value(name: &str, dims: &[Option<usize>]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{Dimension, dimension::Value};
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Some(v) => Value::DimValue(*v as i64),
                None => Value::DimParam("batch".into()),
            }),
            ..Default::default()
        })
        .collect();
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl Model {
    /// A model from parts, for tests and generated benchmarks.
    pub fn build(
        opset: i64,
        nodes: Vec<pb::NodeProto>,
        inputs: Vec<pb::ValueInfoProto>,
        outputs: Vec<pb::ValueInfoProto>,
        initializers: Vec<pb::TensorProto>,
    ) -> Self {
        Self {
            proto: pb::ModelProto {
                ir_version: 7,
                opset_import: vec![pb::OperatorSetIdProto {
                    domain: String::new(),
                    version: opset,
                }],
                graph: Some(pb::GraphProto {
                    name: "g".into(),
                    node: nodes,
                    input: inputs,
                    output: outputs,
                    initializer: initializers,
                    ..Default::default()
                }),
                ..Default::default()
            },
            path: PathBuf::from("<built>"),
        }
    }
}

/// A float tensor declaration without a shape (tract infers it).
pub fn float_unshaped(name: &str) -> pb::ValueInfoProto {
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: None,
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}
