//! The runtime's own ops for tract's optimised plans: each replaces one of tract's ops where
//! tract's is slow, with the same results (bit-identical for integer paths), and is tested
//! against tract's op on whatever instruction set the CPU running the tests has.
//!
//! [`accelerate`] swaps them in after `into_optimized()`: tract's own passes recognise only
//! their ops, and fold or fuse them before this point where they can.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

pub mod activation;
pub mod broadcast;
pub mod cast;
#[cfg(target_arch = "x86_64")]
pub mod conv_f32;
pub mod conv_i8;
pub mod depthwise_f32;
pub mod depthwise_i8;
pub mod downsample;
pub mod grid_sample;
pub mod im2col_i8;
pub mod mmm_choice;
pub mod pad;
pub mod pointwise_i8;
pub mod quantize;
pub mod reduce;
pub mod resize;
pub mod share;
pub mod softmax;

/// Replaces, in an optimised model, the Im2col (for a 1×1 layer, the packing) and matmul of
/// every one-group int8 convolution by [`conv_i8::ConvI8`] where the CPU has AVX-512 VNNI or
/// is an aarch64 one without the dot product, elsewhere the quantisation and packing of every 1×1 int8 convolution's input by
/// [`pointwise_i8::QuantizePackI8`], the Im2col and matmul of every int8 depthwise one by
/// [`depthwise_i8::DepthwiseI8`], every other int8 `Im2col` it can by
/// [`im2col_i8::FastIm2colI8`] (which quantises the f32 image itself where an f32
/// `QuantizeLinearI8` wrote the i8 one), every other f32-input `QuantizeLinearI8` by
/// [`quantize::FastQuantizeI8`], every GridSample over f32 images by
/// [`grid_sample::FastGridSample`], every f32 Reduce<Max> or <Min> over an axis other than
/// the last by [`reduce::FastReduce`], every i32 → f32 Cast by [`cast::FastCastI32F32`] (with
/// the per-channel scale and bias after it where only those read it) and
/// every f32 Add, Sub, Mul or Div (i32 Add, Sub or Mul) broadcast along an axis other than the
/// last by [`broadcast::FastBroadcast`] and every constant f32 Pad of the last two axes by
/// [`pad::FastPad`], every f32 Resize of the last two axes by [`resize::FastResize`] and
/// every f32 Softmax tract's row kernel does not take by [`softmax::FastSoftmax`], every
/// Downsample by [`downsample::FastDownsample`]; and where such a cast with its scale and bias reads a
/// [`conv_i8::ConvI8`] or [`depthwise_i8::DepthwiseI8`] alone, that op does it on its
/// accumulators ([`cast::into_producer`]).
///
/// `OCELLI_CONV_I8=0` in the environment leaves the int8 convolutions [`conv_i8::ConvI8`] would
/// take to the im2col path, to compare the two.
pub fn accelerate(model: TypedModel) -> TractResult<TypedModel> {
    let direct = std::env::var_os("OCELLI_CONV_I8").is_none_or(|v| v != "0");
    accelerate_with(model, direct)
}

