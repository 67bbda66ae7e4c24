//! The i32 → f32 Cast after every int8 convolution (ConvInteger's accumulators, before their
//! scale and bias), and that scale and bias.
//!
//! tract 0.23.9 casts through its generic per-value conversion, ~1.3 ns a value even fully
//! optimised: a third of a 1×1 int8 layer's time, more than its matmul. [`FastCastI32F32`]
//! converts in place, in the accumulators' own buffer when nothing else holds it, with Rust's
//! `as` (round to nearest even), which is what tract's conversion does too. Where tract's
//! per-channel `OptBinChain(Mul+Add)` alone reads the result, the same pass applies it
//! ([`fused`]): one multiply, then one add, each rounded, as tract's two steps, and the max
//! with a constant where the chain ends with one (a ReLU); and a Silu or LeakyRelu reading that
//! alone, with tract's own kernel. The runtime's int8 kernels run the same on their
//! accumulators ([`Epilogue`]).

use tract_linalg::multithread::BShare;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::OptBinChain;
use tract_onnx::tract_core::ops::cast::Cast;
use tract_onnx::tract_core::ops::change_axes::IntoShape;

use super::activation::{self, Activation, Prepared};
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
    /// Then the activation that read the chain alone.
    pub activation: Option<Activation>,
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
    let Some(outlet) = through_reshapes(model, node.inputs[0])? else {
        return Ok(None);
    };
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
    // An activation reading the chain alone joins the pass.
    let activation = activation::after(model, chain_out)?;
    fast.affine = Some(Affine {
        scale,
        bias,
        shape,
        floor,
        activation: activation.map(|a| a.0),
    });
    let computed = activation.map_or(chain_out, |a| a.1);
    Ok(Some((fast, cast_node.inputs[0], computed)))
}

/// The outlet whose values reach `outlet` through the reshapes tract leaves between ops (the
/// values do not move), if each on the way is read by the next node alone.
fn through_reshapes(model: &TypedModel, mut outlet: OutletId) -> TractResult<Option<OutletId>> {
    loop {
        if super::only_reader(model, outlet)?.is_none() {
            return Ok(None);
        }
        match model.node(outlet.node).op_as::<IntoShape>() {
            Some(_) => outlet = model.node(outlet.node).inputs[0],
            None => return Ok(Some(outlet)),
        }
    }
}

/// An op of the runtime's writing i32 accumulators channel by channel, which can apply the
/// scale, bias and activation after them itself ([`Epilogue`]).
pub trait Accumulates: TypedOp + Clone {
    /// Its output channels and the values of each, if it has no epilogue yet.
    fn channels(&self) -> Option<(usize, usize)>;

    /// The same op, applying `affine` to its accumulators.
    fn with_epilogue(&self, affine: Affine) -> Self;
}

/// When `node` is a [`FastCastI32F32`] with a scale and bias per channel of the accumulators
/// an `A` writes for it alone (maybe reshaped): the `A` doing both, while they are in cache,
/// its input, and the output it computes.
pub fn into_producer<A: Accumulates>(
    model: &TypedModel,
    node: &TypedNode,
) -> TractResult<Option<(A, OutletId, OutletId)>> {
    let Some(Some(affine)) = node.op_as::<FastCastI32F32>().map(|c| &c.affine) else {
        return Ok(None);
    };
    let Some(outlet) = through_reshapes(model, node.inputs[0])? else {
        return Ok(None);
    };
    let producer = model.node(outlet.node);
    let Some(op) = producer.op_as::<A>() else {
        return Ok(None);
    };
    let fits = op.channels().is_some_and(|(co, n)| {
        affine.scale.len() == co && affine.shape.iter().product::<usize>() == co * n
    });
    let fused = fits.then(|| op.with_epilogue(affine.clone()));
    Ok(fused.map(|op| (op, producer.inputs[0], OutletId::new(node.id, 0))))
}

/// [`Affine`] ready to run on accumulators: tract's kernel of the activation for this CPU
/// fetched once.
pub struct Epilogue<'a> {
    affine: &'a Affine,
    kernel: Option<Prepared>,
    /// Whether [`Epilogue::finish`] computes what [`Epilogue::apply`] does.
    registers: bool,
}

/// The name of the op `base` that also applies `affine`, if any (`ConvI8+Mul+Add+Silu`).
pub fn op_name(base: &str, affine: Option<&Affine>) -> StaticName {
    let Some(a) = affine else {
        return base.to_string().into();
    };
    let floor = if a.floor.is_some() { "+Max" } else { "" };
    let activation = Activation::suffix(a.activation);
    format!("{base}+Mul+Add{floor}{activation}").into()
}

