//! The training config: one TOML file names the model, the data, the augmentation, the
//! optimiser, the schedule and the run's rhythm. Every section and field has a default, so a
//! file names only what differs; unknown fields are errors (a typo must not be ignored).

use std::path::{Path, PathBuf};

use glint_data::preprocess::PreprocessConfig;
use glint_data::synth::SynthConfig;
use glint_data::transforms::TrainTransforms;
use glint_nn::detector::glip::GlipConfig;
use glint_nn::loss::atss::GlipLossConfig;
use glint_nn::loss::grounding_dino::SetLossConfig;
use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::pretrain::BackbonePretraining;

/// Everything `glint train` needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// The detector: a GLIP architecture (`model_type = "glip"`, the default), or Grounding
    /// DINO fine-tuned from `init_from` (`model_type = "grounding_dino"`).
    pub model: ModelConfig,
    /// The tokenizer (`tokenizer.json`) of the text encoder; copied into every saved model.
    pub tokenizer: PathBuf,
    /// Start from these weights instead of random ones: a GLIP model directory (glint's), or an
    /// official GLIP `.pth` (`model` must then be its shape, e.g. GLIP-T's). For Grounding DINO
    /// (required): a transformers checkpoint directory (`config.json`, `model.safetensors`) or
    /// an IDEA-Research `.pth` (with a `config.json` beside it, or Grounding-DINO-T's shape).
    pub init_from: Option<PathBuf>,
    /// Start the backbone from these ImageNet weights (a torchvision ResNet `.pth` or
    /// `.safetensors`); the rest of the model starts random. Not with `init_from`.
    pub backbone_weights: Option<PathBuf>,
    /// Before the grounding training of a model from scratch, train its backbone as a
    /// classifier of crops around the training boxes (see [`crate::pretrain`]).
    pub backbone_pretraining: Option<BackbonePretraining>,
    /// Parts of the model that are not trained, by weight-name prefix: see [`FREEZABLE`].
    pub freeze: Vec<String>,
    /// GLIP's prompt tuning: the model is not trained at all; only an offset on the token
    /// features of one fixed prompt, the caption of all the categories, is learnt (detection
    /// data only; captions are that prompt, with no sampled negatives). The saved models hold it
    /// as `prompt_tuning.safetensors`.
    pub prompt_tuning: bool,
    pub data: DataConfig,
    pub transforms: TrainTransforms,
    /// Evaluation-time resize and the normalisation used in training and evaluation.
    pub preprocess: PreprocessConfig,
    pub loss: GlipLossConfig,
    pub optimizer: OptimizerConfig,
    pub schedule: ScheduleConfig,
    /// Images per optimiser step (split into `grad_accumulation` forward passes).
    pub batch_size: usize,
    pub grad_accumulation: usize,
    /// Optimiser steps of the whole run.
    pub steps: usize,
    /// Evaluate (and keep `best`) every this many steps, and at the end; 0 = only at the end.
    pub eval_every: usize,
    /// Write the `latest` checkpoint every this many steps, and at the end.
    pub checkpoint_every: usize,
    /// Append a metrics line every this many steps.
    pub log_every: usize,
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            model: ModelConfig::Glip(GlipConfig::default()),
            tokenizer: PathBuf::from("tokenizer.json"),
            init_from: None,
            backbone_weights: None,
            backbone_pretraining: None,
            freeze: Vec::new(),
            prompt_tuning: false,
            data: DataConfig::default(),
            transforms: TrainTransforms::default(),
            preprocess: PreprocessConfig::default(),
            loss: GlipLossConfig::default(),
            optimizer: OptimizerConfig::default(),
            schedule: ScheduleConfig::default(),
            batch_size: 4,
            grad_accumulation: 1,
            steps: 1000,
            eval_every: 0,
            checkpoint_every: 100,
            log_every: 10,
            seed: 0,
        }
    }
}

