//! Inference preprocessing: resize, rescale to [0, 1], normalise per channel, lay out as CHW
//! `f32`. Two recipes are presets of [`PreprocessConfig`]; they share the resampling filter and
//! the statistics and differ in three details:
//!
//! | | [`grounding_dino`](PreprocessConfig::grounding_dino) (default) | [`glip`](PreprocessConfig::glip) |
//! |---|---|---|
//! | reference | transformers' `GroundingDinoImageProcessor` | GLIP's test transform (maskrcnn-benchmark `Resize`, `ToTensor`, BGR ×255, `Normalize`) |
//! | channel order | RGB | BGR |
//! | output size | [`SizeRule::Transformers`] | [`SizeRule::RoundedShortSide`] |
//! | batch padding | to the largest image ([`crate::batch::pad_batch`]) | up to a multiple of 32 ([`crate::batch::pad_batch_divisible`]) |
//!
//! GLIP's `PIXEL_MEAN` [103.530, 116.280, 123.675] and `PIXEL_STD` [57.375, 57.120, 58.395] act
//! on 0–255 BGR values; divided by 255 they are the ImageNet statistics in reverse order, so both
//! recipes normalise `[0, 1]` values by the same numbers, each in its own channel order.
//!
//! The resize is PIL's `BILINEAR` ([`resize_bilinear`]), which both references use (transformers'
//! PIL backend; torchvision's `F.resize` on a PIL image in GLIP), reproduced to the last bit.

use glint_core::geometry::{BoxCxcywh, BoxXyxy};
use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::error::DataError;

/// ImageNet channel means (RGB), the normalisation every supported backbone was trained with.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations (RGB).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// The largest image side a configuration may ask for (`shortest_edge`, `longest_edge`, training
/// scales). Far above any detector's input (800–1333); a larger value is a typo, and would
/// allocate gigabytes before anything else failed.
pub const MAX_SIDE: u32 = 16384;

/// The file of a glint-trained model directory that holds its [`PreprocessConfig`] (JSON).
pub const PREPROCESS_FILE: &str = "glint_preprocess.json";

/// An image size in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ImageSize {
    pub width: u32,
    pub height: u32,
}

impl ImageSize {
    pub const fn new(width: u32, height: u32) -> Self {
        Self { width, height }
    }

    /// The size of an image.
    pub fn of(image: &RgbImage) -> Self {
        Self::new(image.width(), image.height())
    }
}

/// How images are resized and normalised before the model sees them (see the module docs for
/// the two presets).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PreprocessConfig {
    /// Target length of the short side (800 for GLIP and Grounding DINO), 1..=[`MAX_SIDE`].
    pub shortest_edge: u32,
    /// Upper bound on the long side (1333), `shortest_edge..=`[`MAX_SIDE`].
    pub longest_edge: u32,
    /// How the output size is rounded to whole pixels.
    pub size_rule: SizeRule,
    /// Order of the colour channels in the tensor.
    pub channel_order: ChannelOrder,
    /// Per-channel mean subtracted after rescaling to [0, 1], in `channel_order`.
    pub mean: [f32; 3],
    /// Per-channel standard deviation divided by after subtracting the mean, in `channel_order`.
    pub std: [f32; 3],
}

impl Default for PreprocessConfig {
    fn default() -> Self {
        Self {
            shortest_edge: 800,
            longest_edge: 1333,
            size_rule: SizeRule::Transformers,
            channel_order: ChannelOrder::Rgb,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
        }
    }
}

/// A normalised image as a CHW `f32` tensor (3 channels, in the config's [`ChannelOrder`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ImageTensor {
    /// `3 * height * width` values, channel-major then row-major.
    pub data: Vec<f32>,
    pub height: usize,
    pub width: usize,
}

impl ImageTensor {
    /// Number of channels (colour images only).
    pub const CHANNELS: usize = 3;

    /// The value at channel `c`, row `y`, column `x`, or `None` outside the tensor.
    pub fn get(&self, c: usize, y: usize, x: usize) -> Option<f32> {
        if c >= Self::CHANNELS || y >= self.height || x >= self.width {
            return None;
        }
        self.data.get((c * self.height + y) * self.width + x).copied()
    }
}

