//! A direct int8 convolution for tract's optimised plans, on CPUs with AVX-512 VNNI and on
//! aarch64 CPUs without the dot product.
//!
//! tract 0.23.9 computes an int8 k×k convolution as an eager Im2col, which writes every
//! patch into a packed matrix (k² times the image), then a matmul reading it back. Even as
//! [`FastIm2colI8`](super::im2col_i8::FastIm2colI8) writes it, the packing took a quarter of
//! YOLOv8n-320's int8 plan. [`ConvI8`] reads the patches where they are: the image is split by
//! column and row phase once, four channels interleaved, so that one kernel tap of four
//! channels over 16 consecutive output positions is one 64-byte load, whatever the stride, the
//! operand of one `VPDPBUSD` per output channel (the layout of the direct int8 convolutions of
//! MLAS and XNNPACK). It gives tract's i32 accumulators bit for bit.
//!
//! 1×1 layers, which tract packs image row by image row for a matmul batched over the rows,
//! take the same kernel with one tap. Where both strides are 1, the f32 image is quantised
//! into the interleaved layout in the same pass. The scale, bias and activation after the
//! accumulators can run on them in registers, before they are stored ([`cast::into_producer`]).
//!
//! On aarch64 the same layout, unoffset, feeds NEON's widening multiplies: two steps' products
//! of a position's four channels summed in 16 bits (`smull`, `smlal`), then pairwise into 32
//! (`sadalp`), 16 multiply-adds in three instructions where tract's `arm64simd_mmm_i32_8x8`
//! takes 22 for 64 (XNNPACK's `neon_mlal_padal` scheme). The two products fit 16 bits only
//! with weights within ±127, as `quantize` writes them: a layer with a −128 weight stays
//! tract's. CPUs with the dot product keep tract's `sdot` kernel.

use tract_linalg::mmm::{EagerPackedInput, MMMInputValue};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::matmul::pack::OptMatMulPack;

use super::cast::{self, Affine};
use super::im2col_i8::{self, Geometry, Image};
use super::quantize;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
use super::{im2col_i8::PhasePlanes, split};

/// Output channels a kernel call accumulates.
const OC_TILE: usize = 8;
/// Blocks of 16 output positions a kernel call accumulates: with [`OC_TILE`], 24 of the 32
/// vector registers.
#[cfg(target_arch = "x86_64")]
const BLOCKS: usize = 3;

/// What the planes' bytes are offset by: `VPDPBUSD` multiplies unsigned bytes, NEON's
/// multiplies signed ones.
const OFFSET: i32 = if cfg!(target_arch = "x86_64") { 128 } else { 0 };

/// Whether this CPU runs [`ConvI8`]'s kernel.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(target_arch = "aarch64")]
    {
        !std::arch::is_aarch64_feature_detected!("dotprod")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    false
}

/// What this CPU lacks for [`ConvI8`]'s kernel, or has that tract's beats it with.
#[cfg(test)]
const UNAVAILABLE: &str = if cfg!(target_arch = "aarch64") {
    "this CPU has the dot product: tract's kernel runs"
} else {
    "this CPU lacks AVX-512 VNNI"
};

/// The replacements for `node` if it is tract's Im2col of a one-group int8 convolution this
/// handles (see [`im2col_i8::geometry`]), or its packing of a 1×1 one's image (see
/// [`pointwise`]), on a CPU that runs the kernel ([`available`]): for each of its readers that
/// is tract's matmul of the packed weights by the patches, the op, the input it reads (the f32
/// image where an f32 QuantizeLinear writes the i8 one, which the op then quantises itself)
/// and the matmul output it computes.
pub fn replacements(
    model: &TypedModel,
    node: &TypedNode,
) -> TractResult<Vec<(ConvI8, OutletId, OutletId)>> {
    if !available() {
        return Ok(vec![]);
    }
    let (geo, packed_rows) = match im2col_i8::geometry(model, node)? {
        Some((op, geo)) if op.group == 1 => (geo, false),
        Some(_) => return Ok(vec![]),
        None => match pointwise(model, node)? {
            Some(geo) => (geo, true),
            None => return Ok(vec![]),
        },
    };
    let (quantize, input) = match quantize::quantizer(model, node.inputs[0])? {
        Some((q, x)) => (Some(q), x),
        None => (None, node.inputs[0]),
    };
    let mut found = vec![];
    for reader in model.outlet_successors(OutletId::new(node.id, 0)) {
        let Some(im2col_i8::PatchMatMul {
            c,
            weights: packed,
            axes,
            minus,
        }) = im2col_i8::patch_matmul(model, *reader)?
        else {
            continue;
        };
        // Channel-major: channels, then the positions (for 1×1 layers, rows then columns).
        let rank = c.rank();
        let channel_axis = rank.checked_sub(if packed_rows { 3 } else { 2 });
        if channel_axis.is_none() || axes != [channel_axis, rank.checked_sub(1)] {
            continue;
        }
        let Some(weights) = unpack_one(packed) else {
            continue;
        };
        // NEON's two products in 16 bits overflow at −128 · −128 twice.
        if OFFSET == 0 && weights.contains(&-128) {
            continue;
        }
        let k = geo.channels * geo.taps();
        let (co, rem) = (weights.len() / k, weights.len() % k);
        let [oh, ow] = geo.output_hw;
        let fits = c.shape.as_concrete().is_some_and(|s| match packed_rows {
            // The image's own layout, as `axes` says: [1,] channels, rows, columns.
            true => s.ends_with(&[co, oh, ow]) && s[..s.len() - 3].iter().all(|d| *d == 1),
            false => s.iter().product::<usize>() == co * geo.n(),
        });
        if rem != 0 || !fits || minus.as_ref().is_some_and(|m| m.len() != co) {
            continue;
        }
        found.push((
            ConvI8 {
                kernel: Kernel::new(&geo, &weights, minus.as_deref()),
                geo: geo.clone(),
                quantize: quantize.clone(),
                output: c.clone(),
                epilogue: None,
                registers: true,
            },
            input,
            OutletId::new(reader.node, 0),
        ));
    }
    Ok(found)
}

