//! Tracking, the stage after the detectors: stable ids for objects across frames, `enter` and
//! `exit` events, and polygon zones.
//!
//! Each frame: detections outside every zone are dropped (when `only_in_zones`), every track's
//! box is predicted one frame ahead by a constant-velocity Kalman filter ([`filter`]), tracks
//! and detections of the same class are paired by the Hungarian method on `1 - IoU`
//! ([`assign`]), and, with `byte_track`, tracks still unpaired get a second chance with the
//! low-scoring detections (ByteTrack). A track gets its id once it has been seen `min_hits`
//! frames in a row, and ends after `max_missed` frames without a detection. Tracks live in a
//! fixed-capacity list: tracking allocates nothing per frame once its buffers have grown.

mod assign;
mod filter;
mod zone;

use serde::Deserialize;

pub use zone::{Anchor, MAX_ZONE_NAME, ZoneConfig, ZoneName, contains};

use crate::detect::{BBox, Detections, Extras};
use crate::emit::Event;
use assign::Assigner;
use filter::BoxFilter;

/// Most tracks followed at once; detections that would start more are not tracked.
pub const MAX_TRACKS: usize = 128;
/// Most zones in a config.
pub const MAX_ZONES: usize = 16;
/// Most tracking events on one frame; more are dropped and logged.
pub const MAX_EVENTS: usize = 64;

/// Why a `[track]` section was refused.
#[derive(Debug, thiserror::Error)]
pub enum TrackError {
    /// A setting is out of its range: the message names the key and the range; fix the value.
    #[error("{key}: {found}, expected {expected}")]
    Setting {
        key: String,
        found: String,
        expected: &'static str,
    },
}

/// The `[track]` section of the config.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrackConfig {
    /// Detections scoring at least this start tracks and are paired first.
    pub score_threshold: f32,
    /// ByteTrack's second association: tracks left unpaired are offered the detections
    /// scoring below `score_threshold` (and at least `low_score_threshold`).
    pub byte_track: bool,
    pub low_score_threshold: f32,
    /// Least IoU between a track's predicted box and a detection to pair them.
    pub match_iou: f32,
    /// The same for the low-scoring detections of the second association.
    pub low_match_iou: f32,
    /// Frames in a row a track must be seen before it gets an id and an `enter` event.
    pub min_hits: u32,
    /// Frames a track may go unseen (occluded, missed) before it ends with an `exit` event.
    pub max_missed: u32,
    /// The point of a box tested against zones.
    pub anchor: Anchor,
    /// Drop detections whose anchor lies in no zone.
    pub only_in_zones: bool,
    #[serde(rename = "zone")]
    pub zones: Vec<ZoneConfig>,
}

impl Default for TrackConfig {
    fn default() -> Self {
        Self {
            score_threshold: 0.5,
            byte_track: false,
            low_score_threshold: 0.1,
            match_iou: 0.3,
            low_match_iou: 0.5,
            min_hits: 3,
            max_missed: 30,
            anchor: Anchor::default(),
            only_in_zones: false,
            zones: Vec::new(),
        }
    }
}

