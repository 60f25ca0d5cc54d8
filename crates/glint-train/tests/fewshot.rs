//! `glint_train::fewshot`: the K-shot benchmark end to end on the synthetic shapes with a tiny
//! GLIP: K-shot splits, the tuning modes and exemplar prompts, the table, prompt-tuning offsets that reproduce
//! their AP on top of the base model, and a benchmark that resumes where it stopped.

mod common;

use std::collections::HashMap;

use burn::tensor::Device;
use common::{options, serial, shapes_dir, tiny_config};
use glint_core::eval::evaluate_bbox_results;
use glint_core::prompt::TextTokenizer;
use glint_data::coco::load_coco;
use glint_data::preprocess::PreprocessConfig;
use glint_nn::detector::glip::Glip;
use glint_nn::detector::prompt_tuning::{PROMPT_TUNING_FILE, PromptTuning};
use glint_train::config::DataSource;
use glint_train::evaluate::detect_glip;
use glint_train::fewshot::{
    FewShotConfig, FewShotData, FewShotEvent, FewShotOptions, TuningMode, run_fewshot,
};
use glint_train::train;

/// A tiny base model trained briefly on the base shapes, and a benchmark of its novel ones.
fn benchmark(base: &std::path::Path) -> FewShotConfig {
    let mut config = tiny_config(2);
    config.data.val = None;
    train(&config, &options(base), |_| {}).expect("the base model trains");
    let shapes = shapes_dir().join("shapes");
    let source = |split: &str| DataSource::Synth {
        dir: shapes.clone(),
        synth: Default::default(),
        split: split.into(),
        weight: 1.0,
    };
    let mut fewshot = FewShotConfig {
        base_model: base.join("checkpoints/step-000002"),
        shots: vec![1, 2],
        seeds: vec![3, 30],
        data: FewShotData {
            train: Some(source("train")),
            val: Some(source("val")),
            categories: vec!["novel".into()],
        },
        ..FewShotConfig::default()
    };
    fewshot.tuning.steps = 2;
    fewshot.tuning.batch_size = 2;
    fewshot.tuning.transforms = config.transforms.clone();
    fewshot
}

fn fewshot_options(out: &std::path::Path, resume: bool) -> FewShotOptions {
    FewShotOptions { out: out.to_path_buf(), resume, device: Device::flex().autodiff() }
}

