//! BERT encoder (the text backbone of GLIP and Grounding DINO), as transformers' `BertModel`
//! without its pooler: embeddings (word + position + token type, LayerNorm, dropout) and a stack of
//! post-norm transformer layers. Returns the last hidden state.
//!
//! Module paths follow the Hugging Face keys (`embeddings.word_embeddings`,
//! `encoder.layer.N.attention.output.dense`, ...) except for two names Rust cannot or should not
//! spell: `attention.self` is [`BertAttention::self_attention`] and `LayerNorm` is `layer_norm`.
//! [`HF_KEY_REMAP`] maps them; [`hf_load_options`] adds the prefix and the keys a BERT checkpoint
//! carries that this module deliberately does not load (the pooler, and the non-persistent
//! `position_ids` / `token_type_ids` buffers older checkpoints saved).

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::softmax;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use glint_core::prompt::TextMask;
use serde::{Deserialize, Serialize};

use crate::activation::Activation;
use crate::weights::{LoadOptions, WeightsError, load_safetensors};

/// Renames from Hugging Face BERT keys to this module's parameter paths.
pub const HF_KEY_REMAP: &[(&str, &str)] =
    &[(r"\.attention\.self\.", ".attention.self_attention."), (r"(^|\.)LayerNorm\.", "${1}layer_norm.")];

/// Keys of a Hugging Face BERT checkpoint (prefix stripped) that are deliberately not loaded:
/// the pooler (`BertModel`'s `add_pooling_layer`; Grounding DINO and GLIP use only the last
/// hidden state) and the `position_ids` / `token_type_ids` buffers that older transformers
/// versions saved (they are `0..n` and zeros, which [`Bert::forward`] uses by default).
pub const HF_IGNORED_KEYS: &[&str] =
    &[r"^pooler\.", r"^embeddings\.position_ids$", r"^embeddings\.token_type_ids$"];

/// Load options for a Hugging Face BERT checkpoint whose encoder keys sit under `prefix`:
/// `""` for a bare `BertModel` (`embeddings.…`), `"bert."` for bert-base-uncased's own
/// checkpoint, `"model.text_backbone."` inside a Grounding DINO checkpoint. Keys outside the
/// prefix are left alone, [`HF_IGNORED_KEYS`] are skipped, [`HF_KEY_REMAP`] renames the rest.
pub fn hf_load_options(prefix: &str) -> LoadOptions {
    let mut options = LoadOptions::new().with_prefix(prefix).with_remaps(HF_KEY_REMAP);
    for pattern in HF_IGNORED_KEYS {
        options = options.with_ignore(*pattern);
    }
    options
}

/// A Hugging Face BERT `config.json` (or a Grounding DINO `text_config`). Fields absent from the
/// JSON take bert-base-uncased's values (transformers' defaults); unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BertConfig {
    /// Word-piece vocabulary size.
    pub vocab_size: usize,
    /// Width of every token's hidden state.
    pub hidden_size: usize,
    /// Number of encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer (must divide `hidden_size`).
    pub num_attention_heads: usize,
    /// Width of the feed-forward block.
    pub intermediate_size: usize,
    /// Feed-forward activation: `gelu` (exact, erf), `gelu_new` / `gelu_pytorch_tanh` /
    /// `gelu_fast` (tanh approximation), `relu`, `silu` / `swish` ([`Activation`]).
    pub hidden_act: String,
    /// Dropout after embeddings and sub-layers (training only).
    pub hidden_dropout_prob: f64,
    /// Dropout on attention probabilities (training only).
    pub attention_probs_dropout_prob: f64,
    /// Number of learned positions (the longest sequence).
    pub max_position_embeddings: usize,
    /// Number of token types (segments).
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// Padding token id (informational; padding is expressed by the attention mask).
    pub pad_token_id: usize,
    /// Only `absolute` is supported.
    pub position_embedding_type: String,
}

impl Default for BertConfig {
    fn default() -> Self {
        Self {
            vocab_size: 30522,
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            hidden_act: "gelu".to_string(),
            hidden_dropout_prob: 0.1,
            attention_probs_dropout_prob: 0.1,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            pad_token_id: 0,
            position_embedding_type: "absolute".to_string(),
        }
    }
}

