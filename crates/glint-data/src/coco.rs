//! COCO detection annotations (`instances_*.json`): reading into [`Sample`]s and writing back.
//!
//! Reading: every image becomes a sample (images without annotations too: evaluation needs
//! them), in file order. The caption is the prompt of the category names in file order
//! ([`crate::dataset::category_prompt`]), the same for every image, and phrase `i` is
//! category `i`. A box `[x, y, width, height]` becomes `BoxXyxy` pixels (corners computed in
//! f64); `iscrowd` (0/1 or a boolean, default 0) is kept. `area` (optional, a finite number
//! ≥ 0, e.g. the segmentation area COCO evaluation buckets by) becomes [`Region::area`] as
//! given, as pycocotools uses it, even for a box the loader clips; an area equal to the stored
//! box's area means the same as none and is kept as `None`, so a file written by
//! [`write_coco`] reads back as it was. Fields other than `id`, `file_name`, `width`,
//! `height`, `image_id`, `category_id`, `bbox`, `iscrowd`, `area` and `name` (`segmentation`,
//! `info`, ...) are ignored.
//!
//! Rules (also in `datasets/README.md`): `images` and `categories` are required, `annotations`
//! may be absent (image-info files). A missing field, a wrong type, a duplicate image /
//! annotation / category id, an annotation naming an unknown image or category, or category
//! names that are empty or the same once lower-cased, or an `area` that is not a finite
//! number ≥ 0, reject the file with one
//! [`DataError::Format`] naming the id. A box partly outside its image is clipped, a box
//! with negative width or height, entirely outside, or of zero area once clipped is dropped;
//! each such box gives a warning in [`Dataset::warnings`].

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use glint_core::geometry::BoxXyxy;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::dataset::{
    BoxCheck, Category, Dataset, as_four_numbers, as_id, as_size, as_str, category_prompt_inner, check_box,
    checked_box, json_error_message, read_file, relative_file_name, write_file,
};
use crate::error::DataError;
use crate::sample::{Region, Sample};

/// The file as parsed: only the fields glint reads, each kept as raw JSON so that a wrong
/// type is reported with the id of its record rather than as a bare parse position. Unread
/// fields (`segmentation` above all) are skipped without being stored.
#[derive(Deserialize)]
struct RawCoco {
    images: Option<Vec<Object<RawImage>>>,
    annotations: Option<Vec<Object<RawAnnotation>>>,
    categories: Option<Vec<Object<RawCategory>>>,
}

/// A record that must be a JSON object. (A derived struct would also accept an array of its
/// fields in order, which no COCO file means.)
struct Object<T>(T);

/// What a record is called in "expected ..." messages.
trait Described {
    const WHAT: &'static str;
}

impl Described for RawCoco {
    const WHAT: &'static str = "a COCO object with \"images\", \"annotations\" and \"categories\"";
}
impl Described for RawImage {
    const WHAT: &'static str = "an image object";
}
impl Described for RawAnnotation {
    const WHAT: &'static str = "an annotation object";
}
impl Described for RawCategory {
    const WHAT: &'static str = "a category object";
}

impl<'de, T: Deserialize<'de> + Described> Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de> + Described> serde::de::Visitor<'de> for ObjectVisitor<T> {
            type Value = Object<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(T::WHAT)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Object)
            }
        }
        deserializer.deserialize_map(ObjectVisitor(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
struct RawImage {
    id: Option<Value>,
    file_name: Option<Value>,
    width: Option<Value>,
    height: Option<Value>,
}

#[derive(Deserialize)]
struct RawAnnotation {
    id: Option<Value>,
    image_id: Option<Value>,
    category_id: Option<Value>,
    bbox: Option<Value>,
    iscrowd: Option<Value>,
    area: Option<Value>,
}

#[derive(Deserialize)]
struct RawCategory {
    id: Option<Value>,
    name: Option<Value>,
}

/// `area`: a finite number ≥ 0 that fits an f32.
fn as_area(value: &Value) -> Result<f32, String> {
    match value.as_f64() {
        Some(a) if a >= 0.0 && (a as f32).is_finite() => Ok(a as f32),
        _ => Err(format!("\"area\" must be a finite number ≥ 0, found {}", crate::dataset::describe(value))),
    }
}

/// A required field of a raw record.
fn field<'a>(value: &'a Option<Value>, key: &str) -> Result<&'a Value, String> {
    value.as_ref().ok_or_else(|| format!("missing field \"{key}\""))
}

