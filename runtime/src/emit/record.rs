//! One frame's results as a JSON line, written into a reused buffer.
//!
//! Every input is borrowed and serialisation goes straight into the caller's `Vec<u8>`, so once
//! the buffer has grown to the longest line, writing a record allocates nothing.

use serde::Serialize;
use serde::ser::{SerializeSeq, SerializeStruct, Serializer};

use crate::detect::{BBox, Classified, Detection, Extras, Mask, Polygons};
use crate::track::ZoneName;

/// The `schema` number of every line; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// Time each stage spent on the frame, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StageLatency {
    pub capture: u32,
    pub preprocess: u32,
    pub inference: u32,
    pub postprocess: u32,
}

/// Whether the detector ran on this frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Inference {
    #[default]
    Ran,
    /// The motion gate found too little change: `detections` is empty because nothing was looked
    /// for, not because nothing was there.
    Skipped,
}

/// What the motion detector saw, in source-image pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Motion<'a> {
    /// Fraction of the image that changed, in `[0, 1]`.
    pub area: f32,
    pub regions: &'a [BBox],
}

/// The state of the camera feeding the pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceState {
    Ok,
    Lost,
    Reconnecting,
}

/// The camera's state and how often it had to be reopened since start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SourceStatus {
    pub state: SourceState,
    pub reconnects: u32,
    /// Frames dropped since start because they could not be decoded or converted (truncated,
    /// corrupt, or of the wrong size for their format).
    pub bad_frames: u64,
}

/// A change first seen on this frame, for consumers that want edges rather than levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The class is detected on this frame and was not on the previous one.
    Appeared {
        class_id: u16,
    },
    /// The class was detected on the previous frame and is not on this one.
    Vanished {
        class_id: u16,
    },
    MotionStarted,
    MotionStopped,
    SourceLost,
    SourceRestored,
    /// A track was confirmed (`zone: None`), or its anchor point moved into `zone`.
    Enter {
        track_id: u32,
        class_id: u16,
        zone: Option<ZoneName>,
    },
    /// A track ended, unseen for too long (`zone: None`), or its anchor point left `zone`.
    Exit {
        track_id: u32,
        class_id: u16,
        zone: Option<ZoneName>,
    },
}

/// One detector's model, as the `models` line names it.
#[derive(Clone, Debug, Serialize)]
pub struct RunningModel {
    pub detector: String,
    pub model: String,
    pub sha256: String,
    /// The model's card, when one sits beside it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub card: Option<String>,
}

/// The `models` line: which model file each detector runs (by sha256, with its card), so that
/// a consumer knows which model produced a detection.
pub fn models_line(models: &[RunningModel]) -> Vec<u8> {
    #[derive(Serialize)]
    struct Line<'a> {
        schema: u32,
        r#type: &'static str,
        detectors: &'a [RunningModel],
    }
    let mut buf = Vec::new();
    write_json_line(
        &Line {
            schema: SCHEMA_VERSION,
            r#type: "models",
            detectors: models,
        },
        &mut buf,
    );
    buf
}

/// A line sent while the camera is away: no frame, only the source's state.
#[derive(Clone, Copy, Debug)]
pub struct SourceNotice<'a> {
    pub status: SourceStatus,
    /// Reopening attempts since this loss.
    pub attempt: u32,
    /// Wait before the next attempt.
    pub retry_in_ms: u64,
    /// Why the camera was lost, or why the last attempt failed.
    pub error: &'a str,
}

impl SourceNotice<'_> {
    /// Replaces `buf`'s contents with this notice as one JSON line, newline included.
    pub fn write_line(&self, buf: &mut Vec<u8>) {
        write_json_line(self, buf);
    }
}

/// Replaces `buf`'s contents with `value` as one JSON line; no allocation once `buf` has grown.
fn write_json_line(value: &impl Serialize, buf: &mut Vec<u8>) {
    buf.clear();
    serde_json::to_writer(&mut *buf, value).expect("writing JSON into a Vec cannot fail");
    buf.push(b'\n');
}

