//! Image backbones: `pixel_values [B, 3, H, W]` -> multi-scale feature maps `[B, C, H/s, W/s]`.
//!
//! - [`swin`]: the Swin Transformer, as Grounding DINO (transformers' `SwinBackbone`) uses it.

pub mod swin;

pub use swin::{GROUNDING_DINO_SWIN_PREFIX, SwinBackbone, SwinConfig, SwinError, swin_load_options};
