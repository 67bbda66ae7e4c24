//! From raw model outputs to detections: family recognition, output checks and the
//! [`Decoder`] each family implements.
//!
//! Decoders work in model-input pixels; mapping back to the source image belongs to the
//! preprocessing that made the input. Every buffer a decoder needs is sized when it is
//! built, so decoding a frame does not allocate.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::extras::{Extras, Target};
use super::labels::Labels;
use super::{DecodeConfig, Detections, Family, MAX_DETECTIONS, Output, OutputInfo};
use super::{
    dbnet, detr, nanodet, semantic, ssd, yolov8, yolov8_pose, yolov8_seg, yolov10, yolox, yunet,
};

/// Turns one frame's raw model outputs into detections in MODEL-INPUT pixel coordinates.
pub trait Decoder: Send {
    fn decode(&mut self, outputs: &[Output<'_>], out: &mut Detections) -> Result<(), DecodeError>;

    /// Writes the masks and keypoints of the detections the last [`decode`](Self::decode)
    /// wrote, in `target` pixels, into `extras` (reset first). `dets` are those detections,
    /// in the same order, already mapped to `target`; a decoder drops the ones whose mask
    /// comes out empty, keeping `extras` parallel to them. `outputs` are the same as for
    /// `decode`. Families without masks or keypoints leave `extras` empty.
    fn extras(
        &mut self,
        outputs: &[Output<'_>],
        target: &Target,
        dets: &mut Detections,
        extras: &mut Extras,
    ) -> Result<(), DecodeError> {
        let _ = (outputs, dets);
        extras.reset(target.width, target.height);
        Ok(())
    }
}

/// Why a decoder could not be built, or a frame could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// An output does not have the shape the family needs. Check `detector.family` against
    /// what `ocelli inspect` recognises, or the strides, class count and input size settings.
    #[error("{family} decoder: output `{output}` has shape {found:?}, expected {expected}")]
    Shape {
        family: Family,
        output: String,
        expected: String,
        found: Vec<usize>,
    },
    /// The outputs, as a whole, do not form the family's layout (an output is missing, or
    /// two could play the same part). The message names what was looked for.
    #[error("{family} decoder: {what}")]
    Layout { family: Family, what: String },
    /// The model scores more classes than the labels name. Give the labels the model was
    /// trained with (`detector.labels`).
    #[error("the model scores {classes} classes but the labels name only {labels}")]
    TooFewLabels { classes: usize, labels: usize },
    /// `detector.class_thresholds` names a label the labels do not have: fix the spelling
    /// or the labels file.
    #[error("detector.class_thresholds: no label `{0}` in the labels")]
    UnknownLabel(String),
    /// A decoding setting is out of range; the message says which and why.
    #[error("detector.{field}: {reason}")]
    Config { field: &'static str, reason: String },
    /// A frame's outputs differ from those the decoder was built for: the model changed
    /// under the decoder. Rebuild the decoder from the loaded model's outputs.
    #[error(
        "output {index} came as `{name}` {found:?} with {len} values; the decoder was built for {expected}"
    )]
    Frame {
        index: usize,
        name: String,
        found: Vec<usize>,
        len: usize,
        expected: String,
    },
    /// A model that reports class ids as values gave one beyond the labels (or
    /// `num_classes`): give the model's labels.
    #[error("output `{output}` reports class {class}, but there are only {classes} classes")]
    ClassOutOfRange {
        output: String,
        class: f32,
        classes: usize,
    },
}

/// Where a grid cell's anchor point sits, for distance-regression heads (nanodet/PicoDet).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AnchorPoint {
    /// `col * s + (s - 1) / 2`: NanoDet (GFL head).
    Nanodet,
    /// `(col + 0.5) * s`: PicoDet.
    Centre,
    /// `col * s`: NanoDet-Plus.
    Corner,
}

impl AnchorPoint {
    pub(crate) fn at(self, cell: usize, stride: f32) -> f32 {
        let c = cell as f32;
        match self {
            AnchorPoint::Nanodet => c * stride + 0.5 * (stride - 1.0),
            AnchorPoint::Centre => (c + 0.5) * stride,
            AnchorPoint::Corner => c * stride,
        }
    }
}

