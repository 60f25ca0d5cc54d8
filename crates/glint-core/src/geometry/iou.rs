//! Overlap between boxes: area, IoU and generalized IoU (GIoU), computed the way
//! `torchvision.ops` computes them in `f32`, so values agree with it to the last bit for valid
//! boxes (`x0 ≤ x1`, `y0 ≤ y1`).
//!
//! Zero-area boxes: torchvision divides 0 by 0 and returns NaN when both boxes of a pair have
//! zero area (IoU), or when their enclosing box has zero area (GIoU). A NaN poisons a loss or a
//! matching cost, so here such pairs get a number instead (see [`iou`] and [`giou`]). Wherever
//! torchvision returns a number, the same number is returned here.

use super::BoxXyxy;

/// Intersection-over-union of two boxes.
///
/// When both boxes have zero area the union is empty: torchvision gives NaN, this gives 0 (the
/// boxes share no area).
pub fn iou(a: &BoxXyxy, b: &BoxXyxy) -> f32 {
    let (inter, union) = intersection_and_union(a, b);
    if union > 0.0 { inter / union } else { 0.0 }
}

/// Generalized IoU of two boxes: `IoU − (enclosing − union) / enclosing`, in `[-1, 1]`, where
/// `enclosing` is the area of the smallest box holding both.
///
/// Degenerate pairs, where torchvision gives NaN:
/// - both boxes have zero area but the enclosing box does not (two separate points or
///   segments): IoU is 0 as in [`iou`], so GIoU is −1, as far apart as boxes can be;
/// - the enclosing box itself has zero area (the two boxes lie on one line or point): 0.
pub fn giou(a: &BoxXyxy, b: &BoxXyxy) -> f32 {
    let (inter, union) = intersection_and_union(a, b);
    let enclosing_w = (a.x1.max(b.x1) - a.x0.min(b.x0)).max(0.0);
    let enclosing_h = (a.y1.max(b.y1) - a.y0.min(b.y0)).max(0.0);
    let enclosing = enclosing_w * enclosing_h;
    if enclosing <= 0.0 {
        return 0.0;
    }
    let overlap = if union > 0.0 { inter / union } else { 0.0 };
    overlap - (enclosing - union) / enclosing
}

/// Pairwise IoU: `result[i][j] = iou(a[i], b[j])`, an `a.len() × b.len()` matrix
/// (`torchvision.ops.box_iou`).
pub fn box_iou(a: &[BoxXyxy], b: &[BoxXyxy]) -> Vec<Vec<f32>> {
    pairwise(a, b, iou)
}

/// Pairwise GIoU: `result[i][j] = giou(a[i], b[j])`, an `a.len() × b.len()` matrix
/// (`torchvision.ops.generalized_box_iou`).
pub fn generalized_box_iou(a: &[BoxXyxy], b: &[BoxXyxy]) -> Vec<Vec<f32>> {
    pairwise(a, b, giou)
}

/// Intersection area and union area, each operation in torchvision's order so that rounding
/// matches: `union = (area_a + area_b) − intersection`.
pub(crate) fn intersection_and_union(a: &BoxXyxy, b: &BoxXyxy) -> (f32, f32) {
    let w = (a.x1.min(b.x1) - a.x0.max(b.x0)).max(0.0);
    let h = (a.y1.min(b.y1) - a.y0.max(b.y0)).max(0.0);
    let inter = w * h;
    (inter, a.area() + b.area() - inter)
}

fn pairwise(a: &[BoxXyxy], b: &[BoxXyxy], measure: fn(&BoxXyxy, &BoxXyxy) -> f32) -> Vec<Vec<f32>> {
    a.iter().map(|x| b.iter().map(|y| measure(x, y)).collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_boxes() {
        let a = BoxXyxy::new(0.0, 0.0, 2.0, 2.0);
        let b = BoxXyxy::new(1.0, 1.0, 3.0, 3.0);
        // Intersection 1, union 7, enclosing 9.
        assert_eq!(iou(&a, &b), 1.0 / 7.0);
        assert_eq!(giou(&a, &b), 1.0 / 7.0 - 2.0 / 9.0);
        assert_eq!(iou(&a, &a), 1.0);
        assert_eq!(giou(&a, &a), 1.0);
    }

    #[test]
    fn disjoint_boxes_have_negative_giou() {
        let a = BoxXyxy::new(0.0, 0.0, 1.0, 1.0);
        let b = BoxXyxy::new(2.0, 0.0, 3.0, 1.0);
        assert_eq!(iou(&a, &b), 0.0);
        // Union 2, enclosing 3.
        assert_eq!(giou(&a, &b), -1.0 / 3.0);
    }

    #[test]
    fn zero_area_pairs_are_finite() {
        let point = BoxXyxy::new(1.0, 1.0, 1.0, 1.0);
        let other_point = BoxXyxy::new(3.0, 4.0, 3.0, 4.0);
        let segment = BoxXyxy::new(0.0, 1.0, 5.0, 1.0);
        assert_eq!(iou(&point, &point), 0.0);
        assert_eq!(giou(&point, &point), 0.0);
        assert_eq!(giou(&point, &segment), 0.0);
        assert_eq!(giou(&point, &other_point), -1.0);
        // A zero-area box against a real one is an ordinary case (torchvision agrees).
        let unit = BoxXyxy::new(0.0, 0.0, 2.0, 2.0);
        assert_eq!(iou(&point, &unit), 0.0);
        assert_eq!(giou(&point, &unit), 0.0);
    }

    #[test]
    fn matrices_have_the_right_shape() {
        let a = [BoxXyxy::new(0.0, 0.0, 1.0, 1.0), BoxXyxy::new(0.0, 0.0, 2.0, 2.0)];
        let b = [BoxXyxy::new(0.0, 0.0, 1.0, 1.0)];
        let m = box_iou(&a, &b);
        assert_eq!(m, vec![vec![1.0], vec![0.25]]);
        assert_eq!(generalized_box_iou(&b, &a), vec![vec![1.0, 0.25]]);
        assert!(box_iou(&[], &b).is_empty());
        assert_eq!(box_iou(&a, &[]), vec![Vec::<f32>::new(), Vec::new()]);
    }
}