/// A BERT config that cannot be read or built.
#[derive(Debug, thiserror::Error)]
pub enum BertConfigError {
    /// The file could not be read.
    #[error("cannot read BERT config {}: {source}", path.display())]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The JSON is malformed or a field has the wrong type.
    #[error("invalid BERT config {origin}: {message}")]
    Parse {
        /// Where the JSON came from (a path, or `<string>`).
        origin: String,
        /// The parse error.
        message: String,
    },
    /// The values cannot build a model.
    #[error("invalid BERT config {origin}: {message}")]
    Invalid {
        /// Where the config came from (a path, or `<config>`).
        origin: String,
        /// What is wrong.
        message: String,
    },
}

impl BertConfig {
    /// Parse and validate a config from JSON text.
    pub fn from_json_str(json: &str) -> Result<Self, BertConfigError> {
        Self::parse(json, "<string>")
    }

    /// Read and validate a `config.json`; errors name the file.
    pub fn from_json_file(path: impl AsRef<Path>) -> Result<Self, BertConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|source| BertConfigError::Read { path: path.to_path_buf(), source })?;
        Self::parse(&text, &path.display().to_string())
    }

    fn parse(json: &str, origin: &str) -> Result<Self, BertConfigError> {
        let config: Self = serde_json::from_str(json)
            .map_err(|e| BertConfigError::Parse { origin: origin.to_string(), message: e.to_string() })?;
        config.check().map_err(|message| BertConfigError::Invalid { origin: origin.to_string(), message })?;
        Ok(config)
    }

    /// Check that the values can build a model (what [`init`](Self::init) needs).
    pub fn validate(&self) -> Result<(), BertConfigError> {
        self.check().map_err(|message| BertConfigError::Invalid { origin: "<config>".to_string(), message })
    }

    fn check(&self) -> Result<(), String> {
        let sizes = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ];
        for (name, value) in sizes {
            if value == 0 {
                return Err(format!("{name} must be positive"));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        for (name, p) in [
            ("hidden_dropout_prob", self.hidden_dropout_prob),
            ("attention_probs_dropout_prob", self.attention_probs_dropout_prob),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(format!("{name} {p} is not in [0, 1)"));
            }
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            return Err(format!("layer_norm_eps {} must be positive", self.layer_norm_eps));
        }
        if Activation::from_hf_name(&self.hidden_act).is_none() {
            return Err(format!(
                "hidden_act {:?} is not supported (gelu, gelu_new, gelu_pytorch_tanh, relu, silu, swish)",
                self.hidden_act
            ));
        }
        if self.position_embedding_type != "absolute" {
            return Err(format!(
                "position_embedding_type {:?} is not supported (only \"absolute\")",
                self.position_embedding_type
            ));
        }
        Ok(())
    }

    /// Build the encoder with random weights (load a checkpoint with [`Bert::load_safetensors`]).
    ///
    /// # Panics
    /// If the config is invalid ([`validate`](Self::validate) says why); configs read with
    /// [`from_json_file`](Self::from_json_file) / [`from_json_str`](Self::from_json_str) are
    /// already validated.
    pub fn init(&self, device: &Device) -> Bert {
        if let Err(message) = self.check() {
            panic!("invalid BertConfig: {message}");
        }
        let h = self.hidden_size;
        let norm = || LayerNormConfig::new(h).with_epsilon(self.layer_norm_eps).init(device);
        let hidden_dropout = || DropoutConfig::new(self.hidden_dropout_prob).init();
        let embeddings = BertEmbeddings {
            word_embeddings: EmbeddingConfig::new(self.vocab_size, h).init(device),
            position_embeddings: EmbeddingConfig::new(self.max_position_embeddings, h).init(device),
            token_type_embeddings: EmbeddingConfig::new(self.type_vocab_size, h).init(device),
            layer_norm: norm(),
            dropout: hidden_dropout(),
        };
        let layer = (0..self.num_hidden_layers).map(|_| self.init_layer(device)).collect();
        Bert { embeddings, encoder: BertEncoder { layer } }
    }

    /// One encoder layer with random weights (GLIP's language path reuses it in its head).
    pub fn init_layer(&self, device: &Device) -> BertLayer {
        let activation = Activation::from_hf_name(&self.hidden_act).unwrap_or(Activation::Gelu);
        let h = self.hidden_size;
        let norm = || LayerNormConfig::new(h).with_epsilon(self.layer_norm_eps).init(device);
        let hidden_dropout = || DropoutConfig::new(self.hidden_dropout_prob).init();
        BertLayer {
            attention: BertAttention {
                self_attention: BertSelfAttention {
                    query: LinearConfig::new(h, h).init(device),
                    key: LinearConfig::new(h, h).init(device),
                    value: LinearConfig::new(h, h).init(device),
                    dropout: DropoutConfig::new(self.attention_probs_dropout_prob).init(),
                    num_heads: self.num_attention_heads,
                },
                output: BertOutput {
                    dense: LinearConfig::new(h, h).init(device),
                    layer_norm: norm(),
                    dropout: hidden_dropout(),
                },
            },
            intermediate: BertIntermediate {
                dense: LinearConfig::new(h, self.intermediate_size).init(device),
                activation,
            },
            output: BertOutput {
                dense: LinearConfig::new(self.intermediate_size, h).init(device),
                layer_norm: norm(),
                dropout: hidden_dropout(),
            },
        }
    }
}

