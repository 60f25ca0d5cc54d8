//! GLIP, assembled: backbone → FPN (P3–P7) → VL-DyHead with BERT tokens → per-anchor alignment
//! logits, box deltas and centerness; and the post-processing that turns them into detections.
//!
//! A GLIP model directory (what `glint train` writes) holds `config.json` ([`GlipConfig`]),
//! `model.safetensors` (PyTorch layout, see [`crate::weights::save_safetensors`]) and the
//! tokenizer (`tokenizer.json`); the image preprocessing is the caller's (glint-data). A
//! prompt-tuned model also holds `prompt_tuning.safetensors` ([`PromptTuning`]).

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::{Bool, Device, Int, Tensor};
use glint_core::detection::Detection;
use glint_core::geometry::{BoxXyxy, NmsOptions};
use glint_core::prompt::{PhraseReduction, PositiveMap, phrase_scores};
use serde::{Deserialize, Serialize};

use crate::backbone::fpn::{Fpn, fpn};
use crate::backbone::poolformer::{PoolFormer, PoolFormerConfig};
use crate::backbone::resnet::{ResNet, ResNetConfig, torchvision_load_options};
use crate::backbone::{SwinBackbone, SwinConfig, SwinError};
use crate::detector::prompt_tuning::{PROMPT_TUNING_FILE, PromptTuning, PromptTuningError};
use crate::fusion::FusionError;
use crate::head::glip::anchors::{BoxConvention, anchors, boxes_tensor, decode_boxes};
use crate::head::glip::{CoarserOffsets, GlipHead, GlipHeadConfig, GlipHeadOutput};
use crate::text::bert::padded_ids;
use crate::text::{Bert, BertAttentionMask, BertConfig, BertInput};
use crate::weights::glip::GlipCheckpoint;
use crate::weights::{LoadOptions, WeightsError, load_pytorch, load_safetensors, save_safetensors};

/// The image backbone of a GLIP model (`"type"` in its config: `pool_former`, `resnet`, `swin`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum GlipBackboneConfig {
    PoolFormer(PoolFormerConfig),
    #[serde(rename = "resnet")]
    ResNet(ResNetConfig),
    Swin(SwinConfig),
}

impl Default for GlipBackboneConfig {
    fn default() -> Self {
        Self::PoolFormer(PoolFormerConfig::default())
    }
}

impl GlipBackboneConfig {
    /// Checks the backbone's own shape and that its returned maps halve level by level (the
    /// FPN and the head's cross-level convs need that).
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Self::PoolFormer(config) => config.validate()?,
            Self::ResNet(config) => config.validate()?,
            Self::Swin(config) => config.validate().map_err(|e| e.to_string())?,
        }
        let strides = self.out_strides()?;
        if strides.is_empty() || strides.windows(2).any(|w| w[1] != 2 * w[0]) {
            return Err(format!(
                "backbone: the returned maps' strides {strides:?} must double level by level"
            ));
        }
        Ok(())
    }

    /// Channels of each returned map, in order.
    pub fn out_channels(&self) -> Result<Vec<usize>, String> {
        match self {
            Self::PoolFormer(config) => Ok(config.out_channels()),
            Self::ResNet(config) => Ok(config.out_channels()),
            Self::Swin(config) => config.out_channels().map_err(|e| e.to_string()),
        }
    }

    /// Strides of each returned map, in order.
    pub fn out_strides(&self) -> Result<Vec<usize>, String> {
        match self {
            Self::PoolFormer(config) => Ok(config.out_strides()),
            Self::ResNet(config) => Ok(config.out_strides()),
            Self::Swin(config) => {
                let strides = config.out_strides().map_err(|e| e.to_string())?;
                if strides.iter().any(|[h, w]| h != w) {
                    return Err(format!("swin: non-square strides {strides:?}"));
                }
                Ok(strides.iter().map(|[h, _]| *h).collect())
            }
        }
    }

    /// Build with random weights.
    pub fn init(&self, device: &Device) -> Result<GlipBackbone, String> {
        Ok(match self {
            Self::PoolFormer(config) => GlipBackbone::PoolFormer(config.init(device)),
            Self::ResNet(config) => GlipBackbone::ResNet(config.init(device)),
            Self::Swin(config) => GlipBackbone::Swin(config.init(device).map_err(|e| e.to_string())?),
        })
    }
}

