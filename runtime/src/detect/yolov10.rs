//! YOLOv10 end-to-end: one `[1, K, 6]` output of `x1, y1, x2, y2, score, class` rows in
//! input pixels, already deduplicated by the model (no NMS here).

use super::decode::{Context, DecodeError, Decoder, FrameCheck, Thresholds};
use super::nms::Candidates;
use super::{BBox, Detection, Detections, Output};

pub(crate) struct Yolov10 {
    frame: FrameCheck,
    /// Class ids at or above this are errors.
    classes: usize,
    thresholds: Thresholds,
    max: usize,
    candidates: Candidates,
}

impl Yolov10 {
    pub fn new(ctx: &Context) -> Result<Self, DecodeError> {
        ctx.expect_count(1, "[1, K, 6]")?;
        let out = &ctx.outputs[0];
        let (k, row) = ctx.rank3(out, "[1, K, 6]")?;
        if row != 6 {
            return Err(ctx.shape_error(out, "[1, K, 6]"));
        }
        // Class ids are values here, so only the labels (or `num_classes`) bound them.
        let classes = ctx.cfg.num_classes.unwrap_or(ctx.labels.len());
        Ok(Self {
            frame: ctx.frame_check(),
            classes,
            thresholds: ctx.thresholds(classes)?,
            max: ctx.max_detections(),
            candidates: Candidates::new(k),
        })
    }
}

impl Decoder for Yolov10 {
    fn decode(&mut self, outputs: &[Output<'_>], out: &mut Detections) -> Result<(), DecodeError> {
        self.frame.check(outputs)?;
        self.candidates.clear();
        for r in outputs[0].data.chunks_exact(6) {
            let (score, class) = (r[4], r[5]);
            if score.is_nan() || score <= self.thresholds.min() {
                continue;
            }
            let id = class as usize;
            if !(class >= 0.0 && class.fract() == 0.0 && id < self.classes) {
                return Err(DecodeError::ClassOutOfRange {
                    output: outputs[0].name.into(),
                    class,
                    classes: self.classes,
                });
            }
            if score > self.thresholds.of(id) {
                let bbox = BBox {
                    x1: r[0],
                    y1: r[1],
                    x2: r[2],
                    y2: r[3],
                };
                self.candidates.push(Detection {
                    class_id: id as u16,
                    score,
                    bbox,
                    landmarks: None,
                });
            }
        }
        self.candidates.select(None, self.max, out);
        Ok(())
    }
}
