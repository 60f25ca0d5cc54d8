//! glint-train: training GLIP and fine-tuning Grounding DINO on detection and grounding data,
//! and the few-shot benchmark.
//!
//! - [`clip`]: gradient clipping by the global norm.
//! - [`config`]: the TOML training config (model, data, augmentation, optimiser, schedule).
//! - [`data`]: loading and mixing datasets, turning detection data into grounding data,
//!   making batches.
//! - [`run`]: the training loop with its run directory: metrics log, atomic checkpoints,
//!   `--resume`, evaluation and the `best` model, for either detector; GLIP's loss and
//!   evaluation are there, Grounding DINO's in a private module beside it.
//! - [`evaluate`]: COCO AP of a GLIP model on a detection set.
//! - [`exemplar`]: exemplar prompts (marked boxes as phrases) on a GLIP model.
//! - [`pretrain`]: backbone pretraining on box crops, for models trained from scratch.
//! - [`fewshot`]: the K-shot benchmark (`glint fewshot`): splits, tuning modes, the table.

pub mod clip;
pub mod config;
pub mod data;
pub mod evaluate;
pub mod exemplar;
pub mod fewshot;
mod grounding_dino;
pub mod pretrain;
pub mod run;

use std::path::{Path, PathBuf};

pub use config::TrainConfig;
pub use run::{RunOptions, RunSummary, train};

/// Why training could not start or go on. Every variant names the file or the step.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{}: {message}", path.display())]
    Config { path: PathBuf, message: String },
    #[error(transparent)]
    Data(#[from] glint_data::DataError),
    #[error(transparent)]
    Model(#[from] glint_nn::detector::glip::GlipError),
    #[error(transparent)]
    Weights(#[from] glint_nn::weights::WeightsError),
    #[error(transparent)]
    GroundingDino(#[from] glint_nn::head::grounding_dino::GroundingDinoError),
    #[error(transparent)]
    GroundingDinoConfig(#[from] glint_nn::head::grounding_dino::GroundingDinoConfigError),
    #[error("{context}: {source}")]
    Prompt { context: String, source: glint_core::prompt::PromptError },
    #[error(transparent)]
    Eval(#[from] glint_core::eval::EvalError),
    /// A detector outside this crate failed (evaluation through a caller's detector).
    #[error("{0}")]
    Detection(String),
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("checkpoint {}: {message}", path.display())]
    Checkpoint { path: PathBuf, message: String },
    #[error("run directory {}: {message}", path.display())]
    RunDir { path: PathBuf, message: String },
    /// The loss stopped being a number; the last good state was saved first.
    #[error("loss is not finite at step {step} ({terms}); the checkpoint before it is in {}", checkpoint.display())]
    NonFinite { step: usize, terms: String, checkpoint: PathBuf },
}

impl TrainError {
    fn config(path: &Path, message: impl ToString) -> Self {
        Self::Config { path: path.to_path_buf(), message: message.to_string() }
    }

    fn write(path: &Path, source: std::io::Error) -> Self {
        Self::Write { path: path.to_path_buf(), source }
    }
}