/// The backbone of a [`Glip`]. Its parameters are named as the backbone's own (the variant adds
/// no level to the names).
#[derive(Module, Debug)]
pub enum GlipBackbone {
    PoolFormer(PoolFormer),
    ResNet(ResNet),
    Swin(SwinBackbone),
}

impl GlipBackbone {
    /// `pixel_values [B, 3, H, W]` → the maps the FPN takes.
    pub fn forward(&self, pixel_values: Tensor<4>) -> Result<Vec<Tensor<4>>, SwinError> {
        match self {
            Self::PoolFormer(backbone) => Ok(backbone.forward(pixel_values)),
            Self::ResNet(backbone) => Ok(backbone.forward(pixel_values)),
            Self::Swin(backbone) => backbone.forward(pixel_values),
        }
    }

    /// Start a ResNet backbone from a torchvision checkpoint (`resnet50-*.pth`, or a
    /// `.safetensors` with torchvision's names), all or nothing as every load. Other backbones
    /// have no ImageNet format here: an error says so.
    pub fn load_pretrained(self, path: &Path) -> Result<Self, GlipError> {
        let Self::ResNet(resnet) = self else {
            return Err(GlipError::Invalid(format!(
                "{}: ImageNet weights load into a resnet backbone only",
                path.display()
            )));
        };
        let options = torchvision_load_options("");
        let is_safetensors = path.extension().is_some_and(|e| e == "safetensors");
        let resnet = if is_safetensors {
            load_safetensors(resnet, path, &options)?
        } else {
            load_pytorch(resnet, path, &options)?
        };
        Ok(Self::ResNet(resnet))
    }
}

/// Everything that defines a GLIP model (`config.json` of a GLIP model directory).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GlipConfig {
    /// `"glip"`: tells a GLIP directory from a Grounding DINO one.
    pub model_type: String,
    pub backbone: GlipBackboneConfig,
    /// Width of every pyramid level.
    pub fpn_channels: usize,
    pub text: BertConfig,
    pub head: GlipHeadConfig,
    /// Anchor side as a multiple of its level's stride (GLIP: 8).
    pub anchor_scale: f32,
    /// Longest prompt in tokens (GLIP: 256).
    pub max_text_len: usize,
    /// How a phrase's score is made from its tokens' (GLIP averages them).
    pub phrase_reduction: PhraseReduction,
    /// Pixel convention of anchors and boxes (official GLIP: `plus_one`; glint's models:
    /// `continuous`).
    pub box_convention: BoxConvention,
}

impl Default for GlipConfig {
    fn default() -> Self {
        Self {
            model_type: "glip".to_string(),
            backbone: GlipBackboneConfig::default(),
            fpn_channels: 256,
            text: BertConfig::default(),
            head: GlipHeadConfig::default(),
            anchor_scale: 8.0,
            max_text_len: 256,
            phrase_reduction: PhraseReduction::Mean,
            box_convention: BoxConvention::PlusOne,
        }
    }
}

