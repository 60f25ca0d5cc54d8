//! The synthetic grounding dataset: coloured shapes on textured backgrounds, with COCO
//! detection labels and ODVG grounding captions (`glint data synth`).
//!
//! Categories are the shapes ([`Shape`]); captions give each object one phrase, so the same
//! images serve detection (shape names as the prompt) and grounding (phrases). An object is
//! named by its size, colour and shape ("a small red circle") unless another object of the
//! image looks the same; then each of them gets a **referring phrase** true of it alone:
//! "the small red circle on the left" / "... on the right" (by box centre; "at the top" /
//! "at the bottom" when the centres are too close on x; "at the top left", "the second ...
//! from the left" among three or more), and sometimes a relation to a unique object ("the small red circle left
//! of the large green heart") or an extreme ("the largest red circle"). The grammar and what
//! "left", "largest" and the rest mean exactly are documented in `synth/caption.rs`. Some
//! shapes are declared **novel** for few-shot experiments; the files keep every annotation, the
//! few-shot runner decides what to hide.
//!
//! Layout written under the output directory:
//!
//! - `images/000001.jpg ...`: JPEG, one per image id (ids start at 1, as COCO tools expect).
//! - `train.json`, `val.json`: COCO detection, written by [`crate::coco::write_coco`]
//!   (`file_name` relative to `images/`, `bbox` is `[x, y, w, h]`, `area` is the drawn area
//!   inside the image, as a segmentation area would be, so COCO's small / medium / large
//!   buckets follow the shapes, not their boxes; category ids 1..=10 in [`Shape::ALL`] order).
//! - `train.odvg.jsonl`, `val.odvg.jsonl`: one ODVG grounding record per image (written by
//!   [`crate::odvg::write_odvg`]), boxes `[x0, y0, x1, y1]`, `tokens_positive` as character
//!   spans of the caption, `image_id` as in COCO.
//!
//! Box corners are rounded to 0.01 pixel in both files (COCO's `x + w` reads back as that
//! corner); areas are rounded to 0.01 pixel², then stored as f32.
//! - `categories.json`: `{"categories": [{"id", "name", "split": "base" | "novel"}]}`.
//!
//! What a user can rely on:
//!
//! - The same config gives the same bytes in every file on the same platform, whatever the
//!   number of threads (each image has its own random stream, derived from the seed and its
//!   index). Across platforms the bytes may differ: drawing uses the platform's `sin`, `cos`
//!   and `exp`, whose last bits are not specified.
//! - A box is the tight bounds of the drawn shape (after rotation), clipped to the image; a
//!   shape is at least ~85% inside the image.
//! - Heavy occlusion is avoided when objects are placed (later boxes may cover at most 30% of
//!   an earlier box, and same-coloured objects never overlap, so no two shapes merge into one
//!   blob). As a last check, an object whose solid pixels are less than 60% visible is not
//!   annotated and is counted in [`SynthSummary::dropped_hidden`].
//! - The size word of a phrase is the COCO bucket of the annotated area ([`SizeClass`]).
//! - Every annotated object has exactly one phrase; phrases are distinct in the caption and
//!   contain no `.` or `?`. No two objects share a phrase, except in a tight cluster of three
//!   or more identical objects (rare), where those nothing singles out share their plain
//!   phrase. Every phrase is true of the image, measured on the annotated boxes and areas, and
//!   stays true when a horizontal flip swaps "left" and "right".
//! - The choice of phrases uses the image's random stream after everything drawn, so it never
//!   changes the pixels, the boxes or the COCO files.
//! - Distractors (thin lines, blobs) are grey or brown, never a category colour, and lie under
//!   the shapes.
//! - An image may hold fewer than `min_objects` objects when the scene is too crowded to place
//!   more, never none.

mod caption;
mod raster;
mod shapes;

use std::f32::consts::{PI, TAU};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;

use glint_core::geometry::BoxXyxy;
use glint_core::io::write_atomic;
use image::ExtendedColorType;
use image::codecs::jpeg::JpegEncoder;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::coco::write_coco;
use crate::dataset::category_prompt;
use crate::odvg::write_odvg;
use crate::{Category, DataError, Phrase, Region, Sample};
use caption::Grounding;
use raster::{Canvas, Point, bounds, polygon_area, polygon_coverage};
pub use shapes::{Colour, Shape, SizeClass};

