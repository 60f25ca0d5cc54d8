//! Swin Transformer backbone, as Grounding DINO uses it.
//!
//! This is the module transformers calls `SwinBackbone` (wrapped by Grounding DINO's
//! `GroundingDinoConvEncoder`): a patch embedding (a strided convolution on the image padded to a
//! multiple of the patch size, then a LayerNorm), stages of Swin blocks (window self-attention
//! with a learned relative position bias; every second block shifts the windows by half a window
//! and masks attention between regions the cyclic shift brought together; feature maps that are
//! not a multiple of the window are zero-padded after the block's first LayerNorm and cropped
//! back), a patch merging between stages (2×2 neighbourhoods concatenated, LayerNorm, linear
//! `4C -> 2C`, odd sizes padded by one), and a LayerNorm on each requested stage output.
//!
//! As in transformers' backbone mode (`always_partition=True`) the window is never shrunk to a
//! small feature map: such a map is padded up to one window and still shifted.
//!
//! Feature maps are returned as `[B, C, H, W]` at strides `patch * 2^(stage - 1)` (`stem` =
//! the patch embedding itself, stride `patch`). Drop path and dropout are the identity at
//! inference and are not modelled. The pixel mask of a padded batch plays no part here:
//! Grounding DINO resizes it to each feature map afterwards (nearest-neighbour
//! `interpolate(mask, size=map.shape[-2:])`), which belongs to the detector.
//!
//! Parameter names follow the Hugging Face checkpoints (`embeddings.patch_embeddings.projection`,
//! `encoder.layers.N.blocks.M.attention.self.query`, `...relative_position_bias_table`,
//! `encoder.layers.N.downsample.reduction`, `hidden_states_norms.stageK`, ...), so loading is
//! [`crate::weights::load_safetensors`] with [`swin_load_options`]: two renames ([`SWIN_REMAP`])
//! and two kinds of keys skipped on purpose ([`SWIN_IGNORE`]).

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::softmax;
use burn::tensor::ops::PadMode;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Deserializer, Serialize};

use crate::activation::Activation;
use crate::weights::LoadOptions;

/// Where Hugging Face Grounding DINO checkpoints keep the Swin backbone's tensors.
pub const GROUNDING_DINO_SWIN_PREFIX: &str = "model.backbone.conv_encoder.model.";

/// Checkpoint keys (prefix stripped) that are deliberately not loaded:
/// - `relative_position_index`: a constant computed from the window size (transformers 4.x
///   checkpoints, e.g. the hub's Grounding DINO ones, store it; 5.x computes it);
/// - `swin.layernorm`: the final norm of `SwinModel`, which transformers 5.x keeps (and saves)
///   inside `SwinBackbone` but never applies in backbone mode.
pub const SWIN_IGNORE: &[&str] = &[r"\.relative_position_index$", r"^swin\.layernorm\."];

/// Renames from Hugging Face checkpoint keys to this module's parameter paths: `self` is a Rust
/// keyword, so `attention.self.query` is `attention.query` here, and the per-stage output norms
/// `hidden_states_norms.{stem, stage1, ...}` are entries `0, 1, ...` of a list.
pub const SWIN_REMAP: &[(&str, &str)] = &[
    (r"\.attention\.self\.", ".attention."),
    (r"^hidden_states_norms\.stem\.", "hidden_states_norms.0."),
    (r"^hidden_states_norms\.stage(\d+)\.", "hidden_states_norms.${1}."),
];

/// Options for [`crate::weights::load_safetensors`] / [`crate::weights::load_pytorch`] to load a
/// Hugging Face Swin backbone from the keys under `prefix` (`""` for a plain `SwinBackbone`
/// checkpoint, [`GROUNDING_DINO_SWIN_PREFIX`] for a Grounding DINO one).
pub fn swin_load_options(prefix: &str) -> LoadOptions {
    let mut options = LoadOptions::new().with_prefix(prefix).with_remaps(SWIN_REMAP);
    for pattern in SWIN_IGNORE {
        options = options.with_ignore(*pattern);
    }
    options
}

