//! A float depthwise convolution, swapped in before tract's code generation.
//!
//! tract 0.23.9's `DepthWiseConv` walks each output value's taps through a generic patch
//! visitor, ~10 G multiply-adds a second on this AVX-512 host: 22–44% of the
//! depthwise-separable detectors' time, which their int8 forms keep float. [`DepthwiseF32`]
//! computes like the runtime's int8 depthwise: each channel's zero-padded input split once by
//! column and row phase, then every kernel tap one multiply-add along all output rows at once,
//! a contiguous run that vectorises at any stride. tract's generated op keeps its geometry
//! private, so this one takes the place of the convolution itself, after decluttering
//! ([`swap_all`]), with the same sums in another order: within a float tolerance of tract's.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::PoolSpec;
use tract_onnx::tract_core::ops::cnn::conv::{Conv, KernelFormat};
use tract_onnx::tract_core::ops::nn::DataFormat;

use super::activation::{self, Activation, Prepared};
use super::im2col_i8::Geometry;
use super::{every, split, swap};
use crate::imgproc::morph::Simd;

/// Every f32 depthwise convolution of `model` (decluttered, not yet optimised) replaced by
/// [`DepthwiseF32`], with the activation that alone reads it.
pub fn swap_all(mut model: TypedModel) -> TractResult<TypedModel> {
    for id in model.eval_order()? {
        let node = model.node(id);
        if let Some(mut op) = replacement(&model, node)? {
            let input = node.inputs[0];
            let mut replaced = OutletId::new(id, 0);
            if let Some((activation, output)) = activation::after(&model, replaced)? {
                op.activation = Some(activation);
                replaced = output;
            }
            swap(&mut model, input, op, replaced)?;
        }
    }
    model.into_compact()
}

/// The replacement for `node` if it is tract's float Conv of one image with one input and one
/// output channel a group, its kernel (OIHW) and bias constant.
pub fn replacement(model: &TypedModel, node: &TypedNode) -> TractResult<Option<DepthwiseF32>> {
    let Some(conv) = node.op_as::<Conv>() else {
        return Ok(None);
    };
    let x = model.outlet_fact(node.inputs[0])?;
    let output = model.outlet_fact(OutletId::new(node.id, 0))?;
    let (Some(shape), true) = (
        x.shape.as_concrete(),
        conv.q_params.is_none()
            && conv.kernel_fmt == KernelFormat::OIHW
            && x.datum_type == f32::datum_type()
            && output.datum_type == f32::datum_type()
            && node.inputs.len() == 3,
    ) else {
        return Ok(None);
    };
    // tract makes a convolution whose output it transposes to channels-last (YuNet's heads)
    // an NHWC one: it runs here as CHW between two transposes.
    let channels_last = matches!(
        conv.pool_spec.data_format,
        DataFormat::NHWC | DataFormat::HWC
    );
    let (spec, shape) = if channels_last {
        let mut chw = shape.to_vec();
        let (Some(c), Some(at)) = (chw.pop(), chw.len().checked_sub(2)) else {
            return Ok(None);
        };
        chw.insert(at, c);
        let data_format = match conv.pool_spec.data_format {
            DataFormat::NHWC => DataFormat::NCHW,
            _ => DataFormat::CHW,
        };
        let spec = PoolSpec {
            data_format,
            ..conv.pool_spec.clone()
        };
        (spec, chw)
    } else {
        (conv.pool_spec.clone(), shape.to_vec())
    };
    let Some(geo) = Geometry::of(&spec, &shape) else {
        return Ok(None);
    };
    let channels = geo.channels;
    if conv.group != channels || channels < 2 || conv.pool_spec.output_channels != channels {
        return Ok(None);
    }
    let (Some(kernel), Some(bias)) = (
        model.outlet_fact(node.inputs[1])?.konst.as_ref(),
        model.outlet_fact(node.inputs[2])?.konst.as_ref(),
    ) else {
        return Ok(None);
    };
    if kernel.datum_type() != f32::datum_type()
        || kernel.len() != channels * geo.taps()
        || bias.datum_type() != f32::datum_type()
        || ![1, channels].contains(&bias.len())
    {
        return Ok(None);
    }
    let bias = bias.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
    Ok(Some(DepthwiseF32 {
        weights: kernel.try_as_plain_ram()?.as_slice::<f32>()?.to_vec(),
        bias: (0..channels).map(|c| bias[c % bias.len()]).collect(),
        geo,
        channels_last,
        activation: None,
        output: output.without_value(),
        simd: Simd::detect(),
    }))
}

