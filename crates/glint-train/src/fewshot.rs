//! The K-shot benchmark (`glint fewshot`): for each K and seed, draw K instances per category
//! from the training set, adapt a base GLIP model to them in each tuning mode, and score it on
//! the validation set; then one table of mean ± std over the seeds.
//!
//! ```text
//! OUT/
//!   fewshot.toml                       the benchmark's config (a resumed one must match it)
//!   splits/{K}shot-seed{S}.json        each K-shot training split, COCO json (reusable)
//!   splits/val-{V}shot-seed{S}.json    the validation split of each seed, when `val_shots` > 0
//!   runs/{K}shot-seed{S}/{mode}/       the training run of a tuning (scratch: removed once scored)
//!   results/{K}shot-seed{S}/{mode}/    results.json (COCO results), evaluation.json, and for
//!                                      `prompt` the learnt prompt_tuning.safetensors
//!   results/zero-shot[-seed{S}]/       the base model's own results (one per validation split)
//!   table.md, table.json               mean ± std over seeds per K and mode
//! ```
//!
//! Every finished (K, seed, mode) has its `evaluation.json`; a killed benchmark resumes by
//! skipping those and resuming an unfinished training run from its latest checkpoint.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::Device;
use glint_core::detection::{CocoResult, Detection, suppress_detections};
use glint_core::eval::{CocoMetrics, evaluate_bbox_results};
use glint_core::geometry::NmsOptions;
use glint_core::io::write_atomic;
use glint_core::prompt::{Prompt, TextTokenizer};
use glint_data::coco::{load_coco, write_coco};
use glint_data::fewshot::k_shot;
use glint_data::preprocess::{PREPROCESS_FILE, PreprocessConfig};
use glint_data::{Dataset, load_image};
use glint_nn::detector::glip::{Glip, GlipConfig, GlipDetectOptions, GlipError};
use glint_nn::detector::prompt_tuning::{PROMPT_TUNING_FILE, PromptTuning};
use glint_nn::loss::atss::GlipLossConfig;
use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::config::{DataConfig, DataSource, ModelConfig, OptimizerConfig, ScheduleConfig, TrainConfig};
use crate::data::{LoadedSet, kept_categories, load_source};
use crate::evaluate::{detect_dataset, detect_glip};
use crate::exemplar::{detect_with_exemplars, embed_boxes, exemplar_text, prompt_ids};
use crate::run::{Event, RunOptions, latest_checkpoint, train};
use crate::{TrainError, config};

/// How a base model is adapted to the K shots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TuningMode {
    /// No training: the base model prompted with the category names.
    ZeroShot,
    /// GLIP's prompt tuning: only an offset on the prompt's token features is learnt.
    Prompt,
    /// The prediction layers of the head only (box, centerness and alignment projections).
    Linear,
    /// Everything but `freeze`.
    Full,
    /// No training: the K boxes of each category are exemplar prompts (see [`crate::exemplar`]).
    Exemplar,
}

impl TuningMode {
    pub const ALL: [TuningMode; 5] = [Self::ZeroShot, Self::Prompt, Self::Linear, Self::Full, Self::Exemplar];

    /// The name in configs, tables and directories.
    pub fn name(self) -> &'static str {
        match self {
            Self::ZeroShot => "zero-shot",
            Self::Prompt => "prompt",
            Self::Linear => "linear",
            Self::Full => "full",
            Self::Exemplar => "exemplar",
        }
    }
}

/// The benchmark: `glint fewshot --config configs/fewshot-NAME.toml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FewShotConfig {
    /// The base model: a GLIP model directory (config, weights, tokenizer, preprocessing).
    pub base_model: PathBuf,
    /// Instances per category of each split.
    pub shots: Vec<usize>,
    /// One split per seed and K.
    pub seeds: Vec<u64>,
    pub modes: Vec<TuningMode>,
    /// The training set the shots are drawn from and the validation set (detection data), and
    /// the categories to learn (names; `"novel"` = the synthetic set's novel categories).
    pub data: FewShotData,
    /// Score on the images of `val_shots` instances per category of the validation set, drawn
    /// per seed like the training shots (with all their boxes); 0 = the whole validation set.
    pub val_shots: usize,
    /// Parts not trained in `full` mode (as `freeze` in a training config).
    pub freeze: Vec<String>,
    /// The training of every tuning run.
    pub tuning: TuningConfig,
}

