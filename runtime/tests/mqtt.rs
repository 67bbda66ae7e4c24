//! The MQTT output against a real mosquitto started on loopback, and the HTTP endpoint scraped
//! with curl. Needs the Debian packages `mosquitto`, `curl` and `openssl` (`just setup` installs
//! them).

#[path = "../../tests/support.rs"]
mod support;
mod update;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rumqttc::{Client, Event, Incoming, MqttOptions, QoS};
use serde_json::Value;
use support::{Running, ocelli_command, wait_for};
use tempfile::TempDir;

const SCHEMA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../docs/schema/frame.schema.json"
);

/// A fresh folder, removed with everything in it when the guard is dropped: bound before the
/// processes that use it, it outlives them.
fn scratch(name: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(&format!("ocelli-mqtt-{name}-"))
        .tempdir()
        .unwrap()
}

fn free_port() -> u16 {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    l.local_addr().unwrap().port()
}

fn tool(name: &str) -> PathBuf {
    ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{name} is missing: install it with `just setup`"))
}

/// A mosquitto with a persistent store, so a subscriber's session and queue survive its restart.
struct Broker {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Broker {
    fn new(dir: &Path) -> Self {
        Self::with(dir, "")
    }

    /// A broker whose config also has `extra` (more listeners).
    fn with(dir: &Path, extra: &str) -> Self {
        let port = free_port();
        let dir = dir.join("broker");
        std::fs::create_dir_all(&dir).unwrap();
        let conf = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nuser root\npersistence true\n\
             persistence_location {}/\nmax_queued_messages 100000\nlog_dest file {}/log\n{extra}",
            dir.display(),
            dir.display()
        );
        std::fs::write(dir.join("mosquitto.conf"), conf).unwrap();
        Self {
            dir,
            port,
            child: None,
        }
    }

    fn start(&mut self) {
        let child = Command::new(tool("mosquitto"))
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto starts");
        self.child = Some(child);
        let port = self.port;
        wait_for(10, "mosquitto to listen", || {
            TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok()
        });
    }

    /// SIGTERM: mosquitto saves its store and closes every connection.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM).unwrap();
            c.wait().unwrap();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[derive(Clone, Debug)]
struct Message {
    topic: String,
    payload: String,
    dup: bool,
}

/// A QoS 1 subscriber with a persistent session: messages published while it reconnects wait
/// for it at the broker.
struct Subscriber {
    got: Arc<Mutex<Vec<Message>>>,
}

impl Subscriber {
    fn start(port: u16, id: &str) -> Self {
        Self::start_on(port, id, &["ocelli/#"])
    }

    /// A subscriber to the topics `filters` match.
    fn start_on(port: u16, id: &str, filters: &[&str]) -> Self {
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options
            .set_clean_session(false)
            .set_max_packet_size(1 << 20, 1 << 20)
            .set_keep_alive(Duration::from_secs(5));
        let (client, mut connection) = Client::new(options, 64);
        for f in filters {
            client.subscribe(*f, QoS::AtLeastOnce).unwrap();
        }
        let got = Arc::new(Mutex::new(Vec::new()));
        let subscribed = Arc::new(Mutex::new(false));
        let (g, s) = (got.clone(), subscribed.clone());
        std::thread::spawn(move || {
            let _client = client;
            loop {
                match connection.recv() {
                    Ok(Ok(Event::Incoming(Incoming::Publish(p)))) => {
                        g.lock().unwrap().push(Message {
                            topic: p.topic.clone(),
                            payload: String::from_utf8(p.payload.to_vec()).unwrap(),
                            dup: p.dup,
                        });
                    }
                    Ok(Ok(Event::Incoming(Incoming::SubAck(_)))) => *s.lock().unwrap() = true,
                    Ok(Ok(_)) => {}
                    // The broker is away: rumqttc reconnects on the next call.
                    Ok(Err(_)) => std::thread::sleep(Duration::from_millis(100)),
                    Err(_) => return,
                }
            }
        });
        wait_for(10, "the subscription", || *subscribed.lock().unwrap());
        Self { got }
    }

    fn messages(&self) -> Vec<Message> {
        self.got.lock().unwrap().clone()
    }