/// A float depthwise convolution of one CHW image with bias.
#[derive(Debug, Clone, PartialEq)]
pub struct DepthwiseF32 {
    pub geo: Geometry,
    /// `[channel][tap]`, taps row-major.
    pub weights: Vec<f32>,
    pub bias: Vec<f32>,
    /// Input and output NHWC (or HWC), not NCHW.
    pub channels_last: bool,
    /// The activation after the convolution, on each channel while it is in cache.
    pub activation: Option<Activation>,
    pub output: TypedFact,
    /// The instruction set the kernel runs with.
    pub simd: Simd,
}

// The weights are constants of the model: no NaN to make equality partial.
impl Eq for DepthwiseF32 {}

impl Op for DepthwiseF32 {
    fn name(&self) -> StaticName {
        format!("DepthwiseF32{}", Activation::suffix(self.activation)).into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("{:?} {:?}", self.geo, self.simd)])
    }

    op_as_typed_op!();
}

impl EvalOp for DepthwiseF32 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let plain = inputs[0].try_as_plain_ram()?;
        let x = plain.as_slice::<f32>()?;
        let shape = self
            .output
            .shape
            .as_concrete()
            .context("DepthwiseF32: output shape not concrete")?;
        // SAFETY: `convolve` writes every output value.
        let mut output = unsafe { Tensor::uninitialized::<f32>(shape)? };
        {
            let mut out_plain = output.try_as_plain_ram_mut()?;
            let out = out_plain.as_slice_mut::<f32>()?;
            if self.channels_last {
                let (c, n) = (self.geo.channels, self.geo.n());
                let mut chw = vec![0f32; x.len()];
                transpose(x, x.len() / c, c, &mut chw);
                let mut planar = vec![0f32; out.len()];
                self.convolve_all(&chw, &mut planar)?;
                transpose(&planar, c, n, out);
            } else {
                self.convolve_all(x, out)?;
            }
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for DepthwiseF32 {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(self.output.clone()))
    }

    as_op!();
}

impl DepthwiseF32 {
    /// Every channel of the CHW image `x` into `out` (CHW), whole channels over tract's
    /// executor.
    fn convolve_all(&self, x: &[f32], out: &mut [f32]) -> TractResult<()> {
        let work = out.len() * self.geo.taps();
        let activation = self.activation.map(Activation::prepare).transpose()?;
        split(out, self.geo.n(), work, |first, out| {
            let activation = activation.as_ref();
            convolve(
                self,
                Channels {
                    x,
                    first,
                    out,
                    activation,
                },
            )
        })
    }
}

/// `x`, `rows` rows of `cols` values, transposed into `t`.
fn transpose(x: &[f32], rows: usize, cols: usize, t: &mut [f32]) {
    for (i, row) in x.chunks_exact(cols).enumerate() {
        for (j, v) in row.iter().enumerate() {
            t[j * rows + i] = *v;
        }
    }
}

/// One call's share of the channels: those from `first` that `out` holds, of the CHW image
/// `x`, then `activation` on each.
struct Channels<'a> {
    x: &'a [f32],
    first: usize,
    out: &'a mut [f32],
    activation: Option<&'a Prepared>,
}

