//! systemd's notification protocol: readiness, watchdog keep-alives, reload and stop states.
//!
//! Messages go as datagrams to `$NOTIFY_SOCKET` (a path, or an abstract name after `@`). Without
//! that variable (not under systemd) every call does nothing.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

/// A connection to the service manager, and the watchdog's pace.
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    /// Keep-alives are sent at half the watchdog period, as sd_watchdog_enabled advises.
    watchdog_every: Option<Duration>,
    last_ping: Instant,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET` and `$WATCHDOG_USEC` (honouring `$WATCHDOG_PID`).
    pub fn from_env() -> Self {
        let target = std::env::var_os("NOTIFY_SOCKET").and_then(|path| {
            let path = path.to_string_lossy().into_owned();
            let addr = match path.strip_prefix('@') {
                Some(name) => SocketAddr::from_abstract_name(name.as_bytes()).ok()?,
                None => SocketAddr::from_pathname(&path).ok()?,
            };
            Some((UnixDatagram::unbound().ok()?, addr))
        });
        let for_us =
            std::env::var("WATCHDOG_PID").map_or(true, |pid| pid.parse() == Ok(std::process::id()));
        let watchdog_every = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|_| for_us)
            .map(|usec| Duration::from_micros(usec / 2));
        Self {
            target,
            watchdog_every,
            last_ping: Instant::now(),
        }
    }

    fn send(&self, message: &str) {
        if let Some((socket, addr)) = &self.target {
            // The manager may be gone while we stop; nothing to do about a lost datagram.
            let _ = socket.send_to_addr(message.as_bytes(), addr);
        }
    }

    /// The camera is open, the models loaded and the socket bound.
    pub fn ready(&self) {
        self.send(&format!(
            "READY=1\nMAINPID={}\nSTATUS=running",
            std::process::id()
        ));
    }

    /// Sends a keep-alive if half the watchdog period has passed; called from the frame loop, so
    /// a stalled pipeline stops the keep-alives and systemd restarts the service.
    pub fn watchdog(&mut self) {
        if let Some(every) = self.watchdog_every
            && self.last_ping.elapsed() >= every
        {
            self.send("WATCHDOG=1");
            self.last_ping = Instant::now();
        }
    }

    /// A free-form status line for `systemctl status`.
    pub fn status(&self, text: &str) {
        self.send(&format!("STATUS={text}"));
    }

    /// Reloading the config (systemd's `Type=notify-reload` protocol wants a monotonic time).
    pub fn reloading(&self) {
        let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000)
            .unwrap_or(0);
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={now}"));
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_reach_the_notify_socket() {
        let dir = std::env::temp_dir().join(format!("ocelli-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let manager = UnixDatagram::bind(&path).unwrap();
        manager
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut notifier = Notifier {
            target: Some((
                UnixDatagram::unbound().unwrap(),
                SocketAddr::from_pathname(&path).unwrap(),
            )),
            watchdog_every: Some(Duration::ZERO),
            last_ping: Instant::now(),
        };
        let mut buf = [0u8; 256];
        let mut next = || {
            let n = manager.recv(&mut buf).unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        };
        notifier.ready();
        assert!(next().starts_with("READY=1\nMAINPID="));
        notifier.watchdog();
        assert_eq!(next(), "WATCHDOG=1");
        notifier.stopping();
        assert_eq!(next(), "STOPPING=1");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
