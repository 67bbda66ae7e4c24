//! Greedy non-maximum suppression over a bounded, reusable candidate buffer.

use std::cmp::Ordering;

use super::{Detection, Detections};

/// Most candidates a decoder keeps for NMS. When more pass the score threshold, the buffer
/// keeps the best ones (at least half this many), so memory stays fixed whatever the model
/// outputs.
pub const MAX_CANDIDATES: usize = 4096;

/// NMS settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Nms {
    /// IoU above which the lower-scored box is suppressed.
    pub iou: f32,
    /// Suppress across classes instead of within each class.
    pub class_agnostic: bool,
}

/// A detection waiting for NMS, with its arrival order to break score ties the way a stable
/// sort does (and so the way the reference implementations do), and the decoder's tag.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    det: Detection,
    seq: u32,
    tag: u32,
}

fn best_first(a: &Candidate, b: &Candidate) -> Ordering {
    b.det.score.total_cmp(&a.det.score).then(a.seq.cmp(&b.seq))
}

/// The candidates of one frame. Created once per decoder; [`Candidates::clear`] keeps the
/// allocation, so steady-state frames do not allocate.
#[derive(Debug)]
pub struct Candidates {
    items: Vec<Candidate>,
    cap: usize,
    seq: u32,
}

impl Candidates {
    /// A buffer for at most `cap` candidates (clamped to 2..=[`MAX_CANDIDATES`]).
    pub fn new(cap: usize) -> Self {
        let cap = cap.clamp(2, MAX_CANDIDATES);
        Self {
            items: Vec::with_capacity(cap),
            cap,
            seq: 0,
        }
    }

    pub fn clear(&mut self) {
        self.items.clear();
        self.seq = 0;
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Adds a candidate; when the buffer is full, first drops its worse half.
    pub fn push(&mut self, det: Detection) {
        self.push_tagged(det, 0);
    }

    /// Adds a candidate with a tag that [`select_tagged`](Self::select_tagged) gives back,
    /// such as the anchor its mask coefficients or keypoints are read from.
    pub fn push_tagged(&mut self, det: Detection, tag: u32) {
        if self.items.len() == self.cap {
            let keep = self.cap / 2;
            self.items.select_nth_unstable_by(keep, best_first);
            self.items.truncate(keep);
        }
        self.items.push(Candidate {
            det,
            seq: self.seq,
            tag,
        });
        self.seq = self.seq.wrapping_add(1);
    }

    /// Writes the best candidates to `out`, best first, at most `max` of them (and never more
    /// than `out` holds). With `nms`, a candidate is dropped when it overlaps an already kept
    /// one (of its class, unless class-agnostic) by more than `nms.iou`.
    pub fn select(&mut self, nms: Option<Nms>, max: usize, out: &mut Detections) {
        self.select_tagged(nms, max, out, |_| {});
    }

    /// [`select`](Self::select), calling `kept` with the tag of each detection written, in
    /// the order they are written.
    pub fn select_tagged(
        &mut self,
        nms: Option<Nms>,
        max: usize,
        out: &mut Detections,
        mut kept: impl FnMut(u32),
    ) {
        out.clear();
        let max = max.min(out.capacity());
        self.items.sort_unstable_by(best_first);
        for c in &self.items {
            if out.len() == max {
                break;
            }
            let suppressed = nms.is_some_and(|n| {
                out.iter().any(|k| {
                    (n.class_agnostic || k.class_id == c.det.class_id)
                        && k.bbox.iou(&c.det.bbox) > n.iou
                })
            });
            if !suppressed {
                // Cannot fail: `max` is at most the capacity.
                let _ = out.push(c.det);
                kept(c.tag);
            }
        }
    }
}
