//! Training augmentation: random resize, horizontal flip, random crop, on an image and its
//! [`Sample`] together so boxes, phrases and spans stay consistent.
//!
//! [`TrainTransforms`] composes them as Grounding DINO (and DETR before it) trains: flip with
//! probability 0.5; then either a multi-scale resize, or a resize to a small scale, a random
//! crop and the multi-scale resize. Randomness comes only from the caller's `Rng`, so a seeded
//! generator gives the same augmentation every run.
//!
//! A flip mirrors the boxes and, as GLIP does, swaps the words "left" and "right" in the caption
//! (and in phrase texts); the words differ in length, so every phrase span is recomputed. Unlike
//! GLIP's plain substring replace, only whole words are swapped ("bright" stays "bright") and
//! the case is kept ("Left" → "Right").
//!
//! Every transform returns the new image and sample; `sample.width` / `sample.height` follow the
//! image. An annotated object area ([`crate::Region::area`]) scales with a resize and survives
//! a flip; a crop that cuts into a box forgets it (`None`: how much of the object is still
//! visible is unknown, so the clipped box area stands in), a box the crop leaves whole keeps it. Regions index phrases, and phrases are never removed, so a crop that drops a box leaves
//! its phrase in the caption as a negative.

use std::ops::Range;

use glint_core::geometry::BoxXyxy;
use image::RgbImage;
use rand::Rng;
use rand::seq::IndexedRandom;
use serde::{Deserialize, Serialize};

use crate::error::DataError;
use crate::preprocess::{ImageSize, resize_bilinear, resize_output_size};
use crate::sample::{Phrase, Sample};

/// The training augmentation pipeline (Grounding DINO's defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainTransforms {
    /// Probability of a horizontal flip.
    pub flip_prob: f64,
    /// Short-side lengths the final resize picks from, uniformly.
    pub scales: Vec<u32>,
    /// Cap on the long side after the final resize.
    pub max_size: u32,
    /// Probability of taking the crop branch (resize to a prescale, crop, then final resize).
    pub crop_prob: f64,
    /// Short-side lengths the image is resized to before cropping (no long-side cap).
    pub crop_prescales: Vec<u32>,
    /// Range of the crop's width and height, in pixels (clamped to the image).
    pub crop_min_size: u32,
    pub crop_max_size: u32,
    /// A cropped box narrower or shorter than this (pixels) is dropped.
    pub min_box_size: f32,
}

impl Default for TrainTransforms {
    fn default() -> Self {
        Self {
            flip_prob: 0.5,
            scales: vec![480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800],
            max_size: 1333,
            crop_prob: 0.5,
            crop_prescales: vec![400, 500, 600],
            crop_min_size: 384,
            crop_max_size: 600,
            min_box_size: 1.0,
        }
    }
}

impl TrainTransforms {
    /// Checks that every field is usable; [`TrainTransforms::apply`] calls it first.
    pub fn validate(&self) -> Result<(), DataError> {
        let invalid = |message: String| Err(DataError::Invalid(format!("train transforms: {message}")));
        for (name, p) in [("flip_prob", self.flip_prob), ("crop_prob", self.crop_prob)] {
            if !(0.0..=1.0).contains(&p) {
                return invalid(format!("{name} must be in [0, 1], got {p}"));
            }
        }
        // Sides are bounded so that a typo is an error rather than a huge allocation.
        let max_side = crate::preprocess::MAX_SIDE;
        let out_of_range = |sizes: &[u32]| sizes.iter().copied().find(|s| !(1..=max_side).contains(s));
        if self.scales.is_empty() {
            return invalid("scales must be a non-empty list of sizes".into());
        }
        if let Some(s) = out_of_range(&self.scales) {
            return invalid(format!("scales must be in 1..={max_side}, got {s}"));
        }
        if let Some(s) = out_of_range(&[self.max_size]) {
            return invalid(format!("max_size must be in 1..={max_side}, got {s}"));
        }
        if self.crop_prob > 0.0 {
            if self.crop_prescales.is_empty() {
                return invalid("crop_prescales must be a non-empty list of sizes".into());
            }
            if let Some(s) = out_of_range(&self.crop_prescales) {
                return invalid(format!("crop_prescales must be in 1..={max_side}, got {s}"));
            }
            if self.crop_min_size == 0 || self.crop_min_size > self.crop_max_size {
                return invalid(format!(
                    "need 0 < crop_min_size ≤ crop_max_size, got {} and {}",
                    self.crop_min_size, self.crop_max_size
                ));
            }
        }
        if !(self.min_box_size >= 0.0 && self.min_box_size.is_finite()) {
            return invalid(format!(
                "min_box_size must be a finite non-negative number, got {}",
                self.min_box_size
            ));
        }
        Ok(())
    }

