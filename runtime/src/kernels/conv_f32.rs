//! A direct float convolution for AVX-512, swapped in before tract's code generation.
//!
//! tract plans a float k×k convolution as a matmul reading its patches through a lazy im2col:
//! a gather per packed value, and a packing its f32 kernels redo for every panel. Its eager
//! im2col is no faster here (docs/vs-onnxruntime.md). [`ConvF32`] reads the zero-padded input
//! in place instead, as onnxruntime's direct convolutions do: split once by row and column
//! phase, every kernel tap of every input channel is one contiguous run of the output
//! positions, whatever the stride. A tile of 8 output channels × 48 positions lives in 24
//! zmm registers; per tap and channel, three loads of the run and 8 broadcast weights make
//! 24 FMAs. The same sums in another order: within a float tolerance of tract's.
//!
//! Only where the CPU has AVX-512F: elsewhere tract's plan stays.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::conv::{Conv, KernelFormat};

use super::im2col_i8::Geometry;
use super::{split, swap};

/// Output channels a tile.
const OC: usize = 8;
/// Output positions a tile: three vectors of 16.
const POS: usize = 48;

/// Every f32 one-group convolution of `model` (decluttered, not yet optimised) with more than
/// one tap replaced by [`ConvF32`], where the CPU has AVX-512F.
pub fn swap_all(mut model: TypedModel) -> TractResult<TypedModel> {
    if !available() {
        return Ok(model);
    }
    for id in model.eval_order()? {
        let node = model.node(id);
        if let Some(op) = replacement(&model, node)? {
            let input = node.inputs[0];
            swap(&mut model, input, op, OutletId::new(id, 0))?;
        }
    }
    model.into_compact()
}

/// Whether this CPU runs [`ConvF32`]'s kernel.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The replacement for `node` if it is tract's float Conv of one NCHW (or CHW) image in one
/// group, more than one tap, its kernel (OIHW) and bias constant.
pub fn replacement(model: &TypedModel, node: &TypedNode) -> TractResult<Option<ConvF32>> {
    let Some(conv) = node.op_as::<Conv>() else {
        return Ok(None);
    };
    let x = model.outlet_fact(node.inputs[0])?;
    let output = model.outlet_fact(OutletId::new(node.id, 0))?;
    let (Some(shape), true) = (
        x.shape.as_concrete(),
        conv.q_params.is_none()
            && conv.group == 1
            && conv.kernel_fmt == KernelFormat::OIHW
            && x.datum_type == f32::datum_type()
            && output.datum_type == f32::datum_type()
            && node.inputs.len() == 3,
    ) else {
        return Ok(None);
    };
    let Some(geo) = Geometry::of(&conv.pool_spec, shape) else {
        return Ok(None);
    };
    let out_channels = conv.pool_spec.output_channels;
    let (Some(kernel), Some(bias)) = (
        model.outlet_fact(node.inputs[1])?.konst.as_ref(),
        model.outlet_fact(node.inputs[2])?.konst.as_ref(),
    ) else {
        return Ok(None);
    };
    let k = geo.channels * geo.taps();
    // A 1×1 convolution is a matmul tract's kernels run on the input in place.
    if geo.taps() < 2
        || kernel.datum_type() != f32::datum_type()
        || kernel.len() != out_channels * k
        || bias.datum_type() != f32::datum_type()
        || ![1, out_channels].contains(&bias.len())
    {
        return Ok(None);
    }
    let kernel = kernel.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
    let bias = bias.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
    // [tile][k][OC]: a tile's weights one contiguous run, zeros past the last channel.
    let mut weights = vec![0f32; out_channels.div_ceil(OC) * k * OC];
    for (o, row) in kernel.chunks_exact(k).enumerate() {
        for (i, w) in row.iter().enumerate() {
            weights[((o / OC) * k + i) * OC + o % OC] = *w;
        }
    }
    Ok(Some(ConvF32 {
        geo,
        out_channels,
        weights,
        bias: (0..out_channels).map(|c| bias[c % bias.len()]).collect(),
        output: output.without_value(),
    }))
}