/// A preprocessed image plus what is needed to map boxes back to the original image.
#[derive(Clone, Debug, PartialEq)]
pub struct PreprocessedImage {
    pub tensor: ImageTensor,
    /// Size of the image before resizing (after EXIF orientation).
    pub original_size: ImageSize,
    /// Size of `tensor` (before any batch padding).
    pub resized_size: ImageSize,
}

impl PreprocessedImage {
    /// A pixel box in the resized image → pixels of the original image.
    pub fn box_to_original(&self, b: BoxXyxy) -> BoxXyxy {
        let (sx, sy) = scale_between(self.resized_size, self.original_size);
        b.scale(sx, sy)
    }

    /// A pixel box in the original image → pixels of the resized image.
    pub fn box_to_resized(&self, b: BoxXyxy) -> BoxXyxy {
        let (sx, sy) = scale_between(self.original_size, self.resized_size);
        b.scale(sx, sy)
    }

    /// A box as detector heads predict it (cxcywh normalised by the unpadded image) → pixels
    /// of the original image. Normalised coordinates do not change with resizing, so this is
    /// a denormalisation by the original size (as transformers' post-processing does).
    pub fn normalized_box_to_original(&self, b: BoxCxcywh) -> BoxXyxy {
        b.to_xyxy().denormalize(self.original_size.width as f32, self.original_size.height as f32)
    }
}

/// Per-axis factors taking coordinates in `from` pixels to `to` pixels.
fn scale_between(from: ImageSize, to: ImageSize) -> (f32, f32) {
    let ratio = |to: u32, from: u32| if from == 0 { 0.0 } else { to as f32 / from as f32 };
    (ratio(to.width, from.width), ratio(to.height, from.height))
}

impl PreprocessConfig {
    /// transformers' `GroundingDinoImageProcessor`: short side 800, long side at most 1333, RGB,
    /// ImageNet mean / std, sizes by [`SizeRule::Transformers`]. Same as `Default`.
    pub fn grounding_dino() -> Self {
        Self::default()
    }

    /// GLIP's test transform: short side 800 (`MIN_SIZE_TEST`), long side at most 1333
    /// (`MAX_SIZE_TEST`), BGR, `PIXEL_MEAN` / `PIXEL_STD` (the ImageNet statistics ×255 in BGR
    /// order, here on the [0, 1] scale), sizes by [`SizeRule::RoundedShortSide`]. Batches are
    /// padded to a multiple of 32 by [`crate::batch::pad_batch_divisible`]. This is the
    /// transform of GLIP's evaluation (`build_transforms(cfg, is_train=False)`); its `GLIPDemo`
    /// class instead resizes the short side only, without the long-side cap.
    pub fn glip() -> Self {
        let bgr = |[r, g, b]: [f32; 3]| [b, g, r];
        Self {
            size_rule: SizeRule::RoundedShortSide,
            channel_order: ChannelOrder::Bgr,
            mean: bgr(IMAGENET_MEAN),
            std: bgr(IMAGENET_STD),
            ..Self::default()
        }
    }

    /// Checks that every field is usable; [`PreprocessConfig::preprocess`] calls it first.
    pub fn validate(&self) -> Result<(), DataError> {
        let invalid = |message: String| Err(DataError::Invalid(format!("preprocessing config: {message}")));
        for (name, side) in [("shortest_edge", self.shortest_edge), ("longest_edge", self.longest_edge)] {
            if !(1..=MAX_SIDE).contains(&side) {
                return invalid(format!("{name} must be in 1..={MAX_SIDE}, got {side}"));
            }
        }
        if self.longest_edge < self.shortest_edge {
            return invalid(format!(
                "longest_edge ({}) must be at least shortest_edge ({})",
                self.longest_edge, self.shortest_edge
            ));
        }
        if let Some(i) = self.mean.iter().position(|m| !m.is_finite()) {
            return invalid(format!("mean[{i}] must be finite, got {}", self.mean[i]));
        }
        if let Some(i) = self.std.iter().position(|&s| s == 0.0 || !s.is_finite()) {
            return invalid(format!("std[{i}] must be finite and non-zero, got {}", self.std[i]));
        }
        Ok(())
    }

