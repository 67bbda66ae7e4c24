//! Results out: a Unix socket streaming one JSON line per frame.
//!
//! [`record`] turns a frame's results into a line.

pub mod record;

pub use record::{
    Event, FrameRecord, Inference, Motion, SCHEMA_VERSION, SourceState, SourceStatus, StageLatency,
};
