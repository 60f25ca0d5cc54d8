//! The vision path of one VL-DyHead layer (Dai et al. 2021, "Dynamic Head", as GLIP uses it):
//! for every pyramid level, three modulated deformable 3×3 convs see the level itself, the finer
//! level below (stride 2) and the coarser level above (then upsampled); scale-aware attention
//! weighs the three and averages them; task-aware DyReLU activates the result.
//!
//! The coarser level's conv needs offsets at the coarser size. GLIP passes the current level's
//! (a map twice the size), which its CUDA op reads as a flat buffer, i.e. with the wrong row
//! stride; torchvision's `deform_conv2d` rejects it. Official checkpoints were trained that way
//! and need it ([`CoarserOffsets::FinerReadFlat`]); glint's own models use the coarser level's
//! own offsets ([`CoarserOffsets::Own`]).

use burn::module::{Initializer, Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::{hard_sigmoid, relu, sigmoid};
use burn::tensor::module::{adaptive_avg_pool2d, deform_conv2d};
use burn::tensor::ops::{DeformConvOptions, GridSampleOptions, GridSamplePaddingMode, InterpolateMode};
use burn::tensor::{Device, Tensor, TensorData};

use super::CoarserOffsets;

/// `relu6(x + 3) / 6`, the "hard sigmoid" of DyHead and GLIP.
fn h_sigmoid<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    hard_sigmoid(x, 1.0 / 6.0, 0.5)
}

/// A 3×3 modulated deformable conv followed by GroupNorm.
#[derive(Module, Debug)]
pub struct DeformConvNorm {
    /// `[out, in, 3, 3]`.
    pub weight: Param<Tensor<4>>,
    pub bias: Option<Param<Tensor<1>>>,
    pub norm: GroupNorm,
    pub stride: usize,
}

impl DeformConvNorm {
    fn new(channels: usize, groups: usize, stride: usize, bias: bool, device: &Device) -> Self {
        let fan_in = (channels * 9) as f64;
        // Kaiming-uniform as Burn's own convs start.
        let bound = (1.0 / fan_in).sqrt();
        let weight =
            Initializer::Uniform { min: -bound, max: bound }.init([channels, channels, 3, 3], device);
        Self {
            weight,
            bias: bias.then(|| Initializer::Zeros.init([channels], device)),
            norm: GroupNormConfig::new(groups, channels).init(device),
            stride,
        }
    }

    /// `offset [B, 18, H', W']` and `mask [B, 9, H', W']` at the output size.
    fn forward(&self, x: Tensor<4>, offset: Tensor<4>, mask: Tensor<4>) -> Tensor<4> {
        let mut y = modulated_deform_conv(x, offset, mask, self.weight.val(), self.stride);
        if let Some(bias) = &self.bias {
            let channels = bias.dims()[0];
            y = y + bias.val().reshape([1, channels, 1, 1]);
        }
        self.norm.forward(y)
    }
}

