//! ODVG annotations (JSON Lines, the Open-GroundingDino / MM-Grounding-DINO training format):
//! reading both variants into [`Sample`]s, writing the grounding variant.
//!
//! Each non-blank line is one image: `{"filename", "height", "width", ...}` plus either
//!
//! - `"detection": {"instances": [{"bbox": [x0, y0, x1, y1], "label": int, "category": str}]}`,
//!   read when a `label_map` file (`{"0": "person", ...}`) is given. The caption is the prompt
//!   of the label-map names sorted by label ([`crate::dataset::category_prompt`]), the same
//!   for every record; phrase `i` is the `i`-th label, `category_id` = label. `category`
//!   is optional; when present it must name the instance's label (compared lower-cased).
//! - `"grounding": {"caption": str, "regions": [{"bbox", "phrase", "tokens_positive"}]}`, read
//!   when there is no label map. `bbox` is one box or a list of boxes; `phrase` a string or a
//!   list of strings (joined by spaces); `tokens_positive` (optional) a list of `[start, end)`
//!   character spans of the caption. The phrases of a sample are the distinct
//!   (phrase, spans) pairs of its regions, in order of first appearance.
//!
//! Boxes are `[x0, y0, x1, y1]` pixels. `image_id` (a glint extension other readers ignore) is
//! the record's id; without it the id is the record's index (0-based, blank lines skipped).
//! ODVG has no object area: every region's [`Region::area`] is `None` (the box area).
//!
//! Rules (also in `datasets/README.md`): blank lines are skipped. A line that is not JSON,
//! not an object, lacks a field or has a wrong type, an unknown label, a duplicate image id,
//! a span outside the caption or whose text is not the phrase, or a phrase without spans that
//! cannot be found in the caption rejects the file with one [`DataError::Format`] naming the
//! line. Spans of a phrase without `tokens_positive` are located: each piece of the phrase at
//! its first occurrence in the caption after the previous piece, matched exactly if possible,
//! else ignoring case. Boxes are clipped or dropped as for COCO, with a warning each.

use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use glint_core::geometry::BoxXyxy;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::dataset::{
    BoxCheck, Category, Dataset, as_four_numbers, as_id, as_size, as_str, category_prompt_inner, check_box,
    checked_box, describe, json_error_message, normalize_name, optional, read_file, relative_file_name,
    required, show_box, verify_spans, write_file,
};
use crate::error::DataError;
use crate::sample::{Phrase, Region, Sample};

/// Loads a label map `{"0": "person", "1": "bicycle", ...}`: categories sorted by label.
pub fn load_label_map(path: &Path) -> Result<Vec<Category>, DataError> {
    let bytes = read_file(path)?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
        DataError::format(path, format!(":{}:{}", e.line(), e.column()), json_error_message(&e))
    })?;
    let fail = |location: String, message: String| DataError::format(path, location, message);
    let map = value.as_object().ok_or_else(|| {
        fail(
            String::new(),
            format!("a label map must be an object {{\"0\": \"name\", ...}}, found {}", describe(&value)),
        )
    })?;
    let mut categories = Vec::with_capacity(map.len());
    let mut labels = HashSet::new();
    for (key, name) in map {
        let at = || format!(" (label \"{key}\")");
        let id: u64 = key
            .trim()
            .parse()
            .map_err(|_| fail(at(), "a label must be a non-negative integer written as a string".into()))?;
        if !labels.insert(id) {
            return Err(fail(at(), format!("label {id} appears twice")));
        }
        let name = as_str(name, "name").map_err(|m| fail(at(), m))?;
        categories.push(Category { id, name: name.to_owned() });
    }
    categories.sort_by_key(|c| c.id);
    Ok(categories)
}

/// What a record's annotation is read as.
enum Variant {
    /// `detection` records, with the label map's caption and phrases (shared by every sample).
    Detection { caption: Arc<str>, phrases: Arc<[Phrase]>, phrase_of_label: HashMap<u64, usize> },
    /// `grounding` records.
    Grounding,
}

