//! The sampling core of multi-scale deformable attention as one CubeCL kernel (wgpu and every
//! other CubeCL runtime).
//!
//! One GPU thread computes one output element `(batch, query, head, channel)`: it walks the
//! head's `levels × points` sampling locations, reads the four neighbours of each by bilinear
//! interpolation (zero outside the map, `align_corners = false`) and accumulates them with the
//! attention weights. The per-point samples never reach memory: the composed `grid_sample_2d`
//! version writes `heads × head_dim × queries × levels × points` values and reads them back,
//! and needs one launch per level plus the stack, multiply and sum. Neighbouring threads are
//! neighbouring channels of one head, so every value read is coalesced.
//!
//! Inference only: there is no backward. [`super::multi_scale_deformable_attention`] uses it for
//! tensors on a plain (non-autodiff) CubeCL device and the composed version under autodiff.

use burn::backend::Cube;
use burn::backend::cubecl::dtype_to_storage_type;
use burn::tensor::{Int, Tensor, TensorData};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::calculate_cube_count_elemwise;
use cubecl::prelude::CubeDim;

use super::deformable_cpu::SamplingInputs;

/// The kernel, apart so that CubeCL's `Tensor` and `Int` do not meet Burn's.
mod kernel {
    use cubecl::prelude::*;

    #[cube(launch)]
    pub fn deformable_attention_kernel<F: Float, I: Int>(
        value: &Tensor<F>,       // [batch, seq_len, heads, head_dim], contiguous
        locations: &Tensor<F>,   // [batch, queries, heads, levels, points, 2], contiguous
        weights: &Tensor<F>,     // [batch, queries, heads, levels, points], contiguous
        level_table: &Tensor<I>, // [levels, 3]: height, width, first token
        output: &mut Tensor<F>,  // [batch, queries, heads * head_dim], contiguous
        #[define(F, I)] _dtypes: [ElemType; 2],
    ) {
        let index = ABSOLUTE_POS;
        if index >= output.len() {
            terminate!();
        }
        let seq_len = value.shape(1);
        let heads = value.shape(2);
        let head_dim = value.shape(3);
        let queries = locations.shape(1);
        let levels = locations.shape(3);
        let points = locations.shape(4);

        let channel = index % head_dim;
        let head = (index / head_dim) % heads;
        let batch_query = index / (head_dim * heads);
        let batch = batch_query / queries;

        // Value of (token, this head, this channel) is at value_base + token * token_stride.
        let token_stride = heads * head_dim;
        let value_base = batch * seq_len * token_stride + head * head_dim + channel;
        let first_weight = (batch_query * heads + head) * levels * points;

        let mut sum = F::new(0.0);
        for level in 0..levels {
            let height = i32::cast_from(level_table[level * 3]);
            let width = i32::cast_from(level_table[level * 3 + 1]);
            let first_token = usize::cast_from(level_table[level * 3 + 2]);
            let height_f = F::cast_from(height);
            let width_f = F::cast_from(width);
            for point in 0..points {
                let k = first_weight + level * points + point;
                let attention = weights[k];
                // Pixel coordinates of the sample, pixel centres at integers.
                let x = locations[2 * k] * width_f - F::new(0.5);
                let y = locations[2 * k + 1] * height_f - F::new(0.5);
                let x0_f = x.floor();
                let y0_f = y.floor();
                let fx = x - x0_f;
                let fy = y - y0_f;
                let x0 = i32::cast_from(x0_f);
                let y0 = i32::cast_from(y0_f);
                let one = F::new(1.0);
                sum += attention
                    * (corner(value, value_base, token_stride, first_token, x0, y0, width, height)
                        * (one - fx)
                        * (one - fy)
                        + corner(value, value_base, token_stride, first_token, x0 + 1, y0, width, height)
                            * fx
                            * (one - fy)
                        + corner(value, value_base, token_stride, first_token, x0, y0 + 1, width, height)
                            * (one - fx)
                            * fy
                        + corner(
                            value,
                            value_base,
                            token_stride,
                            first_token,
                            x0 + 1,
                            y0 + 1,
                            width,
                            height,
                        ) * fx
                            * fy);
            }
        }
        output[index] = sum;
    }

    /// The value at pixel `(x, y)` of one level, zero outside the map.
    #[cube]
    #[allow(clippy::too_many_arguments)]
    fn corner<F: Float>(
        value: &Tensor<F>,
        value_base: usize,
        token_stride: usize,
        first_token: usize,
        x: i32,
        y: i32,
        width: i32,
        height: i32,
    ) -> F {
        let mut read = F::new(0.0);
        if x >= 0 && x < width && y >= 0 && y < height {
            let token = first_token + usize::cast_from(y * width + x);
            read = value[value_base + token * token_stride];
        }
        read
    }
}

/// Same contract and result as [`super::multi_scale_deformable_attention`] (shapes already
/// checked by it). Returns the inputs back when they do not live on a plain CubeCL device (an
/// autodiff device, the CPU), so the caller can take the composed path.
pub fn fused_deformable_attention(
    value: Tensor<4>,
    spatial_shapes: &[[usize; 2]],
    sampling_locations: Tensor<6>,
    attention_weights: Tensor<5>,
) -> Result<Tensor<3>, SamplingInputs> {
    let [batch, _, heads, head_dim] = value.dims();
    let queries = sampling_locations.dims()[1];
    let primitives = (
        value.clone().try_into_primitive::<Cube>(),
        sampling_locations.clone().try_into_primitive::<Cube>(),
        attention_weights.clone().try_into_primitive::<Cube>(),
    );
    let (Ok(value_gpu), Ok(locations_gpu), Ok(weights_gpu)) = primitives else {
        return Err((value, sampling_locations, attention_weights));
    };

    let starts = super::deformable::level_start_index(spatial_shapes);
    let table: Vec<i32> = spatial_shapes
        .iter()
        .zip(&starts)
        .flat_map(|(&[h, w], &start)| [h as i32, w as i32, start as i32])
        .collect();
    let table =
        Tensor::<1, Int>::from_data(TensorData::new(table, [spatial_shapes.len() * 3]), &value.device());
    let Ok(table) = table.try_into_primitive::<Cube>() else {
        return Err((value, sampling_locations, attention_weights));
    };

    let output = launch(
        into_contiguous(value_gpu),
        into_contiguous(locations_gpu),
        into_contiguous(weights_gpu),
        into_contiguous(table),
        [batch, queries, heads * head_dim],
    );
    Ok(Tensor::from_primitive::<Cube>(output))
}

fn launch(
    value: CubeTensor,
    locations: CubeTensor,
    weights: CubeTensor,
    table: CubeTensor,
    output_shape: [usize; 3],
) -> CubeTensor {
    let output =
        empty_device_dtype(value.client.clone(), value.device.clone(), output_shape.into(), value.dtype);
    let elements = output_shape.iter().product();
    let cube_dim = CubeDim::new(&value.client, elements);
    let cube_count = calculate_cube_count_elemwise(&value.client, elements, cube_dim);
    let dtypes = [dtype_to_storage_type(value.dtype), dtype_to_storage_type(table.dtype)];
    kernel::deformable_attention_kernel::launch(
        &output.client,
        cube_count,
        cube_dim,
        value.into_tensor_arg(),
        locations.into_tensor_arg(),
        weights.into_tensor_arg(),
        table.into_tensor_arg(),
        output.clone().into_tensor_arg(),
        dtypes,
    );
    output
}
