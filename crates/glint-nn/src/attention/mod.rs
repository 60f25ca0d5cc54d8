//! Attention blocks shared by the detectors' encoders and decoders.
//!
//! - [`deformable`]: multi-scale deformable attention (Deformable DETR / Grounding DINO), on
//!   Burn's `grid_sample_2d`, for self-attention over multi-level feature maps and for
//!   cross-attention from queries to them. Its sampling core runs as one fused pass on the CPU
//!   with its own backward (`deformable_cpu`), as one CubeCL kernel on the GPU when no gradients
//!   are needed (`deformable_gpu`), and composed of `grid_sample_2d` for training on a GPU.
//! - [`multi_head`]: plain multi-head attention with a mask of blocked pairs.

pub mod deformable;
mod deformable_cpu;
mod deformable_gpu;
pub mod multi_head;

pub use deformable::{
    DeformableAttentionError, DeformableAttentionOutput, MultiScaleDeformableAttention,
    MultiScaleDeformableAttentionConfig, composed_multi_scale_deformable_attention, level_start_index,
    multi_scale_deformable_attention,
};
pub use deformable_cpu::{SamplingInputs, fused_cpu_deformable_attention};
pub use multi_head::MultiHeadAttention;
