//! YOLOX: one `[1, N, 5 + classes]` output over a grid of strides 8/16/32.
//!
//! Each row is `dx, dy, log w, log h, objectness, class scores...` (sigmoids already
//! applied): centre `(col + dx) * s`, size `exp(log w) * s`, score `objectness * class`.
//! Class-aware NMS takes every class above its threshold, as Megvii's `multiclass_nms`
//! does; class-agnostic NMS takes each anchor's best class.

use super::decode::{
    Context, DecodeError, Decoder, FrameCheck, Level, Thresholds, argmax, levels_text, total_cells,
};
use super::nms::{Candidates, Nms};
use super::{BBox, Detection, Detections, Output};

const STRIDES: [u32; 3] = [8, 16, 32];

pub(crate) struct Yolox {
    frame: FrameCheck,
    levels: Vec<Level>,
    classes: usize,
    thresholds: Thresholds,
    nms: Nms,
    max: usize,
    candidates: Candidates,
}

impl Yolox {
    pub fn new(ctx: &Context) -> Result<Self, DecodeError> {
        ctx.expect_count(1, "[1, anchors, 5 + classes]")?;
        let out = &ctx.outputs[0];
        let levels = ctx.levels(&ctx.strides(&STRIDES));
        let anchors = total_cells(&levels);
        let expected = format!(
            "[1, {anchors}, 5 + classes] ({} cells)",
            levels_text(&levels)
        );
        let (n, row) = ctx.rank3(out, &expected)?;
        if n != anchors || row < 6 {
            return Err(ctx.shape_error(out, expected));
        }
        let classes = row - 5;
        ctx.check_classes(classes)?;
        Ok(Self {
            frame: ctx.frame_check(),
            levels,
            classes,
            thresholds: ctx.thresholds(classes)?,
            nms: ctx.nms(),
            max: ctx.max_detections(),
            candidates: Candidates::new(anchors * if ctx.cfg.class_agnostic { 1 } else { classes }),
        })
    }
}

impl Decoder for Yolox {
    fn decode(&mut self, outputs: &[Output<'_>], out: &mut Detections) -> Result<(), DecodeError> {
        self.frame.check(outputs)?;
        self.candidates.clear();
        let stride = 5 + self.classes;
        let mut rows = outputs[0].data.chunks_exact(stride);
        for level in &self.levels {
            let s = level.stride;
            for gy in 0..level.rows {
                for gx in 0..level.cols {
                    let Some(p) = rows.next() else {
                        unreachable!("frame checked")
                    };
                    let obj = p[4];
                    // Class scores are at most 1, so a weak objectness rules the anchor out
                    // (a NaN one fails every threshold below).
                    if obj <= self.thresholds.min() {
                        continue;
                    }
                    let (cx, cy) = ((p[0] + gx as f32) * s, (p[1] + gy as f32) * s);
                    let (w, h) = (p[2].exp() * s, p[3].exp() * s);
                    let bbox = BBox {
                        x1: cx - w / 2.0,
                        y1: cy - h / 2.0,
                        x2: cx + w / 2.0,
                        y2: cy + h / 2.0,
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
                    let scores = &p[5..];
                    if self.nms.class_agnostic {
                        let (class, best) = argmax(scores);
                        push(class, obj * best);
                    } else {
                        for (class, &c) in scores.iter().enumerate() {
                            push(class, obj * c);
                        }
                    }
                }
            }
        }
        self.candidates.select(Some(self.nms), self.max, out);
        Ok(())
    }
}
