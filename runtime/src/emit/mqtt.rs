//! Frame lines to an MQTT broker, QoS 1, through an on-disk spool that outlives the broker's
//! absences and the service's restarts.
//!
//! The pipeline calls [`MqttOutput::publish`], which copies the line into a pooled buffer and
//! hands it to a bounded channel: it never waits on the broker or the disk. A full channel
//! drops the line and counts it. The worker thread appends every line to the [`Spool`] first
//! (one `write(2)`, so a crash loses nothing handed over) and publishes from the spool in order,
//! at most `inflight` unacknowledged; a PUBACK commits the record. When the connection drops,
//! the worker forgets what was in flight and sends again from the first unacknowledged record
//! once it is back, so the broker receives every record in order.
//!
//! Duplicates: the session is clean (`clean_session`), so rumqttc never replays a publish on its
//! own; every resend comes from the spool cursor, only for records whose PUBACK did not arrive.
//! A record can thus reach the broker twice only when the broker got it but its PUBACK was lost
//! with the connection, which QoS 1 allows; consumers dedupe by `frame_id` with the timestamp.
//!
//! Lines are published on `<prefix>/<device>/<stream>/frames`, the `models` line retained on
//! `<prefix>/<device>/<stream>/models`; `<prefix>/<device>/<stream>/status`
//! holds a retained `online`, replaced by `offline` on shutdown or, as the last will, by the
//! broker when the connection is lost.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rumqttc::{
    Client, Connection, ConnectionError, Event, Incoming, LastWill, MqttOptions, Outgoing, QoS,
    TlsConfiguration, Transport,
};
use serde::Deserialize;

use super::record::SCHEMA_VERSION;
use super::spool::{Evicted, Spool, SpoolError};

/// Largest MQTT packet sent or accepted: a frame line with masks can be long.
const MAX_PACKET: usize = 1 << 20;
/// Waits between connection attempts; the last one repeats.
const BACKOFF_MS: [u64; 6] = [200, 500, 1000, 2000, 5000, 10_000];
/// How long the worker sleeps when it has nothing to do, between keep-alive checks.
const IDLE: Duration = Duration::from_millis(50);
/// One turn of the MQTT event loop when acknowledgements are awaited.
const NET_TURN: Duration = Duration::from_millis(1);

/// The `[output.mqtt]` table of the config.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Broker host name or address.
    pub host: String,
    /// Broker port; 1883, or 8883 with TLS, when unset.
    #[serde(default)]
    pub port: Option<u16>,
    /// Device name in the topics; the host name when unset.
    #[serde(default)]
    pub device: Option<String>,
    /// Stream name in the topics.
    #[serde(default = "default_stream")]
    pub stream: String,
    #[serde(default = "default_prefix")]
    pub topic_prefix: String,
    /// MQTT client id; `ocelli-<device>-<stream>` when unset.
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub tls: Option<MqttTls>,
    #[serde(default = "default_keep_alive")]
    pub keep_alive_s: u64,
    /// Lines queued between the pipeline and the worker; more are dropped and counted.
    #[serde(default = "default_queue")]
    pub queue_frames: usize,
    /// Publishes awaiting their PUBACK at once.
    #[serde(default = "default_inflight")]
    pub inflight: u16,
    /// How long shutdown keeps delivering the spool before leaving the rest for the next start.
    #[serde(default = "default_drain")]
    pub drain_timeout_s: f64,
    #[serde(default)]
    pub spool: SpoolConfig,
}

/// `[output.mqtt.tls]`: the broker is reached over TLS (rustls).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MqttTls {
    /// PEM file of the CA certificates the broker's certificate must chain to.
    pub ca_file: PathBuf,
    /// PEM client certificate chain and key, when the broker asks for one.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// `[output.mqtt.spool]`: where lines wait while the broker is away.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    /// `$STATE_DIRECTORY/mqtt-spool` (systemd's `StateDirectory=`), else
    /// `/var/lib/ocelli/mqtt-spool`, when unset.
    pub dir: Option<PathBuf>,
    /// Bound of the spool on disk; the oldest lines go first beyond it.
    pub max_mb: f64,
    /// Segments and the committed offset are synced this often; 0 syncs every line.
    pub fsync_interval_s: f64,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            dir: None,
            max_mb: 64.0,
            fsync_interval_s: 1.0,
        }
    }
}

