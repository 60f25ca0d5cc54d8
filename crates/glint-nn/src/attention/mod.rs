//! Attention blocks shared by the detectors' encoders and decoders.
//!
//! - [`deformable`]: multi-scale deformable attention (Deformable DETR / Grounding DINO), on
//!   Burn's `grid_sample_2d`, for self-attention over multi-level feature maps and for
//!   cross-attention from queries to them.

pub mod deformable;

pub use deformable::{
    DeformableAttentionError, DeformableAttentionOutput, MultiScaleDeformableAttention,
    MultiScaleDeformableAttentionConfig, level_start_index, multi_scale_deformable_attention,
};
