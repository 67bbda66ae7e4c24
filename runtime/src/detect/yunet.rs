//! YuNet faces: per stride `s`, outputs `cls_s`, `obj_s` `[1, N, 1]` (sigmoids applied),
//! `bbox_s` `[1, N, 4]` and `kps_s` `[1, N, 10]`, one anchor point per cell.
//!
//! As OpenCV's `FaceDetectorYN`: score `sqrt(cls * obj)` (both clamped to 0..1), centre
//! `(col + dx) * s`, size `exp(dw) * s`, landmark `n` at `(col + kx) * s, (row + ky) * s`.

use super::decode::{Context, DecodeError, Decoder, FrameCheck, Level, Thresholds, total_cells};
use super::nms::{Candidates, Nms};
use super::{BBox, Detection, Detections, Output};

const STRIDES: [u32; 3] = [8, 16, 32];
const PARTS: [(&str, usize); 4] = [("cls", 1), ("obj", 1), ("bbox", 4), ("kps", 10)];

struct Head {
    level: Level,
    /// Output indices of cls, obj, bbox, kps.
    outputs: [usize; 4],
}

pub(crate) struct Yunet {
    frame: FrameCheck,
    heads: Vec<Head>,
    thresholds: Thresholds,
    nms: Nms,
    max: usize,
    candidates: Candidates,
}

impl Yunet {
    pub fn new(ctx: &Context) -> Result<Self, DecodeError> {
        let levels = ctx.levels(&ctx.strides(&STRIDES));
        ctx.expect_count(
            4 * levels.len(),
            "cls_S, obj_S, bbox_S and kps_S for each stride S",
        )?;
        let mut heads = Vec::with_capacity(levels.len());
        for level in levels {
            let mut outputs = [0; 4];
            for (slot, (part, width)) in outputs.iter_mut().zip(PARTS) {
                let name = format!("{part}_{}", level.stride);
                let expected = format!(
                    "[1, {}, {width}] ({}x{} cells)",
                    level.cells(),
                    level.cols,
                    level.rows
                );
                let i = ctx
                    .outputs
                    .iter()
                    .position(|o| o.name == name)
                    .ok_or_else(|| {
                        ctx.layout_error(format!("no output named `{name}` (expected {expected})"))
                    })?;
                if ctx.outputs[i].shape != [1, level.cells(), width] {
                    return Err(ctx.shape_error(&ctx.outputs[i], expected));
                }
                *slot = i;
            }
            heads.push(Head { level, outputs });
        }
        ctx.check_classes(1)?;
        Ok(Self {
            frame: ctx.frame_check(),
            candidates: Candidates::new(total_cells(
                &heads.iter().map(|h| h.level).collect::<Vec<_>>(),
            )),
            heads,
            thresholds: ctx.thresholds(1)?,
            nms: ctx.nms(),
            max: ctx.max_detections(),
        })
    }
}

impl Decoder for Yunet {
    fn decode(&mut self, outputs: &[Output<'_>], out: &mut Detections) -> Result<(), DecodeError> {
        self.frame.check(outputs)?;
        self.candidates.clear();
        let threshold = self.thresholds.of(0);
        for head in &self.heads {
            let [cls, obj, bbox, kps] = head.outputs.map(|i| outputs[i].data);
            let Level {
                stride: s, cols, ..
            } = head.level;
            for (i, (&c, &o)) in cls.iter().zip(obj).enumerate() {
                let score = (c.clamp(0.0, 1.0) * o.clamp(0.0, 1.0)).sqrt();
                if score.is_nan() || score <= threshold {
                    continue;
                }
                let (col, row) = ((i % cols) as f32, (i / cols) as f32);
                let b = &bbox[4 * i..4 * i + 4];
                let (cx, cy) = ((col + b[0]) * s, (row + b[1]) * s);
                let (w, h) = (b[2].exp() * s, b[3].exp() * s);
                let k = &kps[10 * i..10 * i + 10];
                let landmarks =
                    std::array::from_fn(|n| [(col + k[2 * n]) * s, (row + k[2 * n + 1]) * s]);
                self.candidates.push(Detection {
                    class_id: 0,
                    score,
                    bbox: BBox {
                        x1: cx - w / 2.0,
                        y1: cy - h / 2.0,
                        x2: cx + w / 2.0,
                        y2: cy + h / 2.0,
                    },
                    landmarks: Some(landmarks),
                });
            }
        }
        self.candidates.select(Some(self.nms), self.max, out);
        Ok(())
    }
}