/// How to generate a synthetic dataset. Every field has a default, so a config file names
/// only what differs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SynthConfig {
    /// Number of images (train + val).
    pub images: usize,
    /// Width and height of every image, in pixels.
    pub image_size: u32,
    pub seed: u64,
    /// Fraction of the images held out for validation (the last ones).
    pub val_fraction: f64,
    /// Objects attempted per image, drawn uniformly from `min_objects..=max_objects`.
    pub min_objects: usize,
    pub max_objects: usize,
    /// Unlabelled clutter per image, drawn uniformly from `0..=max_distractors`.
    pub max_distractors: usize,
    /// Per-pixel noise amplitude, in 8-bit levels.
    pub noise: f32,
    /// Shape names declared novel (few-shot); every other shape is base.
    pub novel: Vec<String>,
    pub jpeg_quality: u8,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            images: 1000,
            image_size: 320,
            seed: 0,
            val_fraction: 0.2,
            min_objects: 2,
            max_objects: 6,
            max_distractors: 4,
            noise: 6.0,
            novel: Shape::DEFAULT_NOVEL.iter().map(|s| s.name().to_string()).collect(),
            jpeg_quality: 90,
        }
    }
}

/// Upper bound on images: a million 320 px JPEGs are ~25 GB, far more than a synthetic set
/// needs, and a typo such as `--images 18446744073709551615` must fail, not try to allocate.
pub const MAX_IMAGES: usize = 1_000_000;

/// Upper bound on objects per image (the visibility map stores object indices in a byte).
const MAX_OBJECTS: usize = 64;

impl SynthConfig {
    /// Checks every field; the error says which one is wrong and what is allowed.
    pub fn validate(&self) -> Result<(), DataError> {
        let invalid = |message: String| Err(DataError::Invalid(format!("synth config: {message}")));
        if !(1..=MAX_IMAGES).contains(&self.images) {
            return invalid(format!("images must be in 1..={MAX_IMAGES}, got {}", self.images));
        }
        if !(32..=4096).contains(&self.image_size) {
            return invalid(format!("image_size must be in 32..=4096, got {}", self.image_size));
        }
        if !(0.0..1.0).contains(&self.val_fraction) {
            return invalid(format!("val_fraction must be in [0, 1), got {}", self.val_fraction));
        }
        if self.min_objects == 0 || self.min_objects > self.max_objects || self.max_objects > MAX_OBJECTS {
            return invalid(format!(
                "need 1 <= min_objects <= max_objects <= {MAX_OBJECTS}, got {}..={}",
                self.min_objects, self.max_objects
            ));
        }
        if !(0.0..=64.0).contains(&self.noise) {
            return invalid(format!("noise must be in [0, 64], got {}", self.noise));
        }
        if !(1..=100).contains(&self.jpeg_quality) {
            return invalid(format!("jpeg_quality must be in 1..=100, got {}", self.jpeg_quality));
        }
        let known = || Shape::ALL.map(Shape::name).join(", ");
        for (i, name) in self.novel.iter().enumerate() {
            if Shape::from_name(name).is_none() {
                return invalid(format!("unknown novel shape {name:?} (shapes: {})", known()));
            }
            if self.novel[..i].contains(name) {
                return invalid(format!("novel shape {name:?} is listed twice"));
            }
        }
        if self.novel.len() >= Shape::ALL.len() {
            return invalid("at least one shape must stay base".into());
        }
        Ok(())
    }

    /// How many of the images go to `val` (the last ones): `val_fraction` of them, rounded,
    /// but at least one of each split when there are two images or more and the fraction is
    /// not zero.
    pub fn val_images(&self) -> usize {
        if self.val_fraction <= 0.0 || self.images < 2 {
            return 0;
        }
        ((self.images as f64 * self.val_fraction).round() as usize).clamp(1, self.images - 1)
    }

    /// Every category with its split, in id order.
    pub fn categories(&self) -> Vec<SynthCategory> {
        Shape::ALL
            .iter()
            .map(|shape| SynthCategory {
                id: shape.category_id(),
                name: shape.name().to_string(),
                split: if self.novel.iter().any(|n| n == shape.name()) { Split::Novel } else { Split::Base },
            })
            .collect()
    }
}

/// Whether a category is trained on normally (base) or held out for few-shot (novel).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Base,
    Novel,
}

/// One entry of `categories.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SynthCategory {
    pub id: u64,
    pub name: String,
    pub split: Split,
}

#[derive(Serialize, Deserialize)]
struct CategoriesFile {
    categories: Vec<SynthCategory>,
}

/// Reads a `categories.json` written by [`generate`].
pub fn load_categories(path: &Path) -> Result<Vec<SynthCategory>, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let file: CategoriesFile = serde_json::from_slice(&bytes)
        .map_err(|e| DataError::format(path, format!(":{}", e.line()), e.to_string()))?;
    Ok(file.categories)
}

