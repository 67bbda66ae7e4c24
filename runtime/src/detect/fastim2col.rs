//! A row-at-a-time i8 im2col for tract's quantised convolutions.
//!
//! tract 0.23.9 lowers an int8 convolution to an eager `Im2col` (it has no lazy int8 im2col)
//! whose packing writer stores one value at a time, ~1.5 ns a value: after the quantisation,
//! the largest cost of an int8 3×3 layer. [`FastIm2colI8`] builds the same packed matrix one
//! K row at a time (a contiguous row of output positions, then a copy per panel).

use tract_linalg::mmm::{EagerPackedInput, MMMInputValue, PackedExoticFact, PackedMatrixStorage};
use tract_linalg::pack::PackedI8K4;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::conv::Im2Col;
use tract_onnx::tract_core::ops::nn::DataFormat;

/// The replacement for `node` if it is an Im2col this op handles: one image (NCHW or CHW),
/// one group, a 2-D kernel, i8 input, the K4 packing, padding with 0.
pub fn replacement(model: &TypedModel, node: &TypedNode) -> TractResult<Option<FastIm2colI8>> {
    let Some(op) = node.op_as::<Im2Col>() else {
        return Ok(None);
    };
    let input = model.outlet_fact(node.inputs[0])?;
    let output = model.outlet_fact(OutletId::new(node.id, 0))?;
    let spec = &op.pool_spec;
    let Some(shape) = input.shape.as_concrete() else {
        return Ok(None);
    };
    // Only the VNNI-style K4 packing, the one checked against tract here: other kernels' packings
    // (the K-major one of ARM's int8 kernels) are left to tract until checked on such a CPU.
    let Some(format) = output
        .exotic_fact()
        .and_then(|f| f.downcast_ref::<PackedExoticFact>())
        .and_then(|f| f.format.downcast_ref::<PackedI8K4>())
        .cloned()
    else {
        return Ok(None);
    };
    // tract pads with the zero point, 0 for the ConvInteger form quantize writes.
    if let Some(o) = node.inputs.get(1) {
        match &model.outlet_fact(*o)?.konst {
            Some(k) if k.len() == 1 && k.is_zero()? => {}
            _ => return Ok(None),
        }
    }
    // tract drops the batch axis of a one-image model (CHW).
    let chw = match (spec.data_format, shape) {
        (DataFormat::NCHW, [1, chw @ ..]) | (DataFormat::CHW, chw) => chw,
        _ => return Ok(None),
    };
    if op.group != 1
        || spec.kernel_shape.len() != 2
        || chw.len() != 3
        || input.datum_type.unquantized() != i8::datum_type()
    {
        return Ok(None);
    }
    let padding = spec.computed_padding(&chw[1..]);
    let strides = spec.strides();
    let dilations = spec.dilations();
    Ok(Some(FastIm2colI8 {
        format,
        channels: chw[0],
        input_hw: [chw[1], chw[2]],
        output_hw: [padding[0].convoluted, padding[1].convoluted],
        kernel: [spec.kernel_shape[0], spec.kernel_shape[1]],
        strides: [strides[0], strides[1]],
        dilations: [dilations[0], dilations[1]],
        pad_before: [padding[0].pad_before, padding[1].pad_before],
    }))
}

/// tract's `Im2Col` for one i8 NCHW (or CHW) image and one group, with the geometry resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastIm2colI8 {
    /// The matmul kernel's packing of the patches, as tract's Im2col writes it: panels of `r`
    /// output positions, K in groups of 4 interleaved per position, padded to a multiple of 4.
    pub format: PackedI8K4,
    pub channels: usize,
    pub input_hw: [usize; 2],
    pub output_hw: [usize; 2],
    pub kernel: [usize; 2],
    pub strides: [usize; 2],
    pub dilations: [usize; 2],
    pub pad_before: [usize; 2],
}

impl FastIm2colI8 {
    fn k(&self) -> usize {
        self.channels * self.kernel[0] * self.kernel[1]
    }

    fn n(&self) -> usize {
        self.output_hw[0] * self.output_hw[1]
    }

    fn exotic(&self) -> PackedExoticFact {
        PackedExoticFact {
            format: Box::new(self.format.clone()),
            k: self.k(),
            mn: self.n().to_dim(),
        }
    }

    /// One K row: kernel tap (ky, kx) of channel `plane` at every output position.
    fn row(&self, plane: &[i8], ky: usize, kx: usize, row: &mut [i8]) {
        let [h, w] = self.input_hw.map(|d| d as isize);
        let [oh, ow] = self.output_hw;
        let [sy, sx] = self.strides.map(|d| d as isize);
        let dy = (ky * self.dilations[0]) as isize - self.pad_before[0] as isize;
        let dx = (kx * self.dilations[1]) as isize - self.pad_before[1] as isize;
        // Output columns whose input column is inside the image: x = xo·sx + dx in [0, w).
        let x0 = ((-dx).max(0) + sx - 1) / sx;
        let x1 = (((w - dx).max(0) + sx - 1) / sx).min(ow as isize).max(x0);
        let (x0, x1) = (x0.min(ow as isize) as usize, x1 as usize);
        for (yo, out) in row.chunks_exact_mut(ow).enumerate().take(oh) {
            let y = yo as isize * sy + dy;
            if y < 0 || y >= h {
                out.fill(0);
                continue;
            }
            let line = &plane[y as usize * w as usize..][..w as usize];
            out[..x0].fill(0);
            out[x1..].fill(0);
            let first = (x0 as isize * sx + dx) as usize;
            if sx == 1 {
                out[x0..x1].copy_from_slice(&line[first..first + (x1 - x0)]);
            } else {
                for (o, x) in out[x0..x1].iter_mut().zip((first..).step_by(sx as usize)) {
                    *o = line[x];
                }
            }
        }
    }
}

