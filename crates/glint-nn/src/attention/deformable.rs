//! Multi-scale deformable attention (Deformable DETR), as Grounding DINO uses it for the encoder's
//! self-attention over the flattened feature maps and the decoder's cross-attention from queries
//! to those maps.
//!
//! Every query looks at `n_points` locations per head and per feature level. The locations are
//! its reference point moved by offsets predicted from the query: for a 2-d reference point
//! `(x, y)` (normalised to `[0, 1]`) the offsets are in pixels of each level; for a 4-d reference
//! box `(cx, cy, w, h)` they are in units of half the box size divided by `n_points`. The values
//! at those locations are read by bilinear interpolation with zero padding outside the map
//! ([`Tensor::grid_sample_2d`], `align_corners = false`, the semantics of PyTorch's
//! `F.grid_sample(mode="bilinear", padding_mode="zeros", align_corners=False)`), weighted by a
//! softmax over all `n_levels * n_points` locations of the head, summed, and projected.
//!
//! The parameter names are those of transformers' `GroundingDinoMultiscaleDeformableAttention`
//! (`sampling_offsets`, `attention_weights`, `value_proj`, `output_proj`), so a checkpoint's
//! `…deformable_layer.self_attn.` / `…encoder_attn.` keys load without renaming.

use burn::config::Config;
use burn::module::{Initializer, Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::softmax;
use burn::tensor::ops::{GridSampleOptions, GridSamplePaddingMode, InterpolateMode};
use burn::tensor::{Bool, Device, Tensor, TensorData};

/// A deformable attention configuration or call that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeformableAttentionError {
    /// A size of the configuration is zero, or `d_model` is not a multiple of `n_heads`.
    #[error(
        "invalid deformable attention config: d_model {d_model}, n_heads {n_heads}, n_levels {n_levels}, \
         n_points {n_points} (all must be positive and n_heads must divide d_model)"
    )]
    Config {
        /// Width of queries and values.
        d_model: usize,
        /// Attention heads.
        n_heads: usize,
        /// Feature levels.
        n_levels: usize,
        /// Sampling points per head and level.
        n_points: usize,
    },
    /// An input's shape does not agree with the configuration or with the other inputs.
    #[error("deformable attention: {0}")]
    Shape(String),
}

/// Configuration of a [`MultiScaleDeformableAttention`] block.
///
/// Grounding DINO's encoder uses `(d_model, num_feature_levels, encoder_attention_heads,
/// encoder_n_points)`, its decoder `(d_model, num_feature_levels, decoder_attention_heads,
/// decoder_n_points)`; Grounding-DINO-T has 256, 4, 8 and 4.
#[derive(Config, Debug)]
pub struct MultiScaleDeformableAttentionConfig {
    /// Width of queries, values and the output.
    pub d_model: usize,
    /// Number of feature levels the values come from.
    pub n_levels: usize,
    /// Number of attention heads (must divide `d_model`).
    pub n_heads: usize,
    /// Sampling points per head and level.
    pub n_points: usize,
}

impl MultiScaleDeformableAttentionConfig {
    /// Check the sizes: all positive, `n_heads` divides `d_model`.
    pub fn validate(&self) -> Result<(), DeformableAttentionError> {
        let ok = self.d_model > 0
            && self.n_heads > 0
            && self.n_levels > 0
            && self.n_points > 0
            && self.d_model.is_multiple_of(self.n_heads);
        if ok {
            Ok(())
        } else {
            Err(DeformableAttentionError::Config {
                d_model: self.d_model,
                n_heads: self.n_heads,
                n_levels: self.n_levels,
                n_points: self.n_points,
            })
        }
    }

    /// Build the block with the reference implementation's initialisation: zero offset weights
    /// with biases spreading each head's points along its own direction (head `h` at angle
    /// `2πh / n_heads`, point `p` at `p + 1` pixels), uniform attention (zero weights and
    /// biases), Xavier-uniform value / output projections with zero biases.
    pub fn init(&self, device: &Device) -> Result<MultiScaleDeformableAttention, DeformableAttentionError> {
        self.validate()?;
        let (d, h, l, p) = (self.d_model, self.n_heads, self.n_levels, self.n_points);

        let zeros_linear =
            |d_out: usize| LinearConfig::new(d, d_out).with_initializer(Initializer::Zeros).init(device);
        let xavier_linear = |d_out: usize| {
            let mut linear = LinearConfig::new(d, d_out)
                .with_initializer(Initializer::XavierUniform { gain: 1.0 })
                .init(device);
            linear.bias = Some(Initializer::Zeros.init([d_out], device));
            linear
        };

        let mut sampling_offsets = zeros_linear(h * l * p * 2);
        let mut grid = Vec::with_capacity(h * l * p * 2);
        for head in 0..h {
            let theta = head as f64 * (2.0 * std::f64::consts::PI / h as f64);
            let (x, y) = (theta.cos(), theta.sin());
            let norm = x.abs().max(y.abs());
            for _level in 0..l {
                for point in 0..p {
                    let scale = (point + 1) as f64;
                    grid.push((x / norm * scale) as f32);
                    grid.push((y / norm * scale) as f32);
                }
            }
        }
        let bias = Tensor::<1>::from_data(TensorData::new(grid, [h * l * p * 2]), device);
        sampling_offsets.bias = Some(Param::from_tensor(bias));

        Ok(MultiScaleDeformableAttention {
            sampling_offsets,
            attention_weights: zeros_linear(h * l * p),
            value_proj: xavier_linear(d),
            output_proj: xavier_linear(d),
            d_model: d,
            n_levels: l,
            n_heads: h,
            n_points: p,
        })
    }
}

