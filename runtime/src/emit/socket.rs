//! The Unix socket that streams JSON lines to every connected client.
//!
//! The pipeline calls [`SocketServer::publish`], which copies the line into a fixed ring of reused
//! buffers and wakes a writer thread; it never waits on a client and, once the ring buffers have
//! grown to the longest line, never allocates. The writer thread owns the clients: each has a
//! cursor into the ring and a small staging buffer written with non-blocking sends. A client whose
//! cursor falls behind the ring's oldest line skips ahead and is told how many frames it missed.
//! The ring's mutex is held, by either side, only for a `memcpy`, never across a system call.

use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::libc;
use nix::sys::socket::{MsgFlags, send};
use nix::unistd::{Group, chown};
use serde::Deserialize;

use super::record::SCHEMA_VERSION;

/// How long shutdown keeps writing to clients that still have lines queued.
pub const FLUSH_TIMEOUT: Duration = Duration::from_millis(500);

/// Starting capacity of each ring slot: a typical frame line fits without growing.
const SLOT_BYTES: usize = 4096;
/// Bytes staged per client between the ring and its socket (at least one whole line).
const STAGE_BYTES: usize = 16 * 1024;
/// How long the listener rests after an accept error such as running out of file descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Reads per wake-up from a client that sends data; what it sends is discarded.
const MAX_READS: usize = 16;
/// Reads per client at shutdown: more than a client's socket buffer holds unread, yet bounded
/// against one that never stops sending.
const DRAIN_READS: usize = 256;

/// The `[output.socket]` table of the config.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SocketConfig {
    /// Where to create the socket.
    pub path: PathBuf,
    /// Permission bits of the socket file; connecting needs write permission.
    #[serde(default = "default_mode")]
    pub mode: u32,
    /// Group to give the socket file, so its members may connect.
    #[serde(default)]
    pub group: Option<String>,
    /// Most clients served at once; more are told so and closed.
    #[serde(default = "default_max_clients")]
    pub max_clients: usize,
    /// Lines kept for clients that fall behind; a client further behind skips ahead.
    #[serde(default = "default_queue_frames")]
    pub queue_frames: usize,
}

fn default_mode() -> u32 {
    0o660
}

fn default_max_clients() -> usize {
    16
}

fn default_queue_frames() -> usize {
    64
}

impl SocketConfig {
    /// A socket at `path` with every other setting at its default.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            mode: default_mode(),
            group: None,
            max_clients: default_max_clients(),
            queue_frames: default_queue_frames(),
        }
    }
}

/// Largest accepted `max_clients`: each client costs a descriptor and a staging buffer.
pub const MAX_CLIENTS: usize = 1024;
/// Largest accepted `queue_frames`: the ring keeps one buffer per frame.
pub const MAX_QUEUE_FRAMES: usize = 4096;

/// Why the socket could not be served.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// A config value is out of range: set it within the bounds the message gives.
    #[error("output.socket.{field} = {value} is out of range; use {allowed}")]
    Config {
        field: &'static str,
        value: u64,
        allowed: &'static str,
    },
    /// Something other than a socket exists at the path: remove it or choose another `output.socket.path`.
    #[error("{path} exists and is not a socket; remove it or set another output.socket.path")]
    NotASocket { path: PathBuf },
    /// Another process is serving at the path: stop it or choose another `output.socket.path`.
    #[error(
        "another process is already serving at {path}; stop it or set another output.socket.path"
    )]
    InUse { path: PathBuf },
    /// A stale socket file could not be removed: check the directory's permissions.
    #[error("cannot remove the stale socket {path}: {source}")]
    RemoveStale { path: PathBuf, source: io::Error },
    /// The socket could not be created: the directory must exist and be writable, and the path
    /// must be shorter than 108 bytes.
    #[error("cannot bind a socket at {path}: {source}")]
    Bind { path: PathBuf, source: io::Error },
    /// The socket's mode could not be set.
    #[error("cannot set mode {mode:o} on {path}: {source}")]
    Mode {
        path: PathBuf,
        mode: u32,
        source: io::Error,
    },
    /// `output.socket.group` names no group on this system: create it or fix the name.
    #[error(
        "output.socket.group {group:?} is not a group on this system; create it or fix the name"
    )]
    UnknownGroup { group: String },
    /// The group could not be looked up or given to the socket: the service must run as root or
    /// as a member of the group.
    #[error("cannot give {path} to group {group:?}: {source}")]
    Group {
        path: PathBuf,
        group: String,
        source: nix::Error,
    },
    /// The writer thread or its wake-up channel could not be set up: the process is out of threads
    /// or descriptors.
    #[error("cannot start the socket writer: {0}")]
    Start(io::Error),
}

