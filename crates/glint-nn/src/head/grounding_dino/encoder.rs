//! The feature enhancer (Grounding DINO's encoder): per layer, image–text fusion, then text
//! self-attention, then deformable self-attention over the multi-scale image tokens.

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{Bool, Device, Tensor, TensorData};

use super::GroundingDinoError;
use super::config::GroundingDinoConfig;
use super::position::coordinate_embedding;
use crate::activation::Activation;
use crate::attention::{
    MultiHeadAttention, MultiScaleDeformableAttention, MultiScaleDeformableAttentionConfig,
};
use crate::fusion::{BiAttentionConfig, FusionLayer};

/// The multi-scale image tokens and their layout, shared by the encoder and the decoder.
#[derive(Debug, Clone)]
pub struct VisionTokens {
    /// `[B, S, d_model]`: every level's map flattened row-major, levels concatenated.
    pub features: Tensor<3>,
    /// `[B, S, d_model]`: sine position embedding plus the level embedding.
    pub position: Tensor<3>,
    /// `[B, S]`, `true` where the token is batch padding (outside its image).
    pub padding: Tensor<2, Bool>,
    /// `[height, width]` of every level (the largest in the batch).
    pub spatial_shapes: Vec<[usize; 2]>,
    /// `[b][level] = [valid width, valid height]` in tokens of image `b` at each level.
    pub valid_sizes: Vec<Vec<[usize; 2]>>,
}

impl VisionTokens {
    /// `[B, levels, 2]` valid fraction `(width, height)` of every level (1 when unpadded).
    pub fn valid_ratios(&self, device: &Device) -> Tensor<3> {
        let levels = self.spatial_shapes.len();
        let data: Vec<f32> =
            (0..self.valid_sizes.len()).flat_map(|b| self.image_ratios(b)).flatten().collect();
        Tensor::from_data(TensorData::new(data, [self.valid_sizes.len(), levels, 2]), device)
    }

    /// Image `b`'s valid fraction `[width, height]` of every level.
    fn image_ratios(&self, b: usize) -> Vec<[f32; 2]> {
        self.valid_sizes[b]
            .iter()
            .zip(&self.spatial_shapes)
            .map(|(&[vw, vh], &[h, w])| [vw as f32 / w as f32, vh as f32 / h as f32])
            .collect()
    }

    /// The encoder's reference points `[B, S, levels, 2]`: every token's centre, normalised
    /// by its image's valid size at its own level, then scaled to each level's padded map.
    pub fn reference_points(&self, device: &Device) -> Tensor<4> {
        let levels = self.spatial_shapes.len();
        let tokens: usize = self.spatial_shapes.iter().map(|[h, w]| h * w).sum();
        let mut data = Vec::with_capacity(self.valid_sizes.len() * tokens * levels * 2);
        for b in 0..self.valid_sizes.len() {
            let ratios = self.image_ratios(b);
            for (level, &[h, w]) in self.spatial_shapes.iter().enumerate() {
                let [rx, ry] = ratios[level];
                for y in 0..h {
                    for x in 0..w {
                        let ref_x = (x as f32 + 0.5) / (rx * w as f32);
                        let ref_y = (y as f32 + 0.5) / (ry * h as f32);
                        for &[lx, ly] in &ratios {
                            data.push(ref_x * lx);
                            data.push(ref_y * ly);
                        }
                    }
                }
            }
        }
        Tensor::from_data(TensorData::new(data, [self.valid_sizes.len(), tokens, levels, 2]), device)
    }
}

/// Text self-attention (half the encoder's heads) and a feed-forward block, post-norm; the
/// queries and keys carry the sine embedding of the tokens' position ids.
#[derive(Module, Debug)]
pub struct TextEnhancerLayer {
    /// Self-attention over the prompt's tokens.
    pub self_attn: MultiHeadAttention,
    /// `d_model -> encoder_ffn_dim / 2`.
    pub fc1: Linear,
    /// `encoder_ffn_dim / 2 -> d_model`.
    pub fc2: Linear,
    /// Norm after the attention residual.
    pub layer_norm_before: LayerNorm,
    /// Norm after the feed-forward residual.
    pub layer_norm_after: LayerNorm,
    /// Dropout (training only).
    pub dropout: Dropout,
    #[module(skip)]
    activation: Activation,
}

