//! Multi-scale deformable attention against transformers' `GroundingDinoMultiscaleDeformableAttention`
//! (fixtures from `tests/fixtures/make_deformable.py`; see `tests/fixtures/README.md`).
//!
//! Tolerance: |glint - reference| <= 1e-4 + 1e-4 * |reference| elementwise, in f32. Inputs,
//! weights and outputs are O(1); the longest reduction is a 32-wide projection and a 24-term
//! weighted sum, so reordering the f32 sums (Burn vs PyTorch) moves results by ~1e-6. A wrong
//! sampling convention (align_corners, half-pixel shift, border instead of zero padding, x/y
//! swapped, offsets normalised by the wrong side) changes them by 1e-2 or more.

mod common;

use std::path::{Path, PathBuf};

use burn::tensor::{Bool, Device, Distribution, Tensor, TensorData};
use common::{Io, edited_f32_weights, load_error_naming_file};
use glint_nn::attention::{
    DeformableAttentionError, MultiScaleDeformableAttention, MultiScaleDeformableAttentionConfig,
    composed_multi_scale_deformable_attention, fused_cpu_deformable_attention, level_start_index,
    multi_scale_deformable_attention,
};
use glint_nn::weights::{LoadOptions, WeightsError, load_safetensors};

const ENCODER_PREFIX: &str = "model.encoder.layers.0.deformable_layer.self_attn.";
const DECODER_PREFIX: &str = "model.decoder.layers.0.encoder_attn.";
const ATOL: f32 = 1e-4;
const RTOL: f32 = 1e-4;

fn fixtures() -> PathBuf {
    common::fixtures("deformable")
}

fn assert_close<const D: usize>(what: &str, actual: Tensor<D>, expected: &[f32], expected_shape: &[usize]) {
    common::assert_close(what, actual, expected, expected_shape, ATOL, RTOL);
}

fn config(n_levels: usize, n_heads: usize, n_points: usize) -> MultiScaleDeformableAttentionConfig {
    MultiScaleDeformableAttentionConfig::new(32, n_levels, n_heads, n_points)
}

fn load(
    cfg: &MultiScaleDeformableAttentionConfig,
    path: &Path,
    prefix: &str,
    device: &Device,
) -> Result<MultiScaleDeformableAttention, WeightsError> {
    let module = cfg.init(device).expect("valid config");
    load_safetensors(module, path, &LoadOptions::new().with_prefix(prefix))
}

fn encoder(device: &Device) -> MultiScaleDeformableAttention {
    load(&config(3, 4, 2), &fixtures().join("weights.safetensors"), ENCODER_PREFIX, device)
        .expect("encoder weights")
}

fn decoder(device: &Device) -> MultiScaleDeformableAttention {
    load(&config(2, 2, 3), &fixtures().join("weights.safetensors"), DECODER_PREFIX, device)
        .expect("decoder weights")
}

fn check_case(module: &MultiScaleDeformableAttention, case: &str, device: &Device) {
    let io = Io::open(&fixtures().join("io.safetensors"));
    let key = |name: &str| format!("{case}.{name}");
    let query_pos = io.has(&key("query_pos")).then(|| io.float::<3>(&key("query_pos"), device));
    let out = module
        .forward(
            io.float(&key("query"), device),
            query_pos,
            io.float(&key("value"), device),
            io.float(&key("reference_points"), device),
            &io.shapes(&key("spatial_shapes")),
            io.mask(&key("value_padding_mask"), device),
        )
        .unwrap_or_else(|e| panic!("{case}: {e}"));
    assert_close(
        &format!("{case} attention weights"),
        out.attention_weights,
        &io.f32s(&key("attention_weights")),
        &io.shape(&key("attention_weights")),
    );
    assert_close(&format!("{case} output"), out.output, &io.f32s(&key("output")), &io.shape(&key("output")));
}

#[test]
fn encoder_self_attention_with_padding_matches_transformers() {
    let device = Device::flex();
    let io = Io::open(&fixtures().join("io.safetensors"));
    assert!(io.has("encoder.value_padding_mask") && io.has("encoder.query_pos"));
    check_case(&encoder(&device), "encoder", &device);
}

#[test]
fn encoder_module_without_mask_or_position_matches_transformers() {
    let device = Device::flex();
    check_case(&encoder(&device), "encoder_nomask", &device);
}

#[test]
fn decoder_cross_attention_with_boxes_matches_transformers() {
    let device = Device::flex();
    let io = Io::open(&fixtures().join("io.safetensors"));
    assert_eq!(io.shape("decoder.reference_points")[3], 4);
    check_case(&decoder(&device), "decoder", &device);
}

