//! Assembled detectors: backbone + text encoder + head, loading from checkpoint directories,
//! and the post-processing from raw outputs to [`glint_core::detection::Detection`]s.
//!
//! - [`grounding_dino`]: Grounding DINO (Swin + BERT + [`crate::head::grounding_dino`]).
//! - [`glip`]: GLIP (PoolFormer, ResNet or Swin + FPN + BERT + [`crate::head::glip`]).

pub mod glip;
pub mod grounding_dino;

pub use grounding_dino::{
    DetectOptions, GroundingDino, GroundingDinoLoadError, GroundingDinoOutput, StageTimes, TextBatch,
};
