//! Minimum-cost assignment (the "Hungarian" matching of DETR-style training): given a cost for
//! every (prediction, target) pair, pair each target with a distinct prediction so that the
//! total cost is smallest — what `scipy.optimize.linear_sum_assignment` computes.
//!
//! The solver is the shortest-augmenting-path form of the Hungarian method with row and column
//! potentials (Kuhn–Munkres; Jonker and Volgenant's formulation): one augmentation per row of
//! the smaller side, each a Dijkstra-like search over reduced costs, `O(n² m)` for an `n × m`
//! matrix with `n ≤ m`. Costs are summed in `f64`.
//!
//! [`grounding_match`] builds the matching cost of grounded DETR-style detectors (Grounding DINO
//! as transformers trains it) and solves it: a focal-style class cost on the alignment logits
//! averaged over each target's tokens, L1 between normalised `cxcywh` boxes, and negative GIoU.

use crate::geometry::{BoxCxcywh, BoxXyxy, giou};

/// Why a cost matrix cannot be assigned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssignmentError {
    #[error("cost matrix: {len} values do not make {rows} rows of {cols}")]
    Shape { rows: usize, cols: usize, len: usize },
    #[error("cost matrix: entry ({row}, {col}) is not a finite number")]
    NotFinite { row: usize, col: usize },
}

/// Weights of the matching cost (transformers' `GroundingDinoConfig` defaults).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MatchCosts {
    pub class: f32,
    pub bbox: f32,
    pub giou: f32,
    pub focal_alpha: f32,
    pub focal_gamma: f32,
}

impl Default for MatchCosts {
    fn default() -> Self {
        Self { class: 1.0, bbox: 5.0, giou: 2.0, focal_alpha: 0.25, focal_gamma: 2.0 }
    }
}

/// The `[queries, targets]` matching cost (row-major) of one image. `logits` are `[queries,
/// len]` alignment logits, `boxes` the queries' normalised `cxcywh` boxes; target `t` is
/// `target_tokens[t]` (its positive-map row, `len` non-negative weights, normalised here to sum
/// to 1) and `target_boxes[t]`. Per pair: `class · Σ_l w_l (pos_l − neg_l) + bbox · L1 − giou ·
/// GIoU`, with `pos = α (1 − p)^γ (−ln(p + 1e-8))` and `neg = (1 − α) p^γ (−ln(1 − p + 1e-8))`.
/// A target without tokens costs `f32::MAX` with every query, as transformers makes its NaN.
pub fn grounding_cost(
    logits: &[f32],
    boxes: &[BoxCxcywh],
    target_tokens: &[Vec<f32>],
    target_boxes: &[BoxCxcywh],
    costs: &MatchCosts,
) -> Vec<f32> {
    let queries = boxes.len();
    let len = logits.len().checked_div(queries).unwrap_or(0);
    let (alpha, gamma) = (f64::from(costs.focal_alpha), f64::from(costs.focal_gamma));
    // Per query and token: the focal positive cost minus the negative one.
    let class: Vec<f64> = logits
        .iter()
        .map(|&x| {
            let p = 1.0 / (1.0 + (-f64::from(x)).exp());
            let pos = alpha * (1.0 - p).powf(gamma) * -(p + 1e-8).ln();
            let neg = (1.0 - alpha) * p.powf(gamma) * -(1.0 - p + 1e-8).ln();
            pos - neg
        })
        .collect();
    let query_xyxy: Vec<BoxXyxy> = boxes.iter().map(|b| b.to_xyxy()).collect();
    let mut cost = Vec::with_capacity(queries * target_boxes.len());
    for q in 0..queries {
        let row = &class[q * len..(q + 1) * len];
        for (tokens, target) in target_tokens.iter().zip(target_boxes) {
            let weight: f64 = tokens.iter().map(|&w| f64::from(w)).sum();
            if !(weight > 0.0) {
                cost.push(f32::MAX);
                continue;
            }
            let class_cost: f64 =
                tokens.iter().zip(row).map(|(&w, &c)| f64::from(w) * c).sum::<f64>() / weight;
            let b = &boxes[q];
            let l1 = (b.cx - target.cx).abs()
                + (b.cy - target.cy).abs()
                + (b.w - target.w).abs()
                + (b.h - target.h).abs();
            let giou = giou(&query_xyxy[q], &target.to_xyxy());
            let total = f64::from(costs.class) * class_cost + f64::from(costs.bbox) * f64::from(l1)
                - f64::from(costs.giou) * f64::from(giou);
            cost.push(if total.is_finite() { total as f32 } else { f32::MAX });
        }
    }
    cost
}

/// Match one image's queries to its targets ([`grounding_cost`], then
/// [`linear_sum_assignment`]): `(query, target)` pairs sorted by query.
pub fn grounding_match(
    logits: &[f32],
    boxes: &[BoxCxcywh],
    target_tokens: &[Vec<f32>],
    target_boxes: &[BoxCxcywh],
    costs: &MatchCosts,
) -> Result<Vec<(usize, usize)>, AssignmentError> {
    let cost = grounding_cost(logits, boxes, target_tokens, target_boxes, costs);
    linear_sum_assignment(&cost, boxes.len(), target_boxes.len())
}