#[test]
fn decoder_cross_attention_with_points_matches_transformers() {
    let device = Device::flex();
    let io = Io::open(&fixtures().join("io.safetensors"));
    assert_eq!(io.shape("decoder_2d.reference_points")[3], 2);
    check_case(&decoder(&device), "decoder_2d", &device);
}

#[test]
fn sampling_core_matches_transformers_inside_on_and_outside_the_maps() {
    let device = Device::flex();
    let io = Io::open(&fixtures().join("io.safetensors"));
    let out = multi_scale_deformable_attention(
        io.float("core.value", &device),
        &io.shapes("core.spatial_shapes"),
        io.float("core.sampling_locations", &device),
        io.float("core.attention_weights", &device),
    )
    .unwrap();
    assert_close("core output", out, &io.f32s("core.output"), &io.shape("core.output"));
}

type SamplingCore =
    fn(Tensor<4>, &[[usize; 2]], Tensor<6>, Tensor<5>) -> Result<Tensor<3>, DeformableAttentionError>;

/// The fused CPU pass, which must take the inputs (it has its own backward on the autodiff
/// device).
fn fused(
    value: Tensor<4>,
    shapes: &[[usize; 2]],
    locations: Tensor<6>,
    weights: Tensor<5>,
) -> Result<Tensor<3>, DeformableAttentionError> {
    Ok(fused_cpu_deformable_attention(value, shapes, locations, weights)
        .unwrap_or_else(|_| panic!("the CPU devices take the fused pass")))
}

/// Both ways of computing the sampling core: the fused CPU pass and the composed
/// `grid_sample_2d` version (Burn's autodiff).
const SAMPLING_CORES: [(&str, SamplingCore); 2] =
    [("fused", fused), ("composed", composed_multi_scale_deformable_attention)];

#[test]
fn sampling_gradients_match_torch_autograd() {
    // The gradients with respect to the values, the locations and the attention logits, on the
    // autodiff CPU device, as training takes them.
    let device = Device::flex().autodiff();
    let io = Io::open(&fixtures().join("io.safetensors"));
    let shapes = io.shapes("core.spatial_shapes");
    for (path, core) in SAMPLING_CORES {
        let value = io.float::<4>("grad.value", &device).require_grad();
        let locations = io.float::<6>("grad.sampling_locations", &device).require_grad();
        let logits = io.float::<4>("grad.attention_logits", &device).require_grad();
        let [batch, queries, heads, taps] = logits.dims();
        let attention = burn::tensor::activation::softmax(logits.clone(), 3).reshape([
            batch,
            queries,
            heads,
            shapes.len(),
            taps / shapes.len(),
        ]);
        let out = core(value.clone(), &shapes, locations.clone(), attention).unwrap();
        let grads = (out * io.float::<3>("grad.cotangent", &device)).sum().backward();
        for (name, tensor) in [("value", value), ("attention_logits", logits)] {
            let grad = tensor.grad(&grads).expect("an input of the loss");
            let key = format!("grad.{name}_grad");
            assert_close(&format!("{path} {key}"), grad, &io.f32s(&key), &io.shape(&key));
        }
        let grad = locations.grad(&grads).expect("an input of the loss");
        let key = "grad.sampling_locations_grad";
        assert_close(&format!("{path} {key}"), grad, &io.f32s(key), &io.shape(key));
    }
}

#[test]
fn sampling_locations_follow_the_reference_formulas() {
    // Not returned by transformers: checked against the formulas on a hand-made module whose
    // offsets are the bias alone (zero weights), so every query gets the same offsets.
    let device = Device::flex();
    let cfg = config(2, 1, 1);
    let mut module = cfg.init(&device).unwrap();
    let bias = Tensor::<1>::from_data(TensorData::new(vec![1.0f32, -2.0, 0.5, 3.0], [4]), &device);
    module.sampling_offsets.bias = Some(burn::module::Param::from_tensor(bias));
    let shapes = [[4usize, 8usize], [2, 5]];
    let value = Tensor::<3>::zeros([1, 42, 32], &device);
    let query = Tensor::<3>::zeros([1, 1, 32], &device);

    let points =
        Tensor::<4>::from_data(TensorData::new(vec![0.25f32, 0.5, 0.75, 0.1], [1, 1, 2, 2]), &device);
    let out = module.forward(query.clone(), None, value.clone(), points, &shapes, None).unwrap();
    // level 0: (0.25 + 1/8, 0.5 - 2/4); level 1: (0.75 + 0.5/5, 0.1 + 3/2)
    let expected = [0.375f32, 0.0, 0.85, 1.6];
    assert_close("2-d locations", out.sampling_locations, &expected, &[1, 1, 1, 2, 1, 2]);

    let boxes = Tensor::<4>::from_data(
        TensorData::new(vec![0.5f32, 0.5, 0.2, 0.4, 0.1, 0.9, 1.0, 0.5], [1, 1, 2, 4]),
        &device,
    );
    let out = module.forward(query, None, value, boxes, &shapes, None).unwrap();
    // centre + offset / n_points * size / 2
    let expected = [0.5f32 + 0.1, 0.5 - 0.4, 0.1 + 0.25, 0.9 + 0.75];
    assert_close("4-d locations", out.sampling_locations, &expected, &[1, 1, 1, 2, 1, 2]);
}