fn default_stream() -> String {
    "main".into()
}
fn default_prefix() -> String {
    "ocelli".into()
}
fn default_keep_alive() -> u64 {
    30
}
fn default_queue() -> usize {
    256
}
fn default_inflight() -> u16 {
    32
}
fn default_drain() -> f64 {
    5.0
}

/// Why the MQTT output could not start.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// A setting is out of range or malformed: set it as the message says.
    #[error("output.mqtt.{field} = {value}: expected {expected}")]
    Config {
        field: &'static str,
        value: String,
        expected: &'static str,
    },
    /// A TLS file could not be read, or is over 1 MiB: check the path and that the service may
    /// read it.
    #[error("output.mqtt.tls: cannot read {path}: {source}")]
    Tls {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The spool could not be opened.
    #[error("output.mqtt.spool: {0}")]
    Spool(#[from] SpoolError),
    /// The worker thread could not be started: the process is out of threads.
    #[error("cannot start the MQTT worker: {0}")]
    Start(std::io::Error),
}

/// Counters since the output started; the spool figures are current.
#[derive(Debug, Default)]
pub struct MqttStats {
    pub connected: AtomicBool,
    /// Lines handed over by the pipeline.
    pub accepted: AtomicU64,
    /// Lines whose PUBACK arrived.
    pub delivered: AtomicU64,
    /// Lines dropped because the queue to the worker was full.
    pub queue_dropped: AtomicU64,
    /// Lines the spool bound evicted before they were delivered.
    pub spool_dropped: AtomicU64,
    pub spool_records: AtomicU64,
    pub spool_bytes: AtomicU64,
    /// Connections established, the first included.
    pub connects: AtomicU64,
}

/// A running MQTT output.
pub struct MqttOutput {
    tx: Option<SyncSender<Vec<u8>>>,
    /// Buffers the worker is done with, for the pipeline to reuse.
    pool: Arc<Mutex<Vec<Vec<u8>>>>,
    stats: Arc<MqttStats>,
    models: Arc<Mutex<super::Announcement>>,
    worker: Option<JoinHandle<()>>,
}

impl MqttOutput {
    /// Checks `config`, opens the spool and starts the worker; relative paths go through `resolve`.
    pub fn start(
        config: &MqttConfig,
        resolve: impl Fn(&std::path::Path) -> PathBuf,
    ) -> Result<Self, MqttError> {
        let bad = |field, value: String, expected| MqttError::Config {
            field,
            value,
            expected,
        };
        let device = device_name(config)?;
        if !(1..=65_536).contains(&config.queue_frames) {
            let v = config.queue_frames.to_string();
            return Err(bad("queue_frames", v, "1 to 65536"));
        }
        if config.inflight == 0 {
            return Err(bad("inflight", "0".into(), "1 to 65535"));
        }
        if !(0.0..=3600.0).contains(&config.drain_timeout_s) {
            let v = config.drain_timeout_s.to_string();
            return Err(bad("drain_timeout_s", v, "0 to 3600 s"));
        }
        let spool_cfg = &config.spool;
        if !(0.01..=1_000_000.0).contains(&spool_cfg.max_mb) {
            let v = spool_cfg.max_mb.to_string();
            return Err(bad("spool.max_mb", v, "0.01 to 1000000 MB"));
        }
        if !(0.0..=3600.0).contains(&spool_cfg.fsync_interval_s) {
            let v = spool_cfg.fsync_interval_s.to_string();
            return Err(bad("spool.fsync_interval_s", v, "0 to 3600 s"));
        }
        let mut options = options(config, "", &resolve)?;
        let base = format!("{}/{device}/{}", config.topic_prefix, config.stream);
        let status_topic = format!("{base}/status");
        options
            .set_inflight(config.inflight)
            .set_max_packet_size(MAX_PACKET, MAX_PACKET)
            .set_last_will(LastWill::new(
                &status_topic,
                "offline",
                QoS::AtLeastOnce,
                true,
            ));
        let dir = match &spool_cfg.dir {
            Some(d) => resolve(d),
            None => crate::config::state_directory().join("mqtt-spool"),
        };
        let spool = Spool::open(
            &dir,
            (spool_cfg.max_mb * 1e6) as u64,
            Duration::from_secs_f64(spool_cfg.fsync_interval_s),
        )?;
        let (tx, rx) = mpsc::sync_channel(config.queue_frames);
        let pool = Arc::new(Mutex::new(Vec::new()));
        let stats = Arc::new(MqttStats::default());
        let models = Arc::new(Mutex::new(super::Announcement::default()));
        let (client, connection) = Client::new(options, config.inflight as usize + 8);
        let worker = Worker {
            rx,
            pool: pool.clone(),
            stats: stats.clone(),
            spool,
            client,
            connection,
            frames_topic: format!("{base}/frames"),
            status_topic,
            models: models.clone(),
            models_topic: format!("{base}/models"),
            models_sent: 0,
            inflight: config.inflight as usize,
            drain: Duration::from_secs_f64(config.drain_timeout_s),
            connected: false,
            warned: false,
            awaiting: std::collections::VecDeque::new(),
            by_pkid: std::collections::HashMap::new(),
            unacked: std::collections::BTreeSet::new(),
            next_send: 0,
            unreported: 0,
            buf: Vec::new(),
        };
        let worker = std::thread::Builder::new()
            .name("ocelli-mqtt".into())
            .spawn(move || worker.run())
            .map_err(MqttError::Start)?;
        Ok(Self {
            tx: Some(tx),
            pool,
            stats,
            models,
            worker: Some(worker),
        })
    }

    /// Queues `line` (one JSON document, trailing newline optional) for the broker. Never waits;
    /// reuses a buffer the worker returned once the pool has warmed up.
    pub fn publish(&self, line: &[u8]) {
        let Some(tx) = &self.tx else { return };
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let mut buf = lock(&self.pool).pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(line);
        match tx.try_send(buf) {
            Ok(()) => {
                self.stats.accepted.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(buf) | TrySendError::Disconnected(buf)) => {
                self.stats.queue_dropped.fetch_add(1, Ordering::Relaxed);
                lock(&self.pool).push(buf);
            }
        }
    }

    /// Publishes `line` (a `models` line) retained on `<prefix>/<device>/<stream>/models`, now
    /// or at the next connection.
    pub fn announce(&self, line: &[u8]) {
        lock(&self.models).set(line);
    }

    pub fn stats(&self) -> &Arc<MqttStats> {
        &self.stats
    }

    /// Delivers what it can within `drain_timeout_s`, marks the device offline and stops; what
    /// is left stays in the spool for the next start. Dropping the output does the same.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        drop(self.tx.take());
        if let Some(worker) = self.worker.take() {
            // A panic in the worker has been reported already.
            let _ = worker.join();
        }
    }
}

