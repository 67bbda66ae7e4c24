//! Raw model outputs as the reference scripts saved them, shared by the decoder tests.

use ocelli::detect::{Output, OutputInfo};

pub struct Tensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// The outputs' names and shapes, which a decoder is built from.
pub fn infos(outputs: &[Tensor]) -> Vec<OutputInfo> {
    outputs
        .iter()
        .map(|t| OutputInfo {
            name: t.name.clone(),
            shape: t.shape.clone(),
        })
        .collect()
}

/// The outputs as a decoder reads them.
pub fn views(outputs: &[Tensor]) -> Vec<Output<'_>> {
    outputs
        .iter()
        .map(|t| Output {
            name: &t.name,
            shape: &t.shape,
            data: &t.data,
        })
        .collect()
}