/// Multi-scale deformable attention. Build it with [`MultiScaleDeformableAttentionConfig::init`].
#[derive(Module, Debug)]
pub struct MultiScaleDeformableAttention {
    /// Query -> `(x, y)` offsets for every head, level and point: `d_model -> n_heads * n_levels *
    /// n_points * 2`.
    pub sampling_offsets: Linear,
    /// Query -> attention logits for every head, level and point: `d_model -> n_heads * n_levels *
    /// n_points` (softmax over levels and points of a head).
    pub attention_weights: Linear,
    /// Value projection, `d_model -> d_model`.
    pub value_proj: Linear,
    /// Output projection, `d_model -> d_model`.
    pub output_proj: Linear,
    /// Width of queries and values.
    pub d_model: usize,
    /// Feature levels.
    pub n_levels: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// Sampling points per head and level.
    pub n_points: usize,
}

/// What [`MultiScaleDeformableAttention::forward`] returns.
#[derive(Debug, Clone)]
pub struct DeformableAttentionOutput {
    /// `[batch, queries, d_model]`.
    pub output: Tensor<3>,
    /// Softmax weights `[batch, queries, n_heads, n_levels, n_points]` (each head's weights sum
    /// to one over levels and points), as transformers returns them.
    pub attention_weights: Tensor<5>,
    /// Where each head looked, `[batch, queries, n_heads, n_levels, n_points, 2]`, as `(x, y)`
    /// normalised to `[0, 1]` per level (outside that range reads zeros).
    pub sampling_locations: Tensor<6>,
}

