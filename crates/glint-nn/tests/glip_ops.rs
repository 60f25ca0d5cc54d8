//! GLIP's training losses (`glint_nn::loss`) and the modulated deformable convolution of its DyHead
//! (Burn's `deform_conv2d`) against torchvision and torch autograd (fixtures from
//! `tests/fixtures/make_glip_ops.py`; see `tests/fixtures/README.md`).
//!
//! Tolerance, elementwise in f32: losses and their gradients within 1e-5 + 1e-4 * |reference|,
//! deformable convolution within 1e-4 + 1e-4 * |reference|. The losses are a handful of
//! element-wise ops on values up to ~20, so only the rounding of exp / log differs (~1e-7
//! relative); an unstable form (log of a saturated sigmoid, exp of a large logit) gives inf, NaN
//! or errors of 1e-3 and more at the fixtures' ±20 / ±30 logits. Each convolution output sums
//! 36 bilinear samples times weights, so reordering the f32 sums moves it by ~1e-6, while a wrong
//! offset layout (x / y swapped), mask index or border rule moves it by 1e-1.

mod common;

use std::path::PathBuf;

use burn::tensor::module::deform_conv2d;
use burn::tensor::ops::DeformConvOptions;
use burn::tensor::{Device, Tensor};
use common::Io;
use glint_nn::head::glip::dyhead::modulated_deform_conv;
use glint_nn::loss::{bce_with_logits, giou_loss, sigmoid_focal_loss};

const LOSS_ATOL: f32 = 1e-5;
const LOSS_RTOL: f32 = 1e-4;
const DEFORM_TOL: f32 = 1e-4;

fn io() -> Io {
    Io::open(&fixtures().join("io.safetensors"))
}

fn fixtures() -> PathBuf {
    common::fixtures("glip_ops")
}

fn assert_loss_close<const D: usize>(what: &str, actual: Tensor<D>, io: &Io, key: &str) {
    common::assert_close(what, actual, &io.f32s(key), &io.shape(key), LOSS_ATOL, LOSS_RTOL);
}

fn check_focal(case: &str, alpha: f32, gamma: f32) {
    let device = Device::flex();
    let io = io();
    let logits = io.float::<3>(&format!("{case}.logits"), &device);
    let targets = io.float::<3>(&format!("{case}.targets"), &device);
    let loss = sigmoid_focal_loss(logits, targets, alpha, gamma);
    assert_loss_close(&format!("{case} loss"), loss, &io, &format!("{case}.loss"));
}

fn check_focal_gradient(case: &str, alpha: f32, gamma: f32) {
    let device = Device::flex().autodiff();
    let io = io();
    let logits = io.float::<3>(&format!("{case}.logits"), &device).require_grad();
    let targets = io.float::<3>(&format!("{case}.targets"), &device);
    let grads = sigmoid_focal_loss(logits.clone(), targets, alpha, gamma).sum().backward();
    let grad = logits.grad(&grads).expect("logits take part in the loss");
    assert_loss_close(&format!("{case} gradient"), grad, &io, &format!("{case}.grad_logits"));
}

#[test]
fn focal_loss_matches_torchvision_including_saturated_logits() {
    let io = io();
    assert!(io.f32s("focal.logits").iter().any(|x| x.abs() == 20.0), "the fixture must saturate");
    check_focal("focal", 0.25, 2.0);
}

#[test]
fn focal_loss_with_negative_alpha_skips_the_alpha_weighting() {
    check_focal("focal_noalpha", -1.0, 1.5);
}

#[test]
fn focal_loss_gradient_matches_torch_autograd() {
    check_focal_gradient("focal", 0.25, 2.0);
}

#[test]
fn focal_loss_gradient_without_alpha_matches_torch_autograd() {
    // gamma 1.5: (1 - p_t)^1.5 is differentiated at 0 for the saturated, correct logits.
    check_focal_gradient("focal_noalpha", -1.0, 1.5);
}

#[test]
fn giou_loss_matches_torchvision_for_identical_disjoint_and_nested_boxes() {
    let device = Device::flex();
    let io = io();
    let loss = giou_loss(io.float("giou.pred", &device), io.float("giou.target", &device));
    assert_loss_close("giou loss", loss, &io, "giou.loss");
}

#[test]
fn giou_loss_gradient_matches_torch_autograd_away_from_ties() {
    let device = Device::flex().autodiff();
    let io = io();
    let pred = io.float::<2>("giou.pred", &device).require_grad();
    let grads = giou_loss(pred.clone(), io.float("giou.target", &device)).sum().backward();
    let grad = pred.grad(&grads).expect("pred takes part in the loss");

    // Row 0 is an identical pair: every min / max ties, and torch splits a tie's gradient in half
    // where Burn's `max_pair` gives it to one side. Both are valid subgradients, so row 0 is only
    // required to be finite; the other rows have no ties.
    let rows = grad.dims()[0];
    let identical = grad.clone().narrow(0, 0, 1).into_data().try_to_vec::<f32>().unwrap();
    assert!(identical.iter().all(|g| g.is_finite()), "identical pair gradient {identical:?}");
    let expected = io.f32s("giou.grad_pred");
    common::assert_close(
        "giou gradient",
        grad.narrow(0, 1, rows - 1),
        &expected[4..],
        &[rows - 1, 4],
        LOSS_ATOL,
        LOSS_RTOL,
    );
}

