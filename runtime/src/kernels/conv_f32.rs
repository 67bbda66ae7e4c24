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
//! Only where the CPU has AVX-512F (the module is built for x86-64 alone): elsewhere, ARM
//! included, tract's plan stays.

use std::borrow::Cow;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::cnn::conv::{Conv, KernelFormat};
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::math::Add;

use super::activation::{self, Activation};
use super::im2col_i8::Geometry;
use super::{only_reader, split, swap};

/// Output channels a tile.
const OC: usize = 8;
/// Output positions a tile: three vectors of 16.
const POS: usize = 48;

/// Every f32 one-group convolution of `model` (decluttered, not yet optimised) replaced by
/// [`ConvF32`], where the CPU has AVX-512F: tract's `Conv`s of more than one tap, and the
/// `EinSum`s tract makes of 1×1 ones, each with the bias added after it.
pub fn swap_all(mut model: TypedModel) -> TractResult<TypedModel> {
    if !available() {
        return Ok(model);
    }
    for id in model.eval_order()? {
        let node = model.node(id);
        let found = match replacement(&model, node)? {
            Some(op) => Some((op, OutletId::new(id, 0))),
            None => pointwise(&model, node)?,
        };
        if let Some((mut op, mut replaced)) = found {
            let input = node.inputs[0];
            if let Some((activation, output)) = activation::after(&model, replaced)? {
                op.activation = Some(activation);
                replaced = output;
            }
            swap(&mut model, input, op, replaced)?;
        }
    }
    model.into_compact()
}

/// Whether this CPU runs [`ConvF32`]'s kernel.
pub fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
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
    // tract declutters a 1×1 convolution into an EinSum ([`pointwise`]) unless it has a stride
    // or padding, which leave it little work.
    if geo.taps() < 2
        || kernel.datum_type() != f32::datum_type()
        || kernel.len() != out_channels * geo.channels * geo.taps()
        || bias.datum_type() != f32::datum_type()
        || ![1, out_channels].contains(&bias.len())
    {
        return Ok(None);
    }
    let bias = bias.try_as_plain_ram()?.as_slice::<f32>()?;
    Ok(Some(ConvF32::new(
        geo,
        kernel.try_as_plain_ram()?.as_slice::<f32>()?,
        (0..out_channels).map(|c| bias[c % bias.len()]).collect(),
        output.without_value(),
    )))
}

/// The replacement for `node` if it is an EinSum tract declutters a float 1×1 convolution of
/// one image into (the weights constant), with what it replaces: the Add of a constant
/// per-channel bias after it if there is one (b.len() == O: only channels vary).
fn pointwise(model: &TypedModel, node: &TypedNode) -> TractResult<Option<(ConvF32, OutletId)>> {
    let Some(einsum) = node.op_as::<EinSum>() else {
        return Ok(None);
    };
    let x = model.outlet_fact(node.inputs[0])?;
    let output = model.outlet_fact(OutletId::new(node.id, 0))?;
    let (Some(x_shape), Some(out_shape), Some(kernel)) = (
        x.shape.as_concrete(),
        output.shape.as_concrete(),
        match node.inputs.get(1) {
            Some(w) => model.outlet_fact(*w)?.konst.as_ref(),
            None => None,
        },
    ) else {
        return Ok(None);
    };
    // tract splits and merges 1×1 convolutions around concatenations and drops unit batch
    // axes: `[N]IHW,OI->[N]OHW` whatever the letters, N of size 1.
    let expr = einsum.axes.to_string();
    let Some((inputs, out)) = expr.split_once("->") else {
        return Ok(None);
    };
    let Some((a, b)) = inputs.split_once(',') else {
        return Ok(None);
    };
    // The axes' letters and sizes without a unit batch axis.
    let unbatched = |axes: &str, shape: &[usize]| -> Option<(Vec<char>, [usize; 3])> {
        let l: Vec<char> = axes.chars().collect();
        match (l.len(), shape) {
            (4, [1, c, h, w]) => Some((l[1..].to_vec(), [*c, *h, *w])),
            (3, [c, h, w]) => Some((l, [*c, *h, *w])),
            _ => None,
        }
    };
    let (Some((xl, [i, h, w])), Some((ol, [o, oh, ow]))) =
        (unbatched(a, x_shape), unbatched(out, out_shape))
    else {
        return Ok(None);
    };
    let wl: Vec<char> = b.chars().collect();
    if wl.len() != 2
        || [wl[0], wl[1]] != [ol[0], xl[0]]
        || [xl[1], xl[2]] != [ol[1], ol[2]]
        || [h, w] != [oh, ow]
        || einsum.q_params.is_some()
        || node.inputs.len() != 2
        || x.datum_type != f32::datum_type()
        || output.datum_type != f32::datum_type()
        || kernel.datum_type() != f32::datum_type()
        || kernel.len() != o * i
    {
        return Ok(None);
    }
    let geo = Geometry {
        channels: i,
        input_hw: [h, w],
        output_hw: [h, w],
        kernel: [1, 1],
        strides: [1, 1],
        dilations: [1, 1],
        pad_before: [0, 0],
        pad: 0,
    };
    let kernel = kernel.try_as_plain_ram()?.as_slice::<f32>()?;
    let einsum_out = OutletId::new(node.id, 0);
    // The bias tract left as an Add of [1, O, 1, 1] (or [O, 1, 1]) after the EinSum.
    let bias_add = only_reader(model, einsum_out)?.and_then(|reader| {
        let add = model.node(reader.node);
        let bin = add.op_as::<TypedBinOp>()?;
        let other = add.inputs.iter().find(|i| **i != einsum_out)?;
        let b = model.outlet_fact(*other).ok()?.konst.as_ref()?;
        let shape = b.shape();
        (bin.0.is::<Add>()
            && add.inputs.len() == 2
            && b.datum_type() == f32::datum_type()
            && b.len() == o
            && shape.len() >= 3
            && shape[shape.len() - 3] == o
            && model.outlet_fact(OutletId::new(add.id, 0)).ok()?.shape == output.shape)
            .then(|| {
                Some((
                    b.try_as_plain_ram().ok()?.as_slice::<f32>().ok()?.to_vec(),
                    add.id,
                ))
            })
            .flatten()
    });
    let (bias, replaced) = match bias_add {
        Some((bias, add)) => (bias, OutletId::new(add, 0)),
        None => (vec![0.0; o], einsum_out),
    };
    let op = ConvF32::new(geo, kernel, bias, output.without_value());
    Ok(Some((op, replaced)))
}