impl Default for FewShotConfig {
    /// ODinW's protocol: K ∈ {1, 3, 5, 10}, seeds 3, 30, 300; every mode.
    fn default() -> Self {
        Self {
            base_model: PathBuf::new(),
            shots: vec![1, 3, 5, 10],
            seeds: vec![3, 30, 300],
            modes: TuningMode::ALL.to_vec(),
            data: FewShotData::default(),
            val_shots: 0,
            freeze: Vec::new(),
            tuning: TuningConfig::default(),
        }
    }
}

/// Where the shots come from and what is scored.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FewShotData {
    pub train: Option<DataSource>,
    pub val: Option<DataSource>,
    pub categories: Vec<String>,
}

/// How each tuning run trains: as in a training config, with a learning rate per mode.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TuningConfig {
    pub steps: usize,
    pub batch_size: usize,
    /// The optimiser; its `lr` is replaced by the mode's.
    pub optimizer: OptimizerConfig,
    pub schedule: ScheduleConfig,
    pub transforms: glint_data::transforms::TrainTransforms,
    pub loss: GlipLossConfig,
    pub checkpoint_every: usize,
    /// Peak learning rate of `prompt` (the offset alone: GLIP tunes prompts at high rates).
    pub prompt_lr: f64,
    /// Peak learning rate of `linear` (the head's prediction layers).
    pub linear_lr: f64,
    /// Peak learning rate of `full`.
    pub full_lr: f64,
}

impl Default for TuningConfig {
    fn default() -> Self {
        Self {
            steps: 100,
            batch_size: 4,
            optimizer: OptimizerConfig { backbone_lr_mult: 1.0, text_lr_mult: 1.0, ..Default::default() },
            schedule: ScheduleConfig { warmup_steps: 10, ..Default::default() },
            transforms: Default::default(),
            loss: Default::default(),
            checkpoint_every: 50,
            prompt_lr: 1e-2,
            linear_lr: 1e-3,
            full_lr: 1e-4,
        }
    }
}

impl FewShotConfig {
    /// Read and check a TOML config; errors name the file.
    pub fn from_toml_file(path: &Path) -> Result<Self, TrainError> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::config(path, e))?;
        let config: Self = toml::from_str(&text).map_err(|e| {
            TrainError::config(path, e.message().to_string() + &config::span_line(&text, e.span()))
        })?;
        config.validate().map_err(|message| TrainError::config(path, message))?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.base_model.as_os_str().is_empty() {
            return Err("base_model must name a GLIP model directory".into());
        }
        if self.shots.is_empty() || self.shots.contains(&0) || self.seeds.is_empty() || self.modes.is_empty()
        {
            return Err("shots (each positive), seeds and modes must not be empty".into());
        }
        if self.data.train.is_none() || self.data.val.is_none() {
            return Err("data.train and data.val must both be set".into());
        }
        let t = &self.tuning;
        if t.steps == 0 || t.batch_size == 0 || t.checkpoint_every == 0 {
            return Err("tuning.steps, tuning.batch_size and tuning.checkpoint_every must be positive".into());
        }
        if ![t.prompt_lr, t.linear_lr, t.full_lr].iter().all(|lr| *lr > 0.0) {
            return Err("tuning.prompt_lr, linear_lr and full_lr must be positive".into());
        }
        // The training config of a run checks the rest (freeze names, transforms, data).
        let template =
            TrainConfig { freeze: self.freeze.clone(), ..self.train_config(GlipConfig::default()) };
        template.validate()
    }

    /// The training config of the runs, before the split, the mode and the seed are set.
    fn train_config(&self, model: GlipConfig) -> TrainConfig {
        let t = &self.tuning;
        TrainConfig {
            model: ModelConfig::Glip(model),
            tokenizer: self.base_model.join("tokenizer.json"),
            init_from: Some(self.base_model.clone()),
            data: DataConfig {
                train: self.data.train.iter().cloned().collect(),
                val: self.data.val.clone(),
                categories: self.data.categories.clone(),
                ..Default::default()
            },
            transforms: t.transforms.clone(),
            loss: t.loss.clone(),
            optimizer: t.optimizer.clone(),
            schedule: t.schedule.clone(),
            batch_size: t.batch_size,
            steps: t.steps,
            checkpoint_every: t.checkpoint_every,
            ..Default::default()
        }
    }
}

