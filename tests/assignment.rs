//! Minimum-cost assignment against `scipy.optimize.linear_sum_assignment`, and the grounding
//! matcher against transformers' `GroundingDinoHungarianMatcher`
//! (tests/fixtures/make_assignment.py): the same pairs on continuous random costs (square, wide,
//! tall, and DETR-like 900 × k), the same total (within 1e-4 relative, f64 sums of f32 costs) on
//! integer costs with ties, where several assignments are optimal.

use std::path::Path;

use glint::core::assignment::{MatchCosts, grounding_cost, grounding_match, linear_sum_assignment};
use glint::core::geometry::BoxCxcywh;
use serde::Deserialize;

#[derive(Deserialize)]
struct Cases {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    rows: usize,
    cols: usize,
    cost: Vec<f32>,
    row_ind: Vec<usize>,
    col_ind: Vec<usize>,
    total: f64,
    ties: bool,
}

#[test]
fn assignments_match_scipy() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/assignment/cases.json");
    let cases: Cases = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(cases.cases.len(), 15);
    for case in &cases.cases {
        let pairs = linear_sum_assignment(&case.cost, case.rows, case.cols).unwrap();
        let total: f64 = pairs.iter().map(|&(r, c)| f64::from(case.cost[r * case.cols + c])).sum();
        assert!(
            (total - case.total).abs() <= 1e-4 * case.total.abs().max(1.0),
            "{}: total {total} against scipy's {}",
            case.name,
            case.total
        );
        if !case.ties {
            let expected: Vec<(usize, usize)> =
                case.row_ind.iter().copied().zip(case.col_ind.iter().copied()).collect();
            assert_eq!(pairs, expected, "{}", case.name);
        }
    }
}

#[derive(Deserialize)]
struct MatcherImages {
    images: Vec<MatcherImage>,
}

#[derive(Deserialize)]
struct MatcherImage {
    logits: Vec<f32>,
    boxes: Vec<BoxCxcywh>,
    target_tokens: Vec<Vec<f32>>,
    target_boxes: Vec<BoxCxcywh>,
    cost: Vec<f32>,
    query_ind: Vec<usize>,
    target_ind: Vec<usize>,
}

/// transformers' `GroundingDinoHungarianMatcher`: its cost matrix within 1e-4 + 1e-5·|c| (f32
/// logs and powers there, f64 here) and its pairs exactly.
#[test]
fn the_grounding_matcher_matches_transformers() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/assignment/matcher.json");
    let fixture: MatcherImages = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(fixture.images.len(), 3);
    let costs = MatchCosts::default();
    for (i, image) in fixture.images.iter().enumerate() {
        let cost =
            grounding_cost(&image.logits, &image.boxes, &image.target_tokens, &image.target_boxes, &costs);
        assert_eq!(cost.len(), image.cost.len());
        for (k, (a, e)) in cost.iter().zip(&image.cost).enumerate() {
            assert!((a - e).abs() <= 1e-4 + 1e-5 * e.abs(), "image {i}, entry {k}: {a} against {e}");
        }
        let pairs =
            grounding_match(&image.logits, &image.boxes, &image.target_tokens, &image.target_boxes, &costs)
                .unwrap();
        let expected: Vec<(usize, usize)> =
            image.query_ind.iter().copied().zip(image.target_ind.iter().copied()).collect();
        assert_eq!(pairs, expected, "image {i}");
    }
}
