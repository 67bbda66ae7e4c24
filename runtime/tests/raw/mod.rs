//! Raw model outputs as the reference scripts saved them, shared by the decoder tests.

// Each test binary uses a part of it.
#![allow(dead_code)]

use std::path::Path;

use ocelli::detect::{Output, OutputInfo};
use serde_json::Value;

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

/// The tensors a reference script's manifest (`{"tensors": [{name, shape, file}]}`) lists,
/// read from `dir`; `script` is named when the fixtures are missing.
pub fn read_manifest(dir: &Path, manifest: &str, script: &str) -> Vec<Tensor> {
    let read = |file: &str| {
        let path = dir.join(file);
        std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "cannot read {}: {e}\nGenerate the fixtures from the repository root with \
                 `{script}`",
                path.display()
            )
        })
    };
    let list: Value = serde_json::from_slice(&read(manifest)).unwrap();
    list["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| Tensor {
            name: t["name"].as_str().unwrap().into(),
            shape: t["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect(),
            data: read(t["file"].as_str().unwrap())
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect(),
        })
        .collect()
}
