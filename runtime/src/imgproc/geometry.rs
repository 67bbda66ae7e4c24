//! Resize, letterbox, the detector's fused image-to-tensor path, and affine/perspective warps,
//! following OpenCV 5's `resize`, `warpAffine` and `warpPerspective` on `u8` images.
//!
//! Resize uses OpenCV's 11-bit fixed-point coefficients and its vector rounding, so results are
//! identical. Warps follow OpenCV 5's default (`ALGO_HINT_ACCURATE`) kernels, which map
//! coordinates in `f32` and interpolate in `f32`, instead of OpenCV 4's 5-bit (`INTER_BITS`)
//! fixed-point remap tables; they agree with the installed OpenCV to within one level.
//!
//! Resizing produces destination rows one at a time ([`Resizer`]); [`resize`] copies them into an
//! image while [`Preprocess`] normalises them straight into a planar `f32` tensor, so the
//! detector's input never needs a full-size intermediate image.

use super::Image;
use super::filter::{Border, simd_fn};
use crate::detect::BBox;
use thiserror::Error;

/// Why a geometric operation was refused.
#[derive(Clone, Debug, Error, PartialEq)]
pub enum GeometryError {
    /// The source or destination has no pixels. Check the frame was captured and the requested
    /// size is not zero.
    #[error("empty {what}: {width}x{height}")]
    Empty {
        what: &'static str,
        width: usize,
        height: usize,
    },
    /// The image does not have the channel count this operation needs (the tensor path reads
    /// interleaved RGB or BGR). Convert it first with `imgproc::color`.
    #[error("expected a {expected}-channel image, got {found} channels")]
    Channels { expected: usize, found: usize },
    /// The output tensor is not `3 × height × width` floats. Size it with
    /// [`Preprocess::tensor_len`].
    #[error("tensor buffer holds {found} floats, expected {expected}")]
    TensorLen { expected: usize, found: usize },
    /// The point correspondences do not define a unique transform (three of them are collinear,
    /// or points repeat). Pick points that span the plane.
    #[error("degenerate point correspondences: no unique transform")]
    Singular,
}

/// How samples between source pixels are computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interpolation {
    /// `INTER_NEAREST`.
    Nearest,
    /// `INTER_LINEAR`: bilinear, 11-bit fixed point for resize.
    Linear,
    /// `INTER_AREA`: pixel-area averaging when shrinking, bilinear-like when enlarging. Warps
    /// treat it as [`Interpolation::Linear`], as OpenCV does.
    Area,
}

fn check_size(what: &'static str, width: usize, height: usize) -> Result<(), GeometryError> {
    if width == 0 || height == 0 {
        return Err(GeometryError::Empty {
            what,
            width,
            height,
        });
    }
    Ok(())
}

/// Rounds half to even for |v| < 2^22 by pushing the fraction out of the mantissa, which needs
/// no SSE4.1 `roundss` (the portable x86-64 build would call `roundevenf` per sample).
#[inline(always)]
fn round_even(v: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23
    (v + MAGIC) - MAGIC
}

/// `saturate_cast<uchar>(float)`: round half to even and clamp (NaN becomes 0).
#[inline(always)]
#[expect(clippy::manual_clamp, reason = "`clamp` keeps NaN, `max` maps it to 0")]
fn sat_u8(v: f32) -> u8 {
    let v = round_even(v.max(0.0).min(255.0));
    // SAFETY: `v` is an integer in 0..=255 (`max` maps NaN to 0). The checked `as` conversion
    // would not vectorise.
    unsafe { v.to_int_unchecked::<i32>() as u8 }
}

// ---------------------------------------------------------------------------------------------
// Resize

/// Resize coefficients are 11-bit fixed point (`INTER_RESIZE_COEF_BITS`).
const COEF_SCALE: f32 = 2048.0;

/// Produces the rows of a resized image one at a time.
pub struct Resizer<'a> {
    src: &'a Image,
    width: usize,
    kind: Kind,
}

enum Kind {
    Copy,
    Nearest {
        xofs: Vec<usize>,
        yofs: Vec<usize>,
    },
    /// Integer shrink factors (`resizeAreaFast`).
    AreaFast {
        kx: usize,
        ky: usize,
        xofs: Vec<usize>,
    },
    Linear(Box<Linear>),
    Area(Box<Area>),
}

/// Two-tap separable interpolation: horizontal in `i32` (source × 2048), vertical with OpenCV's
/// SIMD rounding (`VResizeLinearVec_32s8u`), which is what `resize` returns for `u8`.
struct Linear {
    /// Per destination pixel: offsets of the first sample of the two taps, and their weights.
    xofs: Vec<[usize; 2]>,
    alpha: Vec<[i32; 2]>,
    /// Per destination row: the two source rows (clamped), and their weights.
    yofs: Vec<[usize; 2]>,
    beta: Vec<[i32; 2]>,
    rows: [Vec<i32>; 2],
    cached: [Option<usize>; 2],
}

/// Fractional shrink: float pixel-area weights (`computeResizeAreaTab` + `ResizeArea_Invoker`).
struct Area {
    /// (destination element, source element, weight), in OpenCV's accumulation order.
    xtab: Vec<(usize, usize, f32)>,
    /// Per destination row: (source row, weight).
    ytab: Vec<Vec<(usize, f32)>>,
    buf: Vec<f32>,
    sum: Vec<f32>,
    cached: Option<usize>,
}

/// One axis of `computeResizeAreaTab`: (destination index, source index, weight).
fn area_tab(ssize: usize, dsize: usize, scale: f64) -> Vec<(usize, usize, f32)> {
    let mut tab = Vec::with_capacity(ssize * 2);
    for dx in 0..dsize {
        let fsx1 = dx as f64 * scale;
        let fsx2 = fsx1 + scale;
        let cell = scale.min(ssize as f64 - fsx1);
        let sx2 = (fsx2.floor() as usize).min(ssize - 1);
        let sx1 = (fsx1.ceil() as usize).min(sx2);
        if sx1 as f64 - fsx1 > 1e-3 {
            tab.push((dx, sx1 - 1, ((sx1 as f64 - fsx1) / cell) as f32));
        }
        for sx in sx1..sx2 {
            tab.push((dx, sx, (1.0 / cell) as f32));
        }
        if fsx2 - sx2 as f64 > 1e-3 {
            tab.push((
                dx,
                sx2,
                ((fsx2 - sx2 as f64).min(1.0).min(cell) / cell) as f32,
            ));
        }
    }
    tab
}

