//! ATSS anchors and GLIP's box coding. One square anchor per feature-map cell, centred on the
//! cell, `scale × stride` pixels wide (GLIP: 8 × stride, so 64 px on P3). Box regressions are
//! Faster R-CNN deltas `(dx, dy, dw, dh)` with weights `(10, 10, 5, 5)`; width and height
//! deltas are clamped at `ln(1000 / 16)` before `exp`, as the reference does.
//!
//! Two pixel conventions ([`BoxConvention`]): glint's own models use continuous boxes (width
//! `x1 - x0`, a cell's anchor centred on the cell); official GLIP checkpoints were trained with
//! maskrcnn-benchmark's legacy one (width `x1 - x0 + 1`, anchors centred at
//! `x·stride + (stride - 1) / 2`), which they need to give the same boxes.

use burn::tensor::{Device, Tensor, TensorData};
use glint_core::geometry::BoxXyxy;
use serde::{Deserialize, Serialize};

/// How boxes map to pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BoxConvention {
    /// Width `x1 - x0`; anchors centred on their cell.
    Continuous,
    /// maskrcnn-benchmark's (official GLIP's): width `x1 - x0 + 1`; anchors centred at
    /// `x·stride + (stride - 1) / 2`.
    PlusOne,
}

impl BoxConvention {
    /// What is added to `x1 - x0` to get a width.
    pub fn extra(self) -> f32 {
        match self {
            Self::Continuous => 0.0,
            Self::PlusOne => 1.0,
        }
    }
}

/// The delta weights of GLIP's (and ATSS's) box coder.
pub const BOX_CODER_WEIGHTS: [f32; 4] = [10.0, 10.0, 5.0, 5.0];
const DELTA_CLAMP: f32 = 4.135_166_6; // ln(1000 / 16)

/// Anchors of every level, finest first, row-major within a level: the order of the head's
/// flattened outputs.
pub fn anchors(
    level_sizes: &[[usize; 2]],
    strides: &[usize],
    scale: f32,
    convention: BoxConvention,
) -> Vec<BoxXyxy> {
    let extra = convention.extra();
    let mut out = Vec::with_capacity(level_sizes.iter().map(|[h, w]| h * w).sum());
    for (&[h, w], &stride) in level_sizes.iter().zip(strides) {
        let s = stride as f32;
        let half = (scale * s - extra) / 2.0;
        // The cell's centre: (x + 0.5)·s, or x·s + (s - 1) / 2 with the legacy `+1`.
        let offset = (s - extra) / 2.0;
        for y in 0..h {
            for x in 0..w {
                let (cx, cy) = (x as f32 * s + offset, y as f32 * s + offset);
                out.push(BoxXyxy { x0: cx - half, y0: cy - half, x1: cx + half, y1: cy + half });
            }
        }
    }
    out
}

/// `[N, 4]` tensor of boxes.
pub fn boxes_tensor(boxes: &[BoxXyxy], device: &Device) -> Tensor<2> {
    let data: Vec<f32> = boxes.iter().flat_map(|b| b.to_array()).collect();
    Tensor::from_data(TensorData::new(data, [boxes.len(), 4]), device)
}

/// Decode `[N, 4]` deltas against `[N, 4]` anchors into xyxy boxes (differentiable).
pub fn decode_boxes(deltas: Tensor<2>, anchors: Tensor<2>, convention: BoxConvention) -> Tensor<2> {
    let n = deltas.dims()[0];
    let extra = convention.extra();
    let col = |t: &Tensor<2>, i: usize| t.clone().narrow(1, i, 1);
    let widths = col(&anchors, 2) - col(&anchors, 0) + extra;
    let heights = col(&anchors, 3) - col(&anchors, 1) + extra;
    let cx = col(&anchors, 0) + widths.clone() * 0.5;
    let cy = col(&anchors, 1) + heights.clone() * 0.5;
    let [wx, wy, ww, wh] = BOX_CODER_WEIGHTS;
    let dx = col(&deltas, 0) / wx;
    let dy = col(&deltas, 1) / wy;
    let dw = (col(&deltas, 2) / ww).clamp_max(DELTA_CLAMP);
    let dh = (col(&deltas, 3) / wh).clamp_max(DELTA_CLAMP);
    let pcx = dx * widths.clone() + cx;
    let pcy = dy * heights.clone() + cy;
    let pw = dw.exp() * widths;
    let ph = dh.exp() * heights;
    Tensor::cat(
        vec![
            pcx.clone() - pw.clone() * 0.5,
            pcy.clone() - ph.clone() * 0.5,
            pcx + pw * 0.5 - extra,
            pcy + ph * 0.5 - extra,
        ],
        1,
    )
    .reshape([n, 4])
}
