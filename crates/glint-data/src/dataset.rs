//! [`Dataset`]: what a loader returns — the samples, the categories (for detection data) and
//! the warnings about annotations it had to fix or drop.
//!
//! Also the rules every loader and writer shares: how category names become the detection
//! caption ([`category_prompt`]), how boxes are checked against the image (clip or drop), how
//! JSON values are read with messages that say what was expected and what was found.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use glint_core::geometry::BoxXyxy;
use glint_core::prompt::{Prompt, PromptError};
use serde_json::Value;

use crate::error::DataError;
use crate::sample::{Phrase, Sample};

/// A detection category: its id in the source file and its name as written there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Category {
    pub id: u64,
    pub name: String,
}

/// A loaded annotation file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Dataset {
    /// One sample per image (COCO) or per record (ODVG), in file order.
    pub samples: Vec<Sample>,
    /// The categories in file order (COCO `categories`, ODVG `label_map` sorted by label);
    /// empty for grounding data.
    pub categories: Vec<Category>,
    /// One line per box that was clipped or dropped, naming the file and the record.
    pub warnings: Vec<String>,
}

/// The caption and phrases of detection data: `Prompt::new(category names)`'s caption, phrase
/// `i` is category `i` (its lower-cased name, its span in the caption, its id). Every sample
/// of a detection dataset shares this same caption: clone the `Arc`s, not their contents.
///
/// Fails when there are no categories, a name is empty or contains `.` or `?` (they separate
/// phrases), or two names are the same phrase once lower-cased (the caption could not tell them
/// apart). The message names the category by id.
pub fn category_prompt(categories: &[Category]) -> Result<(Arc<str>, Arc<[Phrase]>), DataError> {
    category_prompt_inner(categories).map_err(DataError::Invalid)
}

pub(crate) fn category_prompt_inner(categories: &[Category]) -> Result<(Arc<str>, Arc<[Phrase]>), String> {
    if categories.is_empty() {
        return Err("there are no categories".to_owned());
    }
    // Make each name a prompt of its own, to name the category of a bad name and of collisions.
    let mut seen: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    for category in categories {
        let normalized = match Prompt::new([category.name.as_str()]) {
            Ok(single) => single.phrases().concat(),
            Err(PromptError::Empty) => return Err(format!("category id {} has an empty name", category.id)),
            Err(e) => return Err(format!("category id {} \"{}\": {e}", category.id, category.name)),
        };
        if let Some(first) = seen.insert(normalized.clone(), category.id) {
            return Err(format!(
                "categories id {first} and id {} have the same name \"{normalized}\" (names are compared lower-cased)",
                category.id
            ));
        }
    }
    let prompt = Prompt::new(categories.iter().map(|c| c.name.as_str())).map_err(|e| e.to_string())?;
    let phrases = prompt
        .phrases()
        .iter()
        .zip(prompt.phrase_spans())
        .zip(categories)
        .map(|((text, span), category)| Phrase {
            text: text.clone(),
            spans: vec![span],
            category_id: Some(category.id),
        })
        .collect();
    Ok((prompt.caption().into(), phrases))
}

/// A name as it appears in a prompt: lower-cased, whitespace collapsed (empty if blank).
pub(crate) fn normalize_name(name: &str) -> String {
    Prompt::new([name]).map(|single| single.phrases().concat()).unwrap_or_default()
}

/// What the box rules decided for one annotated box.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum BoxCheck {
    /// Inside the image with positive area: kept as is.
    Kept(BoxXyxy),
    /// Partly outside the image: kept, clipped to it.
    Clipped(BoxXyxy),
    /// Unusable: dropped, for this reason.
    Dropped(&'static str),
}

/// The box rules: a box with negative width or height, or entirely outside the image, or with
/// zero area once clipped, is dropped; a box partly outside is clipped to the image.
pub(crate) fn check_box(raw: BoxXyxy, width: u32, height: u32) -> BoxCheck {
    let (w, h) = (width as f32, height as f32);
    if raw.x1 < raw.x0 || raw.y1 < raw.y0 {
        return BoxCheck::Dropped("has negative width or height");
    }
    if raw.x0 >= w || raw.y0 >= h || raw.x1 <= 0.0 || raw.y1 <= 0.0 {
        return BoxCheck::Dropped("lies entirely outside the image");
    }
    let clipped = raw.clip(w, h);
    if !clipped.is_valid() {
        BoxCheck::Dropped("has zero area")
    } else if clipped == raw {
        BoxCheck::Kept(raw)
    } else {
        BoxCheck::Clipped(clipped)
    }
}