impl Serialize for SourceNotice<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("SourceNotice", 8)?;
        m.serialize_field("schema", &SCHEMA_VERSION)?;
        m.serialize_field("type", "source")?;
        m.serialize_field("state", &self.status.state)?;
        m.serialize_field("reconnects", &self.status.reconnects)?;
        m.serialize_field("bad_frames", &self.status.bad_frames)?;
        m.serialize_field("attempt", &self.attempt)?;
        m.serialize_field("retry_in_ms", &self.retry_in_ms)?;
        m.serialize_field("error", self.error)?;
        m.end()
    }
}

/// One frame's results, borrowing everything it reports.
#[derive(Clone, Copy, Debug)]
pub struct FrameRecord<'a> {
    /// Increases by one per frame the pipeline handled, from 0 at start.
    pub frame_id: u64,
    /// The capture timestamp the source gave the frame, in microseconds.
    pub timestamp_us: u64,
    /// Source image size, the coordinate space of every box.
    pub width: u32,
    pub height: u32,
    pub latency: StageLatency,
    pub inference: Inference,
    pub detections: &'a [Detection],
    /// Masks and keypoints of the detections (entry `i` for detection `i`); `None` when no
    /// detector gives any.
    pub extras: Option<&'a Extras>,
    /// Detections cut by the per-frame bound.
    pub dropped_detections: u32,
    /// Label of each class id; ids past the end are named `class_<id>`.
    pub labels: &'a [String],
    /// The second-stage classifiers' names, in config order.
    pub classifiers: &'a [String],
    /// Detections a classifier would have cropped but for its per-frame budget.
    pub unclassified: u32,
    pub motion: Option<Motion<'a>>,
    pub source: Option<SourceStatus>,
    pub events: &'a [Event],
}

impl FrameRecord<'_> {
    /// Replaces `buf`'s contents with this record as one JSON line, newline included.
    pub fn write_line(&self, buf: &mut Vec<u8>) {
        write_json_line(self, buf);
    }
}

impl Serialize for FrameRecord<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("FrameRecord", 14)?;
        m.serialize_field("schema", &SCHEMA_VERSION)?;
        m.serialize_field("type", "frame")?;
        m.serialize_field("frame_id", &self.frame_id)?;
        m.serialize_field("timestamp_us", &self.timestamp_us)?;
        m.serialize_field("width", &self.width)?;
        m.serialize_field("height", &self.height)?;
        m.serialize_field("inference", &self.inference)?;
        m.serialize_field("latency_us", &self.latency)?;
        let labels = Labels(self.labels);
        m.serialize_field(
            "detections",
            &Dets {
                dets: self.detections,
                extras: self.extras,
                labels,
                classifiers: self.classifiers,
            },
        )?;
        m.serialize_field("dropped_detections", &self.dropped_detections)?;
        match self.classifiers.is_empty() {
            true => m.skip_field("unclassified")?,
            false => m.serialize_field("unclassified", &self.unclassified)?,
        }
        match &self.motion {
            Some(motion) => m.serialize_field("motion", motion)?,
            None => m.skip_field("motion")?,
        }
        match &self.source {
            Some(source) => m.serialize_field("source_status", source)?,
            None => m.skip_field("source_status")?,
        }
        m.serialize_field(
            "events",
            &Events {
                events: self.events,
                labels,
            },
        )?;
        m.end()
    }
}

/// Rounds to `1 / scale` so lines stay short (detectors are not sub-pixel accurate), turns -0 into
/// 0, and maps non-finite values to 0: a consumer must never meet `null` where a number is promised.
fn quantize(x: f32, scale: f32) -> f32 {
    if x.is_finite() {
        (x * scale).round() / scale + 0.0
    } else {
        0.0
    }
}

