//! COCO bbox evaluation against pycocotools (fixtures from tests/fixtures/make_eval.py), and
//! the errors a user sees for bad input.
//!
//! Tolerance: every one of the 12 summary numbers and every per-category AP within 1e-4 of
//! pycocotools' `COCOeval(..., "bbox")`; -1 ("not computed") must be exactly -1.

use std::path::{Path, PathBuf};

use glint::core::detection::{CocoResult, Detection, write_coco_results};
use glint::core::eval::{CocoMetrics, EvalReport, evaluate_bbox, evaluate_bbox_results};
use glint::core::geometry::BoxXyxy;
use serde::Deserialize;

const TOLERANCE: f64 = 1e-4;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eval")
}

#[derive(Deserialize)]
struct Expected {
    metrics: CocoMetrics,
    per_category: Vec<ExpectedCategory>,
}

#[derive(Deserialize)]
struct ExpectedCategory {
    id: u64,
    name: String,
    ap: f64,
}

fn close(ours: f64, want: f64) -> bool {
    if want == -1.0 { ours == -1.0 } else { (ours - want).abs() <= TOLERANCE }
}

fn assert_matches_pycocotools(case: &str, report: &EvalReport) {
    let path = fixtures().join(format!("{case}_expected.json"));
    let expected: Expected = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let (ours, want) = (report.metrics.to_array(), expected.metrics.to_array());
    for ((name, o), w) in CocoMetrics::NAMES.iter().zip(ours).zip(want) {
        assert!(close(o, w), "{case}: {name} = {o}, pycocotools {w}");
    }
    assert_eq!(report.per_category.len(), expected.per_category.len(), "{case}: categories");
    for (o, w) in report.per_category.iter().zip(&expected.per_category) {
        assert_eq!((o.id, o.name.as_str()), (w.id, w.name.as_str()), "{case}");
        assert!(
            close(o.ap, w.ap),
            "{case}: AP of category {} ({}) = {}, pycocotools {}",
            w.id,
            w.name,
            o.ap,
            w.ap
        );
    }
}

fn evaluate_case(case: &str) -> EvalReport {
    let dir = fixtures();
    evaluate_bbox(&dir.join(format!("{case}_gt.json")), &dir.join(format!("{case}_dets.json")))
        .unwrap_or_else(|e| panic!("{case}: {e}"))
}

#[test]
fn mixed_case_matches_pycocotools() {
    // Crowd regions, empty images, categories with no detections / no ground truth, >100
    // detections of one category on one image, area-range boundaries, tied scores.
    let report = evaluate_case("mixed");
    assert_matches_pycocotools("mixed", &report);
    // The case exercises what it claims to: a category without ground truth (-1) and one with
    // ground truth but no detections (0).
    assert!(report.per_category.iter().any(|c| c.ap == -1.0));
    assert!(report.per_category.iter().any(|c| c.ap == 0.0));
}

#[test]
fn dense_case_matches_pycocotools() {
    assert_matches_pycocotools("dense", &evaluate_case("dense"));
}

#[test]
fn perfect_detections_match_pycocotools() {
    let report = evaluate_case("perfect");
    assert_matches_pycocotools("perfect", &report);
    assert_eq!(report.metrics.ap, 1.0);
}

#[test]
fn small_objects_only_give_minus_one_for_other_areas() {
    let report = evaluate_case("small_only");
    assert_matches_pycocotools("small_only", &report);
    assert_eq!((report.metrics.ap_medium, report.metrics.ap_large), (-1.0, -1.0));
}

#[test]
fn empty_detections_evaluate_to_zero() {
    let report = evaluate_case("empty");
    assert_matches_pycocotools("empty", &report);
    assert_eq!(report.detections, 0);
    assert_eq!(report.metrics.ap, 0.0);
}

#[test]
fn in_memory_results_give_the_same_numbers_as_the_file() {
    // Detections -> COCO records -> written file, evaluated both ways.
    let dir = fixtures();
    let gt = dir.join("perfect_gt.json");
    let dataset: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&gt).unwrap()).unwrap();
    let records: Vec<CocoResult> = dataset["annotations"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(n, ann)| {
            let b: [f32; 4] = serde_json::from_value(ann["bbox"].clone()).unwrap();
            // Shift every other box a little so that not everything is perfect.
            let shift = if n % 2 == 0 { 0.0 } else { 0.15 * b[2] };
            let det = Detection {
                bbox: BoxXyxy::from_xywh([b[0] + shift, b[1], b[2], b[3]]),
                score: 0.9 - 0.01 * n as f32,
                phrase: "x".into(),
                phrase_index: 0,
            };
            det.to_coco(ann["image_id"].as_u64().unwrap(), ann["category_id"].as_u64().unwrap())
        })
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("dets.json");
    write_coco_results(&path, &records).unwrap();
    let from_file = evaluate_bbox(&gt, &path).unwrap();
    let in_memory = evaluate_bbox_results(&gt, &records).unwrap();
    assert_eq!(from_file, in_memory);
    assert!(from_file.metrics.ap > 0.0 && from_file.metrics.ap < 1.0, "{}", from_file.metrics.ap);
}

