//! COCO bounding-box evaluation: the 12 standard numbers and per-category AP, as pycocotools'
//! `COCOeval(gt, dt, "bbox")` computes them.
//!
//! The matching and accumulation are hotcoco's port of pycocotools (checked against pycocotools
//! to 1e-4 on every number by `tests/eval.rs`). This module reads and checks the files itself, so
//! that every problem is an [`EvalError`] naming the file, and nothing is printed.
//!
//! Where glint is stricter than pycocotools:
//! - a result whose `image_id` is not an image of the ground truth is an error (pycocotools
//!   asserts too); one whose `category_id` is not a ground-truth category is also an error
//!   (pycocotools silently ignores it, which hides a wrong label mapping);
//! - ground truth with duplicate image or annotation ids, or an annotation without a `bbox`, is
//!   an error.
//!
//! Where it is more lenient: an empty results list (`[]`) evaluates as "no detections" (every AP
//! and AR 0, or -1 where there is no ground truth); pycocotools' `loadRes` fails on it.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use hotcoco::params::IouType;
use hotcoco::{Annotation, COCO, COCOeval, Dataset};
use serde::{Deserialize, Serialize};

use crate::detection::CocoResult;

/// Evaluation could not run; the message names the file and the problem.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("cannot read {kind} file {}: {source}", path.display())]
    Read { kind: FileKind, path: PathBuf, source: std::io::Error },
    #[error("{kind} file {} is not valid: {source}", path.display())]
    Parse { kind: FileKind, path: PathBuf, source: serde_json::Error },
    #[error("{kind} file {}: {message}", path.display())]
    Invalid { kind: FileKind, path: PathBuf, message: String },
    #[error("evaluating against ground truth {}: {message}", gt.display())]
    Evaluate { gt: PathBuf, message: String },
}

/// Which of the two inputs an [`EvalError`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    GroundTruth,
    Results,
}

impl std::fmt::Display for FileKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FileKind::GroundTruth => "ground-truth",
            FileKind::Results => "results",
        })
    }
}

/// The 12 numbers of pycocotools' bbox summary. `-1` means "not computed": no ground truth
/// fell in that area range (or at all).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CocoMetrics {
    /// AP at IoU .50:.95, all areas, 100 detections per image.
    #[serde(rename = "AP")]
    pub ap: f64,
    #[serde(rename = "AP50")]
    pub ap50: f64,
    #[serde(rename = "AP75")]
    pub ap75: f64,
    /// AP for small objects (area ≤ 32², pycocotools' inclusive range [0, 32²]).
    #[serde(rename = "APs")]
    pub ap_small: f64,
    /// AP for medium objects (area in [32², 96²]; a box on a boundary counts in both ranges).
    #[serde(rename = "APm")]
    pub ap_medium: f64,
    /// AP for large objects (area ≥ 96², up to 1e10).
    #[serde(rename = "APl")]
    pub ap_large: f64,
    /// AR with at most 1 detection per image and category.
    #[serde(rename = "AR1")]
    pub ar1: f64,
    #[serde(rename = "AR10")]
    pub ar10: f64,
    #[serde(rename = "AR100")]
    pub ar100: f64,
    #[serde(rename = "ARs")]
    pub ar_small: f64,
    #[serde(rename = "ARm")]
    pub ar_medium: f64,
    #[serde(rename = "ARl")]
    pub ar_large: f64,
}

/// How each of the 12 metrics is described in the summary table: precision or recall, IoU,
/// area range, detections per image.
const SUMMARY_ROWS: [(&str, &str, &str, u32); 12] = [
    ("Average Precision  (AP)", "0.50:0.95", "all", 100),
    ("Average Precision  (AP)", "0.50", "all", 100),
    ("Average Precision  (AP)", "0.75", "all", 100),
    ("Average Precision  (AP)", "0.50:0.95", "small", 100),
    ("Average Precision  (AP)", "0.50:0.95", "medium", 100),
    ("Average Precision  (AP)", "0.50:0.95", "large", 100),
    ("Average Recall     (AR)", "0.50:0.95", "all", 1),
    ("Average Recall     (AR)", "0.50:0.95", "all", 10),
    ("Average Recall     (AR)", "0.50:0.95", "all", 100),
    ("Average Recall     (AR)", "0.50:0.95", "small", 100),
    ("Average Recall     (AR)", "0.50:0.95", "medium", 100),
    ("Average Recall     (AR)", "0.50:0.95", "large", 100),
];

