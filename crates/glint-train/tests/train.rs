//! `glint_train::train` on the synthetic shapes, with a tiny GLIP: the loss falls when a few
//! images are overfitted, validation AP rises with training, a stopped run resumed from its
//! checkpoint continues the same loss curve, and run directories are never overwritten.
//!
//! Bounds are modest on purpose (the runs are short, so that the tests fit CI): they separate
//! "learns" from "does not learn", not one good model from another.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

use burn::tensor::Device;
use glint_core::prompt::TextTokenizer;
use glint_data::coco::{load_coco, write_coco};
use glint_data::synth::SynthConfig;
use glint_data::transforms::TrainTransforms;
use glint_nn::detector::glip::GlipConfig;
use glint_train::config::{DataSource, Decay, ScheduleConfig};
use glint_train::data::{kept_categories, load_source, write_ground_truth};
use glint_train::evaluate::evaluate;
use glint_train::{RunOptions, TrainConfig, TrainError, train};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One synthetic dataset for every test of this file: 40 images of 128 px with one or two shapes.
fn shapes_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = SynthConfig {
            images: 40,
            image_size: 128,
            seed: 3,
            val_fraction: 0.25,
            min_objects: 1,
            max_objects: 2,
            max_distractors: 0,
            ..SynthConfig::default()
        };
        glint_data::synth::generate(&config, &dir.path().join("shapes"), |_| {}).expect("synthetic data");
        dir
    })
    .path()
}

/// A tiny GLIP on two shape categories of the synthetic set.
fn tiny_config(steps: usize) -> TrainConfig {
    let shapes = shapes_dir().join("shapes");
    let source = |split: &str| DataSource::Synth {
        dir: shapes.clone(),
        synth: SynthConfig::default(),
        split: split.into(),
        weight: 1.0,
    };
    let mut config = TrainConfig {
        model: GlipConfig::tiny(),
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
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    let guard = LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    // A resumed optimiser's state is loaded on Burn's default device: keep it on the CPU, as
    // the `glint` binary does. Safe here: the lock keeps the other tests of this binary waiting.
    if std::env::var_os("BURN_DEVICE").is_none() {
        unsafe { std::env::set_var("BURN_DEVICE", "flex") };
    }
    guard
}

fn options(out: &Path) -> RunOptions {
    RunOptions { out: out.to_path_buf(), resume: false, device: Device::flex().autodiff(), stop_after: None }
}

fn mean(values: &[f32]) -> f32 {
    values.iter().sum::<f32>() / values.len() as f32
}

#[test]
fn overfitting_a_few_images_lowers_the_loss() {
    let _serial = serial();
    let out = tempfile::tempdir().unwrap();
    // Only two training images: the same pair every step, unflipped.
    let shapes = shapes_dir().join("shapes");
    let mut two = load_coco(&shapes.join("train.json"), &shapes.join("images")).unwrap();
    two.samples.truncate(2);
    let annotations = out.path().join("two.json");
    write_coco(&annotations, &shapes.join("images"), &two.categories, &two.samples).unwrap();
    let mut config = tiny_config(40);
    config.data.train = vec![DataSource::Coco { annotations, images: shapes.join("images"), weight: 1.0 }];
    config.data.val = None;
    config.data.categories.clear();
    config.data.max_caption_categories = 10;
    config.transforms.flip_prob = 0.0;
    config.batch_size = 2;
    let summary = train(&config, &options(&out.path().join("run")), |_| {}).expect("training runs");
    assert_eq!(summary.losses.len(), 40);
    let (first, last) = (mean(&summary.losses[..5]), mean(&summary.losses[35..]));
    assert!(last < 0.6 * first, "loss went from {first:.3} to {last:.3}");
    assert!(summary.losses.iter().all(|l| l.is_finite()));
}

#[test]
fn training_raises_validation_ap() {
    let _serial = serial();
    let out = tempfile::tempdir().unwrap();
    let mut config = tiny_config(150);
    config.eval_every = 150;

    // Before training, the head's prior (0.01) keeps every anchor below the candidate
    // threshold: no detections, AP 0.
    let untrained = config.model.init(&Device::flex()).unwrap();
    let keep = kept_categories(&config).unwrap();
    let val = load_source(config.data.val.as_ref().unwrap(), keep.as_ref()).unwrap();
    let gt = out.path().join("val.json");
    write_ground_truth(&val, &gt).unwrap();
    let tokenizer = TextTokenizer::from_file(&config.tokenizer).unwrap();
    let before =
        evaluate(&untrained, &val.dataset, &gt, &config.preprocess, &tokenizer, 4, &Device::flex(), |_| {})
            .expect("evaluation runs");
    assert_eq!(before.metrics.ap50, 0.0);

    let summary = train(&config, &options(&out.path().join("run")), |_| {}).expect("training runs");
    let after = summary.last_eval.expect("an evaluation at the end");
    // A modest bound: 150 steps of a tiny model from scratch find some of the shapes (0.017 here).
    assert!(
        after.metrics.ap50 > 0.005,
        "val AP50 after 150 steps: {:.3}\n{}",
        after.metrics.ap50,
        after.table()
    );
    assert!(out.path().join("run/best/model.safetensors").is_file());
    let metrics = std::fs::read_to_string(out.path().join("run/metrics.jsonl")).unwrap();
    assert!(metrics.lines().any(|l| l.contains("\"eval\"")));
}

#[test]
fn a_resumed_run_continues_the_loss_curve_of_an_uninterrupted_one() {
    let _serial = serial();
    let out = tempfile::tempdir().unwrap();
    let mut config = tiny_config(6);
    config.data.val = None;
    let whole = train(&config, &options(&out.path().join("whole")), |_| {}).expect("training runs");

    let run = out.path().join("stopped");
    let first =
        train(&config, &RunOptions { stop_after: Some(3), ..options(&run) }, |_| {}).expect("first part");
    assert_eq!(first.steps, 3);
    let rest = train(&config, &RunOptions { resume: true, ..options(&run) }, |_| {}).expect("resumed part");
    assert_eq!(rest.started_at, 3);
    let resumed: Vec<f32> = first.losses.iter().chain(&rest.losses).copied().collect();
    assert_eq!(resumed.len(), whole.losses.len());
    for (step, (a, b)) in whole.losses.iter().zip(&resumed).enumerate() {
        assert!(
            (a - b).abs() <= 1e-4 * a.abs().max(1.0),
            "step {}: {a} uninterrupted, {b} resumed",
            step + 1
        );
    }
}

#[test]
fn a_new_run_refuses_a_non_empty_directory_and_resume_needs_a_checkpoint() {
    let _serial = serial();
    let out = tempfile::tempdir().unwrap();
    let run = out.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("notes.txt"), "mine").unwrap();
    let config = tiny_config(1);
    let error = train(&config, &options(&run), |_| {}).expect_err("a non-empty run directory");
    assert!(matches!(error, TrainError::RunDir { .. }), "{error}");
    assert!(error.to_string().contains("--resume"), "{error}");
    assert_eq!(std::fs::read_to_string(run.join("notes.txt")).unwrap(), "mine");
    let error =
        train(&config, &RunOptions { resume: true, ..options(&run) }, |_| {}).expect_err("nothing to resume");
    assert!(error.to_string().contains("no checkpoint"), "{error}");
}