/// Loads a COCO detection json; image paths are `image_root` joined with `file_name`.
pub fn load_coco(path: &Path, image_root: &Path) -> Result<Dataset, DataError> {
    let bytes = read_file(path)?;
    let Object(raw): Object<RawCoco> = serde_json::from_slice(&bytes).map_err(|e| {
        DataError::format(path, format!(":{}:{}", e.line(), e.column()), json_error_message(&e))
    })?;
    drop(bytes);
    let fail = |location: String, message: String| DataError::format(path, location, message);

    // Categories, in file order, become the caption's phrases.
    let raw_categories =
        raw.categories.ok_or_else(|| fail(String::new(), "missing field \"categories\"".into()))?;
    let mut categories = Vec::with_capacity(raw_categories.len());
    let mut phrase_of_category = HashMap::new();
    for (index, Object(raw_category)) in raw_categories.iter().enumerate() {
        let at = || format!(" (categories[{index}])");
        let id = field(&raw_category.id, "id").and_then(|v| as_id(v, "id")).map_err(|m| fail(at(), m))?;
        let at = || format!(" (category id {id})");
        let name =
            field(&raw_category.name, "name").and_then(|v| as_str(v, "name")).map_err(|m| fail(at(), m))?;
        if phrase_of_category.insert(id, index).is_some() {
            return Err(fail(at(), "duplicate category id".into()));
        }
        categories.push(Category { id, name: name.to_owned() });
    }
    let (caption, phrases) = category_prompt_inner(&categories).map_err(|m| fail(String::new(), m))?;

    // Images, in file order, each a sample.
    let raw_images = raw.images.ok_or_else(|| fail(String::new(), "missing field \"images\"".into()))?;
    let mut samples = Vec::with_capacity(raw_images.len());
    let mut sample_of_image = HashMap::with_capacity(raw_images.len());
    for (index, Object(raw_image)) in raw_images.iter().enumerate() {
        let at = || format!(" (images[{index}])");
        let id = field(&raw_image.id, "id").and_then(|v| as_id(v, "id")).map_err(|m| fail(at(), m))?;
        let at = || format!(" (image id {id})");
        let file_name = field(&raw_image.file_name, "file_name")
            .and_then(|v| as_str(v, "file_name"))
            .and_then(|s| if s.is_empty() { Err("\"file_name\" is empty".to_owned()) } else { Ok(s) })
            .map_err(|m| fail(at(), m))?;
        let width =
            field(&raw_image.width, "width").and_then(|v| as_size(v, "width")).map_err(|m| fail(at(), m))?;
        let height = field(&raw_image.height, "height")
            .and_then(|v| as_size(v, "height"))
            .map_err(|m| fail(at(), m))?;
        if sample_of_image.insert(id, samples.len()).is_some() {
            return Err(fail(at(), "duplicate image id".into()));
        }
        samples.push(Sample {
            image_path: image_root.join(file_name),
            image_id: id,
            width,
            height,
            // Shared, not copied: one caption allocation for the whole dataset.
            caption: Arc::clone(&caption),
            phrases: Arc::clone(&phrases),
            regions: Vec::new(),
        });
    }

    // Annotations, in file order, become regions of their image's sample.
    let mut warnings = Vec::new();
    let mut annotation_ids = HashSet::new();
    let path_text = path.display().to_string();
    for (index, Object(annotation)) in raw.annotations.unwrap_or_default().iter().enumerate() {
        let at = || format!(" (annotations[{index}])");
        let id = field(&annotation.id, "id").and_then(|v| as_id(v, "id")).map_err(|m| fail(at(), m))?;
        let at = || format!(" (annotation id {id})");
        if !annotation_ids.insert(id) {
            return Err(fail(at(), "duplicate annotation id".into()));
        }
        let image_id = field(&annotation.image_id, "image_id")
            .and_then(|v| as_id(v, "image_id"))
            .map_err(|m| fail(at(), m))?;
        let category_id = field(&annotation.category_id, "category_id")
            .and_then(|v| as_id(v, "category_id"))
            .map_err(|m| fail(at(), m))?;
        let [x, y, w, h] = field(&annotation.bbox, "bbox")
            .and_then(|v| as_four_numbers(v, "bbox"))
            .map_err(|m| fail(at(), m))?;
        let iscrowd = match &annotation.iscrowd {
            None => false,
            Some(Value::Bool(flag)) => *flag,
            Some(v) if v.as_u64() == Some(0) => false,
            Some(v) if v.as_u64() == Some(1) => true,
            Some(v) => {
                return Err(fail(
                    at(),
                    format!("\"iscrowd\" must be 0, 1 or a boolean, found {}", crate::dataset::describe(v)),
                ));
            }
        };
        let area = annotation.area.as_ref().map(as_area).transpose().map_err(|m| fail(at(), m))?;
        let &sample_index = sample_of_image
            .get(&image_id)
            .ok_or_else(|| fail(at(), format!("image id {image_id} is not in \"images\"")))?;
        let &phrase = phrase_of_category
            .get(&category_id)
            .ok_or_else(|| fail(at(), format!("category id {category_id} is not in \"categories\"")))?;
        let Some(sample) = samples.get_mut(sample_index) else {
            continue;
        };
        // Corners in f64 so that x + width lands on the corner the writer meant.
        let raw_box = BoxXyxy::new(x as f32, y as f32, (x + w) as f32, (y + h) as f32);
        let prefix = || format!("{path_text} (annotation id {id})");
        if let Some(bbox) = checked_box(raw_box, sample.width, sample.height, prefix, &mut warnings) {
            // The box area is what `None` stands for, and what the writer writes for it.
            let area = area.filter(|&a| a != bbox.area());
            sample.regions.push(Region { bbox, phrase, iscrowd, area });
        }
    }

    Ok(Dataset { samples, categories, warnings })
}

