//! A small HTTP endpoint: the latest annotated frame, a health check and Prometheus metrics.
//!
//! The pipeline only touches atomics ([`Metrics::frame_done`]) and, a few times a second, copies
//! the annotated frame into a reused buffer it takes with `try_lock`: it never waits on a
//! request. Requests are served one at a time on a thread of their own; the JPEG is encoded
//! there, on demand.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::mqtt::MqttStats;
use super::record::StageLatency;
use crate::imgproc::Image;

/// How often the pipeline refreshes the frame served at `/frame.jpg`.
pub const FRAME_EVERY: Duration = Duration::from_millis(200);
/// `/healthz` fails when no frame was processed for this long.
pub const STALE: Duration = Duration::from_secs(10);
const JPEG_QUALITY: u8 = 85;
/// Upper bounds of the latency histogram buckets, in microseconds (`+Inf` follows).
pub const BUCKETS_US: [u64; 14] = [
    250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000,
];
/// The stages timed per frame, in `frame_done`'s order.
pub const STAGES: [&str; 5] = ["capture", "preprocess", "inference", "postprocess", "emit"];

/// The `[output.http]` table of the config.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address and port to listen on; loopback unless set otherwise.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
}

fn default_listen() -> SocketAddr {
    ([127, 0, 0, 1], 9464).into()
}

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The address could not be bound: another process uses the port, or the address is not
    /// one of this machine's; change `output.http.listen`.
    #[error("output.http.listen = {addr}: cannot listen: {message}")]
    Bind { addr: SocketAddr, message: String },
    /// The server thread could not be started: the process is out of threads.
    #[error("cannot start the HTTP server: {0}")]
    Start(std::io::Error),
}

/// A latency histogram: per-bucket counts (not cumulative) and the sum.
#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
}

impl Histogram {
    fn observe(&self, us: u64) {
        let i = BUCKETS_US.partition_point(|&b| b < us);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }
}

/// What `/metrics` reports; updated by the pipeline without locks.
#[derive(Default)]
pub struct Metrics {
    frames: AtomicU64,
    /// Smoothed frames per second, as `f64` bits.
    fps: AtomicU64,
    /// When the last frame finished, in microseconds since `epoch`.
    last_frame_us: AtomicU64,
    epoch: Option<Instant>,
    stages: [Histogram; STAGES.len()],
    reconnects: AtomicU64,
    socket_dropped: AtomicU64,
    mqtt: Option<Arc<MqttStats>>,
}

impl Metrics {
    /// Metrics that also report the MQTT output's drops and spool, when there is one.
    pub fn new(mqtt: Option<Arc<MqttStats>>) -> Self {
        Self {
            epoch: Some(Instant::now()),
            mqtt,
            ..Default::default()
        }
    }

    fn now_us(&self) -> u64 {
        self.epoch.map_or(0, |e| e.elapsed().as_micros() as u64)
    }

    /// Counts a processed frame and its stage latencies; called by the pipeline thread only.
    pub fn frame_done(&self, latency: &StageLatency, emit_us: u32) {
        let stages = [
            latency.capture,
            latency.preprocess,
            latency.inference,
            latency.postprocess,
            emit_us,
        ];
        for (h, us) in self.stages.iter().zip(stages) {
            h.observe(us.into());
        }
        let now = self.now_us();
        let last = self.last_frame_us.swap(now, Ordering::Relaxed);
        let frames = self.frames.fetch_add(1, Ordering::Relaxed);
        if frames > 0 && now > last {
            let fps = 1e6 / (now - last) as f64;
            let old = f64::from_bits(self.fps.load(Ordering::Relaxed));
            // An average over about ten frames; the first interval seeds it.
            let new = if frames == 1 {
                fps
            } else {
                old + 0.1 * (fps - old)
            };
            self.fps.store(new.to_bits(), Ordering::Relaxed);
        }
    }

    /// Camera reopenings since start.
    pub fn set_reconnects(&self, n: u32) {
        self.reconnects.store(n.into(), Ordering::Relaxed);
    }

    /// Frames the socket skipped for slow clients, summed over clients.
    pub fn set_socket_dropped(&self, n: u64) {
        self.socket_dropped.store(n, Ordering::Relaxed);
    }

