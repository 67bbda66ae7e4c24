//! An int8 depthwise convolution for tract's optimised plans.
//!
//! tract 0.23.9 lowers a depthwise ConvInteger like any grouped one: an Im2col per channel
//! (K = the kernel's 9 taps) and a batched matmul of one output row per channel, ~8× slower
//! than its float depthwise. [`DepthwiseI8`] computes the same i32 accumulators directly:
//! each channel's zero-padded input is split by column phase once (as the int8 im2col does),
//! then every kernel tap adds `w · x` along whole output rows, contiguous runs that vectorise
//! at any stride. On CPUs with AVX-512 VNNI and VBMI, kernels up to four columns wide take one
//! `VPDPBUSD` a kernel row and 16 output positions instead: a byte permute of the padded input
//! rows' loads makes the four bytes of each 32-bit lane the values the kernel row meets at one
//! output position (the layout of XNNPACK's and ncnn's int8 depthwise kernels), the
//! accumulators held in registers.
//!
//! Where an f32 QuantizeLinear writes the i8 image, the op reads the f32 one and quantises it
//! while it splits it by phase, as [`ConvI8`](conv_i8::ConvI8) does.

use tract_linalg::mmm::{EagerPackedInput, MMMInputValue};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::math::Sub;

use super::cast::{self, Affine};
use super::im2col_i8::{self, Geometry, Image, PhasePlanes};
use super::{accumulators, accumulators_fact, conv_i8, quantize};
use crate::imgproc::morph::Simd;

/// The replacements for `node` if it is the Im2col of an int8 depthwise convolution (one input
/// channel a group, one output channel a group, no bias): for each of its readers that is
/// tract's batched matmul, the op, the input it reads (the Im2col's, or the f32 image where an
/// f32 QuantizeLinear writes it) and the matmul output it computes. Depthwise layers reading
/// the same input (YOLOX's class and box branches) share one Im2col.
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
    let (quantize, input) = match quantize::quantizer(model, node.inputs[0])? {
        Some((q, x)) => (Some(q), x),
        None => (None, node.inputs[0]),
    };
    let mut found = vec![];
    for reader in model.outlet_successors(OutletId::new(node.id, 0)) {
        if let Some((mut dw, output)) = for_reader(model, *reader, &geo)? {
            dw.quantize = quantize.clone();
            found.push((dw, input, output));
        }
    }
    Ok(found)
}

/// The op computing what `reader`, reading the Im2col of geometry `geo`, computes, if it is
/// tract's batched matmul of one output row per channel, and the output it computes: the
/// matmul's, or, where the input has a zero point, that of the subtraction after it.
fn for_reader(
    model: &TypedModel,
    reader: InletId,
    geo: &Geometry,
) -> TractResult<Option<(DepthwiseI8, OutletId)>> {
    let Some(im2col_i8::PatchMatMul {
        c,
        weights: packed,
        axes,
        minus,
    }) = im2col_i8::patch_matmul(model, reader)?
    else {
        return Ok(None);
    };
    let mut output = OutletId::new(reader.node, 0);
    let minus = match minus {
        Some(m) => Some(m),
        None => zero_point_sub(model, output, c)?.map(|(m, sub)| {
            output = sub;
            m
        }),
    };
    if minus.as_ref().is_some_and(|m| m.len() != geo.channels) {
        return Ok(None);
    }
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
    Ok(Some((
        DepthwiseI8 {
            vnni: vnni_runs(geo),
            geo: geo.clone(),
            weights,
            minus: minus.unwrap_or_else(|| vec![0; geo.channels]),
            quantize: None,
            output: c.clone(),
            simd: Simd::detect(),
            epilogue: None,
        },
        output,
    )))
}