/// Applies [`check_box`], pushing a warning for a box that is clipped or dropped (`prefix`
/// names the file and record; only called then). Returns the box to keep, if any.
pub(crate) fn checked_box(
    raw: BoxXyxy,
    width: u32,
    height: u32,
    prefix: impl FnOnce() -> String,
    warnings: &mut Vec<String>,
) -> Option<BoxXyxy> {
    match check_box(raw, width, height) {
        BoxCheck::Kept(b) => Some(b),
        BoxCheck::Clipped(b) => {
            warnings.push(format!(
                "{}: box {} extends outside the {width}x{height} image; clipped to {}",
                prefix(),
                show_box(raw),
                show_box(b)
            ));
            Some(b)
        }
        BoxCheck::Dropped(why) => {
            warnings.push(format!(
                "{}: box {} {why} ({width}x{height} image); dropped",
                prefix(),
                show_box(raw)
            ));
            None
        }
    }
}

pub(crate) fn show_box(b: BoxXyxy) -> String {
    format!("[{}, {}, {}, {}]", b.x0, b.y0, b.x1, b.y1)
}

/// The message of a JSON parse error without serde_json's " at line L column C" tail (the
/// position goes into the error's location instead).
pub(crate) fn json_error_message(err: &serde_json::Error) -> String {
    let text = err.to_string();
    let tail = format!(" at line {} column {}", err.line(), err.column());
    let message = text.strip_suffix(&tail).unwrap_or(&text);
    match err.classify() {
        // Valid JSON of the wrong shape: serde's message says what was expected.
        serde_json::error::Category::Data => message.to_owned(),
        _ => format!("invalid JSON: {message}"),
    }
}

/// A short rendering of a JSON value for "found ..." in messages.
pub(crate) fn describe(value: &Value) -> String {
    const LIMIT: usize = 40;
    let text = value.to_string();
    if text.chars().count() <= LIMIT {
        text
    } else {
        let mut short: String = text.chars().take(LIMIT).collect();
        short.push_str("...");
        short
    }
}

/// `obj[key]`, which must be present and not null.
pub(crate) fn required<'a>(obj: &'a serde_json::Map<String, Value>, key: &str) -> Result<&'a Value, String> {
    optional(obj, key).ok_or_else(|| format!("missing field \"{key}\""))
}

/// `obj[key]` if present and not null.
pub(crate) fn optional<'a>(obj: &'a serde_json::Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

/// A value that must be an id: a non-negative integer.
pub(crate) fn as_id(value: &Value, what: &str) -> Result<u64, String> {
    value
        .as_u64()
        .ok_or_else(|| format!("\"{what}\" must be a non-negative integer, found {}", describe(value)))
}

/// A value that must be an image side in pixels: an integer in `1..=u32::MAX`.
pub(crate) fn as_size(value: &Value, what: &str) -> Result<u32, String> {
    value
        .as_u64()
        .and_then(|v| u32::try_from(v).ok())
        .filter(|&v| v > 0)
        .ok_or_else(|| format!("\"{what}\" must be a positive integer (pixels), found {}", describe(value)))
}

/// A value that must be a string.
pub(crate) fn as_str<'a>(value: &'a Value, what: &str) -> Result<&'a str, String> {
    value.as_str().ok_or_else(|| format!("\"{what}\" must be a string, found {}", describe(value)))
}

