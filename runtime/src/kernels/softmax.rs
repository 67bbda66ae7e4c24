//! Softmax of f32 values over one axis, where tract's vectorised row kernel does not apply:
//! rows whose length is not a multiple of 4 (UltraFace's two classes per anchor), or an axis
//! that is not the last (SSD-style scores over channels).
//!
//! tract 0.23.9 runs three kernel calls per row of such a softmax (maximum, exponentials and
//! their sum, scaling), or walks an ndarray view for an inner axis: UltraFace RFB-320's
//! softmax over 4420 rows of 2 took a quarter of its float run. [`FastSoftmax`] computes the
//! same `exp(x - max) / Σ exp(x - max)` a block of rows at a time.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::nn::{Softmax, SoftmaxKind};

use super::split;

/// tract's f32 Softmax over one axis, where its row kernel does not take the rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastSoftmax {
    softmax: Softmax,
    /// Values along the axis.
    len: usize,
    /// Values after the axis: the stride along it.
    inner: usize,
}

/// The fast op standing for `node` when it is one this handles.
pub fn replacement(model: &TypedModel, node: &TypedNode) -> TractResult<Option<FastSoftmax>> {
    let Some(op) = node.op_as::<Softmax>() else {
        return Ok(None);
    };
    let x = model.outlet_fact(node.inputs[0])?;
    let (Some(shape), &[axis]) = (x.shape.as_concrete(), &*op.axes) else {
        return Ok(None);
    };
    let (len, inner) = (shape[axis], shape[axis + 1..].iter().product::<usize>());
    // tract's own kernel takes rows of a multiple of 4 values along the last axis.
    let tracts = inner == 1 && len.is_multiple_of(4);
    let fits = op.kind == SoftmaxKind::Softmax
        && op.quant_output_dt.is_none()
        && x.datum_type == f32::datum_type()
        && len > 1
        && !tracts;
    Ok(fits.then(|| FastSoftmax {
        softmax: op.clone(),
        len,
        inner,
    }))
}

impl Op for FastSoftmax {
    fn name(&self) -> StaticName {
        "FastSoftmax".into()
    }

    op_as_typed_op!();
}

impl EvalOp for FastSoftmax {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let mut output = inputs[0].clone().into_tensor();
        let (len, inner) = (self.len, self.inner);
        {
            let mut plain = output.try_as_plain_ram_mut()?;
            let data = plain.as_slice_mut::<f32>()?;
            ensure!(
                data.len().is_multiple_of(len * inner),
                "FastSoftmax planned for {len}×{inner} blocks"
            );
            let work = data.len();
            split(data, len * inner, work, |_, blocks| {
                // `exp` is glibc's, VEX-encoded where the CPU has FMA.
                super::clean_upper_state();
                match inner {
                    1 => blocks.chunks_exact_mut(len).for_each(softmax_row),
                    _ => {
                        // The axis strided: the maximum and sum of `inner` rows at once.
                        let (mut max, mut sum) = (vec![0f32; inner], vec![0f32; inner]);
                        for block in blocks.chunks_exact_mut(len * inner) {
                            max.fill(f32::NEG_INFINITY);
                            for row in block.chunks_exact(inner) {
                                for (m, v) in max.iter_mut().zip(row) {
                                    *m = m.max(*v);
                                }
                            }
                            sum.fill(0.0);
                            for row in block.chunks_exact_mut(inner) {
                                for ((v, m), s) in row.iter_mut().zip(&max).zip(&mut sum) {
                                    *v = (*v - m).exp();
                                    *s += *v;
                                }
                            }
                            sum.iter_mut().for_each(|s| *s = s.recip());
                            for row in block.chunks_exact_mut(inner) {
                                for (v, r) in row.iter_mut().zip(&sum) {
                                    *v *= r;
                                }
                            }
                        }
                    }
                }
                Ok(())
            })?;
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

/// One contiguous row, in place.
fn softmax_row(row: &mut [f32]) {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
    let mut sum = 0.0;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let r = sum.recip();
    row.iter_mut().for_each(|v| *v *= r);
}

impl TypedOp for FastSoftmax {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        self.softmax.output_facts(inputs)
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::kernels::tests::eval;

    proptest! {
        /// Every axis of shapes up to rank 4, values spread over ±40: tract's op within 1e-6
        /// (the values are probabilities; tract's exponential is its own approximation).
        #[test]
        fn normalises_as_tract_does(
            shape in prop::collection::vec(1..9usize, 1..5),
            axis in 0..4usize,
            values in prop::collection::vec(-40f32..40.0, 8 * 8 * 8 * 8),
        ) {
            let axis = axis % shape.len();
            let n: usize = shape.iter().product();
            let x = Tensor::from_shape(&shape, &values[..n]).unwrap();
            let mut model = TypedModel::default();
            let input = model.add_source("x", f32::fact(&shape)).unwrap();
            let op = Softmax { axes: tvec!(axis), quant_output_dt: None, kind: SoftmaxKind::Softmax };
            let y = model.wire_node("softmax", op.clone(), &[input]).unwrap()[0];
            model.select_output_outlets(&[y]).unwrap();
            let Some(fast) = replacement(&model, model.node(y.node)).unwrap() else {
                let (len, inner) = (shape[axis], shape[axis + 1..].iter().product::<usize>());
                prop_assert!(len == 1 || (inner == 1 && len % 4 == 0));
                return Ok(());
            };
            let (want, got) = (eval(&op, &[&x]), eval(&fast, &[&x]));
            prop_assert_eq!(got.shape(), want.shape());
            let (got, want) = (got.to_plain_array_view::<f32>().unwrap(), want.to_plain_array_view::<f32>().unwrap());
            for (a, b) in got.iter().zip(want.iter()) {
                prop_assert!((a - b).abs() <= 1e-6, "{} vs tract's {}", a, b);
            }
        }
    }
}
