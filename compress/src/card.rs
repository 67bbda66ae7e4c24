//! The card beside every model `ocelli-compress` writes ([`ocelli::model::card`]): its source,
//! the command and options, the setup, the calibration images, and `eval`'s summary.

use std::path::{Path, PathBuf};

use ocelli::model::card::{Card, Digest, EvalSummary, Folder, SCHEMA, sha256_hex};
use serde::Serialize;

use crate::onnx::{ModelError, read_bytes};
use crate::{Error, data, eval};

fn folder(dir: &Path) -> Result<Folder, Error> {
    let files = data::image_files(dir)?;
    Folder::digest(dir, &files).map_err(|source| {
        ModelError::Read {
            path: dir.into(),
            source,
        }
        .into()
    })
}

fn write(card: &Card, model: &Path) -> Result<PathBuf, Error> {
    card.save(model).map_err(|source| {
        ModelError::Write {
            path: Card::path_for(model),
            source,
        }
        .into()
    })
}

/// Writes the card of `output`, made from `source` by this process's command line with
/// `options`; `calibration` is the folder it was calibrated on, if any.
pub fn write_new(
    output: &Path,
    source: &Path,
    options: &impl Serialize,
    setup: &data::Setup,
    calibration: Option<&Path>,
) -> Result<PathBuf, Error> {
    let card = Card {
        schema: SCHEMA.into(),
        model: Digest::of_bytes(
            Path::new(output.file_name().unwrap_or_default()),
            &read_bytes(output)?,
        ),
        source: Digest::of_bytes(source, &read_bytes(source)?),
        command: std::env::args().collect(),
        options: serde_json::to_value(options).expect("serialisable"),
        tool: concat!("ocelli-compress ", env!("CARGO_PKG_VERSION")).into(),
        tract: ocelli::model::card::TRACT_VERSION.into(),
        setup: serde_json::to_value(setup).expect("serialisable"),
        calibration: calibration.map(folder).transpose()?,
        eval: None,
    };
    write(&card, output)
}

/// Adds `report`'s summary to the card beside `report`'s candidate, if it has one that names
/// it; `images` is the folder it was measured on. Returns the card's path.
pub fn add_eval(report: &eval::Report, images: &Path) -> Result<Option<PathBuf>, Error> {
    let model = &report.candidate.path;
    let Some(mut card) = Card::beside(model)? else {
        return Ok(None);
    };
    card.check(model, &sha256_hex(&read_bytes(model)?))?;
    card.eval = Some(EvalSummary {
        reference: Digest::of_bytes(&report.reference.path, &read_bytes(&report.reference.path)?),
        images: folder(images)?,
        map50: report.map50,
        family: (report.family.metric != crate::agree::Metric::Map50)
            .then(|| serde_json::to_value(report.family).expect("serialisable")),
        score_drift_max: report.score_drift_max,
        latency_ratio: report.latency_ratio,
        size_ratio: report.size_ratio,
    });
    write(&card, model).map(Some)
}