impl TrackConfig {
    pub fn validate(&self) -> Result<(), TrackError> {
        let setting = |key: &str, found: String, expected| {
            Err(TrackError::Setting {
                key: key.into(),
                found,
                expected,
            })
        };
        for (key, v) in [
            ("score_threshold", self.score_threshold),
            ("low_score_threshold", self.low_score_threshold),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return setting(key, v.to_string(), "a score from 0 to 1");
            }
        }
        for (key, v) in [
            ("match_iou", self.match_iou),
            ("low_match_iou", self.low_match_iou),
        ] {
            if !(v > 0.0 && v <= 1.0) {
                return setting(key, v.to_string(), "an IoU above 0, at most 1");
            }
        }
        if self.min_hits == 0 {
            return setting("min_hits", "0".into(), "at least 1 frame");
        }
        if self.zones.len() > MAX_ZONES {
            return setting(
                "zone",
                format!("{} zones", self.zones.len()),
                "at most 16 zones",
            );
        }
        if self.only_in_zones && self.zones.is_empty() {
            return setting(
                "only_in_zones",
                "true without any [[track.zone]]".into(),
                "at least one zone",
            );
        }
        for (i, z) in self.zones.iter().enumerate() {
            if z.name.is_empty() || ZoneName::new(&z.name).is_none() {
                return setting(
                    &format!("zone[{i}].name"),
                    format!("{:?}", z.name),
                    "a name of 1 to 32 bytes",
                );
            }
            if self.zones[..i].iter().any(|o| o.name == z.name) {
                return setting(
                    &format!("zone[{i}].name"),
                    format!("{:?} a second time", z.name),
                    "a name no other zone has",
                );
            }
            if z.polygon.len() < 3 || z.polygon.iter().flatten().any(|v| !v.is_finite()) {
                return setting(
                    &format!("zone[{i}].polygon"),
                    format!("{:?}", z.polygon),
                    "three or more [x, y] corners in source-image pixels",
                );
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug)]
struct Track {
    /// 0 until confirmed.
    id: u32,
    class_id: u16,
    filter: BoxFilter,
    /// Frames in a row with a detection, and without one since the last.
    hits: u32,
    missed: u32,
    /// Bit `z` set: the anchor was in zone `z` when last seen.
    zones: u16,
    /// Paired on this frame.
    seen: bool,
}

/// The events of one frame, as the tracker appends them.
pub type Events<const N: usize> = heapless::Vec<Event, N>;

/// Objects followed across frames.
#[derive(Debug)]
pub struct Tracker {
    config: TrackConfig,
    zone_names: heapless::Vec<ZoneName, MAX_ZONES>,
    tracks: heapless::Vec<Track, MAX_TRACKS>,
    next_id: u32,
    assigner: Assigner,
    /// Detection indices of this frame: the high-scoring ones, then the low-scoring ones.
    high: heapless::Vec<u16, { crate::detect::MAX_DETECTIONS }>,
    low: heapless::Vec<u16, { crate::detect::MAX_DETECTIONS }>,
    /// Track paired with each detection, by detection index.
    owner: [Option<u8>; crate::detect::MAX_DETECTIONS],
    /// The extras of the detections kept by the zone filter.
    kept: Extras,
    /// Detections that found no room in the track list, and events that found none on their
    /// frame, since start.
    pub untracked: u64,
    pub dropped_events: u64,
}

impl Tracker {
    /// A tracker for a validated config.
    pub fn new(config: &TrackConfig) -> Self {
        Self {
            zone_names: config
                .zones
                .iter()
                .filter_map(|z| ZoneName::new(&z.name))
                .collect(),
            config: config.clone(),
            tracks: heapless::Vec::new(),
            next_id: 1,
            assigner: Assigner::default(),
            high: heapless::Vec::new(),
            low: heapless::Vec::new(),
            owner: [None; crate::detect::MAX_DETECTIONS],
            kept: Extras::new(),
            untracked: 0,
            dropped_events: 0,
        }
    }

    pub fn config(&self) -> &TrackConfig {
        &self.config
    }

    /// Tracks `detections` (with their `extras`, over a `width × height` image): drops those
    /// outside the zones when asked, sets the track id of each detection of a confirmed track
    /// in `extras`, and appends this frame's `enter` and `exit` events to `events`.
    pub fn update<const N: usize>(
        &mut self,
        width: usize,
        height: usize,
        detections: &mut Detections,
        extras: &mut Extras,
        events: &mut Events<N>,
    ) {
        if self.config.only_in_zones {
            self.keep_in_zones(width, height, detections, extras);
        }
        for t in &mut self.tracks {
            t.filter.predict();
            t.seen = false;
        }
        self.high.clear();
        self.low.clear();
        self.owner = [None; crate::detect::MAX_DETECTIONS];
        for (i, d) in detections.iter().enumerate() {
            let list = if d.score >= self.config.score_threshold {
                &mut self.high
            } else if self.config.byte_track && d.score >= self.config.low_score_threshold {
                &mut self.low
            } else {
                continue;
            };
            let _ = list.push(i as u16);
        }
        // First association: every track against the confident detections.
        self.associate(detections, false, self.config.match_iou);
        // ByteTrack: tracks seen on the last frame but not on this one, against the rest.
        if self.config.byte_track {
            self.associate(detections, true, self.config.low_match_iou);
        }
        let mut sink = Sink { events, dropped: 0 };
        // Ended tracks leave first, so that their ids are gone before new ones appear; they
        // are removed last, for the track indices in `owner` to hold until then.
        let max_missed = self.config.max_missed;
        for t in self.tracks.iter_mut().filter(|t| !t.seen) {
            t.hits = 0;
            t.missed += 1;
            if t.id != 0 && t.missed > max_missed {
                for (z, name) in self.zone_names.iter().enumerate() {
                    if t.zones & (1 << z) != 0 {
                        sink.exit(t, Some(*name));
                    }
                }
                sink.exit(t, None);
            }
        }
        for &i in &self.high {
            let i = usize::from(i);
            if self.owner[i].is_some() {
                continue;
            }
            let d = &detections[i];
            let track = Track {
                id: 0,
                class_id: d.class_id,
                filter: BoxFilter::new(&d.bbox),
                hits: 1,
                missed: 0,
                zones: 0,
                seen: true,
            };
            match self.tracks.push(track) {
                Ok(()) => self.owner[i] = Some((self.tracks.len() - 1) as u8),
                Err(_) => self.untracked += 1,
            }
        }
        for (i, d) in detections.iter().enumerate() {
            let Some(t) = self.owner[i] else { continue };
            let t = &mut self.tracks[usize::from(t)];
            if t.id == 0 && t.hits >= self.config.min_hits {
                t.id = self.next_id;
                self.next_id = self.next_id.wrapping_add(1).max(1);
                sink.enter(t, None);
            }
            if t.id == 0 {
                continue;
            }
            extras.set_track_id(i, t.id);
            let at = self.config.anchor.of(&d.bbox);
            for (z, zone) in self.config.zones.iter().enumerate() {
                let (bit, inside) = (1 << z, contains(&zone.polygon, at));
                if inside != (t.zones & bit != 0) {
                    t.zones ^= bit;
                    let name = Some(self.zone_names[z]);
                    if inside {
                        sink.enter(t, name);
                    } else {
                        sink.exit(t, name);
                    }
                }
            }
        }
        self.tracks
            .retain(|t| t.seen || (t.id != 0 && t.missed <= max_missed));
        if sink.dropped > 0 {
            self.dropped_events += sink.dropped;
            eprintln!(
                "ocelli: {} tracking events did not fit in one frame's {MAX_EVENTS}; dropped",
                sink.dropped
            );
        }
    }

