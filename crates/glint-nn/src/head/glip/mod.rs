//! GLIP's head (Li et al. 2022, "Grounded Language-Image Pre-training"): a VL-DyHead tower
//! over the pyramid levels and the prompt's tokens, then ATSS-style predictions per anchor —
//! box deltas, centerness and the **region–word alignment logits** that replace class logits.
//!
//! Each tower layer: bi-directional fusion between all levels (flattened into one sequence)
//! and the tokens ([`crate::fusion::FusionLayer`]), a BERT layer on the fused tokens (GLIP's
//! language path), and [`dyhead::DyConv`] on the fused maps. The alignment logit of anchor `a`
//! and token `t` is `r_a · p(ť_t) / exp(log_scale) + ť_t · bias_lang + bias0`, with `r_a` the
//! tower's feature at the anchor, `ť_t` the L2-normalised final token feature and `p` a linear
//! projection of `ť_t / 2` — GLIP's `dot_product_projection_text` path.

pub mod anchors;
pub mod dyhead;

use burn::module::{Initializer, Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::{Bool, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::fusion::{BiAttentionConfig, FusionError, FusionLayer, LOGIT_CLAMP};
use crate::text::{BertAttentionMask, BertConfig, BertLayer};
use dyhead::DyConv;

/// The shape of a [`GlipHead`]. Widths of the maps and tokens come from the neck and text encoder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GlipHeadConfig {
    /// Tower layers (GLIP-T: 6).
    pub num_layers: usize,
    /// GroupNorm groups in the deformable convs (must divide the map width).
    pub norm_groups: usize,
    /// Width of the fusion's shared attention space and its heads.
    pub fusion_embed_dim: usize,
    pub fusion_heads: usize,
    /// Initial layer-scale of the fusion updates.
    pub fusion_init_scale: f64,
    /// Task-aware DyReLU (else a plain ReLU).
    pub use_dyrelu: bool,
    /// A BERT layer on the tokens after each fusion.
    pub text_layers: bool,
    /// Score regions against the tokens the tower has fused with the image (GLIP's
    /// `USE_FUSED_FEATURES_DOT_PRODUCT`); `false` scores against the text encoder's own output.
    pub score_fused_tokens: bool,
    /// Prior probability of a positive at initialisation (sets `bias0`).
    pub prior_prob: f64,
    /// Kernel side of the box and centerness predictors (GLIP: 1; ATSS: 3).
    pub prediction_kernel: usize,
    /// The deformable convs have a bias (GLIP: yes).
    pub deform_conv_bias: bool,
    /// Which offsets the coarser level's deformable conv uses.
    pub coarser_offsets: CoarserOffsets,
}

/// The offsets and mask of the deformable conv applied to the coarser level `l + 1` when
/// computing level `l`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CoarserOffsets {
    /// Level `l + 1`'s own, predicted on it.
    Own,
    /// Level `l`'s, read as a flat buffer of the coarser map's size: what GLIP's CUDA op does
    /// with the twice-larger map it is given (official checkpoints were trained with it).
    FinerReadFlat,
}

impl Default for GlipHeadConfig {
    /// GLIP-T's head shape.
    fn default() -> Self {
        Self {
            num_layers: 6,
            norm_groups: 16,
            fusion_embed_dim: 2048,
            fusion_heads: 8,
            fusion_init_scale: 1.0 / 6.0,
            use_dyrelu: true,
            text_layers: true,
            score_fused_tokens: true,
            prior_prob: 0.01,
            prediction_kernel: 1,
            deform_conv_bias: true,
            coarser_offsets: CoarserOffsets::FinerReadFlat,
        }
    }
}

impl GlipHeadConfig {
    /// Build for `channels`-wide maps, `levels` pyramid levels, and tokens from `text`.
    pub fn init(
        &self,
        channels: usize,
        levels: usize,
        text: &BertConfig,
        device: &Device,
    ) -> Result<GlipHead, FusionError> {
        if self.norm_groups == 0 || !channels.is_multiple_of(self.norm_groups) {
            return Err(FusionError::Config(format!(
                "glip head: norm_groups {} must divide the map width {channels}",
                self.norm_groups
            )));
        }
        if self.prediction_kernel.is_multiple_of(2) {
            return Err(FusionError::Config(format!(
                "glip head: prediction_kernel {} must be odd (1 or 3)",
                self.prediction_kernel
            )));
        }
        let fusion =
            BiAttentionConfig::new(channels, text.hidden_size, self.fusion_embed_dim, self.fusion_heads)
                .with_init_values(self.fusion_init_scale);
        let layers = (0..self.num_layers)
            .map(|_| {
                Ok(GlipTowerLayer {
                    fusion: fusion.init(device)?,
                    text_layer: self.text_layers.then(|| text.init_layer(device)),
                    dyconv: DyConv::new(
                        channels,
                        self.norm_groups,
                        self.use_dyrelu,
                        self.deform_conv_bias,
                        self.coarser_offsets,
                        device,
                    ),
                })
            })
            .collect::<Result<_, FusionError>>()?;
        let k = self.prediction_kernel;
        let predictor = |c_out: usize| {
            let pad = k / 2;
            let mut conv = Conv2dConfig::new([channels, c_out], [k, k])
                .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
                .with_initializer(Initializer::Normal { mean: 0.0, std: 0.01 })
                .init(device);
            conv.bias = Some(Initializer::Zeros.init([c_out], device));
            conv
        };
        let bias0 = -((1.0 - self.prior_prob) / self.prior_prob).ln();
        Ok(GlipHead {
            layers,
            bbox_pred: predictor(4),
            centerness: predictor(1),
            scales: Initializer::Ones.init([levels], device),
            text_projection: LinearConfig::new(text.hidden_size, channels).init(device),
            log_scale: Initializer::Zeros.init([1], device),
            bias_lang: Initializer::Zeros.init([text.hidden_size], device),
            bias0: Initializer::Constant { value: bias0 }.init([1], device),
            score_fused_tokens: self.score_fused_tokens,
        })
    }
}

