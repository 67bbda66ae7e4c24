//! A row-at-a-time i8 im2col for tract's quantised convolutions.
//!
//! tract 0.23.9 lowers an int8 convolution to an eager `Im2col` (it has no lazy int8 im2col)
//! whose packing writer stores one value at a time, ~1.5 ns a value: after the quantisation,
//! the largest cost of an int8 3×3 layer. [`FastIm2colI8`] builds the same packed matrix one
//! K row at a time: each channel's zero-padded input is split once by column phase, so that
//! every kernel tap of every stride reads contiguous runs, copied 16 bytes at a time; the rows
//! then go into the panels of the kernel's packing ([`Packing`]). A strided or short-rowed
//! layer costs about as much per byte as a wide stride-1 one (YOLOv8n's 37 int8 im2cols:
//! 13.3 ms → 6.4 ms, where stride 2 took 1.65 ns a byte and 10-wide rows 1.4).

use std::ops::Range;

use tract_linalg::BinOp;
use tract_linalg::mmm::{
    EagerPackedInput, MMMInputFormat, MMMInputValue, PackedExoticFact, PackedMatrixStorage,
};
use tract_linalg::pack::{PackedFormat, PackedI8K4};
#[cfg(target_arch = "x86_64")]
use tract_linalg::x86_64::amx::PackedAmxA;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::PoolSpec;
use tract_onnx::tract_core::ops::cnn::conv::Im2Col;
use tract_onnx::tract_core::ops::matmul::optimized::{MatMulOperand, OptMatMul, ProtoFusedSpec};
use tract_onnx::tract_core::ops::nn::DataFormat;

use super::{quantize, split};

/// The replacement for `node` if it is an Im2col this op handles: one image (NCHW or CHW),
/// one group, a 2-D kernel, i8 input, a [`Packing`] it writes. The op, and
/// the input it reads: the f32 image when an f32 QuantizeLinear writes the i8 one, which
/// the op then quantises itself.
pub fn replacement(
    model: &TypedModel,
    node: &TypedNode,
) -> TractResult<Option<(FastIm2colI8, OutletId)>> {
    let Some((op, geo)) = geometry(model, node)? else {
        return Ok(None);
    };
    let Some(packing) = packing(model, node)? else {
        return Ok(None);
    };
    if op.group != 1 {
        return Ok(None);
    }
    let (quantize, input) = match quantize::quantizer(model, node.inputs[0])? {
        Some((q, x)) => (Some(q), x),
        None => (None, node.inputs[0]),
    };
    Ok(Some((
        FastIm2colI8 {
            packing,
            geo,
            quantize,
        },
        input,
    )))
}

/// The packing tract's Im2col `node` writes, if one of [`Packing`]'s.
pub fn packing(model: &TypedModel, node: &TypedNode) -> TractResult<Option<Packing>> {
    let output = model.outlet_fact(OutletId::new(node.id, 0))?;
    Ok(output
        .exotic_fact()
        .and_then(|f| f.downcast_ref::<PackedExoticFact>())
        .and_then(|f| Packing::of(&*f.format)))
}

impl Packing {
    /// `format` if it is one of these.
    pub fn of(format: &dyn MMMInputFormat) -> Option<Packing> {
        #[cfg(target_arch = "x86_64")]
        if let Some(amx) = format.downcast_ref::<PackedAmxA>() {
            return Some(Packing::Amx(amx.clone()));
        }
        if let Some(k4) = format.downcast_ref::<PackedI8K4>() {
            Some(Packing::K4(k4.clone()))
        } else {
            format
                .downcast_ref::<PackedFormat>()
                .filter(|f| f.dt.unquantized() == i8::datum_type())
                .map(|plain| Packing::KMajor(plain.clone()))
        }
    }
}

/// tract's int8 matmul of constant packed weights by an image's patches, with nothing fused
/// but the input's zero point taken off.
pub struct PatchMatMul<'m> {
    /// The i32 output.
    pub c: &'m TypedFact,
    /// The packed weights, one value a batch.
    pub weights: &'m [Box<dyn MMMInputValue>],
    /// The output's axes of the weights' rows (output channels) and of the patches'
    /// columns (positions).
    pub axes: [Option<usize>; 2],
    /// What comes off each output channel's accumulators: `zero point · Σ weights`, which
    /// tract subtracts in the matmul where the input has a zero point.
    pub minus: Option<Vec<i32>>,
}

