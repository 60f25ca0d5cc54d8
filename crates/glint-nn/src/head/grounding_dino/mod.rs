//! Grounding DINO's head: everything between the backbones and the boxes (transformers'
//! `GroundingDinoModel` minus its image and text backbones, plus the box heads of
//! `GroundingDinoForObjectDetection`).
//!
//! 1. The text features are projected to `d_model`; every backbone map is projected by a 1×1
//!    convolution and a GroupNorm, and extra levels come from stride-2 3×3 convolutions.
//! 2. Maps are flattened into image tokens with a sine position embedding plus a learned level
//!    embedding ([`VisionTokens`]). Images of different sizes are projected one by one and
//!    padded per level, so each image's result does not depend on its batch.
//! 3. The feature enhancer ([`Encoder`]) fuses image and text.
//! 4. Language-guided query selection: every image token proposes a box (a fixed-size box at its
//!    own position, refined by `encoder_output_bbox_embed`) and is scored against the text
//!    (dot product with every token, best token); the `num_queries` best give the decoder's
//!    reference boxes. Padding tokens are never selected.
//! 5. The [`Decoder`] refines the boxes layer by layer; the last layer's queries, dotted with
//!    the enhanced text features, are the token logits (`-inf` past each prompt's length).

pub mod config;
pub mod decoder;
pub mod encoder;
pub mod position;

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{
    Embedding, EmbeddingConfig, GroupNorm, GroupNormConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig,
    PaddingConfig2d,
};
use burn::tensor::activation::sigmoid;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

pub use config::{GroundingDinoConfig, GroundingDinoConfigError};
pub use decoder::{Decoder, DecoderOutput, Mlp, inverse_sigmoid};
pub use encoder::{Encoder, TextTokens, VisionTokens};

use crate::attention::DeformableAttentionError;
use crate::backbone::SwinError;
use crate::fusion::FusionError;
use crate::loss::grounding_dino::LayerOutput;

