//! Annotated frames saved as PNG when chosen events happen, at most one per `min_interval_s`,
//! in a folder whose size is bounded: the oldest snapshots are deleted first.
//!
//! Files are named `snap-<unix time in µs>-<frame id>.png`, so name order is age order, also
//! across restarts; the folder is scanned at start so the quota counts earlier snapshots.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::emit::Event;
use crate::imgproc::Image;
use crate::imgproc::geometry::{self, Interpolation};

/// Why snapshots could not be kept.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The snapshot folder could not be created or listed: check the path and permissions.
    #[error("{path}: snapshot folder: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A snapshot could not be written: check the folder is writable and has space.
    #[error("{path}: cannot write snapshot: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// An old snapshot could not be deleted to keep the quota: check the folder's permissions.
    #[error("{path}: cannot delete old snapshot: {source}")]
    Delete {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The events that can trigger a snapshot.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Enter,
    Exit,
    Appeared,
    Vanished,
    MotionStarted,
    MotionStopped,
    SourceRestored,
}

impl Trigger {
    fn matches(self, event: &Event) -> bool {
        matches!(
            (self, event),
            (Trigger::Enter, Event::Enter { .. })
                | (Trigger::Exit, Event::Exit { .. })
                | (Trigger::Appeared, Event::Appeared { .. })
                | (Trigger::Vanished, Event::Vanished { .. })
                | (Trigger::MotionStarted, Event::MotionStarted)
                | (Trigger::MotionStopped, Event::MotionStopped)
                | (Trigger::SourceRestored, Event::SourceRestored)
        )
    }
}

/// The `[output.snapshots]` table.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SnapshotConfig {
    /// The folder snapshots go to; created when missing.
    pub dir: PathBuf,
    /// Events that trigger a snapshot of their frame.
    #[serde(default = "default_on")]
    pub on: Vec<Trigger>,
    /// Least time between two snapshots, in seconds of the source's clock; triggers within it
    /// are skipped.
    #[serde(default = "default_interval")]
    pub min_interval_s: f64,
    /// Most bytes of snapshots in the folder; the oldest are deleted first (the newest is
    /// always kept).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Wider frames are scaled down to this width (aspect kept) before saving.
    #[serde(default)]
    pub max_width: Option<usize>,
}

fn default_on() -> Vec<Trigger> {
    vec![Trigger::Enter]
}
fn default_interval() -> f64 {
    5.0
}
fn default_max_bytes() -> u64 {
    100_000_000
}

/// The snapshot folder and what it holds.
#[derive(Debug)]
pub struct Snapshots {
    config: SnapshotConfig,
    dir: PathBuf,
    /// Snapshots in the folder, oldest first, with their sizes.
    files: VecDeque<(PathBuf, u64)>,
    bytes: u64,
    /// Source time of the last snapshot.
    last_us: Option<u64>,
    scaled: Image,
    /// Snapshots skipped by the rate limit, and deleted for the quota, since start.
    pub skipped: u64,
    pub deleted: u64,
}

impl Snapshots {
    /// Opens (creates) `dir` and lists the snapshots already there; enforces the quota.
    pub fn open(config: &SnapshotConfig, dir: PathBuf) -> Result<Self, SnapshotError> {
        let dir_err = |source| SnapshotError::Dir {
            path: dir.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(dir_err)?;
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(dir_err)? {
            let entry = entry.map_err(dir_err)?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("snap-") && name.ends_with(".png") {
                files.push((entry.path(), entry.metadata().map_err(dir_err)?.len()));
            }
        }
        files.sort();
        let mut snapshots = Self {
            config: config.clone(),
            bytes: files.iter().map(|f| f.1).sum(),
            files: files.into(),
            dir,
            last_us: None,
            scaled: Image::new(0, 0, 3),
            skipped: 0,
            deleted: 0,
        };
        snapshots.enforce_quota()?;
        Ok(snapshots)
    }

    /// Whether a frame at source time `timestamp_us` with `events` should be saved: one of
    /// them is a trigger and the last snapshot is old enough. Counts the ones the rate limit
    /// skips.
    pub fn due(&mut self, timestamp_us: u64, events: &[Event]) -> bool {
        let triggered = events
            .iter()
            .any(|e| self.config.on.iter().any(|t| t.matches(e)));
        if !triggered {
            return false;
        }
        let interval_us = (self.config.min_interval_s * 1e6) as u64;
        // A clock that went back (a new source after a reload) starts the interval anew.
        let due = self
            .last_us
            .is_none_or(|last| timestamp_us < last || timestamp_us - last >= interval_us);
        if !due {
            self.skipped += 1;
        }
        due
    }

    /// Saves the annotated frame `rgb` and deletes the oldest snapshots over the quota;
    /// returns the new file.
    pub fn save(
        &mut self,
        timestamp_us: u64,
        frame_id: u64,
        rgb: &Image,
    ) -> Result<PathBuf, SnapshotError> {
        let now_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        let path = self
            .dir
            .join(format!("snap-{now_us:016}-{frame_id:06}.png"));
        let image = match self.config.max_width {
            Some(w) if rgb.width > w && w > 0 => {
                let h = (rgb.height * w).div_ceil(rgb.width).max(1);
                geometry::resize(rgb, w, h, Interpolation::Area, &mut self.scaled).map_err(
                    |e| SnapshotError::Write {
                        path: path.clone(),
                        source: std::io::Error::other(e),
                    },
                )?;
                &self.scaled
            }
            _ => rgb,
        };
        // Written aside and renamed, so that the folder never holds a partial snapshot.
        let part = path.with_extension("png.part");
        let write_err = |source| SnapshotError::Write {
            path: path.clone(),
            source,
        };
        crate::overlay::save_png(image, &part).map_err(write_err)?;
        std::fs::rename(&part, &path).map_err(write_err)?;
        let size = std::fs::metadata(&path).map_err(write_err)?.len();
        self.files.push_back((path.clone(), size));
        self.bytes += size;
        self.last_us = Some(timestamp_us);
        self.enforce_quota()?;
        Ok(path)
    }

    /// Snapshots in the folder, oldest first.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|f| f.0.as_path())
    }