/// If `reader` reads an image's patches (as an Im2col or a packing writes them) as tract's
/// int8 matmul of constant packed weights by them, on either side, with nothing fused but a
/// constant subtracted per weight row (the input's zero point times the row's sum).
pub fn patch_matmul(model: &TypedModel, reader: InletId) -> TractResult<Option<PatchMatMul<'_>>> {
    let node = model.node(reader.node);
    let Some(mm) = node.op_as::<OptMatMul>() else {
        return Ok(None);
    };
    // What comes off, as a constant per row or per column of the output.
    let (a, b, minus) = match mm.micro_ops.as_slice() {
        [
            ProtoFusedSpec::AddMatMul { a, b, .. },
            ProtoFusedSpec::Store(_),
        ] => (a, b, None),
        [
            ProtoFusedSpec::AddMatMul { a, b, .. },
            // `SubF`: the accumulator minus the value.
            ProtoFusedSpec::BinPerRow(slot, BinOp::SubF, _)
            | ProtoFusedSpec::BinPerCol(slot, BinOp::SubF, _),
            ProtoFusedSpec::Store(_),
        ] => {
            let per_row = matches!(mm.micro_ops[1], ProtoFusedSpec::BinPerRow(..));
            match &model.outlet_fact(node.inputs[*slot])?.konst {
                Some(k) if k.datum_type() == i32::datum_type() => {
                    let values = k.try_as_plain_ram()?.as_slice::<i32>()?.to_vec();
                    (a, b, Some((per_row, values)))
                }
                _ => return Ok(None),
            }
        }
        _ => return Ok(None),
    };
    if reader.slot != 0 || mm.c_fact.datum_type != i32::datum_type() {
        return Ok(None);
    }
    // tract folds the weights into the op where it can, or reads them from a Const.
    let input = |i| -> TractResult<_> {
        let fact = model.outlet_fact(node.inputs[i])?;
        Ok(fact
            .konst
            .as_deref()
            .and_then(|k| k.try_storage_as::<PackedMatrixStorage>().ok())
            .map(|s| s.values()))
    };
    let (weights, axes) = match (a, b) {
        (MatMulOperand::Input(1), MatMulOperand::Input(0)) => {
            (input(1)?, [mm.c_m_axis, mm.c_n_axis])
        }
        (MatMulOperand::Input(0), MatMulOperand::Input(1)) => {
            (input(1)?, [mm.c_n_axis, mm.c_m_axis])
        }
        (MatMulOperand::Const(w), MatMulOperand::Input(0)) => {
            (Some(std::slice::from_ref(w)), [mm.c_m_axis, mm.c_n_axis])
        }
        (MatMulOperand::Input(0), MatMulOperand::Const(w)) => {
            (Some(std::slice::from_ref(w)), [mm.c_n_axis, mm.c_m_axis])
        }
        _ => return Ok(None),
    };
    // Taken per weight row: along the rows where the weights are the matmul's A.
    let weights_are_a = axes[0] == mm.c_m_axis;
    let minus = match minus {
        Some((per_row, values)) if per_row == weights_are_a => Some(values),
        Some(_) => return Ok(None),
        None => None,
    };
    Ok(weights.map(|weights| PatchMatMul {
        c: &mm.c_fact,
        weights,
        axes,
        minus,
    }))
}

/// tract's Im2col `node` and its resolved geometry, if it reads one i8 image (NCHW or CHW)
/// with a 2-D kernel; any number of groups.
pub fn geometry<'m>(
    model: &'m TypedModel,
    node: &'m TypedNode,
) -> TractResult<Option<(&'m Im2Col, Geometry)>> {
    let Some(op) = node.op_as::<Im2Col>() else {
        return Ok(None);
    };
    let input = model.outlet_fact(node.inputs[0])?;
    let spec = &op.pool_spec;
    let Some(shape) = input.shape.as_concrete() else {
        return Ok(None);
    };
    // tract pads with the zero point, an i32 constant.
    let pad = match node.inputs.get(1) {
        Some(o) => match &model.outlet_fact(*o)?.konst {
            Some(k) if k.len() == 1 => match i8::try_from(k.cast_to_scalar::<i32>()?) {
                Ok(z) => z,
                Err(_) => return Ok(None),
            },
            _ => return Ok(None),
        },
        None => 0,
    };
    if input.datum_type.unquantized() != i8::datum_type() {
        return Ok(None);
    }
    Ok(Geometry::of(spec, shape).map(|geo| (op, Geometry { pad, ..geo })))
}

impl Geometry {
    /// The geometry of a 2-D convolution or pooling `spec` over one image of `shape` (NCHW
    /// with N = 1, or the batch-less CHW tract uses inside a one-image model).
    pub fn of(spec: &PoolSpec, shape: &[usize]) -> Option<Geometry> {
        let chw = match (spec.data_format, shape) {
            (DataFormat::NCHW, [1, chw @ ..]) | (DataFormat::CHW, chw) => chw,
            _ => return None,
        };
        if spec.kernel_shape.len() != 2 || chw.len() != 3 {
            return None;
        }
        let padding = spec.computed_padding(&chw[1..]);
        let strides = spec.strides();
        let dilations = spec.dilations();
        Some(Geometry {
            channels: chw[0],
            input_hw: [chw[1], chw[2]],
            output_hw: [padding[0].convoluted, padding[1].convoluted],
            kernel: [spec.kernel_shape[0], spec.kernel_shape[1]],
            strides: [strides[0], strides[1]],
            dilations: [dilations[0], dilations[1]],
            pad_before: [padding[0].pad_before, padding[1].pad_before],
            pad: 0,
        })
    }
}

/// How the int8 matmul kernel takes the patches, as tract's Im2col writes them: panels of `r`
/// output positions each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packing {
    /// K in groups of 4 interleaved per position, padded to a multiple of 4: x86-64's VNNI
    /// kernels and ARM's dot-product ones.
    K4(PackedI8K4),
    /// Each K value's `r` positions side by side: ARM's kernels without the dot product
    /// (Cortex-A72 and A53, as in the Raspberry Pi 4 and 3).
    KMajor(PackedFormat),
    /// Each position's K values in a row, padded to a multiple of 64: the weights' side of
    /// tract's AMX kernels, which tract picks wherever the CPU has AMX (Xeon from Sapphire
    /// Rapids on), and the image's where tract swaps the sides.
    #[cfg(target_arch = "x86_64")]
    Amx(PackedAmxA),
}

impl Packing {
    pub fn r(&self) -> usize {
        match self {
            Packing::K4(f) => f.r,
            Packing::KMajor(f) => f.r,
            #[cfg(target_arch = "x86_64")]
            Packing::Amx(f) => f.r,
        }
    }