#[test]
fn report_serialises_with_metric_names_and_prints_a_table() {
    let report = evaluate_case("mixed");
    let json: serde_json::Value = serde_json::to_value(&report).unwrap();
    assert_eq!(json["metrics"]["AP50"].as_f64(), Some(report.metrics.ap50));
    assert_eq!(json["per_category"][0]["name"], "cat");
    let back: EvalReport = serde_json::from_value(json).unwrap();
    assert_eq!(back, report);

    let table = report.table();
    assert!(
        table.contains(&format!(
            "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = {:.3}",
            report.metrics.ap
        )),
        "{table}"
    );
    assert!(
        table.contains(&format!(
            "Average Recall     (AR) @[ IoU=0.50:0.95 | area= large | maxDets=100 ] = {:.3}",
            report.metrics.ar_large
        )),
        "{table}"
    );
    assert!(table.lines().any(|l| l.contains("remote control") && l.contains(&format!("{:.3}", report.per_category[2].ap))), "{table}");
    assert!(table.lines().any(|l| l.contains("unicorn") && l.contains("no ground truth")), "{table}");
}

fn error_of(gt: &Path, dets: &Path) -> String {
    match evaluate_bbox(gt, dets) {
        Ok(_) => panic!("evaluating {} against {} should fail", dets.display(), gt.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn missing_files_are_named() {
    let dir = fixtures();
    let tmp = tempfile::tempdir().unwrap();
    let err = error_of(&tmp.path().join("no_such_gt.json"), &dir.join("mixed_dets.json"));
    assert!(err.contains("no_such_gt.json") && err.contains("ground-truth"), "{err}");
    let err = error_of(&dir.join("mixed_gt.json"), &tmp.path().join("no_such_dets.json"));
    assert!(err.contains("no_such_dets.json") && err.contains("results"), "{err}");
}

#[test]
fn malformed_json_is_named() {
    let dir = fixtures();
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("broken.json");
    std::fs::write(&bad, "{\"images\": [ oops").unwrap();
    let err = error_of(&bad, &dir.join("mixed_dets.json"));
    assert!(err.contains("broken.json") && err.contains("line 1"), "{err}");
    let err = error_of(&dir.join("mixed_gt.json"), &bad);
    assert!(err.contains("broken.json"), "{err}");
    // A results file must be an array of records, a ground truth an object with images.
    std::fs::write(&bad, "{\"annotations\": []}").unwrap();
    let err = error_of(&dir.join("mixed_gt.json"), &bad);
    assert!(err.contains("broken.json") && err.contains("JSON array of results"), "{err}");
    let err = error_of(&dir.join("mixed_dets.json"), &dir.join("mixed_dets.json"));
    assert!(
        err.contains("ground-truth file") && err.contains("mixed_dets.json") && err.contains("JSON object"),
        "{err}"
    );
    std::fs::write(&bad, "{\"categories\": [{\"id\": 1, \"name\": \"a\"}]}").unwrap();
    let err = error_of(&bad, &dir.join("mixed_dets.json"));
    assert!(err.contains("broken.json") && err.contains("no images"), "{err}");
}

#[test]
fn unknown_ids_and_bad_records_are_errors() {
    let gt = fixtures().join("mixed_gt.json");
    let tmp = tempfile::tempdir().unwrap();
    let dets = tmp.path().join("my_dets.json");
    let cases = [
        (
            r#"[{"image_id": 3, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5}, {"image_id": 4, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5}]"#,
            "image_id 4",
        ),
        (r#"[{"image_id": 3, "category_id": 5, "bbox": [1, 2, 3, 4], "score": 0.5}]"#, "category_id 5"),
        (r#"[{"image_id": 3, "category_id": 1, "score": 0.5}]"#, "no bbox"),
        (r#"[{"image_id": 3, "category_id": 1, "bbox": [1, 2, 3, 4]}]"#, "no score"),
        (r#"[{"image_id": 3, "bbox": [1, 2, 3, 4], "score": 0.5}]"#, "category_id"),
    ];
    for (text, needle) in cases {
        std::fs::write(&dets, text).unwrap();
        let err = error_of(&gt, &dets);
        assert!(err.contains("my_dets.json") && err.contains(needle), "{text}: {err}");
    }

    let bad_gt = tmp.path().join("dup_gt.json");
    std::fs::write(
        &bad_gt,
        r#"{"images": [{"id": 1}], "categories": [{"id": 1, "name": "a"}],
            "annotations": [{"id": 5, "image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "area": 25},
                            {"id": 5, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "area": 25}]}"#,
    )
    .unwrap();
    std::fs::write(&dets, "[]").unwrap();
    let err = error_of(&bad_gt, &dets);
    assert!(err.contains("dup_gt.json") && err.contains("annotation id 5"), "{err}");
}