/// [`accelerate`], with [`conv_i8::ConvI8`] only where `direct_conv`.
pub fn accelerate_with(mut model: TypedModel, direct_conv: bool) -> TractResult<TypedModel> {
    // The ops that stand for several of tract's nodes first, while those are still tract's.
    for id in model.eval_order()? {
        let node = model.node(id);
        let direct = match direct_conv {
            true => conv_i8::replacements(&model, node)?,
            false => vec![],
        };
        if !direct.is_empty() {
            for (op, input, matmul) in direct {
                swap(&mut model, input, op, matmul)?;
            }
        } else if let Some((op, input)) = pointwise_i8::replacement(&model, node)? {
            swap(&mut model, input, op, OutletId::new(id, 0))?;
        } else if let Some((op, input)) = im2col_i8::replacement(&model, node)? {
            swap(&mut model, input, op, OutletId::new(id, 0))?;
        } else if let Some((op, input, chain)) = cast::fused(&model, node)? {
            swap(&mut model, input, op, chain)?;
        } else {
            for (op, input, matmul) in depthwise_i8::replacements(&model, node)? {
                swap(&mut model, input, op, matmul)?;
            }
        }
    }
    // The scale, bias and activation after the int8 convolutions, into their kernels.
    for id in model.eval_order()? {
        let node = model.node(id);
        if let Some((op, input, replaced)) = cast::into_producer::<conv_i8::ConvI8>(&model, node)? {
            swap(&mut model, input, op, replaced)?;
        } else if let Some((op, input, replaced)) =
            cast::into_producer::<depthwise_i8::DepthwiseI8>(&model, node)?
        {
            swap(&mut model, input, op, replaced)?;
        }
    }
    for id in model.eval_order()? {
        let node = model.node(id);
        // The ops that stand for one of tract's, on the same inputs.
        let single = [
            grid_sample::replacement(&model, node)?.map(boxed),
            broadcast::replacement(&model, node)?.map(boxed),
            cast::replacement(&model, node)?.map(boxed),
            pad::replacement(&model, node)?.map(boxed),
            reduce::replacement(&model, node)?.map(boxed),
            resize::replacement(&model, node)?.map(boxed),
            softmax::replacement(&model, node)?.map(boxed),
            downsample::replacement(&model, node)?.map(boxed),
        ];
        if let Some(fast) = single.into_iter().flatten().next() {
            let patch = TypedModelPatch::replace_single_op(&model, node, &node.inputs, fast)?;
            patch.apply(&mut model)?;
        } else if let Some((fast, input)) = quantize::quantizer(&model, OutletId::new(id, 0))? {
            swap(&mut model, input, fast, OutletId::new(id, 0))?;
        }
    }
    // The replaced nodes stay behind as unconnected placeholders until compacted.
    model.into_compact()
}

fn boxed(op: impl TypedOp) -> Box<dyn TypedOp> {
    Box::new(op)
}

