//! ATSS label assignment (Zhang et al. 2020, "Bridging the Gap Between Anchor-based and
//! Anchor-free Detection") and GLIP's training loss on top of it.
//!
//! Assignment, per image and ground-truth box: on every level, the `top_k` anchors whose centres
//! are nearest the box's centre are candidates; the IoU threshold is the mean plus the (unbiased)
//! standard deviation of the candidates' IoUs; a candidate is positive when its IoU reaches the
//! threshold and its centre lies inside the box (by more than 0.01 px). An anchor positive for
//! several boxes takes the one it overlaps most.
//!
//! Loss ([`GlipLoss`]), GLIP's `ATSSLossComputation` with token targets: a sigmoid focal loss
//! (α 0.25, γ 2) between every anchor's alignment logits and the positive map of its box's
//! phrase (all zeros for background), over real tokens only, divided by the number of positive
//! anchors; a GIoU loss between each positive anchor's decoded box and its box, weighted by the
//! centerness target and divided by the sum of those targets; and a BCE between the centerness
//! logit and its target, divided by the number of positives.

use burn::tensor::{Int, Tensor, TensorData};
use glint_core::geometry::{BoxXyxy, box_iou};
use serde::{Deserialize, Serialize};

use super::{bce_with_logits, giou_loss, sigmoid_focal_loss};
use crate::head::glip::GlipHeadOutput;
use crate::head::glip::anchors::{BoxConvention, boxes_tensor, decode_boxes};

/// For each anchor, the index of the box it is assigned to, or `None` (background).
/// `level_counts[l]` anchors belong to level `l`, in the order of `anchors`.
pub fn atss_assign(
    anchors: &[BoxXyxy],
    level_counts: &[usize],
    boxes: &[BoxXyxy],
    top_k: usize,
) -> Vec<Option<usize>> {
    let mut assigned: Vec<Option<(usize, f32)>> = vec![None; anchors.len()];
    if boxes.is_empty() {
        return vec![None; anchors.len()];
    }
    let ious = box_iou(anchors, boxes); // [A][G]
    let centre = |b: &BoxXyxy| ((b.x0 + b.x1) / 2.0, (b.y0 + b.y1) / 2.0);
    for (g, gt) in boxes.iter().enumerate() {
        let (gx, gy) = centre(gt);
        let mut candidates = Vec::new();
        let mut start = 0;
        for &count in level_counts {
            let mut by_distance: Vec<(f32, usize)> = (start..start + count)
                .map(|a| {
                    let (ax, ay) = centre(&anchors[a]);
                    ((ax - gx).powi(2) + (ay - gy).powi(2), a)
                })
                .collect();
            let k = top_k.min(count);
            if k > 0 {
                by_distance.select_nth_unstable_by(k - 1, |p, q| p.0.total_cmp(&q.0).then(p.1.cmp(&q.1)));
                candidates.extend(by_distance[..k].iter().map(|&(_, a)| a));
            }
            start += count;
        }
        let candidate_ious: Vec<f32> = candidates.iter().map(|&a| ious[a][g]).collect();
        let n = candidate_ious.len() as f32;
        let mean = candidate_ious.iter().sum::<f32>() / n;
        let var = if n > 1.0 {
            candidate_ious.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / (n - 1.0)
        } else {
            0.0
        };
        let threshold = mean + var.sqrt();
        for (&a, &iou) in candidates.iter().zip(&candidate_ious) {
            let (ax, ay) = centre(&anchors[a]);
            let inside = (ax - gt.x0).min(ay - gt.y0).min(gt.x1 - ax).min(gt.y1 - ay) > 0.01;
            if iou >= threshold && inside && assigned[a].is_none_or(|(_, best)| iou > best) {
                assigned[a] = Some((g, iou));
            }
        }
    }
    assigned.into_iter().map(|a| a.map(|(g, _)| g)).collect()
}

/// FCOS / ATSS centerness of a point inside a box: `sqrt(min(l, r)/max(l, r) · min(t, b)/max(t, b))`.
pub fn centerness_target(anchor: &BoxXyxy, gt: &BoxXyxy) -> f32 {
    let (cx, cy) = ((anchor.x0 + anchor.x1) / 2.0, (anchor.y0 + anchor.y1) / 2.0);
    let (l, r) = (cx - gt.x0, gt.x1 - cx);
    let (t, b) = (cy - gt.y0, gt.y1 - cy);
    let ratio = |a: f32, b: f32| if a.max(b) > 0.0 { a.min(b).max(0.0) / a.max(b) } else { 0.0 };
    (ratio(l, r) * ratio(t, b)).sqrt()
}

