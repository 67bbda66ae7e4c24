//! Agreement measures that fit each family's output, beside the boxes' mAP@0.5: instance and
//! semantic masks by mask IoU, keypoints by mean pixel error, DBNet text regions by region IoU.

use ocelli::detect::{Detections, Extras, Family, Mask};
use serde::Serialize;

/// What a family's outputs are judged by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Metric {
    /// Boxes: mAP@0.5 of the candidate against the reference's detections.
    Map50,
    /// yolov8-seg and semantic: IoU of paired masks.
    MaskIou,
    /// yolov8-pose: pixel distance of paired keypoints.
    KeypointError,
    /// DBNet: IoU of paired text regions.
    RegionIou,
}

impl Metric {
    pub fn of(family: Family) -> Self {
        match family {
            Family::Yolov8Seg | Family::Semantic => Self::MaskIou,
            Family::Yolov8Pose => Self::KeypointError,
            Family::Dbnet => Self::RegionIou,
            _ => Self::Map50,
        }
    }
}

/// A family's own agreement measure, beside mAP@0.5: its value is in one of the three fields.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct FamilyAgreement {
    pub metric: Metric,
    /// Masks (yolov8-seg, semantic): mean IoU of paired masks, unpaired ones counting 0.
    pub mask_iou: Option<f64>,
    /// DBNet text regions: mean IoU of paired regions, unpaired ones counting 0.
    pub region_iou: Option<f64>,
    /// Keypoints (yolov8-pose): mean pixel distance over the points both models see
    /// (score ≥ 0.5) of detections paired at IoU ≥ 0.5; none when no point was compared.
    pub keypoint_error_px: Option<f64>,
}

impl FamilyAgreement {
    /// Whether the measure is within bounds: IoUs of at least `min_iou`, keypoints at most
    /// `max_px` apart (none compared passes: there is nothing to disagree on).
    pub fn within(&self, min_iou: f64, max_px: f64) -> bool {
        self.mask_iou.is_none_or(|v| v >= min_iou)
            && self.region_iou.is_none_or(|v| v >= min_iou)
            && self.keypoint_error_px.is_none_or(|v| v <= max_px)
    }
}

impl FamilyAgreement {
    /// `", "` and the measure, to follow mAP@0.5 in a line; nothing for boxes alone.
    pub fn after_map(&self) -> String {
        match self.to_string() {
            f if f.is_empty() => f,
            f => format!(", {f}"),
        }
    }
}

impl std::fmt::Display for FamilyAgreement {
    /// The measure for people; nothing for boxes alone.
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match (self.mask_iou, self.region_iou, self.keypoint_error_px) {
            (Some(v), _, _) => write!(f, "mask IoU {v:.3}"),
            (_, Some(v), _) => write!(f, "text region IoU {v:.3}"),
            (_, _, Some(v)) => write!(f, "keypoint error {v:.2} px"),
            _ if self.metric == Metric::KeypointError => {
                write!(f, "keypoint error: no point seen by both")
            }
            _ => Ok(()),
        }
    }
}

/// Greedy one-to-one pairs `(overlap, i, j)` of same-class detections of `a` and `b`, best
/// overlap first, keeping those of at least `min` (and above 0).
pub fn pairs(
    a: &Detections,
    b: &Detections,
    min: f64,
    overlap: impl Fn(usize, usize) -> f64,
) -> Vec<(f64, usize, usize)> {
    let mut all = Vec::new();
    for (i, da) in a.iter().enumerate() {
        for (j, db) in b.iter().enumerate() {
            if da.class_id == db.class_id {
                let o = overlap(i, j);
                if o > 0.0 && o >= min {
                    all.push((o, i, j));
                }
            }
        }
    }
    all.sort_by(|x, y| y.0.total_cmp(&x.0));
    let (mut used_a, mut used_b) = (vec![false; a.len()], vec![false; b.len()]);
    all.retain(|&(_, i, j)| {
        let free = !used_a[i] && !used_b[j];
        if free {
            used_a[i] = true;
            used_b[j] = true;
        }
        free
    });
    all
}

/// Mean IoU over images: paired items count their IoU, unpaired ones (either side) count 0.
#[derive(Clone, Copy, Debug, Default)]
pub struct MeanIou {
    sum: f64,
    items: usize,
}

impl MeanIou {
    pub fn add(&mut self, a: &Detections, b: &Detections, iou: impl Fn(usize, usize) -> f64) {
        let p = pairs(a, b, 0.0, iou);
        self.sum += p.iter().map(|x| x.0).sum::<f64>();
        self.items += a.len() + b.len() - p.len();
    }

    /// 1 when neither model found anything.
    pub fn value(&self) -> f64 {
        if self.items == 0 {
            1.0
        } else {
            self.sum / self.items as f64
        }
    }
}

/// IoU of two masks of the same image.
pub fn mask_iou(a: &Mask, b: &Mask) -> f64 {
    let (ra, rb): (Vec<_>, Vec<_>) = (a.runs().collect(), b.runs().collect());
    let (mut i, mut j, mut inter) = (0, 0, 0u64);
    while i < ra.len() && j < rb.len() {
        inter += ra[i]
            .end
            .min(rb[j].end)
            .saturating_sub(ra[i].start.max(rb[j].start));
        if ra[i].end < rb[j].end {
            i += 1;
        } else {
            j += 1;
        }
    }
    let area = |r: &[std::ops::Range<u64>]| r.iter().map(|r| r.end - r.start).sum::<u64>();
    let union = area(&ra) + area(&rb) - inter;
    if union == 0 {
        0.0
    } else {
        inter as f64 / union as f64
    }
}

/// Keypoints whose score is below this are not compared (COCO's invisible points).
pub const VISIBLE: f32 = 0.5;

/// Mean pixel distance between the keypoints of detections paired by box IoU ≥ 0.5, over
/// the points both models see.
#[derive(Clone, Copy, Debug, Default)]
pub struct KeypointError {
    sum: f64,
    pub points: usize,
}

impl KeypointError {
    pub fn add(&mut self, a: &Detections, b: &Detections, extras_a: &Extras, extras_b: &Extras) {
        let iou = |i: usize, j: usize| f64::from(a[i].bbox.iou(&b[j].bbox));
        for (_, i, j) in pairs(a, b, f64::from(crate::eval::IOU), iou) {
            for (p, q) in extras_a.keypoints(i).iter().zip(extras_b.keypoints(j)) {
                if p[2] >= VISIBLE && q[2] >= VISIBLE {
                    self.sum += f64::from((p[0] - q[0]).hypot(p[1] - q[1]));
                    self.points += 1;
                }
            }
        }
    }

    /// None when no keypoint was seen by both.
    pub fn value(&self) -> Option<f64> {
        (self.points > 0).then(|| self.sum / self.points as f64)
    }
}