/// One axis of the two-tap coefficients: (first source index, weights), as `resize` computes
/// them. `clamp` pins out-of-range taps to the edge (OpenCV does it for x only; y rows are
/// clamped when fetched instead, keeping the weights).
fn linear_axis(ssize: usize, dsize: usize, area: bool, clamp: bool) -> Vec<(isize, [i32; 2])> {
    let inv_scale = dsize as f64 / ssize as f64;
    let scale = 1.0 / inv_scale;
    (0..dsize)
        .map(|d| {
            let (mut s, mut f) = if area {
                let s = (d as f64 * scale).floor();
                let f = ((d + 1) as f64 - (s + 1.0) * inv_scale) as f32;
                (s as isize, if f <= 0.0 { 0.0 } else { f - f.floor() })
            } else {
                let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
                let s = f.floor();
                (s as isize, f - s)
            };
            if clamp && s < 0 {
                (s, f) = (0, 0.0);
            }
            if clamp && s >= ssize as isize - 1 {
                (s, f) = (ssize as isize - 1, 0.0);
            }
            let w = |v: f32| (v * COEF_SCALE).round_ties_even() as i32;
            (s, [w(1.0 - f), w(f)])
        })
        .collect()
}

impl<'a> Resizer<'a> {
    /// Plans resizing `src` to `width × height`.
    pub fn new(
        src: &'a Image,
        width: usize,
        height: usize,
        interpolation: Interpolation,
    ) -> Result<Self, GeometryError> {
        check_size("source image", src.width, src.height)?;
        check_size("destination size", width, height)?;
        let (sw, sh, cn) = (src.width, src.height, src.channels);
        // OpenCV derives both scales from the inverse ratio, in double.
        let scale_x = 1.0 / (width as f64 / sw as f64);
        let scale_y = 1.0 / (height as f64 / sh as f64);
        let (ix, iy) = (scale_x.round(), scale_y.round());
        let integral = (scale_x - ix).abs() < f64::EPSILON && (scale_y - iy).abs() < f64::EPSILON;
        let mut interpolation = interpolation;
        // A 2× bilinear shrink is exactly a 2×2 average: OpenCV switches to the area fast path.
        if interpolation == Interpolation::Linear && integral && ix == 2.0 && iy == 2.0 {
            interpolation = Interpolation::Area;
        }
        let shrinking = scale_x >= 1.0 && scale_y >= 1.0;
        let kind = if (width, height) == (sw, sh) {
            Kind::Copy
        } else if interpolation == Interpolation::Nearest {
            let ofs =
                |d: usize, scale: f64, s: usize| ((d as f64 * scale).floor() as usize).min(s - 1);
            Kind::Nearest {
                xofs: (0..width).map(|x| ofs(x, scale_x, sw) * cn).collect(),
                yofs: (0..height).map(|y| ofs(y, scale_y, sh)).collect(),
            }
        } else if interpolation == Interpolation::Area && shrinking && integral {
            let (kx, ky) = (ix as usize, iy as usize);
            Kind::AreaFast {
                kx,
                ky,
                xofs: (0..width * cn)
                    .map(|i| (i / cn) * kx * cn + i % cn)
                    .collect(),
            }
        } else if interpolation == Interpolation::Area && shrinking {
            let xtab = area_tab(sw, width, scale_x)
                .into_iter()
                .flat_map(|(d, s, w)| (0..cn).map(move |c| (d * cn + c, s * cn + c, w)))
                .collect();
            let mut ytab = vec![Vec::new(); height];
            for (d, s, w) in area_tab(sh, height, scale_y) {
                ytab[d].push((s, w));
            }
            Kind::Area(Box::new(Area {
                xtab,
                ytab,
                buf: vec![0.0; width * cn],
                sum: vec![0.0; width * cn],
                cached: None,
            }))
        } else {
            let area = interpolation == Interpolation::Area;
            let xs = linear_axis(sw, width, area, true);
            let ys = linear_axis(sh, height, area, false);
            let row = |s: isize| s.clamp(0, sh as isize - 1) as usize;
            Kind::Linear(Box::new(Linear {
                xofs: xs
                    .iter()
                    .map(|&(s, _)| [s as usize * cn, (s as usize + 1).min(sw - 1) * cn])
                    .collect(),
                alpha: xs.iter().map(|&(_, a)| a).collect(),
                yofs: ys.iter().map(|&(s, _)| [row(s), row(s + 1)]).collect(),
                beta: ys.iter().map(|&(_, b)| b).collect(),
                rows: [vec![0; width * cn], vec![0; width * cn]],
                cached: [None, None],
            }))
        };
        Ok(Self { src, width, kind })
    }

    /// Writes destination row `y` (`width × channels` samples) into `out`.
    pub fn row(&mut self, y: usize, out: &mut [u8]) {
        let src = self.src;
        let cn = src.channels;
        let out = &mut out[..self.width * cn];
        match &mut self.kind {
            Kind::Copy => out.copy_from_slice(src.row(y)),
            Kind::Nearest { xofs, yofs } => {
                let s = src.row(yofs[y]);
                for (d, &o) in out.chunks_exact_mut(cn).zip(xofs.iter()) {
                    d.copy_from_slice(&s[o..o + cn]);
                }
            }
            Kind::AreaFast { kx, ky, xofs } => area_fast_row(src, *kx, *ky, xofs, y, out),
            Kind::Linear(l) => l.row(src, y, out),
            Kind::Area(a) => a.row(src, y, out),
        }
    }
}

fn area_fast_row(src: &Image, kx: usize, ky: usize, xofs: &[usize], y: usize, out: &mut [u8]) {
    let cn = src.channels;
    if kx == 2 && ky == 2 {
        return halve_row(src.row(2 * y), src.row(2 * y + 1), cn, out);
    }
    let scale = 1.0 / (kx * ky) as f32;
    let rows = &src.data[y * ky * src.width * cn..][..ky * src.width * cn];
    for (d, &o) in out.iter_mut().zip(xofs) {
        let s: u32 = rows
            .chunks_exact(src.width * cn)
            .flat_map(|r| (0..kx).map(move |k| u32::from(r[o + k * cn])))
            .sum();
        *d = sat_u8(s as f32 * scale);
    }
}

/// One output row of a 2×2 average over source rows `r0`, `r1`.
#[inline(always)]
fn halve<const CN: usize>(r0: &[u8], r1: &[u8], out: &mut [u8]) {
    for ((d, a), b) in out
        .chunks_exact_mut(CN)
        .zip(r0.chunks_exact(2 * CN))
        .zip(r1.chunks_exact(2 * CN))
    {
        for c in 0..CN {
            let s = u16::from(a[c]) + u16::from(a[c + CN]) + u16::from(b[c]) + u16::from(b[c + CN]);
            // OpenCV's vector kernel rounds half up here (everything else rounds half to even).
            d[c] = ((s + 2) >> 2) as u8;
        }
    }
}

