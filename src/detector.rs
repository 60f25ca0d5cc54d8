//! The high-level API: load a detector once, detect in many images.
//!
//! ```no_run
//! use glint::Detector;
//! use glint::core::prompt::Prompt;
//! use glint::nn::detector::DetectOptions;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let device = burn::tensor::Device::flex();
//! let detector = Detector::from_pretrained("IDEA-Research/grounding-dino-tiny", &device)?;
//! let image = glint::data::image_io::load_image("cats.jpg")?;
//! let prompt = Prompt::parse("cat . remote control .")?;
//! for detection in detector.detect(&image, &prompt, &DetectOptions::default())? {
//!     println!("{} {:.2} {:?}", detection.phrase, detection.score, detection.bbox);
//! }
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use burn::tensor::{Device, Tensor, TensorData};
use glint_core::detection::{Detection, suppress_detections};
use glint_core::prompt::{MAX_TEXT_LEN, Prompt, PromptError, TextTokenizer, chunk_prompt};
use glint_data::error::DataError;
use glint_data::hub::{HubError, HubOptions, resolve_model};
use glint_data::preprocess::PREPROCESS_FILE;
use glint_data::preprocess::{PreprocessConfig, PreprocessedImage};
use glint_nn::detector::glip::{Glip, GlipConfig, GlipDetectOptions, GlipError, GlipText};
use glint_nn::detector::grounding_dino::batch_detections;
use glint_nn::detector::prompt_tuning::PromptTuning;
use glint_nn::detector::{DetectOptions, GroundingDino, GroundingDinoLoadError, StageTimes, TextBatch};
use glint_nn::head::grounding_dino::{GroundingDinoConfig, GroundingDinoError};
use glint_nn::weights::glip::{GlipCheckpoint, is_official_glip};
use glint_nn::weights::idea::IdeaCheckpoint;
use glint_nn::weights::{LoadOptions, read_pth};
use glint_train::evaluate::glip_input;
use image::RgbImage;

mod exemplar;
pub use exemplar::Exemplar;

/// The files a Grounding DINO checkpoint directory must hold.
pub const GROUNDING_DINO_FILES: [&str; 3] = ["config.json", "model.safetensors", "tokenizer.json"];

/// The hub repo whose tokenizer the original Grounding DINO checkpoints use.
const BERT_BASE_UNCASED: &str = "google-bert/bert-base-uncased";

