//! Grounding DINO's set loss (`glint_nn::loss::grounding_dino`) against transformers'
//! `GroundingDinoForObjectDetectionLoss` on random outputs of two images (fixture:
//! `tests/fixtures/make_grounding_dino_loss.py`): the final layer, one auxiliary layer and the
//! encoder's proposals, each matched on its own. Every term and the total within 1e-5 + 1e-4·|x|
//! (f32 on both sides).

use std::path::Path;

use burn::tensor::{Bool, Device, Tensor, TensorData};
use glint_core::geometry::BoxCxcywh;
use glint_nn::loss::grounding_dino::{LayerOutput, SetLossConfig, SetTarget};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    batch: usize,
    queries: usize,
    tokens: usize,
    real_tokens: Vec<usize>,
    #[serde(rename = "final")]
    last: Layer,
    aux: Layer,
    encoder: Layer,
    targets: Vec<Target>,
    total: f32,
    terms: std::collections::HashMap<String, f32>,
}

#[derive(Deserialize)]
struct Layer {
    logits: Vec<f32>,
    boxes: Vec<f32>,
}

#[derive(Deserialize)]
struct Target {
    class_labels: Vec<usize>,
    boxes: Vec<f32>,
    label_maps: Vec<f32>,
}

fn close(what: &str, actual: Tensor<1>, expected: f32) {
    let actual = actual.into_scalar::<f32>();
    assert!((actual - expected).abs() <= 1e-5 + 1e-4 * expected.abs(), "{what}: {actual} against {expected}");
}

#[test]
fn every_term_matches_transformers_on_final_auxiliary_and_encoder_outputs() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/grounding_dino_loss/cases.json");
    let case: Case = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let device = Device::flex();
    let (b, q, l) = (case.batch, case.queries, case.tokens);
    let layer = |x: &Layer| LayerOutput {
        logits: Tensor::from_data(TensorData::new(x.logits.clone(), [b, q, l]), &device),
        boxes: Tensor::from_data(TensorData::new(x.boxes.clone(), [b, q, 4]), &device),
    };
    let mask: Vec<bool> = case.real_tokens.iter().flat_map(|&n| (0..l).map(move |i| i < n)).collect();
    let text_mask = Tensor::<2, Bool>::from_data(TensorData::new(mask, [b, l]), &device);
    // Each box's tokens are its class's label map.
    let targets: Vec<SetTarget> = case
        .targets
        .iter()
        .map(|t| SetTarget {
            boxes: t
                .boxes
                .chunks_exact(4)
                .map(|v| BoxCxcywh { cx: v[0], cy: v[1], w: v[2], h: v[3] })
                .collect(),
            token_maps: t.class_labels.iter().map(|&c| t.label_maps[c * l..(c + 1) * l].to_vec()).collect(),
        })
        .collect();

    let config = SetLossConfig::default();
    let (total, terms) = config
        .loss(&[layer(&case.last), layer(&case.aux), layer(&case.encoder)], text_mask, &targets)
        .unwrap();
    for (terms, suffix) in terms.into_iter().zip(["", "_0", "_enc"]) {
        close(&format!("loss_ce{suffix}"), terms.labels, case.terms[&format!("loss_ce{suffix}")]);
        close(&format!("loss_bbox{suffix}"), terms.l1, case.terms[&format!("loss_bbox{suffix}")]);
        close(&format!("loss_giou{suffix}"), terms.giou, case.terms[&format!("loss_giou{suffix}")]);
    }
    close("total", total, case.total);
}
