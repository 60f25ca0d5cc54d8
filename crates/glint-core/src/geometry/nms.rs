//! Non-maximum suppression, with the semantics of `torchvision.ops.nms` and
//! `torchvision.ops.batched_nms` (CPU), plus the score-threshold → NMS → top-k step detectors
//! run on their raw outputs.
//!
//! Order: kept indices come by decreasing score. Equal scores keep their input order (lower
//! index first), because torchvision's CPU kernel sorts scores with a stable sort; a NaN score
//! ranks above every number and `-0.0` ties with `0.0`, as in `torch.sort`.

use std::cmp::Ordering;

use super::BoxXyxy;
use super::iou::intersection_and_union;

/// Greedy NMS: visit boxes by decreasing score, keep a box unless an already kept box overlaps it
/// with IoU strictly greater than `iou_threshold`. Returns the kept indices by decreasing score.
///
/// Two zero-area boxes never suppress each other (their IoU is 0/0, which is not greater than
/// any threshold, as in torchvision).
///
/// # Panics
/// If `boxes` and `scores` differ in length (a caller bug, not a data problem).
pub fn nms(boxes: &[BoxXyxy], scores: &[f32], iou_threshold: f32) -> Vec<usize> {
    assert_eq!(boxes.len(), scores.len(), "nms: {} boxes but {} scores", boxes.len(), scores.len());
    let candidates: Vec<usize> = (0..boxes.len()).collect();
    suppress(boxes, scores, candidates, iou_threshold)
}

/// Class-aware NMS: boxes of different classes never suppress each other
/// (`torchvision.ops.batched_nms`). Returns the kept indices by decreasing score, ties by index.
///
/// # Panics
/// If `boxes`, `scores` and `classes` differ in length.
pub fn batched_nms(boxes: &[BoxXyxy], scores: &[f32], classes: &[usize], iou_threshold: f32) -> Vec<usize> {
    assert_eq!(boxes.len(), scores.len(), "batched_nms: {} boxes but {} scores", boxes.len(), scores.len());
    assert_eq!(
        boxes.len(),
        classes.len(),
        "batched_nms: {} boxes but {} classes",
        boxes.len(),
        classes.len()
    );
    let all: Vec<usize> = (0..boxes.len()).collect();
    batched(boxes, scores, classes, all, iou_threshold)
}

/// How raw detections are cut down to the final ones: see [`NmsOptions::select`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NmsOptions {
    /// A box is suppressed by a higher-scoring kept box when their IoU is above this.
    pub iou_threshold: f32,
    /// Boxes with a score not above this are dropped before NMS.
    pub score_threshold: f32,
    /// At most this many boxes are returned (the highest-scoring ones).
    pub max_detections: usize,
    /// When true, boxes suppress each other whatever their class; otherwise only within a class.
    pub class_agnostic: bool,
}

impl Default for NmsOptions {
    /// torchvision's detection-model defaults: IoU 0.5, score 0.05, 100 detections, per class.
    fn default() -> Self {
        Self { iou_threshold: 0.5, score_threshold: 0.05, max_detections: 100, class_agnostic: false }
    }
}

impl NmsOptions {
    /// Keeps the boxes with `score > score_threshold`, runs NMS on them (per class unless
    /// `class_agnostic`), and returns the indices (into the inputs) of the first
    /// `max_detections` survivors, by decreasing score.
    ///
    /// # Panics
    /// If `boxes`, `scores` and `classes` differ in length.
    pub fn select(&self, boxes: &[BoxXyxy], scores: &[f32], classes: &[usize]) -> Vec<usize> {
        assert_eq!(
            boxes.len(),
            scores.len(),
            "NmsOptions::select: {} boxes but {} scores",
            boxes.len(),
            scores.len()
        );
        assert_eq!(
            boxes.len(),
            classes.len(),
            "NmsOptions::select: {} boxes but {} classes",
            boxes.len(),
            classes.len()
        );
        let above: Vec<usize> = (0..boxes.len()).filter(|&i| scores[i] > self.score_threshold).collect();
        let mut kept = if self.class_agnostic {
            suppress(boxes, scores, above, self.iou_threshold)
        } else {
            batched(boxes, scores, classes, above, self.iou_threshold)
        };
        kept.truncate(self.max_detections);
        kept
    }
}

/// Descending score order as `torch.sort(descending=True)` has it: NaN first, `-0.0 == 0.0`.
fn by_descending_score(a: f32, b: f32) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => b.partial_cmp(&a).unwrap_or(Ordering::Equal),
    }
}

/// Sorts indices (given in increasing order) by decreasing score; the sort is stable, so ties
/// stay in index order.
fn sort_by_score(indices: &mut [usize], scores: &[f32]) {
    indices.sort_by(|&i, &j| by_descending_score(scores[i], scores[j]));
}

