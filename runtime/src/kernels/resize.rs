//! Resizing of f32 images along their last two axes, as NanoDet's feature pyramid upsamples
//! (bilinear) between its levels.
//!
//! tract 0.23.9 resamples a whole copy of the tensor one axis at a time, along the last axis
//! one output value at a time: NanoDet-m's four Resize took a fifth of its float run.
//! [`FastResize`] applies tract's own per-axis plans (the taps each output value reads and
//! their weights) a plane at a time, rows first and then columns as tract does, adding the
//! taps in tract's order: the values are tract's bit for bit.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::nn::resize::{AxisPlan, Resize};

use super::split;

/// The taps of one resized axis: `window` input indices and weights per output index.
#[derive(Debug, Clone, PartialEq)]
struct Taps {
    window: usize,
    indices: Vec<usize>,
    weights: Vec<f32>,
}

impl Taps {
    /// tract's plan, unless it leaves an output value to extrapolation (tract's core op never
    /// does).
    fn of(plan: AxisPlan) -> Option<Taps> {
        (!plan.extrapolated.contains(&true)).then_some(Taps {
            window: plan.window,
            indices: plan.indices,
            weights: plan.weights,
        })
    }

    /// `out` from `line` along this axis: each value from 0, each tap of non-zero weight
    /// added in turn, as tract does (a zero weight times ∞ would make a NaN).
    fn resample(&self, line: &[f32], out: &mut [f32]) {
        match self.window {
            2 => self.resample_by::<2>(line, out),
            4 => self.resample_by::<4>(line, out),
            _ => self.resample_by::<0>(line, out),
        }
    }

    /// [`Taps::resample`] with the window known at compile time (`W` = 0: not).
    #[inline(always)]
    fn resample_by<const W: usize>(&self, line: &[f32], out: &mut [f32]) {
        let window = if W == 0 { self.window } else { W };
        let taps = self
            .indices
            .chunks_exact(window)
            .zip(self.weights.chunks_exact(window));
        for (o, (indices, weights)) in out.iter_mut().zip(taps) {
            let mut acc = 0.0f32;
            for (&i, &w) in indices.iter().zip(weights) {
                if w != 0.0 {
                    acc += w * line[i];
                }
            }
            *o = acc;
        }
    }
}

/// tract's Resize of f32 values where only the last two axes change.
#[derive(Debug, Clone, PartialEq)]
pub struct FastResize {
    resize: Resize,
    input_hw: [usize; 2],
    output_hw: [usize; 2],
    /// The rows' and the columns' taps; `None` for an axis tract leaves as it is.
    rows: Option<Taps>,
    cols: Option<Taps>,
}

// The weights are tract's plans for constant shapes: no NaN.
impl Eq for FastResize {}

/// The fast op standing for `node` when it is one this handles.
pub fn replacement(model: &TypedModel, node: &TypedNode) -> TractResult<Option<FastResize>> {
    let Some(op) = node.op_as::<Resize>() else {
        return Ok(None);
    };
    let x = model.outlet_fact(node.inputs[0])?;
    let aux = |ix: Option<usize>| -> TractResult<Option<Arc<Tensor>>> {
        Ok(match ix.and_then(|ix| node.inputs.get(ix)) {
            Some(outlet) => model.outlet_fact(*outlet)?.konst.clone(),
            None => None,
        })
    };
    let (scales, sizes) = (
        aux(op.optional_scales_input)?,
        aux(op.optional_sizes_input)?,
    );
    let (Some(shape), true, true) = (
        x.shape.as_concrete(),
        x.datum_type == f32::datum_type(),
        scales.is_some() || sizes.is_some(),
    ) else {
        return Ok(None);
    };
    let rank = shape.len();
    if rank < 2 {
        return Ok(None);
    }
    let output = op.compute_output_shape(shape, scales.as_deref(), sizes.as_deref())?;
    // The scale of each axis as tract's eval takes it: given, or output over input length.
    let per_axis: TVec<f32> = match scales.as_deref().filter(|s| s.len() == rank) {
        Some(s) => s
            .cast_to::<f32>()?
            .try_as_plain_ram()?
            .as_slice::<f32>()?
            .into(),
        None => output
            .iter()
            .zip(shape)
            .map(|(o, i)| *o as f32 / *i as f32)
            .collect(),
    };
    let kept = |axis: usize| shape[axis] == output[axis] && per_axis[axis] == 1.0;
    if !(0..rank - 2).all(kept) {
        return Ok(None);
    }
    let taps = |axis: usize| match kept(axis) {
        true => Some(None),
        false => Taps::of(op.plan_axis(per_axis[axis], shape[axis], output[axis])).map(Some),
    };
    let (Some(rows), Some(cols)) = (taps(rank - 2), taps(rank - 1)) else {
        return Ok(None);
    };
    Ok(Some(FastResize {
        resize: op.clone(),
        input_hw: [shape[rank - 2], shape[rank - 1]],
        output_hw: [output[rank - 2], output[rank - 1]],
        rows,
        cols,
    }))
}

impl Op for FastResize {
    fn name(&self) -> StaticName {
        "FastResize".into()
    }

    op_as_typed_op!();
}