/// Which key tokens each query token may attend to. `true` = may attend (transformers' 1).
#[derive(Debug, Clone)]
pub enum BertAttentionMask {
    /// `[B, L]`: true for real tokens, false for padding (every token sees every real token).
    Padding(Tensor<2, Bool>),
    /// `[B, L, L]`: `[b, i, j]` true when token `i` may attend to token `j` (Grounding DINO's
    /// per-phrase sub-sentence mask). Every row should allow at least one token.
    Full(Tensor<3, Bool>),
}

impl BertAttentionMask {
    /// A `[B, L]` padding mask from per-sequence lengths (`lengths[b]` real tokens, then padding).
    pub fn from_lengths(lengths: &[usize], len: usize, device: &Device) -> Self {
        let data: Vec<bool> = lengths.iter().flat_map(|&n| (0..len).map(move |j| j < n)).collect();
        Self::Padding(Tensor::from_data(TensorData::new(data, [lengths.len(), len]), device))
    }

    /// Grounding DINO's sub-sentence masks and position ids for a batch, as `[B, L, L]` mask and
    /// `[B, L]` position ids, `L` the longest mask. Positions past a shorter mask's end (padding)
    /// attend only to themselves and have position id 0, as transformers gives padding tokens.
    pub fn from_text_masks(masks: &[TextMask], device: &Device) -> (Self, Tensor<2, Int>) {
        let (allowed, positions) = sub_sentence_tensors(masks, device);
        (Self::Full(allowed), positions)
    }

    /// The `[B, 1, L, L]` mask of positions that must NOT be attended.
    pub fn blocked(self, batch: usize, len: usize) -> Tensor<4, Bool> {
        match self {
            Self::Padding(mask) => mask.bool_not().reshape([batch, 1, 1, len]).expand([batch, 1, len, len]),
            Self::Full(mask) => mask.bool_not().reshape([batch, 1, len, len]),
        }
    }
}

/// Token id sequences as one `[B, L]` batch padded with id 0 (`L` the longest, at least 1), and
/// its `[B, L]` padding mask (`true` = padding).
pub fn padded_ids(ids: &[&[u32]], device: &Device) -> (Tensor<2, Int>, Tensor<2, Bool>) {
    let len = ids.iter().map(|ids| ids.len()).max().unwrap_or(0).max(1);
    let padded: Vec<i64> =
        ids.iter().flat_map(|ids| (0..len).map(move |j| ids.get(j).map_or(0, |&id| i64::from(id)))).collect();
    let padding: Vec<bool> = ids.iter().flat_map(|ids| (0..len).map(move |j| j >= ids.len())).collect();
    (
        Tensor::from_data(TensorData::new(padded, [ids.len(), len]), device),
        Tensor::from_data(TensorData::new(padding, [ids.len(), len]), device),
    )
}

/// The tensors of [`BertAttentionMask::from_text_masks`]: `[B, L, L]` (`true` = may attend) and
/// `[B, L]` position ids.
pub fn sub_sentence_tensors(masks: &[TextMask], device: &Device) -> (Tensor<3, Bool>, Tensor<2, Int>) {
    let len = masks.iter().map(TextMask::len).max().unwrap_or(0);
    let mut allowed = Vec::with_capacity(masks.len() * len * len);
    let mut positions = Vec::with_capacity(masks.len() * len);
    for mask in masks {
        for i in 0..len {
            for j in 0..len {
                allowed.push(if i < mask.len() { mask.allowed(i, j) } else { i == j });
            }
            positions.push(mask.position_ids().get(i).map_or(0, |&p| i64::from(p)));
        }
    }
    let batch = masks.len();
    (
        Tensor::from_data(TensorData::new(allowed, [batch, len, len]), device),
        Tensor::from_data(TensorData::new(positions, [batch, len]), device),
    )
}