/// A value that must be an array of exactly four numbers.
pub(crate) fn as_four_numbers(value: &Value, what: &str) -> Result<[f64; 4], String> {
    let bad = || format!("\"{what}\" must be an array of 4 numbers, found {}", describe(value));
    match value.as_array().map(Vec::as_slice) {
        Some([a, b, c, d]) => match (a.as_f64(), b.as_f64(), c.as_f64(), d.as_f64()) {
            (Some(a), Some(b), Some(c), Some(d)) => Ok([a, b, c, d]),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

/// The image's file name relative to `image_root`, as the writers store it: loading joins it
/// back onto the root. An absolute path outside the root is stored as is.
pub(crate) fn relative_file_name(image_path: &Path, image_root: &Path) -> Result<String, String> {
    let relative = match image_path.strip_prefix(image_root) {
        Ok(rel) => rel,
        Err(_) if image_path.is_absolute() => image_path,
        Err(_) => {
            return Err(format!(
                "image path {} is neither under the image root {} nor absolute",
                image_path.display(),
                image_root.display()
            ));
        }
    };
    if relative.as_os_str().is_empty() || image_root.join(relative) != image_path {
        return Err(format!(
            "image path {} does not name a file under {}",
            image_path.display(),
            image_root.display()
        ));
    }
    relative
        .to_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("image path {} is not valid UTF-8", image_path.display()))
}

/// The text a list of character spans covers, joined by single spaces.
pub(crate) fn span_text(caption: &[char], spans: &[Range<usize>]) -> String {
    spans
        .iter()
        .map(|span| caption.get(span.clone()).map(|c| c.iter().collect::<String>()).unwrap_or_default())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Checks that there are spans, each a non-empty range inside the caption, and that the text
/// they cover is `phrase` (compared lower-cased, with runs of whitespace collapsed, spans
/// joined by a space).
pub(crate) fn verify_spans(caption: &[char], spans: &[Range<usize>], phrase: &str) -> Result<(), String> {
    if spans.is_empty() {
        return Err(format!("phrase \"{phrase}\" has no span"));
    }
    for span in spans {
        if span.start >= span.end || span.end > caption.len() {
            return Err(format!(
                "span [{}, {}] of phrase \"{phrase}\" is not a non-empty range inside the caption ({} characters)",
                span.start,
                span.end,
                caption.len()
            ));
        }
    }
    let covered = span_text(caption, spans);
    if loose(&covered) != loose(phrase) {
        return Err(format!("the spans of phrase \"{phrase}\" cover \"{covered}\" in the caption"));
    }
    Ok(())
}

/// Lower-cased, whitespace-collapsed text, for comparing a phrase with the text its spans cover.
fn loose(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

/// Reads a whole file, naming it on failure.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, DataError> {
    std::fs::read(path).map_err(|e| DataError::io(path, e))
}

/// Writes a file atomically, naming it on failure.
pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    glint_core::io::write_atomic(path, bytes)
        .map_err(|source| DataError::Write { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(x0: f32, y0: f32, x1: f32, y1: f32) -> BoxXyxy {
        BoxXyxy::new(x0, y0, x1, y1)
    }

    #[test]
    fn box_rules() {
        assert_eq!(check_box(b(1.0, 2.0, 3.0, 4.0), 10, 10), BoxCheck::Kept(b(1.0, 2.0, 3.0, 4.0)));
        assert_eq!(check_box(b(-5.0, 2.0, 3.0, 40.0), 10, 10), BoxCheck::Clipped(b(0.0, 2.0, 3.0, 10.0)));
        assert!(matches!(check_box(b(3.0, 2.0, 1.0, 4.0), 10, 10), BoxCheck::Dropped(_)));
        assert!(matches!(check_box(b(10.0, 2.0, 12.0, 4.0), 10, 10), BoxCheck::Dropped(_)));
        assert!(matches!(check_box(b(-3.0, 2.0, 0.0, 4.0), 10, 10), BoxCheck::Dropped(_)));
        assert!(matches!(check_box(b(2.0, 2.0, 2.0, 4.0), 10, 10), BoxCheck::Dropped(_)));
        // Infinite and NaN coordinates never survive as boxes, and never panic.
        assert_eq!(
            check_box(b(f32::NEG_INFINITY, 0.0, f32::INFINITY, 5.0), 10, 10),
            BoxCheck::Clipped(b(0.0, 0.0, 10.0, 5.0))
        );
        assert!(matches!(check_box(b(f32::INFINITY, 0.0, f32::INFINITY, 5.0), 10, 10), BoxCheck::Dropped(_)));
        assert!(matches!(check_box(b(f32::NAN, 0.0, 1.0, 5.0), 10, 10), BoxCheck::Dropped(_)));
    }

    #[test]
    fn category_prompt_rejects_collisions_and_empty_names() {
        let cat = |id, name: &str| Category { id, name: name.to_owned() };
        let (caption, phrases) = category_prompt(&[cat(3, "Dog"), cat(1, "hot  dog")]).unwrap();
        assert_eq!(&*caption, "dog . hot dog .");
        assert_eq!(phrases[1].text, "hot dog");
        assert_eq!(phrases[1].spans, vec![6..13]);
        assert_eq!(phrases[1].category_id, Some(1));
        let err = category_prompt(&[cat(1, "dog"), cat(2, "DOG ")]).unwrap_err().to_string();
        assert!(err.contains("id 1 and id 2"), "{err}");
        let err = category_prompt(&[cat(1, "dog"), cat(7, "  ")]).unwrap_err().to_string();
        assert!(err.contains("category id 7 has an empty name"), "{err}");
        let err = category_prompt(&[cat(1, "dog"), cat(4, "St. Bernard")]).unwrap_err().to_string();
        assert_eq!(
            err,
            "category id 4 \"St. Bernard\": phrase \"st. bernard\" contains '.', which separates phrases; remove it"
        );
        assert!(category_prompt(&[]).is_err());
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)] // one span per phrase is the usual case
    fn spans_are_verified_against_the_phrase() {
        let caption: Vec<char> = "a Red  circle and a square".chars().collect();
        assert!(verify_spans(&caption, &[2..13], "red circle").is_ok());
        assert!(verify_spans(&caption, &[2..5, 7..13], "red circle").is_ok());
        assert!(verify_spans(&caption, &[2..5], "red circle").is_err());
        assert!(verify_spans(&caption, &[20..40], "square").is_err());
        assert!(verify_spans(&caption, &[5..5], "").is_err());
        assert!(verify_spans(&caption, &[], "square").is_err());
    }

    #[test]
    fn relative_names() {
        let root = Path::new("data/images");
        assert_eq!(relative_file_name(Path::new("data/images/a/b.png"), root).unwrap(), "a/b.png");
        assert_eq!(relative_file_name(Path::new("/abs/c.png"), root).unwrap(), "/abs/c.png");
        assert!(relative_file_name(Path::new("other/c.png"), root).is_err());
        assert!(relative_file_name(Path::new("data/images"), root).is_err());
        assert_eq!(relative_file_name(Path::new("c.png"), Path::new("")).unwrap(), "c.png");
    }
}
