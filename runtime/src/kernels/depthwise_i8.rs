//! An int8 depthwise convolution for tract's optimised plans.
//!
//! tract 0.23.9 lowers a depthwise ConvInteger like any grouped one: an Im2col per channel
//! (K = the kernel's 9 taps) and a batched matmul of one output row per channel, ~8× slower
//! than its float depthwise. [`DepthwiseI8`] computes the same i32 accumulators directly:
//! each channel's zero-padded input is split by column phase once (as the int8 im2col does),
//! then every kernel tap adds `w · x` along whole output rows, contiguous runs that vectorise
//! at any stride.

use tract_linalg::mmm::{EagerPackedInput, MMMInputValue};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

use super::im2col_i8::{self, Geometry, Image, PhasePlanes};
use super::{conv_i8, i32_channels};
use crate::imgproc::morph::Simd;

/// The replacements for `node` if it is the Im2col of an int8 depthwise convolution (one input
/// channel a group, one output channel a group, no bias): for each of its readers that is
/// tract's batched matmul, the op, the input it reads (the Im2col's) and the matmul output it
/// computes. Depthwise layers reading the same input (YOLOX's class and box branches) share
/// one Im2col.
pub fn replacements(
    model: &TypedModel,
    node: &TypedNode,
) -> TractResult<Vec<(DepthwiseI8, OutletId, OutletId)>> {
    let Some((op, geo)) = im2col_i8::geometry(model, node)? else {
        return Ok(vec![]);
    };
    if op.group != geo.channels || op.group < 2 {
        return Ok(vec![]);
    }
    let mut found = vec![];
    for reader in model.outlet_successors(OutletId::new(node.id, 0)) {
        if let Some(dw) = for_reader(model, *reader, &geo)? {
            found.push((dw, node.inputs[0], OutletId::new(reader.node, 0)));
        }
    }
    Ok(found)
}

/// The op computing what `reader`, reading the Im2col of geometry `geo`, computes, if it is
/// tract's batched matmul of one output row per channel.
fn for_reader(
    model: &TypedModel,
    reader: InletId,
    geo: &Geometry,
) -> TractResult<Option<DepthwiseI8>> {
    let Some(im2col_i8::PatchMatMul {
        c,
        weights: packed,
        axes,
    }) = im2col_i8::patch_matmul(model, reader)?
    else {
        return Ok(None);
    };
    let rank = c.rank();
    if axes != [rank.checked_sub(2), rank.checked_sub(1)]
        || rank < 2
        || c.shape.as_concrete().map(|s| s.iter().product::<usize>())
            != Some(geo.channels * geo.n())
    {
        return Ok(None);
    }
    let Some(weights) = unpack_weights(packed, geo.channels, geo.taps()) else {
        return Ok(None);
    };
    Ok(Some(DepthwiseI8 {
        geo: geo.clone(),
        weights,
        output: c.clone(),
        simd: Simd::detect(),
    }))
}

/// Each channel's kernel taps out of tract's packed weights (one row per group), if packed
/// in a layout this knows.
fn unpack_weights(
    values: &[Box<dyn MMMInputValue>],
    channels: usize,
    taps: usize,
) -> Option<Vec<i8>> {
    if values.len() != channels {
        return None;
    }
    let mut weights = Vec::with_capacity(channels * taps);
    for v in values {
        let v = v.downcast_ref::<EagerPackedInput>()?;
        if v.mn() != 1 || v.k() != taps {
            return None;
        }
        weights.extend(conv_i8::unpack_rows(v)?);
    }
    Some(weights)
}

/// An int8 depthwise convolution of one CHW image: i8 input, i32 accumulators out in the
/// shape tract's matmul gave them (channel-major either way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepthwiseI8 {
    pub geo: Geometry,
    /// `[channel][tap]`, taps row-major.
    pub weights: Vec<i8>,
    pub output: TypedFact,
    /// The instruction set the kernel runs with.
    pub simd: Simd,
}

impl Op for DepthwiseI8 {
    fn name(&self) -> StaticName {
        "DepthwiseI8".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("{:?} {:?}", self.geo, self.simd)])
    }

    op_as_typed_op!();
}

impl EvalOp for DepthwiseI8 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let plain = inputs[0].try_as_plain_ram()?;
        let planes = self.geo.phase_planes(Image::I8(plain.as_slice::<i8>()?))?;
        let taps = self.geo.taps();
        let output = i32_channels(&self.output, self.geo.n(), taps, |first, out| {
            convolve(
                self.simd,
                &planes,
                first,
                &self.weights[first * taps..],
                out,
            )
        })?;
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for DepthwiseI8 {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(self.output.without_value()))
    }

    as_op!();
}

