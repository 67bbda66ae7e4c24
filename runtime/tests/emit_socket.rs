//! The emit socket end to end: real clients on a real Unix socket, every line checked against
//! `docs/schema/frame.schema.json`.

mod emit_fixtures;

use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::net::Shutdown;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use emit_fixtures::Scene;
use ocelli::emit::{SocketConfig, SocketError, SocketServer, TailError, tail};
use serde_json::Value;
use tempfile::TempDir;

const SCHEMA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../docs/schema/frame.schema.json"
);
const FRAMES: u64 = 5000;
const PATIENCE: Duration = Duration::from_secs(20);

/// A socket path in a fresh folder, removed with the folder when the guard is dropped.
fn socket_path(test: &str) -> (TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix(&format!("ocelli-emit-{test}-"))
        .tempdir()
        .unwrap();
    let path = dir.path().join("s.sock");
    (dir, path)
}

fn config(test: &str) -> (TempDir, SocketConfig) {
    let (dir, path) = socket_path(test);
    (dir, SocketConfig::new(path))
}

fn connect(path: &Path) -> UnixStream {
    UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()))
}

fn validator() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let text = fs::read_to_string(SCHEMA).unwrap_or_else(|e| panic!("{SCHEMA}: {e}"));
        jsonschema::draft202012::new(&serde_json::from_str(&text).unwrap())
            .expect("the schema is valid")
    })
}

/// Parses a line and checks it against the schema.
fn checked(line: &str) -> Value {
    let value: Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    let errors: Vec<String> = validator()
        .iter_errors(&value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "line breaks the schema: {errors:?}\n{line}"
    );
    value
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A client that reads every line on its own thread until the server closes the connection.
struct Reader {
    count: Arc<AtomicUsize>,
    thread: JoinHandle<Vec<String>>,
}

impl Reader {
    fn spawn(stream: UnixStream) -> Self {
        let count = Arc::new(AtomicUsize::new(0));
        let counter = count.clone();
        let thread = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stream).lines() {
                lines.push(line.expect("reading the socket"));
                counter.fetch_add(1, Ordering::Release);
            }
            lines
        });
        Self { count, thread }
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    fn join(self) -> Vec<String> {
        self.thread.join().unwrap()
    }
}

fn frame_ids(lines: &[String]) -> Vec<u64> {
    lines
        .iter()
        .map(|l| checked(l))
        .filter(|v| v["type"] == "frame")
        .map(|v| v["frame_id"].as_u64().unwrap())
        .collect()
}

fn publish_frames(server: &SocketServer, scene: &Scene, ids: std::ops::Range<u64>) {
    publish_paced(server, scene, ids, &[]);
}

/// Publishes frames `ids`, holding back while any of `readers` is half a ring behind: a client
/// that keeps up must never miss a line, whatever the others do. Returns the slowest and the mean
/// `publish` call and the mean line length.
fn publish_paced(
    server: &SocketServer,
    scene: &Scene,
    ids: std::ops::Range<u64>,
    readers: &[&Reader],
) -> (Duration, Duration, usize) {
    let (n, start_id) = (ids.end - ids.start, ids.start);
    let start_counts: Vec<usize> = readers.iter().map(|r| r.count()).collect();
    let mut buf = Vec::new();
    let (mut slowest, mut total, mut bytes) = (Duration::ZERO, Duration::ZERO, 0);
    for i in ids {
        let sent = (i - start_id) as usize;
        wait_for("the readers", || {
            readers
                .iter()
                .zip(&start_counts)
                .all(|(r, c)| r.count() - c + 32 > sent)
        });
        scene.record(i).write_line(&mut buf);
        bytes += buf.len();
        let start = Instant::now();
        server.publish(&buf);
        let took = start.elapsed();
        slowest = slowest.max(took);
        total += took;
    }
    (slowest, total / n.max(1) as u32, bytes / n.max(1) as usize)
}