#[test]
fn the_benchmark_scores_every_shot_seed_and_mode_and_resumes_where_it_stopped() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let config = benchmark(&dir.path().join("base"));
    assert_eq!(config.modes, TuningMode::ALL, "every mode by default");
    let out = dir.path().join("bench");
    let table = run_fewshot(&config, &fewshot_options(&out, false), |_| {}).expect("the benchmark runs");

    // 2 K × 2 seeds × 5 modes, and a row per K and mode over the two seeds.
    assert_eq!(table.runs.len(), 20);
    assert_eq!(table.rows.len(), 10);
    assert!(table.rows.iter().all(|r| r.seeds == 2 && r.ap_mean.is_finite() && r.ap_std >= 0.0));
    let markdown = std::fs::read_to_string(out.join("table.md")).unwrap();
    assert_eq!(markdown, table.markdown());
    for mode in TuningMode::ALL {
        assert!(markdown.contains(&format!("{} AP50", mode.name())), "{markdown}");
    }
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("table.json")).unwrap()).unwrap();
    assert_eq!(json["rows"].as_array().unwrap().len(), 10);

    // A K-shot split holds K instances of each novel category (fewer only where every image
    // left would overshoot K: this small set has one crescent that fits).
    let shapes = shapes_dir().join("shapes");
    let split = load_coco(&out.join("splits/2shot-seed30.json"), &shapes.join("images")).unwrap();
    let names: Vec<&str> = split.categories.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["pentagon", "diamond", "crescent"]);
    let mut counts: HashMap<usize, usize> = HashMap::new();
    for region in split.samples.iter().flat_map(|s| &s.regions) {
        *counts.entry(region.phrase).or_default() += 1;
    }
    assert_eq!(counts, HashMap::from([(0, 2), (1, 2), (2, 1)]));

    // The prompt-tuning offset is a small file that, on top of the base model, gives the AP
    // the table reports.
    let results = out.join("results/1shot-seed3/prompt");
    let offset = results.join(PROMPT_TUNING_FILE);
    assert!(std::fs::metadata(&offset).unwrap().len() < 64 * 1024);
    let device = Device::flex();
    let tuning = PromptTuning::load(&offset, &device).unwrap();
    let model = Glip::from_dir(&config.base_model, &device).unwrap().with_prompt_tuning(tuning).unwrap();
    let val = load_coco(&out.join("val_ground_truth.json"), &shapes.join("images")).unwrap();
    let tokenizer = TextTokenizer::from_file(config.base_model.join("tokenizer.json")).unwrap();
    let preprocess: PreprocessConfig =
        serde_json::from_slice(&std::fs::read(config.base_model.join("glint_preprocess.json")).unwrap())
            .unwrap();
    let detections = detect_glip(&model, &val, &preprocess, &tokenizer, 2, &device, |_| {}).unwrap();
    let again = evaluate_bbox_results(&out.join("val_ground_truth.json"), &detections).unwrap();
    let reported =
        table.runs.iter().find(|r| r.key.shots == 1 && r.key.seed == 3 && r.key.mode == TuningMode::Prompt);
    assert_eq!(again.metrics.ap, reported.unwrap().metrics.ap);
    // Training runs are scratch: removed once scored.
    assert!(!out.join("runs").exists());

    // Lose one result, as if killed while it ran: only that run is redone, to the same numbers.
    std::fs::remove_dir_all(out.join("results/2shot-seed30/full")).unwrap();
    let mut redone = Vec::new();
    let resumed = run_fewshot(&config, &fewshot_options(&out, true), |event| {
        if let FewShotEvent::Started { run, done: false, .. } = event {
            redone.push(run.clone());
        }
    })
    .expect("the benchmark resumes");
    assert_eq!(redone.len(), 1);
    assert_eq!((redone[0].shots, redone[0].seed, redone[0].mode), (2, 30, TuningMode::Full));
    assert_eq!(serde_json::to_value(&resumed).unwrap(), serde_json::to_value(&table).unwrap());

    // A new benchmark does not overwrite results, and a resumed one must be the same benchmark.
    let error = run_fewshot(&config, &fewshot_options(&out, false), |_| {}).expect_err("not empty");
    assert!(error.to_string().contains("--resume"), "{error}");
    let other = FewShotConfig { seeds: vec![4], ..config.clone() };
    let error = run_fewshot(&other, &fewshot_options(&out, true), |_| {}).expect_err("another config");
    assert!(error.to_string().contains("fewshot.toml"), "{error}");
}

#[test]
fn the_shipped_benchmark_is_odinw_s_protocol_on_the_novel_shapes() {
    let config = FewShotConfig::from_toml_file(&common::repo().join("configs/fewshot-shapes.toml")).unwrap();
    assert_eq!(config.shots, [1, 3, 5, 10]);
    assert_eq!(config.seeds, [3, 30, 300]);
    assert_eq!(config.modes, TuningMode::ALL);
    assert_eq!(config.data.categories, ["novel"]);
}

#[test]
fn a_benchmark_config_with_a_typo_or_no_data_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fewshot.toml");
    std::fs::write(&path, "base_model = \"m\"\nshot = [1]\n").unwrap();
    let error = FewShotConfig::from_toml_file(&path).expect_err("a typo");
    assert!(error.to_string().contains("fewshot.toml") && error.to_string().contains("shot"), "{error}");
    std::fs::write(&path, "base_model = \"m\"\n").unwrap();
    let error = FewShotConfig::from_toml_file(&path).expect_err("no data");
    assert!(error.to_string().contains("data.train"), "{error}");
}

#[test]
fn a_subsampled_validation_split_keeps_every_box_of_its_images() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let config = FewShotConfig {
        shots: vec![1],
        seeds: vec![3],
        modes: vec![TuningMode::ZeroShot],
        val_shots: 1,
        ..benchmark(&dir.path().join("base"))
    };
    let out = dir.path().join("bench");
    run_fewshot(&config, &fewshot_options(&out, false), |_| {}).expect("the benchmark runs");

    let images = shapes_dir().join("shapes/images");
    let split = load_coco(&out.join("splits/val-1shot-seed3.json"), &images).unwrap();
    let novel = ["pentagon", "diamond", "crescent"].map(String::from).into_iter().collect();
    let full = glint_train::data::restrict_categories(
        load_coco(&shapes_dir().join("shapes/val.json"), &images).unwrap(),
        &novel,
    )
    .unwrap();
    assert!(!split.samples.is_empty() && split.samples.len() < full.samples.len());
    for sample in &split.samples {
        let whole = full.samples.iter().find(|s| s.image_id == sample.image_id).unwrap();
        assert_eq!(sample.regions.len(), whole.regions.len(), "image {}", sample.image_id);
    }
}
