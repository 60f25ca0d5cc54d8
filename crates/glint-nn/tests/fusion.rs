//! Bi-directional image–text fusion against transformers' `GroundingDinoFusionLayer` /
//! `GroundingDinoBiMultiHeadAttention` (fixtures from `tests/fixtures/make_fusion.py`; see
//! `tests/fixtures/README.md`).
//!
//! Tolerance: |glint - reference| <= 1e-4 + 1e-4 * |reference| elementwise, in f32. Inputs and
//! outputs are O(1) and the reductions at most 32 wide, so the different f32 summation order of
//! Burn and PyTorch moves results by ~1e-6; a missing mask, clamp, max shift, scale or layer
//! scale moves them by 1e-2 or more. The `extreme` case has tokens of size ~1e3 (logits ~1e5):
//! its attention probabilities (exactly one-hot or exactly flat, the script checks they are the
//! same in float64) keep the 1e-4 bound, its outputs are compared at 1e-4 of the tensor's largest
//! magnitude, i.e. the same relative precision.

mod common;

use std::path::{Path, PathBuf};

use burn::tensor::{Bool, Device, Tensor, TensorData};
use common::{Io, assert_close, edited_f32_weights, load_error_naming_file};
use glint_nn::fusion::{BiAttentionConfig, BiAttentionOutput, FusionError, FusionLayer};
use glint_nn::weights::{LoadOptions, WeightsError, load_safetensors};

const GDINO_PREFIX: &str = "model.encoder.layers.0.fusion_layer.";
const ASYMMETRIC_PREFIX: &str = "asymmetric.";
const ATOL: f32 = 1e-4;
const RTOL: f32 = 1e-4;

fn fixtures() -> PathBuf {
    common::fixtures("fusion")
}

/// Grounding DINO's shape for the fixture's config: d_model 32, encoder_ffn_dim 48 -> embed 24,
/// 4 encoder heads -> 2 fusion heads.
fn gdino_config() -> BiAttentionConfig {
    BiAttentionConfig::new(32, 32, 24, 2)
}

fn asymmetric_config() -> BiAttentionConfig {
    BiAttentionConfig::new(32, 20, 24, 2)
}

fn load(
    cfg: &BiAttentionConfig,
    path: &Path,
    prefix: &str,
    device: &Device,
) -> Result<FusionLayer, WeightsError> {
    let layer = cfg.init(device).expect("valid config");
    load_safetensors(layer, path, &LoadOptions::new().with_prefix(prefix))
}

fn weights() -> PathBuf {
    fixtures().join("weights.safetensors")
}

fn check(case: &str, out: BiAttentionOutput, io: &Io, output_atol: f32) {
    let key = |name: &str| format!("{case}.{name}");
    for (name, tensor) in [("vision_attention", out.vision_attention), ("text_attention", out.text_attention)]
    {
        assert_close(&key(name), tensor, &io.f32s(&key(name)), &io.shape(&key(name)), ATOL, RTOL);
    }
    for (name, tensor) in [("vision_out", out.vision), ("text_out", out.text)] {
        assert_close(&key(name), tensor, &io.f32s(&key(name)), &io.shape(&key(name)), output_atol, RTOL);
    }
}

fn run_layer(layer: &FusionLayer, case: &str, device: &Device) {
    let io = Io::open(&fixtures().join("io.safetensors"));
    let key = |name: &str| format!("{case}.{name}");
    let out = layer
        .forward(
            io.float(&key("vision"), device),
            io.float(&key("text"), device),
            io.mask(&key("vision_padding_mask"), device),
            io.mask(&key("text_padding_mask"), device),
        )
        .unwrap_or_else(|e| panic!("{case}: {e}"));
    check(case, out, &io, ATOL);
}