    /// Applies the pipeline to one image and its sample.
    pub fn apply(
        &self,
        image: RgbImage,
        sample: Sample,
        rng: &mut impl Rng,
    ) -> Result<(RgbImage, Sample), DataError> {
        self.validate()?;
        let (mut image, mut sample) = (image, sample);
        if rng.random_bool(self.flip_prob) {
            (image, sample) = hflip(&image, &sample);
        }
        if rng.random_bool(self.crop_prob) {
            (image, sample) = random_resize(&image, &sample, &self.crop_prescales, u32::MAX, rng);
            (image, sample) = random_size_crop(
                &image,
                &sample,
                self.crop_min_size,
                self.crop_max_size,
                self.min_box_size,
                rng,
            );
        }
        Ok(random_resize(&image, &sample, &self.scales, self.max_size, rng))
    }
}

/// Resizes so the short side is `shortest_edge` and the long side at most `longest_edge`
/// (the inference arithmetic, PIL bilinear); boxes and annotated areas are scaled with the image.
pub fn resize(
    image: &RgbImage,
    sample: &Sample,
    shortest_edge: u32,
    longest_edge: u32,
) -> (RgbImage, Sample) {
    let old = ImageSize::of(image);
    let new = resize_output_size(old, shortest_edge, longest_edge);
    let resized = if new == old { image.clone() } else { resize_bilinear(image, new) };
    let ratio = |new: u32, old: u32| if old == 0 { 1.0 } else { new as f32 / old as f32 };
    let (sx, sy) = (ratio(new.width, old.width), ratio(new.height, old.height));
    let mut sample = sample.clone();
    for region in &mut sample.regions {
        region.bbox = region.bbox.scale(sx, sy);
        region.area = region.area.map(|area| area * sx * sy);
    }
    (sample.width, sample.height) = (new.width, new.height);
    (resized, sample)
}

/// [`resize`] with the short side drawn uniformly from `scales` (unchanged if `scales` is empty).
pub fn random_resize(
    image: &RgbImage,
    sample: &Sample,
    scales: &[u32],
    longest_edge: u32,
    rng: &mut impl Rng,
) -> (RgbImage, Sample) {
    match scales.choose(rng) {
        Some(&short) => resize(image, sample, short, longest_edge),
        None => (image.clone(), sample.clone()),
    }
}

/// Mirrors the image left–right: boxes mirrored and, for grounding data, "left" / "right"
/// swapped in the caption and phrase texts, spans recomputed for the new caption. Detection
/// data (phrases that are categories) keeps its caption: a category named "left hand" stays
/// that category. The swapped caption and phrases are new values for this sample alone;
/// without a "left" / "right" the sample keeps sharing its own.
pub fn hflip(image: &RgbImage, sample: &Sample) -> (RgbImage, Sample) {
    let flipped = image::imageops::flip_horizontal(image);
    let width = image.width() as f32;
    let mut sample = sample.clone();
    for region in &mut sample.regions {
        region.bbox = region.bbox.flip_horizontal(width);
    }
    (sample.width, sample.height) = flipped.dimensions();
    let is_detection_data = sample.phrases.iter().any(|p| p.category_id.is_some());
    if is_detection_data {
        return (flipped, sample);
    }
    let (caption, phrases) = swap_left_right(&sample.caption, &sample.phrases);
    // New values only when something changed: otherwise the sample keeps sharing its
    // dataset's caption and phrases, and other samples are never touched either way.
    if *caption != *sample.caption || *phrases != *sample.phrases {
        (sample.caption, sample.phrases) = (caption.into(), phrases.into());
    }
    (flipped, sample)
}