/// Where the benchmark writes and on what device it trains.
#[derive(Debug, Clone)]
pub struct FewShotOptions {
    pub out: PathBuf,
    /// Continue the benchmark in `out`.
    pub resume: bool,
    /// An autodiff device.
    pub device: Device,
}

/// Progress, for the caller's display.
#[derive(Debug)]
pub enum FewShotEvent<'a> {
    /// Run `index` of `total` starts (or is found done: `done`).
    Started {
        index: usize,
        total: usize,
        run: &'a RunKey,
        done: bool,
    },
    /// A training step or evaluation of the current run.
    Training(Event<'a>),
    Evaluating {
        done: usize,
        total: usize,
    },
    Scored {
        run: &'a RunKey,
        metrics: &'a CocoMetrics,
    },
}

/// One cell of the protocol: K shots drawn with a seed, adapted in a mode.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RunKey {
    pub shots: usize,
    pub seed: u64,
    pub mode: TuningMode,
}

impl RunKey {
    fn split_name(&self) -> String {
        format!("{}shot-seed{}", self.shots, self.seed)
    }
}

/// The table: AP and AP50 of every run, and their mean and std over seeds per K and mode.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FewShotTable {
    pub runs: Vec<ScoredRun>,
    pub rows: Vec<TableRow>,
}

/// One run and its COCO numbers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScoredRun {
    #[serde(flatten)]
    pub key: RunKey,
    pub metrics: CocoMetrics,
}

/// Mean ± std (sample std, n − 1; 0 for one seed) over the seeds of one K and mode.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableRow {
    pub shots: usize,
    pub mode: TuningMode,
    pub seeds: usize,
    pub ap_mean: f64,
    pub ap_std: f64,
    pub ap50_mean: f64,
    pub ap50_std: f64,
}

impl FewShotTable {
    fn new(runs: Vec<ScoredRun>) -> Self {
        let mut groups: BTreeMap<(usize, TuningMode), Vec<&CocoMetrics>> = BTreeMap::new();
        for run in &runs {
            groups.entry((run.key.shots, run.key.mode)).or_default().push(&run.metrics);
        }
        let rows = groups
            .into_iter()
            .map(|((shots, mode), metrics)| {
                let (ap_mean, ap_std) = mean_std(metrics.iter().map(|m| m.ap));
                let (ap50_mean, ap50_std) = mean_std(metrics.iter().map(|m| m.ap50));
                TableRow { shots, mode, seeds: metrics.len(), ap_mean, ap_std, ap50_mean, ap50_std }
            })
            .collect();
        Self { runs, rows }
    }

    /// The Markdown table: a row per K, AP and AP50 columns per mode, mean ± std in percent.
    pub fn markdown(&self) -> String {
        let modes: Vec<TuningMode> = {
            let mut m: Vec<TuningMode> = self.rows.iter().map(|r| r.mode).collect();
            m.sort();
            m.dedup();
            m
        };
        let mut shots: Vec<usize> = self.rows.iter().map(|r| r.shots).collect();
        shots.dedup();
        let mut out = String::from("| K |");
        for mode in &modes {
            out += &format!(" {} AP | {} AP50 |", mode.name(), mode.name());
        }
        out += "\n|---|";
        out += &"---|---|".repeat(modes.len());
        out += "\n";
        for k in shots {
            out += &format!("| {k} |");
            for mode in &modes {
                match self.rows.iter().find(|r| r.shots == k && r.mode == *mode) {
                    Some(r) => {
                        out += &format!(
                            " {:.1} ± {:.1} | {:.1} ± {:.1} |",
                            100.0 * r.ap_mean,
                            100.0 * r.ap_std,
                            100.0 * r.ap50_mean,
                            100.0 * r.ap50_std
                        )
                    }
                    None => out += " | |",
                }
            }
            out += "\n";
        }
        out
    }
}

fn mean_std(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let values: Vec<f64> = values.collect();
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n.max(1.0);
    let var = match values.len() {
        0 | 1 => 0.0,
        _ => values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0),
    };
    (mean, var.sqrt())
}

/// The benchmark's base model and what it needs to run, loaded once.
struct Base {
    config: GlipConfig,
    tokenizer: TextTokenizer,
    preprocess: PreprocessConfig,
}