impl Affine {
    pub fn epilogue(&self) -> TractResult<Epilogue<'_>> {
        let kernel = self.activation.map(Activation::prepare).transpose()?;
        // Every kernel of tract's LeakyRelu gives `alpha · x` below 0 and `x` from 0 (signed
        // zeros alike), as `finish` does; its SiLU kernels differ in their last bits.
        #[cfg(target_arch = "x86_64")]
        let registers = std::arch::is_x86_feature_detected!("avx512f")
            && kernel
                .as_ref()
                .and_then(Prepared::silu_kernel)
                .is_none_or(|k| k == activation::avx512::TRACTS_SILU);
        #[cfg(not(target_arch = "x86_64"))]
        let registers = false;
        Ok(Epilogue {
            affine: self,
            kernel,
            registers,
        })
    }
}

impl Epilogue<'_> {
    /// Whether kernels may finish their accumulators with [`Epilogue::finish`] (AVX-512 F,
    /// and tract's SiLU its AVX-512 kernel, which that replicates), rather than storing them
    /// for [`Epilogue::apply`].
    pub fn in_registers(&self) -> bool {
        self.registers
    }

    /// [`Epilogue::apply`] on accumulators of channel `j` held in registers, 16 each, but for a
    /// SiLU, which [`Epilogue::finish_stored`] runs once they are stored: in place, the
    /// results' bits. Not inlined: in a kernel's loop, its constants would take the registers
    /// the accumulators need.
    ///
    /// # Safety
    /// Only where [`Epilogue::in_registers`], which checked that the CPU has AVX-512 F.
    #[cfg(target_arch = "x86_64")]
    #[inline(never)]
    #[target_feature(enable = "avx512f")]
    pub fn finish(&self, j: usize, acc: &mut [std::arch::x86_64::__m512i]) {
        let lanes = self.lanes(j);
        // One loop per activation: with the choice inside one loop, YOLOX-Nano's ConvI8 layers
        // took 8.9 ms instead of 6.1.
        match lanes.kind {
            Finish::Affine => acc.iter_mut().for_each(|a| *a = lanes.block::<AFFINE>(*a)),
            Finish::Max => acc.iter_mut().for_each(|a| *a = lanes.block::<MAX>(*a)),
            Finish::LeakyRelu => acc.iter_mut().for_each(|a| *a = lanes.block::<LEAKY>(*a)),
        }
    }

    /// What [`Epilogue::finish`] does to channel `j`'s accumulators, for a kernel to run on each
    /// block with [`Lanes::block`].
    ///
    /// # Safety
    /// As [`Epilogue::finish`].
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    pub fn lanes(&self, j: usize) -> Lanes {
        use std::arch::x86_64::*;
        let a = self.affine;
        let (kind, f) = match a.activation {
            Some(Activation::Max(f)) => (Finish::Max, f),
            // A SiLU of each of a kernel's accumulators in turn waits on its division: ConvI8's
            // 1×1 layers took 1.3× as long as with it run on the stored values.
            None | Some(Activation::Silu) => (Finish::Affine, 0.0),
            Some(Activation::LeakyRelu(alpha)) => (Finish::LeakyRelu, alpha),
        };
        Lanes {
            scale: _mm512_set1_ps(a.scale[j]),
            bias: _mm512_set1_ps(a.bias[j]),
            floor: _mm512_set1_ps(a.floor.unwrap_or(f32::NEG_INFINITY)),
            f: _mm512_set1_ps(f),
            kind,
        }
    }

    /// Whether values [`Epilogue::finish`] computed, once stored, need
    /// [`Epilogue::finish_stored`].
    pub fn stored_later(&self) -> bool {
        self.affine.activation == Some(Activation::Silu)
    }

    /// What [`Epilogue::finish`] left undone, on stored values it computed.
    pub fn finish_stored(&self, values: &mut [i32]) -> TractResult<()> {
        match self.stored_later() {
            true => self.activate(values),
            false => Ok(()),
        }
    }

    /// Accumulators of block (channel) `j`, in place, to the f32 results' bits: one multiply,
    /// then one add, each rounded as tract's two steps, the floor, then tract's kernel of the
    /// activation.
    pub fn apply(&self, j: usize, values: &mut [i32]) -> TractResult<()> {
        let Affine {
            scale, bias, floor, ..
        } = self.affine;
        let (s, b) = (scale[j], bias[j]);
        match floor {
            None => {
                for v in values.iter_mut() {
                    *v = ((*v as f32) * s + b).to_bits() as i32;
                }
            }
            Some(f) => {
                for v in values.iter_mut() {
                    *v = ((*v as f32) * s + b).max(*f).to_bits() as i32;
                }
            }
        }
        self.activate(values)
    }

    /// tract's kernel of the activation, if any, on values holding f32s' bits.
    fn activate(&self, values: &mut [i32]) -> TractResult<()> {
        // SAFETY: the values hold f32s; same size and alignment as i32.
        let values = unsafe {
            std::slice::from_raw_parts_mut(values.as_mut_ptr().cast::<f32>(), values.len())
        };
        self.kernel.as_ref().map_or(Ok(()), |k| k.run(values))
    }
}

