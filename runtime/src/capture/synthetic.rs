//! A moving test pattern in a camera pixel format, for tests, benchmarks and soak runs.

use std::time::{Duration, Instant};

use super::{CaptureError, Frame, PixelFormat, Source};
use crate::config::{Fault, FaultKind};

/// Colour bars with a bright square that moves one step per frame, so consecutive frames differ
/// (motion gating sees motion) while content stays deterministic.
pub struct SyntheticSource {
    width: usize,
    height: usize,
    format: PixelFormat,
    frames: Option<u64>,
    id: u64,
    start: Instant,
    buf: Vec<u8>,
    /// Scripted losses not yet played, soonest first.
    faults: Vec<Fault>,
    /// While set, the camera is away until then.
    away_until: Option<Instant>,
    /// Time between frames when paced like a camera.
    interval: Option<Duration>,
}

const BARS_YUV: [[u8; 3]; 8] = [
    [235, 128, 128],
    [210, 16, 146],
    [170, 166, 16],
    [145, 54, 34],
    [106, 202, 222],
    [81, 90, 240],
    [41, 240, 110],
    [16, 128, 128],
];

impl SyntheticSource {
    /// `format` must be YUYV, NV12 or GREY (the formats cameras deliver uncompressed).
    pub fn new(width: usize, height: usize, format: PixelFormat, frames: Option<u64>) -> Self {
        let width = width & !1;
        let height = height & !1;
        let len = format
            .frame_len(height, format.min_stride(width))
            .unwrap_or(0);
        Self {
            width,
            height,
            format,
            frames,
            id: 0,
            start: Instant::now(),
            buf: vec![0; len],
            faults: Vec::new(),
            away_until: None,
            interval: None,
        }
    }

    /// Paces frames at `fps` like a camera would; `None` (or a rate that is not positive)
    /// delivers them as fast as they are taken.
    pub fn with_fps(mut self, fps: Option<f64>) -> Self {
        self.interval = fps
            .filter(|f| f.is_finite() && *f > 0.0)
            .map(|f| Duration::from_secs_f64(1.0 / f));
        self
    }

    /// Plays `faults`: after `after` frames the camera is lost for `seconds`, or one frame
    /// arrives bad.
    pub fn with_faults(mut self, faults: &[Fault]) -> Self {
        self.faults = faults.to_vec();
        self.faults.sort_by_key(|f| std::cmp::Reverse(f.after));
        self
    }

    fn lost(&self, why: &str) -> CaptureError {
        CaptureError::Lost {
            device: "synthetic".into(),
            source: std::io::Error::new(std::io::ErrorKind::NotConnected, why.to_string()),
        }
    }

    fn yuv_at(&self, x: usize, y: usize) -> [u8; 3] {
        let side = (self.height / 4).max(2);
        let span = (self.width - side.min(self.width)).max(1);
        let sx = (self.id as usize * 4) % span;
        let sy = self.height / 2 - side / 2;
        if (sx..sx + side).contains(&x) && (sy..sy + side).contains(&y) {
            [235, 128, 128]
        } else {
            BARS_YUV[x * 8 / self.width.max(1)]
        }
    }

    fn render(&mut self) {
        let (w, h) = (self.width, self.height);
        for y in 0..h {
            for x in (0..w).step_by(2) {
                let [y0, u, v] = self.yuv_at(x, y);
                let y1 = self.yuv_at(x + 1, y)[0];
                match self.format {
                    PixelFormat::Yuyv => {
                        self.buf[y * w * 2 + x * 2..][..4].copy_from_slice(&[y0, u, y1, v])
                    }
                    PixelFormat::Nv12 => {
                        self.buf[y * w + x] = y0;
                        self.buf[y * w + x + 1] = y1;
                        if y % 2 == 0 {
                            self.buf[w * h + (y / 2) * w + x..][..2].copy_from_slice(&[u, v]);
                        }
                    }
                    _ => self.buf[y * w + x..][..2].copy_from_slice(&[y0, y1]),
                }
            }
        }
    }
}

impl Source for SyntheticSource {
    fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        if self.frames.is_some_and(|n| self.id >= n) {
            return Ok(None);
        }
        if self.away_until.is_some() {
            return Err(self.lost("scripted fault: camera away"));
        }
        let mut kind = None;
        if let Some(fault) = self.faults.last().copied()
            && self.id >= fault.after
        {
            self.faults.pop();
            if fault.kind == FaultKind::Lost {
                let away = Duration::try_from_secs_f64(fault.seconds).unwrap_or_default();
                self.away_until = Some(Instant::now() + away);
                return Err(self.lost("scripted fault: camera gone"));
            }
            kind = Some(fault.kind);
        }
        if let Some(interval) = self.interval {
            let due = self.start + interval * self.id.min(u32::MAX.into()) as u32;
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        self.render();
        let id = self.id;
        self.id += 1;
        let (data, height) = match kind {
            Some(FaultKind::Truncated) => (&self.buf[..self.buf.len() / 2], self.height),
            // The buffer holds twice the rows the frame claims.
            Some(FaultKind::WrongSize) => (&self.buf[..], self.height / 2),
            _ => (&self.buf[..], self.height),
        };
        Ok(Some(Frame {
            id,
            timestamp_us: self.start.elapsed().as_micros() as u64,
            format: self.format,
            width: self.width,
            height,
            stride: self.format.min_stride(self.width),
            data,
            origin: "synthetic",
        }))
    }

    fn reopen(&mut self) -> Result<(), CaptureError> {
        match self.away_until {
            Some(t) if Instant::now() < t => Err(self.lost("scripted fault: still away")),
            _ => {
                self.away_until = None;
                Ok(())
            }
        }
    }

    fn describe(&self) -> String {
        format!("synthetic {}x{} {}", self.width, self.height, self.format)
    }
}
