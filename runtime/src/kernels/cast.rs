//! The i32 → f32 Cast after every int8 convolution (ConvInteger's accumulators, before their
//! scale and bias), and that scale and bias.
//!
//! tract 0.23.9 casts through its generic per-value conversion, ~1.3 ns a value even fully
//! optimised: a third of a 1×1 int8 layer's time, more than its matmul. [`FastCastI32F32`]
//! converts in place, in the accumulators' own buffer when nothing else holds it, with Rust's
//! `as` (round to nearest even), which is what tract's conversion does too. Where tract's
//! per-channel `OptBinChain(Mul+Add)` alone reads the result, the same pass applies it
//! ([`fused`]): one multiply, then one add, each rounded, as tract's two steps, and the max
//! with a constant where the chain ends with one (a ReLU); and a Silu reading that alone, with
//! tract's own Silu kernel.

use tract_linalg::multithread::BShare;
use tract_linalg::routines::Func;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::OptBinChain;
use tract_onnx::tract_core::ops::cast::Cast;
use tract_onnx::tract_core::ops::change_axes::IntoShape;
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::nn::Silu;

use super::split;

/// tract's Cast from i32 to f32, then with `affine` the scale and bias of tract's
/// `OptBinChain(Mul+Add)` after it.
#[derive(Debug, Clone, PartialEq)]
pub struct FastCastI32F32 {
    pub cast: Cast,
    pub affine: Option<Affine>,
}

// The scales and biases are constants of the model: no NaN to make equality partial.
impl Eq for FastCastI32F32 {}

/// Value `i` of `n` becomes `v · scale[j] + bias[j]` for block `j = i / (n / scale.len())`,
/// as tract's `PerBlock` operands (one per channel of NCHW values); the values then take
/// `shape`, the chain's.
#[derive(Debug, Clone, PartialEq)]
pub struct Affine {
    pub scale: Vec<f32>,
    pub bias: Vec<f32>,
    pub shape: TVec<usize>,
    /// Then the max with this constant: the chain's last step (ReLU's 0).
    pub floor: Option<f32>,
    /// Then tract's Silu, its own kernel run on each block.
    pub silu: bool,
}

/// The fast op standing for `node` when it is tract's Cast of i32 values to f32.
pub fn replacement(model: &TypedModel, node: &TypedNode) -> TractResult<Option<FastCastI32F32>> {
    let Some(op) = node.op_as::<Cast>() else {
        return Ok(None);
    };
    let fits = op.to == f32::datum_type()
        && model.outlet_fact(node.inputs[0])?.datum_type == i32::datum_type();
    Ok(fits.then(|| FastCastI32F32 {
        cast: op.clone(),
        affine: None,
    }))
}

/// When `node` is tract's `OptBinChain` of a per-block constant Mul then Add (then maybe a Max
/// with one constant value) whose input is such a Cast (maybe reshaped) read by nothing else:
/// the op doing all of them, the Cast's input, and the chain's output it computes.
pub fn fused(
    model: &TypedModel,
    node: &TypedNode,
) -> TractResult<Option<(FastCastI32F32, OutletId, OutletId)>> {
    let Some(chain) = node.op_as::<OptBinChain>() else {
        return Ok(None);
    };
    let steps: Vec<_> = chain
        .steps
        .iter()
        .map(|s| (s.binop.name(), s.share))
        .collect();
    let affine = [("Mul", BShare::PerBlock), ("Add", BShare::PerBlock)];
    if steps[..steps.len().min(2)] != affine
        || !(steps.len() == 2 || steps.len() == 3 && steps[2].0 == "Max")
    {
        return Ok(None);
    }
    // The Cast, through the reshapes tract leaves between (the values do not move), each
    // outlet read by the next node alone.
    let mut outlet = node.inputs[0];
    loop {
        if model.outlet_successors(outlet).len() != 1 || model.output_outlets()?.contains(&outlet) {
            return Ok(None);
        }
        match model.node(outlet.node).op_as::<IntoShape>() {
            Some(_) => outlet = model.node(outlet.node).inputs[0],
            None => break,
        }
    }
    let cast_node = model.node(outlet.node);
    let Some(mut fast) = replacement(model, cast_node)? else {
        return Ok(None);
    };
    let chain_out = OutletId::new(node.id, 0);
    let Some(shape) = model
        .outlet_fact(chain_out)?
        .shape
        .as_concrete()
        .map(TVec::from)
    else {
        return Ok(None);
    };
    let operand = |i: usize| -> TractResult<Option<Vec<f32>>> {
        Ok(match &model.outlet_fact(node.inputs[i])?.konst {
            Some(k) if k.datum_type() == f32::datum_type() => {
                Some(k.try_as_plain_ram()?.as_slice::<f32>()?.to_vec())
            }
            _ => None,
        })
    };
    let (Some(scale), Some(bias)) = (operand(1)?, operand(2)?) else {
        return Ok(None);
    };
    let floor = match steps.len() {
        2 => None,
        _ => match operand(3)? {
            Some(v) if !v.is_empty() && v.iter().all(|f| f.to_bits() == v[0].to_bits()) => {
                Some(v[0])
            }
            _ => return Ok(None),
        },
    };
    let len: usize = shape.iter().product();
    if scale.is_empty() || scale.len() != bias.len() || !len.is_multiple_of(scale.len()) {
        return Ok(None);
    }
    // A Silu reading the chain alone (YOLO's Conv → BN → SiLU) joins the pass.
    let silu = match model.outlet_successors(chain_out) {
        [next] if !model.output_outlets()?.contains(&chain_out) => model
            .node(next.node)
            .op_as::<ElementWiseOp>()
            .filter(|op| op.0.is::<Silu>())
            .map(|_| OutletId::new(next.node, 0)),
        _ => None,
    };
    fast.affine = Some(Affine {
        scale,
        bias,
        shape,
        floor,
        silu: silu.is_some(),
    });
    Ok(Some((fast, cast_node.inputs[0], silu.unwrap_or(chain_out))))
}

