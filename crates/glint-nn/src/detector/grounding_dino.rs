//! Grounding DINO, assembled: the Swin backbone, the BERT text encoder and the head, built from
//! a Hugging Face `config.json` and loaded from its `model.safetensors`.
//!
//! Images of different sizes go through the backbone one at a time (a batch of equal sizes in
//! one call): Swin's windows and the input projections' GroupNorm would otherwise see the batch
//! padding, so each image's detections would depend on the other images of its batch. The head
//! pads per feature level and masks the padding.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use burn::module::Module;
use burn::store::burn_pack::Tensor as PackTensor;
use burn::tensor::{Bool, Device, Int, Tensor};
use glint_core::detection::Detection;
use glint_core::geometry::{BoxCxcywh, NmsOptions};
use glint_core::prompt::{PositiveMap, best_phrase, sub_sentence_mask};

use crate::backbone::{GROUNDING_DINO_SWIN_PREFIX, SwinBackbone, swin_load_options};
use crate::head::grounding_dino::{
    GroundingDinoConfig, GroundingDinoConfigError, GroundingDinoError, GroundingDinoHead, HeadOutput,
};
use crate::loss::grounding_dino::LayerOutput;
use crate::text::bert::{padded_ids, sub_sentence_tensors};
use crate::text::{Bert, BertAttentionMask, BertInput, hf_load_options};
use crate::weights::idea::IdeaCheckpoint;
use crate::weights::{LoadOptions, Mismatch, WeightsError, apply_tensors, export_tensors, read_safetensors};

/// Where Hugging Face Grounding DINO checkpoints keep the text encoder's tensors.
pub const GROUNDING_DINO_TEXT_PREFIX: &str = "model.text_backbone.";

/// Tokenised prompts as the model takes them: padded ids and the masks derived from them.
#[derive(Debug, Clone)]
pub struct TextBatch {
    /// `[B, L]` word-piece ids, padded with 0.
    pub input_ids: Tensor<2, Int>,
    /// `[B, L]` `true` for padding.
    pub padding: Tensor<2, Bool>,
    /// `[B, L, L]` `true` where token `i` may attend to token `j` (each token sees its own
    /// phrase; padding sees itself).
    pub allowed: Tensor<3, Bool>,
    /// `[B, L]` position ids, restarting at every phrase.
    pub position_ids: Tensor<2, Int>,
    /// Real tokens per prompt.
    pub lengths: Vec<usize>,
}

impl TextBatch {
    /// Build from each prompt's ids (`[CLS] ... [SEP]`) and the delimiter ids that separate
    /// phrases (`[CLS]`, `[SEP]`, `.`, `?`: [`glint_core::prompt::TextTokenizer::delimiter_ids`]).
    pub fn new(ids: &[&[u32]], delimiters: &[u32], device: &Device) -> Self {
        let masks: Vec<_> = ids.iter().map(|ids| sub_sentence_mask(ids, delimiters)).collect();
        let (allowed, position_ids) = sub_sentence_tensors(&masks, device);
        let (input_ids, padding) = padded_ids(ids, device);
        Self { input_ids, padding, allowed, position_ids, lengths: ids.iter().map(|ids| ids.len()).collect() }
    }
}

/// Wall time of each stage of a forward pass.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageTimes {
    /// The image backbone.
    pub backbone: Duration,
    /// The text encoder.
    pub text: Duration,
    /// Input projections and the feature enhancer.
    pub encoder: Duration,
    /// Query selection, the decoder and the heads.
    pub decoder: Duration,
}

/// Times consecutive stages, waiting for the device's queued work at every mark; a no-op when
/// timing is off.
struct Lap<'a> {
    device: &'a Device,
    last: Option<Instant>,
}

impl<'a> Lap<'a> {
    fn start(device: &'a Device, enabled: bool) -> Self {
        if enabled {
            let _ = device.sync();
        }
        Self { device, last: enabled.then(Instant::now) }
    }

    fn next(&mut self) -> Duration {
        let Some(last) = self.last else { return Duration::ZERO };
        let _ = self.device.sync();
        let now = Instant::now();
        self.last = Some(now);
        now - last
    }
}

/// Everything a forward pass computed.
#[derive(Debug, Clone)]
pub struct GroundingDinoOutput {
    /// Per image, the backbone's maps `[1, C_k, h_k, w_k]`.
    pub backbone_maps: Vec<Vec<Tensor<4>>>,
    /// `[B, L, text_hidden]` the text encoder's last hidden state.
    pub text_hidden: Tensor<3>,
    /// The head's stages and final logits / boxes.
    pub head: HeadOutput,
}

