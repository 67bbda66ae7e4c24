//! Frame records of realistic size and variety, shared by the emit test binaries.

use ocelli::detect::{BBox, Detection};
use ocelli::emit::{
    Event, FrameRecord, Inference, Motion, SourceState, SourceStatus, StageLatency,
};

/// Detections, regions and events to borrow from: frame `i` takes a slice of each.
pub struct Scene {
    labels: Vec<String>,
    dets: Vec<Detection>,
    regions: Vec<BBox>,
    events: Vec<Event>,
}

impl Scene {
    pub fn new() -> Self {
        let names = [
            "person",
            "bicycle",
            "car",
            "motorcycle",
            "bus",
            "truck",
            "dog",
            "cat",
        ];
        let bbox = |k: usize| {
            let (x, y) = ((k * 97 % 1100) as f32 + 0.37, (k * 53 % 600) as f32 + 0.61);
            BBox {
                x1: x,
                y1: y,
                x2: x + 64.25 + k as f32,
                y2: y + 118.5,
            }
        };
        let dets = (0..24)
            .map(|k| Detection {
                // Id 9 has no label: it is written as class_9.
                class_id: [0, 2, 9, 1, 5, 7][k % 6],
                score: 0.31 + (k as f32 * 0.029) % 0.68,
                bbox: bbox(k),
                landmarks: (k % 4 == 0).then(|| {
                    let b = bbox(k);
                    [
                        [b.x1 + 20.0, b.y1 + 40.0],
                        [b.x1 + 44.0, b.y1 + 40.0],
                        [b.x1 + 32.0, b.y1 + 55.0],
                        [b.x1 + 22.0, b.y1 + 70.0],
                        [b.x1 + 42.0, b.y1 + 70.0],
                    ]
                }),
            })
            .collect();
        Self {
            labels: names.map(String::from).to_vec(),
            dets,
            regions: (0..6).map(|k| bbox(k + 30)).collect(),
            events: vec![
                Event::Appeared { class_id: 2 },
                Event::Vanished { class_id: 9 },
                Event::MotionStarted,
                Event::MotionStopped,
                Event::SourceLost,
                Event::SourceRestored,
            ],
        }
    }

    /// Frame `i`: up to 12 detections, motion on odd frames (skipping inference on some), a source
    /// status every tenth frame and an event every seventh.
    pub fn record(&self, i: u64) -> FrameRecord<'_> {
        let k = i as usize;
        let skipped = k % 6 == 5;
        let n = if skipped { 0 } else { k % 13 };
        FrameRecord {
            frame_id: i,
            timestamp_us: 1_700_000_000_000_000 + i * 33_333,
            width: 1280,
            height: 720,
            latency: StageLatency {
                capture: 800 + (k % 50) as u32,
                preprocess: 2100,
                inference: 31_000,
                postprocess: 350,
            },
            inference: if skipped {
                Inference::Skipped
            } else {
                Inference::Ran
            },
            detections: &self.dets[k % 12..k % 12 + n],
            extras: None,
            dropped_detections: k.is_multiple_of(17) as u32 * 4,
            labels: &self.labels,
            classifiers: &[],
            unclassified: 0,
            motion: (k % 2 == 1).then(|| Motion {
                area: (k % 100) as f32 / 1000.0,
                regions: &self.regions[..k % 7],
            }),
            source: k.is_multiple_of(10).then_some(SourceStatus {
                state: SourceState::Ok,
                reconnects: (k / 1000) as u32,
                bad_frames: k as u64 / 100,
            }),
            events: if k.is_multiple_of(7) {
                &self.events[k % 6..k % 6 + 1]
            } else {
                &[]
            },
        }
    }
}
