//! Fine-tuning Grounding DINO with `glint train`: the loss falls and val AP rises on the
//! synthetic shapes (a tiny model trained from Burn's initialisation, about two minutes); the saved models are transformers checkpoints holding the trained weights
//! under the source's keys; bad configs are refused.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::Device;
use common::{options, repo, serial, tiny_config};
use glint_core::prompt::TextTokenizer;
use glint_data::synth::SynthConfig;
use glint_nn::detector::grounding_dino::GroundingDino;
use glint_nn::head::grounding_dino::GroundingDinoConfig;
use glint_nn::weights::{read_safetensors, write_safetensors};
use glint_train::config::{DataSource, GroundingDinoTraining, ModelConfig};
use glint_train::data::{kept_categories, load_source, write_ground_truth};
use glint_train::evaluate::evaluate_grounding_dino;
use glint_train::{RunOptions, TrainConfig, train};

fn fixture() -> PathBuf {
    repo().join("tests/fixtures/grounding_dino/tiny")
}

/// The tiny random Grounding DINO of the fixtures, fine-tuned on the shapes.
fn grounding_dino_config(steps: usize) -> TrainConfig {
    let mut config = tiny_config(steps);
    config.model = ModelConfig::GroundingDino(GroundingDinoTraining::default());
    config.init_from = Some(fixture());
    config.tokenizer = fixture().join("tokenizer.json");
    // DETR-style training from random weights: gradients clipped hard (DINO's 0.1), every base
    // category so that most images have boxes (the test of AP keeps three).
    config.optimizer.lr = 1e-3;
    config.optimizer.clip_grad_norm = 0.1;
    config.data.categories = vec!["base".into()];
    config.data.max_caption_categories = 7;
    config
}

/// The fixture's architecture with Burn's initialisation (the fixture's random weights are
/// scaled up to exercise the numerics, and train slowly), written as a transformers directory.
fn freshly_initialised(dir: &Path) -> PathBuf {
    let config = GroundingDinoConfig::from_json_file(fixture().join("config.json")).unwrap();
    let source = fixture().join("model.safetensors");
    let device = Device::flex();
    device.seed(1);
    let model = GroundingDino::new(&config, &device).unwrap();
    let tensors = model.export_tensors(&source, read_safetensors(&source).unwrap()).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    write_safetensors(&tensors, dir.join("model.safetensors")).unwrap();
    for file in ["config.json", "tokenizer.json"] {
        std::fs::copy(fixture().join(file), dir.join(file)).unwrap();
    }
    dir.to_path_buf()
}

/// Val AP50 of the model directory `dir` on the config's val set.
fn val_ap50(config: &TrainConfig, dir: &Path, scratch: &Path) -> f64 {
    let keep = kept_categories(config).unwrap();
    let val = load_source(config.data.val.as_ref().unwrap(), keep.as_ref()).unwrap();
    let gt = scratch.join("val_gt.json");
    write_ground_truth(&val, &gt).unwrap();
    let device = Device::flex();
    let model = GroundingDino::from_pretrained_dir(dir, &device).unwrap();
    let tokenizer = TextTokenizer::from_file(&config.tokenizer).unwrap();
    evaluate_grounding_dino(&model, &val.dataset, &gt, &config.preprocess, &tokenizer, 4, &device, |_| {})
        .unwrap()
        .metrics
        .ap50
}

fn tensors(path: &Path) -> BTreeMap<String, (Vec<usize>, Vec<u8>)> {
    read_safetensors(path)
        .unwrap()
        .into_iter()
        .map(|t| (t.name.clone(), (t.shape.to_vec(), t.to_bytes().unwrap().to_vec())))
        .collect()
}

#[test]
fn fine_tuning_grounding_dino_lowers_its_loss_and_raises_its_val_ap() {
    let _serial = serial();
    let out = tempfile::tempdir().unwrap();
    let steps = 400;
    let mut config = grounding_dino_config(steps);
    config.init_from = Some(freshly_initialised(&out.path().join("fresh")));
    // More images than the shared set's 40: on 30 the model learns the images by heart before
    // it learns the shapes, and 10 val images make a noisy AP.
    let shapes = out.path().join("shapes");
    let synth = SynthConfig { images: 200, val_fraction: 0.5, ..common::shapes_config() };
    glint_data::synth::generate(&synth, &shapes, |_| {}).unwrap();
    let source = |split: &str| DataSource::Synth {
        dir: shapes.clone(),
        synth: SynthConfig::default(),
        split: split.into(),
        weight: 1.0,
    };
    config.data.train = vec![source("train")];
    config.data.val = Some(source("val"));
    config.data.categories = vec!["circle".into(), "square".into(), "triangle".into()];
    config.data.max_caption_categories = 3;
    let summary = train(&config, &options(&out.path().join("run")), |_| {}).unwrap();
    assert_eq!(summary.losses.len(), steps);
    // The first steps' losses are in the thousands (random token logits); compare after them.
    let mean = |losses: &[f32]| losses.iter().sum::<f32>() / losses.len() as f32;
    let (early, late) = (mean(&summary.losses[10..30]), mean(&summary.losses[steps - 20..]));
    let before = val_ap50(&config, config.init_from.as_ref().unwrap(), out.path());
    let after = val_ap50(&config, &out.path().join("run/best"), out.path());
    eprintln!("loss {early:.3} -> {late:.3}, val AP50 {before:.4} -> {after:.4}");
    assert!(late < 0.5 * early, "loss {early} -> {late}");
    // Measured here: loss 25.6 -> 6.6, AP50 0 -> 0.018 on 100 val images. A DETR from random
    // weights learns slowly (the same steps on all seven base shapes, or at 3e-4 or 3e-3, gave
    // 0.008 to 0.013); the bound asks only that training moves AP off zero.
    assert!(after > before + 0.005, "val AP50 {before} -> {after}");
}