/// What [`generate`] wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct SynthSummary {
    pub out_dir: PathBuf,
    pub train_images: usize,
    pub val_images: usize,
    pub train_annotations: usize,
    pub val_annotations: usize,
    /// Annotations per category (train + val), with the category's split.
    pub per_category: Vec<(SynthCategory, usize)>,
    /// Annotations per COCO size bucket: small, medium, large.
    pub per_size: [usize; 3],
    /// Shapes drawn but left unannotated because later shapes hid most of them.
    pub dropped_hidden: usize,
}

impl fmt::Display for SynthSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "wrote {} images to {} ({} train, {} val)",
            self.train_images + self.val_images,
            self.out_dir.display(),
            self.train_images,
            self.val_images
        )?;
        let [small, medium, large] = self.per_size;
        writeln!(
            f,
            "annotations: {} train, {} val; {small} small, {medium} medium, {large} large; {} hidden shapes left unannotated",
            self.train_annotations, self.val_annotations, self.dropped_hidden
        )?;
        let per_category: Vec<String> = self
            .per_category
            .iter()
            .map(|(c, n)| {
                let novel = if c.split == Split::Novel { " (novel)" } else { "" };
                format!("{} {n}{novel}", c.name)
            })
            .collect();
        write!(f, "categories: {}", per_category.join(", "))
    }
}

/// Generates the dataset into `out_dir`, which must be empty or not exist yet (so no stale
/// file of an earlier run can mix in). `progress` is called on the calling thread after each
/// image with the number of images finished so far. Images are rendered on all CPU cores.
pub fn generate(
    config: &SynthConfig,
    out_dir: &Path,
    progress: impl FnMut(usize),
) -> Result<SynthSummary, DataError> {
    config.validate()?;
    ensure_empty_dir(out_dir)?;
    let images_dir = out_dir.join("images");
    std::fs::create_dir_all(&images_dir)
        .map_err(|source| DataError::Write { path: images_dir.clone(), source })?;

    let records = render_all(config, &images_dir, progress)?;
    let categories = config.categories();
    let (train, val) = records.split_at(config.images - config.val_images());

    let write = |name: &str, bytes: Vec<u8>| {
        let path = out_dir.join(name);
        write_atomic(&path, &bytes).map_err(|source| DataError::Write { path, source })
    };
    let size = config.image_size;
    let coco_categories: Vec<Category> =
        categories.iter().map(|c| Category { id: c.id, name: c.name.clone() }).collect();
    for (name, records) in [("train.json", train), ("val.json", val)] {
        let samples = detection_samples(records, &images_dir, size, &coco_categories)?;
        write_coco(&out_dir.join(name), &images_dir, &coco_categories, &samples)?;
    }
    write_odvg(&out_dir.join("train.odvg.jsonl"), &images_dir, &grounding_samples(train, &images_dir, size))?;
    write_odvg(&out_dir.join("val.odvg.jsonl"), &images_dir, &grounding_samples(val, &images_dir, size))?;
    let categories_json = serde_json::to_vec_pretty(&CategoriesFile { categories: categories.clone() })
        .map_err(|e| DataError::Invalid(format!("cannot serialise categories.json: {e}")))?;
    write("categories.json", categories_json)?;

    let mut per_size = [0; 3];
    let mut per_category: Vec<(SynthCategory, usize)> = categories.into_iter().map(|c| (c, 0)).collect();
    for object in records.iter().flat_map(|r| &r.objects) {
        per_size[object.size as usize] += 1;
        if let Some((_, n)) = per_category.iter_mut().find(|(c, _)| c.id == object.shape.category_id()) {
            *n += 1;
        }
    }
    let count = |records: &[ImageRecord]| records.iter().map(|r| r.objects.len()).sum();
    Ok(SynthSummary {
        out_dir: out_dir.to_path_buf(),
        train_images: train.len(),
        val_images: val.len(),
        train_annotations: count(train),
        val_annotations: count(val),
        per_category,
        per_size,
        dropped_hidden: records.iter().map(|r| r.dropped_hidden).sum(),
    })
}