    /// Where, in a panel of `k` K rows, the value of K row `kk` at lane `i` (of `r`) is.
    // Only AMX's rows, x86-64's alone, depend on `k`.
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
    pub fn offset(&self, k: usize, kk: usize, i: usize) -> usize {
        match self {
            Packing::K4(f) => (kk / 4) * 4 * f.r + 4 * i + kk % 4,
            Packing::KMajor(f) => kk * f.r + i,
            #[cfg(target_arch = "x86_64")]
            Packing::Amx(_) => i * k.div_ceil(64) * 64 + kk,
        }
    }

    fn panel_len(&self, k: usize) -> usize {
        match self {
            Packing::K4(f) => f.single_panel_len(k),
            Packing::KMajor(f) => f.single_panel_len(k),
            #[cfg(target_arch = "x86_64")]
            Packing::Amx(f) => f.single_panel_len(k),
        }
    }

    fn alignment(&self) -> usize {
        match self {
            Packing::K4(f) => f.alignment(),
            Packing::KMajor(f) => f.alignment(),
            #[cfg(target_arch = "x86_64")]
            Packing::Amx(f) => f.alignment(),
        }
    }

    fn format(&self) -> Box<dyn MMMInputFormat> {
        match self {
            Packing::K4(f) => Box::new(f.clone()),
            Packing::KMajor(f) => Box::new(f.clone()),
            #[cfg(target_arch = "x86_64")]
            Packing::Amx(f) => Box::new(f.clone()),
        }
    }
}

/// tract's `Im2Col` for one i8 NCHW (or CHW) image and one group, with the geometry resolved;
/// with `quantize`, of the f32 image that tract's QuantizeLinearI8 quantised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastIm2colI8 {
    pub packing: Packing,
    pub geo: Geometry,
    pub quantize: Option<quantize::FastQuantizeI8>,
}

/// A 2-D convolution's geometry over one CHW image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Geometry {
    pub channels: usize,
    pub input_hw: [usize; 2],
    pub output_hw: [usize; 2],
    pub kernel: [usize; 2],
    pub strides: [usize; 2],
    pub dilations: [usize; 2],
    pub pad_before: [usize; 2],
    /// The value the image is padded with: its zero point (0 for float images).
    pub pad: i8,
}

impl FastIm2colI8 {
    fn k(&self) -> usize {
        self.geo.channels * self.geo.taps()
    }

    fn exotic(&self) -> PackedExoticFact {
        self.packing.exotic(self.k(), self.geo.n())
    }

    /// The K row whose run along output row 0 starts at `start` in `planes` (one kernel tap
    /// of one channel), at output positions `at`, into `row`, which has `CHUNK` spare bytes
    /// past them.
    fn row(&self, planes: &PhasePlanes, start: usize, at: Range<usize>, row: &mut [i8]) {
        let ow = self.geo.output_hw[1];
        let step = planes.row_step();
        for yo in at.start / ow..at.end.div_ceil(ow) {
            let src = start + yo * step;
            // The columns of this output row inside `at`.
            let x0 = at.start.max(yo * ow) - yo * ow;
            let x1 = at.end.min(yo * ow + ow) - yo * ow;
            let dst = yo * ow + x0 - at.start;
            // Whole chunks: what runs past this output row is overwritten by the next one,
            // or lands in the spare bytes.
            for o in (x0..x1).step_by(CHUNK) {
                row[dst + o - x0..][..CHUNK].copy_from_slice(&planes.data[src + o..][..CHUNK]);
            }
        }
    }
}

/// A convolution's input image: i8, or f32 that tract's QuantizeLinearI8 quantises on its way
/// in.
#[derive(Clone, Copy)]
pub enum Image<'x> {
    I8(&'x [i8]),
    F32(&'x [f32], &'x quantize::FastQuantizeI8),
}

impl Image<'_> {
    /// The `dst.len()` values from `at` into `dst`, as i8: copied, or quantised.
    fn put(&self, at: usize, dst: &mut [i8]) {
        let src = at..at + dst.len();
        match *self {
            Image::I8(x) => dst.copy_from_slice(&x[src]),
            Image::F32(x, q) => quantize::quantize(&x[src], q.scale, q.zero_point, dst),
        }
    }
}

/// Every channel's padded input split by column phase ([`Geometry::phase_planes`]).
pub struct PhasePlanes<'g> {
    geo: &'g Geometry,
    pub data: Vec<i8>,
    rows: usize,
    cols: usize,
}

impl PhasePlanes<'_> {
    pub fn geometry(&self) -> &Geometry {
        self.geo
    }

    /// Padded rows, and values a plane row.
    pub fn rows_cols(&self) -> [usize; 2] {
        [self.rows, self.cols]
    }

    /// How far apart in `data` the runs of consecutive output rows start.
    pub fn row_step(&self) -> usize {
        self.geo.strides[0] * self.cols
    }

    /// Where, in `data`, the `ow` inputs that kernel tap `tap` of channel `c` meets along
    /// output row `yo` start: a contiguous run, with `CHUNK` readable bytes past any start.
    pub fn run(&self, c: usize, tap: usize, yo: usize) -> usize {
        let g = self.geo;
        let [sy, sx] = g.strides;
        let [dy, dx] = g.dilations;
        let (ky, kx) = (tap / g.kernel[1], tap % g.kernel[1]);
        let (phase, offset) = ((kx * dx) % sx, (kx * dx) / sx);
        ((c * sx + phase) * self.rows + yo * sy + ky * dy) * self.cols + offset
    }
}

impl Geometry {
    pub fn taps(&self) -> usize {
        self.kernel[0] * self.kernel[1]
    }

    /// Output positions.
    pub fn n(&self) -> usize {
        self.output_hw[0] * self.output_hw[1]
    }