/// `[model]`: which detector, and its settings.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ModelConfig {
    Glip(GlipConfig),
    GroundingDino(GroundingDinoTraining),
}

impl<'de> Deserialize<'de> for ModelConfig {
    /// By `model_type`: `"grounding_dino"`, or GLIP's fields (`"glip"`, the default).
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let value = toml::Value::deserialize(deserializer)?;
        let model_type = value.get("model_type").and_then(|t| t.as_str()).unwrap_or("glip");
        match model_type {
            GROUNDING_DINO => GroundingDinoTraining::deserialize(value).map(Self::GroundingDino),
            _ => GlipConfig::deserialize(value).map(Self::Glip),
        }
        .map_err(|e| D::Error::custom(e.message()))
    }
}

const GROUNDING_DINO: &str = "grounding_dino";

impl ModelConfig {
    /// The GLIP architecture, if this trains a GLIP.
    pub fn glip(&self) -> Option<&GlipConfig> {
        match self {
            Self::Glip(glip) => Some(glip),
            Self::GroundingDino(_) => None,
        }
    }

    /// [`glip`](Self::glip), to change.
    pub fn glip_mut(&mut self) -> Option<&mut GlipConfig> {
        match self {
            Self::Glip(glip) => Some(glip),
            Self::GroundingDino(_) => None,
        }
    }

    /// The parts `freeze` may name.
    pub fn freezable(&self) -> &'static [&'static str] {
        match self {
            Self::Glip(_) => &FREEZABLE,
            Self::GroundingDino(_) => &GROUNDING_DINO_FREEZABLE,
        }
    }
}

/// `[model]` of a Grounding DINO fine-tuning; the architecture and the starting weights are
/// `init_from`'s.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroundingDinoTraining {
    /// `"grounding_dino"`.
    pub model_type: String,
    /// The set loss: weights and matching costs (the reference's defaults).
    pub loss: SetLossConfig,
    /// Supervise the encoder's proposals and every decoder layer, not only the last one (as the
    /// reference trains).
    pub auxiliary_loss: bool,
}

impl Default for GroundingDinoTraining {
    fn default() -> Self {
        Self { model_type: GROUNDING_DINO.to_string(), loss: SetLossConfig::default(), auxiliary_loss: true }
    }
}

/// The parts of Grounding DINO `freeze` may name: the image backbone, the text encoder, the
/// feature enhancer (`encoder`), the decoder, or the whole head (all but the two backbones).
pub const GROUNDING_DINO_FREEZABLE: [&str; 5] = ["backbone", "text", "encoder", "decoder", "head"];

/// Where training and validation images come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// Training sets, mixed: each image of a batch comes from set `i` with probability
    /// `weight_i / Σ weight`.
    pub train: Vec<DataSource>,
    /// The set evaluated with COCO AP (detection data: its categories are the prompt).
    pub val: Option<DataSource>,
    /// Keep only these categories (by name) of detection data, in training and evaluation;
    /// the others' boxes are dropped. Empty = all. With synthetic data, `"base"` and `"novel"`
    /// stand for every base or novel category.
    pub categories: Vec<String>,
    /// Detection data become grounding data the GLIP way: the caption of an image lists its
    /// objects' categories and sampled negative ones, shuffled, at most this many in all.
    pub max_caption_categories: usize,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self { train: Vec::new(), val: None, categories: Vec::new(), max_caption_categories: 80 }
    }
}

/// One annotation set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DataSource {
    /// COCO detection json.
    Coco {
        annotations: PathBuf,
        images: PathBuf,
        #[serde(default = "one")]
        weight: f64,
    },
    /// ODVG jsonl: detection with a label map, grounding without.
    Odvg {
        annotations: PathBuf,
        images: PathBuf,
        label_map: Option<PathBuf>,
        #[serde(default = "one")]
        weight: f64,
    },
    /// The synthetic shapes, generated into `dir` when it holds no dataset yet.
    Synth {
        dir: PathBuf,
        #[serde(default)]
        synth: SynthConfig,
        /// `train` or `val` detection set; `train_grounding` / `val_grounding` for the captions.
        #[serde(default = "train_split")]
        split: String,
        #[serde(default = "one")]
        weight: f64,
    },
}

