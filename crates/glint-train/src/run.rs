//! The training loop and its run directory.
//!
//! ```text
//! RUN_DIR/
//!   config.toml            the config of the run (as given at its start)
//!   metrics.jsonl          one JSON line per logged step and per evaluation
//!   latest.json            {"checkpoint": "checkpoints/step-000200"}: the newest complete checkpoint
//!   checkpoints/step-N/    a model directory (config.json, model.safetensors, tokenizer.json,
//!                          glint_preprocess.json) plus model.bpk, optimizer.bpk, state.json
//!   best/                  the model directory with the best validation AP so far, and its
//!                          evaluation.json
//! ```
//!
//! A checkpoint is written into `step-N.tmp/` and renamed when complete; only then does
//! `latest.json` (replaced atomically) point to it, so a run killed at any moment resumes from
//! a whole checkpoint and loses at most `checkpoint_every` steps; the metrics of the lost steps
//! are dropped from the log and logged again when they are redone. `model.bpk` keeps Burn's
//! parameter ids, which the optimiser's state is keyed by. Batches and augmentation depend only
//! on the seed and the step, so a resumed run continues the original's loss curve.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, ModuleOptimizer};

use burn::store::{BurnpackStore, ModuleSnapshot};
use burn::tensor::{Device, Gradients, Tensor, TensorData};
use glint_core::eval::EvalReport;
use glint_core::io::write_atomic;
use glint_core::prompt::TextTokenizer;
use glint_data::batch::pad_batch_divisible;
use glint_data::preprocess::PREPROCESS_FILE;
use glint_nn::detector::glip::{Glip, GlipBackbone, GlipConfig, GlipText};
use glint_nn::detector::prompt_tuning::PromptTuning;
use glint_nn::loss::atss::GroundingTarget;
use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::clip::clip_grad_norm;
use crate::config::{ModelConfig, TrainConfig};
use crate::data::{
    Example, LoadedSet, draw, kept_categories, load_source, make_example, step_rng, write_ground_truth,
};
use crate::evaluate::evaluate;
use crate::grounding_dino::GroundingDinoTrainer;
use crate::pretrain::{PretrainStep, pretrain_backbone};

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The run directory.
    pub out: PathBuf,
    /// Continue the run in `out` from its latest checkpoint.
    pub resume: bool,
    /// The device to train on (an autodiff device).
    pub device: Device,
    /// Stop after this step as if killed (after its checkpoint, if one is due).
    pub stop_after: Option<usize>,
}

/// What a run reached.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Steps done, in total.
    pub steps: usize,
    /// The step the run started at (0, or the resumed checkpoint's).
    pub started_at: usize,
    /// Total loss of each step run in this call.
    pub losses: Vec<f32>,
    pub best_ap: Option<f64>,
    /// The last evaluation.
    pub last_eval: Option<EvalReport>,
}

/// Progress reported to the caller (the CLI draws its progress bar from these).
#[derive(Debug)]
pub enum Event<'a> {
    Started {
        start_step: usize,
        steps: usize,
    },
    /// A step of the backbone pretraining (before the first step of a new run).
    Pretraining {
        step: &'a PretrainStep,
        steps: usize,
    },
    Step(&'a StepMetrics),
    EvalProgress {
        done: usize,
        total: usize,
    },
    Evaluated {
        step: usize,
        report: &'a EvalReport,
        best: bool,
    },
    Checkpoint {
        step: usize,
        dir: &'a Path,
    },
}

/// One step's numbers (a line of `metrics.jsonl`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepMetrics {
    pub step: usize,
    pub loss: f32,
    /// The loss's terms by name (GLIP: `token`, `box`, `centerness`; Grounding DINO: `token`,
    /// `l1`, `giou` of the last decoder layer).
    #[serde(flatten)]
    pub terms: BTreeMap<String, f32>,
    pub positives: usize,
    pub lr: f64,
    pub images_per_s: f64,
    /// The global gradient norm before clipping (when clipping is on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grad_norm: Option<f32>,
}

/// `state.json` of a checkpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct CheckpointState {
    /// Steps done.
    step: usize,
}

/// `evaluation.json` of the `best` model: when and how well it scored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BestEvaluation {
    pub step: usize,
    pub metrics: glint_core::eval::CocoMetrics,
}

#[derive(Debug, Serialize, Deserialize)]
struct Latest {
    checkpoint: PathBuf,
}