/// A GLIP model directory or config that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum GlipError {
    #[error("cannot read GLIP config {}: {message}", path.display())]
    Config { path: PathBuf, message: String },
    #[error("invalid GLIP config: {0}")]
    Invalid(String),
    #[error("cannot write GLIP model {}: {message}", path.display())]
    Write { path: PathBuf, message: String },
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error(transparent)]
    Fusion(#[from] FusionError),
    #[error(transparent)]
    Backbone(#[from] SwinError),
    #[error(transparent)]
    PromptTuning(#[from] PromptTuningError),
}

impl GlipConfig {
    /// GLIP-T as the official `glip_tiny_model_o365_goldg.pth` was trained
    /// (`glip_Swin_T_O365_GoldG.yaml`): Swin-T (stages 2–4 out), FPN 256, bert-base-uncased,
    /// a 6-layer VL-DyHead (fusion 2048 wide, 8 heads, layer scale 1/6), 1×1 predictors,
    /// deformable convs with bias and GLIP's coarser-level offsets, anchors 8 × stride in the
    /// legacy `+1` pixel convention, prompts up to 256 tokens.
    pub fn glip_t() -> Self {
        Self { backbone: GlipBackboneConfig::Swin(SwinConfig::swin_tiny()), ..Self::default() }
    }

    /// GLIP-L as the official `glip_large_model.pth` was trained (`glip_Swin_L.yaml`): Swin-L
    /// and eight tower layers, otherwise GLIP-T's shape.
    pub fn glip_l() -> Self {
        Self {
            backbone: GlipBackboneConfig::Swin(SwinConfig::swin_large()),
            head: GlipHeadConfig { num_layers: 8, fusion_init_scale: 1.0 / 8.0, ..GlipHeadConfig::default() },
            ..Self::default()
        }
    }

    /// A tiny GLIP (about 0.5 M parameters, most of them BERT's word embeddings) for tests and
    /// smoke runs: it trains a few steps a second on small images.
    pub fn tiny() -> Self {
        Self {
            backbone: GlipBackboneConfig::PoolFormer(PoolFormerConfig {
                layers: [1, 1, 1, 1],
                dims: [8, 16, 32, 32],
                ..PoolFormerConfig::nano()
            }),
            fpn_channels: 16,
            text: BertConfig {
                hidden_size: 16,
                num_hidden_layers: 1,
                num_attention_heads: 2,
                intermediate_size: 32,
                max_position_embeddings: 64,
                hidden_dropout_prob: 0.0,
                attention_probs_dropout_prob: 0.0,
                ..BertConfig::default()
            },
            head: GlipHeadConfig {
                num_layers: 1,
                norm_groups: 4,
                fusion_embed_dim: 16,
                fusion_heads: 2,
                fusion_init_scale: 1e-4,
                prediction_kernel: 3,
                deform_conv_bias: false,
                coarser_offsets: CoarserOffsets::Own,
                ..GlipHeadConfig::default()
            },
            anchor_scale: 4.0,
            max_text_len: 64,
            box_convention: BoxConvention::Continuous,
            ..Self::default()
        }
    }

    /// Read a `config.json`.
    pub fn from_json_file(path: impl AsRef<Path>) -> Result<Self, GlipError> {
        let path = path.as_ref();
        let error = |message: String| GlipError::Config { path: path.to_path_buf(), message };
        let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        let config: Self = serde_json::from_str(&text).map_err(|e| error(e.to_string()))?;
        config.validate().map_err(|e| error(e.to_string()))?;
        Ok(config)
    }

    /// Checks the parts fit together.
    pub fn validate(&self) -> Result<(), GlipError> {
        if self.model_type != "glip" {
            return Err(GlipError::Invalid(format!("model_type is \"{}\", not \"glip\"", self.model_type)));
        }
        self.backbone.validate().map_err(GlipError::Invalid)?;
        self.text.validate().map_err(|e| GlipError::Invalid(e.to_string()))?;
        if self.max_text_len > self.text.max_position_embeddings {
            return Err(GlipError::Invalid(format!(
                "max_text_len {} exceeds the text encoder's max_position_embeddings {}",
                self.max_text_len, self.text.max_position_embeddings
            )));
        }
        if !(self.head.prior_prob > 0.0 && self.head.prior_prob < 1.0) {
            return Err(GlipError::Invalid(format!(
                "head.prior_prob must be in (0, 1), got {}",
                self.head.prior_prob
            )));
        }
        if self.fpn_channels == 0 || !(self.anchor_scale > 0.0) || self.max_text_len == 0 {
            return Err(GlipError::Invalid(
                "fpn_channels, anchor_scale and max_text_len must be positive".into(),
            ));
        }
        Ok(())
    }

    /// The backbone's strides (validated configs only).
    fn backbone_strides(&self) -> Vec<usize> {
        self.backbone.out_strides().unwrap_or_default()
    }

    /// Strides of the pyramid levels: the backbone's, then two stride-2 levels.
    pub fn strides(&self) -> Vec<usize> {
        let mut strides = self.backbone_strides();
        let last = *strides.last().unwrap_or(&32);
        strides.extend([last * 2, last * 4]);
        strides
    }

    /// What input sides must be a multiple of (the coarsest backbone stride): the head's
    /// cross-level convs need each level exactly half its finer neighbour.
    pub fn size_divisibility(&self) -> usize {
        self.backbone_strides().last().copied().unwrap_or(32)
    }

    /// Build with random weights.
    pub fn init(&self, device: &Device) -> Result<Glip, GlipError> {
        self.validate()?;
        let channels = self.backbone.out_channels().map_err(GlipError::Invalid)?;
        Ok(Glip {
            backbone: self.backbone.init(device).map_err(GlipError::Invalid)?,
            fpn: fpn(&channels, self.fpn_channels, 2, device),
            text: self.text.init(device),
            head: self.head.init(self.fpn_channels, channels.len() + 2, &self.text, device)?,
            prompt_tuning: None,
            config: self.clone(),
        })
    }
}

/// Prompts as GLIP takes them: padded token ids and their padding.
#[derive(Debug, Clone)]
pub struct GlipText {
    /// `[B, L]` word-piece ids, padded with 0.
    pub input_ids: Tensor<2, Int>,
    /// `[B, L]` `true` for padding.
    pub padding: Tensor<2, Bool>,
}

impl GlipText {
    /// From each prompt's ids (`[CLS] ... [SEP]`).
    pub fn new(ids: &[&[u32]], device: &Device) -> Self {
        let (input_ids, padding) = padded_ids(ids, device);
        Self { input_ids, padding }
    }
}

/// The assembled GLIP model. Build with [`GlipConfig::init`], load with [`Glip::from_dir`].
#[derive(Module, Debug)]
pub struct Glip {
    pub backbone: GlipBackbone,
    pub fpn: Fpn,
    pub text: Bert,
    pub head: GlipHead,
    /// An offset learnt for one prompt, added to the text encoder's output (not saved in
    /// `model.safetensors`, but beside it).
    pub prompt_tuning: Option<PromptTuning>,
    #[module(skip)]
    pub config: GlipConfig,
}

/// The weights file of a GLIP model directory.
pub const GLIP_WEIGHTS: &str = "model.safetensors";

impl Glip {
    /// Load `config.json` and `model.safetensors` from a model directory, and its
    /// `prompt_tuning.safetensors` if it has one.
    pub fn from_dir(dir: impl AsRef<Path>, device: &Device) -> Result<Self, GlipError> {
        let dir = dir.as_ref();
        let config = GlipConfig::from_json_file(dir.join("config.json"))?;
        let model = config.init(device)?;
        let mut model = load_safetensors(model, dir.join(GLIP_WEIGHTS), &LoadOptions::new())?;
        if dir.join(PROMPT_TUNING_FILE).is_file() {
            model = model.with_prompt_tuning(PromptTuning::load(dir.join(PROMPT_TUNING_FILE), device)?)?;
        }
        Ok(model)
    }

    /// This model with `tuning` added to its text features; its width must be the text encoder's.
    pub fn with_prompt_tuning(mut self, tuning: PromptTuning) -> Result<Self, GlipError> {
        let [_, dim] = tuning.delta.val().dims();
        if dim != self.config.text.hidden_size {
            return Err(GlipError::Invalid(format!(
                "the prompt tuning has {dim} features per token, the model's text encoder {}",
                self.config.text.hidden_size
            )));
        }
        self.prompt_tuning = Some(tuning);
        Ok(self)
    }

    /// Load an official GLIP checkpoint (microsoft/GLIP's `.pth`, see [`crate::weights::glip`])
    /// into this model, whose config must match the checkpoint's shape ([`GlipConfig::glip_t`]
    /// for `glip_tiny_model_o365_goldg.pth`).
    pub fn load_official(self, path: impl AsRef<Path>) -> Result<Self, GlipError> {
        Ok(GlipCheckpoint::read(path)?.apply(self, &LoadOptions::new())?)
    }

    /// Write `config.json` and `model.safetensors` into `dir` (created if missing), each
    /// atomically, and the prompt tuning, if any, as `prompt_tuning.safetensors`.
    pub fn save_dir(&self, dir: impl AsRef<Path>) -> Result<(), GlipError> {
        let dir = dir.as_ref();
        let path = dir.join("config.json");
        let write_error =
            |e: std::io::Error| GlipError::Config { path: path.clone(), message: e.to_string() };
        std::fs::create_dir_all(dir).map_err(write_error)?;
        let json = serde_json::to_string_pretty(&self.config).expect("a GLIP config serialises");
        glint_core::io::write_atomic(&path, json.as_bytes()).map_err(write_error)?;
        match &self.prompt_tuning {
            Some(tuning) => {
                let base = Glip { prompt_tuning: None, ..self.clone() };
                save_safetensors(&base, dir.join(GLIP_WEIGHTS))?;
                tuning.save(dir.join(PROMPT_TUNING_FILE))?;
            }
            None => save_safetensors(self, dir.join(GLIP_WEIGHTS))?,
        }
        Ok(())
    }

    /// A prompt-tuned model detects its own prompt only: an error naming both captions otherwise.
    pub fn check_prompt(&self, caption: &str) -> Result<(), GlipError> {
        match &self.prompt_tuning {
            Some(tuning) if tuning.prompt != caption => Err(GlipError::Invalid(format!(
                "the model's prompt tuning was learnt for the prompt \"{}\", not \"{caption}\"",
                tuning.prompt
            ))),
            _ => Ok(()),
        }
    }

    /// The text encoder's features `[B, L, D]` of a batch of prompts (with the prompt tuning's
    /// offset, if the model has one: callers check the prompt with [`Self::check_prompt`]).
    pub fn encode_text(&self, text: &GlipText) -> Tensor<3> {
        let mask = BertAttentionMask::Padding(text.padding.clone().bool_not());
        let features = self.text.forward(BertInput::new(text.input_ids.clone()).with_attention_mask(mask));
        match &self.prompt_tuning {
            Some(tuning) => tuning.apply(features),
            None => features,
        }
    }

    /// `pixel_values [B, 3, H, W]` (sides a multiple of [`GlipConfig::size_divisibility`]) and
    /// encoded prompts → per-anchor predictions.
    pub fn forward_with_text(
        &self,
        pixel_values: Tensor<4>,
        text_features: Tensor<3>,
        text_padding: Tensor<2, Bool>,
    ) -> Result<GlipHeadOutput, GlipError> {
        let levels = self.fpn.forward(self.backbone.forward(pixel_values)?);
        Ok(self.head.forward(levels, text_features, text_padding)?)
    }

    /// [`Self::forward_with_text`] encoding the prompts first.
    pub fn forward(&self, pixel_values: Tensor<4>, text: &GlipText) -> Result<GlipHeadOutput, GlipError> {
        let features = self.encode_text(text);
        self.forward_with_text(pixel_values, features, text.padding.clone())
    }

    /// The anchors of an output's levels, in the order of its flattened predictions.
    pub fn anchors(&self, level_sizes: &[[usize; 2]]) -> Vec<BoxXyxy> {
        anchors(level_sizes, &self.config.strides(), self.config.anchor_scale, self.config.box_convention)
    }

    /// The detections of one prompt in each image of a batch, from the model's output on it.
    /// `frames[b]` maps image `b` back to its original pixels; `positive_map` / `phrases` are
    /// the prompt's phrases (the map's tokens are the logits' first columns).
    pub fn detections(
        &self,
        output: &GlipHeadOutput,
        frames: &[InputFrame],
        positive_map: &PositiveMap,
        phrases: &[String],
        options: &GlipDetectOptions,
    ) -> Vec<Vec<Detection>> {
        let host = |t: Tensor<3>| t.into_data().try_into_vec_as::<f32>().unwrap_or_default();
        let boxes = host(self.decode_boxes(output));
        let centerness = host(output.centerness.clone().unsqueeze_dim(2));
        let logits = host(output.logits.clone());
        frames
            .iter()
            .enumerate()
            .map(|(b, frame)| {
                let [sx, sy] = frame.scale;
                glip_detections(
                    image_rows(&logits, b, frames.len()),
                    image_rows(&boxes, b, frames.len()),
                    image_rows(&centerness, b, frames.len()),
                    &output.level_sizes,
                    positive_map.num_tokens(),
                    positive_map,
                    phrases,
                    self.config.phrase_reduction,
                    |bbox| bbox.scale(sx, sy),
                    frame.original,
                    self.config.box_convention,
                    options,
                )
            })
            .collect()
    }

    /// `[B, N, 4]` predicted boxes, xyxy in model-input pixels.
    pub fn decode_boxes(&self, output: &GlipHeadOutput) -> Tensor<3> {
        let [batch, n, _] = output.box_deltas.dims();
        let device = output.box_deltas.device();
        let anchors = boxes_tensor(&self.anchors(&output.level_sizes), &device).repeat_dim(0, batch);
        decode_boxes(output.box_deltas.clone().reshape([batch * n, 4]), anchors, self.config.box_convention)
            .reshape([batch, n, 4])
    }
}

/// Where a model input came from: the original image's `[width, height]` and the scale from
/// model-input pixels back to it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InputFrame {
    pub original: [f32; 2],
    pub scale: [f32; 2],
}

/// How GLIP's raw outputs become detections (GLIP's `ATSSPostProcessor` defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GlipDetectOptions {
    /// A candidate needs its phrase probability above this (GLIP's `pre_nms_thresh`: 0.05);
    /// its score is then `sqrt(probability × centerness)`.
    pub candidate_threshold: f32,
    /// Candidates kept per level before NMS (GLIP: 1000).
    pub per_level_top_k: usize,
    /// Detections below this final score (`sqrt` of the candidate score) are dropped.
    pub score_threshold: f32,
    /// Per-phrase NMS IoU (GLIP: 0.6).
    pub nms_iou: f32,
    /// Detections per image (GLIP: 100).
    pub max_detections: usize,
}