/// Clears the upper halves of the vector registers, where the CPU has AVX.
///
/// tract's assembly kernels return with them set (no `vzeroupper`). Until they are cleared,
/// every switch between SSE code (all Rust code built for baseline x86-64) and VEX code
/// (glibc's `expf` and `logf`, any AVX kernel) saves or restores them: on the Xeon of
/// docs/vs-onnxruntime.md one `expf` call then takes 170 ns instead of 3. Code calling such
/// functions value by value after tract has run calls this first, on each thread.
pub fn clean_upper_state() {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU has AVX.
        unsafe { zero_upper() }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn zero_upper() {
    std::arch::x86_64::_mm256_zeroupper()
}

/// `dst[i] = src[i · stride]`; strides 2 and 3 through whole chunks of the stride, which
/// vectorise as shuffles where a strided iterator copies value by value.
pub fn every<T: Copy>(src: &[T], stride: usize, dst: &mut [T]) {
    match stride {
        2 => every_by::<T, 2>(src, dst),
        3 => every_by::<T, 3>(src, dst),
        _ => dst
            .iter_mut()
            .zip(src.iter().step_by(stride))
            .for_each(|(d, v)| *d = *v),
    }
}

#[inline(always)]
fn every_by<T: Copy, const S: usize>(src: &[T], dst: &mut [T]) {
    let (chunks, _) = src.as_chunks::<S>();
    let whole = chunks.len().min(dst.len());
    for (d, c) in dst[..whole].iter_mut().zip(chunks) {
        *d = c[0];
    }
    for (i, d) in dst.iter_mut().enumerate().skip(whole) {
        *d = src[i * S];
    }
}

/// Work (values written, or multiply-adds) below which an op stays on the calling thread:
/// waking the pool's threads costs some microseconds, as much as ~64 K values take.
pub const MIN_SPLIT: usize = 1 << 16;

/// `f(first, chunk)` over `out` cut into chunks of whole `unit`-long units (`first`: the
/// chunk's first unit), shared by as many threads as tract's current executor has ([`share`]),
/// so that `[board] threads = 1` stays on the calling thread; all of `out` at once when `work`
/// is below [`MIN_SPLIT`]. Each unit is written by one call whatever the split: the results
/// cannot depend on it.
pub fn split<T: Send>(
    out: &mut [T],
    unit: usize,
    work: usize,
    f: impl Fn(usize, &mut [T]) -> TractResult<()> + Sync + Send,
) -> TractResult<()> {
    use tract_linalg::multithread::{Executor, current_tract_executor};
    match current_tract_executor() {
        Executor::MultiThread(pool) if work >= MIN_SPLIT => {
            share::run(pool.current_num_threads(), out, unit, f)
        }
        _ => f(0, out),
    }
}

/// The i32 accumulators of `fact`'s (concrete) shape, whose channels, `n` values each,
/// `f(first, channels, epilogue)` writes whole over tract's executor ([`split`]), `group`
/// channels at a time (a kernel's tile of output channels: a thread given part of one would
/// compute all of it), `per_value` multiply-adds a value. With `affine`, `f` runs the epilogue
/// on each channel's accumulators (while they are in cache) and the result is the f32 tensor
/// of the chain's shape.
pub fn accumulators(
    fact: &TypedFact,
    [n, group]: [usize; 2],
    per_value: usize,
    affine: Option<&cast::Affine>,
    f: impl Fn(usize, &mut [i32], Option<&cast::Epilogue>) -> TractResult<()> + Sync + Send,
) -> TractResult<Tensor> {
    let shape = fact
        .shape
        .as_concrete()
        .context("output shape not concrete")?;
    let epilogue = affine.map(cast::Affine::epilogue).transpose()?;
    // SAFETY: `f` writes every value of the channels it is given.
    let mut output = unsafe { Tensor::uninitialized::<i32>(shape)? };
    {
        let mut plain = output.try_as_plain_ram_mut()?;
        let out = plain.as_slice_mut::<i32>()?;
        split(out, n * group, out.len() * per_value, |first, out| {
            f(first * group, out, epilogue.as_ref())
        })?;
    }
    match affine {
        Some(_) => cast::as_f32(output, affine),
        None => Ok(output),
    }
}

/// The fact of what an op writing accumulators of `fact` outputs: with `affine`, the chain's
/// f32 values.
pub fn accumulators_fact(fact: &TypedFact, affine: Option<&cast::Affine>) -> TypedFact {
    match affine {
        Some(a) => f32::fact(&a.shape),
        None => fact.without_value(),
    }
}

/// The one input reading `outlet`, unless more read it or it is an output of the model: where
/// an op may take over what reads it, the value is needed nowhere else.
pub(crate) fn only_reader(model: &TypedModel, outlet: OutletId) -> TractResult<Option<InletId>> {
    let readers = model.outlet_successors(outlet);
    if readers.len() != 1 || model.output_outlets()?.contains(&outlet) {
        return Ok(None);
    }
    Ok(Some(readers[0]))
}

/// Wires `op` on `input` in place of the node writing `replaced` (and of whatever only it
/// read), named after that node.
fn swap(
    model: &mut TypedModel,
    input: OutletId,
    op: impl TypedOp,
    replaced: OutletId,
) -> TractResult<()> {
    let mut patch = TypedModelPatch::default();
    let x = patch.tap_model(model, input)?;
    let y = patch.wire_node(&model.node(replaced.node).name, op, &[x])?[0];
    patch.shunt_outside(model, replaced, y)?;
    patch.apply(model)
}

#[cfg(test)]
pub mod tests {
    use tract_onnx::pb::{self, attribute_proto::AttributeType, tensor_proto::DataType};

    use super::*;

    pub fn attr(name: &str, ints: &[i64]) -> pb::AttributeProto {
        pb::AttributeProto {
            name: name.into(),
            r#type: AttributeType::Ints as i32,
            ints: ints.to_vec(),
            ..Default::default()
        }
    }

    pub fn int_attr(name: &str, i: i64) -> pb::AttributeProto {
        pb::AttributeProto {
            name: name.into(),
            r#type: AttributeType::Int as i32,
            i,
            ..Default::default()
        }
    }

    /// `graph` as an ONNX model (opset 13), loaded by tract.
    pub fn load(graph: pb::GraphProto) -> InferenceModel {
        let proto = pb::ModelProto {
            ir_version: 7,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
            graph: Some(graph),
            ..Default::default()
        };
        tract_onnx::onnx()
            .model_for_proto_model(&proto)
            .expect("the test model loads")
    }

    pub fn value(name: &str, dt: DataType, dims: Option<&[usize]>) -> pb::ValueInfoProto {
        use pb::tensor_shape_proto::{Dimension, dimension::Value};
        let shape = dims.map(|d| pb::TensorShapeProto {
            dim: d
                .iter()
                .map(|v| Dimension {
                    value: Some(Value::DimValue(*v as i64)),
                    ..Default::default()
                })
                .collect(),
        });
        pb::ValueInfoProto {
            name: name.into(),
            r#type: Some(pb::TypeProto {
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type: dt as i32,
                    shape,
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub fn tensor(name: &str, dt: DataType, dims: &[usize], raw_data: Vec<u8>) -> pb::TensorProto {
        pb::TensorProto {
            name: name.into(),
            dims: dims.iter().map(|d| *d as i64).collect(),
            data_type: dt as i32,
            raw_data,
            ..Default::default()
        }
    }

    /// `ours` computes what `tracts` does within 1e-5 of the largest value, on one thread and
    /// split over two, on inputs of its input facts' shapes.
    pub fn assert_matches(tracts: TypedModel, ours: TypedModel, what: &str) {
        let inputs: TVec<TValue> = (0..tracts.inputs.len())
            .map(|i| {
                let shape = tracts
                    .input_fact(i)
                    .unwrap()
                    .shape
                    .as_concrete()
                    .unwrap()
                    .to_vec();
                let n: usize = shape.iter().product();
                Tensor::from_shape(
                    &shape,
                    &(0..n)
                        .map(|v| ((v + 31 * i) * 7919 % 251) as f32 / 50.0 - 2.5)
                        .collect::<Vec<_>>(),
                )
                .unwrap()
                .into_tvalue()
            })
            .collect();
        let run = |m: TypedModel| {
            m.into_optimized()
                .and_then(|m| m.into_runnable())
                .and_then(|p| p.run(inputs.clone()))
                .unwrap()
                .remove(0)
                .into_tensor()
        };
        let want = run(tracts);
        let pool = tract_linalg::multithread::Executor::multithread(2);
        let split = tract_linalg::multithread::multithread_tract_scope(pool, || run(ours.clone()));
        for got in [run(ours), split] {
            assert_eq!(got.shape(), want.shape(), "{what}");
            let (got, want) = (
                got.to_plain_array_view::<f32>().unwrap().to_owned(),
                want.to_plain_array_view::<f32>().unwrap().to_owned(),
            );
            let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
            for (a, b) in got.iter().zip(want.iter()) {
                assert!((a - b).abs() <= 1e-5 * scale, "{what}: {a} vs tract's {b}");
            }
        }
    }

    /// `n` f32 values from `seed` (xorshift), one in eight a special one: NaN, ±∞, the f32
    /// bounds or a signed zero.
    pub fn f32_values(seed: u64, n: usize) -> Vec<f32> {
        let specials = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MIN,
            f32::MAX,
            -0.0,
            0.0,
        ];
        let mut state = seed | 1;
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let r = state >> 40;
                if r.is_multiple_of(8) {
                    specials[(r / 8) as usize % specials.len()]
                } else {
                    r as f32 / 1e5 - 80.0
                }
            })
            .collect()
    }

    /// `op` evaluated on `inputs` (a single-output op).
    pub fn eval(op: &dyn tract_onnx::tract_core::ops::EvalOp, inputs: &[&Tensor]) -> Tensor {
        let inputs = inputs.iter().map(|t| (*t).clone().into_tvalue()).collect();
        op.eval_out_of_plan(inputs)
            .unwrap()
            .unwrap()
            .remove(0)
            .into_tensor()
    }

    /// An f32 tensor's values as bits: NaN compares equal to itself.
    pub fn bits(t: &Tensor) -> Vec<u32> {
        t.to_plain_array_view::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    }

    /// One ConvInteger layer (no weights' zero point), optimised by tract.
    pub struct Conv {
        pub ci: usize,
        pub co: usize,
        pub group: usize,
        pub k: usize,
        /// [stride, pad, dilation], the same along both axes.
        pub geometry: [i64; 3],
        /// Input height and width.
        pub size: usize,
        /// f32 input through QuantizeLinear (scale 1/32) instead of i8 input.
        pub quantize: bool,
        /// The input's zero point (QuantizeLinear's, and ConvInteger's where not 0).
        pub zero_point: i8,
    }

    impl Conv {
        /// x [1, ci, size, size] → (QuantizeLinear →) ConvInteger → i32 y.
        pub fn model(&self) -> TypedModel {
            self.branched(1)
        }

        /// `branches` ConvInteger layers with different weights on the same (quantised)
        /// input, y their sum.
        pub fn branched(&self, branches: usize) -> TypedModel {
            load(self.graph(branches))
                .into_optimized()
                .expect("a ConvInteger layer optimises")
        }

        /// [`Conv::model`] with its first weight `w` (the others within ±127).
        pub fn with_first_weight(&self, w: i8) -> TypedModel {
            let mut graph = self.graph(1);
            graph.initializer[0].raw_data[0] = w as u8;
            load(graph)
                .into_optimized()
                .expect("a ConvInteger layer optimises")
        }

        /// The layer's accumulators cast to f32, multiplied by a scale and added a bias per
        /// channel (`[co, 1, 1]`, or with the batch axis), then `activation`, as `quantize`
        /// writes an int8 layer.
        pub fn dequantised(&self, batch_axis: bool, activation: Activation) -> TypedModel {
            let co = self.co;
            let mut graph = self.graph(1);
            graph.node.last_mut().expect("the layer").output = vec!["acc".into()];
            let per_channel: &[usize] = if batch_axis {
                &[1, co, 1, 1]
            } else {
                &[co, 1, 1]
            };
            let floats = |f: &dyn Fn(usize) -> f32| -> Vec<u8> {
                (0..co).flat_map(|c| f(c).to_le_bytes()).collect()
            };
            graph.initializer.extend([
                tensor(
                    "scale",
                    DataType::Float,
                    per_channel,
                    floats(&|c| 1e-3 * (c as f32 + 0.37)),
                ),
                tensor(
                    "bias",
                    DataType::Float,
                    per_channel,
                    floats(&|c| c as f32 * 0.7 - 1.3),
                ),
            ]);
            let node = |op: &str, input: &[&str], output: &str, attribute| pb::NodeProto {
                op_type: op.into(),
                input: input.iter().map(|i| i.to_string()).collect(),
                output: vec![output.into()],
                attribute,
                ..Default::default()
            };
            let last = if activation == Activation::None {
                "y"
            } else {
                "a"
            };
            let to_f32 = int_attr("to", DataType::Float as i64);
            graph.node.extend([
                node("Cast", &["acc"], "f", vec![to_f32]),
                node("Mul", &["f", "scale"], "scaled", vec![]),
                node("Add", &["scaled", "bias"], last, vec![]),
            ]);
            graph.node.extend(activation.nodes("a", "y"));
            graph.output = vec![value("y", DataType::Float, None)];
            load(graph)
                .into_optimized()
                .expect("a dequantised ConvInteger layer optimises")
        }

        fn graph(&self, branches: usize) -> pb::GraphProto {
            let (ci, co, k) = (self.ci, self.co, self.k);
            let [stride, pad, dilation] = self.geometry;
            let mut nodes = vec![];
            let mut initializer: Vec<_> = (0..branches)
                .map(|b| {
                    let weights: Vec<u8> = (0..co * ci / self.group * k * k)
                        .map(|i| (((i * 37 + b * 101) % 255) as i32 - 127) as i8 as u8)
                        .collect();
                    let shape = [co, ci / self.group, k, k];
                    tensor(&format!("w{b}"), DataType::Int8, &shape, weights)
                })
                .collect();
            let x_type = if self.quantize {
                initializer.push(tensor(
                    "s",
                    DataType::Float,
                    &[],
                    (1.0f32 / 32.0).to_le_bytes().to_vec(),
                ));
                nodes.push(pb::NodeProto {
                    op_type: "QuantizeLinear".into(),
                    input: vec!["x".into(), "s".into(), "z".into()],
                    output: vec!["xq".into()],
                    ..Default::default()
                });
                DataType::Float
            } else {
                DataType::Int8
            };
            initializer.push(tensor(
                "z",
                DataType::Int8,
                &[],
                vec![self.zero_point as u8],
            ));
            let y = |b: usize| {
                if branches == 1 {
                    "y".into()
                } else {
                    format!("y{b}")
                }
            };
            for b in 0..branches {
                nodes.push(pb::NodeProto {
                    op_type: "ConvInteger".into(),
                    input: [
                        if self.quantize { "xq" } else { "x" }.into(),
                        format!("w{b}"),
                    ]
                    .into_iter()
                    .chain((self.zero_point != 0).then(|| "z".into()))
                    .collect(),
                    output: vec![y(b)],
                    attribute: vec![
                        attr("pads", &[pad; 4]),
                        attr("strides", &[stride; 2]),
                        attr("dilations", &[dilation; 2]),
                        int_attr("group", self.group as i64),
                    ],
                    ..Default::default()
                });
            }
            if branches > 1 {
                nodes.push(pb::NodeProto {
                    op_type: "Sum".into(),
                    input: (0..branches).map(y).collect(),
                    output: vec!["y".into()],
                    ..Default::default()
                });
            }
            pb::GraphProto {
                node: nodes,
                input: vec![value("x", x_type, Some(&[1, ci, self.size, self.size]))],
                output: vec![value("y", DataType::Int32, None)],
                initializer,
                ..Default::default()
            }
        }
    }

    /// `conv` dequantised ([`Conv::dequantised`]) with each activation, its scale and bias with
    /// and without the batch axis: [`accelerate`] plans one op `name` doing all of it, checked
    /// as [`run_both`] does with each of `variants` swapped in by `variant`.
    pub fn run_epilogues<V: Copy>(
        conv: &Conv,
        name: &str,
        variants: &[V],
        variant: impl Fn(&TypedNode, V) -> Option<Box<dyn TypedOp>>,
    ) {
        for (batch_axis, activation) in [
            (false, Activation::None),
            (true, Activation::Relu),
            (false, Activation::Silu),
            (true, Activation::LeakyRelu),
        ] {
            let model = conv.dequantised(batch_axis, activation);
            let op = format!("{name}{}", activation.steps());
            for v in variants {
                run_both(&model, &op, 1, |node| variant(node, *v));
            }
        }
    }

    /// Each way an int8 kernel's epilogue test runs it: the kernel's registers (or VNNI) where
    /// it has them or not, and a ReLU's floor as it is or as a max activation ([`with_max`]).
    pub const EPILOGUE_VARIANTS: [(bool, bool); 4] =
        [(true, false), (false, false), (true, true), (false, true)];

    /// The epilogue `affine` of an op, with its floor (a ReLU's 0) as a max activation after it
    /// instead where `as_max`, the form a ReLU takes in a decluttered plan: the same results
    /// through the epilogue's other path. None where `as_max` finds no floor, or an activation
    /// already.
    pub fn with_max(affine: Option<&cast::Affine>, as_max: bool) -> Option<Option<cast::Affine>> {
        if !as_max {
            return Some(affine.cloned());
        }
        let affine = affine?;
        let floor = affine.floor.filter(|_| affine.activation.is_none())?;
        Some(Some(cast::Affine {
            floor: None,
            activation: Some(activation::Activation::Max(floor)),
            ..affine.clone()
        }))
    }

    /// What follows a layer's scale and bias.
    #[derive(Clone, Copy, PartialEq, Debug)]
    pub enum Activation {
        None,
        Relu,
        Silu,
        LeakyRelu,
    }

    impl Activation {
        pub const ALL: [Activation; 4] = [
            Activation::None,
            Activation::Relu,
            Activation::Silu,
            Activation::LeakyRelu,
        ];

        /// The ONNX nodes of it from `x` to `y` (none for [`Activation::None`]).
        pub fn nodes(self, x: &str, y: &str) -> Vec<pb::NodeProto> {
            let node = |op: &str, input: &[&str], output: &str| pb::NodeProto {
                op_type: op.into(),
                input: input.iter().map(|i| i.to_string()).collect(),
                output: vec![output.into()],
                ..Default::default()
            };
            match self {
                Activation::None => vec![],
                Activation::Relu => vec![node("Relu", &[x], y)],
                Activation::Silu => vec![node("Sigmoid", &[x], "g"), node("Mul", &[x, "g"], y)],
                Activation::LeakyRelu => vec![pb::NodeProto {
                    attribute: vec![pb::AttributeProto {
                        name: "alpha".into(),
                        r#type: AttributeType::Float as i32,
                        f: 0.1,
                        ..Default::default()
                    }],
                    ..node("LeakyRelu", &[x], y)
                }],
            }
        }

        /// The suffix of the name of a float kernel applying it.
        pub fn suffix(self) -> &'static str {
            match self {
                Activation::None => "",
                Activation::Relu => "+Max",
                Activation::Silu => "+Silu",
                Activation::LeakyRelu => "+LeakyRelu",
            }
        }

        /// The steps of the op that does the scale, bias and this.
        pub fn steps(self) -> String {
            format!("+Mul+Add{}", self.suffix())
        }
    }

    /// Checks that [`accelerate`] puts exactly `count` `name` ops into `tracts` and that the
    /// plan then gives tract's output bit for bit, on one thread and split over two, on an
    /// input spanning i8 (and beyond, for f32 input, to saturate); `variant` may swap each op
    /// for another build of it first.
    pub fn run_both(
        tracts: &TypedModel,
        name: &str,
        count: usize,
        variant: impl Fn(&TypedNode) -> Option<Box<dyn TypedOp>>,
    ) {
        run_both_with(tracts, true, name, count, variant)
    }

    /// [`run_both`], planned by [`accelerate_with`] `direct_conv`.
    pub fn run_both_with(
        tracts: &TypedModel,
        direct_conv: bool,
        name: &str,
        count: usize,
        variant: impl Fn(&TypedNode) -> Option<Box<dyn TypedOp>>,
    ) {
        let mut ours = accelerate_with(tracts.clone(), direct_conv).unwrap();
        let ids: Vec<usize> = ours
            .nodes()
            .iter()
            .filter(|n| n.op.name() == name)
            .map(|n| n.id)
            .collect();
        assert_eq!(ids.len(), count, "{count} {name} in {ours}");
        for id in ids {
            if let Some(op) = variant(ours.node(id)) {
                ours.node_mut(id).op = op;
            }
        }
        let fact = tracts.input_fact(0).unwrap();
        let shape = fact.shape.as_concrete().unwrap().to_vec();
        let values = (0..shape.iter().product::<usize>()).map(|i| (i * 7919 % 251) as i32 - 125);
        let x = if fact.datum_type == f32::datum_type() {
            tensor1(&values.map(|v| v as f32 * 0.37).collect::<Vec<_>>())
        } else {
            tensor1(&values.map(|v| v as i8).collect::<Vec<_>>())
        };
        let x = x.into_shape(&shape).unwrap();
        let run = |m: TypedModel| {
            m.into_runnable()
                .and_then(|p| p.run(tvec!(x.clone().into_tvalue())))
                .unwrap()
                .remove(0)
        };
        let expected = run(tracts.clone());
        assert_eq!(expected, run(ours.clone()), "{name}: {tracts}");
        let pool = tract_linalg::multithread::Executor::multithread(2);
        let split = tract_linalg::multithread::multithread_tract_scope(pool, || run(ours));
        assert_eq!(expected, split, "{name} on 2 threads: {tracts}");
    }
}
