//! Assembled detectors: backbone + text encoder + head, loading from checkpoint directories,
//! and the post-processing from raw outputs to [`glint_core::detection::Detection`]s.
//!
//! - [`grounding_dino`]: Grounding DINO (Swin + BERT + [`crate::head::grounding_dino`]).
//! - [`glip`]: GLIP (PoolFormer, ResNet or Swin + FPN + BERT + [`crate::head::glip`]).
//! - [`exemplar`]: exemplar prompts, a marked box as one more phrase of a GLIP prompt.
//! - [`prompt_tuning`]: GLIP's prompt tuning, an offset on one prompt's token features.

pub mod exemplar;
pub mod glip;
pub mod grounding_dino;
pub mod prompt_tuning;

pub use grounding_dino::{
    DetectOptions, GroundingDino, GroundingDinoLoadError, GroundingDinoOutput, StageTimes, TextBatch,
};