    /// Payloads on the frames topic, each checked against the schema, and how many were
    /// repeats. QoS 1 is at least once: a publish whose acknowledgement was lost with the
    /// connection (ocelli's to the broker, or the broker's to this subscriber) comes again, byte
    /// for byte; a consumer drops it, as docs/protocol.md says.
    fn lines_and_repeats(&self) -> (Vec<Value>, usize) {
        let mut seen = std::collections::HashSet::new();
        let mut repeats = 0;
        let mut lines = Vec::new();
        for m in self.messages() {
            if m.topic != "ocelli/test/cam/frames" {
                continue;
            }
            if seen.insert(m.payload.clone()) {
                lines.push(checked(&m.payload));
            } else {
                repeats += 1;
            }
        }
        (lines, repeats)
    }

    fn lines(&self) -> Vec<Value> {
        self.lines_and_repeats().0
    }

    fn frame_ids(&self) -> Vec<u64> {
        frame_ids(&self.lines())
    }

    fn statuses(&self) -> Vec<String> {
        self.messages()
            .into_iter()
            .filter(|m| m.topic == "ocelli/test/cam/status")
            .map(|m| m.payload)
            .collect()
    }
}

fn frame_ids(lines: &[Value]) -> Vec<u64> {
    lines
        .iter()
        .filter(|l| l["type"] == "frame")
        .map(|l| l["frame_id"].as_u64().unwrap())
        .collect()
}

fn checked(line: &str) -> Value {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    let v = VALIDATOR.get_or_init(|| {
        let text = std::fs::read_to_string(SCHEMA).unwrap_or_else(|e| panic!("{SCHEMA}: {e}"));
        jsonschema::draft202012::new(&serde_json::from_str(&text).unwrap()).unwrap()
    });
    let value: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    if let Err(e) = v.validate(&value) {
        panic!("{line} does not match the schema: {e}");
    }
    value
}

/// `ocelli run` on a synthetic camera, publishing to `broker_port` with its spool in `dir`.
struct Ocelli {
    child: Running,
    http_port: u16,
    stderr: PathBuf,
}

impl Ocelli {
    /// `mqtt` adds keys to `[output.mqtt]`, `spool` to `[output.mqtt.spool]`.
    fn start(
        dir: &Path,
        name: &str,
        broker_port: u16,
        source: &str,
        mqtt: &str,
        spool: &str,
    ) -> Self {
        let http_port = free_port();
        let text = format!(
            "[source]\nkind = \"synthetic\"\nwidth = 64\nheight = 48\n{source}\n\n\
             [reconnect]\ndelays_s = [0.1]\n\n\
             [output]\nhttp = {{ listen = \"127.0.0.1:{http_port}\" }}\n\n\
             [output.mqtt]\nhost = \"127.0.0.1\"\nport = {broker_port}\ndevice = \"test\"\n\
             stream = \"cam\"\n{mqtt}\n\n[output.mqtt.spool]\ndir = {:?}\n{spool}\n",
            dir.join("spool")
        );
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, text).unwrap();
        let stderr = dir.join(format!("{name}.stderr"));
        let child = Running(
            ocelli_command(&["run", config.to_str().unwrap()])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&stderr).unwrap())
                .spawn()
                .unwrap(),
        );
        Self {
            child,
            http_port,
            stderr,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits for a clean exit.
    fn wait(mut self, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "ocelli failed: {}", self.stderr());
                assert!(!self.stderr().contains("panicked"), "{}", self.stderr());
                return;
            }
            assert!(
                Instant::now() < deadline,
                "ocelli did not stop: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn sigkill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn get(&self, path: &str) -> (u16, Vec<u8>) {
        curl(self.http_port, path)
    }

    fn metrics(&self) -> Exposition {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        Exposition::parse(std::str::from_utf8(&body).unwrap())
    }

    /// One metric without labels, or `None` while the endpoint is not up yet.
    fn metric(&self, name: &str) -> Option<f64> {
        let (status, body) = self.get("/metrics");
        (status == 200)
            .then(|| Exposition::parse(std::str::from_utf8(&body).unwrap()).value(name, &[]))
    }
}

/// Status code and body of a GET, through curl.
fn curl(port: u16, path: &str) -> (u16, Vec<u8>) {
    let out = Command::new(tool("curl"))
        .args(["-sS", "--max-time", "5", "-w", "\n%{http_code}"])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl runs");
    let mut body = out.stdout;
    let nl = body
        .iter()
        .rposition(|&b| b == b'\n')
        .expect("curl wrote a status");
    let status = std::str::from_utf8(&body[nl + 1..])
        .unwrap()
        .parse()
        .unwrap_or(0);
    body.truncate(nl);
    (status, body)
}