/// Train as `config` says, in `options.out`. `on_event` sees progress.
pub fn train(
    config: &TrainConfig,
    options: &RunOptions,
    mut on_event: impl FnMut(Event),
) -> Result<RunSummary, TrainError> {
    config.validate().map_err(|message| TrainError::config(&options.out, message))?;
    let out = &options.out;
    let resume_from = prepare_run_dir(out, options.resume)?;
    if resume_from.is_some() {
        check_same_run(config, &out.join("config.toml"))?;
    }
    let device = &options.device;
    let tokenizer = TextTokenizer::from_file(&config.tokenizer)
        .map_err(|source| TrainError::Prompt { context: config.tokenizer.display().to_string(), source })?;

    let keep = kept_categories(config)?;
    let sets =
        config.data.train.iter().map(|s| load_source(s, keep.as_ref())).collect::<Result<Vec<_>, _>>()?;
    if let Some((i, _)) = sets.iter().enumerate().find(|(_, s)| s.dataset.samples.is_empty()) {
        return Err(TrainError::config(out, format!("data.train[{i}] has no images")));
    }
    let val = config.data.val.as_ref().map(|s| load_source(s, keep.as_ref())).transpose()?;
    let run = Run { config, options, tokenizer: &tokenizer, sets: &sets, val: val.as_ref() };

    // The initial weights follow the seed too.
    device.seed(config.seed);
    match &config.model {
        ModelConfig::Glip(glip) => {
            let model = glip_model(glip, config, &sets, out, device)?;
            let (model, optimizer, state) = run.resume(model, resume_from.as_deref())?;
            // After loading the checkpoint: the frozen parts stay as they were.
            let mut model = freeze(model, config);
            let val_gt = run.write_start_files(resume_from.is_none())?;
            if let Some(pretraining) = config.backbone_pretraining.as_ref().filter(|_| resume_from.is_none())
            {
                model.backbone = pretrain(model.backbone.clone(), glip, pretraining, &run, &mut on_event)?;
            }
            let trainer = GlipTrainer { config, glip, tokenizer: &tokenizer };
            run.steps(&trainer, model, optimizer, state, val_gt, on_event)
        }
        ModelConfig::GroundingDino(training) => {
            let trainer = GroundingDinoTrainer::load(config, training, &tokenizer)?;
            let model = trainer.initial_model(device)?;
            let (model, optimizer, state) = run.resume(model, resume_from.as_deref())?;
            let model = trainer.freeze(model);
            let val_gt = run.write_start_files(resume_from.is_none())?;
            run.steps(&trainer, model, optimizer, state, val_gt, on_event)
        }
    }
}

/// A new GLIP as the config says: random, or from `init_from`, with ImageNet backbone weights
/// or a prompt tuning when asked.
fn glip_model(
    glip: &GlipConfig,
    config: &TrainConfig,
    sets: &[LoadedSet],
    out: &Path,
    device: &Device,
) -> Result<Glip, TrainError> {
    let mut model = glip.init(device)?;
    if let Some(source) = &config.init_from {
        model = if source.is_file() {
            model.load_official(source)?
        } else {
            glint_nn::weights::load_safetensors(
                model,
                source.join(glint_nn::detector::glip::GLIP_WEIGHTS),
                &Default::default(),
            )?
        };
    }
    if let Some(path) = &config.backbone_weights {
        model.backbone = model.backbone.load_pretrained(path)?;
    }
    if config.prompt_tuning {
        let prompt = tuned_prompt(sets, out)?;
        let tuning = PromptTuning::zeros(prompt, glip.max_text_len, glip.text.hidden_size, device);
        model = model.with_prompt_tuning(tuning)?;
    }
    Ok(model)
}

/// The backbone pretraining of a new GLIP run, logged as step 0.
fn pretrain(
    backbone: GlipBackbone,
    glip: &GlipConfig,
    pretraining: &crate::pretrain::BackbonePretraining,
    run: &Run,
    on_event: &mut impl FnMut(Event),
) -> Result<GlipBackbone, TrainError> {
    let (config, out) = (run.config, &run.options.out);
    let channels = glip.backbone.out_channels().map_err(|e| TrainError::config(out, e))?;
    let channels = channels.last().copied().unwrap_or_default();
    pretrain_backbone(
        backbone,
        channels,
        run.sets,
        pretraining,
        &config.preprocess,
        config.seed,
        &run.options.device,
        |step| {
            if step.pretrain_step % config.log_every == 0 || step.pretrain_step == pretraining.steps {
                // Logged as step 0: before the first grounding step, kept by a resume.
                let mut line = serde_json::to_value(step).expect("metrics serialise");
                line["step"] = 0.into();
                let _ = append_metrics(out, &line);
            }
            on_event(Event::Pretraining { step, steps: pretraining.steps });
        },
    )
}

