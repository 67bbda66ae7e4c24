//! Ocelli: camera frames in, detections out.
//!
//! One module per stage, in the order a frame travels:
//! [`capture`] → [`imgproc`] → [`detect`] → [`emit`], with [`config`], [`overlay`] and
//! [`service`] beside them.

pub mod capture;
pub mod config;
pub mod detect;
pub mod emit;
pub mod imgproc;
pub mod overlay;
pub mod service;