    /// Every channel's padded input, split by column phase: the values of padded columns
    /// `i·sx + p` for phase `p`, as planes `[channel][phase][padded row][i]`, `cols` values a
    /// row. A K row then copies contiguous runs from one phase plane whatever the stride, and
    /// the padding is already in place. 16 spare bytes at the end let the copies run in whole
    /// 16-byte chunks. Channels are split over tract's executor ([`split`]).
    pub fn phase_planes(&self, x: Image) -> TractResult<PhasePlanes<'_>> {
        let [oh, ow] = self.output_hw;
        let [sy, sx] = self.strides;
        let [dy, dx] = self.dilations;
        let [kh, kw] = self.kernel;
        let rows = (oh - 1) * sy + (kh - 1) * dy + 1;
        let width = (ow - 1) * sx + (kw - 1) * dx + 1;
        let cols = width.div_ceil(sx);
        let channel_len = sx * rows * cols;
        let all = self.channels * channel_len;
        let mut planes = vec![self.pad; all + CHUNK];
        let plane_len = self.input_hw[0] * self.input_hw[1];
        split(&mut planes[..all], channel_len, all, |first, chunk| {
            // One padded input row, with room for the phases' last chunk.
            let mut line = vec![self.pad; cols * sx + CHUNK];
            let mut scratch = vec![];
            let w = self.input_hw[1];
            for (c, out) in chunk.chunks_exact_mut(channel_len).enumerate() {
                let at = (first + c) * plane_len;
                let dims = [rows, cols, width];
                match x {
                    // Narrow f32 rows: the channel quantised at once, one pass that vectorises
                    // whole, then its rows copied; wide ones quantised straight where they go,
                    // as i8 rows are copied. Row by row, four depthwise layers took 1.1× as
                    // long at 64×40×40, 0.88× at 64×80×80.
                    Image::F32(..) if w < 64 => {
                        scratch.resize(plane_len, 0);
                        x.put(at, &mut scratch);
                        let row = |y: usize, dst: &mut [i8]| {
                            dst.copy_from_slice(&scratch[y * w..][..dst.len()])
                        };
                        self.phase_channel(row, dims, &mut line, out)
                    }
                    _ => self.phase_channel(|y, dst| x.put(at + y * w, dst), dims, &mut line, out),
                }
            }
            Ok(())
        })?;
        Ok(PhasePlanes {
            geo: self,
            data: planes,
            rows,
            cols,
        })
    }

    /// One channel's planes, `[phase][padded row][i]`, into `out` (filled with the padding):
    /// `rows` padded rows, `cols` values a plane row, `width` padded columns; `row(y, dst)`
    /// writes input row `y`'s first `dst.len()` values into `dst`; `line` is scratch for one
    /// padded input row.
    fn phase_channel(
        &self,
        row: impl Fn(usize, &mut [i8]),
        [rows, cols, width]: [usize; 3],
        line: &mut [i8],
        out: &mut [i8],
    ) {
        let [h, w] = self.input_hw;
        let sx = self.strides[1];
        let [pt, pl] = self.pad_before;
        for yp in 0..rows {
            let Some(y) = yp.checked_sub(pt).filter(|y| *y < h) else {
                continue;
            };
            // Columns of the padded row that hold input: xp = x + pl for x in 0..w.
            let (x0, x1) = (pl.min(line.len()), (pl + w).min(width));
            if sx == 1 {
                // The plane row is the padded row, its padding already in place.
                let x0 = x0.min(x1);
                row(y, &mut out[yp * cols + x0..][..x1 - x0]);
                continue;
            }
            line.fill(self.pad);
            row(y, &mut line[x0..x1.max(x0)]);
            let at = |p: usize| (p * rows + yp) * cols;
            match sx {
                2 => {
                    let (even, odd) = out[at(0)..].split_at_mut(at(1) - at(0));
                    deinterleave2(&line[..2 * cols], &mut even[..cols], &mut odd[..cols]);
                }
                _ => {
                    for p in 0..sx {
                        let dst = &mut out[at(p)..][..cols];
                        for (d, v) in dst.iter_mut().zip(line[p..].iter().step_by(sx)) {
                            *d = *v;
                        }
                    }
                }
            }
        }
    }
}

/// Bytes each copy moves at once.
const CHUNK: usize = 16;

/// Even and odd bytes of `line` (2·n long) into `even` and `odd` (n long each).
fn deinterleave2(line: &[i8], even: &mut [i8], odd: &mut [i8]) {
    let blocks = even.len() / 16;
    for b in 0..blocks {
        let [e, o] = blocks16::deinterleave2(line[32 * b..][..32].try_into().expect("32"));
        even[16 * b..][..16].copy_from_slice(&e);
        odd[16 * b..][..16].copy_from_slice(&o);
    }
    for i in blocks * 16..even.len() {
        even[i] = line[2 * i];
        odd[i] = line[2 * i + 1];
    }
}

/// 16 values at a time, SSE2 on x86-64 and NEON on aarch64 (both baseline there), plain
/// elsewhere: the even and odd bytes of 32, and four rows of 16 interleaved byte by byte.
#[cfg(target_arch = "x86_64")]
use sse2 as blocks16;

#[cfg(target_arch = "aarch64")]
use neon as blocks16;

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
use plain as blocks16;

#[cfg(any(test, not(any(target_arch = "x86_64", target_arch = "aarch64"))))]
mod plain {
    pub fn deinterleave2(line: &[i8; 32]) -> [[i8; 16]; 2] {
        [
            std::array::from_fn(|i| line[2 * i]),
            std::array::from_fn(|i| line[2 * i + 1]),
        ]
    }