/// Inputs of [`Bert::forward`]; only the ids are required.
#[derive(Debug, Clone)]
pub struct BertInput {
    /// `[B, L]` word-piece ids (`< vocab_size`).
    pub input_ids: Tensor<2, Int>,
    /// Padding or full mask; `None` = every token attends to every token.
    pub attention_mask: Option<BertAttentionMask>,
    /// `[B, L]` segment ids (`< type_vocab_size`); `None` = zeros.
    pub token_type_ids: Option<Tensor<2, Int>>,
    /// `[B, L]` position ids (`< max_position_embeddings`); `None` = `0..L` for every sequence.
    pub position_ids: Option<Tensor<2, Int>>,
}

impl BertInput {
    /// Ids only.
    pub fn new(input_ids: Tensor<2, Int>) -> Self {
        Self { input_ids, attention_mask: None, token_type_ids: None, position_ids: None }
    }

    /// Set the attention mask.
    pub fn with_attention_mask(mut self, mask: BertAttentionMask) -> Self {
        self.attention_mask = Some(mask);
        self
    }

    /// Set the token type ids.
    pub fn with_token_type_ids(mut self, ids: Tensor<2, Int>) -> Self {
        self.token_type_ids = Some(ids);
        self
    }

    /// Set the position ids.
    pub fn with_position_ids(mut self, ids: Tensor<2, Int>) -> Self {
        self.position_ids = Some(ids);
        self
    }
}

/// The BERT encoder (transformers' `BertModel` without pooler).
#[derive(Module, Debug)]
pub struct Bert {
    /// Token, position and segment embeddings.
    pub embeddings: BertEmbeddings,
    /// The transformer layers.
    pub encoder: BertEncoder,
}

impl Bert {
    /// Last hidden state `[B, L, hidden_size]`.
    ///
    /// # Panics
    /// On inconsistent shapes (ids, mask, token types and positions must all be `[B, L]` /
    /// `[B, L, L]`) or ids beyond the embedding tables; the caller (tokenizer, prompt code)
    /// guarantees these.
    pub fn forward(&self, input: BertInput) -> Tensor<3> {
        let [batch, len] = input.input_ids.dims();
        let x = self.embeddings.forward(input.input_ids, input.token_type_ids, input.position_ids);
        let blocked = input.attention_mask.map(|m| m.blocked(batch, len));
        self.encoder.forward(x, blocked)
    }

    /// Load a Hugging Face BERT checkpoint whose encoder keys sit under `prefix` (see
    /// [`hf_load_options`]); every missing, unexpected or mis-shaped tensor is an error.
    pub fn load_safetensors(self, path: impl AsRef<Path>, prefix: &str) -> Result<Self, WeightsError> {
        load_safetensors(self, path, &hf_load_options(prefix))
    }
}

/// Word, position and token-type embeddings, summed, normalised.
#[derive(Module, Debug)]
pub struct BertEmbeddings {
    /// `embeddings.word_embeddings`.
    pub word_embeddings: Embedding,
    /// `embeddings.position_embeddings`.
    pub position_embeddings: Embedding,
    /// `embeddings.token_type_embeddings`.
    pub token_type_embeddings: Embedding,
    /// `embeddings.LayerNorm`.
    pub layer_norm: LayerNorm,
    /// Dropout (training only).
    pub dropout: Dropout,
}

impl BertEmbeddings {
    /// `[B, L]` ids (+ optional `[B, L]` token types and positions) -> `[B, L, H]`.
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        token_type_ids: Option<Tensor<2, Int>>,
        position_ids: Option<Tensor<2, Int>>,
    ) -> Tensor<3> {
        let device = input_ids.device();
        let [_, len] = input_ids.dims();
        let words = self.word_embeddings.forward(input_ids);
        let types = match token_type_ids {
            Some(ids) => self.token_type_embeddings.forward(ids),
            // Every token has type 0: one row, broadcast.
            None => self.token_type_embeddings.forward(Tensor::<2, Int>::zeros([1, 1], &device)),
        };
        let positions = match position_ids {
            Some(ids) => self.position_embeddings.forward(ids),
            None => self
                .position_embeddings
                .forward(Tensor::<1, Int>::arange(0..len as i64, &device).reshape([1, len])),
        };
        let x = words + types + positions;
        self.dropout.forward(self.layer_norm.forward(x))
    }
}

/// The stack of transformer layers (`encoder.layer.N`).
#[derive(Module, Debug)]
pub struct BertEncoder {
    /// `encoder.layer`.
    pub layer: Vec<BertLayer>,
}