/// A float convolution of one CHW image in one group, with bias.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvF32 {
    pub geo: Geometry,
    pub out_channels: usize,
    /// `[tile][input channel · tap][OC]`, tiles of `OC` output channels (zeros past the last).
    pub weights: Vec<f32>,
    pub bias: Vec<f32>,
    /// The activation after the convolution, applied to each tile in registers' reach
    /// (tract's AVX-512 SiLU replicated).
    pub activation: Option<Activation>,
    pub output: TypedFact,
}

// The weights are constants of the model: no NaN to make equality partial.
impl Eq for ConvF32 {}

impl ConvF32 {
    /// Over `geo`, with `kernel` (OIHW) and `bias` (a value per output channel) writing
    /// `output`.
    fn new(geo: Geometry, kernel: &[f32], bias: Vec<f32>, output: TypedFact) -> ConvF32 {
        let out_channels = bias.len();
        let k = geo.channels * geo.taps();
        // [tile][k][OC]: a tile's weights one contiguous run, zeros past the last channel.
        let mut weights = vec![0f32; out_channels.div_ceil(OC) * k * OC];
        for (o, row) in kernel.chunks_exact(k).enumerate() {
            for (i, w) in row.iter().enumerate() {
                weights[((o / OC) * k + i) * OC + o % OC] = *w;
            }
        }
        ConvF32 {
            geo,
            out_channels,
            weights,
            bias,
            activation: None,
            output,
        }
    }
}