    /// Quad `q` holds positions 4q..4q+4, each as its 4 rows' bytes.
    pub fn interleave4(rows: [&[i8; 16]; 4]) -> [[i8; 16]; 4] {
        std::array::from_fn(|q| std::array::from_fn(|i| rows[i % 4][4 * q + i / 4]))
    }
}

#[cfg(target_arch = "x86_64")]
mod sse2 {
    use std::arch::x86_64::*;

    /// Masks and shifts split each 16-bit pair, unsigned packs put the halves back together.
    pub fn deinterleave2(line: &[i8; 32]) -> [[i8; 16]; 2] {
        let mut out = [[0i8; 16]; 2];
        // SAFETY: SSE2 is part of the x86-64 baseline; `line` holds 32 bytes and each
        // half of `out` 16, all accessed unaligned.
        unsafe {
            let lo = _mm_loadu_si128(line.as_ptr().cast());
            let hi = _mm_loadu_si128(line[16..].as_ptr().cast());
            let mask = _mm_set1_epi16(0xff);
            let e = _mm_packus_epi16(_mm_and_si128(lo, mask), _mm_and_si128(hi, mask));
            let o = _mm_packus_epi16(_mm_srli_epi16(lo, 8), _mm_srli_epi16(hi, 8));
            _mm_storeu_si128(out[0].as_mut_ptr().cast(), e);
            _mm_storeu_si128(out[1].as_mut_ptr().cast(), o);
        }
        out
    }

    /// Byte then word unpacks.
    pub fn interleave4(rows: [&[i8; 16]; 4]) -> [[i8; 16]; 4] {
        let mut out = [[0i8; 16]; 4];
        // SAFETY: SSE2 is part of the x86-64 baseline; every row and quad holds 16 bytes,
        // accessed unaligned.
        unsafe {
            let [a, b, c, d] = rows.map(|r| _mm_loadu_si128(r.as_ptr().cast()));
            let ab_lo = _mm_unpacklo_epi8(a, b);
            let ab_hi = _mm_unpackhi_epi8(a, b);
            let cd_lo = _mm_unpacklo_epi8(c, d);
            let cd_hi = _mm_unpackhi_epi8(c, d);
            let quads = [
                _mm_unpacklo_epi16(ab_lo, cd_lo),
                _mm_unpackhi_epi16(ab_lo, cd_lo),
                _mm_unpacklo_epi16(ab_hi, cd_hi),
                _mm_unpackhi_epi16(ab_hi, cd_hi),
            ];
            for (o, q) in out.iter_mut().zip(quads) {
                _mm_storeu_si128(o.as_mut_ptr().cast(), q);
            }
        }
        out
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use std::arch::aarch64::*;

    /// One de-interleaving load.
    pub fn deinterleave2(line: &[i8; 32]) -> [[i8; 16]; 2] {
        let mut out = [[0i8; 16]; 2];
        // SAFETY: NEON is part of the aarch64 baseline; `line` holds 32 bytes and each half
        // of `out` 16.
        unsafe {
            let v = vld2q_s8(line.as_ptr());
            vst1q_s8(out[0].as_mut_ptr(), v.0);
            vst1q_s8(out[1].as_mut_ptr(), v.1);
        }
        out
    }

    /// Byte then halfword zips.
    pub fn interleave4(rows: [&[i8; 16]; 4]) -> [[i8; 16]; 4] {
        let mut out = [[0i8; 16]; 4];
        // SAFETY: NEON is part of the aarch64 baseline; every row and quad holds 16 bytes.
        unsafe {
            let [a, b, c, d] = rows.map(|r| vld1q_s8(r.as_ptr()));
            let (ab, cd) = (vzipq_s8(a, b), vzipq_s8(c, d));
            let lo = vzipq_s16(vreinterpretq_s16_s8(ab.0), vreinterpretq_s16_s8(cd.0));
            let hi = vzipq_s16(vreinterpretq_s16_s8(ab.1), vreinterpretq_s16_s8(cd.1));
            for (o, q) in out.iter_mut().zip([lo.0, lo.1, hi.0, hi.1]) {
                vst1q_s8(o.as_mut_ptr(), vreinterpretq_s8_s16(q));
            }
        }
        out
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
        let plain = inputs[0].try_as_plain_ram()?;
        let (image, dt) = match &self.quantize {
            Some(q) => (Image::F32(plain.as_slice::<f32>()?, q), q.output),
            None => (Image::I8(plain.as_slice::<i8>()?), inputs[0].datum_type()),
        };
        let planes = self.geo.phase_planes(image)?;
        let taps = self.geo.taps();
        let starts: Vec<usize> = (0..self.k())
            .map(|kk| planes.run(kk / taps, kk % taps, 0))
            .collect();
        let packed = self
            .packing
            .pack(dt, self.k(), self.geo.n(), |kk, at, row| {
                self.row(&planes, starts[kk], at, row)
            })?;
        let output = PackedMatrixStorage::new_batched(&[1, 1], tvec!(packed)).into_tensor(dt);
        Ok(tvec!(output.into_tvalue()))
    }
}

impl Packing {
    /// The packed matrix of `k` rows of `n` values, as tract's Im2col and OptMatMulPack write
    /// it, its panels split over tract's executor ([`split`]): `row(kk, at, buffer)` writes
    /// K row `kk`'s values at positions `at` into the first `at.len()` values of `buffer`,
    /// which has `CHUNK` more.
    pub fn pack(
        &self,
        dt: DatumType,
        k: usize,
        n: usize,
        row: impl Fn(usize, Range<usize>, &mut [i8]) + Sync,
    ) -> TractResult<Box<dyn MMMInputValue>> {
        let r = self.r();
        let panel_len = self.panel_len(k);
        let panels = n.div_ceil(r);
        // SAFETY: `pack_panels` writes rows 0..k (K4: and the rows padding k to a multiple of
        // 4) of every panel; what the kernel also reads, the padding after them (AMX: within
        // each lane's row, so all of it) and a partial last panel's spare lanes, is zeroed first.
        let mut data = unsafe {
            Tensor::uninitialized_aligned_dt(dt, &[panels * panel_len], self.alignment())?
        };
        let rows_len = match self {
            Packing::K4(_) => k.div_ceil(4) * 4 * r,
            Packing::KMajor(_) => k * r,
            #[cfg(target_arch = "x86_64")]
            Packing::Amx(_) => 0,
        };
        split(data.as_bytes_mut(), panel_len, k * n, |first, bytes| {
            let start = first * r;
            for (p, panel) in bytes.chunks_exact_mut(panel_len).enumerate() {
                let whole = (first + p + 1) * r <= n;
                panel[if whole { rows_len } else { 0 }..].fill(0);
            }
            self.pack_panels(
                k,
                start..n.min(start + bytes.len() / panel_len * r),
                &row,
                bytes,
            );
            Ok(())
        })?;
        Ok(Box::new(EagerPackedInput {
            fact: self.exotic(k, n),
            packed: data.into_blob()?.into(),
            panel_bytes: panel_len,
            mn: n,
        }))
    }