fn one() -> f64 {
    1.0
}

fn train_split() -> String {
    "train".to_string()
}

impl DataSource {
    /// The sampling weight.
    pub fn weight(&self) -> f64 {
        match self {
            Self::Coco { weight, .. } | Self::Odvg { weight, .. } | Self::Synth { weight, .. } => *weight,
        }
    }
}

/// The parts `freeze` may name: the image backbone, the FPN, the text encoder, the head's
/// fusion tower (`head.layers`), or the whole head.
pub const FREEZABLE: [&str; 5] = ["backbone", "fpn", "text", "head.layers", "head"];

/// AdamW with learning-rate multipliers per part of the model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimizerConfig {
    /// Peak learning rate of the head and neck.
    pub lr: f64,
    /// Multiplier of `lr` for the image backbone.
    pub backbone_lr_mult: f64,
    /// Multiplier of `lr` for the text encoder.
    pub text_lr_mult: f64,
    pub weight_decay: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub epsilon: f32,
    /// Clip the gradients to this global L2 norm (all parameters together, as PyTorch's
    /// `clip_grad_norm_`); 0 = no clipping.
    pub clip_grad_norm: f32,
}

impl Default for OptimizerConfig {
    /// GLIP's fine-tuning values: AdamW, lr 1e-4, backbone and text at 0.1×, weight decay 1e-4.
    fn default() -> Self {
        Self {
            lr: 1e-4,
            backbone_lr_mult: 0.1,
            text_lr_mult: 0.1,
            weight_decay: 1e-4,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
            clip_grad_norm: 0.0,
        }
    }
}

/// Warm-up, then cosine decay or steps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Linear warm-up from `warmup_factor × lr` over this many steps.
    pub warmup_steps: usize,
    pub warmup_factor: f64,
    pub decay: Decay,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self { warmup_steps: 100, warmup_factor: 0.001, decay: Decay::Cosine { min_factor: 0.0 } }
    }
}

/// How the learning rate falls after warm-up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Decay {
    /// Cosine from `lr` down to `min_factor × lr` at the last step.
    Cosine { min_factor: f64 },
    /// `lr × gamma^k` after the k-th milestone step.
    Steps { milestones: Vec<usize>, gamma: f64 },
}

impl ScheduleConfig {
    /// The multiplier of the peak learning rate at `step` (0-based) of `total`.
    pub fn factor(&self, step: usize, total: usize) -> f64 {
        let decay = match &self.decay {
            Decay::Cosine { min_factor } => {
                let span = total.saturating_sub(self.warmup_steps).max(1) as f64;
                let progress = (step.saturating_sub(self.warmup_steps) as f64 / span).min(1.0);
                min_factor + (1.0 - min_factor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
            Decay::Steps { milestones, gamma } => {
                gamma.powi(milestones.iter().filter(|&&m| step >= m).count() as i32)
            }
        };
        if step < self.warmup_steps {
            let alpha = step as f64 / self.warmup_steps as f64;
            decay * (self.warmup_factor * (1.0 - alpha) + alpha)
        } else {
            decay
        }
    }
}

impl TrainConfig {
    /// Read and check a TOML config; errors name the file.
    pub fn from_toml_file(path: &Path) -> Result<Self, TrainError> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::config(path, e))?;
        let config: Self = toml::from_str(&text)
            .map_err(|e| TrainError::config(path, e.message().to_string() + &span_line(&text, e.span())))?;
        config.validate().map_err(|message| TrainError::config(path, message))?;
        Ok(config)
    }

