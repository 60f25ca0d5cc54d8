//! [`Sample`]: one annotated image, whatever format it came from.
//!
//! Grounding data and detection data meet here. A sample has a caption; its phrases are
//! character spans of that caption; each box (region) points at the phrase it belongs to. For
//! detection data (COCO, ODVG `label_map`) the caption is the prompt of the dataset's category
//! names, so phrase `i` is category `i`. Spans are in characters, half-open, as ODVG's
//! `tokens_positive` counts them; `glint_core::prompt` turns them into token positions.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use glint_core::geometry::BoxXyxy;

/// One annotated image.
///
/// The caption and phrases are shared (`Arc`): every sample of a detection dataset has the
/// same prompt of all category names (~10 KB for COCO, ~45 KB for Objects365), so the dataset
/// allocates it once and each sample holds a pointer to it; cloning a sample is cheap. To
/// change them for one sample, give it a new value (or `Arc::make_mut`, which copies only
/// when shared): other samples are unaffected.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Where the image lives (resolved against the dataset's image root).
    pub image_path: PathBuf,
    /// The image id in its source dataset (COCO `image.id`; the record index for ODVG).
    pub image_id: u64,
    /// Image size in pixels, as the annotation file declares it.
    pub width: u32,
    pub height: u32,
    /// The text the phrases are spans of (for detection data, the category prompt).
    pub caption: Arc<str>,
    /// The phrases boxes are grounded to; [`Region::phrase`] indexes this.
    pub phrases: Arc<[Phrase]>,
    pub regions: Vec<Region>,
}

/// A phrase of the caption: what a box can be grounded to.
#[derive(Clone, Debug, PartialEq)]
pub struct Phrase {
    /// The phrase text (for detection data, the category name).
    pub text: String,
    /// Character spans of the caption that spell this phrase (usually one).
    pub spans: Vec<Range<usize>>,
    /// The source category id, for detection data and for writing COCO results.
    pub category_id: Option<u64>,
}

/// An annotated box.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Region {
    /// The box in pixels of the original image.
    pub bbox: BoxXyxy,
    /// Index into [`Sample::phrases`].
    pub phrase: usize,
    /// COCO crowd region: ignored by evaluation matching, never a training positive.
    pub iscrowd: bool,
    /// The annotated object's area in pixels² when the source gives one (COCO `area`, e.g.
    /// the segmentation area), which COCO evaluation buckets into small / medium / large.
    /// `None` means "use the box area" ([`Region::area_or_box`]).
    pub area: Option<f32>,
}

impl Region {
    /// The object's area in pixels²: the annotated [`Region::area`] if there is one, else the
    /// box area.
    pub fn area_or_box(&self) -> f32 {
        self.area.unwrap_or_else(|| self.bbox.area())
    }
}

impl Sample {
    /// The character-level positive map: for each region, the caption spans of its phrase.
    /// A region whose phrase index is out of range gets no spans.
    pub fn positive_spans(&self) -> Vec<&[Range<usize>]> {
        self.regions
            .iter()
            .map(|r| self.phrases.get(r.phrase).map_or(&[][..], |p| p.spans.as_slice()))
            .collect()
    }
}