impl TextEnhancerLayer {
    fn new(config: &GroundingDinoConfig, device: &Device) -> Self {
        let d = config.d_model;
        let norm = || LayerNormConfig::new(d).with_epsilon(config.layer_norm_eps).init(device);
        Self {
            self_attn: MultiHeadAttention::new(
                d,
                config.encoder_attention_heads / 2,
                config.attention_dropout,
                device,
            ),
            fc1: LinearConfig::new(d, config.encoder_ffn_dim / 2).init(device),
            fc2: LinearConfig::new(config.encoder_ffn_dim / 2, d).init(device),
            layer_norm_before: norm(),
            layer_norm_after: norm(),
            dropout: DropoutConfig::new(config.text_enhancer_dropout).init(),
            activation: config.activation(),
        }
    }

    /// `text [B, L, d]`, `position [B, L, d]`, `blocked [B, 1, L, L]` (true = may not attend).
    pub fn forward(&self, text: Tensor<3>, position: Tensor<3>, blocked: Tensor<4, Bool>) -> Tensor<3> {
        let with_position = text.clone() + position;
        let attended =
            self.self_attn.forward(with_position.clone(), with_position, text.clone(), Some(blocked));
        let text = self.layer_norm_before.forward(text + self.dropout.forward(attended));
        let hidden = self.dropout.forward(self.activation.forward(self.fc1.forward(text.clone())));
        let hidden = self.dropout.forward(self.fc2.forward(hidden));
        self.layer_norm_after.forward(text + hidden)
    }
}

/// Deformable self-attention over the image tokens and a feed-forward block, post-norm.
#[derive(Module, Debug)]
pub struct DeformableLayer {
    /// Multi-scale deformable self-attention.
    pub self_attn: MultiScaleDeformableAttention,
    /// Norm after the attention residual.
    pub self_attn_layer_norm: LayerNorm,
    /// `d_model -> encoder_ffn_dim`.
    pub fc1: Linear,
    /// `encoder_ffn_dim -> d_model`.
    pub fc2: Linear,
    /// Norm after the feed-forward residual.
    pub final_layer_norm: LayerNorm,
    /// Dropout (training only).
    pub dropout: Dropout,
    /// Dropout after the activation (training only).
    pub activation_dropout: Dropout,
    #[module(skip)]
    activation: Activation,
}

impl DeformableLayer {
    fn new(config: &GroundingDinoConfig, device: &Device) -> Result<Self, GroundingDinoError> {
        let d = config.d_model;
        let norm = || LayerNormConfig::new(d).with_epsilon(config.layer_norm_eps).init(device);
        let self_attn = MultiScaleDeformableAttentionConfig::new(
            d,
            config.num_feature_levels,
            config.encoder_attention_heads,
            config.encoder_n_points,
        )
        .init(device)?;
        Ok(Self {
            self_attn,
            self_attn_layer_norm: norm(),
            fc1: LinearConfig::new(d, config.encoder_ffn_dim).init(device),
            fc2: LinearConfig::new(config.encoder_ffn_dim, d).init(device),
            final_layer_norm: norm(),
            dropout: DropoutConfig::new(config.dropout).init(),
            activation_dropout: DropoutConfig::new(config.activation_dropout).init(),
            activation: config.activation(),
        })
    }