impl Default for GlipDetectOptions {
    fn default() -> Self {
        Self {
            candidate_threshold: 0.05,
            per_level_top_k: 1000,
            score_threshold: 0.0,
            nms_iou: 0.6,
            max_detections: 100,
        }
    }
}

/// One image's detections. `logits [N, L]`, `boxes [N, 4]` (decoded, xyxy in model-input
/// pixels: [`Glip::decode_boxes`]) and `centerness [N]` are that image's host copies, levels
/// as the model gives them; boxes are mapped to the original image by `to_original` and
/// clipped to `[width, height]`.
#[allow(clippy::too_many_arguments)]
pub fn glip_detections(
    logits: &[f32],
    boxes: &[f32],
    centerness: &[f32],
    level_sizes: &[[usize; 2]],
    prompt_len: usize,
    positive_map: &PositiveMap,
    phrases: &[String],
    reduction: PhraseReduction,
    to_original: impl Fn(BoxXyxy) -> BoxXyxy,
    [width, height]: [f32; 2],
    convention: BoxConvention,
    options: &GlipDetectOptions,
) -> Vec<Detection> {
    // With the legacy `+1`, the last pixel column is `width - 1` and a box's extent includes its
    // far edge (so NMS measures overlap on boxes one pixel larger).
    let extra = convention.extra();
    let n = centerness.len();
    let len = logits.len().checked_div(n).unwrap_or(0);
    let sigmoid = |x: f32| 1.0 / (1.0 + (-x).exp());
    let mut found = Vec::new();
    let mut start = 0;
    for &[h, w] in level_sizes {
        // (score, anchor, phrase) candidates of this level.
        let mut candidates = Vec::new();
        for a in start..start + h * w {
            let probs: Vec<f32> =
                logits[a * len..a * len + prompt_len.min(len)].iter().map(|&x| sigmoid(x)).collect();
            let quality = sigmoid(centerness[a]);
            for (p, score) in phrase_scores(&probs, positive_map, reduction).into_iter().enumerate() {
                if score > options.candidate_threshold {
                    candidates.push((score * quality, a, p));
                }
            }
        }
        candidates.sort_by(|x, y| y.0.total_cmp(&x.0));
        candidates.truncate(options.per_level_top_k);
        for (score, a, p) in candidates {
            let score = score.sqrt();
            if score < options.score_threshold {
                continue;
            }
            let b = &boxes[a * 4..a * 4 + 4];
            let bbox = to_original(BoxXyxy { x0: b[0], y0: b[1], x1: b[2], y1: b[3] })
                .clip(width - extra, height - extra);
            let bbox = BoxXyxy { x1: bbox.x1 + extra, y1: bbox.y1 + extra, ..bbox };
            if !bbox.is_valid() {
                continue;
            }
            found.push(Detection {
                bbox,
                score,
                phrase: phrases.get(p).cloned().unwrap_or_default(),
                phrase_index: p,
            });
        }
        start += h * w;
    }
    let nms = NmsOptions {
        iou_threshold: options.nms_iou,
        score_threshold: f32::NEG_INFINITY,
        max_detections: options.max_detections,
        class_agnostic: false,
    };
    let mut kept = glint_core::detection::suppress_detections(found, &nms);
    for detection in &mut kept {
        detection.bbox.x1 -= extra;
        detection.bbox.y1 -= extra;
    }
    kept
}

/// Image `b`'s part of a batch's row-major host values (`images` equal parts).
fn image_rows(values: &[f32], b: usize, images: usize) -> &[f32] {
    let n = values.len() / images.max(1);
    &values[b * n..(b + 1) * n]
}
