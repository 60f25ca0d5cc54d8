//! The cross-modality decoder: queries attend to each other, to the prompt's tokens and
//! (deformably) to the image tokens; after every layer the box head refines each query's
//! reference box.

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::{relu, sigmoid};
use burn::tensor::{Device, Tensor};

use super::GroundingDinoError;
use super::config::GroundingDinoConfig;
use super::encoder::{TextTokens, VisionTokens};
use super::position::coordinate_embedding;
use crate::activation::Activation;
use crate::attention::{
    MultiHeadAttention, MultiScaleDeformableAttention, MultiScaleDeformableAttentionConfig,
};

/// A stack of linear layers with ReLU between them (transformers' `GroundingDinoMLPPredictionHead`).
#[derive(Module, Debug)]
pub struct Mlp {
    /// The layers, `input -> hidden -> ... -> output`.
    pub layers: Vec<Linear>,
}

impl Mlp {
    /// `num_layers` layers: `input -> hidden` (× `num_layers - 1`) `-> output`.
    pub fn new(input: usize, hidden: usize, output: usize, num_layers: usize, device: &Device) -> Self {
        let layers = (0..num_layers)
            .map(|i| {
                let d_in = if i == 0 { input } else { hidden };
                let d_out = if i + 1 == num_layers { output } else { hidden };
                LinearConfig::new(d_in, d_out).init(device)
            })
            .collect();
        Self { layers }
    }

    /// Apply the layers, ReLU after all but the last.
    pub fn forward(&self, mut x: Tensor<3>) -> Tensor<3> {
        let last = self.layers.len().saturating_sub(1);
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x);
            if i < last {
                x = relu(x);
            }
        }
        x
    }
}

/// `log(x / (1 - x))` with `x` clamped to `[eps, 1 - eps]` (`torch.special.logit(x, eps)`).
pub fn inverse_sigmoid<const D: usize>(x: Tensor<D>, eps: f32) -> Tensor<D> {
    let x = x.clamp(eps, 1.0 - eps);
    (x.clone() / x.neg().add_scalar(1.0)).log()
}

/// One decoder layer.
#[derive(Module, Debug)]
pub struct DecoderLayer {
    /// Self-attention between queries.
    pub self_attn: MultiHeadAttention,
    /// Norm after it.
    pub self_attn_layer_norm: LayerNorm,
    /// Cross-attention from queries to the prompt's tokens.
    pub encoder_attn_text: MultiHeadAttention,
    /// Norm after it.
    pub encoder_attn_text_layer_norm: LayerNorm,
    /// Deformable cross-attention from queries to the image tokens.
    pub encoder_attn: MultiScaleDeformableAttention,
    /// Norm after it.
    pub encoder_attn_layer_norm: LayerNorm,
    /// `d_model -> decoder_ffn_dim`.
    pub fc1: Linear,
    /// `decoder_ffn_dim -> d_model`.
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

impl DecoderLayer {
    fn new(config: &GroundingDinoConfig, device: &Device) -> Result<Self, GroundingDinoError> {
        let d = config.d_model;
        let heads = config.decoder_attention_heads;
        let norm = || LayerNormConfig::new(d).with_epsilon(config.layer_norm_eps).init(device);
        Ok(Self {
            self_attn: MultiHeadAttention::new(d, heads, config.attention_dropout, device),
            self_attn_layer_norm: norm(),
            encoder_attn_text: MultiHeadAttention::new(d, heads, config.attention_dropout, device),
            encoder_attn_text_layer_norm: norm(),
            encoder_attn: MultiScaleDeformableAttentionConfig::new(
                d,
                config.num_feature_levels,
                heads,
                config.decoder_n_points,
            )
            .init(device)?,
            encoder_attn_layer_norm: norm(),
            fc1: LinearConfig::new(d, config.decoder_ffn_dim).init(device),
            fc2: LinearConfig::new(config.decoder_ffn_dim, d).init(device),
            final_layer_norm: norm(),
            dropout: DropoutConfig::new(config.dropout).init(),
            activation_dropout: DropoutConfig::new(config.activation_dropout).init(),
            activation: config.activation(),
        })
    }

