//! The assembled GLIP detector (`glint_nn::detector::glip`) and its training pieces, on a tiny
//! random model (PoolFormer 8-16-16-32, 16-wide FPN, one-layer 16-wide BERT, one VL-DyHead layer)
//! that runs in well under a second per forward on the CPU. There is no reference output to
//! compare with (GLIP's own checkpoints are far larger), so these tests check the contracts a
//! user relies on:
//!
//! - shapes: one prediction per anchor, levels halving (rounded up) from stride 8 to 128;
//! - model directories: `save_dir` / `from_dir` reload the same model (outputs within 1e-6
//!   absolute, the same f32 ops on the same values), `config.json` reloads to an equal config,
//!   and broken directories are errors that name the file;
//! - ATSS assignment and the centerness target on hand-placed boxes (exact rules, no tolerance
//!   beyond f32 rounding: 1e-6);
//! - the loss: finite terms, the number of positives ATSS gives, background-only batches,
//!   padding tokens left out (checked against the closed form `0.75 · 0.25 · ln 2` per token at
//!   logit 0, within 1e-5 relative), and gradients reaching the parameters;
//! - post-processing (`glip_detections`) on hand-made host arrays: score
//!   `sqrt(p_phrase · sigmoid(centerness))` within 1e-6, box mapping and clipping within 1e-4 px,
//!   thresholds, per-phrase NMS across levels, mean / max phrase reduction;
//! - box decoding against the box coder's closed form (within 1e-3 px on boxes up to 4000 px).
//!
//! Not tested: that an image gives the same result alone and padded into a batch — GLIP's fusion
//! has no image padding mask, so it does not.

mod common;

use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use glint_core::detection::Detection;
use glint_core::geometry::{BoxXyxy, iou};
use glint_core::prompt::{EncodedPrompt, PhraseReduction, PositiveMap, Prompt, TextTokenizer};
use glint_nn::backbone::SwinConfig;
use glint_nn::backbone::resnet::ResNetConfig;
use glint_nn::detector::glip::{
    GLIP_WEIGHTS, Glip, GlipBackbone, GlipBackboneConfig, GlipConfig, GlipDetectOptions, GlipText,
    InputFrame, glip_detections,
};
use glint_nn::head::glip::anchors::{BoxConvention, anchors};
use glint_nn::head::glip::{GlipHeadConfig, GlipHeadOutput};
use glint_nn::loss::atss::{GlipLossConfig, GroundingTarget, atss_assign, centerness_target};

/// Reloaded outputs against the original's.
const RELOAD_ATOL: f32 = 1e-6;
/// Hand-computed scores, centerness targets and IoU-based values.
const SCORE_TOL: f64 = 1e-6;
/// Boxes in pixels.
const BOX_TOL: f32 = 1e-4;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The tiny model with GLIP's anchors (8 × stride), which the hand-made numbers below assume.
fn tiny_config() -> GlipConfig {
    GlipConfig { anchor_scale: 8.0, ..GlipConfig::tiny() }
}

fn tiny_model(device: &Device) -> Glip {
    tiny_config().init(device).expect("the tiny config is valid")
}

fn tokenizer() -> TextTokenizer {
    TextTokenizer::from_file(common::fixtures("tokenizer").join("tokenizer.json")).expect("fixture tokenizer")
}

fn encode(phrases: &[&str]) -> EncodedPrompt {
    tokenizer().encode_prompt(&Prompt::new(phrases).unwrap()).unwrap()
}

