//! Bi-directional image–text cross-attention: in one block, image tokens attend to text tokens
//! and text tokens attend to image tokens, through one shared matrix of attention logits.
//!
//! [`BiMultiHeadAttention`] is transformers' `GroundingDinoBiMultiHeadAttention` (GLIP's
//! `BiMultiHeadAttention`): queries from the image, keys from the text, the logits `Q·Kᵀ` used
//! as they are for image→text attention and transposed for text→image attention, each direction
//! with its own values and output projection. The reference's numerical guards are kept exactly,
//! since they change results when logits are large: optionally the global maximum (over the
//! whole batch and all heads) is subtracted, the logits are clamped to ±50000, the transposed
//! logits have their per-row maximum subtracted and are clamped again, and only then are the
//! padding masks applied (`-inf`) and the softmaxes taken.
//!
//! [`FusionLayer`] is `GroundingDinoFusionLayer` (GLIP's `BiAttentionBlock`): LayerNorm on both
//! sides, the attention, and a layer-scale residual `x = LN(x) + drop_path(gamma * delta)` with
//! learnt per-channel gammas `vision_param` / `text_param`.
//!
//! Nothing here is specific to Grounding DINO: vision and text widths are independent, and the
//! guards are configurable. Grounding DINO uses `vision_dim = text_dim = d_model`,
//! `embed_dim = encoder_ffn_dim / 2`, `num_heads = encoder_attention_heads / 2`,
//! `dropout = fusion_dropout`, `drop_path = fusion_droppath`, all guards on.

use burn::config::Config;
use burn::module::{Flag, Initializer, Module, Param};
use burn::nn::{Dropout, DropoutConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::softmax;
use burn::tensor::{Bool, Device, Distribution, Tensor};

/// The bound the reference clamps attention logits to (chosen there so that half precision does
/// not overflow).
pub const LOGIT_CLAMP: f32 = 50_000.0;

/// A fusion configuration or call that cannot work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FusionError {
    /// A width is zero, `num_heads` does not divide `embed_dim`, or a rate is outside `[0, 1)`.
    #[error("invalid bi-attention config: {0}")]
    Config(String),
    /// An input's shape does not agree with the configuration or with the other inputs.
    #[error("bi-attention: {0}")]
    Shape(String),
}

/// Configuration of [`FusionLayer`] (and of its attention alone, [`BiMultiHeadAttention`]).
#[derive(Config, Debug)]
pub struct BiAttentionConfig {
    /// Width of the image tokens.
    pub vision_dim: usize,
    /// Width of the text tokens.
    pub text_dim: usize,
    /// Width of the shared attention space (split into heads).
    pub embed_dim: usize,
    /// Attention heads (must divide `embed_dim`).
    pub num_heads: usize,
    /// Dropout on both attention probability matrices (training only).
    #[config(default = 0.0)]
    pub dropout: f64,
    /// Stochastic-depth rate on the two residual branches (training only).
    #[config(default = 0.0)]
    pub drop_path: f64,
    /// Epsilon of the two LayerNorms.
    #[config(default = 1e-5)]
    pub layer_norm_eps: f64,
    /// Initial value of every layer-scale gamma (`vision_param`, `text_param`).
    #[config(default = 1e-4)]
    pub init_values: f64,
    /// Subtract the global maximum of the logits (over batch and heads) before clamping.
    #[config(default = true)]
    pub stable_softmax_2d: bool,
    /// Clamp the logits from below at `-50000`.
    #[config(default = true)]
    pub clamp_min_for_underflow: bool,
    /// Clamp the logits from above at `50000`.
    #[config(default = true)]
    pub clamp_max_for_overflow: bool,
}

impl BiAttentionConfig {
    /// Check the sizes and rates.
    pub fn validate(&self) -> Result<(), FusionError> {
        if self.vision_dim == 0 || self.text_dim == 0 || self.embed_dim == 0 || self.num_heads == 0 {
            return Err(FusionError::Config(format!(
                "vision_dim {}, text_dim {}, embed_dim {} and num_heads {} must be positive",
                self.vision_dim, self.text_dim, self.embed_dim, self.num_heads
            )));
        }
        if !self.embed_dim.is_multiple_of(self.num_heads) {
            return Err(FusionError::Config(format!(
                "embed_dim {} is not a multiple of num_heads {}",
                self.embed_dim, self.num_heads
            )));
        }
        for (name, rate) in [("dropout", self.dropout), ("drop_path", self.drop_path)] {
            if !(0.0..1.0).contains(&rate) {
                return Err(FusionError::Config(format!("{name} {rate} is outside [0, 1)")));
            }
        }
        Ok(())
    }

