//! Strided slices along one axis, as YOLOX's Focus stem takes every other row and column of
//! the image four ways.
//!
//! tract 0.23.9 copies such a slice value by value through an ndarray view: YOLOX-Nano's six
//! Downsample took 5% of its float run. [`FastDownsample`] copies whole runs of the axes
//! after the sliced one, or gathers every `stride`-th value where the axis is the last.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::Downsample;

use super::split;

/// tract's Downsample of 1-, 2- or 4-byte values with a positive stride.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastDownsample(pub Downsample);

/// The fast op standing for `node` when it is one this handles.
pub fn replacement(model: &TypedModel, node: &TypedNode) -> TractResult<Option<FastDownsample>> {
    let Some(op) = node.op_as::<Downsample>() else {
        return Ok(None);
    };
    let x = model.outlet_fact(node.inputs[0])?;
    let fits = op.stride > 0
        && matches!(x.datum_type.size_of(), 1 | 2 | 4)
        && x.datum_type.is_copy()
        && x.shape
            .as_concrete()
            .is_some_and(|s| op.modulo < s[op.axis]);
    Ok(fits.then(|| FastDownsample(op.clone())))
}

impl Op for FastDownsample {
    fn name(&self) -> StaticName {
        "FastDownsample".into()
    }

    op_as_typed_op!();
}

impl EvalOp for FastDownsample {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = &inputs[0];
        let output = match input.datum_type().size_of() {
            1 => self.slice::<u8>(input)?,
            2 => self.slice::<u16>(input)?,
            4 => self.slice::<u32>(input)?,
            n => bail!("FastDownsample: {n}-byte values"),
        };
        Ok(tvec!(output.into_tvalue()))
    }
}

impl FastDownsample {
    /// The slice of `input`, its values moved as `T` (of their size).
    fn slice<T: Datum + Copy>(&self, input: &Tensor) -> TractResult<Tensor> {
        let Downsample {
            axis,
            stride,
            modulo,
        } = self.0;
        let stride = stride as usize;
        let shape = input.shape();
        ensure!(
            modulo < shape[axis],
            "FastDownsample: axis {axis} of {shape:?}"
        );
        let (len, inner) = (shape[axis], shape[axis + 1..].iter().product::<usize>());
        let kept = (len - modulo).div_ceil(stride);
        let mut out_shape: TVec<usize> = shape.into();
        out_shape[axis] = kept;
        let dt = input.datum_type();
        // SAFETY: the values are only moved, as `T` of their size; `dt` is a `Copy` type.
        let x = unsafe { input.as_slice_unchecked::<T>() };
        // SAFETY: every value is written below.
        let mut output = unsafe { Tensor::uninitialized::<T>(&out_shape)? };
        {
            // SAFETY: as above.
            let out = unsafe { output.as_slice_mut_unchecked::<T>() };
            let work = out.len();
            split(out, kept * inner, work, |first, blocks| {
                for (b, block) in blocks.chunks_exact_mut(kept * inner).enumerate() {
                    let src = &x[(first + b) * len * inner..][..len * inner];
                    if inner == 1 {
                        super::every(&src[modulo..], stride, block);
                    } else {
                        for (j, row) in block.chunks_exact_mut(inner).enumerate() {
                            row.copy_from_slice(&src[(modulo + j * stride) * inner..][..inner]);
                        }
                    }
                }
                Ok(())
            })?;
        }
        // SAFETY: the values are `dt`'s, moved unchanged.
        unsafe { output.set_datum_type(dt) };
        Ok(output)
    }
}

impl TypedOp for FastDownsample {
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
        /// Every axis of shapes up to rank 4, strides 1 to 4 from every offset, f32 and i8
        /// values: tract's op value for value.
        #[test]
        fn slices_as_tract_does(
            shape in prop::collection::vec(1..7usize, 1..5),
            axis in 0..4usize,
            stride in 1..5isize,
            modulo in 0..6usize,
            seed in any::<u64>(),
        ) {
            let axis = axis % shape.len();
            let modulo = modulo % shape[axis];
            let n = shape.iter().product();
            let op = Downsample { axis, stride, modulo };
            let x = Tensor::from_shape(&shape, &f32_values(seed, n)).unwrap();
            let (want, got) = (eval(&op, &[&x]), eval(&FastDownsample(op.clone()), &[&x]));
            prop_assert_eq!(got.shape(), want.shape());
            prop_assert_eq!(bits(&got), bits(&want));
            let bytes: Vec<i8> = (0..n).map(|i| (i as u64 ^ seed) as i8).collect();
            let x = Tensor::from_shape(&shape, &bytes).unwrap();
            let (want, got) = (eval(&op, &[&x]), eval(&FastDownsample(op.clone()), &[&x]));
            prop_assert_eq!(got.datum_type(), want.datum_type());
            prop_assert_eq!(got, want);
        }
    }
}
