//! Image backbones: `pixel_values [B, 3, H, W]` -> multi-scale feature maps `[B, C, H/s, W/s]`.
//!
//! - [`swin`]: the Swin Transformer, as Grounding DINO (transformers' `SwinBackbone`) uses it.
//! - [`poolformer`]: PoolFormer, the cheap pooling MetaFormer (GLIP's small models here).
//! - [`fpn`]: the feature pyramid on top of a backbone (P3–P7, as ATSS and GLIP build it).

pub mod fpn;
pub mod poolformer;
pub mod swin;

pub use swin::{GROUNDING_DINO_SWIN_PREFIX, SwinBackbone, SwinConfig, SwinError, swin_load_options};