/// Why a Grounding DINO model could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum GroundingDinoError {
    /// The configuration cannot build a model.
    #[error(transparent)]
    Config(#[from] GroundingDinoConfigError),
    /// The backbone refused its input.
    #[error(transparent)]
    Backbone(#[from] SwinError),
    /// Deformable attention refused its input.
    #[error(transparent)]
    Deformable(#[from] DeformableAttentionError),
    /// The fusion refused its input.
    #[error(transparent)]
    Fusion(#[from] FusionError),
    /// Inputs that do not fit together or the model.
    #[error("grounding dino: {0}")]
    Input(String),
}

/// A feature map's projection to `d_model`: a convolution and a GroupNorm of 32 groups.
#[derive(Module, Debug)]
pub struct InputProjection {
    /// 1×1 (backbone levels) or 3×3 stride 2 (extra levels).
    pub conv: Conv2d,
    /// GroupNorm(32, d_model).
    pub norm: GroupNorm,
}

impl InputProjection {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.norm.forward(self.conv.forward(x))
    }
}

/// The feature enhancer's output and what decoding needs with it.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// The image tokens' layout and masks (features before enhancement).
    pub vision: VisionTokens,
    /// The text tokens' masks and position embedding (features before enhancement).
    pub text: TextTokens,
    /// Per image, per level: the projected map `[1, d, h, w]`.
    pub projected_maps: Vec<Vec<Tensor<4>>>,
    /// `[B, L, d]` projected text features.
    pub text_features: Tensor<3>,
    /// `[B, S, d]` enhanced image tokens.
    pub encoder_vision: Tensor<3>,
    /// `[B, L, d]` enhanced text tokens.
    pub encoder_text: Tensor<3>,
}

/// What the head computes, stage by stage (the tests compare each with the reference).
#[derive(Debug, Clone)]
pub struct HeadOutput {
    /// Per image, per level: the projected map `[1, d, h, w]`.
    pub projected_maps: Vec<Vec<Tensor<4>>>,
    /// `[B, L, d]` projected text features.
    pub text_features: Tensor<3>,
    /// `[B, S, d]` enhanced image tokens.
    pub encoder_vision: Tensor<3>,
    /// `[B, L, d]` enhanced text tokens.
    pub encoder_text: Tensor<3>,
    /// `[B, S, L]` every image token's logits against every text token (`-inf` past the text).
    pub enc_outputs_class: Tensor<3>,
    /// `[B, S, 4]` every image token's proposal (cxcywh logits; `inf` for tokens that cannot
    /// propose: batch padding and positions too close to the border).
    pub enc_outputs_coord_logits: Tensor<3>,
    /// `[B, Q]` the selected tokens, best first.
    pub topk_indices: Tensor<2, Int>,
    /// `[B, Q, 4]` the decoder's initial reference boxes.
    pub init_reference_points: Tensor<3>,
    /// Per decoder layer queries and refined boxes.
    pub decoder: DecoderOutput,
    /// `[B, Q, L]` the last layer's token logits (`-inf` past each prompt's length).
    pub logits: Tensor<3>,
    /// `[B, Q, 4]` the last layer's boxes, cxcywh normalised to each image's valid area.
    pub pred_boxes: Tensor<3>,
}

/// Grounding DINO's head. Parameter names follow the checkpoint (under `model.`, and
/// `bbox_embed` at the top level).
#[derive(Module, Debug)]
pub struct GroundingDinoHead {
    /// Text encoder width -> `d_model`.
    pub text_projection: Linear,
    /// One projection per feature level.
    pub input_proj_vision: Vec<InputProjection>,
    /// `[levels, d_model]` added to each level's position embedding.
    pub level_embed: Param<Tensor<2>>,
    /// The decoder's initial query contents (`num_queries × d_model`).
    pub query_position_embeddings: Embedding,
    /// The feature enhancer.
    pub encoder: Encoder,
    /// The decoder.
    pub decoder: Decoder,
    /// Projection of the image tokens before query selection.
    pub enc_output: Linear,
    /// Its LayerNorm.
    pub enc_output_norm: LayerNorm,
    /// The proposal box head of query selection.
    pub encoder_output_bbox_embed: Mlp,
    /// Box heads of the decoder layers (one when shared by all layers).
    pub bbox_embed: Vec<Mlp>,
    #[module(skip)]
    config: GroundingDinoConfig,
}

impl GroundingDinoHead {
    /// Build with random weights; `backbone_channels` are the backbone maps' channels.
    pub fn new(
        config: &GroundingDinoConfig,
        text_hidden: usize,
        backbone_channels: &[usize],
        device: &Device,
    ) -> Result<Self, GroundingDinoError> {
        let d = config.d_model;
        let norm = || GroupNormConfig::new(32, d).init(device);
        let mut input_proj_vision: Vec<InputProjection> = backbone_channels
            .iter()
            .map(|&c| InputProjection { conv: Conv2dConfig::new([c, d], [1, 1]).init(device), norm: norm() })
            .collect();
        let mut in_channels = backbone_channels.last().copied().unwrap_or(d);
        while input_proj_vision.len() < config.num_feature_levels {
            let conv = Conv2dConfig::new([in_channels, d], [3, 3])
                .with_stride([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device);
            input_proj_vision.push(InputProjection { conv, norm: norm() });
            in_channels = d;
        }
        let box_head = || Mlp::new(d, d, 4, 3, device);
        let box_heads = if config.decoder_bbox_embed_share { 1 } else { config.decoder_layers };
        Ok(Self {
            text_projection: LinearConfig::new(text_hidden, d).init(device),
            input_proj_vision,
            level_embed: Param::from_tensor(Tensor::random(
                [config.num_feature_levels, d],
                burn::tensor::Distribution::Normal(0.0, 1.0),
                device,
            )),
            query_position_embeddings: EmbeddingConfig::new(config.num_queries, d).init(device),
            encoder: Encoder::new(config, device)?,
            decoder: Decoder::new(config, device)?,
            enc_output: LinearConfig::new(d, d).init(device),
            enc_output_norm: LayerNormConfig::new(d).with_epsilon(config.layer_norm_eps).init(device),
            encoder_output_bbox_embed: box_head(),
            bbox_embed: (0..box_heads).map(|_| box_head()).collect(),
            config: config.clone(),
        })
    }

    /// The configuration the head was built with.
    pub fn config(&self) -> &GroundingDinoConfig {
        &self.config
    }

    /// Project every image's backbone maps (`maps[b]`: `[1, C_k, h_k, w_k]` per backbone
    /// output) to `d_model`, add the extra levels, and lay them out as padded image tokens.
    pub fn vision_tokens(
        &self,
        maps: &[Vec<Tensor<4>>],
    ) -> Result<(VisionTokens, Vec<Vec<Tensor<4>>>), GroundingDinoError> {
        let levels = self.config.num_feature_levels;
        let d = self.config.d_model;
        let Some(first) = maps.first().and_then(|m| m.first()) else {
            return Err(GroundingDinoError::Input("no image".to_string()));
        };
        let device = first.device();

        let mut projected = Vec::with_capacity(maps.len());
        for image_maps in maps {
            let mut levels_out: Vec<Tensor<4>> = Vec::with_capacity(levels);
            for (level, projection) in self.input_proj_vision.iter().enumerate() {
                let input = match image_maps.get(level) {
                    Some(map) => map.clone(),
                    None if level == image_maps.len() => image_maps
                        .last()
                        .cloned()
                        .ok_or_else(|| GroundingDinoError::Input("no backbone map".to_string()))?,
                    None => levels_out[level - 1].clone(),
                };
                levels_out.push(projection.forward(input));
            }
            projected.push(levels_out);
        }

        // Per level: the largest map of the batch; smaller ones are zero-padded right and below.
        let spatial_shapes: Vec<[usize; 2]> = (0..levels)
            .map(|l| {
                let h = projected.iter().map(|p| p[l].dims()[2]).max().unwrap_or(0);
                let w = projected.iter().map(|p| p[l].dims()[3]).max().unwrap_or(0);
                [h, w]
            })
            .collect();
        let temperature = self.config.positional_embedding_temperature as f32;
        let level_embed = self.level_embed.val();

        let mut features = Vec::with_capacity(maps.len());
        let mut positions = Vec::with_capacity(maps.len());
        let mut padding = Vec::new();
        let mut valid_sizes = Vec::with_capacity(maps.len());
        for image_levels in &projected {
            let mut image_features = Vec::with_capacity(levels);
            let mut image_positions = Vec::with_capacity(levels);
            let mut sizes = Vec::with_capacity(levels);
            for (level, map) in image_levels.iter().enumerate() {
                let [_, _, h, w] = map.dims();
                let [max_h, max_w] = spatial_shapes[level];
                let position =
                    position::map_position_embedding(h, w, d, temperature, &device).unsqueeze_dim::<4>(0);
                let pad = |x: Tensor<4>| {
                    if (h, w) == (max_h, max_w) {
                        x
                    } else {
                        x.pad((0, max_w - w, 0, max_h - h), burn::tensor::ops::PadMode::Constant(0.0))
                    }
                };
                let flatten = |x: Tensor<4>| x.reshape([1, d, max_h * max_w]).swap_dims(1, 2);
                image_features.push(flatten(pad(map.clone())));
                let level_row = level_embed.clone().narrow(0, level, 1).reshape([1, 1, d]);
                image_positions.push(flatten(pad(position)) + level_row);
                for y in 0..max_h {
                    for x in 0..max_w {
                        padding.push(y >= h || x >= w);
                    }
                }
                sizes.push([w, h]);
            }
            features.push(Tensor::cat(image_features, 1));
            positions.push(Tensor::cat(image_positions, 1));
            valid_sizes.push(sizes);
        }
        let tokens: usize = spatial_shapes.iter().map(|[h, w]| h * w).sum();
        let padding = Tensor::<2, Bool>::from_data(TensorData::new(padding, [maps.len(), tokens]), &device);
        let tokens = VisionTokens {
            features: Tensor::cat(features, 0),
            position: Tensor::cat(positions, 0),
            padding,
            spatial_shapes,
            valid_sizes,
        };
        Ok((tokens, projected))
    }

    /// Projections and the feature enhancer; [`decode`](Self::decode) finishes the head.
    ///
    /// - `maps[b]`: image `b`'s backbone maps `[1, C_k, h_k, w_k]`;
    /// - `text_hidden [B, L, text_hidden]`: the text encoder's last hidden state;
    /// - `text_padding [B, L]`: `true` for padding tokens;
    /// - `text_blocked [B, 1, L, L]`: `true` where token `i` may not attend to token `j`;
    /// - `position_ids [B, L]`: the tokens' position ids (as the text encoder got them).
    pub fn encode(
        &self,
        maps: &[Vec<Tensor<4>>],
        text_hidden: Tensor<3>,
        text_padding: Tensor<2, Bool>,
        text_blocked: Tensor<4, Bool>,
        position_ids: Tensor<2, Int>,
    ) -> Result<Encoded, GroundingDinoError> {
        let [batch, _, _] = text_hidden.dims();
        if maps.len() != batch {
            return Err(GroundingDinoError::Input(format!("{} images for {batch} prompts", maps.len())));
        }
        let text_features = self.text_projection.forward(text_hidden);
        let text = TextTokens::new(text_features.clone(), text_padding, text_blocked, position_ids.float());
        let (vision, projected_maps) = self.vision_tokens(maps)?;
        let (encoder_vision, encoder_text) = self.encoder.forward(&vision, &text)?;
        Ok(Encoded { vision, text, projected_maps, text_features, encoder_vision, encoder_text })
    }

    /// Query selection, the decoder and the box and token heads.
    pub fn decode(&self, encoded: Encoded) -> Result<HeadOutput, GroundingDinoError> {
        let Encoded { vision, text, projected_maps, text_features, encoder_vision, encoder_text } = encoded;
        let [batch, text_len] = text.padding.dims();
        let text_padding = text.padding.clone();

        // Query selection.
        let device = encoder_vision.device();
        let [_, tokens, d] = encoder_vision.dims();
        let (proposals, usable) = self.proposals(&vision, &device);
        let unusable = usable.clone().bool_not().unsqueeze_dim::<3>(2);
        let object_query = encoder_vision.clone().mask_fill(unusable.expand([batch, tokens, d]), 0.0);
        let object_query = self.enc_output_norm.forward(self.enc_output.forward(object_query));
        let text_blocked_per_query = text_padding.clone().reshape([batch, 1, text_len]);
        let enc_outputs_class =
            contrastive_logits(object_query.clone(), encoder_text.clone(), text_blocked_per_query.clone());
        let enc_outputs_coord_logits =
            self.encoder_output_bbox_embed.forward(object_query.clone()) + proposals;

        let num_queries = self.config.num_queries;
        if num_queries > tokens {
            return Err(GroundingDinoError::Input(format!(
                "the image gives {tokens} tokens, fewer than the model's {num_queries} queries"
            )));
        }
        let best = enc_outputs_class.clone().max_dim(2).reshape([batch, tokens]);
        let best = best.mask_fill(vision.padding.clone(), f32::NEG_INFINITY);
        let (_, topk_indices) = best.topk_with_indices(num_queries, 1);
        let gather_index = topk_indices.clone().unsqueeze_dim::<3>(2).expand([batch, num_queries, 4]);
        let init_reference_points =
            sigmoid(enc_outputs_coord_logits.clone().gather(1, gather_index).detach());
        let target = if self.config.embedding_init_target {
            self.query_position_embeddings.weight.val().unsqueeze_dim::<3>(0).expand([batch, num_queries, d])
        } else {
            let index = topk_indices.clone().unsqueeze_dim::<3>(2).expand([batch, num_queries, d]);
            object_query.gather(1, index).detach()
        };

        let decoder = self.decoder.forward(
            target,
            init_reference_points.clone(),
            &encoder_vision,
            &vision,
            &encoder_text,
            &text,
            &self.bbox_embed,
        )?;

        let last = self.layer_prediction(
            self.config.decoder_layers - 1,
            &decoder,
            &init_reference_points,
            &encoder_text,
            text_blocked_per_query,
        );
        let LayerOutput { logits, boxes: pred_boxes } = last;

        Ok(HeadOutput {
            projected_maps,
            text_features,
            encoder_vision,
            encoder_text,
            enc_outputs_class,
            enc_outputs_coord_logits,
            topk_indices,
            init_reference_points,
            decoder,
            logits,
            pred_boxes,
        })
    }

    /// Decoder layer `layer`'s predictions: its queries dotted with the enhanced text
    /// (`text_padding [B, 1, L]` masked to `-inf`), and its boxes, which refine the reference
    /// boxes the layer was given (the previous layer's, detached; the initial ones for the first).
    fn layer_prediction(
        &self,
        layer: usize,
        decoder: &DecoderOutput,
        init_reference_points: &Tensor<3>,
        encoder_text: &Tensor<3>,
        text_padding: Tensor<3, Bool>,
    ) -> LayerOutput {
        let [batch, _, num_queries, d] = decoder.intermediate_hidden_states.dims();
        let hidden =
            decoder.intermediate_hidden_states.clone().narrow(1, layer, 1).reshape([batch, num_queries, d]);
        let reference = match layer {
            0 => init_reference_points.clone(),
            _ => decoder.intermediate_reference_points.clone().narrow(1, layer - 1, 1).reshape([
                batch,
                num_queries,
                4,
            ]),
        };
        let head = &self.bbox_embed[layer.min(self.bbox_embed.len() - 1)];
        let boxes = sigmoid(head.forward(hidden.clone()) + inverse_sigmoid(reference, 1e-5));
        LayerOutput { logits: contrastive_logits(hidden, encoder_text.clone(), text_padding), boxes }
    }

    /// What the set loss supervises, for training: the encoder's proposals at the selected
    /// queries, then every decoder layer's predictions, first to last (the last is
    /// `output.logits` / `output.pred_boxes`). `text_padding [B, L]` is `true` on padding.
    ///
    /// The proposals are not detached (the original Grounding DINO and DINO train the query
    /// selection through them; transformers' port scores detached ones instead).
    pub fn training_outputs(&self, output: &HeadOutput, text_padding: Tensor<2, Bool>) -> Vec<LayerOutput> {
        let [batch, text_len] = text_padding.dims();
        let [_, num_queries] = output.topk_indices.dims();
        let index = |width: usize| {
            output.topk_indices.clone().unsqueeze_dim::<3>(2).expand([batch, num_queries, width])
        };
        let encoder = LayerOutput {
            logits: output.enc_outputs_class.clone().gather(1, index(text_len)),
            boxes: sigmoid(output.enc_outputs_coord_logits.clone().gather(1, index(4))),
        };
        let padding = text_padding.reshape([batch, 1, text_len]);
        let layers = self.config.decoder_layers;
        let mut outputs = vec![encoder];
        outputs.extend((0..layers - 1).map(|layer| {
            self.layer_prediction(
                layer,
                &output.decoder,
                &output.init_reference_points,
                &output.encoder_text,
                padding.clone(),
            )
        }));
        outputs.push(LayerOutput { logits: output.logits.clone(), boxes: output.pred_boxes.clone() });
        outputs
    }

    /// Every image token's proposal box as logits `[B, S, 4]` (a box of side `0.05 · 2^level`
    /// centred on the token, in the image's valid area; `inf` where unusable) and whether it is
    /// usable `[B, S]` (inside the image, centre and size strictly within `(0.01, 0.99)`).
    fn proposals(&self, vision: &VisionTokens, device: &Device) -> (Tensor<3>, Tensor<2, Bool>) {
        let tokens: usize = vision.spatial_shapes.iter().map(|[h, w]| h * w).sum();
        let batch = vision.valid_sizes.len();
        let mut logits = Vec::with_capacity(batch * tokens * 4);
        let mut usable = Vec::with_capacity(batch * tokens);
        for sizes in &vision.valid_sizes {
            for (level, (&[h, w], &[valid_w, valid_h])) in vision.spatial_shapes.iter().zip(sizes).enumerate()
            {
                let side = 0.05f32 * 2f32.powi(level as i32);
                for y in 0..h {
                    for x in 0..w {
                        let inside = x < valid_w && y < valid_h;
                        let proposal = [
                            (x as f32 + 0.5) / valid_w as f32,
                            (y as f32 + 0.5) / valid_h as f32,
                            side,
                            side,
                        ];
                        let ok = inside && proposal.iter().all(|&p| p > 0.01 && p < 0.99);
                        usable.push(ok);
                        for p in proposal {
                            logits.push(if ok { (p / (1.0 - p)).ln() } else { f32::INFINITY });
                        }
                    }
                }
            }
        }
        (
            Tensor::from_data(TensorData::new(logits, [batch, tokens, 4]), device),
            Tensor::from_data(TensorData::new(usable, [batch, tokens]), device),
        )
    }
}

/// Region–token alignment: `regions [B, N, d] · text [B, L, d]ᵀ`, `-inf` where the token is
/// padding (`text_padding [B, 1, L]`).
pub fn contrastive_logits(regions: Tensor<3>, text: Tensor<3>, text_padding: Tensor<3, Bool>) -> Tensor<3> {
    let [batch, n, _] = regions.dims();
    let [_, len, _] = text.dims();
    regions.matmul(text.swap_dims(1, 2)).mask_fill(text_padding.expand([batch, n, len]), f32::NEG_INFINITY)
}