impl Op for FastCastI32F32 {
    fn name(&self) -> StaticName {
        match &self.affine {
            None => "FastCastI32F32".into(),
            Some(a) => format!(
                "FastCastI32F32+Mul+Add{}{}",
                if a.floor.is_some() { "+Max" } else { "" },
                if a.silu { "+Silu" } else { "" }
            )
            .into(),
        }
    }

    op_as_typed_op!();
}

impl EvalOp for FastCastI32F32 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        // A copy only if the accumulators are shared.
        let mut values = args_1!(inputs).into_tensor();
        {
            let mut plain = values.try_as_plain_ram_mut()?;
            let values_i32 = plain.as_slice_mut::<i32>()?;
            let len = values_i32.len();
            match &self.affine {
                None => split(values_i32, 1, len, |_, chunk| {
                    for v in chunk {
                        *v = (*v as f32).to_bits() as i32;
                    }
                    Ok(())
                })?,
                Some(Affine {
                    scale,
                    bias,
                    floor,
                    silu,
                    ..
                }) => {
                    let period = len / scale.len();
                    let silu = silu.then(|| Func::Silu.ew_f32()).transpose()?;
                    // Whole blocks, each with its scale and bias.
                    split(values_i32, period, len, |first, chunk| {
                        for (j, block) in chunk.chunks_exact_mut(period).enumerate() {
                            let (s, b) = (scale[first + j], bias[first + j]);
                            match floor {
                                None => {
                                    for v in block.iter_mut() {
                                        *v = ((*v as f32) * s + b).to_bits() as i32;
                                    }
                                }
                                Some(f) => {
                                    for v in block.iter_mut() {
                                        *v = ((*v as f32) * s + b).max(*f).to_bits() as i32;
                                    }
                                }
                            }
                            if let Some(silu) = &silu {
                                // SAFETY: the block now holds f32 values; same size and
                                // alignment as i32.
                                let block = unsafe {
                                    std::slice::from_raw_parts_mut(
                                        block.as_mut_ptr().cast::<f32>(),
                                        block.len(),
                                    )
                                };
                                silu.run(block)?;
                            }
                        }
                        Ok(())
                    })?
                }
            }
        }
        // SAFETY: every value now holds an f32's bits, and both types are 4 bytes.
        unsafe { values.set_datum_type(f32::datum_type()) };
        if let Some(affine) = &self.affine {
            values = values.into_shape(&affine.shape)?;
        }
        Ok(tvec!(values.into_tvalue()))
    }
}