/// The geometry of a 1×1 convolution if `node` is tract's packing of its i8 image for the
/// matmul: an OptMatMulPack of a CHW or NCHW image, K along the channels and the matrix's
/// columns along each image row (tract batches the matmul over the rows).
fn pointwise(model: &TypedModel, node: &TypedNode) -> TractResult<Option<Geometry>> {
    let Some(op) = node.op_as::<OptMatMulPack>() else {
        return Ok(None);
    };
    let input = model.outlet_fact(node.inputs[0])?;
    let packed = model.outlet_fact(OutletId::new(node.id, 0))?;
    let (Some(shape), true) = (
        input.shape.as_concrete(),
        input.datum_type.unquantized() == i8::datum_type(),
    ) else {
        return Ok(None);
    };
    let [channels, h, w] = match shape {
        [1, c, h, w] | [c, h, w] => [*c, *h, *w],
        _ => return Ok(None),
    };
    let mapping = op.axes_mapping(&[input], &[packed])?;
    let axis = |name| mapping.axis(name).ok().map(|a| a.inputs[0].as_slice());
    if axis('K') != Some(&[shape.len() - 3]) || axis('M') != Some(&[shape.len() - 1]) {
        return Ok(None);
    }
    Ok(Some(Geometry {
        channels,
        input_hw: [h, w],
        output_hw: [h, w],
        kernel: [1, 1],
        strides: [1, 1],
        dilations: [1, 1],
        pad_before: [0, 0],
        pad: 0,
    }))
}

/// The rows of tract's packed weights of one matrix, `[row][k]`, if packed in a layout this
/// knows.
fn unpack_one(packed: &[Box<dyn MMMInputValue>]) -> Option<Vec<i8>> {
    match packed {
        [v] => unpack_rows(v.downcast_ref::<EagerPackedInput>()?),
        _ => None,
    }
}

/// The `mn` rows of K values tract packed into `v`, `[row][k]`, if in a layout
/// [`im2col_i8::Packing`] knows.
pub fn unpack_rows(v: &EagerPackedInput) -> Option<Vec<i8>> {
    let (k, mn) = (v.k(), v.mn());
    let packing = im2col_i8::Packing::of(v.format())?;
    let bytes: &[u8] = &v.packed;
    let mut rows = Vec::with_capacity(mn * k);
    for m in 0..mn {
        let panel = m / packing.r() * v.panel_bytes;
        for kk in 0..k {
            rows.push(*bytes.get(panel + packing.offset(k, kk, m % packing.r()))? as i8);
        }
    }
    Some(rows)
}

/// The weights as the kernel reads them, in tiles of [`OC_TILE`] output channels (zeros past
/// the last): for each step (four channels at one tap), each channel's four i8 weights as one
/// i32, and each channel's correction for the planes' offset.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Kernel {
    /// `[tile][step][channel in the tile]`, steps `[channel / 4][tap]`.
    steps: Vec<i32>,
    /// Steps a tile.
    steps_n: usize,
    /// Output channels.
    co: usize,
    /// `-OFFSET · Σ weights` per output channel (tiles padded), as the kernel multiplies
    /// `x + OFFSET`, less what tract takes off for the input's zero point.
    correction: Vec<i32>,
}

impl Kernel {
    /// From `weights` `[output channel][channel][tap]`, as tract's Im2col orders K, and what
    /// comes off each output channel, if anything.
    fn new(geo: &Geometry, weights: &[i8], minus: Option<&[i32]>) -> Kernel {
        let (taps, ci) = (geo.taps(), geo.channels);
        let k = ci * taps;
        let co = weights.len() / k;
        let steps_n = ci.div_ceil(4) * taps;
        let padded = co.div_ceil(OC_TILE) * OC_TILE;
        let mut steps = vec![0i32; steps_n * padded];
        let mut correction = vec![0; padded];
        for (o, w) in weights.chunks_exact(k).enumerate() {
            let tile = &mut steps[o / OC_TILE * steps_n * OC_TILE..][..steps_n * OC_TILE];
            for c4 in 0..ci.div_ceil(4) {
                for tap in 0..taps {
                    let byte = |i: usize| {
                        let c = 4 * c4 + i;
                        if c < ci { w[c * taps + tap] as u8 } else { 0 }
                    };
                    tile[(c4 * taps + tap) * OC_TILE + o % OC_TILE] =
                        i32::from_le_bytes([byte(0), byte(1), byte(2), byte(3)]);
                }
            }
            correction[o] =
                -OFFSET * w.iter().map(|v| *v as i32).sum::<i32>() - minus.map_or(0, |m| m[o]);
        }
        Kernel {
            steps,
            steps_n,
            co,
            correction,
        }
    }
}

/// tract's Im2col and int8 matmul of one one-group convolution of one CHW image: i32
/// accumulators out, in the shape tract's matmul gave them (channel-major); with `quantize`,
/// of the f32 image tract's QuantizeLinearI8 quantised; with `epilogue`, the scale, bias and
/// activation after them too, f32 out.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvI8 {
    geo: Geometry,
    kernel: Kernel,
    quantize: Option<quantize::FastQuantizeI8>,
    output: TypedFact,
    epilogue: Option<Affine>,
    /// Whether the epilogue runs in the kernel's registers where it can (else on each run of
    /// stored accumulators).
    registers: bool,
}

// The epilogue's scales and biases are constants of the model: no NaN.
impl Eq for ConvI8 {}

