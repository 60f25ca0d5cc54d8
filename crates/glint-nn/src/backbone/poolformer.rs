//! PoolFormer ("MetaFormer is actually what you need for vision", Yu et al. 2022): a
//! hierarchical backbone whose token mixer is a 3×3 average pool minus its input. No attention
//! and no large kernels, so it is cheap on a CPU. As in the paper's detection variant, each
//! returned stage output goes through its own GroupNorm.
//!
//! Stem: 7×7 conv, stride 4, padding 2. Between stages: 3×3 conv, stride 2, padding 1. A block:
//! `x += ls1 · (pool(GN(x)) - GN(x))`, then `x += ls2 · MLP(GN(x))` with GN = GroupNorm(1, C),
//! the pool counting only real pixels (`count_include_pad = false`) and MLP = 1×1 conv, GELU,
//! 1×1 conv.

use burn::module::{Initializer, Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AvgPool2d, AvgPool2dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, PaddingConfig2d};
use burn::tensor::activation::gelu;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

/// The shape of a PoolFormer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolFormerConfig {
    /// Blocks per stage (four stages, strides 4, 8, 16, 32).
    pub layers: [usize; 4],
    /// Channels per stage.
    pub dims: [usize; 4],
    /// Hidden width of the MLP as a multiple of the stage width.
    pub mlp_ratio: usize,
    /// Initial value of the layer-scale gammas.
    pub layer_scale_init: f64,
    /// Stages whose outputs are returned (0-based; the default, 1..=3, gives strides 8, 16, 32).
    pub out_stages: Vec<usize>,
}

impl Default for PoolFormerConfig {
    /// PoolFormer-S12.
    fn default() -> Self {
        Self::s12()
    }
}

impl PoolFormerConfig {
    /// PoolFormer-S12 (12 M parameters): layers 2-2-6-2, widths 64-128-320-512.
    pub fn s12() -> Self {
        Self {
            layers: [2, 2, 6, 2],
            dims: [64, 128, 320, 512],
            mlp_ratio: 4,
            layer_scale_init: 1e-5,
            out_stages: vec![1, 2, 3],
        }
    }

    /// A nano PoolFormer for small data and tests: one block per stage, widths 16-32-64-128.
    pub fn nano() -> Self {
        Self { layers: [1, 1, 1, 1], dims: [16, 32, 64, 128], ..Self::s12() }
    }

    /// Channels of each returned map, in order.
    pub fn out_channels(&self) -> Vec<usize> {
        self.out_stages.iter().map(|&s| self.dims[s]).collect()
    }

    /// Strides of each returned map, in order.
    pub fn out_strides(&self) -> Vec<usize> {
        self.out_stages.iter().map(|&s| 4 << s).collect()
    }

    /// Checks the shape: widths positive, returned stages consecutive (the pyramid above them
    /// halves level by level) and in 0..=3.
    pub fn validate(&self) -> Result<(), String> {
        if self.dims.contains(&0) || self.mlp_ratio == 0 {
            return Err(format!(
                "poolformer: dims {:?} and mlp_ratio {} must be positive",
                self.dims, self.mlp_ratio
            ));
        }
        super::validate_out_stages("poolformer", &self.out_stages)?;
        Ok(())
    }

    /// Build with random weights (truncated-normal-like linear init is not needed at this size:
    /// Burn's Kaiming-uniform convs).
    pub fn init(&self, device: &Device) -> PoolFormer {
        let conv = |c_in: usize, c_out: usize, k: usize, stride: usize, pad: usize| {
            Conv2dConfig::new([c_in, c_out], [k, k])
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
                .init(device)
        };
        let norm = |c: usize| GroupNormConfig::new(1, c).init(device);
        let scale = |c: usize| Initializer::Constant { value: self.layer_scale_init }.init([c], device);
        let stages = (0..4)
            .map(|s| {
                let c = self.dims[s];
                let blocks = (0..self.layers[s])
                    .map(|_| PoolFormerBlock {
                        norm1: norm(c),
                        pool: AvgPool2dConfig::new([3, 3])
                            .with_strides([1, 1])
                            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                            .with_count_include_pad(false)
                            .init(),
                        layer_scale_1: scale(c),
                        norm2: norm(c),
                        fc1: conv(c, c * self.mlp_ratio, 1, 1, 0),
                        fc2: conv(c * self.mlp_ratio, c, 1, 1, 0),
                        layer_scale_2: scale(c),
                    })
                    .collect();
                let downsample =
                    if s == 0 { conv(3, c, 7, 4, 2) } else { conv(self.dims[s - 1], c, 3, 2, 1) };
                PoolFormerStage { downsample, blocks }
            })
            .collect();
        PoolFormer {
            stages,
            out_norms: self.out_stages.iter().map(|&s| norm(self.dims[s])).collect(),
            out_stages: self.out_stages.clone(),
        }
    }
}

/// A PoolFormer; [`PoolFormer::forward`] returns the maps of the configured stages.
#[derive(Module, Debug)]
pub struct PoolFormer {
    pub stages: Vec<PoolFormerStage>,
    /// One GroupNorm per returned map.
    pub out_norms: Vec<GroupNorm>,
    pub out_stages: Vec<usize>,
}

impl PoolFormer {
    /// `pixel_values [B, 3, H, W]` → one `[B, C_s, H/stride, W/stride]` map per returned stage.
    pub fn forward(&self, pixel_values: Tensor<4>) -> Vec<Tensor<4>> {
        let mut x = pixel_values;
        let mut outputs = Vec::with_capacity(self.out_stages.len());
        for (s, stage) in self.stages.iter().enumerate() {
            x = stage.forward(x);
            if let Some(i) = self.out_stages.iter().position(|&o| o == s) {
                outputs.push(self.out_norms[i].forward(x.clone()));
            }
            if outputs.len() == self.out_stages.len() {
                break;
            }
        }
        outputs
    }
}

/// A downsampling conv and the blocks of one stage.
#[derive(Module, Debug)]
pub struct PoolFormerStage {
    pub downsample: Conv2d,
    pub blocks: Vec<PoolFormerBlock>,
}

impl PoolFormerStage {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.blocks.iter().fold(self.downsample.forward(x), |x, block| block.forward(x))
    }
}

/// One PoolFormer block: pooling token mixer and MLP, each with a layer-scaled residual.
#[derive(Module, Debug)]
pub struct PoolFormerBlock {
    pub norm1: GroupNorm,
    pub pool: AvgPool2d,
    pub layer_scale_1: Param<Tensor<1>>,
    pub norm2: GroupNorm,
    pub fc1: Conv2d,
    pub fc2: Conv2d,
    pub layer_scale_2: Param<Tensor<1>>,
}

impl PoolFormerBlock {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let channels = x.dims()[1];
        let gamma = |p: &Param<Tensor<1>>| p.val().reshape([1, channels, 1, 1]);
        let normed = self.norm1.forward(x.clone());
        let mixed = self.pool.forward(normed.clone()) - normed;
        let x = x + mixed * gamma(&self.layer_scale_1);
        let hidden = gelu(self.fc1.forward(self.norm2.forward(x.clone())));
        x.clone() + self.fc2.forward(hidden) * gamma(&self.layer_scale_2)
    }
}