/// A Swin configuration that cannot build a model, or an input the model cannot take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SwinError {
    /// A configuration field has an unusable value.
    #[error("invalid Swin config: `{field}` {message}")]
    Config {
        /// The offending field (Hugging Face name).
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The pixel values do not have the shape the backbone needs.
    #[error("Swin backbone input: {0}")]
    Input(String),
}

fn config_error(field: &'static str, message: impl Into<String>) -> SwinError {
    SwinError::Config { field, message: message.into() }
}

/// Swin backbone configuration, deserialisable from the `backbone_config` section of a Hugging
/// Face Grounding DINO `config.json` (or a `SwinConfig` `config.json`); unknown fields are
/// ignored, missing ones take transformers' `SwinConfig` defaults (Swin-T, window 7, last stage
/// out). Training-only fields (dropouts, drop path) are not read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SwinConfig {
    /// `"swin"` when present (a Grounding DINO config may name another backbone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_type: Option<String>,
    /// Pre-training image size `[h, w]` (an integer means square). Not used by the backbone's
    /// computation (no absolute position embeddings); kept for round trips.
    #[serde(deserialize_with = "one_or_two")]
    pub image_size: [usize; 2],
    /// Patch size `[h, w]` of the embedding convolution (an integer means square).
    #[serde(deserialize_with = "one_or_two")]
    pub patch_size: [usize; 2],
    /// Image channels.
    pub num_channels: usize,
    /// Channels of the patch embedding (stage 1); stage `k` has `embed_dim * 2^(k-1)`.
    pub embed_dim: usize,
    /// Swin blocks per stage.
    pub depths: Vec<usize>,
    /// Attention heads per stage.
    pub num_heads: Vec<usize>,
    /// Side of the (square) attention window, in patches.
    pub window_size: usize,
    /// MLP hidden size = `mlp_ratio * dim`.
    pub mlp_ratio: f64,
    /// Whether query / key / value projections have a bias.
    pub qkv_bias: bool,
    /// MLP activation: `gelu` (erf), `gelu_new` / `gelu_pytorch_tanh` / `gelu_fast` (tanh
    /// approximation), `relu`, `silu` / `swish` ([`Activation`]).
    pub hidden_act: String,
    /// Absolute position embeddings (not supported; Grounding DINO does not use them).
    pub use_absolute_embeddings: bool,
    /// Epsilon of the blocks' LayerNorms (the embedding, merging and output norms use 1e-5, as
    /// in transformers).
    pub layer_norm_eps: f64,
    /// Stages to output by name: `"stem"`, `"stage1"`, ... (transformers' `out_features`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_features: Option<Vec<String>>,
    /// Stages to output by index: 0 = stem, k = stage k; negative counts from the end
    /// (transformers' `out_indices`). Must agree with `out_features` when both are given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_indices: Option<Vec<i64>>,
}

impl Default for SwinConfig {
    /// transformers' `SwinConfig()` defaults: Swin-T, window 7, only the last stage out.
    fn default() -> Self {
        Self {
            model_type: None,
            image_size: [224, 224],
            patch_size: [4, 4],
            num_channels: 3,
            embed_dim: 96,
            depths: vec![2, 2, 6, 2],
            num_heads: vec![3, 6, 12, 24],
            window_size: 7,
            mlp_ratio: 4.0,
            qkv_bias: true,
            hidden_act: "gelu".to_string(),
            use_absolute_embeddings: false,
            layer_norm_eps: 1e-5,
            out_features: None,
            out_indices: None,
        }
    }
}

/// Accept `4` or `[4, 4]`.
fn one_or_two<'de, D: Deserializer<'de>>(deserializer: D) -> Result<[usize; 2], D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrTwo {
        One(usize),
        Two([usize; 2]),
    }
    Ok(match OneOrTwo::deserialize(deserializer)? {
        OneOrTwo::One(n) => [n, n],
        OneOrTwo::Two(pair) => pair,
    })
}

