//! Box IoU, GIoU and NMS against torchvision (fixtures from tests/fixtures/make_geometry.py).
//!
//! Tolerances: IoU and GIoU within 1e-6 absolute (both are computed in f32 in the same order
//! as torchvision, so in practice they agree bit for bit); NMS indices must match exactly,
//! including the order of boxes with equal scores.

use std::path::PathBuf;

use glint::core::geometry::{BoxXyxy, NmsOptions, batched_nms, box_iou, generalized_box_iou, nms};
use serde::Deserialize;

const TOLERANCE: f32 = 1e-6;

fn fixture<T: serde::de::DeserializeOwned>(name: &str) -> T {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/geometry").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[derive(Deserialize)]
struct IouFixture {
    boxes_a: Vec<BoxXyxy>,
    boxes_b: Vec<BoxXyxy>,
    /// torchvision's values; `None` where torchvision gives NaN.
    iou: Vec<Vec<Option<f32>>>,
    giou: Vec<Vec<Option<f32>>>,
}

#[test]
fn iou_and_giou_match_torchvision() {
    let f: IouFixture = fixture("iou.json");
    let iou = box_iou(&f.boxes_a, &f.boxes_b);
    let giou = generalized_box_iou(&f.boxes_a, &f.boxes_b);
    assert_eq!(iou.len(), f.boxes_a.len());
    assert_eq!(giou.len(), f.boxes_a.len());
    let mut nan_pairs = 0;
    for (i, a) in f.boxes_a.iter().enumerate() {
        assert_eq!(iou[i].len(), f.boxes_b.len());
        for (j, b) in f.boxes_b.iter().enumerate() {
            let (ours_iou, ours_giou) = (iou[i][j], giou[i][j]);
            assert!(ours_iou.is_finite() && ours_giou.is_finite(), "{a:?} vs {b:?}: {ours_iou} {ours_giou}");
            match (f.iou[i][j], f.giou[i][j]) {
                (Some(want_iou), Some(want_giou)) => {
                    assert!(
                        (ours_iou - want_iou).abs() <= TOLERANCE,
                        "IoU {a:?} vs {b:?}: {ours_iou} != {want_iou}"
                    );
                    assert!(
                        (ours_giou - want_giou).abs() <= TOLERANCE,
                        "GIoU {a:?} vs {b:?}: {ours_giou} != {want_giou}"
                    );
                }
                // torchvision's 0/0: both boxes have zero area. glint's documented values.
                (None, None) => {
                    nan_pairs += 1;
                    assert_eq!(a.area() + b.area(), 0.0, "NaN only for two zero-area boxes: {a:?} vs {b:?}");
                    assert_eq!(ours_iou, 0.0, "{a:?} vs {b:?}");
                    let enclosing = (a.x1.max(b.x1) - a.x0.min(b.x0)) * (a.y1.max(b.y1) - a.y0.min(b.y0));
                    let want = if enclosing > 0.0 { -1.0 } else { 0.0 };
                    assert_eq!(ours_giou, want, "{a:?} vs {b:?}");
                }
                other => panic!("fixture has IoU/GIoU NaN mismatch at ({i}, {j}): {other:?}"),
            }
        }
    }
    assert!(nan_pairs > 0, "the fixture should cover zero-area pairs");
}

#[derive(Deserialize)]
struct NmsFixture {
    nms: Vec<NmsCase>,
    select: Vec<SelectCase>,
}

#[derive(Deserialize)]
struct NmsCase {
    name: String,
    boxes: Vec<BoxXyxy>,
    scores: Vec<f32>,
    classes: Vec<usize>,
    iou_threshold: f32,
    nms: Vec<usize>,
    batched_nms: Vec<usize>,
}

#[derive(Deserialize)]
struct SelectCase {
    name: String,
    boxes: Vec<BoxXyxy>,
    scores: Vec<f32>,
    classes: Vec<usize>,
    iou_threshold: f32,
    score_threshold: f32,
    max_detections: usize,
    class_agnostic: bool,
    selected: Vec<usize>,
}

#[test]
fn nms_matches_torchvision_exactly() {
    let f: NmsFixture = fixture("nms.json");
    assert!(f.nms.len() >= 5);
    for case in &f.nms {
        let kept = nms(&case.boxes, &case.scores, case.iou_threshold);
        assert_eq!(kept, case.nms, "nms, case {}", case.name);
        let kept = batched_nms(&case.boxes, &case.scores, &case.classes, case.iou_threshold);
        assert_eq!(kept, case.batched_nms, "batched_nms, case {}", case.name);
    }
}

#[test]
fn nms_options_match_the_reference_pipeline() {
    let f: NmsFixture = fixture("nms.json");
    assert!(f.select.len() >= 3);
    for case in &f.select {
        let options = NmsOptions {
            iou_threshold: case.iou_threshold,
            score_threshold: case.score_threshold,
            max_detections: case.max_detections,
            class_agnostic: case.class_agnostic,
        };
        let selected = options.select(&case.boxes, &case.scores, &case.classes);
        assert_eq!(selected, case.selected, "case {}", case.name);
    }
}

#[test]
fn nms_output_is_sorted_and_ties_keep_index_order() {
    // A property every fixture case must have, checked directly so that a fixture regenerated
    // with a different tie rule cannot silently change the contract.
    let f: NmsFixture = fixture("nms.json");
    for case in &f.nms {
        for kept in [
            nms(&case.boxes, &case.scores, case.iou_threshold),
            batched_nms(&case.boxes, &case.scores, &case.classes, case.iou_threshold),
        ] {
            for pair in kept.windows(2) {
                let (a, b) = (case.scores[pair[0]], case.scores[pair[1]]);
                assert!(a > b || (a == b && pair[0] < pair[1]), "case {}: {pair:?} out of order", case.name);
            }
        }
    }
}