/// If the batched matmul writing `mm` (of fact `c`) is read only by tract's subtraction of a
/// constant per channel (the input's zero point times each channel's weights' sum, which tract
/// does not fuse into a batched matmul): the constant, and the subtraction's output.
fn zero_point_sub(
    model: &TypedModel,
    mm: OutletId,
    c: &TypedFact,
) -> TractResult<Option<(Vec<i32>, OutletId)>> {
    let [reader] = model.outlet_successors(mm) else {
        return Ok(None);
    };
    let node = model.node(reader.node);
    let Some(op) = node.op_as::<TypedBinOp>() else {
        return Ok(None);
    };
    let (Some(shape), true) = (c.shape.as_concrete(), op.0.is::<Sub>() && reader.slot == 0) else {
        return Ok(None);
    };
    let Some(k) = &model.outlet_fact(node.inputs[1])?.konst else {
        return Ok(None);
    };
    // One value a channel: the output's shape with its last axis, the positions', 1.
    let per_channel = k.shape().split_last() == Some((&1, &shape[..shape.len() - 1]))
        && k.datum_type() == i32::datum_type()
        && model
            .outlet_fact(OutletId::new(node.id, 0))?
            .without_value()
            == c.without_value();
    if !per_channel {
        return Ok(None);
    }
    let minus = k.try_as_plain_ram()?.as_slice::<i32>()?.to_vec();
    Ok(Some((minus, OutletId::new(node.id, 0))))
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

/// An int8 depthwise convolution of one CHW image: i8 input (or f32, with `quantize`), i32
/// accumulators out in the shape tract's matmul gave them (channel-major either way), or with
/// `epilogue` the f32 values of the scale, bias and activation after them.
#[derive(Debug, Clone, PartialEq)]
pub struct DepthwiseI8 {
    pub geo: Geometry,
    /// `[channel][tap]`, taps row-major.
    pub weights: Vec<i8>,
    /// What comes off each channel's accumulators: the input's zero point times the channel's
    /// weights' sum, as tract takes it off.
    pub minus: Vec<i32>,
    /// The quantisation of an f32 input.
    pub quantize: Option<quantize::FastQuantizeI8>,
    pub output: TypedFact,
    /// The instruction set the tap-by-tap kernel runs with.
    pub simd: Simd,
    /// The VNNI kernel instead (CPUs with AVX-512 VNNI and VBMI, kernels at most four columns
    /// wide).
    pub vnni: bool,
    pub epilogue: Option<Affine>,
}

// The epilogue's scales and biases are constants of the model: no NaN.
impl Eq for DepthwiseI8 {}

impl cast::Accumulates for DepthwiseI8 {
    fn channels(&self) -> Option<(usize, usize)> {
        self.epilogue
            .is_none()
            .then(|| (self.geo.channels, self.geo.n()))
    }

    fn with_epilogue(&self, affine: Affine) -> Self {
        DepthwiseI8 {
            epilogue: Some(affine),
            ..self.clone()
        }
    }
}

/// Whether this CPU runs the VNNI kernel.
fn vnni_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    return vnni::available();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether this CPU runs the VNNI kernel, and it takes `geo`.
fn vnni_runs(geo: &Geometry) -> bool {
    #[cfg(target_arch = "x86_64")]
    let fits = vnni::fits(geo);
    #[cfg(not(target_arch = "x86_64"))]
    let fits = {
        let _ = geo;
        false
    };
    vnni_available() && fits
}

impl Op for DepthwiseI8 {
    fn name(&self) -> StaticName {
        cast::op_name("DepthwiseI8", self.epilogue.as_ref())
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let kernel = match self.vnni {
            true => "VNNI".to_string(),
            false => format!("{:?}", self.simd),
        };
        Ok(vec![format!("{:?} {kernel}", self.geo)])
    }

    op_as_typed_op!();
}

impl EvalOp for DepthwiseI8 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let plain = inputs[0].try_as_plain_ram()?;
        let image = match &self.quantize {
            Some(q) => Image::F32(plain.as_slice::<f32>()?, q),
            None => Image::I8(plain.as_slice::<i8>()?),
        };
        let planes = self.geo.phase_planes(image)?;
        let (n, taps, affine) = (self.geo.n(), self.geo.taps(), self.epilogue.as_ref());
        let vnni = self.vnni && vnni_runs(&self.geo);
        let output = accumulators(
            &self.output,
            [n, 1],
            taps,
            affine,
            |first, out, epilogue| {
                let finish = epilogue.filter(|e| vnni && e.in_registers());
                // An epilogue not run in registers runs after each channel, while it is in cache.
                let after = epilogue.filter(|_| finish.is_none());
                let later = finish.filter(|e| e.stored_later());
                let step = if after.or(later).is_some() {
                    n
                } else {
                    out.len()
                };
                for (i, out) in out.chunks_exact_mut(step).enumerate() {
                    let first = first + i * step / n;
                    let taps = Taps {
                        weights: &self.weights[first * taps..],
                        minus: &self.minus[first..],
                    };
                    match vnni {
                        #[cfg(target_arch = "x86_64")]
                        // SAFETY: the CPU has what the kernel needs.
                        true => unsafe { vnni::convolve(&planes, first, taps, out, finish) },
                        _ => convolve(self.simd, &planes, first, taps, out),
                    }
                    if let Some(epilogue) = after {
                        epilogue.apply(first, out)?;
                    }
                    if let Some(epilogue) = later {
                        epilogue.finish_stored(out)?;
                    }
                }
                Ok(())
            },
        )?;
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for DepthwiseI8 {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let fact = accumulators_fact(&self.output, self.epilogue.as_ref());
        Ok(tvec!(fact))
    }

    as_op!();
}