impl CocoMetrics {
    /// The metric names, in pycocotools' `stats` order.
    pub const NAMES: [&'static str; 12] =
        ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"];

    /// The values in pycocotools' `stats` order (see [`Self::NAMES`]).
    pub fn to_array(&self) -> [f64; 12] {
        [
            self.ap,
            self.ap50,
            self.ap75,
            self.ap_small,
            self.ap_medium,
            self.ap_large,
            self.ar1,
            self.ar10,
            self.ar100,
            self.ar_small,
            self.ar_medium,
            self.ar_large,
        ]
    }

    /// From values in pycocotools' `stats` order.
    pub fn from_array(s: [f64; 12]) -> Self {
        let [ap, ap50, ap75, ap_small, ap_medium, ap_large, ar1, ar10, ar100, ar_small, ar_medium, ar_large] =
            s;
        Self {
            ap,
            ap50,
            ap75,
            ap_small,
            ap_medium,
            ap_large,
            ar1,
            ar10,
            ar100,
            ar_small,
            ar_medium,
            ar_large,
        }
    }
}

/// AP of one category at IoU .50:.95, all areas, 100 detections per image; `-1` when the
/// category has no (non-crowd) ground truth, as pycocotools' precision array has it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CategoryAp {
    pub id: u64,
    pub name: String,
    pub ap: f64,
}

/// The result of [`evaluate_bbox`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub metrics: CocoMetrics,
    /// Every ground-truth category, by increasing id.
    pub per_category: Vec<CategoryAp>,
    /// Number of ground-truth images, annotations (crowd regions included) and detections.
    pub images: usize,
    pub annotations: usize,
    pub detections: usize,
}

impl EvalReport {
    /// A text table for people: pycocotools' 12 summary lines, then AP per category.
    pub fn table(&self) -> String {
        let mut out = String::new();
        for ((what, iou, area, max_dets), value) in SUMMARY_ROWS.iter().zip(self.metrics.to_array()) {
            let _ = writeln!(
                out,
                " {what} @[ IoU={iou:<9} | area={area:>6} | maxDets={max_dets:>3} ] = {value:.3}"
            );
        }
        let name_width = self.per_category.iter().map(|c| c.name.chars().count()).max().unwrap_or(0).max(8);
        let _ = writeln!(out, "\nPer-category AP @[ IoU=0.50:0.95 | area=all | maxDets=100 ]");
        let _ = writeln!(out, " {:>8}  {:<name_width$}  {:>6}", "id", "category", "AP");
        for c in &self.per_category {
            if c.ap < 0.0 {
                let _ = writeln!(out, " {:>8}  {:<name_width$}  {:>6}  (no ground truth)", c.id, c.name, "-");
            } else {
                let _ = writeln!(out, " {:>8}  {:<name_width$}  {:>6.3}", c.id, c.name, c.ap);
            }
        }
        let _ = writeln!(
            out,
            "\n{} images, {} annotations, {} detections",
            self.images, self.annotations, self.detections
        );
        out
    }
}