    /// Build the attention alone, initialised as the reference does (Xavier-uniform weights,
    /// zero biases).
    pub fn init_attention(&self, device: &Device) -> Result<BiMultiHeadAttention, FusionError> {
        self.validate()?;
        let linear = |d_in: usize, d_out: usize| {
            let mut linear = LinearConfig::new(d_in, d_out)
                .with_initializer(Initializer::XavierUniform { gain: 1.0 })
                .init(device);
            linear.bias = Some(Initializer::Zeros.init([d_out], device));
            linear
        };
        Ok(BiMultiHeadAttention {
            vision_proj: linear(self.vision_dim, self.embed_dim),
            text_proj: linear(self.text_dim, self.embed_dim),
            values_vision_proj: linear(self.vision_dim, self.embed_dim),
            values_text_proj: linear(self.text_dim, self.embed_dim),
            out_vision_proj: linear(self.embed_dim, self.vision_dim),
            out_text_proj: linear(self.embed_dim, self.text_dim),
            dropout: DropoutConfig::new(self.dropout).init(),
            embed_dim: self.embed_dim,
            num_heads: self.num_heads,
            stable_softmax_2d: self.stable_softmax_2d,
            clamp_min_for_underflow: self.clamp_min_for_underflow,
            clamp_max_for_overflow: self.clamp_max_for_overflow,
        })
    }

    /// Build the whole fusion layer (norms, attention, layer scale).
    pub fn init(&self, device: &Device) -> Result<FusionLayer, FusionError> {
        let attn = self.init_attention(device)?;
        let norm = |d: usize| LayerNormConfig::new(d).with_epsilon(self.layer_norm_eps).init(device);
        let gamma = |d: usize| Initializer::Constant { value: self.init_values }.init([d], device);
        Ok(FusionLayer {
            layer_norm_vision: norm(self.vision_dim),
            layer_norm_text: norm(self.text_dim),
            attn,
            vision_param: gamma(self.vision_dim),
            text_param: gamma(self.text_dim),
            drop_path: DropPath::new(self.drop_path),
        })
    }
}

/// What the bi-directional attention returns.
#[derive(Debug, Clone)]
pub struct BiAttentionOutput {
    /// `[batch, vision_len, vision_dim]`: the attention's image output ([`BiMultiHeadAttention`])
    /// or the updated image tokens ([`FusionLayer`]).
    pub vision: Tensor<3>,
    /// `[batch, text_len, text_dim]`: likewise for the text tokens.
    pub text: Tensor<3>,
    /// Image→text attention probabilities `[batch, num_heads, vision_len, text_len]`.
    pub vision_attention: Tensor<4>,
    /// Text→image attention probabilities `[batch, num_heads, text_len, vision_len]`.
    pub text_attention: Tensor<4>,
}

/// Bi-directional multi-head cross-attention. Build with [`BiAttentionConfig::init_attention`].
#[derive(Module, Debug)]
pub struct BiMultiHeadAttention {
    /// Image queries, `vision_dim -> embed_dim`.
    pub vision_proj: Linear,
    /// Text keys, `text_dim -> embed_dim`.
    pub text_proj: Linear,
    /// Image values (read by the text), `vision_dim -> embed_dim`.
    pub values_vision_proj: Linear,
    /// Text values (read by the image), `text_dim -> embed_dim`.
    pub values_text_proj: Linear,
    /// Image output, `embed_dim -> vision_dim`.
    pub out_vision_proj: Linear,
    /// Text output, `embed_dim -> text_dim`.
    pub out_text_proj: Linear,
    /// Dropout on the attention probabilities (training only).
    pub dropout: Dropout,
    /// Width of the attention space.
    pub embed_dim: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// See [`BiAttentionConfig::stable_softmax_2d`].
    pub stable_softmax_2d: bool,
    /// See [`BiAttentionConfig::clamp_min_for_underflow`].
    pub clamp_min_for_underflow: bool,
    /// See [`BiAttentionConfig::clamp_max_for_overflow`].
    pub clamp_max_for_overflow: bool,
}

