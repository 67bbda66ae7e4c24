//! GridSample over images (N, C, H, W), for the deformable attention of RT-DETR and D-FINE.
//!
//! tract 0.23.9 computes each output value on its own, through index vectors it allocates per
//! value: RT-DETR at 320×320 spends most of its time there (17× onnxruntime's time). This op
//! works out each sampling point's taps and weights once and applies them to every channel,
//! with tract's results: the ONNX specification's, which onnxruntime departs from only for
//! bicubic with border padding.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::nn::grid_sample::{GridSample, InterpolationMode, PaddingMode};

/// tract's [`GridSample`] for 2-D f32 images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastGridSample(pub GridSample);

/// The fast op standing for `node` when it is tract's GridSample over f32 images.
pub fn replacement(model: &TypedModel, node: &TypedNode) -> TractResult<Option<FastGridSample>> {
    let Some(op) = node.op_as::<GridSample>() else {
        return Ok(None);
    };
    let x = model.outlet_fact(node.inputs[0])?;
    let grid = model.outlet_fact(node.inputs[1])?;
    let fits = x.rank() == 4
        && grid.rank() == 4
        && x.datum_type == f32::datum_type()
        && grid.datum_type == f32::datum_type();
    Ok(fits.then(|| FastGridSample(op.clone())))
}

/// Up to 16 taps (bicubic) of one sampling point: offsets into an H×W plane and weights.
/// A tap outside the image under zero padding has no offset.
struct Taps {
    offsets: [Option<usize>; 16],
    weights: [f32; 16],
    len: usize,
}

impl Taps {
    fn push(&mut self, offset: Option<usize>, weight: f32) {
        self.offsets[self.len] = offset;
        self.weights[self.len] = weight;
        self.len += 1;
    }
}

impl FastGridSample {
    fn denormalize(&self, coord: f32, size: usize) -> f32 {
        if self.0.align_corners {
            (coord + 1.0) / 2.0 * (size as f32 - 1.0)
        } else {
            ((coord + 1.0) * size as f32 - 1.0) / 2.0
        }
    }

    fn bounds(&self, size: usize) -> (f32, f32) {
        if self.0.align_corners {
            (0.0, size as f32 - 1.0)
        } else {
            (-0.5, size as f32 - 0.5)
        }
    }

    /// Where an integer tap reads along an axis of `size`, padding applied; `None` is a zero.
    fn tap(&self, c: isize, size: usize) -> Option<usize> {
        let last = size as isize - 1;
        match self.0.padding_mode {
            PaddingMode::Zeros => (0..=last).contains(&c).then_some(c as usize),
            PaddingMode::Border => Some(c.clamp(0, last) as usize),
            PaddingMode::Reflection => {
                let (lo, hi) = self.bounds(size);
                Some((reflect(c as f32, lo, hi) as usize).min(size - 1))
            }
        }
    }

    /// A coordinate moved inside by the padding mode, for a point outside the bounds.
    fn pad(&self, c: f32, (lo, hi): (f32, f32)) -> f32 {
        match self.0.padding_mode {
            PaddingMode::Border => c.clamp(0.0, hi + lo),
            PaddingMode::Reflection => reflect(c, lo, hi),
            PaddingMode::Zeros => c,
        }
    }

    /// The taps of the point `(x, y)` in pixels of a `w × h` image, as tract's op samples it.
    fn taps(&self, mut x: f32, mut y: f32, w: usize, h: usize, taps: &mut Taps) {
        taps.len = 0;
        let (bx, by) = (self.bounds(w), self.bounds(h));
        let outside = |x: f32, y: f32| x < bx.0 || x > bx.1 || y < by.0 || y > by.1;
        let at = |tx: isize, ty: isize| Some(self.tap(ty, h)? * w + self.tap(tx, w)?);
        match self.0.mode {
            InterpolationMode::Nearest => {
                (x, y) = (x.round_ties_even(), y.round_ties_even());
                if outside(x, y) {
                    (x, y) = (self.pad(x, bx), self.pad(y, by));
                }
                taps.push(at(x as isize, y as isize), 1.0);
            }
            InterpolationMode::Bilinear => {
                if outside(x, y) {
                    (x, y) = (self.pad(x, bx), self.pad(y, by));
                }
                let (x0, y0) = (x.floor(), y.floor());
                let (dx, dy) = (x - x0, y - y0);
                let (x0, y0) = (x0 as isize, y0 as isize);
                for (ty, wy) in [(y0, 1.0 - dy), (y0 + 1, dy)] {
                    for (tx, wx) in [(x0, 1.0 - dx), (x0 + 1, dx)] {
                        taps.push(at(tx, ty), wx * wy);
                    }
                }
            }
            InterpolationMode::Bicubic => {
                if outside(x, y) {
                    (x, y) = (self.pad(x, bx), self.pad(y, by));
                }
                let (x0, y0) = (x.floor() as isize - 1, y.floor() as isize - 1);
                let cx = cubic_coeffs(x - x0 as f32 - 1.0);
                let cy = cubic_coeffs(y - y0 as f32 - 1.0);
                for (j, wy) in cy.iter().enumerate() {
                    for (i, wx) in cx.iter().enumerate() {
                        taps.push(at(x0 + i as isize, y0 + j as isize), wx * wy);
                    }
                }
            }
        }
    }
}

/// Reflects `x` at `x_min` and `x_max` until it lies between them (the specification's).
fn reflect(x: f32, x_min: f32, x_max: f32) -> f32 {
    let range = x_max - x_min;
    if range == 0.0 {
        return x_min;
    }
    let (dx, from_min) = if x < x_min {
        (x_min - x, true)
    } else if x > x_max {
        (x - x_max, false)
    } else {
        return x;
    };
    let n = (dx / range) as i32;
    let r = dx - n as f32 * range;
    if (n % 2 == 0) == from_min {
        x_min + r
    } else {
        x_max - r
    }
}