    /// The panels of positions `at` (from a panel's first) into `bytes`, zeroed.
    fn pack_panels(
        &self,
        k: usize,
        at: Range<usize>,
        row: impl Fn(usize, Range<usize>, &mut [i8]),
        bytes: &mut [u8],
    ) {
        let (r, panel_len, n) = (self.r(), self.panel_len(k), at.len());
        let stride = n + CHUNK;
        match self {
            Packing::K4(_) => {
                // The 4 K rows the layout interleaves, built one at a time.
                let layout = Four {
                    stride,
                    n,
                    r,
                    panel_len,
                };
                let mut rows4 = vec![0i8; 4 * stride];
                for k0 in (0..k).step_by(4) {
                    for (j, buffer) in rows4.chunks_exact_mut(stride).enumerate() {
                        let kk = k0 + j;
                        if kk < k {
                            row(kk, at.clone(), buffer);
                        } else {
                            buffer.fill(0);
                        }
                    }
                    interleave4(&rows4, layout, k0 * r, bytes);
                }
            }
            Packing::KMajor(_) => {
                let mut buffer = vec![0i8; stride];
                for kk in 0..k {
                    row(kk, at.clone(), &mut buffer);
                    for (p, run) in buffer[..n].chunks(r).enumerate() {
                        let dst = &mut bytes[p * panel_len + kk * r..][..run.len()];
                        for (d, v) in dst.iter_mut().zip(run) {
                            *d = *v as u8;
                        }
                    }
                }
            }
            // Only where tract swaps the sides of a matmul of few positions: one value at a time.
            #[cfg(target_arch = "x86_64")]
            Packing::Amx(_) => {
                let mut buffer = vec![0i8; stride];
                for kk in 0..k {
                    row(kk, at.clone(), &mut buffer);
                    for (m, v) in buffer[..n].iter().enumerate() {
                        bytes[m / r * panel_len + self.offset(k, kk, m % r)] = *v as u8;
                    }
                }
            }
        }
    }

    /// The fact of [`Packing::pack`]'s output for a `k`×`n` matrix.
    pub fn exotic(&self, k: usize, n: usize) -> PackedExoticFact {
        PackedExoticFact {
            format: self.format(),
            k,
            mn: n.to_dim(),
        }
    }
}

impl TypedOp for FastIm2colI8 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let dt = self
            .quantize
            .as_ref()
            .map_or(inputs[0].datum_type, |q| q.output);
        Ok(tvec!(dt.fact([1, 1]).with_exotic_fact(self.exotic())))
    }

    as_op!();
}

/// Four K rows of `n` values, `stride` apart, and the K4 panels they go into.
#[derive(Clone, Copy)]
struct Four {
    stride: usize,
    n: usize,
    r: usize,
    panel_len: usize,
}

/// Writes the four rows into the K4 layout: position m of panel p gets the 4 bytes
/// `rows[0][m], rows[1][m], rows[2][m], rows[3][m]` at `p·panel_len + offset + 4·(m mod r)`.
fn interleave4(rows: &[i8], four: Four, offset: usize, out: &mut [u8]) {
    let Four {
        stride,
        n,
        r,
        panel_len,
    } = four;
    let at = |m: usize| (m / r) * panel_len + offset + 4 * (m % r);
    // 16 positions at a time while they fill whole panels, as quads of 4 consecutive
    // positions, which never straddle a panel when r is 4, 8 or 16; a power of two, so the
    // quads' panels come by shifts, not divisions.
    let blocks = if matches!(r, 4 | 8 | 16) { n / 16 } else { 0 };
    let shift = r.trailing_zeros();
    let quad_at = |m: usize| (m >> shift) * panel_len + offset + 4 * (m & (r - 1));
    let row =
        |j: usize, m: usize| -> &[i8; 16] { rows[j * stride + m..][..16].try_into().expect("16") };
    for m in (0..blocks * 16).step_by(16) {
        let quads = blocks16::interleave4([row(0, m), row(1, m), row(2, m), row(3, m)]);
        for (q, quad) in quads.iter().enumerate() {
            let dst = &mut out[quad_at(m + 4 * q)..][..16];
            for (d, v) in dst.iter_mut().zip(quad) {
                *d = *v as u8;
            }
        }
    }
    for m in blocks * 16..n {
        for j in 0..4 {
            out[at(m) + j] = rows[j * stride + m] as u8;
        }
    }
}

