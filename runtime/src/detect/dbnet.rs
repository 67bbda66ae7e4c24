//! DBNet text detection (PP-OCR det): one `[1, 1, H, W]` probability map the size of the
//! input, one region per text line.
//!
//! As PaddleOCR's `DBPostProcess` (RapidOCR 1.4.4 settings, `score_mode = "slow"`): pixels
//! above `mask_threshold`, dilated by a 2×2 element (`use_dilation`), then opened and closed
//! when configured (`mask_open`, `mask_close`; off by default, as in PaddleOCR), form 8-connected
//! regions. A region scores the mean probability over its pixels (the "slow" mean inside its
//! contour; the "fast" mean inside its rotated rectangle under-scores bowed lines). A region
//! is kept when it scores at least `score_threshold` and the minimum-area rectangle around it
//! is at least 3 px across; the rectangle is then grown on every side by DB's unclip distance
//! `area × unclip_ratio / perimeter` and dropped when under 5 px across. The detection is the
//! axis-aligned box of the grown rectangle, clipped to the input.
//!
//! [`MaskRegions`] (mask → morphology → regions → statistics, mean and rectangle) serves any
//! per-pixel map: the semantic decoder uses it too.

use super::decode::{Context, DecodeError, Decoder, FrameCheck, Thresholds};
use super::extras::{apply_ops, cleanup_ops};
use super::nms::Candidates;
use super::{BBox, Detection, Detections, Output};
use crate::imgproc::Image;
use crate::imgproc::morph::{Border, MorphOp, Morphology, StructuringElement};
use crate::imgproc::regions::{ComponentStats, Connectivity, Labeler};

/// DB's `min_size`: regions whose rectangle is narrower are noise.
const MIN_SIDE: f32 = 3.0;
/// DB's second size check, after unclipping (`min_size + 2`).
const MIN_GROWN_SIDE: f32 = MIN_SIDE + 2.0;
/// DB's `max_candidates`.
const MAX_REGIONS: usize = 1000;

pub(crate) struct Dbnet {
    frame: FrameCheck,
    size: (usize, usize),
    mask_threshold: f32,
    unclip_ratio: f32,
    thresholds: Thresholds,
    regions: MaskRegions,
    max: usize,
    candidates: Candidates,
}

impl Dbnet {
    pub fn new(ctx: &Context) -> Result<Self, DecodeError> {
        let (w, h) = ctx.input_wh;
        let expected = format!("[1, 1, {h}, {w}] (a probability map the size of the input)");
        ctx.expect_count(1, &expected)?;
        if ctx.outputs[0].shape != [1, 1, h, w] {
            return Err(ctx.shape_error(&ctx.outputs[0], expected));
        }
        let cfg = ctx.cfg;
        if !(0.0..=1.0).contains(&cfg.mask_threshold) {
            return Err(DecodeError::Config {
                field: "mask_threshold",
                reason: format!("{} is not a probability within 0..1", cfg.mask_threshold),
            });
        }
        if !(cfg.unclip_ratio.is_finite() && cfg.unclip_ratio >= 0.0) {
            return Err(DecodeError::Config {
                field: "unclip_ratio",
                reason: format!("{} is not a ratio >= 0", cfg.unclip_ratio),
            });
        }
        ctx.check_classes(1)?;
        let dilation = StructuringElement::rect(2, 2).expect("2x2 is a valid element");
        let dilation = Morphology::new(MorphOp::Dilate, &dilation, None, 1, Border::Neutral)
            .expect("2x2 dilation is valid");
        // DB's own dilation first, then the configured clean-up: the same map stays comparable
        // with PaddleOCR's when the clean-up is off.
        let mut ops = vec![dilation];
        ops.extend(cleanup_ops(cfg)?);
        let regions = MaskRegions::new(w, h, ops);
        Ok(Self {
            frame: ctx.frame_check(),
            size: (w, h),
            mask_threshold: cfg.mask_threshold,
            unclip_ratio: cfg.unclip_ratio,
            thresholds: ctx.thresholds(1)?,
            regions,
            max: ctx.max_detections(),
            candidates: Candidates::new(MAX_REGIONS),
        })
    }
}

