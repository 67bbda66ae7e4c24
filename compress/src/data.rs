//! What feeds the models: each reference detector's runtime configuration, and image folders
//! turned into input tensors with that configuration's preprocessing.

use std::path::{Path, PathBuf};

use ocelli::capture::{ImageError, decode_image};
use ocelli::config::{
    ChannelOrder, DetectorConfig, PadPlacement, PreprocessConfig, Resample, ResizeMode,
    SizeRounding,
};
use ocelli::detect::{DecodeConfig, Family};
use ocelli::imgproc::Image;
use tract_onnx::prelude::*;

/// Why images could not become input tensors.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The model is not one of the reference detectors and no `--preset` was given: name the
    /// preset whose preprocessing and decoding it shares.
    #[error("{path}: no preset matches the file name; pass --preset (one of {known})")]
    NoPreset { path: PathBuf, known: String },
    /// `--preset` names no known preset.
    #[error("unknown preset {name}; known: {known}")]
    UnknownPreset { name: String, known: String },
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

/// A reference detector's runtime configuration, as its authors' sample runs it
/// (tests/reference/detectors.py).
pub struct Preset {
    pub name: &'static str,
    /// File stems this preset serves: the model's and anything derived from it (`STEM.*`).
    pub stem: &'static str,
    pub family: Family,
    pub labels: &'static str,
    pub preprocess: PreprocessConfig,
    pub score_threshold: f32,
    pub nms_iou: f32,
    pub class_agnostic: bool,
}

pub fn presets() -> Vec<Preset> {
    // The default is YOLOX's: letterbox top-left, bilinear, floor, pad 114, 0..255.
    let base = PreprocessConfig::default();
    let bgr = PreprocessConfig {
        channels: ChannelOrder::Bgr,
        ..base
    };
    let ultralytics = PreprocessConfig {
        size_rounding: SizeRounding::Nearest,
        pad: PadPlacement::Center,
        std: [255.0; 3],
        ..base
    };
    let ultraface = PreprocessConfig {
        resize: ResizeMode::Stretch,
        mean: [127.0; 3],
        std: [128.0; 3],
        ..base
    };
    let nanodet = PreprocessConfig {
        interpolation: Resample::Area,
        pad_value: 0,
        pad: PadPlacement::Center,
        mean: [103.53, 116.28, 123.675],
        std: [57.375, 57.12, 58.395],
        ..bgr
    };
    let yunet = PreprocessConfig {
        pad_value: 0,
        ..bgr
    };
    let p = |name, stem, family, labels, preprocess, (score_threshold, nms_iou, class_agnostic)| {
        Preset {
            name,
            stem,
            family,
            labels,
            preprocess,
            score_threshold,
            nms_iou,
            class_agnostic,
        }
    };
    // The arch/ models have random weights: a low threshold so that there is something to
    // compare.
    let random = (0.01, 0.7, false);
    vec![
        p(
            "yolox_nano",
            "yolox_nano",
            Family::Yolox,
            "coco",
            bgr,
            (0.3, 0.45, false),
        ),
        p(
            "nanodet_m_320",
            "nanodet_m_320",
            Family::Nanodet,
            "coco",
            nanodet,
            (0.35, 0.6, true),
        ),
        p(
            "yunet",
            "yunet_n_320_320",
            Family::Yunet,
            "face",
            yunet,
            (0.6, 0.3, false),
        ),
        p(
            "ultraface_rfb",
            "ultraface_version-RFB-320",
            Family::Ssd,
            "face",
            ultraface,
            (0.7, 0.5, false),
        ),
        p(
            "ultraface_slim",
            "ultraface_version-slim-320",
            Family::Ssd,
            "face",
            ultraface,
            (0.7, 0.5, false),
        ),
        p(
            "yolov8n",
            "yolov8n_320",
            Family::Yolov8,
            "coco",
            ultralytics,
            random,
        ),
        p(
            "yolo11n",
            "yolo11n_320",
            Family::Yolov8,
            "coco",
            ultralytics,
            random,
        ),
        p(
            "yolov10n",
            "yolov10n-e2e_320",
            Family::Yolov10,
            "coco",
            ultralytics,
            random,
        ),
    ]
}

fn known() -> String {
    presets()
        .iter()
        .map(|p| p.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The preset named `preset`, or the one whose model file stem starts the model's file name.
fn find_preset(model: &Path, preset: Option<&str>) -> Result<Preset, DataError> {
    let file = model
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    presets()
        .into_iter()
        .find(|p| match preset {
            Some(name) => p.name == name,
            None => file.starts_with(p.stem),
        })
        .ok_or_else(|| match preset {
            Some(name) => DataError::UnknownPreset {
                name: name.into(),
                known: known(),
            },
            None => DataError::NoPreset {
                path: model.into(),
                known: known(),
            },
        })
}

/// The name of the preset [`detector_config`] would use.
pub fn preset_name(model: &Path, preset: Option<&str>) -> Result<&'static str, DataError> {
    find_preset(model, preset).map(|p| p.name)
}

/// The runtime configuration for `model`: the preset named `preset`, or the one whose model
/// file stem starts the model's file name.
pub fn detector_config(model: &Path, preset: Option<&str>) -> Result<DetectorConfig, DataError> {
    let found = find_preset(model, preset)?;
    Ok(DetectorConfig {
        name: None,
        model: model.into(),
        sha256: None,
        family: Some(found.family),
        labels: found.labels.into(),
        input_size: None,
        preprocess: found.preprocess,
        decode: DecodeConfig {
            score_threshold: found.score_threshold,
            nms_iou: found.nms_iou,
            class_agnostic: found.class_agnostic,
            ..DecodeConfig::default()
        },
    })
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
