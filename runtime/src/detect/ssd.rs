//! SSD-style heads with boxes decoded in the graph (UltraFace RFB and slim): `[1, N, C]`
//! softmax scores with the background in column 0, and `[1, N, 4]` boxes `x1, y1, x2, y2`
//! as fractions of the input.
//!
//! Column `c >= 1` is class `c - 1`. Class-aware NMS takes every class above its threshold
//! (UltraFace's `predict` runs `hard_nms` per class); class-agnostic NMS takes each prior's
//! best class.

use super::decode::{Context, DecodeError, Decoder, FrameCheck, Thresholds, argmax};
use super::nms::{Candidates, Nms};
use super::{BBox, Detection, Detections, Output, OutputInfo};

pub(crate) struct Ssd {
    frame: FrameCheck,
    scores: usize,
    boxes: usize,
    columns: usize,
    input_wh: (f32, f32),
    thresholds: Thresholds,
    nms: Nms,
    max: usize,
    candidates: Candidates,
}

impl Ssd {
    pub fn new(ctx: &Context) -> Result<Self, DecodeError> {
        ctx.expect_count(
            2,
            "[1, priors, background + classes] scores and [1, priors, 4] boxes",
        )?;
        let o = ctx.outputs;
        // Names decide when they can (`scores`/`boxes`), else the 4-wide output is the boxes.
        let (scores, boxes) = match (is_boxes(&o[0]), is_boxes(&o[1])) {
            (false, true) => (0, 1),
            (true, false) => (1, 0),
            _ if o[1].shape.last() == Some(&4) => (0, 1),
            _ => (1, 0),
        };
        let (n, columns) = ctx.rank3(&o[scores], "[1, priors, background + classes]")?;
        if columns < 2 {
            return Err(ctx.shape_error(&o[scores], format!("[1, {n}, background + classes]")));
        }
        if o[boxes].shape != [1, n, 4] {
            return Err(ctx.shape_error(&o[boxes], format!("[1, {n}, 4]")));
        }
        let classes = columns - 1;
        ctx.check_classes(classes)?;
        Ok(Self {
            frame: ctx.frame_check(),
            scores,
            boxes,
            columns,
            input_wh: (ctx.input_wh.0 as f32, ctx.input_wh.1 as f32),
            thresholds: ctx.thresholds(classes)?,
            nms: ctx.nms(),
            max: ctx.max_detections(),
            candidates: Candidates::new(n * if ctx.cfg.class_agnostic { 1 } else { classes }),
        })
    }
}

fn is_boxes(o: &OutputInfo) -> bool {
    let n = o.name.to_ascii_lowercase();
    n.contains("box") || n.contains("loc")
}

impl Decoder for Ssd {
    fn decode(&mut self, outputs: &[Output<'_>], out: &mut Detections) -> Result<(), DecodeError> {
        self.frame.check(outputs)?;
        self.candidates.clear();
        let (w, h) = self.input_wh;
        let scores = outputs[self.scores].data.chunks_exact(self.columns);
        let boxes = outputs[self.boxes].data.chunks_exact(4);
        for (s, b) in scores.zip(boxes) {
            let bbox = BBox {
                x1: b[0] * w,
                y1: b[1] * h,
                x2: b[2] * w,
                y2: b[3] * h,
            };
            let mut push = |class: usize, score: f32| {
                if score > self.thresholds.of(class) {
                    self.candidates.push(Detection {
                        class_id: class as u16,
                        score,
                        bbox,
                        landmarks: None,
                    });
                }
            };
            if self.nms.class_agnostic {
                let (class, score) = argmax(&s[1..]);
                push(class, score);
            } else {
                for (class, &score) in s[1..].iter().enumerate() {
                    push(class, score);
                }
            }
        }
        self.candidates.select(Some(self.nms), self.max, out);
        Ok(())
    }
}