impl SwinConfig {
    /// Swin-T as in Grounding DINO T (`IDEA-Research/grounding-dino-tiny`): patch 4, embed 96,
    /// depths [2, 2, 6, 2], heads [3, 6, 12, 24], window 7, image 224, stages 2-4 out.
    pub fn swin_tiny() -> Self {
        Self {
            model_type: Some("swin".to_string()),
            out_features: Some(vec!["stage2".into(), "stage3".into(), "stage4".into()]),
            out_indices: Some(vec![2, 3, 4]),
            ..Self::default()
        }
    }

    /// Swin-B (384 variant) as in Grounding DINO B (`IDEA-Research/grounding-dino-base`): patch 4,
    /// embed 128, depths [2, 2, 18, 2], heads [4, 8, 16, 32], window 12, image 384, stages 2-4 out.
    pub fn swin_base() -> Self {
        Self {
            image_size: [384, 384],
            embed_dim: 128,
            depths: vec![2, 2, 18, 2],
            num_heads: vec![4, 8, 16, 32],
            window_size: 12,
            ..Self::swin_tiny()
        }
    }

    /// Swin-L (384 variant, GLIP-L's backbone): patch 4, embed 192, depths [2, 2, 18, 2], heads
    /// [6, 12, 24, 48], window 12, stages 2-4 out.
    pub fn swin_large() -> Self {
        Self { embed_dim: 192, num_heads: vec![6, 12, 24, 48], ..Self::swin_base() }
    }

    /// Number of stages (not counting the stem).
    pub fn num_stages(&self) -> usize {
        self.depths.len()
    }

    /// Channels of stage `stage` (0 = stem = `embed_dim`, k = `embed_dim * 2^(k-1)`).
    pub fn stage_channels(&self, stage: usize) -> usize {
        self.embed_dim << stage.saturating_sub(1)
    }

    /// Stride of stage `stage` relative to the image (0 = stem = the patch size).
    pub fn stage_stride(&self, stage: usize) -> [usize; 2] {
        let factor = 1 << stage.saturating_sub(1);
        [self.patch_size[0] * factor, self.patch_size[1] * factor]
    }

