//! Constant padding of f32 images along their last two axes, as tract puts before each padded
//! float convolution it plans with a lazy im2col.
//!
//! tract 0.23.9 pads through ndarray's generic slicing: YOLOv8n-320's 33 Pad took 3% of its
//! float run. [`FastPad`] fills the border and copies each row once; the values are tract's.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::array::{Pad, PadMode};

use super::split;

/// tract's constant-mode Pad of f32 values along the last two axes only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastPad(pub Pad);

/// The fast op standing for `node` when it is one this handles.
pub fn replacement(model: &TypedModel, node: &TypedNode) -> TractResult<Option<FastPad>> {
    let Some(op) = node.op_as::<Pad>() else {
        return Ok(None);
    };
    let x = model.outlet_fact(node.inputs[0])?;
    let rank = op.pads.len();
    let fits = x.datum_type == f32::datum_type()
        && rank >= 2
        && op.pads[..rank - 2].iter().all(|p| *p == (0, 0))
        && matches!(&op.mode, PadMode::Constant(c) if c.datum_type() == f32::datum_type() && c.len() == 1);
    Ok(fits.then(|| FastPad(op.clone())))
}

impl Op for FastPad {
    fn name(&self) -> StaticName {
        "FastPad".into()
    }

    op_as_typed_op!();
}

impl EvalOp for FastPad {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = &inputs[0];
        let rank = input.rank();
        let [(top, bottom), (left, right)] = [self.0.pads[rank - 2], self.0.pads[rank - 1]];
        let (h, w) = (input.shape()[rank - 2], input.shape()[rank - 1]);
        let (ph, pw) = (top + h + bottom, left + w + right);
        let mut shape: TVec<usize> = input.shape().into();
        shape[rank - 2] = ph;
        shape[rank - 1] = pw;
        let PadMode::Constant(value) = &self.0.mode else {
            bail!("FastPad: not constant padding");
        };
        let value = *value.try_as_plain_ram()?.to_scalar::<f32>()?;
        let plain = input.try_as_plain_ram()?;
        let x = plain.as_slice::<f32>()?;
        // SAFETY: every value is written below: the border with `value`, the rest copied.
        let mut output = unsafe { Tensor::uninitialized::<f32>(&shape)? };
        {
            let mut out_plain = output.try_as_plain_ram_mut()?;
            let out = out_plain.as_slice_mut::<f32>()?;
            let work = out.len();
            split(out, ph * pw, work, |first, planes| {
                for (p, plane) in planes.chunks_exact_mut(ph * pw).enumerate() {
                    let src = &x[(first + p) * h * w..][..h * w];
                    plane[..top * pw].fill(value);
                    for (row, src) in plane[top * pw..][..h * pw]
                        .chunks_exact_mut(pw)
                        .zip(src.chunks_exact(w))
                    {
                        row[..left].fill(value);
                        row[left..][..w].copy_from_slice(src);
                        row[left + w..].fill(value);
                    }
                    plane[(top + h) * pw..].fill(value);
                }
                Ok(())
            })?;
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for FastPad {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        self.0.output_facts(inputs)
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::kernels::tests::{bits, eval};

    proptest! {
        /// Ranks 2 to 4, borders of 0 to 3 on each side, any constant: tract's Pad value for
        /// value.
        #[test]
        fn pads_as_tract_does(
            shape in prop::collection::vec(1..7usize, 2..5),
            pads in prop::array::uniform4(0..4usize),
            value in prop_oneof![Just(0.0f32), Just(-1.5f32), any::<f32>()],
        ) {
            let len: usize = shape.iter().product();
            let x = Tensor::from_shape(&shape, &(0..len).map(|i| i as f32 - 7.5).collect::<Vec<_>>()).unwrap();
            let mut all = vec![(0, 0); shape.len()];
            let rank = shape.len();
            all[rank - 2] = (pads[0], pads[1]);
            all[rank - 1] = (pads[2], pads[3]);
            let op = Pad { pads: all, mode: PadMode::Constant(Arc::new(tensor0(value))) };
            let (want, got) = (eval(&op, &[&x]), eval(&FastPad(op.clone()), &[&x]));
            prop_assert_eq!(got.shape(), want.shape());
            prop_assert_eq!(bits(&got), bits(&want));
        }
    }
}
