//! YOLOv8 / YOLO11 instance segmentation: `[1, 4 + classes + M, N]` boxes, scores and mask
//! coefficients (M, usually 32), and `[1, M, H/4, W/4]` mask prototypes.
//!
//! Boxes and NMS are YOLOv8's ([`Head`]). Masks follow Ultralytics' `process_mask_native`
//! (`retina_masks=True`), which draws them at the source image's resolution: a detection's
//! mask logits are its coefficients times the prototypes, the part of the prototypes the
//! letterbox content covers is resized bilinearly (half-pixel centres, edges clamped, as
//! `F.interpolate(mode="bilinear")`) to the source image, the logits are thresholded at 0
//! (sigmoid 0.5) and cropped to the box mapped to the source (pixels whose index lies in
//! `[x1, x2) × [y1, y2)`). Detections whose mask is empty are dropped, as Ultralytics does.
//!
//! Only the prototype cells under a box are weighed and only the source pixels inside it
//! are interpolated, so the cost follows the boxes' area, not the image's. Ultralytics first
//! doubles or quadruples the prototypes when the padding is not whole prototype cells; this
//! maps source pixels to the prototypes directly, so it agrees exactly when the padding is
//! whole cells and within a fraction of a pixel otherwise.

use super::decode::{Context, DecodeError, Decoder, FrameCheck};
use super::extras::{Extras, MaskCleaner, Target};
use super::yolov8::Head;
use super::{Detections, MAX_DETECTIONS, Output};
use crate::imgproc::Image;

pub(crate) struct Yolov8Seg {
    frame: FrameCheck,
    head: Head,
    /// Index of the boxes output and of the prototypes output.
    order: (usize, usize),
    coefficients: usize,
    /// Prototype width and height.
    proto: (usize, usize),
    input: (usize, usize),
    /// The anchor of each detection the last decode kept.
    kept: heapless::Vec<u32, MAX_DETECTIONS>,
    cleaner: MaskCleaner,
    /// Mask logits over the prototype cells under the box being drawn.
    logits: Vec<f32>,
    /// Per target column of the box, the right cell's weight; and the spans of columns
    /// between the same two cells (start, end, left cell, right cell; window-relative).
    weights: Vec<f32>,
    spans: Vec<[u32; 4]>,
    /// One row of logits interpolated between two prototype rows.
    row: Vec<f32>,
    mask: Image,
}

impl Yolov8Seg {
    pub fn new(ctx: &Context) -> Result<Self, DecodeError> {
        let layout = "[1, 4 + classes + M, anchors] boxes and [1, M, H/4, W/4] prototypes";
        ctx.expect_count(2, layout)?;
        let order = if ctx.outputs[0].shape.len() == 4 {
            (1, 0)
        } else {
            (0, 1)
        };
        let protos = &ctx.outputs[order.1];
        let &[1, m, ph, pw] = protos.shape.as_slice() else {
            return Err(ctx.shape_error(protos, "[1, M, H/4, W/4] (mask prototypes)"));
        };
        if m == 0 || ph == 0 || pw == 0 {
            return Err(ctx.shape_error(protos, "[1, M, H/4, W/4] (mask prototypes)"));
        }
        let head = Head::new(ctx, &ctx.outputs[order.0], m, &format!(" + {m}"))?;
        let (w, h) = ctx.input_wh;
        Ok(Self {
            frame: ctx.frame_check(),
            head,
            order,
            coefficients: m,
            proto: (pw, ph),
            input: (w, h),
            kept: heapless::Vec::new(),
            cleaner: MaskCleaner::new(ctx.cfg)?,
            logits: Vec::with_capacity(pw * ph),
            weights: Vec::new(),
            spans: Vec::new(),
            row: Vec::with_capacity(pw),
            mask: Image::new(0, 0, 1),
        })
    }