#[test]
fn fusion_layer_with_both_masks_matches_transformers() {
    let device = Device::flex();
    let io = Io::open(&fixtures().join("io.safetensors"));
    assert!(io.has("fusion.vision_padding_mask") && io.has("fusion.text_padding_mask"));
    let layer = load(&gdino_config(), &weights(), GDINO_PREFIX, &device).unwrap();
    run_layer(&layer, "fusion", &device);
}

#[test]
fn fusion_layer_without_masks_matches_transformers() {
    let device = Device::flex();
    let layer = load(&gdino_config(), &weights(), GDINO_PREFIX, &device).unwrap();
    run_layer(&layer, "nomask", &device);
}

#[test]
fn masked_tokens_receive_no_attention() {
    let device = Device::flex();
    let io = Io::open(&fixtures().join("io.safetensors"));
    let layer = load(&gdino_config(), &weights(), GDINO_PREFIX, &device).unwrap();
    let vmask = io.mask("fusion.vision_padding_mask", &device).unwrap();
    let tmask = io.mask("fusion.text_padding_mask", &device).unwrap();
    let out = layer
        .forward(
            io.float("fusion.vision", &device),
            io.float("fusion.text", &device),
            Some(vmask.clone()),
            Some(tmask.clone()),
        )
        .unwrap();
    let [batch, heads, n_vision, n_text] = out.vision_attention.dims();
    // Image -> text weights on padding text tokens, and text -> image weights on padding image
    // tokens, are exactly zero.
    let tmask = tmask.reshape([batch, 1, 1, n_text]).expand([batch, heads, n_vision, n_text]);
    let leaked = out.vision_attention.mask_fill(tmask.bool_not(), 0.0).abs().max().into_scalar::<f32>();
    assert_eq!(leaked, 0.0);
    let vmask = vmask.reshape([batch, 1, 1, n_vision]).expand([batch, heads, n_text, n_vision]);
    let leaked = out.text_attention.mask_fill(vmask.bool_not(), 0.0).abs().max().into_scalar::<f32>();
    assert_eq!(leaked, 0.0);
}

#[test]
fn asymmetric_widths_match_transformers() {
    let device = Device::flex();
    let layer = load(&asymmetric_config(), &weights(), ASYMMETRIC_PREFIX, &device).unwrap();
    run_layer(&layer, "asymmetric", &device);
}

#[test]
fn huge_logits_are_shifted_and_clamped_as_in_transformers() {
    let device = Device::flex();
    let io = Io::open(&fixtures().join("io.safetensors"));
    let layer = load(&gdino_config(), &weights(), GDINO_PREFIX, &device).unwrap();
    let out = layer
        .attn
        .forward(
            io.float("extreme.vision", &device),
            io.float("extreme.text", &device),
            io.mask("extreme.vision_padding_mask", &device),
            io.mask("extreme.text_padding_mask", &device),
        )
        .unwrap();
    let scale = ["extreme.vision_out", "extreme.text_out"]
        .iter()
        .flat_map(|n| io.f32s(n))
        .fold(1.0f32, |m, v| m.max(v.abs()));
    check("extreme", out.clone(), &io, ATOL * scale);

    // Without the clamp the second image's rows would not be flat: the guard really matters.
    let mut unclamped = layer.attn.clone();
    unclamped.clamp_min_for_underflow = false;
    let out = unclamped
        .forward(
            io.float("extreme.vision", &device),
            io.float("extreme.text", &device),
            io.mask("extreme.vision_padding_mask", &device),
            io.mask("extreme.text_padding_mask", &device),
        )
        .unwrap();
    let expected = io.f32s("extreme.vision_attention");
    let actual = out.vision_attention.into_data().try_to_vec::<f32>().unwrap();
    let max_diff = actual.iter().zip(&expected).map(|(a, e)| (a - e).abs()).fold(0.0f32, f32::max);
    assert!(max_diff > 0.1, "clamping made no difference ({max_diff})");
}