/// A micro-batch's loss: the total to differentiate and its named terms, for the log.
pub(crate) struct StepLoss {
    pub total: Tensor<1>,
    pub terms: Vec<(&'static str, Tensor<1>)>,
    /// Targets matched (GLIP: positive anchors; Grounding DINO: target boxes).
    pub positives: usize,
}

/// What the training loop needs of a detector.
pub(crate) trait Trainer {
    type Model: Module + Clone;
    /// The run's config.
    fn config(&self) -> &TrainConfig;
    /// The longest prompt the model takes, in tokens.
    fn max_text_len(&self) -> usize;
    /// The loss of a micro-batch.
    fn loss(
        &self,
        model: &Self::Model,
        examples: &[Example],
        device: &Device,
    ) -> Result<StepLoss, TrainError>;
    /// The gradients by learning rate: backbone, text encoder, the rest.
    fn split_gradients(&self, model: &Self::Model, grads: Gradients) -> [GradientsParams; 3];
    /// Write the weights and the model config of `model` (not an autodiff one) into `dir`.
    fn write_weights(&self, model: &Self::Model, dir: &Path) -> Result<(), TrainError>;
    /// COCO AP of `model` (not an autodiff one) on a detection set, `batch` images at a time.
    fn evaluate(
        &self,
        model: &Self::Model,
        set: &LoadedSet,
        ground_truth: &Path,
        batch: usize,
        progress: &mut dyn FnMut(usize),
    ) -> Result<EvalReport, TrainError>;
}

/// One call of [`train`]: its config, options and data.
struct Run<'a> {
    config: &'a TrainConfig,
    options: &'a RunOptions,
    tokenizer: &'a TextTokenizer,
    sets: &'a [LoadedSet],
    val: Option<&'a LoadedSet>,
}

