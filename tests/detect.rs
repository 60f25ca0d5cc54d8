//! The `Detector` API on the tiny transformers-made checkpoint (tests/fixtures/grounding_dino,
//! `make_grounding_dino.py`): the same boxes and scores as transformers'
//! `post_process_grounded_object_detection` on the same PNGs (short side 800: no resampling).
//!
//! Tolerance: scores within 1e-4, box corners within 0.1 px (1e-4 of the 1000 px side): the
//! model's outputs agree within 1e-4 in logits and normalised box units. The reference's text
//! threshold only chooses the words of its label, so its box set is compared with glint's at
//! text threshold 0 (every kept box has a phrase).

use std::path::{Path, PathBuf};

use glint::Detector;
use glint::core::detection::Detection;
use glint::core::prompt::Prompt;
use glint::data::image_io::load_image;
use glint::nn::detector::DetectOptions;
use serde::Deserialize;

#[derive(Deserialize)]
struct Expected {
    prompt: String,
    box_threshold: f32,
    images: Vec<ExpectedImage>,
}

#[derive(Deserialize)]
struct ExpectedImage {
    file: String,
    width: u32,
    height: u32,
    detections: Vec<ExpectedDetection>,
}

#[derive(Deserialize)]
struct ExpectedDetection {
    bbox: [f32; 4],
    score: f32,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/grounding_dino")
}

fn expected(name: &str) -> Expected {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join(format!("{name}_detect.json"))).unwrap())
        .unwrap()
}

fn options(expected: &Expected) -> DetectOptions {
    DetectOptions {
        box_threshold: expected.box_threshold,
        text_threshold: 0.0,
        nms_iou: None,
        max_detections: 300,
    }
}

fn assert_same_detections(found: &[Detection], expected: &ExpectedImage) {
    let mut reference: Vec<&ExpectedDetection> = expected.detections.iter().collect();
    reference.sort_by(|a, b| b.score.total_cmp(&a.score));
    assert_eq!(found.len(), reference.len(), "{}: {found:?}", expected.file);
    for (d, e) in found.iter().zip(reference) {
        assert!((d.score - e.score).abs() <= 1e-4, "{}: score {} vs {}", expected.file, d.score, e.score);
        for (a, b) in d.bbox.to_array().iter().zip(e.bbox) {
            assert!((a - b).abs() <= 0.1, "{}: box {:?} vs {:?}", expected.file, d.bbox, e.bbox);
        }
    }
    assert!(found.windows(2).all(|w| w[0].score >= w[1].score), "sorted by score");
}

#[test]
fn detections_match_transformers_post_processing() {
    let device = glint::Device::flex();
    let detector = Detector::from_dir(&fixtures().join("tiny"), &device).unwrap();
    let expected = expected("tiny");
    let prompt = Prompt::parse(&expected.prompt).unwrap();
    for image in &expected.images {
        let pixels = load_image(fixtures().join(&image.file)).unwrap();
        assert_eq!((pixels.width(), pixels.height()), (image.width, image.height));
        let found = detector.detect(&pixels, &prompt, &options(&expected)).unwrap();
        assert_same_detections(&found, image);
        for d in &found {
            assert_eq!(prompt.phrases()[d.phrase_index], d.phrase);
        }
    }
}

#[test]
fn a_batch_of_different_sizes_gives_each_image_its_own_result() {
    let device = glint::Device::flex();
    let detector = Detector::from_dir(&fixtures().join("tiny"), &device).unwrap_or_else(|e| panic!("{e}"));
    let expected = expected("tiny");
    let prompt = Prompt::parse(&expected.prompt).unwrap();
    let images: Vec<_> =
        expected.images.iter().map(|i| load_image(fixtures().join(&i.file)).unwrap()).collect();
    assert_ne!(images[0].dimensions(), images[1].dimensions());
    let batched = detector.detect_batch(&images, &prompt, &options(&expected)).unwrap();
    for ((found, image), pixels) in batched.iter().zip(&expected.images).zip(&images) {
        assert_same_detections(found, image);
        let alone = detector.detect(pixels, &prompt, &options(&expected)).unwrap();
        assert_same_detections(&alone, image);
    }
}

#[test]
fn thresholds_and_limits_are_applied() {
    let device = glint::Device::flex();
    let detector = Detector::from_dir(&fixtures().join("tiny"), &device).unwrap();
    let expected = expected("tiny");
    let prompt = Prompt::parse(&expected.prompt).unwrap();
    let image = load_image(fixtures().join(&expected.images[0].file)).unwrap();
    let all = detector.detect(&image, &prompt, &options(&expected)).unwrap();
    assert!(all.len() >= 3);

    let strict_text = DetectOptions { text_threshold: 0.999, ..options(&expected) };
    assert!(detector.detect(&image, &prompt, &strict_text).unwrap().is_empty());

    let two = DetectOptions { max_detections: 2, ..options(&expected) };
    let top = detector.detect(&image, &prompt, &two).unwrap();
    assert_eq!(top, all[..2].to_vec());

    // NMS at IoU 0 keeps, per phrase, only boxes that overlap no better-scoring box.
    let nms = DetectOptions { nms_iou: Some(0.0), ..options(&expected) };
    let kept = detector.detect(&image, &prompt, &nms).unwrap();
    for (i, a) in kept.iter().enumerate() {
        for b in &kept[i + 1..] {
            if a.phrase_index == b.phrase_index {
                assert_eq!(glint::core::geometry::iou(&a.bbox, &b.bbox), 0.0, "{a:?} {b:?}");
            }
        }
    }
}