    /// Whether a frame finished within [`STALE`].
    fn healthy(&self) -> bool {
        self.frames.load(Ordering::Relaxed) > 0
            && self.now_us() - self.last_frame_us.load(Ordering::Relaxed) < STALE.as_micros() as u64
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self, out: &mut String) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let family = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        family(out, "ocelli_frames_total", "counter", "Frames processed.");
        let _ = writeln!(out, "ocelli_frames_total {}", load(&self.frames));
        family(
            out,
            "ocelli_fps",
            "gauge",
            "Frames per second, averaged over about ten frames.",
        );
        let _ = writeln!(out, "ocelli_fps {}", f64::from_bits(load(&self.fps)));
        family(
            out,
            "ocelli_stage_latency_seconds",
            "histogram",
            "Time each pipeline stage spent on a frame.",
        );
        for (stage, h) in STAGES.iter().zip(&self.stages) {
            // Cumulative from one read of each bucket, so +Inf and _count always agree.
            let mut total = 0;
            for (i, b) in h.buckets.iter().enumerate() {
                total += load(b);
                let le = BUCKETS_US
                    .get(i)
                    .map_or("+Inf".to_string(), |us| (*us as f64 / 1e6).to_string());
                let _ = writeln!(
                    out,
                    "ocelli_stage_latency_seconds_bucket{{stage=\"{stage}\",le=\"{le}\"}} {total}"
                );
            }
            let sum = load(&h.sum_us) as f64 / 1e6;
            let _ = writeln!(
                out,
                "ocelli_stage_latency_seconds_sum{{stage=\"{stage}\"}} {sum}\n\
                 ocelli_stage_latency_seconds_count{{stage=\"{stage}\"}} {total}"
            );
        }
        family(
            out,
            "ocelli_camera_reconnects_total",
            "counter",
            "Times the camera was lost and reopened.",
        );
        let _ = writeln!(
            out,
            "ocelli_camera_reconnects_total {}",
            load(&self.reconnects)
        );
        family(
            out,
            "ocelli_output_dropped_total",
            "counter",
            "Frame lines an output dropped, by output and reason.",
        );
        let _ = writeln!(
            out,
            "ocelli_output_dropped_total{{output=\"socket\",reason=\"slow_client\"}} {}",
            load(&self.socket_dropped)
        );
        if let Some(m) = &self.mqtt {
            for (reason, n) in [
                ("queue_full", &m.queue_dropped),
                ("spool_full", &m.spool_dropped),
            ] {
                let _ = writeln!(
                    out,
                    "ocelli_output_dropped_total{{output=\"mqtt\",reason=\"{reason}\"}} {}",
                    load(n)
                );
            }
            let gauges: [(&str, &str, &str, u64); 5] = [
                (
                    "ocelli_spool_records",
                    "gauge",
                    "Lines in the MQTT spool not yet delivered.",
                    load(&m.spool_records),
                ),
                (
                    "ocelli_spool_bytes",
                    "gauge",
                    "Size of the MQTT spool's segment files.",
                    load(&m.spool_bytes),
                ),
                (
                    "ocelli_mqtt_connected",
                    "gauge",
                    "1 while connected to the broker.",
                    m.connected.load(Ordering::Relaxed).into(),
                ),
                (
                    "ocelli_mqtt_delivered_total",
                    "counter",
                    "Lines the broker acknowledged.",
                    load(&m.delivered),
                ),
                (
                    "ocelli_mqtt_connects_total",
                    "counter",
                    "Connections to the broker made.",
                    load(&m.connects),
                ),
            ];
            for (name, kind, help, v) in gauges {
                let _ = writeln!(
                    out,
                    "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
                );
            }
        }
    }
}

/// The annotated frame `/frame.jpg` serves, and when it was last refreshed.
struct FrameSlot {
    image: Image,
    at: Option<Instant>,
}

/// The running endpoint.
pub struct HttpServer {
    server: Arc<tiny_http::Server>,
    metrics: Arc<Metrics>,
    frame: Arc<Mutex<FrameSlot>>,
    thread: Option<JoinHandle<()>>,
    addr: SocketAddr,
}

