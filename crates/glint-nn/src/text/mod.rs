//! Text encoders: token ids (+ masks, positions) -> per-token features `[B, L, D]`.

pub mod bert;

pub use bert::{Bert, BertAttentionMask, BertConfig, BertConfigError, BertInput, BertLayer, hf_load_options};