/// A float convolution of one CHW image in one group, with bias.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvF32 {
    pub geo: Geometry,
    pub out_channels: usize,
    /// `[tile][input channel · tap][OC]`, tiles of `OC` output channels (zeros past the last).
    pub weights: Vec<f32>,
    pub bias: Vec<f32>,
    pub output: TypedFact,
}

// The weights are constants of the model: no NaN to make equality partial.
impl Eq for ConvF32 {}

impl Op for ConvF32 {
    fn name(&self) -> StaticName {
        "ConvF32".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{:?} → {} channels",
            self.geo, self.out_channels
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for ConvF32 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let plain = inputs[0].try_as_plain_ram()?;
        let x = plain.as_slice::<f32>()?;
        let shape = self
            .output
            .shape
            .as_concrete()
            .context("ConvF32: output shape not concrete")?;
        let planes = Planes::of(&self.geo, x);
        let n = self.geo.n();
        // SAFETY: `convolve` writes every output value.
        let mut output = unsafe { Tensor::uninitialized::<f32>(shape)? };
        {
            let mut out_plain = output.try_as_plain_ram_mut()?;
            let out = out_plain.as_slice_mut::<f32>()?;
            let work = out.len() * self.geo.channels * self.geo.taps();
            let mut tiles: Vec<&mut [f32]> = out.chunks_mut(OC * n).collect();
            split(&mut tiles, 1, work, |first, tiles| {
                for (t, out) in tiles.iter_mut().enumerate() {
                    self.convolve(&planes, first + t, out);
                }
                Ok(())
            })?;
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for ConvF32 {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(self.output.clone()))
    }

    as_op!();
}

/// The input zero-padded and split by row and column phase: `[channel][row phase][column
/// phase][rows][cols]`. Output position `(yo, xo)`, as `yo · cols + xo`, reads tap `(ky, kx)`
/// at that same index past the tap's offset ([`Planes::offsets`]): the `cols − ow` positions
/// between output rows are computed and dropped. Spare zeros at the end let the last tile's
/// vectors run past the last position.
struct Planes {
    data: Vec<f32>,
    channels: usize,
    rows: usize,
    cols: usize,
    channel_len: usize,
}

impl Planes {
    fn of(g: &Geometry, x: &[f32]) -> Planes {
        let ([h, w], [oh, ow]) = (g.input_hw, g.output_hw);
        let ([sy, sx], [dy, dx], [kh, kw]) = (g.strides, g.dilations, g.kernel);
        let [pt, pl] = g.pad_before;
        let rows = oh + ((kh - 1) * dy).div_ceil(sy);
        let cols = ow + ((kw - 1) * dx).div_ceil(sx);
        let channel_len = sy * sx * rows * cols;
        let mut data = vec![0f32; g.channels * channel_len + POS + cols];
        for (c, planes) in data
            .chunks_exact_mut(channel_len)
            .take(g.channels)
            .enumerate()
        {
            let input = &x[c * h * w..][..h * w];
            for (y, src) in input.chunks_exact(w).enumerate() {
                // Padded row y + pt is row (y + pt) / sy of row phase (y + pt) % sy.
                let (r, ry) = ((y + pt) % sy, (y + pt) / sy);
                if ry >= rows {
                    continue;
                }
                for p in 0..sx {
                    // Padded column i · sx + p is input column i · sx + p − pl.
                    let first = (p + sx - pl % sx) % sx;
                    let cx = (first + pl) / sx;
                    let dst = &mut planes[((r * sx + p) * rows + ry) * cols..][..cols];
                    for (d, v) in dst
                        .iter_mut()
                        .skip(cx)
                        .zip(src.iter().skip(first).step_by(sx))
                    {
                        *d = *v;
                    }
                }
            }
        }
        Planes {
            data,
            channels: g.channels,
            rows,
            cols,
            channel_len,
        }
    }