impl BiMultiHeadAttention {
    /// Image tokens attend to text tokens and text tokens to image tokens.
    ///
    /// - `vision`: `[batch, vision_len, vision_dim]`; `text`: `[batch, text_len, text_dim]`.
    /// - `vision_padding_mask`: `[batch, vision_len]`, `true` for padding image tokens; the text
    ///   does not attend to them.
    /// - `text_padding_mask`: `[batch, text_len]`, `true` for padding text tokens; the image does
    ///   not attend to them.
    ///
    /// A row whose keys are all padding has no defined softmax (NaN, as in the reference).
    pub fn forward(
        &self,
        vision: Tensor<3>,
        text: Tensor<3>,
        vision_padding_mask: Option<Tensor<2, Bool>>,
        text_padding_mask: Option<Tensor<2, Bool>>,
    ) -> Result<BiAttentionOutput, FusionError> {
        let [batch, vision_len, vision_dim] = vision.dims();
        let [text_batch, text_len, text_dim] = text.dims();
        let [expected_vision_dim, _] = self.vision_proj.weight.dims();
        let [expected_text_dim, _] = self.text_proj.weight.dims();
        if vision_dim != expected_vision_dim || text_dim != expected_text_dim || text_batch != batch {
            return Err(FusionError::Shape(format!(
                "vision {:?} and text {:?} must be [batch, _, {expected_vision_dim}] and [batch, _, {expected_text_dim}]",
                vision.dims(),
                text.dims()
            )));
        }
        for (name, mask, len) in
            [("vision", &vision_padding_mask, vision_len), ("text", &text_padding_mask, text_len)]
        {
            if let Some(mask) = mask
                && mask.dims() != [batch, len]
            {
                return Err(FusionError::Shape(format!(
                    "{name} padding mask {:?} must be [{batch}, {len}]",
                    mask.dims()
                )));
            }
        }

        let heads = self.num_heads;
        let head_dim = self.embed_dim / heads;
        let split = |x: Tensor<3>, len: usize| x.reshape([batch, len, heads, head_dim]).swap_dims(1, 2);
        let merge = |x: Tensor<4>, len: usize| x.swap_dims(1, 2).reshape([batch, len, self.embed_dim]);

        let scale = (head_dim as f64).powf(-0.5);
        let queries = split(self.vision_proj.forward(vision.clone()).mul_scalar(scale), vision_len);
        let keys = split(self.text_proj.forward(text.clone()), text_len);
        let vision_values = split(self.values_vision_proj.forward(vision), vision_len);
        let text_values = split(self.values_text_proj.forward(text), text_len);

        // [batch, heads, vision_len, text_len]
        let mut logits = queries.matmul(keys.swap_dims(2, 3));
        if self.stable_softmax_2d {
            let max = logits.clone().max().reshape([1, 1, 1, 1]);
            logits = logits - max;
        }
        logits = self.clamp(logits);

        // Text -> image: the same logits transposed, each row shifted by its own maximum.
        let transposed = logits.clone().swap_dims(2, 3);
        let row_max = transposed.clone().max_dim(3);
        let mut text_logits = self.clamp(transposed - row_max);
        if let Some(mask) = vision_padding_mask {
            let mask = mask.reshape([batch, 1, 1, vision_len]).expand([batch, heads, text_len, vision_len]);
            text_logits = text_logits.mask_fill(mask, f32::NEG_INFINITY);
        }
        let text_attention = softmax(text_logits, 3);

        if let Some(mask) = text_padding_mask {
            let mask = mask.reshape([batch, 1, 1, text_len]).expand([batch, heads, vision_len, text_len]);
            logits = logits.mask_fill(mask, f32::NEG_INFINITY);
        }
        let vision_attention = softmax(logits, 3);

        let vision_out = self.dropout.forward(vision_attention.clone()).matmul(text_values);
        let text_out = self.dropout.forward(text_attention.clone()).matmul(vision_values);
        Ok(BiAttentionOutput {
            vision: self.out_vision_proj.forward(merge(vision_out, vision_len)),
            text: self.out_text_proj.forward(merge(text_out, text_len)),
            vision_attention,
            text_attention,
        })
    }

