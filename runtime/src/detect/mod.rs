//! Detectors: an ONNX model run by tract, its preprocessing and its family's decoder.

use serde::{Deserialize, Serialize};

pub mod classify;
pub mod decode;
pub mod extras;
pub mod labels;
pub mod nms;

mod dbnet;
mod detr;
mod nanodet;
mod polygons;
mod semantic;
mod ssd;
mod yolov10;
mod yolov8;
mod yolov8_pose;
mod yolov8_seg;
mod yolox;
mod yunet;

pub use decode::{AnchorPoint, DecodeError, Decoder, MaskMode, decoder_for, recognise};
pub use extras::{Classified, Extras, Mask, Polygons, Target};
pub use labels::Labels;

/// Most detections kept per frame; the rest are dropped (lowest scores first) and counted.
pub const MAX_DETECTIONS: usize = 256;

/// An axis-aligned box, corners in pixels (`x2 > x1`, `y2 > y1`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct BBox {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
}

impl BBox {
    pub fn area(&self) -> f32 {
        (self.x2 - self.x1).max(0.0) * (self.y2 - self.y1).max(0.0)
    }

    pub fn iou(&self, o: &BBox) -> f32 {
        let iw = (self.x2.min(o.x2) - self.x1.max(o.x1)).max(0.0);
        let ih = (self.y2.min(o.y2) - self.y1.max(o.y1)).max(0.0);
        let inter = iw * ih;
        let union = self.area() + o.area() - inter;
        if union > 0.0 { inter / union } else { 0.0 }
    }
}

/// One detected object.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Detection {
    pub class_id: u16,
    pub score: f32,
    pub bbox: BBox,
    /// Five facial landmarks (eyes, nose, mouth corners) for face families.
    pub landmarks: Option<[[f32; 2]; 5]>,
}

/// The per-frame detection list: fixed capacity, no allocation per frame.
pub type Detections = heapless::Vec<Detection, MAX_DETECTIONS>;

/// The output layouts Ocelli decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Yolox,
    Yolov8,
    /// YOLOv8/YOLO11 instance segmentation: boxes with mask coefficients, and prototypes.
    #[serde(rename = "yolov8-seg")]
    Yolov8Seg,
    /// YOLOv8/YOLO11 pose: boxes with keypoints.
    #[serde(rename = "yolov8-pose")]
    Yolov8Pose,
    Yolov10,
    Nanodet,
    Ssd,
    Yunet,
    Dbnet,
    /// Any per-pixel class score map: one region per connected area of a class.
    Semantic,
    /// End-to-end query-based transformer detectors (DETR, RT-DETR, D-FINE, DEIM, RF-DETR).
    Detr,
}

/// A model output as the decoders see it: a name, a shape and row-major f32 data.
#[derive(Clone, Copy, Debug)]
pub struct Output<'a> {
    pub name: &'a str,
    pub shape: &'a [usize],
    pub data: &'a [f32],
}

/// A model output's name and concrete shape, known once the model is loaded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OutputInfo {
    pub name: String,
    pub shape: Vec<usize>,
}

/// The decoding settings that come from the `[detector]` table of the config.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecodeConfig {
    /// Minimum score to keep a detection.
    pub score_threshold: f32,
    /// Per-class minimum scores, by label, overriding `score_threshold`.
    pub class_thresholds: std::collections::BTreeMap<String, f32>,
    /// IoU above which NMS suppresses the lower-scored box.
    pub nms_iou: f32,
    /// NMS across classes instead of within each class.
    pub class_agnostic: bool,
    /// Most detections reported per frame (at most `MAX_DETECTIONS`).
    pub max_detections: usize,
    /// Feature-map strides for grid families (yolox, nanodet, yunet); empty means the family default.
    pub strides: Vec<u32>,
    /// Number of classes, where the output shape does not say it (nanodet/PicoDet heads).
    pub num_classes: Option<usize>,
    /// Distribution bins per box side minus one (GFL's `reg_max`), for nanodet/PicoDet.
    pub reg_max: Option<usize>,
    /// nanodet/PicoDet: the class outputs are logits and need a sigmoid.
    pub sigmoid_scores: bool,
    /// detr: the class logits are softmax-scored with a last "no object" class (DETR); by
    /// default they are sigmoid-scored (RT-DETR, D-FINE, RF-DETR).
    pub softmax_scores: bool,
    /// nanodet/PicoDet: where a grid cell's anchor point sits; `None` means NanoDet's.
    pub anchor_point: Option<AnchorPoint>,
    /// dbnet: probability above which a pixel is text; semantic (threshold mode): score
    /// above which a pixel belongs to a class.
    pub mask_threshold: f32,
    /// dbnet: unclip ratio applied to each region's box.
    pub unclip_ratio: f32,
    /// semantic: how pixels get their class; `None` is argmax over several classes and
    /// threshold for a single-class map.
    pub mask_mode: Option<MaskMode>,
    /// semantic: the label whose pixels are no object (no regions are made of them).
    pub background: Option<String>,
    /// yolov8-pose: keypoints per detection; `None` takes them from the output shape with
    /// `num_classes` (default 1) classes.
    pub num_keypoints: Option<usize>,
    /// yolov8-seg, semantic, dbnet: side in pixels of the elliptical element that opens masks
    /// (removes specks and thin spurs) before they are encoded or split; 0 = no opening.
    pub mask_open: usize,
    /// yolov8-seg, semantic, dbnet: side of the element that then closes masks (fills
    /// pinholes and narrow gaps); 0 = no closing.
    pub mask_close: usize,
    /// yolov8-seg, semantic: connected parts of a mask with fewer source-image pixels are
    /// removed; a detection whose mask ends empty is dropped.
    pub mask_min_area: u32,
    /// yolov8-seg, semantic: masks also go out as polygons, the outer contour of each part.
    pub mask_polygons: bool,
    /// With `mask_polygons`: how far in pixels a polygon may stray from the mask's outline
    /// (Douglas–Peucker); 0 keeps every corner.
    pub polygon_tolerance: f32,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        Self {
            score_threshold: 0.3,
            class_thresholds: Default::default(),
            nms_iou: 0.45,
            class_agnostic: false,
            max_detections: 100,
            strides: Vec::new(),
            num_classes: None,
            reg_max: None,
            sigmoid_scores: false,
            softmax_scores: false,
            anchor_point: None,
            mask_threshold: 0.3,
            unclip_ratio: 1.6,
            mask_mode: None,
            background: None,
            num_keypoints: None,
            mask_open: 0,
            mask_close: 0,
            mask_min_area: 0,
            mask_polygons: false,
            polygon_tolerance: 1.0,
        }
    }
}

pub mod model;

pub use model::{
    DetectError, DetectTimes, Detector, Fitted, Inferred, ModelInfo, load_plan,
    load_plan_from_bytes,
};