impl Base {
    fn load(dir: &Path) -> Result<Self, TrainError> {
        let config = GlipConfig::from_json_file(dir.join("config.json"))?;
        let tokenizer_path = dir.join("tokenizer.json");
        let tokenizer = TextTokenizer::from_file(&tokenizer_path)
            .map_err(|source| TrainError::Prompt { context: tokenizer_path.display().to_string(), source })?;
        let preprocess_path = dir.join(PREPROCESS_FILE);
        let json = std::fs::read(&preprocess_path).map_err(|e| TrainError::config(&preprocess_path, e))?;
        let preprocess: PreprocessConfig =
            serde_json::from_slice(&json).map_err(|e| TrainError::config(&preprocess_path, e))?;
        Ok(Self { config, tokenizer, preprocess })
    }
}

/// Run the benchmark (or what is left of it) and write its table.
pub fn run_fewshot(
    config: &FewShotConfig,
    options: &FewShotOptions,
    mut on_event: impl FnMut(FewShotEvent),
) -> Result<FewShotTable, TrainError> {
    let out = &options.out;
    config.validate().map_err(|message| TrainError::config(out, message))?;
    let base = Base::load(&config.base_model)?;
    let mut template = config.train_config(base.config.clone());
    template.preprocess = base.preprocess.clone();
    let keep = kept_categories(&template)?;
    let train_source = config.data.train.as_ref().expect("validated");
    let val_source = config.data.val.as_ref().expect("validated");
    let train_set = load_source(train_source, keep.as_ref())?;
    let val_set = load_source(val_source, keep.as_ref())?;
    for (set, name) in [(&train_set, "data.train"), (&val_set, "data.val")] {
        if !set.detection {
            return Err(TrainError::config(out, format!("{name} must be detection data")));
        }
    }

    // Nothing is written before the config, the base model and the data have loaded.
    prepare_dir(config, out, options.resume)?;
    let mut keys = Vec::new();
    for &shots in &config.shots {
        for &seed in &config.seeds {
            keys.extend(config.modes.iter().map(|&mode| RunKey { shots, seed, mode }));
        }
    }
    let mut scored = Vec::new();
    for (index, key) in keys.iter().enumerate() {
        let results_dir = results_dir(out, config, key);
        let evaluation = results_dir.join("evaluation.json");
        let done = evaluation.is_file();
        on_event(FewShotEvent::Started { index, total: keys.len(), run: key, done });
        if !done {
            let (val, val_gt) = val_split(config, &val_set, key.seed, out)?;
            let total = val.dataset.samples.len();
            let batch = config.tuning.batch_size;
            let results = match key.mode {
                TuningMode::Exemplar => {
                    let model = Glip::from_dir(&config.base_model, &options.device)?.valid();
                    let split = k_shot_split(&train_set, key, out)?;
                    detect_by_exemplars(&model, &base, &split, &val.dataset, batch, |done| {
                        on_event(FewShotEvent::Evaluating { done, total })
                    })?
                }
                mode => {
                    let model = match mode {
                        TuningMode::ZeroShot => Glip::from_dir(&config.base_model, &options.device)?,
                        _ => tune(config, &template, &train_set, key, mode, out, options, &mut on_event)?,
                    }
                    .valid();
                    let device = model.devices().first().cloned().unwrap_or_else(Device::flex);
                    detect_glip(
                        &model,
                        &val.dataset,
                        &base.preprocess,
                        &base.tokenizer,
                        batch,
                        &device,
                        |done| on_event(FewShotEvent::Evaluating { done, total }),
                    )?
                }
            };
            let report = evaluate_bbox_results(&val_gt, &results)?;
            write_json(&results_dir.join("results.json"), &results)?;
            write_json(&evaluation, &report.metrics)?;
            let run_dir = run_dir(out, key);
            if run_dir.exists() {
                std::fs::remove_dir_all(&run_dir).map_err(|e| TrainError::write(&run_dir, e))?;
                // The split's and then the benchmark's `runs/`, once nothing is left in them.
                for empty in run_dir.ancestors().skip(1).take(2) {
                    let _ = std::fs::remove_dir(empty);
                }
            }
        }
        let metrics: CocoMetrics = read_json(&evaluation)?;
        on_event(FewShotEvent::Scored { run: key, metrics: &metrics });
        scored.push(ScoredRun { key: key.clone(), metrics });
    }
    let table = FewShotTable::new(scored);
    write_atomic(&out.join("table.md"), table.markdown().as_bytes())
        .map_err(|e| TrainError::write(&out.join("table.md"), e))?;
    write_json(&out.join("table.json"), &table)?;
    Ok(table)
}