#[test]
fn a_prompt_longer_than_the_text_encoder_is_split_and_merged() {
    let device = glint::Device::flex();
    let detector = Detector::from_dir(&fixtures().join("tiny"), &device).unwrap();
    let expected = expected("tiny");
    let image = load_image(fixtures().join(&expected.images[0].file)).unwrap();
    // 120 phrases of two tokens each, far past 256 tokens: several chunks.
    let phrases: Vec<String> = (0..120).map(|i| format!("red thing{i}")).collect();
    let prompt = Prompt::new(&phrases).unwrap();
    let found = detector
        .detect(&image, &prompt, &DetectOptions { box_threshold: 0.0, ..options(&expected) })
        .unwrap();
    assert!(!found.is_empty());
    assert!(found.iter().any(|d| d.phrase_index >= 60), "phrases of later chunks are found");
    for d in &found {
        assert_eq!(prompt.phrases()[d.phrase_index], d.phrase);
    }
}

#[test]
fn loading_errors_name_the_file() {
    let device = glint::Device::flex();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixtures().join("tiny/tokenizer.json"), dir.path().join("tokenizer.json")).unwrap();
    std::fs::write(dir.path().join("config.json"), "{\"d_model\": ").unwrap();
    let error = Detector::from_dir(dir.path(), &device).unwrap_err().to_string();
    assert!(error.contains("config.json"), "{error}");

    let error = Detector::from_pretrained(dir.path().join("absent").to_str().unwrap(), &device)
        .unwrap_err()
        .to_string();
    assert!(error.contains("absent"), "{error}");
}

#[test]
fn an_idea_pth_checkpoint_with_its_config_beside_it_detects_the_same() {
    let device = glint::Device::flex();
    let dir = tempfile::tempdir().unwrap();
    for file in ["config.json", "tokenizer.json"] {
        std::fs::copy(fixtures().join("tiny").join(file), dir.path().join(file)).unwrap();
    }
    let pth = dir.path().join("groundingdino_tiny.pth");
    std::fs::copy(fixtures().join("tiny_idea.pth"), &pth).unwrap();
    let detector =
        Detector::from_pretrained(pth.to_str().unwrap(), &device).unwrap_or_else(|e| panic!("{e}"));
    let expected = expected("tiny");
    let prompt = Prompt::parse(&expected.prompt).unwrap();
    let image = &expected.images[0];
    let pixels = load_image(fixtures().join(&image.file)).unwrap();
    assert_same_detections(&detector.detect(&pixels, &prompt, &options(&expected)).unwrap(), image);
}

/// What `make_tiny.py` records of the official GLIP's detections (`fixture.json`).
#[derive(Deserialize)]
struct OfficialGlip {
    detections: Vec<OfficialGlipDetection>,
}

#[derive(Deserialize)]
struct OfficialGlipDetection {
    /// The phrase index + 1.
    label: usize,
    score: f32,
    bbox: [f32; 4],
}

#[test]
fn an_official_glip_pth_with_its_config_beside_it_detects_as_glip_does() {
    let device = glint::Device::flex();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/glip_official/tiny");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixtures.join("glint_config.json"), dir.path().join("config.json")).unwrap();
    std::fs::copy(fixtures.join("../../tokenizer/tokenizer.json"), dir.path().join("tokenizer.json"))
        .unwrap();
    // GLIP's evaluation transform with the short side at the image's own 160 px: no resampling.
    let preprocess = glint::data::preprocess::PreprocessConfig {
        shortest_edge: 160,
        ..glint::data::preprocess::PreprocessConfig::glip()
    };
    std::fs::write(dir.path().join("glint_preprocess.json"), serde_json::to_string(&preprocess).unwrap())
        .unwrap();
    let pth = dir.path().join("glip_tiny.pth");
    std::fs::copy(fixtures.join("model.pth"), &pth).unwrap();
    let detector =
        Detector::from_pretrained(pth.to_str().unwrap(), &device).unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(detector.model(), glint::Model::Glip(_)));

    let prompt = Prompt::parse("cat . remote control . traffic light .").unwrap();
    let pixels = load_image(fixtures.join("image.png")).unwrap();
    let options =
        DetectOptions { box_threshold: 0.0, text_threshold: 0.0, nms_iou: None, max_detections: 100 };
    let mut found = detector.detect(&pixels, &prompt, &options).unwrap();
    found.sort_by(|a, b| b.score.total_cmp(&a.score));
    let official: OfficialGlip =
        serde_json::from_str(&std::fs::read_to_string(fixtures.join("fixture.json")).unwrap()).unwrap();
    assert_eq!(found.len(), official.detections.len(), "{found:?}");
    for (d, expected) in found.iter().zip(&official.detections) {
        assert_eq!(d.phrase_index + 1, expected.label, "{d:?}");
        assert!((d.score - expected.score).abs() < 1e-4, "score {} against {}", d.score, expected.score);
        let worst =
            d.bbox.to_array().iter().zip(expected.bbox).map(|(a, e)| (a - e).abs()).fold(0.0, f32::max);
        assert!(worst < 1e-2, "box {:?} against {:?}", d.bbox, expected.bbox);
    }
}