/// Loads an ODVG `.jsonl` file; image paths are `image_root` joined with `filename`.
///
/// With `label_map` the records' `detection` field is read (object detection data), without
/// it their `grounding` field (grounding data), as Open-GroundingDino decides.
pub fn load_odvg(path: &Path, image_root: &Path, label_map: Option<&Path>) -> Result<Dataset, DataError> {
    let (variant, categories) = match label_map {
        Some(map_path) => {
            let categories = load_label_map(map_path)?;
            let (caption, phrases) =
                category_prompt_inner(&categories).map_err(|m| DataError::format(map_path, "", m))?;
            let phrase_of_label = categories.iter().enumerate().map(|(i, c)| (c.id, i)).collect();
            (Variant::Detection { caption, phrases, phrase_of_label }, categories)
        }
        None => (Variant::Grounding, Vec::new()),
    };

    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let path_text = path.display().to_string();
    let mut samples = Vec::new();
    let mut warnings = Vec::new();
    let mut image_ids = HashSet::new();
    for (line_index, line) in std::io::BufReader::new(file).split(b'\n').enumerate() {
        let line = line.map_err(|e| DataError::io(path, e))?;
        if line.trim_ascii().is_empty() {
            continue;
        }
        let line_number = line_index + 1;
        let value: Value = serde_json::from_slice(&line).map_err(|e| {
            DataError::format(path, format!(":{line_number}:{}", e.column()), json_error_message(&e))
        })?;
        let at = format!("{path_text}:{line_number}");
        let sample = read_record(&value, samples.len() as u64, image_root, &variant, &at, &mut warnings)
            .map_err(|m| DataError::format(path, format!(":{line_number}"), m))?;
        if !image_ids.insert(sample.image_id) {
            return Err(DataError::format(
                path,
                format!(":{line_number}"),
                format!("duplicate image id {}", sample.image_id),
            ));
        }
        samples.push(sample);
    }
    Ok(Dataset { samples, categories, warnings })
}

/// One line's record as a sample; `at` ("file:line") prefixes its warnings.
fn read_record(
    value: &Value,
    record_index: u64,
    image_root: &Path,
    variant: &Variant,
    at: &str,
    warnings: &mut Vec<String>,
) -> Result<Sample, String> {
    let record =
        value.as_object().ok_or_else(|| format!("expected a JSON object, found {}", describe(value)))?;
    let file_name = as_str(required(record, "filename")?, "filename")?;
    if file_name.is_empty() {
        return Err("\"filename\" is empty".into());
    }
    let width = as_size(required(record, "width")?, "width")?;
    let height = as_size(required(record, "height")?, "height")?;
    let image_id = match optional(record, "image_id") {
        Some(v) => as_id(v, "image_id")?,
        None => record_index,
    };
    let mut sample = Sample {
        image_path: image_root.join(file_name),
        image_id,
        width,
        height,
        caption: Arc::default(),
        phrases: Arc::default(),
        regions: Vec::new(),
    };
    match variant {
        Variant::Detection { caption, phrases, phrase_of_label } => {
            sample.caption = Arc::clone(caption);
            sample.phrases = Arc::clone(phrases);
            read_detection(record, phrase_of_label, &mut sample, at, warnings)?;
        }
        Variant::Grounding => read_grounding(record, &mut sample, at, warnings)?,
    }
    Ok(sample)
}

fn object<'a>(value: &'a Value, what: &str) -> Result<&'a Map<String, Value>, String> {
    value.as_object().ok_or_else(|| format!("\"{what}\" must be an object, found {}", describe(value)))
}

fn array<'a>(value: &'a Value, what: &str) -> Result<&'a Vec<Value>, String> {
    value.as_array().ok_or_else(|| format!("\"{what}\" must be an array, found {}", describe(value)))
}

fn xyxy([x0, y0, x1, y1]: [f64; 4]) -> BoxXyxy {
    BoxXyxy::new(x0 as f32, y0 as f32, x1 as f32, y1 as f32)
}