simd_fn! {
    fn halve_row(r0: &[u8], r1: &[u8], cn: usize, out: &mut [u8]) {
        match cn {
            1 => halve::<1>(r0, r1, out),
            2 => halve::<2>(r0, r1, out),
            3 => halve::<3>(r0, r1, out),
            4 => halve::<4>(r0, r1, out),
            _ => {
                for (i, d) in out.iter_mut().enumerate() {
                    let o = (i / cn) * 2 * cn + i % cn;
                    let s = u16::from(r0[o]) + u16::from(r0[o + cn]) + u16::from(r1[o]) + u16::from(r1[o + cn]);
                    *d = ((s + 2) >> 2) as u8;
                }
            }
        }
    }
}

/// Horizontal two-tap pass of one source row of `CN` channels (source × 2048 in `i32`).
#[inline(always)]
fn linear_hrow<const CN: usize>(
    src: &[u8],
    xofs: &[[usize; 2]],
    alpha: &[[i32; 2]],
    dst: &mut [i32],
) {
    for ((d, &[o0, o1]), &[a0, a1]) in dst.chunks_exact_mut(CN).zip(xofs).zip(alpha) {
        let (p0, p1): (&[u8; CN], &[u8; CN]) = (
            src[o0..o0 + CN].try_into().unwrap(),
            src[o1..o1 + CN].try_into().unwrap(),
        );
        for c in 0..CN {
            d[c] = i32::from(p0[c]) * a0 + i32::from(p1[c]) * a1;
        }
    }
}

simd_fn! {
    /// Vertical two-tap blend with OpenCV's rounding (`VResizeLinearVec_32s8u`).
    fn linear_vrow(h0: &[i32], h1: &[i32], b0: i32, b1: i32, out: &mut [u8]) {
        for ((d, &h0), &h1) in out.iter_mut().zip(h0).zip(h1) {
            let v = (((h0 >> 4) * b0) >> 16) + (((h1 >> 4) * b1) >> 16);
            *d = ((v + 2) >> 2).clamp(0, 255) as u8;
        }
    }
}

impl Linear {
    fn hresize(&self, src: &[u8], cn: usize, dst: &mut [i32]) {
        match cn {
            1 => linear_hrow::<1>(src, &self.xofs, &self.alpha, dst),
            3 => linear_hrow::<3>(src, &self.xofs, &self.alpha, dst),
            4 => linear_hrow::<4>(src, &self.xofs, &self.alpha, dst),
            _ => {
                for ((d, &[o0, o1]), &[a0, a1]) in
                    dst.chunks_exact_mut(cn).zip(&self.xofs).zip(&self.alpha)
                {
                    for (c, d) in d.iter_mut().enumerate() {
                        *d = i32::from(src[o0 + c]) * a0 + i32::from(src[o1 + c]) * a1;
                    }
                }
            }
        }
    }

    fn row(&mut self, src: &Image, y: usize, out: &mut [u8]) {
        let [s0, s1] = self.yofs[y];
        if self.cached[1] == Some(s0) {
            self.rows.swap(0, 1);
            self.cached.swap(0, 1);
        }
        for (slot, s) in [(0, s0), (1, s1)] {
            if self.cached[slot] != Some(s) {
                let mut row = std::mem::take(&mut self.rows[slot]);
                self.hresize(src.row(s), src.channels, &mut row);
                self.rows[slot] = row;
                self.cached[slot] = Some(s);
            }
        }
        let [b0, b1] = self.beta[y];
        linear_vrow(&self.rows[0], &self.rows[1], b0, b1, out);
    }
}

impl Area {
    fn row(&mut self, src: &Image, y: usize, out: &mut [u8]) {
        for (j, &(sy, beta)) in self.ytab[y].iter().enumerate() {
            if self.cached != Some(sy) {
                self.buf.fill(0.0);
                let s = src.row(sy);
                for &(d, si, alpha) in &self.xtab {
                    self.buf[d] += f32::from(s[si]) * alpha;
                }
                self.cached = Some(sy);
            }
            for (sum, &b) in self.sum.iter_mut().zip(&self.buf) {
                *sum = if j == 0 { beta * b } else { *sum + beta * b };
            }
        }
        for (d, &s) in out.iter_mut().zip(&self.sum) {
            *d = sat_u8(s);
        }
    }
}

/// Resizes `src` to `width × height` into `dst` (reshaped; reused when already sized), as
/// `cv::resize(src, dst, Size(width, height), 0, 0, interpolation)`.
pub fn resize(
    src: &Image,
    width: usize,
    height: usize,
    interpolation: Interpolation,
    dst: &mut Image,
) -> Result<(), GeometryError> {
    let mut resizer = Resizer::new(src, width, height, interpolation)?;
    dst.reshape(width, height, src.channels);
    for y in 0..height {
        resizer.row(y, dst.row_mut(y));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Letterbox and the detector's tensor path

/// Where a letterboxed image sits inside its padded canvas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Content at the top-left, padding right and bottom (YOLOX style).
    TopLeft,
    /// Content centred, padding split evenly (the extra pixel goes right/bottom).
    Centre,
}

/// How an image is fitted into a model's input size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fit {
    /// Scale each axis independently to fill the target.
    Stretch,
    /// Keep the aspect ratio and pad with `pad` (all channels).
    Letterbox { placement: Placement, pad: u8 },
    /// PaddleOCR's text-line fit: scale to the target height keeping the aspect ratio (the
    /// width rounded up), squash to the target width when wider, and pad the right with `pad`.
    Height { pad: u8 },
}

/// The mapping between a source image and its fitted copy: resized content of
/// `width × height` at (`left`, `top`), scaled by `scale_x`, `scale_y`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Letterbox {
    pub scale_x: f32,
    pub scale_y: f32,
    pub left: usize,
    pub top: usize,
    pub width: usize,
    pub height: usize,
}

/// How a letterboxed side's scaled length becomes whole pixels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Rounding {
    /// `int(round(side * r))`, as Ultralytics' `LetterBox`.
    #[default]
    Nearest,
    /// `int(side * r)`, as the YOLOX, NanoDet and YuNet samples.
    Floor,
}

impl Letterbox {
    /// Plans fitting a `src_w × src_h` image into `dst_w × dst_h`, rounding to nearest.
    pub fn plan(src_w: usize, src_h: usize, dst_w: usize, dst_h: usize, fit: Fit) -> Self {
        Self::plan_rounded(src_w, src_h, dst_w, dst_h, fit, Rounding::Nearest)
    }

