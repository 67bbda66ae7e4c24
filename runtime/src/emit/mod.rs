//! Results out: a Unix socket streaming one JSON line per frame.
//!
//! [`record`] turns a frame's results into a line, [`socket`] serves lines to every client, and
//! [`tail`](mod@tail) is the client behind `ocelli tail`. The line format is `docs/protocol.md`, checked by
//! `docs/schema/frame.schema.json`. The same lines can go to an MQTT broker through an on-disk
//! spool ([`mqtt`], [`spool`]), and [`http`] serves metrics and the latest annotated frame.

pub mod http;
pub mod mqtt;
pub mod record;
pub mod socket;
pub mod spool;
pub mod tail;

pub use record::{
    Event, FrameRecord, Inference, Motion, RunningModel, SCHEMA_VERSION, SourceNotice, SourceState,
    SourceStatus, StageLatency, models_line,
};
pub use socket::{SocketConfig, SocketError, SocketServer, SocketStats};
pub use tail::{TailError, tail};

pub use http::{HttpConfig, HttpError, HttpServer, Metrics};

/// The latest `models` line (see [`record::models_line`]) and a version that changes with it:
/// each socket client and the broker get every version once, new clients before anything else.
#[derive(Debug, Default)]
pub struct Announcement {
    pub version: u64,
    pub line: Vec<u8>,
}

impl Announcement {
    /// Makes `line` the announcement, ending in one newline.
    pub fn set(&mut self, line: &[u8]) {
        self.version += 1;
        self.line.clear();
        self.line
            .extend_from_slice(line.strip_suffix(b"\n").unwrap_or(line));
        self.line.push(b'\n');
    }
}
pub use mqtt::{MqttConfig, MqttError, MqttOutput};