    /// Where each tap's run starts in a channel's planes.
    fn offsets(&self, g: &Geometry) -> Vec<usize> {
        let ([sy, sx], [dy, dx], [kh, kw]) = (g.strides, g.dilations, g.kernel);
        (0..kh * kw)
            .map(|t| {
                let (y, x) = ((t / kw) * dy, (t % kw) * dx);
                (((y % sy) * sx + x % sx) * self.rows + y / sy) * self.cols + x / sx
            })
            .collect()
    }
}

impl ConvF32 {
    /// Output channels `tile · OC..`, as many as `out` holds.
    fn convolve(&self, planes: &Planes, tile: usize, out: &mut [f32]) {
        let [oh, ow] = self.geo.output_hw;
        let n = oh * ow;
        let cols = planes.cols;
        let len = (oh - 1) * cols + ow;
        let offsets = planes.offsets(&self.geo);
        let k = self.geo.channels * offsets.len();
        let weights = &self.weights[tile * k * OC..][..k * OC];
        let bias: [f32; OC] =
            std::array::from_fn(|j| self.bias.get(tile * OC + j).copied().unwrap_or(0.0));
        let mut acc = [[0f32; POS]; OC];
        for p0 in (0..len).step_by(POS) {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `swap_all` swaps this op in only where the CPU has AVX-512F; the planes'
            // spare zeros keep every read in bounds.
            unsafe {
                avx512::tile(planes, &offsets, weights, &bias, p0, &mut acc)
            };
            // The tile's positions that are output positions, row by row.
            let mut p = p0;
            while p < (p0 + POS).min(len) {
                let (yo, xo) = (p / cols, p % cols);
                if xo >= ow {
                    p += cols - xo;
                    continue;
                }
                let run = (ow - xo).min(p0 + POS - p);
                for (out, a) in out.chunks_exact_mut(n).zip(&acc) {
                    out[yo * ow + xo..][..run].copy_from_slice(&a[p - p0..][..run]);
                }
                p += run;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{OC, POS, Planes};

    /// The tile of `weights` (`[k][OC]`) and `bias` at positions `p0..p0 + POS` into `acc`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile(
        planes: &Planes,
        offsets: &[usize],
        weights: &[f32],
        bias: &[f32; OC],
        p0: usize,
        acc: &mut [[f32; POS]; OC],
    ) {
        // SAFETY: the planes' spare zeros keep the loads in bounds (see `Planes`).
        unsafe {
            let mut a = bias.map(|b| [_mm512_set1_ps(b); 3]);
            let x = planes.data.as_ptr().add(p0);
            let mut w = weights.chunks_exact(OC);
            for c in 0..planes.channels {
                let xc = x.add(c * planes.channel_len);
                for (off, w) in offsets.iter().zip(w.by_ref()) {
                    let xp = xc.add(*off);
                    let v = [
                        _mm512_loadu_ps(xp),
                        _mm512_loadu_ps(xp.add(16)),
                        _mm512_loadu_ps(xp.add(32)),
                    ];
                    for (a, w) in a.iter_mut().zip(w) {
                        let b = _mm512_set1_ps(*w);
                        a[0] = _mm512_fmadd_ps(v[0], b, a[0]);
                        a[1] = _mm512_fmadd_ps(v[1], b, a[1]);
                        a[2] = _mm512_fmadd_ps(v[2], b, a[2]);
                    }
                }
            }
            for (t, a) in acc.iter_mut().zip(&a) {
                for (i, v) in a.iter().enumerate() {
                    _mm512_storeu_ps(t.as_mut_ptr().add(16 * i), *v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tract_onnx::pb::{self, tensor_proto::DataType};

    use super::*;
    use crate::kernels::tests::{attr, load, tensor, value};

    /// x [1, c, h, w] → Conv (c → o channels, kh×kw, [stride, pad, dilation], bias) → y;
    /// tract's decluttered model.
    fn conv(
        [c, o]: [usize; 2],
        [kh, kw]: [usize; 2],
        [stride, pad, dilation]: [i64; 3],
        [h, w]: [usize; 2],
    ) -> TypedModel {
        let weights: Vec<u8> = (0..o * c * kh * kw)
            .flat_map(|i| (((i * 37 % 23) as f32 - 11.0) / 16.0).to_le_bytes())
            .collect();
        let bias: Vec<u8> = (0..o)
            .flat_map(|i| (i as f32 * 0.25 - 1.0).to_le_bytes())
            .collect();
        load(pb::GraphProto {
            node: vec![pb::NodeProto {
                op_type: "Conv".into(),
                input: vec!["x".into(), "w".into(), "b".into()],
                output: vec!["y".into()],
                attribute: vec![
                    attr("pads", &[pad; 4]),
                    attr("strides", &[stride; 2]),
                    attr("dilations", &[dilation; 2]),
                ],
                ..Default::default()
            }],
            input: vec![value("x", DataType::Float, Some(&[1, c, h, w]))],
            output: vec![value("y", DataType::Float, None)],
            initializer: vec![
                tensor("w", DataType::Float, &[o, c, kh, kw], weights),
                tensor("b", DataType::Float, &[o], bias),
            ],
            ..Default::default()
        })
        .into_typed()
        .and_then(|m| m.into_decluttered())
        .expect("a Conv declutters")
    }

    /// tract's output within 1e-5 (relative to the largest value), on one thread and split
    /// over two: 3×3, 5×5 and 2×3, strides 1 to 3, padding 0 to 2, dilation 2, odd and
    /// oblong sizes, output channels in whole tiles and not, the three input channels of an
    /// image, and one layer deep enough to split.
    #[test]
    fn convolves_as_tract_does() {
        if !available() {
            println!("ISA path skipped: kernels::conv_f32 (this CPU lacks AVX-512F)");
            return;
        }
        const { assert!(64 * 64 * 9 * 12 * 12 >= crate::kernels::MIN_SPLIT) };
        // ([in, out] channels, kernel, [stride, pad, dilation], [h, w])
        let cases = [
            ([16, 32], [3, 3], [1, 1, 1], [20, 20]),
            ([8, 16], [3, 3], [2, 1, 1], [21, 21]),
            ([3, 16], [3, 3], [2, 1, 1], [40, 33]),
            ([5, 12], [5, 5], [1, 2, 1], [13, 13]),
            ([7, 9], [3, 3], [1, 2, 2], [11, 14]),
            ([4, 8], [3, 3], [3, 0, 1], [17, 17]),
            ([6, 5], [2, 3], [2, 0, 1], [9, 10]),
            ([64, 64], [3, 3], [1, 1, 1], [12, 12]),
            ([32, 24], [3, 3], [2, 1, 1], [10, 10]),
        ];
        for (channels, kernel, geometry, hw) in cases {
            let tracts = conv(channels, kernel, geometry, hw);
            let ours = swap_all(tracts.clone()).unwrap();
            let swapped = ours.nodes().iter().filter(|n| n.op_is::<ConvF32>()).count();
            assert_eq!(swapped, 1, "one ConvF32 in {ours}");
            let [c, _] = channels;
            let x = Tensor::from_shape(
                &[1, c, hw[0], hw[1]],
                &(0..c * hw[0] * hw[1])
                    .map(|i| (i * 7919 % 251) as f32 / 50.0 - 2.5)
                    .collect::<Vec<_>>(),
            )
            .unwrap();
            let run = |m: TypedModel| {
                m.into_optimized()
                    .and_then(|m| m.into_runnable())
                    .and_then(|p| p.run(tvec!(x.clone().into_tvalue())))
                    .unwrap()
                    .remove(0)
                    .into_tensor()
            };
            let want = run(tracts);
            let pool = tract_linalg::multithread::Executor::multithread(2);
            let split =
                tract_linalg::multithread::multithread_tract_scope(pool, || run(ours.clone()));
            for got in [run(ours), split] {
                assert_eq!(got.shape(), want.shape());
                let (got, want) = (
                    got.to_plain_array_view::<f32>().unwrap().to_owned(),
                    want.to_plain_array_view::<f32>().unwrap().to_owned(),
                );
                let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
                for (a, b) in got.iter().zip(want.iter()) {
                    assert!(
                        (a - b).abs() <= 1e-5 * scale,
                        "{channels:?} channels {kernel:?} {geometry:?} at {hw:?}: {a} vs \
                         tract's {b}"
                    );
                }
            }
        }
    }
}