    /// Plans fitting a `src_w × src_h` image into `dst_w × dst_h`.
    pub fn plan_rounded(
        src_w: usize,
        src_h: usize,
        dst_w: usize,
        dst_h: usize,
        fit: Fit,
        rounding: Rounding,
    ) -> Self {
        let (width, height, placement) = match fit {
            Fit::Stretch => (dst_w, dst_h, Placement::TopLeft),
            Fit::Letterbox { placement, .. } => {
                let r = (dst_w as f64 / src_w as f64).min(dst_h as f64 / src_h as f64);
                let round = |v: f64| match rounding {
                    Rounding::Nearest => v.round(),
                    Rounding::Floor => v.floor(),
                };
                let side = |s: usize, d: usize| (round(s as f64 * r) as usize).clamp(1, d);
                (side(src_w, dst_w), side(src_h, dst_h), placement)
            }
            Fit::Height { .. } => {
                let w = (dst_h as f64 * src_w as f64 / src_h as f64).ceil() as usize;
                (w.clamp(1, dst_w), dst_h, Placement::TopLeft)
            }
        };
        let (left, top) = match placement {
            Placement::TopLeft => (0, 0),
            Placement::Centre => ((dst_w - width) / 2, (dst_h - height) / 2),
        };
        Self {
            scale_x: width as f32 / src_w as f32,
            scale_y: height as f32 / src_h as f32,
            left,
            top,
            width,
            height,
        }
    }

    /// Maps a point of the fitted image back to source coordinates.
    pub fn to_source(&self, x: f32, y: f32) -> (f32, f32) {
        (
            (x - self.left as f32) / self.scale_x,
            (y - self.top as f32) / self.scale_y,
        )
    }

    /// Maps a box of the fitted image back to the source image of `src_w × src_h`, clipped to it.
    pub fn box_to_source(&self, b: &BBox, src_w: usize, src_h: usize) -> BBox {
        let (x1, y1) = self.to_source(b.x1, b.y1);
        let (x2, y2) = self.to_source(b.x2, b.y2);
        let (w, h) = (src_w as f32, src_h as f32);
        BBox {
            x1: x1.clamp(0.0, w),
            y1: y1.clamp(0.0, h),
            x2: x2.clamp(0.0, w),
            y2: y2.clamp(0.0, h),
        }
    }
}

/// Resizes `src` keeping its aspect ratio into a `width × height` canvas filled with `pad`, as
/// `cv::resize` followed by `cv::copyMakeBorder(BORDER_CONSTANT)`.
pub fn letterbox(
    src: &Image,
    width: usize,
    height: usize,
    placement: Placement,
    pad: u8,
    interpolation: Interpolation,
    dst: &mut Image,
) -> Result<Letterbox, GeometryError> {
    check_size("source image", src.width, src.height)?;
    let lb = Letterbox::plan(
        src.width,
        src.height,
        width,
        height,
        Fit::Letterbox { placement, pad },
    );
    let mut resizer = Resizer::new(src, lb.width, lb.height, interpolation)?;
    let cn = src.channels;
    dst.reshape(width, height, cn);
    dst.data.fill(pad);
    for y in 0..lb.height {
        let row = dst.row_mut(lb.top + y);
        resizer.row(y, &mut row[lb.left * cn..]);
    }
    Ok(lb)
}

/// Per-channel `(x - mean) / std` into planar (NCHW) floats, optionally swapping R and B.
/// `mean` and `std` are in output channel order.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Normalize {
    pub swap_rb: bool,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Normalize {
    /// Normalises a whole 3-channel image into `out` (`3 × height × width` floats).
    pub fn apply(&self, img: &Image, out: &mut [f32]) -> Result<(), GeometryError> {
        check_channels(img)?;
        check_tensor(out, img.width, img.height)?;
        let plane = img.width * img.height;
        let (r, rest) = out.split_at_mut(plane);
        let (g, b) = rest.split_at_mut(plane);
        normalize_row(&img.data, *self, r, g, b);
        Ok(())
    }
}

/// `(x - mean) / std` in `f32`, the same arithmetic in the fused and unfused paths.
#[inline(always)]
fn normalize<const SWAP: bool>(
    src: &[u8],
    n: Normalize,
    r: &mut [f32],
    g: &mut [f32],
    b: &mut [f32],
) {
    let ([m0, m1, m2], [s0, s1, s2]) = (n.mean, n.std);
    for (((px, r), g), b) in src.chunks_exact(3).zip(r).zip(g).zip(b) {
        let (first, last) = if SWAP { (px[2], px[0]) } else { (px[0], px[2]) };
        *r = (f32::from(first) - m0) / s0;
        *g = (f32::from(px[1]) - m1) / s1;
        *b = (f32::from(last) - m2) / s2;
    }
}

simd_fn! {
    /// Splits interleaved pixels into three normalised planes.
    fn normalize_row(src: &[u8], n: Normalize, r: &mut [f32], g: &mut [f32], b: &mut [f32]) {
        if n.swap_rb {
            normalize::<true>(src, n, r, g, b)
        } else {
            normalize::<false>(src, n, r, g, b)
        }
    }
}

fn check_channels(img: &Image) -> Result<(), GeometryError> {
    if img.channels != 3 {
        return Err(GeometryError::Channels {
            expected: 3,
            found: img.channels,
        });
    }
    Ok(())
}

fn check_tensor(out: &[f32], width: usize, height: usize) -> Result<(), GeometryError> {
    let expected = 3 * width * height;
    if out.len() != expected {
        return Err(GeometryError::TensorLen {
            expected,
            found: out.len(),
        });
    }
    Ok(())
}

/// A detector's input preparation: fit an interleaved RGB/BGR `u8` image into
/// `width × height`, then normalise it into a planar `f32` tensor, one row at a time. Equal to
/// [`letterbox`] (or [`resize`] for [`Fit::Stretch`]) followed by [`Normalize::apply`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Preprocess {
    pub width: usize,
    pub height: usize,
    pub fit: Fit,
    /// How letterboxed sizes round; samples differ, and a pixel moves boxes and scores.
    pub rounding: Rounding,
    pub interpolation: Interpolation,
    pub normalize: Normalize,
}

impl Preprocess {
    /// Floats in the output tensor: `3 × height × width`.
    pub fn tensor_len(&self) -> usize {
        3 * self.width * self.height
    }