#[test]
fn a_prompt_tuning_shifts_the_scores_of_its_own_prompt_and_refuses_others() {
    use glint::nn::detector::prompt_tuning::PromptTuning;
    let device = glint::Device::flex();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/glip-shapes-nano");
    let plain = Detector::from_pretrained(model.to_str().unwrap(), &device).unwrap();
    let glint::Model::Glip(glip) = plain.model() else { panic!("the shipped model is a GLIP") };
    let prompt = Prompt::parse("circle . square .").unwrap();
    let mut tuning = PromptTuning::zeros(
        prompt.caption(),
        glip.config.max_text_len,
        glip.config.text.hidden_size,
        &device,
    );
    tuning.delta = tuning.delta.map(|d| d.ones_like().mul_scalar(0.5));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("prompt_tuning.safetensors");
    tuning.save(&file).unwrap();
    let tuned = Detector::from_pretrained(model.to_str().unwrap(), &device)
        .unwrap()
        .with_prompt_tuning(&file)
        .unwrap();

    let image =
        load_image(Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/demo/shapes-000807.jpg")).unwrap();
    let options =
        DetectOptions { box_threshold: 0.0, text_threshold: 0.0, nms_iou: None, max_detections: 20 };
    let before = plain.detect(&image, &prompt, &options).unwrap();
    let after = tuned.detect(&image, &prompt, &options).unwrap();
    assert!(!before.is_empty() && !after.is_empty());
    assert_ne!(before[0].score, after[0].score, "the offset changes the text features, so the scores");

    let other = Prompt::parse("circle .").unwrap();
    let error = tuned.detect(&image, &other, &options).expect_err("not the tuned prompt");
    assert!(error.to_string().contains("circle . square ."), "{error}");
    let error = Detector::from_pretrained(model.to_str().unwrap(), &device)
        .unwrap()
        .with_prompt_tuning(&dir.path().join("missing.safetensors"))
        .expect_err("no such file");
    assert!(error.to_string().contains("missing.safetensors"), "{error}");
    // A model's weights are not a prompt tuning.
    let error = Detector::from_pretrained(model.to_str().unwrap(), &device)
        .unwrap()
        .with_prompt_tuning(&model.join("model.safetensors"))
        .expect_err("not a prompt tuning");
    assert!(
        error.to_string().contains("model.safetensors")
            && error.to_string().contains("not a glint prompt tuning"),
        "{error}"
    );
}

#[test]
fn an_exemplar_box_finds_its_own_object_again_and_follows_the_prompt_s_phrases() {
    use glint::Exemplar;
    use glint::core::geometry::{BoxXyxy, iou};
    let device = glint::Device::flex();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/glip-shapes-nano");
    let detector = Detector::from_pretrained(model.to_str().unwrap(), &device).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/demo");
    let image = load_image(root.join("shapes-000807.jpg")).unwrap();
    // The square of shapes-000807 (datasets/demo/shapes-demo-gt.json).
    let square = BoxXyxy::new(208.71, 79.72, 277.42, 148.43);
    let exemplar = Exemplar { image: image.clone(), bbox: square, name: "my shape".into() };
    let options =
        DetectOptions { box_threshold: 0.3, text_threshold: 0.0, nms_iou: None, max_detections: 20 };

    let found = detector
        .detect_with_exemplars(std::slice::from_ref(&image), None, std::slice::from_ref(&exemplar), &options)
        .unwrap();
    let top = found[0].first().expect("the exemplar's own object is found");
    assert_eq!((top.phrase.as_str(), top.phrase_index), ("my shape", 0));
    assert!(iou(&top.bbox, &square) > 0.5, "the best match is the marked square itself: {top:?}");

    // With a prompt, the exemplar is the phrase after the prompt's.
    let prompt = Prompt::parse("circle . heart .").unwrap();
    let found = detector
        .detect_with_exemplars(
            std::slice::from_ref(&image),
            Some(&prompt),
            std::slice::from_ref(&exemplar),
            &options,
        )
        .unwrap();
    assert!(found[0].iter().any(|d| d.phrase_index == 2 && d.phrase == "my shape"), "{:?}", found[0]);
    assert!(found[0].iter().all(|d| d.phrase_index <= 2));

    let outside = Exemplar { bbox: BoxXyxy::new(300.0, 300.0, 400.0, 400.0), ..exemplar };
    let error = detector.detect_with_exemplars(&[image], None, &[outside], &options).expect_err("outside");
    assert!(error.to_string().contains("exemplar 1"), "{error}");
}