/// `rows` (each `out.len() / 4` bytes) interleaved byte by byte into `out`, `out[4m + j] =
/// rows[j][m] ^ flip`.
pub fn interleave_rows(rows: [&[i8]; 4], flip: u8, out: &mut [u8]) {
    let n = out.len() / 4;
    let blocks = n / 16;
    for m in (0..blocks * 16).step_by(16) {
        let quads = blocks16::interleave4(rows.map(|r| r[m..][..16].try_into().expect("16")));
        for (dst, quad) in out[4 * m..][..64].chunks_exact_mut(16).zip(&quads) {
            for (d, v) in dst.iter_mut().zip(quad) {
                *d = *v as u8 ^ flip;
            }
        }
    }
    for m in blocks * 16..n {
        for (j, row) in rows.iter().enumerate() {
            out[4 * m + j] = row[m] as u8 ^ flip;
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use tract_linalg::mmm::{EagerPackedInput, MMMInputValue};
    use tract_linalg::pack::{PackedFormat, PackedI8K4};
    #[cfg(target_arch = "x86_64")]
    use tract_linalg::x86_64::amx::PackedAmxA;
    use tract_onnx::prelude::*;

    use super::{Packing, blocks16, plain};
    use crate::kernels::MIN_SPLIT;
    use crate::kernels::tests::{Conv, run_both_with};

    proptest! {
        /// Each of this target's 16-value blocks (plain; SSE2 or NEON), byte by byte.
        #[test]
        fn blocks_take_the_bytes_they_should(
            line in prop::array::uniform32(any::<i8>()),
            rows in prop::array::uniform4(prop::array::uniform16(any::<i8>())),
        ) {
            let rows = [&rows[0], &rows[1], &rows[2], &rows[3]];
            type Blocks = (fn(&[i8; 32]) -> [[i8; 16]; 2], fn([&[i8; 16]; 4]) -> [[i8; 16]; 4]);
            let kernels: [(&str, Blocks); 2] = [
                ("plain", (plain::deinterleave2, plain::interleave4)),
                ("blocks16", (blocks16::deinterleave2, blocks16::interleave4)),
            ];
            for (name, (deinterleave2, interleave4)) in kernels {
                let [even, odd] = deinterleave2(&line);
                let quads = interleave4(rows);
                for i in 0..16 {
                    prop_assert_eq!([even[i], odd[i]], [line[2 * i], line[2 * i + 1]], "{}", name);
                    for (j, row) in rows.iter().enumerate() {
                        prop_assert_eq!(quads[i / 4][4 * (i % 4) + j], row[i], "{} row {}", name, j);
                    }
                }
            }
        }
    }

    /// What a kernel reads of a packed `k` × `n` matrix in `packing`: each panel's bytes, and
    /// each value at (K row, position), K4's rows padding k to a multiple of 4 included. Not
    /// what lies past the rows or in a partial panel's spare lanes, which tract's packers leave
    /// as they find them on some targets (aarch64).
    fn read(packing: &Packing, k: usize, n: usize, v: &dyn MMMInputValue) -> (usize, Vec<u8>) {
        let eager = v.downcast_ref::<EagerPackedInput>().expect("eager");
        let (bytes, panel, r) = (eager.packed.as_bytes(), eager.panel_bytes, packing.r());
        let rows = match packing {
            Packing::K4(_) => k.div_ceil(4) * 4,
            _ => k,
        };
        let values = (0..rows)
            .flat_map(|kk| (0..n).map(move |m| (kk, m)))
            .map(|(kk, m)| bytes[m / r * panel + packing.offset(k, kk, m % r)])
            .collect();
        (panel, values)
    }

    /// The same packed matrix as tract's own packer, in each layout and tile width an int8
    /// kernel takes (x86-64's 8×8 and 16×16 VNNI tiles, ARM's dot-product and plain ones), not
    /// only the one this CPU's kernel gets: K not a multiple of 4, a partial last panel, and a
    /// matrix big enough to split over threads.
    #[test]
    fn packs_what_tracts_packer_packs_in_every_layout() {
        let layouts = [4, 8, 16]
            .map(|r| Packing::K4(PackedI8K4::new(r)))
            .into_iter()
            .chain([4, 8, 16].map(|r| Packing::KMajor(PackedFormat::new(i8::datum_type(), r, 16))));
        #[cfg(target_arch = "x86_64")]
        let layouts = layouts.chain([8, 16].map(|r| Packing::Amx(PackedAmxA::new(r))));
        for packing in layouts {
            for (k, n) in [(9, 37), (27, 1000), (64, 2049)] {
                let values: Vec<i8> = (0..k * n).map(|i| (i * 7919 % 251) as i8).collect();
                let matrix = tensor1(&values).into_shape(&[k, n]).unwrap();
                let ours = packing
                    .pack(i8::datum_type(), k, n, |kk, at, row| {
                        row[..at.len()].copy_from_slice(&values[kk * n..][at]);
                    })
                    .unwrap();
                let tracts = packing.format().prepare_one(&matrix, 0, 1).unwrap();
                let bytes = |v: &dyn MMMInputValue| read(&packing, k, n, v);
                assert_eq!(bytes(&*ours), bytes(&*tracts), "{packing:?} {k}×{n}");
            }
        }
    }

    /// The same packed patches as tract's Im2col built for each int8 kernel this CPU runs, not
    /// only the one tract picks here (x86-64 with VNNI: both tiles' widths, 8 and 16): i8
    /// input, strides 1 and 2, output rows shorter and longer than a block of 16, positions
    /// not a multiple of the width.
    #[test]
    fn packs_what_tracts_im2col_packs_for_every_kernel() {
        use tract_linalg::MmmDispatch;
        use tract_linalg::mmm::PackedMatrixStorage;
        use tract_onnx::tract_core::ops::EvalOp;
        use tract_onnx::tract_core::ops::cnn::conv::Im2Col;

        // (input channels, kernel, [stride, pad, dilation], input size, zero point: the padding)
        let cases = [
            (8, 3, [1, 1, 1], 16, 0),
            (5, 3, [2, 1, 1], 21, 0),
            (6, 3, [1, 1, 1], 10, 0),
            (4, 3, [1, 1, 1], 20, 0),
            (7, 5, [1, 2, 2], 40, 0),
            (6, 3, [1, 1, 1], 10, -128),
            (5, 3, [2, 1, 1], 21, 37),
        ];
        let kernels: Vec<_> = MmmDispatch::native()
            .runnable()
            .iter()
            .flat_map(|mmm| (0..mmm.packings().len()).map(move |p| (mmm, p)))
            .filter(|(mmm, p)| {
                let (a, b) = &mmm.packings()[*p];
                [a, b]
                    .iter()
                    .all(|f| f.downcast_ref::<PackedI8K4>().is_some())
            })
            .collect();
        println!(
            "K4 kernels: {:?}",
            kernels.iter().map(|(m, _)| m.name()).collect::<Vec<_>>()
        );
        for (ci, k, geometry, size, zero_point) in cases {
            let conv = Conv {
                ci,
                co: 8,
                group: 1,
                k,
                geometry,
                size,
                quantize: false,
                zero_point,
            };
            let model = conv.model();
            let node = model
                .nodes()
                .iter()
                .find(|n| n.op_is::<Im2Col>())
                .expect("an Im2col");
            let (tracts, geo) = super::geometry(&model, node).unwrap().expect("handled");
            let shape = model.outlet_fact(node.inputs[0]).unwrap().shape.clone();
            let x: Vec<i8> = (0..ci * size * size)
                .map(|i| (i * 7919 % 251) as i8)
                .collect();
            let x = tensor1(&x).into_shape(&[1, ci, size, size]).unwrap();
            let inputs = |op: &dyn EvalOp| {
                let mut inputs = tvec!(x.clone().into_tvalue());
                if node.inputs.len() > 1 {
                    inputs.push(tensor0(zero_point as i32).into_tvalue());
                }
                op.eval_out_of_plan(inputs).unwrap().unwrap().remove(0)
            };
            let k_len = ci * k * k;
            let n = geo.n();
            for (mmm, packing) in &kernels {
                let theirs = Im2Col::new(
                    tracts.pool_spec.clone(),
                    1,
                    k_len,
                    &shape,
                    (*mmm).clone(),
                    *packing,
                )
                .unwrap();
                let format = &*mmm.packings()[*packing].1;
                let layout = Packing::of(format).expect("K4");
                let ours = super::FastIm2colI8 {
                    packing: layout.clone(),
                    geo: geo.clone(),
                    quantize: None,
                };
                let bytes = |t: &Tensor| {
                    let value = t.try_storage_as::<PackedMatrixStorage>().unwrap().value();
                    read(&layout, k_len, n, value)
                };
                assert_eq!(
                    bytes(&inputs(&ours)),
                    bytes(&inputs(&theirs)),
                    "{} {ci} channels, {k}×{k}, {geometry:?}, {size}, zero point {zero_point}",
                    mmm.name()
                );
            }
        }
    }

    /// The same packed patches as tract's Im2col, for whichever int8 kernel this CPU gets (K4
    /// on x86-64 with VNNI and ARM with the dot product, K-major on Cortex-A72 and A53):
    /// strides 1 to 3, padding, dilation, 5×5, rows shorter and longer than a block, i8 input
    /// and f32 input quantised on the way in, and two big enough to split over threads, whose
    /// chunks start inside output rows. Planned without [`ConvI8`](crate::kernels::conv_i8::ConvI8), which
    /// takes these layers where the CPU has AVX-512 VNNI.
    #[test]
    fn packs_what_tracts_im2col_packs() {
        // (input channels, output channels, kernel, [stride, pad, dilation], input size,
        // f32 input, zero point)
        let cases = [
            (8, 16, 3, [1, 1, 1], 16, false, 0),
            (5, 7, 3, [2, 1, 1], 15, true, 0),
            (3, 8, 3, [2, 1, 1], 70, false, 0),
            (6, 8, 3, [1, 2, 2], 13, true, 0),
            (4, 12, 5, [1, 2, 1], 9, false, 0),
            (3, 8, 3, [3, 1, 1], 20, false, 0),
            (3, 8, 3, [1, 1, 1], 40, true, 0),
            (16, 8, 3, [1, 1, 1], 37, false, 0),
            (13, 8, 3, [2, 1, 1], 83, true, 0),
            (5, 7, 3, [2, 1, 1], 15, true, -128),
            (8, 16, 3, [1, 1, 1], 16, false, 37),
        ];
        // K × positions: what the packing splits.
        let split = |ci: usize, k: usize, out: usize| ci * k * k * out * out >= MIN_SPLIT;
        assert!(split(16, 3, 37) && split(13, 3, 42));
        for (ci, co, k, geometry, size, quantize, zero_point) in cases {
            let conv = Conv {
                ci,
                co,
                group: 1,
                k,
                geometry,
                size,
                quantize,
                zero_point,
            };
            run_both_with(&conv.model(), false, "FastIm2colI8", 1, |_| None);
        }
    }
}
