//! Fine-tuning Grounding DINO: the model and its weights come from a checkpoint (`init_from`: a
//! transformers directory or an IDEA-Research `.pth`), the loss is the set loss
//! ([`glint_nn::loss::grounding_dino`]) over the encoder's proposals and every decoder layer,
//! and every saved model is a transformers checkpoint directory: the source checkpoint's
//! tensors with the trained values written back under their own keys, so `glint detect`,
//! `Detector::from_pretrained` and transformers all load it.
//!
//! What the reference trains with and glint does not: dropout and Swin's stochastic depth
//! (the forward pass has none), and denoising queries (transformers has none either).

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::store::burn_pack::Tensor as PackTensor;
use burn::tensor::{Device, Gradients, Tensor};
use glint_core::eval::EvalReport;
use glint_core::geometry::BoxCxcywh;
use glint_core::prompt::TextTokenizer;
use glint_nn::detector::grounding_dino::{GroundingDino, TextBatch};
use glint_nn::head::grounding_dino::GroundingDinoConfig;
use glint_nn::loss::grounding_dino::SetTarget;
use glint_nn::weights::idea::IdeaCheckpoint;
use glint_nn::weights::{read_safetensors, write_safetensors};

use crate::TrainError;
use crate::config::{GroundingDinoTraining, TrainConfig};
use crate::data::{Example, LoadedSet};
use crate::evaluate::{evaluate_grounding_dino, image_tensor};
use crate::run::{StepLoss, Trainer};

/// Grounding DINO in training, with the checkpoint it started from.
pub(crate) struct GroundingDinoTrainer<'a> {
    config: &'a TrainConfig,
    training: &'a GroundingDinoTraining,
    tokenizer: &'a TextTokenizer,
    model_config: GroundingDinoConfig,
    /// The file the weights came from, and its tensors under transformers' names.
    weights: PathBuf,
    tensors: Vec<PackTensor>,
    /// A transformers directory's `config.json`, copied unchanged into every saved model.
    config_json: Option<Vec<u8>>,
}

impl<'a> GroundingDinoTrainer<'a> {
    /// Read the checkpoint `config.init_from` names.
    pub(crate) fn load(
        config: &'a TrainConfig,
        training: &'a GroundingDinoTraining,
        tokenizer: &'a TextTokenizer,
    ) -> Result<Self, TrainError> {
        let Some(source) = &config.init_from else {
            return Err(TrainError::config(
                Path::new("init_from"),
                "a Grounding DINO run needs a checkpoint",
            ));
        };
        let (model_config, weights, tensors, config_json) = if source.is_dir() {
            let config_path = source.join("config.json");
            let model_config = GroundingDinoConfig::from_json_file(&config_path)?;
            let json = std::fs::read(&config_path).map_err(|e| TrainError::config(&config_path, e))?;
            let weights = source.join("model.safetensors");
            let tensors = read_safetensors(&weights)?;
            (model_config, weights, tensors, Some(json))
        } else {
            let model_config = GroundingDinoConfig::for_pth(source)?;
            let tensors = IdeaCheckpoint::read(source)?.into_tensors();
            (model_config, source.clone(), tensors, None)
        };
        Ok(Self { config, training, tokenizer, model_config, weights, tensors, config_json })
    }

    /// The model with the checkpoint's weights.
    pub(crate) fn initial_model(&self, device: &Device) -> Result<GroundingDino, TrainError> {
        let model = GroundingDino::new(&self.model_config, device)?;
        Ok(model.load_tensors(&self.weights, self.tensors.clone())?)
    }

    /// `model` with the parts the config names frozen.
    pub(crate) fn freeze(&self, mut model: GroundingDino) -> GroundingDino {
        let frozen = |part: &str| self.config.freeze.iter().any(|p| p == part);
        if frozen("backbone") {
            model.backbone = model.backbone.freeze();
        }
        if frozen("text") {
            model.text_backbone = model.text_backbone.freeze();
        }
        if frozen("head") {
            model.head = model.head.freeze();
        }
        if frozen("encoder") {
            model.head.encoder = model.head.encoder.freeze();
        }
        if frozen("decoder") {
            model.head.decoder = model.head.decoder.freeze();
        }
        model
    }
}