    /// Writes the tensor for `src` into `out`; returns how to map detections back to `src`.
    pub fn run(&self, src: &Image, out: &mut [f32]) -> Result<Letterbox, GeometryError> {
        check_size("source image", src.width, src.height)?;
        check_size("tensor size", self.width, self.height)?;
        check_channels(src)?;
        check_tensor(out, self.width, self.height)?;
        let lb = Letterbox::plan_rounded(
            src.width,
            src.height,
            self.width,
            self.height,
            self.fit,
            self.rounding,
        );
        let mut resizer = Resizer::new(src, lb.width, lb.height, self.interpolation)?;
        let plane = self.width * self.height;
        let (r_plane, rest) = out.split_at_mut(plane);
        let (g_plane, b_plane) = rest.split_at_mut(plane);
        if let Fit::Letterbox { pad, .. } | Fit::Height { pad } = self.fit {
            let mut value = [0.0; 3];
            let [vr, vg, vb] = &mut value;
            normalize_row(
                &[pad; 3],
                self.normalize,
                std::slice::from_mut(vr),
                std::slice::from_mut(vg),
                std::slice::from_mut(vb),
            );
            for (p, v) in [&mut *r_plane, &mut *g_plane, &mut *b_plane]
                .into_iter()
                .zip(value)
            {
                fill_padding(p, self.width, &lb, v);
            }
        }
        let mut row = vec![0u8; lb.width * 3];
        for y in 0..lb.height {
            resizer.row(y, &mut row);
            let start = (lb.top + y) * self.width + lb.left;
            let span = start..start + lb.width;
            normalize_row(
                &row,
                self.normalize,
                &mut r_plane[span.clone()],
                &mut g_plane[span.clone()],
                &mut b_plane[span],
            );
        }
        Ok(lb)
    }
}

/// Fills the part of a `width`-wide plane outside the letterbox content with `v`.
fn fill_padding(plane: &mut [f32], width: usize, lb: &Letterbox, v: f32) {
    for (y, row) in plane.chunks_exact_mut(width).enumerate() {
        if y < lb.top || y >= lb.top + lb.height {
            row.fill(v);
        } else {
            row[..lb.left].fill(v);
            row[lb.left + lb.width..].fill(v);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Warps

/// `fma` in `f32` as OpenCV's vector kernels compute it: the `f64` product of two `f32` is
/// exact, so only the sum rounds (twice, which differs from one rounding only at ties).
#[inline(always)]
fn fma32(a: f32, b: f32, c: f32) -> f32 {
    (f64::from(a) * f64::from(b) + f64::from(c)) as f32
}

/// Coordinates are kept within ±2^22, far outside any image, where [`round_even`] is exact
/// and conversions to `i32` cannot overflow.
const COORD_LIMIT: f32 = 4_194_304.0;

/// Clamps a coordinate to ±[`COORD_LIMIT`]; NaN lands outside the image (`max` ignores it),
/// like OpenCV's `INT_MIN`.
#[inline(always)]
#[expect(
    clippy::manual_clamp,
    reason = "`clamp` keeps NaN, `max` maps it outside"
)]
fn sane(v: f32) -> f32 {
    v.max(-COORD_LIMIT).min(COORD_LIMIT)
}

/// Integer value of a [`sane`] coordinate that is already integral.
#[inline(always)]
fn to_i32(v: f32) -> i32 {
    debug_assert!(v.abs() <= COORD_LIMIT);
    // SAFETY: `v` is finite and within ±2^22 (see `sane`), so it fits `i32`. The checked `as`
    // conversion would not vectorise.
    unsafe { v.to_int_unchecked() }
}

/// `floor` of a [`sane`] coordinate with plain conversions (no SSE4.1 `roundss` needed).
#[inline(always)]
fn floor(v: f32) -> f32 {
    let t = to_i32(v) as f32;
    if t > v { t - 1.0 } else { t }
}

/// How a warp maps destination pixels to source coordinates: the inverse transform, in `f32`
/// as OpenCV 5's kernels hold it (row terms included).
#[derive(Clone, Copy, Debug)]
enum Mapping {
    Affine([f32; 6]),
    Perspective([f32; 9]),
}

/// Source positions of one destination row: integer parts and (bilinear) fractions.
struct Taps {
    ix: Vec<i32>,
    iy: Vec<i32>,
    ax: Vec<f32>,
    ay: Vec<f32>,
}

impl Taps {
    fn view(&self, range: std::ops::Range<usize>) -> TapRow<'_> {
        TapRow {
            ix: &self.ix[range.clone()],
            iy: &self.iy[range.clone()],
            ax: &self.ax[range.clone()],
            ay: &self.ay[range],
        }
    }
}

/// A run of [`Taps`].
#[derive(Clone, Copy)]
struct TapRow<'a> {
    ix: &'a [i32],
    iy: &'a [i32],
    ax: &'a [f32],
    ay: &'a [f32],
}

#[cfg(target_arch = "x86_64")]
impl<'a> TapRow<'a> {
    fn sub(self, range: std::ops::Range<usize>) -> TapRow<'a> {
        TapRow {
            ix: &self.ix[range.clone()],
            iy: &self.iy[range.clone()],
            ax: &self.ax[range.clone()],
            ay: &self.ay[range],
        }
    }
}

/// Fills `taps` from the source coordinates `coords` gives each destination column.
#[inline(always)]
fn fill_taps(linear: bool, taps: &mut Taps, coords: impl Fn(f32) -> (f32, f32)) {
    let Taps { ix, iy, ax, ay } = taps;
    let columns = (0..ix.len() as i32).zip(ix.iter_mut().zip(iy.iter_mut()));
    if linear {
        for ((x, (ix, iy)), (ax, ay)) in columns.zip(ax.iter_mut().zip(ay.iter_mut())) {
            let (sx, sy) = coords(x as f32);
            let (sx, sy) = (sane(sx), sane(sy));
            let (fx, fy) = (floor(sx), floor(sy));
            (*ix, *iy, *ax, *ay) = (to_i32(fx), to_i32(fy), sx - fx, sy - fy);
        }
    } else {
        for (x, (ix, iy)) in columns {
            let (sx, sy) = coords(x as f32);
            (*ix, *iy) = (to_i32(round_even(sane(sx))), to_i32(round_even(sane(sy))));
        }
    }
}

simd_fn! {
    /// Source positions of each pixel of destination row `y`: rounded for nearest sampling,
    /// floored with fractions for bilinear.
    fn map_row(mapping: Mapping, y: usize, linear: bool, taps: &mut Taps) {
        let y = y as f32;
        match mapping {
            Mapping::Affine([a, b, c, d, e, f]) => {
                let (mx, my) = (y * b + c, y * e + f);
                fill_taps(linear, taps, |x| (fma32(a, x, mx), fma32(d, x, my)))
            }
            Mapping::Perspective(m) => {
                let (mx, my, mw) = (y * m[1] + m[2], y * m[4] + m[5], y * m[7] + m[8]);
                fill_taps(linear, taps, |x| {
                    let w = fma32(m[6], x, mw);
                    (fma32(m[0], x, mx) / w, fma32(m[3], x, my) / w)
                })
            }
        }
    }
}

/// Where warps read pixels: the source, its border rule and the constant border value.
struct Sampler<'a> {
    src: &'a Image,
    border: Border,
    value: u8,
}

