//! YOLOv8 / YOLO11: one `[1, 4 + classes, N]` output, channels first.
//!
//! Column `i` holds anchor `i`: `cx, cy, w, h` in input pixels, then class scores (sigmoids
//! applied, no objectness). As in Ultralytics' `non_max_suppression`, each anchor competes
//! with its best class only. The segmentation and pose heads add rows after the scores and
//! share the scan ([`Head`]).

use super::decode::{
    Context, DecodeError, Decoder, FrameCheck, Thresholds, levels_text, total_cells,
};
use super::nms::{Candidates, Nms};
use super::{BBox, Detection, Detections, Output, OutputInfo};

const STRIDES: [u32; 3] = [8, 16, 32];

pub(crate) struct Yolov8 {
    frame: FrameCheck,
    head: Head,
}

impl Yolov8 {
    pub fn new(ctx: &Context) -> Result<Self, DecodeError> {
        ctx.expect_count(1, "[1, 4 + classes, anchors]")?;
        Ok(Self {
            frame: ctx.frame_check(),
            head: Head::new(ctx, &ctx.outputs[0], 0, "")?,
        })
    }
}

impl Decoder for Yolov8 {
    fn decode(&mut self, outputs: &[Output<'_>], out: &mut Detections) -> Result<(), DecodeError> {
        self.frame.check(outputs)?;
        self.head.decode(outputs[0].data, out, |_| {});
        Ok(())
    }
}

/// The anchor scan of a `[1, 4 + classes + extra, N]` output, `extra` rows (mask
/// coefficients, keypoints) following the class scores.
pub(crate) struct Head {
    classes: usize,
    thresholds: Thresholds,
    nms: Nms,
    max: usize,
    candidates: Candidates,
    /// Per anchor: the best class score so far and its class.
    best: Vec<(f32, u16)>,
}

impl Head {
    /// Checks `output` against the strides' anchor count; `extra_text` names the extra rows
    /// in messages (`" + 32"`).
    pub fn new(
        ctx: &Context,
        output: &OutputInfo,
        extra: usize,
        extra_text: &str,
    ) -> Result<Self, DecodeError> {
        let levels = ctx.levels(&ctx.strides(&STRIDES));
        let anchors = total_cells(&levels);
        let expected = format!(
            "[1, 4 + classes{extra_text}, {anchors}] ({} cells)",
            levels_text(&levels)
        );
        let (rows, n) = ctx.rank3(output, &expected)?;
        if n != anchors || rows < 5 + extra {
            return Err(ctx.shape_error(output, expected));
        }
        let classes = rows - 4 - extra;
        ctx.check_classes(classes)?;
        Ok(Self {
            classes,
            thresholds: ctx.thresholds(classes)?,
            nms: ctx.nms(),
            max: ctx.max_detections(),
            candidates: Candidates::new(anchors),
            best: vec![(f32::NEG_INFINITY, 0); anchors],
        })
    }

    /// Number of classes scored.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Number of anchors (columns).
    pub fn anchors(&self) -> usize {
        self.best.len()
    }

    /// Scans `data`, runs NMS and writes the detections to `out`; `kept` gets the anchor of
    /// each one, in order.
    pub fn decode(&mut self, data: &[f32], out: &mut Detections, kept: impl FnMut(u32)) {
        self.candidates.clear();
        let n = self.best.len();
        self.best.fill((f32::NEG_INFINITY, 0));
        // Class-major scan: the layout is channels first, so this reads memory in order.
        for class in 0..self.classes {
            let row = &data[(4 + class) * n..(5 + class) * n];
            for (best, &v) in self.best.iter_mut().zip(row) {
                if v > best.0 {
                    *best = (v, class as u16);
                }
            }
        }
        for (i, &(score, class)) in self.best.iter().enumerate() {
            if score > self.thresholds.of(usize::from(class)) {
                let (cx, cy, w, h) = (data[i], data[n + i], data[2 * n + i], data[3 * n + i]);
                let bbox = BBox {
                    x1: cx - w / 2.0,
                    y1: cy - h / 2.0,
                    x2: cx + w / 2.0,
                    y2: cy + h / 2.0,
                };
                let det = Detection {
                    class_id: class,
                    score,
                    bbox,
                    landmarks: None,
                };
                self.candidates.push_tagged(det, i as u32);
            }
        }
        self.candidates
            .select_tagged(Some(self.nms), self.max, out, kept);
    }
}
