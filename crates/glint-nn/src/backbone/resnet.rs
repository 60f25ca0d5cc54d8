//! ResNet (He et al. 2016) as detectors use it: torchvision's layout (the stride of a bottleneck
//! on its 3×3 conv, "v1.5"), returning the maps of chosen stages (C3–C5 by default).
//!
//! Detection fine-tunes ResNets with a few images per batch, too few for batch statistics, so by
//! default every BatchNorm is frozen: it applies its running statistics and is not trained (the
//! `FrozenBatchNorm2d` of maskrcnn-benchmark and detectron2). The stem and the first stage are
//! frozen too by default (`freeze_at = 2`), as GLIP and detectron2 do.
//!
//! Parameter names follow torchvision except the shortcut projection: torchvision's
//! `downsample.0` / `downsample.1` are `downsample.conv` / `downsample.norm` here;
//! [`torchvision_load_options`] renames them (and drops the classifier) to load an ImageNet
//! checkpoint.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::weights::LoadOptions;

/// The residual block a ResNet is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResNetBlockKind {
    /// Two 3×3 convs (ResNet-18/34).
    Basic,
    /// 1×1 down, 3×3, 1×1 up four times wider (ResNet-50/101).
    Bottleneck,
}

impl ResNetBlockKind {
    /// Output width of a block as a multiple of its stage's base width.
    fn expansion(self) -> usize {
        match self {
            Self::Basic => 1,
            Self::Bottleneck => 4,
        }
    }
}

/// The shape of a ResNet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResNetConfig {
    pub block: ResNetBlockKind,
    /// Blocks per stage (four stages, strides 4, 8, 16, 32).
    pub layers: [usize; 4],
    /// Width of the stem and of the first stage's blocks (torchvision: 64); it doubles per stage.
    pub base_width: usize,
    /// Stages whose outputs are returned (0-based; the default, 1..=3, gives strides 8, 16, 32).
    pub out_stages: Vec<usize>,
    /// Not trained: 0 = nothing, 1 = the stem, 2 = the stem and the first stage, and so on.
    pub freeze_at: usize,
    /// BatchNorm applies its running statistics and is not trained.
    pub frozen_norm: bool,
}

impl Default for ResNetConfig {
    /// ResNet-50.
    fn default() -> Self {
        Self::resnet50()
    }
}

impl ResNetConfig {
    /// ResNet-18: basic blocks 2-2-2-2.
    pub fn resnet18() -> Self {
        Self { block: ResNetBlockKind::Basic, layers: [2, 2, 2, 2], ..Self::resnet50() }
    }

    /// ResNet-34: basic blocks 3-4-6-3.
    pub fn resnet34() -> Self {
        Self { block: ResNetBlockKind::Basic, layers: [3, 4, 6, 3], ..Self::resnet50() }
    }

    /// ResNet-50: bottlenecks 3-4-6-3.
    pub fn resnet50() -> Self {
        Self {
            block: ResNetBlockKind::Bottleneck,
            layers: [3, 4, 6, 3],
            base_width: 64,
            out_stages: vec![1, 2, 3],
            freeze_at: 2,
            frozen_norm: true,
        }
    }

    /// ResNet-101: bottlenecks 3-4-23-3.
    pub fn resnet101() -> Self {
        Self { layers: [3, 4, 23, 3], ..Self::resnet50() }
    }

    /// Channels of stage `s`'s output.
    fn stage_channels(&self, s: usize) -> usize {
        (self.base_width << s) * self.block.expansion()
    }

    /// Channels of each returned map, in order.
    pub fn out_channels(&self) -> Vec<usize> {
        self.out_stages.iter().map(|&s| self.stage_channels(s)).collect()
    }

    /// Strides of each returned map, in order.
    pub fn out_strides(&self) -> Vec<usize> {
        self.out_stages.iter().map(|&s| 4 << s).collect()
    }

    /// Checks the shape: a positive width, at least one block per stage, returned stages
    /// consecutive and in 0..=3, `freeze_at` at most 5.
    pub fn validate(&self) -> Result<(), String> {
        if self.base_width == 0 || self.layers.contains(&0) {
            return Err(format!(
                "resnet: base_width {} and layers {:?} must be positive",
                self.base_width, self.layers
            ));
        }
        super::validate_out_stages("resnet", &self.out_stages)?;
        if self.freeze_at > 5 {
            return Err(format!("resnet: freeze_at {} must be at most 5 (stem + 4 stages)", self.freeze_at));
        }
        Ok(())
    }