impl MultiScaleDeformableAttention {
    /// Attend from `query` to the multi-scale `value` maps.
    ///
    /// - `query`: `[batch, queries, d_model]`; `query_pos`, when given, is added to it (the
    ///   offsets and weights are predicted from `query + query_pos`).
    /// - `value`: `[batch, sum(h * w), d_model]`, the levels' maps flattened row-major and
    ///   concatenated in the order of `spatial_shapes`.
    /// - `reference_points`: `[batch, queries, n_levels, 2]` points `(x, y)` or
    ///   `[batch, queries, n_levels, 4]` boxes `(cx, cy, w, h)`, normalised to `[0, 1]` per level.
    /// - `spatial_shapes`: `[height, width]` of every level (`n_levels` of them).
    /// - `value_padding_mask`: `[batch, sum(h * w)]`, `true` where the value is padding; those
    ///   values are zeroed after the projection. (transformers passes the inverse, `true` = valid.)
    pub fn forward(
        &self,
        query: Tensor<3>,
        query_pos: Option<Tensor<3>>,
        value: Tensor<3>,
        reference_points: Tensor<4>,
        spatial_shapes: &[[usize; 2]],
        value_padding_mask: Option<Tensor<2, Bool>>,
    ) -> Result<DeformableAttentionOutput, DeformableAttentionError> {
        let shape_error = |message: String| Err(DeformableAttentionError::Shape(message));
        let [batch, num_queries, d_query] = query.dims();
        let [value_batch, seq_len, d_value] = value.dims();
        let (heads, levels, points) = (self.n_heads, self.n_levels, self.n_points);
        if d_query != self.d_model || d_value != self.d_model || value_batch != batch {
            return shape_error(format!(
                "query {:?} and value {:?} must be [batch, _, {}] with the same batch",
                query.dims(),
                value.dims(),
                self.d_model
            ));
        }
        if let Some(pos) = &query_pos
            && pos.dims() != query.dims()
        {
            return shape_error(format!("query_pos {:?} differs from query {:?}", pos.dims(), query.dims()));
        }
        check_levels(spatial_shapes, levels, seq_len)?;
        let [ref_batch, ref_queries, ref_levels, coords] = reference_points.dims();
        if ref_batch != batch
            || ref_queries != num_queries
            || ref_levels != levels
            || !(coords == 2 || coords == 4)
        {
            return shape_error(format!(
                "reference points {:?} must be [{batch}, {num_queries}, {levels}, 2 or 4]",
                reference_points.dims()
            ));
        }
        if let Some(mask) = &value_padding_mask
            && mask.dims() != [batch, seq_len]
        {
            return shape_error(format!("value padding mask {:?} must be [{batch}, {seq_len}]", mask.dims()));
        }

        let query = match query_pos {
            Some(pos) => query + pos,
            None => query,
        };

        let mut value = self.value_proj.forward(value);
        if let Some(mask) = value_padding_mask {
            let mask = mask.unsqueeze_dim::<3>(2).expand([batch, seq_len, self.d_model]);
            value = value.mask_fill(mask, 0.0);
        }
        let value = value.reshape([batch, seq_len, heads, self.d_model / heads]);

        let offsets = self.sampling_offsets.forward(query.clone()).reshape([
            batch,
            num_queries,
            heads,
            levels,
            points,
            2,
        ]);
        let logits =
            self.attention_weights.forward(query).reshape([batch, num_queries, heads, levels * points]);
        let attention_weights = softmax(logits, 3).reshape([batch, num_queries, heads, levels, points]);

        let device = offsets.device();
        let sampling_locations = if coords == 2 {
            // Offsets are in pixels of each level: divide by (width, height).
            let sizes: Vec<f32> = spatial_shapes.iter().flat_map(|&[h, w]| [w as f32, h as f32]).collect();
            let normalizer = Tensor::<1>::from_data(TensorData::new(sizes, [levels * 2]), &device)
                .reshape([1, 1, 1, levels, 1, 2]);
            reference_points.reshape([batch, num_queries, 1, levels, 1, 2]) + offsets / normalizer
        } else {
            // Offsets are in units of half the box size, spread over the points.
            let centre =
                reference_points.clone().narrow(3, 0, 2).reshape([batch, num_queries, 1, levels, 1, 2]);
            let size = reference_points.narrow(3, 2, 2).reshape([batch, num_queries, 1, levels, 1, 2]);
            centre + (offsets.div_scalar(points as f32) * size).mul_scalar(0.5)
        };

        let sampled = multi_scale_deformable_attention(
            value,
            spatial_shapes,
            sampling_locations.clone(),
            attention_weights.clone(),
        )?;
        Ok(DeformableAttentionOutput {
            output: self.output_proj.forward(sampled),
            attention_weights,
            sampling_locations,
        })
    }
}

/// Offsets of every level's first element in the flattened value sequence: `[0, h0*w0,
/// h0*w0 + h1*w1, ...]` (transformers' `level_start_index`).
pub fn level_start_index(spatial_shapes: &[[usize; 2]]) -> Vec<usize> {
    spatial_shapes
        .iter()
        .scan(0, |start, &[h, w]| {
            let this = *start;
            *start += h * w;
            Some(this)
        })
        .collect()
}

fn check_levels(
    spatial_shapes: &[[usize; 2]],
    levels: usize,
    seq_len: usize,
) -> Result<(), DeformableAttentionError> {
    let total: usize = spatial_shapes.iter().map(|&[h, w]| h * w).sum();
    if spatial_shapes.len() != levels
        || total != seq_len
        || spatial_shapes.iter().any(|&[h, w]| h == 0 || w == 0)
    {
        return Err(DeformableAttentionError::Shape(format!(
            "spatial shapes {spatial_shapes:?} must be {levels} non-empty levels covering the {seq_len} values"
        )));
    }
    Ok(())
}

/// The sampling core of deformable attention (transformers' pure-PyTorch
/// `MultiScaleDeformableAttention`, the CUDA kernel's reference), without projections.
///
/// - `value`: `[batch, sum(h * w), n_heads, head_dim]`, levels flattened row-major and
///   concatenated in the order of `spatial_shapes` (`[height, width]` each).
/// - `sampling_locations`: `[batch, queries, n_heads, n_levels, n_points, 2]`, `(x, y)` in `[0, 1]`
///   per level (`0` and `1` are the outer edges of the border pixels); outside reads zeros.
/// - `attention_weights`: `[batch, queries, n_heads, n_levels, n_points]`.
///
/// Returns `[batch, queries, n_heads * head_dim]`: for every head, the weighted sum of the values
/// bilinearly interpolated at its locations.
///
/// Every path computes the same thing: one fused pass on the CPU (with its own backward on the
/// autodiff CPU device), one fused CubeCL kernel on a plain GPU device, and the composed
/// `grid_sample_2d` version ([`composed_multi_scale_deformable_attention`]) for training on a
/// GPU.
pub fn multi_scale_deformable_attention(
    value: Tensor<4>,
    spatial_shapes: &[[usize; 2]],
    sampling_locations: Tensor<6>,
    attention_weights: Tensor<5>,
) -> Result<Tensor<3>, DeformableAttentionError> {
    check_inputs(&value, spatial_shapes, &sampling_locations, &attention_weights)?;
    // Each fused pass hands the inputs back when they are not on its device.
    let fused = super::deformable_cpu::fused_cpu_deformable_attention(
        value,
        spatial_shapes,
        sampling_locations,
        attention_weights,
    )
    .or_else(|(value, sampling_locations, attention_weights)| {
        super::deformable_gpu::fused_deformable_attention(
            value,
            spatial_shapes,
            sampling_locations,
            attention_weights,
        )
    });
    Ok(fused.unwrap_or_else(|(value, sampling_locations, attention_weights)| {
        composed(value, spatial_shapes, sampling_locations, attention_weights)
    }))
}