#[test]
fn level_start_index_is_the_running_sum() {
    assert_eq!(level_start_index(&[[6, 5], [3, 4], [2, 1]]), vec![0, 30, 42]);
    assert!(level_start_index(&[]).is_empty());
}

#[test]
fn default_initialisation_spreads_points_and_weights_uniformly() {
    let device = Device::flex();
    let module = config(2, 4, 2).init(&device).unwrap();
    let shapes = [[3usize, 3usize], [2, 2]];
    let out = module
        .forward(
            Tensor::<3>::ones([1, 2, 32], &device),
            None,
            Tensor::<3>::ones([1, 13, 32], &device),
            Tensor::<4>::full([1, 2, 2, 2], 0.5, &device),
            &shapes,
            None,
        )
        .unwrap();
    // Uniform attention over 2 levels x 2 points.
    let weights = out.attention_weights.into_data().try_to_vec::<f32>().unwrap();
    assert!(weights.iter().all(|w| (w - 0.25).abs() < 1e-6), "{weights:?}");
    // Head 1 looks along +y (angle pi/2): offsets (0, 1) and (0, 2) pixels of each level.
    let locations = out.sampling_locations.narrow(2, 1, 1).into_data().try_to_vec::<f32>().unwrap();
    let expected = [0.5, 0.5 + 1.0 / 3.0, 0.5, 0.5 + 2.0 / 3.0, 0.5, 1.0, 0.5, 1.5];
    for (a, e) in locations[..8].iter().zip(expected) {
        assert!((a - e).abs() < 1e-6, "{locations:?}");
    }
}

#[test]
fn invalid_configs_and_inputs_are_errors() {
    let device = Device::flex();
    assert!(matches!(
        MultiScaleDeformableAttentionConfig::new(30, 2, 4, 2).init(&device),
        Err(DeformableAttentionError::Config { .. })
    ));
    assert!(MultiScaleDeformableAttentionConfig::new(32, 0, 4, 2).init(&device).is_err());

    let module = config(2, 4, 2).init(&device).unwrap();
    let query = Tensor::<3>::zeros([1, 3, 32], &device);
    let value = Tensor::<3>::zeros([1, 13, 32], &device);
    let points = Tensor::<4>::zeros([1, 3, 2, 2], &device);
    let shapes = [[3usize, 3usize], [2, 2]];
    let shape_err =
        |r: Result<_, DeformableAttentionError>| matches!(r, Err(DeformableAttentionError::Shape(_)));

    // 3 coordinates per reference point
    let bad_points = Tensor::<4>::zeros([1, 3, 2, 3], &device);
    assert!(shape_err(module.forward(query.clone(), None, value.clone(), bad_points, &shapes, None)));
    // spatial shapes that do not cover the values, or the wrong number of levels
    assert!(shape_err(module.forward(
        query.clone(),
        None,
        value.clone(),
        points.clone(),
        &[[3, 3], [2, 3]],
        None
    )));
    assert!(shape_err(module.forward(query.clone(), None, value.clone(), points.clone(), &[[13, 1]], None)));
    // mask of the wrong length
    let mask = Tensor::<2, Bool>::from_data(TensorData::new(vec![false; 12], [1, 12]), &device);
    assert!(shape_err(module.forward(
        query.clone(),
        None,
        value.clone(),
        points.clone(),
        &shapes,
        Some(mask)
    )));
    // value of the wrong width
    let narrow = Tensor::<3>::zeros([1, 13, 16], &device);
    assert!(shape_err(module.forward(query, None, narrow, points, &shapes, None)));
}

fn load_error(path: &Path) -> String {
    load_error_naming_file(path, load(&config(3, 4, 2), path, ENCODER_PREFIX, &Device::flex()))
}