/// `out[c][y][x] = Σ_taps weights[c][tap] · input under the tap` for the channels from
/// `first` that `out` holds (`weights` from `first`'s), with the instruction set `simd`
/// (baseline for any the CPU lacks or this kernel has no build for).
pub fn convolve(simd: Simd, planes: &PhasePlanes, first: usize, weights: &[i8], out: &mut [i32]) {
    #[cfg(target_arch = "x86_64")]
    match simd {
        // SAFETY: each arm runs only where the CPU has its instruction set.
        Simd::Avx512 if simd.is_available() => unsafe { avx512(planes, first, weights, out) },
        Simd::Avx2 if simd.is_available() => unsafe { avx2(planes, first, weights, out) },
        _ => body(planes, first, weights, out),
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = simd;
        body(planes, first, weights, out)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn avx2(planes: &PhasePlanes, first: usize, weights: &[i8], out: &mut [i32]) {
    body(planes, first, weights, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn avx512(planes: &PhasePlanes, first: usize, weights: &[i8], out: &mut [i32]) {
    body(planes, first, weights, out)
}

/// One channel at a time, each tap one run over every output row at once: the rows' runs
/// are [`PhasePlanes::row_step`] apart, so the run also covers the padding between them (and,
/// for a vertical stride, the skipped rows), computed and dropped when the rows are copied
/// out. Long runs the compiler vectorises for whichever instruction set this is inlined into
/// (SSE2 on baseline x86-64, NEON on aarch64) beat short ones per row: 40-wide rows spent
/// more time entering loops than multiplying.
#[inline(always)]
fn body(planes: &PhasePlanes, first: usize, weights: &[i8], out: &mut [i32]) {
    let geo = planes.geometry();
    let [oh, ow] = geo.output_hw;
    let step = planes.row_step();
    let len = (oh - 1) * step + ow;
    let mut acc = vec![0i32; len];
    for (c, (w, out)) in weights
        .chunks_exact(geo.taps())
        .zip(out.chunks_exact_mut(oh * ow))
        .enumerate()
    {
        let run = |tap: usize| &planes.data[planes.run(first + c, tap, 0)..][..len];
        let w0 = w[0] as i32;
        for (a, x) in acc.iter_mut().zip(run(0)) {
            *a = w0 * *x as i32;
        }
        for (tap, w) in w.iter().enumerate().skip(1) {
            let w = *w as i32;
            for (a, x) in acc.iter_mut().zip(run(tap)) {
                *a += w * *x as i32;
            }
        }
        for (yo, row) in out.chunks_exact_mut(ow).enumerate() {
            row.copy_from_slice(&acc[yo * step..][..ow]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::tests::{Conv, run_both};

    /// tract's i32 accumulators bit for bit, with every instruction set this CPU has (the ones
    /// it lacks are named): 3×3 and 5×5, strides 1 to 3, padding, dilation, odd sizes, i8 input
    /// and f32 input through QuantizeLinear, and one big enough to split over threads (the
    /// quantisation too), and two or three layers reading one input, which tract plans with
    /// one Im2col (YOLOX's class and box branches).
    #[test]
    fn accumulates_what_tracts_matmul_does() {
        const { assert!(30 * 47 * 47 >= crate::kernels::MIN_SPLIT) };
        // (channels, kernel, [stride, pad, dilation], input size, f32 input, layers)
        let cases = [
            (16, 3, [1, 1, 1], 20, false, 1),
            (24, 3, [2, 1, 1], 21, true, 1),
            (8, 5, [1, 2, 1], 13, false, 1),
            (5, 3, [2, 0, 1], 40, false, 1),
            (7, 3, [1, 2, 2], 9, true, 1),
            (4, 3, [3, 1, 1], 17, false, 1),
            (30, 3, [1, 1, 1], 47, true, 1),
            (12, 3, [1, 1, 1], 14, true, 2),
            (6, 3, [2, 1, 1], 11, false, 3),
        ];
        for simd in Simd::ALL {
            if !simd.is_available() {
                println!("depthwise_i8: {simd:?} skipped, this CPU lacks it");
                continue;
            }
            for (c, k, geometry, size, quantize, layers) in cases {
                let conv = Conv {
                    ci: c,
                    co: c,
                    group: c,
                    k,
                    geometry,
                    size,
                    quantize,
                };
                run_both(&conv.branched(layers), "DepthwiseI8", layers, |node| {
                    let mut op = node.op_as::<DepthwiseI8>()?.clone();
                    op.simd = simd;
                    Some(Box::new(op))
                });
            }
            println!("depthwise_i8: {simd:?} matches tract");
        }
    }
}