impl Drop for MqttOutput {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The device name of the topics: `device`, or the host name; checked with the other topic
/// levels.
pub fn device_name(config: &MqttConfig) -> Result<String, MqttError> {
    let device = match &config.device {
        Some(d) => d.clone(),
        None => hostname(),
    };
    for (field, v) in [
        ("device", &device),
        ("stream", &config.stream),
        ("topic_prefix", &config.topic_prefix),
    ] {
        if v.is_empty() || v.contains(['/', '+', '#', '\0']) {
            return Err(MqttError::Config {
                field,
                value: v.clone(),
                expected: "a non-empty topic level without / + # or NUL",
            });
        }
    }
    Ok(device)
}

/// The connection settings of `config` (broker, credentials, TLS, keep-alive, a clean
/// session), for a client whose id ends in `suffix`: each connection to the broker has its own.
pub fn options(
    config: &MqttConfig,
    suffix: &str,
    resolve: impl Fn(&std::path::Path) -> PathBuf,
) -> Result<MqttOptions, MqttError> {
    let device = device_name(config)?;
    let client_id = config
        .client_id
        .clone()
        .unwrap_or_else(|| format!("ocelli-{device}-{}", config.stream));
    let port = config
        .port
        .unwrap_or(if config.tls.is_some() { 8883 } else { 1883 });
    let mut options = MqttOptions::new(client_id + suffix, &config.host, port);
    options
        .set_keep_alive(Duration::from_secs(config.keep_alive_s.max(5)))
        .set_clean_session(true);
    if let Some(user) = &config.username {
        options.set_credentials(user, config.password.clone().unwrap_or_default());
    }
    if let Some(tls) = &config.tls {
        let read = |p: &PathBuf| {
            let path = resolve(p);
            crate::limits::read_bounded(&path, crate::limits::MAX_TLS_FILE_BYTES)
                .map_err(|source| MqttError::Tls { path, source })
        };
        let client_auth = match (&tls.cert_file, &tls.key_file) {
            (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
            (None, None) => None,
            _ => {
                return Err(MqttError::Config {
                    field: "tls",
                    value: "cert_file or key_file alone".into(),
                    expected: "both cert_file and key_file, or neither",
                });
            }
        };
        // rumqttc builds its rustls config from the process-wide provider; a second
        // install (another output, a reload) fails harmlessly.
        let _ = rustls::crypto::ring::default_provider().install_default();
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
            ca: read(&tls.ca_file)?,
            alpn: None,
            client_auth,
        }));
    }
    Ok(options)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain buffers: a panic elsewhere cannot leave them inconsistent.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "ocelli".into())
}