/// Evaluates a COCO results file (`[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}]`)
/// against a COCO ground-truth file, as pycocotools' bbox `COCOeval` does.
pub fn evaluate_bbox(gt: &Path, dets: &Path) -> Result<EvalReport, EvalError> {
    let ground_truth = load_ground_truth(gt)?;
    let bytes = std::fs::read(dets).map_err(|source| EvalError::Read {
        kind: FileKind::Results,
        path: dets.to_path_buf(),
        source,
    })?;
    if first_token(&bytes) != Some(b'[') {
        let message =
            "expected a JSON array of results ([{\"image_id\", \"category_id\", \"bbox\", \"score\"}, ...])";
        return Err(EvalError::Invalid {
            kind: FileKind::Results,
            path: dets.to_path_buf(),
            message: message.into(),
        });
    }
    let records: Vec<ResultRecord> = serde_json::from_slice(&bytes).map_err(|source| EvalError::Parse {
        kind: FileKind::Results,
        path: dets.to_path_buf(),
        source,
    })?;
    run(gt, ground_truth, dets, records)
}

/// Evaluates detections held in memory against a COCO ground-truth file, with the same numbers
/// as writing them with [`crate::detection::write_coco_results`] and calling [`evaluate_bbox`].
pub fn evaluate_bbox_results(gt: &Path, results: &[CocoResult]) -> Result<EvalReport, EvalError> {
    let ground_truth = load_ground_truth(gt)?;
    // Through the shortest decimal form, as a results file would carry them, so that the
    // values (as f64) are the ones a reader of that file sees.
    let widen = |v: f32| v.to_string().parse::<f64>().unwrap_or(f64::from(v));
    let records = results
        .iter()
        .map(|r| ResultRecord {
            image_id: r.image_id,
            category_id: r.category_id,
            bbox: Some(r.bbox.map(widen)),
            score: Some(widen(r.score)),
        })
        .collect();
    run(gt, ground_truth, Path::new("<in-memory results>"), records)
}

/// A results record, read at f64 precision as pycocotools reads it.
#[derive(Deserialize)]
struct ResultRecord {
    image_id: u64,
    category_id: u64,
    bbox: Option<[f64; 4]>,
    score: Option<f64>,
}

fn load_ground_truth(path: &Path) -> Result<Dataset, EvalError> {
    let kind = FileKind::GroundTruth;
    let invalid = |message: String| EvalError::Invalid { kind, path: path.to_path_buf(), message };
    let bytes =
        std::fs::read(path).map_err(|source| EvalError::Read { kind, path: path.to_path_buf(), source })?;
    if first_token(&bytes) != Some(b'{') {
        return Err(invalid("expected a JSON object with images, annotations and categories".into()));
    }
    let mut dataset: Dataset = serde_json::from_slice(&bytes).map_err(|source| EvalError::Parse {
        kind,
        path: path.to_path_buf(),
        source,
    })?;
    if dataset.images.is_empty() {
        return Err(invalid("has no images".into()));
    }
    if dataset.categories.is_empty() {
        return Err(invalid("has no categories".into()));
    }
    let mut image_ids = HashSet::new();
    if let Some(image) = dataset.images.iter().find(|i| !image_ids.insert(i.id)) {
        return Err(invalid(format!("image id {} appears more than once", image.id)));
    }
    let mut annotation_ids = HashSet::new();
    for ann in &dataset.annotations {
        if !annotation_ids.insert(ann.id) {
            return Err(invalid(format!("annotation id {} appears more than once", ann.id)));
        }
        match ann.bbox {
            None => return Err(invalid(format!("annotation {} has no bbox", ann.id))),
            Some(b) if b.iter().any(|v| !v.is_finite()) => {
                return Err(invalid(format!("annotation {} has a bbox that is not finite numbers", ann.id)));
            }
            Some(_) => {}
        }
    }
    // hotcoco would name (and announce on stderr) nameless categories itself.
    for category in &mut dataset.categories {
        if category.name.is_empty() {
            category.name = format!("cat_{}", category.id);
        }
    }
    Ok(dataset)
}

/// The first non-whitespace byte of a JSON text: tells an object from an array before parsing,
/// so that the error for the wrong kind of file says what was expected.
fn first_token(bytes: &[u8]) -> Option<u8> {
    bytes.iter().copied().find(|b| !b.is_ascii_whitespace())
}