#[test]
fn fresh_layer_starts_near_identity_after_the_norms() {
    // The layer-scale gammas start at 1e-4: a new layer barely changes the normalised tokens.
    let device = Device::flex();
    let layer = gdino_config().init(&device).unwrap();
    let vision = Tensor::<3>::random([2, 5, 32], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
    let text = Tensor::<3>::random([2, 3, 32], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
    let out = layer.forward(vision.clone(), text, None, None).unwrap();
    let normalised = layer.layer_norm_vision.forward(vision);
    let diff = (out.vision - normalised).abs().max().into_scalar::<f32>();
    assert!(diff > 0.0 && diff < 1e-2, "{diff}");
    let sums = out.vision_attention.sum_dim(3).into_data().try_to_vec::<f32>().unwrap();
    assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-5));
}

#[test]
fn invalid_configs_and_inputs_are_errors() {
    let device = Device::flex();
    assert!(matches!(BiAttentionConfig::new(32, 32, 25, 2).init(&device), Err(FusionError::Config(_))));
    assert!(matches!(BiAttentionConfig::new(32, 0, 24, 2).init(&device), Err(FusionError::Config(_))));
    assert!(matches!(
        BiAttentionConfig::new(32, 32, 24, 2).with_dropout(1.0).init(&device),
        Err(FusionError::Config(_))
    ));

    let layer = gdino_config().init(&device).unwrap();
    let vision = Tensor::<3>::zeros([2, 5, 32], &device);
    let text = Tensor::<3>::zeros([2, 3, 32], &device);
    let shape_err = |r: Result<BiAttentionOutput, FusionError>| matches!(r, Err(FusionError::Shape(_)));
    assert!(shape_err(layer.forward(vision.clone(), Tensor::zeros([2, 3, 20], &device), None, None)));
    assert!(shape_err(layer.forward(vision.clone(), Tensor::zeros([1, 3, 32], &device), None, None)));
    let bad_mask = Tensor::<2, Bool>::from_data(TensorData::new(vec![false; 8], [2, 4]), &device);
    assert!(shape_err(layer.forward(vision.clone(), text.clone(), None, Some(bad_mask.clone()))));
    assert!(shape_err(layer.forward(vision, text, Some(bad_mask), None)));
}

fn load_error(path: &Path) -> String {
    load_error_naming_file(path, load(&gdino_config(), path, GDINO_PREFIX, &Device::flex()))
}

#[test]
fn missing_extra_and_misshaped_tensors_are_named() {
    let missing = edited_f32_weights(&weights(), |t| {
        t.remove(&format!("{GDINO_PREFIX}vision_param"));
    });
    let message = load_error(&missing);
    assert!(message.contains("vision_param"), "{message}");

    let missing_norm = edited_f32_weights(&weights(), |t| {
        t.remove(&format!("{GDINO_PREFIX}layer_norm_text.weight"));
    });
    let message = load_error(&missing_norm);
    assert!(message.contains("layer_norm_text.weight"), "{message}");

    let extra = edited_f32_weights(&weights(), |t| {
        t.insert(format!("{GDINO_PREFIX}attn.gamma_v"), (vec![32], vec![0.5; 32]));
    });
    let message = load_error(&extra);
    assert!(message.contains("attn.gamma_v"), "{message}");

    let misshaped = edited_f32_weights(&weights(), |t| {
        t.insert(format!("{GDINO_PREFIX}attn.values_text_proj.weight"), (vec![24, 20], vec![0.0; 24 * 20]));
    });
    let message = load_error(&misshaped);
    assert!(message.contains("attn.values_text_proj.weight"), "{message}");

    // The asymmetric layer's weights do not fit Grounding DINO's widths.
    let device = Device::flex();
    let err = load(&gdino_config(), &weights(), ASYMMETRIC_PREFIX, &device).expect_err("mismatch");
    let report = err.mismatch().expect("a mismatch report");
    assert!(report.mis_shaped.iter().any(|m| m.key == "asymmetric.attn.text_proj.weight"), "{err}");
}
