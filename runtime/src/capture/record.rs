//! Frames from a source saved as PNG files: a calibration set for `ocelli-compress quantize
//! --calib` taken by the device's own camera, in its own light and at its own position.
//!
//! Files are named `rec-<unix time in µs>-<frame id>.png`, so that recordings into one folder
//! (a morning's and an evening's, say) never overwrite each other; each is written under a
//! `.part` name first, so the folder never holds half a frame.

use std::path::{Path, PathBuf};

use super::{CaptureError, Source};
use crate::imgproc::Image;

/// Which frames to keep.
#[derive(Clone, Copy, Debug)]
pub struct RecordOptions {
    /// Frames to save.
    pub frames: usize,
    /// Save one delivered frame in this many (at least 1), so the set spans more of the scene.
    pub every: u64,
}

/// What a recording did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordSummary {
    pub saved: usize,
    /// Frames the source delivered, saved or not.
    pub seen: u64,
    /// Truncated or corrupt frames skipped.
    pub bad_frames: u64,
}

/// Why a recording stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The output folder could not be created: check the path and permissions.
    #[error("{path}: cannot create the output folder: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A frame could not be written: check the folder is writable and has space. The frames
    /// saved before it are kept.
    #[error("{path}: cannot write the frame: {source} ({saved} frame(s) saved before it)")]
    Write {
        path: PathBuf,
        source: std::io::Error,
        saved: usize,
    },
    /// The source failed for good (a camera lost, a device that cannot stream). The frames
    /// saved before it are kept.
    #[error("{source} ({saved} frame(s) saved before it)")]
    Source { source: CaptureError, saved: usize },
}

/// Saves frames from `source` into `dir` until `opts.frames` are saved, the source ends or
/// `stop` says so. Bad frames are skipped and counted.
pub fn record(
    source: &mut dyn Source,
    dir: &Path,
    opts: RecordOptions,
    stop: impl Fn() -> bool,
    mut progress: impl FnMut(&str),
) -> Result<RecordSummary, RecordError> {
    std::fs::create_dir_all(dir).map_err(|source| RecordError::Dir {
        path: dir.into(),
        source,
    })?;
    let every = opts.every.max(1);
    let mut rgb = Image::new(0, 0, 3);
    let mut summary = RecordSummary::default();
    while summary.saved < opts.frames && !stop() {
        let frame = match source.next_frame() {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) if e.is_frame_local() => {
                summary.bad_frames += 1;
                progress(&format!("record: {e}: skipped"));
                continue;
            }
            Err(source) => {
                return Err(RecordError::Source {
                    source,
                    saved: summary.saved,
                });
            }
        };
        summary.seen += 1;
        if (summary.seen - 1) % every != 0 {
            continue;
        }
        if let Err(e) = frame.to_rgb(&mut rgb) {
            summary.bad_frames += 1;
            progress(&format!("record: {e}: skipped"));
            continue;
        }
        let now_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        let path = dir.join(format!("rec-{now_us:016}-{:06}.png", frame.id));
        let part = path.with_extension("png.part");
        crate::overlay::save_png(&rgb, &part)
            .and_then(|()| std::fs::rename(&part, &path))
            .map_err(|source| {
                let _ = std::fs::remove_file(&part);
                RecordError::Write {
                    path: path.clone(),
                    source,
                    saved: summary.saved,
                }
            })?;
        summary.saved += 1;
        progress(&format!(
            "record: {}/{}: {}",
            summary.saved,
            opts.frames,
            path.display()
        ));
    }
    Ok(summary)
}