impl cast::Accumulates for ConvI8 {
    fn channels(&self) -> Option<(usize, usize)> {
        self.epilogue
            .is_none()
            .then(|| (self.kernel.co, self.geo.n()))
    }

    fn with_epilogue(&self, affine: Affine) -> Self {
        ConvI8 {
            epilogue: Some(affine),
            ..self.clone()
        }
    }
}

/// The phase planes with four channels interleaved and the rows split by phase too, each
/// byte `x + OFFSET` (`x ^ 0x80` on x86-64, where `VPDPBUSD` takes unsigned bytes):
/// `[channel / 4][column phase][row phase][row][i][channel % 4]`, 64 spare bytes at the end.
/// Whatever the strides, consecutive output positions of a tap are then consecutive in one
/// plane, along a row and from one row to the next (`cols` apart).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
struct Planes4<'g> {
    geo: &'g Geometry,
    data: Vec<u8>,
    rows: usize,
    cols: usize,
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
impl<'g> Planes4<'g> {
    /// Out of `planes`, which are `geo`'s. Each plane (four channels at one column and row
    /// phase) is a unit of the split over tract's executor: a stem's three channels make one
    /// group, and its planes would otherwise be written by one thread.
    fn new(geo: &'g Geometry, planes: &PhasePlanes) -> TractResult<Planes4<'g>> {
        let [padded_rows, cols] = planes.rows_cols();
        let [sy, sx] = geo.strides;
        let rows = padded_rows.div_ceil(sy);
        let plane_len = 4 * rows * cols;
        let all = geo.channels.div_ceil(4) * sx * sy * plane_len;
        let mut data = vec![0u8; all + 64];
        let zeros = vec![0i8; cols];
        split(&mut data[..all], plane_len, all, |first, chunk| {
            for (i, out) in chunk.chunks_exact_mut(plane_len).enumerate() {
                let u = first + i;
                let (c4, phase, row_phase) = (u / (sx * sy), u / sy % sx, u % sy);
                for (r, y) in (row_phase..padded_rows).step_by(sy).enumerate() {
                    let line = std::array::from_fn(|j| match 4 * c4 + j {
                        c if c < geo.channels => {
                            &planes.data[((c * sx + phase) * padded_rows + y) * cols..][..cols]
                        }
                        _ => &zeros[..],
                    });
                    let out = &mut out[4 * r * cols..][..4 * cols];
                    im2col_i8::interleave_rows(line, OFFSET as u8, out);
                }
            }
            Ok(())
        })?;
        Ok(Planes4 {
            geo,
            data,
            rows,
            cols,
        })
    }

    /// Straight from the image where both strides are 1 (one phase, the rows unsplit): each
    /// row of four channels quantised where need be, offset and interleaved in one pass,
    /// where [`Planes4::new`] reads and writes the image twice more. Channel groups are split
    /// over tract's executor.
    #[cfg(target_arch = "x86_64")]
    fn direct(geo: &'g Geometry, image: &Image) -> TractResult<Planes4<'g>> {
        let ([oh, ow], [kh, kw], [dy, dx]) = (geo.output_hw, geo.kernel, geo.dilations);
        let ([h, w], [pt, pl]) = (geo.input_hw, geo.pad_before);
        let (rows, cols) = (oh + (kh - 1) * dy, ow + (kw - 1) * dx);
        let group_len = 4 * rows * cols;
        let all = geo.channels.div_ceil(4) * group_len;
        // Padding is the zero point, offset by 128; without any, every byte is written.
        let padded = (pt, pl, rows, cols) != (0, 0, h, w);
        let mut data = vec![if padded { geo.pad as u8 ^ 0x80 } else { 0 }; all + 64];
        // The input rows and columns the convolution reads, and where they go.
        let (ys, n) = (
            h.min(rows.saturating_sub(pt)),
            w.min(cols.saturating_sub(pl)),
        );
        split(&mut data[..all], group_len, all, |first, chunk| {
            for (g, out) in chunk.chunks_exact_mut(group_len).enumerate() {
                for y in 0..ys {
                    let starts = std::array::from_fn(|j| {
                        let c = 4 * (first + g) + j;
                        (c < geo.channels).then_some((c * h + y) * w)
                    });
                    let dst = &mut out[4 * ((y + pt) * cols + pl)..][..4 * n];
                    // SAFETY: `ConvI8::eval` checked that the CPU has AVX-512 VNNI (and BW).
                    unsafe { vnni::interleave(image, starts, dst) };
                }
            }
            Ok(())
        })?;
        Ok(Planes4 {
            geo,
            data,
            rows,
            cols,
        })
    }

    /// Where each step's inputs (four channels at a tap, `[channel / 4][tap]`) start, and how
    /// many plane positions from there a channel's output spans.
    fn steps(&self) -> (Vec<usize>, usize) {
        let g = self.geo;
        let taps = g.taps();
        let starts = (0..g.channels.div_ceil(4) * taps)
            .map(|s| self.run(s / taps, s % taps))
            .collect();
        (starts, (g.output_hw[0] - 1) * self.cols + g.output_hw[1])
    }

    /// Where, in `data`, the inputs that kernel tap `tap` of channels `4·c4..` meets along
    /// output row 0 start.
    fn run(&self, c4: usize, tap: usize) -> usize {
        let g = self.geo;
        let ([sy, sx], [dy, dx]) = (g.strides, g.dilations);
        let (ky, kx) = (tap / g.kernel[1] * dy, tap % g.kernel[1] * dx);
        let plane = (c4 * sx + kx % sx) * sy + ky % sy;
        4 * ((plane * self.rows + ky / sy) * self.cols + kx / sx)
    }
}

impl Op for ConvI8 {
    fn name(&self) -> StaticName {
        cast::op_name("ConvI8", self.epilogue.as_ref())
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{:?} → {} channels",
            self.geo, self.kernel.co
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for ConvI8 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(
            available(),
            "ConvI8 needs AVX-512 VNNI, or aarch64 without the dot product"
        );
        let plain = inputs[0].try_as_plain_ram()?;
        let image = match &self.quantize {
            Some(q) => Image::F32(plain.as_slice::<f32>()?, q),
            None => Image::I8(plain.as_slice::<i8>()?),
        };
        let output = self.accumulate(image)?;
        Ok(tvec!(output.into_tvalue()))
    }
}

impl ConvI8 {
    /// The accumulators, out of the image's phase planes.
    #[cfg(target_arch = "x86_64")]
    fn accumulate(&self, image: Image) -> TractResult<Tensor> {
        let planes = match self.geo.strides {
            [1, 1] => Planes4::direct(&self.geo, &image)?,
            _ => Planes4::new(&self.geo, &self.geo.phase_planes(image)?)?,
        };
        let per_value = self.geo.channels * self.geo.taps();
        let (n, affine) = (self.geo.n(), self.epilogue.as_ref());
        super::accumulators(
            &self.output,
            [n, OC_TILE],
            per_value,
            affine,
            |first, out, epilogue| {
                // SAFETY: `eval` checked that the CPU has AVX-512 VNNI.
                unsafe {
                    vnni::convolve(&planes, &self.kernel, first, out, epilogue, self.registers)
                }
            },
        )
    }

    /// The accumulators, out of the image's phase planes. (Quantising four rows at a time
    /// into the interleaved planes, as `Planes4::direct` does on x86-64, executed 3% more
    /// instructions a YOLOX-Nano frame than the phase planes' one pass a channel.)
    #[cfg(target_arch = "aarch64")]
    fn accumulate(&self, image: Image) -> TractResult<Tensor> {
        let planes = Planes4::new(&self.geo, &self.geo.phase_planes(image)?)?;
        let per_value = self.geo.channels * self.geo.taps();
        super::accumulators(
            &self.output,
            [self.geo.n(), OC_TILE],
            per_value,
            self.epilogue.as_ref(),
            |first, out, epilogue| neon::convolve(&planes, &self.kernel, first, out, epilogue),
        )
    }

    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    fn accumulate(&self, _image: Image) -> TractResult<Tensor> {
        bail!("ConvI8 is planned only where AVX-512 VNNI or aarch64 NEON runs")
    }
}

impl TypedOp for ConvI8 {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let fact = super::accumulators_fact(&self.output, self.epilogue.as_ref());
        Ok(tvec!(fact))
    }

    as_op!();
}

#[cfg(target_arch = "x86_64")]
pub(super) mod vnni {
    use std::arch::x86_64::*;