    fn clamp(&self, logits: Tensor<4>) -> Tensor<4> {
        match (self.clamp_min_for_underflow, self.clamp_max_for_overflow) {
            (true, true) => logits.clamp(-LOGIT_CLAMP, LOGIT_CLAMP),
            (true, false) => logits.clamp_min(-LOGIT_CLAMP),
            (false, true) => logits.clamp_max(LOGIT_CLAMP),
            (false, false) => logits,
        }
    }
}

/// One fusion layer: `v = LN_v(v) + drop_path(vision_param * Δv)`,
/// `t = LN_t(t) + drop_path(text_param * Δt)` with `(Δv, Δt)` from [`BiMultiHeadAttention`] on
/// the normalised tokens. Build with [`BiAttentionConfig::init`].
#[derive(Module, Debug)]
pub struct FusionLayer {
    /// LayerNorm of the image tokens.
    pub layer_norm_vision: LayerNorm,
    /// LayerNorm of the text tokens.
    pub layer_norm_text: LayerNorm,
    /// The bi-directional attention.
    pub attn: BiMultiHeadAttention,
    /// Layer scale of the image update, `[vision_dim]`.
    pub vision_param: Param<Tensor<1>>,
    /// Layer scale of the text update, `[text_dim]`.
    pub text_param: Param<Tensor<1>>,
    /// Stochastic depth on both updates (identity at inference).
    pub drop_path: DropPath,
}

impl FusionLayer {
    /// Fuse image and text tokens; masks as in [`BiMultiHeadAttention::forward`]. The returned
    /// `vision` / `text` are the updated tokens.
    pub fn forward(
        &self,
        vision: Tensor<3>,
        text: Tensor<3>,
        vision_padding_mask: Option<Tensor<2, Bool>>,
        text_padding_mask: Option<Tensor<2, Bool>>,
    ) -> Result<BiAttentionOutput, FusionError> {
        let [_, _, vision_dim] = vision.dims();
        let [_, _, text_dim] = text.dims();
        let [expected_vision_dim] = self.vision_param.dims();
        let [expected_text_dim] = self.text_param.dims();
        if vision_dim != expected_vision_dim || text_dim != expected_text_dim {
            return Err(FusionError::Shape(format!(
                "vision {:?} and text {:?} must end in {expected_vision_dim} and {expected_text_dim}",
                vision.dims(),
                text.dims()
            )));
        }
        let vision = self.layer_norm_vision.forward(vision);
        let text = self.layer_norm_text.forward(text);
        let attended =
            self.attn.forward(vision.clone(), text.clone(), vision_padding_mask, text_padding_mask)?;
        let vision_gamma = self.vision_param.val().reshape([1, 1, vision_dim]);
        let text_gamma = self.text_param.val().reshape([1, 1, text_dim]);
        Ok(BiAttentionOutput {
            vision: vision + self.drop_path.forward(attended.vision * vision_gamma),
            text: text + self.drop_path.forward(attended.text * text_gamma),
            vision_attention: attended.vision_attention,
            text_attention: attended.text_attention,
        })
    }
}

/// Stochastic depth: while training, zeroes a whole sample's residual update with probability
/// `prob` and scales the kept ones by `1 / (1 - prob)`; the identity at inference. Like Burn's
/// `Dropout`, it is active only on an autodiff device with its `training` flag on.
#[derive(Module, Debug)]
pub struct DropPath {
    /// Probability of dropping a sample's update.
    pub prob: f64,
    /// Whether the layer takes part in training.
    pub training: Param<Flag>,
}

impl DropPath {
    /// A drop path with rate `prob` (in `[0, 1)`).
    pub fn new(prob: f64) -> Self {
        Self { prob, training: Param::from_bool(true) }
    }

    /// Apply to a `[batch, ...]` update.
    pub fn forward<const D: usize>(&self, update: Tensor<D>) -> Tensor<D> {
        if self.prob == 0.0 || !self.training.is_enabled() || !update.device().is_autodiff() {
            return update;
        }
        let keep = 1.0 - self.prob;
        let mut shape = [1usize; D];
        shape[0] = update.dims()[0];
        let device = update.device();
        let sample_mask = Tensor::<D>::random(shape, Distribution::Bernoulli(keep), &device);
        update * sample_mask.div_scalar(keep)
    }
}
