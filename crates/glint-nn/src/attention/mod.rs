//! Attention blocks shared by the detectors' encoders and decoders.
//!
//! - [`deformable`]: multi-scale deformable attention (Deformable DETR / Grounding DINO), on
//!   Burn's `grid_sample_2d`, for self-attention over multi-level feature maps and for
//!   cross-attention from queries to them. Its sampling core runs as one fused pass on the CPU
//!   (`deformable_cpu`) and as one CubeCL kernel on the GPU (`deformable_gpu`) when no gradients
//!   are needed.
//! - [`multi_head`]: plain multi-head attention with a mask of blocked pairs.

pub mod deformable;
mod deformable_cpu;
mod deformable_gpu;
pub mod multi_head;

pub use deformable::{
    DeformableAttentionError, DeformableAttentionOutput, MultiScaleDeformableAttention,
    MultiScaleDeformableAttentionConfig, level_start_index, multi_scale_deformable_attention,
};
pub use multi_head::MultiHeadAttention;