impl Sampler<'_> {
    /// Offset of source pixel (`x`, `y`) after the border rule; `None` for the constant border.
    fn fetch(&self, x: i32, y: i32) -> Option<usize> {
        let sx = self.border.index(x as isize, self.src.width)?;
        let sy = self.border.index(y as isize, self.src.height)?;
        Some((sy * self.src.width + sx) * self.src.channels)
    }

    /// Bilinear sample whose 2×2 neighbourhood leaves the image.
    #[inline(always)]
    fn linear_border(&self, (ix, iy): (i32, i32), (ax, ay): (f32, f32), px: &mut [u8]) {
        let (cols, rows) = (self.src.width as i32, self.src.height as i32);
        // A constant border only blends at the edge; further out it is the border value (often
        // most of a warped frame, so this stays inline).
        if matches!(self.border, Border::Constant(_))
            && !((-1..cols).contains(&ix) && (-1..rows).contains(&iy))
        {
            return px.fill(self.value);
        }
        self.blend_border((ix, iy), (ax, ay), px);
    }

    /// Bilinear sample straddling the edge: taps outside follow the border rule.
    #[cold]
    fn blend_border(&self, (ix, iy): (i32, i32), (ax, ay): (f32, f32), px: &mut [u8]) {
        let taps =
            [(ix, iy), (ix + 1, iy), (ix, iy + 1), (ix + 1, iy + 1)].map(|(x, y)| self.fetch(x, y));
        for (c, out) in px.iter_mut().enumerate() {
            let p = taps.map(|t| f32::from(t.map_or(self.value, |o| self.src.data[o + c])));
            *out = bilinear(p, ax, ay);
        }
    }

    /// Nearest sample outside the image.
    #[cold]
    fn nearest_border(&self, ix: i32, iy: i32, px: &mut [u8]) {
        match self.fetch(ix, iy) {
            Some(o) => px.copy_from_slice(&self.src.data[o..o + px.len()]),
            None => px.fill(self.value),
        }
    }
}

/// OpenCV 5's bilinear blend of `[p00, p01, p10, p11]` in `f32`.
#[inline(always)]
fn bilinear([p00, p01, p10, p11]: [f32; 4], ax: f32, ay: f32) -> u8 {
    let v0 = p00 + ax * (p01 - p00);
    let v1 = p10 + ax * (p11 - p10);
    sat_u8(v0 + ay * (v1 - v0))
}

/// Samples one destination row at `taps` (`cn` is a constant after inlining for the common
/// channel counts).
#[inline(always)]
fn sample(s: &Sampler, cn: usize, linear: bool, taps: TapRow, out: &mut [u8]) {
    let (cols, rows) = (s.src.width as u32, s.src.height as u32);
    let stride = s.src.width * cn;
    let data = &s.src.data[..];
    let pixels = out.chunks_exact_mut(cn).zip(taps.ix.iter().zip(taps.iy));
    if !linear {
        for (px, (&ix, &iy)) in pixels {
            if (ix as u32) < cols && (iy as u32) < rows {
                let o = iy as usize * stride + ix as usize * cn;
                px.copy_from_slice(&data[o..o + cn]);
            } else {
                s.nearest_border(ix, iy, px);
            }
        }
        return;
    }
    for ((px, (&ix, &iy)), (&ax, &ay)) in pixels.zip(taps.ax.iter().zip(taps.ay)) {
        if (ix as u32) < cols.wrapping_sub(1) && (iy as u32) < rows.wrapping_sub(1) {
            let o = iy as usize * stride + ix as usize * cn;
            let (r0, r1) = (&data[o..o + 2 * cn], &data[o + stride..o + stride + 2 * cn]);
            if (2..=4).contains(&cn) {
                // Channels as the lanes of one 4-wide vector (the last channel repeated), so
                // the blend is a handful of vector instructions.
                let lanes = |r: &[u8], at: usize| -> [f32; 4] {
                    std::array::from_fn(|c| f32::from(r[at + c.min(cn - 1)]))
                };
                let (p00, p01, p10, p11) =
                    (lanes(r0, 0), lanes(r0, cn), lanes(r1, 0), lanes(r1, cn));
                let blend = |a: [f32; 4], b: [f32; 4], t: f32| -> [f32; 4] {
                    std::array::from_fn(|c| a[c] + t * (b[c] - a[c]))
                };
                let v = blend(blend(p00, p01, ax), blend(p10, p11, ax), ay);
                for (d, v) in px.iter_mut().zip(v) {
                    *d = sat_u8(v);
                }
            } else {
                for c in 0..cn {
                    let p = [r0[c], r0[c + cn], r1[c], r1[c + cn]].map(f32::from);
                    px[c] = bilinear(p, ax, ay);
                }
            }
        } else {
            s.linear_border((ix, iy), (ax, ay), px);
        }
    }
}

simd_fn! {
    fn sample_row(s: &Sampler, linear: bool, taps: TapRow, out: &mut [u8]) {
        match s.src.channels {
            1 => sample(s, 1, linear, taps, out),
            3 => sample(s, 3, linear, taps, out),
            4 => sample(s, 4, linear, taps, out),
            cn => sample(s, cn, linear, taps, out),
        }
    }
}

/// Bilinear warps 8 pixels at a time with AVX2 gathers: scalar code cannot vectorise the
/// per-pixel loads, and one 32-bit gather fetches all channels of a tap.
#[cfg(target_arch = "x86_64")]
mod gather {
    use super::{Image, Sampler, TapRow, sample};
    use std::arch::x86_64::*;

    /// Whether [`bilinear_row`] can run: AVX2 builds enabled and available, channels that fit
    /// one 32-bit word, offsets that fit `i32`.
    pub(super) fn applies(src: &Image) -> bool {
        crate::imgproc::filter::avx2()
            && matches!(src.channels, 1 | 3 | 4)
            && src.data.len() < i32::MAX as usize - 8
    }

