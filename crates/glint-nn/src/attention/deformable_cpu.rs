//! The sampling core of multi-scale deformable attention as one fused pass on the CPU, with its
//! backward.
//!
//! For every query and head, the value maps are read at the sampling locations by bilinear
//! interpolation (zero outside the map, `align_corners = false`) and summed with the attention
//! weights straight into the output, so the per-point samples are never materialised (the
//! composed `grid_sample_2d` version writes `heads × head_dim × queries × levels × points`
//! values and reads them back). Queries are split across the CPU's threads; the inner loop is
//! a contiguous `head_dim`-wide multiply-add that the compiler vectorises.
//!
//! The backward walks the same taps once more. Each `(batch, head)` pair is one task: the value
//! rows it scatters into belong to that head alone, so threads never write the same gradient.
//! [`super::multi_scale_deformable_attention`] takes it on the plain `flex` device and on its
//! autodiff twin (Burn's `Autodiff<Flex>`, as `Device::flex().autodiff()` makes it).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Flex};
use burn::tensor::{Device, Tensor, TensorData};

type FlexPrimitive = <Flex as burn::backend::BackendTypes>::FloatTensorPrimitive;

/// The three inputs, handed back when a pass cannot take them.
pub type SamplingInputs = (Tensor<4>, Tensor<6>, Tensor<5>);

/// [`super::multi_scale_deformable_attention`] on the CPU (`flex`) device, plain or autodiff, as
/// one fused pass. The inputs come back unchanged when they are not on it (or use gradient
/// checkpointing), for the composed version to take them.
pub fn fused_cpu_deformable_attention(
    value: Tensor<4>,
    spatial_shapes: &[[usize; 2]],
    sampling_locations: Tensor<6>,
    attention_weights: Tensor<5>,
) -> Result<Tensor<3>, SamplingInputs> {
    let device = value.device();
    if device != Device::flex() {
        Err((value, sampling_locations, attention_weights))
    } else if device.is_autodiff() {
        with_backward(value, spatial_shapes, sampling_locations, attention_weights)
    } else {
        Ok(without_backward(value, spatial_shapes, sampling_locations, attention_weights, &device))
    }
}

fn without_backward(
    value: Tensor<4>,
    spatial_shapes: &[[usize; 2]],
    sampling_locations: Tensor<6>,
    attention_weights: Tensor<5>,
    device: &Device,
) -> Tensor<3> {
    let taps = Taps::new(&value, spatial_shapes, &sampling_locations);
    let output = taps.forward(&host(value), &host(sampling_locations), &host(attention_weights));
    Tensor::from_data(TensorData::new(output, [taps.batch, taps.queries, taps.heads * taps.head_dim]), device)
}

/// On the autodiff CPU device: the forward, and a backward step in Burn's graph with gradients
/// for all three inputs.
fn with_backward(
    value: Tensor<4>,
    spatial_shapes: &[[usize; 2]],
    sampling_locations: Tensor<6>,
    attention_weights: Tensor<5>,
) -> Result<Tensor<3>, SamplingInputs> {
    type Ad = Autodiff<Flex>;
    let (Ok(value_ad), Ok(locations_ad), Ok(weights_ad)) = (
        value.clone().try_into_primitive::<Ad>(),
        sampling_locations.clone().try_into_primitive::<Ad>(),
        attention_weights.clone().try_into_primitive::<Ad>(),
    ) else {
        return Err((value, sampling_locations, attention_weights));
    };
    let taps = Taps::new(&value, spatial_shapes, &sampling_locations);
    let forward = |value: &FlexPrimitive, locations: &FlexPrimitive, weights: &FlexPrimitive| {
        let output = taps.forward(
            &host(Tensor::<4>::from_primitive::<Flex>(value.clone())),
            &host(Tensor::<6>::from_primitive::<Flex>(locations.clone())),
            &host(Tensor::<5>::from_primitive::<Flex>(weights.clone())),
        );
        flex_primitive(output, [taps.batch, taps.queries, taps.heads * taps.head_dim])
    };
    let step = FusedDeformableBackward { taps: taps.clone() };
    let output = match step
        .prepare::<NoCheckpointing>([value_ad.node(), locations_ad.node(), weights_ad.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let state =
                (value_ad.into_primitive(), locations_ad.into_primitive(), weights_ad.into_primitive());
            let output = forward(&state.0, &state.1, &state.2);
            prep.finish(state, output)
        }
        OpsKind::UnTracked(prep) => {
            prep.finish(forward(value_ad.primitive(), locations_ad.primitive(), weights_ad.primitive()))
        }
    };
    Ok(Tensor::from_primitive::<Ad>(output))
}

fn host<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor.into_data().try_into_vec_as::<f32>().unwrap_or_default()
}