fn run(
    gt: &Path,
    dataset: Dataset,
    dets: &Path,
    records: Vec<ResultRecord>,
) -> Result<EvalReport, EvalError> {
    let invalid =
        |message: String| EvalError::Invalid { kind: FileKind::Results, path: dets.to_path_buf(), message };
    let image_ids: HashSet<u64> = dataset.images.iter().map(|i| i.id).collect();
    let names: HashMap<u64, String> = dataset.categories.iter().map(|c| (c.id, c.name.clone())).collect();
    let mut detections = Vec::with_capacity(records.len());
    for (n, r) in records.into_iter().enumerate() {
        if !image_ids.contains(&r.image_id) {
            return Err(invalid(format!(
                "result {n} has image_id {}, which is not an image of {}",
                r.image_id,
                gt.display()
            )));
        }
        if !names.contains_key(&r.category_id) {
            return Err(invalid(format!(
                "result {n} has category_id {}, which is not a category of {}",
                r.category_id,
                gt.display()
            )));
        }
        let bbox = r.bbox.ok_or_else(|| invalid(format!("result {n} has no bbox")))?;
        let score = r.score.ok_or_else(|| invalid(format!("result {n} has no score")))?;
        if bbox.iter().any(|v| !v.is_finite()) || !score.is_finite() {
            return Err(invalid(format!("result {n} has a bbox or score that is not a finite number")));
        }
        detections.push(Annotation {
            image_id: r.image_id,
            category_id: r.category_id,
            bbox: Some(bbox),
            score: Some(score),
            ..Default::default()
        });
    }

    let (images, annotations, detection_count) =
        (dataset.images.len(), dataset.annotations.len(), detections.len());
    let failed = |e: hotcoco::Error| EvalError::Evaluate { gt: gt.to_path_buf(), message: e.to_string() };
    let coco_gt = COCO::from_dataset(dataset);
    let coco_dt = coco_gt.load_res_anns(detections).map_err(failed)?;
    let mut coco_eval = COCOeval::new(coco_gt, coco_dt, IouType::Bbox);
    coco_eval.evaluate().map_err(failed)?;
    coco_eval.accumulate();
    // Computes the stats without printing them (`summarize()` prints).
    coco_eval.summarize_lines();
    let stats: [f64; 12] =
        coco_eval.stats().and_then(|s| s.try_into().ok()).ok_or_else(|| EvalError::Evaluate {
            gt: gt.to_path_buf(),
            message: "the evaluator produced no 12-number summary".into(),
        })?;

    let per_category = category_aps(&coco_eval)
        .into_iter()
        .map(|(id, ap)| CategoryAp { id, name: names.get(&id).cloned().unwrap_or_default(), ap })
        .collect();
    Ok(EvalReport {
        metrics: CocoMetrics::from_array(stats),
        per_category,
        images,
        annotations,
        detections: detection_count,
    })
}

/// Per-category AP from the accumulated precision array `[T, R, K, A, M]`: the mean over IoU
/// and recall thresholds of the entries that are not -1, at area "all" and the largest
/// detection cap; -1 when there are none (pycocotools' convention for "no ground truth").
fn category_aps(coco_eval: &COCOeval) -> Vec<(u64, f64)> {
    let Some(acc) = coco_eval.accumulated() else {
        return Vec::new();
    };
    let area = coco_eval.params.all_area_idx();
    let max_dets = coco_eval.params.max_det_idx();
    acc.cat_ids
        .iter()
        .enumerate()
        .map(|(k, &id)| {
            let (mut sum, mut count) = (0.0, 0usize);
            for t in 0..acc.shape.t {
                for r in 0..acc.shape.r {
                    let p = acc
                        .precision
                        .get(acc.precision_idx(t, r, k, area, max_dets))
                        .copied()
                        .unwrap_or(-1.0);
                    if p > -1.0 {
                        sum += p;
                        count += 1;
                    }
                }
            }
            (id, if count > 0 { sum / count as f64 } else { -1.0 })
        })
        .collect()
}
