//! The running service: frames from the source through the imaging stages and detectors to
//! the outputs, until the source ends or a signal says stop. SIGHUP reloads the config.

mod systemd;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub use systemd::Notifier;

use crate::capture::{self, CaptureError, Source};
use crate::config::{Config, rect_corners};
use crate::detect::classify::{Classifier, ClassifyError, TopK};
use crate::detect::{Classified, DetectError, Detection, Detections, Detector, Extras};
use crate::emit::{
    Event, FrameRecord, HttpServer, Inference, Metrics, Motion, MqttOutput, SocketServer,
    SourceNotice, SourceState, SourceStatus, StageLatency, models_line,
};
use crate::framebuffer::Framebuffer;
use crate::imgproc::Image;
use crate::imgproc::filter::Border;
use crate::imgproc::geometry::{self, Interpolation};
use crate::imgproc::motion::{MotionGate, MotionResult};
use crate::overlay;
use crate::snapshot::Snapshots;
use crate::track::{self, Tracker};
use crate::update::{Health, UpdateError, Updater};

/// Why the service stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error(transparent)]
    Detect(#[from] DetectError),
    #[error(transparent)]
    Classify(#[from] ClassifyError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
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
    #[error(transparent)]
    Mqtt(#[from] crate::emit::MqttError),
    #[error(transparent)]
    Http(#[from] crate::emit::HttpError),
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    #[error(transparent)]
    Framebuffer(#[from] crate::framebuffer::FramebufferError),
    #[error(transparent)]
    Update(#[from] UpdateError),
    /// The JSON-lines file could not be opened or written: check the path and free space.
    #[error("{path}: cannot write results: {source}")]
    Output {
        path: PathBuf,
        source: std::io::Error,
    },
}

static STOP: AtomicBool = AtomicBool::new(false);
static RELOAD: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(signal: nix::libc::c_int) {
    if signal == nix::libc::SIGHUP {
        RELOAD.store(true, Ordering::Relaxed);
    } else {
        STOP.store(true, Ordering::Relaxed);
    }
}

/// SIGTERM and SIGINT finish the frame in flight and stop cleanly; SIGHUP reloads the config.
pub fn install_signal_handlers() -> nix::Result<()> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        // SAFETY: the handler only stores to atomics, which is async-signal-safe.
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
    /// Reloads applied, and reloads refused (the running config was kept).
    pub reloads: u64,
    pub failed_reloads: u64,
    /// Times the camera was lost and reopened.
    pub reconnects: u32,
}

/// Loads `config_path`, runs its pipeline until the source ends or SIGTERM, reloading on SIGHUP.
pub fn serve(config_path: &Path) -> Result<RunSummary, ServiceError> {
    // First of all, so a SIGTERM while the config is checked or the models load still ends
    // in a clean exit (the run loop sees it before the first frame).
    install_signal_handlers().map_err(|e| ServiceError::Imaging(format!("signals: {e}")))?;
    let config = Config::load(config_path)?;
    use_board(&config.board);
    let mut notifier = Notifier::from_env();
    let (mut updater, config) = match config.update {
        Some(_) => {
            let (updater, config) = Updater::open(config)?;
            (Some(updater), config)
        }
        None => (None, config),
    };
    let mut pipeline = match (Pipeline::open(&config), &mut updater) {
        (Ok(p), _) => p,
        // A bundle that once passed its health check and now does not load (a runtime
        // upgrade, a damaged disk) must not keep the service from starting.
        (Err(e @ (ServiceError::Detect(_) | ServiceError::Classify(_))), Some(u))
            if u.runs_bundle() =>
        {
            Pipeline::open(&u.fall_back(format!("the bundle does not load: {e}")))?
        }
        (Err(e), _) => return Err(e),
    };
    pipeline.updater = updater;
    notifier.ready();
    let summary = pipeline.run(&mut notifier, Some(config_path));
    notifier.stopping();
    summary
}

/// Runs tract as `board` says: its CPU kind (unless the environment sets one) and threads.
/// Call it before the first model loads, while the process has one thread.
pub fn use_board(board: &crate::config::Board) {
    if let Some(kind) = &board.tract_cpu
        && std::env::var_os("TRACT_CPU_AARCH64_KIND").is_none()
    {
        // SAFETY: callers are still single-threaded: no other thread reads the environment
        // yet, and tract reads this knob when the first model is loaded.
        unsafe { std::env::set_var("TRACT_CPU_AARCH64_KIND", kind) };
    }
    use_threads(board.threads);
}

/// Runs tract's matrix products on a pool of `threads` threads, or on the calling thread alone
/// for 1 (and 0). tract keeps one executor per process.
pub fn use_threads(threads: usize) {
    tract_linalg::multithread::set_default_executor(executor(threads));
}

/// The executor [`use_threads`] installs: benchmarks run plans on it to time them as the
/// service runs them. The runtime's kernels share their work with their own helper threads
/// ([`crate::kernels::share`]); tract splits an op over its pool only where the hand-over
/// (tens of microseconds) is worth it: element-wise ops from [`TRACT_SPLIT_ELEMENTS`] values
/// (tract's default 32 768: YOLOv8n-320's seven residual additions took 60 µs on one thread,
/// 260–800 µs on two), matrix products from [`TRACT_SPLIT_MACS`] multiply-adds whatever their
/// panels (tract's default also splits any of 64 panels: YOLOv8n-320's two box-distribution
/// products, 134 K multiply-adds each, took 77–97 µs split, 30–34 µs not).
pub fn executor(threads: usize) -> tract_linalg::multithread::Executor {
    use tract_linalg::multithread::{
        Executor, set_threading_element_threshold, set_threading_mac_threshold,
        set_threading_panel_threshold,
    };
    match threads {
        0 | 1 => Executor::SingleThread,
        n => {
            set_threading_element_threshold(TRACT_SPLIT_ELEMENTS);
            set_threading_panel_threshold(usize::MAX);
            set_threading_mac_threshold(TRACT_SPLIT_MACS);
            Executor::multithread_with_name(n, "ocelli-infer")
        }
    }
}

/// Values from which tract splits an element-wise op over its pool ([`executor`]).
pub const TRACT_SPLIT_ELEMENTS: usize = 1 << 20;

/// Multiply-adds from which tract splits a matrix product over its pool ([`executor`]).
pub const TRACT_SPLIT_MACS: usize = 1 << 21;

/// Loads every detector and classifier of `config` as a run would, which checks each model,
/// its labels and its settings together, and drops them.
pub fn check_models(config: &Config) -> Result<(), ServiceError> {
    Detectors::load(config).map(drop)
}

/// The detectors, the classifiers run on their detections, and the one label table they
/// share in the stream.
struct Detectors {
    detectors: Vec<Detector>,
    /// Where each detector's class ids start in the combined label table.
    class_offsets: Vec<u16>,
    classifiers: Vec<Cascade>,
    /// The classifiers' names, as the stream gives them.
    classifier_names: Vec<String>,
    labels: Vec<String>,
}

/// A classifier and what it runs on in each frame.
struct Cascade {
    classifier: Classifier,
    /// The detection classes it crops (ids in the label table); empty: all.
    classes: Vec<u16>,
    /// Where its labels start in the label table.
    offset: u16,
    /// Crops it classified this frame.
    crops: usize,
}

impl Detectors {
    fn load(config: &Config) -> Result<Self, ServiceError> {
        let detectors = config
            .detectors
            .iter()
            .map(|d| Detector::load(d, |p| config.resolve(p)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut labels = Vec::new();
        let mut class_offsets = Vec::new();
        for d in &detectors {
            class_offsets.push(labels.len() as u16);
            labels.extend_from_slice(d.labels.names());
        }
        let detected = labels.len();
        let mut classifiers = Vec::new();
        for cfg in &config.classifiers {
            let classifier = Classifier::load(cfg, |p| config.resolve(p))?;
            let classes = classifier
                .classes
                .iter()
                .map(|name| {
                    labels[..detected]
                        .iter()
                        .position(|l| l == name)
                        .map(|id| id as u16)
                        .ok_or_else(|| ClassifyError::Config {
                            name: classifier.name.clone(),
                            field: "classes",
                            reason: format!("no detector labels `{name}`"),
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let offset = labels.len() as u16;
            labels.extend_from_slice(&classifier.labels);
            classifiers.push(Cascade {
                classifier,
                classes,
                offset,
                crops: 0,
            });
        }
        Ok(Self {
            detectors,
            class_offsets,
            classifier_names: classifiers
                .iter()
                .map(|c| c.classifier.name.clone())
                .collect(),
            classifiers,
            labels,
        })
    }

    /// Runs the classifiers on the crops of `detections` in `image`, best-scored detections
    /// first, each within its per-frame budget; returns how many crops the budgets skipped.
    fn classify(
        &mut self,
        image: &Image,
        detections: &Detections,
        extras: &mut Extras,
    ) -> Result<u32, ServiceError> {
        let mut order: heapless::Vec<u16, { crate::detect::MAX_DETECTIONS }> =
            (0..detections.len() as u16).collect();
        order.sort_unstable_by(|&a, &b| {
            let score = |i: u16| detections[usize::from(i)].score;
            score(b).total_cmp(&score(a)).then(a.cmp(&b))
        });
        self.classifiers.iter_mut().for_each(|c| c.crops = 0);
        let mut skipped = 0;
        let mut top = TopK::new();
        let mut found: heapless::Vec<Classified, 64> = heapless::Vec::new();
        for i in order.into_iter().map(usize::from) {
            let d = &detections[i];
            found.clear();
            for (k, c) in self.classifiers.iter_mut().enumerate() {
                if !(c.classes.is_empty() || c.classes.contains(&d.class_id)) {
                    continue;
                }
                if c.crops == c.classifier.max_crops {
                    skipped += 1;
                    continue;
                }
                c.crops += 1;
                c.classifier.classify(image, &d.bbox, &mut top)?;
                for &(label, score) in &top {
                    let _ = found.push(Classified {
                        classifier: k as u8,
                        label: c.offset + label,
                        score,
                    });
                }
            }
            if !found.is_empty() {
                extras.set_classes(i, found.iter().copied());
            }
        }
        Ok(skipped)
    }
}

/// Classic imaging before the detectors: rectification, then the motion gate.
struct Imaging {
    /// Homography from the source to the rectified image, and the rectified size.
    rectify: Option<([[f64; 3]; 3], usize, usize)>,
    rectified: Image,
    motion: Option<MotionGate>,
    moving: bool,
}

impl Imaging {
    fn new(config: &Config) -> Result<Self, ServiceError> {
        let imaging = |e: &dyn std::fmt::Display| ServiceError::Imaging(e.to_string());
        Ok(Self {
            rectify: match &config.imaging.rectify {
                Some(r) => {
                    let m = geometry::get_perspective_transform(&r.quad, &rect_corners(r.size))
                        .map_err(|e| imaging(&e))?;
                    Some((m, r.size[0], r.size[1]))
                }
                None => None,
            },
            rectified: Image::new(0, 0, 3),
            motion: match &config.imaging.motion {
                Some(m) => Some(MotionGate::new(m.clone()).map_err(|e| imaging(&e))?),
                None => None,
            },
            moving: false,
        })
    }
}

/// Where results go besides the socket, which outlives reloads that keep its settings.
struct Outputs {
    /// Unbuffered: each frame's line is one append, readable at once and not lost with a
    /// killed process (a watchdog kill). Not synced: a power cut can lose the kernel's cache.
    jsonl: Option<(PathBuf, std::fs::File)>,
    annotated_dir: Option<PathBuf>,
    snapshots: Option<Snapshots>,
    framebuffer: Option<Framebuffer>,
    print: bool,
}

impl Outputs {
    fn open(config: &Config) -> Result<Self, ServiceError> {
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
                Some((path, file))
            }
            None => None,
        };
        let snapshots = match &config.output.snapshots {
            Some(s) => Some(Snapshots::open(s, config.resolve(&s.dir))?),
            None => None,
        };
        let framebuffer = match &config.output.framebuffer {
            Some(f) => Some(Framebuffer::open(f, config.resolve(&f.device))?),
            None => None,
        };
        Ok(Self {
            jsonl,
            annotated_dir,
            snapshots,
            framebuffer,
            print: config.output.print,
        })
    }
}

fn frame_timeout(config: &Config) -> Duration {
    Duration::from_secs_f64(config.reconnect.frame_timeout_s)
}

fn bind_socket(config: &Config) -> Result<Option<SocketServer>, ServiceError> {
    match &config.output.socket {
        Some(s) => {
            let mut s = s.clone();
            s.path = config.resolve(&s.path);
            Ok(Some(
                SocketServer::bind(&s).map_err(|e| ServiceError::Socket(e.to_string()))?,
            ))
        }
        None => Ok(None),
    }
}

/// The network outputs: the MQTT output and the HTTP endpoint. They keep running across reloads;
/// changes to their settings take effect on restart (the spool must not be opened twice).
struct NetOutputs {
    mqtt: Option<MqttOutput>,
    http: Option<HttpServer>,
}

impl NetOutputs {
    fn open(config: &Config) -> Result<Self, ServiceError> {
        let mqtt = match &config.output.mqtt {
            Some(m) => Some(MqttOutput::start(m, |p| config.resolve(p))?),
            None => None,
        };
        let http = match &config.output.http {
            Some(h) => {
                let metrics = Metrics::new(mqtt.as_ref().map(|m| m.stats().clone()));
                Some(HttpServer::start(h, std::sync::Arc::new(metrics))?)
            }
            None => None,
        };
        Ok(Self { mqtt, http })
    }

    fn shutdown(&mut self) {
        if let Some(http) = self.http.take() {
            http.shutdown();
        }
        if let Some(mqtt) = self.mqtt.take() {
            mqtt.shutdown();
        }
    }
}

/// The loaded pipeline: a source, imaging stages, detectors and outputs.
pub struct Pipeline {
    config: Config,
    source: Box<dyn Source>,
    imaging: Imaging,
    detectors: Detectors,
    socket: Option<SocketServer>,
    outputs: Outputs,
    net: NetOutputs,
    rgb: Image,
    motion: MotionResult,
    per_detector: Detections,
    detections: Detections,
    /// Masks, keypoints and track ids of `detections`.
    extras: Extras,
    tracker: Option<Tracker>,
    line: Vec<u8>,
    /// Reopenings since start, and whether the next frame is the first after one.
    reconnects: u32,
    restored: bool,
    /// Fleet updates, when the config has an `[update]` table.
    updater: Option<Updater>,
}

impl Pipeline {
    /// Loads every detector, opens the source and binds the socket.
    pub fn open(config: &Config) -> Result<Self, ServiceError> {
        let detectors = Detectors::load(config)?;
        let imaging = Imaging::new(config)?;
        let outputs = Outputs::open(config)?;
        let source = capture::open(&config.source, frame_timeout(config), |p| config.resolve(p))?;
        // What a camera agreed to, which may differ from what the config asked for.
        if matches!(config.source, crate::config::SourceConfig::V4l2 { .. }) {
            eprintln!("ocelli: source {}", source.describe());
        }
        let socket = bind_socket(config)?;
        let net = NetOutputs::open(config)?;
        let pipeline = Self {
            config: config.clone(),
            source,
            imaging,
            detectors,
            socket,
            outputs,
            net,
            rgb: Image::new(0, 0, 3),
            motion: MotionResult::default(),
            per_detector: Detections::new(),
            detections: Detections::new(),
            extras: Extras::new(),
            tracker: config.track.as_ref().map(Tracker::new),
            line: Vec::with_capacity(4096),
            reconnects: 0,
            restored: false,
            updater: None,
        };
        pipeline.announce_models();
        Ok(pipeline)
    }

    /// Tells the stream which models run: the socket's clients (new ones first thing) and the
    /// broker (retained).
    fn announce_models(&self) {
        let d = &self.detectors;
        let models: Vec<_> = d
            .detectors
            .iter()
            .map(|d| d.model.clone())
            .chain(d.classifiers.iter().map(|c| c.classifier.model.clone()))
            .collect();
        let line = models_line(&models);
        if let Some(socket) = &self.socket {
            socket.announce(&line);
        }
        if let Some(mqtt) = &self.net.mqtt {
            mqtt.announce(&line);
        }
    }

    /// Switches to `config`. Everything new is loaded and verified first (models, imaging,
    /// outputs, and the source and socket when their settings changed); on any error the
    /// running pipeline is untouched.
    pub fn reload(&mut self, config: Config) -> Result<(), ServiceError> {
        let detectors = Detectors::load(&config)?;
        let imaging = Imaging::new(&config)?;
        let mut outputs = Outputs::open(&config)?;
        let source = match config.source == self.config.source {
            true => None,
            false => Some(capture::open(
                &config.source,
                frame_timeout(&config),
                |p| config.resolve(p),
            )?),
        };
        let socket = match config.output.socket == self.config.output.socket {
            true => None,
            false => Some(bind_socket(&config)?),
        };
        std::mem::swap(&mut self.outputs, &mut outputs);
        self.detectors = detectors;
        self.imaging = imaging;
        if config.track != self.config.track {
            self.tracker = config.track.as_ref().map(Tracker::new);
        }
        if let Some(source) = source {
            self.source = source;
        }
        if let Some(socket) = socket
            && let Some(old) = std::mem::replace(&mut self.socket, socket)
        {
            old.shutdown();
        }
        if config.board.threads != self.config.board.threads {
            use_threads(config.board.threads);
        }
        if (&config.output.mqtt, &config.output.http)
            != (&self.config.output.mqtt, &self.config.output.http)
        {
            eprintln!("ocelli: output.mqtt and output.http changes take effect on restart");
        }
        if config.update != self.config.update {
            eprintln!("ocelli: update changes take effect on restart");
        }
        self.config = config;
        self.announce_models();
        Ok(())
    }

    /// Runs until the source ends or a stop is requested; with `config_path`, SIGHUP reloads it.
    pub fn run(
        &mut self,
        notifier: &mut Notifier,
        config_path: Option<&Path>,
    ) -> Result<RunSummary, ServiceError> {
        let mut summary = RunSummary::default();
        let mut origin = String::new();
        let result = loop {
            if stop_requested() {
                break Ok(());
            }
            if let Some(path) = config_path
                && RELOAD.swap(false, Ordering::Relaxed)
            {
                notifier.reloading();
                match self.reload_file(path) {
                    Ok(()) => {
                        eprintln!("ocelli: reloaded {}", path.display());
                        summary.reloads += 1;
                    }
                    Err(e) => {
                        eprintln!("ocelli: reload refused, keeping the running config: {e}");
                        summary.failed_reloads += 1;
                    }
                }
                notifier.ready();
            }
            self.take_update(notifier);
            notifier.watchdog();
            let t0 = Instant::now();
            let frame = match self.source.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break Ok(()),
                Err(e) if e.is_frame_local() => {
                    eprintln!("ocelli: {e}; frame dropped");
                    summary.bad_frames += 1;
                    continue;
                }
                Err(e) if e.is_lost() => match self.recover(&e, notifier, summary.bad_frames) {
                    Ok(()) => {
                        summary.reconnects = self.reconnects;
                        continue;
                    }
                    Err(e) => break Err(e),
                },
                Err(e) => break Err(e.into()),
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
            if summary.frames == 0 && self.outputs.print {
                println!(
                    "{:>6}  {:<28} {:<14} {:>6}  box (x1 y1 x2 y2)",
                    "frame", "source", "label", "score"
                );
            }
            let processed = self.process(id, timestamp_us, latency, &origin, &mut summary);
            let health = match &mut self.updater {
                Some(u) => u.observe(processed.as_ref().map(|t| *t).map_err(|e| e.to_string())),
                None => Health::Pending,
            };
            if let Health::RollBack(previous) = health {
                notifier.reloading();
                if let Err(e) = self.reload(*previous) {
                    break Err(e);
                }
                notifier.ready();
            } else if let Err(e) = processed {
                break Err(e);
            }
        };
        // The socket is removed however the loop ended.
        if let Some(socket) = self.socket.take() {
            socket.shutdown();
        }
        self.net.shutdown();
        result.map(|()| summary)
    }

    /// SIGHUP: reloads the config file, with the running fleet bundle's detectors if any.
    fn reload_file(&mut self, path: &Path) -> Result<(), ServiceError> {
        let base = Config::load(path)?;
        let config = match &self.updater {
            Some(u) => u.merge(&base).map_err(UpdateError::Fragment)?,
            None => base.clone(),
        };
        self.reload(config)?;
        if let Some(u) = &mut self.updater {
            u.reloaded(base);
        }
        Ok(())
    }

    /// Applies the next fleet update waiting, if any: the new detectors load while the old
    /// ones are still in place, then the health check starts.
    fn take_update(&mut self, notifier: &mut Notifier) {
        let Some(mut updater) = self.updater.take() else {
            return;
        };
        if let Some((path, from)) = updater.next_bundle()
            && let Some(config) =
                prepare_watched(notifier, || updater.prepare(&path, &from, &self.config))
        {
            notifier.reloading();
            match self.reload(config) {
                Ok(()) => updater.swapped(Ok(&self.config)),
                Err(e) => updater.swapped(Err(e.to_string())),
            }
            notifier.ready();
        }
        self.updater = Some(updater);
    }

    /// Reopens a lost camera with the configured backoff, telling clients before each
    /// attempt; the socket and other outputs stay up. Returns once the camera is back or a
    /// stop is requested.
    fn recover(
        &mut self,
        lost: &CaptureError,
        notifier: &mut Notifier,
        bad_frames: u64,
    ) -> Result<(), ServiceError> {
        eprintln!("ocelli: {lost}; reconnecting");
        notifier.status("camera lost, reconnecting");
        let mut error = lost.to_string();
        let mut state = SourceState::Lost;
        for attempt in 0u32.. {
            let delay = self.config.reconnect.delay(attempt as usize);
            let status = SourceStatus {
                state,
                reconnects: self.reconnects,
                bad_frames,
            };
            let notice = SourceNotice {
                status,
                attempt,
                retry_in_ms: delay.as_millis() as u64,
                error: &error,
            };
            notice.write_line(&mut self.line);
            emit_line(&self.socket, &mut self.outputs, &self.line)?;
            // Wait in small steps: SIGTERM is honoured and the watchdog fed throughout.
            let until = Instant::now() + delay;
            while Instant::now() < until {
                if stop_requested() {
                    return Ok(());
                }
                notifier.watchdog();
                std::thread::sleep((until - Instant::now()).min(Duration::from_millis(50)));
            }
            state = SourceState::Reconnecting;
            match self.source.reopen() {
                Ok(()) => {
                    self.reconnects += 1;
                    self.restored = true;
                    eprintln!("ocelli: camera back after {} attempt(s)", attempt + 1);
                    eprintln!("ocelli: source {}", self.source.describe());
                    notifier.status("running");
                    return Ok(());
                }
                Err(e) => error = e.to_string(),
            }
        }
        unreachable!("the attempts never run out")
    }

    /// Imaging, detection and outputs for the frame in `self.rgb`; the inference time in µs
    /// when the detectors ran.
    fn process(
        &mut self,
        id: u64,
        timestamp_us: u64,
        mut latency: StageLatency,
        origin: &str,
        summary: &mut RunSummary,
    ) -> Result<Option<u32>, ServiceError> {
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
        let mut events: heapless::Vec<Event, { track::MAX_EVENTS + 3 }> = heapless::Vec::new();
        if std::mem::take(&mut self.restored) {
            let _ = events.push(Event::SourceRestored);
        }
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
        self.extras.reset(image.width, image.height);
        if run_detectors {
            let d = &mut self.detectors;
            for (detector, offset) in d.detectors.iter_mut().zip(&d.class_offsets) {
                let times = detector.detect(image, &mut self.per_detector)?;
                latency.preprocess += times.preprocess_us as u32;
                latency.inference += times.inference_us as u32;
                latency.postprocess += times.postprocess_us as u32;
                for (i, d) in self.per_detector.iter().enumerate() {
                    if self
                        .detections
                        .push(Detection {
                            class_id: d.class_id + offset,
                            ..*d
                        })
                        .is_err()
                    {
                        dropped += 1;
                    } else {
                        self.extras.push_from(detector.extras(), i);
                    }
                }
            }
        }
        // A frame the motion gate skipped says nothing about where objects went.
        if run_detectors && let Some(tracker) = &mut self.tracker {
            let t0 = Instant::now();
            let (w, h) = (image.width, image.height);
            tracker.update(w, h, &mut self.detections, &mut self.extras, &mut events);
            latency.postprocess += t0.elapsed().as_micros() as u32;
        }
        let mut unclassified = 0;
        if run_detectors && !self.detectors.classifiers.is_empty() {
            let t0 = Instant::now();
            unclassified = self
                .detectors
                .classify(image, &self.detections, &mut self.extras)?;
            latency.inference += t0.elapsed().as_micros() as u32;
        }
        summary.frames += 1;
        summary.detections += self.detections.len() as u64;
        let labels = &self.detectors.labels;
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
            extras: Some(&self.extras),
            dropped_detections: dropped,
            labels,
            classifiers: &self.detectors.classifier_names,
            unclassified,
            motion: self.imaging.motion.as_ref().map(|_| Motion {
                area: self.motion.area,
                regions: &self.motion.regions,
            }),
            source: Some(SourceStatus {
                state: SourceState::Ok,
                reconnects: self.reconnects,
                bad_frames: summary.bad_frames,
            }),
            events: &events,
        };
        let t_emit = Instant::now();
        if self.socket.is_some() || self.outputs.jsonl.is_some() || self.net.mqtt.is_some() {
            record.write_line(&mut self.line);
            emit_line(&self.socket, &mut self.outputs, &self.line)?;
            if let Some(mqtt) = &self.net.mqtt {
                mqtt.publish(&self.line);
            }
        }
        let emit_us = t_emit.elapsed().as_micros() as u32;
        let labels = &self.detectors.labels;
        if self.outputs.print {
            print_frame(id, origin, &self.detections, &self.extras, labels);
        }
        let snapshot = match &mut self.outputs.snapshots {
            Some(s) => s.due(timestamp_us, &events),
            None => false,
        };
        let outputs = &mut self.outputs;
        let (detections, extras, tracker) = (&self.detections, &self.extras, &self.tracker);
        let annotate = |image: &mut Image| {
            overlay::draw_extras(image, detections, extras);
            overlay::draw_detections(image, detections, |i| {
                caption(detections, extras, labels, i)
            });
            if let Some(tracker) = tracker {
                overlay::draw_tracks(image, detections, extras, &tracker.config().zones);
            }
        };
        let annotated =
            outputs.annotated_dir.is_some() || outputs.framebuffer.is_some() || snapshot;
        if annotated {
            annotate(image);
        }
        if let Some(dir) = &outputs.annotated_dir {
            let name = Path::new(origin)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| format!("frame-{id:06}"));
            let path = dir.join(format!("{name}.png"));
            overlay::save_png(image, &path)
                .map_err(|source| ServiceError::Annotate { path, source })?;
        }
        if let Some(http) = &self.net.http {
            http.offer_frame(image, |copy| {
                if !annotated {
                    annotate(copy);
                }
            });
            let metrics = http.metrics();
            metrics.frame_done(&latency, emit_us);
            metrics.set_reconnects(self.reconnects);
            if let Some(socket) = &self.socket {
                metrics.set_socket_dropped(socket.stats().dropped_frames);
            }
        }
        // A full or read-only disk costs the snapshots, not the detections.
        if snapshot
            && let Some(s) = &mut outputs.snapshots
            && let Err(e) = s.save(timestamp_us, id, image)
        {
            eprintln!("ocelli: frame {id}: snapshot not saved: {e}");
        }
        if let Some(fb) = &mut outputs.framebuffer {
            fb.show(image)?;
        }
        Ok(run_detectors.then_some(latency.inference))
    }
}

/// Runs `prepare` (a bundle's verification and staging: hashing and writing up to
/// `max_bundle_mb`, which slow storage takes long over) on a thread of its own, feeding the
/// watchdog meanwhile so that systemd does not take a large bundle for a stalled pipeline.
fn prepare_watched<T: Send>(notifier: &mut Notifier, prepare: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        let job = s.spawn(prepare);
        while !job.is_finished() {
            notifier.watchdog();
            std::thread::sleep(Duration::from_millis(100));
        }
        job.join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Sends a line to the socket and the JSON-lines file.
fn emit_line(
    socket: &Option<SocketServer>,
    outputs: &mut Outputs,
    line: &[u8],
) -> Result<(), ServiceError> {
    if let Some(socket) = socket {
        socket.publish(line);
    }
    if let Some((path, file)) = &mut outputs.jsonl {
        file.write_all(line)
            .map_err(|source| ServiceError::Output {
                path: path.clone(),
                source,
            })?;
    }
    Ok(())
}

fn print_frame(
    id: u64,
    origin: &str,
    detections: &[Detection],
    extras: &Extras,
    labels: &[String],
) {
    let short = Path::new(origin)
        .file_name()
        .map_or(origin.into(), |n| n.to_string_lossy());
    if detections.is_empty() {
        println!("{id:>6}  {short:<28} (nothing)");
    }
    for (i, d) in detections.iter().enumerate() {
        let label = labels.get(d.class_id as usize).map_or("?", String::as_str);
        println!(
            "{id:>6}  {short:<28} {label:<14} {:>6.3}  {:.0} {:.0} {:.0} {:.0}{}",
            d.score,
            d.bbox.x1,
            d.bbox.y1,
            d.bbox.x2,
            d.bbox.y2,
            classes_text(extras.classes(i), labels)
        );
    }
}

/// `  [label score, ...]` for a detection's classifier labels; empty without any.
fn classes_text(classes: &[Classified], labels: &[String]) -> String {
    if classes.is_empty() {
        return String::new();
    }
    let each: Vec<String> = classes
        .iter()
        .map(|c| {
            let label = labels.get(usize::from(c.label)).map_or("?", String::as_str);
            format!("{label} {:.2}", c.score)
        })
        .collect();
    format!("  [{}]", each.join(", "))
}

/// What the overlay writes above detection `i`'s box: its label and score, then its
/// classifier labels.
fn caption(detections: &[Detection], extras: &Extras, labels: &[String], i: usize) -> String {
    let d = &detections[i];
    let label = labels.get(d.class_id as usize).map_or("?", String::as_str);
    format!(
        "{label} {:.2}{}",
        d.score,
        classes_text(extras.classes(i), labels)
    )
}
