//! The Grounding DINO configuration, read from a Hugging Face `config.json`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::activation::Activation;
use crate::backbone::SwinConfig;
use crate::text::BertConfig;

/// A Grounding DINO config that cannot be read, or that describes a model glint cannot build.
#[derive(Debug, thiserror::Error)]
pub enum GroundingDinoConfigError {
    /// The file could not be read.
    #[error("cannot read Grounding DINO config {}: {source}", path.display())]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The JSON is malformed, or a field has the wrong type.
    #[error("invalid Grounding DINO config {origin}: {message}")]
    Parse {
        /// Where the JSON came from (a path, or `<string>`).
        origin: String,
        /// The parse error.
        message: String,
    },
    /// The values describe a model glint does not build.
    #[error("unsupported Grounding DINO config {origin}: {message}")]
    Unsupported {
        /// Where the config came from.
        origin: String,
        /// What is wrong.
        message: String,
    },
}

/// transformers' `GroundingDinoConfig`: the fields that shape the model. Missing fields take
/// transformers' defaults (Grounding-DINO-T); unknown fields are ignored. Loss weights and
/// matcher costs are not read here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GroundingDinoConfig {
    /// `"grounding-dino"` when present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_type: Option<String>,
    /// The Swin image backbone.
    pub backbone_config: SwinConfig,
    /// The BERT text encoder.
    pub text_config: BertConfig,
    /// Decoder queries (detection slots).
    pub num_queries: usize,
    /// Feature-enhancer layers.
    pub encoder_layers: usize,
    /// Width of the encoder's deformable-layer feed-forward block (the text enhancer and the
    /// fusion use half of it).
    pub encoder_ffn_dim: usize,
    /// Encoder deformable-attention heads (the text enhancer and the fusion use half as many).
    pub encoder_attention_heads: usize,
    /// Decoder layers.
    pub decoder_layers: usize,
    /// Width of the decoder's feed-forward block.
    pub decoder_ffn_dim: usize,
    /// Decoder attention heads.
    pub decoder_attention_heads: usize,
    /// Feed-forward activation.
    pub activation_function: String,
    /// Width of every token in the transformer.
    pub d_model: usize,
    /// Dropout after attention and feed-forward blocks (training only).
    pub dropout: f64,
    /// Dropout inside attention (training only).
    pub attention_dropout: f64,
    /// Dropout after the feed-forward activation (training only).
    pub activation_dropout: f64,
    /// Only `"sine"` is supported.
    pub position_embedding_type: String,
    /// Feature levels: the backbone's outputs, then stride-2 convolutions on the last one.
    pub num_feature_levels: usize,
    /// Sampling points per head and level in the encoder.
    pub encoder_n_points: usize,
    /// Sampling points per head and level in the decoder.
    pub decoder_n_points: usize,
    /// Queries come from the encoder's best tokens (only `true` is supported).
    pub two_stage: bool,
    /// Longest prompt in tokens.
    pub max_text_len: usize,
    /// Dropout in the text enhancer (training only).
    pub text_enhancer_dropout: f64,
    /// Drop path of the fusion layers (training only).
    pub fusion_droppath: f64,
    /// Dropout of the fusion attention (training only).
    pub fusion_dropout: f64,
    /// Decoder queries start from learned embeddings (`true`) or from the selected encoder
    /// tokens (`false`).
    pub embedding_init_target: bool,
    /// Reference boxes have 4 coordinates (only 4 is supported).
    pub query_dim: usize,
    /// One box head shared by all decoder layers.
    pub decoder_bbox_embed_share: bool,
    /// The encoder's proposal box head is the decoder's (only `false` is supported).
    pub two_stage_bbox_embed_share: bool,
    /// Temperature of the sine position embedding of the feature maps.
    pub positional_embedding_temperature: f64,
    /// Epsilon of the transformer's LayerNorms.
    pub layer_norm_eps: f64,
}

impl Default for GroundingDinoConfig {
    /// transformers' `GroundingDinoConfig()` defaults: Grounding-DINO-T.
    fn default() -> Self {
        Self {
            model_type: None,
            backbone_config: SwinConfig::swin_tiny(),
            text_config: BertConfig::default(),
            num_queries: 900,
            encoder_layers: 6,
            encoder_ffn_dim: 2048,
            encoder_attention_heads: 8,
            decoder_layers: 6,
            decoder_ffn_dim: 2048,
            decoder_attention_heads: 8,
            activation_function: "relu".to_string(),
            d_model: 256,
            dropout: 0.1,
            attention_dropout: 0.0,
            activation_dropout: 0.0,
            position_embedding_type: "sine".to_string(),
            num_feature_levels: 4,
            encoder_n_points: 4,
            decoder_n_points: 4,
            two_stage: true,
            max_text_len: 256,
            text_enhancer_dropout: 0.0,
            fusion_droppath: 0.1,
            fusion_dropout: 0.0,
            embedding_init_target: true,
            query_dim: 4,
            decoder_bbox_embed_share: true,
            two_stage_bbox_embed_share: false,
            positional_embedding_temperature: 20.0,
            layer_norm_eps: 1e-5,
        }
    }
}

impl GroundingDinoConfig {
    /// Grounding-DINO-T (`IDEA-Research/grounding-dino-tiny`, `groundingdino_swint_ogc.pth`).
    pub fn grounding_dino_tiny() -> Self {
        Self::default()
    }