/// A Prometheus text exposition, parsed strictly: every sample belongs to a family declared by
/// `# TYPE` before it, names and labels are well-formed, values are numbers.
#[derive(Debug, Default)]
struct Exposition {
    types: BTreeMap<String, String>,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Exposition {
    fn parse(text: &str) -> Self {
        let mut e = Self::default();
        let name_ok = |n: &str| {
            !n.is_empty()
                && n.chars().enumerate().all(|(i, c)| {
                    c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
                })
        };
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
                assert!(name_ok(name), "{line}");
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                    "{line}"
                );
                assert!(
                    e.types.insert(name.into(), kind.into()).is_none(),
                    "twice: {line}"
                );
                continue;
            }
            if line.starts_with("# HELP ") || line.is_empty() {
                continue;
            }
            assert!(!line.starts_with('#'), "unknown comment: {line}");
            let (series, value) = line.rsplit_once(' ').expect("name value");
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
            };
            let (name, labels) = match series.split_once('{') {
                Some((n, l)) => (n, l.strip_suffix('}').expect("closing brace")),
                None => (series, ""),
            };
            assert!(name_ok(name), "{line}");
            let mut map = BTreeMap::new();
            for pair in labels.split(',').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').expect("label=value");
                assert!(name_ok(k), "{line}");
                let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
                map.insert(k.into(), v.expect("quoted label value").into());
            }
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|f| e.types.get(*f).is_some_and(|k| k == "histogram"))
                })
                .unwrap_or(name);
            assert!(e.types.contains_key(family), "no # TYPE before {line}");
            e.samples.push((name.into(), map, value));
        }
        e
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
            .2
    }
}

#[test]
fn a_normal_stream_arrives_in_order_and_the_last_will_marks_the_device_offline() {
    let tmp = scratch("normal");
    let dir = tmp.path();
    let mut broker = Broker::new(dir);
    broker.start();
    let sub = Subscriber::start(broker.port, "sub-normal");
    let ocelli = Ocelli::start(dir, "run", broker.port, "fps = 50", "", "");
    wait_for(30, "40 frames", || sub.frame_ids().len() >= 40);
    assert_eq!(sub.statuses().first().map(String::as_str), Some("online"));
    // Which models run (none here), retained beside the status.
    let models: Vec<Value> = sub
        .messages()
        .iter()
        .filter(|m| m.topic == "ocelli/test/cam/models")
        .map(|m| checked(&m.payload))
        .collect();
    assert_eq!(models.len(), 1, "{models:?}");
    assert_eq!(models[0]["detectors"], serde_json::json!([]));
    // Killed without a DISCONNECT, the broker publishes the will.
    ocelli.sigkill();
    wait_for(10, "the last will", || {
        sub.statuses().last().is_some_and(|s| s == "offline")
    });
    let ids = sub.frame_ids();
    assert_eq!(
        ids,
        (0..ids.len() as u64).collect::<Vec<_>>(),
        "lost, repeated or reordered"
    );
}

#[test]
fn frames_published_while_the_broker_is_down_arrive_once_it_is_back() {
    let tmp = scratch("restart");
    let dir = tmp.path();
    let mut broker = Broker::new(dir);
    broker.start();
    let sub = Subscriber::start(broker.port, "sub-restart");
    let ocelli = Ocelli::start(dir, "run", broker.port, "fps = 100\nframes = 600", "", "");
    wait_for(30, "100 frames", || sub.frame_ids().len() >= 100);
    broker.stop();
    wait_for(10, "frames spooled while the broker is down", || {
        ocelli
            .metric("ocelli_spool_records")
            .is_some_and(|n| n >= 50.0)
    });
    broker.start();
    ocelli.wait(60);
    wait_for(20, "every frame", || sub.frame_ids().len() >= 600);
    let dups = sub.messages().iter().filter(|m| m.dup).count();
    let (lines, repeats) = sub.lines_and_repeats();
    assert_eq!(
        frame_ids(&lines),
        (0..600).collect::<Vec<_>>(),
        "lost or reordered"
    );
    // Only what was in flight when the broker stopped may come twice: at most the window.
    assert!(repeats <= 32, "{repeats} repeats ({dups} flagged DUP)");
    eprintln!("broker restart: {repeats} repeated publishes, {dups} flagged DUP");
    assert_eq!(sub.statuses().last().map(String::as_str), Some("offline"));
}