/// How the semantic decoder gives pixels their class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MaskMode {
    /// The class with the highest score: classes do not overlap.
    Argmax,
    /// Every class scoring above `mask_threshold`: classes may overlap.
    Threshold,
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Yolox => "yolox",
            Family::Yolov8 => "yolov8",
            Family::Yolov8Seg => "yolov8-seg",
            Family::Yolov8Pose => "yolov8-pose",
            Family::Yolov10 => "yolov10",
            Family::Nanodet => "nanodet",
            Family::Ssd => "ssd",
            Family::Yunet => "yunet",
            Family::Dbnet => "dbnet",
            Family::Semantic => "semantic",
            Family::Detr => "detr",
        })
    }
}

/// Keypoints of the pose layout `recognise` knows: COCO's person.
const POSE_KEYPOINTS: usize = 17;

/// Recognise the family from output names/shapes; Err(explanation) when ambiguous/unknown.
/// Ok((family, why)) where `why` is one human sentence, printed by `ocelli inspect`.
pub fn recognise(outputs: &[OutputInfo]) -> Result<(Family, String), String> {
    let list = || {
        outputs
            .iter()
            .map(|o| format!("`{}` {:?}", o.name, o.shape))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let unknown = |hint: &str| {
        Err(format!(
            "outputs {} match no known detector layout{hint}; set detector.family",
            list()
        ))
    };
    if outputs.is_empty() {
        return Err("the model has no outputs".into());
    }
    // Every family's tensors have a leading batch dimension of 1.
    if outputs.iter().any(|o| o.shape.first() != Some(&1)) {
        return unknown(" (batch size must be 1)");
    }
    if let [o] = outputs {
        let (name, s) = (&o.name, o.shape.as_slice());
        return match *s {
            [1, 1, h, w] => Ok((
                Family::Dbnet,
                format!(
                    "one output `{name}` [1,1,{h},{w}]: a probability map, the DBNet text layout"
                ),
            )),
            [1, c, h, w] => Ok((
                Family::Semantic,
                format!(
                    "one output `{name}` [1,{c},{h},{w}]: a score map of {c} classes, semantic \
                     segmentation"
                ),
            )),
            // x1,y1,x2,y2,score,class rows. A one-class YOLOX also has 6 columns, but its
            // anchor count over strides 8/16/32 is a multiple of 21 (and 300 is not).
            [1, k, 6] if k % 21 == 0 => Err(format!(
                "one output `{name}` [1,{k},6] fits both a one-class YOLOX and YOLOv10 \
                 (x1,y1,x2,y2,score,class rows); set detector.family"
            )),
            [1, k, 6] => Ok((
                Family::Yolov10,
                format!(
                    "one output `{name}` [1,{k},6]: {k} rows of x1,y1,x2,y2,score,class, the \
                     NMS-free YOLOv10 layout"
                ),
            )),
            // A YOLOX over strides 8/16/32 at a multiple of 32 has a multiple of 21 anchors,
            // and below 1000 only at toy input sizes; DETR queries are 100 to 900.
            [1, q, n] if n > 6 && q > n && q <= 1000 && q % 21 != 0 => {
                Ok((Family::Detr, detr::describe(outputs).unwrap_or_default()))
            }
            [1, n, c] if c >= 6 && n > c => Ok((
                Family::Yolox,
                format!(
                    "one output `{name}` [1,{n},{c}]: {n} anchors x (4 box + objectness + {} \
                     class scores), the YOLOX layout",
                    c - 5
                ),
            )),
            // A 52-class detector has this shape too, but COCO's 17-keypoint pose is the
            // common model.
            [1, c, n] if c == 5 + 3 * POSE_KEYPOINTS && n > c => Ok((
                Family::Yolov8Pose,
                format!(
                    "one output `{name}` [1,{c},{n}]: (4 box + 1 person score + \
                     {POSE_KEYPOINTS} keypoints x (x, y, visibility)) x {n} anchors, the \
                     YOLOv8/YOLO11 pose layout (a 52-class detector needs detector.family = \
                     \"yolov8\")"
                ),
            )),
            [1, c, n] if c >= 5 && n > c => Ok((
                Family::Yolov8,
                format!(
                    "one output `{name}` [1,{c},{n}]: (4 box + {} class scores) x {n} anchors, \
                     the YOLOv8/YOLO11 layout",
                    c - 4
                ),
            )),
            _ => unknown(""),
        };
    }
    // Instance segmentation: boxes with mask coefficients, and the prototypes they weigh.
    if let [a, b] = outputs {
        let (boxes, protos) = if a.shape.len() == 3 { (a, b) } else { (b, a) };
        if let ([1, c, n], [1, m, h, w]) = (boxes.shape.as_slice(), protos.shape.as_slice())
            && n > c
            && *c >= 5 + m
        {
            return Ok((
                Family::Yolov8Seg,
                format!(
                    "outputs `{}` [1,{c},{n}] ((4 box + {} class scores + {m} mask \
                     coefficients) x {n} anchors) and `{}` [1,{m},{h},{w}] (mask prototypes): \
                     the YOLOv8/YOLO11 instance segmentation layout",
                    boxes.name,
                    c - 4 - m,
                    protos.name
                ),
            ));
        }
    }
    // SSD's scores and boxes have the same shapes as DETR's logits and boxes: DETR exports
    // name theirs.
    let detr_names = ["logit", "pred_box", "dets", "label"];
    let named_detr = outputs.iter().any(|o| {
        let name = o.name.to_ascii_lowercase();
        detr_names.iter().any(|n| name.contains(n))
    });
    if named_detr && let Some(why) = detr::describe(outputs) {
        return Ok((Family::Detr, why));
    }
    let rank3: Option<Vec<(usize, usize)>> = outputs
        .iter()
        .map(|o| {
            if let [1, n, c] = *o.shape {
                Some((n, c))
            } else {
                None
            }
        })
        .collect();
    let Some(dims) = rank3 else {
        return unknown("");
    };

    let yunet_parts = ["cls_", "obj_", "bbox_", "kps_"];
    let is_yunet = outputs.len().is_multiple_of(4)
        && outputs
            .iter()
            .all(|o| yunet_parts.iter().any(|p| o.name.starts_with(p)))
        && yunet_parts
            .iter()
            .all(|p| outputs.iter().filter(|o| o.name.starts_with(p)).count() == outputs.len() / 4);
    if is_yunet {
        return Ok((
            Family::Yunet,
            format!(
                "{} outputs cls_*/obj_*/bbox_*/kps_* over {} strides: the YuNet face layout with \
                 five landmarks",
                outputs.len(),
                outputs.len() / 4
            ),
        ));
    }

    if let [(n1, c1), (n2, c2)] = dims[..]
        && n1 == n2
        && (c1 == 4) != (c2 == 4)
    {
        let (boxes, scores) = if c1 == 4 { (0, 1) } else { (1, 0) };
        let classes = dims[scores].1 - 1;
        return Ok((
            Family::Ssd,
            format!(
                "outputs `{}` [1,{n1},{}] and `{}` [1,{n1},4]: per-prior scores (background + \
                 {classes}) and decoded boxes, the SSD/UltraFace layout",
                outputs[scores].name, dims[scores].1, outputs[boxes].name
            ),
        ));
    }

    // GFL heads: per stride, one [1,N,classes] and one [1,N,4*(reg_max+1)] output.
    let bins = 4 * (nanodet::DEFAULT_REG_MAX + 1);
    let pairs_up = outputs.len().is_multiple_of(2)
        && dims
            .iter()
            .all(|&(n, _)| dims.iter().filter(|d| d.0 == n).count() == 2)
        && dims.iter().filter(|d| d.1 == bins).count() >= outputs.len() / 2;
    if pairs_up {
        let classes = dims
            .iter()
            .map(|d| d.1)
            .find(|&c| c != bins)
            .unwrap_or(bins);
        return Ok((
            Family::Nanodet,
            format!(
                "{} outputs in {} pairs of [1,N,{classes}] class scores and [1,N,{bins}] box \
                 distributions: the NanoDet/PicoDet GFL layout",
                outputs.len(),
                outputs.len() / 2
            ),
        ));
    }
    unknown("")
}

/// Checks the outputs fit the family (clear error naming the output, expected vs found shape)
/// and builds its decoder. `input_wh` = model input width/height in pixels; `labels` resolves
/// `cfg.class_thresholds` (unknown label → error) and bounds class ids.
pub fn decoder_for(
    family: Family,
    cfg: &DecodeConfig,
    input_wh: (usize, usize),
    outputs: &[OutputInfo],
    labels: &Labels,
) -> Result<Box<dyn Decoder>, DecodeError> {
    check_config(cfg)?;
    if input_wh.0 == 0 || input_wh.1 == 0 {
        return Err(DecodeError::Config {
            field: "input",
            reason: format!("the model input is {}x{} pixels", input_wh.0, input_wh.1),
        });
    }
    let ctx = Context {
        family,
        cfg,
        input_wh,
        outputs,
        labels,
    };
    Ok(match family {
        Family::Yolox => Box::new(yolox::Yolox::new(&ctx)?),
        Family::Yolov8 => Box::new(yolov8::Yolov8::new(&ctx)?),
        Family::Yolov8Seg => Box::new(yolov8_seg::Yolov8Seg::new(&ctx)?),
        Family::Yolov8Pose => Box::new(yolov8_pose::Yolov8Pose::new(&ctx)?),
        Family::Yolov10 => Box::new(yolov10::Yolov10::new(&ctx)?),
        Family::Nanodet => Box::new(nanodet::Nanodet::new(&ctx)?),
        Family::Ssd => Box::new(ssd::Ssd::new(&ctx)?),
        Family::Yunet => Box::new(yunet::Yunet::new(&ctx)?),
        Family::Dbnet => Box::new(dbnet::Dbnet::new(&ctx)?),
        Family::Semantic => Box::new(semantic::Semantic::new(&ctx)?),
        Family::Detr => Box::new(detr::Detr::new(&ctx)?),
    })
}

fn check_config(cfg: &DecodeConfig) -> Result<(), DecodeError> {
    let bad = |field, reason: String| Err(DecodeError::Config { field, reason });
    if !(0.0..=1.0).contains(&cfg.nms_iou) {
        return bad("nms_iou", format!("{} is not within 0..=1", cfg.nms_iou));
    }
    if !cfg.score_threshold.is_finite() {
        return bad(
            "score_threshold",
            format!("{} is not a number", cfg.score_threshold),
        );
    }
    if let Some((label, t)) = cfg.class_thresholds.iter().find(|(_, t)| !t.is_finite()) {
        return bad(
            "class_thresholds",
            format!("`{label}` = {t} is not a number"),
        );
    }
    if !(cfg.polygon_tolerance >= 0.0 && cfg.polygon_tolerance.is_finite()) {
        return bad(
            "polygon_tolerance",
            format!("{} is not a distance in pixels", cfg.polygon_tolerance),
        );
    }
    if cfg.max_detections == 0 {
        return bad("max_detections", "0 would report nothing".into());
    }
    if cfg.strides.contains(&0) {
        return bad("strides", format!("{:?} contains 0", cfg.strides));
    }
    if cfg.num_classes == Some(0) {
        return bad("num_classes", "a detector scores at least one class".into());
    }
    if cfg.num_keypoints == Some(0) {
        return bad(
            "num_keypoints",
            "a pose model gives at least one keypoint".into(),
        );
    }
    if cfg.reg_max == Some(0) {
        return bad(
            "reg_max",
            "a distribution needs at least two bins (reg_max >= 1)".into(),
        );
    }
    Ok(())
}

/// What every family's constructor gets.
pub(crate) struct Context<'a> {
    pub family: Family,
    pub cfg: &'a DecodeConfig,
    pub input_wh: (usize, usize),
    pub outputs: &'a [OutputInfo],
    pub labels: &'a Labels,
}

