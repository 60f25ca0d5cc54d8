//! ATSS anchors and GLIP's box coding. One square anchor per feature-map cell, centred on the
//! cell, `scale × stride` pixels wide (GLIP: 8 × stride, so 64 px on P3). Box regressions are
//! Faster R-CNN deltas `(dx, dy, dw, dh)` with weights `(10, 10, 5, 5)`; width and height
//! deltas are clamped at `ln(1000 / 16)` before `exp`, as the reference does. Boxes have width
//! `x1 - x0` (no legacy `+1`).

use burn::tensor::{Device, Tensor, TensorData};
use glint_core::geometry::BoxXyxy;

/// The delta weights of GLIP's (and ATSS's) box coder.
pub const BOX_CODER_WEIGHTS: [f32; 4] = [10.0, 10.0, 5.0, 5.0];
const DELTA_CLAMP: f32 = 4.135_166_6; // ln(1000 / 16)

/// Anchors of every level, finest first, row-major within a level: the order of the head's
/// flattened outputs.
pub fn anchors(level_sizes: &[[usize; 2]], strides: &[usize], scale: f32) -> Vec<BoxXyxy> {
    let mut out = Vec::with_capacity(level_sizes.iter().map(|[h, w]| h * w).sum());
    for (&[h, w], &stride) in level_sizes.iter().zip(strides) {
        let s = stride as f32;
        let half = scale * s / 2.0;
        for y in 0..h {
            for x in 0..w {
                let (cx, cy) = ((x as f32 + 0.5) * s, (y as f32 + 0.5) * s);
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
pub fn decode_boxes(deltas: Tensor<2>, anchors: Tensor<2>) -> Tensor<2> {
    let n = deltas.dims()[0];
    let col = |t: &Tensor<2>, i: usize| t.clone().narrow(1, i, 1);
    let widths = col(&anchors, 2) - col(&anchors, 0);
    let heights = col(&anchors, 3) - col(&anchors, 1);
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
        vec![pcx.clone() - pw.clone() * 0.5, pcy.clone() - ph.clone() * 0.5, pcx + pw * 0.5, pcy + ph * 0.5],
        1,
    )
    .reshape([n, 4])
}