fn read_detection(
    record: &Map<String, Value>,
    phrase_of_label: &HashMap<u64, usize>,
    sample: &mut Sample,
    at: &str,
    warnings: &mut Vec<String>,
) -> Result<(), String> {
    let detection = object(required(record, "detection")?, "detection")?;
    let instances = array(required(detection, "instances")?, "instances")?;
    for (k, instance) in instances.iter().enumerate() {
        let in_instance = |m: String| format!("instance {k}: {m}");
        let instance = instance
            .as_object()
            .ok_or_else(|| in_instance(format!("expected an object, found {}", describe(instance))))?;
        let bbox =
            required(instance, "bbox").and_then(|v| as_four_numbers(v, "bbox")).map_err(in_instance)?;
        let label = required(instance, "label").and_then(|v| as_id(v, "label")).map_err(in_instance)?;
        let &phrase = phrase_of_label
            .get(&label)
            .ok_or_else(|| in_instance(format!("label {label} is not in the label map")))?;
        if let Some(category) = optional(instance, "category") {
            let category = as_str(category, "category").map_err(in_instance)?;
            let expected = sample.phrases.get(phrase).map(|p| p.text.as_str()).unwrap_or_default();
            if normalize_name(category) != expected {
                return Err(in_instance(format!(
                    "category \"{category}\" is not label {label}'s name \"{expected}\" in the label map"
                )));
            }
        }
        if let Some(bbox) =
            checked_box(xyxy(bbox), sample.width, sample.height, || format!("{at} (instance {k})"), warnings)
        {
            sample.regions.push(Region { bbox, phrase, iscrowd: false, area: None });
        }
    }
    Ok(())
}

fn read_grounding(
    record: &Map<String, Value>,
    sample: &mut Sample,
    at: &str,
    warnings: &mut Vec<String>,
) -> Result<(), String> {
    let grounding = object(required(record, "grounding")?, "grounding")?;
    sample.caption = as_str(required(grounding, "caption")?, "caption")?.into();
    let caption: Vec<char> = sample.caption.chars().collect();
    let mut phrases = Vec::new();
    let regions = array(required(grounding, "regions")?, "regions")?;
    let mut phrase_index: HashMap<(String, Vec<Range<usize>>), usize> = HashMap::new();
    for (k, region) in regions.iter().enumerate() {
        let in_region = |m: String| format!("region {k}: {m}");
        let region = region
            .as_object()
            .ok_or_else(|| in_region(format!("expected an object, found {}", describe(region))))?;
        let pieces = required(region, "phrase").and_then(phrase_pieces).map_err(in_region)?;
        let text = pieces.join(" ");
        let given = optional(region, "tokens_positive").map(spans_of).transpose().map_err(in_region)?;
        let spans = match given {
            Some(spans) if !spans.is_empty() => {
                verify_spans(&caption, &spans, &text).map_err(in_region)?;
                spans
            }
            _ => locate(&caption, &pieces).map_err(in_region)?,
        };
        let boxes = required(region, "bbox").and_then(boxes_of).map_err(in_region)?;
        let next = phrases.len();
        let phrase = *phrase_index.entry((text.clone(), spans.clone())).or_insert(next);
        if phrase == next {
            phrases.push(Phrase { text, spans, category_id: None });
        }
        for bbox in boxes {
            if let Some(bbox) = checked_box(
                xyxy(bbox),
                sample.width,
                sample.height,
                || format!("{at} (region {k})"),
                warnings,
            ) {
                sample.regions.push(Region { bbox, phrase, iscrowd: false, area: None });
            }
        }
    }
    sample.phrases = phrases.into();
    Ok(())
}

/// `"phrase"`: a string, or a non-empty list of strings (MM-Grounding-DINO writes a list
/// when the phrase's spans are not contiguous).
fn phrase_pieces(value: &Value) -> Result<Vec<&str>, String> {
    let bad = || format!("\"phrase\" must be a string or a list of strings, found {}", describe(value));
    match value {
        Value::String(s) => Ok(vec![s.as_str()]),
        Value::Array(items) if !items.is_empty() => {
            items.iter().map(|v| v.as_str().ok_or_else(bad)).collect()
        }
        _ => Err(bad()),
    }
}

/// `"tokens_positive"`: a list of `[start, end]` character offsets.
fn spans_of(value: &Value) -> Result<Vec<Range<usize>>, String> {
    let bad = || {
        format!(
            "\"tokens_positive\" must be a list of [start, end] pairs of integers, found {}",
            describe(value)
        )
    };
    let items = value.as_array().ok_or_else(bad)?;
    items
        .iter()
        .map(|pair| match pair.as_array().map(Vec::as_slice) {
            Some([start, end]) => {
                let offset = |v: &Value| v.as_u64().and_then(|n| usize::try_from(n).ok());
                match (offset(start), offset(end)) {
                    (Some(start), Some(end)) => Ok(start..end),
                    _ => Err(bad()),
                }
            }
            _ => Err(bad()),
        })
        .collect()
}