impl Run<'_> {
    /// The optimiser, and the model and state of the checkpoint `from` when resuming.
    fn resume<M: Module>(
        &self,
        mut model: M,
        from: Option<&Path>,
    ) -> Result<(M, ModuleOptimizer, CheckpointState), TrainError> {
        let o = &self.config.optimizer;
        let adamw = AdamWConfig::new()
            .with_weight_decay(o.weight_decay)
            .with_beta_1(o.beta1)
            .with_beta_2(o.beta2)
            .with_epsilon(o.epsilon);
        let optimizer: ModuleOptimizer = adamw.init();
        let Some(dir) = from else { return Ok((model, optimizer, CheckpointState::default())) };
        let load_error = |path: PathBuf, e: &dyn std::fmt::Display| TrainError::Checkpoint {
            path,
            message: e.to_string(),
        };
        let mut store = BurnpackStore::from_file(dir.join("model.bpk"));
        model.load_from(&mut store).map_err(|e| load_error(dir.join("model.bpk"), &e))?;
        let optimizer = optimizer
            .load(dir.join("optimizer.bpk"))
            .map_err(|e| load_error(dir.join("optimizer.bpk"), &e))?;
        let state: CheckpointState = read_json(&dir.join("state.json"))?;
        forget_metrics_after(&self.options.out, state.step)?;
        Ok((model, optimizer, state))
    }

    /// Files written once everything has loaded (a config that fails leaves the directory
    /// empty): the validation ground truth, and for a new run its config. Returns the ground
    /// truth's path.
    fn write_start_files(&self, new_run: bool) -> Result<Option<PathBuf>, TrainError> {
        let out = &self.options.out;
        let val_gt = match self.val {
            Some(set) if set.detection => {
                let path = out.join("val_ground_truth.json");
                write_ground_truth(set, &path)?;
                Some(path)
            }
            _ => None,
        };
        if new_run {
            let toml = toml::to_string_pretty(self.config).map_err(|e| TrainError::config(out, e))?;
            write_atomic(&out.join("config.toml"), toml.as_bytes())
                .map_err(|e| TrainError::write(&out.join("config.toml"), e))?;
        }
        Ok(val_gt)
    }

    /// The optimiser steps from `state.step` on, with checkpoints, logs and evaluations.
    fn steps<T: Trainer>(
        &self,
        trainer: &T,
        mut model: T::Model,
        mut optimizer: ModuleOptimizer,
        mut state: CheckpointState,
        val_gt: Option<PathBuf>,
        mut on_event: impl FnMut(Event),
    ) -> Result<RunSummary, TrainError> {
        let (config, options) = (self.config, self.options);
        let (out, device, o) = (&options.out, &options.device, &config.optimizer);
        let start = state.step;
        on_event(Event::Started { start_step: start, steps: config.steps });
        let best_so_far = out.join("best").join("evaluation.json");
        let best_ap = match best_so_far.is_file() {
            true => Some(read_json::<BestEvaluation>(&best_so_far)?.metrics.ap),
            false => None,
        };
        let mut summary =
            RunSummary { steps: start, started_at: start, losses: Vec::new(), best_ap, last_eval: None };
        let micro_batch = config.batch_size / config.grad_accumulation;
        let max_len = trainer.max_text_len();
        let save = |model: &T::Model, optimizer: &ModuleOptimizer, state: &CheckpointState| {
            save_checkpoint(out, trainer, model, optimizer, state)
        };
        for step in start..config.steps {
            let started = Instant::now();
            let mut rng = step_rng(config.seed, step);
            // Dropout draws from the device's generator: reseeded per step, so a resumed run draws
            // what the original would have.
            device.seed(config.seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let drawn = draw(self.sets, config.batch_size, &mut rng);
            let lr = o.lr * config.schedule.factor(step, config.steps);
            let mut accumulated =
                [GradientsAccumulator::new(), GradientsAccumulator::new(), GradientsAccumulator::new()];
            let mut terms: BTreeMap<String, f32> = BTreeMap::new();
            let mut total = 0.0f32;
            let mut positives = 0;
            for micro in drawn.chunks(micro_batch) {
                let examples = micro
                    .iter()
                    .map(|&(set, index)| {
                        let set = &self.sets[set];
                        let sample = &set.dataset.samples[index];
                        make_example(sample, set.detection, config, self.tokenizer, max_len, &mut rng)
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let loss = trainer.loss(&model, &examples, device)?;
                let values = host_scalars(&loss);
                let share = config.grad_accumulation as f32;
                total += values[0] / share;
                for ((name, _), value) in loss.terms.iter().zip(&values[1..]) {
                    *terms.entry(name.to_string()).or_default() += value / share;
                }
                positives += loss.positives;
                if !values.iter().all(|v| v.is_finite()) {
                    let dir = save(&model, &optimizer, &state)?;
                    let names = std::iter::once("total").chain(loss.terms.iter().map(|(name, _)| *name));
                    let terms = names
                        .zip(&values)
                        .map(|(name, v)| format!("{name} {v}"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    return Err(TrainError::NonFinite { step, terms, checkpoint: dir });
                }
                let grads = (loss.total / config.grad_accumulation as f32).backward();
                for (acc, g) in accumulated.iter_mut().zip(trainer.split_gradients(&model, grads)) {
                    acc.accumulate(&model, g);
                }
            }
            let mut parts = accumulated.map(|mut acc| acc.grads());
            let grad_norm = match o.clip_grad_norm > 0.0 {
                true => Some(clip_grad_norm(&model, &mut parts, o.clip_grad_norm)),
                false => None,
            };
            let [backbone, text, rest] = parts;
            model = optimizer.step(lr * o.backbone_lr_mult, model, backbone);
            model = optimizer.step(lr * o.text_lr_mult, model, text);
            model = optimizer.step(lr, model, rest);
            state.step = step + 1;
            summary.steps = step + 1;
            summary.losses.push(total);

            let metrics = StepMetrics {
                step: step + 1,
                loss: total,
                terms,
                positives,
                lr,
                images_per_s: config.batch_size as f64 / started.elapsed().as_secs_f64().max(1e-9),
                grad_norm,
            };
            on_event(Event::Step(&metrics));
            let last = step + 1 == config.steps;
            if (step + 1) % config.log_every == 0 || last {
                append_metrics(out, &serde_json::to_value(&metrics).expect("metrics serialise"))?;
            }
            // Checkpoint first: an evaluation that fails must not lose the steps.
            if (step + 1) % config.checkpoint_every == 0 || last || options.stop_after == Some(step + 1) {
                let dir = save(&model, &optimizer, &state)?;
                on_event(Event::Checkpoint { step: step + 1, dir: &dir });
            }
            let eval_due = config.eval_every > 0 && (step + 1) % config.eval_every == 0;
            if let (Some(set), Some(gt)) = (self.val, &val_gt)
                && (eval_due || last)
            {
                let valid = model.valid();
                let total = set.dataset.samples.len();
                let progress = &mut |done| on_event(Event::EvalProgress { done, total });
                let report = trainer.evaluate(&valid, set, gt, micro_batch, progress)?;
                let best = summary.best_ap.is_none_or(|b| report.metrics.ap > b);
                if best {
                    summary.best_ap = Some(report.metrics.ap);
                    let evaluation = BestEvaluation { step: step + 1, metrics: report.metrics.clone() };
                    save_model_dir(&valid, trainer, &out.join("best"), Some(&evaluation))?;
                }
                append_metrics(
                    out,
                    &serde_json::json!({"step": step + 1, "eval": report.metrics, "best": best}),
                )?;
                on_event(Event::Evaluated { step: step + 1, report: &report, best });
                summary.last_eval = Some(report);
            }
            if options.stop_after == Some(step + 1) {
                break;
            }
        }
        Ok(summary)
    }
}

/// GLIP in training: the ATSS loss, GLIP's evaluation, glint's model directory.
struct GlipTrainer<'a> {
    config: &'a TrainConfig,
    glip: &'a GlipConfig,
    tokenizer: &'a TextTokenizer,
}

impl Trainer for GlipTrainer<'_> {
    type Model = Glip;

    fn config(&self) -> &TrainConfig {
        self.config
    }

    fn max_text_len(&self) -> usize {
        self.glip.max_text_len
    }

    fn loss(&self, model: &Glip, examples: &[Example], device: &Device) -> Result<StepLoss, TrainError> {
        let (pixels, text, targets) = batch(examples, self.glip.size_divisibility(), device)?;
        let output = model.forward(pixels, &text)?;
        let anchors = model.anchors(&output.level_sizes);
        let loss = self.config.loss.loss(&output, &anchors, self.glip.box_convention, &targets);
        Ok(StepLoss {
            total: loss.total,
            terms: vec![("token", loss.token), ("box", loss.boxes), ("centerness", loss.centerness)],
            positives: loss.num_positive,
        })
    }

    fn split_gradients(&self, model: &Glip, mut grads: Gradients) -> [GradientsParams; 3] {
        let backbone = GradientsParams::from_module(&mut grads, &model.backbone);
        let text = GradientsParams::from_module(&mut grads, &model.text);
        [backbone, text, GradientsParams::from_grads(grads, model)]
    }

    fn write_weights(&self, model: &Glip, dir: &Path) -> Result<(), TrainError> {
        Ok(model.save_dir(dir)?)
    }

    fn evaluate(
        &self,
        model: &Glip,
        set: &LoadedSet,
        ground_truth: &Path,
        batch: usize,
        progress: &mut dyn FnMut(usize),
    ) -> Result<EvalReport, TrainError> {
        let device = model.devices().first().cloned().unwrap_or_else(Device::flex);
        let c = self.config;
        evaluate(model, &set.dataset, ground_truth, &c.preprocess, self.tokenizer, batch, &device, progress)
    }
}

/// The prompt a prompt tuning learns: the caption of all categories, the same in every set.
fn tuned_prompt(sets: &[LoadedSet], out: &Path) -> Result<String, TrainError> {
    let captions: HashSet<&str> =
        sets.iter().flat_map(|s| s.dataset.samples.iter().map(|x| &*x.caption)).collect();
    if sets.iter().any(|s| !s.detection) || captions.len() != 1 {
        return Err(TrainError::config(
            out,
            "prompt_tuning learns one prompt: data.train must be detection sets with the same categories",
        ));
    }
    Ok(captions.into_iter().next().unwrap_or_default().to_string())
}

/// `model` with the parts the config names frozen, or, for prompt tuning, all but the tuning.
fn freeze(mut model: Glip, config: &TrainConfig) -> Glip {
    let frozen = |part: &str| config.prompt_tuning || config.freeze.iter().any(|p| p == part);
    if frozen("backbone") {
        model.backbone = model.backbone.freeze();
    }
    if frozen("fpn") {
        model.fpn = model.fpn.freeze();
    }
    if frozen("text") {
        model.text = model.text.freeze();
    }
    if frozen("head") {
        model.head = model.head.freeze();
    } else if frozen("head.layers") {
        model.head.layers = model.head.layers.freeze();
    }
    model
}

/// Examples as a padded image batch, padded prompts and targets.
fn batch(
    examples: &[Example],
    divisibility: usize,
    device: &Device,
) -> Result<(Tensor<4>, GlipText, Vec<GroundingTarget>), TrainError> {
    let images = pad_batch_divisible(examples.iter().map(|e| &e.image), divisibility)?;
    let pixels = Tensor::from_data(
        TensorData::new(images.data, [images.batch, 3, images.height, images.width]),
        device,
    );
    let ids: Vec<&[u32]> = examples.iter().map(|e| e.ids.as_slice()).collect();
    Ok((pixels, GlipText::new(&ids, device), examples.iter().map(|e| e.target.clone()).collect()))
}

/// The total and the terms of a loss, in one copy from the device.
fn host_scalars(loss: &StepLoss) -> Vec<f32> {
    let all: Vec<Tensor<1>> =
        std::iter::once(loss.total.clone()).chain(loss.terms.iter().map(|(_, t)| t.clone())).collect();
    let count = all.len();
    let values = Tensor::cat(all, 0).into_data().try_into_vec_as::<f32>().unwrap_or_default();
    (0..count).map(|i| values.get(i).copied().unwrap_or(f32::NAN)).collect()
}

/// A resumed run must be the same run: only its length and rhythm (steps, evaluation,
/// checkpoint and log intervals) may change.
fn check_same_run(config: &TrainConfig, saved: &Path) -> Result<(), TrainError> {
    let mut original = TrainConfig::from_toml_file(saved)?;
    original.steps = config.steps;
    original.eval_every = config.eval_every;
    original.checkpoint_every = config.checkpoint_every;
    original.log_every = config.log_every;
    if &original != config {
        return Err(TrainError::config(
            saved,
            "the run was started with another config; resume with this one (only steps, eval_every, checkpoint_every and log_every may change)",
        ));
    }
    Ok(())
}

/// The newest complete checkpoint of a run directory (a model directory).
pub fn latest_checkpoint(out: &Path) -> Result<PathBuf, TrainError> {
    let pointer: Latest = read_json(&out.join("latest.json"))?;
    Ok(out.join(pointer.checkpoint))
}

/// Check the run directory: a new run needs it empty or missing; a resumed one needs a
/// checkpoint. Returns the checkpoint to resume from.
fn prepare_run_dir(out: &Path, resume: bool) -> Result<Option<PathBuf>, TrainError> {
    let error = |message: String| TrainError::RunDir { path: out.to_path_buf(), message };
    let latest = out.join("latest.json");
    if resume {
        if !latest.is_file() {
            return Err(error("has no checkpoint to resume from (no latest.json)".into()));
        }
        return latest_checkpoint(out).map(Some);
    }
    // Empty, or holding only the files of a run that ended before its first checkpoint.
    let ours = ["config.toml", "val_ground_truth.json", "metrics.jsonl"];
    if out.exists() {
        for entry in std::fs::read_dir(out).map_err(|e| TrainError::write(out, e))? {
            let name = entry.map_err(|e| TrainError::write(out, e))?.file_name();
            if !ours.iter().any(|ours| name == *ours) {
                return Err(error(
                    "is not empty: pass --resume to continue its run, or choose another --out".into(),
                ));
            }
        }
        let _ = std::fs::remove_file(out.join("metrics.jsonl"));
    }
    std::fs::create_dir_all(out).map_err(|e| TrainError::write(out, e))?;
    Ok(None)
}

/// Write the `step-N` checkpoint, point `latest.json` at it, and drop older checkpoints.
fn save_checkpoint<T: Trainer>(
    out: &Path,
    trainer: &T,
    model: &T::Model,
    optimizer: &ModuleOptimizer,
    state: &CheckpointState,
) -> Result<PathBuf, TrainError> {
    let name = format!("step-{:06}", state.step);
    let checkpoints = out.join("checkpoints");
    let tmp = checkpoints.join(format!("{name}.tmp"));
    let dir = checkpoints.join(&name);
    if dir.is_dir() {
        // This step's checkpoint is complete already (written before a stop or a divergence).
        return Ok(dir);
    }
    write_model_files(&model.valid(), trainer, &tmp)?;
    let save_error =
        |path: PathBuf, e: &dyn std::fmt::Display| TrainError::Checkpoint { path, message: e.to_string() };
    let mut store = BurnpackStore::from_file(tmp.join("model.bpk"));
    model.save_into(&mut store).map_err(|e| save_error(tmp.join("model.bpk"), &e))?;
    optimizer.save(tmp.join("optimizer.bpk")).map_err(|e| save_error(tmp.join("optimizer.bpk"), &e))?;
    write_json(&tmp.join("state.json"), state)?;
    std::fs::rename(&tmp, &dir).map_err(|e| TrainError::write(&dir, e))?;
    write_json(&out.join("latest.json"), &Latest { checkpoint: PathBuf::from("checkpoints").join(&name) })?;
    for entry in std::fs::read_dir(&checkpoints).map_err(|e| TrainError::write(&checkpoints, e))?.flatten() {
        if entry.file_name() != name.as_str() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    Ok(dir)
}

/// A model directory `glint detect` loads: config, weights, tokenizer and preprocessing. An
/// existing directory is replaced only once the new one is complete.
fn save_model_dir<T: Trainer>(
    model: &T::Model,
    trainer: &T,
    dir: &Path,
    evaluation: Option<&BestEvaluation>,
) -> Result<(), TrainError> {
    let tmp = dir.with_extension("tmp");
    write_model_files(model, trainer, &tmp)?;
    if let Some(evaluation) = evaluation {
        write_json(&tmp.join("evaluation.json"), evaluation)?;
    }
    let old = dir.with_extension("old");
    if old.exists() {
        // Left by a crash between the renames below; `dir` is complete if it exists.
        if dir.exists() {
            std::fs::remove_dir_all(&old).map_err(|e| TrainError::write(&old, e))?;
        } else {
            std::fs::rename(&old, dir).map_err(|e| TrainError::write(dir, e))?;
        }
    }
    if dir.exists() {
        std::fs::rename(dir, &old).map_err(|e| TrainError::write(dir, e))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| TrainError::write(dir, e))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| TrainError::write(&old, e))?;
    }
    Ok(())
}

/// Write a model directory's files into `dir`, which is emptied first.
fn write_model_files<T: Trainer>(model: &T::Model, trainer: &T, dir: &Path) -> Result<(), TrainError> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| TrainError::write(dir, e))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| TrainError::write(dir, e))?;
    trainer.write_weights(model, dir)?;
    let config = trainer.config();
    let tokenizer = std::fs::read(&config.tokenizer).map_err(|e| TrainError::config(&config.tokenizer, e))?;
    write_atomic(&dir.join("tokenizer.json"), &tokenizer)
        .map_err(|e| TrainError::write(&dir.join("tokenizer.json"), e))?;
    write_json(&dir.join(PREPROCESS_FILE), &config.preprocess)
}