/// Counters since the server started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketStats {
    /// Clients connected now.
    pub clients: usize,
    /// Lines published.
    pub published: u64,
    /// Frame lines skipped for clients that fell behind, summed over clients.
    pub dropped_frames: u64,
    /// Connections refused because `max_clients` were connected.
    pub refused: u64,
    /// Clients that went away.
    pub disconnected: u64,
}

/// The last `queue_frames` lines, by sequence number.
struct Ring {
    slots: Box<[Vec<u8>]>,
    /// Sequence number of the next line published.
    head: u64,
}

impl Ring {
    fn new(len: usize) -> Self {
        Self {
            slots: (0..len).map(|_| Vec::with_capacity(SLOT_BYTES)).collect(),
            head: 0,
        }
    }

    fn slot(&self, seq: u64) -> usize {
        (seq % self.slots.len() as u64) as usize
    }

    fn push(&mut self, line: &[u8]) {
        let i = self.slot(self.head);
        let slot = &mut self.slots[i];
        slot.clear();
        slot.extend_from_slice(line);
        if !line.ends_with(b"\n") {
            slot.push(b'\n');
        }
        self.head += 1;
    }

    fn oldest(&self) -> u64 {
        self.head.saturating_sub(self.slots.len() as u64)
    }

    fn line(&self, seq: u64) -> &[u8] {
        &self.slots[self.slot(seq)]
    }
}

struct Shared {
    ring: Mutex<Ring>,
    /// A wake-up byte is in flight: publish need not send another.
    wake_pending: AtomicBool,
    stop: AtomicBool,
    clients: AtomicUsize,
    dropped_frames: AtomicU64,
    refused: AtomicU64,
    disconnected: AtomicU64,
    /// Which models run: every client's first line, and again to all after a change.
    models: Mutex<super::Announcement>,
}

impl Shared {
    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        // The ring holds plain bytes: a panic elsewhere cannot leave it inconsistent.
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn models(&self) -> std::sync::MutexGuard<'_, super::Announcement> {
        // Plain bytes too.
        self.models.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Streams JSON lines to the clients of a Unix socket.
pub struct SocketServer {
    shared: Arc<Shared>,
    wake: UnixStream,
    writer: Option<JoinHandle<()>>,
    path: PathBuf,
    /// Device and inode of the socket file, so shutdown removes only the file it created.
    file_id: (u64, u64),
}

impl SocketServer {
    /// Creates the socket at `config.path` and starts serving it.
    pub fn bind(config: &SocketConfig) -> Result<Self, SocketError> {
        check_config(config)?;
        let path = config.path.clone();
        clear_stale(&path)?;
        let listener = UnixListener::bind(&path).map_err(|source| SocketError::Bind {
            path: path.clone(),
            source,
        })?;
        let file_id = match setup_file(&path, config) {
            Ok(id) => id,
            Err(e) => {
                let _ = fs::remove_file(&path);
                return Err(e);
            }
        };
        let shared = Arc::new(Shared {
            ring: Mutex::new(Ring::new(config.queue_frames)),
            wake_pending: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            clients: AtomicUsize::new(0),
            dropped_frames: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            disconnected: AtomicU64::new(0),
            models: Mutex::new(super::Announcement::default()),
        });
        let started = (|| {
            let (wake, wake_rx) = UnixStream::pair()?;
            for s in [&wake, &wake_rx] {
                s.set_nonblocking(true)?;
            }
            listener.set_nonblocking(true)?;
            let writer = Writer {
                shared: shared.clone(),
                listener,
                wake_rx,
                max_clients: config.max_clients,
                clients: Vec::with_capacity(config.max_clients),
                fds: Vec::with_capacity(config.max_clients + 2),
                listen_after: None,
            };
            let handle = std::thread::Builder::new()
                .name("ocelli-emit".into())
                .spawn(move || writer.run())?;
            Ok((wake, handle))
        })();
        match started {
            Ok((wake, handle)) => Ok(Self {
                shared,
                wake,
                writer: Some(handle),
                path,
                file_id,
            }),
            Err(e) => {
                let _ = fs::remove_file(&path);
                Err(SocketError::Start(e))
            }
        }
    }