/// Keys' cubic convolution weights with a = -0.75, for a point `t` past the second tap.
fn cubic_coeffs(t: f32) -> [f32; 4] {
    let a = -0.75f32;
    let (p1, m1, m2) = (t + 1.0, 1.0 - t, 2.0 - t);
    [
        ((a * p1 - 5.0 * a) * p1 + 8.0 * a) * p1 - 4.0 * a,
        ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0,
        ((a + 2.0) * m1 - (a + 3.0)) * m1 * m1 + 1.0,
        ((a * m2 - 5.0 * a) * m2 + 8.0 * a) * m2 - 4.0 * a,
    ]
}

impl Op for FastGridSample {
    fn name(&self) -> StaticName {
        "FastGridSample".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "mode: {} padding: {} align_corners: {}",
            self.0.mode.as_str(),
            self.0.padding_mode.as_str(),
            self.0.align_corners
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for FastGridSample {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (x, grid) = args_2!(inputs);
        let (n, c, h, w) = match *x.shape() {
            [n, c, h, w] => (n, c, h, w),
            _ => bail!(
                "FastGridSample takes images (N, C, H, W), got {:?}",
                x.shape()
            ),
        };
        let (gn, ho, wo) = match *grid.shape() {
            [gn, ho, wo, 2] => (gn, ho, wo),
            _ => bail!("grid of shape {:?}, expected (N, H, W, 2)", grid.shape()),
        };
        ensure!(gn == n, "grid batch {gn} for an input batch {n}");
        let x_plain = x.try_as_plain_ram()?;
        let xs = x_plain.as_slice::<f32>()?;
        let g_plain = grid.try_as_plain_ram()?;
        let gs = g_plain.as_slice::<f32>()?;
        let mut out = Tensor::zero::<f32>(&[n, c, ho, wo])?;
        let mut out_plain = out.try_as_plain_ram_mut()?;
        let ys = out_plain.as_slice_mut::<f32>()?;
        let (plane, out_plane) = (h * w, ho * wo);
        let mut taps = Taps {
            offsets: [None; 16],
            weights: [0.0; 16],
            len: 0,
        };
        for b in 0..n {
            let images = &xs[b * c * plane..][..c * plane];
            let outputs = &mut ys[b * c * out_plane..][..c * out_plane];
            for (p, g) in gs[b * out_plane * 2..][..out_plane * 2]
                .chunks_exact(2)
                .enumerate()
            {
                let (px, py) = (self.denormalize(g[0], w), self.denormalize(g[1], h));
                self.taps(px, py, w, h, &mut taps);
                for (channel, image) in images.chunks_exact(plane).enumerate() {
                    let mut v = 0.0f32;
                    for (offset, weight) in taps.offsets[..taps.len].iter().zip(&taps.weights) {
                        if let Some(o) = offset {
                            v += weight * image[*o];
                        }
                    }
                    outputs[channel * out_plane + p] = v;
                }
            }
        }
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for FastGridSample {
    as_op!();

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        self.0.output_facts(inputs)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn op(mode: usize, padding: usize, align_corners: bool) -> GridSample {
        GridSample {
            mode: [
                InterpolationMode::Bilinear,
                InterpolationMode::Nearest,
                InterpolationMode::Bicubic,
            ][mode]
                .clone(),
            padding_mode: [
                PaddingMode::Zeros,
                PaddingMode::Border,
                PaddingMode::Reflection,
            ][padding]
                .clone(),
            align_corners,
        }
    }

    fn run(op: &dyn EvalOp, x: &Tensor, grid: &Tensor) -> Tensor {
        let inputs = tvec!(x.clone().into_tvalue(), grid.clone().into_tvalue());
        op.eval_out_of_plan(inputs).unwrap().unwrap()[0]
            .clone()
            .into_tensor()
    }

    proptest! {
        /// Every mode, padding and alignment, on points inside, on and past the borders
        /// (some at exact halves, where nearest rounds to even): tract's op to the last bit
        /// but for the order of the weighted sums.
        #[test]
        fn matches_tracts_grid_sample(
            mode in 0..3usize,
            padding in 0..3usize,
            align_corners in any::<bool>(),
            (n, c, h, w) in (1..3usize, 1..4usize, 1..7usize, 1..7usize),
            (ho, wo) in (1..5usize, 1..5usize),
            seed in any::<u64>(),
        ) {
            let mut state = seed | 1;
            let mut next = || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 24) as f32
            };
            let xs: Vec<f32> = (0..n * c * h * w).map(|_| next() * 2.0 - 1.0).collect();
            // Quarters from -1.5 to 1.5: borders, corners and halves come up often.
            let gs: Vec<f32> = (0..n * ho * wo * 2).map(|_| (next() * 13.0).floor() / 4.0 - 1.5).collect();
            let x = Tensor::from_shape(&[n, c, h, w], &xs).unwrap();
            let grid = Tensor::from_shape(&[n, ho, wo, 2], &gs).unwrap();
            let theirs = op(mode, padding, align_corners);
            let want = run(&theirs, &x, &grid);
            let got = run(&FastGridSample(theirs), &x, &grid);
            prop_assert_eq!(got.shape(), want.shape());
            let (got, want) = (got.to_plain_array_view::<f32>().unwrap(), want.to_plain_array_view::<f32>().unwrap());
            for (i, (a, b)) in got.iter().zip(want.iter()).enumerate() {
                prop_assert!((a - b).abs() <= 1e-5, "element {}: {} vs tract's {}", i, a, b);
            }
        }
    }
}