/// The minimum-cost assignment of a row-major `rows × cols` cost matrix: `min(rows, cols)`
/// pairs `(row, col)`, sorted by row, no row or column twice (scipy's
/// `linear_sum_assignment(cost)`, rows and columns as it returns them).
pub fn linear_sum_assignment(
    cost: &[f32],
    rows: usize,
    cols: usize,
) -> Result<Vec<(usize, usize)>, AssignmentError> {
    if cost.len() != rows * cols {
        return Err(AssignmentError::Shape { rows, cols, len: cost.len() });
    }
    if let Some(i) = cost.iter().position(|c| !c.is_finite()) {
        return Err(AssignmentError::NotFinite { row: i / cols.max(1), col: i % cols.max(1) });
    }
    if rows == 0 || cols == 0 {
        return Ok(Vec::new());
    }
    // The search assigns every row of the smaller side: transpose when there are more rows.
    let transposed = rows > cols;
    let (n, m) = if transposed { (cols, rows) } else { (rows, cols) };
    let at = |i: usize, j: usize| -> f64 {
        f64::from(if transposed { cost[j * cols + i] } else { cost[i * cols + j] })
    };
    let matched = assign_rows(n, m, at);
    let mut pairs: Vec<(usize, usize)> =
        matched.iter().enumerate().map(|(i, &j)| if transposed { (j, i) } else { (i, j) }).collect();
    pairs.sort_unstable();
    Ok(pairs)
}

/// For `n ≤ m`: the column of each row in a minimum-cost assignment.
fn assign_rows(n: usize, m: usize, cost: impl Fn(usize, usize) -> f64) -> Vec<usize> {
    // Potentials u (rows) and v (columns) keep every reduced cost c(i, j) - u[i] - v[j] ≥ 0,
    // and 0 on matched pairs. Index 0 of the column arrays is a virtual column holding the row
    // being inserted; real rows and columns are 1-based there.
    let mut u = vec![0.0f64; n + 1];
    let mut v = vec![0.0f64; m + 1];
    let mut row_of = vec![0usize; m + 1]; // row matched to column j (0 = none)
    let mut way = vec![0usize; m + 1]; // previous column on the shortest path
    for i in 1..=n {
        row_of[0] = i;
        let mut j0 = 0;
        let mut min_to = vec![f64::INFINITY; m + 1];
        let mut used = vec![false; m + 1];
        loop {
            used[j0] = true;
            let i0 = row_of[j0];
            let mut delta = f64::INFINITY;
            let mut j1 = 0;
            for j in 1..=m {
                if used[j] {
                    continue;
                }
                let reduced = cost(i0 - 1, j - 1) - u[i0] - v[j];
                if reduced < min_to[j] {
                    min_to[j] = reduced;
                    way[j] = j0;
                }
                if min_to[j] < delta {
                    delta = min_to[j];
                    j1 = j;
                }
            }
            for j in 0..=m {
                if used[j] {
                    u[row_of[j]] += delta;
                    v[j] -= delta;
                } else {
                    min_to[j] -= delta;
                }
            }
            j0 = j1;
            if row_of[j0] == 0 {
                break;
            }
        }
        // Flip the augmenting path.
        loop {
            let j1 = way[j0];
            row_of[j0] = row_of[j1];
            j0 = j1;
            if j0 == 0 {
                break;
            }
        }
    }
    let mut col_of = vec![0usize; n];
    for j in 1..=m {
        if row_of[j] != 0 {
            col_of[row_of[j] - 1] = j - 1;
        }
    }
    col_of
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every assignment of a small matrix, tried by brute force.
    fn brute_force(cost: &[f32], rows: usize, cols: usize) -> f64 {
        fn go(cost: &[f32], rows: usize, cols: usize, r: usize, used: &mut Vec<bool>) -> f64 {
            if r == rows {
                return 0.0;
            }
            let mut best = f64::INFINITY;
            for c in 0..cols {
                if !used[c] {
                    used[c] = true;
                    best = best.min(f64::from(cost[r * cols + c]) + go(cost, rows, cols, r + 1, used));
                    used[c] = false;
                }
            }
            best
        }
        go(cost, rows, cols, 0, &mut vec![false; cols])
    }

    #[test]
    fn small_matrices_reach_the_brute_force_minimum() {
        let mut state = 12345u64;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 33) % 100) as f32 / 10.0
        };
        for (rows, cols) in [(1, 1), (2, 2), (3, 5), (4, 4), (5, 6), (6, 6)] {
            for _ in 0..20 {
                let cost: Vec<f32> = (0..rows * cols).map(|_| next()).collect();
                let pairs = linear_sum_assignment(&cost, rows, cols).unwrap();
                assert_eq!(pairs.len(), rows.min(cols));
                let total: f64 = pairs.iter().map(|&(r, c)| f64::from(cost[r * cols + c])).sum();
                assert!((total - brute_force(&cost, rows, cols)).abs() < 1e-4, "{cost:?}");
            }
        }
    }

    #[test]
    fn bad_matrices_are_refused() {
        assert!(matches!(linear_sum_assignment(&[1.0; 5], 2, 3), Err(AssignmentError::Shape { .. })));
        let error = linear_sum_assignment(&[1.0, f32::NAN, 0.0, 2.0], 2, 2).unwrap_err();
        assert_eq!(error, AssignmentError::NotFinite { row: 0, col: 1 });
        assert_eq!(linear_sum_assignment(&[], 0, 4).unwrap(), vec![]);
    }
}