/// Train one (K, seed, mode) run from the base model on its split; returns the tuned model (for
/// `prompt`: the base model with the learnt offset, read back from the results directory).
#[allow(clippy::too_many_arguments)]
fn tune(
    config: &FewShotConfig,
    template: &TrainConfig,
    train_set: &LoadedSet,
    key: &RunKey,
    mode: TuningMode,
    out: &Path,
    options: &FewShotOptions,
    on_event: &mut impl FnMut(FewShotEvent),
) -> Result<Glip, TrainError> {
    k_shot_split(train_set, key, out)?;
    let split_path = split_path(out, key);
    let mut run_config = template.clone();
    run_config.data.train =
        vec![DataSource::Coco { annotations: split_path, images: train_set.image_root.clone(), weight: 1.0 }];
    run_config.data.val = None;
    // The split holds only the kept categories already (and names no synthetic source to expand "novel").
    run_config.data.categories = Vec::new();
    run_config.seed = key.seed;
    let t = &config.tuning;
    (run_config.optimizer.lr, run_config.freeze, run_config.prompt_tuning) = match mode {
        TuningMode::Prompt => (t.prompt_lr, Vec::new(), true),
        TuningMode::Linear => {
            let frozen = ["backbone", "fpn", "text", "head.layers"];
            (t.linear_lr, frozen.map(String::from).to_vec(), false)
        }
        _ => (t.full_lr, config.freeze.clone(), false),
    };
    let run_dir = run_dir(out, key);
    let run_options = RunOptions {
        out: run_dir.clone(),
        resume: run_dir.join("latest.json").is_file(),
        device: options.device.clone(),
        stop_after: None,
    };
    train(&run_config, &run_options, |event| on_event(FewShotEvent::Training(event)))?;
    let checkpoint = latest_checkpoint(&run_dir)?;
    let device = &options.device;
    let results_dir = results_dir(out, config, key);
    match mode {
        TuningMode::Prompt => {
            // The shared artefact is the offset alone; score it on top of the base model.
            let file = results_dir.join(PROMPT_TUNING_FILE);
            std::fs::create_dir_all(&results_dir).map_err(|e| TrainError::write(&results_dir, e))?;
            let bytes = std::fs::read(checkpoint.join(PROMPT_TUNING_FILE))
                .map_err(|e| TrainError::config(&checkpoint.join(PROMPT_TUNING_FILE), e))?;
            write_atomic(&file, &bytes).map_err(|e| TrainError::write(&file, e))?;
            let tuning = PromptTuning::load(&file, device).map_err(GlipError::from)?;
            Ok(Glip::from_dir(&config.base_model, device)?.with_prompt_tuning(tuning)?)
        }
        _ => Ok(Glip::from_dir(&checkpoint, device)?),
    }
}

fn split_path(out: &Path, key: &RunKey) -> PathBuf {
    out.join("splits").join(format!("{}.json", key.split_name()))
}

/// The K-shot split of a run's K and seed, drawn and written once (`splits/`).
fn k_shot_split(train_set: &LoadedSet, key: &RunKey, out: &Path) -> Result<Dataset, TrainError> {
    let path = split_path(out, key);
    if path.is_file() {
        return Ok(load_coco(&path, &train_set.image_root)?);
    }
    let split = k_shot(&train_set.dataset, key.shots, key.seed).dataset;
    write_coco(&path, &train_set.image_root, &split.categories, &split.samples)?;
    Ok(split)
}