#[test]
fn the_shipped_config_and_a_config_with_a_typo_are_read_as_they_should() {
    let config =
        TrainConfig::from_toml_file(&repo().join("configs/glip-shapes-nano.toml")).expect("shipped config");
    assert_eq!(config.model.fpn_channels, 32);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.toml");
    std::fs::write(&path, "steps = 10\nbatch_sise = 4\n").unwrap();
    let error = TrainConfig::from_toml_file(&path).expect_err("unknown field");
    let message = error.to_string();
    assert!(message.contains("typo.toml") && message.contains("batch_sise"), "{message}");
    assert!(!message.contains('\n'), "one line: {message}");
}

#[test]
fn a_loss_that_stops_being_a_number_ends_the_run_naming_the_step_after_saving() {
    let _serial = serial();
    let out = tempfile::tempdir().unwrap();
    let mut config = tiny_config(20);
    config.data.val = None;
    // An absurd learning rate blows the weights up within a few steps.
    config.optimizer.lr = 1e30;
    config.schedule.warmup_steps = 0;
    let run = out.path().join("run");
    let error = train(&config, &options(&run), |_| {}).expect_err("the loss diverges");
    let TrainError::NonFinite { step, ref checkpoint, .. } = error else { panic!("{error}") };
    let message = error.to_string();
    assert!(message.contains(&format!("step {step}")) && message.contains("token"), "{message}");
    assert!(checkpoint.join("model.bpk").is_file(), "{message}");
    assert!(run.join("latest.json").is_file());
}

#[test]
fn a_run_resumes_only_with_its_own_config_but_may_be_lengthened() {
    let _serial = serial();
    let out = tempfile::tempdir().unwrap();
    let run = out.path().join("run");
    let mut config = tiny_config(2);
    config.data.val = None;
    train(&config, &RunOptions { stop_after: Some(1), ..options(&run) }, |_| {}).expect("first step");

    let mut other = config.clone();
    other.optimizer.lr *= 2.0;
    let error =
        train(&other, &RunOptions { resume: true, ..options(&run) }, |_| {}).expect_err("another config");
    assert!(error.to_string().contains("config.toml"), "{error}");

    let longer = TrainConfig { steps: 3, ..config };
    let summary =
        train(&longer, &RunOptions { resume: true, ..options(&run) }, |_| {}).expect("a longer run");
    assert_eq!((summary.started_at, summary.steps), (1, 3));
}