    fn forward(
        &self,
        vision: Tensor<3>,
        tokens: &VisionTokens,
        reference_points: Tensor<4>,
    ) -> Result<Tensor<3>, GroundingDinoError> {
        let attended = self.self_attn.forward(
            vision.clone(),
            Some(tokens.position.clone()),
            vision.clone(),
            reference_points,
            &tokens.spatial_shapes,
            Some(tokens.padding.clone()),
        )?;
        let vision = self.self_attn_layer_norm.forward(vision + self.dropout.forward(attended.output));
        let hidden =
            self.activation_dropout.forward(self.activation.forward(self.fc1.forward(vision.clone())));
        let hidden = self.dropout.forward(self.fc2.forward(hidden));
        Ok(self.final_layer_norm.forward(vision + hidden))
    }
}

/// One feature-enhancer layer.
#[derive(Module, Debug)]
pub struct EncoderLayer {
    /// Text self-attention block.
    pub text_enhancer_layer: TextEnhancerLayer,
    /// Bi-directional image–text cross-attention.
    pub fusion_layer: FusionLayer,
    /// Deformable self-attention block.
    pub deformable_layer: DeformableLayer,
}

/// The text side of the transformer: features and masks.
#[derive(Debug, Clone)]
pub struct TextTokens {
    /// `[B, L, d_model]` projected text features.
    pub features: Tensor<3>,
    /// `[B, L]`, `true` where the token is padding.
    pub padding: Tensor<2, Bool>,
    /// `[B, 1, L, L]`, `true` where token `i` may not attend to token `j` (the sub-sentence
    /// mask: tokens see only their own phrase).
    pub blocked: Tensor<4, Bool>,
    /// `[B, L, d_model]` sine embedding of the tokens' position ids.
    pub position: Tensor<3>,
}

impl TextTokens {
    /// Text tokens with the embedding of `position_ids [B, L]` (as floats).
    pub fn new(
        features: Tensor<3>,
        padding: Tensor<2, Bool>,
        blocked: Tensor<4, Bool>,
        position_ids: Tensor<2>,
    ) -> Self {
        let d_model = features.dims()[2];
        let position = coordinate_embedding(position_ids.unsqueeze_dim::<3>(2), d_model);
        Self { features, padding, blocked, position }
    }
}

/// The feature enhancer: `encoder_layers` layers.
#[derive(Module, Debug)]
pub struct Encoder {
    /// The layers.
    pub layers: Vec<EncoderLayer>,
}

impl Encoder {
    /// Build from the config.
    pub fn new(config: &GroundingDinoConfig, device: &Device) -> Result<Self, GroundingDinoError> {
        let fusion = BiAttentionConfig::new(
            config.d_model,
            config.d_model,
            config.encoder_ffn_dim / 2,
            config.encoder_attention_heads / 2,
        )
        .with_dropout(config.fusion_dropout)
        .with_drop_path(config.fusion_droppath)
        .with_layer_norm_eps(config.layer_norm_eps);
        let layers = (0..config.encoder_layers)
            .map(|_| {
                Ok(EncoderLayer {
                    text_enhancer_layer: TextEnhancerLayer::new(config, device),
                    fusion_layer: fusion.init(device)?,
                    deformable_layer: DeformableLayer::new(config, device)?,
                })
            })
            .collect::<Result<_, GroundingDinoError>>()?;
        Ok(Self { layers })
    }

    /// Enhance both modalities: returns `(vision [B, S, d], text [B, L, d])`.
    pub fn forward(
        &self,
        vision: &VisionTokens,
        text: &TextTokens,
    ) -> Result<(Tensor<3>, Tensor<3>), GroundingDinoError> {
        let device = vision.features.device();
        let reference_points = vision.reference_points(&device);
        let mut vision_features = vision.features.clone();
        let mut text_features = text.features.clone();
        for layer in &self.layers {
            let fused = layer.fusion_layer.forward(
                vision_features,
                text_features,
                Some(vision.padding.clone()),
                Some(text.padding.clone()),
            )?;
            text_features =
                layer.text_enhancer_layer.forward(fused.text, text.position.clone(), text.blocked.clone());
            vision_features =
                layer.deformable_layer.forward(fused.vision, vision, reference_points.clone())?;
        }
        Ok((vision_features, text_features))
    }
}