    /// Build with random weights (Kaiming-uniform convs, BatchNorm at identity statistics).
    pub fn init(&self, device: &Device) -> ResNet {
        let norm = |c: usize| {
            let norm = BatchNormConfig::new(c).init(device);
            if self.frozen_norm { norm.freeze() } else { norm }
        };
        let conv = |c_in: usize, c_out: usize, k: usize, stride: usize| {
            let pad = k / 2;
            Conv2dConfig::new([c_in, c_out], [k, k])
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
                .with_bias(false)
                .init(device)
        };
        let mut in_channels = self.base_width;
        let mut stages: Vec<Vec<ResNetBlock>> = (0..4)
            .map(|s| {
                let width = self.base_width << s;
                let out = width * self.block.expansion();
                (0..self.layers[s])
                    .map(|b| {
                        let stride = if s > 0 && b == 0 { 2 } else { 1 };
                        let downsample = (stride != 1 || in_channels != out).then(|| ResNetDownsample {
                            conv: conv(in_channels, out, 1, stride),
                            norm: norm(out),
                        });
                        let block = match self.block {
                            ResNetBlockKind::Basic => ResNetBlock {
                                conv1: conv(in_channels, width, 3, stride),
                                bn1: norm(width),
                                conv2: conv(width, out, 3, 1),
                                bn2: norm(out),
                                conv3: None,
                                bn3: None,
                                downsample,
                            },
                            ResNetBlockKind::Bottleneck => ResNetBlock {
                                conv1: conv(in_channels, width, 1, 1),
                                bn1: norm(width),
                                conv2: conv(width, width, 3, stride),
                                bn2: norm(width),
                                conv3: Some(conv(width, out, 1, 1)),
                                bn3: Some(norm(out)),
                                downsample,
                            },
                        };
                        in_channels = out;
                        block
                    })
                    .collect()
            })
            .collect();
        let mut conv1 = conv(3, self.base_width, 7, 2);
        let mut bn1 = norm(self.base_width);
        if self.freeze_at >= 1 {
            conv1 = conv1.freeze();
            bn1 = bn1.freeze();
        }
        for stage in stages.iter_mut().take(self.freeze_at.saturating_sub(1)) {
            *stage = std::mem::take(stage).into_iter().map(Module::freeze).collect();
        }
        let [layer1, layer2, layer3, layer4]: [Vec<ResNetBlock>; 4] =
            stages.try_into().unwrap_or_else(|_| unreachable!("four stages"));
        ResNet {
            conv1,
            bn1,
            maxpool: MaxPool2dConfig::new([3, 3])
                .with_strides([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(),
            layer1,
            layer2,
            layer3,
            layer4,
            out_stages: self.out_stages.clone(),
        }
    }
}

/// Renames and drops for loading a torchvision ResNet checkpoint (`resnet50-*.pth`) into a
/// [`ResNet`]: the shortcut's `downsample.0` / `.1` become `downsample.conv` / `.norm`, and the
/// classifier (`fc`) and BatchNorm's step counters are not loaded.
pub fn torchvision_load_options(prefix: &str) -> LoadOptions {
    LoadOptions::new()
        .with_prefix(prefix)
        .with_ignore(r"^fc\.")
        .with_ignore(r"num_batches_tracked$")
        .with_remaps(&[
            (r"\.downsample\.0\.", ".downsample.conv."),
            (r"\.downsample\.1\.", ".downsample.norm."),
        ])
}

/// A ResNet; [`ResNet::forward`] returns the maps of the configured stages.
#[derive(Module, Debug)]
pub struct ResNet {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub maxpool: MaxPool2d,
    pub layer1: Vec<ResNetBlock>,
    pub layer2: Vec<ResNetBlock>,
    pub layer3: Vec<ResNetBlock>,
    pub layer4: Vec<ResNetBlock>,
    #[module(skip)]
    pub out_stages: Vec<usize>,
}

impl ResNet {
    /// `pixel_values [B, 3, H, W]` → one `[B, C_s, H/stride, W/stride]` map per returned stage.
    pub fn forward(&self, pixel_values: Tensor<4>) -> Vec<Tensor<4>> {
        let mut x = self.maxpool.forward(relu(self.bn1.forward(self.conv1.forward(pixel_values))));
        let mut outputs = Vec::with_capacity(self.out_stages.len());
        for (s, stage) in [&self.layer1, &self.layer2, &self.layer3, &self.layer4].into_iter().enumerate() {
            x = stage.iter().fold(x, |x, block| block.forward(x));
            if self.out_stages.contains(&s) {
                outputs.push(x.clone());
            }
            if outputs.len() == self.out_stages.len() {
                break;
            }
        }
        outputs
    }
}

/// A basic block (`conv3` / `bn3` absent) or a bottleneck.
#[derive(Module, Debug)]
pub struct ResNetBlock {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub conv2: Conv2d,
    pub bn2: BatchNorm,
    pub conv3: Option<Conv2d>,
    pub bn3: Option<BatchNorm>,
    /// The shortcut's projection where the block changes width or stride.
    pub downsample: Option<ResNetDownsample>,
}

impl ResNetBlock {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let shortcut = match &self.downsample {
            Some(downsample) => downsample.norm.forward(downsample.conv.forward(x.clone())),
            None => x.clone(),
        };
        let mut y = relu(self.bn1.forward(self.conv1.forward(x)));
        y = self.bn2.forward(self.conv2.forward(y));
        if let (Some(conv3), Some(bn3)) = (&self.conv3, &self.bn3) {
            y = bn3.forward(conv3.forward(relu(y)));
        }
        relu(y + shortcut)
    }
}

/// The 1×1 projection (and its norm) on a block's shortcut.
#[derive(Module, Debug)]
pub struct ResNetDownsample {
    pub conv: Conv2d,
    pub norm: BatchNorm,
}
