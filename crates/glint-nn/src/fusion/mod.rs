//! Vision–language fusion: image and text tokens updated by attending to each other.
//!
//! - [`bi_attention`]: bi-directional multi-head cross-attention with the reference's logit
//!   stabilisation and clamping, and the layer-scale fusion layer around it (Grounding DINO's
//!   feature-enhancer fusion, GLIP's `BiAttentionBlock`).

pub mod bi_attention;

pub use bi_attention::{
    BiAttentionConfig, BiAttentionOutput, BiMultiHeadAttention, DropPath, FusionError, FusionLayer,
    LOGIT_CLAMP,
};
