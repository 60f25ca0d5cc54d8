//! Exemplar prompts for GLIP: "find more of this" from one marked box, with no training.
//!
//! A box is embedded with the detector's own region features: the region feature (the one its
//! alignment logits score against the prompt's tokens) of the anchor whose predicted box
//! overlaps the marked box most. Another region's score for the exemplar is its cosine
//! similarity to that feature, calibrated on the exemplar's own image so that probabilities are
//! comparable to a text phrase's: the exemplar's region itself scores 0.95, and the regions of
//! the background most like it (the 99th percentile of the anchors whose predicted boxes barely
//! overlap the marked box) score 0.05. The scores join the prompt's as one more "token" per
//! exemplar, so the usual post-processing (centerness, top-k, NMS) applies unchanged.

use burn::tensor::{Tensor, TensorData};
use glint_core::geometry::{BoxXyxy, iou};

use crate::head::glip::GlipHeadOutput;

/// The logit of the exemplar's own region (probability 0.95); its background gets the negative.
const SELF_LOGIT: f32 = 2.944_439;

/// Anchors whose predicted boxes overlap the marked box less than this are its image's background.
const BACKGROUND_IOU: f32 = 0.3;

/// An embedded exemplar box.
#[derive(Debug, Clone, PartialEq)]
pub struct ExemplarEmbedding {
    /// The unit-length region feature of the box.
    pub feature: Vec<f32>,
    /// The cosine similarity that scores probability 0.05 (its image's background).
    pub background: f32,
}

/// Embed `bbox` (in model-input pixels) of image `b` of a batch's output, given the output's
/// decoded boxes `[B, N, 4]` (see [`crate::detector::glip::Glip::decode_boxes`]). `None` when
/// no predicted box overlaps it.
pub fn embed_exemplar(
    output: &GlipHeadOutput,
    boxes: Tensor<3>,
    b: usize,
    bbox: BoxXyxy,
) -> Option<ExemplarEmbedding> {
    let [batch, n, channels] = output.regions.dims();
    if b >= batch {
        return None;
    }
    let host = |t: Tensor<3>| t.into_data().try_into_vec_as::<f32>().unwrap_or_default();
    let boxes = host(boxes.narrow(0, b, 1));
    let overlaps: Vec<f32> = boxes
        .chunks_exact(4)
        .map(|v| iou(&BoxXyxy { x0: v[0], y0: v[1], x1: v[2], y1: v[3] }, &bbox))
        .collect();
    let (best, &best_iou) = overlaps.iter().enumerate().max_by(|x, y| x.1.total_cmp(y.1))?;
    if best_iou <= 0.0 {
        return None;
    }
    let regions = host(output.regions.clone().narrow(0, b, 1));
    let unit = |r: &[f32]| {
        let norm = r.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        r.iter().map(|x| x / norm).collect::<Vec<f32>>()
    };
    let feature = unit(&regions[best * channels..(best + 1) * channels]);
    let mut background: Vec<f32> = (0..n)
        .filter(|&a| overlaps[a] < BACKGROUND_IOU)
        .map(|a| {
            unit(&regions[a * channels..(a + 1) * channels]).iter().zip(&feature).map(|(x, y)| x * y).sum()
        })
        .collect();
    background.sort_by(f32::total_cmp);
    // The 99th percentile: a few look-alikes (another instance, a lookalike distractor) do not
    // set the bar; a background with no regions at all leaves it at 0.
    let background = background.get(background.len() * 99 / 100).copied().unwrap_or(0.0).min(0.99);
    Some(ExemplarEmbedding { feature, background })
}

/// The output with each exemplar's logits appended to the token logits, as tokens
/// `L..L + E` (see [`glint_core::prompt::PositiveMap::with_appended_phrases`]).
pub fn append_exemplar_logits(mut output: GlipHeadOutput, exemplars: &[ExemplarEmbedding]) -> GlipHeadOutput {
    if !exemplars.is_empty() {
        let scores = exemplar_logits(&output, exemplars);
        output.logits = Tensor::cat(vec![output.logits, scores], 2);
    }
    output
}

/// `[B, N, E]` logits of every region of an output for each exemplar.
pub fn exemplar_logits(output: &GlipHeadOutput, exemplars: &[ExemplarEmbedding]) -> Tensor<3> {
    let [_, _, channels] = output.regions.dims();
    let device = output.regions.device();
    let e = exemplars.len();
    let features: Vec<f32> = exemplars.iter().flat_map(|x| x.feature.iter().copied()).collect();
    let features = Tensor::<2>::from_data(TensorData::new(features, [e, channels]), &device);
    let background = exemplars.iter().map(|x| x.background).collect::<Vec<f32>>();
    let background = Tensor::<1>::from_data(TensorData::new(background, [e]), &device).reshape([1, 1, e]);
    let regions = output.regions.clone();
    let norms = regions.clone().powi_scalar(2).sum_dim(2).sqrt().clamp_min(1e-12);
    let cosine = (regions / norms).matmul(features.transpose().unsqueeze_dim(0));
    // Linear in the cosine: 1 ↦ +SELF_LOGIT, the background's ↦ -SELF_LOGIT.
    (cosine - background.clone()) * (2.0 * SELF_LOGIT) / (background.neg() + 1.0) - SELF_LOGIT
}