/// Which steps follow the scale and bias (and floor) in registers: [`Lanes::block`]'s `KIND`.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Finish {
    /// None (or a SiLU, run once the values are stored).
    Affine,
    /// The max with a constant.
    Max,
    LeakyRelu,
}

/// [`Finish`] as `KIND` values (const generics take no enums).
#[cfg(target_arch = "x86_64")]
pub const AFFINE: u8 = Finish::Affine as u8;
#[cfg(target_arch = "x86_64")]
pub const MAX: u8 = Finish::Max as u8;
#[cfg(target_arch = "x86_64")]
pub const LEAKY: u8 = Finish::LeakyRelu as u8;

/// One channel's epilogue, 16 lanes of each constant.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub struct Lanes {
    scale: std::arch::x86_64::__m512,
    bias: std::arch::x86_64::__m512,
    /// The floor, or −∞ where there is none: the max with it changes no value, none a NaN.
    floor: std::arch::x86_64::__m512,
    /// The activation's constant: the max's, or LeakyReLU's alpha.
    f: std::arch::x86_64::__m512,
    pub kind: Finish,
}

#[cfg(target_arch = "x86_64")]
impl Lanes {
    /// 16 accumulators to their results' bits: one multiply, then one add, each rounded as
    /// tract's two steps, the floor, then the activation `KIND` ([`Finish`], whose
    /// [`Lanes::kind`] it must be).
    ///
    /// # Safety
    /// The CPU has AVX-512 F.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub fn block<const KIND: u8>(
        &self,
        acc: std::arch::x86_64::__m512i,
    ) -> std::arch::x86_64::__m512i {
        use std::arch::x86_64::*;
        let v = _mm512_add_ps(
            _mm512_mul_ps(_mm512_cvtepi32_ps(acc), self.scale),
            self.bias,
        );
        let v = _mm512_max_ps(v, self.floor);
        _mm512_castps_si512(match KIND {
            MAX => _mm512_max_ps(v, self.f),
            LEAKY => super::activation::avx512::leaky_relu(v, self.f),
            _ => v,
        })
    }
}

/// `values`, whose bits are f32s now, as the f32 tensor of `affine`'s shape (the chain's).
pub fn as_f32(mut values: Tensor, affine: Option<&Affine>) -> TractResult<Tensor> {
    // SAFETY: every value holds an f32's bits, and both types are 4 bytes.
    unsafe { values.set_datum_type(f32::datum_type()) };
    match affine {
        Some(a) => values.into_shape(&a.shape),
        None => Ok(values),
    }
}

impl Op for FastCastI32F32 {
    fn name(&self) -> StaticName {
        op_name("FastCastI32F32", self.affine.as_ref())
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
                Some(affine) => {
                    let period = len / affine.scale.len();
                    let epilogue = affine.epilogue()?;
                    // Whole blocks, each with its scale and bias.
                    split(values_i32, period, len, |first, chunk| {
                        for (j, block) in chunk.chunks_exact_mut(period).enumerate() {
                            epilogue.apply(first + j, block)?;
                        }
                        Ok(())
                    })?
                }
            }
        }
        Ok(tvec!(as_f32(values, self.affine.as_ref())?.into_tvalue()))
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

    use super::*;
    use crate::kernels::tests::{Activation, Conv, eval, run_both_with};

    /// The scale and bias, and a ReLU or a Silu after them, go into the Cast's pass, whatever
    /// reshapes tract leaves between: tract's outputs bit for bit, on one thread and split over
    /// two.
    #[test]
    fn scale_bias_and_activation_fuse_into_the_cast() {
        for co in [1, 16, 24] {
            let conv = Conv {
                ci: 8,
                co,
                group: 1,
                k: 3,
                geometry: [1, 1, 1],
                size: 12,
                quantize: false,
                zero_point: 0,
            };
            for batch_axis in [false, true] {
                for activation in Activation::ALL {
                    let model = conv.dequantised(batch_axis, activation);
                    let op = format!("FastCastI32F32{}", activation.steps());
                    // Not the direct convolution, which would take the chain itself.
                    run_both_with(&model, false, &op, 1, |_| None);
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
