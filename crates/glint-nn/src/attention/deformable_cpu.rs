//! The sampling core of multi-scale deformable attention as one fused pass on the CPU.
//!
//! For every query and head, the value maps are read at the sampling locations by bilinear
//! interpolation (zero outside the map, `align_corners = false`) and summed with the attention
//! weights straight into the output, so the per-point samples are never materialised (the
//! composed `grid_sample_2d` version writes `heads × head_dim × queries × levels × points`
//! values and reads them back). Queries are split across the CPU's threads; the inner loop is
//! a contiguous `head_dim`-wide multiply-add that the compiler vectorises.
//!
//! Inference only: there is no backward. [`super::multi_scale_deformable_attention`] uses it on
//! the plain (non-autodiff) `flex` device and the composed version everywhere else.

use burn::tensor::{Device, Tensor, TensorData};

/// Same contract and result as [`super::multi_scale_deformable_attention`] (shapes already
/// checked by it).
pub fn fused_deformable_attention(
    value: Tensor<4>,
    spatial_shapes: &[[usize; 2]],
    sampling_locations: Tensor<6>,
    attention_weights: Tensor<5>,
    device: &Device,
) -> Tensor<3> {
    let [batch, seq_len, heads, head_dim] = value.dims();
    let [_, queries, _, levels, points, _] = sampling_locations.dims();
    let host = |t: TensorData| t.try_into_vec_as::<f32>().unwrap_or_default();
    let value = host(value.into_data());
    let locations = host(sampling_locations.into_data());
    let weights = host(attention_weights.into_data());
    let starts = super::deformable::level_start_index(spatial_shapes);

    let row = heads * head_dim;
    let mut output = vec![0.0f32; batch * queries * row];
    let layout = Layout { seq_len, heads, head_dim, levels, points, queries };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(batch * queries).max(1);
    let rows_per_thread = (batch * queries).div_ceil(threads);
    std::thread::scope(|scope| {
        for (chunk, out) in output.chunks_mut(rows_per_thread * row).enumerate() {
            let (value, locations, weights, starts) = (&value, &locations, &weights, &starts);
            scope.spawn(move || {
                for (i, out_row) in out.chunks_mut(row).enumerate() {
                    let bq = chunk * rows_per_thread + i;
                    layout.sample_row(bq, out_row, value, locations, weights, spatial_shapes, starts);
                }
            });
        }
    });
    Tensor::from_data(TensorData::new(output, [batch, queries, row]), device)
}

#[derive(Clone, Copy)]
struct Layout {
    seq_len: usize,
    heads: usize,
    head_dim: usize,
    levels: usize,
    points: usize,
    queries: usize,
}

impl Layout {
    /// Output row `bq` (batch `bq / queries`, query `bq % queries`): `heads × head_dim` values.
    #[allow(clippy::too_many_arguments)]
    fn sample_row(
        &self,
        bq: usize,
        out: &mut [f32],
        value: &[f32],
        locations: &[f32],
        weights: &[f32],
        spatial_shapes: &[[usize; 2]],
        starts: &[usize],
    ) {
        let b = bq / self.queries;
        let (d, lp) = (self.head_dim, self.levels * self.points);
        for h in 0..self.heads {
            let acc = &mut out[h * d..(h + 1) * d];
            let base = (bq * self.heads + h) * lp;
            for (level, (&[height, width], &start)) in spatial_shapes.iter().zip(starts).enumerate() {
                for p in 0..self.points {
                    let k = base + level * self.points + p;
                    let attention = weights[k];
                    // Pixel coordinates of the sample, pixel centres at integers.
                    let x = locations[2 * k] * width as f32 - 0.5;
                    let y = locations[2 * k + 1] * height as f32 - 0.5;
                    let (x0, y0) = (x.floor(), y.floor());
                    let (fx, fy) = (x - x0, y - y0);
                    let (x0, y0) = (x0 as i64, y0 as i64);
                    for (dy, wy) in [(0, 1.0 - fy), (1, fy)] {
                        let yy = y0 + dy;
                        if yy < 0 || yy >= height as i64 {
                            continue;
                        }
                        for (dx, wx) in [(0, 1.0 - fx), (1, fx)] {
                            let xx = x0 + dx;
                            if xx < 0 || xx >= width as i64 {
                                continue;
                            }
                            let w = attention * wy * wx;
                            let token = start + yy as usize * width + xx as usize;
                            let v = &value[((b * self.seq_len + token) * self.heads + h) * d..][..d];
                            for (a, &v) in acc.iter_mut().zip(v) {
                                *a += w * v;
                            }
                        }
                    }
                }
            }
        }
    }
}