    /// The size an image of `size` is resized to.
    pub fn output_size(&self, size: ImageSize) -> ImageSize {
        self.size_rule.output_size(size, self.shortest_edge, self.longest_edge)
    }

    /// Resizes, rescales and normalises one image. An invalid config or an empty image is an
    /// error.
    pub fn preprocess(&self, image: &RgbImage) -> Result<PreprocessedImage, DataError> {
        self.validate()?;
        let original_size = ImageSize::of(image);
        if original_size.width == 0 || original_size.height == 0 {
            return Err(DataError::Invalid("cannot preprocess an empty (0-pixel) image".into()));
        }
        let resized_size = self.output_size(original_size);
        let resized = resize_bilinear(image, resized_size);
        Ok(PreprocessedImage {
            tensor: normalize(&resized, self.channel_order, self.mean, self.std),
            original_size,
            resized_size,
        })
    }
}

/// The order of the colour channels in the tensor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    /// Red, green, blue (Grounding DINO, and torchvision / transformers models in general).
    #[default]
    Rgb,
    /// Blue, green, red (GLIP and other maskrcnn-benchmark / Detectron models, which were
    /// trained on OpenCV-decoded images).
    Bgr,
}

impl ChannelOrder {
    /// For each tensor channel, the RGB channel it holds.
    pub const fn rgb_indices(self) -> [usize; 3] {
        match self {
            Self::Rgb => [0, 1, 2],
            Self::Bgr => [2, 1, 0],
        }
    }
}

/// How the resized size is rounded to whole pixels. Both rules scale the image uniformly so its
/// short side becomes `shortest_edge`, unless the long side would then exceed `longest_edge`;
/// they differ only in that capped case, by up to half the aspect ratio in pixels of the long
/// side (a pixel or so for ordinary photos).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SizeRule {
    /// transformers' image processors: when the long side caps the scale, the long side is
    /// computed from the capped short side *before* rounding, so it lands on (about)
    /// `longest_edge`.
    #[default]
    Transformers,
    /// DETR-style code such as GLIP's maskrcnn-benchmark `Resize.get_size`: the long side is
    /// computed from the short side *after* rounding, so it can fall a little short of or
    /// beyond `longest_edge` (3000×1000 at 800 / 1333 gives 1332×444, transformers 1333×444).
    RoundedShortSide,
}

impl SizeRule {
    /// The size `size` is resized to for a short-side target `shortest_edge` and a long-side cap
    /// `longest_edge`.
    ///
    /// 1. The short side's new length `s` is `shortest_edge`; but if that would make the long
    ///    side longer than `longest_edge` (`long / short × shortest_edge > longest_edge`), the
    ///    scale is set by the long side instead: `s = longest_edge × short / long`, and the short
    ///    side gets `s` rounded to the nearest integer, ties to even (Python's `round`).
    /// 2. An image whose short side already has that length is left as it is.
    /// 3. Otherwise the long side is `s' × long / short` truncated toward zero (Python's `int`),
    ///    where `s'` is the unrounded `s` ([`SizeRule::Transformers`]) or the rounded one
    ///    ([`SizeRule::RoundedShortSide`]).
    ///
    /// The `f64` operations are those of the references, in the same order (the cap test as
    /// `long / short × shortest_edge`, the long side as `(s' × long) / short`), so even sizes at
    /// a rounding boundary agree exactly. Sides are at least 1 (the references give 0 for
    /// absurd aspect ratios); an empty `size` is returned unchanged.
    pub fn output_size(self, size: ImageSize, shortest_edge: u32, longest_edge: u32) -> ImageSize {
        if size.width == 0 || size.height == 0 {
            return size;
        }
        let short = f64::from(size.width.min(size.height));
        let long = f64::from(size.width.max(size.height));

        // Step 1: the short side's new length, unrounded and rounded.
        let capped_by_long_side = long / short * f64::from(shortest_edge) > f64::from(longest_edge);
        let exact_short = if capped_by_long_side {
            f64::from(longest_edge) * short / long
        } else {
            f64::from(shortest_edge)
        };
        let new_short = exact_short.round_ties_even();

        // Step 2.
        if new_short == short {
            return size;
        }

        // Step 3.
        let long_from = match self {
            Self::Transformers => exact_short,
            Self::RoundedShortSide => new_short,
        };
        let new_long = (long_from * long / short).trunc();
        // Float → int casts saturate, so nothing here can wrap.
        let (short_px, long_px) = ((new_short as u32).max(1), (new_long as u32).max(1));
        if size.width < size.height {
            ImageSize::new(short_px, long_px)
        } else {
            ImageSize::new(long_px, short_px)
        }
    }
}