/// Why a detector could not be loaded or could not detect.
#[derive(Debug, thiserror::Error)]
pub enum DetectorError {
    /// The model could not be found or fetched.
    #[error(transparent)]
    Hub(#[from] HubError),
    /// The checkpoint could not be loaded.
    #[error(transparent)]
    Load(#[from] GroundingDinoLoadError),
    /// The tokenizer could not be loaded, or the prompt cannot be encoded.
    #[error("{context}: {source}")]
    Prompt {
        /// The file or prompt concerned.
        context: String,
        /// Why.
        source: PromptError,
    },
    /// An image could not be preprocessed.
    #[error(transparent)]
    Image(#[from] DataError),
    /// The model refused its input.
    #[error(transparent)]
    Model(#[from] GroundingDinoError),
    /// A GLIP model could not be loaded or refused its input.
    #[error(transparent)]
    Glip(#[from] GlipError),
}

/// Where the time of a detection went.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Profile {
    /// Resizing and normalising the images.
    pub preprocess: Duration,
    /// The model's stages.
    pub stages: StageTimes,
    /// Copying the outputs to the host and making detections.
    pub postprocess: Duration,
}

impl Profile {
    fn add(&mut self, times: &StageTimes) {
        self.stages.backbone += times.backbone;
        self.stages.text += times.text;
        self.stages.encoder += times.encoder;
        self.stages.decoder += times.decoder;
    }

    /// Everything.
    pub fn total(&self) -> Duration {
        let s = &self.stages;
        self.preprocess + s.backbone + s.text + s.encoder + s.decoder + self.postprocess
    }
}

/// The detectors glint runs.
#[derive(Debug)]
pub enum Model {
    GroundingDino(GroundingDino),
    Glip(Glip),
}

/// A detector (Grounding DINO or GLIP) with its tokenizer and image preprocessing.
#[derive(Debug)]
pub struct Detector {
    model: Model,
    tokenizer: TextTokenizer,
    preprocess: PreprocessConfig,
    device: Device,
    dir: PathBuf,
    /// Encoded prompts (`[1, tokens, hidden]` text-encoder features) by token ids: a prompt is
    /// encoded once and reused for every image and batch after it.
    encoded_prompts: Mutex<HashMap<Vec<u32>, Tensor<3>>>,
}

/// Prompts kept encoded; the cache starts over beyond this.
const ENCODED_PROMPTS: usize = 64;

impl Detector {
    /// Load from a checkpoint directory as transformers writes it, or from a Hugging Face repo
    /// id (`IDEA-Research/grounding-dino-tiny`, optionally `@revision`) through the hub cache
    /// (offline when `HF_HUB_OFFLINE=1`).
    ///
    /// An original IDEA-Research checkpoint file (`groundingdino_swint_ogc.pth`,
    /// `groundingdino_swinb_cogcoor.pth`) is accepted too: its config is the `config.json` beside
    /// it, else Grounding-DINO-B when the file name contains `swinb`, else Grounding-DINO-T; its
    /// tokenizer is the `tokenizer.json` beside it, else bert-base-uncased's from the hub. So is
    /// an official GLIP checkpoint (`glip_tiny_model_o365_goldg.pth`, told apart by its keys):
    /// GLIP-T or GLIP-L (by its keys) unless a GLIP `config.json` is beside it, with GLIP's
    /// evaluation preprocessing.
    pub fn from_pretrained(path_or_id: &str, device: &Device) -> Result<Self, DetectorError> {
        let path = Path::new(path_or_id);
        if path.is_file() && path.extension().is_some_and(|e| e == "pth" || e == "pt") {
            return Self::from_pth(path, device);
        }
        let dir = resolve_model(path_or_id, &GROUNDING_DINO_FILES, &HubOptions::from_env())?;
        Self::from_dir(&dir, device)
    }

    fn from_pth(path: &Path, device: &Device) -> Result<Self, DetectorError> {
        // Read once (lazily); the keys tell official GLIP from IDEA-Research's Grounding DINO.
        let tensors = read_pth(path).map_err(GroundingDinoLoadError::from)?;
        if is_official_glip(tensors.iter().map(|t| t.name.as_str())) {
            let checkpoint = GlipCheckpoint::from_tensors(path, tensors).map_err(GlipError::from)?;
            return Self::from_official_glip(path, &checkpoint, device);
        }
        let checkpoint = IdeaCheckpoint::from_tensors(path, tensors).map_err(GroundingDinoLoadError::from)?;
        let config = GroundingDinoConfig::for_pth(path).map_err(GroundingDinoLoadError::from)?;
        let tokenizer = tokenizer_beside(path)?;
        let build = |source| GroundingDinoLoadError::Build { path: path.to_path_buf(), source };
        let model = GroundingDino::new(&config, device).map_err(build)?;
        let model = model.load_idea(&checkpoint).map_err(GroundingDinoLoadError::from)?;
        Ok(Self::new(Model::GroundingDino(model), tokenizer, device, path))
    }

    /// An official GLIP checkpoint: GLIP-T or GLIP-L unless a GLIP `config.json` is beside it; GLIP's
    /// evaluation preprocessing unless a `glint_preprocess.json` is beside it; the tokenizer as
    /// for Grounding DINO.
    fn from_official_glip(
        path: &Path,
        checkpoint: &GlipCheckpoint,
        device: &Device,
    ) -> Result<Self, DetectorError> {
        let beside = |name: &str| path.parent().map(|dir| dir.join(name)).filter(|p| p.is_file());
        let config = match beside("config.json") {
            Some(config) => GlipConfig::from_json_file(config)?,
            None => checkpoint.official_config(),
        };
        let tokenizer = tokenizer_beside(path)?;
        let model = checkpoint.apply(config.init(device)?, &LoadOptions::new()).map_err(GlipError::from)?;
        let mut detector = Self::new(Model::Glip(model), tokenizer, device, path);
        detector.preprocess = match beside(PREPROCESS_FILE) {
            Some(file) => read_preprocess(&file)?,
            None => PreprocessConfig::glip(),
        };
        Ok(detector)
    }

    /// Load from a local checkpoint directory (`config.json`, `model.safetensors`,
    /// `tokenizer.json`): Grounding DINO as transformers writes it, or a GLIP model directory as
    /// `glint train` writes it (its `config.json` says `"model_type": "glip"`; its preprocessing
    /// is in `glint_preprocess.json`).
    pub fn from_dir(dir: &Path, device: &Device) -> Result<Self, DetectorError> {
        let tokenizer = load_tokenizer(&dir.join("tokenizer.json"))?;
        if !is_glip_dir(dir) {
            let model = GroundingDino::from_pretrained_dir(dir, device)?;
            let mut detector = Self::new(Model::GroundingDino(model), tokenizer, device, dir);
            // A model fine-tuned by `glint train` keeps its training's preprocessing.
            if dir.join(PREPROCESS_FILE).is_file() {
                detector.preprocess = read_preprocess(&dir.join(PREPROCESS_FILE))?;
            }
            return Ok(detector);
        }
        let model = Glip::from_dir(dir, device)?;
        let mut detector = Self::new(Model::Glip(model), tokenizer, device, dir);
        detector.preprocess = read_preprocess(&dir.join(PREPROCESS_FILE))?;
        Ok(detector)
    }

    /// This GLIP detector with a prompt tuning (`prompt_tuning.safetensors`, as `glint train`
    /// with `prompt_tuning = true` and `glint fewshot` write it) on top: it then detects its
    /// tuned prompt only.
    pub fn with_prompt_tuning(mut self, path: &Path) -> Result<Self, DetectorError> {
        let Model::Glip(model) = self.model else {
            return Err(DetectorError::Glip(GlipError::Invalid(format!(
                "{}: a prompt tuning applies to a GLIP model, not to {}",
                path.display(),
                self.dir.display()
            ))));
        };
        let tuning = PromptTuning::load(path, &self.device).map_err(GlipError::from)?;
        self.model = Model::Glip(model.with_prompt_tuning(tuning)?);
        self.encoded_prompts = Mutex::default();
        Ok(self)
    }

    fn new(model: Model, tokenizer: TextTokenizer, device: &Device, source: &Path) -> Self {
        Self {
            model,
            tokenizer,
            preprocess: PreprocessConfig::grounding_dino(),
            device: device.clone(),
            dir: source.to_path_buf(),
            encoded_prompts: Mutex::default(),
        }
    }

    /// The directory (or `.pth` file) the weights came from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// Detect the prompt's phrases in one image: boxes in the image's pixels, by decreasing score.
    pub fn detect(
        &self,
        image: &RgbImage,
        prompt: &Prompt,
        options: &DetectOptions,
    ) -> Result<Vec<Detection>, DetectorError> {
        let mut all = self.detect_batch(std::slice::from_ref(image), prompt, options)?;
        Ok(all.pop().unwrap_or_default())
    }

    /// Detect in several images in one batch; each image's result is the same as [`detect`]'s
    /// on it alone. A prompt too long for the text encoder is split into chunks that are run
    /// one after the other, their detections merged.
    ///
    /// [`detect`]: Self::detect
    pub fn detect_batch(
        &self,
        images: &[RgbImage],
        prompt: &Prompt,
        options: &DetectOptions,
    ) -> Result<Vec<Vec<Detection>>, DetectorError> {
        self.run(images, prompt, options, None)
    }

    /// [`detect_batch`](Self::detect_batch), timing preprocessing, every model stage and the
    /// post-processing (summed over the chunks of a long prompt).
    pub fn detect_profiled(
        &self,
        images: &[RgbImage],
        prompt: &Prompt,
        options: &DetectOptions,
    ) -> Result<(Vec<Vec<Detection>>, Profile), DetectorError> {
        let mut profile = Profile::default();
        let found = self.run(images, prompt, options, Some(&mut profile))?;
        Ok((found, profile))
    }

    fn run(
        &self,
        images: &[RgbImage],
        prompt: &Prompt,
        options: &DetectOptions,
        mut profile: Option<&mut Profile>,
    ) -> Result<Vec<Vec<Detection>>, DetectorError> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let prompt_error =
            |source| DetectorError::Prompt { context: format!("prompt \"{}\"", prompt.caption()), source };
        let model = match &self.model {
            Model::GroundingDino(model) => model,
            Model::Glip(model) => return self.run_glip(model, images, prompt, options, profile),
        };
        let max_tokens = model.config().max_text_len.min(MAX_TEXT_LEN);
        let chunks = chunk_prompt(prompt, &self.tokenizer, max_tokens).map_err(prompt_error)?;
        let started = Instant::now();
        let preprocessed =
            images.iter().map(|image| self.preprocess.preprocess(image)).collect::<Result<Vec<_>, _>>()?;
        let tensors: Vec<Tensor<3>> = preprocessed.iter().map(|p| self.image_tensor(p)).collect();
        let sizes: Vec<[f32; 2]> = preprocessed
            .iter()
            .map(|p| [p.original_size.width as f32, p.original_size.height as f32])
            .collect();
        if let Some(profile) = profile.as_deref_mut() {
            profile.preprocess += started.elapsed();
        }

        let mut found: Vec<Vec<Detection>> = vec![Vec::new(); images.len()];
        for chunk in chunks.chunks() {
            let encoded = self.tokenizer.encode_prompt(&chunk.prompt).map_err(prompt_error)?;
            let ids = encoded.tokens.ids();
            let text = TextBatch::new(&vec![ids; images.len()], self.tokenizer.delimiter_ids(), &self.device);
            let started = Instant::now();
            let text_hidden = self.encoded_prompt(ids).repeat_dim(0, images.len());
            let output = match profile.as_deref_mut() {
                Some(profile) => {
                    let _ = self.device.sync();
                    profile.stages.text += started.elapsed();
                    let mut times = StageTimes::default();
                    let output = model.forward_with_text(&tensors, &text, text_hidden, Some(&mut times))?;
                    profile.add(&times);
                    output
                }
                None => model.forward_with_text(&tensors, &text, text_hidden, None)?,
            };
            let started = Instant::now();
            let per_image = batch_detections(
                &output.head,
                ids.len(),
                &encoded.positive_map,
                chunk.prompt.phrases(),
                &sizes,
                options,
            );
            for (all, chunk_detections) in found.iter_mut().zip(per_image) {
                all.extend(chunk_detections.into_iter().map(|mut d| {
                    d.phrase_index =
                        chunk.phrase_indices.get(d.phrase_index).copied().unwrap_or(d.phrase_index);
                    d
                }));
            }
            if let Some(profile) = profile.as_deref_mut() {
                profile.postprocess += started.elapsed();
            }
        }
        if chunks.len() == 1 {
            return Ok(found);
        }
        let nms = options.nms_options();
        Ok(found.into_iter().map(|d| suppress_detections(d, &nms)).collect())
    }

    /// GLIP's detections: the prompt in chunks of at most the model's tokens; a box is kept when
    /// its score (GLIP's `sqrt(phrase probability × centerness)`) is above `box_threshold`;
    /// per-phrase NMS at `nms_iou` (GLIP's 0.6 when unset).
    fn run_glip(
        &self,
        model: &Glip,
        images: &[RgbImage],
        prompt: &Prompt,
        options: &DetectOptions,
        mut profile: Option<&mut Profile>,
    ) -> Result<Vec<Vec<Detection>>, DetectorError> {
        let prompt_error =
            |source| DetectorError::Prompt { context: format!("prompt \"{}\"", prompt.caption()), source };
        model.check_prompt(&prompt.caption())?;
        let chunks =
            chunk_prompt(prompt, &self.tokenizer, model.config.max_text_len).map_err(prompt_error)?;
        let glip_options = glip_options(options);
        let mut timer = Timer::new(&self.device, profile.is_some());
        let preprocessed =
            images.iter().map(|image| self.preprocess.preprocess(image)).collect::<Result<Vec<_>, _>>()?;
        let (pixels, frames) = glip_input(&preprocessed, model.config.size_divisibility(), &self.device)?;
        let preprocess_time = timer.lap();
        let levels = model.fpn.forward(model.backbone.forward(pixels).map_err(GlipError::from)?);
        let backbone_time = timer.lap();
        let mut found: Vec<Vec<Detection>> = vec![Vec::new(); images.len()];
        let (mut text_time, mut head_time, mut post_time) = Default::default();
        for chunk in chunks.chunks() {
            let encoded = self.tokenizer.encode_prompt(&chunk.prompt).map_err(prompt_error)?;
            let ids = encoded.tokens.ids();
            let text = GlipText::new(&vec![ids; images.len()], &self.device);
            let features = self.encoded_prompt(ids).repeat_dim(0, images.len());
            text_time += timer.lap();
            let output =
                model.head.forward(levels.clone(), features, text.padding).map_err(GlipError::from)?;
            head_time += timer.lap();
            let per_image = model.detections(
                &output,
                &frames,
                &encoded.positive_map,
                chunk.prompt.phrases(),
                &glip_options,
            );
            for (all, detections) in found.iter_mut().zip(per_image) {
                all.extend(detections.into_iter().map(|mut d| {
                    d.phrase_index =
                        chunk.phrase_indices.get(d.phrase_index).copied().unwrap_or(d.phrase_index);
                    d
                }));
            }
            post_time += timer.lap();
        }
        if let Some(profile) = profile.as_deref_mut() {
            profile.preprocess += preprocess_time;
            profile.stages.backbone += backbone_time;
            profile.stages.text += text_time;
            profile.stages.encoder += head_time;
            profile.postprocess += post_time;
        }
        if chunks.len() == 1 {
            return Ok(found);
        }
        let nms = options.nms_options();
        Ok(found.into_iter().map(|d| suppress_detections(d, &nms)).collect())
    }

    /// The text encoder's features of one prompt (`[1, tokens, hidden]`), encoded once.
    fn encoded_prompt(&self, ids: &[u32]) -> Tensor<3> {
        let mut cache = self.encoded_prompts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(features) = cache.get(ids) {
            return features.clone();
        }
        let features = match &self.model {
            Model::GroundingDino(model) => {
                model.encode_text(&TextBatch::new(&[ids], self.tokenizer.delimiter_ids(), &self.device))
            }
            Model::Glip(model) => model.encode_text(&GlipText::new(&[ids], &self.device)),
        };
        if cache.len() >= ENCODED_PROMPTS {
            cache.clear();
        }
        cache.insert(ids.to_vec(), features.clone());
        features
    }

    fn image_tensor(&self, image: &PreprocessedImage) -> Tensor<3> {
        let t = &image.tensor;
        Tensor::from_data(TensorData::new(t.data.clone(), [3, t.height, t.width]), &self.device)
    }
}

/// Whether `dir` holds a GLIP model (its `config.json` says `"model_type": "glip"`).
fn is_glip_dir(dir: &Path) -> bool {
    #[derive(serde::Deserialize)]
    struct ModelType {
        model_type: Option<String>,
    }
    std::fs::read(dir.join("config.json"))
        .ok()
        .and_then(|json| serde_json::from_slice::<ModelType>(&json).ok())
        .is_some_and(|c| c.model_type.as_deref() == Some("glip"))
}

/// Wall time between laps, each ending when the device has finished its queued work. Off (no
/// waits, zero laps) when nobody asked for a profile.
struct Timer<'a> {
    device: &'a Device,
    last: Instant,
    on: bool,
}

impl<'a> Timer<'a> {
    fn new(device: &'a Device, on: bool) -> Self {
        Self { device, last: Instant::now(), on }
    }

    fn lap(&mut self) -> Duration {
        if !self.on {
            return Duration::ZERO;
        }
        let _ = self.device.sync();
        let now = Instant::now();
        let lap = now - self.last;
        self.last = now;
        lap
    }
}

/// The tokenizer at `path`; errors name the file.
/// The tokenizer of an original checkpoint file: the `tokenizer.json` beside it, else
/// bert-base-uncased's from the hub (both Grounding DINO and GLIP use it).
fn tokenizer_beside(path: &Path) -> Result<TextTokenizer, DetectorError> {
    let beside = path.parent().map(|dir| dir.join("tokenizer.json")).filter(|p| p.is_file());
    let tokenizer_path = match beside {
        Some(path) => path,
        None => resolve_model(BERT_BASE_UNCASED, &["tokenizer.json"], &HubOptions::from_env())?
            .join("tokenizer.json"),
    };
    load_tokenizer(&tokenizer_path)
}

/// A `glint_preprocess.json`.
fn read_preprocess(path: &Path) -> Result<PreprocessConfig, DataError> {
    let invalid = |message: String| DataError::format(path, "", message);
    let json = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let preprocess: PreprocessConfig = serde_json::from_slice(&json).map_err(|e| invalid(e.to_string()))?;
    preprocess.validate().map_err(|e| invalid(e.to_string()))?;
    Ok(preprocess)
}

fn load_tokenizer(path: &Path) -> Result<TextTokenizer, DetectorError> {
    TextTokenizer::from_file(path)
        .map_err(|source| DetectorError::Prompt { context: path.display().to_string(), source })
}

/// GLIP's post-processing for the detector's options: the box threshold on GLIP's score, NMS
/// at `nms_iou` (GLIP's 0.6 when unset).
fn glip_options(options: &DetectOptions) -> GlipDetectOptions {
    GlipDetectOptions {
        score_threshold: options.box_threshold,
        nms_iou: options.nms_iou.unwrap_or(GlipDetectOptions::default().nms_iou),
        max_detections: options.max_detections,
        ..GlipDetectOptions::default()
    }
}