/// What a publish handed to rumqttc was.
#[derive(Clone, Copy, Debug)]
enum Sent {
    Record(u64),
    /// A status or notice: nothing to commit.
    Other,
}

struct Worker {
    rx: Receiver<Vec<u8>>,
    pool: Arc<Mutex<Vec<Vec<u8>>>>,
    stats: Arc<MqttStats>,
    spool: Spool,
    client: Client,
    connection: Connection,
    frames_topic: String,
    status_topic: String,
    /// The latest `models` line, published retained on `models_topic` at each connection and
    /// change.
    models: Arc<Mutex<super::Announcement>>,
    models_topic: String,
    models_sent: u64,
    inflight: usize,
    drain: Duration,
    connected: bool,
    /// A connection error was logged since the last successful connection.
    warned: bool,
    /// Publishes handed to rumqttc whose packet id is not known yet, in order.
    awaiting: std::collections::VecDeque<Sent>,
    by_pkid: std::collections::HashMap<u16, Sent>,
    /// Records published and not yet acknowledged.
    unacked: std::collections::BTreeSet<u64>,
    /// The next record to publish.
    next_send: u64,
    /// Evicted records not yet reported to subscribers.
    unreported: u64,
    buf: Vec<u8>,
}

impl Worker {
    fn run(mut self) {
        // Records below the committed offset but evicted before a crash were never reported.
        self.unreported = self.spool.oldest() - self.spool.committed();
        self.next_send = self.spool.oldest();
        self.update_gauges();
        let mut attempt = 0usize;
        let mut retry_at = Instant::now();
        let mut draining: Option<Instant> = None;
        loop {
            let open = draining.is_none();
            let wait = if !self.connected {
                retry_at.saturating_duration_since(Instant::now())
            } else if self.has_work() {
                Duration::ZERO
            } else {
                IDLE
            };
            if open && !self.take_lines(wait) {
                draining = Some(Instant::now() + self.drain);
            }
            if let Some(deadline) = draining
                && (Instant::now() >= deadline || self.spool.depth() == 0 && self.unreported == 0)
            {
                break;
            }
            if !self.connected {
                if Instant::now() < retry_at {
                    if !open {
                        std::thread::sleep(IDLE.min(retry_at - Instant::now()));
                    }
                    continue;
                }
                if self.connect() {
                    attempt = 0;
                } else {
                    retry_at = Instant::now()
                        + Duration::from_millis(BACKOFF_MS[attempt.min(BACKOFF_MS.len() - 1)]);
                    attempt += 1;
                }
                continue;
            }
            self.publish_spooled();
            self.publish_models();
            let turn = if self.has_work() || !open {
                NET_TURN
            } else {
                Duration::ZERO
            };
            self.turn_network(turn);
            self.commit();
        }
        self.close();
    }

    /// Moves lines from the pipeline into the spool, waiting up to `wait` for the first one.
    /// Returns false once the pipeline has hung up.
    fn take_lines(&mut self, wait: Duration) -> bool {
        let mut next = if wait.is_zero() {
            self.rx.try_recv().map_err(|e| match e {
                mpsc::TryRecvError::Empty => RecvTimeoutError::Timeout,
                mpsc::TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
            })
        } else {
            self.rx.recv_timeout(wait)
        };
        loop {
            match next {
                Ok(line) => {
                    let dropped = self.stats.queue_dropped.swap(0, Ordering::Relaxed);
                    if dropped > 0 {
                        // Kept in order with the lines, so subscribers see where the gap is;
                        // the total stays available in `queue_dropped` through this reset.
                        self.stats
                            .queue_dropped
                            .fetch_add(dropped, Ordering::Relaxed);
                        let notice = dropped_notice(dropped, "queue_full");
                        self.append(notice.as_bytes());
                    }
                    self.append(&line);
                    lock(&self.pool).push(line);
                }
                Err(RecvTimeoutError::Timeout) => return true,
                Err(RecvTimeoutError::Disconnected) => return false,
            }
            next = self.rx.try_recv().map_err(|e| match e {
                mpsc::TryRecvError::Empty => RecvTimeoutError::Timeout,
                mpsc::TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
            });
        }
    }