#[test]
fn a_fine_tuned_grounding_dino_is_its_checkpoint_with_the_trained_weights() {
    let _serial = serial();
    let out = tempfile::tempdir().unwrap();
    let mut config = grounding_dino_config(2);
    config.freeze = vec!["backbone".into(), "text".into()];
    train(&config, &options(&out.path().join("run")), |_| {}).unwrap();

    let source = tensors(&fixture().join("model.safetensors"));
    let tuned = tensors(&out.path().join("run/best/model.safetensors"));
    // The same tensors under the same keys and shapes: transformers loads it as it loads the source.
    assert_eq!(source.keys().collect::<Vec<_>>(), tuned.keys().collect::<Vec<_>>());
    for (key, (shape, _)) in &source {
        assert_eq!(&tuned[key].0, shape, "{key}");
    }
    let changed = |prefix: &str| {
        source.iter().filter(|(k, _)| k.starts_with(prefix)).any(|(k, (_, bytes))| &tuned[k].1 != bytes)
    };
    assert!(!changed("model.backbone."), "a frozen backbone changed");
    assert!(!changed("model.text_backbone."), "a frozen text encoder changed");
    assert!(changed("model.decoder.layers."), "the decoder did not train");
    assert!(changed("bbox_embed."), "the box head did not train");
    // The decoder's box heads are the top-level ones (tied in the reference).
    for (key, (_, bytes)) in tuned.iter().filter(|(k, _)| k.starts_with("model.decoder.bbox_embed.")) {
        let tied = key.strip_prefix("model.decoder.").unwrap();
        assert_eq!(&tuned[tied].1, bytes, "{key} is not {tied}");
    }
    // And glint loads it back.
    GroundingDino::from_pretrained_dir(out.path().join("run/best"), &Device::flex()).unwrap();
    assert!(out.path().join("run/best/tokenizer.json").is_file());
}

#[test]
fn a_stopped_grounding_dino_run_resumes_where_it_stopped() {
    let _serial = serial();
    let out = tempfile::tempdir().unwrap();
    let config = grounding_dino_config(3);
    let whole = train(&config, &options(&out.path().join("whole")), |_| {}).unwrap();
    let run = out.path().join("stopped");
    let stopped = RunOptions { stop_after: Some(1), ..options(&run) };
    train(&config, &stopped, |_| {}).unwrap();
    let resumed = train(&config, &RunOptions { resume: true, ..options(&run) }, |_| {}).unwrap();
    assert_eq!((resumed.started_at, resumed.steps), (1, 3));
    // The same batches and the same state: the resumed steps repeat the whole run's losses.
    for (a, b) in whole.losses[1..].iter().zip(&resumed.losses) {
        assert!((a - b).abs() <= 1e-4 * a.abs().max(1.0), "{:?} vs {:?}", whole.losses, resumed.losses);
    }
}

#[test]
fn an_idea_checkpoint_fine_tunes_into_a_transformers_directory() {
    let _serial = serial();
    let out = tempfile::tempdir().unwrap();
    // An IDEA `.pth` takes the architecture of the config.json beside it.
    let pth = out.path().join("ckpt/groundingdino_tiny.pth");
    std::fs::create_dir_all(pth.parent().unwrap()).unwrap();
    std::fs::copy(repo().join("tests/fixtures/grounding_dino/tiny_idea.pth"), &pth).unwrap();
    std::fs::copy(fixture().join("config.json"), out.path().join("ckpt/config.json")).unwrap();
    let mut config = grounding_dino_config(1);
    config.init_from = Some(pth);
    train(&config, &options(&out.path().join("run")), |_| {}).unwrap();
    let best = out.path().join("run/best");
    GroundingDino::from_pretrained_dir(&best, &Device::flex()).unwrap();
    assert!(tensors(&best.join("model.safetensors")).contains_key("model.query_position_embeddings.weight"));
}

#[test]
fn the_shipped_config_reads_and_configs_that_cannot_work_are_refused_by_name() {
    let out = tempfile::tempdir().unwrap();
    let mut no_checkpoint = grounding_dino_config(1);
    no_checkpoint.init_from = None;
    let error = train(&no_checkpoint, &options(&out.path().join("a")), |_| {}).unwrap_err();
    assert!(error.to_string().contains("init_from"), "{error}");

    let mut glip_part = grounding_dino_config(1);
    glip_part.freeze = vec!["fpn".into()];
    let error = train(&glip_part, &options(&out.path().join("b")), |_| {}).unwrap_err();
    assert!(error.to_string().contains("\"fpn\""), "{error}");

    let shipped = TrainConfig::from_toml_file(&repo().join("configs/grounding-dino-finetune.toml")).unwrap();
    assert!(matches!(shipped.model, ModelConfig::GroundingDino(_)));
    assert_eq!(shipped.freeze, ["backbone", "text"]);

    let toml = "[model]\nmodel_type = \"grounding_dino\"\nfpn_channels = 32\n";
    let path = out.path().join("bad.toml");
    std::fs::write(&path, toml).unwrap();
    let error = TrainConfig::from_toml_file(&path).unwrap_err();
    assert!(error.to_string().contains("fpn_channels"), "{error}");
}
