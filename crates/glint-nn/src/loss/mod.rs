//! Detection losses on Burn tensors, differentiable on an autodiff device: the sigmoid focal
//! loss (on grounding logits), GIoU between boxes, and binary cross-entropy on logits. Each is
//! element-wise or per pair (reduction `"none"`), so callers choose how to normalise; each is
//! checked against torchvision / PyTorch on fixtures (`tests/fixtures/make_glip_ops.py`).
//! [`atss`] is GLIP's loss and [`grounding_dino`] Grounding DINO's set loss.

pub mod atss;
pub mod grounding_dino;

use burn::tensor::Tensor;
use burn::tensor::activation::{log_sigmoid, sigmoid};

/// Element-wise sigmoid focal loss (torchvision's `sigmoid_focal_loss`, reduction `"none"`):
/// `α_t · (1 - p_t)^γ · BCE(logits, targets)`. A negative `alpha` turns the α weighting off.
pub fn sigmoid_focal_loss<const D: usize>(
    logits: Tensor<D>,
    targets: Tensor<D>,
    alpha: f32,
    gamma: f32,
) -> Tensor<D> {
    let p = sigmoid(logits.clone());
    let ce = bce_with_logits(logits, targets.clone());
    // 1 - p_t = p (1 - t) + (1 - p) t
    let one_minus_pt = p.clone() + targets.clone() - p * targets.clone() * 2.0;
    let loss = ce * one_minus_pt.powf_scalar(gamma);
    if alpha < 0.0 {
        return loss;
    }
    // α_t = α t + (1 - α)(1 - t)
    let alpha_t = targets.mul_scalar(2.0 * alpha - 1.0).add_scalar(1.0 - alpha);
    loss * alpha_t
}

/// Element-wise binary cross-entropy on logits, `-(t·log σ(x) + (1 - t)·log(1 - σ(x)))`,
/// computed through `log_sigmoid` so that large logits do not overflow.
pub fn bce_with_logits<const D: usize>(logits: Tensor<D>, targets: Tensor<D>) -> Tensor<D> {
    // log(1 - σ(x)) = log σ(x) - x
    let log_p = log_sigmoid(logits.clone());
    let log_not_p = log_p.clone() - logits;
    (targets.clone() * log_p + (targets.neg() + 1.0) * log_not_p).neg()
}

/// `1 - GIoU` of each pair of rows of `[N, 4]` xyxy boxes (torchvision's
/// `generalized_box_iou_loss`, with its `eps = 1e-7` in both divisions).
pub fn giou_loss(pred: Tensor<2>, target: Tensor<2>) -> Tensor<1> {
    const EPS: f32 = 1e-7;
    let n = pred.dims()[0];
    let col = |t: &Tensor<2>, i: usize| t.clone().narrow(1, i, 1).reshape([n]);
    let (px0, py0, px1, py1) = (col(&pred, 0), col(&pred, 1), col(&pred, 2), col(&pred, 3));
    let (tx0, ty0, tx1, ty1) = (col(&target, 0), col(&target, 1), col(&target, 2), col(&target, 3));
    let area_p = (px1.clone() - px0.clone()) * (py1.clone() - py0.clone());
    let area_t = (tx1.clone() - tx0.clone()) * (ty1.clone() - ty0.clone());
    let iw = (px1.clone().min_pair(tx1.clone()) - px0.clone().max_pair(tx0.clone())).clamp_min(0.0);
    let ih = (py1.clone().min_pair(ty1.clone()) - py0.clone().max_pair(ty0.clone())).clamp_min(0.0);
    let intersection = iw * ih;
    let union = area_p + area_t - intersection.clone();
    let iou = intersection / (union.clone() + EPS);
    let hull_w = px1.max_pair(tx1) - px0.min_pair(tx0);
    let hull_h = py1.max_pair(ty1) - py0.min_pair(ty0);
    let hull = hull_w * hull_h;
    let giou = iou - (hull.clone() - union) / (hull + EPS);
    giou.neg() + 1.0
}
