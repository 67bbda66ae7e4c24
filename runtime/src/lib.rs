//! Ocelli: camera frames in, detections out.
//!
//! One module per stage, in the order a frame travels:
//! [`capture`] → [`imgproc`] → [`detect`] → [`track`] → [`emit`], with [`config`],
//! [`overlay`] and [`service`] beside them, [`update`] (signed fleet bundles) beside
//! [`service`], [`limits`] bounding every file read; [`snapshot`] and [`framebuffer`] show the
//! annotated frames. [`kernels`] holds the ops [`detect`] swaps into tract's plans; [`model`]
//! reads, edits and times ONNX models, layer by layer (`ocelli profile-layers`).

pub mod capture;
pub mod config;
pub mod detect;
pub mod emit;
pub mod framebuffer;
pub mod imgproc;
pub mod kernels;
pub mod limits;
pub mod model;
pub mod overlay;
pub mod service;
pub mod snapshot;
pub mod track;
pub mod update;
