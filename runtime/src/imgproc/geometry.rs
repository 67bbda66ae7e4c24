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
use super::filter::Border;
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

/// `saturate_cast<uchar>(float)`: round half to even, then clamp.
#[inline(always)]
fn sat_u8(v: f32) -> u8 {
    v.round_ties_even().clamp(0.0, 255.0) as u8
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
    /// Per destination sample: element offsets of the two taps, and their weights.
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
                xofs: (0..width * cn)
                    .map(|i| {
                        let s = xs[i / cn].0 as usize;
                        [s * cn + i % cn, (s + 1).min(sw - 1) * cn + i % cn]
                    })
                    .collect(),
                alpha: (0..width * cn).map(|i| xs[i / cn].1).collect(),
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
        // OpenCV's vector kernel rounds half up here (everything else rounds half to even).
        let (r0, r1) = (src.row(2 * y), src.row(2 * y + 1));
        for (d, &o) in out.iter_mut().zip(xofs) {
            let s =
                u32::from(r0[o]) + u32::from(r0[o + cn]) + u32::from(r1[o]) + u32::from(r1[o + cn]);
            *d = ((s + 2) >> 2) as u8;
        }
        return;
    }
    let scale = 1.0 / (kx * ky) as f32;
    let rows: Vec<&[u8]> = (0..ky).map(|k| src.row(y * ky + k)).collect();
    for (d, &o) in out.iter_mut().zip(xofs) {
        let s: u32 = rows
            .iter()
            .flat_map(|r| (0..kx).map(move |k| u32::from(r[o + k * cn])))
            .sum();
        *d = sat_u8(s as f32 * scale);
    }
}

impl Linear {
    fn hresize(&self, src: &[u8], dst: &mut [i32]) {
        for ((d, &[o0, o1]), &[a0, a1]) in dst.iter_mut().zip(&self.xofs).zip(&self.alpha) {
            *d = i32::from(src[o0]) * a0 + i32::from(src[o1]) * a1;
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
                self.hresize(src.row(s), &mut row);
                self.rows[slot] = row;
                self.cached[slot] = Some(s);
            }
        }
        let [b0, b1] = self.beta[y];
        for ((d, &h0), &h1) in out.iter_mut().zip(&self.rows[0]).zip(&self.rows[1]) {
            let v = (((h0 >> 4) * b0) >> 16) + (((h1 >> 4) * b1) >> 16);
            *d = ((v + 2) >> 2).clamp(0, 255) as u8;
        }
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
    /// Table of every normalised value, per output channel.
    fn lut(&self) -> [[f32; 256]; 3] {
        let mut lut = [[0.0; 256]; 3];
        for (c, table) in lut.iter_mut().enumerate() {
            for (v, out) in table.iter_mut().enumerate() {
                *out = (v as f32 - self.mean[c]) / self.std[c];
            }
        }
        lut
    }

    /// Source channel feeding output channel `c`.
    fn source_channel(&self, c: usize) -> usize {
        if self.swap_rb { 2 - c } else { c }
    }