const PIXEL: f32 = 10.0;
const SCORE: f32 = 1000.0;
const FRACTION: f32 = 10000.0;

#[derive(Clone, Copy)]
struct Labels<'a>(&'a [String]);

impl Labels<'_> {
    fn serialize_label<S: SerializeStruct>(
        &self,
        m: &mut S,
        class_id: u16,
    ) -> Result<(), S::Error> {
        match self.0.get(usize::from(class_id)) {
            Some(label) => m.serialize_field("label", label.as_str()),
            None => m.serialize_field("label", &Unnamed(class_id)),
        }
    }
}

/// `class_<id>`, formatted straight into the output.
struct Unnamed(u16);

impl Serialize for Unnamed {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("class_{}", self.0))
    }
}

struct Point([f32; 2]);

impl Serialize for Point {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let [x, y] = self.0;
        [quantize(x, PIXEL), quantize(y, PIXEL)].serialize(s)
    }
}

struct Corners(BBox);

impl Serialize for Corners {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let b = self.0;
        [b.x1, b.y1, b.x2, b.y2]
            .map(|v| quantize(v, PIXEL))
            .serialize(s)
    }
}

struct Landmarks([[f32; 2]; 5]);

impl Serialize for Landmarks {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(5))?;
        for p in self.0 {
            seq.serialize_element(&Point(p))?;
        }
        seq.end()
    }
}

struct Dets<'a> {
    dets: &'a [Detection],
    extras: Option<&'a Extras>,
    labels: Labels<'a>,
    classifiers: &'a [String],
}

impl Serialize for Dets<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.dets.len()))?;
        for (i, &det) in self.dets.iter().enumerate() {
            seq.serialize_element(&Det {
                det,
                mask: self.extras.and_then(|e| e.mask(i)),
                track_id: self.extras.and_then(|e| e.track_id(i)),
                polygons: self.extras.and_then(|e| e.polygons(i)),
                keypoints: self.extras.map_or(&[], |e| e.keypoints(i)),
                classes: Classes {
                    classes: self.extras.map_or(&[], |e| e.classes(i)),
                    labels: self.labels,
                    classifiers: self.classifiers,
                },
                labels: self.labels,
            })?;
        }
        seq.end()
    }
}

struct Det<'a> {
    det: Detection,
    mask: Option<Mask<'a>>,
    track_id: Option<u32>,
    polygons: Option<Polygons<'a>>,
    keypoints: &'a [[f32; 3]],
    classes: Classes<'a>,
    labels: Labels<'a>,
}

/// A detection's classifier labels: `[{"classifier", "label", "score"}]`.
struct Classes<'a> {
    classes: &'a [Classified],
    labels: Labels<'a>,
    classifiers: &'a [String],
}

impl Serialize for Classes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct One<'a>(&'a Classes<'a>, Classified);
        impl Serialize for One<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let (c, one) = (self.0, self.1);
                let mut m = s.serialize_struct("Classified", 3)?;
                let name = c.classifiers.get(usize::from(one.classifier));
                m.serialize_field("classifier", name.map_or("?", String::as_str))?;
                c.labels.serialize_label(&mut m, one.label)?;
                m.serialize_field("score", &quantize(one.score, SCORE))?;
                m.end()
            }
        }
        s.collect_seq(self.classes.iter().map(|&one| One(self, one)))
    }
}