fn ensure_empty_dir(dir: &Path) -> Result<(), DataError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(DataError::Invalid(format!(
                    "{}: output directory is not empty; choose a new directory or remove it",
                    dir.display()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(DataError::Write { path: dir.to_path_buf(), source }),
    }
}

/// One generated image and its annotations.
struct ImageRecord {
    index: usize,
    objects: Vec<AnnotatedObject>,
    grounding: Grounding,
    dropped_hidden: usize,
}

impl ImageRecord {
    fn id(&self) -> u64 {
        self.index as u64 + 1
    }

    fn file_name(&self) -> String {
        format!("{:06}.jpg", self.id())
    }
}

#[derive(Clone, Copy, Debug)]
struct AnnotatedObject {
    shape: Shape,
    colour: Colour,
    size: SizeClass,
    /// Tight box of the drawn shape, clipped to the image, corners rounded to 0.01.
    bbox: BoxXyxy,
    /// Drawn area inside the image, in pixels², rounded to 0.01.
    area: f32,
}

/// Renders every image on worker threads (each writes its own JPEG) and returns the records in
/// index order. Work is handed out one image at a time; results come back over a channel so
/// `progress` runs on this thread. The first error stops the remaining work.
fn render_all(
    config: &SynthConfig,
    images_dir: &Path,
    mut progress: impl FnMut(usize),
) -> Result<Vec<ImageRecord>, DataError> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(config.images);
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let mut records: Vec<Option<ImageRecord>> = (0..config.images).map(|_| None).collect();
    let mut first_error = None;
    let (sender, receiver) = mpsc::channel();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let (sender, next, failed) = (sender.clone(), &next, &failed);
            scope.spawn(move || {
                while !failed.load(Ordering::Relaxed) {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= config.images {
                        break;
                    }
                    let result = render_and_write(config, index, images_dir);
                    if result.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    if sender.send(result).is_err() {
                        break;
                    }
                }
            });
        }
        drop(sender);
        let mut done = 0;
        for result in receiver {
            match result {
                Ok(record) => {
                    let index = record.index;
                    if let Some(slot) = records.get_mut(index) {
                        *slot = Some(record);
                    }
                    done += 1;
                    progress(done);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
    });
    match first_error {
        Some(e) => Err(e),
        None => Ok(records.into_iter().flatten().collect()),
    }
}

fn render_and_write(config: &SynthConfig, index: usize, images_dir: &Path) -> Result<ImageRecord, DataError> {
    let (record, rgb) = render(config, index);
    let path = images_dir.join(record.file_name());
    let mut jpeg = Vec::new();
    let size = config.image_size;
    JpegEncoder::new_with_quality(&mut jpeg, config.jpeg_quality)
        .encode(&rgb, size, size, ExtendedColorType::Rgb8)
        .map_err(|e| DataError::Write { path: path.clone(), source: std::io::Error::other(e) })?;
    write_atomic(&path, &jpeg).map_err(|source| DataError::Write { path, source })?;
    Ok(record)
}

/// A later box may cover at most this fraction of an earlier object's box (summed over all
/// later boxes).
const MAX_BOX_COVERED: f32 = 0.3;
/// An object is annotated only if this fraction of its solid pixels stays visible.
const MIN_VISIBLE: f32 = 0.6;
/// How far a shape's box may stick out of the image, as a fraction of its width / height.
const MAX_OUTSIDE: f32 = 0.075;
/// Largest shape area, as a fraction of the image area.
const MAX_AREA_FRACTION: f32 = 0.25;
/// Random placements tried per object before giving up on it.
const PLACEMENT_ATTEMPTS: usize = 40;

/// Draws image `index` (row-major 8-bit RGB) and its annotations. Pure: depends only on the
/// config and the index.
fn render(config: &SynthConfig, index: usize) -> (ImageRecord, Vec<u8>) {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    rng.set_stream(index as u64);
    let size = config.image_size as usize;
    let mut canvas = Canvas::new(size, size);

    paint_background(&mut canvas, &mut rng);
    let distractors = rng.random_range(0..=config.max_distractors);
    for _ in 0..distractors {
        let (outline, rgb) = random_distractor(&mut rng, size as f32);
        if let Some(coverage) = polygon_coverage(&outline, size, size) {
            canvas.paint(&coverage, |_, _| rgb);
        }
    }

    let objects = place_objects(&mut rng, config, size as f32);
    // owner[pixel] = 1 + index of the topmost object covering at least half of the pixel.
    let mut owner = vec![0u8; size * size];
    let mut drawn = Vec::with_capacity(objects.len());
    for (i, object) in objects.iter().enumerate() {
        let Some(coverage) = polygon_coverage(&object.outline, size, size) else {
            drawn.push((0.0, 0));
            continue;
        };
        let mut solid = 0;
        for (x, y, c) in coverage.pixels() {
            if c >= 0.5 {
                owner[y * size + x] = i as u8 + 1;
                solid += 1;
            }
        }
        canvas.paint(&coverage, |x, y| object.colour_at(x as f32 + 0.5, y as f32 + 0.5));
        drawn.push((coverage.area(), solid));
    }

    let mut visible = vec![0usize; objects.len()];
    for &o in owner.iter().filter(|o| **o > 0) {
        if let Some(v) = visible.get_mut(o as usize - 1) {
            *v += 1;
        }
    }
    let mut annotated = Vec::new();
    let mut dropped_hidden = 0;
    for ((object, (area, solid)), visible) in objects.iter().zip(drawn).zip(visible) {
        if solid == 0 || (visible as f32) < MIN_VISIBLE * solid as f32 {
            dropped_hidden += 1;
            continue;
        }
        // The size word follows the area exactly as the COCO file stores it (an f32).
        let area = round2(area as f64) as f32;
        let size_class = SizeClass::from_area(f64::from(area));
        annotated.push(AnnotatedObject {
            shape: object.shape,
            colour: object.colour,
            size: size_class,
            bbox: rounded(object.bbox.clip(size as f32, size as f32)),
            area,
        });
    }
    let noise_seed = rng.random::<u64>();
    // Drawn last, so the choice of phrases never changes the pixels or the boxes.
    let phrases = caption::describe(&annotated, &mut rng);
    let record =
        ImageRecord { index, objects: annotated, grounding: caption::ground(&phrases), dropped_hidden };
    (record, canvas.to_rgb8(config.noise, noise_seed))
}

