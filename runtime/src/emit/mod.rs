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
    Event, FrameRecord, Inference, Motion, SCHEMA_VERSION, SourceNotice, SourceState, SourceStatus,
    StageLatency,
};
pub use socket::{SocketConfig, SocketError, SocketServer, SocketStats};
pub use tail::{TailError, tail};

pub use http::{HttpConfig, HttpError, HttpServer, Metrics};
pub use mqtt::{MqttConfig, MqttError, MqttOutput};