fn append_metrics(out: &Path, line: &serde_json::Value) -> Result<(), TrainError> {
    use std::io::Write;
    let path = out.join("metrics.jsonl");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| TrainError::write(&path, e))?;
    writeln!(file, "{line}").map_err(|e| TrainError::write(&path, e))
}

/// Drop the metrics lines of steps after `step` (logged by a run killed after its last
/// checkpoint; the resumed run logs them again), so the log stays one line per step.
fn forget_metrics_after(out: &Path, step: usize) -> Result<(), TrainError> {
    let path = out.join("metrics.jsonl");
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(()) };
    let kept: String = text
        .lines()
        .filter(|line| {
            let logged =
                serde_json::from_str::<serde_json::Value>(line).ok().and_then(|v| v["step"].as_u64());
            logged.is_some_and(|s| s as usize <= step)
        })
        .map(|line| format!("{line}\n"))
        .collect();
    write_atomic(&path, kept.as_bytes()).map_err(|e| TrainError::write(&path, e))
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<(), TrainError> {
    let json = serde_json::to_vec_pretty(value).expect("state serialises");
    write_atomic(path, &json).map_err(|e| TrainError::write(path, e))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, TrainError> {
    let bytes = std::fs::read(path).map_err(|e| TrainError::config(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| TrainError::config(path, e))
}
