//! Ocelli's model compressor: graph optimisation, int8 quantisation, channel pruning and
//! side-by-side evaluation of ONNX detectors, every measurement taken with tract.
//!
//! The model stays an ONNX protobuf (`tract_onnx::pb`) throughout: each command reads one,
//! rewrites it with standard ONNX operators only, and writes one that any ONNX runtime loads.

pub mod agree;
pub mod calib;
pub mod card;
pub mod data;
pub mod equalize;
pub mod eval;
pub mod optimize;
pub mod probe;
pub mod prune;
pub mod quantize;
pub mod reconstruct;

pub use measure::pattern_input;
pub use ocelli::model::{measure, onnx};

/// Any command's failure, shown as one line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Model(#[from] onnx::ModelError),
    #[error(transparent)]
    Data(#[from] data::DataError),
    #[error(transparent)]
    Timings(#[from] ocelli::model::layers::TableError),
    #[error(transparent)]
    Card(#[from] ocelli::model::card::CardError),
    #[error(transparent)]
    Bundle(#[from] ocelli::update::sign::WriteError),
    /// The rewritten model's outputs moved more than the tolerance from the original's: a
    /// rewrite is wrong for this graph. Report it with the model; `--tolerance` loosens the check.
    #[error(
        "{path}: outputs differ from the original's by {error:.2e} (tolerance {tolerance:.0e})"
    )]
    Mismatch {
        path: std::path::PathBuf,
        error: f32,
        tolerance: f32,
    },
    /// tract failed while running a model that it loaded.
    #[error("{path}: run failed: {reason}")]
    Run {
        path: std::path::PathBuf,
        reason: String,
    },
}

impl Error {
    pub fn run(path: &std::path::Path, e: &anyhow::Error) -> Self {
        Self::Run {
            path: path.into(),
            reason: onnx::short(e),
        }
    }
}

/// The largest output difference (see [`measure::max_error`]) between two models over `inputs`.
pub fn compare_models(
    reference: &onnx::Model,
    candidate: &onnx::Model,
    shape: [usize; 4],
    inputs: &[tract_onnx::prelude::Tensor],
) -> Result<f32, Error> {
    let (a, b) = (reference.plan(shape)?, candidate.plan(shape)?);
    let mut worst = 0f32;
    for input in inputs {
        let ra = measure::run(&a, input).map_err(|e| Error::run(&reference.path, &e))?;
        let rb = measure::run(&b, input).map_err(|e| Error::run(&candidate.path, &e))?;
        let e = measure::max_error(&ra, &rb).map_err(|e| Error::run(&candidate.path, &e))?;
        worst = worst.max(e);
    }
    Ok(worst)
}
