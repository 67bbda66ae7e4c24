//! Model cards: where a model file came from and how well it agrees with its source, in
//! `NAME.card.json` beside `NAME.onnx`. `ocelli-compress` writes one for every model it writes
//! and `eval` adds its summary; `ocelli inspect` prints it, and a config whose model has a card
//! that does not name the model's own sha256 is refused. Schema: docs/schema/card.schema.json.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The `schema` of the cards this version writes and reads.
pub const SCHEMA: &str = "ocelli-model-card/1";

/// The tract every model is checked and timed with (the workspace pins it exactly).
pub const TRACT_VERSION: &str = "0.23.9";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Card {
    pub schema: String,
    /// The model file the card describes (its name, beside the card).
    pub model: Digest,
    /// The model it was made from.
    pub source: Digest,
    /// The command line that wrote it, program name first.
    pub command: Vec<String>,
    /// Every option of that command, defaults included.
    pub options: serde_json::Value,
    /// `ocelli-compress` and tract versions.
    pub tool: String,
    pub tract: String,
    /// How the model is fed and decoded: a preset's name, or a device config and detector.
    pub setup: serde_json::Value,
    /// The images the quantisation was calibrated on, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Folder>,
    /// The last `ocelli-compress eval` of this model against its source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval: Option<EvalSummary>,
}

/// A file and its sha256 (lowercase hex).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Digest {
    pub path: PathBuf,
    pub sha256: String,
}

impl Digest {
    pub fn of_bytes(path: &Path, bytes: &[u8]) -> Self {
        Self {
            path: path.into(),
            sha256: sha256_hex(bytes),
        }
    }
}

/// A folder of images: how many, and a digest of their names and contents in name order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Folder {
    pub path: PathBuf,
    pub files: usize,
    pub sha256: String,
}

impl Folder {
    /// `files` (sorted by the caller) digested as name, length and contents each.
    pub fn digest(path: &Path, files: &[PathBuf]) -> std::io::Result<Self> {
        let mut h = Sha256::new();
        for f in files {
            let bytes = std::fs::read(f)?;
            let name = f.file_name().unwrap_or_default().to_string_lossy();
            h.update(name.as_bytes());
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(&bytes);
        }
        Ok(Self {
            path: path.into(),
            files: files.len(),
            sha256: to_hex(&h.finalize()),
        })
    }
}

/// What `eval` measured of the model against its source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSummary {
    pub reference: Digest,
    pub images: Folder,
    pub map50: f64,
    /// The family's own measure (`mask_iou`, `region_iou`, `keypoint_error_px`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<serde_json::Value>,
    pub score_drift_max: f32,
    /// Candidate / reference median inference time and file size.
    pub latency_ratio: f64,
    pub size_ratio: f64,
}

/// Why a card could not be read or does not fit its model.
#[derive(Debug, thiserror::Error)]
pub enum CardError {
    /// The card beside the model could not be read: check its permissions, or remove it.
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The card is not a card's JSON: the message names the field and its place. Write it
    /// again with `ocelli-compress`, or remove it.
    #[error("{path}: not a model card: {reason}")]
    Malformed { path: PathBuf, reason: String },
    /// The card describes another file than the model beside it: the model was replaced
    /// without its card. Put the card that came with the model beside it.
    #[error("{path}: model.sha256: {found}, expected the sha256 of {model} ({expected})")]
    Mismatch {
        path: PathBuf,
        model: PathBuf,
        found: String,
        expected: String,
    },
}

impl Card {
    /// Where the card of `model` is: `NAME.card.json` for `NAME.onnx`.
    pub fn path_for(model: &Path) -> PathBuf {
        model.with_extension("card.json")
    }

    /// The card beside `model`, if there is one.
    pub fn beside(model: &Path) -> Result<Option<Self>, CardError> {
        let path = Self::path_for(model);
        if !path.exists() {
            return Ok(None);
        }
        Self::load(&path).map(Some)
    }

    pub fn load(path: &Path) -> Result<Self, CardError> {
        let bytes =
            crate::limits::read_bounded(path, crate::limits::MAX_CARD_BYTES).map_err(|source| {
                CardError::Read {
                    path: path.into(),
                    source,
                }
            })?;
        let malformed = |reason: String| CardError::Malformed {
            path: path.into(),
            reason,
        };
        let card: Card = serde_json::from_slice(&bytes).map_err(|e| malformed(e.to_string()))?;
        if card.schema != SCHEMA {
            return Err(malformed(format!(
                "schema: {:?}, expected {SCHEMA:?}",
                card.schema
            )));
        }
        Ok(card)
    }

    /// Refuses the card unless it names `sha256`, that of `model`'s bytes ([`sha256_hex`]).
    pub fn check(&self, model: &Path, sha256: &str) -> Result<(), CardError> {
        if !self.model.sha256.eq_ignore_ascii_case(sha256) {
            return Err(CardError::Mismatch {
                path: Self::path_for(model),
                model: model.into(),
                found: self.model.sha256.clone(),
                expected: sha256.into(),
            });
        }
        Ok(())
    }

    pub fn save(&self, model: &Path) -> std::io::Result<PathBuf> {
        let path = Self::path_for(model);
        let json = serde_json::to_string_pretty(self).expect("serialisable");
        std::fs::write(&path, json + "\n")?;
        Ok(path)
    }
}

impl std::fmt::Display for Card {
    /// The card for people, as `ocelli inspect` prints it.
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        writeln!(f, "card:   {} ({})", self.model.sha256, self.tool)?;
        writeln!(
            f,
            "  from:    {} ({})",
            self.source.path.display(),
            self.source.sha256
        )?;
        writeln!(f, "  command: {}", self.command.join(" "))?;
        writeln!(f, "  setup:   {}", self.setup)?;
        if let Some(c) = &self.calibration {
            writeln!(
                f,
                "  calibrated on {} file(s) in {} ({})",
                c.files,
                c.path.display(),
                c.sha256
            )?;
        }
        if let Some(e) = &self.eval {
            writeln!(
                f,
                "  eval on {} image(s) in {}: mAP@0.5 {:.3}{}, score drift max {:.3}, \
                 latency {:.2}×, size {:.2}×",
                e.images.files,
                e.images.path.display(),
                e.map50,
                e.family
                    .as_ref()
                    .map_or(String::new(), |v| format!(", {v}")),
                e.score_drift_max,
                e.latency_ratio,
                e.size_ratio
            )?;
        }
        Ok(())
    }
}

/// The sha256 of `bytes` in lowercase hex, as `sha256sum` prints it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    to_hex(&Sha256::digest(bytes))
}

/// `bytes` in lowercase hex.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_tract_version_is_the_workspaces_pin() {
        let manifest = include_str!("../../../Cargo.toml");
        let pin = format!("tract-onnx = {{ version = \"={}\"", super::TRACT_VERSION);
        assert!(manifest.contains(&pin), "Cargo.toml does not pin {pin}");
    }
}
