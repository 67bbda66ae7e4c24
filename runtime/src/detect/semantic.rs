//! Semantic segmentation: one `[1, C, H, W]` score map (any size; it covers the whole
//! input), one region per connected area of a class.
//!
//! Pixels get their class by argmax over the classes, or by each class's score above
//! `mask_threshold` (`mask_mode`; with `sigmoid_scores` the map holds logits). Each class's
//! mask is opened and closed (`mask_open`, `mask_close`) and split into 8-connected regions
//! by the same path as DBNet ([`MaskRegions`]). A region scores the mean of its class's score
//! over its pixels and is kept from `score_threshold` (or its class's threshold) up; its box
//! is its pixels' box scaled to the input. Its mask is the region drawn at the target's
//! resolution (each target pixel takes the map pixel under its centre); regions whose mask
//! has fewer than `mask_min_area` pixels (or none) are dropped.

use super::dbnet::MaskRegions;
use super::decode::{Context, DecodeError, Decoder, FrameCheck, MaskMode, Thresholds, sigmoid};
use super::extras::{Extras, Target, cleanup_ops};
use super::nms::Candidates;
use super::{BBox, Detection, Detections, MAX_DETECTIONS, Output};
use crate::imgproc::Image;

/// Most regions kept for a frame before the best `max_detections` are chosen.
const MAX_REGIONS: usize = 1000;

pub(crate) struct Semantic {
    frame: FrameCheck,
    classes: usize,
    /// Map width and height.
    size: (usize, usize),
    input: (usize, usize),
    mode: MaskMode,
    mask_threshold: f32,
    sigmoid: bool,
    background: Option<usize>,
    thresholds: Thresholds,
    min_area: u32,
    max: usize,
    regions: MaskRegions,
    /// Per pixel: the class that won (argmax) and the scores of the class being labelled.
    winner: Vec<u16>,
    scores: Vec<f32>,
    present: Vec<bool>,
    candidates: Candidates,
    /// Row runs `[y, x0, x1)` of every candidate region, in map pixels, and each region's
    /// slice of them (by candidate tag).
    runs: Vec<[u32; 3]>,
    spans: Vec<[u32; 2]>,
    /// The run spans of the detections the last decode kept.
    kept: heapless::Vec<[u32; 2], MAX_DETECTIONS>,
    /// Per target column of a box, the map column under its centre.
    columns: Vec<u32>,
    mask: Image,
}

impl Semantic {
    pub fn new(ctx: &Context) -> Result<Self, DecodeError> {
        let expected = "[1, classes, H, W] (a score map)";
        ctx.expect_count(1, expected)?;
        let out = &ctx.outputs[0];
        let &[1, classes, h, w] = out.shape.as_slice() else {
            return Err(ctx.shape_error(out, expected));
        };
        if classes == 0 || h == 0 || w == 0 || classes > usize::from(u16::MAX) {
            return Err(ctx.shape_error(out, expected));
        }
        ctx.check_classes(classes)?;
        let cfg = ctx.cfg;
        let mode = cfg.mask_mode.unwrap_or(if classes > 1 {
            MaskMode::Argmax
        } else {
            MaskMode::Threshold
        });
        if !cfg.mask_threshold.is_finite() {
            return Err(DecodeError::Config {
                field: "mask_threshold",
                reason: format!("{} is not a number", cfg.mask_threshold),
            });
        }
        let background = match &cfg.background {
            Some(label) => Some(usize::from(
                ctx.labels
                    .id(label)
                    .ok_or_else(|| DecodeError::UnknownLabel(label.clone()))?,
            )),
            None => None,
        };
        Ok(Self {
            frame: ctx.frame_check(),
            classes,
            size: (w, h),
            input: ctx.input_wh,
            mode,
            mask_threshold: cfg.mask_threshold,
            sigmoid: cfg.sigmoid_scores,
            background,
            thresholds: ctx.thresholds(classes)?,
            min_area: cfg.mask_min_area,
            max: ctx.max_detections(),
            regions: MaskRegions::new(w, h, cleanup_ops(cfg)?),
            winner: vec![0; w * h],
            scores: vec![0.0; w * h],
            present: vec![false; classes],
            candidates: Candidates::new(MAX_REGIONS),
            runs: Vec::new(),
            spans: Vec::new(),
            kept: heapless::Vec::new(),
            columns: Vec::new(),
            mask: Image::new(0, 0, 1),
        })
    }