/// One image's training target: its boxes (in the model's input pixels) and, per box, the
/// positive map row of its phrase (`1.0` on the phrase's tokens, length = the image's tokens).
#[derive(Debug, Clone)]
pub struct GroundingTarget {
    pub boxes: Vec<BoxXyxy>,
    pub token_maps: Vec<Vec<f32>>,
    /// Real tokens of the image's caption (the rest of the batch's `L` is padding).
    pub num_tokens: usize,
}

/// Weights and parameters of GLIP's loss.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GlipLossConfig {
    /// Candidates per level and box in ATSS.
    pub top_k: usize,
    pub focal_alpha: f32,
    pub focal_gamma: f32,
    pub token_weight: f32,
    /// GLIP (and ATSS) weigh the box loss 2.
    pub box_weight: f32,
    pub centerness_weight: f32,
}

impl Default for GlipLossConfig {
    fn default() -> Self {
        Self {
            top_k: 9,
            focal_alpha: 0.25,
            focal_gamma: 2.0,
            token_weight: 1.0,
            box_weight: 2.0,
            centerness_weight: 1.0,
        }
    }
}

/// The loss terms of one batch (scalars, differentiable) and the number of positive anchors.
#[derive(Debug, Clone)]
pub struct GlipLoss {
    pub token: Tensor<1>,
    pub boxes: Tensor<1>,
    pub centerness: Tensor<1>,
    pub total: Tensor<1>,
    pub num_positive: usize,
}

impl GlipLossConfig {
    /// The loss of head outputs against per-image targets. `anchors` in the head's order, boxes
    /// decoded in the model's `convention`.
    pub fn loss(
        &self,
        output: &GlipHeadOutput,
        anchors: &[BoxXyxy],
        convention: BoxConvention,
        targets: &[GroundingTarget],
    ) -> GlipLoss {
        let device = output.logits.device();
        let [batch, n, len] = output.logits.dims();
        let level_counts: Vec<usize> = output.level_sizes.iter().map(|[h, w]| h * w).collect();
        let mut token_targets = vec![0.0f32; batch * n * len];
        let mut token_valid = vec![0.0f32; batch * n * len];
        let mut positive_rows = Vec::new(); // flat index b * n + a
        let mut matched_boxes = Vec::new();
        let mut matched_anchors = Vec::new();
        let mut centerness = Vec::new();
        for (b, target) in targets.iter().enumerate() {
            let valid = target.num_tokens.min(len);
            for a in 0..n {
                token_valid[(b * n + a) * len..(b * n + a) * len + valid].fill(1.0);
            }
            for (a, gt) in
                atss_assign(anchors, &level_counts, &target.boxes, self.top_k).into_iter().enumerate()
            {
                let Some(g) = gt else { continue };
                let row = (b * n + a) * len;
                for (t, &v) in target.token_maps[g].iter().take(valid).enumerate() {
                    token_targets[row + t] = v;
                }
                positive_rows.push((b * n + a) as i64);
                matched_boxes.push(target.boxes[g]);
                matched_anchors.push(anchors[a]);
                centerness.push(centerness_target(&anchors[a], &target.boxes[g]));
            }
        }
        let num_positive = positive_rows.len();
        let normaliser = num_positive.max(1) as f32;
        let full = |data: Vec<f32>| Tensor::<3>::from_data(TensorData::new(data, [batch, n, len]), &device);
        let focal = sigmoid_focal_loss(
            output.logits.clone(),
            full(token_targets),
            self.focal_alpha,
            self.focal_gamma,
        );
        let token = (focal * full(token_valid)).sum() / normaliser;

        let (boxes, centerness_loss) = if num_positive == 0 {
            let zero = output.box_deltas.clone().sum() * 0.0 + output.centerness.clone().sum() * 0.0;
            (zero.clone(), zero)
        } else {
            let rows = Tensor::<1, Int>::from_data(TensorData::new(positive_rows, [num_positive]), &device);
            let deltas = output.box_deltas.clone().reshape([batch * n, 4]).select(0, rows.clone());
            let predicted = decode_boxes(deltas, boxes_tensor(&matched_anchors, &device), convention);
            let weights =
                Tensor::<1>::from_data(TensorData::new(centerness.clone(), [num_positive]), &device);
            let weight_sum = centerness.iter().sum::<f32>().max(1e-6);
            let boxes = (giou_loss(predicted, boxes_tensor(&matched_boxes, &device)) * weights.clone()).sum()
                / weight_sum;
            let logits = output.centerness.clone().reshape([batch * n]).select(0, rows);
            (boxes, bce_with_logits(logits, weights).sum() / normaliser)
        };
        let total = token.clone() * self.token_weight
            + boxes.clone() * self.box_weight
            + centerness_loss.clone() * self.centerness_weight;
        GlipLoss { token, boxes, centerness: centerness_loss, total, num_positive }
    }
}