#[test]
fn spooled_frames_survive_a_sigkill_and_go_out_first_after_the_restart() {
    let tmp = scratch("kill");
    let dir = tmp.path();
    let mut broker = Broker::new(dir);
    // The camera delivers 60 frames, then stays away: the process idles with them spooled.
    let first = Ocelli::start(
        dir,
        "first",
        broker.port,
        "fps = 200\nfaults = [{ after = 60, seconds = 3600 }]",
        "",
        "",
    );
    wait_for(30, "60 frames spooled", || {
        first.metric("ocelli_frames_total") == Some(60.0)
            && first.metric("ocelli_spool_records") == Some(60.0)
    });
    first.sigkill();
    broker.start();
    let sub = Subscriber::start(broker.port, "sub-kill");
    Ocelli::start(dir, "second", broker.port, "frames = 30", "", "").wait(60);
    let expected: Vec<u64> = (0..60).chain(0..30).collect();
    wait_for(20, "every frame", || {
        sub.frame_ids().len() >= expected.len()
    });
    assert_eq!(sub.frame_ids(), expected, "lost, repeated or reordered");
}

#[test]
fn the_spool_bound_drops_the_oldest_frames_and_says_how_many() {
    let tmp = scratch("bound");
    let dir = tmp.path();
    let mut broker = Broker::new(dir);
    // 40 kB holds about a hundred 64x48 frame lines: most of the 400 are evicted.
    let (quick, bound) = ("drain_timeout_s = 0.2", "max_mb = 0.04");
    Ocelli::start(
        dir,
        "offline",
        broker.port,
        "fps = 1000\nframes = 400",
        quick,
        bound,
    )
    .wait(30);
    broker.start();
    let sub = Subscriber::start(broker.port, "sub-bound");
    Ocelli::start(dir, "online", broker.port, "frames = 0", "", "").wait(60);
    wait_for(20, "the spooled frames", || {
        sub.frame_ids().last() == Some(&399)
    });
    let lines = sub.lines();
    assert_eq!(lines[0]["type"], "dropped", "{:?}", lines[0]);
    assert_eq!(lines[0]["reason"], "spool_full");
    let dropped = lines[0]["frames"].as_u64().unwrap();
    assert!(dropped > 0 && dropped < 400, "{dropped} dropped");
    assert_eq!(frame_ids(&lines), (dropped..400).collect::<Vec<_>>());
}

#[test]
fn metrics_count_every_frame_in_cumulative_histograms_and_the_frame_is_a_jpeg() {
    let tmp = scratch("http");
    let dir = tmp.path();
    let mut broker = Broker::new(dir);
    broker.start();
    // 50 frames with one short camera loss on the way, then the camera stays away.
    let source =
        "fps = 100\nfaults = [{ after = 20, seconds = 0.3 }, { after = 50, seconds = 3600 }]";
    let ocelli = Ocelli::start(dir, "run", broker.port, source, "", "");
    wait_for(30, "50 frames delivered", || {
        ocelli.metric("ocelli_frames_total") == Some(50.0)
            && ocelli.metric("ocelli_spool_records") == Some(0.0)
    });
    let m = ocelli.metrics();
    assert_eq!(m.types["ocelli_stage_latency_seconds"], "histogram");
    for stage in ["capture", "preprocess", "inference", "postprocess", "emit"] {
        let buckets: Vec<(f64, f64)> = m
            .samples
            .iter()
            .filter(|(n, l, _)| n == "ocelli_stage_latency_seconds_bucket" && l["stage"] == stage)
            .map(|(_, l, v)| (l["le"].parse::<f64>().unwrap_or(f64::INFINITY), *v))
            .collect();
        assert!(buckets.len() > 5, "{stage}: {buckets:?}");
        assert!(
            buckets
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
            "{stage}: bounds or counts not increasing: {buckets:?}"
        );
        assert_eq!(buckets.last().unwrap(), &(f64::INFINITY, 50.0), "{stage}");
        let count = m.value("ocelli_stage_latency_seconds_count", &[("stage", stage)]);
        assert_eq!(count, 50.0, "{stage}");
        assert!(m.value("ocelli_stage_latency_seconds_sum", &[("stage", stage)]) >= 0.0);
    }
    assert_eq!(m.value("ocelli_camera_reconnects_total", &[]), 1.0);
    assert!(
        m.value("ocelli_fps", &[]) > 10.0,
        "{:?}",
        m.value("ocelli_fps", &[])
    );
    assert_eq!(m.value("ocelli_mqtt_delivered_total", &[]), 50.0);
    assert_eq!(m.value("ocelli_mqtt_connected", &[]), 1.0);
    for reason in ["queue_full", "spool_full"] {
        let labels = [("output", "mqtt"), ("reason", reason)];
        assert_eq!(m.value("ocelli_output_dropped_total", &labels), 0.0);
    }

    let (status, jpeg) = ocelli.get("/frame.jpg");
    assert_eq!(status, 200);
    let mut decoder =
        zune_jpeg::JpegDecoder::new(zune_jpeg::zune_core::bytestream::ZCursor::new(&jpeg[..]));
    let pixels = decoder.decode().expect("a JPEG");
    assert_eq!(decoder.dimensions(), Some((64, 48)));
    assert_eq!(pixels.len(), 64 * 48 * 3);
    assert_eq!(ocelli.get("/healthz"), (200, b"ok\n".to_vec()));
    assert_eq!(ocelli.get("/nothing").0, 404);

    // The camera stays away: /healthz turns 503 once no frame came for 10 s (STALE), not before.
    let healthy = Instant::now();
    wait_for(30, "/healthz to answer 503", || {
        ocelli.get("/healthz").0 == 503
    });
    assert_eq!(
        ocelli.get("/healthz"),
        (503, b"no frame processed recently\n".to_vec())
    );
    let after = healthy.elapsed();
    assert!(
        after >= ocelli::emit::http::STALE / 2,
        "unhealthy {after:?} after the last healthy answer, before 10 s without a frame"
    );
}

