//! What feeds the models: each model's runtime configuration (a device config's
//! `[[detector]]` table or a built-in preset, both read by the runtime's own parser), and image
//! folders turned into input tensors with that configuration's preprocessing.

use std::path::{Path, PathBuf};

use ocelli::capture::{ImageError, decode_image};
use ocelli::config::{Config, ConfigError, DetectorConfig, PreprocessConfig};
use ocelli::imgproc::Image;
use tract_onnx::prelude::*;

/// Why a model's setup could not be found or images could not become input tensors.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The device config is unreadable or invalid: the message names its file, line and key.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The model is not one of the reference detectors and no config or preset was given.
    #[error(
        "{path}: no preset matches the file name; give the device's config with --config \
         ocelli.toml [--detector NAME] (its [[detector]] table says how to feed and decode the \
         model), or --preset (one of {known})"
    )]
    NoPreset { path: PathBuf, known: String },
    /// `--preset` names no known preset.
    #[error("unknown preset {name}; known: {known}")]
    UnknownPreset { name: String, known: String },
    /// `--detector` names no detector of the config, or the config has several and none
    /// was named.
    #[error("{file}: detector.name: {found}; pass --detector with one of: {known}")]
    NoDetector {
        file: PathBuf,
        found: String,
        known: String,
    },
    /// The preprocessing could not fit the image into the input (an empty image).
    #[error("{path}: cannot preprocess: {reason}")]
    Preprocess { path: PathBuf, reason: String },
    /// A raw input tensor that cannot be read, or whose size is not the model input's.
    #[error("{path}: expected {expected} little-endian f32 values (input {shape:?}): {reason}")]
    RawTensor {
        path: PathBuf,
        shape: [usize; 4],
        expected: usize,
        reason: String,
    },
}