    /// Finds class `class`'s regions and offers the good ones as candidates.
    fn class_regions(&mut self, class: usize, map: &[f32]) {
        let area = self.size.0 * self.size.1;
        let plane = &map[class * area..(class + 1) * area];
        for (s, &v) in self.scores.iter_mut().zip(plane) {
            *s = if self.sigmoid { sigmoid(v) } else { v };
        }
        let count = match self.mode {
            MaskMode::Argmax => {
                let winner = &self.winner;
                self.regions.label(|i| usize::from(winner[i]) == class)
            }
            MaskMode::Threshold => {
                let (scores, t) = (&self.scores, self.mask_threshold);
                self.regions.label(|i| scores[i] > t)
            }
        };
        let (sx, sy) = (
            self.input.0 as f32 / self.size.0 as f32,
            self.input.1 as f32 / self.size.1 as f32,
        );
        for label in 1..=count {
            let score = self.regions.mean(label, &self.scores);
            if score.is_nan() || score < self.thresholds.of(class) {
                continue;
            }
            let b = self.regions.stats(label).bbox();
            let tag = self.spans.len() as u32;
            let start = self.runs.len() as u32;
            let runs = &mut self.runs;
            self.regions.runs(label, |y, x0, x1| {
                runs.push([y as u32, x0 as u32, x1 as u32]);
            });
            self.spans.push([start, self.runs.len() as u32]);
            let det = Detection {
                class_id: class as u16,
                score,
                bbox: BBox {
                    x1: b.x1 * sx,
                    y1: b.y1 * sy,
                    x2: b.x2 * sx,
                    y2: b.y2 * sy,
                },
                landmarks: None,
            };
            self.candidates.push_tagged(det, tag);
        }
    }

    /// Draws the region of `runs` over `cols × rows` of the target into `self.mask`.
    fn draw(
        &mut self,
        runs: &[[u32; 3]],
        target: &Target,
        cols: std::ops::Range<usize>,
        rows: std::ops::Range<usize>,
    ) {
        let (rx, ry) = (
            self.size.0 as f32 / self.input.0 as f32,
            self.size.1 as f32 / self.input.1 as f32,
        );
        let cell = |at: f32, r: f32, n: usize| ((at * r).max(0.0) as usize).min(n - 1) as u32;
        self.columns.clear();
        self.columns.extend(
            cols.clone()
                .map(|x| cell(target.input_of(x, 0).0, rx, self.size.0)),
        );
        self.mask.reshape(cols.len(), rows.len(), 1);
        self.mask.data.fill(0);
        let mut next = 0;
        for (r, y) in rows.enumerate() {
            let my = cell(target.input_of(0, y).1, ry, self.size.1);
            // Runs are sorted by row and target rows map to non-decreasing map rows.
            while next < runs.len() && runs[next][0] < my {
                next += 1;
            }
            let out = &mut self.mask.data[r * cols.len()..(r + 1) * cols.len()];
            for run in runs[next..].iter().take_while(|run| run[0] == my) {
                for (o, &mx) in out.iter_mut().zip(&self.columns) {
                    if (run[1]..run[2]).contains(&mx) {
                        *o = 255;
                    }
                }
            }
        }
    }
}

impl Decoder for Semantic {
    fn decode(&mut self, outputs: &[Output<'_>], out: &mut Detections) -> Result<(), DecodeError> {
        self.frame.check(outputs)?;
        let map = outputs[0].data;
        let area = self.size.0 * self.size.1;
        self.candidates.clear();
        self.runs.clear();
        self.spans.clear();
        self.present.fill(false);
        match self.mode {
            MaskMode::Argmax => {
                // Class-major, so memory is read in order; the first class wins ties.
                self.scores.copy_from_slice(&map[..area]);
                self.winner.fill(0);
                for class in 1..self.classes {
                    let plane = &map[class * area..(class + 1) * area];
                    let best = self.scores.iter_mut().zip(&mut self.winner);
                    for ((b, w), &v) in best.zip(plane) {
                        if v > *b {
                            *b = v;
                            *w = class as u16;
                        }
                    }
                }
                for &w in &self.winner {
                    self.present[usize::from(w)] = true;
                }
            }
            MaskMode::Threshold => self.present.fill(true),
        }
        for class in 0..self.classes {
            if self.present[class] && Some(class) != self.background {
                self.class_regions(class, map);
            }
        }
        self.kept.clear();
        let (kept, spans) = (&mut self.kept, &self.spans);
        self.candidates.select_tagged(None, self.max, out, |tag| {
            // As many as the detections, which the list bounds.
            let _ = kept.push(spans[tag as usize]);
        });
        Ok(())
    }

    fn extras(
        &mut self,
        outputs: &[Output<'_>],
        target: &Target,
        dets: &mut Detections,
        extras: &mut Extras,
    ) -> Result<(), DecodeError> {
        self.frame.check(outputs)?;
        extras.reset(target.width, target.height);
        let mut keep = [false; MAX_DETECTIONS];
        let runs = std::mem::take(&mut self.runs);
        for (i, det) in dets.iter().enumerate() {
            let Some(&[a, b]) = self.kept.get(i) else {
                break;
            };
            let (cols, rows) = target.pixels_in(&det.bbox);
            if cols.is_empty() || rows.is_empty() {
                continue;
            }
            let origin = (cols.start, rows.start);
            self.draw(&runs[a as usize..b as usize], target, cols, rows);
            let area = self.mask.data.iter().filter(|&&v| v != 0).count();
            keep[i] = area > 0 && area as u64 >= u64::from(self.min_area);
            if keep[i] {
                extras.push_mask(&self.mask, origin.0, origin.1);
            }
        }
        self.runs = runs;
        let mut i = 0;
        dets.retain(|_| {
            i += 1;
            keep[i - 1]
        });
        Ok(())
    }
}