/// A crop rectangle in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CropRegion {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// Crops to `region` (clamped to the image). Boxes are shifted, clipped to the crop, and
/// dropped when narrower or shorter than `min_box_size` pixels (or empty). A clipped box loses
/// its annotated area (`None`); a box inside the crop keeps it. Phrases are kept.
pub fn crop(image: &RgbImage, sample: &Sample, region: CropRegion, min_box_size: f32) -> (RgbImage, Sample) {
    let x = region.x.min(image.width());
    let y = region.y.min(image.height());
    let width = region.width.min(image.width() - x);
    let height = region.height.min(image.height() - y);
    let cropped = image::imageops::crop_imm(image, x, y, width, height).to_image();
    let (w, h) = (width as f32, height as f32);
    let mut sample = sample.clone();
    sample.regions.retain_mut(|r| {
        let b = r.bbox;
        let shifted = BoxXyxy::new(b.x0 - x as f32, b.y0 - y as f32, b.x1 - x as f32, b.y1 - y as f32);
        r.bbox = shifted.clip(w, h);
        if r.bbox != shifted {
            r.area = None;
        }
        r.bbox.is_valid() && r.bbox.width() >= min_box_size && r.bbox.height() >= min_box_size
    });
    (sample.width, sample.height) = (width, height);
    (cropped, sample)
}

/// DETR's `RandomSizeCrop`: width and height drawn uniformly from
/// `[min_size, min(image side, max_size)]` (clamped to the image), position uniform.
pub fn random_size_crop(
    image: &RgbImage,
    sample: &Sample,
    min_size: u32,
    max_size: u32,
    min_box_size: f32,
    rng: &mut impl Rng,
) -> (RgbImage, Sample) {
    let (img_w, img_h) = image.dimensions();
    let mut side = |len: u32| {
        let hi = len.min(max_size);
        rng.random_range(min_size.min(hi)..=hi)
    };
    let (width, height) = (side(img_w), side(img_h));
    let x = rng.random_range(0..=img_w - width);
    let y = rng.random_range(0..=img_h - height);
    crop(image, sample, CropRegion { x, y, width, height }, min_box_size)
}

/// Swaps the whole words "left" and "right" (any case) in `caption` and in each phrase's text,
/// and moves every phrase span to where its text now is. A span boundary inside a swapped word
/// widens to cover the whole new word.
pub fn swap_left_right(caption: &str, phrases: &[Phrase]) -> (String, Vec<Phrase>) {
    let swapped = SwappedText::new(caption);
    let phrases = phrases
        .iter()
        .map(|p| Phrase {
            text: SwappedText::new(&p.text).text,
            spans: p.spans.iter().map(|s| swapped.map_span(s.clone())).collect(),
            category_id: p.category_id,
        })
        .collect();
    (swapped.text, phrases)
}

/// A text with left/right swapped, and where each old character boundary went.
struct SwappedText {
    text: String,
    /// For each old boundary `0..=len` (in chars): its new position when it starts a span.
    start_of: Vec<usize>,
    /// The same when it ends a span (differs only inside a swapped word).
    end_of: Vec<usize>,
}

impl SwappedText {
    fn new(text: &str) -> Self {
        let chars: Vec<char> = text.chars().collect();
        let mut out = String::with_capacity(text.len() + 8);
        let (mut start_of, mut end_of) = (vec![0; chars.len() + 1], vec![0; chars.len() + 1]);
        let mut new_len = 0;
        let mut i = 0;
        while i < chars.len() {
            if let Some((old_len, replacement)) = swap_at(&chars, i) {
                let new_start = new_len;
                out.push_str(&replacement);
                new_len += replacement.chars().count();
                for k in 0..old_len {
                    start_of[i + k] = new_start;
                    end_of[i + k] = if k == 0 { new_start } else { new_len };
                }
                i += old_len;
            } else {
                (start_of[i], end_of[i]) = (new_len, new_len);
                out.push(chars[i]);
                new_len += 1;
                i += 1;
            }
        }
        (start_of[chars.len()], end_of[chars.len()]) = (new_len, new_len);
        Self { text: out, start_of, end_of }
    }