#[test]
fn missing_extra_and_misshaped_tensors_are_named() {
    let weights = fixtures().join("weights.safetensors");
    let missing = edited_f32_weights(&weights, |t| {
        t.remove(&format!("{ENCODER_PREFIX}sampling_offsets.bias"));
    });
    let message = load_error(&missing);
    assert!(message.contains("sampling_offsets.bias"), "{message}");

    let extra = edited_f32_weights(&weights, |t| {
        t.insert(format!("{ENCODER_PREFIX}sampling_points.weight"), (vec![2], vec![0.0, 1.0]));
    });
    let message = load_error(&extra);
    assert!(message.contains("sampling_points.weight"), "{message}");

    let misshaped = edited_f32_weights(&weights, |t| {
        t.insert(format!("{ENCODER_PREFIX}attention_weights.weight"), (vec![12, 32], vec![0.0; 12 * 32]));
    });
    let message = load_error(&misshaped);
    assert!(message.contains("attention_weights.weight"), "{message}");

    // The decoder's weights do not fit the encoder's config (2 heads x 3 points, 2 levels).
    let device = Device::flex();
    let err = load(&config(3, 4, 2), &weights, DECODER_PREFIX, &device).expect_err("mismatched config");
    let report = err.mismatch().expect("a mismatch report");
    assert!(report.mis_shaped.iter().any(|m| m.key.ends_with("sampling_offsets.weight")), "{err}");
}

/// Random inputs whose locations reach past the maps on every side: value, locations, weights.
fn random_sampling_inputs(shapes: &[[usize; 2]], device: &Device) -> (Tensor<4>, Tensor<6>, Tensor<5>) {
    let (batch, queries, heads, head_dim, points) = (2, 37, 4, 8, 3);
    let seq: usize = shapes.iter().map(|[h, w]| h * w).sum();
    let levels = shapes.len();
    let value = Tensor::<4>::random([batch, seq, heads, head_dim], Distribution::Normal(0.0, 1.0), device);
    let locations = Tensor::<6>::random(
        [batch, queries, heads, levels, points, 2],
        Distribution::Uniform(-0.2, 1.2),
        device,
    );
    let weights =
        Tensor::<5>::random([batch, queries, heads, levels, points], Distribution::Uniform(0.0, 1.0), device);
    (value, locations, weights)
}

const SHAPES: [[usize; 2]; 3] = [[9, 13], [5, 7], [3, 4]];

#[test]
fn the_fused_cpu_pass_equals_the_composed_grid_sample_version() {
    let (value, locations, weights) = random_sampling_inputs(&SHAPES, &Device::flex());
    let composed =
        composed_multi_scale_deformable_attention(value.clone(), &SHAPES, locations.clone(), weights.clone())
            .unwrap();
    let expected = composed.into_data().try_into_vec_as::<f32>().unwrap();
    let shape = [value.dims()[0], locations.dims()[1], value.dims()[2] * value.dims()[3]];
    let fused = fused(value, &SHAPES, locations, weights).unwrap();
    assert_close("fused deformable attention", fused, &expected, &shape);
}

#[test]
fn the_fused_cpu_backward_equals_the_composed_grid_sample_gradients() {
    // Same inputs and cotangent through both paths on the autodiff CPU device. The fused pass
    // has its own backward; the composed one is Burn's autodiff of grid_sample.
    let device = Device::flex().autodiff();
    let (value, locations, weights) = random_sampling_inputs(&SHAPES, &device);
    let [batch, _, heads, head_dim] = value.dims();
    let cotangent = Tensor::<3>::random(
        [batch, locations.dims()[1], heads * head_dim],
        Distribution::Normal(0.0, 1.0),
        &device,
    );
    let gradients = |core: SamplingCore| {
        let (value, locations, weights) =
            (value.clone().require_grad(), locations.clone().require_grad(), weights.clone().require_grad());
        let out = core(value.clone(), &SHAPES, locations.clone(), weights.clone()).unwrap();
        let grads = (out * cotangent.clone()).sum().backward();
        [
            value.grad(&grads).expect("value").into_data(),
            locations.grad(&grads).expect("locations").into_data(),
            weights.grad(&grads).expect("weights").into_data(),
        ]
    };
    let composed = gradients(composed_multi_scale_deformable_attention);
    let fused = gradients(fused);
    for ((name, fused), composed) in ["value", "locations", "weights"].iter().zip(fused).zip(composed) {
        assert_eq!(fused.shape(), composed.shape(), "{name} gradient: shape");
        let expected = composed.try_into_vec_as::<f32>().unwrap();
        assert!(expected.iter().any(|v| v.abs() > 0.1), "{name}: the reference is not all zeros");
        let fused = fused.try_into_vec_as::<f32>().unwrap();
        let len = fused.len();
        let fused = Tensor::<1>::from_data(TensorData::new(fused, [len]), &Device::flex());
        assert_close(&format!("{name} gradient"), fused, &expected, &[expected.len()]);
    }
}