impl Op for FastIm2colI8 {
    fn name(&self) -> StaticName {
        "FastIm2colI8".into()
    }

    op_as_typed_op!();
}

impl EvalOp for FastIm2colI8 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = &inputs[0];
        let dt = input.datum_type();
        let plain = input.try_as_plain_ram()?;
        let x = plain.as_slice::<i8>()?;
        let (k, n, r) = (self.k(), self.n(), self.format.r);
        let panel_len = self.format.single_panel_len(k);
        let panels = n.div_ceil(r);
        // SAFETY: zeroed whole before rows 0..k are written: what the kernel also reads (a
        // partial last panel's spare lanes, the padding rows) stays 0 as tract writes it.
        let mut data = unsafe {
            Tensor::uninitialized_aligned_dt(dt, &[panels * panel_len], self.format.alignment())?
        };
        let bytes = data.as_bytes_mut();
        bytes.fill(0);
        let [kh, kw] = self.kernel;
        let taps = kh * kw;
        let plane_len = self.input_hw[0] * self.input_hw[1];
        // The 4 K rows the layout interleaves, built one at a time.
        let mut rows = vec![0i8; 4 * n];
        for k0 in (0..k).step_by(4) {
            for (j, row) in rows.chunks_exact_mut(n).enumerate() {
                let kk = k0 + j;
                if kk < k {
                    let (c, tap) = (kk / taps, kk % taps);
                    let plane = &x[c * plane_len..][..plane_len];
                    self.row(plane, tap / kw, tap % kw, row);
                } else {
                    row.fill(0);
                }
            }
            interleave4(&rows, n, r, panel_len, k0 * r, bytes);
        }
        let packed: Box<dyn MMMInputValue> = Box::new(EagerPackedInput {
            fact: self.exotic(),
            packed: data.into_blob()?.into(),
            panel_bytes: panel_len,
            mn: n,
        });
        let output = PackedMatrixStorage::new_batched(&[1, 1], tvec!(packed)).into_tensor(dt);
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for FastIm2colI8 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(
            inputs[0]
                .datum_type
                .fact([1, 1])
                .with_exotic_fact(self.exotic())
        ))
    }

    as_op!();
}

/// Writes 4 rows of `n` values into the K4 layout: position m of panel p gets the 4 bytes
/// `rows[0][m], rows[1][m], rows[2][m], rows[3][m]` at `p·panel_len + offset + 4·(m mod r)`.
fn interleave4(rows: &[i8], n: usize, r: usize, panel_len: usize, offset: usize, out: &mut [u8]) {
    let done = interleave4_simd(rows, n, r, panel_len, offset, out);
    for m in done..n {
        let at = (m / r) * panel_len + offset + 4 * (m % r);
        for j in 0..4 {
            out[at + j] = rows[j * n + m] as u8;
        }
    }
}

/// 16 positions at a time with SSE2 byte/word unpacks, while the 16 fill whole panels;
/// returns how many positions it wrote.
#[cfg(target_arch = "x86_64")]
fn interleave4_simd(
    rows: &[i8],
    n: usize,
    r: usize,
    panel_len: usize,
    offset: usize,
    out: &mut [u8],
) -> usize {
    use std::arch::x86_64::*;
    if !matches!(r, 4 | 8 | 16) {
        return 0;
    }
    let blocks = n / 16;
    let (a, b, c, d) = (
        &rows[..n],
        &rows[n..2 * n],
        &rows[2 * n..3 * n],
        &rows[3 * n..4 * n],
    );
    for blk in 0..blocks {
        let m = blk * 16;
        let load = |row: &[i8]| {
            let s = &row[m..m + 16];
            // SAFETY: `s` holds 16 bytes; the load is unaligned.
            unsafe { _mm_loadu_si128(s.as_ptr().cast()) }
        };
        // SAFETY: SSE2 is part of the x86-64 baseline.
        let quads = unsafe {
            let (va, vb, vc, vd) = (load(a), load(b), load(c), load(d));
            let ab_lo = _mm_unpacklo_epi8(va, vb);
            let ab_hi = _mm_unpackhi_epi8(va, vb);
            let cd_lo = _mm_unpacklo_epi8(vc, vd);
            let cd_hi = _mm_unpackhi_epi8(vc, vd);
            [
                _mm_unpacklo_epi16(ab_lo, cd_lo),
                _mm_unpackhi_epi16(ab_lo, cd_lo),
                _mm_unpacklo_epi16(ab_hi, cd_hi),
                _mm_unpackhi_epi16(ab_hi, cd_hi),
            ]
        };
        // Each quad is 4 consecutive positions, which never straddle a panel (r is 4, 8, 16).
        for (q, v) in quads.iter().enumerate() {
            let pos = m + 4 * q;
            let at = (pos / r) * panel_len + offset + 4 * (pos % r);
            let dst = &mut out[at..at + 16];
            // SAFETY: `dst` holds 16 bytes; the store is unaligned.
            unsafe { _mm_storeu_si128(dst.as_mut_ptr().cast(), *v) };
        }
    }
    blocks * 16
}

#[cfg(not(target_arch = "x86_64"))]
fn interleave4_simd(_: &[i8], _: usize, _: usize, _: usize, _: usize, _: &mut [u8]) -> usize {
    0
}
