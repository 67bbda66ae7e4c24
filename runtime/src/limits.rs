//! Size bounds on every file the service reads, so that no input can make it allocate more
//! than its board has: the numbers are listed in docs/robustness.md's bounds table.

use std::io::Read;
use std::path::Path;

/// Bytes of a config file: the largest preset is a few KiB.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Bytes of a labels file: 1 MiB is tens of thousands of labels.
pub const MAX_LABELS_BYTES: u64 = 1 << 20;
/// Bytes of a TLS certificate or key file (`[output.mqtt.tls]`): a chain is a few KiB.
pub const MAX_TLS_FILE_BYTES: u64 = 1 << 20;
/// Bytes of an ONNX model, checked before tract parses it (and expands it several times over).
pub const MAX_MODEL_BYTES: u64 = 256 << 20;
/// Largest model card read (`NAME.card.json`): a card is a few kilobytes of JSON.
pub const MAX_CARD_BYTES: u64 = 1 << 20;
/// Largest layer-timing table read (`ocelli profile-layers`): tens of kilobytes per model.
pub const MAX_TIMINGS_BYTES: u64 = 1 << 20;
/// Largest classifier gallery read: 10 000 embeddings of 512 values in JSON.
pub const MAX_GALLERY_BYTES: u64 = 64 << 20;
/// Bytes of a fleet update bundle (`update::bundle`): a few models at the model bound's scale.
pub const MAX_BUNDLE_BYTES: u64 = 512 << 20;
/// Bytes of a bundle's `manifest.json`: a few hundred bytes per file it lists.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;
/// Pixels of an image file unless `source.max_pixels` says otherwise: the camera bound,
/// 8192×8192.
pub const DEFAULT_MAX_PIXELS: u64 = 8192 * 8192;

/// Reads `path` whole, refusing it with [`std::io::ErrorKind::FileTooLarge`] when it holds
/// more than `max` bytes (checked on the open file, then enforced while reading, so a file
/// that grows meanwhile is refused too).
pub fn read_bounded(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let too_large = |len: u64| {
        std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!("{len} bytes, over the bound of {max}"),
        )
    };
    if len > max {
        return Err(too_large(len));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// The process before any model or frame: code, libraries, thread stacks in use, allocator
/// and socket buffers. Measured as the peak RSS of a run without detectors (README's board
/// table), rounded up.
pub const BASE_BYTES: u64 = 16 << 20;

/// Bytes a frame costs per pixel of an image file: the decoder's output (up to four bytes,
/// RGBA) or the JPEG file (at most four bytes per allowed pixel), and the RGB image.
pub const IMAGE_FILE_BYTES_PER_PIXEL: u64 = 7;

/// What a config needs in memory, from its models' tensors and its frame buffers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// Each model's file (read whole while loading) and the tensors of its optimised plan.
    pub models: u64,
    /// The source's buffers, the RGB frame, and a copy for annotated outputs.
    pub frames: u64,
}

impl MemoryEstimate {
    pub fn total(&self) -> u64 {
        BASE_BYTES + self.models + self.frames
    }
}

/// Why a config does not fit its board.
#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    /// A model could not be loaded to size it.
    #[error(transparent)]
    Model(#[from] crate::detect::DetectError),
    /// The models and frame buffers need more than `[board] memory_mb`: use a smaller model,
    /// frame size or `source.max_pixels`, or raise `memory_mb` if the board has the memory.
    #[error(
        "{file}: board.memory_mb: {budget_mb} MB, but the config needs about {need_mb} MB \
         (models {models_mb} MB, frame buffers {frames_mb} MB, runtime {base_mb} MB)"
    )]
    OverBudget {
        file: std::path::PathBuf,
        budget_mb: u64,
        need_mb: u64,
        models_mb: u64,
        frames_mb: u64,
        base_mb: u64,
    },
}

/// Estimates what `config` needs, loading each model as the service would.
pub fn estimate(config: &crate::config::Config) -> Result<MemoryEstimate, BudgetError> {
    use crate::config::SourceConfig;
    let mut models = 0;
    for d in &config.detectors {
        let path = config.resolve(&d.model);
        let (_, info) = crate::detect::load_plan(&path, d.input_size)?;
        models += std::fs::metadata(&path).map_or(0, |m| m.len()) + info.tensor_bytes;
    }
    let rgb = |w: u32, h: u32| u64::from(w) * u64::from(h) * 3;
    let (source, frame) = match &config.source {
        // Every mmap buffer at up to three bytes a pixel (RGB3), then the RGB frame.
        SourceConfig::V4l2 {
            width,
            height,
            buffers,
            ..
        } => (
            u64::from(*buffers) * rgb(*width, *height),
            rgb(*width, *height),
        ),
        SourceConfig::Synthetic { width, height, .. } => {
            (rgb(*width, *height), rgb(*width, *height))
        }
        SourceConfig::Images { max_pixels, .. } => (
            (IMAGE_FILE_BYTES_PER_PIXEL - 3) * max_pixels,
            3 * max_pixels,
        ),
    };
    let o = &config.output;
    let annotated = o.annotated_dir.is_some()
        || o.snapshots.is_some()
        || o.framebuffer.is_some()
        || o.http.is_some();
    Ok(MemoryEstimate {
        models,
        frames: source + frame * if annotated { 2 } else { 1 },
    })
}

/// Fails when `[board] memory_mb` is set and the estimate exceeds it.
pub fn check_budget(
    file: &Path,
    config: &crate::config::Config,
) -> Result<Option<MemoryEstimate>, BudgetError> {
    let Some(budget_mb) = config.board.memory_mb else {
        return Ok(None);
    };
    let e = estimate(config)?;
    let mb = |b: u64| b.div_ceil(1 << 20);
    if mb(e.total()) > budget_mb {
        return Err(BudgetError::OverBudget {
            file: file.into(),
            budget_mb,
            need_mb: mb(e.total()),
            models_mb: mb(e.models),
            frames_mb: mb(e.frames),
            base_mb: mb(BASE_BYTES),
        });
    }
    Ok(Some(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_over_the_bound_is_refused_with_its_size() {
        let path = std::env::temp_dir().join(format!("ocelli-bounded-{}", std::process::id()));
        std::fs::write(&path, [7u8; 100]).unwrap();
        assert_eq!(read_bounded(&path, 100).unwrap().len(), 100);
        let err = read_bounded(&path, 99).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::FileTooLarge);
        assert_eq!(err.to_string(), "100 bytes, over the bound of 99");
        std::fs::remove_file(path).unwrap();
    }
}
