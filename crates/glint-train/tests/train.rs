//! `glint_train::train` on the synthetic shapes, with a tiny GLIP: the loss falls when a few
//! images are overfitted, validation AP rises with training, a stopped run resumed from its
//! checkpoint continues the same loss curve, and run directories are never overwritten.
//!
//! Bounds are modest on purpose (the runs are short, so that the tests fit CI): they separate
//! "learns" from "does not learn", not one good model from another.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

use burn::tensor::{Device, Tensor};
use glint_core::prompt::TextTokenizer;
use glint_data::coco::{load_coco, write_coco};
use glint_data::synth::SynthConfig;
use glint_data::transforms::TrainTransforms;
use glint_nn::backbone::resnet::{ResNetBlockKind, ResNetConfig, torchvision_load_options};
use glint_nn::detector::glip::{Glip, GlipBackbone, GlipBackboneConfig, GlipConfig};
use glint_nn::weights::load_safetensors;
use glint_train::config::{DataSource, Decay, ScheduleConfig};
use glint_train::data::{kept_categories, load_source, make_example, write_ground_truth};
use glint_train::evaluate::evaluate;
use glint_train::{RunOptions, TrainConfig, TrainError, train};
use rand::SeedableRng;

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
    let mut config = tiny_config(300);
    config.eval_every = 300;

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
    eprintln!("val AP50 after 300 steps: {:.3}", after.metrics.ap50);
    // A modest bound: 300 steps of a tiny model from scratch find some of the shapes (0.063
    // here; 150 steps gave between 0.002 and 0.017 depending on the initial weights).
    assert!(
        after.metrics.ap50 > 0.02,
        "val AP50 after 300 steps: {:.3}\n{}",
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

#[test]
fn a_resnet_starts_from_imagenet_weights_and_trains_only_its_unfrozen_stages() {
    let _serial = serial();
    let out = tempfile::tempdir().unwrap();
    // torchvision's ResNet (basic blocks 2-1-1-1, widths / 4) as tests/fixtures/make_resnet.py wrote it.
    let weights = repo().join("tests/fixtures/resnet/basic.safetensors");
    let resnet = ResNetConfig {
        block: ResNetBlockKind::Basic,
        layers: [2, 1, 1, 1],
        base_width: 16,
        ..ResNetConfig::resnet50() // stem and first stage frozen, BatchNorm frozen
    };
    let mut config = tiny_config(2);
    config.data.val = None;
    config.model.backbone = GlipBackboneConfig::ResNet(resnet.clone());
    config.backbone_weights = Some(weights.clone());
    let run = out.path().join("run");
    train(&config, &options(&run), |_| {}).expect("training runs");

    let device = Device::flex();
    let imagenet = load_safetensors(resnet.init(&device), &weights, &torchvision_load_options(""))
        .expect("the fixture loads");
    let trained = Glip::from_dir(run.join("checkpoints/step-000002"), &device).expect("the checkpoint loads");
    let GlipBackbone::ResNet(trained) = trained.backbone else { panic!("a resnet backbone") };
    let diff = |a: Tensor<4>, b: Tensor<4>| (a - b).abs().max().into_scalar::<f32>();
    assert_eq!(diff(trained.conv1.weight.val(), imagenet.conv1.weight.val()), 0.0, "the stem is frozen");
    let frozen = diff(trained.layer1[1].conv2.weight.val(), imagenet.layer1[1].conv2.weight.val());
    assert_eq!(frozen, 0.0, "the first stage is frozen");
    let running = (trained.layer3[0].bn1.running_var.value() - imagenet.layer3[0].bn1.running_var.value())
        .abs()
        .max()
        .into_scalar::<f32>();
    assert_eq!(running, 0.0, "frozen BatchNorm keeps its statistics");
    let moved = diff(trained.layer2[0].conv2.weight.val(), imagenet.layer2[0].conv2.weight.val());
    assert!(moved > 0.0, "the second stage trains from the ImageNet weights");

    // ImageNet weights are for a ResNet only; the config says so before anything runs.
    let mut wrong = tiny_config(1);
    wrong.backbone_weights = Some(weights);
    let error = train(&wrong, &options(&out.path().join("wrong")), |_| {}).expect_err("a PoolFormer");
    assert!(error.to_string().contains("resnet"), "{error}");
}

#[test]
fn every_box_of_a_detection_example_targets_the_tokens_of_its_own_category() {
    let mut config = tiny_config(1);
    // No augmentation: the example's boxes are the sample's, so each can be matched to its region.
    config.transforms.flip_prob = 0.0;
    let tokenizer = TextTokenizer::from_file(&config.tokenizer).unwrap();
    let keep = kept_categories(&config).unwrap();
    let set = load_source(&config.data.train[0], keep.as_ref()).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut checked = 0;
    for sample in &set.dataset.samples {
        let example = make_example(sample, true, &config, &tokenizer, &mut rng).unwrap();
        let target = &example.target;
        assert_eq!(target.boxes.len(), target.token_maps.len());
        for (bbox, row) in target.boxes.iter().zip(&target.token_maps) {
            let region = sample
                .regions
                .iter()
                .find(|r| (r.bbox.x0 - bbox.x0).abs() < 1e-3 && (r.bbox.y1 - bbox.y1).abs() < 1e-3)
                .expect("an unaugmented box is one of the sample's");
            let name = &sample.phrases[region.phrase].text;
            let name_ids = tokenizer.encode(name).unwrap();
            let name_ids = &name_ids.ids()[1..name_ids.len() - 1]; // without [CLS] / [SEP]
            let marked: Vec<u32> =
                row.iter().enumerate().filter(|(_, v)| **v > 0.0).map(|(t, _)| example.ids[t]).collect();
            assert_eq!(marked, name_ids, "the box of a {name} marks other tokens");
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} boxes checked");
}

#[test]
fn clipping_scales_all_gradients_together_to_the_global_norm() {
    use burn::optim::GradientsParams;
    use glint_nn::head::glip::anchors::BoxConvention;
    use glint_nn::loss::atss::{GlipLossConfig, GroundingTarget};
    use glint_train::clip::clip_grad_norm;

    let device = Device::flex().autodiff();
    let model = GlipConfig::tiny().init(&device).unwrap();
    let pixels = Tensor::<4>::random([1, 3, 64, 64], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
    let text = glint_nn::detector::glip::GlipText::new(&[&[101, 4937, 1012, 102]], &device);
    let target = GroundingTarget {
        boxes: vec![glint_core::geometry::BoxXyxy { x0: 8.0, y0: 8.0, x1: 40.0, y1: 48.0 }],
        token_maps: vec![vec![0.0, 1.0, 0.0, 0.0]],
        num_tokens: 4,
    };
    // The gradients in two groups, as the training loop has them (the backbone and the rest).
    let gradients = || {
        let output = model.forward(pixels.clone(), &text).unwrap();
        let anchors = model.anchors(&output.level_sizes);
        let loss =
            GlipLossConfig::default().loss(&output, &anchors, BoxConvention::Continuous, &[target.clone()]);
        let mut grads = loss.total.backward();
        let backbone = GradientsParams::from_module(&mut grads, &model.backbone);
        [backbone, GradientsParams::from_grads(grads, &model)]
    };
    let (mut parts, mut loose) = (gradients(), gradients());
    let before = clip_grad_norm(&model, &mut parts, f32::INFINITY);
    assert!(before > 0.0 && before.is_finite());

    // A bound above the norm changes nothing; one below scales everything to it.
    assert_eq!(clip_grad_norm(&model, &mut loose, 2.0 * before), before);
    let max_norm = before / 4.0;
    assert_eq!(clip_grad_norm(&model, &mut parts, max_norm), before);
    let after = clip_grad_norm(&model, &mut parts, f32::INFINITY);
    assert!((after - max_norm).abs() <= 1e-4 * max_norm, "clipped to {after}, wanted {max_norm}");
    // Every gradient shrank by the same factor: the direction is kept.
    let stem = |parts: &[GradientsParams]| -> f32 {
        let GlipBackbone::PoolFormer(backbone) = &model.backbone else { unreachable!() };
        let id = backbone.stages[0].downsample.weight.id;
        parts[0].get::<4>(id).unwrap().abs().sum().into_scalar::<f32>()
    };
    let bias0 =
        |parts: &[GradientsParams]| parts[1].get::<1>(model.head.bias0.id).unwrap().into_scalar::<f32>();
    let ratio_stem = stem(&parts) / stem(&loose);
    let ratio_bias = bias0(&parts) / bias0(&loose);
    assert!(
        (ratio_stem - 0.25).abs() < 1e-3 && (ratio_bias - 0.25).abs() < 1e-3,
        "{ratio_stem} {ratio_bias}"
    );
}
