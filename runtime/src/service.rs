//! The running service: frames from the source through the detectors to the outputs, until the
//! source ends or a signal says stop.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::capture::{self, CaptureError, Source};
use crate::config::Config;
use crate::detect::{DetectError, Detections, Detector};
use crate::emit::{FrameRecord, Inference, SocketServer, StageLatency};
use crate::imgproc::Image;
use crate::overlay;

/// Why the service stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error(transparent)]
    Detect(#[from] DetectError),
    /// The socket could not be bound: check the folder exists and is writable.
    #[error("socket: {0}")]
    Socket(String),
    /// Annotated frames could not be written: check the folder is writable and has space.
    #[error("{path}: cannot write annotated frame: {source}")]
    Annotate {
        path: PathBuf,
        source: std::io::Error,
    },
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: nix::libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Makes SIGTERM and SIGINT finish the frame in flight and stop cleanly.
pub fn install_signal_handlers() -> nix::Result<()> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(on_stop),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(sig, &action)? };
    }
    Ok(())
}

/// Whether a stop was requested.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// What a run did, for the caller's exit status and summary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunSummary {
    pub frames: u64,
    /// Frames dropped because they could not be decoded or converted.
    pub bad_frames: u64,
    pub detections: u64,
}

/// The loaded pipeline: a source, its detectors and outputs.
pub struct Pipeline {
    source: Box<dyn Source>,
    detectors: Vec<Detector>,
    /// Where each detector's class ids start in the combined label table.
    class_offsets: Vec<u16>,
    labels: Vec<String>,
    socket: Option<SocketServer>,
    annotated_dir: Option<PathBuf>,
    print: bool,
    rgb: Image,
    per_detector: Detections,
    detections: Detections,
    line: Vec<u8>,
}

impl Pipeline {
    /// Opens the source, loads every detector and binds the socket.
    pub fn open(config: &Config) -> Result<Self, ServiceError> {
        let detectors = config
            .detectors
            .iter()
            .map(|d| Detector::load(d, |p| config.resolve(p)))
            .collect::<Result<Vec<_>, _>>()?;
        // Detectors have their own label sets: the stream numbers classes in one table.
        let mut labels = Vec::new();
        let mut class_offsets = Vec::new();
        for d in &detectors {
            class_offsets.push(labels.len() as u16);
            labels.extend_from_slice(d.labels.names());
        }
        let annotated_dir = config
            .output
            .annotated_dir
            .as_ref()
            .map(|d| config.resolve(d));
        if let Some(dir) = &annotated_dir {
            std::fs::create_dir_all(dir).map_err(|source| ServiceError::Annotate {
                path: dir.clone(),
                source,
            })?;
        }
        let source = capture::open(&config.source, |p| config.resolve(p))?;
        let socket = match &config.output.socket {
            Some(s) => {
                let mut s = s.clone();
                s.path = config.resolve(&s.path);
                Some(SocketServer::bind(&s).map_err(|e| ServiceError::Socket(e.to_string()))?)
            }
            None => None,
        };
        Ok(Self {
            source,
            detectors,
            class_offsets,
            labels,
            socket,
            annotated_dir,
            print: config.output.print,
            rgb: Image::new(0, 0, 3),
            per_detector: Detections::new(),
            detections: Detections::new(),
            line: Vec::with_capacity(4096),
        })
    }

    /// Runs until the source ends or a stop is requested.
    pub fn run(&mut self) -> Result<RunSummary, ServiceError> {
        let mut summary = RunSummary::default();
        if self.print {
            println!(
                "{:>6}  {:<28} {:<14} {:>6}  box (x1 y1 x2 y2)",
                "frame", "source", "label", "score"
            );
        }
        while !stop_requested() {
            let t0 = Instant::now();
            let frame = match self.source.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) if e.is_frame_local() => {
                    eprintln!("ocelli: {e}; frame dropped");
                    summary.bad_frames += 1;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if let Err(e) = frame.to_rgb(&mut self.rgb) {
                eprintln!("ocelli: {e}; frame dropped");
                summary.bad_frames += 1;
                continue;
            }
            let (id, timestamp_us, origin) =
                (frame.id, frame.timestamp_us, frame.origin.to_string());
            let capture_us = t0.elapsed().as_micros() as u32;
            let mut latency = StageLatency {
                capture: capture_us,
                ..Default::default()
            };
            let mut dropped = 0u32;
            self.detections.clear();
            for (detector, offset) in self.detectors.iter_mut().zip(&self.class_offsets) {
                let times = detector.detect(&self.rgb, &mut self.per_detector)?;
                latency.preprocess += times.preprocess_us as u32;
                latency.inference += times.inference_us as u32;
                latency.postprocess += times.postprocess_us as u32;
                for d in &self.per_detector {
                    let d = crate::detect::Detection {
                        class_id: d.class_id + offset,
                        ..*d
                    };
                    if self.detections.push(d).is_err() {
                        dropped += 1;
                    }
                }
            }
            summary.frames += 1;
            summary.detections += self.detections.len() as u64;
            let record = FrameRecord {
                frame_id: id,
                timestamp_us,
                width: self.rgb.width as u32,
                height: self.rgb.height as u32,
                latency,
                inference: Inference::Ran,
                detections: &self.detections,
                dropped_detections: dropped,
                labels: &self.labels,
                motion: None,
                source: None,
                events: &[],
            };
            if let Some(socket) = &self.socket {
                record.write_line(&mut self.line);
                socket.publish(&self.line);
            }
            if self.print {
                self.print_frame(id, &origin);
            }
            if let Some(dir) = &self.annotated_dir {
                let name = std::path::Path::new(&origin)
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| format!("frame-{id:06}"));
                let path = dir.join(format!("{name}.png"));
                let labels = &self.labels;
                overlay::draw_detections(&mut self.rgb, &self.detections, |c| {
                    labels.get(c as usize).map_or("?", String::as_str)
                });
                overlay::save_png(&self.rgb, &path)
                    .map_err(|source| ServiceError::Annotate { path, source })?;
            }
        }
        if let Some(socket) = self.socket.take() {
            socket.shutdown();
        }
        Ok(summary)
    }

    fn print_frame(&self, id: u64, origin: &str) {
        let short = std::path::Path::new(origin)
            .file_name()
            .map_or(origin.into(), |n| n.to_string_lossy());
        if self.detections.is_empty() {
            println!("{id:>6}  {short:<28} (nothing)");
        }
        for d in &self.detections {
            let label = self
                .labels
                .get(d.class_id as usize)
                .map_or("?", String::as_str);
            println!(
                "{id:>6}  {short:<28} {label:<14} {:>6.3}  {:.0} {:.0} {:.0} {:.0}",
                d.score, d.bbox.x1, d.bbox.y1, d.bbox.x2, d.bbox.y2
            );
        }
    }
}