    /// `queries [B, Q, d]` with their position embedding `query_pos [B, Q, d]` and reference
    /// boxes `[B, Q, levels, 4]` (per level, in padded-map coordinates).
    fn forward(
        &self,
        queries: Tensor<3>,
        query_pos: Tensor<3>,
        reference_boxes: Tensor<4>,
        memory: &Memory<'_>,
    ) -> Result<Tensor<3>, GroundingDinoError> {
        let Memory { vision, tokens, text, text_tokens } = *memory;
        let [batch, _, _] = queries.dims();
        let [_, text_len] = text_tokens.padding.dims();

        let with_pos = queries.clone() + query_pos.clone();
        let attended = self.self_attn.forward(with_pos.clone(), with_pos, queries.clone(), None);
        let queries = self.self_attn_layer_norm.forward(queries + self.dropout.forward(attended));

        let text_blocked = text_tokens.padding.clone().reshape([batch, 1, 1, text_len]);
        let attended = self.encoder_attn_text.forward(
            queries.clone() + query_pos.clone(),
            text.clone(),
            text.clone(),
            Some(text_blocked),
        );
        let queries = self.encoder_attn_text_layer_norm.forward(queries + self.dropout.forward(attended));

        let attended = self.encoder_attn.forward(
            queries.clone(),
            Some(query_pos),
            vision.clone(),
            reference_boxes,
            &tokens.spatial_shapes,
            Some(tokens.padding.clone()),
        )?;
        let queries = self.encoder_attn_layer_norm.forward(queries + self.dropout.forward(attended.output));

        let hidden =
            self.activation_dropout.forward(self.activation.forward(self.fc1.forward(queries.clone())));
        let hidden = self.dropout.forward(self.fc2.forward(hidden));
        Ok(self.final_layer_norm.forward(queries + hidden))
    }
}

/// What the decoder's queries attend to: the enhanced image and text tokens and their layout.
#[derive(Clone, Copy)]
struct Memory<'a> {
    vision: &'a Tensor<3>,
    tokens: &'a VisionTokens,
    text: &'a Tensor<3>,
    text_tokens: &'a TextTokens,
}

/// What the decoder gives per layer.
#[derive(Debug, Clone)]
pub struct DecoderOutput {
    /// `[B, layers, Q, d]`: every layer's queries after the decoder's final LayerNorm.
    pub intermediate_hidden_states: Tensor<4>,
    /// `[B, layers, Q, 4]`: every layer's refined reference boxes (cxcywh, normalised to the
    /// image's valid area).
    pub intermediate_reference_points: Tensor<4>,
}

/// The decoder.
#[derive(Module, Debug)]
pub struct Decoder {
    /// The layers.
    pub layers: Vec<DecoderLayer>,
    /// Final norm of every layer's output.
    pub layer_norm: LayerNorm,
    /// Embeds a reference box's sine embedding (`2 * d_model` wide) as the query position.
    pub reference_points_head: Mlp,
}

impl Decoder {
    /// Build from the config.
    pub fn new(config: &GroundingDinoConfig, device: &Device) -> Result<Self, GroundingDinoError> {
        let d = config.d_model;
        Ok(Self {
            layers: (0..config.decoder_layers)
                .map(|_| DecoderLayer::new(config, device))
                .collect::<Result<_, _>>()?,
            layer_norm: LayerNormConfig::new(d).with_epsilon(config.layer_norm_eps).init(device),
            reference_points_head: Mlp::new(config.query_dim / 2 * d, d, d, 2, device),
        })
    }

    /// Decode `queries [B, Q, d]` from reference boxes `[B, Q, 4]` (cxcywh in `[0, 1]` of the
    /// image's valid area). `bbox_embed[i]` refines the boxes after layer `i` (one shared
    /// head may be given for all layers).
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        mut queries: Tensor<3>,
        mut reference_points: Tensor<3>,
        vision: &Tensor<3>,
        tokens: &VisionTokens,
        text: &Tensor<3>,
        text_tokens: &TextTokens,
        bbox_embed: &[Mlp],
    ) -> Result<DecoderOutput, GroundingDinoError> {
        let [batch, num_queries, d_model] = queries.dims();
        let levels = tokens.spatial_shapes.len();
        let device = queries.device();
        let ratios = tokens.valid_ratios(&device);
        let box_ratios = Tensor::cat(vec![ratios.clone(), ratios], 2).reshape([batch, 1, levels, 4]);

        let memory = Memory { vision, tokens, text, text_tokens };
        let mut hidden_states = Vec::with_capacity(self.layers.len());
        let mut references = Vec::with_capacity(self.layers.len());
        for (i, layer) in self.layers.iter().enumerate() {
            let reference_boxes =
                reference_points.clone().reshape([batch, num_queries, 1, 4]) * box_ratios.clone();
            // The reference embeds the boxes scaled to the first level's padded map, which makes
            // an image's result depend on the padding its batch gives it; unpadded the two agree.
            let query_pos = self
                .reference_points_head
                .forward(coordinate_embedding(reference_points.clone(), d_model / 2));
            queries = layer.forward(queries, query_pos, reference_boxes, &memory)?;

            let head = &bbox_embed[i.min(bbox_embed.len() - 1)];
            let refined = sigmoid(head.forward(queries.clone()) + inverse_sigmoid(reference_points, 1e-5));
            reference_points = refined.detach();
            hidden_states.push(self.layer_norm.forward(queries.clone()).unsqueeze_dim::<4>(1));
            references.push(reference_points.clone().unsqueeze_dim::<4>(1));
        }
        Ok(DecoderOutput {
            intermediate_hidden_states: Tensor::cat(hidden_states, 1),
            intermediate_reference_points: Tensor::cat(references, 1),
        })
    }
}
