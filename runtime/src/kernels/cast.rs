//! The i32 → f32 Cast after every int8 convolution (ConvInteger's accumulators, before their
//! scale and bias).
//!
//! tract 0.23.9 casts through its generic per-value conversion, ~1.3 ns a value even fully
//! optimised: a third of a 1×1 int8 layer's time, more than its matmul. [`FastCastI32F32`]
//! converts in place, in the accumulators' own buffer when nothing else holds it, with Rust's
//! `as` (round to nearest even), which is what tract's conversion does too.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cast::Cast;

use super::split;

/// tract's Cast from i32 to f32.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastCastI32F32(pub Cast);

/// The fast op standing for `node` when it is tract's Cast of i32 values to f32.
pub fn replacement(model: &TypedModel, node: &TypedNode) -> TractResult<Option<FastCastI32F32>> {
    let Some(op) = node.op_as::<Cast>() else {
        return Ok(None);
    };
    let fits = op.to == f32::datum_type()
        && model.outlet_fact(node.inputs[0])?.datum_type == i32::datum_type();
    Ok(fits.then(|| FastCastI32F32(op.clone())))
}

impl Op for FastCastI32F32 {
    fn name(&self) -> StaticName {
        "FastCastI32F32".into()
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
            split(values_i32, 1, len, |_, chunk| {
                for v in chunk {
                    *v = (*v as f32).to_bits() as i32;
                }
                Ok(())
            })?;
        }
        // SAFETY: every value now holds an f32's bits, and both types are 4 bytes.
        unsafe { values.set_datum_type(f32::datum_type()) };
        Ok(tvec!(values.into_tvalue()))
    }
}

impl TypedOp for FastCastI32F32 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        self.0.output_facts(inputs)
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::kernels::tests::eval;

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
            let fast = FastCastI32F32(cast);
            prop_assert_eq!(&run(&fast), &want);
            let pool = tract_linalg::multithread::Executor::multithread(2);
            let split = tract_linalg::multithread::multithread_tract_scope(pool, || run(&fast));
            prop_assert_eq!(&split, &want);
        }
    }
}
