//! ONNX models as files: their graph read and rewritten ([`onnx`]), their plans timed
//! ([`measure`]), and their convolutions in each form the runtime runs, timed alone
//! ([`layers`]). `ocelli-compress` builds on these; `ocelli profile-layers` uses them on the
//! board itself.

pub mod layers;
pub mod measure;
pub mod onnx;