/// `"bbox"`: one `[x0, y0, x1, y1]` box, or a list of them.
fn boxes_of(value: &Value) -> Result<Vec<[f64; 4]>, String> {
    let items = array(value, "bbox")?;
    if items.iter().all(Value::is_array) && !items.is_empty() {
        items.iter().map(|b| as_four_numbers(b, "bbox")).collect()
    } else {
        Ok(vec![as_four_numbers(value, "bbox")?])
    }
}

/// Finds each piece of a phrase in the caption, in order: the first occurrence after the
/// previous piece, exact if there is one, else ignoring case.
fn locate(caption: &[char], pieces: &[&str]) -> Result<Vec<Range<usize>>, String> {
    let mut spans = Vec::with_capacity(pieces.len());
    let mut from = 0;
    for piece in pieces {
        let needle: Vec<char> = piece.trim().chars().collect();
        if needle.is_empty() {
            return Err("\"phrase\" is empty".into());
        }
        let same_case = |a: &char, b: &char| a == b;
        let any_case = |a: &char, b: &char| a == b || a.to_lowercase().eq(b.to_lowercase());
        let start = find(caption, &needle, from, same_case)
            .or_else(|| find(caption, &needle, from, any_case))
            .ok_or_else(|| {
                format!("phrase \"{piece}\" has no \"tokens_positive\" and does not occur in the caption")
            })?;
        spans.push(start..start + needle.len());
        from = start + needle.len();
    }
    Ok(spans)
}

fn find(haystack: &[char], needle: &[char], from: usize, eq: impl Fn(&char, &char) -> bool) -> Option<usize> {
    let rest = haystack.get(from..)?;
    rest.windows(needle.len())
        .position(|window| window.iter().zip(needle).all(|(a, b)| eq(a, b)))
        .map(|i| i + from)
}

#[derive(Serialize)]
struct OutRecord<'a> {
    filename: String,
    height: u32,
    width: u32,
    image_id: u64,
    grounding: OutGrounding<'a>,
}

#[derive(Serialize)]
struct OutGrounding<'a> {
    caption: &'a str,
    regions: Vec<OutRegion<'a>>,
}

#[derive(Serialize)]
struct OutRegion<'a> {
    bbox: BoxXyxy,
    phrase: &'a str,
    tokens_positive: Vec<[usize; 2]>,
}

/// Writes samples as ODVG grounding records, one line each (atomically). `filename`s are
/// the image paths relative to `image_root` (absolute paths outside it are written as they
/// are); each region is written with its phrase's text and spans as `tokens_positive`, and
/// `image_id` is written too. ODVG stores no object area: [`Region::area`] is not written.
///
/// [`load_odvg`] (without label map) with the same `image_root` gives back exactly the
/// samples written, except that every region's area comes back as `None`. The writer refuses, with [`DataError::Invalid`], a sample that could not
/// come back the same: a phrase with no region (grounding records hold only phrases with a
/// box), phrases not listed in the order regions first use them, two phrases with the same
/// text and spans, a phrase with a category id, spans that are empty, outside the caption or
/// do not spell the phrase, a crowd region, a box the loader would clip or drop, a duplicate
/// image id, or an image path outside `image_root` that is not absolute.
pub fn write_odvg(path: &Path, image_root: &Path, samples: &[Sample]) -> Result<(), DataError> {
    let invalid = |message: String| DataError::Invalid(format!("cannot write {}: {message}", path.display()));
    let mut out = Vec::new();
    let mut image_ids = HashSet::new();
    for sample in samples {
        let at = |message: String| invalid(format!("image id {}: {message}", sample.image_id));
        if !image_ids.insert(sample.image_id) {
            return Err(at("duplicate image id".into()));
        }
        if sample.width == 0 || sample.height == 0 {
            return Err(at(format!("image size {}x{} is empty", sample.width, sample.height)));
        }
        let filename = relative_file_name(&sample.image_path, image_root).map_err(&at)?;
        check_phrases_for_odvg(sample).map_err(&at)?;
        let mut regions = Vec::with_capacity(sample.regions.len());
        for (index, region) in sample.regions.iter().enumerate() {
            let at = |message: String| at(format!("region {index}: {message}"));
            let phrase = sample
                .phrases
                .get(region.phrase)
                .ok_or_else(|| at(format!("phrase index {} is out of range", region.phrase)))?;
            if region.iscrowd {
                return Err(at("crowd regions cannot be stored in ODVG grounding records".into()));
            }
            if !matches!(check_box(region.bbox, sample.width, sample.height), BoxCheck::Kept(_)) {
                return Err(at(format!(
                    "box {} is not inside the {}x{} image with positive area",
                    show_box(region.bbox),
                    sample.width,
                    sample.height
                )));
            }
            regions.push(OutRegion {
                bbox: region.bbox,
                phrase: &phrase.text,
                tokens_positive: phrase.spans.iter().map(|s| [s.start, s.end]).collect(),
            });
        }
        let record = OutRecord {
            filename,
            height: sample.height,
            width: sample.width,
            image_id: sample.image_id,
            grounding: OutGrounding { caption: &sample.caption, regions },
        };
        serde_json::to_writer(&mut out, &record).map_err(|e| at(e.to_string()))?;
        out.push(b'\n');
    }
    write_file(path, &out)
}