    /// Queues `line` for every client: one JSON document without raw newlines (compact serde_json
    /// output has none); the terminating newline is added if it lacks one.
    ///
    /// Never waits on a client; allocates only while the ring's buffers grow to the longest line.
    pub fn publish(&self, line: &[u8]) {
        self.shared.ring().push(line);
        self.wake();
    }

    /// Makes `line` (a `models` line) the first line every new client gets, and sends it to
    /// the clients connected now, in order with the frame lines.
    pub fn announce(&self, line: &[u8]) {
        self.shared.models().set(line);
        self.wake();
    }

    fn wake(&self) {
        if !self.shared.wake_pending.swap(true, Ordering::AcqRel) {
            // A full channel already holds a wake-up.
            let _ = (&self.wake).write(&[1]);
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn stats(&self) -> SocketStats {
        let s = &self.shared;
        SocketStats {
            clients: s.clients.load(Ordering::Relaxed),
            published: s.ring().head,
            dropped_frames: s.dropped_frames.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
            disconnected: s.disconnected.load(Ordering::Relaxed),
        }
    }

    /// Sends what is queued (for at most [`FLUSH_TIMEOUT`]) and a `shutdown` notice, closes every
    /// client and removes the socket file. Dropping the server does the same.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let Some(writer) = self.writer.take() else {
            return;
        };
        self.shared.stop.store(true, Ordering::Release);
        // If the channel is full, a wake-up is already waiting.
        let _ = (&self.wake).write(&[1]);
        // The writer only ends by returning; a panic there has already been reported.
        let _ = writer.join();
        if fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.file_id) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl Drop for SocketServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn check_config(c: &SocketConfig) -> Result<(), SocketError> {
    let bad = |field, value: u64, allowed| {
        Err(SocketError::Config {
            field,
            value,
            allowed,
        })
    };
    if c.mode > 0o777 {
        return bad("mode", c.mode.into(), "permission bits up to 0o777");
    }
    if !(1..=MAX_CLIENTS).contains(&c.max_clients) {
        return bad("max_clients", c.max_clients as u64, "1 to 1024");
    }
    if !(1..=MAX_QUEUE_FRAMES).contains(&c.queue_frames) {
        return bad("queue_frames", c.queue_frames as u64, "1 to 4096");
    }
    Ok(())
}

/// Removes a socket file left by a server that is gone; refuses to touch anything else.
fn clear_stale(path: &Path) -> Result<(), SocketError> {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(SocketError::NotASocket { path: path.into() });
    }
    if UnixStream::connect(path).is_ok() {
        return Err(SocketError::InUse { path: path.into() });
    }
    fs::remove_file(path).map_err(|source| SocketError::RemoveStale {
        path: path.into(),
        source,
    })
}

fn setup_file(path: &Path, c: &SocketConfig) -> Result<(u64, u64), SocketError> {
    fs::set_permissions(path, fs::Permissions::from_mode(c.mode)).map_err(|source| {
        SocketError::Mode {
            path: path.into(),
            mode: c.mode,
            source,
        }
    })?;
    if let Some(group) = &c.group {
        let err = |source| SocketError::Group {
            path: path.into(),
            group: group.clone(),
            source,
        };
        let gid = Group::from_name(group)
            .map_err(err)?
            .ok_or_else(|| SocketError::UnknownGroup {
                group: group.clone(),
            })?
            .gid;
        chown(path, None, Some(gid)).map_err(err)?;
    }
    let meta = fs::symlink_metadata(path).map_err(|source| SocketError::Bind {
        path: path.into(),
        source,
    })?;
    Ok((meta.dev(), meta.ino()))
}

/// Lines the server writes itself, next to the frame lines it relays.
enum Notice {
    Dropped(u64),
    TooManyClients(usize),
    Shutdown,
}

impl Notice {
    fn write(&self, out: &mut Vec<u8>) {
        let v = SCHEMA_VERSION;
        // Writing into a Vec cannot fail.
        let _ = match self {
            Notice::Dropped(n) => {
                writeln!(out, r#"{{"schema":{v},"type":"dropped","frames":{n}}}"#)
            }
            Notice::TooManyClients(max) => writeln!(
                out,
                r#"{{"schema":{v},"type":"error","code":"too_many_clients","message":"this server accepts at most {max} clients; try again later"}}"#
            ),
            Notice::Shutdown => writeln!(out, r#"{{"schema":{v},"type":"shutdown"}}"#),
        };
    }
}

/// The client is gone: its connection failed or it hung up.
struct Gone;

struct Client {
    stream: UnixStream,
    /// Sequence number of the next ring line to stage.
    next: u64,
    /// Staged bytes; `out[sent..]` is still to be written.
    out: Vec<u8>,
    sent: usize,
    /// Frames skipped and not yet reported to the client.
    skipped: u64,
    /// The last send would have blocked: wait until the socket is writable.
    blocked: bool,
    /// The client shut down its sending side; it may still read.
    read_closed: bool,
    /// The shutdown notice is staged.
    said_bye: bool,
    /// The version of the `models` line staged last.
    announced: u64,
}

impl Client {
    /// Stages ring lines from `next`, skipping ahead past lines the ring has overwritten.
    fn stage(&mut self, ring: &Ring, dropped: &AtomicU64, closing: bool) {
        let oldest = ring.oldest();
        if self.next < oldest {
            let missed = oldest - self.next;
            self.skipped += missed;
            dropped.fetch_add(missed, Ordering::Relaxed);
            self.next = oldest;
        }
        self.out.drain(..self.sent);
        self.sent = 0;
        while self.next < ring.head {
            let line = ring.line(self.next);
            if !self.out.is_empty() && self.out.len() + line.len() > STAGE_BYTES {
                return;
            }
            if self.skipped > 0 {
                Notice::Dropped(self.skipped).write(&mut self.out);
                self.skipped = 0;
            }
            self.out.extend_from_slice(line);
            self.next += 1;
        }
        if closing && !self.said_bye {
            Notice::Shutdown.write(&mut self.out);
            self.said_bye = true;
        }
    }

    /// Writes staged bytes until done or the socket is full.
    fn flush(&mut self) -> Result<(), Gone> {
        self.blocked = false;
        while self.sent < self.out.len() {
            match send_nonblocking(self.stream.as_raw_fd(), &self.out[self.sent..]) {
                Ok(n) => self.sent += n,
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => {
                    self.blocked = true;
                    return Ok(());
                }
                Err(_) => return Err(Gone),
            }
        }
        Ok(())
    }

    fn idle(&self) -> bool {
        self.sent == self.out.len()
    }

    /// Stages and writes until the client has everything published or its socket is full.
    fn pump(&mut self, shared: &Shared, closing: bool) -> Result<(), Gone> {
        {
            let models = shared.models();
            if models.version != self.announced {
                self.out.extend_from_slice(&models.line);
                self.announced = models.version;
            }
        }
        loop {
            let behind = {
                let ring = shared.ring();
                self.stage(&ring, &shared.dropped_frames, closing);
                self.next < ring.head
            };
            self.flush()?;
            if self.blocked || !behind {
                return Ok(());
            }
        }
    }

    /// Reads and discards what the client sent, at most `reads` times 4 KiB.
    fn discard_input(&mut self, reads: usize) -> Result<(), Gone> {
        let mut buf = [0u8; 4096];
        for _ in 0..reads {
            match (&self.stream).read(&mut buf) {
                Ok(0) => {
                    self.read_closed = true;
                    return Ok(());
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(_) => return Err(Gone),
            }
        }
        Ok(())
    }
}

fn send_nonblocking(fd: RawFd, buf: &[u8]) -> Result<usize, Errno> {
    // MSG_NOSIGNAL: a client that hung up must give EPIPE, not kill the process with SIGPIPE.
    send(fd, buf, MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT)
}

fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// `poll(2)` over a reused array: nix's `PollFd` borrows each descriptor, which would force a new
/// vector every round as clients come and go.
fn poll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<usize> {
    let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
    // SAFETY: `fds` is a valid, exclusively borrowed array of `fds.len()` pollfd structs.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

const LISTENER: usize = 0;
const WAKE: usize = 1;
const FIRST_CLIENT: usize = 2;

struct Writer {
    shared: Arc<Shared>,
    listener: UnixListener,
    wake_rx: UnixStream,
    max_clients: usize,
    clients: Vec<Client>,
    fds: Vec<libc::pollfd>,
    /// Accepting is paused until then after an accept error.
    listen_after: Option<Instant>,
}

impl Writer {
    fn run(mut self) {
        while !self.shared.stop.load(Ordering::Acquire) {
            self.round();
        }
        self.close();
    }

    fn round(&mut self) {
        let now = Instant::now();
        let listening = self.listen_after.is_none_or(|t| now >= t);
        self.fds.clear();
        self.fds.push(pollfd(
            if listening {
                self.listener.as_raw_fd()
            } else {
                -1
            },
            libc::POLLIN,
        ));
        self.fds
            .push(pollfd(self.wake_rx.as_raw_fd(), libc::POLLIN));
        for c in &self.clients {
            let read = if c.read_closed { 0 } else { libc::POLLIN };
            let write = if c.blocked { libc::POLLOUT } else { 0 };
            self.fds.push(pollfd(c.stream.as_raw_fd(), read | write));
        }
        let timeout = self.listen_after.filter(|_| !listening).map(|t| t - now);
        if let Err(e) = poll(&mut self.fds, timeout) {
            // Only EINTR or ENOMEM can happen here; both pass.
            debug_assert!(
                matches!(e.raw_os_error(), Some(libc::EINTR | libc::ENOMEM)),
                "{e}"
            );
            return;
        }
        if listening {
            self.listen_after = None;
        }

        let before = self.clients.len();
        let mut revents = self.fds[FIRST_CLIENT..].iter().map(|fd| fd.revents);
        self.clients.retain_mut(|c| {
            let r = revents.next().unwrap_or(0);
            let hung_up = r & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0;
            !hung_up && (r & libc::POLLIN == 0 || c.discard_input(MAX_READS).is_ok())
        });
        self.count_gone(before - self.clients.len());
        if self.fds[LISTENER].revents != 0 {
            self.accept();
        }
        if self.fds[WAKE].revents != 0 {
            // Drain, then clear the flag, then read the ring (in pump): a line published before
            // the flag is cleared is in the ring when it is read, one published after sends a
            // new byte. Clearing first could swallow that byte and leave the flag set for good.
            let mut buf = [0u8; 64];
            while matches!((&self.wake_rx).read(&mut buf), Ok(n) if n > 0) {}
            self.shared.wake_pending.store(false, Ordering::Release);
        }
        self.pump_all(false);
    }

    fn pump_all(&mut self, closing: bool) {
        let before = self.clients.len();
        let shared = &self.shared;
        self.clients.retain_mut(|c| c.pump(shared, closing).is_ok());
        self.count_gone(before - self.clients.len());
    }

    fn count_gone(&self, n: usize) {
        self.shared.clients.fetch_sub(n, Ordering::Relaxed);
        self.shared
            .disconnected
            .fetch_add(n as u64, Ordering::Relaxed);
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => self.admit(stream),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(_) => {
                    // Out of descriptors or memory: the connection stays queued, so polling the
                    // listener again at once would spin.
                    self.listen_after = Some(Instant::now() + ACCEPT_BACKOFF);
                    return;
                }
            }
        }
    }

    fn admit(&mut self, stream: UnixStream) {
        if self.clients.len() >= self.max_clients {
            let mut out = Vec::new();
            Notice::TooManyClients(self.max_clients).write(&mut out);
            let _ = send_nonblocking(stream.as_raw_fd(), &out);
            self.shared.refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        let head = self.shared.ring().head;
        self.clients.push(Client {
            stream,
            next: head,
            out: Vec::with_capacity(STAGE_BYTES),
            sent: 0,
            skipped: 0,
            blocked: false,
            read_closed: false,
            said_bye: false,
            announced: 0,
        });
        self.shared.clients.fetch_add(1, Ordering::Relaxed);
    }

    /// Flushes every client for at most [`FLUSH_TIMEOUT`], then closes them all.
    fn close(mut self) {
        let deadline = Instant::now() + FLUSH_TIMEOUT;
        loop {
            self.pump_all(true);
            if self.clients.iter().all(|c| c.said_bye && c.idle()) {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            self.fds.clear();
            let waiting = self.clients.iter().filter(|c| c.blocked);
            self.fds
                .extend(waiting.map(|c| pollfd(c.stream.as_raw_fd(), libc::POLLOUT)));
            let _ = poll(&mut self.fds, Some(deadline - now));
        }
        for c in &mut self.clients {
            // Closing with input unread would reset the connection: the client's read fails
            // instead of ending after the shutdown notice.
            let _ = c.discard_input(DRAIN_READS);
        }
        self.count_gone(self.clients.len());
    }
}