#[derive(Serialize)]
struct OutCoco<'a> {
    images: Vec<OutImage>,
    annotations: Vec<OutAnnotation>,
    categories: Vec<OutCategory<'a>>,
}

#[derive(Serialize)]
struct OutImage {
    id: u64,
    file_name: String,
    width: u32,
    height: u32,
}

#[derive(Serialize)]
struct OutAnnotation {
    id: u64,
    image_id: u64,
    category_id: u64,
    bbox: [f64; 4],
    /// Written as an f32 (its shortest decimal), so the loader reads back the same f32.
    area: f32,
    iscrowd: u8,
}

#[derive(Serialize)]
struct OutCategory<'a> {
    id: u64,
    name: &'a str,
}

/// Writes samples as a COCO detection json (atomically). `file_name`s are the image paths
/// relative to `image_root` (absolute paths outside it are written as they are).
///
/// COCO stores categories, not captions: each region is written with its phrase's
/// `category_id`, which must be one of `categories`; annotation ids are numbered from 1.
/// `area` is [`Region::area_or_box`]. [`load_coco`] with the same `image_root` gives back the
/// samples exactly when they are in the form it produces (the caption and phrases of
/// [`crate::dataset::category_prompt`], boxes inside their image with positive area, no
/// `Some` area equal to the box area).
///
/// Fails with [`DataError::Invalid`] on a sample the file cannot hold: a region whose phrase
/// has no category id or an unknown one, a box the loader would clip or drop, an area that is
/// not a finite number ≥ 0, a duplicate
/// image id, an image path outside `image_root` that is not absolute, or categories that do
/// not make a prompt (empty, duplicate ids or names).
pub fn write_coco(
    path: &Path,
    image_root: &Path,
    categories: &[Category],
    samples: &[Sample],
) -> Result<(), DataError> {
    let invalid = |message: String| DataError::Invalid(format!("cannot write {}: {message}", path.display()));
    category_prompt_inner(categories).map_err(&invalid)?;
    let mut category_ids = HashSet::new();
    for category in categories {
        if !category_ids.insert(category.id) {
            return Err(invalid(format!("duplicate category id {}", category.id)));
        }
    }

    let mut images = Vec::with_capacity(samples.len());
    let mut annotations = Vec::new();
    let mut image_ids = HashSet::new();
    for sample in samples {
        let id = sample.image_id;
        let at = |message: String| invalid(format!("image id {id}: {message}"));
        if !image_ids.insert(id) {
            return Err(at("duplicate image id".into()));
        }
        if sample.width == 0 || sample.height == 0 {
            return Err(at(format!("image size {}x{} is empty", sample.width, sample.height)));
        }
        let file_name = relative_file_name(&sample.image_path, image_root).map_err(&at)?;
        for (index, region) in sample.regions.iter().enumerate() {
            let at = |message: String| at(format!("region {index}: {message}"));
            let phrase = sample
                .phrases
                .get(region.phrase)
                .ok_or_else(|| at(format!("phrase index {} is out of range", region.phrase)))?;
            let category_id = phrase
                .category_id
                .ok_or_else(|| at(format!("phrase \"{}\" has no category id", phrase.text)))?;
            if !category_ids.contains(&category_id) {
                return Err(at(format!("category id {category_id} is not among the categories")));
            }
            if !matches!(check_box(region.bbox, sample.width, sample.height), BoxCheck::Kept(_)) {
                return Err(at(format!(
                    "box {} is not inside the {}x{} image with positive area",
                    crate::dataset::show_box(region.bbox),
                    sample.width,
                    sample.height
                )));
            }
            let area = region.area_or_box();
            if !(area.is_finite() && area >= 0.0) {
                return Err(at(format!("area {area} is not a finite number ≥ 0")));
            }
            let bbox = xywh_for_reading_back(region.bbox);
            annotations.push(OutAnnotation {
                id: annotations.len() as u64 + 1,
                image_id: id,
                category_id,
                bbox,
                area,
                iscrowd: u8::from(region.iscrowd),
            });
        }
        images.push(OutImage { id, file_name, width: sample.width, height: sample.height });
    }

    let categories = categories.iter().map(|c| OutCategory { id: c.id, name: &c.name }).collect();
    let json = serde_json::to_vec(&OutCoco { images, annotations, categories })
        .map_err(|e| invalid(e.to_string()))?;
    write_file(path, &json)
}