    fn map_span(&self, span: Range<usize>) -> Range<usize> {
        // Boundaries past the end (a malformed span) move with the end of the text.
        let map = |table: &[usize], at: usize| match table.get(at) {
            Some(&new) => new,
            None => at - (table.len() - 1) + table.last().copied().unwrap_or(0),
        };
        map(&self.start_of, span.start)..map(&self.end_of, span.end)
    }
}

/// If a whole word "left" or "right" starts at `chars[i]`, its length and its replacement.
fn swap_at(chars: &[char], i: usize) -> Option<(usize, String)> {
    let is_word_char = |c: &char| c.is_alphanumeric() || *c == '_';
    if i > 0 && chars.get(i - 1).is_some_and(is_word_char) {
        return None;
    }
    for (word, other) in [("left", "right"), ("right", "left")] {
        let len = word.len();
        let Some(candidate) = chars.get(i..i + len) else { continue };
        let matches = candidate.iter().zip(word.chars()).all(|(c, w)| c.to_ascii_lowercase() == w);
        if !matches || chars.get(i + len).is_some_and(is_word_char) {
            continue;
        }
        let replacement = if candidate.iter().all(|c| c.is_uppercase()) {
            other.to_uppercase()
        } else if candidate[0].is_uppercase() {
            let mut s = other.to_string();
            s[..1].make_ascii_uppercase();
            s
        } else {
            other.to_string()
        };
        return Some((len, replacement));
    }
    None
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::sample::Region;

    /// The caption's text at a char span.
    fn spell(caption: &str, span: &Range<usize>) -> String {
        caption.chars().skip(span.start).take(span.end - span.start).collect()
    }

    /// A phrase whose spans are every occurrence of `text` as found by the test.
    fn phrase(caption: &str, text: &str) -> Phrase {
        let chars: Vec<char> = caption.chars().collect();
        let needle: Vec<char> = text.chars().collect();
        let spans = (0..=chars.len().saturating_sub(needle.len()))
            .filter(|&i| chars[i..i + needle.len()] == needle[..])
            .map(|i| i..i + needle.len())
            .collect();
        Phrase { text: text.into(), spans, category_id: None }
    }

    fn sample(width: u32, height: u32) -> Sample {
        let caption = "the left hand . a Right shoe . bright light . ĉu LEFT?";
        let phrases = vec![
            phrase(caption, "left hand"),
            phrase(caption, "Right shoe"),
            phrase(caption, "bright light"),
            phrase(caption, "LEFT"),
        ];
        let region = |bbox, phrase, area| Region { bbox, phrase, iscrowd: false, area };
        Sample {
            image_path: PathBuf::from("img.png"),
            image_id: 1,
            width,
            height,
            caption: caption.into(),
            phrases: phrases.into(),
            regions: vec![
                region(BoxXyxy::new(2.0, 3.0, 20.0, 15.0), 0, Some(150.0)),
                region(BoxXyxy::new(30.0, 10.0, 60.0, 40.0), 1, Some(700.0)),
                region(BoxXyxy::new(55.0, 35.0, 64.0, 48.0), 3, None),
                region(BoxXyxy::new(12.0, 20.0, 28.0, 30.0), 2, Some(100.0)),
            ],
        }
    }

    fn image(width: u32, height: u32) -> RgbImage {
        RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([(x * 3) as u8, (y * 5) as u8, ((x + y) % 256) as u8])
        })
    }

    fn assert_spans_spell_phrases(sample: &Sample) {
        for p in sample.phrases.iter() {
            assert!(!p.spans.is_empty());
            for span in &p.spans {
                assert_eq!(spell(&sample.caption, span), p.text, "caption {:?}", sample.caption);
            }
        }
    }

    fn assert_boxes_close(a: &Sample, b: &Sample) {
        assert_eq!(a.regions.len(), b.regions.len());
        for (ra, rb) in a.regions.iter().zip(&b.regions) {
            let diff = ra
                .bbox
                .to_array()
                .iter()
                .zip(rb.bbox.to_array())
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max);
            assert!(diff < 1e-4, "{:?} vs {:?}", ra.bbox, rb.bbox);
            assert_eq!(ra.phrase, rb.phrase);
        }
    }

    #[test]
    fn flip_swaps_left_and_right_and_keeps_spans_valid() {
        let original = sample(64, 48);
        assert_spans_spell_phrases(&original);
        let (flipped_image, flipped) = hflip(&image(64, 48), &original);
        assert_eq!(&*flipped.caption, "the right hand . a Left shoe . bright light . ĉu RIGHT?");
        let texts: Vec<&str> = flipped.phrases.iter().map(|p| p.text.as_str()).collect();
        assert_eq!(texts, ["right hand", "Left shoe", "bright light", "RIGHT"]);
        assert_spans_spell_phrases(&flipped);
        assert_eq!(flipped.regions[0].bbox, BoxXyxy::new(44.0, 3.0, 62.0, 15.0));
        // Mirroring changes no area.
        let areas = |s: &Sample| s.regions.iter().map(|r| r.area).collect::<Vec<_>>();
        assert_eq!(areas(&flipped), areas(&original));
        assert_eq!(flipped_image.get_pixel(0, 7), image(64, 48).get_pixel(63, 7));
    }

    #[test]
    fn flip_twice_is_the_identity() {
        let (img, s) = (image(37, 29), sample(37, 29));
        let (once_img, once) = hflip(&img, &s);
        let (twice_img, twice) = hflip(&once_img, &once);
        assert_eq!(twice_img, img);
        assert_eq!((&twice.caption, &twice.phrases), (&s.caption, &s.phrases));
        assert_boxes_close(&twice, &s);
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)] // a list of one span is what is meant
    fn span_inside_a_swapped_word_widens_to_the_new_word() {
        let caption = "turn left now";
        let phrases = [Phrase { text: "ef".into(), spans: vec![6..8], category_id: None }];
        let (new_caption, new_phrases) = swap_left_right(caption, &phrases);
        assert_eq!(new_caption, "turn right now");
        assert_eq!(new_phrases[0].spans, [5..10]);
    }

    #[test]
    fn crop_shifts_clips_and_drops_boxes() {
        let s = sample(64, 48);
        let region = CropRegion { x: 10, y: 5, width: 40, height: 30 };
        let (img, cropped) = crop(&image(64, 48), &s, region, 1.0);
        assert_eq!(img.dimensions(), (40, 30));
        assert_eq!((cropped.width, cropped.height), (40, 30));
        assert_eq!(img.get_pixel(0, 0), image(64, 48).get_pixel(10, 5));
        // Box 0 is clipped on the left, box 1 on the right and bottom, box 2 falls outside,
        // box 3 stays whole.
        assert_eq!(cropped.regions.len(), 3);
        assert_eq!(cropped.regions[0].bbox, BoxXyxy::new(0.0, 0.0, 10.0, 10.0));
        assert_eq!(cropped.regions[1].bbox, BoxXyxy::new(20.0, 5.0, 40.0, 30.0));
        assert_eq!(cropped.regions[1].phrase, 1);
        assert_eq!(cropped.regions[2].bbox, BoxXyxy::new(2.0, 15.0, 18.0, 25.0));
        // A clipped box's object area is unknown now; a whole box keeps its annotated area.
        let areas: Vec<Option<f32>> = cropped.regions.iter().map(|r| r.area).collect();
        assert_eq!(areas, [None, None, Some(100.0)]);
        assert_eq!(cropped.regions[0].area_or_box(), 100.0);
        // Phrases (and so the caption and spans) are untouched.
        assert_eq!((&cropped.caption, &cropped.phrases), (&s.caption, &s.phrases));
        // A box only a sliver wide inside the crop is dropped by min_box_size.
        let (_, strict) = crop(&image(64, 48), &s, CropRegion { x: 19, y: 0, width: 40, height: 48 }, 2.0);
        assert!(strict.regions.iter().all(|r| r.phrase != 0));
    }

    #[test]
    fn random_crop_keeps_boxes_inside() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..50 {
            let (img, s) = random_size_crop(&image(64, 48), &sample(64, 48), 16, 40, 1.0, &mut rng);
            let (w, h) = img.dimensions();
            assert!((16..=40).contains(&w) && (16..=40).contains(&h));
            for r in &s.regions {
                let b = r.bbox;
                assert!(
                    b.x0 >= 0.0 && b.y0 >= 0.0 && b.x1 <= w as f32 && b.y1 <= h as f32,
                    "{b:?} in {w}×{h}"
                );
                assert!(b.width() >= 1.0 && b.height() >= 1.0);
            }
        }
    }

    #[test]
    fn resize_scales_boxes_with_the_image() {
        let (img, s) = resize(&image(64, 48), &sample(64, 48), 24, 1000);
        assert_eq!(img.dimensions(), (32, 24));
        assert_eq!((s.width, s.height), (32, 24));
        assert_eq!(s.regions[1].bbox, BoxXyxy::new(15.0, 5.0, 30.0, 20.0));
        // Annotated areas scale by sx·sy = 1/4; a missing one stays missing.
        let areas: Vec<Option<f32>> = s.regions.iter().map(|r| r.area).collect();
        assert_eq!(areas, [Some(37.5), Some(175.0), None, Some(25.0)]);
        // Rounding the output size makes the two scales differ: the area takes their product.
        let (img, s) = resize(&image(63, 47), &sample(63, 47), 20, 1000);
        let (sx, sy) = (img.width() as f32 / 63.0, img.height() as f32 / 47.0);
        assert_ne!(sx, sy);
        assert_eq!(s.regions[1].area, Some(700.0 * sx * sy));
    }

    #[test]
    fn pipeline_is_deterministic_for_a_seed() {
        let config = TrainTransforms {
            scales: vec![20, 24, 28, 32],
            max_size: 50,
            crop_prescales: vec![30, 40],
            crop_min_size: 12,
            crop_max_size: 30,
            ..Default::default()
        };
        let run = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            config.apply(image(64, 48), sample(64, 48), &mut rng).unwrap()
        };
        assert_eq!(run(11), run(11));
        let outcomes: Vec<_> = (0..8).map(run).collect();
        assert!(outcomes.iter().any(|o| o != &outcomes[0]), "the seed must matter");
        for (img, s) in &outcomes {
            assert_eq!(img.dimensions(), (s.width, s.height));
            assert!(img.width().min(img.height()) <= 32 && img.width().max(img.height()) <= 50);
            assert_spans_spell_phrases(s);
            for r in &s.regions {
                assert!(r.bbox.x1 <= img.width() as f32 + 1e-3 && r.bbox.y1 <= img.height() as f32 + 1e-3);
            }
        }
    }

    #[test]
    fn config_defaults_and_validation() {
        let config: TrainTransforms = serde_json::from_str(r#"{"flip_prob": 0.0}"#).unwrap();
        assert_eq!(config, TrainTransforms { flip_prob: 0.0, ..Default::default() });
        assert!(config.validate().is_ok());
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let bad = TrainTransforms { flip_prob: 1.5, ..Default::default() };
        assert!(bad.apply(image(8, 8), sample(8, 8), &mut rng).is_err());
        let bad = TrainTransforms { scales: vec![], ..Default::default() };
        assert!(bad.validate().is_err());
        assert!(serde_json::from_str::<TrainTransforms>(r#"{"flip": 0.5}"#).is_err());
    }
}