/// A tensor of `shape` stored as raw little-endian f32 values (the fixtures' `.f32` files).
pub fn raw_f32_tensor(path: &Path, shape: [usize; 4]) -> Result<Tensor, DataError> {
    let expected = shape.iter().product::<usize>();
    let err = |reason: String| DataError::RawTensor {
        path: path.into(),
        shape,
        expected,
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    if bytes.len() != 4 * expected {
        return Err(err(format!("the file holds {} bytes", bytes.len())));
    }
    let values: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok(tract_ndarray::Array4::from_shape_vec(shape, values)
        .expect("sized")
        .into_tensor())
}

/// Where a model's preprocessing, family, decoding, thresholds and labels come from: a
/// device config, a built-in preset, or the preset matching the model's file name.
#[derive(Clone, Debug, Default, serde::Serialize, clap::Args)]
pub struct Setup {
    /// The device's ocelli.toml: its [[detector]] table says how to feed and decode the model.
    #[arg(long, conflicts_with = "preset")]
    pub config: Option<PathBuf>,
    /// The detector of --config (by name; default: its only one, or the one whose model file
    /// has the model's file name).
    #[arg(long, requires = "config")]
    pub detector: Option<String>,
    /// A built-in preset (compress/configs/presets.toml; default: by file name).
    #[arg(long)]
    pub preset: Option<String>,
}

impl Setup {
    /// The same setup as command-line arguments.
    pub fn args(&self) -> Vec<std::ffi::OsString> {
        let mut a = Vec::new();
        for (flag, v) in [
            ("--config", self.config.as_ref().map(|p| p.as_os_str())),
            ("--detector", self.detector.as_deref().map(|d| d.as_ref())),
            ("--preset", self.preset.as_deref().map(|d| d.as_ref())),
        ] {
            if let Some(v) = v {
                a.extend([flag.into(), v.to_owned()]);
            }
        }
        a
    }

    /// This setup pinned to the detector `cfg` was resolved to, for other files of the same
    /// model (its float or int8 variants) whose names may match nothing.
    pub fn pinned(&self, cfg: &DetectorConfig) -> Setup {
        let name = cfg.name.clone();
        match self.config {
            Some(_) => Setup {
                detector: name,
                ..self.clone()
            },
            None => Setup {
                preset: name,
                ..self.clone()
            },
        }
    }
}

/// The built-in presets' file, parsed by the runtime as any device config.
const PRESETS: &str = include_str!("../configs/presets.toml");

/// The built-in presets: each reference detector's `[[detector]]` table.
pub fn presets() -> Vec<DetectorConfig> {
    Config::parse_settings(Path::new("compress/configs/presets.toml"), PRESETS)
        .expect("the built-in presets parse")
        .detectors
}

/// A detector's name: its `name`, or its model's file stem, as the runtime names it.
fn name_of(d: &DetectorConfig) -> String {
    d.name.clone().unwrap_or_else(|| {
        d.model
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    })
}

fn names(ds: &[DetectorConfig]) -> String {
    ds.iter().map(name_of).collect::<Vec<_>>().join(", ")
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The runtime configuration for `model`: the `[[detector]]` table `setup` selects, with the
/// model's path, its name set, and a labels file resolved against the config's folder.
pub fn detector_config(model: &Path, setup: &Setup) -> Result<DetectorConfig, DataError> {
    let found = match &setup.config {
        Some(file) => from_config(model, file, setup.detector.as_deref())?,
        None => {
            let presets = presets();
            let file = file_name(model);
            presets
                .iter()
                .find(|p| match &setup.preset {
                    Some(name) => name_of(p) == *name,
                    None => p
                        .model
                        .file_stem()
                        .is_some_and(|stem| file.starts_with(&*stem.to_string_lossy())),
                })
                .cloned()
                .ok_or_else(|| match &setup.preset {
                    Some(name) => DataError::UnknownPreset {
                        name: name.clone(),
                        known: names(&presets),
                    },
                    None => DataError::NoPreset {
                        path: model.into(),
                        known: names(&presets),
                    },
                })?
        }
    };
    Ok(DetectorConfig {
        name: Some(name_of(&found)),
        model: model.into(),
        sha256: None,
        ..found
    })
}

/// The detector of the config `file` named `name`, or its only one, or the one whose model
/// has `model`'s file name.
fn from_config(model: &Path, file: &Path, name: Option<&str>) -> Result<DetectorConfig, DataError> {
    let config = Config::load_settings(file)?;
    let ds = &config.detectors;
    let found = match name {
        Some(name) => ds.iter().find(|d| name_of(d) == name),
        None if ds.len() == 1 => ds.first(),
        None => ds.iter().find(|d| file_name(&d.model) == file_name(model)),
    };
    let mut d = found.cloned().ok_or_else(|| DataError::NoDetector {
        file: file.into(),
        found: match name {
            Some(name) => format!("no detector named {name}"),
            None if ds.is_empty() => "no [[detector]] table".into(),
            None => format!(
                "{} detectors, none with model file {}",
                ds.len(),
                file_name(model)
            ),
        },
        known: names(ds),
    })?;
    if !matches!(d.labels.as_str(), "coco" | "face" | "text") {
        d.labels = config.resolve(Path::new(&d.labels)).display().to_string();
    }
    Ok(d)
}

/// The PNG and JPEG files of a folder, sorted by name.
pub fn image_files(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let io = |source| ImageError::Io {
        path: dir.into(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(ImageError::Empty { path: dir.into() }.into());
    }
    Ok(files)
}

pub fn load_image(path: &Path) -> Result<Image, DataError> {
    let mut rgb = Image::new(0, 0, 3);
    decode_image(path, ocelli::limits::DEFAULT_MAX_PIXELS, &mut rgb)?;
    Ok(rgb)
}

/// An image as the model's input tensor [1,3,H,W].
pub fn input_tensor(
    rgb: &Image,
    path: &Path,
    pre: &PreprocessConfig,
    shape: [usize; 4],
) -> Result<Tensor, DataError> {
    let plan = pre.plan(shape[3], shape[2]);
    let mut data = vec![0f32; plan.tensor_len()];
    plan.run(rgb, &mut data)
        .map_err(|e| DataError::Preprocess {
            path: path.into(),
            reason: e.to_string(),
        })?;
    Ok(tract_ndarray::Array4::from_shape_vec(shape, data)
        .expect("tensor_len is 3×H×W")
        .into_tensor())
}

/// Every image of `dir` as input tensors.
pub fn input_tensors(
    dir: &Path,
    pre: &PreprocessConfig,
    shape: [usize; 4],
) -> Result<Vec<Tensor>, DataError> {
    image_files(dir)?
        .iter()
        .map(|p| input_tensor(&load_image(p)?, p, pre, shape))
        .collect()
}