/// A 3×3 modulated deformable convolution, padding 1, no bias (torchvision's
/// `deform_conv2d(input, offset, weight, stride=stride, padding=1, mask=mask)`): `offset` holds
/// `(dy, dx)` per kernel position, `mask` a weight per kernel position.
///
/// For training it is composed of differentiable ops — one bilinear `grid_sample_2d` for all
/// nine kernel positions, the mask, and a matrix product with the weights — because Burn's own
/// `deform_conv2d` backward is ~400× slower on the CPU (25.7 s against 0.6 s for a
/// `[8, 64, 40, 40]` map). Burn's op, faster forward, serves inference.
pub fn modulated_deform_conv(
    x: Tensor<4>,
    offset: Tensor<4>,
    mask: Tensor<4>,
    weight: Tensor<4>,
    stride: usize,
) -> Tensor<4> {
    if !x.device().is_autodiff() {
        let options = DeformConvOptions::new([stride; 2], [1, 1], [1, 1], 1, 1);
        return deform_conv2d(x, offset, weight, Some(mask), None, options);
    }
    let device = x.device();
    let [batch, channels, height, width] = x.dims();
    let [_, _, out_h, out_w] = offset.dims();
    let [out_channels, ..] = weight.dims();
    // Where each kernel position samples without offsets, in input pixels: [9, H', W'].
    let mut base_y = Vec::with_capacity(9 * out_h * out_w);
    let mut base_x = Vec::with_capacity(9 * out_h * out_w);
    for k in 0..9 {
        for i in 0..out_h {
            for j in 0..out_w {
                base_y.push((i * stride + k / 3) as f32 - 1.0);
                base_x.push((j * stride + k % 3) as f32 - 1.0);
            }
        }
    }
    let base = |v: Vec<f32>| {
        Tensor::<3>::from_data(TensorData::new(v, [9, out_h, out_w]), &device).unsqueeze_dim::<4>(0)
    };
    let offset = offset.reshape([batch, 9, 2, out_h, out_w]);
    let dy = offset.clone().narrow(2, 0, 1).reshape([batch, 9, out_h, out_w]);
    let dx = offset.narrow(2, 1, 1).reshape([batch, 9, out_h, out_w]);
    // grid_sample's coordinates (align_corners = false): -1 and 1 are the outer pixel edges.
    let gy = ((base(base_y) + dy) * 2.0 + 1.0) / height as f32 - 1.0;
    let gx = ((base(base_x) + dx) * 2.0 + 1.0) / width as f32 - 1.0;
    let grid = Tensor::stack::<5>(vec![gx, gy], 4).reshape([batch, 9 * out_h, out_w, 2]);
    let options = GridSampleOptions::new(InterpolateMode::Bilinear)
        .with_padding_mode(GridSamplePaddingMode::Zeros)
        .with_align_corners(false);
    let sampled = x.grid_sample_2d(grid, options).reshape([batch, channels, 9, out_h, out_w]);
    let columns =
        (sampled * mask.reshape([batch, 1, 9, out_h, out_w])).reshape([batch, channels * 9, out_h * out_w]);
    weight.reshape([1, out_channels, channels * 9]).matmul(columns).reshape([
        batch,
        out_channels,
        out_h,
        out_w,
    ])
}

/// The first `C·h·w` values of each image's `[C, H, W]` map (`H·W ≥ h·w`) read as `[C, h, w]`:
/// a kernel given a larger buffer than its output and indexing it as if it fitted.
fn read_flat(x: Tensor<4>, [h, w]: [usize; 2]) -> Tensor<4> {
    let [batch, channels, height, width] = x.dims();
    x.reshape([batch, channels * height * width])
        .narrow(1, 0, channels * h * w)
        .reshape([batch, channels, h, w])
}

/// Bilinear resize with aligned corners (GLIP's `F.upsample_bilinear`) as two products with
/// interpolation matrices, `A_h · x · A_wᵀ`: the same numbers as Burn's `interpolate`, and
/// differentiable on every backend (the wgpu backend has no bilinear `interpolate` backward).
pub fn upsample_bilinear(x: Tensor<4>, [out_h, out_w]: [usize; 2]) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    let device = x.device();
    // Row i of the matrix: the weights of the input samples that output i interpolates.
    let matrix = |n_out: usize, n_in: usize| {
        let mut m = vec![0.0f32; n_out * n_in];
        for i in 0..n_out {
            let position = if n_out > 1 { i as f32 * (n_in - 1) as f32 / (n_out - 1) as f32 } else { 0.0 };
            let low = (position.floor() as usize).min(n_in - 1);
            let high = (low + 1).min(n_in - 1);
            let frac = position - low as f32;
            m[i * n_in + low] += 1.0 - frac;
            m[i * n_in + high] += frac;
        }
        Tensor::<2>::from_data(TensorData::new(m, [n_out, n_in]), &device).unsqueeze::<4>()
    };
    let rows = matrix(out_h, h);
    let columns = matrix(out_w, w).swap_dims(2, 3);
    rows.matmul(x).matmul(columns)
}

/// Task-aware dynamic ReLU: `max(a1·x + b1, a2·x + b2)` with per-sample, per-channel `a`, `b`
/// predicted from the globally pooled input (initially close to a plain ReLU).
#[derive(Module, Debug)]
pub struct DyRelu {
    pub fc1: Linear,
    pub fc2: Linear,
}

impl DyRelu {
    fn new(channels: usize, device: &Device) -> Self {
        // GLIP's squeeze: a quarter of the width (its reduction 4).
        let squeeze = (channels / 4).max(1);
        Self {
            fc1: LinearConfig::new(channels, squeeze).init(device),
            fc2: LinearConfig::new(squeeze, 4 * channels).init(device),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, _, _] = x.dims();
        let pooled = adaptive_avg_pool2d(x.clone(), [1, 1]).reshape([b, c]);
        let y = h_sigmoid(self.fc2.forward(relu(self.fc1.forward(pooled)))).reshape([b, 4 * c, 1, 1]);
        let part = |i: usize| y.clone().narrow(1, i * c, c);
        // In GLIP's order a1, b1, a2, b2. Slopes start at 1 and 0, intercepts at 0 (y = 0.5
        // gives a ReLU).
        let a1 = (part(0) - 0.5) * 2.0 + 1.0;
        let b1 = part(1) - 0.5;
        let a2 = (part(2) - 0.5) * 2.0;
        let b2 = part(3) - 0.5;
        (x.clone() * a1 + b1).max_pair(x * a2 + b2)
    }
}