fn flex_primitive<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> FlexPrimitive {
    Tensor::<D>::from_data(TensorData::new(values, shape), &Device::flex())
        .try_into_primitive::<Flex>()
        .expect("a tensor made on the flex device is a flex tensor")
}

/// The backward step registered in Burn's autodiff graph. Its state is the forward's inputs.
#[derive(Debug)]
struct FusedDeformableBackward {
    taps: Taps,
}

impl Backward<Flex, 3> for FusedDeformableBackward {
    type State = (FlexPrimitive, FlexPrimitive, FlexPrimitive);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [value_node, locations_node, weights_node] = ops.parents;
        let output_grad = host(Tensor::<3>::from_primitive::<Flex>(grads.consume::<Flex>(&ops.node)));
        let (value, locations, weights) = ops.state;
        let taps = &self.taps;
        let [value_grad, locations_grad, weights_grad] = taps.backward(
            &host(Tensor::<4>::from_primitive::<Flex>(value)),
            &host(Tensor::<6>::from_primitive::<Flex>(locations)),
            &host(Tensor::<5>::from_primitive::<Flex>(weights)),
            &output_grad,
        );
        let (b, q, h, d, lp) =
            (taps.batch, taps.queries, taps.heads, taps.head_dim, taps.levels * taps.points);
        // The backward's own layouts put the head first: [batch, heads, ...]. Back to the inputs'.
        let head_first = |values: Vec<f32>, rows: usize, width: usize| {
            Tensor::<4>::from_data(TensorData::new(values, [b, h, rows, width]), &Device::flex())
                .swap_dims(1, 2)
        };
        if let Some(node) = value_node {
            let grad = head_first(value_grad, taps.seq_len, d);
            grads.register::<Flex>(node.id, grad.try_into_primitive::<Flex>().expect("flex"));
        }
        if let Some(node) = locations_node {
            let grad = head_first(locations_grad, q, lp * 2).reshape([b, q, h, taps.levels, taps.points, 2]);
            grads.register::<Flex>(node.id, grad.try_into_primitive::<Flex>().expect("flex"));
        }
        if let Some(node) = weights_node {
            let grad = head_first(weights_grad, q, lp).reshape([b, q, h, taps.levels, taps.points]);
            grads.register::<Flex>(node.id, grad.try_into_primitive::<Flex>().expect("flex"));
        }
    }
}

/// The sizes of one call, and the level table.
#[derive(Clone, Debug)]
struct Taps {
    batch: usize,
    seq_len: usize,
    heads: usize,
    head_dim: usize,
    queries: usize,
    levels: usize,
    points: usize,
    /// `[height, width]` and first token of each level.
    level_table: Vec<([usize; 2], usize)>,
}

/// One bilinear tap: a sampling location's in-map neighbour and its interpolation weights.
struct Corner {
    token: usize,
    /// `wy · wx`: this corner's share of the sample.
    weight: f32,
    /// ∂weight/∂x and ∂weight/∂y of the sampling location (`x` and `y` in `[0, 1]`).
    d_dx: f32,
    d_dy: f32,
}

impl Taps {
    fn new(value: &Tensor<4>, spatial_shapes: &[[usize; 2]], sampling_locations: &Tensor<6>) -> Self {
        let [batch, seq_len, heads, head_dim] = value.dims();
        let [_, queries, _, levels, points, _] = sampling_locations.dims();
        let starts = super::deformable::level_start_index(spatial_shapes);
        let level_table = spatial_shapes.iter().copied().zip(starts).collect();
        Self { batch, seq_len, heads, head_dim, queries, levels, points, level_table }
    }

    /// Calls `visit(tap, corner)` for the in-map neighbours of each of one `(batch, query, head)`
    /// row's taps; `tap` indexes the attention weights, `2 · tap` the locations.
    fn corners(&self, bq: usize, h: usize, locations: &[f32], mut visit: impl FnMut(usize, Corner)) {
        let first_tap = (bq * self.heads + h) * self.levels * self.points;
        for (level, &([height, width], start)) in self.level_table.iter().enumerate() {
            for p in 0..self.points {
                let tap = first_tap + level * self.points + p;
                // Pixel coordinates of the sample, pixel centres at integers.
                let x = locations[2 * tap] * width as f32 - 0.5;
                let y = locations[2 * tap + 1] * height as f32 - 0.5;
                let (x0, y0) = (x.floor(), y.floor());
                let (fx, fy) = (x - x0, y - y0);
                let (x0, y0) = (x0 as i64, y0 as i64);
                for (dy, wy, dwy) in [(0, 1.0 - fy, -1.0), (1, fy, 1.0)] {
                    let yy = y0 + dy;
                    if yy < 0 || yy >= height as i64 {
                        continue;
                    }
                    for (dx, wx, dwx) in [(0, 1.0 - fx, -1.0), (1, fx, 1.0)] {
                        let xx = x0 + dx;
                        if xx < 0 || xx >= width as i64 {
                            continue;
                        }
                        let token = start + yy as usize * width + xx as usize;
                        // The pixel coordinate is location · width − 0.5: ∂/∂location = width.
                        let (d_dx, d_dy) = (wy * dwx * width as f32, dwy * wx * height as f32);
                        visit(tap, Corner { token, weight: wy * wx, d_dx, d_dy });
                    }
                }
            }
        }
    }