/// [`SizeRule::Transformers`]'s output size (the default rule; see [`SizeRule::output_size`]).
pub fn resize_output_size(size: ImageSize, shortest_edge: u32, longest_edge: u32) -> ImageSize {
    SizeRule::Transformers.output_size(size, shortest_edge, longest_edge)
}

/// Resizes with the algorithm of PIL's `Image.resize(size, Image.BILINEAR)`, giving the same
/// pixels.
///
/// The resampling is separable: each row is resampled to the new width and each column to the new
/// height, in two passes whose intermediate image is rounded to 8 bits. Each output sample is a
/// weighted mean of the input samples under a triangle (tent) kernel (see `tent_taps`) whose
/// weights are quantised to fixed point. The pass order changes a few pixels by one level, so it
/// follows Pillow 13: columns first when the height loses more than twice as many pixels as the
/// width, rows first otherwise (Pillow ≤ 12 always did rows first).
pub fn resize_bilinear(image: &RgbImage, size: ImageSize) -> RgbImage {
    let (in_width, in_height) = (image.width() as usize, image.height() as usize);
    let (width, height) = (size.width as usize, size.height as usize);
    if width == 0 || height == 0 || in_width == 0 || in_height == 0 {
        return RgbImage::new(size.width, size.height);
    }
    let source = image.as_raw();
    let columns_first = in_height.saturating_sub(height) > 2 * in_width.saturating_sub(width);
    let pixels = match (width != in_width, height != in_height) {
        (false, false) => source.clone(),
        (true, false) => resample_rows(source, in_width, in_height, width),
        (false, true) => resample_columns(source, in_width, in_height, height),
        (true, true) if columns_first => {
            resample_rows(&resample_columns(source, in_width, in_height, height), in_width, height, width)
        }
        (true, true) => {
            resample_columns(&resample_rows(source, in_width, in_height, width), width, in_height, height)
        }
    };
    // The buffer holds exactly width × height × 3 bytes by construction.
    RgbImage::from_raw(size.width, size.height, pixels)
        .unwrap_or_else(|| RgbImage::new(size.width, size.height))
}

/// Fraction bits of the fixed-point filter weights: 22, Pillow's choice for 8-bit images (8 bits
/// of pixel value and 2 of headroom leave 22 in an `i32`). Bit-exact results need the same.
const WEIGHT_BITS: u32 = 22;

/// How one output sample along an axis is made: a weighted sum of consecutive input samples.
struct Taps {
    /// Index of the first contributing input sample.
    start: usize,
    /// Fixed-point weights ([`WEIGHT_BITS`] fraction bits) of the inputs `start`, `start + 1`, …
    weights: Vec<i32>,
}