/// A muted background: a gradient between two greyish colours, low-frequency value noise and,
/// half the time, faint stripes. Saturation stays low so the category colours stand out.
fn paint_background(canvas: &mut Canvas, rng: &mut ChaCha8Rng) {
    let size = canvas.width as f32;
    let muted = |rng: &mut ChaCha8Rng| {
        let grey = rng.random_range(80.0..200.0f32);
        [0, 1, 2].map(|_| grey + rng.random_range(-14.0..14.0f32))
    };
    let (from, to) = (muted(rng), muted(rng));
    let (gx, gy) = polar(1.0, rng.random_range(0.0..TAU));

    // Value noise: random levels on a coarse grid, smoothly interpolated.
    let cells = rng.random_range(3..7usize);
    let cell = size / cells as f32;
    let amplitude = rng.random_range(6.0..18.0f32);
    let grid: Vec<f32> =
        (0..(cells + 1) * (cells + 1)).map(|_| rng.random_range(-amplitude..amplitude)).collect();

    let stripes = rng.random_bool(0.5).then(|| {
        let period = rng.random_range(6.0..24.0f32);
        let (sx, sy) = polar(TAU / period, rng.random_range(0.0..PI));
        (sx, sy, rng.random_range(4.0..12.0f32))
    });

    let smooth = |t: f32| t * t * (3.0 - 2.0 * t);
    for y in 0..canvas.height {
        for x in 0..canvas.width {
            let (fx, fy) = (x as f32 + 0.5, y as f32 + 0.5);
            let t = (((fx - size / 2.0) * gx + (fy - size / 2.0) * gy) / size + 0.5).clamp(0.0, 1.0);
            let (u, v) = (fx / cell, fy / cell);
            let (cx, cy) = ((u as usize).min(cells - 1), (v as usize).min(cells - 1));
            let (du, dv) = (smooth(u - cx as f32), smooth(v - cy as f32));
            let at = |i: usize, j: usize| grid.get(j * (cells + 1) + i).copied().unwrap_or(0.0);
            let top = at(cx, cy) + (at(cx + 1, cy) - at(cx, cy)) * du;
            let bottom = at(cx, cy + 1) + (at(cx + 1, cy + 1) - at(cx, cy + 1)) * du;
            let mut level = top + (bottom - top) * dv;
            if let Some((sx, sy, amp)) = stripes {
                level += amp * (fx * sx + fy * sy).sin();
            }
            let i = (y * canvas.width + x) * 3;
            for c in 0..3 {
                canvas.rgb[i + c] = from[c] + (to[c] - from[c]) * t + level;
            }
        }
    }
}

/// Unlabelled clutter: a thin line or an irregular blob, in grey or brown.
fn random_distractor(rng: &mut ChaCha8Rng, size: f32) -> (Vec<Point>, [f32; 3]) {
    let base = shapes::DISTRACTOR_RGB[rng.random_range(0..shapes::DISTRACTOR_RGB.len())];
    let rgb = base.map(|c| c as f32 + rng.random_range(-8.0..8.0f32));
    let centre = [rng.random_range(0.0..size), rng.random_range(0.0..size)];
    let outline = if rng.random_bool(0.5) {
        let length = rng.random_range(0.15..0.7f32) * size;
        let width = rng.random_range(1.0..3.0f32);
        let (dx, dy) = polar(1.0, rng.random_range(0.0..PI));
        let (ax, ay) = (dx * length / 2.0, dy * length / 2.0);
        let (nx, ny) = (-dy * width / 2.0, dx * width / 2.0);
        vec![
            [centre[0] - ax - nx, centre[1] - ay - ny],
            [centre[0] + ax - nx, centre[1] + ay - ny],
            [centre[0] + ax + nx, centre[1] + ay + ny],
            [centre[0] - ax + nx, centre[1] - ay + ny],
        ]
    } else {
        let radius = rng.random_range(0.02..0.07f32) * size;
        (0..14)
            .map(|k| {
                let (x, y) = polar(radius * rng.random_range(0.6..1.0f32), k as f32 * TAU / 14.0);
                [centre[0] + x, centre[1] + y]
            })
            .collect()
    };
    (outline, rgb)
}