impl Decoder for Dbnet {
    fn decode(&mut self, outputs: &[Output<'_>], out: &mut Detections) -> Result<(), DecodeError> {
        self.frame.check(outputs)?;
        self.candidates.clear();
        let map = outputs[0].data;
        let t = self.mask_threshold;
        let count = self.regions.label(|i| map[i] > t);
        let threshold = self.thresholds.of(0);
        let (w, h) = (self.size.0 as f32, self.size.1 as f32);
        for label in 1..=count {
            let region = self.regions.measure(label, map);
            // DB drops a region when `box_thresh > score`, so keeps one at the threshold.
            let weak = region.mean.is_nan() || region.mean < threshold;
            if weak || region.rect.min_side() < MIN_SIDE {
                continue;
            }
            let rect = &region.rect;
            let grown = rect.grown(rect.area() * self.unclip_ratio / rect.perimeter());
            if grown.min_side() < MIN_GROWN_SIDE {
                continue;
            }
            let b = grown.bbox();
            self.candidates.push(Detection {
                class_id: 0,
                score: region.mean,
                bbox: BBox {
                    x1: b.x1.clamp(0.0, w),
                    y1: b.y1.clamp(0.0, h),
                    x2: b.x2.clamp(0.0, w),
                    y2: b.y2.clamp(0.0, h),
                },
                landmarks: None,
            });
        }
        self.candidates.select(None, self.max, out);
        Ok(())
    }
}

/// A rectangle at any angle: a centre, a unit axis along its first side, and its side lengths
/// along and across that axis. Coordinates are pixel indices, as OpenCV's contour points.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct RotatedRect {
    pub centre: [f32; 2],
    pub axis: [f32; 2],
    pub size: [f32; 2],
}

impl RotatedRect {
    pub fn min_side(&self) -> f32 {
        self.size[0].min(self.size[1])
    }

    pub fn area(&self) -> f32 {
        self.size[0] * self.size[1]
    }

    pub fn perimeter(&self) -> f32 {
        2.0 * (self.size[0] + self.size[1])
    }

    /// The rectangle moved out by `d` on every side. DB offsets its rectangle with rounded
    /// joins and takes the minimum-area rectangle of the result, which is this one.
    pub fn grown(&self, d: f32) -> Self {
        Self {
            size: self.size.map(|s| s + 2.0 * d),
            ..*self
        }
    }

    /// The axis-aligned box around the rectangle.
    pub fn bbox(&self) -> BBox {
        let ([cx, cy], [ux, uy], [a, b]) = (self.centre, self.axis, self.size);
        // The across axis is (-uy, ux).
        let hx = (ux.abs() * a + uy.abs() * b) / 2.0;
        let hy = (uy.abs() * a + ux.abs() * b) / 2.0;
        BBox {
            x1: cx - hx,
            y1: cy - hy,
            x2: cx + hx,
            y2: cy + hy,
        }
    }
}

/// What [`MaskRegions::measure`] finds out about one region.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Region {
    /// The mean of the measured values over the region's pixels.
    pub mean: f32,
    /// OpenCV's `minAreaRect` of the region's pixels (so of its outer contour).
    pub rect: RotatedRect,
}

/// The connected regions of a mask built from a per-pixel map, cleaned by morphology, with
/// the buffers to label and measure them kept from frame to frame.
///
/// Every buffer, the labeller's tables included, is kept: labelling allocates nothing once
/// the tables have grown to the frame's region count.
pub(crate) struct MaskRegions {
    width: usize,
    mask: Image,
    spare: Image,
    cleanup: Vec<Morphology>,
    labeler: Labeler,
    labels: Image<i32>,
    stats: Vec<ComponentStats>,
    /// The leftmost and rightmost pixel of each row of the region being measured.
    ends: Vec<[i64; 2]>,
    hull: Vec<[i64; 2]>,
}

impl MaskRegions {
    /// Buffers for `width × height` maps; `cleanup` runs on the mask, in order, before
    /// labelling.
    pub fn new(width: usize, height: usize, cleanup: Vec<Morphology>) -> Self {
        Self {
            width,
            mask: Image::new(width, height, 1),
            spare: Image::new(width, height, 1),
            cleanup,
            labeler: Labeler::default(),
            labels: Image::new(width, height, 1),
            stats: Vec::new(),
            // Two ends per row; the monotone chain's hull holds at most twice its points.
            ends: Vec::with_capacity(2 * height),
            hull: Vec::with_capacity(4 * height + 2),
        }
    }