/// The taps taking an axis of `in_len` samples to `out_len` samples, one per output sample.
///
/// Output sample `o` covers input coordinates around `c = (o + ½) · in_len / out_len`; input
/// sample `i` sits at `i + ½`. Its weight is the tent `max(0, 1 − |d|)` of their distance `d`
/// measured in half-widths `h = max(1, in_len / out_len)`: upscaling (`h = 1`) interpolates
/// linearly between the two nearest inputs, downscaling widens the tent to the output pixel's
/// footprint so that every input it covers is averaged (antialiasing). The weights of each output
/// are normalised to sum to 1, then quantised.
///
/// Three choices are fixed by agreeing with Pillow to the last bit: the window is the inputs from
/// `c − h` to `c + h`, each end rounded to the nearest integer, halves up (it contains every
/// input of non-zero weight, and the pixel under `c`, so the total is positive); `d` is evaluated
/// as `(i − c + ½) × (1 / h)`; a weight is quantised by adding ½ and truncating.
fn tent_taps(in_len: usize, out_len: usize) -> Vec<Taps> {
    let scale = in_len as f64 / out_len as f64;
    let half_width = scale.max(1.0);
    let per_half_width = 1.0 / half_width;
    let tent = |d: f64| (1.0 - d.abs()).max(0.0);
    let nearest_halves_up = |x: f64| (x + 0.5).floor();
    let one = f64::from(1u32 << WEIGHT_BITS);
    (0..out_len)
        .map(|o| {
            let centre = (o as f64 + 0.5) * scale;
            // Negative window starts saturate to 0 in the cast.
            let start = nearest_halves_up(centre - half_width) as usize;
            let end = (nearest_halves_up(centre + half_width) as usize).min(in_len).max(start);
            let raw: Vec<f64> =
                (start..end).map(|i| tent((i as f64 - centre + 0.5) * per_half_width)).collect();
            let total: f64 = raw.iter().sum();
            let weights = raw.iter().map(|w| (w / total * one + 0.5) as i32).collect();
            Taps { start, weights }
        })
        .collect()
}

/// Where the samples of one line (a row or a column) of an interleaved RGB buffer are.
#[derive(Clone, Copy)]
struct LineLayout {
    /// Bytes from the start of one line to the start of the next.
    line_step: usize,
    /// Bytes from one sample of a line to the next.
    sample_step: usize,
}

/// Resamples each of `lines` lines of `src` with `taps`, writing 8-bit samples laid out as `dst_layout`.
fn resample_lines(
    src: &[u8],
    src_layout: LineLayout,
    lines: usize,
    taps: &[Taps],
    dst_layout: LineLayout,
) -> Vec<u8> {
    let mut out = vec![0u8; lines * taps.len() * 3];
    // Adding half of the fixed-point unit before the shift rounds to the nearest level.
    let half = 1i32 << (WEIGHT_BITS - 1);
    for line in 0..lines {
        for (o, tap) in taps.iter().enumerate() {
            let first = line * src_layout.line_step + tap.start * src_layout.sample_step;
            let target = line * dst_layout.line_step + o * dst_layout.sample_step;
            for channel in 0..3 {
                let mut sum = half;
                for (k, &weight) in tap.weights.iter().enumerate() {
                    sum += i32::from(src[first + k * src_layout.sample_step + channel]) * weight;
                }
                // Quantised weights can sum to slightly more than 1.
                out[target + channel] = (sum >> WEIGHT_BITS).clamp(0, 255) as u8;
            }
        }
    }
    out
}

/// Resamples every row of a `width × height` RGB buffer to `new_width` pixels.
fn resample_rows(src: &[u8], width: usize, height: usize, new_width: usize) -> Vec<u8> {
    let row = |width: usize| LineLayout { line_step: 3 * width, sample_step: 3 };
    resample_lines(src, row(width), height, &tent_taps(width, new_width), row(new_width))
}

/// Resamples every column of a `width × height` RGB buffer to `new_height` pixels.
fn resample_columns(src: &[u8], width: usize, height: usize, new_height: usize) -> Vec<u8> {
    let column = LineLayout { line_step: 3, sample_step: 3 * width };
    resample_lines(src, column, width, &tent_taps(height, new_height), column)
}