impl BertEncoder {
    /// `blocked`: `[B, 1, L|1, L]`, true where attention is not allowed.
    pub fn forward(&self, mut x: Tensor<3>, blocked: Option<Tensor<4, Bool>>) -> Tensor<3> {
        for layer in &self.layer {
            x = layer.forward(x, blocked.clone());
        }
        x
    }
}

/// One post-norm transformer layer.
#[derive(Module, Debug)]
pub struct BertLayer {
    /// `attention`: self-attention, projection, residual, LayerNorm.
    pub attention: BertAttention,
    /// `intermediate`: expansion + activation.
    pub intermediate: BertIntermediate,
    /// `output`: projection back, residual, LayerNorm.
    pub output: BertOutput,
}

impl BertLayer {
    /// `[B, L, H]` -> `[B, L, H]`.
    pub fn forward(&self, x: Tensor<3>, blocked: Option<Tensor<4, Bool>>) -> Tensor<3> {
        let attended = self.attention.forward(x, blocked);
        let expanded = self.intermediate.forward(attended.clone());
        self.output.forward(expanded, attended)
    }
}

/// Self-attention with its output block.
#[derive(Module, Debug)]
pub struct BertAttention {
    /// `attention.self` (renamed: `self` is a Rust keyword).
    pub self_attention: BertSelfAttention,
    /// `attention.output`.
    pub output: BertOutput,
}

impl BertAttention {
    /// `[B, L, H]` -> `[B, L, H]`.
    pub fn forward(&self, x: Tensor<3>, blocked: Option<Tensor<4, Bool>>) -> Tensor<3> {
        let context = self.self_attention.forward(x.clone(), blocked);
        self.output.forward(context, x)
    }
}

/// Multi-head scaled dot-product self-attention (`attention.self`).
#[derive(Module, Debug)]
pub struct BertSelfAttention {
    /// `query`.
    pub query: Linear,
    /// `key`.
    pub key: Linear,
    /// `value`.
    pub value: Linear,
    /// Dropout on attention probabilities (training only).
    pub dropout: Dropout,
    /// Number of heads.
    pub num_heads: usize,
}

impl BertSelfAttention {
    /// `[B, L, H]` -> per-token context `[B, L, H]` (heads concatenated).
    pub fn forward(&self, x: Tensor<3>, blocked: Option<Tensor<4, Bool>>) -> Tensor<3> {
        let [batch, len, hidden] = x.dims();
        let heads = self.num_heads;
        let head_dim = hidden / heads;
        let split = |t: Tensor<3>| t.reshape([batch, len, heads, head_dim]).swap_dims(1, 2);
        let q = split(self.query.forward(x.clone()));
        let k = split(self.key.forward(x.clone()));
        let v = split(self.value.forward(x));
        let scale = 1.0 / (head_dim as f64).sqrt();
        let mut scores = q.matmul(k.swap_dims(2, 3)) * scale;
        if let Some(blocked) = blocked {
            // Filling (rather than adding a large negative) cannot overflow; a blocked score then
            // weighs exp(MIN - max) = 0 in the softmax, as -inf does in transformers' SDPA path.
            scores = scores.mask_fill(blocked.expand([batch, heads, len, len]), f32::MIN);
        }
        let probs = self.dropout.forward(softmax(scores, 3));
        probs.matmul(v).swap_dims(1, 2).reshape([batch, len, hidden])
    }
}

/// `intermediate`: dense expansion + activation.
#[derive(Module, Debug)]
pub struct BertIntermediate {
    /// `intermediate.dense`.
    pub dense: Linear,
    /// From the config's `hidden_act`.
    #[module(skip)]
    pub activation: Activation,
}

impl BertIntermediate {
    /// `[B, L, H]` -> `[B, L, intermediate_size]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.activation.forward(self.dense.forward(x))
    }
}

/// Dense projection, dropout, residual add and LayerNorm (`attention.output` and `output`).
#[derive(Module, Debug)]
pub struct BertOutput {
    /// `dense`.
    pub dense: Linear,
    /// `LayerNorm`.
    pub layer_norm: LayerNorm,
    /// Dropout (training only).
    pub dropout: Dropout,
}

impl BertOutput {
    /// `LayerNorm(dropout(dense(x)) + residual)`.
    pub fn forward(&self, x: Tensor<3>, residual: Tensor<3>) -> Tensor<3> {
        let x = self.dropout.forward(self.dense.forward(x));
        self.layer_norm.forward(x + residual)
    }
}