impl HttpServer {
    /// Listens on `config.listen` and serves `metrics` and the frames offered.
    pub fn start(config: &HttpConfig, metrics: Arc<Metrics>) -> Result<Self, HttpError> {
        let server = tiny_http::Server::http(config.listen).map_err(|e| HttpError::Bind {
            addr: config.listen,
            message: e.to_string(),
        })?;
        let addr = server.server_addr().to_ip().unwrap_or(config.listen);
        let server = Arc::new(server);
        let frame = Arc::new(Mutex::new(FrameSlot {
            image: Image::new(0, 0, 3),
            at: None,
        }));
        let serving = Serving {
            server: server.clone(),
            metrics: metrics.clone(),
            frame: frame.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("ocelli-http".into())
            .spawn(move || serving.run())
            .map_err(HttpError::Start)?;
        Ok(Self {
            server,
            metrics,
            frame,
            thread: Some(thread),
            addr,
        })
    }

    /// The address actually bound (port 0 in the config picks a free one).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Copies `rgb` as the served frame and lets `annotate` draw on the copy, at most every
    /// [`FRAME_EVERY`]; skipped while a request is reading the frame. Reuses the buffer.
    pub fn offer_frame(&self, rgb: &Image, annotate: impl FnOnce(&mut Image)) {
        let Ok(mut slot) = self.frame.try_lock() else {
            return;
        };
        if slot.at.is_some_and(|t| t.elapsed() < FRAME_EVERY) {
            return;
        }
        slot.image.reshape(rgb.width, rgb.height, rgb.channels);
        slot.image.data.copy_from_slice(&rgb.data);
        annotate(&mut slot.image);
        slot.at = Some(Instant::now());
    }

    /// Stops serving; a request being answered is finished first.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.server.unblock();
            let _ = t.join();
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Serving {
    server: Arc<tiny_http::Server>,
    metrics: Arc<Metrics>,
    frame: Arc<Mutex<FrameSlot>>,
}

impl Serving {
    fn run(self) {
        let mut text = String::new();
        let mut jpeg = Vec::new();
        for request in self.server.incoming_requests() {
            let ctype =
                |v: &str| tiny_http::Header::from_bytes("Content-Type", v).expect("a valid header");
            let (status, body, kind) = match (request.method(), request.url()) {
                (tiny_http::Method::Get, "/metrics") => {
                    text.clear();
                    self.metrics.render(&mut text);
                    (200, text.as_bytes(), "text/plain; version=0.0.4")
                }
                (tiny_http::Method::Get, "/healthz") if self.metrics.healthy() => {
                    (200, &b"ok\n"[..], "text/plain")
                }
                (tiny_http::Method::Get, "/healthz") => {
                    (503, &b"no frame processed recently\n"[..], "text/plain")
                }
                (tiny_http::Method::Get, "/frame.jpg") => match self.encode(&mut jpeg) {
                    Ok(true) => (200, &jpeg[..], "image/jpeg"),
                    Ok(false) => (503, &b"no frame yet\n"[..], "text/plain"),
                    Err(e) => {
                        text.clear();
                        let _ = writeln!(text, "cannot encode the frame: {e}");
                        (500, text.as_bytes(), "text/plain")
                    }
                },
                _ => (
                    404,
                    &b"not found: try /frame.jpg, /healthz or /metrics\n"[..],
                    "text/plain",
                ),
            };
            let response = tiny_http::Response::from_data(body)
                .with_status_code(status)
                .with_header(ctype(kind));
            // A client that went away is no concern of the server.
            let _ = request.respond(response);
        }
    }

    /// Encodes the latest frame into `out`; false when there is none yet.
    fn encode(&self, out: &mut Vec<u8>) -> Result<bool, String> {
        let slot = self.frame.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.at.is_none() || slot.image.width == 0 {
            return Ok(false);
        }
        out.clear();
        let (w, h) = (slot.image.width, slot.image.height);
        let (Ok(w16), Ok(h16)) = (u16::try_from(w), u16::try_from(h)) else {
            return Err(format!("{w}x{h} exceeds JPEG's 65535x65535"));
        };
        jpeg_encoder::Encoder::new(&mut *out, JPEG_QUALITY)
            .encode(&slot.image.data, w16, h16, jpeg_encoder::ColorType::Rgb)
            .map_err(|e| e.to_string())?;
        Ok(true)
    }
}