impl Context<'_> {
    pub fn shape_error(&self, output: &OutputInfo, expected: impl Into<String>) -> DecodeError {
        DecodeError::Shape {
            family: self.family,
            output: output.name.clone(),
            expected: expected.into(),
            found: output.shape.clone(),
        }
    }

    pub fn layout_error(&self, what: impl Into<String>) -> DecodeError {
        DecodeError::Layout {
            family: self.family,
            what: what.into(),
        }
    }

    /// Fails unless the model has exactly `n` outputs.
    pub fn expect_count(&self, n: usize, what: &str) -> Result<(), DecodeError> {
        if self.outputs.len() == n {
            return Ok(());
        }
        let found: Vec<String> = self
            .outputs
            .iter()
            .map(|o| format!("`{}` {:?}", o.name, o.shape))
            .collect();
        Err(self.layout_error(format!(
            "expected {n} output(s) ({what}), found {}: {}",
            self.outputs.len(),
            found.join(", ")
        )))
    }

    /// The `[1, a, b]` dimensions of a rank-3 output, or a shape error.
    pub fn rank3(
        &self,
        output: &OutputInfo,
        expected: &str,
    ) -> Result<(usize, usize), DecodeError> {
        match *output.shape {
            [1, a, b] => Ok((a, b)),
            _ => Err(self.shape_error(output, expected)),
        }
    }

    /// The configured strides, or the family's.
    pub fn strides(&self, default: &[u32]) -> Vec<u32> {
        if self.cfg.strides.is_empty() {
            default.to_vec()
        } else {
            self.cfg.strides.clone()
        }
    }

    /// Feature-map levels for grid heads: convolutions round partial cells up.
    pub fn levels(&self, strides: &[u32]) -> Vec<Level> {
        let (w, h) = self.input_wh;
        strides
            .iter()
            .map(|&s| Level {
                stride: s as f32,
                cols: w.div_ceil(s as usize),
                rows: h.div_ceil(s as usize),
            })
            .collect()
    }

    /// Fails when `cfg.num_classes` contradicts what the output shape says.
    pub fn check_classes(&self, from_shape: usize) -> Result<(), DecodeError> {
        match self.cfg.num_classes {
            Some(n) if n != from_shape => Err(DecodeError::Config {
                field: "num_classes",
                reason: format!("{n} set, but the outputs score {from_shape} classes"),
            }),
            _ => Ok(()),
        }
    }

    pub fn thresholds(&self, classes: usize) -> Result<Thresholds, DecodeError> {
        Thresholds::new(self.cfg, self.labels, classes)
    }

    pub fn nms(&self) -> super::nms::Nms {
        super::nms::Nms {
            iou: self.cfg.nms_iou,
            class_agnostic: self.cfg.class_agnostic,
        }
    }

    pub fn max_detections(&self) -> usize {
        self.cfg.max_detections.min(MAX_DETECTIONS)
    }

    pub fn frame_check(&self) -> FrameCheck {
        FrameCheck(self.outputs.to_vec())
    }
}