#[test]
fn the_http_endpoint_listens_on_loopback_unless_configured() {
    let config: ocelli::emit::HttpConfig = toml::from_str("").unwrap();
    assert!(config.listen.ip().is_loopback(), "{config:?}");
}

/// Runs openssl with `args` in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new(tool("openssl"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed CA in `dir` as `{name}.pem` and `{name}.key`.
fn make_ca(dir: &Path, name: &str) -> PathBuf {
    let (pem, key) = (format!("{name}.pem"), format!("{name}.key"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            &format!("/CN=ocelli test {name}"),
            "-keyout",
            &key,
            "-out",
            &pem,
        ],
    );
    dir.join(pem)
}

/// MQTT over TLS to a mosquitto TLS listener with certificates made here: ocelli refuses the
/// broker when its `ca_file` is another CA, and delivers every frame when it is the broker's.
#[test]
fn tls_delivers_to_a_broker_the_ca_vouches_for_and_refuses_another() {
    let tmp = scratch("tls");
    let dir = tmp.path();
    let pki = dir.join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    let ca = make_ca(&pki, "ca");
    let other_ca = make_ca(&pki, "other-ca");
    // The broker's certificate, for the address ocelli dials (rustls checks the IP SAN).
    std::fs::write(pki.join("san.ext"), "subjectAltName = IP:127.0.0.1\n").unwrap();
    openssl(
        &pki,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "broker.key",
            "-out",
            "broker.csr",
        ],
    );
    openssl(
        &pki,
        &[
            "x509",
            "-req",
            "-in",
            "broker.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "san.ext",
            "-out",
            "broker.pem",
        ],
    );
    let tls_port = free_port();
    let mut broker = Broker::with(
        dir,
        &format!(
            "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n",
            ca.display(),
            pki.join("broker.pem").display(),
            pki.join("broker.key").display()
        ),
    );
    broker.start();
    wait_for(10, "the TLS listener", || {
        TcpStream::connect((Ipv4Addr::LOCALHOST, tls_port)).is_ok()
    });
    let sub = Subscriber::start(broker.port, "sub-tls");
    let tls = |ca: &Path| format!("tls = {{ ca_file = {ca:?} }}");

    let wrong_dir = dir.join("wrong-ca");
    std::fs::create_dir_all(&wrong_dir).unwrap();
    let wrong = Ocelli::start(&wrong_dir, "run", tls_port, "fps = 50", &tls(&other_ca), "");
    wait_for(30, "the connection refused", || {
        wrong.stderr().contains("mqtt:")
    });
    let refused = wrong.stderr();
    assert!(
        refused.to_lowercase().contains("certificate") || refused.contains("UnknownIssuer"),
        "refused for another reason: {refused}"
    );
    assert!(
        wrong.metric("ocelli_mqtt_connects_total") == Some(0.0),
        "connected with the wrong CA: {refused}"
    );
    wrong.sigkill();
    assert!(sub.messages().is_empty(), "{:?}", sub.messages());

    let ocelli = Ocelli::start(dir, "run", tls_port, "fps = 50\nframes = 40", &tls(&ca), "");
    ocelli.wait(60);
    wait_for(20, "40 frames over TLS", || sub.frame_ids().len() >= 40);
    assert_eq!(sub.frame_ids(), (0..40).collect::<Vec<_>>());
    assert_eq!(sub.statuses().first().map(String::as_str), Some("online"));
}