/// The channels' kernels from a first one on.
#[derive(Clone, Copy)]
pub struct Taps<'w> {
    /// `[channel][tap]`.
    pub weights: &'w [i8],
    /// What comes off each channel's accumulators.
    pub minus: &'w [i32],
}

/// `out[c][y][x] = Σ_taps weights[c][tap] · input under the tap − minus[c]` for the channels
/// from `first` that `out` holds (`taps` from `first`'s), with the instruction set `simd`
/// (baseline for any the CPU lacks or this kernel has no build for).
pub fn convolve(simd: Simd, planes: &PhasePlanes, first: usize, taps: Taps, out: &mut [i32]) {
    #[cfg(target_arch = "x86_64")]
    match simd {
        // SAFETY: each arm runs only where the CPU has its instruction set.
        Simd::Avx512 if simd.is_available() => unsafe { avx512(planes, first, taps, out) },
        Simd::Avx2 if simd.is_available() => unsafe { avx2(planes, first, taps, out) },
        _ => body(planes, first, taps, out),
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = simd;
        body(planes, first, taps, out)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn avx2(planes: &PhasePlanes, first: usize, taps: Taps, out: &mut [i32]) {
    body(planes, first, taps, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn avx512(planes: &PhasePlanes, first: usize, taps: Taps, out: &mut [i32]) {
    body(planes, first, taps, out)
}

/// One channel at a time, each tap one run over every output row at once: the rows' runs
/// are [`PhasePlanes::row_step`] apart, so the run also covers the padding between them (and,
/// for a vertical stride, the skipped rows), computed and dropped when the rows are copied
/// out. Long runs the compiler vectorises for whichever instruction set this is inlined into
/// (SSE2 on baseline x86-64, NEON on aarch64) beat short ones per row: 40-wide rows spent
/// more time entering loops than multiplying.
#[inline(always)]
fn body(planes: &PhasePlanes, first: usize, taps: Taps, out: &mut [i32]) {
    let geo = planes.geometry();
    let [oh, ow] = geo.output_hw;
    let step = planes.row_step();
    let len = (oh - 1) * step + ow;
    let mut acc = vec![0i32; len];
    for (c, ((w, minus), out)) in taps
        .weights
        .chunks_exact(geo.taps())
        .zip(taps.minus)
        .zip(out.chunks_exact_mut(oh * ow))
        .enumerate()
    {
        let run = |tap: usize| &planes.data[planes.run(first + c, tap, 0)..][..len];
        let w0 = w[0] as i32;
        for (a, x) in acc.iter_mut().zip(run(0)) {
            *a = w0 * *x as i32 - minus;
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

#[cfg(target_arch = "x86_64")]
mod vnni {
    use std::arch::x86_64::*;

    use super::{Geometry, PhasePlanes, Taps};
    use crate::kernels::cast::{AFFINE, Epilogue, Finish, LEAKY, Lanes, MAX};
    use crate::kernels::conv_i8;

    /// Whether this CPU runs the kernel: AVX-512 VNNI, and VBMI's byte permutes.
    pub fn available() -> bool {
        conv_i8::available() && std::arch::is_x86_feature_detected!("avx512vbmi")
    }

    /// Whether the kernel takes `geo`: a kernel row's taps (at most 4) come from at most two
    /// phase planes (tap 0's and one other), within 48 values of the row's start.
    pub fn fits(geo: &Geometry) -> bool {
        let (sx, dx, kw) = (geo.strides[1], geo.dilations[1], geo.kernel[1]);
        let mut phases = (0..kw).map(|kx| kx * dx % sx).filter(|p| *p != 0);
        let other = phases.next();
        kw <= 4 && phases.all(|p| Some(p) == other) && (kw - 1) * dx / sx <= 48
    }

    /// One channel's kernel, as the blocks read it.
    struct Channel<'p> {
        planes: &'p PhasePlanes<'p>,
        /// Where each of the two planes' (the same one twice for one phase) row 0 starts.
        bases: [usize; 2],
        /// Whether the taps read two planes (the permute's indices from 64 pick the second).
        two_planes: bool,
        /// The bytes of a load: 16 and the farthest tap's offset.
        mask: u64,
        /// Lane `i`'s byte `kx`: plane `t`'s value `offset + i` as `64 t + offset + i`.
        permute: __m512i,
        /// Per kernel row, its four weights (zero past the kernel's width) in each lane.
        rows: &'p [__m512i],
        correction: __m512i,
    }

    /// [`super::body`]'s accumulators. Per kernel row and 16 output positions, one or two
    /// loads of the padded input rows, one byte permute that gathers into each 32-bit lane the
    /// four values the row's taps meet at one position (the layout of XNNPACK's and ncnn's
    /// int8 depthwise kernels), offset by 128 to be unsigned, and one `VPDPBUSD` by the row's
    /// four weights (one load and one single-source permute where the taps read one plane);
    /// the offset comes off as `−128 · Σ w`, with the channel's `minus`. Then `finish`, on
    /// each block before its store.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vbmi")]
    pub(super) fn convolve(
        planes: &PhasePlanes,
        first: usize,
        taps: Taps,
        out: &mut [i32],
        finish: Option<&Epilogue>,
    ) {
        let geo = planes.geometry();
        let ([oh, ow], [kh, kw]) = (geo.output_hw, geo.kernel);
        let (sy, [sx, dx]) = (geo.strides[0], [geo.strides[1], geo.dilations[1]]);
        let [_, cols] = planes.rows_cols();
        // Tap kx's plane (0: the phase of tap 0, 1: the other) and offset in it.
        let tap = |kx: usize| {
            let (phase, offset) = ((kx * dx) % sx, (kx * dx) / sx);
            (usize::from(phase != 0), offset)
        };
        let reach = (0..kw).map(|kx| tap(kx).1).max().unwrap_or(0);
        let mask = match 16 + reach {
            64 => u64::MAX,
            n => (1u64 << n) - 1,
        };
        let permute: [u8; 64] = std::array::from_fn(|b| {
            let (i, kx) = (b / 4, b % 4);
            let (t, offset) = if kx < kw { tap(kx) } else { (0, 0) };
            (64 * t + offset + i) as u8
        });
        // SAFETY: `permute` holds 64 bytes.
        let permute = unsafe { _mm512_loadu_si512(permute.as_ptr().cast()) };
        let mut rows = Vec::with_capacity(kh);
        // Narrow output rows one plane row apart are computed as one row of all of them (the
        // positions past each row's end computed and dropped), where a row at a time left many
        // of the last block's lanes idle (12 of 16 at 20 wide, 6 at 10).
        let narrow = sy == 1 && 4 * (ow.next_multiple_of(16) - ow) > ow;
        let mut spread = vec![0; if narrow { (oh - 1) * cols + ow } else { 0 }];
        for (c, ((w, minus), out)) in taps
            .weights
            .chunks_exact(kh * kw)
            .zip(taps.minus)
            .zip(out.chunks_exact_mut(oh * ow))
            .enumerate()
        {
            let base = |kx: usize| planes.run(first + c, kx, 0) - tap(kx).1;
            let other = (1..kw).find(|kx| tap(*kx).0 == 1);
            rows.clear();
            rows.extend(w.chunks_exact(kw).map(|k| {
                let mut b = [0u8; 4];
                for (b, k) in b.iter_mut().zip(k) {
                    *b = *k as u8;
                }
                _mm512_set1_epi32(i32::from_le_bytes(b))
            }));
            let channel = Channel {
                planes,
                bases: [base(0), other.map_or(base(0), base)],
                two_planes: other.is_some(),
                mask,
                permute,
                rows: &rows,
                correction: _mm512_set1_epi32(
                    -128 * w.iter().map(|v| *v as i32).sum::<i32>() - minus,
                ),
            };
            let lanes = finish.map(|e| e.lanes(first + c));
            if narrow {
                row_blocks(&channel, [1, spread.len(), 0], lanes.as_ref(), &mut spread);
                for (yo, out) in out.chunks_exact_mut(ow).enumerate() {
                    out.copy_from_slice(&spread[yo * cols..][..ow]);
                }
            } else {
                row_blocks(&channel, [oh, ow, sy * cols], lanes.as_ref(), out);
            }
        }
    }

    /// [`row_blocks::<TWO, KIND>`] for `k`'s planes and `lanes`' kind.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vbmi")]
    fn row_blocks(k: &Channel, dims: [usize; 3], lanes: Option<&Lanes>, out: &mut [i32]) {
        let kind = lanes.map(|l| l.kind);
        match (k.two_planes, kind) {
            (false, None) => blocks::<false, NONE>(k, dims, lanes, out),
            (false, Some(Finish::Affine)) => blocks::<false, AFFINE>(k, dims, lanes, out),
            (false, Some(Finish::Max)) => blocks::<false, MAX>(k, dims, lanes, out),
            (false, Some(Finish::LeakyRelu)) => blocks::<false, LEAKY>(k, dims, lanes, out),
            (true, None) => blocks::<true, NONE>(k, dims, lanes, out),
            (true, Some(Finish::Affine)) => blocks::<true, AFFINE>(k, dims, lanes, out),
            (true, Some(Finish::Max)) => blocks::<true, MAX>(k, dims, lanes, out),
            (true, Some(Finish::LeakyRelu)) => blocks::<true, LEAKY>(k, dims, lanes, out),
        }
    }

    /// No epilogue: [`blocks`]' `KIND` where the accumulators are stored as they are.
    const NONE: u8 = u8::MAX;

    /// `oh` output rows of `ow` values, `step` plane values apart: each row's blocks of 16 in
    /// turn (the last one masked), each finished with `lanes` as `KIND` says ([`Finish`], or
    /// [`NONE`]) and stored. The loop the VNNI instructions and the epilogue share, with no
    /// call or store logic between blocks. Calls of up to four blocks at a time, the
    /// epilogue called on them and their stores split where blocks straddled two rows, took
    /// 1.7× as long (four 64×80×80 layers: 1.04 ms against 0.60).
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vbmi")]
    fn blocks<const TWO: bool, const KIND: u8>(
        k: &Channel,
        [oh, ow, step]: [usize; 3],
        lanes: Option<&Lanes>,
        out: &mut [i32],
    ) {
        let [_, cols] = k.planes.rows_cols();
        let dy = k.planes.geometry().dilations[0];
        let data = k.planes.data.as_ptr();
        let flip = _mm512_set1_epi8(0x80u8 as i8);
        let tail = match ow % 16 {
            0 => 0xffff,
            n => (1u16 << n) - 1,
        };
        for (yo, out) in out[..oh * ow].chunks_exact_mut(ow).enumerate() {
            for x in (0..ow).step_by(16) {
                let mut acc = k.correction;
                for (ky, w) in k.rows.iter().enumerate() {
                    let at = yo * step + ky * dy * cols + x;
                    // SAFETY: the mask's bytes lie within the output row's reach in its planes,
                    // at most 15 values past a plane row's end: in the next row, or in the
                    // planes' spare bytes.
                    let load = |base: usize| unsafe {
                        _mm512_maskz_loadu_epi8(k.mask, data.add(base + at).cast())
                    };
                    let v = match TWO {
                        true => {
                            _mm512_permutex2var_epi8(load(k.bases[0]), k.permute, load(k.bases[1]))
                        }
                        false => _mm512_permutexvar_epi8(k.permute, load(k.bases[0])),
                    };
                    acc = _mm512_dpbusd_epi32(acc, _mm512_xor_si512(v, flip), *w);
                }
                let acc = match lanes {
                    Some(lanes) if KIND != NONE => lanes.block::<KIND>(acc),
                    _ => acc,
                };
                let mask = if x + 16 <= ow { 0xffff } else { tail };
                // SAFETY: the mask's lanes are the row's values from `x`.
                unsafe { _mm512_mask_storeu_epi32(out.as_mut_ptr().add(x), mask, acc) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::tests::{Conv, EPILOGUE_VARIANTS, run_both, run_epilogues, with_max};

    /// tract's i32 accumulators bit for bit, with every instruction set this CPU has (the ones
    /// it lacks are named): 3×3 and 5×5, strides 1 to 3, padding, dilation, odd sizes, rows of
    /// more than four 16-position blocks, i8 input
    /// and f32 input through QuantizeLinear, and one big enough to split over threads (the
    /// quantisation too), and two or three layers reading one input, which tract plans with
    /// one Im2col (YOLOX's class and box branches).
    #[test]
    fn accumulates_what_tracts_matmul_does() {
        const { assert!(30 * 47 * 47 >= crate::kernels::MIN_SPLIT) };
        // (channels, kernel, [stride, pad, dilation], input size, f32 input, layers, zero point)
        let cases = [
            (16, 3, [1, 1, 1], 20, false, 1, 0),
            (24, 3, [2, 1, 1], 21, true, 1, 0),
            (8, 5, [1, 2, 1], 13, false, 1, 0),
            (5, 3, [2, 0, 1], 40, false, 1, 0),
            (7, 3, [1, 2, 2], 9, true, 1, 0),
            (4, 3, [3, 1, 1], 17, false, 1, 0),
            (30, 3, [1, 1, 1], 47, true, 1, 0),
            (12, 3, [1, 1, 1], 14, true, 2, 0),
            (6, 3, [2, 1, 1], 11, false, 3, 0),
            (3, 3, [1, 1, 1], 70, true, 1, 0),
            (16, 3, [1, 1, 1], 20, true, 1, -128),
            (24, 3, [2, 1, 1], 21, false, 1, 37),
            (12, 3, [1, 1, 1], 14, true, 2, -128),
        ];
        // The tap-by-tap kernel on each instruction set, then the VNNI one.
        let kernels = Simd::ALL.map(|s| (format!("{s:?}"), s, false, s.is_available()));
        let vnni = ("VNNI".to_string(), Simd::detect(), true, vnni_available());
        for (name, simd, vnni, available) in kernels.into_iter().chain([vnni]) {
            match (available, vnni) {
                (true, _) => {}
                (false, true) => {
                    println!(
                        "ISA path skipped: kernels::depthwise_i8 VNNI (no AVX-512 VNNI and VBMI)"
                    );
                    continue;
                }
                (false, false) => {
                    println!("depthwise_i8: {name} skipped, this CPU lacks it");
                    continue;
                }
            }
            for (c, k, geometry, size, quantize, layers, zero_point) in cases {
                let conv = Conv {
                    ci: c,
                    co: c,
                    group: c,
                    k,
                    geometry,
                    size,
                    quantize,
                    zero_point,
                };
                run_both(&conv.branched(layers), "DepthwiseI8", layers, |node| {
                    let mut op = node.op_as::<DepthwiseI8>()?.clone();
                    op.simd = simd;
                    op.vnni = vnni;
                    Some(Box::new(op))
                });
            }
            println!("depthwise_i8: {name} matches tract");
        }
    }

    /// The scale, bias and activation after the accumulators, run on each channel as it is
    /// done ([`cast::into_producer`]), by the VNNI kernel in its registers and after the tap-by-tap
    /// one, a ReLU also as a max activation ([`with_max`]): tract's f32 outputs bit for bit,
    /// on one thread and two.
    #[test]
    fn applies_the_epilogue_as_tract_does() {
        // (channels, kernel, [stride, pad, dilation], input size, f32 input, zero point)
        let cases = [
            (16, 3, [1, 1, 1], 20, false, 0),
            (24, 3, [2, 1, 1], 21, true, 0),
            (30, 3, [1, 1, 1], 47, true, 0),
            (16, 3, [1, 1, 1], 20, true, -128),
        ];
        for (c, k, geometry, size, quantize, zero_point) in cases {
            let conv = Conv {
                ci: c,
                co: c,
                group: c,
                k,
                geometry,
                size,
                quantize,
                zero_point,
            };
            run_epilogues(
                &conv,
                "DepthwiseI8",
                &EPILOGUE_VARIANTS,
                |node, (vnni, as_max)| {
                    let op = node.op_as::<DepthwiseI8>()?;
                    let epilogue = with_max(op.epilogue.as_ref(), as_max)?;
                    Some(Box::new(DepthwiseI8 {
                        vnni: vnni && op.vnni,
                        epilogue,
                        ..op.clone()
                    }))
                },
            );
        }
    }
}