    /// Draws the mask of the detection at `anchor` over `cols × rows` of the target into
    /// `self.mask` (whose top-left is `origin`); returns whether any pixel is set.
    fn draw(
        &mut self,
        boxes: &[f32],
        protos: &[f32],
        anchor: usize,
        target: &Target,
        (cols, rows): (std::ops::Range<usize>, std::ops::Range<usize>),
        origin: (usize, usize),
    ) -> bool {
        let (pw, ph) = self.proto;
        let (rx, ry) = (
            pw as f32 / self.input.0 as f32,
            ph as f32 / self.input.1 as f32,
        );
        // The prototype cells the letterbox content touches: interpolation clamps to them.
        let lb = &target.letterbox;
        let cells = |start: usize, len: usize, r: f32, n: usize| {
            let a = ((start as f32 * r).floor() as usize).min(n - 1);
            let b = (((start + len) as f32 * r).ceil() as usize).clamp(a + 1, n);
            (a, b)
        };
        let (cx0, cx1) = cells(lb.left, lb.width, rx, pw);
        let (cy0, cy1) = cells(lb.top, lb.height, ry, ph);
        // torch's source index: half-pixel centres, clamped at 0, right neighbour clamped.
        let source = |at: f32, r: f32, a: usize, b: usize| {
            let s = (at * r - 0.5 - a as f32).max(0.0);
            let i = (s as usize).min(b - a - 1);
            (a + i, a + (i + 1).min(b - a - 1), s - i as f32)
        };
        self.weights.clear();
        self.spans.clear();
        for (i, x) in cols.clone().enumerate() {
            let (ix, _) = target.input_of(x, 0);
            let (j0, j1, w) = source(ix, rx, cx0, cx1);
            self.weights.push(w);
            let (i, j0, j1) = (i as u32, j0 as u32, j1 as u32);
            match self.spans.last_mut() {
                Some(span) if span[2] == j0 && span[3] == j1 => span[1] = i + 1,
                _ => self.spans.push([i, i + 1, j0, j1]),
            }
        }
        let (Some(first), Some(last)) = (self.spans.first(), self.spans.last()) else {
            return false;
        };
        let (j_lo, j_hi) = (first[2] as usize, last[3] as usize + 1);
        let row_of = |y: usize| source(target.input_of(0, y).1, ry, cy0, cy1);
        let (i_lo, i_hi) = (row_of(rows.start).0, row_of(rows.end - 1).1 + 1);
        // Logits = coefficients · prototypes over the window of cells.
        let ww = j_hi - j_lo;
        self.logits.clear();
        self.logits.resize(ww * (i_hi - i_lo), 0.0);
        let n = self.head.anchors();
        let first_coef = 4 + self.head.classes();
        for k in 0..self.coefficients {
            let c = boxes[(first_coef + k) * n + anchor];
            let plane = &protos[k * pw * ph..(k + 1) * pw * ph];
            for (i, out) in (i_lo..i_hi).zip(self.logits.chunks_exact_mut(ww)) {
                let cells = &plane[i * pw + j_lo..i * pw + j_hi];
                for (o, &p) in out.iter_mut().zip(cells) {
                    *o += c * p;
                }
            }
        }
        let width = self.mask.width;
        for y in rows {
            let (i0, i1, wy) = row_of(y);
            let (top, bottom) = (
                &self.logits[(i0 - i_lo) * ww..(i0 - i_lo + 1) * ww],
                &self.logits[(i1 - i_lo) * ww..(i1 - i_lo + 1) * ww],
            );
            self.row.clear();
            self.row.extend(
                top.iter()
                    .zip(bottom)
                    .map(|(&t, &b)| t * (1.0 - wy) + b * wy),
            );
            let at = (y - origin.1) * width + (cols.start - origin.0);
            let out = &mut self.mask.data[at..at + cols.len()];
            // Within a span both cells are fixed: a loop the compiler vectorises.
            for &[s, e, j0, j1] in &self.spans {
                let (l, r) = (self.row[j0 as usize - j_lo], self.row[j1 as usize - j_lo]);
                let (s, e) = (s as usize, e as usize);
                for (o, &w) in out[s..e].iter_mut().zip(&self.weights[s..e]) {
                    *o = if l * (1.0 - w) + r * w > 0.0 { 255 } else { 0 };
                }
            }
        }
        self.mask.data.contains(&255)
    }
}

impl Decoder for Yolov8Seg {
    fn decode(&mut self, outputs: &[Output<'_>], out: &mut Detections) -> Result<(), DecodeError> {
        self.frame.check(outputs)?;
        self.kept.clear();
        let kept = &mut self.kept;
        self.head.decode(outputs[self.order.0].data, out, |a| {
            // As many as the detections, which the list bounds.
            let _ = kept.push(a);
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
        let (boxes, protos) = (outputs[self.order.0].data, outputs[self.order.1].data);
        let margin = self.cleaner.margin();
        let mut keep = [false; MAX_DETECTIONS];
        for (i, det) in dets.iter().enumerate() {
            let Some(&anchor) = self.kept.get(i) else {
                break;
            };
            let (cols, rows) = target.pixels_in(&det.bbox);
            if cols.is_empty() || rows.is_empty() {
                continue;
            }
            // The buffer reaches `margin` beyond the box, so that cleaning it is cleaning the
            // whole image.
            let x0 = cols.start.saturating_sub(margin);
            let y0 = rows.start.saturating_sub(margin);
            let x1 = (cols.end + margin).min(target.width);
            let y1 = (rows.end + margin).min(target.height);
            self.mask.reshape(x1 - x0, y1 - y0, 1);
            self.mask.data.fill(0);
            if !self.draw(
                boxes,
                protos,
                anchor as usize,
                target,
                (cols, rows),
                (x0, y0),
            ) {
                continue;
            }
            self.cleaner.clean(&mut self.mask);
            keep[i] = extras.push_mask(&self.mask, x0, y0) > 0;
        }
        let mut i = 0;
        dets.retain(|_| {
            i += 1;
            keep[i - 1]
        });
        Ok(())
    }
}