/// One level of a multi-stride grid head.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Level {
    pub stride: f32,
    pub cols: usize,
    pub rows: usize,
}

impl Level {
    pub fn cells(&self) -> usize {
        self.cols * self.rows
    }
}

pub(crate) fn total_cells(levels: &[Level]) -> usize {
    levels.iter().map(Level::cells).sum()
}

/// `[a, b, ...]` for messages.
pub(crate) fn levels_text(levels: &[Level]) -> String {
    let cells: Vec<String> = levels
        .iter()
        .map(|l| format!("{}x{}", l.cols, l.rows))
        .collect();
    cells.join(" + ")
}

/// The outputs a decoder was built for; each frame is checked against them so that indexing
/// into the data cannot go out of bounds.
pub(crate) struct FrameCheck(Vec<OutputInfo>);

impl FrameCheck {
    pub fn check(&self, outputs: &[Output<'_>]) -> Result<(), DecodeError> {
        let n = self.0.len().max(outputs.len());
        for index in 0..n {
            let (want, got) = (self.0.get(index), outputs.get(index));
            let fits = match (want, got) {
                (Some(w), Some(g)) => {
                    *w.shape == *g.shape && g.data.len() == w.shape.iter().product::<usize>()
                }
                _ => false,
            };
            if !fits {
                return Err(DecodeError::Frame {
                    index,
                    name: got.map_or("<missing>".into(), |g| g.name.to_string()),
                    found: got.map_or(Vec::new(), |g| g.shape.to_vec()),
                    len: got.map_or(0, |g| g.data.len()),
                    expected: want.map_or("no output".into(), |w| {
                        format!("`{}` {:?}", w.name, w.shape)
                    }),
                });
            }
        }
        Ok(())
    }
}

/// Per-class score thresholds: `score_threshold`, overridden by label in `class_thresholds`.
pub(crate) struct Thresholds {
    per_class: Vec<f32>,
    min: f32,
}

impl Thresholds {
    /// `classes` is how many classes the model scores; they must all have a label.
    fn new(cfg: &DecodeConfig, labels: &Labels, classes: usize) -> Result<Self, DecodeError> {
        if classes > labels.len() {
            return Err(DecodeError::TooFewLabels {
                classes,
                labels: labels.len(),
            });
        }
        let mut per_class = vec![cfg.score_threshold; labels.len()];
        for (label, &t) in &cfg.class_thresholds {
            let id = labels
                .id(label)
                .ok_or_else(|| DecodeError::UnknownLabel(label.clone()))?;
            per_class[usize::from(id)] = t;
        }
        let min = per_class
            .iter()
            .take(classes.max(1))
            .copied()
            .fold(f32::INFINITY, f32::min);
        Ok(Self { per_class, min })
    }

    /// The threshold a score of `class` must exceed.
    #[inline]
    pub fn of(&self, class: usize) -> f32 {
        self.per_class[class]
    }

    /// The lowest threshold of any class the model scores: below it nothing is kept.
    #[inline]
    pub fn min(&self) -> f32 {
        self.min
    }
}

/// Index and value of the largest score (the first one on ties).
pub(crate) fn argmax(scores: &[f32]) -> (usize, f32) {
    scores
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 { (i, v) } else { best }
        })
}

#[inline]
pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}