/// `c`'s channels with the instruction set `op.simd` (baseline for any the CPU lacks or this
/// kernel has no build for).
fn convolve(op: &DepthwiseF32, c: Channels) -> TractResult<()> {
    #[cfg(target_arch = "x86_64")]
    match op.simd {
        // SAFETY: each arm runs only where the CPU has its instruction set (every CPU with
        // AVX-512 F has FMA).
        Simd::Avx512 if op.simd.is_available() => unsafe { avx512(op, c) },
        Simd::Avx2 if op.simd.is_available() && is_x86_feature_detected!("fma") => unsafe {
            avx2(op, c)
        },
        _ => body::<false, false>(op, c),
    }
    #[cfg(target_arch = "aarch64")]
    {
        body::<true, false>(op, c)
    }
    // armv7's VFP may lack fused multiply-adds: a library call each.
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    body::<false, false>(op, c)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn avx2(op: &DepthwiseF32, c: Channels) -> TractResult<()> {
    body::<true, true>(op, c)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
fn avx512(op: &DepthwiseF32, c: Channels) -> TractResult<()> {
    body::<true, true>(op, c)
}

/// Output positions a block accumulates in registers: a vector or a few, whatever the
/// instruction set this is inlined into.
const BLOCK: usize = 16;

/// `a + w · v`, in one rounding where `FUSED`.
#[inline(always)]
fn madd<const FUSED: bool>(a: f32, w: f32, v: f32) -> f32 {
    if FUSED { w.mul_add(v, a) } else { a + w * v }
}

/// One channel's kernel over its planes.
struct Taps<'a> {
    planes: &'a [f32],
    /// Where each tap's inputs for output position 0 start in `planes`.
    starts: &'a [usize],
    weights: &'a [f32],
    bias: f32,
}

impl Taps<'_> {
    /// The `G` blocks of output positions from plane position `at` into `out`'s first `G`,
    /// each tap's weight broadcast once for all of them. Returns `G`.
    #[inline(always)]
    fn blocks<const G: usize, const FUSED: bool>(
        &self,
        at: usize,
        out: &mut [[f32; BLOCK]],
    ) -> usize {
        let mut acc = [[self.bias; BLOCK]; G];
        for (start, wt) in self.starts.iter().zip(self.weights) {
            let (runs, _) = self.planes[start + at..][..G * BLOCK].as_chunks::<BLOCK>();
            for (acc, run) in acc.iter_mut().zip(runs) {
                for (a, v) in acc.iter_mut().zip(run) {
                    *a = madd::<FUSED>(*a, *wt, *v);
                }
            }
        }
        out[..G].copy_from_slice(&acc);
        G
    }
}

