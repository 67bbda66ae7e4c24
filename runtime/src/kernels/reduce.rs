//! Max and Min of f32 values over an axis that is not the last, as in a softmax over
//! channels (YOLOv8's distribution focal loss head).
//!
//! tract 0.23.9 reduces such an axis one output value at a time, through a slice it builds and
//! allocates per value: YOLOv8n-320's two Reduce<Max> took 6% of its int8 run. [`FastReduce`]
//! folds whole rows of the axes after the reduced one at once, in tract's order and with its
//! comparison, so the results are tract's bit for bit, NaN included.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::nn::{Reduce, Reducer};

use super::split;

/// tract's Reduce<Max> or Reduce<Min> of f32 values over one axis that is not the last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastReduce(pub Reduce);

/// The fast op standing for `node` when it is one this handles.
pub fn replacement(model: &TypedModel, node: &TypedNode) -> TractResult<Option<FastReduce>> {
    let Some(op) = node.op_as::<Reduce>() else {
        return Ok(None);
    };
    let x = model.outlet_fact(node.inputs[0])?;
    let fits = matches!(op.reducer, Reducer::Max | Reducer::Min)
        && x.datum_type == f32::datum_type()
        && matches!((&*op.axes, x.shape.as_concrete()), (&[axis], Some(shape)) if strided(shape, axis));
    Ok(fits.then(|| FastReduce(op.clone())))
}

/// Whether tract folds `axis` of `shape` value by value: more than one value along it, and
/// more than one in the axes after it (else its values are contiguous and tract takes them as
/// a slice, with a reduction kernel of its own).
fn strided(shape: &[usize], axis: usize) -> bool {
    shape[axis] > 1 && shape[axis + 1..].iter().product::<usize>() > 1
}

impl Op for FastReduce {
    fn name(&self) -> StaticName {
        format!("FastReduce<{:?}>", self.0.reducer).into()
    }

    op_as_typed_op!();
}

impl EvalOp for FastReduce {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = &inputs[0];
        let shape = input.shape();
        let axis = self.0.axes[0];
        let (len, inner) = (shape[axis], shape[axis + 1..].iter().product::<usize>());
        let mut out_shape: TVec<usize> = shape.into();
        out_shape[axis] = 1;
        let plain = input.try_as_plain_ram()?;
        let x = plain.as_slice::<f32>()?;
        let max = self.0.reducer == Reducer::Max;
        // tract's fold: from the type's bound, `acc > v ? acc : v` (or `<`), in axis order.
        let start = if max { f32::MIN } else { f32::MAX };
        let mut output = Tensor::zero::<f32>(&out_shape)?;
        let mut out_plain = output.try_as_plain_ram_mut()?;
        let out = out_plain.as_slice_mut::<f32>()?;
        split(out, inner, x.len(), |first, out| {
            for (o, out) in out.chunks_exact_mut(inner).enumerate() {
                let rows = &x[(first + o) * len * inner..][..len * inner];
                out.fill(start);
                for row in rows.chunks_exact(inner) {
                    if max {
                        for (a, v) in out.iter_mut().zip(row) {
                            *a = if *a > *v { *a } else { *v };
                        }
                    } else {
                        for (a, v) in out.iter_mut().zip(row) {
                            *a = if *a < *v { *a } else { *v };
                        }
                    }
                }
            }
            Ok(())
        })?;
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for FastReduce {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        self.0.output_facts(inputs)
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::kernels::tests::{bits, eval, f32_values};

    proptest! {
        /// Max and Min over every axis but the last of shapes up to rank 4, with NaN, ±∞ and
        /// the f32 bounds among the values: tract's op bit for bit.
        #[test]
        fn reduces_as_tract_does(
            shape in prop::collection::vec(1..6usize, 2..5),
            axis in 0..3usize,
            max in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let axis = axis % (shape.len() - 1);
            prop_assume!(strided(&shape, axis));
            let xs = f32_values(seed, shape.iter().product());
            let x = Tensor::from_shape(&shape, &xs).unwrap();
            let op = Reduce { axes: tvec!(axis), reducer: if max { Reducer::Max } else { Reducer::Min } };
            let (want, got) = (eval(&op, &[&x]), eval(&FastReduce(op.clone()), &[&x]));
            prop_assert_eq!(got.shape(), want.shape());
            prop_assert_eq!(bits(&got), bits(&want), "{:?} over axis {}", x, axis);
        }
    }
}
