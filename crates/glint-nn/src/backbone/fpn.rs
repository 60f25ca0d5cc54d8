//! The feature pyramid (Lin et al. 2017) as ATSS and GLIP build it: 1×1 lateral convs on the
//! backbone maps, top-down nearest-neighbour upsampling and addition, a 3×3 output conv per
//! level, then P6 and P7 from stride-2 3×3 convs (P7 after a ReLU), applied to the last output
//! (GLIP's `LastLevelP6P7` on P5). Three backbone maps at strides 8, 16, 32 give P3–P7.

use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::activation::relu;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Device, Tensor};

/// Build an [`Fpn`] over backbone maps of `in_channels`, each level `out_channels` wide, with
/// `extra_levels` (0, 1 or 2) stride-2 levels on top.
pub fn fpn(in_channels: &[usize], out_channels: usize, extra_levels: usize, device: &Device) -> Fpn {
    let conv = |c_in: usize, k: usize, stride: usize| {
        let pad = k / 2;
        Conv2dConfig::new([c_in, out_channels], [k, k])
            .with_stride([stride, stride])
            .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
            .init(device)
    };
    Fpn {
        lateral: in_channels.iter().map(|&c| conv(c, 1, 1)).collect(),
        output: in_channels.iter().map(|_| conv(out_channels, 3, 1)).collect(),
        extra: (0..extra_levels).map(|_| conv(out_channels, 3, 2)).collect(),
    }
}

/// Feature pyramid: `lateral[i]`, `output[i]` per backbone map, `extra` stride-2 levels.
#[derive(Module, Debug)]
pub struct Fpn {
    pub lateral: Vec<Conv2d>,
    pub output: Vec<Conv2d>,
    pub extra: Vec<Conv2d>,
}

impl Fpn {
    /// Backbone maps, finest first → pyramid levels, finest first (`maps.len() + extra` of them).
    pub fn forward(&self, maps: Vec<Tensor<4>>) -> Vec<Tensor<4>> {
        let mut laterals: Vec<Tensor<4>> =
            maps.into_iter().zip(&self.lateral).map(|(m, conv)| conv.forward(m)).collect();
        for i in (0..laterals.len().saturating_sub(1)).rev() {
            let [_, _, h, w] = laterals[i].dims();
            let options = InterpolateOptions::new(InterpolateMode::Nearest).with_output_size([h, w]);
            let upsampled = interpolate(laterals[i + 1].clone(), options);
            laterals[i] = laterals[i].clone() + upsampled;
        }
        let mut levels: Vec<Tensor<4>> =
            laterals.into_iter().zip(&self.output).map(|(x, conv)| conv.forward(x)).collect();
        for (i, conv) in self.extra.iter().enumerate() {
            let last = levels.last().expect("at least one backbone map").clone();
            levels.push(conv.forward(if i == 0 { last } else { relu(last) }));
        }
        levels
    }
}