    /// One bilinear row, 8 pixels per step: pixels whose 2×2 neighbourhood lies inside the
    /// image (and whose 4-byte reads stay inside the buffer) are gathered, the others sampled
    /// with the border rule. Same arithmetic as `bilinear`, so results are identical.
    pub(super) fn bilinear_row(s: &Sampler, taps: TapRow, out: &mut [u8]) {
        let cn = s.src.channels;
        let (cols, rows) = (s.src.width as u32, s.src.height as u32);
        let stride = s.src.width * cn;
        let len = s.src.data.len();
        let n = taps.ix.len();
        let mut x = 0;
        while x + 8 <= n {
            let block = taps.sub(x..x + 8);
            let px = &mut out[x * cn..(x + 8) * cn];
            let inside: [bool; 8] = std::array::from_fn(|j| {
                let (ix, iy) = (block.ix[j], block.iy[j]);
                (ix as u32) < cols.wrapping_sub(1)
                    && (iy as u32) < rows.wrapping_sub(1)
                    && iy as usize * stride + ix as usize * cn + stride + cn + 4 <= len
            });
            if inside.contains(&true) {
                // SAFETY: `applies` checked AVX2; the gathers only read lanes marked inside,
                // whose words lie inside `data`.
                unsafe { block8(s.src, block, inside, px) };
            }
            for (j, _) in inside.iter().enumerate().filter(|(_, inside)| !**inside) {
                let (ix, iy, ax, ay) = (block.ix[j], block.iy[j], block.ax[j], block.ay[j]);
                let px = &mut px[j * cn..(j + 1) * cn];
                if (ix as u32) < cols.wrapping_sub(1) && (iy as u32) < rows.wrapping_sub(1) {
                    // Inside, but a 4-byte read would pass the end of the buffer.
                    sample(s, cn, true, block.sub(j..j + 1), px);
                } else {
                    s.linear_border((ix, iy), (ax, ay), px);
                }
            }
            x += 8;
        }
        sample(s, cn, true, taps.sub(x..n), &mut out[x * cn..]);
    }

    /// Eight pixels, of which those marked `inside` are written: four gathers (one per tap, all
    /// channels at once), then per channel the same `f32` blend as the scalar path.
    #[target_feature(enable = "avx2")]
    unsafe fn block8(src: &Image, taps: TapRow, inside: [bool; 8], out: &mut [u8]) {
        let cn = src.channels;
        let stride = (src.width * cn) as i32;
        let ints = |v: &[i32]| unsafe { _mm256_loadu_si256(v[..8].as_ptr().cast()) };
        let floats = |v: &[f32]| unsafe { _mm256_loadu_ps(v[..8].as_ptr()) };
        let offsets = _mm256_add_epi32(
            _mm256_mullo_epi32(ints(taps.iy), _mm256_set1_epi32(stride)),
            _mm256_mullo_epi32(ints(taps.ix), _mm256_set1_epi32(cn as i32)),
        );
        let base = src.data.as_ptr().cast::<i32>();
        let mask = inside.map(|i| -i32::from(i));
        let mask = ints(&mask);
        // SAFETY (caller): for each lane in `mask`, offset + tap + 4 bytes lies inside
        // `src.data`; other lanes are not read.
        let tap = |delta: usize| unsafe {
            _mm256_mask_i32gather_epi32::<1>(
                _mm256_setzero_si256(),
                base.byte_add(delta),
                offsets,
                mask,
            )
        };
        let [w00, w01, w10, w11] = [0, cn, stride as usize, stride as usize + cn].map(tap);
        let (ax, ay) = (floats(taps.ax), floats(taps.ay));
        let (zero, max) = (_mm256_setzero_ps(), _mm256_set1_ps(255.0));
        // Each pixel's channels packed into one 32-bit lane, little end first.
        let mut packed = _mm256_setzero_si256();
        for c in 0..cn {
            let shift = _mm256_set1_epi32(8 * c as i32);
            let channel = |w: __m256i| {
                _mm256_cvtepi32_ps(_mm256_and_si256(
                    _mm256_srlv_epi32(w, shift),
                    _mm256_set1_epi32(0xff),
                ))
            };
            let blend = |a: __m256, b: __m256, t: __m256| {
                _mm256_add_ps(a, _mm256_mul_ps(t, _mm256_sub_ps(b, a)))
            };
            let v0 = blend(channel(w00), channel(w01), ax);
            let v1 = blend(channel(w10), channel(w11), ax);
            let v = _mm256_min_ps(_mm256_max_ps(blend(v0, v1, ay), zero), max);
            packed = _mm256_or_si256(packed, _mm256_sllv_epi32(_mm256_cvtps_epi32(v), shift));
        }
        let mut lanes = [0u32; 8];
        // SAFETY: `lanes` holds 8 `u32`.
        unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), packed) };
        match cn {
            1 => store::<1>(&lanes, inside, out),
            3 => store::<3>(&lanes, inside, out),
            _ => store::<4>(&lanes, inside, out),
        }
    }

    /// Writes the first `CN` bytes of each inside lane to its pixel.
    #[inline(always)]
    fn store<const CN: usize>(lanes: &[u32; 8], inside: [bool; 8], out: &mut [u8]) {
        for ((px, lane), inside) in out.chunks_exact_mut(CN).zip(lanes).zip(inside) {
            if inside {
                let bytes = lane.to_le_bytes();
                px.copy_from_slice(&bytes[..CN]);
            }
        }
    }
}

/// Samples `src` through `mapping` into a `width × height` `dst`.
fn warp(
    src: &Image,
    (width, height): (usize, usize),
    mapping: Mapping,
    interpolation: Interpolation,
    border: Border,
    dst: &mut Image,
) -> Result<(), GeometryError> {
    check_size("source image", src.width, src.height)?;
    check_size("destination size", width, height)?;
    dst.reshape(width, height, src.channels);
    let value = match border {
        Border::Constant(v) => v,
        _ => 0,
    };
    let sampler = Sampler { src, border, value };
    let linear = interpolation != Interpolation::Nearest;
    let mut taps = Taps {
        ix: vec![0; width],
        iy: vec![0; width],
        ax: vec![0.0; width],
        ay: vec![0.0; width],
    };
    for y in 0..height {
        map_row(mapping, y, linear, &mut taps);
        let row = taps.view(0..width);
        #[cfg(target_arch = "x86_64")]
        if linear && gather::applies(src) {
            gather::bilinear_row(&sampler, row, dst.row_mut(y));
            continue;
        }
        sample_row(&sampler, linear, row, dst.row_mut(y));
    }
    Ok(())
}

/// Warps `src` by the affine `m` (source → destination, as `cv::warpAffine` without
/// `WARP_INVERSE_MAP`) into a `width × height` `dst`.
pub fn warp_affine(
    src: &Image,
    m: &[[f64; 3]; 2],
    width: usize,
    height: usize,
    interpolation: Interpolation,
    border: Border,
    dst: &mut Image,
) -> Result<(), GeometryError> {
    let [[a, b, c], [d, e, f]] = *m;
    let det = a * e - b * d;
    let inv = if det != 0.0 { 1.0 / det } else { 0.0 };
    let (a, b, d, e) = (e * inv, -b * inv, -d * inv, a * inv);
    let (c, f) = (-a * c - b * f, -d * c - e * f);
    let mapping = Mapping::Affine([a, b, c, d, e, f].map(|v| v as f32));
    warp(src, (width, height), mapping, interpolation, border, dst)
}