#[test]
fn bce_with_logits_matches_pytorch_on_soft_targets_and_large_logits() {
    let device = Device::flex();
    let io = io();
    let loss = bce_with_logits(io.float::<1>("bce.logits", &device), io.float("bce.targets", &device));
    assert_loss_close("bce loss", loss, &io, "bce.loss");
}

fn check_deform(case: &str, stride: usize) {
    let device = Device::flex();
    let io = io();
    let key = |name: &str| format!("{case}.{name}");
    let bias = io.has(&key("bias")).then(|| io.float::<1>(&key("bias"), &device));
    let output = deform_conv2d(
        io.float(&key("input"), &device),
        io.float(&key("offset"), &device),
        io.float(&key("weight"), &device),
        Some(io.float(&key("mask"), &device)),
        bias,
        // stride, padding, dilation, weight groups, offset groups
        DeformConvOptions::new([stride, stride], [1, 1], [1, 1], 1, 1),
    );
    common::assert_close(
        &format!("{case} output"),
        output,
        &io.f32s(&key("output")),
        &io.shape(&key("output")),
        DEFORM_TOL,
        DEFORM_TOL,
    );
}

/// glint's own path (GLIP's DyHead): Burn's op for inference, a composed one when training.
fn check_glint_deform(case: &str, stride: usize, device: &Device) {
    let io = io();
    let key = |name: &str| format!("{case}.{name}");
    let mut output = modulated_deform_conv(
        io.float(&key("input"), device),
        io.float(&key("offset"), device),
        io.float(&key("mask"), device),
        io.float(&key("weight"), device),
        stride,
    );
    if let Some(bias) = io.has(&key("bias")).then(|| io.float::<1>(&key("bias"), device)) {
        let channels = bias.dims()[0];
        output = output + bias.reshape([1, channels, 1, 1]);
    }
    let expected = io.f32s(&key("output"));
    common::assert_close(
        &format!("{case} output"),
        output,
        &expected,
        &io.shape(&key("output")),
        DEFORM_TOL,
        DEFORM_TOL,
    );
}

#[test]
fn glint_deform_conv_matches_torchvision_for_inference_and_training() {
    for device in [Device::flex(), Device::flex().autodiff()] {
        check_glint_deform("deform", 1, &device);
        check_glint_deform("deform_s2", 2, &device);
    }
}

/// The gradients of the training path (what reaches the FPN, the offsets, the masks and the
/// weights) against torch autograd through torchvision's op.
fn check_glint_deform_gradient(case: &str, stride: usize) {
    let device = Device::flex().autodiff();
    let io = io();
    let key = |name: &str| format!("{case}.{name}");
    let input = io.float::<4>(&key("input"), &device).require_grad();
    let offset = io.float::<4>(&key("offset"), &device).require_grad();
    let mask = io.float::<4>(&key("mask"), &device).require_grad();
    let weight = io.float::<4>(&key("weight"), &device).require_grad();
    let output = modulated_deform_conv(input.clone(), offset.clone(), mask.clone(), weight.clone(), stride);
    let grads = (output * io.float::<4>(&key("upstream"), &device)).sum().backward();
    for (name, tensor) in [("input", input), ("offset", offset), ("mask", mask), ("weight", weight)] {
        let grad = tensor.grad(&grads).unwrap_or_else(|| panic!("{case}: {name} takes part"));
        let what = format!("{case} gradient of the {name}");
        common::assert_close(
            &what,
            grad,
            &io.f32s(&key(&format!("grad_{name}"))),
            &io.shape(&key(&format!("grad_{name}"))),
            DEFORM_TOL,
            DEFORM_TOL,
        );
    }
}

#[test]
fn glint_deform_conv_gradients_match_torch_autograd() {
    check_glint_deform_gradient("deform", 1);
    check_glint_deform_gradient("deform_s2", 2);
}

#[test]
fn modulated_deform_conv_matches_torchvision_with_samples_outside_the_map() {
    assert!(io().has("deform.bias"));
    check_deform("deform", 1);
}

#[test]
fn strided_modulated_deform_conv_without_bias_matches_torchvision() {
    assert!(!io().has("deform_s2.bias"));
    check_deform("deform_s2", 2);
}

/// DyHead's upsampling (matrix form, differentiable on wgpu) equals Burn's bilinear
/// `interpolate` with aligned corners (PyTorch's `F.upsample_bilinear`), within 1e-5.
#[test]
fn dyhead_upsampling_equals_bilinear_interpolation_with_aligned_corners() {
    use burn::tensor::module::interpolate;
    use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
    use burn::tensor::{Distribution, Tensor};
    use glint_nn::head::glip::dyhead::upsample_bilinear;

    let device = Device::flex();
    for ([h, w], [out_h, out_w]) in [([3, 5], [5, 10]), ([1, 2], [2, 3]), ([4, 4], [7, 8]), ([2, 1], [3, 1])]
    {
        let x = Tensor::<4>::random([2, 3, h, w], Distribution::Normal(0.0, 1.0), &device);
        let options = InterpolateOptions::new(InterpolateMode::Bilinear)
            .with_align_corners(true)
            .with_output_size([out_h, out_w]);
        let expected = interpolate(x.clone(), options);
        let actual = upsample_bilinear(x, [out_h, out_w]);
        assert_eq!(actual.dims(), expected.dims());
        let diff = (actual - expected).abs().max().into_scalar::<f32>();
        assert!(diff <= 1e-5, "{h}×{w} → {out_h}×{out_w}: max difference {diff}");
    }
}