    fn enforce_quota(&mut self) -> Result<(), SnapshotError> {
        while self.bytes > self.config.max_bytes && self.files.len() > 1 {
            let (path, size) = self.files.pop_front().expect("more than one");
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                // Someone else removed it: it no longer counts either way.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(SnapshotError::Delete { path, source }),
            }
            self.bytes -= size;
            self.deleted += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ocelli-snap-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn config(dir: &Path, min_interval_s: f64, max_bytes: u64) -> SnapshotConfig {
        SnapshotConfig {
            dir: dir.into(),
            on: vec![Trigger::Enter, Trigger::MotionStarted],
            min_interval_s,
            max_bytes,
            max_width: None,
        }
    }

    const ENTER: Event = Event::Enter {
        track_id: 1,
        class_id: 0,
        zone: None,
    };

    /// A noisy image, so that every snapshot has about the same, incompressible size.
    fn noise(width: usize, height: usize, seed: u32) -> Image {
        let mut s = seed | 1;
        let data = (0..width * height * 3)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                s as u8
            })
            .collect();
        Image::from_vec(width, height, 3, data).unwrap()
    }

    #[test]
    fn triggers_and_the_rate_limit_decide() {
        let dir = scratch("rate");
        let mut s = Snapshots::open(&config(&dir, 2.0, u64::MAX), dir.clone()).unwrap();
        let img = noise(8, 8, 1);
        let mut saved = Vec::new();
        // One frame every half second, with an enter event but for frames 3, 7 and 12.
        for t in 0..13u64 {
            let events: &[Event] = match t {
                3 => &[Event::Exit {
                    track_id: 1,
                    class_id: 0,
                    zone: None,
                }],
                7 => &[],
                12 => &[Event::MotionStarted],
                _ => &[ENTER],
            };
            if s.due(t * 500_000, events) {
                s.save(t * 500_000, t, &img).unwrap();
                saved.push(t);
            }
        }
        assert_eq!(saved, [0, 4, 8, 12]);
        assert_eq!(s.files().count(), 4);
        assert_eq!(
            s.skipped, 7,
            "1, 2, 5, 6, 9, 10, 11; the exit-only 3 triggers nothing"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_quota_deletes_the_oldest_first_and_counts_what_was_there() {
        let dir = scratch("quota");
        let img = noise(32, 32, 7);
        let mut s = Snapshots::open(&config(&dir, 0.0, u64::MAX), dir.clone()).unwrap();
        let one = s.save(0, 0, &img).unwrap();
        let size = std::fs::metadata(&one).unwrap().len();
        drop(s);
        // Room for three: a reopened folder counts the snapshot already there.
        let quota = 3 * size + size / 2;
        let mut s = Snapshots::open(&config(&dir, 0.0, quota), dir.clone()).unwrap();
        let mut written = vec![one];
        for id in 1..6 {
            written.push(s.save(id, id, &img).unwrap());
        }
        let left: Vec<&Path> = s.files().collect();
        assert_eq!(
            left,
            written[3..]
                .iter()
                .map(PathBuf::as_path)
                .collect::<Vec<_>>()
        );
        assert_eq!(s.deleted, 3);
        let mut on_disk: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        on_disk.sort();
        assert_eq!(on_disk, written[3..]);
        // Each snapshot decodes to the frame it was made from.
        let mut back = Image::new(0, 0, 3);
        crate::capture::decode_image(&on_disk[0], crate::limits::DEFAULT_MAX_PIXELS, &mut back)
            .unwrap();
        assert_eq!((back.width, back.height, &back.data), (32, 32, &img.data));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn wide_frames_are_scaled_down() {
        let dir = scratch("width");
        let cfg = SnapshotConfig {
            max_width: Some(16),
            ..config(&dir, 0.0, u64::MAX)
        };
        let mut s = Snapshots::open(&cfg, dir.clone()).unwrap();
        let path = s.save(0, 0, &noise(64, 30, 3)).unwrap();
        let mut back = Image::new(0, 0, 3);
        crate::capture::decode_image(&path, crate::limits::DEFAULT_MAX_PIXELS, &mut back).unwrap();
        assert_eq!((back.width, back.height), (16, 8));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