/// One tower layer: fusion, the language path's BERT layer, the vision path's DyConv.
#[derive(Module, Debug)]
pub struct GlipTowerLayer {
    pub fusion: FusionLayer,
    pub text_layer: Option<BertLayer>,
    pub dyconv: DyConv,
}

/// The head's raw outputs, all levels concatenated finest first (row-major within a level).
#[derive(Debug, Clone)]
pub struct GlipHeadOutput {
    /// `[B, N, L]` region–token alignment logits (clamped to ±50000; padded tokens included).
    pub logits: Tensor<3>,
    /// `[B, N, 4]` box deltas against the anchors.
    pub box_deltas: Tensor<3>,
    /// `[B, N]` centerness logits.
    pub centerness: Tensor<2>,
    /// `[B, N, C]` each anchor's region feature, the one its alignment logits score against the
    /// projected tokens (exemplar prompts embed a box with it).
    pub regions: Tensor<3>,
    /// `[H, W]` of every level.
    pub level_sizes: Vec<[usize; 2]>,
}

/// GLIP's VL-DyHead and prediction layers. Build with [`GlipHeadConfig::init`].
#[derive(Module, Debug)]
pub struct GlipHead {
    pub layers: Vec<GlipTowerLayer>,
    pub bbox_pred: Conv2d,
    pub centerness: Conv2d,
    /// A learnt scale per level on the box deltas.
    pub scales: Param<Tensor<1>>,
    pub text_projection: Linear,
    pub log_scale: Param<Tensor<1>>,
    pub bias_lang: Param<Tensor<1>>,
    pub bias0: Param<Tensor<1>>,
    #[module(skip)]
    pub score_fused_tokens: bool,
}

impl GlipHead {
    /// Pyramid levels `[B, C, H_l, W_l]` (finest first), token features `[B, L, D]` and their
    /// padding (`true` = padding) → per-anchor predictions.
    pub fn forward(
        &self,
        mut levels: Vec<Tensor<4>>,
        mut text: Tensor<3>,
        text_padding: Tensor<2, Bool>,
    ) -> Result<GlipHeadOutput, FusionError> {
        let [batch, channels, _, _] = levels[0].dims();
        let [_, len, text_dim] = text.dims();
        let level_sizes: Vec<[usize; 2]> = levels.iter().map(|x| [x.dims()[2], x.dims()[3]]).collect();
        let blocked = BertAttentionMask::Padding(text_padding.clone().bool_not()).blocked(batch, len);
        let encoded = (!self.score_fused_tokens).then(|| text.clone());
        for layer in &self.layers {
            let flat =
                Tensor::cat(levels.iter().map(|x| x.clone().flatten::<3>(2, 3).swap_dims(1, 2)).collect(), 1);
            let fused = layer.fusion.forward(flat, text, None, Some(text_padding.clone()))?;
            text = match &layer.text_layer {
                Some(bert) => bert.forward(fused.text, Some(blocked.clone())),
                None => fused.text,
            };
            let mut start = 0;
            let maps: Vec<Tensor<4>> = level_sizes
                .iter()
                .map(|&[h, w]| {
                    let map = fused
                        .vision
                        .clone()
                        .narrow(1, start, h * w)
                        .swap_dims(1, 2)
                        .reshape([batch, channels, h, w]);
                    start += h * w;
                    map
                })
                .collect();
            levels = layer.dyconv.forward(&maps);
        }

        let tokens = normalize_rows(encoded.unwrap_or(text));
        let projected = self.text_projection.forward(tokens.clone() / 2.0);
        let token_bias =
            tokens.matmul(self.bias_lang.val().reshape([1, text_dim, 1])).reshape([batch, 1, len])
                + self.bias0.val().reshape([1, 1, 1]);
        let inv_scale = self.log_scale.val().neg().exp().reshape([1, 1, 1]);
        let mut logits = Vec::with_capacity(levels.len());
        let mut deltas = Vec::with_capacity(levels.len());
        let mut centerness = Vec::with_capacity(levels.len());
        let mut all_regions = Vec::with_capacity(levels.len());
        for (l, x) in levels.into_iter().enumerate() {
            let regions = x.clone().flatten::<3>(2, 3).swap_dims(1, 2); // [B, HW, C]
            logits.push(
                regions.clone().matmul(projected.clone().swap_dims(1, 2)) * inv_scale.clone()
                    + token_bias.clone(),
            );
            all_regions.push(regions);
            let scale = self.scales.val().narrow(0, l, 1).reshape([1, 1, 1, 1]);
            deltas.push((self.bbox_pred.forward(x.clone()) * scale).flatten::<3>(2, 3).swap_dims(1, 2));
            centerness.push(self.centerness.forward(x).flatten::<2>(1, 3));
        }
        Ok(GlipHeadOutput {
            logits: Tensor::cat(logits, 1).clamp(-LOGIT_CLAMP, LOGIT_CLAMP),
            box_deltas: Tensor::cat(deltas, 1),
            centerness: Tensor::cat(centerness, 1),
            regions: Tensor::cat(all_regions, 1),
            level_sizes,
        })
    }
}

/// L2-normalise the last dimension (PyTorch's `F.normalize`, eps 1e-12).
fn normalize_rows(x: Tensor<3>) -> Tensor<3> {
    let norm = x.clone().powi_scalar(2).sum_dim(2).sqrt().clamp_min(1e-12);
    x / norm
}