    fn append(&mut self, line: &[u8]) {
        match self.spool.append(line) {
            Ok(Some(evicted)) => self.evicted(evicted),
            Ok(None) => {}
            Err(e) => {
                // The line cannot be kept; count it with the evicted ones so the gap is reported.
                eprintln!("ocelli: mqtt: {e}; line dropped");
                self.unreported += 1;
                self.stats.spool_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.update_gauges();
    }

    /// Records `first..end` are gone: those never published are lost now; those in flight are
    /// lost only if their PUBACK never comes.
    fn evicted(&mut self, e: Evicted) {
        let lost = e.end.saturating_sub(self.next_send.max(e.first));
        self.next_send = self.next_send.max(e.end);
        self.unreported += lost;
        self.stats.spool_dropped.fetch_add(lost, Ordering::Relaxed);
        self.spool.seek(self.next_send);
    }

    fn has_work(&self) -> bool {
        !self.unacked.is_empty() || self.next_send < self.spool.next_seq()
    }

    /// Publishes the `models` line if this connection has not had its latest version.
    fn publish_models(&mut self) {
        let (version, line) = {
            let m = lock(&self.models);
            if m.version == self.models_sent {
                return;
            }
            (
                m.version,
                m.line.strip_suffix(b"\n").unwrap_or(&m.line).to_vec(),
            )
        };
        let topic = self.models_topic.clone();
        if self.send(&topic, line, true, Sent::Other) {
            self.models_sent = version;
        }
    }

    /// One blocking connection attempt (bounded by rumqttc's connection timeout).
    fn connect(&mut self) -> bool {
        match self.connection.recv() {
            Ok(Ok(Event::Incoming(Incoming::ConnAck(_)))) => {
                self.connected = true;
                self.warned = false;
                self.stats.connected.store(true, Ordering::Relaxed);
                self.stats.connects.fetch_add(1, Ordering::Relaxed);
                let topic = self.status_topic.clone();
                self.send(&topic, b"online".to_vec(), true, Sent::Other);
                self.models_sent = 0;
                true
            }
            Ok(Err(e)) => {
                self.warn(&e);
                false
            }
            // Another event before the ConnAck cannot happen on a fresh connection; a closed
            // request channel cannot happen while the worker holds the client.
            Ok(Ok(_)) | Err(_) => false,
        }
    }

    /// Logs the first failure of an outage only: retries repeat it every few seconds.
    fn warn(&mut self, e: &ConnectionError) {
        if !self.warned {
            eprintln!("ocelli: mqtt: {e}; spooling and retrying");
            self.warned = true;
        }
    }

    /// Hands a publish to rumqttc; false when its request channel is full.
    fn send(&mut self, topic: &str, payload: Vec<u8>, retain: bool, what: Sent) -> bool {
        match self
            .client
            .try_publish(topic, QoS::AtLeastOnce, retain, payload)
        {
            Ok(()) => {
                self.awaiting.push_back(what);
                true
            }
            // The request channel holds `inflight` + 8: full means the loop is behind; the
            // record stays unsent and goes out on a later turn.
            Err(_) => {
                if let Sent::Record(seq) = what {
                    self.unacked.remove(&seq);
                    self.next_send = self.next_send.min(seq);
                }
                false
            }
        }
    }

    /// Publishes spooled records from the cursor while the in-flight window has room.
    fn publish_spooled(&mut self) {
        while self.unacked.len() + self.awaiting.len() < self.inflight {
            if self.unreported > 0 {
                let notice = dropped_notice(self.unreported, "spool_full");
                let topic = self.frames_topic.clone();
                if !self.send(&topic, notice.into_bytes(), false, Sent::Other) {
                    return;
                }
                self.unreported = 0;
                continue;
            }
            self.spool.seek(self.next_send);
            let mut buf = std::mem::take(&mut self.buf);
            let read = self.spool.read(&mut buf);
            let seq = match read {
                Ok(Some(seq)) => seq,
                Ok(None) => {
                    self.buf = buf;
                    return;
                }
                Err(e) => {
                    eprintln!("ocelli: mqtt: {e}; skipping to the newest line");
                    self.buf = buf;
                    self.next_send = self.spool.next_seq();
                    return;
                }
            };
            self.next_send = seq + 1;
            self.unacked.insert(seq);
            let payload = buf.clone();
            self.buf = buf;
            let topic = self.frames_topic.clone();
            if !self.send(&topic, payload, false, Sent::Record(seq)) {
                return;
            }
        }
    }

    /// Runs rumqttc's event loop: the first turn waits up to `wait`, the rest only take what is
    /// ready.
    fn turn_network(&mut self, wait: Duration) {
        let mut wait = wait.max(NET_TURN);
        loop {
            match self.connection.recv_timeout(wait) {
                Ok(Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => {
                    if let Some(what) = self.awaiting.pop_front() {
                        self.by_pkid.insert(pkid, what);
                    }
                }
                Ok(Ok(Event::Incoming(Incoming::PubAck(ack)))) => {
                    if let Some(Sent::Record(seq)) = self.by_pkid.remove(&ack.pkid)
                        && self.unacked.remove(&seq)
                    {
                        self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    self.warn(&e);
                    self.disconnected();
                    return;
                }
                Err(_) => return,
            }
            wait = NET_TURN;
        }
    }

    /// Forgets what was in flight and goes back to the first unacknowledged record.
    fn disconnected(&mut self) {
        self.connected = false;
        self.stats.connected.store(false, Ordering::Relaxed);
        let oldest = self.spool.oldest();
        let gone = self.unacked.range(..oldest).count() as u64;
        self.unreported += gone;
        self.stats.spool_dropped.fetch_add(gone, Ordering::Relaxed);
        self.next_send = self
            .unacked
            .range(oldest..)
            .next()
            .copied()
            .unwrap_or(self.next_send)
            .max(oldest);
        self.unacked.clear();
        self.awaiting.clear();
        self.by_pkid.clear();
        self.spool.seek(self.next_send);
    }

    /// Commits up to the first record not yet acknowledged. Not while evicted records are
    /// unreported: the gap between the committed offset and the oldest record is how a restart
    /// learns of them.
    fn commit(&mut self) {
        if self.unreported > 0 {
            self.update_gauges();
            return;
        }
        let oldest = self.spool.oldest();
        let upto = self
            .unacked
            .range(oldest..)
            .next()
            .copied()
            .unwrap_or(self.next_send)
            .min(self.next_send);
        if let Err(e) = self
            .spool
            .commit(upto)
            .and_then(|()| self.spool.maybe_sync())
        {
            eprintln!("ocelli: mqtt: {e}");
        }
        self.update_gauges();
    }

    fn update_gauges(&self) {
        let s = &self.stats;
        s.spool_records.store(self.spool.depth(), Ordering::Relaxed);
        s.spool_bytes.store(self.spool.bytes(), Ordering::Relaxed);
    }

    /// Marks the device offline and disconnects cleanly; the spool is synced.
    fn close(mut self) {
        if self.connected {
            let topic = self.status_topic.clone();
            self.send(&topic, b"offline".to_vec(), true, Sent::Other);
            let _ = self.client.try_disconnect();
            let until = Instant::now() + Duration::from_millis(500);
            while Instant::now() < until {
                match self.connection.recv_timeout(Duration::from_millis(50)) {
                    Ok(Ok(Event::Outgoing(Outgoing::Disconnect))) | Ok(Err(_)) | Err(_) => break,
                    Ok(Ok(_)) => {}
                }
            }
        }
        self.commit();
        if let Err(e) = self.spool.sync() {
            eprintln!("ocelli: mqtt: {e}");
        }
    }
}

/// The notice subscribers get where lines are missing, in the socket's `dropped` format.
fn dropped_notice(frames: u64, reason: &str) -> String {
    format!(
        r#"{{"schema":{SCHEMA_VERSION},"type":"dropped","frames":{frames},"reason":"{reason}"}}"#
    )
}
