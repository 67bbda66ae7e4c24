//! ONNX models as files: their graph read and rewritten ([`onnx`]), their plans timed
//! ([`measure`]), their convolutions in each form the runtime runs, timed alone
//! ([`layers`]), and the cards that say where a model came from ([`card`]). `ocelli-compress` builds on these; `ocelli profile-layers` uses them on the
//! board itself.

pub mod card;
pub mod layers;
pub mod measure;
pub mod onnx;