/// [`multi_scale_deformable_attention`] composed of Burn's `grid_sample_2d`, on any device and
/// differentiable by Burn's autodiff: the reference that the fused passes are tested against,
/// and what GPU training runs.
pub fn composed_multi_scale_deformable_attention(
    value: Tensor<4>,
    spatial_shapes: &[[usize; 2]],
    sampling_locations: Tensor<6>,
    attention_weights: Tensor<5>,
) -> Result<Tensor<3>, DeformableAttentionError> {
    check_inputs(&value, spatial_shapes, &sampling_locations, &attention_weights)?;
    Ok(composed(value, spatial_shapes, sampling_locations, attention_weights))
}

fn check_inputs(
    value: &Tensor<4>,
    spatial_shapes: &[[usize; 2]],
    sampling_locations: &Tensor<6>,
    attention_weights: &Tensor<5>,
) -> Result<(), DeformableAttentionError> {
    let [batch, seq_len, heads, _] = value.dims();
    let [loc_batch, num_queries, loc_heads, levels, points, two] = sampling_locations.dims();
    if loc_batch != batch || loc_heads != heads || two != 2 {
        return Err(DeformableAttentionError::Shape(format!(
            "sampling locations {:?} must be [{batch}, _, {heads}, _, _, 2] for value {:?}",
            sampling_locations.dims(),
            value.dims()
        )));
    }
    if attention_weights.dims() != [batch, num_queries, heads, levels, points] {
        return Err(DeformableAttentionError::Shape(format!(
            "attention weights {:?} must be [{batch}, {num_queries}, {heads}, {levels}, {points}]",
            attention_weights.dims()
        )));
    }
    check_levels(spatial_shapes, levels, seq_len)?;
    Ok(())
}

fn composed(
    value: Tensor<4>,
    spatial_shapes: &[[usize; 2]],
    sampling_locations: Tensor<6>,
    attention_weights: Tensor<5>,
) -> Tensor<3> {
    let [batch, _, heads, head_dim] = value.dims();
    let [_, num_queries, _, levels, points, _] = sampling_locations.dims();
    // grid_sample's coordinates: -1 and 1 are the outer edges of the border pixels.
    let grids = sampling_locations.mul_scalar(2.0).sub_scalar(1.0);
    let options = GridSampleOptions::new(InterpolateMode::Bilinear)
        .with_padding_mode(GridSamplePaddingMode::Zeros)
        .with_align_corners(false);

    let starts = level_start_index(spatial_shapes);
    let mut per_level = Vec::with_capacity(levels);
    for (level, (&[height, width], &start)) in spatial_shapes.iter().zip(&starts).enumerate() {
        // [batch, h*w, heads, head_dim] -> [batch * heads, head_dim, h, w]
        let map = value.clone().narrow(1, start, height * width).permute([0, 2, 3, 1]).reshape([
            batch * heads,
            head_dim,
            height,
            width,
        ]);
        // [batch, queries, heads, points, 2] -> [batch * heads, queries, points, 2]
        let grid = grids
            .clone()
            .narrow(3, level, 1)
            .reshape([batch, num_queries, heads, points, 2])
            .swap_dims(1, 2)
            .reshape([batch * heads, num_queries, points, 2]);
        // [batch * heads, head_dim, queries, points]
        per_level.push(map.grid_sample_2d(grid, options.clone()));
    }
    // [batch * heads, head_dim, queries, levels * points]
    let sampled =
        Tensor::stack::<5>(per_level, 3).reshape([batch * heads, head_dim, num_queries, levels * points]);
    let weights = attention_weights.swap_dims(1, 2).reshape([batch * heads, 1, num_queries, levels * points]);
    let output =
        (sampled * weights).sum_dim(3).reshape([batch, heads * head_dim, num_queries]).swap_dims(1, 2);
    output
}
