//! Batching: images of different sizes padded into one `[B, 3, H, W]` tensor plus a pixel mask.
//!
//! As transformers' Grounding DINO processor does with `do_pad`: every image is placed at the
//! top-left and zero-padded at the bottom and right up to the largest height and width of the
//! batch; the mask is 1 on real pixels and 0 on padding. GLIP additionally rounds the padded
//! size up to a multiple of 32 (its `size_divisibility`), which [`pad_batch_divisible`] offers.

use crate::error::DataError;
use crate::preprocess::{ImageSize, ImageTensor, PreprocessedImage};

/// A padded batch of images.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageBatch {
    /// `batch * 3 * height * width` values, layout `[B, 3, H, W]`; padding is 0.
    pub data: Vec<f32>,
    /// `batch * height * width` entries, layout `[B, H, W]`: 1 = real pixel, 0 = padding.
    pub pixel_mask: Vec<u8>,
    pub batch: usize,
    /// Padded height and width, shared by every image of the batch.
    pub height: usize,
    pub width: usize,
    /// Each image's own (unpadded) size, in batch order.
    pub sizes: Vec<ImageSize>,
}

impl ImageBatch {
    /// Pads preprocessed images (see [`pad_batch`]).
    pub fn from_preprocessed(images: &[PreprocessedImage]) -> Result<Self, DataError> {
        pad_batch(images.iter().map(|p| &p.tensor))
    }
}

/// Pads images to the largest height and width among them (bottom / right zero padding).
/// An empty list, or a tensor whose data does not match its shape, is an error.
pub fn pad_batch<'a>(images: impl IntoIterator<Item = &'a ImageTensor>) -> Result<ImageBatch, DataError> {
    pad_batch_divisible(images, 1)
}

/// Like [`pad_batch`], with the padded height and width rounded up to a multiple of
/// `size_divisibility` (GLIP uses 32; 0 or 1 means no rounding).
pub fn pad_batch_divisible<'a>(
    images: impl IntoIterator<Item = &'a ImageTensor>,
    size_divisibility: usize,
) -> Result<ImageBatch, DataError> {
    let images: Vec<&ImageTensor> = images.into_iter().collect();
    if images.is_empty() {
        return Err(DataError::Invalid("cannot batch an empty list of images".into()));
    }
    for (i, image) in images.iter().enumerate() {
        let expected = ImageTensor::CHANNELS * image.height * image.width;
        if image.data.len() != expected {
            return Err(DataError::Invalid(format!(
                "image {i} of the batch has {} values, expected 3 × {} × {} = {expected}",
                image.data.len(),
                image.height,
                image.width
            )));
        }
    }
    let round_up =
        |n: usize| if size_divisibility > 1 { n.div_ceil(size_divisibility) * size_divisibility } else { n };
    let height = round_up(images.iter().map(|t| t.height).max().unwrap_or(0));
    let width = round_up(images.iter().map(|t| t.width).max().unwrap_or(0));

    let plane = height * width;
    let mut data = vec![0f32; images.len() * ImageTensor::CHANNELS * plane];
    let mut pixel_mask = vec![0u8; images.len() * plane];
    for (b, image) in images.iter().enumerate() {
        for c in 0..ImageTensor::CHANNELS {
            for y in 0..image.height {
                let src = (c * image.height + y) * image.width;
                let dst = ((b * ImageTensor::CHANNELS + c) * height + y) * width;
                data[dst..dst + image.width].copy_from_slice(&image.data[src..src + image.width]);
            }
        }
        for y in 0..image.height {
            let dst = b * plane + y * width;
            pixel_mask[dst..dst + image.width].fill(1);
        }
    }
    let sizes = images.iter().map(|t| ImageSize::new(t.width as u32, t.height as u32)).collect();
    Ok(ImageBatch { data, pixel_mask, batch: images.len(), height, width, sizes })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(height: usize, width: usize, value: f32) -> ImageTensor {
        ImageTensor { data: vec![value; 3 * height * width], height, width }
    }

    #[test]
    fn pads_bottom_right_with_mask() {
        let batch = pad_batch([&tensor(2, 3, 1.0), &tensor(3, 1, 2.0)]).unwrap();
        assert_eq!((batch.batch, batch.height, batch.width), (2, 3, 3));
        assert_eq!(batch.data.len(), 2 * 3 * 9);
        #[rustfmt::skip]
        assert_eq!(batch.pixel_mask, [
            1, 1, 1,  1, 1, 1,  0, 0, 0,
            1, 0, 0,  1, 0, 0,  1, 0, 0,
        ]);
        // Channel 2 of image 0: real values in the top two rows, zeros below.
        assert_eq!(&batch.data[18..27], &[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]);
        assert_eq!(batch.sizes, [ImageSize::new(3, 2), ImageSize::new(1, 3)]);
    }

    #[test]
    fn divisibility_rounds_the_padded_size_up() {
        let batch = pad_batch_divisible([&tensor(33, 20, 1.0)], 32).unwrap();
        assert_eq!((batch.height, batch.width), (64, 32));
        assert_eq!(batch.pixel_mask.iter().filter(|&&m| m == 1).count(), 33 * 20);
    }

    #[test]
    fn empty_or_inconsistent_input_is_an_error() {
        assert!(pad_batch(std::iter::empty()).is_err());
        let bad = ImageTensor { data: vec![0.0; 5], height: 2, width: 2 };
        assert!(pad_batch([&bad]).is_err());
    }
}