/// COCO results of the base model on `val` with every box of the split as an exemplar of its
/// category (a category's exemplars merged by per-category NMS).
fn detect_by_exemplars(
    model: &Glip,
    base: &Base,
    split: &Dataset,
    val: &Dataset,
    batch_size: usize,
    progress: impl FnMut(usize),
) -> Result<Vec<CocoResult>, TrainError> {
    let device = model.devices().first().cloned().unwrap_or_else(Device::flex);
    let text = exemplar_text(None);
    let ids = prompt_ids(model, &base.tokenizer, &text)?;
    let images = split.samples.iter().map(|s| load_image(&s.image_path)).collect::<Result<Vec<_>, _>>()?;
    let mut boxes = Vec::new();
    let mut category_of = Vec::new();
    for (sample, image) in split.samples.iter().zip(&images) {
        for region in sample.regions.iter().filter(|r| !r.iscrowd) {
            boxes.push((image, region.bbox));
            category_of.push(region.phrase);
        }
    }
    let embeddings = embed_boxes(model, &base.preprocess, &ids, &boxes, &device)?;
    let names: Vec<String> = category_of.iter().map(|&c| split.categories[c].name.clone()).collect();
    let options = GlipDetectOptions::default();
    let nms = NmsOptions {
        iou_threshold: options.nms_iou,
        score_threshold: f32::NEG_INFINITY,
        max_detections: options.max_detections,
        class_agnostic: false,
    };
    let detect = |images: &[RgbImage], _: &Prompt| {
        let found = detect_with_exemplars(
            model,
            &base.preprocess,
            &base.tokenizer,
            images,
            &text,
            false,
            &embeddings,
            &names,
            &options,
            &device,
        )?;
        Ok(found
            .into_iter()
            .map(|detections| {
                let by_category = detections
                    .into_iter()
                    .map(|d| Detection { phrase_index: category_of[d.phrase_index], ..d })
                    .collect();
                suppress_detections(by_category, &nms)
            })
            .collect())
    };
    // The split's categories are the validation set's (both restricted to the same ones).
    detect_dataset(val, batch_size, detect, progress)
}

/// The validation set of a seed and its ground-truth file: the whole set, or the images of
/// `val_shots` instances per category drawn with the seed.
fn val_split(
    config: &FewShotConfig,
    val: &LoadedSet,
    seed: u64,
    out: &Path,
) -> Result<(LoadedSet, PathBuf), TrainError> {
    let (dataset, path) = match config.val_shots {
        0 => (val.dataset.clone(), out.join("val_ground_truth.json")),
        v => {
            // The images K-shot sampling picks, with every box they hold: a box left out would
            // count its detections as false positives.
            let picked: HashSet<u64> =
                k_shot(&val.dataset, v, seed).dataset.samples.iter().map(|s| s.image_id).collect();
            let mut dataset = val.dataset.clone();
            dataset.samples.retain(|s| picked.contains(&s.image_id));
            (dataset, out.join("splits").join(format!("val-{v}shot-seed{seed}.json")))
        }
    };
    if !path.is_file() {
        write_coco(&path, &val.image_root, &dataset.categories, &dataset.samples)?;
    }
    Ok((LoadedSet { dataset, ..val.clone() }, path))
}

fn run_dir(out: &Path, key: &RunKey) -> PathBuf {
    out.join("runs").join(key.split_name()).join(key.mode.name())
}

/// Zero-shot results depend only on the validation split, not on K.
fn results_dir(out: &Path, config: &FewShotConfig, key: &RunKey) -> PathBuf {
    let results = out.join("results");
    match (key.mode, config.val_shots) {
        (TuningMode::ZeroShot, 0) => results.join("zero-shot"),
        (TuningMode::ZeroShot, _) => results.join(format!("zero-shot-seed{}", key.seed)),
        (mode, _) => results.join(key.split_name()).join(mode.name()),
    }
}

/// A new benchmark needs `out` empty or missing; a resumed one, the same config.
fn prepare_dir(config: &FewShotConfig, out: &Path, resume: bool) -> Result<(), TrainError> {
    let saved = out.join("fewshot.toml");
    let error = |message: &str| TrainError::RunDir { path: out.to_path_buf(), message: message.into() };
    if resume {
        if !saved.is_file() {
            return Err(error("has no benchmark to resume (no fewshot.toml)"));
        }
        if &FewShotConfig::from_toml_file(&saved)? != config {
            return Err(TrainError::config(&saved, "the benchmark was started with another config"));
        }
    } else if out.read_dir().is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(error("is not empty: pass --resume to continue its benchmark, or choose another --out"));
    }
    for dir in [out.to_path_buf(), out.join("splits")] {
        std::fs::create_dir_all(&dir).map_err(|e| TrainError::write(&dir, e))?;
    }
    if !resume {
        let toml = toml::to_string_pretty(config).map_err(|e| TrainError::config(out, e))?;
        write_atomic(&saved, toml.as_bytes()).map_err(|e| TrainError::write(&saved, e))?;
    }
    Ok(())
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<(), TrainError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| TrainError::write(dir, e))?;
    }
    let json = serde_json::to_vec_pretty(value).expect("results serialise");
    write_atomic(path, &json).map_err(|e| TrainError::write(path, e))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, TrainError> {
    let bytes = std::fs::read(path).map_err(|e| TrainError::config(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| TrainError::config(path, e))
}