impl Serialize for Det<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let d = &self.det;
        let mut m = s.serialize_struct("Detection", 11)?;
        m.serialize_field("class_id", &d.class_id)?;
        self.labels.serialize_label(&mut m, d.class_id)?;
        m.serialize_field("score", &quantize(d.score, SCORE))?;
        m.serialize_field("box", &Corners(d.bbox))?;
        match self.track_id {
            Some(id) => m.serialize_field("track_id", &id)?,
            None => m.skip_field("track_id")?,
        }
        match d.landmarks {
            Some(points) => m.serialize_field("landmarks", &Landmarks(points))?,
            None => m.skip_field("landmarks")?,
        }
        match &self.mask {
            Some(mask) => {
                m.serialize_field("mask", &Rle(mask))?;
                m.serialize_field("area", &mask.area)?;
                m.serialize_field("centroid", &Point(mask.centroid))?;
            }
            None => {
                m.skip_field("mask")?;
                m.skip_field("area")?;
                m.skip_field("centroid")?;
            }
        }
        match &self.polygons {
            Some(p) => m.serialize_field("polygons", &CocoPolygons(p))?,
            None => m.skip_field("polygons")?,
        }
        if self.keypoints.is_empty() {
            m.skip_field("keypoints")?;
        } else {
            m.serialize_field("keypoints", &Keypoints(self.keypoints))?;
        }
        if self.classes.classes.is_empty() {
            m.skip_field("classes")?;
        } else {
            m.serialize_field("classes", &self.classes)?;
        }
        m.end()
    }
}

/// COCO's uncompressed RLE: `{"size": [height, width], "counts": [...]}`.
struct Rle<'a>(&'a Mask<'a>);

impl Serialize for Rle<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("Rle", 2)?;
        m.serialize_field("size", &self.0.size)?;
        m.serialize_field("counts", self.0.counts)?;
        m.end()
    }
}

/// COCO's polygons: per part, its corners flattened, `[x0, y0, x1, y1, ...]`.
struct CocoPolygons<'a>(&'a Polygons<'a>);

impl Serialize for CocoPolygons<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Flat<'a>(&'a [[u32; 2]]);
        impl Serialize for Flat<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.iter().flatten())
            }
        }
        s.collect_seq(self.0.iter().map(Flat))
    }
}

/// `[x, y, score]` per keypoint.
struct Keypoints<'a>(&'a [[f32; 3]]);

impl Serialize for Keypoints<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|&[x, y, score]| {
            [
                quantize(x, PIXEL),
                quantize(y, PIXEL),
                quantize(score, SCORE),
            ]
        }))
    }
}

impl Serialize for Motion<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Regions<'a>(&'a [BBox]);
        impl Serialize for Regions<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.iter().map(|&b| Corners(b)))
            }
        }
        let mut m = s.serialize_struct("Motion", 2)?;
        m.serialize_field("area", &quantize(self.area, FRACTION))?;
        m.serialize_field("regions", &Regions(self.regions))?;
        m.end()
    }
}

struct Events<'a> {
    events: &'a [Event],
    labels: Labels<'a>,
}

impl Serialize for Events<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.events.len()))?;
        for &event in self.events {
            seq.serialize_element(&EventLine {
                event,
                labels: self.labels,
            })?;
        }
        seq.end()
    }
}

struct EventLine<'a> {
    event: Event,
    labels: Labels<'a>,
}

