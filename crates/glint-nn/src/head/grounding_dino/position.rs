//! Sine position embeddings of Grounding DINO: for feature-map pixels (DETR's normalised sine
//! embedding) and for coordinates (text position ids, reference boxes).
//!
//! Both interleave `sin` at even and `cos` at odd channels of `position / dim_t`, where
//! `dim_t[j] = temperature ^ (2 * floor(j / 2) / features)`.

use std::f32::consts::PI;

use burn::tensor::{Device, Tensor, TensorData};

/// `dim_t` for `features` channels.
fn frequencies(features: usize, temperature: f32) -> Vec<f32> {
    (0..features).map(|j| temperature.powf((2 * (j / 2)) as f32 / features as f32)).collect()
}

/// `sin` at even channels, `cos` at odd ones.
fn interleave(angle: f32, channel: usize) -> f32 {
    if channel.is_multiple_of(2) { angle.sin() } else { angle.cos() }
}

/// The position embedding `[d_model, height, width]` of an unpadded `height × width` map:
/// the first `d_model / 2` channels encode the row, the rest the column, each as
/// `(index + 1) / (size + 1e-6) * 2π` (the reference's cumulative sum of the pixel mask,
/// normalised by its last value).
pub fn map_position_embedding(
    height: usize,
    width: usize,
    d_model: usize,
    temperature: f32,
    device: &Device,
) -> Tensor<3> {
    let half = d_model / 2;
    let dim_t = frequencies(half, temperature);
    let normalise = |index: usize, size: usize| (index + 1) as f32 / (size as f32 + 1e-6) * (2.0 * PI);
    let mut data = vec![0.0f32; d_model * height * width];
    for c in 0..half {
        for y in 0..height {
            let angle = normalise(y, height) / dim_t[c];
            let value = interleave(angle, c);
            data[(c * height + y) * width..(c * height + y + 1) * width].fill(value);
        }
        for x in 0..width {
            let value = interleave(normalise(x, width) / dim_t[c], c);
            for y in 0..height {
                data[((half + c) * height + y) * width + x] = value;
            }
        }
    }
    Tensor::from_data(TensorData::new(data, [d_model, height, width]), device)
}

/// Sine embedding of every coordinate of `positions [..., n]` with `features` channels each,
/// concatenated to `[..., n * features]`; with two or more coordinates the first two are
/// swapped (`(x, y, ...)` is embedded as `(y, x, ...)`, DETR's order). Temperature 10000.
pub fn coordinate_embedding<const D: usize>(positions: Tensor<D>, features: usize) -> Tensor<D> {
    let device = positions.device();
    let dims = positions.dims();
    let coords = dims[D - 1];
    let dim_t = Tensor::<1>::from_data(TensorData::new(frequencies(features, 10000.0), [features]), &device);
    let odd: Vec<f32> = (0..features).map(|j| (j % 2) as f32).collect();
    let odd = Tensor::<1>::from_data(TensorData::new(odd, [features]), &device);

    let mut broadcast = [1usize; D];
    broadcast[D - 1] = features;
    let dim_t = dim_t.reshape(broadcast);
    let odd = odd.reshape(broadcast);

    let mut embedded: Vec<Tensor<D>> = (0..coords)
        .map(|c| {
            let angle = positions.clone().narrow(D - 1, c, 1).mul_scalar(2.0 * PI) / dim_t.clone();
            let even = odd.clone().neg().add_scalar(1.0);
            angle.clone().sin() * even + angle.cos() * odd.clone()
        })
        .collect();
    if coords >= 2 {
        embedded.swap(0, 1);
    }
    Tensor::cat(embedded, D - 1)
}