    /// Normalises a whole 3-channel image into `out` (`3 × height × width` floats).
    pub fn apply(&self, img: &Image, out: &mut [f32]) -> Result<(), GeometryError> {
        check_channels(img)?;
        check_tensor(out, img.width, img.height)?;
        let lut = self.lut();
        let plane = img.width * img.height;
        for (c, table) in lut.iter().enumerate() {
            let sc = self.source_channel(c);
            for (o, px) in out[c * plane..][..plane]
                .iter_mut()
                .zip(img.data.chunks_exact(3))
            {
                *o = table[usize::from(px[sc])];
            }
        }
        Ok(())
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
        let lut = self.normalize.lut();
        let plane = self.width * self.height;
        if let Fit::Letterbox { pad, .. } = self.fit {
            for (c, p) in out.chunks_exact_mut(plane).enumerate() {
                fill_padding(p, self.width, &lb, lut[c][usize::from(pad)]);
            }
        }
        let sc = [0, 1, 2].map(|c| self.normalize.source_channel(c));
        let mut row = vec![0u8; lb.width * 3];
        let (r_plane, rest) = out.split_at_mut(plane);
        let (g_plane, b_plane) = rest.split_at_mut(plane);
        for y in 0..lb.height {
            resizer.row(y, &mut row);
            let start = (lb.top + y) * self.width + lb.left;
            let dst = (
                &mut r_plane[start..start + lb.width],
                &mut g_plane[start..start + lb.width],
                &mut b_plane[start..start + lb.width],
            );
            for (((px, r), g), b) in row.chunks_exact(3).zip(dst.0).zip(dst.1).zip(dst.2) {
                *r = lut[0][usize::from(px[sc[0]])];
                *g = lut[1][usize::from(px[sc[1]])];
                *b = lut[2][usize::from(px[sc[2]])];
            }
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

/// Keeps coordinates finite and well inside `i32`; NaN lands outside the image like OpenCV's
/// `INT_MIN`.
#[inline(always)]
fn sane(v: f32) -> f32 {
    if v.is_nan() { -1e9 } else { v.clamp(-1e9, 1e9) }
}

/// Samples `src` at the float coordinates `map` fills in for each destination row.
fn warp(
    src: &Image,
    width: usize,
    height: usize,
    interpolation: Interpolation,
    border: Border,
    dst: &mut Image,
    map: impl Fn(usize, &mut [[f32; 2]]),
) -> Result<(), GeometryError> {
    check_size("source image", src.width, src.height)?;
    check_size("destination size", width, height)?;
    let cn = src.channels;
    dst.reshape(width, height, cn);
    let mut coords = vec![[0.0f32; 2]; width];
    let (cols, rows) = (src.width as i32, src.height as i32);
    let stride = src.width * cn;
    // A source sample with the border rule applied; `None` when it comes from a constant border.
    let fetch = |x: i32, y: i32| -> Option<usize> {
        let sx = border.index(x as isize, src.width)?;
        let sy = border.index(y as isize, src.height)?;
        Some(sy * stride + sx * cn)
    };
    let bval = match border {
        Border::Constant(v) => f32::from(v),
        _ => 0.0,
    };
    for y in 0..height {
        map(y, &mut coords);
        let out = dst.row_mut(y);
        for (px, &[sx, sy]) in out.chunks_exact_mut(cn).zip(&coords) {
            let (sx, sy) = (sane(sx), sane(sy));
            if interpolation == Interpolation::Nearest {
                let (ix, iy) = (sx.round_ties_even() as i32, sy.round_ties_even() as i32);
                match fetch(ix, iy) {
                    Some(o) => px.copy_from_slice(&src.data[o..o + cn]),
                    None => px.fill(bval as u8),
                }
                continue;
            }
            let (fx, fy) = (sx.floor(), sy.floor());
            let (ix, iy) = (fx as i32, fy as i32);
            let (ax, ay) = (sx - fx, sy - fy);
            let inside = (0..cols - 1).contains(&ix) && (0..rows - 1).contains(&iy);
            if !inside
                && matches!(border, Border::Constant(_))
                && !((-1..cols).contains(&ix) && (-1..rows).contains(&iy))
            {
                px.fill(bval as u8);
                continue;
            }
            let taps = [
                fetch(ix, iy),
                fetch(ix + 1, iy),
                fetch(ix, iy + 1),
                fetch(ix + 1, iy + 1),
            ];
            for (c, out) in px.iter_mut().enumerate() {
                let p = taps.map(|t| t.map_or(bval, |o| f32::from(src.data[o + c])));
                let v0 = p[0] + ax * (p[1] - p[0]);
                let v1 = p[2] + ax * (p[3] - p[2]);
                *out = sat_u8(v0 + ay * (v1 - v0));
            }
        }
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
    // OpenCV's kernels work on the inverse in `f32`, row terms included.
    let [a, b, c, d, e, f] = [a, b, c, d, e, f].map(|v| v as f32);
    warp(
        src,
        width,
        height,
        interpolation,
        border,
        dst,
        |y, coords| {
            let y = y as f32;
            let (mx, my) = (y * b + c, y * e + f);
            for (x, xy) in coords.iter_mut().enumerate() {
                *xy = [fma32(a, x as f32, mx), fma32(d, x as f32, my)];
            }
        },
    )
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
        width,
        height,
        interpolation,
        border,
        dst,
        |y, coords| {
            let y = y as f32;
            let (mx, my, mw) = (
                y * inv[1] + inv[2],
                y * inv[4] + inv[5],
                y * inv[7] + inv[8],
            );
            for (x, xy) in coords.iter_mut().enumerate() {
                let x = x as f32;
                let w = fma32(inv[6], x, mw);
                *xy = [fma32(inv[0], x, mx) / w, fma32(inv[3], x, my) / w];
            }
        },
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