/// A labelled shape placed in the image.
struct PlacedObject {
    shape: Shape,
    colour: Colour,
    /// Outline in image pixels.
    outline: Vec<Point>,
    /// Tight bounds of the outline (not clipped).
    bbox: BoxXyxy,
    /// Jittered fill colour.
    rgb: [f32; 3],
    /// Lighting: brightness changes by `shade` per pixel along x and y from the centre.
    shade: [f32; 2],
    centre: Point,
}

impl PlacedObject {
    fn colour_at(&self, x: f32, y: f32) -> [f32; 3] {
        let light = 1.0 + (x - self.centre[0]) * self.shade[0] + (y - self.centre[1]) * self.shade[1];
        self.rgb.map(|c| (c * light).clamp(0.0, 255.0))
    }
}

/// Picks the objects of one image, back to front, rejecting placements that would hide an
/// earlier object too much or touch an earlier object of the same colour.
fn place_objects(rng: &mut ChaCha8Rng, config: &SynthConfig, size: f32) -> Vec<PlacedObject> {
    let count = rng.random_range(config.min_objects..=config.max_objects);
    let mut placed: Vec<PlacedObject> = Vec::with_capacity(count);
    // Per placed object: how much of its box later boxes cover, in pixels.
    let mut covered: Vec<f32> = Vec::with_capacity(count);
    for _ in 0..count {
        // The size class is kept across attempts: large shapes are the hardest to fit, and
        // re-drawing it would leave few of them.
        let wanted = match rng.random::<f32>() {
            p if p < 0.35 => SizeClass::Small,
            p if p < 0.75 => SizeClass::Medium,
            _ => SizeClass::Large,
        };
        for _ in 0..PLACEMENT_ATTEMPTS {
            let candidate = random_object(rng, size, wanted);
            let fits = placed.iter().zip(&covered).all(|(earlier, covered)| {
                let overlap = intersection(earlier.bbox, candidate.bbox);
                let same_colour = earlier.colour == candidate.colour && overlap > 0.0;
                !same_colour && covered + overlap <= MAX_BOX_COVERED * earlier.bbox.area()
            });
            if fits {
                for (earlier, covered) in placed.iter().zip(covered.iter_mut()) {
                    *covered += intersection(earlier.bbox, candidate.bbox);
                }
                placed.push(candidate);
                covered.push(0.0);
                break;
            }
        }
    }
    placed
}

/// A random shape and colour of the wanted size class (or a smaller one if the image is too
/// small for it), rotated and placed at most [`MAX_OUTSIDE`] out of the
/// image on each side.
fn random_object(rng: &mut ChaCha8Rng, size: f32, wanted: SizeClass) -> PlacedObject {
    let shape = Shape::ALL[rng.random_range(0..Shape::ALL.len())];
    let colour = Colour::ALL[rng.random_range(0..Colour::ALL.len())];
    // Fall back to a smaller class when the image is too small for the wanted one.
    let max_area = MAX_AREA_FRACTION * size * size;
    let (lo, hi) = [wanted, SizeClass::Medium, SizeClass::Small]
        .into_iter()
        .map(|class| class.area_range())
        .find(|(lo, _)| *lo < max_area)
        .map_or((max_area / 2.0, max_area), |(lo, hi)| (lo, hi.min(max_area)));
    let area = (rng.random_range(0.0..1.0f32) * (hi / lo).ln()).exp() * lo;

    let unit = shape.outline();
    let scale = (area / polygon_area(&unit)).sqrt();
    let max_rotation = shape.max_rotation();
    let (cos, sin) = polar(1.0, rng.random_range(-max_rotation..max_rotation));
    let local: Vec<Point> =
        unit.iter().map(|[x, y]| [scale * (x * cos - y * sin), scale * (x * sin + y * cos)]).collect();
    let ([min_x, min_y], [max_x, max_y]) = bounds(&local).unwrap_or(([0.0; 2], [0.0; 2]));
    let mut position = |min: f32, max: f32| {
        let slack = MAX_OUTSIDE * (max - min);
        let (lo, hi) = (slack - min, size - max - slack);
        if hi > lo { rng.random_range(lo..hi) } else { (lo + hi) / 2.0 }
    };
    let centre = [position(min_x, max_x), position(min_y, max_y)];
    let outline: Vec<Point> = local.iter().map(|[x, y]| [x + centre[0], y + centre[1]]).collect();
    let bbox = BoxXyxy::new(min_x + centre[0], min_y + centre[1], max_x + centre[0], max_y + centre[1]);

    let rgb = colour.rgb().map(|c| c as f32 + rng.random_range(-10.0..10.0f32));
    // Up to ±15% brightness across the shape, in a random direction.
    let (lx, ly) = polar(
        rng.random_range(0.0..0.15f32) / (max_x - min_x).max(max_y - min_y).max(1.0) * 2.0,
        rng.random_range(0.0..TAU),
    );
    PlacedObject { shape, colour, outline, bbox, rgb, shade: [lx, ly], centre }
}