impl Serialize for EventLine<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (kind, class_id, track) = match self.event {
            Event::Appeared { class_id } => ("appeared", Some(class_id), None),
            Event::Vanished { class_id } => ("vanished", Some(class_id), None),
            Event::MotionStarted => ("motion_started", None, None),
            Event::MotionStopped => ("motion_stopped", None, None),
            Event::SourceLost => ("source_lost", None, None),
            Event::SourceRestored => ("source_restored", None, None),
            Event::Enter {
                track_id,
                class_id,
                zone,
            } => ("enter", Some(class_id), Some((track_id, zone))),
            Event::Exit {
                track_id,
                class_id,
                zone,
            } => ("exit", Some(class_id), Some((track_id, zone))),
        };
        let mut m = s.serialize_struct("Event", 5)?;
        m.serialize_field("type", kind)?;
        if let Some((track_id, _)) = track {
            m.serialize_field("track_id", &track_id)?;
        }
        if let Some(class_id) = class_id {
            m.serialize_field("class_id", &class_id)?;
            self.labels.serialize_label(&mut m, class_id)?;
        }
        if let Some((_, Some(zone))) = track {
            m.serialize_field("zone", zone.as_str())?;
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn det(class_id: u16, score: f32, b: [f32; 4], landmarks: Option<[[f32; 2]; 5]>) -> Detection {
        let [x1, y1, x2, y2] = b;
        Detection {
            class_id,
            score,
            bbox: BBox { x1, y1, x2, y2 },
            landmarks,
        }
    }

    fn line(rec: &FrameRecord) -> Value {
        let mut buf = Vec::new();
        rec.write_line(&mut buf);
        assert_eq!(
            buf.iter().filter(|&&b| b == b'\n').count(),
            1,
            "one newline, at the end"
        );
        assert_eq!(buf.last(), Some(&b'\n'));
        serde_json::from_slice(&buf).unwrap()
    }

    fn labels() -> Vec<String> {
        vec!["person".into(), "bicycle".into()]
    }

    #[test]
    fn minimal_frame() {
        let labels = labels();
        let rec = FrameRecord {
            frame_id: 7,
            timestamp_us: 1_000_123,
            width: 640,
            height: 480,
            latency: StageLatency {
                capture: 1,
                preprocess: 2,
                inference: 3,
                postprocess: 4,
            },
            inference: Inference::Ran,
            detections: &[],
            extras: None,
            dropped_detections: 0,
            labels: &labels,
            classifiers: &[],
            unclassified: 0,
            motion: None,
            source: None,
            events: &[],
        };
        assert_eq!(
            line(&rec),
            json!({
                "schema": 1, "type": "frame", "frame_id": 7, "timestamp_us": 1_000_123,
                "width": 640, "height": 480, "inference": "ran",
                "latency_us": {"capture": 1, "preprocess": 2, "inference": 3, "postprocess": 4},
                "detections": [], "dropped_detections": 0, "events": []
            })
        );
    }

    #[test]
    fn full_frame() {
        let labels = labels();
        let marks = [
            [1.04, 2.0],
            [3.0, 4.0],
            [5.0, 6.0],
            [7.0, 8.0],
            [9.0, 10.06],
        ];
        let dets = [
            det(0, 0.876_54, [10.04, 20.0, 30.56, -0.01], None),
            det(9, f32::NAN, [0.0, 0.0, 1.0, 1.0], Some(marks)),
        ];
        let regions = [BBox {
            x1: 1.0,
            y1: 2.0,
            x2: 3.0,
            y2: 4.0,
        }];
        let door = crate::track::ZoneName::new("door");
        let events = [
            Event::Appeared { class_id: 1 },
            Event::SourceRestored,
            Event::Enter {
                track_id: 4,
                class_id: 0,
                zone: None,
            },
            Event::Exit {
                track_id: 4,
                class_id: 0,
                zone: door,
            },
        ];
        let rec = FrameRecord {
            frame_id: u64::MAX,
            timestamp_us: 5,
            width: 1,
            height: 2,
            latency: StageLatency::default(),
            inference: Inference::Skipped,
            detections: &dets,
            extras: None,
            dropped_detections: 3,
            labels: &labels,
            classifiers: &[],
            unclassified: 0,
            motion: Some(Motion {
                area: 0.123_456,
                regions: &regions,
            }),
            source: Some(SourceStatus {
                state: SourceState::Reconnecting,
                reconnects: 2,
                bad_frames: 5,
            }),
            events: &events,
        };
        let v = line(&rec);
        assert_eq!(v["frame_id"], json!(u64::MAX));
        assert_eq!(v["inference"], "skipped");
        assert_eq!(
            v["detections"],
            json!([
                {"class_id": 0, "label": "person", "score": 0.877, "box": [10.0, 20.0, 30.6, 0.0]},
                {"class_id": 9, "label": "class_9", "score": 0.0, "box": [0.0, 0.0, 1.0, 1.0],
                 "landmarks": [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0], [9.0, 10.1]]}
            ])
        );
        assert_eq!(v["dropped_detections"], 3);
        assert_eq!(
            v["motion"],
            json!({"area": 0.1235, "regions": [[1.0, 2.0, 3.0, 4.0]]})
        );
        assert_eq!(
            v["source_status"],
            json!({"state": "reconnecting", "reconnects": 2, "bad_frames": 5})
        );
        assert_eq!(
            v["events"],
            json!([{"type": "appeared", "class_id": 1, "label": "bicycle"}, {"type": "source_restored"},
                   {"type": "enter", "track_id": 4, "class_id": 0, "label": "person"},
                   {"type": "exit", "track_id": 4, "class_id": 0, "label": "person", "zone": "door"}])
        );
    }

    #[test]
    fn labels_are_escaped() {
        let labels = vec!["a \"quoted\"\nlabel".to_string()];
        let dets = [det(0, 0.5, [0.0, 0.0, 1.0, 1.0], None)];
        let rec = FrameRecord {
            frame_id: 0,
            timestamp_us: 0,
            width: 1,
            height: 1,
            latency: StageLatency::default(),
            inference: Inference::Ran,
            detections: &dets,
            extras: None,
            dropped_detections: 0,
            labels: &labels,
            classifiers: &[],
            unclassified: 0,
            motion: None,
            source: None,
            events: &[],
        };
        assert_eq!(line(&rec)["detections"][0]["label"], labels[0].as_str());
    }

    #[test]
    fn masks_and_keypoints_go_with_their_detection() {
        let labels = labels();
        let dets = [
            det(0, 0.9, [1.0, 0.0, 3.0, 2.0], None),
            det(1, 0.8, [0.0, 0.0, 1.0, 1.0], None),
            det(0, 0.7, [0.0, 0.0, 4.0, 3.0], None),
        ];
        let mut extras = Extras::with_polygons(0.0);
        extras.reset(4, 3);
        // Pixels (1, 0), (1, 1) and (2, 1) of a 4x3 image.
        let mask = crate::imgproc::Image::from_vec(2, 2, 1, vec![255, 0, 255, 255]).unwrap();
        extras.push_mask(&mask, 1, 0);
        extras.push_from(&Extras::new(), 0);
        extras.push_keypoints([[1.04, 2.0, 0.5], [3.0, 4.0, 0.12345]].into_iter());
        extras.set_track_id(1, 7);
        // The service gathers its detectors' entries into one list.
        let mut gathered = Extras::new();
        gathered.reset(4, 3);
        (0..3).for_each(|i| gathered.push_from(&extras, i));
        let mut rec = FrameRecord {
            frame_id: 0,
            timestamp_us: 0,
            width: 4,
            height: 3,
            latency: StageLatency::default(),
            inference: Inference::Ran,
            detections: &dets,
            extras: Some(&extras),
            dropped_detections: 0,
            labels: &labels,
            classifiers: &[],
            unclassified: 0,
            motion: None,
            source: None,
            events: &[],
        };
        let v = line(&rec);
        assert_eq!(
            v["detections"][0],
            json!({"class_id": 0, "label": "person", "score": 0.9, "box": [1.0, 0.0, 3.0, 2.0],
                   "mask": {"size": [3, 4], "counts": [3, 2, 2, 1, 4]},
                   "area": 3, "centroid": [1.8, 1.2],
                   "polygons": [[1, 0, 2, 0, 2, 1, 3, 1, 3, 2, 1, 2]]})
        );
        assert_eq!(v["detections"][1].get("mask"), None);
        assert_eq!(v["detections"][1]["track_id"], 7);
        assert_eq!(
            v["detections"][2]["keypoints"],
            json!([[1.0, 2.0, 0.5], [3.0, 4.0, 0.123]])
        );
        rec.extras = Some(&gathered);
        assert_eq!(line(&rec), v);
    }
}
