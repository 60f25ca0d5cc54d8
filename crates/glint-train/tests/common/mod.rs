//! What the tests of glint-train share: one small synthetic dataset, a tiny GLIP training
//! config on it, and a lock that runs trainings one at a time.

#![allow(dead_code)] // each test binary uses its own part

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

use burn::tensor::Device;
use glint_data::synth::SynthConfig;
use glint_data::transforms::TrainTransforms;
use glint_nn::detector::glip::GlipConfig;
use glint_train::config::{DataSource, Decay, ModelConfig, ScheduleConfig};
use glint_train::{RunOptions, TrainConfig};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One synthetic dataset for every test of this file: 40 images of 128 px with one or two shapes.
pub fn shapes_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        glint_data::synth::generate(&shapes_config(), &dir.path().join("shapes"), |_| {})
            .expect("synthetic data");
        dir
    })
    .path()
}

/// How the shared set is generated: 40 images of 128 px with one or two shapes.
pub fn shapes_config() -> SynthConfig {
    SynthConfig {
        images: 40,
        image_size: 128,
        seed: 3,
        val_fraction: 0.25,
        min_objects: 1,
        max_objects: 2,
        max_distractors: 0,
        ..SynthConfig::default()
    }
}

/// A tiny GLIP on two shape categories of the synthetic set.
pub fn tiny_config(steps: usize) -> TrainConfig {
    let shapes = shapes_dir().join("shapes");
    let source = |split: &str| DataSource::Synth {
        dir: shapes.clone(),
        synth: SynthConfig::default(),
        split: split.into(),
        weight: 1.0,
    };
    let mut config = TrainConfig {
        model: ModelConfig::Glip(GlipConfig::tiny()),
        tokenizer: repo().join("tests/fixtures/tokenizer/tokenizer.json"),
        transforms: TrainTransforms {
            flip_prob: 0.5,
            scales: vec![128],
            max_size: 128,
            crop_prob: 0.0,
            ..TrainTransforms::default()
        },
        batch_size: 4,
        steps,
        checkpoint_every: 1000,
        log_every: 1,
        schedule: ScheduleConfig {
            warmup_steps: 5,
            warmup_factor: 0.1,
            decay: Decay::Cosine { min_factor: 0.1 },
        },
        ..TrainConfig::default()
    };
    config.data.train = vec![source("train")];
    config.data.val = Some(source("val"));
    config.data.categories = vec!["circle".into(), "square".into(), "triangle".into()];
    config.data.max_caption_categories = 3;
    config.preprocess.shortest_edge = 128;
    config.preprocess.longest_edge = 128;
    config.optimizer.lr = 3e-3;
    config.optimizer.backbone_lr_mult = 1.0;
    config.optimizer.text_lr_mult = 1.0;
    config
}

/// Burn's CPU random generator (model initialisation) is one per process: tests that train run
/// one at a time so that each run's initial weights follow its seed.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    let guard = LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    // A resumed optimiser's state is loaded on Burn's default device: keep it on the CPU, as
    // the `glint` binary does. Safe here: the lock keeps the other tests of this binary waiting.
    if std::env::var_os("BURN_DEVICE").is_none() {
        unsafe { std::env::set_var("BURN_DEVICE", "flex") };
    }
    guard
}

pub fn options(out: &Path) -> RunOptions {
    RunOptions { out: out.to_path_buf(), resume: false, device: Device::flex().autodiff(), stop_after: None }
}