fn intersection(a: BoxXyxy, b: BoxXyxy) -> f32 {
    BoxXyxy::new(a.x0.max(b.x0), a.y0.max(b.y0), a.x1.min(b.x1), a.y1.min(b.y1)).area()
}

fn polar(radius: f32, angle: f32) -> (f32, f32) {
    (radius * angle.cos(), radius * angle.sin())
}

/// Rounds to two decimals, so the JSON stays short and readable.
fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// A box with corners rounded to two decimals (so COCO and ODVG files print the same corners).
fn rounded(b: BoxXyxy) -> BoxXyxy {
    let [x0, y0, x1, y1] = [b.x0, b.y0, b.x1, b.y1].map(|v| round2(f64::from(v)) as f32);
    BoxXyxy::new(x0, y0, x1, y1)
}

/// The detection samples of these images (what COCO stores): the shape names as the caption,
/// phrase `i` = shape `i` ([`Shape::ALL`] order), one region per object with its drawn area.
fn detection_samples(
    records: &[ImageRecord],
    images_dir: &Path,
    size: u32,
    categories: &[Category],
) -> Result<Vec<Sample>, DataError> {
    let (caption, phrases) = category_prompt(categories)?;
    Ok(records
        .iter()
        .map(|record| Sample {
            image_path: images_dir.join(record.file_name()),
            image_id: record.id(),
            width: size,
            height: size,
            caption: caption.clone(),
            phrases: phrases.clone(),
            regions: record
                .objects
                .iter()
                .map(|object| Region {
                    bbox: object.bbox,
                    // Category ids count from 1 in phrase order.
                    phrase: object.shape.category_id().saturating_sub(1) as usize,
                    iscrowd: false,
                    area: Some(object.area),
                })
                .collect(),
        })
        .collect())
}