/// Why a Grounding DINO checkpoint directory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum GroundingDinoLoadError {
    /// `config.json` is missing, unreadable or unsupported.
    #[error(transparent)]
    Config(#[from] GroundingDinoConfigError),
    /// The config builds no model.
    #[error("{}: {source}", path.display())]
    Build {
        /// The config file.
        path: PathBuf,
        /// Why.
        source: GroundingDinoError,
    },
    /// The weights do not fit the model.
    #[error(transparent)]
    Weights(#[from] WeightsError),
}

/// Grounding DINO: image backbone, text encoder, head.
#[derive(Module, Debug)]
pub struct GroundingDino {
    /// Swin image backbone.
    pub backbone: SwinBackbone,
    /// BERT text encoder.
    pub text_backbone: Bert,
    /// Projections, feature enhancer, query selection, decoder, box and token heads.
    pub head: GroundingDinoHead,
}

impl GroundingDino {
    /// Build with random weights.
    pub fn new(config: &GroundingDinoConfig, device: &Device) -> Result<Self, GroundingDinoError> {
        config.validate("<config>")?;
        let backbone = config.backbone_config.init(device)?;
        let text_backbone = config.text_config.init(device);
        let head =
            GroundingDinoHead::new(config, config.text_config.hidden_size, &backbone.out_channels(), device)?;
        Ok(Self { backbone, text_backbone, head })
    }

    /// Build from a checkpoint directory as transformers writes it (`config.json` and
    /// `model.safetensors`).
    pub fn from_pretrained_dir(
        dir: impl AsRef<Path>,
        device: &Device,
    ) -> Result<Self, GroundingDinoLoadError> {
        let dir = dir.as_ref();
        let config_path = dir.join("config.json");
        let config = GroundingDinoConfig::from_json_file(&config_path)?;
        let model = Self::new(&config, device)
            .map_err(|source| GroundingDinoLoadError::Build { path: config_path, source })?;
        Ok(model.load_safetensors(dir.join("model.safetensors"))?)
    }

    /// The configuration the model was built with.
    pub fn config(&self) -> &GroundingDinoConfig {
        self.head.config()
    }

    /// Load a Hugging Face `GroundingDinoForObjectDetection` checkpoint. Every problem of every
    /// part (backbone, text encoder, head) is reported in one error.
    pub fn load_safetensors(self, path: impl AsRef<Path>) -> Result<Self, WeightsError> {
        let path = path.as_ref();
        self.load_parts(&Checkpoint::Transformers { path, tensors: read_safetensors(path)? })
    }

    /// Load an original IDEA-Research checkpoint (`groundingdino_swint_ogc.pth` layout, see
    /// [`crate::weights::idea`]); every problem is reported in one error, by IDEA key where the
    /// tensor came from the file.
    pub fn load_pth(self, path: impl AsRef<Path>) -> Result<Self, WeightsError> {
        self.load_idea(&IdeaCheckpoint::read(path)?)
    }

    /// Load tensors already read from `path`, under transformers' names (an HF
    /// `model.safetensors`, or an IDEA checkpoint's [`IdeaCheckpoint::into_tensors`]).
    pub fn load_tensors(self, path: &Path, tensors: Vec<PackTensor>) -> Result<Self, WeightsError> {
        self.load_parts(&Checkpoint::Transformers { path, tensors })
    }

    /// [`Self::load_pth`] from a checkpoint already read and converted.
    pub fn load_idea(self, checkpoint: &IdeaCheckpoint) -> Result<Self, WeightsError> {
        self.load_parts(&Checkpoint::Idea(checkpoint))
    }

    /// Fill the three parts from one checkpoint, merging their problems into one error.
    fn load_parts(self, checkpoint: &Checkpoint<'_>) -> Result<Self, WeightsError> {
        let Self { backbone, text_backbone, head } = self;
        let head_options = head_load_options(head.config().decoder_bbox_embed_share);
        let backbone = checkpoint.apply(backbone, &swin_load_options(GROUNDING_DINO_SWIN_PREFIX));
        let text_backbone = checkpoint.apply(text_backbone, &hf_load_options(GROUNDING_DINO_TEXT_PREFIX));
        let head = checkpoint.apply(head, &head_options);
        match (backbone, text_backbone, head) {
            (Ok(backbone), Ok(text_backbone), Ok(head)) => Ok(Self { backbone, text_backbone, head }),
            (backbone, text, head) => {
                Err(merge_errors([backbone.err(), text.err(), head.err()].into_iter().flatten().collect()))
            }
        }
    }

    /// The model's current weights as a transformers checkpoint: `source` is the checkpoint it
    /// was loaded from (read from `path`, transformers names: an HF `model.safetensors`, or an
    /// IDEA `.pth` converted by [`IdeaCheckpoint`]); every tensor the model loaded takes its
    /// current value, tied copies (the decoder's box heads, a shared box head's other layers)
    /// take their original's, and the rest is kept, so the result loads in transformers too.
    pub fn export_tensors(
        &self,
        path: &Path,
        source: Vec<PackTensor>,
    ) -> Result<Vec<PackTensor>, WeightsError> {
        let shared = self.config().decoder_bbox_embed_share;
        let tensors =
            export_tensors(&self.backbone, path, source, &swin_load_options(GROUNDING_DINO_SWIN_PREFIX))?;
        let tensors =
            export_tensors(&self.text_backbone, path, tensors, &hf_load_options(GROUNDING_DINO_TEXT_PREFIX))?;
        let mut tensors = export_tensors(&self.head, path, tensors, &head_load_options(shared))?;
        let box_head =
            regex::Regex::new(r"^(?:model\.decoder\.)?bbox_embed\.(\d+)\.(.*)$").expect("a valid regex");
        let originals: std::collections::HashMap<String, PackTensor> = tensors
            .iter()
            .filter(|t| t.name.starts_with("bbox_embed."))
            .map(|t| (t.name.clone(), t.clone()))
            .collect();
        for tensor in &mut tensors {
            let Some(parts) = box_head.captures(&tensor.name) else { continue };
            let layer = if shared { "0" } else { &parts[1] };
            let original = format!("bbox_embed.{layer}.{}", &parts[2]);
            if original != tensor.name
                && let Some(value) = originals.get(&original)
            {
                let name = std::mem::take(&mut tensor.name);
                *tensor = value.clone();
                tensor.name = name;
            }
        }
        Ok(tensors)
    }

    /// What the set loss supervises ([`GroundingDinoHead::training_outputs`]): the encoder's
    /// proposals, then every decoder layer's predictions, first to last.
    pub fn training_outputs(&self, output: &GroundingDinoOutput, text: &TextBatch) -> Vec<LayerOutput> {
        self.head.training_outputs(&output.head, text.padding.clone())
    }

    /// Run the model on normalised images (`[3, h, w]` each, any sizes) and one prompt per
    /// image.
    pub fn forward(
        &self,
        images: &[Tensor<3>],
        text: &TextBatch,
    ) -> Result<GroundingDinoOutput, GroundingDinoError> {
        self.run(images, text, None, None)
    }

    /// The text encoder alone: `[batch, tokens, hidden]` BERT features of the prompts. Pass
    /// them back with [`forward_with_text`](Self::forward_with_text) to run many images
    /// against one prompt without encoding it again.
    pub fn encode_text(&self, text: &TextBatch) -> Tensor<3> {
        self.text_backbone.forward(
            BertInput::new(text.input_ids.clone())
                .with_attention_mask(BertAttentionMask::Full(text.allowed.clone()))
                .with_position_ids(text.position_ids.clone()),
        )
    }

    /// [`forward`](Self::forward) with the prompts already encoded by
    /// [`encode_text`](Self::encode_text) (`text_hidden`: `[batch, tokens, hidden]`, one row per
    /// image); with `times`, each stage is timed (the text stage is then zero).
    pub fn forward_with_text(
        &self,
        images: &[Tensor<3>],
        text: &TextBatch,
        text_hidden: Tensor<3>,
        times: Option<&mut StageTimes>,
    ) -> Result<GroundingDinoOutput, GroundingDinoError> {
        let expected =
            [text.input_ids.dims()[0], text.input_ids.dims()[1], self.config().text_config.hidden_size];
        if text_hidden.dims() != expected {
            return Err(GroundingDinoError::Input(format!(
                "text features {:?} do not match the prompts: expected {expected:?}",
                text_hidden.dims()
            )));
        }
        self.run(images, text, Some(text_hidden), times)
    }

    /// [`forward`](Self::forward), timing each stage (the device is synchronised between
    /// stages, so on a GPU the total is a little slower than an untimed pass).
    pub fn forward_timed(
        &self,
        images: &[Tensor<3>],
        text: &TextBatch,
    ) -> Result<(GroundingDinoOutput, StageTimes), GroundingDinoError> {
        let mut times = StageTimes::default();
        let output = self.run(images, text, None, Some(&mut times))?;
        Ok((output, times))
    }

    fn run(
        &self,
        images: &[Tensor<3>],
        text: &TextBatch,
        text_hidden: Option<Tensor<3>>,
        times: Option<&mut StageTimes>,
    ) -> Result<GroundingDinoOutput, GroundingDinoError> {
        let [batch, text_len] = text.input_ids.dims();
        if images.len() != batch {
            return Err(GroundingDinoError::Input(format!("{} images for {batch} prompts", images.len())));
        }
        let max_text_len = self.config().max_text_len;
        if text_len > max_text_len {
            return Err(GroundingDinoError::Input(format!(
                "the prompt has {text_len} tokens, more than the model's {max_text_len}"
            )));
        }
        let device = text.input_ids.device();
        let mut lap = Lap::start(&device, times.is_some());

        let backbone_maps = self.backbone_maps(images)?;
        let backbone = lap.next();
        let text_hidden = text_hidden.unwrap_or_else(|| self.encode_text(text));
        let text_time = lap.next();
        let blocked = text.allowed.clone().bool_not().unsqueeze_dim::<4>(1);
        let encoded = self.head.encode(
            &backbone_maps,
            text_hidden.clone(),
            text.padding.clone(),
            blocked,
            text.position_ids.clone(),
        )?;
        let encoder = lap.next();
        let head = self.head.decode(encoded)?;
        let decoder = lap.next();
        if let Some(times) = times {
            *times = StageTimes { backbone, text: text_time, encoder, decoder };
        }
        Ok(GroundingDinoOutput { backbone_maps, text_hidden, head })
    }

    /// Every image's backbone maps; equal-sized images share one backbone call.
    fn backbone_maps(&self, images: &[Tensor<3>]) -> Result<Vec<Vec<Tensor<4>>>, GroundingDinoError> {
        let Some(first) = images.first() else {
            return Err(GroundingDinoError::Input("no image".to_string()));
        };
        let same_size = images.iter().all(|image| image.dims() == first.dims());
        if same_size {
            let batch = Tensor::stack(images.to_vec(), 0);
            let maps = self.backbone.forward(batch)?;
            return Ok((0..images.len())
                .map(|b| maps.iter().map(|m| m.clone().narrow(0, b, 1)).collect())
                .collect());
        }
        images.iter().map(|image| Ok(self.backbone.forward(image.clone().unsqueeze_dim::<4>(0))?)).collect()
    }
}

/// A whole-model checkpoint, read once and applied to each part.
enum Checkpoint<'a> {
    /// A transformers `model.safetensors` and its tensors (transformers names).
    Transformers { path: &'a Path, tensors: Vec<PackTensor> },
    /// An IDEA-Research `.pth`, converted to transformers names.
    Idea(&'a IdeaCheckpoint),
}

impl Checkpoint<'_> {
    fn apply<M: Module>(&self, module: M, options: &LoadOptions) -> Result<M, WeightsError> {
        match self {
            Checkpoint::Transformers { path, tensors } => {
                apply_tensors(module, path, tensors.clone(), options)
            }
            Checkpoint::Idea(checkpoint) => checkpoint.apply(module, options),
        }
    }
}

/// Load options for the head's tensors: everything but the backbones, `model.` dropped, the
/// input projections' `Sequential` indices named. With one box head shared by all decoder
/// layers, the tied copies (`bbox_embed.1…`, `model.decoder.bbox_embed.…`) are skipped.
fn head_load_options(shared_box_head: bool) -> LoadOptions {
    let mut options = LoadOptions::new()
        .with_ignore(r"^model\.backbone\.conv_encoder\.")
        .with_ignore(r"^model\.text_backbone\.")
        // The decoder's box heads are tied to the top-level `bbox_embed` in the reference.
        .with_ignore(r"^model\.decoder\.bbox_embed\.")
        .with_remaps(&[
            (r"^model\.", ""),
            (r"^input_proj_vision\.(\d+)\.0\.", "input_proj_vision.${1}.conv."),
            (r"^input_proj_vision\.(\d+)\.1\.", "input_proj_vision.${1}.norm."),
        ]);
    if shared_box_head {
        options = options.with_ignore(r"^bbox_embed\.[1-9][0-9]*\.");
    }
    options
}

/// One error listing every part's problems.
fn merge_errors(errors: Vec<WeightsError>) -> WeightsError {
    let mut merged: Option<Mismatch> = None;
    for error in errors {
        match error {
            WeightsError::Mismatch(m) => match &mut merged {
                None => merged = Some(Mismatch { prefix: String::new(), ..*m }),
                Some(all) => {
                    all.missing.extend(m.missing);
                    all.unexpected.extend(m.unexpected);
                    all.mis_shaped.extend(m.mis_shaped);
                    all.duplicates.extend(m.duplicates);
                    all.other.extend(m.other);
                }
            },
            other => return other,
        }
    }
    match merged {
        Some(m) => WeightsError::Mismatch(Box::new(m)),
        None => WeightsError::Read { path: PathBuf::new(), message: "no error to report".to_string() },
    }
}

/// Every image's [`detections`] from the head's outputs for a batch (one copy from the device):
/// `sizes` are the images' original `[width, height]`, in batch order.
pub fn batch_detections(
    head: &HeadOutput,
    prompt_len: usize,
    positive_map: &PositiveMap,
    phrases: &[String],
    sizes: &[[f32; 2]],
    options: &DetectOptions,
) -> Vec<Vec<Detection>> {
    let host = |t: &Tensor<3>| t.clone().into_data().try_into_vec_as::<f32>().unwrap_or_default();
    let (logits, boxes) = (host(&head.logits), host(&head.pred_boxes));
    let images = sizes.len().max(1);
    let per_image = |values: &[f32]| (values.len() / images).max(1);
    logits
        .chunks(per_image(&logits))
        .zip(boxes.chunks(per_image(&boxes)))
        .zip(sizes)
        .map(|((logits, boxes), &size)| {
            detections(logits, boxes, prompt_len, positive_map, phrases, size, options)
        })
        .collect()
}

/// How raw outputs become detections.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectOptions {
    /// A query is kept when its best token probability is above this.
    pub box_threshold: f32,
    /// ... and its best phrase's probability (max over the phrase's tokens) is above this.
    pub text_threshold: f32,
    /// Per-phrase NMS at this IoU; `None` = no NMS (the reference applies none).
    pub nms_iou: Option<f32>,
    /// At most this many detections per image, the highest-scoring ones.
    pub max_detections: usize,
}