#[test]
fn readers_get_every_frame_while_a_stalled_client_is_dropped_for() {
    let (_dir, cfg) = config("three");
    let server = SocketServer::bind(&cfg).unwrap();
    let readers: Vec<Reader> = (0..2)
        .map(|_| Reader::spawn(connect(server.path())))
        .collect();
    let stalled = connect(server.path());
    wait_for("three clients", || server.stats().clients == 3);

    let (slowest, mean, bytes) = publish_paced(
        &server,
        &Scene::new(),
        0..FRAMES,
        &[&readers[0], &readers[1]],
    );
    eprintln!(
        "publish: {FRAMES} lines of {bytes} bytes on average, {mean:?} mean, {slowest:?} slowest"
    );
    // The server never waits for a client (docs/protocol.md): a publish that blocked on the
    // stalled one would take until the stall ends. A correctness bound, not a benchmark: a
    // second is far above any scheduling delay on a loaded host.
    assert!(
        slowest < Duration::from_secs(1),
        "a publish took {slowest:?}: it waited on the stalled client"
    );
    wait_for("the readers to get every frame", || {
        readers.iter().all(|r| r.count() as u64 == FRAMES)
    });
    wait_for("drops counted for the stalled client", || {
        server.stats().dropped_frames > 0
    });

    // The stalled client now reads what the kernel held, then the newest frames, every gap in
    // frame ids announced by `dropped` notices that add up to it.
    let (mut last, mut announced, mut notices, mut total) = (None, 0, 0, 0);
    for line in BufReader::new(stalled).lines() {
        let v = checked(&line.unwrap());
        match v["type"].as_str() {
            Some("dropped") => {
                announced += v["frames"].as_u64().unwrap();
                notices += 1;
            }
            Some("frame") => {
                let id = v["frame_id"].as_u64().unwrap();
                assert_eq!(
                    id,
                    last.map_or(0, |l| l + 1) + announced,
                    "frame after {last:?}, {announced} announced dropped"
                );
                total += announced;
                (last, announced) = (Some(id), 0);
                if id == FRAMES - 1 {
                    break;
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let stats = server.stats();
    eprintln!("stalled client: {notices} dropped notices, {total} frames dropped; {stats:?}");
    assert!(notices > 0);
    assert_eq!(stats.dropped_frames, total);
    assert_eq!(stats.published, FRAMES);

    server.shutdown();
    for r in readers {
        let lines = r.join();
        assert_eq!(frame_ids(&lines), (0..FRAMES).collect::<Vec<_>>());
        assert_eq!(
            lines.last().map(String::as_str),
            Some(r#"{"schema":1,"type":"shutdown"}"#)
        );
    }
}

#[test]
fn late_client_gets_the_stream_from_then_on() {
    let (_dir, cfg) = config("late");
    let server = SocketServer::bind(&cfg).unwrap();
    let scene = Scene::new();
    publish_frames(&server, &scene, 0..100);
    let late = Reader::spawn(connect(server.path()));
    wait_for("the late client", || server.stats().clients == 1);
    publish_paced(&server, &scene, 100..200, &[&late]);
    wait_for("100 lines", || late.count() == 100);
    server.shutdown();
    assert_eq!(frame_ids(&late.join()), (100..200).collect::<Vec<_>>());
}

#[test]
fn departed_clients_are_cleaned_up() {
    let (_dir, cfg) = config("departed");
    let server = SocketServer::bind(&cfg).unwrap();
    let scene = Scene::new();
    let stays = Reader::spawn(connect(server.path()));
    let idle = connect(server.path());
    let backlogged = connect(server.path());
    let half_closed = connect(server.path());
    wait_for("four clients", || server.stats().clients == 4);

    // A client that only stops sending is still a reader.
    half_closed.shutdown(Shutdown::Write).unwrap();
    let half_closed = Reader::spawn(half_closed);
    drop(idle);
    wait_for("the idle client to go", || server.stats().clients == 3);
    publish_paced(&server, &scene, 0..1000, &[&stays, &half_closed]);
    drop(backlogged);
    publish_paced(&server, &scene, 1000..1010, &[&stays, &half_closed]);
    wait_for("the backlogged client to go", || {
        server.stats().clients == 2
    });
    assert_eq!(server.stats().disconnected, 2);
    wait_for("every line", || {
        stays.count() == 1010 && half_closed.count() == 1010
    });
    server.shutdown();
    for r in [stays, half_closed] {
        assert_eq!(frame_ids(&r.join()), (0..1010).collect::<Vec<_>>());
    }
}

#[test]
fn input_from_clients_is_discarded() {
    let (_dir, cfg) = config("hostile");
    let server = SocketServer::bind(&cfg).unwrap();
    let scene = Scene::new();
    let client = connect(server.path());
    let mut writer = client.try_clone().unwrap();
    let reader = Reader::spawn(client);
    wait_for("the client", || server.stats().clients == 1);
    let noise = std::thread::spawn(move || {
        let junk = [b'{'; 4096];
        (0..256).try_for_each(|_| writer.write_all(&junk))
    });
    publish_paced(&server, &scene, 0..500, &[&reader]);
    noise
        .join()
        .unwrap()
        .expect("the server keeps reading what clients send");
    wait_for("every line", || reader.count() == 500);
    server.shutdown();
    assert_eq!(frame_ids(&reader.join()), (0..500).collect::<Vec<_>>());
}

#[test]
fn clients_past_the_limit_get_an_error_line() {
    let (_dir, cfg) = config("limit");
    let server = SocketServer::bind(&SocketConfig {
        max_clients: 2,
        ..cfg
    })
    .unwrap();
    let _kept = [connect(server.path()), connect(server.path())];
    wait_for("two clients", || server.stats().clients == 2);
    let mut lines = BufReader::new(connect(server.path())).lines();
    let notice = checked(&lines.next().unwrap().unwrap());
    assert_eq!(notice["code"], "too_many_clients");
    assert!(
        lines.next().is_none(),
        "the connection is closed after the notice"
    );
    assert_eq!(server.stats().refused, 1);
    assert_eq!(server.stats().clients, 2);
}

#[test]
fn shutdown_flushes_and_removes_the_socket() {
    let (_dir, cfg) = config("shutdown");
    let server = SocketServer::bind(&cfg).unwrap();
    let client = connect(server.path());
    wait_for("the client", || server.stats().clients == 1);
    publish_frames(&server, &Scene::new(), 0..50);
    server.shutdown();
    assert!(!cfg.path.exists());
    let lines: Vec<String> = BufReader::new(client).lines().map(Result::unwrap).collect();
    assert_eq!(frame_ids(&lines), (0..50).collect::<Vec<_>>());
    assert_eq!(checked(lines.last().unwrap())["type"], "shutdown");

    drop(SocketServer::bind(&cfg).unwrap());
    assert!(
        !cfg.path.exists(),
        "dropping the server removes the socket too"
    );
}

#[test]
fn what_a_client_sent_unread_at_shutdown_does_not_reset_it() {
    // Closing a Unix socket with unread input resets the peer: its read fails instead of ending.
    let (_dir, cfg) = config("unread");
    let server = SocketServer::bind(&cfg).unwrap();
    let mut client = connect(server.path());
    wait_for("the client", || server.stats().clients == 1);
    publish_frames(&server, &Scene::new(), 0..5);
    client.write_all(&[b'{'; 160 * 1024]).unwrap();
    server.shutdown();
    let lines: Vec<String> = BufReader::new(client)
        .lines()
        .collect::<Result<_, _>>()
        .expect("the connection ends cleanly");
    assert_eq!(frame_ids(&lines), (0..5).collect::<Vec<_>>());
    assert_eq!(checked(lines.last().unwrap())["type"], "shutdown");
}

#[test]
fn socket_file_mode_and_group() {
    let (_dir, cfg) = config("mode");
    let server = SocketServer::bind(&cfg).unwrap();
    let meta = fs::metadata(server.path()).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660, "default mode");
    drop(server);

    let gid = nix::unistd::getegid();
    let group = nix::unistd::Group::from_gid(gid)
        .unwrap()
        .expect("the test's group has a name")
        .name;
    let server = SocketServer::bind(&SocketConfig {
        mode: 0o600,
        group: Some(group),
        ..cfg.clone()
    })
    .unwrap();
    let meta = fs::metadata(server.path()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.gid(), gid.as_raw());
    drop(server);

    let nobody = SocketConfig {
        group: Some("no-such-group-ocelli".into()),
        ..cfg.clone()
    };
    assert!(matches!(
        SocketServer::bind(&nobody),
        Err(SocketError::UnknownGroup { .. })
    ));
    assert!(!cfg.path.exists(), "a failed bind leaves no socket behind");
}

#[test]
fn what_is_at_the_path_decides_bind() {
    let (_dir, cfg) = config("path");

    fs::write(&cfg.path, "not a socket").unwrap();
    assert!(matches!(
        SocketServer::bind(&cfg),
        Err(SocketError::NotASocket { .. })
    ));
    assert_eq!(
        fs::read_to_string(&cfg.path).unwrap(),
        "not a socket",
        "left untouched"
    );
    fs::remove_file(&cfg.path).unwrap();

    drop(UnixListener::bind(&cfg.path).unwrap()); // a crashed server's leftover
    let server = SocketServer::bind(&cfg).expect("a stale socket is replaced");
    assert!(matches!(
        SocketServer::bind(&cfg),
        Err(SocketError::InUse { .. })
    ));
    drop(server);

    let missing_dir = SocketConfig {
        path: cfg.path.with_file_name("no/such/dir.sock"),
        ..cfg.clone()
    };
    assert!(matches!(
        SocketServer::bind(&missing_dir),
        Err(SocketError::Bind { .. })
    ));
}

#[test]
fn config_from_toml() {
    let parse = |text: &str| toml::from_str::<SocketConfig>(text);
    let cfg =
        parse("path = \"/tmp/x.sock\"\nmode = 0o640\ngroup = \"video\"\nqueue_frames = 8").unwrap();
    let expected = SocketConfig {
        mode: 0o640,
        group: Some("video".into()),
        queue_frames: 8,
        ..SocketConfig::new("/tmp/x.sock")
    };
    assert_eq!(cfg, expected);
    assert_eq!(
        parse("path = \"/tmp/x.sock\"").unwrap(),
        SocketConfig::new("/tmp/x.sock")
    );
    for (text, complaint) in [
        ("path = \"/x\"\nmdoe = 0o640", "unknown field"),
        ("mode = 0o640", "missing field"),
    ] {
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains(complaint), "{text:?}: {err}");
    }

    let (_dir, base) = config("bounds");
    for bad in [
        SocketConfig {
            mode: 0o1777,
            ..base.clone()
        },
        SocketConfig {
            max_clients: 0,
            ..base.clone()
        },
        SocketConfig {
            queue_frames: 0,
            ..base.clone()
        },
        SocketConfig {
            queue_frames: 1 << 20,
            ..base.clone()
        },
    ] {
        let err = SocketServer::bind(&bad).err().expect("out of range");
        assert!(matches!(err, SocketError::Config { .. }), "{err}");
    }
}

#[test]
fn tail_prints_frames() {
    let (_dir, cfg) = config("tail");
    let server = SocketServer::bind(&cfg).unwrap();
    let path = server.path().to_path_buf();
    let tailer = std::thread::spawn(move || {
        let mut out = Vec::new();
        tail(&path, &mut out, Some(3)).map(|n| (n, String::from_utf8(out).unwrap()))
    });
    wait_for("tail to connect", || server.stats().clients == 1);
    publish_frames(&server, &Scene::new(), 0..3);
    let (n, text) = tailer.join().unwrap().unwrap();
    assert_eq!(n, 3);
    let expected = [
        "frame 0 t=1700000000.000000s 1280x720 | capture 0.8 pre 2.1 infer 31.0 post 0.3 ms | 0 detections (+4 over the limit)",
        "  source ok (0 reconnects)",
        "  event appeared car",
        "frame 1 t=1700000000.033333s 1280x720 | capture 0.8 pre 2.1 infer 31.0 post 0.3 ms | 1 detections",
        "  car 0.34 [97.4 53.6 162.6 172.1]",
        "  motion 0.10% in 1 regions",
    ];
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[..expected.len()], expected, "{text}");
    assert!(lines[expected.len()].starts_with("frame 2 "), "{text}");
}

#[test]
fn tail_prints_notices_and_rejects_foreign_lines() {
    let (_dir, path) = socket_path("tail-notices");
    let listener = UnixListener::bind(&path).unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let lines = [
            r#"{"schema":1,"type":"dropped","frames":12}"#,
            r#"{"schema":1,"type":"error","code":"too_many_clients","message":"full"}"#,
            r#"{"schema":2,"type":"hello","x":1}"#,
            r#"{"schema":1,"type":"shutdown"}"#,
            "HTTP/1.1 400 Bad Request",
        ];
        lines.iter().try_for_each(|l| writeln!(s, "{l}"))
    });
    let mut out = Vec::new();
    let err = tail(&path, &mut out, None).unwrap_err();
    server.join().unwrap().unwrap();
    assert!(
        matches!(err, TailError::BadLine { line_no: 5, .. }),
        "{err}"
    );
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "-- dropped 12 frames: this client read too slowly --\n\
         -- error: full --\n\
         -- {\"schema\":2,\"type\":\"hello\",\"x\":1} --\n\
         -- server shut down --\n"
    );

    let missing = path.with_file_name("missing.sock");
    assert!(matches!(
        tail(&missing, &mut io::sink(), None),
        Err(TailError::Connect { .. })
    ));
}

#[test]
fn schema_rejects_what_ocelli_never_writes() {
    let scene = Scene::new();
    let mut buf = Vec::new();
    scene.record(3).write_line(&mut buf);
    let good = checked(std::str::from_utf8(&buf).unwrap());
    type Edit = fn(&mut Value);
    let edits: [(&str, Edit); 6] = [
        ("missing frame_id", |v| {
            drop(v.as_object_mut().unwrap().remove("frame_id"))
        }),
        ("extra field", |v| v["extra"] = 1.into()),
        ("score above 1", |v| {
            v["detections"][0]["score"] = 1.5.into()
        }),
        ("three-corner box", |v| {
            drop(v["detections"][0]["box"].as_array_mut().unwrap().pop())
        }),
        ("unknown inference", |v| v["inference"] = "maybe".into()),
        ("schema 2", |v| v["schema"] = 2.into()),
    ];
    for (what, edit) in edits {
        let mut bad = good.clone();
        edit(&mut bad);
        assert!(!validator().is_valid(&bad), "{what} passes the schema");
    }
}
