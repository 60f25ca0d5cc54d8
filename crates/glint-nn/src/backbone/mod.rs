//! Image backbones: `pixel_values [B, 3, H, W]` -> multi-scale feature maps `[B, C, H/s, W/s]`.
//!
//! - [`swin`]: the Swin Transformer, as Grounding DINO (transformers' `SwinBackbone`) uses it.
//! - [`poolformer`]: PoolFormer, the cheap pooling MetaFormer (GLIP's small models here).
//! - [`resnet`]: ResNet-18/34/50/101 in torchvision's layout, BatchNorm frozen for detection.
//! - [`fpn`]: the feature pyramid on top of a backbone (P3–P7, as ATSS and GLIP build it).

pub mod fpn;
pub mod poolformer;
pub mod resnet;
pub mod swin;

pub use swin::{GROUNDING_DINO_SWIN_PREFIX, SwinBackbone, SwinConfig, SwinError, swin_load_options};

/// Checks that a backbone returns consecutive stages of its four (0..=3): the pyramid above them
/// halves level by level. `name` names the backbone in the error.
pub(crate) fn validate_out_stages(name: &str, out_stages: &[usize]) -> Result<(), String> {
    if out_stages.is_empty()
        || out_stages.windows(2).any(|w| w[1] != w[0] + 1)
        || out_stages.iter().any(|&s| s > 3)
    {
        return Err(format!("{name}: out_stages {out_stages:?} must be consecutive stage numbers in 0..=3"));
    }
    Ok(())
}
