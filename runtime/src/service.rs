//! The running service: frames from the source through the detectors to the outputs, until the
//! source ends or a signal says stop.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::capture::{self, CaptureError, Source};
use crate::config::{Config, rect_corners};
use crate::detect::{DetectError, Detection, Detections, Detector};
use crate::emit::{Event, FrameRecord, Inference, Motion, SocketServer, StageLatency};
use crate::imgproc::Image;
use crate::imgproc::filter::Border;
use crate::imgproc::geometry::{self, Interpolation};
use crate::imgproc::motion::{MotionGate, MotionResult};
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
    /// An imaging stage (rectification, motion gate) failed on a frame.
    #[error("imaging: {0}")]
    Imaging(String),
    /// Annotated frames could not be written: check the folder is writable and has space.
    #[error("{path}: cannot write annotated frame: {source}")]
    Annotate {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The JSON-lines file could not be opened or written: check the path and free space.
    #[error("{path}: cannot write results: {source}")]
    Output {
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

/// Classic imaging before the detectors: rectification, then the motion gate.
struct Imaging {
    /// Homography from the source to the rectified image, and the rectified size.
    rectify: Option<([[f64; 3]; 3], usize, usize)>,
    rectified: Image,
    motion: Option<MotionGate>,
    moving: bool,
}

/// The loaded pipeline: a source, its detectors and outputs.
pub struct Pipeline {
    source: Box<dyn Source>,
    imaging: Imaging,
    detectors: Vec<Detector>,
    /// Where each detector's class ids start in the combined label table.
    class_offsets: Vec<u16>,
    labels: Vec<String>,
    socket: Option<SocketServer>,
    jsonl: Option<(PathBuf, std::io::BufWriter<std::fs::File>)>,
    annotated_dir: Option<PathBuf>,
    print: bool,
    rgb: Image,
    motion: MotionResult,
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
        let imaging = Imaging {
            rectify: match &config.imaging.rectify {
                Some(r) => {
                    let m = geometry::get_perspective_transform(&r.quad, &rect_corners(r.size))
                        .map_err(|e| ServiceError::Imaging(e.to_string()))?;
                    Some((m, r.size[0], r.size[1]))
                }
                None => None,
            },
            rectified: Image::new(0, 0, 3),
            motion: match &config.imaging.motion {
                Some(m) => Some(
                    MotionGate::new(m.clone()).map_err(|e| ServiceError::Imaging(e.to_string()))?,
                ),
                None => None,
            },
            moving: false,
        };
        let source = capture::open(&config.source, |p| config.resolve(p))?;
        let socket = match &config.output.socket {
            Some(s) => {
                let mut s = s.clone();
                s.path = config.resolve(&s.path);
                Some(SocketServer::bind(&s).map_err(|e| ServiceError::Socket(e.to_string()))?)
            }
            None => None,
        };
        let jsonl = match &config.output.jsonl {
            Some(p) => {
                let path = config.resolve(p);
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|source| ServiceError::Output {
                        path: path.clone(),
                        source,
                    })?;
                Some((path, std::io::BufWriter::new(file)))
            }
            None => None,
        };
        Ok(Self {
            source,
            imaging,
            jsonl,
            detectors,
            class_offsets,
            labels,
            socket,
            annotated_dir,
            print: config.output.print,
            rgb: Image::new(0, 0, 3),
            motion: MotionResult::default(),
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
        let mut origin = String::new();
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
            let (id, timestamp_us) = (frame.id, frame.timestamp_us);
            origin.clear();
            origin.push_str(frame.origin);
            let latency = StageLatency {
                capture: t0.elapsed().as_micros() as u32,
                ..Default::default()
            };
            self.process(id, timestamp_us, latency, &origin, &mut summary)?;
        }
        if let Some(socket) = self.socket.take() {
            socket.shutdown();
        }
        if let Some((path, file)) = &mut self.jsonl {
            file.flush().map_err(|source| ServiceError::Output {
                path: path.clone(),
                source,
            })?;
        }
        Ok(summary)
    }

    /// Imaging, detection and outputs for the frame in `self.rgb`.
    fn process(
        &mut self,
        id: u64,
        timestamp_us: u64,
        mut latency: StageLatency,
        origin: &str,
        summary: &mut RunSummary,
    ) -> Result<(), ServiceError> {
        let t0 = Instant::now();
        let image = match self.imaging.rectify {
            Some((m, w, h)) => {
                geometry::warp_perspective(
                    &self.rgb,
                    &m,
                    w,
                    h,
                    Interpolation::Linear,
                    Border::Constant(0),
                    &mut self.imaging.rectified,
                )
                .map_err(|e| ServiceError::Imaging(e.to_string()))?;
                &mut self.imaging.rectified
            }
            None => &mut self.rgb,
        };
        let mut events: heapless::Vec<Event, 2> = heapless::Vec::new();
        let run_detectors = match &mut self.imaging.motion {
            Some(gate) => {
                gate.update(image, &mut self.motion)
                    .map_err(|e| ServiceError::Imaging(e.to_string()))?;
                if self.motion.moving != self.imaging.moving {
                    self.imaging.moving = self.motion.moving;
                    let _ = events.push(if self.motion.moving {
                        Event::MotionStarted
                    } else {
                        Event::MotionStopped
                    });
                }
                self.motion.moving
            }
            None => true,
        };
        latency.preprocess += t0.elapsed().as_micros() as u32;
        let mut dropped = 0u32;
        self.detections.clear();
        if run_detectors {
            for (detector, offset) in self.detectors.iter_mut().zip(&self.class_offsets) {
                let times = detector.detect(image, &mut self.per_detector)?;
                latency.preprocess += times.preprocess_us as u32;
                latency.inference += times.inference_us as u32;
                latency.postprocess += times.postprocess_us as u32;
                for d in &self.per_detector {
                    if self
                        .detections
                        .push(Detection {
                            class_id: d.class_id + offset,
                            ..*d
                        })
                        .is_err()
                    {
                        dropped += 1;
                    }
                }
            }
        }
        summary.frames += 1;
        summary.detections += self.detections.len() as u64;
        let record = FrameRecord {
            frame_id: id,
            timestamp_us,
            width: image.width as u32,
            height: image.height as u32,
            latency,
            inference: if run_detectors {
                Inference::Ran
            } else {
                Inference::Skipped
            },
            detections: &self.detections,
            dropped_detections: dropped,
            labels: &self.labels,
            motion: self.imaging.motion.as_ref().map(|_| Motion {
                area: self.motion.area,
                regions: &self.motion.regions,
            }),
            source: None,
            events: &events,
        };
        if self.socket.is_some() || self.jsonl.is_some() {
            record.write_line(&mut self.line);
        }
        if let Some(socket) = &self.socket {
            socket.publish(&self.line);
        }
        if let Some((path, file)) = &mut self.jsonl {
            file.write_all(&self.line)
                .map_err(|source| ServiceError::Output {
                    path: path.clone(),
                    source,
                })?;
        }
        if self.print {
            print_frame(id, origin, &self.detections, &self.labels);
        }
        if let Some(dir) = &self.annotated_dir {
            let name = std::path::Path::new(origin)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| format!("frame-{id:06}"));
            let path = dir.join(format!("{name}.png"));
            let labels = &self.labels;
            overlay::draw_detections(image, &self.detections, |c| {
                labels.get(c as usize).map_or("?", String::as_str)
            });
            overlay::save_png(image, &path)
                .map_err(|source| ServiceError::Annotate { path, source })?;
        }
        Ok(())
    }
}

fn print_frame(id: u64, origin: &str, detections: &[Detection], labels: &[String]) {
    let short = std::path::Path::new(origin)
        .file_name()
        .map_or(origin.into(), |n| n.to_string_lossy());
    if detections.is_empty() {
        println!("{id:>6}  {short:<28} (nothing)");
    }
    for d in detections {
        let label = labels.get(d.class_id as usize).map_or("?", String::as_str);
        println!(
            "{id:>6}  {short:<28} {label:<14} {:>6.3}  {:.0} {:.0} {:.0} {:.0}",
            d.score, d.bbox.x1, d.bbox.y1, d.bbox.x2, d.bbox.y2
        );
    }
}