impl Trainer for GroundingDinoTrainer<'_> {
    type Model = GroundingDino;

    fn config(&self) -> &TrainConfig {
        self.config
    }

    fn max_text_len(&self) -> usize {
        self.model_config.max_text_len
    }

    fn loss(
        &self,
        model: &GroundingDino,
        examples: &[Example],
        device: &Device,
    ) -> Result<StepLoss, TrainError> {
        let images: Vec<Tensor<3>> = examples.iter().map(|e| image_tensor(&e.image, device)).collect();
        let ids: Vec<&[u32]> = examples.iter().map(|e| e.ids.as_slice()).collect();
        let text = TextBatch::new(&ids, self.tokenizer.delimiter_ids(), device);
        let output = model.forward(&images, &text)?;
        let mut layers = model.training_outputs(&output, &text);
        if !self.training.auxiliary_loss {
            layers.drain(..layers.len() - 1);
        }
        let targets: Vec<SetTarget> = examples.iter().map(set_target).collect();
        let text_mask = text.padding.clone().bool_not();
        let (total, terms) = self
            .training
            .loss
            .loss(&layers, text_mask, &targets)
            .map_err(|e| TrainError::Detection(format!("matching: {e}")))?;
        let last = terms.last().cloned().expect("the last decoder layer is always supervised");
        Ok(StepLoss {
            total,
            terms: vec![("token", last.labels), ("l1", last.l1), ("giou", last.giou)],
            positives: targets.iter().map(|t| t.boxes.len()).sum(),
        })
    }

    fn split_gradients(&self, model: &GroundingDino, mut grads: Gradients) -> [GradientsParams; 3] {
        let backbone = GradientsParams::from_module(&mut grads, &model.backbone);
        let text = GradientsParams::from_module(&mut grads, &model.text_backbone);
        [backbone, text, GradientsParams::from_grads(grads, model)]
    }

    fn write_weights(&self, model: &GroundingDino, dir: &Path) -> Result<(), TrainError> {
        let tensors = model.export_tensors(&self.weights, self.tensors.clone())?;
        write_safetensors(&tensors, dir.join("model.safetensors"))?;
        let config_json = match &self.config_json {
            Some(json) => json.clone(),
            None => serde_json::to_vec_pretty(&self.model_config).expect("the config serialises"),
        };
        let path = dir.join("config.json");
        glint_core::io::write_atomic(&path, &config_json).map_err(|e| TrainError::write(&path, e))
    }

    fn evaluate(
        &self,
        model: &GroundingDino,
        set: &LoadedSet,
        ground_truth: &Path,
        batch: usize,
        progress: &mut dyn FnMut(usize),
    ) -> Result<EvalReport, TrainError> {
        let device = model.devices().first().cloned().unwrap_or_else(Device::flex);
        let c = self.config;
        evaluate_grounding_dino(
            model,
            &set.dataset,
            ground_truth,
            &c.preprocess,
            self.tokenizer,
            batch,
            &device,
            progress,
        )
    }
}

/// An example's targets as the set loss takes them: boxes as `cxcywh` fractions of the image.
fn set_target(example: &Example) -> SetTarget {
    let (w, h) = (example.image.width as f32, example.image.height as f32);
    let target = &example.target;
    let boxes = target
        .boxes
        .iter()
        .map(|b| BoxCxcywh {
            cx: (b.x0 + b.x1) / 2.0 / w,
            cy: (b.y0 + b.y1) / 2.0 / h,
            w: (b.x1 - b.x0) / w,
            h: (b.y1 - b.y0) / h,
        })
        .collect();
    SetTarget { boxes, token_maps: target.token_maps.clone() }
}