    /// Pairs the tracks not yet seen on this frame with the unpaired detections of `high`
    /// (or `low`), and updates the paired tracks. The low pass only offers the tracks that
    /// were seen on the previous frame, as ByteTrack does.
    fn associate(&mut self, detections: &Detections, low: bool, min_iou: f32) {
        let candidates = if low { &self.low } else { &self.high };
        let mut rows: heapless::Vec<u8, MAX_TRACKS> = heapless::Vec::new();
        for (k, t) in self.tracks.iter().enumerate() {
            if !t.seen && (!low || t.missed == 0) {
                let _ = rows.push(k as u8);
            }
        }
        let mut cols: heapless::Vec<u16, { crate::detect::MAX_DETECTIONS }> = heapless::Vec::new();
        for &i in candidates {
            if self.owner[usize::from(i)].is_none() {
                let _ = cols.push(i);
            }
        }
        // Forbidden pairs cost more than any allowed set of pairs, so the solution first
        // pairs as many as it can, then the best overlapping.
        const FORBIDDEN: f32 = 1e4;
        let tracks = &mut self.tracks;
        let owner = &mut self.owner;
        let cost = |r: usize, c: usize| {
            let t = &tracks[usize::from(rows[r])];
            let d = &detections[usize::from(cols[c])];
            let iou = t.filter.bbox().iou(&d.bbox);
            if t.class_id == d.class_id && iou >= min_iou {
                1.0 - iou
            } else {
                FORBIDDEN
            }
        };
        let mut pairs: heapless::Vec<(u8, u16), MAX_TRACKS> = heapless::Vec::new();
        self.assigner
            .solve(rows.len(), cols.len(), cost, 1.0 - min_iou, |r, c| {
                let _ = pairs.push((rows[r], cols[c]));
            });
        for (k, i) in pairs {
            let t = &mut tracks[usize::from(k)];
            t.filter.update(&detections[usize::from(i)].bbox);
            t.seen = true;
            t.hits += 1;
            t.missed = 0;
            owner[usize::from(i)] = Some(k);
        }
    }

    /// Removes the detections whose anchor lies in no zone, with their extras.
    fn keep_in_zones(
        &mut self,
        width: usize,
        height: usize,
        detections: &mut Detections,
        extras: &mut Extras,
    ) {
        let in_zone = |b: &BBox| {
            let at = self.config.anchor.of(b);
            self.config.zones.iter().any(|z| contains(&z.polygon, at))
        };
        if detections.iter().all(|d| in_zone(&d.bbox)) {
            return;
        }
        self.kept.reset(width, height);
        let mut n = 0;
        for i in 0..detections.len() {
            if in_zone(&detections[i].bbox) {
                detections[n] = detections[i];
                self.kept.push_from(extras, i);
                n += 1;
            }
        }
        detections.truncate(n);
        std::mem::swap(extras, &mut self.kept);
    }
}

/// Appends events, counting those that do not fit.
struct Sink<'a, const N: usize> {
    events: &'a mut Events<N>,
    dropped: u64,
}

impl<const N: usize> Sink<'_, N> {
    fn push(&mut self, event: Event) {
        if self.events.push(event).is_err() {
            self.dropped += 1;
        }
    }

    fn enter(&mut self, t: &Track, zone: Option<ZoneName>) {
        self.push(Event::Enter {
            track_id: t.id,
            class_id: t.class_id,
            zone,
        });
    }

    fn exit(&mut self, t: &Track, zone: Option<ZoneName>) {
        self.push(Event::Exit {
            track_id: t.id,
            class_id: t.class_id,
            zone,
        });
    }
}