/// One channel at a time: its padded input split into column- and row-phase planes
/// (`[column phase][row phase][padded row / sy][i]`), then the taps added over every output
/// position (consecutive outputs of a tap are consecutive in a plane, whatever the stride).
/// `BLOCKED` (x86-64 with FMA): [`BLOCK`] positions at a time, up to four blocks together,
/// every tap added to them in registers before one store; else tap by tap over the whole
/// channel, the sums loaded and stored at each tap (aarch64 executed fewer instructions so).
/// `FUSED`: each multiply-add one fused instruction (x86-64 with FMA, aarch64), else a
/// multiply then an add.
#[inline(always)]
fn body<const FUSED: bool, const BLOCKED: bool>(op: &DepthwiseF32, c: Channels) -> TractResult<()> {
    let Channels {
        x,
        first,
        out,
        activation,
    } = c;
    let g = &op.geo;
    let ([h, w], [oh, ow]) = (g.input_hw, g.output_hw);
    let ([sy, sx], [dy, dx], [kh, kw]) = (g.strides, g.dilations, g.kernel);
    let [pt, pl] = g.pad_before;
    let rows = (oh - 1) * sy + (kh - 1) * dy + 1;
    let cols = ((ow - 1) * sx + (kw - 1) * dx + 1).div_ceil(sx);
    // Padded row y in row phase y % sy, at y / sy: output row yo of a tap is then `yo · cols`
    // further than row 0.
    let prow = rows.div_ceil(sy);
    let line = |p: usize, y: usize| ((p * sy + y % sy) * prow + y / sy) * cols;
    // Where each tap's inputs for output position 0 start. The last block reads up to
    // BLOCK − 1 values past the last output row's end: the spare values at the end.
    let starts: Vec<usize> = (0..kh * kw)
        .map(|tap| {
            let (ky, kx) = (tap / kw, tap % kw);
            line((kx * dx) % sx, ky * dy) + (kx * dx) / sx
        })
        .collect();
    let mut planes = vec![0f32; sx * sy * prow * cols + BLOCK];
    let len = (oh - 1) * cols + ow;
    let mut sums = vec![[0f32; BLOCK]; len.div_ceil(BLOCK)];
    for (c, out) in out.chunks_exact_mut(oh * ow).enumerate() {
        let c = first + c;
        let input = &x[c * h * w..][..h * w];
        for yp in 0..rows {
            for p in 0..sx {
                planes[line(p, yp)..][..cols].fill(0.0);
            }
            let Some(src) = yp
                .checked_sub(pt)
                .filter(|y| *y < h)
                .map(|y| &input[y * w..][..w])
            else {
                continue;
            };
            if sx == 1 {
                // Padded column i is input column i − pl: one copy.
                let n = w.min(cols.saturating_sub(pl));
                planes[line(0, yp) + pl.min(cols)..][..n].copy_from_slice(&src[..n]);
                continue;
            }
            for p in 0..sx {
                // Padded column i·sx + p is input column i·sx + p − pl: those of columns
                // `lo..hi` are in the input, every sx-th from the first.
                let lo = pl.saturating_sub(p).div_ceil(sx).min(cols);
                let hi = (w + pl).saturating_sub(p).div_ceil(sx).clamp(lo, cols);
                let dst = &mut planes[line(p, yp)..][lo..hi];
                let from = &src[(lo * sx + p - pl).min(w)..];
                every(from, sx, dst);
            }
        }
        let taps = Taps {
            planes: &planes,
            starts: &starts,
            weights: &op.weights[c * kh * kw..][..kh * kw],
            bias: op.bias[c],
        };
        // Every output row at once, in plane positions (rows `cols` apart, the positions past
        // each row's end computed and dropped): blocks cut by rows of a few dozen values left
        // most of their last block idle.
        if BLOCKED {
            let mut done = 0;
            while done < sums.len() {
                let group = &mut sums[done..];
                done += match group.len() {
                    1 => taps.blocks::<1, FUSED>(done * BLOCK, group),
                    2 => taps.blocks::<2, FUSED>(done * BLOCK, group),
                    3 => taps.blocks::<3, FUSED>(done * BLOCK, group),
                    _ => taps.blocks::<4, FUSED>(done * BLOCK, group),
                };
            }
        } else {
            let sums = &mut sums.as_flattened_mut()[..len];
            sums.fill(taps.bias);
            for (start, wt) in starts.iter().zip(taps.weights) {
                for (a, v) in sums.iter_mut().zip(&planes[*start..][..len]) {
                    *a = madd::<FUSED>(*a, *wt, *v);
                }
            }
        }
        for (yo, row) in out.chunks_exact_mut(ow).enumerate() {
            row.copy_from_slice(&sums.as_flattened()[yo * cols..][..ow]);
        }
        if let Some(activation) = activation {
            activation.run(out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use tract_onnx::pb::{self, tensor_proto::DataType};

    use super::*;
    use crate::kernels::tests::{
        Activation as After, assert_matches, attr, int_attr, load, tensor, value,
    };

    /// x [1, c, size, size] → depthwise Conv (k×k, [stride, pad, dilation], bias) → `after`
    /// → y; with `channels_last`, x and y NHWC, transposed around the Conv, which tract then
    /// makes an NHWC one (as YuNet's heads, transposed to NHWC, become); tract's decluttered
    /// model.
    fn depthwise(
        c: usize,
        k: usize,
        [stride, pad, dilation]: [i64; 3],
        size: usize,
        channels_last: bool,
        after: After,
    ) -> TypedModel {
        let weights: Vec<u8> = (0..c * k * k)
            .flat_map(|i| (((i * 37 % 23) as f32 - 11.0) / 8.0).to_le_bytes())
            .collect();
        let bias: Vec<u8> = (0..c)
            .flat_map(|i| (i as f32 * 0.25 - 1.0).to_le_bytes())
            .collect();
        load(pb::GraphProto {
            node: channels_last
                .then(|| pb::NodeProto {
                    op_type: "Transpose".into(),
                    input: vec!["x".into()],
                    output: vec!["xt".into()],
                    attribute: vec![attr("perm", &[0, 3, 1, 2])],
                    ..Default::default()
                })
                .into_iter()
                .chain([pb::NodeProto {
                    op_type: "Conv".into(),
                    input: vec![
                        if channels_last { "xt" } else { "x" }.into(),
                        "w".into(),
                        "b".into(),
                    ],
                    output: vec![if channels_last { "conv" } else { "z" }.into()],
                    attribute: vec![
                        attr("pads", &[pad; 4]),
                        attr("strides", &[stride; 2]),
                        attr("dilations", &[dilation; 2]),
                        int_attr("group", c as i64),
                    ],
                    ..Default::default()
                }])
                .chain(channels_last.then(|| pb::NodeProto {
                    op_type: "Transpose".into(),
                    input: vec!["conv".into()],
                    output: vec!["z".into()],
                    attribute: vec![attr("perm", &[0, 2, 3, 1])],
                    ..Default::default()
                }))
                .chain(match after {
                    After::None => vec![pb::NodeProto {
                        op_type: "Identity".into(),
                        input: vec!["z".into()],
                        output: vec!["y".into()],
                        ..Default::default()
                    }],
                    _ => after.nodes("z", "y"),
                })
                .collect(),
            input: vec![value(
                "x",
                DataType::Float,
                Some(&input_shape(c, size, channels_last)),
            )],
            output: vec![value("y", DataType::Float, None)],
            initializer: vec![
                tensor("w", DataType::Float, &[c, 1, k, k], weights),
                tensor("b", DataType::Float, &[c], bias),
            ],
            ..Default::default()
        })
        .into_typed()
        .and_then(|m| m.into_decluttered())
        .expect("a depthwise Conv declutters")
    }

    fn input_shape(c: usize, size: usize, channels_last: bool) -> [usize; 4] {
        if channels_last {
            [1, size, size, c]
        } else {
            [1, c, size, size]
        }
    }

    /// tract's output within 1e-5 (relative to the largest value), with every instruction
    /// set this CPU has (the ones it lacks are named), on one thread and split over two
    /// ([`assert_matches`]):
    /// 3×3 and 5×5, strides 1 to 3, padding 0 to 2, dilation 2, odd sizes, rows of one to five
    /// blocks, one layer big enough to split, channels-last outputs, and each activation after
    /// (in the op).
    #[test]
    fn convolves_as_tract_does() {
        const { assert!(32 * 41 * 41 * 9 >= crate::kernels::MIN_SPLIT) };
        // (channels, kernel, [stride, pad, dilation], input size, channels last, activation)
        let cases = [
            (16, 3, [1, 1, 1], 20, false, After::Relu),
            (24, 3, [2, 1, 1], 21, false, After::Silu),
            (8, 5, [1, 2, 1], 13, false, After::None),
            (5, 3, [2, 0, 1], 40, false, After::LeakyRelu),
            (7, 3, [1, 2, 2], 9, false, After::None),
            (4, 3, [3, 1, 1], 17, false, After::Relu),
            (32, 3, [1, 1, 1], 41, false, After::Silu),
            (10, 3, [1, 1, 1], 40, true, After::Relu),
            (4, 3, [2, 1, 1], 19, true, After::None),
            (32, 3, [1, 1, 1], 41, true, After::LeakyRelu),
            // Rows of more than four blocks: a group of four, then the rest.
            (6, 3, [1, 1, 1], 70, false, After::Silu),
            (3, 3, [2, 1, 1], 150, false, After::None),
        ];
        for simd in Simd::ALL {
            if !simd.is_available() {
                println!("depthwise_f32: {simd:?} skipped, this CPU lacks it");
                continue;
            }
            for (c, k, geometry, size, channels_last, after) in cases {
                let tracts = depthwise(c, k, geometry, size, channels_last, after);
                let mut ours = swap_all(tracts.clone()).unwrap();
                let ids: Vec<usize> = ours
                    .nodes()
                    .iter()
                    .filter(|n| n.op_is::<DepthwiseF32>())
                    .map(|n| n.id)
                    .collect();
                assert_eq!(ids.len(), 1, "one DepthwiseF32 in {ours}");
                let mut op = ours.node(ids[0]).op_as::<DepthwiseF32>().unwrap().clone();
                // tract made the transposed convolution an NHWC one.
                assert_eq!(op.channels_last, channels_last, "{ours}");
                // The activation went into the op: nothing else is left.
                assert_eq!(op.name(), format!("DepthwiseF32{}", after.suffix()));
                assert_eq!(
                    ours.nodes().iter().filter(|n| !n.inputs.is_empty()).count(),
                    1
                );
                op.simd = simd;
                ours.node_mut(ids[0]).op = Box::new(op);
                let what = format!(
                    "{simd:?} {c} channels {k}×{k} {geometry:?} at {size}, channels last \
                     {channels_last}, {after:?}"
                );
                assert_matches(tracts, ours, &what);
            }
            println!("depthwise_f32: {simd:?} matches tract");
        }
    }
}