    use tract_onnx::prelude::TractResult;

    use super::{BLOCKS, Image, Kernel, OC_TILE, Planes4};
    use crate::kernels::{cast::Epilogue, quantize};

    /// Positions a tile's `epilogue` runs on at once, once they are accumulated, where it
    /// cannot run in registers: 8 calls of [`BLOCKS`] blocks, 12 KiB of the tile's output,
    /// still in the first-level cache.
    const EPILOGUE_RUN: usize = 8 * 16 * BLOCKS;

    /// [`OC_TILE`] output channels at a time over every output position at once (in plane
    /// positions: rows `cols` apart, the positions past each row's end computed and dropped),
    /// in calls of up to [`BLOCKS`] blocks of 16 positions; then `epilogue`, in registers
    /// before the stores where it can, else every [`EPILOGUE_RUN`] positions.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) fn convolve(
        planes: &Planes4,
        kernel: &Kernel,
        first: usize,
        out: &mut [i32],
        epilogue: Option<&Epilogue>,
        registers: bool,
    ) -> TractResult<()> {
        let [oh, ow] = planes.geo.output_hw;
        let n = oh * ow;
        let (starts, len) = planes.steps();
        let end = first + out.len() / n;
        // Whole tiles; a tile that straddles this call's channels stores only those.
        for t in first / OC_TILE..end.div_ceil(OC_TILE) {
            let lo = (t * OC_TILE).max(first);
            let keep = lo - t * OC_TILE..end.min(t * OC_TILE + OC_TILE) - t * OC_TILE;
            let out = &mut out[(lo - first) * n..][..keep.len() * n];
            let tile = Tile {
                weights: &kernel.steps[t * kernel.steps_n * OC_TILE..][..kernel.steps_n * OC_TILE],
                correction: &kernel.correction[t * OC_TILE..][..OC_TILE],
                keep,
                finish: epilogue.filter(|e| registers && e.in_registers()),
                first: t * OC_TILE,
            };
            // Plane position `q`'s place in a channel's output, or the next output's.
            let output = |q: usize| q / planes.cols * ow + (q % planes.cols).min(ow);
            let (mut q, mut finished) = (0, 0);
            while q < len {
                let blocks = (len - q).div_ceil(16).min(BLOCKS);
                let at = Sweep {
                    first: q,
                    end: len.min(q + 16 * blocks),
                    pitch: planes.cols,
                    ow,
                };
                // SAFETY: every run start plus 64 bytes a block stays inside `data` (its spare
                // bytes cover the last row's overhang); `out` holds the tile's kept channels.
                unsafe {
                    match blocks {
                        1 => tile_blocks::<1>(planes, &starts, &tile, at, out),
                        2 => tile_blocks::<2>(planes, &starts, &tile, at, out),
                        _ => tile_blocks::<3>(planes, &starts, &tile, at, out),
                    }
                }
                q += 16 * blocks;
                if let Some(epilogue) = epilogue
                    && (tile.finish.is_none() || epilogue.stored_later())
                    && (q - finished >= EPILOGUE_RUN || q >= len)
                {
                    let run = output(finished)..output(q.min(len));
                    for (j, out) in out.chunks_exact_mut(n).enumerate() {
                        let out = &mut out[run.clone()];
                        match tile.finish {
                            Some(_) => epilogue.finish_stored(out)?,
                            None => epilogue.apply(lo + j, out)?,
                        }
                    }
                    finished = q;
                }
            }
        }
        Ok(())
    }