    /// Value row of `token` for `head` in batch `b`: `head_dim` values.
    fn value_row<'v>(&self, value: &'v [f32], b: usize, token: usize, h: usize) -> &'v [f32] {
        &value[((b * self.seq_len + token) * self.heads + h) * self.head_dim..][..self.head_dim]
    }

    /// `[batch, queries, heads * head_dim]`, with the queries split across the threads.
    fn forward(&self, value: &[f32], locations: &[f32], weights: &[f32]) -> Vec<f32> {
        let (row, d) = (self.heads * self.head_dim, self.head_dim);
        let mut output = vec![0.0f32; self.batch * self.queries * row];
        let rows_per_thread = (self.batch * self.queries).div_ceil(threads(self.batch * self.queries));
        std::thread::scope(|scope| {
            for (chunk, out) in output.chunks_mut(rows_per_thread * row).enumerate() {
                scope.spawn(move || {
                    for (i, out_row) in out.chunks_mut(row).enumerate() {
                        let bq = chunk * rows_per_thread + i;
                        let b = bq / self.queries;
                        for h in 0..self.heads {
                            let acc = &mut out_row[h * d..(h + 1) * d];
                            self.corners(bq, h, locations, |tap, corner| {
                                let w = weights[tap] * corner.weight;
                                for (a, &v) in acc.iter_mut().zip(self.value_row(value, b, corner.token, h)) {
                                    *a += w * v;
                                }
                            });
                        }
                    }
                });
            }
        });
        output
    }

    /// Gradients with respect to the value, the locations and the weights, each laid out head
    /// first: `[batch, heads, seq_len, head_dim]`, `[batch, heads, queries, levels·points·2]` and
    /// `[batch, heads, queries, levels·points]`.
    fn backward(
        &self,
        value: &[f32],
        locations: &[f32],
        weights: &[f32],
        output_grad: &[f32],
    ) -> [Vec<f32>; 3] {
        let (d, lp) = (self.head_dim, self.levels * self.points);
        let (value_len, locations_len, weights_len) =
            (self.seq_len * d, self.queries * lp * 2, self.queries * lp);
        let pairs = self.batch * self.heads;
        let mut value_grad = vec![0.0f32; pairs * value_len];
        let mut locations_grad = vec![0.0f32; pairs * locations_len];
        let mut weights_grad = vec![0.0f32; pairs * weights_len];
        let tasks: Vec<_> = value_grad
            .chunks_mut(value_len)
            .zip(locations_grad.chunks_mut(locations_len))
            .zip(weights_grad.chunks_mut(weights_len))
            .enumerate()
            .collect();
        let per_thread = pairs.div_ceil(threads(pairs));
        let mut tasks = tasks.into_iter();
        std::thread::scope(|scope| {
            loop {
                let chunk: Vec<_> = tasks.by_ref().take(per_thread).collect();
                if chunk.is_empty() {
                    break;
                }
                scope.spawn(move || {
                    for (pair, ((value_grad, locations_grad), weights_grad)) in chunk {
                        let (b, h) = (pair / self.heads, pair % self.heads);
                        for q in 0..self.queries {
                            let bq = b * self.queries + q;
                            let grad = &output_grad[(bq * self.heads + h) * d..][..d];
                            let first_tap = (bq * self.heads + h) * lp;
                            self.corners(bq, h, locations, |tap, corner| {
                                let attention = weights[tap];
                                let v = self.value_row(value, b, corner.token, h);
                                let dot: f32 = grad.iter().zip(v).map(|(g, v)| g * v).sum();
                                let local = q * lp + tap - first_tap;
                                weights_grad[local] += corner.weight * dot;
                                locations_grad[2 * local] += attention * corner.d_dx * dot;
                                locations_grad[2 * local + 1] += attention * corner.d_dy * dot;
                                let scale = attention * corner.weight;
                                let row = &mut value_grad[corner.token * d..][..d];
                                for (r, &g) in row.iter_mut().zip(grad) {
                                    *r += scale * g;
                                }
                            });
                        }
                    }
                });
            }
        });
        [value_grad, locations_grad, weights_grad]
    }
}

fn threads(work: usize) -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).min(work).max(1)
}