fn phrases(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn pixels(batch: usize, height: usize, width: usize, device: &Device) -> Tensor<4> {
    Tensor::random([batch, 3, height, width], Distribution::Normal(0.0, 1.0), device)
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

fn scalar(t: Tensor<1>) -> f32 {
    assert_eq!(t.dims(), [1], "a loss term is a scalar");
    t.into_scalar::<f32>()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn centre(b: &BoxXyxy) -> (f32, f32) {
    ((b.x0 + b.x1) / 2.0, (b.y0 + b.y1) / 2.0)
}

fn strictly_inside(b: &BoxXyxy, (x, y): (f32, f32)) -> bool {
    x > b.x0 && x < b.x1 && y > b.y0 && y < b.y1
}

fn assert_box(what: &str, actual: BoxXyxy, expected: [f32; 4], tol: f32) {
    let a = actual.to_array();
    assert!(
        a.iter().zip(&expected).all(|(a, e)| (a - e).abs() <= tol),
        "{what}: box {a:?}, expected {expected:?}"
    );
}

/// The largest |a - b| over two outputs (shapes must match).
fn max_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    assert_eq!(a.dims(), b.dims());
    values(a).iter().zip(values(b)).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

// ---------------------------------------------------------------------------------------------
// Configuration and shapes
// ---------------------------------------------------------------------------------------------

#[test]
fn default_config_pads_inputs_to_32_and_has_levels_of_stride_8_to_128() {
    let config = GlipConfig::default();
    assert_eq!(config.size_divisibility(), 32);
    assert_eq!(config.strides(), [8, 16, 32, 64, 128]);
    // The tiny test model keeps the PoolFormer stages, so the same strides.
    assert_eq!(tiny_config().size_divisibility(), 32);
    assert_eq!(tiny_config().strides(), [8, 16, 32, 64, 128]);
}

#[test]
fn output_has_one_prediction_per_anchor_on_levels_halving_from_stride_8() {
    let device = Device::flex();
    let model = tiny_model(&device);
    let (cat, dog) = (encode(&["cat", "traffic light"]), encode(&["dog"]));
    let (ids0, ids1) = (cat.tokens.ids(), dog.tokens.ids());
    assert!(ids0.len() > ids1.len(), "the prompts must pad to different lengths");
    let text = GlipText::new(&[ids0, ids1], &device);
    let len = ids0.len();

    let (height, width) = (96, 64);
    let output = model.forward(pixels(2, height, width, &device), &text).unwrap();

    // Stride 8, then each level half its finer neighbour, rounded up.
    assert_eq!(output.level_sizes[0], [height / 8, width / 8]);
    for pair in output.level_sizes.windows(2) {
        assert_eq!(pair[1], [pair[0][0].div_ceil(2), pair[0][1].div_ceil(2)], "{:?}", output.level_sizes);
    }
    assert_eq!(output.level_sizes, [[12, 8], [6, 4], [3, 2], [2, 1], [1, 1]]);

    let n: usize = output.level_sizes.iter().map(|[h, w]| h * w).sum();
    assert_eq!(output.logits.dims(), [2, n, len]);
    assert_eq!(output.box_deltas.dims(), [2, n, 4]);
    assert_eq!(output.centerness.dims(), [2, n]);
    for (name, v) in [
        ("logits", values(output.logits.clone())),
        ("box_deltas", values(output.box_deltas.clone())),
        ("centerness", values(output.centerness.clone())),
    ] {
        assert!(v.iter().all(|x| x.is_finite()), "{name} has a non-finite value");
    }

    // One anchor per prediction, each level's first anchor centred on its first cell and
    // `anchor_scale × stride` wide.
    let anchors = model.anchors(&output.level_sizes);
    assert_eq!(anchors.len(), n);
    let mut start = 0;
    for (&[h, w], stride) in output.level_sizes.iter().zip(model.config.strides()) {
        let first = anchors[start];
        let s = stride as f32;
        assert_eq!(centre(&first), (s / 2.0, s / 2.0), "stride {stride}");
        assert_eq!(first.width(), model.config.anchor_scale * s, "stride {stride}");
        start += h * w;
    }
}

#[test]
fn invalid_configs_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, r#"{"model_type": "grounding_dino"}"#).unwrap();
    let message = GlipConfig::from_json_file(&path).unwrap_err().to_string();
    assert!(message.contains(&path.display().to_string()) && message.contains("glip"), "{message}");

    std::fs::write(&path, r#"{"fpn_channel": 16}"#).unwrap();
    let message = GlipConfig::from_json_file(&path).unwrap_err().to_string();
    assert!(message.contains("`fpn_channel`"), "an unknown key is named: {message}");

    // An empty object is the default config.
    std::fs::write(&path, "{}").unwrap();
    assert_eq!(GlipConfig::from_json_file(&path).unwrap(), GlipConfig::default());

    let mut config = tiny_config();
    config.head.norm_groups = 5;
    let message = config.init(&Device::flex()).err().expect("5 groups do not divide 16 channels").to_string();
    assert!(message.contains("norm_groups"), "{message}");
}

// ---------------------------------------------------------------------------------------------
// Model directories
// ---------------------------------------------------------------------------------------------

/// A tiny model whose constant-initialised parameters (the logit biases and scales, the level
/// scales, the zero-initialised deformable offsets) are set to random values, so that a reload
/// that skipped them would show.
fn perturbed_model(device: &Device) -> Glip {
    let mut model = tiny_model(device);
    let random =
        |shape: [usize; 1], std: f64| Tensor::<1>::random(shape, Distribution::Normal(0.0, std), device);
    let levels = model.config.strides().len();
    let text_dim = model.config.text.hidden_size;
    model.head.bias0 = Param::from_tensor(random([1], 1.0) - 2.0);
    model.head.log_scale = Param::from_tensor(random([1], 0.3));
    model.head.bias_lang = Param::from_tensor(random([text_dim], 1.0));
    model.head.scales = Param::from_tensor(random([levels], 0.3) + 1.0);
    let offset = &mut model.head.layers[0].dyconv.offset;
    let shape = offset.weight.dims();
    offset.weight = Param::from_tensor(Tensor::random(shape, Distribution::Normal(0.0, 0.05), device));
    model
}

fn save(model: &Glip) -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("nested").join("glip");
    model.save_dir(&dir).expect("save_dir creates the directory and writes the model");
    (root, dir)
}

fn assert_outputs_equal(what: &str, a: &GlipHeadOutput, b: &GlipHeadOutput) {
    assert_eq!(a.level_sizes, b.level_sizes, "{what}");
    let diffs = [
        ("logits", max_diff(a.logits.clone(), b.logits.clone())),
        ("box_deltas", max_diff(a.box_deltas.clone(), b.box_deltas.clone())),
        ("centerness", max_diff(a.centerness.clone(), b.centerness.clone())),
    ];
    for (name, diff) in diffs {
        assert!(diff <= RELOAD_ATOL, "{what}: {name} differ by {diff}");
    }
}

#[test]
fn a_saved_model_directory_reloads_to_the_same_config_and_outputs() {
    let device = Device::flex();
    let model = perturbed_model(&device);
    let (_root, dir) = save(&model);
    assert!(dir.join("config.json").is_file() && dir.join(GLIP_WEIGHTS).is_file());

    let config = GlipConfig::from_json_file(dir.join("config.json")).unwrap();
    assert_eq!(config, tiny_config());
    let reloaded = Glip::from_dir(&dir, &device).expect("the saved directory loads");
    assert_eq!(reloaded.config, model.config);

    let encoded = encode(&["cat", "traffic light"]);
    let text = GlipText::new(&[encoded.tokens.ids()], &device);
    let input = pixels(1, 64, 96, &device);
    let original = model.forward(input.clone(), &text).unwrap();
    let again = reloaded.forward(input.clone(), &text).unwrap();
    assert_outputs_equal("reloaded", &original, &again);

    // The comparison can tell models apart: a freshly initialised one differs.
    let fresh = tiny_model(&device).forward(input, &text).unwrap();
    let diff = max_diff(original.logits.clone(), fresh.logits.clone());
    assert!(diff > 1e-3, "a fresh model's logits differ from the saved one's by only {diff}");
}

/// The tiny model's other backbones: a narrow ResNet-18 and a narrow Swin, returning strides
/// 8, 16, 32 like the PoolFormer.
fn other_backbones() -> Vec<GlipBackboneConfig> {
    vec![
        GlipBackboneConfig::ResNet(ResNetConfig {
            base_width: 8,
            layers: [1, 1, 1, 1],
            ..ResNetConfig::resnet18()
        }),
        GlipBackboneConfig::Swin(SwinConfig {
            embed_dim: 8,
            depths: vec![1, 1, 1, 1],
            num_heads: vec![1, 1, 2, 2],
            window_size: 2,
            out_features: Some(vec!["stage2".into(), "stage3".into(), "stage4".into()]),
            ..SwinConfig::default()
        }),
    ]
}

#[test]
fn every_backbone_saves_under_its_own_names_and_reloads_to_the_same_outputs() {
    let device = Device::flex();
    let encoded = encode(&["cat", "traffic light"]);
    let text = GlipText::new(&[encoded.tokens.ids()], &device);
    let input = pixels(1, 64, 96, &device);
    for backbone in other_backbones() {
        let config = GlipConfig { backbone, ..tiny_config() };
        let model = config.init(&device).unwrap();
        let (_root, dir) = save(&model);
        let names: Vec<String> = common::Io::open(&dir.join(GLIP_WEIGHTS))
            .tensors()
            .names()
            .iter()
            .map(|n| n.to_string())
            .collect();
        // The backbone's parameters sit under `backbone.` directly, as in the PoolFormer models.
        assert!(names.iter().any(|n| n.starts_with("backbone.")), "{names:?}");
        assert!(names.iter().all(|n| !n.contains("ResNet") && !n.contains("Swin")), "{names:?}");
        let reloaded = Glip::from_dir(&dir, &device).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(reloaded.config, config);
        let original = model.forward(input.clone(), &text).unwrap();
        assert_eq!(original.level_sizes, vec![[8, 12], [4, 6], [2, 3], [1, 2], [1, 1]]);
        assert_outputs_equal("reloaded", &original, &reloaded.forward(input.clone(), &text).unwrap());
    }
}

#[test]
fn scoring_the_encoder_tokens_ignores_what_the_tower_did_to_them() {
    let device = Device::flex();
    let config = GlipConfig {
        head: GlipHeadConfig { score_fused_tokens: false, ..tiny_config().head },
        ..tiny_config()
    };
    let mut model = config.init(&device).unwrap();
    let encoded = encode(&["cat", "traffic light"]);
    let text = GlipText::new(&[encoded.tokens.ids()], &device);
    let input = pixels(1, 64, 96, &device);
    let before = model.forward(input.clone(), &text).unwrap();
    // The last layer's BERT update only changes the tokens the head scores against: with encoder
    // tokens scored, changing it changes nothing.
    let last = model.head.layers.last_mut().unwrap();
    let bert = last.text_layer.take().expect("the tiny head has text layers");
    let after = model.forward(input.clone(), &text).unwrap();
    assert_outputs_equal("without the last text layer", &before, &after);
    model.head.layers.last_mut().unwrap().text_layer = Some(bert);
    model.head.score_fused_tokens = true;
    let fused = model.forward(input, &text).unwrap();
    let diff = max_diff(before.logits, fused.logits);
    assert!(diff > 1e-4, "scoring fused tokens changes the logits, by only {diff} here");
}

fn from_dir_error(dir: &Path) -> String {
    match Glip::from_dir(dir, &Device::flex()) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_model_directory_with_missing_or_truncated_weights_is_an_error_naming_the_file() {
    let (_root, dir) = save(&tiny_model(&Device::flex()));
    let weights = dir.join(GLIP_WEIGHTS);
    let bytes = std::fs::read(&weights).unwrap();

    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let message = from_dir_error(&dir);
    assert!(message.contains(&weights.display().to_string()), "truncated: {message}");

    std::fs::remove_file(&weights).unwrap();
    let message = from_dir_error(&dir);
    assert!(message.contains(&weights.display().to_string()), "missing: {message}");

    std::fs::remove_file(dir.join("config.json")).unwrap();
    let message = from_dir_error(&dir);
    assert!(message.contains(&dir.join("config.json").display().to_string()), "missing config: {message}");
}

// ---------------------------------------------------------------------------------------------
// ATSS assignment and centerness
// ---------------------------------------------------------------------------------------------

/// Two levels over a 64×64 image: 8×8 anchors of 32 px (stride 8), 4×4 of 64 px (stride 16).
fn two_level_anchors() -> (Vec<BoxXyxy>, Vec<usize>) {
    (anchors(&[[8, 8], [4, 4]], &[8, 16], 4.0, BoxConvention::Continuous), vec![64, 16])
}

#[test]
fn atss_positives_have_their_centre_inside_the_box_and_no_boxes_means_all_background() {
    let (anchors, counts) = two_level_anchors();
    let gt = BoxXyxy::new(10.0, 12.0, 40.0, 44.0);
    let assigned = atss_assign(&anchors, &counts, &[gt], 9);
    assert_eq!(assigned.len(), anchors.len());
    let positives: Vec<usize> = (0..anchors.len()).filter(|&a| assigned[a].is_some()).collect();
    assert!(!positives.is_empty(), "a box inside the image gets at least one positive");
    for &a in &positives {
        assert_eq!(assigned[a], Some(0));
        assert!(
            strictly_inside(&gt, centre(&anchors[a])),
            "anchor {a} {:?} centre outside {gt:?}",
            anchors[a]
        );
    }
    // The anchor centred nearest the box's centre (25, 28): cell (x 3, y 3) of level 0.
    assert_eq!(assigned[3 * 8 + 3], Some(0), "{positives:?}");

    let none = atss_assign(&anchors, &counts, &[], 9);
    assert_eq!(none, vec![None; anchors.len()]);
}

/// Each box's positives do not depend on the other boxes; an anchor positive for several takes
/// the one it overlaps most.
fn check_overlapping(boxes: &[BoxXyxy]) -> Vec<usize> {
    let (anchors, counts) = two_level_anchors();
    let alone: Vec<Vec<Option<usize>>> =
        boxes.iter().map(|b| atss_assign(&anchors, &counts, &[*b], 9)).collect();
    let joint = atss_assign(&anchors, &counts, boxes, 9);
    let mut shared = Vec::new();
    for a in 0..anchors.len() {
        let candidates: Vec<usize> = (0..boxes.len()).filter(|&g| alone[g][a].is_some()).collect();
        let best = candidates
            .iter()
            .copied()
            .max_by(|&g, &h| iou(&anchors[a], &boxes[g]).total_cmp(&iou(&anchors[a], &boxes[h])));
        assert_eq!(joint[a], best, "anchor {a}: positive for {candidates:?} alone");
        if let Some(g) = joint[a] {
            assert!(strictly_inside(&boxes[g], centre(&anchors[a])), "anchor {a}");
        }
        if candidates.len() > 1 {
            shared.push(a);
        }
    }
    shared
}

#[test]
fn an_anchor_positive_for_two_overlapping_boxes_takes_the_one_it_overlaps_most() {
    let small = BoxXyxy::new(4.0, 4.0, 28.0, 28.0);
    let large = BoxXyxy::new(4.0, 4.0, 44.0, 44.0);
    // The anchor centred at (20, 20), [4, 4, 36, 36], overlaps the small box 0.5625 and the
    // large one 0.64, and is positive for each alone.
    let anchor = 2 * 8 + 2;
    let (anchors, _) = two_level_anchors();
    assert!(iou(&anchors[anchor], &large) > iou(&anchors[anchor], &small));
    for (boxes, large_index) in [([small, large], 1), ([large, small], 0)] {
        let shared = check_overlapping(&boxes);
        assert!(shared.contains(&anchor), "anchor {anchor} must be positive for both: shared {shared:?}");
        let joint = atss_assign(&anchors, &[64, 16], &boxes, 9);
        assert_eq!(joint[anchor], Some(large_index), "in either order");
    }
}

#[test]
fn centerness_target_is_one_at_the_box_centre_and_falls_toward_its_edges() {
    let gt = BoxXyxy::new(0.0, 0.0, 40.0, 20.0);
    let at = |x: f32, y: f32| centerness_target(&BoxXyxy::new(x - 4.0, y - 4.0, x + 4.0, y + 4.0), &gt);
    assert!((at(20.0, 10.0) - 1.0).abs() < 1e-6, "{}", at(20.0, 10.0));
    // l = 30, r = 10: sqrt(10 / 30).
    assert!((f64::from(at(30.0, 10.0)) - (1.0f64 / 3.0).sqrt()).abs() < SCORE_TOL, "{}", at(30.0, 10.0));
    let along_x: Vec<f32> = [20.0, 25.0, 30.0, 35.0, 39.0].iter().map(|&x| at(x, 10.0)).collect();
    let along_y: Vec<f32> = [10.0, 13.0, 16.0, 19.0].iter().map(|&y| at(20.0, y)).collect();
    for profile in [&along_x, &along_y] {
        assert!(profile.windows(2).all(|w| w[1] < w[0]), "{profile:?}");
        assert!(*profile.last().unwrap() < 0.4, "{profile:?}");
    }
    // Symmetric about the centre.
    assert!((at(10.0, 10.0) - at(30.0, 10.0)).abs() < 1e-6);
    // Outside the box there is nothing to be centred on.
    assert_eq!(at(45.0, 10.0), 0.0);
}

// ---------------------------------------------------------------------------------------------
// Loss
// ---------------------------------------------------------------------------------------------

fn token_row(encoded: &EncodedPrompt, phrase: usize) -> Vec<f32> {
    let mut row = vec![0.0; encoded.tokens.len()];
    for &t in encoded.positive_map.tokens(phrase) {
        row[t] = 1.0;
    }
    row
}

/// The tiny model's output on a batch of two 64×64 images with prompts of different lengths.
fn batch_output(model: &Glip, device: &Device) -> (GlipHeadOutput, EncodedPrompt, EncodedPrompt) {
    let (first, second) = (encode(&["cat", "traffic light"]), encode(&["dog"]));
    let text = GlipText::new(&[first.tokens.ids(), second.tokens.ids()], device);
    let output = model.forward(pixels(2, 64, 64, device), &text).unwrap();
    (output, first, second)
}

fn assert_gradient_reaches(what: &str, grad: Option<Tensor<1>>) {
    let grad = values(grad.unwrap_or_else(|| panic!("no gradient for {what}")));
    assert!(grad.iter().all(|g| g.is_finite()), "{what} gradient {grad:?}");
    assert!(grad.iter().any(|&g| g != 0.0), "{what} gradient is zero");
}

#[test]
fn loss_is_finite_counts_the_atss_positives_and_its_gradient_reaches_the_model() {
    let device = Device::flex().autodiff();
    let model = tiny_model(&device);
    let (output, first, second) = batch_output(&model, &device);
    let targets = [
        GroundingTarget {
            boxes: vec![BoxXyxy::new(8.0, 8.0, 40.0, 48.0), BoxXyxy::new(30.0, 20.0, 60.0, 60.0)],
            token_maps: vec![token_row(&first, 0), token_row(&first, 1)],
            num_tokens: first.tokens.len(),
        },
        GroundingTarget {
            boxes: vec![BoxXyxy::new(16.0, 16.0, 48.0, 48.0)],
            token_maps: vec![token_row(&second, 0)],
            num_tokens: second.tokens.len(),
        },
    ];
    let anchors = model.anchors(&output.level_sizes);
    let counts: Vec<usize> = output.level_sizes.iter().map(|[h, w]| h * w).collect();
    let expected_positives: usize =
        targets.iter().map(|t| atss_assign(&anchors, &counts, &t.boxes, 9).iter().flatten().count()).sum();

    let config = GlipLossConfig::default();
    let loss = config.loss(&output, &anchors, BoxConvention::Continuous, &targets);
    assert!(expected_positives > 0);
    assert_eq!(loss.num_positive, expected_positives);
    let (token, boxes, centerness) =
        (scalar(loss.token.clone()), scalar(loss.boxes.clone()), scalar(loss.centerness.clone()));
    for (name, v) in [("token", token), ("boxes", boxes), ("centerness", centerness)] {
        assert!(v.is_finite() && v > 0.0, "{name} loss {v}");
    }
    let total = scalar(loss.total.clone());
    let weighted =
        config.token_weight * token + config.box_weight * boxes + config.centerness_weight * centerness;
    assert!((total - weighted).abs() <= 1e-5 * weighted, "total {total}, weighted terms {weighted}");

    let grads = loss.total.backward();
    assert_gradient_reaches("head.bias0", model.head.bias0.val().grad(&grads));
    let GlipBackbone::PoolFormer(backbone) = &model.backbone else {
        panic!("the tiny model is a PoolFormer")
    };
    let stem = backbone.stages[0].downsample.weight.val().grad(&grads).map(|g| g.flatten::<1>(0, 3));
    assert_gradient_reaches("the backbone's stem conv", stem);
}

#[test]
fn loss_without_boxes_is_finite_with_no_positives_and_still_trains_the_logits() {
    let device = Device::flex().autodiff();
    let model = tiny_model(&device);
    let (output, first, second) = batch_output(&model, &device);
    let targets = [first.tokens.len(), second.tokens.len()].map(|num_tokens| GroundingTarget {
        boxes: vec![],
        token_maps: vec![],
        num_tokens,
    });
    let anchors = model.anchors(&output.level_sizes);
    let loss = GlipLossConfig::default().loss(&output, &anchors, BoxConvention::Continuous, &targets);

    assert_eq!(loss.num_positive, 0);
    let token = scalar(loss.token.clone());
    assert!(token.is_finite() && token > 0.0, "background token loss {token}");
    assert_eq!(scalar(loss.boxes.clone()), 0.0);
    assert_eq!(scalar(loss.centerness.clone()), 0.0);
    assert!((scalar(loss.total.clone()) - token).abs() <= 1e-6 * token);

    let grads = loss.total.backward();
    assert_gradient_reaches("head.bias0", model.head.bias0.val().grad(&grads));
}

#[test]
fn token_loss_counts_only_each_caption_s_real_tokens() {
    let device = Device::flex();
    let level_sizes = vec![[2, 2], [1, 1]];
    let (batch, n, len) = (2, 5, 6);
    // Logit 0 on real tokens; padding (image 1 has 3 real tokens) at 30, which would cost
    // ~22.5 per token if it were counted.
    let mut logits = vec![0.0f32; batch * n * len];
    for a in 0..n {
        logits[(n + a) * len + 3..(n + a + 1) * len].fill(30.0);
    }
    let output = GlipHeadOutput {
        logits: Tensor::from_data(TensorData::new(logits, [batch, n, len]), &device),
        box_deltas: Tensor::zeros([batch, n, 4], &device),
        centerness: Tensor::zeros([batch, n], &device),
        regions: Tensor::zeros([batch, n, 1], &device),
        level_sizes: level_sizes.clone(),
    };
    let anchors = anchors(&level_sizes, &[8, 16], 8.0, BoxConvention::Continuous);
    let targets = [6, 3].map(|num_tokens| GroundingTarget { boxes: vec![], token_maps: vec![], num_tokens });
    let loss = GlipLossConfig::default().loss(&output, &anchors, BoxConvention::Continuous, &targets);

    // Focal loss at logit 0, target 0: α_t 0.75 · (1 - p_t)² 0.25 · BCE ln 2, over 5 × (6 + 3)
    // real tokens, divided by max(positives, 1) = 1.
    let expected = (n * (6 + 3)) as f64 * 0.75 * 0.25 * std::f64::consts::LN_2;
    let token = f64::from(scalar(loss.token));
    assert!((token - expected).abs() <= 1e-5 * expected, "token loss {token}, expected {expected}");
}

// ---------------------------------------------------------------------------------------------
// Box decoding
// ---------------------------------------------------------------------------------------------

#[test]
fn zero_deltas_decode_to_the_anchors_and_deltas_follow_the_box_coder() {
    let device = Device::flex();
    let model = tiny_model(&device);
    let level_sizes = vec![[8, 8], [4, 4], [2, 2], [1, 1], [1, 1]];
    let n: usize = level_sizes.iter().map(|[h, w]| h * w).sum();
    let mut deltas = vec![0.0f32; 2 * n * 4];
    // Image 1, anchor 0 ([-28, -28, 36, 36]): dx 10 / 10 moves the centre one width right,
    // dy -5 / 10 half a height up, dw 5 ln 2 / 5 doubles the width.
    deltas[n * 4..n * 4 + 4].copy_from_slice(&[10.0, -5.0, 5.0 * std::f32::consts::LN_2, 0.0]);
    // Image 1, anchor 1: dw 50 / 5 = 10 is clamped at ln(1000 / 16), width 64 · 62.5.
    deltas[(n + 1) * 4 + 2] = 50.0;
    let output = GlipHeadOutput {
        logits: Tensor::zeros([2, n, 1], &device),
        box_deltas: Tensor::from_data(TensorData::new(deltas, [2, n, 4]), &device),
        centerness: Tensor::zeros([2, n], &device),
        regions: Tensor::zeros([2, n, 1], &device),
        level_sizes: level_sizes.clone(),
    };
    let boxes = model.decode_boxes(&output);
    assert_eq!(boxes.dims(), [2, n, 4]);
    let boxes = values(boxes);
    let decoded = |b: usize, a: usize| {
        let v = &boxes[(b * n + a) * 4..(b * n + a) * 4 + 4];
        BoxXyxy::new(v[0], v[1], v[2], v[3])
    };
    let anchors = model.anchors(&level_sizes);
    for (a, anchor) in anchors.iter().enumerate() {
        assert_box(&format!("image 0 anchor {a}"), decoded(0, a), anchor.to_array(), BOX_TOL);
        if a > 1 {
            assert_box(&format!("image 1 anchor {a}"), decoded(1, a), anchor.to_array(), BOX_TOL);
        }
    }
    assert_eq!(anchors[0].to_array(), [-28.0, -28.0, 36.0, 36.0]);
    assert_box("shifted and widened", decoded(1, 0), [4.0, -60.0, 132.0, 4.0], 1e-3);
    let clamped = decoded(1, 1);
    assert!((clamped.width() - 4000.0).abs() < 1e-3 * 4000.0, "{clamped:?}");
    assert!((centre(&clamped).0 - 12.0).abs() < 1e-3 && clamped.height() == 64.0, "{clamped:?}");
}

// ---------------------------------------------------------------------------------------------
// Post-processing
// ---------------------------------------------------------------------------------------------

/// Hand-made host outputs of one image: every logit and centerness at -20 (probability ~2e-9),
/// every anchor's box a small one of its own, far from the others.
struct Host {
    len: usize,
    logits: Vec<f32>,
    boxes: Vec<f32>,
    centerness: Vec<f32>,
}

impl Host {
    fn new(n: usize, len: usize) -> Self {
        Self {
            len,
            logits: vec![-20.0; n * len],
            boxes: (0..n).flat_map(|a| [a as f32 * 20.0, 0.0, a as f32 * 20.0 + 10.0, 10.0]).collect(),
            centerness: vec![-20.0; n],
        }
    }

    fn set(&mut self, anchor: usize, token_logits: &[(usize, f32)], centerness: f32, bbox: [f32; 4]) {
        for &(t, x) in token_logits {
            self.logits[anchor * self.len + t] = x;
        }
        self.centerness[anchor] = centerness;
        self.boxes[anchor * 4..anchor * 4 + 4].copy_from_slice(&bbox);
    }

    fn detect(
        &self,
        level_sizes: &[[usize; 2]],
        map: &PositiveMap,
        phrases: &[String],
        reduction: PhraseReduction,
        options: &GlipDetectOptions,
    ) -> Vec<Detection> {
        glip_detections(
            &self.logits,
            &self.boxes,
            &self.centerness,
            level_sizes,
            self.len,
            map,
            phrases,
            reduction,
            |b| b,
            [1000.0, 1000.0],
            BoxConvention::Continuous,
            options,
        )
    }
}

/// `[CLS] cat . traffic light . [SEP]`: "cat" is token 1, "traffic light" tokens 3 and 4.
fn cat_and_traffic_light() -> (EncodedPrompt, Vec<String>) {
    let encoded = encode(&["cat", "traffic light"]);
    assert_eq!(encoded.positive_map.tokens(0), [1]);
    assert_eq!(encoded.positive_map.tokens(1), [3, 4]);
    assert_eq!(encoded.tokens.len(), 7);
    (encoded, phrases(&["cat", "traffic light"]))
}

const LEVELS: [[usize; 2]; 2] = [[2, 2], [1, 1]];
const ANCHORS: usize = 5;

fn assert_score(what: &str, actual: f32, expected: f64) {
    assert!((f64::from(actual) - expected).abs() <= SCORE_TOL, "{what}: score {actual}, expected {expected}");
}

#[test]
fn a_confident_anchor_is_detected_with_its_phrase_score_and_its_box_mapped_and_clipped() {
    let (encoded, phrases) = cat_and_traffic_light();
    let mut host = Host::new(ANCHORS, 7);
    // On the second level, to check levels after the first are read at the right offset.
    host.set(4, &[(1, 2.0)], 1.5, [10.0, 20.0, 50.0, 60.0]);
    let detections = glip_detections(
        &host.logits,
        &host.boxes,
        &host.centerness,
        &LEVELS,
        7,
        &encoded.positive_map,
        &phrases,
        PhraseReduction::Mean,
        |b| b.scale(2.0, 1.5),
        [90.0, 100.0],
        BoxConvention::Continuous,
        &GlipDetectOptions::default(),
    );
    assert_eq!(detections.len(), 1, "{detections:?}");
    let d = &detections[0];
    assert_eq!((d.phrase.as_str(), d.phrase_index), ("cat", 0));
    assert_score("cat", d.score, (sigmoid(2.0) * sigmoid(1.5)).sqrt());
    // [20, 30, 100, 90] in the original image, clipped to its width 90.
    assert_box("cat", d.bbox, [20.0, 30.0, 90.0, 90.0], BOX_TOL);
}

/// The logit that gives probability `p`.
fn logit(p: f64) -> f32 {
    (p / (1.0 - p)).ln() as f32
}

#[test]
fn candidates_are_cut_by_the_candidate_threshold_the_per_level_top_k_and_the_final_score() {
    let (encoded, phrases) = cat_and_traffic_light();
    let map = &encoded.positive_map;
    let mut host = Host::new(ANCHORS, 7);
    // Centerness logit 20: the candidate score is the phrase probability (to 2e-9).
    let certain = 20.0;
    host.set(0, &[(1, logit(0.04))], certain, [0.0, 0.0, 10.0, 10.0]);
    host.set(1, &[(1, logit(0.06))], certain, [100.0, 0.0, 110.0, 10.0]);
    host.set(2, &[(1, logit(0.3))], certain, [200.0, 0.0, 210.0, 10.0]);
    let detect = |options: &GlipDetectOptions| -> Vec<f32> {
        let mut boxes: Vec<f32> = host
            .detect(&LEVELS, map, &phrases, PhraseReduction::Mean, options)
            .iter()
            .map(|d| d.bbox.x0)
            .collect();
        boxes.sort_by(f32::total_cmp);
        boxes
    };
    let defaults = GlipDetectOptions::default();
    // 0.04 is under GLIP's 0.05; 0.06 and 0.3 pass.
    assert_eq!(detect(&defaults), [100.0, 200.0]);
    assert_eq!(detect(&GlipDetectOptions { candidate_threshold: 0.1, ..defaults }), [200.0]);
    assert_eq!(detect(&GlipDetectOptions { candidate_threshold: 0.01, ..defaults }), [0.0, 100.0, 200.0]);
    assert_eq!(detect(&GlipDetectOptions { per_level_top_k: 1, ..defaults }), [200.0]);
    // The final score is the square root: sqrt(0.3) = 0.548 passes 0.5, sqrt(0.06) = 0.245 does not.
    assert_eq!(detect(&GlipDetectOptions { score_threshold: 0.5, ..defaults }), [200.0]);
    assert_eq!(detect(&GlipDetectOptions { max_detections: 1, ..defaults }), [200.0]);
}

#[test]
fn nms_merges_overlapping_boxes_of_one_phrase_across_levels_but_keeps_other_phrases() {
    let (encoded, phrases) = cat_and_traffic_light();
    let mut host = Host::new(ANCHORS, 7);
    let certain = 20.0;
    host.set(0, &[(1, 3.0)], certain, [10.0, 10.0, 50.0, 50.0]);
    // Another "cat" on the coarse level, IoU 0.82 with the first and less confident: merged.
    host.set(4, &[(1, 1.0)], certain, [12.0, 12.0, 52.0, 52.0]);
    // "traffic light" on the same spot: a different phrase, kept.
    host.set(1, &[(3, 2.0), (4, 2.0)], certain, [11.0, 11.0, 51.0, 51.0]);
    // A "cat" elsewhere: kept.
    host.set(2, &[(1, 0.0)], certain, [60.0, 60.0, 90.0, 90.0]);
    assert!(iou(&BoxXyxy::new(10.0, 10.0, 50.0, 50.0), &BoxXyxy::new(12.0, 12.0, 52.0, 52.0)) > 0.6);

    let found = host.detect(
        &LEVELS,
        &encoded.positive_map,
        &phrases,
        PhraseReduction::Mean,
        &GlipDetectOptions::default(),
    );
    let summary: Vec<(&str, f32)> = found.iter().map(|d| (d.phrase.as_str(), d.bbox.x0)).collect();
    assert_eq!(summary, [("cat", 10.0), ("traffic light", 11.0), ("cat", 60.0)], "by decreasing score");
    assert_score("merged cat", found[0].score, (sigmoid(3.0) * sigmoid(20.0)).sqrt());
}

#[test]
fn mean_and_max_phrase_reduction_score_a_two_token_phrase_differently() {
    let (encoded, phrases) = cat_and_traffic_light();
    let mut host = Host::new(ANCHORS, 7);
    let (strong, weak, quality) = (3.0, -1.0, 2.0);
    host.set(0, &[(3, strong as f32), (4, weak as f32)], quality as f32, [10.0, 10.0, 50.0, 50.0]);
    let score = |reduction| {
        let found =
            host.detect(&LEVELS, &encoded.positive_map, &phrases, reduction, &GlipDetectOptions::default());
        assert_eq!(found.len(), 1, "{reduction:?}: {found:?}");
        assert_eq!(found[0].phrase, "traffic light");
        found[0].score
    };
    let mean = score(PhraseReduction::Mean);
    let max = score(PhraseReduction::Max);
    assert_score("mean", mean, ((sigmoid(strong) + sigmoid(weak)) / 2.0 * sigmoid(quality)).sqrt());
    assert_score("max", max, (sigmoid(strong) * sigmoid(quality)).sqrt());
    assert!(max - mean > 0.1, "mean {mean}, max {max}");
}

#[test]
fn model_detections_map_each_image_s_boxes_with_its_own_frame() {
    let device = Device::flex();
    let model = tiny_model(&device);
    let (encoded, phrases) = cat_and_traffic_light();
    let ids = encoded.tokens.ids();
    let text = GlipText::new(&[ids, ids], &device);
    // The same image twice: once at its own size, once as the half-size input of a 128×128 image.
    let image = pixels(1, 64, 64, &device);
    let output = model.forward(Tensor::cat(vec![image.clone(), image], 0), &text).unwrap();
    // Both rows are the same computation, so the rows agree exactly and so must the detections
    // (doubling a box is exact in f32, and leaves IoUs unchanged).
    let row = |t: Tensor<3>, b: usize| t.narrow(0, b, 1);
    assert_eq!(max_diff(row(output.logits.clone(), 0), row(output.logits.clone(), 1)), 0.0);
    assert_eq!(max_diff(row(output.box_deltas.clone(), 0), row(output.box_deltas.clone(), 1)), 0.0);
    let frames = [
        InputFrame { original: [64.0, 64.0], scale: [1.0, 1.0] },
        InputFrame { original: [128.0, 128.0], scale: [2.0, 2.0] },
    ];
    // A random model's phrase probabilities are ~0.01 (the prior): keep every candidate.
    let options =
        GlipDetectOptions { candidate_threshold: 0.0, max_detections: 20, ..GlipDetectOptions::default() };
    let found = model.detections(&output, &frames, &encoded.positive_map, &phrases, &options);
    assert_eq!(found.len(), 2);
    let (small, large) = (&found[0], &found[1]);
    assert!(!small.is_empty() && small.len() <= 20, "{} detections", small.len());
    assert_eq!(small.len(), large.len());
    for (s, l) in small.iter().zip(large) {
        assert!(
            s.bbox.is_valid()
                && s.bbox.x0 >= 0.0
                && s.bbox.y0 >= 0.0
                && s.bbox.x1 <= 64.0
                && s.bbox.y1 <= 64.0
        );
        assert!(s.score > 0.0 && s.score <= 1.0);
        assert_eq!(s.phrase, phrases[s.phrase_index]);
        assert_eq!((l.phrase_index, &l.phrase), (s.phrase_index, &s.phrase));
        assert!((l.score - s.score).abs() <= 1e-5, "{} vs {}", l.score, s.score);
        assert_box("large image", l.bbox, s.bbox.scale(2.0, 2.0).to_array(), 1e-3);
    }
    assert!(small.windows(2).all(|w| w[0].score >= w[1].score), "by decreasing score");
}