    /// Marks every pixel `i` (row-major) for which `set(i)` holds, cleans the mask and
    /// labels its 8-connected regions; returns how many there are. Regions are numbered
    /// from 1.
    pub fn label(&mut self, set: impl Fn(usize) -> bool) -> usize {
        for (i, m) in self.mask.data.iter_mut().enumerate() {
            *m = if set(i) { 255 } else { 0 };
        }
        apply_ops(&mut self.cleanup, &mut self.mask, &mut self.spare);
        let labels = self
            .labeler
            .label(
                &self.mask,
                &mut self.labels,
                &mut self.stats,
                Connectivity::Eight,
            )
            .expect("the mask has one channel");
        labels - 1
    }

    /// Region `label`'s statistics (box, area, centroid), in map pixels.
    pub fn stats(&self, label: usize) -> &ComponentStats {
        &self.stats[label]
    }

    /// Calls `run(y, x0, x1)` for each row run `[x0, x1)` of region `label`, top to bottom.
    pub fn runs(&self, label: usize, mut run: impl FnMut(usize, usize, usize)) {
        let s = self.stats[label];
        let (left, w) = (s.left as usize, s.width as usize);
        for y in s.top as usize..(s.top + s.height) as usize {
            let at = y * self.width + left;
            let mut start = None;
            for (x, &l) in self.labels.data[at..at + w].iter().enumerate() {
                match (l as usize == label, start) {
                    (true, None) => start = Some(x),
                    (false, Some(x0)) => {
                        run(y, left + x0, left + x);
                        start = None;
                    }
                    _ => {}
                }
            }
            if let Some(x0) = start {
                run(y, left + x0, left + w);
            }
        }
    }

    /// The mean of `values` (row-major, one per pixel) over region `label`.
    pub fn mean(&self, label: usize, values: &[f32]) -> f32 {
        let mut sum = 0.0f64;
        self.runs(label, |y, x0, x1| {
            let at = y * self.width;
            sum += values[at + x0..at + x1]
                .iter()
                .map(|&v| f64::from(v))
                .sum::<f64>();
        });
        (sum / f64::from(self.stats[label].area.max(1))) as f32
    }

    /// The mean of `values` (row-major, one per pixel) over region `label`, and the
    /// minimum-area rectangle around its pixels.
    pub fn measure(&mut self, label: usize, values: &[f32]) -> Region {
        let mean = self.mean(label, values);
        let mut ends = std::mem::take(&mut self.ends);
        ends.clear();
        // Every row of a connected region's box holds some of its pixels; the first run of
        // a row starts it and the last ends it.
        let mut row: Option<(usize, usize, usize)> = None;
        let flush = |r: Option<(usize, usize, usize)>, ends: &mut Vec<[i64; 2]>| {
            if let Some((y, a, b)) = r {
                ends.push([a as i64, y as i64]);
                if b != a {
                    ends.push([b as i64, y as i64]);
                }
            }
        };
        self.runs(label, |y, x0, x1| {
            row = match row {
                Some((ry, a, _)) if ry == y => Some((y, a, x1 - 1)),
                other => {
                    flush(other, &mut ends);
                    Some((y, x0, x1 - 1))
                }
            };
        });
        flush(row, &mut ends);
        self.ends = ends;
        Region {
            mean,
            rect: self.min_area_rect(),
        }
    }