impl TypedOp for FastCastI32F32 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        match &self.affine {
            None => self.cast.output_facts(inputs),
            Some(affine) => Ok(tvec!(f32::fact(&affine.shape))),
        }
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use tract_onnx::pb::{self, tensor_proto::DataType};

    use super::*;
    use crate::kernels::tests::{attr, eval, int_attr, load, run_both, tensor, value};

    /// What follows a layer's scale and bias.
    #[derive(Clone, Copy, PartialEq)]
    enum Activation {
        None,
        Relu,
        Silu,
    }

    /// x [1, 8, 12, 12] i8 → ConvInteger (3×3, `co` channels, padded) → Cast → Mul by a scale
    /// and Add a bias per channel (`[co, 1, 1]`, or with the batch axis), as `quantize`
    /// writes an int8 layer, then the activation; tract's optimised model.
    fn dequantised_conv(co: usize, batch_axis: bool, activation: Activation) -> TypedModel {
        let ci = 8;
        let weights = (0..co * ci * 9).map(|i| ((i * 37 % 255) as i32 - 127) as i8 as u8);
        let per_channel: &[usize] = if batch_axis {
            &[1, co, 1, 1]
        } else {
            &[co, 1, 1]
        };
        let floats = |f: &dyn Fn(usize) -> f32| -> Vec<u8> {
            (0..co).flat_map(|c| f(c).to_le_bytes()).collect()
        };
        let node = |op: &str, input: &[&str], output: &str, attribute| pb::NodeProto {
            op_type: op.into(),
            input: input.iter().map(|i| i.to_string()).collect(),
            output: vec![output.into()],
            attribute,
            ..Default::default()
        };
        load(pb::GraphProto {
            node: [
                node(
                    "ConvInteger",
                    &["x", "w"],
                    "acc",
                    vec![attr("pads", &[1; 4])],
                ),
                node(
                    "Cast",
                    &["acc"],
                    "f",
                    vec![int_attr("to", DataType::Float as i64)],
                ),
                node("Mul", &["f", "s"], "scaled", vec![]),
                node(
                    "Add",
                    &["scaled", "b"],
                    if activation == Activation::None {
                        "y"
                    } else {
                        "a"
                    },
                    vec![],
                ),
            ]
            .into_iter()
            .chain(match activation {
                Activation::None => vec![],
                Activation::Relu => vec![node("Relu", &["a"], "y", vec![])],
                Activation::Silu => vec![
                    node("Sigmoid", &["a"], "g", vec![]),
                    node("Mul", &["a", "g"], "y", vec![]),
                ],
            })
            .collect(),
            input: vec![value("x", DataType::Int8, Some(&[1, ci, 12, 12]))],
            output: vec![value("y", DataType::Float, None)],
            initializer: vec![
                tensor("w", DataType::Int8, &[co, ci, 3, 3], weights.collect()),
                tensor(
                    "s",
                    DataType::Float,
                    per_channel,
                    floats(&|c| 1e-3 * (c as f32 + 0.37)),
                ),
                tensor(
                    "b",
                    DataType::Float,
                    per_channel,
                    floats(&|c| c as f32 * 0.7 - 1.3),
                ),
            ],
            ..Default::default()
        })
        .into_optimized()
        .expect("a dequantised ConvInteger optimises")
    }

    /// The scale and bias, and a ReLU or a Silu after them, go into the Cast's pass, whatever
    /// reshapes tract leaves between: tract's outputs bit for bit, on one thread and split over
    /// two.
    #[test]
    fn scale_bias_and_activation_fuse_into_the_cast() {
        for co in [1, 16, 24] {
            for batch_axis in [false, true] {
                for (activation, op) in [
                    (Activation::None, "FastCastI32F32+Mul+Add"),
                    (Activation::Relu, "FastCastI32F32+Mul+Add+Max"),
                    (Activation::Silu, "FastCastI32F32+Mul+Add+Silu"),
                ] {
                    let model = dequantised_conv(co, batch_axis, activation);
                    run_both(&model, op, 1, |_| None);
                }
            }
        }
    }

    proptest! {
        // Long vectors, to split over threads: fewer of them.
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Any i32, the ones f32 cannot hold exactly (ties included) and the extremes: tract's
        /// Cast bit for bit, on one thread and split over two.
        #[test]
        fn casts_as_tract_does(values in prop::collection::vec(prop_oneof![
            any::<i32>(),
            Just(i32::MAX),
            Just(i32::MIN),
            // Between 2^24 and 2^25 every odd value is a tie.
            (1i32 << 24)..(1 << 25),
        ], 1..150_000)) {
            let x = tensor1(&values);
            let cast = Cast { to: f32::datum_type() };
            let run = |op: &dyn EvalOp| eval(op, &[&x]);
            let want = run(&cast);
            let fast = FastCastI32F32 { cast, affine: None };
            prop_assert_eq!(&run(&fast), &want);
            let pool = tract_linalg::multithread::Executor::multithread(2);
            let split = tract_linalg::multithread::multithread_tract_scope(pool, || run(&fast));
            prop_assert_eq!(&split, &want);
        }
    }
}