/// `[x, y, width, height]` such that the loader's `(x + width) as f32` gives back the f32
/// corner exactly, written with the fewest decimals that do (so `[10.5, 2, 30, 4]` stays short).
fn xywh_for_reading_back(b: BoxXyxy) -> [f64; 4] {
    // What the loader reads for a coordinate written as its shortest f32 decimal.
    fn as_read(v: f32) -> f64 {
        v.to_string().parse().unwrap_or(f64::from(v))
    }
    fn side(start: f32, end: f32) -> (f64, f64) {
        let start_read = as_read(start);
        let exact = f64::from(end) - start_read;
        // The width with the fewest decimals that lands on `end` (so corners rounded to 0.01
        // give widths like 177.68, not the f32 difference 177.68001).
        let width = (0..=9)
            .map(|decimals| {
                let scale = 10f64.powi(decimals);
                (exact * scale).round() / scale
            })
            .find(|&width| (start_read + width) as f32 == end)
            .unwrap_or(exact);
        (start_read, width)
    }
    let (x, w) = side(b.x0, b.x1);
    let (y, h) = side(b.y0, b.y1);
    [x, y, w, h]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xywh_round_trips_awkward_floats() {
        let values = [0.0f32, 0.1, 0.3, 1.0 / 3.0, 12.7, 99.99, 639.99, 1e-3, 4095.123, 123456.79];
        for &x0 in &values {
            for &x1 in &values {
                if x1 <= x0 {
                    continue;
                }
                let [x, _, w, _] = xywh_for_reading_back(BoxXyxy::new(x0, 0.0, x1, 1.0));
                // Through JSON text, as the loader sees it.
                let text = serde_json::to_string(&[x, w]).unwrap();
                let [x, w]: [f64; 2] = serde_json::from_str(&text).unwrap();
                assert_eq!((x as f32, (x + w) as f32), (x0, x1), "{text}");
            }
        }
        // Corners with two decimals give a width with two decimals.
        let [x, y, w, h] = xywh_for_reading_back(BoxXyxy::new(144.95, 142.87, 322.63, 302.49));
        assert_eq!(serde_json::to_string(&[x, y, w, h]).unwrap(), "[144.95,142.87,177.68,159.62]");
    }
}