    /// The minimum-area rectangle around `self.ends`, which are in (y, x) order: the convex
    /// hull by Andrew's monotone chain, then the best rectangle with a side on a hull edge.
    fn min_area_rect(&mut self) -> RotatedRect {
        let cross = |o: [i64; 2], a: [i64; 2], b: [i64; 2]| {
            (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])
        };
        let hull = &mut self.hull;
        hull.clear();
        for pass in 0..2 {
            // Pop non-convex turns down to the pass's first point; the upper pass starts on
            // the lower chain's last point.
            let floor = if pass == 0 { 2 } else { hull.len() + 1 };
            let points = &self.ends;
            let mut step = |p: [i64; 2]| {
                while hull.len() >= floor
                    && cross(hull[hull.len() - 2], hull[hull.len() - 1], p) <= 0
                {
                    hull.pop();
                }
                hull.push(p);
            };
            if pass == 0 {
                points.iter().for_each(|&p| step(p));
            } else {
                points.iter().rev().skip(1).for_each(|&p| step(p));
            }
        }
        // The chain ends where it started.
        if hull.len() > 1 {
            hull.pop();
        }
        let Some(&[x0, y0]) = hull.first() else {
            return RotatedRect {
                centre: [0.0; 2],
                axis: [1.0, 0.0],
                size: [0.0; 2],
            };
        };
        let mut best = RotatedRect {
            centre: [x0 as f32, y0 as f32],
            axis: [1.0, 0.0],
            size: [0.0; 2],
        };
        let mut best_area = f64::INFINITY;
        // Hulls of raster regions have few vertices, so every edge against every vertex.
        for (i, &a) in hull.iter().enumerate() {
            let b = hull[(i + 1) % hull.len()];
            let (dx, dy) = ((b[0] - a[0]) as f64, (b[1] - a[1]) as f64);
            let len = dx.hypot(dy);
            if len == 0.0 {
                continue;
            }
            let (ux, uy) = (dx / len, dy / len);
            let (mut s, mut t) = (
                [f64::INFINITY, f64::NEG_INFINITY],
                [f64::INFINITY, f64::NEG_INFINITY],
            );
            for &[px, py] in hull.iter() {
                let (px, py) = (px as f64, py as f64);
                let (ps, pt) = (px * ux + py * uy, py * ux - px * uy);
                s = [s[0].min(ps), s[1].max(ps)];
                t = [t[0].min(pt), t[1].max(pt)];
            }
            let (along, across) = (s[1] - s[0], t[1] - t[0]);
            if along * across < best_area {
                best_area = along * across;
                let (ms, mt) = ((s[0] + s[1]) / 2.0, (t[0] + t[1]) / 2.0);
                best = RotatedRect {
                    // Back from (along, across) with across = (-uy, ux).
                    centre: [(ms * ux - mt * uy) as f32, (ms * uy + mt * ux) as f32],
                    axis: [ux as f32, uy as f32],
                    size: [along as f32, across as f32],
                };
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SIDE: usize = 24;

    proptest! {
        /// Over random masks: the mean is the mean over each region's pixels, and the
        /// rectangle holds every pixel centre with no angle giving a smaller one.
        #[test]
        fn regions_are_measured_exactly(
            cells in prop::collection::hash_set((0..SIDE, 0..SIDE), 1..120),
        ) {
            let mut regions = MaskRegions::new(SIDE, SIDE, Vec::new());
            let count = regions.label(|i| cells.contains(&(i % SIDE, i / SIDE)));
            let values: Vec<f32> = (0..SIDE * SIDE).map(|i| (i % 7) as f32).collect();
            for label in 1..=count {
                let pixels: Vec<(f64, f64, f32)> = (0..SIDE * SIDE)
                    .filter(|&i| regions.labels.data[i] as usize == label)
                    .map(|i| ((i % SIDE) as f64, (i / SIDE) as f64, values[i]))
                    .collect();
                let region = regions.measure(label, &values);
                let mean = pixels.iter().map(|p| p.2).sum::<f32>() / pixels.len() as f32;
                prop_assert!((region.mean - mean).abs() < 1e-4, "{} vs {mean}", region.mean);

                let r = region.rect;
                let ([cx, cy], [ux, uy]) = (r.centre.map(f64::from), r.axis.map(f64::from));
                for &(x, y, _) in &pixels {
                    let (dx, dy) = (x - cx, y - cy);
                    prop_assert!((dx * ux + dy * uy).abs() <= f64::from(r.size[0]) / 2.0 + 1e-3);
                    prop_assert!((dy * ux - dx * uy).abs() <= f64::from(r.size[1]) / 2.0 + 1e-3);
                }
                let extent = |ux: f64, uy: f64| {
                    let (lo, hi) = pixels.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
                        let v = p.0 * ux + p.1 * uy;
                        (lo.min(v), hi.max(v))
                    });
                    hi - lo
                };
                let brute = (0..1800)
                    .map(|k| (k as f64 / 10.0).to_radians().sin_cos())
                    .map(|(s, c)| extent(c, s) * extent(-s, c))
                    .fold(f64::INFINITY, f64::min);
                prop_assert!(f64::from(r.area()) <= brute + 1e-3, "{} > {brute}", r.area());
            }
        }
    }
}