/// Warps `src` by the homography `m` (source → destination, as `cv::warpPerspective` without
/// `WARP_INVERSE_MAP`) into a `width × height` `dst`. A singular `m` maps everything outside.
pub fn warp_perspective(
    src: &Image,
    m: &[[f64; 3]; 3],
    width: usize,
    height: usize,
    interpolation: Interpolation,
    border: Border,
    dst: &mut Image,
) -> Result<(), GeometryError> {
    let mut a = [
        m[0][0], m[0][1], m[0][2], m[1][0], m[1][1], m[1][2], m[2][0], m[2][1], m[2][2],
    ];
    let mut identity = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
    let inv = if solve(&mut a, &mut identity, 3, 3) {
        identity.map(|v| v as f32)
    } else {
        [0.0; 9]
    };
    warp(
        src,
        (width, height),
        Mapping::Perspective(inv),
        interpolation,
        border,
        dst,
    )
}

/// Solves `a · x = b` in place (`a` is `n × n`, `b` is `n × m`, row-major) by Gaussian
/// elimination with partial pivoting, as OpenCV's `DECOMP_LU`; `false` when `a` is singular.
fn solve(a: &mut [f64], b: &mut [f64], n: usize, m: usize) -> bool {
    let eps = f64::EPSILON * 100.0;
    for i in 0..n {
        let p = (i..n).fold(i, |p, j| {
            if a[j * n + i].abs() > a[p * n + i].abs() {
                j
            } else {
                p
            }
        });
        if a[p * n + i].abs() < eps {
            return false;
        }
        if p != i {
            for k in 0..n {
                a.swap(i * n + k, p * n + k);
            }
            for k in 0..m {
                b.swap(i * m + k, p * m + k);
            }
        }
        let d = -1.0 / a[i * n + i];
        for j in i + 1..n {
            let alpha = a[j * n + i] * d;
            for k in i + 1..n {
                a[j * n + k] += alpha * a[i * n + k];
            }
            for k in 0..m {
                b[j * m + k] += alpha * b[i * m + k];
            }
        }
    }
    for i in (0..n).rev() {
        for j in 0..m {
            let s = (i + 1..n).fold(b[i * m + j], |s, k| s - a[i * n + k] * b[k * m + j]);
            b[i * m + j] = s / a[i * n + i];
        }
    }
    true
}

/// The affine transform taking each `src` point to its `dst` point, as `cv::getAffineTransform`.
pub fn get_affine_transform(
    src: &[[f32; 2]; 3],
    dst: &[[f32; 2]; 3],
) -> Result<[[f64; 3]; 2], GeometryError> {
    let mut a = [0.0; 36];
    let mut b = [0.0; 6];
    for (i, (s, d)) in src.iter().zip(dst).enumerate() {
        let (x, y) = (f64::from(s[0]), f64::from(s[1]));
        a[i * 12..i * 12 + 3].copy_from_slice(&[x, y, 1.0]);
        a[i * 12 + 9..i * 12 + 12].copy_from_slice(&[x, y, 1.0]);
        b[i * 2] = f64::from(d[0]);
        b[i * 2 + 1] = f64::from(d[1]);
    }
    if !solve(&mut a, &mut b, 6, 1) {
        return Err(GeometryError::Singular);
    }
    Ok([[b[0], b[1], b[2]], [b[3], b[4], b[5]]])
}

/// The homography taking each `src` point to its `dst` point, as `cv::getPerspectiveTransform`
/// (an 8×8 linear system, `m[2][2] = 1`).
pub fn get_perspective_transform(
    src: &[[f32; 2]; 4],
    dst: &[[f32; 2]; 4],
) -> Result<[[f64; 3]; 3], GeometryError> {
    let mut a = [0.0; 64];
    let mut b = [0.0; 8];
    for (i, (s, d)) in src.iter().zip(dst).enumerate() {
        let (x, y) = (f64::from(s[0]), f64::from(s[1]));
        // OpenCV forms these products in `float` (its points are `Point2f`).
        a[i * 8..i * 8 + 8].copy_from_slice(&[
            x,
            y,
            1.0,
            0.0,
            0.0,
            0.0,
            f64::from(-s[0] * d[0]),
            f64::from(-s[1] * d[0]),
        ]);
        a[(i + 4) * 8..(i + 4) * 8 + 8].copy_from_slice(&[
            0.0,
            0.0,
            0.0,
            x,
            y,
            1.0,
            f64::from(-s[0] * d[1]),
            f64::from(-s[1] * d[1]),
        ]);
        b[i] = f64::from(d[0]);
        b[i + 4] = f64::from(d[1]);
    }
    if !solve(&mut a, &mut b, 8, 1) {
        return Err(GeometryError::Singular);
    }
    Ok([[b[0], b[1], b[2]], [b[3], b[4], b[5]], [b[6], b[7], 1.0]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letterbox_plan_maps_back_to_the_source() {
        let centre = Fit::Letterbox {
            placement: Placement::Centre,
            pad: 114,
        };
        let lb = Letterbox::plan(640, 480, 320, 320, centre);
        assert_eq!((lb.left, lb.top, lb.width, lb.height), (0, 40, 320, 240));
        assert_eq!(lb.to_source(160.0, 160.0), (320.0, 240.0));
        let b = lb.box_to_source(
            &BBox {
                x1: -5.0,
                y1: 40.0,
                x2: 20.0,
                y2: 400.0,
            },
            640,
            480,
        );
        assert_eq!((b.x1, b.y1, b.x2, b.y2), (0.0, 0.0, 40.0, 480.0));
        let stretch = Letterbox::plan(640, 480, 320, 320, Fit::Stretch);
        assert_eq!((stretch.scale_x, stretch.scale_y), (0.5, 320.0 / 480.0));
    }

    #[test]
    fn preprocess_rejects_bad_buffers() {
        let pre = Preprocess {
            width: 4,
            height: 4,
            fit: Fit::Stretch,
            rounding: Rounding::Nearest,
            interpolation: Interpolation::Linear,
            normalize: Normalize {
                swap_rb: false,
                mean: [0.0; 3],
                std: [1.0; 3],
            },
        };
        let rgb = Image::new(8, 8, 3);
        assert_eq!(
            pre.run(&rgb, &mut [0.0; 47]),
            Err(GeometryError::TensorLen {
                expected: 48,
                found: 47
            })
        );
        assert_eq!(
            pre.run(&Image::new(8, 8, 1), &mut [0.0; 48]),
            Err(GeometryError::Channels {
                expected: 3,
                found: 1
            })
        );
        let err = resize(&rgb, 0, 3, Interpolation::Area, &mut Image::new(0, 0, 3));
        assert!(matches!(err, Err(GeometryError::Empty { width: 0, .. })));
    }
}