impl EvalOp for FastResize {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = &inputs[0];
        let rank = input.rank();
        let ([h, w], [oh, ow]) = (self.input_hw, self.output_hw);
        ensure!(
            rank >= 2 && input.shape()[rank - 2..] == [h, w],
            "FastResize planned for {h}×{w} images, given {:?}",
            input.shape()
        );
        let mut shape: TVec<usize> = input.shape().into();
        shape[rank - 2] = oh;
        shape[rank - 1] = ow;
        let plain = input.try_as_plain_ram()?;
        let x = plain.as_slice::<f32>()?;
        // SAFETY: every value of every plane is written below.
        let mut output = unsafe { Tensor::uninitialized::<f32>(&shape)? };
        {
            let mut out_plain = output.try_as_plain_ram_mut()?;
            let out = out_plain.as_slice_mut::<f32>()?;
            let work = out.len();
            split(out, oh * ow, work, |first, planes| {
                // One row resampled along the rows, as tract's first pass stores it.
                let mut row = vec![0f32; w];
                for (p, plane) in planes.chunks_exact_mut(oh * ow).enumerate() {
                    let src = &x[(first + p) * h * w..][..h * w];
                    for (y, out) in plane.chunks_exact_mut(ow).enumerate() {
                        let line = match &self.rows {
                            None => &src[y * w..][..w],
                            Some(rows) => {
                                row.fill(0.0);
                                let at = y * rows.window;
                                let taps = rows.indices[at..][..rows.window]
                                    .iter()
                                    .zip(&rows.weights[at..][..rows.window]);
                                for (&i, &wt) in taps.filter(|(_, wt)| **wt != 0.0) {
                                    for (r, s) in row.iter_mut().zip(&src[i * w..][..w]) {
                                        *r += wt * s;
                                    }
                                }
                                &row[..]
                            }
                        };
                        match &self.cols {
                            None => out.copy_from_slice(line),
                            Some(cols) => cols.resample(line, out),
                        }
                    }
                }
                Ok(())
            })?;
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for FastResize {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        self.resize.output_facts(inputs)
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use tract_onnx::tract_core::ops::nn::resize::{CoordTransformer, Interpolator, Nearest};

    use super::*;
    use crate::kernels::tests::{bits, f32_values};

    fn coord() -> impl Strategy<Value = CoordTransformer> {
        prop_oneof![
            Just(CoordTransformer::HalfPixel),
            Just(CoordTransformer::PytorchHalfPixel),
            Just(CoordTransformer::AlignCorners),
            Just(CoordTransformer::Asymmetric),
        ]
    }

    fn interpolator() -> impl Strategy<Value = Interpolator> {
        prop_oneof![
            Just(Interpolator::Linear),
            Just(Interpolator::Cubic),
            Just(Interpolator::Nearest),
        ]
    }

    /// `x` through `op` with `sizes` as the constant sizes input, in a plan of its own: the
    /// replacement's output, or None where it does not replace the op.
    fn run(op: &Resize, x: &Tensor, sizes: &[usize], ours: bool) -> Option<Tensor> {
        let mut model = TypedModel::default();
        let input = model.add_source("x", f32::fact(x.shape())).unwrap();
        let sizes: Vec<i64> = sizes.iter().map(|s| *s as i64).collect();
        let sizes = model.add_const("sizes", tensor1(&sizes)).unwrap();
        let y = model
            .wire_node("resize", op.clone(), &[input, sizes])
            .unwrap()[0];
        model.select_output_outlets(&[y]).unwrap();
        if ours {
            let node = model.node(y.node).clone();
            let fast = replacement(&model, &node).unwrap()?;
            let patch =
                TypedModelPatch::replace_single_op(&model, &node, &node.inputs, fast).unwrap();
            patch.apply(&mut model).unwrap();
        }
        let out = model
            .into_runnable()
            .unwrap()
            .run(tvec!(x.clone().into_tvalue()))
            .unwrap();
        Some(out[0].clone().into_tensor())
    }

    proptest! {
        /// Up- and downsampling of either or both of the last two axes of ranks 2 to 4, every
        /// interpolation and coordinate mode tract's core op has, NaN and ±∞ among the values:
        /// tract's op bit for bit (NaN for NaN).
        #[test]
        fn resizes_as_tract_does(
            shape in prop::collection::vec(1..7usize, 2..5),
            out_hw in prop::array::uniform2(1..15usize),
            coord_transformer in coord(),
            interpolator in interpolator(),
            round_up in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let x = Tensor::from_shape(&shape, &f32_values(seed, shape.iter().product())).unwrap();
            let mut sizes = shape.clone();
            let rank = shape.len();
            sizes[rank - 2..].copy_from_slice(&out_hw);
            let op = Resize {
                coord_transformer,
                interpolator,
                nearest: if round_up { Nearest::RoundPreferCeil } else { Nearest::Floor },
                optional_scales_input: None,
                optional_sizes_input: Some(1),
            };
            let want = run(&op, &x, &sizes, false).unwrap();
            let got = run(&op, &x, &sizes, true).expect("replaced");
            prop_assert_eq!(got.shape(), want.shape());
            prop_assert_eq!(canonical(&got), canonical(&want));
        }
    }

    /// The values as bits, every NaN as one: the sign of a NaN from ∞ - ∞ depends on the
    /// operands' order in the machine's addition, which the compiler picks.
    fn canonical(t: &Tensor) -> Vec<u32> {
        let nan = f32::NAN.to_bits();
        bits(t)
            .into_iter()
            .map(|b| if f32::from_bits(b).is_nan() { nan } else { b })
            .collect()
    }

    /// A resize of another axis than the last two stays tract's.
    #[test]
    fn leaves_other_axes_to_tract() {
        let op = Resize {
            coord_transformer: CoordTransformer::HalfPixel,
            interpolator: Interpolator::Linear,
            nearest: Nearest::Floor,
            optional_scales_input: None,
            optional_sizes_input: Some(1),
        };
        let x = Tensor::from_shape(&[2, 3, 4], &f32_values(1, 24)).unwrap();
        assert!(run(&op, &x, &[4, 3, 4], true).is_none());
        assert!(run(&op, &x, &[2, 6, 8], true).is_some());
    }
}