    /// The row of four channels of `image` starting at `starts` (zeros for `None`, channels
    /// past the last), `out.len() / 4` values each, into `out` as [`Planes4`] holds them:
    /// interleaved, quantised where the image is f32, offset by 128.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) fn interleave(image: &Image, starts: [Option<usize>; 4], out: &mut [u8]) {
        let n = out.len() / 4;
        let (scale, zero_point) = match image {
            Image::F32(_, q) => (q.scale, q.zero_point),
            Image::I8(_) => (1.0, 0),
        };
        let (scale, zero_point) = (_mm512_set1_ps(scale), _mm512_set1_epi32(zero_point as i32));
        let (low, high) = (_mm512_set1_epi32(-128), _mm512_set1_epi32(127));
        let byte = _mm512_set1_epi32(0xff);
        let mut i = 0;
        while i < n {
            let mask = (u16::MAX as u32 >> (16 - (n - i).min(16))) as u16;
            let lanes = starts.map(|start| match (start, image) {
                (None, _) => _mm512_setzero_si512(),
                (Some(at), Image::F32(x, _)) => {
                    let x = &x[at + i..][..(n - i).min(16)];
                    // SAFETY: the mask covers `x`'s values only.
                    let v = unsafe { _mm512_maskz_loadu_ps(mask, x.as_ptr()) };
                    let q = quantize::avx512::unquantized(v, scale, zero_point);
                    _mm512_max_epi32(_mm512_min_epi32(q, high), low)
                }
                (Some(at), Image::I8(x)) => {
                    let x = &x[at + i..][..(n - i).min(16)];
                    // SAFETY: the mask covers `x`'s values only.
                    _mm512_cvtepi8_epi32(unsafe { _mm_maskz_loadu_epi8(mask, x.as_ptr()) })
                }
            });
            let [a, b, c, d] = lanes.map(|q| _mm512_and_si512(q, byte));
            let v = _mm512_or_si512(
                _mm512_or_si512(a, _mm512_slli_epi32::<8>(b)),
                _mm512_or_si512(_mm512_slli_epi32::<16>(c), _mm512_slli_epi32::<24>(d)),
            );
            let v = _mm512_xor_si512(v, _mm512_set1_epi32(0x8080_8080u32 as i32));
            let dst = &mut out[4 * i..][..4 * (n - i).min(16)];
            // SAFETY: the mask covers `dst`'s values only.
            unsafe { _mm512_mask_storeu_epi32(dst.as_mut_ptr().cast(), mask, v) };
            i += 16;
        }
    }

    /// One tile's weights (`[step][channel]`) and corrections, the channels of it stored, and
    /// the epilogue run on them in registers (channel `first + j` the tile's channel `j`).
    struct Tile<'k> {
        weights: &'k [i32],
        correction: &'k [i32],
        keep: std::ops::Range<usize>,
        finish: Option<&'k Epilogue<'k>>,
        first: usize,
    }

    /// What a kernel call covers: plane positions `first..end` past each run start; position
    /// `q` is output column `q % pitch` of output row `q / pitch`, dropped past `ow`.
    #[derive(Clone, Copy)]
    struct Sweep {
        first: usize,
        end: usize,
        pitch: usize,
        ow: usize,
    }

    impl Sweep {
        /// Where the lanes of `blocks` blocks of 16 positions from `first` go: for each block
        /// `b` and each output row its lanes meet, `f(b, mask, dst, skipped)`, the lanes of
        /// `mask` to that row's values from `dst` on (in a channel's output), lane `skipped`
        /// the first of them (a masked store from `skipped` values before `dst`).
        /// It divides once a call, not once a block.
        #[inline(always)]
        fn runs(self, blocks: usize, mut f: impl FnMut(usize, u16, usize, usize)) {
            // The output row position `q` is in, and where that row starts.
            let mut row = self.first / self.pitch;
            let mut start = row * self.pitch;
            for b in 0..blocks {
                let (q0, q1) = (self.first + 16 * b, self.end.min(self.first + 16 * b + 16));
                let mut q = q0;
                while q < q1 {
                    let col = q - start;
                    if col < self.ow {
                        let lanes = (start + self.ow).min(q1) - q;
                        let mask = (((1u32 << lanes) - 1) << (q - q0)) as u16;
                        f(b, mask, row * self.ow + col, q - q0);
                    }
                    let next = start + self.pitch;
                    if next > q1 {
                        q = q1;
                    } else {
                        (q, row, start) = (next, row + 1, next);
                    }
                }
            }
        }
    }

    /// `P` blocks of 16 positions for the [`OC_TILE`] channels of `tile`: each step one load
    /// a block and one broadcast a channel.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn tile_blocks<const P: usize>(
        planes: &Planes4,
        starts: &[usize],
        tile: &Tile,
        at: Sweep,
        out: &mut [i32],
    ) {
        let data = planes.data.as_ptr();
        let mut acc = [[_mm512_setzero_si512(); P]; OC_TILE];
        for (row, c) in acc.iter_mut().zip(tile.correction) {
            *row = [_mm512_set1_epi32(*c); P];
        }
        for (s, start) in starts.iter().enumerate() {
            // SAFETY: see the caller; `tile.weights` holds OC_TILE values a step.
            unsafe {
                let x = data.add(start + 4 * at.first);
                let v: [__m512i; P] =
                    std::array::from_fn(|b| _mm512_loadu_si512(x.add(64 * b).cast()));
                // Unchecked: with a bounds-checked slice here the layers took 1.9× as long.
                let w = tile.weights.as_ptr().add(s * OC_TILE);
                for (j, row) in acc.iter_mut().enumerate() {
                    let wj = _mm512_set1_epi32(*w.add(j));
                    for (a, v) in row.iter_mut().zip(&v) {
                        *a = _mm512_dpbusd_epi32(*a, *v, wj);
                    }
                }
            }
        }
        if let Some(finish) = tile.finish {
            for j in tile.keep.clone() {
                finish.finish(tile.first + j, &mut acc[j]);
            }
        }
        let n = planes.geo.n();
        at.runs(P, |b, mask, dst, skipped| {
            for (j, acc) in acc[tile.keep.clone()].iter().enumerate() {
                let p = out[j * n + dst..].as_mut_ptr().wrapping_sub(skipped);
                // SAFETY: the mask's lanes land on kept channel j's output row from `dst`.
                unsafe { _mm512_mask_storeu_epi32(p, mask, acc[b]) };
            }
        });
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use std::arch::aarch64::*;
    use std::arch::asm;

    use tract_onnx::prelude::TractResult;

    use super::{Kernel, OC_TILE, Planes4};
    use crate::kernels::cast::Epilogue;

    /// Output channels a kernel call accumulates: with [`POSITIONS`], 16 accumulators, 4 inputs
    /// and 8 weights of the 32 vector registers.
    const CHANNELS: usize = 4;
    /// Output positions (plane positions) a kernel call accumulates: two registers of four
    /// positions' four channels.
    const POSITIONS: usize = 8;

    /// [`CHANNELS`] output channels at a time over every output position (plane positions: rows
    /// `cols` apart, the positions past each row's end computed and dropped), then `epilogue`
    /// on each channel's stored values.
    pub(super) fn convolve(
        planes: &Planes4,
        kernel: &Kernel,
        first: usize,
        out: &mut [i32],
        epilogue: Option<&Epilogue>,
    ) -> TractResult<()> {
        let [oh, ow] = planes.geo.output_hw;
        let n = oh * ow;
        let (starts, len) = planes.steps();
        let end = first + out.len() / n;
        // Groups of channels; one that straddles this call's channels stores only those.
        for g in first / CHANNELS..end.div_ceil(CHANNELS) {
            let (tile, lane) = (g * CHANNELS / OC_TILE, g * CHANNELS % OC_TILE);
            let weights = &kernel.steps[tile * kernel.steps_n * OC_TILE..][lane..];
            let correction = std::array::from_fn(|j| kernel.correction[g * CHANNELS + j]);
            let lo = (g * CHANNELS).max(first);
            let keep = lo - g * CHANNELS..end.min(g * CHANNELS + CHANNELS) - g * CHANNELS;
            let out = &mut out[(lo - first) * n..][..keep.len() * n];
            for q in (0..len).step_by(POSITIONS) {
                // SAFETY: every run start plus 32 bytes past `4 q` stays inside `data` (its
                // spare bytes cover the last row's overhang); `weights` holds OC_TILE values a
                // step from `lane` on.
                let acc = unsafe {
                    block(
                        planes.data.as_ptr().add(4 * q),
                        &starts,
                        weights.as_ptr(),
                        correction,
                    )
                };
                let at = Position::of(q, planes.cols, ow);
                for (out, acc) in out.chunks_exact_mut(n).zip(&acc[keep.clone()]) {
                    at.store(acc, out);
                }
            }
            if let Some(epilogue) = epilogue {
                for (j, out) in out.chunks_exact_mut(n).enumerate() {
                    epilogue.apply(lo + j, out)?;
                }
            }
        }
        Ok(())
    }

    /// A plane position's output row and column (past `ow`: dropped).
    #[derive(Clone, Copy)]
    struct Position {
        row: usize,
        col: usize,
        cols: usize,
        ow: usize,
    }

    impl Position {
        fn of(q: usize, cols: usize, ow: usize) -> Position {
            Position {
                row: q / cols,
                col: q % cols,
                cols,
                ow,
            }
        }

        /// The values of [`POSITIONS`] plane positions from here into a channel's output.
        #[inline(always)]
        fn store(self, values: &[i32; POSITIONS], out: &mut [i32]) {
            let Position {
                mut row,
                mut col,
                cols,
                ow,
            } = self;
            if col + POSITIONS <= ow {
                out[row * ow + col..][..POSITIONS].copy_from_slice(values);
                return;
            }
            for v in values {
                if col < ow
                    && let Some(o) = out.get_mut(row * ow + col)
                {
                    *o = *v;
                }
                col += 1;
                if col == cols {
                    (row, col) = (row + 1, 0);
                }
            }
        }
    }

    /// [`POSITIONS`] positions' accumulators for [`CHANNELS`] channels, `x` the positions'
    /// place in the planes: each pair of steps (four channels at a tap) multiplied in 16 bits
    /// and summed pairwise into 32, two 32-bit lanes a position until the end.
    ///
    /// The pairs' loop is written out: LLVM computed all 32 products of a pair before their
    /// sums, spilling registers and turning each `smull2` into an `ext` and an `smull`, 100
    /// instructions a pair where these take 68.
    ///
    /// # Safety
    /// Every `x + start` holds 32 readable bytes; `w` holds [`OC_TILE`] values a step, a
    /// step's channels from `w` on.
    #[inline(always)]
    unsafe fn block(
        x: *const u8,
        starts: &[usize],
        w: *const i32,
        correction: [i32; CHANNELS],
    ) -> [[i32; POSITIONS]; CHANNELS] {
        let (pairs, odd) = starts.as_chunks::<2>();
        // SAFETY: see the function's contract. Registers: v0-v3 the four 8-byte quarters of
        // the first step's inputs, v4-v7 the second's, v8 and v9 the steps' weights (four
        // channels), v10 and v11 one channel's duplicated, v12-v15 the products.
        unsafe {
            // [channel][quarter of the positions]: lanes (position, channels 0-1 | 2-3).
            let mut acc = [vdupq_n_s32(0); 4 * CHANNELS];
            asm!(
                "cbz {pairs}, 3f",
                "2:",
                "ldp {sa}, {sb}, [{starts}], #16",
                "add {sa}, {x}, {sa}",
                "add {sb}, {x}, {sb}",
                "ldp d0, d1, [{sa}]",
                "ldp d2, d3, [{sa}, #16]",
                "ldp d4, d5, [{sb}]",
                "ldp d6, d7, [{sb}, #16]",
                "ldr q8, [{w}]",
                "ldr q9, [{w}, #32]",
                "add {w}, {w}, #64",
                "dup v10.2s, v8.s[0]",
                "dup v11.2s, v9.s[0]",
                "smull v12.8h, v0.8b, v10.8b",
                "smull v13.8h, v1.8b, v10.8b",
                "smull v14.8h, v2.8b, v10.8b",
                "smull v15.8h, v3.8b, v10.8b",
                "smlal v12.8h, v4.8b, v11.8b",
                "smlal v13.8h, v5.8b, v11.8b",
                "smlal v14.8h, v6.8b, v11.8b",
                "smlal v15.8h, v7.8b, v11.8b",
                "sadalp v16.4s, v12.8h",
                "sadalp v17.4s, v13.8h",
                "sadalp v18.4s, v14.8h",
                "sadalp v19.4s, v15.8h",
                "dup v10.2s, v8.s[1]",
                "dup v11.2s, v9.s[1]",
                "smull v12.8h, v0.8b, v10.8b",
                "smull v13.8h, v1.8b, v10.8b",
                "smull v14.8h, v2.8b, v10.8b",
                "smull v15.8h, v3.8b, v10.8b",
                "smlal v12.8h, v4.8b, v11.8b",
                "smlal v13.8h, v5.8b, v11.8b",
                "smlal v14.8h, v6.8b, v11.8b",
                "smlal v15.8h, v7.8b, v11.8b",
                "sadalp v20.4s, v12.8h",
                "sadalp v21.4s, v13.8h",
                "sadalp v22.4s, v14.8h",
                "sadalp v23.4s, v15.8h",
                "dup v10.2s, v8.s[2]",
                "dup v11.2s, v9.s[2]",
                "smull v12.8h, v0.8b, v10.8b",
                "smull v13.8h, v1.8b, v10.8b",
                "smull v14.8h, v2.8b, v10.8b",
                "smull v15.8h, v3.8b, v10.8b",
                "smlal v12.8h, v4.8b, v11.8b",
                "smlal v13.8h, v5.8b, v11.8b",
                "smlal v14.8h, v6.8b, v11.8b",
                "smlal v15.8h, v7.8b, v11.8b",
                "sadalp v24.4s, v12.8h",
                "sadalp v25.4s, v13.8h",
                "sadalp v26.4s, v14.8h",
                "sadalp v27.4s, v15.8h",
                "dup v10.2s, v8.s[3]",
                "dup v11.2s, v9.s[3]",
                "smull v12.8h, v0.8b, v10.8b",
                "smull v13.8h, v1.8b, v10.8b",
                "smull v14.8h, v2.8b, v10.8b",
                "smull v15.8h, v3.8b, v10.8b",
                "smlal v12.8h, v4.8b, v11.8b",
                "smlal v13.8h, v5.8b, v11.8b",
                "smlal v14.8h, v6.8b, v11.8b",
                "smlal v15.8h, v7.8b, v11.8b",
                "sadalp v28.4s, v12.8h",
                "sadalp v29.4s, v13.8h",
                "sadalp v30.4s, v14.8h",
                "sadalp v31.4s, v15.8h",
                "subs {pairs}, {pairs}, #1",
                "b.ne 2b",
                "3:",
                pairs = inout(reg) pairs.len() => _,
                starts = inout(reg) pairs.as_ptr() => _,
                w = inout(reg) w => _,
                x = in(reg) x,
                sa = out(reg) _,
                sb = out(reg) _,
                out("v0") _, out("v1") _, out("v2") _, out("v3") _,
                out("v4") _, out("v5") _, out("v6") _, out("v7") _,
                out("v8") _, out("v9") _, out("v10") _, out("v11") _,
                out("v12") _, out("v13") _, out("v14") _, out("v15") _,
                inout("v16") acc[0], inout("v17") acc[1], inout("v18") acc[2], inout("v19") acc[3],
                inout("v20") acc[4], inout("v21") acc[5], inout("v22") acc[6], inout("v23") acc[7],
                inout("v24") acc[8], inout("v25") acc[9], inout("v26") acc[10], inout("v27") acc[11],
                inout("v28") acc[12], inout("v29") acc[13], inout("v30") acc[14], inout("v31") acc[15],
                options(nostack, readonly),
            );
            if let [s] = odd {
                let p = x.add(*s).cast::<i8>();
                let a = [
                    vld1_s8(p),
                    vld1_s8(p.add(8)),
                    vld1_s8(p.add(16)),
                    vld1_s8(p.add(24)),
                ];
                let w = w.add(2 * pairs.len() * OC_TILE);
                for (j, acc) in acc.chunks_exact_mut(4).enumerate() {
                    let wa = vreinterpret_s8_s32(vld1_dup_s32(w.add(j)));
                    for (acc, xa) in acc.iter_mut().zip(a) {
                        *acc = vpadalq_s16(*acc, vmull_s8(xa, wa));
                    }
                }
            }
            let mut sums = [[0; POSITIONS]; CHANNELS];
            for ((sum, acc), c) in sums.iter_mut().zip(acc.chunks_exact(4)).zip(correction) {
                let c = vdupq_n_s32(c);
                vst1q_s32(sum.as_mut_ptr(), vaddq_s32(vpaddq_s32(acc[0], acc[1]), c));
                vst1q_s32(
                    sum.as_mut_ptr().add(4),
                    vaddq_s32(vpaddq_s32(acc[2], acc[3]), c),
                );
            }
            sums
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::kernels::tests::{Conv, EPILOGUE_VARIANTS, run_both, run_epilogues, with_max};

    /// Whether this CPU lacks what the kernel needs, said past the harness's capture for
    /// `just isa-skips` to count.
    fn skipped(path: &str) -> bool {
        if !available() {
            let _ = writeln!(
                std::io::stderr(),
                "ISA path skipped: {path} ({UNAVAILABLE})"
            );
        }
        !available()
    }

    /// tract's i32 accumulators bit for bit: 1×1, 3×3 and 5×5, strides 1 to 3, padding,
    /// dilation, channels not a multiple of 4 and output channels not of the tile, rows not a
    /// multiple of 16 positions and longer than a call's 48, i8 input and f32 input through
    /// QuantizeLinear, one big enough to split over threads, and two layers reading one input.
    #[test]
    fn accumulates_what_tracts_matmul_does() {
        if skipped("kernels::conv_i8") {
            return;
        }
        const { assert!(16 * 64 * 9 * 50 * 50 >= crate::kernels::MIN_SPLIT) };
        // (in, out channels, kernel, [stride, pad, dilation], input size, f32 input, layers,
        // input zero point)
        let cases = [
            (16, 16, 3, [1, 1, 1], 20, false, 1, 0),
            (3, 16, 3, [2, 1, 1], 65, true, 1, 0),
            // A stem's one group of channels, its planes split over threads.
            (3, 16, 3, [2, 1, 1], 130, true, 1, 0),
            (12, 19, 3, [1, 1, 1], 9, false, 1, 0),
            (8, 8, 5, [1, 2, 1], 13, true, 1, 0),
            (5, 9, 3, [2, 0, 1], 40, false, 1, 0),
            (7, 24, 3, [1, 2, 2], 17, true, 1, 0),
            (4, 4, 3, [3, 1, 1], 17, false, 1, 0),
            (64, 16, 3, [1, 1, 1], 50, true, 1, 0),
            (10, 8, 3, [1, 1, 1], 14, true, 2, 0),
            // 1×1, which tract packs without an Im2col.
            (16, 16, 1, [1, 0, 1], 20, true, 1, 0),
            (5, 9, 1, [1, 0, 1], 9, false, 1, 0),
            (64, 24, 1, [1, 0, 1], 13, true, 2, 0),
            (3, 8, 1, [1, 0, 1], 1, true, 1, 0),
            (48, 8, 1, [1, 0, 1], 37, false, 1, 0),
            // Zero points: a ReLU's range in all 256 levels (-128), and any other; the
            // padding is the zero point.
            (16, 16, 3, [1, 1, 1], 20, true, 1, -128),
            (12, 19, 3, [2, 1, 1], 21, false, 1, 37),
            (10, 8, 3, [1, 1, 1], 14, true, 2, -128),
            (16, 16, 1, [1, 0, 1], 20, true, 1, -128),
            (5, 9, 1, [1, 0, 1], 9, false, 1, -7),
        ];
        for (ci, co, k, geometry, size, quantize, layers, zero_point) in cases {
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
            run_both(&conv.branched(layers), "ConvI8", layers, |_| None);
        }
    }

    /// A −128 weight: NEON's two products in 16 bits could overflow, so on aarch64 the layer
    /// stays tract's; the VNNI kernel takes it.
    #[test]
    fn a_weight_of_minus_128_stays_tracts_on_neon() {
        if skipped("kernels::conv_i8 −128 weight") {
            return;
        }
        let conv = Conv {
            ci: 16,
            co: 16,
            group: 1,
            k: 3,
            geometry: [1, 1, 1],
            size: 12,
            quantize: false,
            zero_point: 0,
        };
        let taken = usize::from(OFFSET != 0);
        run_both(&conv.with_first_weight(-128), "ConvI8", taken, |_| None);
    }

    /// The scale, bias and activation after the accumulators, run by the kernel on them
    /// ([`cast::into_producer`]), in its registers and on its stored runs, a ReLU also as a max
    /// activation ([`with_max`]): tract's f32 outputs bit for bit, with output rows that end
    /// inside and outside a run, a channel tile cut by the split over threads, and 1×1.
    #[test]
    fn applies_the_epilogue_as_tract_does() {
        if skipped("kernels::conv_i8 epilogue") {
            return;
        }
        // (in, out channels, kernel, [stride, pad, dilation], input size, f32 input, zero point)
        let cases = [
            (16, 16, 3, [1, 1, 1], 20, false, 0),
            (3, 12, 3, [2, 1, 1], 65, true, 0),
            (12, 19, 3, [1, 1, 1], 9, false, 0),
            (64, 20, 3, [1, 1, 1], 50, true, 0),
            (24, 16, 1, [1, 0, 1], 23, true, 0),
            (16, 16, 3, [1, 1, 1], 20, true, -128),
            (24, 16, 1, [1, 0, 1], 23, true, -128),
        ];
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
            run_epilogues(
                &conv,
                "ConvI8",
                &EPILOGUE_VARIANTS,
                |node, (registers, as_max)| {
                    let op = node.op_as::<ConvI8>()?;
                    let epilogue = with_max(op.epilogue.as_ref(), as_max)?;
                    Some(Box::new(ConvI8 {
                        registers,
                        epilogue,
                        ..op.clone()
                    }))
                },
            );
        }
    }
}