/// Greedy NMS over `candidates` (indices in increasing order), all treated as one class.
fn suppress(boxes: &[BoxXyxy], scores: &[f32], mut candidates: Vec<usize>, iou_threshold: f32) -> Vec<usize> {
    sort_by_score(&mut candidates, scores);
    let mut suppressed = vec![false; candidates.len()];
    let mut kept = Vec::new();
    for (rank, &i) in candidates.iter().enumerate() {
        if suppressed[rank] {
            continue;
        }
        kept.push(i);
        for (later, &j) in candidates.iter().enumerate().skip(rank + 1) {
            if suppressed[later] {
                continue;
            }
            // inter / union without guarding 0/0: NaN compares false, as in torchvision.
            let (inter, union) = intersection_and_union(&boxes[i], &boxes[j]);
            if inter / union > iou_threshold {
                suppressed[later] = true;
            }
        }
    }
    kept
}

/// NMS within each class over `candidates` (indices in increasing order), merged by score.
fn batched(
    boxes: &[BoxXyxy],
    scores: &[f32],
    classes: &[usize],
    candidates: Vec<usize>,
    iou_threshold: f32,
) -> Vec<usize> {
    let mut by_class: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for i in candidates {
        by_class.entry(classes[i]).or_default().push(i);
    }
    let mut kept: Vec<usize> =
        by_class.into_values().flat_map(|members| suppress(boxes, scores, members, iou_threshold)).collect();
    kept.sort_unstable();
    sort_by_score(&mut kept, scores);
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(x0: f32, y0: f32, x1: f32, y1: f32) -> BoxXyxy {
        BoxXyxy::new(x0, y0, x1, y1)
    }

    #[test]
    fn suppresses_overlaps_above_threshold_only() {
        let boxes = [
            b(0.0, 0.0, 10.0, 10.0),
            b(1.0, 0.0, 11.0, 10.0),
            b(20.0, 20.0, 30.0, 30.0),
            b(5.0, 0.0, 15.0, 10.0),
        ];
        let scores = [0.9, 0.8, 0.7, 0.6];
        // IoU(0,1) = 90/110 > 0.5; IoU(0,3) = 50/150 < 0.5.
        assert_eq!(nms(&boxes, &scores, 0.5), vec![0, 2, 3]);
        assert_eq!(nms(&boxes, &scores, 0.95), vec![0, 1, 2, 3]);
        // Threshold equal to the IoU does not suppress (strictly greater).
        let exact = [b(0.0, 0.0, 2.0, 1.0), b(1.0, 0.0, 3.0, 1.0)];
        assert_eq!(nms(&exact, &[1.0, 0.5], 1.0 / 3.0), vec![0, 1]);
    }

    #[test]
    fn equal_scores_keep_input_order() {
        let boxes =
            [b(0.0, 0.0, 1.0, 1.0), b(5.0, 5.0, 6.0, 6.0), b(0.0, 0.0, 1.0, 1.0), b(9.0, 9.0, 10.0, 10.0)];
        assert_eq!(nms(&boxes, &[0.5, 0.5, 0.5, 0.7], 0.5), vec![3, 0, 1]);
    }

    #[test]
    fn classes_do_not_suppress_each_other() {
        let boxes = [b(0.0, 0.0, 10.0, 10.0), b(0.0, 0.0, 10.0, 10.0), b(0.0, 0.0, 10.0, 9.0)];
        let scores = [0.6, 0.9, 0.8];
        // Box 2 (0.8) suppresses box 0 (0.6) in class 0; box 1 is alone in class 1.
        assert_eq!(batched_nms(&boxes, &scores, &[0, 1, 0], 0.5), vec![1, 2]);
        assert_eq!(batched_nms(&boxes, &scores, &[0, 1, 2], 0.5), vec![1, 2, 0]);
        assert!(batched_nms(&[], &[], &[], 0.5).is_empty());
    }

    #[test]
    fn options_threshold_then_nms_then_top_k() {
        let boxes = [
            b(0.0, 0.0, 10.0, 10.0),
            b(0.0, 0.0, 10.0, 10.0),
            b(20.0, 0.0, 30.0, 10.0),
            b(40.0, 0.0, 50.0, 10.0),
        ];
        let scores = [0.9, 0.8, 0.04, 0.3];
        let classes = [0, 1, 0, 0];
        let per_class = NmsOptions::default();
        assert_eq!(per_class.select(&boxes, &scores, &classes), vec![0, 1, 3]);
        let agnostic = NmsOptions { class_agnostic: true, ..per_class };
        assert_eq!(agnostic.select(&boxes, &scores, &classes), vec![0, 3]);
        let top1 = NmsOptions { max_detections: 1, ..per_class };
        assert_eq!(top1.select(&boxes, &scores, &classes), vec![0]);
    }
}
