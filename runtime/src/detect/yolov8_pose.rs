//! YOLOv8 / YOLO11 pose: one `[1, 4 + classes + 3K, N]` output, K keypoints per anchor as
//! `x, y` in input pixels and a visibility score (sigmoid applied), after the class scores.
//!
//! Boxes and NMS are YOLOv8's ([`Head`]); keypoints are mapped to the source image as
//! Ultralytics' `scale_coords` does (letterbox undone, clipped to the image).

use super::decode::{Context, DecodeError, Decoder, FrameCheck};
use super::extras::{Extras, Target};
use super::yolov8::Head;
use super::{Detections, MAX_DETECTIONS, Output};

pub(crate) struct Yolov8Pose {
    frame: FrameCheck,
    head: Head,
    keypoints: usize,
    /// The anchor of each detection the last decode kept.
    kept: heapless::Vec<u32, MAX_DETECTIONS>,
}

impl Yolov8Pose {
    pub fn new(ctx: &Context) -> Result<Self, DecodeError> {
        ctx.expect_count(1, "[1, 4 + classes + 3 x keypoints, anchors]")?;
        let out = &ctx.outputs[0];
        let rows = match *out.shape {
            [1, rows, _] => rows,
            _ => 0,
        };
        // Without `num_keypoints`, the classes (default one, a person) say how many rows
        // are keypoints.
        let keypoints = match ctx.cfg.num_keypoints {
            Some(k) => k,
            None => rows.saturating_sub(4 + ctx.cfg.num_classes.unwrap_or(1)) / 3,
        };
        let text = format!(" + 3 x {keypoints}");
        let head = Head::new(ctx, out, 3 * keypoints, &text)?;
        let guessed = ctx.cfg.num_keypoints.is_none() && ctx.cfg.num_classes.is_none();
        if keypoints == 0 || (guessed && head.classes() != 1) {
            return Err(ctx.shape_error(
                out,
                format!(
                    "[1, 4 + 1 + 3 x keypoints, {}] (or set detector.num_keypoints or \
                     detector.num_classes)",
                    head.anchors()
                ),
            ));
        }
        Ok(Self {
            frame: ctx.frame_check(),
            head,
            keypoints,
            kept: heapless::Vec::new(),
        })
    }
}

impl Decoder for Yolov8Pose {
    fn decode(&mut self, outputs: &[Output<'_>], out: &mut Detections) -> Result<(), DecodeError> {
        self.frame.check(outputs)?;
        self.kept.clear();
        let kept = &mut self.kept;
        self.head.decode(outputs[0].data, out, |a| {
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
        let data = outputs[0].data;
        let n = self.head.anchors();
        let first = 4 + self.head.classes();
        for &anchor in self.kept.iter().take(dets.len()) {
            let a = anchor as usize;
            extras.push_keypoints((0..self.keypoints).map(|k| {
                let at = |r: usize| data[(first + 3 * k + r) * n + a];
                let (x, y) = target.point(at(0), at(1));
                [x, y, at(2)]
            }));
        }
        Ok(())
    }
}