/// The phrase conditions under which a grounding record reads back as the same sample.
fn check_phrases_for_odvg(sample: &Sample) -> Result<(), String> {
    let caption: Vec<char> = sample.caption.chars().collect();
    let mut seen = HashSet::new();
    for (i, phrase) in sample.phrases.iter().enumerate() {
        if phrase.category_id.is_some() {
            return Err(format!(
                "phrase {i} (\"{}\") has a category id, which ODVG grounding records cannot store (use write_coco)",
                phrase.text
            ));
        }
        verify_spans(&caption, &phrase.spans, &phrase.text).map_err(|m| format!("phrase {i}: {m}"))?;
        if !seen.insert((&phrase.text, &phrase.spans)) {
            return Err(format!(
                "phrase {i} (\"{}\") repeats an earlier phrase's text and spans",
                phrase.text
            ));
        }
    }
    // Reading gives phrases in the order regions first use them.
    let mut next = 0;
    for region in &sample.regions {
        if region.phrase > next {
            return Err(format!(
                "phrase {} is used by a region before phrase {next}; list phrases in the order regions first use them",
                region.phrase
            ));
        }
        if region.phrase == next {
            next += 1;
        }
    }
    if let Some(unused) = sample.phrases.get(next) {
        return Err(format!(
            "phrase {next} (\"{}\") has no region; ODVG grounding records hold only phrases with boxes",
            unused.text
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_prefers_exact_case_then_any_case_and_keeps_order() {
        let caption: Vec<char> = "A dog chases a Dog and a cat".chars().collect();
        assert_eq!(locate(&caption, &["Dog"]).unwrap(), vec![15..18]);
        assert_eq!(locate(&caption, &["a dog"]).unwrap(), vec![0..5]);
        assert_eq!(locate(&caption, &["dog", "cat"]).unwrap(), vec![2..5, 25..28]);
        assert_eq!(
            locate(&caption, &["cat", "dog"]).unwrap_err(),
            "phrase \"dog\" has no \"tokens_positive\" and does not occur in the caption"
        );
        assert!(locate(&caption, &["  "]).is_err());
        assert!(locate(&[], &["x"]).is_err());
    }

    #[test]
    fn bbox_may_be_one_box_or_a_list() {
        assert_eq!(boxes_of(&serde_json::json!([1, 2, 3, 4])).unwrap(), vec![[1.0, 2.0, 3.0, 4.0]]);
        assert_eq!(boxes_of(&serde_json::json!([[1, 2, 3, 4], [5, 6, 7, 8.5]])).unwrap().len(), 2);
        assert!(boxes_of(&serde_json::json!([])).is_err());
        assert!(boxes_of(&serde_json::json!([[1, 2, 3]])).is_err());
        assert!(boxes_of(&serde_json::json!("box")).is_err());
    }
}