/// Rescales to [0, 1], reorders the channels, subtracts `mean`, divides by `std`, and lays the
/// image out as CHW. `mean` and `std` are per tensor channel, i.e. in `order`.
pub fn normalize(image: &RgbImage, order: ChannelOrder, mean: [f32; 3], std: [f32; 3]) -> ImageTensor {
    let (width, height) = (image.width() as usize, image.height() as usize);
    let plane = width * height;
    let mut data = vec![0f32; 3 * plane];
    for (i, pixel) in image.pixels().enumerate() {
        for (c, rgb_index) in order.rgb_indices().into_iter().enumerate() {
            let value = f64::from(pixel.0[rgb_index]) / 255.0;
            data[c * plane + i] = ((value - f64::from(mean[c])) / f64::from(std[c])) as f32;
        }
    }
    ImageTensor { data, height, width }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_the_grounding_dino_recipe() {
        let config = PreprocessConfig::default();
        assert_eq!((config.shortest_edge, config.longest_edge), (800, 1333));
        // 640×480 → short side 800, long side 1066 (truncated from 1066.67).
        assert_eq!(config.output_size(ImageSize::new(640, 480)), ImageSize::new(1066, 800));
        // A 3:1 panorama is capped by the long side.
        assert_eq!(config.output_size(ImageSize::new(3000, 1000)), ImageSize::new(1333, 444));
    }

    #[test]
    fn config_reads_partial_json() {
        let config: PreprocessConfig = serde_json::from_str(r#"{"shortest_edge": 512}"#).unwrap();
        assert_eq!(config, PreprocessConfig { shortest_edge: 512, ..Default::default() });
    }

    #[test]
    fn constant_image_stays_constant_after_resizing() {
        let image = RgbImage::from_pixel(13, 7, image::Rgb([10, 128, 250]));
        for size in [ImageSize::new(40, 3), ImageSize::new(5, 21), ImageSize::new(1, 1)] {
            let out = resize_bilinear(&image, size);
            assert_eq!(ImageSize::of(&out), size);
            assert!(out.pixels().all(|p| p.0 == [10, 128, 250]));
        }
    }

    #[test]
    fn boxes_map_back_to_original_pixels() {
        let image = RgbImage::new(200, 100);
        let config = PreprocessConfig { shortest_edge: 50, longest_edge: 1000, ..Default::default() };
        let pre = config.preprocess(&image).unwrap();
        assert_eq!(pre.resized_size, ImageSize::new(100, 50));
        assert_eq!((pre.tensor.width, pre.tensor.height, pre.tensor.data.len()), (100, 50, 3 * 100 * 50));
        let b = BoxXyxy::new(10.0, 5.0, 30.0, 25.0);
        assert_eq!(pre.box_to_original(b), BoxXyxy::new(20.0, 10.0, 60.0, 50.0));
        assert_eq!(pre.box_to_resized(pre.box_to_original(b)), b);
        let n = BoxCxcywh::new(0.5, 0.5, 0.5, 0.25);
        assert_eq!(pre.normalized_box_to_original(n), BoxXyxy::new(50.0, 37.5, 150.0, 62.5));
    }

    #[test]
    fn upscaling_interpolates_linearly_between_neighbours() {
        // Output centres at 0.25, 0.75, 1.25, 1.75 input pixels; inputs centred at 0.5 and 1.5.
        let image = RgbImage::from_fn(2, 1, |x, _| image::Rgb([[0, 200][x as usize]; 3]));
        let out = resize_bilinear(&image, ImageSize::new(4, 1));
        assert_eq!(out.pixels().map(|p| p.0[0]).collect::<Vec<_>>(), [0, 50, 150, 200]);
    }

    #[test]
    fn downscaling_averages_the_covered_inputs() {
        // Halving: the tent widens to 2 input pixels, so output 0 (centred at 1.0) weighs
        // inputs 0, 1, 2 by 0.75, 0.75, 0.25: (0·0.75 + 100·0.75 + 200·0.25) / 1.75 = 71.4.
        let image = RgbImage::from_fn(4, 1, |x, _| image::Rgb([[0, 100, 200, 100][x as usize]; 3]));
        let out = resize_bilinear(&image, ImageSize::new(2, 1));
        assert_eq!(out.get_pixel(0, 0).0, [71; 3]);
        // The same along columns.
        let column = image::imageops::rotate90(&image);
        assert_eq!(resize_bilinear(&column, ImageSize::new(1, 2)).get_pixel(0, 0).0, [71; 3]);
    }

    #[test]
    fn size_rules_differ_only_when_the_long_side_caps() {
        let glip = PreprocessConfig::glip();
        let dino = PreprocessConfig::grounding_dino();
        assert_eq!(dino, PreprocessConfig::default());
        // Capped: 1333 × 1000 / 3000 = 444.33 → 444; the long side from 444.33 or from 444.
        assert_eq!(dino.output_size(ImageSize::new(3000, 1000)), ImageSize::new(1333, 444));
        assert_eq!(glip.output_size(ImageSize::new(3000, 1000)), ImageSize::new(1332, 444));
        assert_eq!(glip.output_size(ImageSize::new(1000, 3000)), ImageSize::new(444, 1332));
        // Not capped: identical.
        for size in [ImageSize::new(640, 480), ImageSize::new(480, 640), ImageSize::new(800, 900)] {
            assert_eq!(glip.output_size(size), dino.output_size(size));
        }
        // Round half to even: 48 × 25 / 96 = 12.5 → 12.
        assert_eq!(
            SizeRule::RoundedShortSide.output_size(ImageSize::new(96, 25), 32, 48),
            ImageSize::new(46, 12)
        );
    }

    #[test]
    fn glip_preset_is_bgr_with_the_same_statistics() {
        let glip = PreprocessConfig::glip();
        assert_eq!(glip.channel_order, ChannelOrder::Bgr);
        // GLIP's PIXEL_MEAN / PIXEL_STD (0–255, BGR) divided by 255.
        let close = |a: [f32; 3], b: [f32; 3]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6);
        assert!(close(glip.mean, [103.530 / 255.0, 116.280 / 255.0, 123.675 / 255.0]));
        assert!(close(glip.std, [57.375 / 255.0, 57.120 / 255.0, 58.395 / 255.0]));
        // Channel 0 holds blue: (250 / 255 − 0.406) / 0.225.
        let pre = glip.preprocess(&RgbImage::from_pixel(3, 2, image::Rgb([10, 128, 250]))).unwrap();
        let blue = pre.tensor.get(0, 1, 2).unwrap();
        assert!((blue - (250.0 / 255.0 - 0.406) / 0.225).abs() < 1e-5, "{blue}");
        let red = pre.tensor.get(2, 0, 0).unwrap();
        assert!((red - (10.0 / 255.0 - 0.485) / 0.229).abs() < 1e-5, "{red}");
        let json = serde_json::to_string(&glip).unwrap();
        assert!(
            json.contains(r#""channel_order":"bgr""#) && json.contains(r#""size_rule":"rounded_short_side""#)
        );
        assert_eq!(serde_json::from_str::<PreprocessConfig>(&json).unwrap(), glip);
    }

    #[test]
    fn bad_config_and_empty_image_are_errors() {
        let image = RgbImage::new(4, 4);
        let cases = [
            (
                PreprocessConfig { shortest_edge: 0, ..Default::default() },
                "shortest_edge must be in 1..=16384, got 0",
            ),
            (
                PreprocessConfig { longest_edge: 1_333_000, ..Default::default() },
                "longest_edge must be in 1..=16384, got 1333000",
            ),
            (
                PreprocessConfig { shortest_edge: 1333, longest_edge: 800, ..Default::default() },
                "longest_edge (800) must be at least shortest_edge (1333)",
            ),
            (PreprocessConfig { std: [0.2, 0.0, 0.2], ..Default::default() }, "std[1] must be finite"),
            (PreprocessConfig { mean: [0.2, 0.2, f32::NAN], ..Default::default() }, "mean[2] must be finite"),
        ];
        for (config, expected) in cases {
            let message = config.preprocess(&image).unwrap_err().to_string();
            assert!(message.starts_with("preprocessing config: "), "{message}");
            assert!(message.contains(expected), "{message}");
            assert!(!message.contains('\n'));
        }
        let typo: PreprocessConfig = serde_json::from_str(r#"{"shortest_edge": 8000000}"#).unwrap();
        assert!(typo.validate().is_err());
        assert!(PreprocessConfig::default().preprocess(&RgbImage::new(0, 4)).is_err());
    }
}