    /// Grounding-DINO-B (`IDEA-Research/grounding-dino-base`, `groundingdino_swinb_cogcoor.pth`):
    /// the Swin-B backbone, everything else as the tiny model.
    pub fn grounding_dino_base() -> Self {
        Self { backbone_config: SwinConfig::swin_base(), ..Self::default() }
    }

    /// Parse and validate a config from JSON text.
    pub fn from_json_str(json: &str) -> Result<Self, GroundingDinoConfigError> {
        Self::parse(json, "<string>")
    }

    /// Read and validate a `config.json`.
    /// The config of an IDEA-Research `.pth`: the `config.json` beside it, else
    /// Grounding-DINO-B's when the file name says `swinb`, else Grounding-DINO-T's.
    pub fn for_pth(path: impl AsRef<Path>) -> Result<Self, GroundingDinoConfigError> {
        let path = path.as_ref();
        match path.parent().map(|dir| dir.join("config.json")).filter(|p| p.is_file()) {
            Some(config) => Self::from_json_file(config),
            None if path.file_name().is_some_and(|n| n.to_string_lossy().contains("swinb")) => {
                Ok(Self::grounding_dino_base())
            }
            None => Ok(Self::grounding_dino_tiny()),
        }
    }

    pub fn from_json_file(path: impl AsRef<Path>) -> Result<Self, GroundingDinoConfigError> {
        let path = path.as_ref();
        let json = std::fs::read_to_string(path)
            .map_err(|source| GroundingDinoConfigError::Read { path: path.to_path_buf(), source })?;
        Self::parse(&json, &path.display().to_string())
    }

    fn parse(json: &str, origin: &str) -> Result<Self, GroundingDinoConfigError> {
        let config: Self = serde_json::from_str(json).map_err(|e| GroundingDinoConfigError::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        config.validate(origin)?;
        Ok(config)
    }

    /// Check that the config describes a model glint builds; `origin` names it in the error.
    pub fn validate(&self, origin: &str) -> Result<(), GroundingDinoConfigError> {
        let unsupported = |message: String| {
            Err(GroundingDinoConfigError::Unsupported { origin: origin.to_string(), message })
        };
        if let Some(model_type) = &self.model_type
            && model_type != "grounding-dino"
        {
            return unsupported(format!("model_type is `{model_type}`, expected `grounding-dino`"));
        }
        if !self.two_stage || self.query_dim != 4 || self.two_stage_bbox_embed_share {
            return unsupported(
                "only two-stage models with 4-d reference boxes and their own proposal box head \
                 (two_stage = true, query_dim = 4, two_stage_bbox_embed_share = false) are supported"
                    .to_string(),
            );
        }
        if self.position_embedding_type != "sine" {
            return unsupported(format!(
                "position_embedding_type `{}` (only `sine` is supported)",
                self.position_embedding_type
            ));
        }
        if Activation::from_hf_name(&self.activation_function).is_none() {
            return unsupported(format!("activation_function `{}`", self.activation_function));
        }
        let d = self.d_model;
        let sizes = [
            ("d_model", d),
            ("num_queries", self.num_queries),
            ("encoder_layers", self.encoder_layers),
            ("decoder_layers", self.decoder_layers),
            ("encoder_ffn_dim", self.encoder_ffn_dim),
            ("decoder_ffn_dim", self.decoder_ffn_dim),
            ("num_feature_levels", self.num_feature_levels),
            ("encoder_n_points", self.encoder_n_points),
            ("decoder_n_points", self.decoder_n_points),
            ("max_text_len", self.max_text_len),
        ];
        if let Some((name, _)) = sizes.iter().find(|(_, v)| *v == 0) {
            return unsupported(format!("{name} is 0"));
        }
        if !d.is_multiple_of(32) {
            return unsupported(format!(
                "d_model {d} is not a multiple of 32 (the input GroupNorm has 32 groups)"
            ));
        }
        let heads = self.encoder_attention_heads;
        if heads < 2 || !heads.is_multiple_of(2) || !d.is_multiple_of(heads) || !d.is_multiple_of(heads / 2) {
            return unsupported(format!(
                "encoder_attention_heads {heads} must be even and divide d_model {d} (the text \
                 enhancer and the fusion use half as many heads)"
            ));
        }
        if !self.encoder_ffn_dim.is_multiple_of(2) || !(self.encoder_ffn_dim / 2).is_multiple_of(heads / 2) {
            return unsupported(format!(
                "encoder_ffn_dim {} must be even, and half of it divisible by {} fusion heads",
                self.encoder_ffn_dim,
                heads / 2
            ));
        }
        if self.decoder_attention_heads == 0 || !d.is_multiple_of(self.decoder_attention_heads) {
            return unsupported(format!(
                "decoder_attention_heads {} must divide d_model {d}",
                self.decoder_attention_heads
            ));
        }
        let outputs = self.backbone_config.out_stages().map_err(|e| {
            GroundingDinoConfigError::Unsupported { origin: origin.to_string(), message: e.to_string() }
        })?;
        if outputs.len() > self.num_feature_levels {
            return unsupported(format!(
                "the backbone gives {} feature maps but num_feature_levels is {}",
                outputs.len(),
                self.num_feature_levels
            ));
        }
        self.backbone_config.validate().map_err(|e| GroundingDinoConfigError::Unsupported {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        self.text_config.validate().map_err(|e| GroundingDinoConfigError::Unsupported {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        Ok(())
    }

    /// The activation of the feed-forward blocks (validated).
    pub fn activation(&self) -> Activation {
        Activation::from_hf_name(&self.activation_function).unwrap_or(Activation::Relu)
    }
}