/// The grounding samples of these images (what ODVG stores): the caption, one phrase per
/// distinct object phrase, one region per object.
fn grounding_samples(records: &[ImageRecord], images_dir: &Path, size: u32) -> Vec<Sample> {
    records
        .iter()
        .map(|record| {
            let g = &record.grounding;
            Sample {
                image_path: images_dir.join(record.file_name()),
                image_id: record.id(),
                width: size,
                height: size,
                caption: g.caption.as_str().into(),
                phrases: g
                    .phrases
                    .iter()
                    .zip(&g.spans)
                    .map(|(text, span)| Phrase {
                        text: text.clone(),
                        spans: vec![span.clone()],
                        category_id: None,
                    })
                    .collect(),
                regions: record
                    .objects
                    .iter()
                    .zip(&g.object_phrase)
                    .map(|(object, &phrase)| Region {
                        bbox: object.bbox,
                        phrase,
                        iscrowd: false,
                        // ODVG does not store it; kept so the sample describes the object.
                        area: Some(object.area),
                    })
                    .collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small_config() -> SynthConfig {
        SynthConfig { images: 4, image_size: 96, ..SynthConfig::default() }
    }

    #[test]
    fn render_is_a_function_of_seed_and_index() {
        let config = small_config();
        let (a, pixels_a) = render(&config, 2);
        let (b, pixels_b) = render(&config, 2);
        assert_eq!(pixels_a, pixels_b);
        assert_eq!(a.grounding, b.grounding);
        let (_, other_index) = render(&config, 3);
        let (_, other_seed) = render(&SynthConfig { seed: 1, ..config }, 2);
        assert_ne!(pixels_a, other_index);
        assert_ne!(pixels_a, other_seed);
    }

    #[test]
    fn every_image_has_objects_within_bounds() {
        let config = SynthConfig { image_size: 160, ..small_config() };
        for index in 0..20 {
            let (record, pixels) = render(&config, index);
            assert_eq!(pixels.len(), 160 * 160 * 3);
            assert!(!record.objects.is_empty(), "image {index} has no objects");
            assert!(record.objects.len() <= config.max_objects);
            for o in &record.objects {
                assert!(o.bbox.is_valid() && o.bbox.x0 >= 0.0 && o.bbox.y0 >= 0.0);
                assert!(o.bbox.x1 <= 160.0 && o.bbox.y1 <= 160.0);
                // The drawn area fits in the box and fills a fair part of it.
                assert!(o.area <= o.bbox.area() + 1.0 && o.area > 0.25 * o.bbox.area());
            }
        }
    }

    #[test]
    fn coco_files_hold_the_drawn_areas_and_boxes() {
        let config = small_config();
        let dir = tempfile::tempdir().unwrap();
        generate(&config, dir.path(), |_| {}).unwrap();
        let images = dir.path().join("images");
        let train = crate::coco::load_coco(&dir.path().join("train.json"), &images).unwrap();
        let val = crate::coco::load_coco(&dir.path().join("val.json"), &images).unwrap();
        assert_eq!(val.samples.len(), config.val_images());
        let names: Vec<(u64, &str)> = val.categories.iter().map(|c| (c.id, c.name.as_str())).collect();
        let expected: Vec<(u64, &str)> = Shape::ALL.iter().map(|s| (s.category_id(), s.name())).collect();
        assert_eq!(names, expected);
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("val.json")).unwrap()).unwrap();
        assert_eq!(
            json["images"][0]["file_name"],
            format!("{:06}.jpg", config.images - config.val_images() + 1)
        );
        for (index, sample) in train.samples.iter().chain(&val.samples).enumerate() {
            let (record, _) = render(&config, index);
            assert_eq!(sample.image_id, index as u64 + 1);
            assert_eq!(sample.regions.len(), record.objects.len());
            for (region, object) in sample.regions.iter().zip(&record.objects) {
                // Exactly what was drawn: the area as the shape's, the box as synth rounded it.
                assert_eq!(region.area_or_box(), object.area, "image {}", index + 1);
                assert_eq!(region.bbox, object.bbox);
                assert_eq!(sample.phrases[region.phrase].category_id, Some(object.shape.category_id()));
            }
        }
    }

    #[test]
    fn placement_keeps_earlier_boxes_mostly_uncovered() {
        let config = SynthConfig { min_objects: 8, max_objects: 8, ..small_config() };
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for _ in 0..20 {
            let objects = place_objects(&mut rng, &config, 96.0);
            for (i, earlier) in objects.iter().enumerate() {
                let covered: f32 = objects[i + 1..].iter().map(|o| intersection(earlier.bbox, o.bbox)).sum();
                assert!(covered <= MAX_BOX_COVERED * earlier.bbox.area() + 1e-3);
                for later in &objects[i + 1..] {
                    let touching = intersection(earlier.bbox, later.bbox) > 0.0;
                    assert!(!(touching && earlier.colour == later.colour));
                }
            }
        }
    }

    #[test]
    fn config_errors_name_the_field() {
        let bad = |config: SynthConfig| config.validate().unwrap_err().to_string();
        assert!(bad(SynthConfig { images: 0, ..SynthConfig::default() }).contains("images"));
        let huge = bad(SynthConfig { images: usize::MAX, ..SynthConfig::default() });
        assert!(
            huge.contains("images must be in 1..=1000000") && huge.contains(&usize::MAX.to_string()),
            "{huge}"
        );
        assert!(SynthConfig { images: MAX_IMAGES, ..SynthConfig::default() }.validate().is_ok());
        assert!(bad(SynthConfig { val_fraction: 1.0, ..SynthConfig::default() }).contains("val_fraction"));
        assert!(
            bad(SynthConfig { min_objects: 5, max_objects: 3, ..SynthConfig::default() })
                .contains("min_objects")
        );
        assert!(
            bad(SynthConfig { novel: vec!["blob".into()], ..SynthConfig::default() }).contains("\"blob\"")
        );
        assert!(SynthConfig::default().validate().is_ok());
    }

    #[test]
    fn val_split_size() {
        let with = |images, val_fraction| {
            SynthConfig { images, val_fraction, ..SynthConfig::default() }.val_images()
        };
        assert_eq!(with(1000, 0.2), 200);
        assert_eq!(with(3, 0.01), 1);
        assert_eq!(with(3, 0.9), 2);
        assert_eq!(with(1, 0.5), 0);
        assert_eq!(with(10, 0.0), 0);
    }

    #[test]
    fn config_deserialises_with_defaults_and_rejects_typos() {
        let config: SynthConfig = serde_json::from_str(r#"{"images": 10, "seed": 3}"#).unwrap();
        assert_eq!(config, SynthConfig { images: 10, seed: 3, ..SynthConfig::default() });
        assert!(serde_json::from_str::<SynthConfig>(r#"{"imagez": 10}"#).is_err());
    }
}