    /// The output stages (0 = stem, k = stage k), increasing, resolved from `out_features` /
    /// `out_indices` as transformers does (neither = the last stage).
    pub fn out_stages(&self) -> Result<Vec<usize>, SwinError> {
        let n = self.num_stages() as i64 + 1;
        let names: Vec<String> =
            (0..n).map(|i| if i == 0 { "stem".to_string() } else { format!("stage{i}") }).collect();
        let from_indices = match &self.out_indices {
            None => None,
            Some(indices) => Some(
                indices
                    .iter()
                    .map(|&i| {
                        let j = if i < 0 { i + n } else { i };
                        if (0..n).contains(&j) {
                            Ok(j as usize)
                        } else {
                            Err(config_error(
                                "out_indices",
                                format!("has {i}, outside the {n} stages (stem + {})", n - 1),
                            ))
                        }
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let from_features = match &self.out_features {
            None => None,
            Some(features) => Some(
                features
                    .iter()
                    .map(|f| {
                        names.iter().position(|s| s == f).ok_or_else(|| {
                            config_error(
                                "out_features",
                                format!("has `{f}`, not one of {}", names.join(", ")),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let stages = match (from_indices, from_features) {
            (None, None) => vec![self.num_stages()],
            (Some(s), None) | (None, Some(s)) => s,
            (Some(a), Some(b)) => {
                if a != b {
                    return Err(config_error(
                        "out_indices",
                        format!("{a:?} does not match out_features {b:?}"),
                    ));
                }
                a
            }
        };
        if stages.is_empty() {
            return Err(config_error("out_features", "is empty"));
        }
        if stages.windows(2).any(|w| w[0] >= w[1]) {
            return Err(config_error(
                "out_features",
                format!("stages {stages:?} must be distinct and in increasing order"),
            ));
        }
        Ok(stages)
    }

    /// Channels of each output feature map, in output order.
    pub fn out_channels(&self) -> Result<Vec<usize>, SwinError> {
        Ok(self.out_stages()?.into_iter().map(|s| self.stage_channels(s)).collect())
    }

    /// Stride of each output feature map (`[h, w]`), in output order.
    pub fn out_strides(&self) -> Result<Vec<[usize; 2]>, SwinError> {
        Ok(self.out_stages()?.into_iter().map(|s| self.stage_stride(s)).collect())
    }

    /// Check every field; the error names the first unusable one.
    pub fn validate(&self) -> Result<(), SwinError> {
        if let Some(model_type) = &self.model_type
            && model_type != "swin"
        {
            return Err(config_error("model_type", format!("is `{model_type}`, expected `swin`")));
        }
        if self.patch_size.contains(&0) {
            return Err(config_error("patch_size", "must be positive"));
        }
        if self.num_channels == 0 {
            return Err(config_error("num_channels", "must be positive"));
        }
        if self.embed_dim == 0 {
            return Err(config_error("embed_dim", "must be positive"));
        }
        if self.window_size == 0 {
            return Err(config_error("window_size", "must be positive"));
        }
        if self.depths.is_empty() || self.depths.len() > 16 {
            return Err(config_error("depths", "must list 1 to 16 stages"));
        }
        if self.depths.contains(&0) {
            return Err(config_error("depths", "must be positive"));
        }
        if self.num_heads.len() != self.depths.len() {
            return Err(config_error(
                "num_heads",
                format!("has {} entries for {} stages", self.num_heads.len(), self.depths.len()),
            ));
        }
        for (i, &heads) in self.num_heads.iter().enumerate() {
            let dim = self.stage_channels(i + 1);
            if heads == 0 || !dim.is_multiple_of(heads) {
                return Err(config_error(
                    "num_heads",
                    format!("{heads} heads cannot split stage {} of {dim} channels", i + 1),
                ));
            }
        }
        if !(self.mlp_ratio.is_finite() && self.mlp_ratio > 0.0) {
            return Err(config_error("mlp_ratio", "must be a positive number"));
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            return Err(config_error("layer_norm_eps", "must be a positive number"));
        }
        if Activation::from_hf_name(&self.hidden_act).is_none() {
            return Err(config_error("hidden_act", format!("`{}` is not supported", self.hidden_act)));
        }
        if self.use_absolute_embeddings {
            return Err(config_error(
                "use_absolute_embeddings",
                "is not supported (Grounding DINO's Swin has none)",
            ));
        }
        self.out_stages()?;
        Ok(())
    }

    /// Build the backbone with random weights (load a checkpoint into it with
    /// [`crate::weights::load_safetensors`] and [`swin_load_options`]).
    pub fn init(&self, device: &Device) -> Result<SwinBackbone, SwinError> {
        self.validate()?;
        let out_stages = self.out_stages()?;
        let activation = Activation::from_hf_name(&self.hidden_act)
            .ok_or_else(|| config_error("hidden_act", "is not supported"))?;

        let embed_dim = self.embed_dim;
        let embeddings = SwinEmbeddings {
            patch_embeddings: SwinPatchEmbeddings {
                projection: Conv2dConfig::new([self.num_channels, embed_dim], self.patch_size)
                    .with_stride(self.patch_size)
                    .init(device),
                patch_size: self.patch_size,
            },
            norm: LayerNormConfig::new(embed_dim).init(device),
        };

        let last = *out_stages.last().unwrap_or(&self.num_stages());
        let layers = (0..self.num_stages())
            .map(|i| {
                let dim = self.stage_channels(i + 1);
                let hidden = (self.mlp_ratio * dim as f64) as usize;
                let blocks = (0..self.depths[i])
                    .map(|b| {
                        let shift = if b % 2 == 1 { self.window_size / 2 } else { 0 };
                        SwinLayer::new(
                            dim,
                            hidden,
                            self.num_heads[i],
                            self.window_size,
                            shift,
                            self.qkv_bias,
                            self.layer_norm_eps,
                            activation,
                            device,
                        )
                    })
                    .collect();
                let downsample = (i + 1 < self.num_stages()).then(|| SwinPatchMerging {
                    norm: LayerNormConfig::new(4 * dim).init(device),
                    reduction: LinearConfig::new(4 * dim, 2 * dim).with_bias(false).init(device),
                });
                SwinStage { blocks, downsample, window_size: self.window_size }
            })
            .collect();

        let hidden_states_norms = (0..=self.num_stages())
            .map(|s| {
                out_stages.contains(&s).then(|| LayerNormConfig::new(self.stage_channels(s)).init(device))
            })
            .collect();

        Ok(SwinBackbone {
            embeddings,
            encoder: SwinEncoder { layers },
            hidden_states_norms,
            out_stages,
            last_stage: last,
        })
    }
}

/// Swin backbone: `pixel_values [B, C, H, W]` -> one feature map per output stage.
#[derive(Module, Debug)]
pub struct SwinBackbone {
    /// Patch embedding and its LayerNorm.
    pub embeddings: SwinEmbeddings,
    /// The stages.
    pub encoder: SwinEncoder,
    /// Output LayerNorm of each stage (index 0 = stem), `None` for stages not output.
    pub hidden_states_norms: Vec<Option<LayerNorm>>,
    #[module(skip)]
    out_stages: Vec<usize>,
    last_stage: usize,
}

impl SwinBackbone {
    /// The output stages (0 = stem, k = stage k), in output order.
    pub fn out_stages(&self) -> &[usize] {
        &self.out_stages
    }

    /// Channels of each output feature map, in output order.
    pub fn out_channels(&self) -> Vec<usize> {
        self.out_stages
            .iter()
            .filter_map(|&s| {
                self.hidden_states_norms.get(s).and_then(|n| n.as_ref()).map(|n| n.gamma.dims()[0])
            })
            .collect()
    }

    /// Run the backbone: `pixel_values [B, C, H, W]` (any `H, W >= 1`) -> the feature maps
    /// `[B, C_k, ceil(H / s_k), ceil(W / s_k)]` of the output stages, in order.
    pub fn forward(&self, pixel_values: Tensor<4>) -> Result<Vec<Tensor<4>>, SwinError> {
        let dims = pixel_values.dims();
        let channels = self.embeddings.patch_embeddings.projection.weight.dims()[1];
        if dims[1] != channels || dims.contains(&0) {
            return Err(SwinError::Input(format!(
                "pixel values of shape {dims:?}, expected [batch, {channels}, height, width] \
                 with no empty dimension"
            )));
        }

        let mut hidden = self.embeddings.forward(pixel_values);
        let mut maps = Vec::with_capacity(self.out_stages.len());
        if let Some(Some(norm)) = self.hidden_states_norms.first() {
            maps.push(channels_first(norm.forward(hidden.clone())));
        }
        for (i, stage) in self.encoder.layers.iter().enumerate() {
            if i >= self.last_stage {
                break;
            }
            let out = stage.forward(hidden);
            if let Some(Some(norm)) = self.hidden_states_norms.get(i + 1) {
                maps.push(channels_first(norm.forward(out.clone())));
            }
            hidden = match &stage.downsample {
                Some(merge) if i + 1 < self.last_stage => merge.forward(out),
                _ => out,
            };
        }
        Ok(maps)
    }
}

/// `[B, H, W, C]` -> `[B, C, H, W]`.
fn channels_first(x: Tensor<4>) -> Tensor<4> {
    x.permute([0, 3, 1, 2])
}

/// Patch embedding followed by its LayerNorm.
#[derive(Module, Debug)]
pub struct SwinEmbeddings {
    /// The strided convolution.
    pub patch_embeddings: SwinPatchEmbeddings,
    /// LayerNorm over channels (eps 1e-5).
    pub norm: LayerNorm,
}

impl SwinEmbeddings {
    /// `[B, C, H, W]` -> `[B, ceil(H/p), ceil(W/p), embed_dim]`.
    pub fn forward(&self, pixel_values: Tensor<4>) -> Tensor<4> {
        let x = self.patch_embeddings.forward(pixel_values);
        self.norm.forward(x.permute([0, 2, 3, 1]))
    }
}

/// Convolution with kernel = stride = patch size, on the image zero-padded (bottom / right) to a
/// multiple of the patch size.
#[derive(Module, Debug)]
pub struct SwinPatchEmbeddings {
    /// `Conv2d(num_channels, embed_dim, kernel = stride = patch)`.
    pub projection: Conv2d,
    patch_size: [usize; 2],
}

impl SwinPatchEmbeddings {
    /// `[B, C, H, W]` -> `[B, embed_dim, ceil(H/p), ceil(W/p)]`.
    pub fn forward(&self, pixel_values: Tensor<4>) -> Tensor<4> {
        let [_, _, h, w] = pixel_values.dims();
        let [ph, pw] = self.patch_size;
        let (pad_h, pad_w) = (h.next_multiple_of(ph) - h, w.next_multiple_of(pw) - w);
        let x = if pad_h > 0 || pad_w > 0 {
            pixel_values.pad([(0, pad_h), (0, pad_w)], PadMode::Constant(0.0))
        } else {
            pixel_values
        };
        self.projection.forward(x)
    }
}

/// The stages of Swin blocks.
#[derive(Module, Debug)]
pub struct SwinEncoder {
    /// One entry per stage.
    pub layers: Vec<SwinStage>,
}

/// One stage: Swin blocks (alternately regular and shifted windows), then patch merging (all but
/// the last stage).
#[derive(Module, Debug)]
pub struct SwinStage {
    /// The blocks; odd ones shift the windows by `window / 2`.
    pub blocks: Vec<SwinLayer>,
    /// Patch merging to the next stage.
    pub downsample: Option<SwinPatchMerging>,
    window_size: usize,
}

impl SwinStage {
    /// The stage's blocks: `[B, H, W, C]` -> `[B, H, W, C]` (apply [`Self::downsample`] to go
    /// on to the next stage).
    pub fn forward(&self, hidden: Tensor<4>) -> Tensor<4> {
        let [_, h, w, _] = hidden.dims();
        let ws = self.window_size;
        let (hp, wp) = (h.next_multiple_of(ws), w.next_multiple_of(ws));
        // One mask for the whole stage: it depends only on the padded size and the shift.
        let mut mask = None;
        let mut x = hidden;
        for block in &self.blocks {
            let block_mask = if block.shift_size > 0 {
                Some(
                    mask.get_or_insert_with(|| {
                        shift_attention_mask(hp, wp, ws, block.shift_size, &x.device())
                    })
                    .clone(),
                )
            } else {
                None
            };
            x = block.forward(x, block_mask);
        }
        x
    }
}

/// Additive attention mask `[num_windows, L, L]` (`L = window²`) for shifted windows on a padded
/// `hp × wp` map: -100 between positions of different regions of the cyclic shift, 0 within
/// one (the value transformers uses; `exp(-100)` vanishes next to any real score).
fn shift_attention_mask(hp: usize, wp: usize, ws: usize, shift: usize, device: &Device) -> Tensor<3> {
    let region = |i: usize, n: usize| -> u8 {
        if i < n - ws {
            0
        } else if i < n - shift {
            1
        } else {
            2
        }
    };
    let (nh, nw, l) = (hp / ws, wp / ws, ws * ws);
    let mut data = Vec::with_capacity(nh * nw * l * l);
    let mut labels = vec![0u8; l];
    for wy in 0..nh {
        for wx in 0..nw {
            for ty in 0..ws {
                for tx in 0..ws {
                    labels[ty * ws + tx] = region(wy * ws + ty, hp) * 3 + region(wx * ws + tx, wp);
                }
            }
            for a in &labels {
                for b in &labels {
                    data.push(if a == b { 0.0f32 } else { -100.0 });
                }
            }
        }
    }
    Tensor::from_data(TensorData::new(data, [nh * nw, l, l]), device)
}

/// `[B, Hp, Wp, C]` (multiples of `ws`) -> `[B * windows, ws², C]`, windows row-major.
fn window_partition(x: Tensor<4>, ws: usize) -> Tensor<3> {
    let [b, h, w, c] = x.dims();
    x.reshape([b, h / ws, ws, w / ws, ws, c]).permute([0, 1, 3, 2, 4, 5]).reshape([
        b * (h / ws) * (w / ws),
        ws * ws,
        c,
    ])
}

/// Inverse of [`window_partition`].
fn window_reverse(windows: Tensor<3>, ws: usize, b: usize, h: usize, w: usize) -> Tensor<4> {
    let c = windows.dims()[2];
    windows.reshape([b, h / ws, w / ws, ws, ws, c]).permute([0, 1, 3, 2, 4, 5]).reshape([b, h, w, c])
}

/// A Linear under a `dense` name (Hugging Face's `intermediate.dense`, `output.dense`).
#[derive(Module, Debug)]
pub struct SwinDense {
    /// The projection.
    pub dense: Linear,
}

/// One Swin block: (shifted) window attention and an MLP, each pre-normed and residual.
#[derive(Module, Debug)]
pub struct SwinLayer {
    /// Norm before attention.
    pub layernorm_before: LayerNorm,
    /// Window attention.
    pub attention: SwinAttention,
    /// Norm before the MLP.
    pub layernorm_after: LayerNorm,
    /// MLP first projection (`dim -> mlp_ratio * dim`).
    pub intermediate: SwinDense,
    /// MLP second projection (`mlp_ratio * dim -> dim`).
    pub output: SwinDense,
    window_size: usize,
    shift_size: usize,
    #[module(skip)]
    activation: Activation,
}

impl SwinLayer {
    #[allow(clippy::too_many_arguments)]
    fn new(
        dim: usize,
        hidden: usize,
        heads: usize,
        window_size: usize,
        shift_size: usize,
        qkv_bias: bool,
        eps: f64,
        activation: Activation,
        device: &Device,
    ) -> Self {
        let qkv = || LinearConfig::new(dim, dim).with_bias(qkv_bias).init(device);
        let table_rows = (2 * window_size - 1) * (2 * window_size - 1);
        Self {
            layernorm_before: LayerNormConfig::new(dim).with_epsilon(eps).init(device),
            attention: SwinAttention {
                query: qkv(),
                key: qkv(),
                value: qkv(),
                relative_position_bias_table: Param::from_tensor(Tensor::zeros([table_rows, heads], device)),
                output: SwinDense { dense: LinearConfig::new(dim, dim).init(device) },
                num_heads: heads,
                window_size,
            },
            layernorm_after: LayerNormConfig::new(dim).with_epsilon(eps).init(device),
            intermediate: SwinDense { dense: LinearConfig::new(dim, hidden).init(device) },
            output: SwinDense { dense: LinearConfig::new(hidden, dim).init(device) },
            window_size,
            shift_size,
            activation,
        }
    }

    /// `[B, H, W, C]` -> `[B, H, W, C]`; `mask` is the stage's shifted-window mask (shifted
    /// blocks only).
    pub fn forward(&self, hidden: Tensor<4>, mask: Option<Tensor<3>>) -> Tensor<4> {
        let [b, h, w, _] = hidden.dims();
        let ws = self.window_size;
        let shift = self.shift_size as isize;
        let (hp, wp) = (h.next_multiple_of(ws), w.next_multiple_of(ws));

        let shortcut = hidden.clone();
        let mut x = self.layernorm_before.forward(hidden);
        if hp != h || wp != w {
            x = x.pad([(0, hp - h), (0, wp - w), (0, 0)], PadMode::Constant(0.0));
        }
        if shift > 0 {
            x = x.roll(&[-shift, -shift], &[1, 2]);
        }
        let attended = self.attention.forward(window_partition(x, ws), mask);
        let mut x = window_reverse(attended, ws, b, hp, wp);
        if shift > 0 {
            x = x.roll(&[shift, shift], &[1, 2]);
        }
        if hp != h || wp != w {
            let c = x.dims()[3];
            x = x.slice([0..b, 0..h, 0..w, 0..c]);
        }
        let x = shortcut + x;

        let y = self.intermediate.dense.forward(self.layernorm_after.forward(x.clone()));
        let y = self.output.dense.forward(self.activation.forward(y));
        x + y
    }
}

/// Multi-head self-attention inside windows, with a learned relative position bias.
#[derive(Module, Debug)]
pub struct SwinAttention {
    /// Query projection (`attention.self.query` in checkpoints).
    pub query: Linear,
    /// Key projection.
    pub key: Linear,
    /// Value projection.
    pub value: Linear,
    /// `[(2w-1)², heads]`: one bias per relative offset `(dy, dx)` and head.
    pub relative_position_bias_table: Param<Tensor<2>>,
    /// Output projection (`attention.output.dense`).
    pub output: SwinDense,
    num_heads: usize,
    window_size: usize,
}

impl SwinAttention {
    /// The bias `[heads, L, L]` between the `L = window²` positions of a window, gathered from
    /// the table by relative offset (the index is computed, never loaded).
    pub fn relative_position_bias(&self) -> Tensor<3> {
        let ws = self.window_size;
        let l = ws * ws;
        let span = 2 * ws - 1;
        let mut index = Vec::with_capacity(l * l);
        for i in 0..l {
            let (yi, xi) = (i / ws, i % ws);
            for j in 0..l {
                let (yj, xj) = (j / ws, j % ws);
                index.push(((yi + ws - 1 - yj) * span + (xi + ws - 1 - xj)) as i64);
            }
        }
        let table = self.relative_position_bias_table.val();
        let index = Tensor::<1, Int>::from_data(TensorData::new(index, [l * l]), &table.device());
        table.select(0, index).reshape([l, l, self.num_heads]).permute([2, 0, 1])
    }

    /// `windows [N, L, C]` (N = batch × windows per image) -> `[N, L, C]`. `mask`
    /// `[windows per image, L, L]` is added to the scores of every image's windows.
    pub fn forward(&self, windows: Tensor<3>, mask: Option<Tensor<3>>) -> Tensor<3> {
        let [n, l, c] = windows.dims();
        let heads = self.num_heads;
        let head_dim = c / heads;
        let split = |t: Tensor<3>| t.reshape([n, l, heads, head_dim]).swap_dims(1, 2);
        let q = split(self.query.forward(windows.clone()));
        let k = split(self.key.forward(windows.clone()));
        let v = split(self.value.forward(windows));

        let scale = (head_dim as f64).powf(-0.5);
        let scores = q.matmul(k.swap_dims(2, 3)) * scale;
        let bias = self.relative_position_bias().unsqueeze::<4>();
        let scores = match mask {
            None => scores + bias,
            Some(mask) => {
                let per_image = mask.dims()[0];
                let combined = bias + mask.unsqueeze_dim::<4>(1);
                (scores.reshape([n / per_image, per_image, heads, l, l]) + combined.unsqueeze::<5>())
                    .reshape([n, heads, l, l])
            }
        };
        let context = softmax(scores, 3).matmul(v).swap_dims(1, 2).reshape([n, l, c]);
        self.output.dense.forward(context)
    }
}

/// Patch merging: each 2×2 neighbourhood concatenated (order `(0,0), (1,0), (0,1), (1,1)` as
/// (row, column)), LayerNorm, then `Linear(4C -> 2C)` without bias; odd sizes are zero-padded.
#[derive(Module, Debug)]
pub struct SwinPatchMerging {
    /// LayerNorm over `4C` (eps 1e-5).
    pub norm: LayerNorm,
    /// `4C -> 2C`, no bias.
    pub reduction: Linear,
}

impl SwinPatchMerging {
    /// `[B, H, W, C]` -> `[B, ceil(H/2), ceil(W/2), 2C]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, h, w, c] = x.dims();
        let x = if h % 2 == 1 || w % 2 == 1 {
            x.pad([(0, h % 2), (0, w % 2), (0, 0)], PadMode::Constant(0.0))
        } else {
            x
        };
        let (h2, w2) = (h.div_ceil(2), w.div_ceil(2));
        // [B, h2, row, w2, col, C] -> [B, h2, w2, col, row, C]: concatenation index col*2 + row.
        let merged = x.reshape([b, h2, 2, w2, 2, c]).permute([0, 1, 3, 4, 2, 5]).reshape([b, h2, w2, 4 * c]);
        self.reduction.forward(self.norm.forward(merged))
    }
}