impl Op for ConvF32 {
    fn name(&self) -> StaticName {
        format!("ConvF32{}", Activation::suffix(self.activation)).into()
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
        let planes = Planes::of(&self.geo, x)?;
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
/// at that same index past the tap's offset (`offsets`): the `cols − ow` positions
/// between output rows are computed and dropped. Spare zeros at the end let the last tile's
/// vectors run past the last position. Where that is the input itself (1×1, stride 1, no
/// padding) and a tile's worth long, the input in place, the last tile moved back to end
/// with it.
struct Planes<'a> {
    data: Cow<'a, [f32]>,
    channels: usize,
    cols: usize,
    channel_len: usize,
    /// Where each tap's run starts in a channel's planes.
    offsets: Vec<usize>,
}

impl<'a> Planes<'a> {
    fn of(g: &Geometry, x: &'a [f32]) -> TractResult<Planes<'a>> {
        let ([h, w], [oh, ow]) = (g.input_hw, g.output_hw);
        let ([sy, sx], [dy, dx], [kh, kw]) = (g.strides, g.dilations, g.kernel);
        let [pt, pl] = g.pad_before;
        let rows = oh + ((kh - 1) * dy).div_ceil(sy);
        let cols = ow + ((kw - 1) * dx).div_ceil(sx);
        let channel_len = sy * sx * rows * cols;
        let offsets = (0..kh * kw)
            .map(|t| {
                let (y, x) = ((t / kw) * dy, (t % kw) * dx);
                (((y % sy) * sx + x % sx) * rows + y / sy) * cols + x / sx
            })
            .collect();
        let planes = |data| Planes {
            data,
            channels: g.channels,
            cols,
            channel_len,
            offsets,
        };
        if [rows, cols] == [h, w] && [sy, sx, pt, pl] == [1, 1, 0, 0] && h * w >= POS {
            return Ok(planes(Cow::Borrowed(x)));
        }
        let all = g.channels * channel_len;
        let mut data = vec![0f32; all + POS + cols];
        split(&mut data[..all], channel_len, all, |first, chunk| {
            for (c, planes) in chunk.chunks_exact_mut(channel_len).enumerate() {
                let input = &x[(first + c) * h * w..][..h * w];
                for (y, src) in input.chunks_exact(w).enumerate() {
                    // Padded row y + pt is row (y + pt) / sy of row phase (y + pt) % sy.
                    let (r, ry) = ((y + pt) % sy, (y + pt) / sy);
                    if ry >= rows {
                        continue;
                    }
                    let row = |p: usize| ((r * sx + p) * rows + ry) * cols;
                    if sx == 1 {
                        let n = w.min(cols.saturating_sub(pl));
                        planes[row(0) + pl.min(cols)..][..n].copy_from_slice(&src[..n]);
                        continue;
                    }
                    for p in 0..sx {
                        // Padded column i · sx + p is input column i · sx + p − pl.
                        let first = (p + sx - pl % sx) % sx;
                        let dst = &mut planes[row(p)..][..cols];
                        let src = src.iter().skip(first).step_by(sx);
                        for (d, v) in dst.iter_mut().skip((first + pl) / sx).zip(src) {
                            *d = *v;
                        }
                    }
                }
            }
            Ok(())
        })?;
        Ok(planes(Cow::Owned(data)))
    }

    /// Where each tile starts: every `POS` positions of `len`, the last moved back to end at
    /// `len` where the planes have no spare zeros.
    fn starts(&self, len: usize) -> impl Iterator<Item = usize> {
        let last = match self.data {
            Cow::Borrowed(_) => len - POS,
            Cow::Owned(_) => len,
        };
        (0..len).step_by(POS).map(move |p| p.min(last))
    }
}

impl ConvF32 {
    /// Output channels `tile · OC..`, as many as `out` holds.
    fn convolve(&self, planes: &Planes, tile: usize, out: &mut [f32]) {
        let [oh, ow] = self.geo.output_hw;
        let n = oh * ow;
        let cols = planes.cols;
        let len = (oh - 1) * cols + ow;
        let k = self.geo.channels * planes.offsets.len();
        let weights = &self.weights[tile * k * OC..][..k * OC];
        let bias: [f32; OC] =
            std::array::from_fn(|j| self.bias.get(tile * OC + j).copied().unwrap_or(0.0));
        let mut acc = [[0f32; POS]; OC];
        for p0 in planes.starts(len) {
            // SAFETY: `swap_all` swaps this op in only where the CPU has AVX-512F; the planes'
            // spare zeros, or the last tile moved back, keep every read in bounds.
            unsafe {
                avx512::tile(planes, weights, &bias, p0, &mut acc);
                if let Some(a) = self.activation {
                    activation::avx512::run(a, acc.as_flattened_mut());
                }
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

mod avx512 {
    use std::arch::x86_64::*;

    use super::{OC, POS, Planes};

    /// The tile of `weights` (`[k][OC]`) and `bias` at positions `p0..p0 + POS` into `acc`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile(
        planes: &Planes,
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
                for (off, w) in planes.offsets.iter().zip(w.by_ref()) {
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
    use crate::kernels::tests::{
        Activation as After, assert_matches, attr, int_attr, load, tensor, value,
    };

    /// x [1, c, h, w] → Conv (c → o channels, kh×kw, [stride, pad, dilation], bias) → y,
    /// then `after` (SiLU as x · sigmoid(x), which tract makes its SiLU); with `concat`, x the
    /// concatenation of two inputs of c / 2 channels (tract then splits a 1×1 convolution in
    /// two EinSums); tract's decluttered model.
    fn conv(
        [c, o]: [usize; 2],
        [kh, kw]: [usize; 2],
        [stride, pad, dilation]: [i64; 3],
        [h, w]: [usize; 2],
        after: After,
        concat: bool,
    ) -> TypedModel {
        let weights: Vec<u8> = (0..o * c * kh * kw)
            .flat_map(|i| (((i * 37 % 23) as f32 - 11.0) / 16.0).to_le_bytes())
            .collect();
        let bias: Vec<u8> = (0..o)
            .flat_map(|i| (i as f32 * 0.25 - 1.0).to_le_bytes())
            .collect();
        let node = |op: &str, input: &[&str], output: &str| pb::NodeProto {
            op_type: op.into(),
            input: input.iter().map(|i| i.to_string()).collect(),
            output: vec![output.into()],
            ..Default::default()
        };
        let mut nodes = vec![pb::NodeProto {
            attribute: vec![
                attr("pads", &[pad; 4]),
                attr("strides", &[stride; 2]),
                attr("dilations", &[dilation; 2]),
            ],
            ..node(
                "Conv",
                &["x", "w", "b"],
                if after == After::None { "y" } else { "conv" },
            )
        }];
        let mut inputs = vec![value("x", DataType::Float, Some(&[1, c, h, w]))];
        if concat {
            nodes.insert(
                0,
                pb::NodeProto {
                    attribute: vec![int_attr("axis", 1)],
                    ..node("Concat", &["x0", "x1"], "x")
                },
            );
            inputs = ["x0", "x1"]
                .map(|i| value(i, DataType::Float, Some(&[1, c / 2, h, w])))
                .to_vec();
        }
        nodes.extend(after.nodes("conv", "y"));
        load(pb::GraphProto {
            node: nodes,
            input: inputs,
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
    /// image, one layer deep enough to split, and with each activation after.
    #[test]
    fn convolves_as_tract_does() {
        if !available() {
            println!("ISA path skipped: kernels::conv_f32 (this CPU lacks AVX-512F)");
            return;
        }
        const { assert!(64 * 64 * 9 * 12 * 12 >= crate::kernels::MIN_SPLIT) };
        // ([in, out] channels, kernel, [stride, pad, dilation], [h, w], activation)
        let cases = [
            ([16, 32], [3, 3], [1, 1, 1], [20, 20], After::None),
            ([8, 16], [3, 3], [2, 1, 1], [21, 21], After::Relu),
            ([3, 16], [3, 3], [2, 1, 1], [40, 33], After::Silu),
            ([5, 12], [5, 5], [1, 2, 1], [13, 13], After::LeakyRelu),
            ([7, 9], [3, 3], [1, 2, 2], [11, 14], After::Silu),
            ([4, 8], [3, 3], [3, 0, 1], [17, 17], After::Relu),
            ([6, 5], [2, 3], [2, 0, 1], [9, 10], After::None),
            ([64, 64], [3, 3], [1, 1, 1], [12, 12], After::Silu),
            ([32, 24], [3, 3], [2, 1, 1], [10, 10], After::Relu),
        ];
        for (channels, kernel, geometry, hw, after) in cases {
            let what =
                format!("{channels:?} channels {kernel:?} {geometry:?} at {hw:?}, {after:?}");
            let tracts = conv(channels, kernel, geometry, hw, after, false);
            let ours = swap_all(tracts.clone()).unwrap();
            let ops: Vec<&TypedNode> = ours
                .nodes()
                .iter()
                .filter(|n| !n.inputs.is_empty())
                .collect();
            // The activation went into the kernel: the convolution is the only op left.
            assert_eq!(ops.len(), 1, "{ours}");
            assert_eq!(ops[0].op.name(), format!("ConvF32{}", after.suffix()));
            assert_matches(tracts, ours, &what);
        }
    }

    /// The EinSums tract declutters 1×1 convolutions into, with their bias and activation:
    /// tract's output within 1e-5 as above, whole and split around a concatenation.
    #[test]
    fn pointwise_as_tract_does() {
        if !available() {
            println!("ISA path skipped: kernels::conv_f32 1×1 (this CPU lacks AVX-512F)");
            return;
        }
        // ([in, out] channels, [h, w], activation, input concatenated)
        let cases = [
            ([16, 24], [20, 20], After::Silu, false),
            ([8, 13], [13, 11], After::None, false),
            ([64, 64], [12, 12], After::Relu, false),
            ([24, 40], [10, 10], After::LeakyRelu, false),
            ([32, 16], [10, 10], After::Silu, true),
        ];
        for (channels, hw, after, concat) in cases {
            let what = format!("1×1 {channels:?} channels at {hw:?}, {after:?}, concat {concat}");
            let tracts = conv(channels, [1, 1], [1, 0, 1], hw, after, concat);
            let ours = swap_all(tracts.clone()).unwrap();
            let convs: Vec<&ConvF32> = ours
                .nodes()
                .iter()
                .filter_map(|n| n.op_as::<ConvF32>())
                .collect();
            assert_eq!(convs.len(), 1 + concat as usize, "{ours}");
            assert!(!ours.nodes().iter().any(|n| n.op_is::<EinSum>()), "{ours}");
            // The activation goes in where nothing else is left to add.
            let fused = convs.iter().any(|c| c.activation.is_some());
            assert_eq!(fused, after != After::None && !concat, "{ours}");
            assert_matches(tracts, ours, &what);
        }
    }
}