    /// Checks values that would fail later, or silently train nothing.
    pub fn validate(&self) -> Result<(), String> {
        match &self.model {
            ModelConfig::Glip(glip) => glip.validate().map_err(|e| e.to_string())?,
            ModelConfig::GroundingDino(_) => {
                if self.init_from.is_none() {
                    return Err("a Grounding DINO run fine-tunes a checkpoint: set init_from".into());
                }
                if self.backbone_weights.is_some()
                    || self.backbone_pretraining.is_some()
                    || self.prompt_tuning
                {
                    return Err(
                        "backbone_weights, backbone_pretraining and prompt_tuning are GLIP's; not for Grounding DINO".into(),
                    );
                }
            }
        }
        if self.batch_size == 0
            || self.grad_accumulation == 0
            || !self.batch_size.is_multiple_of(self.grad_accumulation)
        {
            return Err(format!(
                "batch_size ({}) must be a positive multiple of grad_accumulation ({})",
                self.batch_size, self.grad_accumulation
            ));
        }
        if self.steps == 0 || self.checkpoint_every == 0 || self.log_every == 0 {
            return Err("steps, checkpoint_every and log_every must be positive".into());
        }
        if self.data.train.is_empty() {
            return Err("data.train must name at least one dataset".into());
        }
        if self.data.train.iter().any(|s| !(s.weight() > 0.0 && s.weight().is_finite())) {
            return Err("every data.train weight must be a positive number".into());
        }
        if self.init_from.is_some() && self.backbone_weights.is_some() {
            return Err("init_from and backbone_weights both set: init_from already holds a backbone".into());
        }
        if let Some(pretraining) = &self.backbone_pretraining {
            if self.init_from.is_some() || self.backbone_weights.is_some() {
                return Err("backbone_pretraining is for a backbone from scratch: not with init_from or backbone_weights".into());
            }
            if self.prompt_tuning || self.freeze.iter().any(|p| p == "backbone") {
                return Err("backbone_pretraining trains the backbone: it cannot be frozen".into());
            }
            pretraining.validate()?;
        }
        if self.backbone_weights.is_some()
            && !matches!(
                self.model.glip().map(|m| &m.backbone),
                Some(glint_nn::detector::glip::GlipBackboneConfig::ResNet(_))
            )
        {
            return Err("backbone_weights (ImageNet weights) load into a resnet backbone only".into());
        }
        let freezable = self.model.freezable();
        if let Some(unknown) = self.freeze.iter().find(|p| !freezable.contains(&p.as_str())) {
            return Err(format!("freeze: unknown part \"{unknown}\" (one of {freezable:?})"));
        }
        if !(self.optimizer.lr > 0.0) {
            return Err(format!("optimizer.lr must be positive, got {}", self.optimizer.lr));
        }
        let loss = &self.loss;
        if loss.top_k == 0 || !(loss.focal_gamma >= 0.0) {
            return Err(format!(
                "loss.top_k ({}) must be positive and loss.focal_gamma ({}) not negative",
                loss.top_k, loss.focal_gamma
            ));
        }
        if let Some(val) = &self.data.val
            && matches!(val, DataSource::Odvg { label_map: None, .. })
        {
            return Err("data.val must be detection data (COCO, ODVG with a label map, or synth train/val) to be scored with COCO AP".into());
        }
        if let Some(DataSource::Synth { split, .. }) = &self.data.val
            && split.ends_with("_grounding")
        {
            return Err(format!(
                "data.val: the synthetic split \"{split}\" is grounding data; use \"val\" to score COCO AP"
            ));
        }
        self.transforms.validate().map_err(|e| e.to_string())?;
        self.preprocess.validate().map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// " (line N)" for an error span of a TOML text.
pub(crate) fn span_line(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    span.map(|s| format!(" (line {})", text[..s.start.min(text.len())].lines().count().max(1)))
        .unwrap_or_default()
}