impl DetectOptions {
    /// The NMS / top-k step of these options, each phrase a class (no score threshold: the
    /// thresholds are applied before).
    pub fn nms_options(&self) -> NmsOptions {
        NmsOptions {
            iou_threshold: self.nms_iou.unwrap_or(f32::INFINITY),
            score_threshold: f32::NEG_INFINITY,
            max_detections: self.max_detections,
            class_agnostic: false,
        }
    }
}

impl Default for DetectOptions {
    /// Grounding DINO's usual thresholds: box 0.35, text 0.25; no NMS; 300 detections.
    fn default() -> Self {
        Self { box_threshold: 0.35, text_threshold: 0.25, nms_iou: None, max_detections: 300 }
    }
}

/// One image's detections from its token logits `[Q, L]` and boxes `[Q, 4]` (row-major host
/// copies; `L` at least the prompt's length, `-inf` past it), in pixels of an image
/// `width × height`, sorted by decreasing score.
///
/// A query's score is its best token probability over the prompt (as transformers' post-processing
/// computes it); its phrase is the one whose tokens score highest ([`best_phrase`]). Queries at
/// or below `box_threshold`, or whose best phrase is at or below `text_threshold`, are dropped.
pub fn detections(
    logits: &[f32],
    boxes: &[f32],
    prompt_len: usize,
    positive_map: &PositiveMap,
    phrases: &[String],
    [width, height]: [f32; 2],
    options: &DetectOptions,
) -> Vec<Detection> {
    let queries = boxes.len() / 4;
    let width_l = logits.len().checked_div(queries).unwrap_or(0);
    let mut found = Vec::new();
    for q in 0..queries {
        let row = &logits[q * width_l..q * width_l + prompt_len.min(width_l)];
        let probs: Vec<f32> = row.iter().map(|&x| sigmoid(x)).collect();
        let score = probs.iter().copied().fold(0.0f32, f32::max);
        if score <= options.box_threshold {
            continue;
        }
        let Some((phrase_index, phrase_score)) = best_phrase(&probs, positive_map) else {
            continue;
        };
        if phrase_score <= options.text_threshold {
            continue;
        }
        let b = &boxes[q * 4..q * 4 + 4];
        let bbox = BoxCxcywh { cx: b[0], cy: b[1], w: b[2], h: b[3] }.to_xyxy().scale(width, height);
        found.push(Detection {
            bbox,
            score,
            phrase: phrases.get(phrase_index).cloned().unwrap_or_default(),
            phrase_index,
        });
    }
    glint_core::detection::suppress_detections(found, &options.nms_options())
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}
