//! A 1×1 int8 convolution's input, quantised straight into the matmul's packing.
//!
//! tract turns a 1×1 ConvInteger into a matmul batched over the image's rows: QuantizeLinear
//! writes the i8 image, then OptMatMulPack packs each row's channels × columns for the int8
//! kernel, one value at a time, two passes that cost more than the matmul and left 1×1 layers
//! 1.3–2× slower in int8 than in float. [`QuantizePackI8`] quantises each channel's f32 run
//! and stores it in the panels directly ([`Packing::pack`]), in one pass and with the same
//! bytes.

use tract_linalg::mmm::PackedMatrixStorage;
use tract_onnx::prelude::tract_ndarray::Dimension;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::matmul::pack::{DynPackedExoticFact, OptMatMulPack};

use super::im2col_i8::Packing;
use super::{quantize, split};

/// The replacement for `node` if it is an OptMatMulPack of i8 values, with one packing of
/// [`Packing`]'s and the matrix's columns along the input's last axis, whose input an f32
/// `QuantizeLinearI8` writes: the op, and the f32 input it reads instead.
pub fn replacement(
    model: &TypedModel,
    node: &TypedNode,
) -> TractResult<Option<(QuantizePackI8, OutletId)>> {
    let Some(op) = node.op_as::<OptMatMulPack>() else {
        return Ok(None);
    };
    let Some((q, source)) = quantize::quantizer(model, node.inputs[0])? else {
        return Ok(None);
    };
    let (input, packed) = (
        model.outlet_fact(node.inputs[0])?,
        model.outlet_fact(OutletId::new(node.id, 0))?,
    );
    let Some(shape) = input.shape.as_concrete() else {
        return Ok(None);
    };
    let packing = match packed
        .exotic_fact()
        .and_then(|f| f.downcast_ref::<DynPackedExoticFact>())
        .map(|f| f.packers.as_slice())
    {
        Some([format]) => Packing::of(&**format),
        _ => None,
    };
    let mapping = op.axes_mapping(&[input], &[packed])?;
    let axis = |name| {
        mapping
            .axis(name)
            .ok()
            .and_then(|a| a.inputs[0].first().copied())
    };
    let (Some(packing), Some(k_axis), Some(mn_axis)) = (packing, axis('K'), axis('M')) else {
        return Ok(None);
    };
    if mn_axis + 1 != shape.len() || input.datum_type.unquantized() != i8::datum_type() {
        return Ok(None);
    }
    Ok(Some((
        QuantizePackI8 {
            packing,
            scale: q.scale,
            zero_point: q.zero_point,
            input_shape: shape.into(),
            k_axis,
            output: packed.clone(),
        },
        source,
    )))
}

/// tract's QuantizeLinearI8 then OptMatMulPack in one pass: each matrix of the f32 input
/// (K along `k_axis`, the columns along the last axis, one matrix per index of the other
/// axes) quantised into the int8 kernel's packing.
#[derive(Debug, Clone)]
pub struct QuantizePackI8 {
    pub packing: Packing,
    pub scale: f32,
    pub zero_point: i8,
    pub input_shape: TVec<usize>,
    pub k_axis: usize,
    /// OptMatMulPack's output, whose i8 type keeps the quantisation parameters tract set.
    pub output: TypedFact,
}

impl PartialEq for QuantizePackI8 {
    fn eq(&self, other: &Self) -> bool {
        self.scale.to_bits() == other.scale.to_bits()
            && (
                &self.packing,
                self.zero_point,
                &self.input_shape,
                self.k_axis,
                &self.output,
            ) == (
                &other.packing,
                other.zero_point,
                &other.input_shape,
                other.k_axis,
                &other.output,
            )
    }
}

impl Eq for QuantizePackI8 {}

impl Op for QuantizePackI8 {
    fn name(&self) -> StaticName {
        "QuantizePackI8".into()
    }

    op_as_typed_op!();
}

impl EvalOp for QuantizePackI8 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let plain = inputs[0].try_as_plain_ram()?;
        let x = plain.as_slice::<f32>()?;
        let shape = &self.input_shape;
        let (k, n) = (shape[self.k_axis], shape[shape.len() - 1]);
        let strides = Tensor::natural_strides(shape);
        // The other axes, in order: one packed matrix for each of their indices.
        let mut batch: TVec<usize> = shape.clone();
        batch[self.k_axis] = 1;
        *batch.last_mut().expect("rank ≥ 2") = 1;
        let dt = self.output.datum_type;
        let bases: Vec<usize> = tract_ndarray::indices(&*batch)
            .into_iter()
            .map(|coords| {
                let base: isize = coords
                    .as_array_view()
                    .iter()
                    .zip(&strides)
                    .map(|(c, s)| *c as isize * s)
                    .sum();
                base as usize
            })
            .collect();
        // Whole matrices over tract's executor, or, for one, its panels (in `pack`).
        let mut values: Vec<_> = bases.iter().map(|_| None).collect();
        split(&mut values, 1, x.len(), |first, chunk| {
            for (value, base) in chunk.iter_mut().zip(&bases[first..]) {
                *value = Some(self.packing.pack(dt, k, n, |kk, at, row| {
                    let run = &x[base + kk * strides[self.k_axis] as usize + at.start..];
                    let len = at.len();
                    quantize::quantize(&run[..len], self.scale, self.zero_point, &mut row[..len]);
                })?);
            }
            Ok(())
        })?;
        let values = values
            .into_iter()
            .map(|v| v.expect("every matrix packed"))
            .collect();
        let batch_shape = self
            .output
            .shape
            .as_concrete()
            .context("QuantizePackI8: output shape not concrete")?;
        let output = PackedMatrixStorage::new_batched(batch_shape, values).into_tensor(dt);
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for QuantizePackI8 {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(self.output.clone()))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use crate::kernels::MIN_SPLIT;
    use crate::kernels::tests::{Conv, run_both_with};

    /// tract's QuantizeLinear and OptMatMulPack bit for bit, in whichever packing this CPU's
    /// int8 kernel takes (K4 with VNNI or the dot product, K-major on Cortex-A72 and A53): channel
    /// counts and sizes off the multiples of 4 and of the panel width, values that saturate,
    /// and one input big enough to split over threads. Planned without
    /// [`ConvI8`](crate::kernels::conv_i8::ConvI8), which takes these layers where it runs.
    #[test]
    fn packs_what_tracts_quantisation_and_packing_pack() {
        const { assert!(48 * 37 * 37 >= MIN_SPLIT) };
        // (input channels, output channels, input size, zero point)
        for (ci, co, size, zero_point) in [
            (16, 32, 20, 0),
            (5, 7, 9, 0),
            (64, 24, 13, 0),
            (3, 8, 1, 0),
            (48, 8, 37, 0),
            (16, 32, 20, -128),
        ] {
            let conv = Conv {
                ci,
                co,
                group: 1,
                k: 1,
                geometry: [1, 0, 1],
                size,
                quantize: true,
                zero_point,
            };
            run_both_with(&conv.model(), false, "QuantizePackI8", 1, |_| None);
        }
    }
}
