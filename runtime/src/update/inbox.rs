//! Bundles from the broker: a connection of its own subscribes to the device's and the fleet's
//! update topics, writes each bundle received to the state folder (`incoming/N.part`, synced,
//! then renamed `N.bundle`) and publishes the updater's status, retained.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use rumqttc::{Client, ConnectionError, Event, Incoming, QoS, StateError};

use crate::emit::MqttConfig;
use crate::emit::mqtt::{MqttError, options};

/// What the broker delivered.
pub enum Delivery {
    /// A bundle, written to `path`, from `topic`.
    Bundle { path: PathBuf, topic: String },
    /// A message over the bundle bound, which the connection refused unread.
    Oversized { bytes: usize, max: usize },
    /// A bundle that could not be written to the state folder (a full disk, say).
    Unkept { topic: String, reason: String },
}

/// Statuses waiting to be published, and the latest one.
#[derive(Default)]
struct Statuses {
    queued: std::collections::VecDeque<Vec<u8>>,
    latest: Option<Vec<u8>>,
}

/// The running connection.
pub struct Inbox {
    stop: Arc<AtomicBool>,
    status: Arc<Mutex<Statuses>>,
    received: Receiver<Delivery>,
    worker: Option<JoinHandle<()>>,
}

/// A step of an update that `OCELLI_UPDATE_HOLD` names stops there until the process is
/// killed: the tests kill the service at each step this way.
pub fn hold(step: &str) {
    if std::env::var("OCELLI_UPDATE_HOLD").is_ok_and(|s| s == step) {
        eprintln!("ocelli: update held at {step} (OCELLI_UPDATE_HOLD)");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

impl Inbox {
    /// Connects as `<client id>-update` and writes bundles of at most `max_bytes` into
    /// `incoming`.
    pub fn start(
        config: &MqttConfig,
        resolve: impl Fn(&Path) -> PathBuf,
        incoming: &Path,
        max_bytes: usize,
    ) -> Result<Self, MqttError> {
        let device = crate::emit::mqtt::device_name(config)?;
        let mut options = options(config, "-update", resolve)?;
        options.set_max_packet_size(max_bytes, 64 << 10);
        let (client, mut connection) = Client::new(options, 16);
        let prefix = &config.topic_prefix;
        let topics = [
            format!("{prefix}/{device}/update"),
            format!("{prefix}/fleet/update"),
        ];
        let status_topic = format!("{prefix}/{device}/update/status");
        let stop = Arc::new(AtomicBool::new(false));
        let status = Arc::new(Mutex::new(Statuses::default()));
        let (tx, received) = channel();
        let worker = {
            let (stop, status) = (stop.clone(), status.clone());
            let incoming = incoming.to_path_buf();
            std::thread::Builder::new()
                .name("ocelli-update".into())
                .spawn(move || {
                    let mut seq = 0u64;
                    let mut warned = false;
                    let mut subscribed = true;
                    while !stop.load(Ordering::Relaxed) {
                        {
                            // In order, each once; the latest again after a reconnection.
                            let mut s = lock(&status);
                            while let Some(json) = s.queued.front() {
                                let sent = client.try_publish(
                                    &status_topic,
                                    QoS::AtLeastOnce,
                                    true,
                                    json.clone(),
                                );
                                if sent.is_err() {
                                    break;
                                }
                                s.queued.pop_front();
                            }
                        }
                        // Retried while the request channel is full.
                        if !subscribed {
                            subscribed = topics
                                .iter()
                                .all(|t| client.try_subscribe(t, QoS::AtLeastOnce).is_ok());
                        }
                        match connection.recv_timeout(Duration::from_millis(100)) {
                            Ok(Ok(Event::Incoming(Incoming::ConnAck(_)))) => {
                                warned = false;
                                subscribed = false;
                                // A broker without persistence forgets retained messages.
                                let mut s = lock(&status);
                                if s.queued.is_empty()
                                    && let Some(latest) = s.latest.clone()
                                {
                                    s.queued.push_back(latest);
                                }
                            }
                            // Delivered again at every connection, a retained bundle would
                            // be refused as a replay each time.
                            Ok(Ok(Event::Incoming(Incoming::Publish(p))))
                                if topics.contains(&p.topic) && p.retain =>
                            {
                                let _ = tx.send(Delivery::Unkept {
                                    topic: p.topic.clone(),
                                    reason: "a retained message: publish bundles without retain"
                                        .into(),
                                });
                            }
                            Ok(Ok(Event::Incoming(Incoming::Publish(p))))
                                if topics.contains(&p.topic) =>
                            {
                                seq += 1;
                                match receive(&incoming, seq, &p.payload) {
                                    Ok(path) => {
                                        let topic = p.topic.clone();
                                        let _ = tx.send(Delivery::Bundle { path, topic });
                                    }
                                    Err(e) => {
                                        let _ = tx.send(Delivery::Unkept {
                                            topic: p.topic.clone(),
                                            reason: format!("{}: {e}", incoming.display()),
                                        });
                                    }
                                }
                            }
                            Ok(Ok(_)) => {}
                            Ok(Err(ConnectionError::MqttState(StateError::Deserialization(
                                rumqttc::Error::PayloadSizeLimitExceeded(bytes),
                            )))) => {
                                let _ = tx.send(Delivery::Oversized {
                                    bytes,
                                    max: max_bytes,
                                });
                                std::thread::sleep(Duration::from_millis(500));
                            }
                            Ok(Err(e)) => {
                                if !warned {
                                    eprintln!("ocelli: update: mqtt: {e}; retrying");
                                    warned = true;
                                }
                                std::thread::sleep(Duration::from_millis(500));
                            }
                            Err(_) => {}
                        }
                    }
                    // The statuses handed to rumqttc and the disconnect go out before the end.
                    let _ = client.try_disconnect();
                    let deadline = std::time::Instant::now() + Duration::from_secs(1);
                    while std::time::Instant::now() < deadline {
                        match connection.recv_timeout(Duration::from_millis(100)) {
                            Ok(Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)))
                            | Ok(Err(_))
                            | Err(rumqttc::RecvTimeoutError::Disconnected) => break,
                            _ => {}
                        }
                    }
                })
                .map_err(MqttError::Start)?
        };
        Ok(Self {
            stop,
            status,
            received,
            worker: Some(worker),
        })
    }

    /// The next delivery, if one is waiting.
    pub fn next(&self) -> Option<Delivery> {
        self.received.try_recv().ok()
    }

    /// Publishes `json` retained on the status topic, now or once connected.
    pub fn publish_status(&self, json: &[u8]) {
        let mut s = lock(&self.status);
        // Bounded: a device long away from its broker keeps the last steps only.
        if s.queued.len() == 64 {
            s.queued.pop_front();
        }
        s.queued.push_back(json.to_vec());
        s.latest = Some(json.to_vec());
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        // The last status goes out before the connection closes.
        for _ in 0..20 {
            if lock(&self.status).queued.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stop.store(true, Ordering::Relaxed);
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Writes a received bundle to `incoming/N.part`, syncs it and renames it `N.bundle`: a
/// `.bundle` there is always complete.
fn receive(incoming: &Path, seq: u64, payload: &[u8]) -> std::io::Result<PathBuf> {
    use std::io::Write;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    let name = format!("{stamp:020}-{seq}");
    let part = incoming.join(format!("{name}.part"));
    let path = incoming.join(format!("{name}.bundle"));
    let written = (|| {
        let mut f = std::fs::File::create(&part)?;
        let half = payload.len() / 2;
        f.write_all(&payload[..half])?;
        hold("download");
        f.write_all(&payload[half..])?;
        f.sync_all()?;
        std::fs::rename(&part, &path)?;
        std::fs::File::open(incoming)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    written.map(|()| path)
}