/// The vision path of one VL-DyHead layer over all pyramid levels.
#[derive(Module, Debug)]
pub struct DyConv {
    /// Predicts each level's 18 offsets and 9 mask logits (zero-initialised: a plain conv at first).
    pub offset: Conv2d,
    /// Applied to the coarser level (stride 1, then upsampled).
    pub conv_coarser: DeformConvNorm,
    /// Applied to the level itself.
    pub conv_same: DeformConvNorm,
    /// Applied to the finer level (stride 2).
    pub conv_finer: DeformConvNorm,
    /// Scale-aware attention: pooled branch → one logit.
    pub attention: Conv2d,
    pub dyrelu: Option<DyRelu>,
    #[module(skip)]
    pub coarser_offsets: CoarserOffsets,
}

impl DyConv {
    /// A layer of `channels` wide maps, GroupNorm with `groups` groups.
    pub fn new(
        channels: usize,
        groups: usize,
        use_dyrelu: bool,
        conv_bias: bool,
        coarser_offsets: CoarserOffsets,
        device: &Device,
    ) -> Self {
        let mut offset = Conv2dConfig::new([channels, 27], [3, 3])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .with_initializer(Initializer::Zeros)
            .init(device);
        offset.bias = Some(Initializer::Zeros.init([27], device));
        Self {
            offset,
            conv_coarser: DeformConvNorm::new(channels, groups, 1, conv_bias, device),
            conv_same: DeformConvNorm::new(channels, groups, 1, conv_bias, device),
            conv_finer: DeformConvNorm::new(channels, groups, 2, conv_bias, device),
            attention: Conv2dConfig::new([channels, 1], [1, 1]).init(device),
            dyrelu: use_dyrelu.then(|| DyRelu::new(channels, device)),
            coarser_offsets,
        }
    }

    /// Levels finest first, each `[B, C, H_l, W_l]` with `H_l = ceil(H_{l-1} / 2)` (the shape of
    /// an input padded to a multiple of the coarsest backbone stride).
    pub fn forward(&self, levels: &[Tensor<4>]) -> Vec<Tensor<4>> {
        let offsets: Vec<(Tensor<4>, Tensor<4>)> = levels
            .iter()
            .map(|x| {
                let predicted = self.offset.forward(x.clone());
                (predicted.clone().narrow(1, 0, 18), sigmoid(predicted.narrow(1, 18, 9)))
            })
            .collect();
        (0..levels.len())
            .map(|l| {
                let [_, _, h, w] = levels[l].dims();
                let (offset, mask) = offsets[l].clone();
                let mut branches =
                    vec![self.conv_same.forward(levels[l].clone(), offset.clone(), mask.clone())];
                if l > 0 {
                    branches.push(self.conv_finer.forward(levels[l - 1].clone(), offset, mask));
                }
                if l + 1 < levels.len() {
                    let (offset, mask) = match self.coarser_offsets {
                        CoarserOffsets::Own => offsets[l + 1].clone(),
                        CoarserOffsets::FinerReadFlat => {
                            let [_, _, h, w] = levels[l + 1].dims();
                            let (offset, mask) = offsets[l].clone();
                            (read_flat(offset, [h, w]), read_flat(mask, [h, w]))
                        }
                    };
                    let coarse = self.conv_coarser.forward(levels[l + 1].clone(), offset, mask);
                    branches.push(upsample_bilinear(coarse, [h, w]));
                }
                let count = branches.len() as f32;
                let weighted = branches
                    .into_iter()
                    .map(|branch| {
                        let weight = h_sigmoid(relu(
                            self.attention.forward(adaptive_avg_pool2d(branch.clone(), [1, 1])),
                        ));
                        branch * weight
                    })
                    .reduce(|a, b| a + b)
                    .expect("at least one branch");
                let mean = weighted / count;
                match &self.dyrelu {
                    Some(dyrelu) => dyrelu.forward(mean),
                    None => relu(mean),
                }
            })
            .collect()
    }
}
