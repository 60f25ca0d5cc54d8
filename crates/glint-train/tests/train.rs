//! `glint_train::train` on the synthetic shapes, with a tiny GLIP: the loss falls when a few
//! images are overfitted, validation AP rises with training, a stopped run resumed from its
//! checkpoint continues the same loss curve, and run directories are never overwritten.
//!
//! Bounds are modest on purpose (the runs are short, so that the tests fit CI): they separate
//! "learns" from "does not learn", not one good model from another.

mod common;

use burn::tensor::{Device, Tensor};
use common::{options, repo, serial, shapes_dir, tiny_config};
use glint_core::prompt::TextTokenizer;
use glint_data::coco::{load_coco, write_coco};
use glint_nn::backbone::resnet::{ResNetBlockKind, ResNetConfig, torchvision_load_options};
use glint_nn::detector::glip::{Glip, GlipBackbone, GlipBackboneConfig, GlipConfig};
use glint_nn::detector::prompt_tuning::PROMPT_TUNING_FILE;
use glint_nn::weights::load_safetensors;
use glint_train::config::DataSource;
use glint_train::data::{kept_categories, load_source, make_example, write_ground_truth};
use glint_train::evaluate::evaluate;
use glint_train::{RunOptions, TrainConfig, TrainError, train};
use rand::SeedableRng;

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
    let untrained = config.model.glip().unwrap().init(&Device::flex()).unwrap();
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
    assert_eq!(config.model.glip().unwrap().fpn_channels, 32);
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
    config.model.glip_mut().unwrap().backbone = GlipBackboneConfig::ResNet(resnet.clone());
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
    let max_len = config.model.glip().unwrap().max_text_len;
    for sample in &set.dataset.samples {
        let example = make_example(sample, true, &config, &tokenizer, max_len, &mut rng).unwrap();
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

/// A tiny model trained `steps` steps in `dir/base`, and a config of as many steps that starts
/// from it (no validation); returns the config and the base model's directory.
fn fine_tuning(dir: &std::path::Path, steps: usize) -> (TrainConfig, std::path::PathBuf) {
    let mut config = tiny_config(steps);
    config.data.val = None;
    let base = dir.join("base");
    train(&config, &options(&base), |_| {}).expect("the base trains");
    let base_dir = base.join(format!("checkpoints/step-{steps:06}"));
    config.init_from = Some(base_dir.clone());
    (config, base_dir)
}

/// The largest absolute difference between two models' weights, per top-level part.
fn moved(a: &Glip, b: &Glip) -> [(&'static str, f32); 4] {
    use burn::module::Module;
    let params = |g: &Glip, part: &str| {
        let mut collector = ParamCollector::default();
        match part {
            "backbone" => g.backbone.visit(&mut collector),
            "fpn" => g.fpn.visit(&mut collector),
            "text" => g.text.visit(&mut collector),
            _ => g.head.visit(&mut collector),
        }
        Tensor::cat(collector.0, 0)
    };
    ["backbone", "fpn", "text", "head"]
        .map(|part| (part, (params(a, part) - params(b, part)).abs().max().into_scalar::<f32>()))
}

/// Every float parameter of a module, flattened.
#[derive(Default)]
struct ParamCollector(Vec<Tensor<1>>);

impl burn::module::ModuleVisitor for ParamCollector {
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
        self.0.push(param.val().flatten(0, D - 1));
    }
}

#[test]
fn frozen_parts_keep_their_weights_and_the_rest_trains() {
    let _serial = serial();
    let out = tempfile::tempdir().unwrap();
    let (mut config, base_dir) = fine_tuning(out.path(), 2);
    config.freeze = vec!["backbone".into(), "text".into()];
    let run = out.path().join("frozen");
    train(&config, &options(&run), |_| {}).expect("fine-tuning runs");

    let device = Device::flex();
    let before = Glip::from_dir(&base_dir, &device).unwrap();
    let after = Glip::from_dir(run.join("checkpoints/step-000002"), &device).unwrap();
    let [backbone, fpn, text, head] = moved(&before, &after);
    assert_eq!(backbone.1, 0.0, "the backbone is frozen");
    assert_eq!(text.1, 0.0, "the text encoder is frozen");
    assert!(fpn.1 > 0.0 && head.1 > 0.0, "the FPN ({}) and the head ({}) train", fpn.1, head.1);

    let mut typo = tiny_config(1);
    typo.freeze = vec!["backbon".into()];
    let error = train(&typo, &options(&out.path().join("typo")), |_| {}).expect_err("an unknown part");
    assert!(error.to_string().contains("backbon"), "{error}");
}

#[test]
fn prompt_tuning_learns_an_offset_for_the_prompt_and_nothing_else() {
    let _serial = serial();
    let out = tempfile::tempdir().unwrap();
    let (mut config, base_dir) = fine_tuning(out.path(), 3);
    config.prompt_tuning = true;
    config.optimizer.lr = 1e-2;
    let run = out.path().join("prompt");
    train(&config, &options(&run), |_| {}).expect("prompt tuning runs");

    let device = Device::flex();
    let tuned_dir = run.join("checkpoints/step-000003");
    let offset =
        std::fs::metadata(tuned_dir.join(PROMPT_TUNING_FILE)).expect("the offset is saved beside").len();
    assert!(offset < 64 * 1024, "the offset alone is small: {offset} bytes");
    let before = Glip::from_dir(&base_dir, &device).unwrap();
    let tuned = Glip::from_dir(&tuned_dir, &device).unwrap();
    for (part, diff) in moved(&before, &tuned) {
        assert_eq!(diff, 0.0, "the model's {part} is not trained");
    }
    let tuning = tuned.prompt_tuning.as_ref().expect("the model directory holds its prompt tuning");
    assert_eq!(tuning.prompt, "circle . square . triangle .");
    let delta = tuning.delta.val().abs().max().into_scalar::<f32>();
    assert!(delta > 0.0, "the offset is learnt");

    // The offset shifts the text features of its prompt, and so the scores.
    let tokenizer = TextTokenizer::from_file(&config.tokenizer).unwrap();
    let ids = tokenizer.encode(&tuning.prompt).unwrap().ids().to_vec();
    let text = glint_nn::detector::glip::GlipText::new(&[&ids], &device);
    let shift = (tuned.encode_text(&text) - before.encode_text(&text)).abs().max().into_scalar::<f32>();
    assert!((shift - delta).abs() < 1e-6, "features move by the offset: {shift} vs {delta}");

    // Scored on other categories, the tuned model says what it was tuned for.
    let keep = ["circle", "square"].map(String::from).into_iter().collect();
    let val = load_source(tiny_config(1).data.val.as_ref().unwrap(), Some(&keep)).unwrap();
    let gt = out.path().join("val.json");
    write_ground_truth(&val, &gt).unwrap();
    let error = evaluate(&tuned, &val.dataset, &gt, &config.preprocess, &tokenizer, 4, &device, |_| {})
        .expect_err("another prompt");
    assert!(error.to_string().contains("circle . square . triangle ."), "{error}");
}

#[test]
fn backbone_pretraining_learns_the_categories_from_box_crops_before_grounding() {
    use glint_train::pretrain::BackbonePretraining;
    use glint_train::run::Event;
    let _serial = serial();
    let out = tempfile::tempdir().unwrap();
    let mut config = tiny_config(1);
    config.data.val = None;
    config.model.glip_mut().unwrap().backbone = GlipBackboneConfig::ResNet(ResNetConfig {
        block: ResNetBlockKind::Basic,
        layers: [1, 1, 1, 1],
        base_width: 8,
        freeze_at: 0,
        frozen_norm: false,
        ..ResNetConfig::resnet50()
    });
    config.backbone_pretraining =
        Some(BackbonePretraining { steps: 60, batch_size: 16, crop_size: 32, ..Default::default() });
    let mut steps = Vec::new();
    let run = out.path().join("run");
    train(&config, &options(&run), |event| {
        if let Event::Pretraining { step, .. } = event {
            steps.push(step.clone());
        }
    })
    .expect("pretraining, then training runs");
    assert_eq!(steps.len(), 60);
    let accuracy = |s: &[glint_train::pretrain::PretrainStep]| {
        s.iter().map(|s| s.accuracy).sum::<f32>() / s.len() as f32
    };
    let (first, last) = (accuracy(&steps[..10]), accuracy(&steps[50..]));
    eprintln!("crop accuracy: {first:.2} in the first 10 steps, {last:.2} in the last 10");
    // Three categories: chance is 1/3.
    assert!(last > 0.6 && last > first, "crop accuracy went from {first:.2} to {last:.2}");
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert!(metrics.lines().any(|l| l.contains("\"pretrain_step\":60")), "{metrics}");

    // Pretraining is for a backbone from scratch.
    let mut both = config.clone();
    both.init_from = Some(run.join("checkpoints/step-000001"));
    let error = train(&both, &options(&out.path().join("both")), |_| {}).expect_err("with init_from");
    assert!(error.to_string().contains("backbone_pretraining"), "{error}");
}
