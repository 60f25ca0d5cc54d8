//! Grounding DINO's training loss, as transformers' `GroundingDinoForObjectDetectionLoss`
//! computes it: each layer's queries are matched one-to-one to the targets (Hungarian matching
//! on a focal class cost over the targets' tokens, L1 and GIoU: [`grounding_match`]); then a
//! sigmoid focal loss over every query's real tokens (a matched query's targets are its target's
//! tokens, every other token 0), an L1 and a GIoU loss over the matched boxes, each divided by the
//! number of targets in the batch. The total weighs them 2 / 5 / 2 and sums the final layer, the
//! auxiliary (earlier decoder) layers and the encoder's proposals.

use burn::tensor::{Bool, Int, Tensor, TensorData};
use glint_core::assignment::{AssignmentError, MatchCosts, grounding_match};
use glint_core::geometry::BoxCxcywh;

use super::{giou_loss, sigmoid_focal_loss};

/// The targets of one image: boxes (cxcywh, normalised to 0..1) and, per box, its tokens
/// (`1.0` on the tokens of its phrase, over the prompt's token positions).
#[derive(Debug, Clone, Default)]
pub struct SetTarget {
    pub boxes: Vec<BoxCxcywh>,
    pub token_maps: Vec<Vec<f32>>,
}

/// One layer's outputs: `logits [B, Q, L]` and `boxes [B, Q, 4]` (cxcywh, sigmoid-ed).
#[derive(Debug, Clone)]
pub struct LayerOutput {
    pub logits: Tensor<3>,
    pub boxes: Tensor<3>,
}

/// The three terms of one layer (scalars `[1]`).
#[derive(Debug, Clone)]
pub struct SetLossTerms {
    pub labels: Tensor<1>,
    pub l1: Tensor<1>,
    pub giou: Tensor<1>,
}

/// The weights and matching costs (transformers' defaults).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SetLossConfig {
    pub labels_weight: f32,
    pub l1_weight: f32,
    pub giou_weight: f32,
    pub focal_alpha: f32,
    pub focal_gamma: f32,
    pub costs: MatchCosts,
}

impl Default for SetLossConfig {
    fn default() -> Self {
        Self {
            labels_weight: 2.0,
            l1_weight: 5.0,
            giou_weight: 2.0,
            focal_alpha: 0.25,
            focal_gamma: 2.0,
            costs: MatchCosts::default(),
        }
    }
}

impl SetLossConfig {
    /// Match one layer's queries to the targets and compute its terms. `text_mask [B, L]` is
    /// `true` on real tokens.
    pub fn layer_terms(
        &self,
        output: &LayerOutput,
        text_mask: Tensor<2, Bool>,
        targets: &[SetTarget],
    ) -> Result<SetLossTerms, AssignmentError> {
        let [batch, queries, len] = output.logits.dims();
        let device = output.logits.device();
        let host = |t: Tensor<3>| t.into_data().try_into_vec_as::<f32>().unwrap_or_default();
        let logits = host(output.logits.clone());
        let boxes = host(output.boxes.clone());
        let num_boxes = targets.iter().map(|t| t.boxes.len()).sum::<usize>().max(1) as f32;

        let mut token_targets = vec![0.0f32; batch * queries * len];
        let mut matched_queries = Vec::new();
        let mut matched_boxes = Vec::new();
        for (b, target) in targets.iter().enumerate().take(batch) {
            let predicted: Vec<BoxCxcywh> = boxes[b * queries * 4..(b + 1) * queries * 4]
                .chunks_exact(4)
                .map(|v| BoxCxcywh { cx: v[0], cy: v[1], w: v[2], h: v[3] })
                .collect();
            let rows = &logits[b * queries * len..(b + 1) * queries * len];
            for (q, t) in grounding_match(rows, &predicted, &target.token_maps, &target.boxes, &self.costs)? {
                let row = (b * queries + q) * len;
                for (slot, &value) in token_targets[row..row + len].iter_mut().zip(&target.token_maps[t]) {
                    *slot = value;
                }
                matched_queries.push((b * queries + q) as i64);
                let g = target.boxes[t];
                matched_boxes.extend([g.cx, g.cy, g.w, g.h]);
            }
        }
        let token_targets =
            Tensor::<3>::from_data(TensorData::new(token_targets, [batch, queries, len]), &device);
        // Padding tokens' logits are -inf (a NaN in the focal loss): set them to 0 before and
        // mask their terms out after.
        let padding = text_mask.clone().bool_not().unsqueeze_dim::<3>(1).expand([batch, queries, len]);
        let logits = output.logits.clone().mask_fill(padding, 0.0);
        let focal = sigmoid_focal_loss(logits, token_targets, self.focal_alpha, self.focal_gamma);
        let labels = (focal * text_mask.float().unsqueeze_dim::<3>(1)).sum() / num_boxes;

        let matched = matched_queries.len();
        if matched == 0 {
            let zero = (output.boxes.clone() * 0.0).sum();
            return Ok(SetLossTerms { labels, l1: zero.clone(), giou: zero });
        }
        let index = Tensor::<1, Int>::from_data(TensorData::new(matched_queries, [matched]), &device);
        let predicted = output.boxes.clone().reshape([batch * queries, 4]).select(0, index);
        let target = Tensor::<2>::from_data(TensorData::new(matched_boxes, [matched, 4]), &device);
        let l1 = (predicted.clone() - target.clone()).abs().sum() / num_boxes;
        let giou = giou_loss(corners(predicted), corners(target)).sum() / num_boxes;
        Ok(SetLossTerms { labels, l1, giou })
    }

    /// The weighted sum of one layer's terms.
    pub fn weighted(&self, terms: &SetLossTerms) -> Tensor<1> {
        terms.labels.clone() * self.labels_weight
            + terms.l1.clone() * self.l1_weight
            + terms.giou.clone() * self.giou_weight
    }

    /// The total over layers (the final one, the auxiliary ones, the encoder's proposals: each
    /// matched on its own), and each layer's terms in the order given.
    pub fn loss(
        &self,
        layers: &[LayerOutput],
        text_mask: Tensor<2, Bool>,
        targets: &[SetTarget],
    ) -> Result<(Tensor<1>, Vec<SetLossTerms>), AssignmentError> {
        let terms = layers
            .iter()
            .map(|layer| self.layer_terms(layer, text_mask.clone(), targets))
            .collect::<Result<Vec<_>, _>>()?;
        let total = terms
            .iter()
            .map(|t| self.weighted(t))
            .reduce(|a, b| a + b)
            .unwrap_or_else(|| Tensor::zeros([1], &text_mask.device()));
        Ok((total, terms))
    }
}

/// `[N, 4]` cxcywh → xyxy.
fn corners(boxes: Tensor<2>) -> Tensor<2> {
    let centre = boxes.clone().narrow(1, 0, 2);
    let half = boxes.narrow(1, 2, 2) / 2.0;
    Tensor::cat(vec![centre.clone() - half.clone(), centre + half], 1)
}
