//! Annotated copies of images: detection boxes with "phrase 0.87" labels, for `--out DIR`.
//!
//! Drawing never fails and never panics: boxes partly or wholly outside the image, empty,
//! reversed or NaN boxes are clipped or skipped. Label text uses DejaVu Sans, embedded in the
//! library (see `assets/fonts/DejaVuSans-LICENSE.txt`).

use std::collections::HashSet;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use ab_glyph::{Font, FontRef, GlyphId, PxScale, ScaleFont, point};
use glint_core::detection::Detection;
use glint_core::geometry::BoxXyxy;
use image::{ImageFormat, Rgb, RgbImage};

use crate::error::DataError;

static FONT_BYTES: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

// Parsed once; `None` only if the embedded file were corrupt, in which case labels are drawn
// without text rather than failing the whole run.
static FONT: LazyLock<Option<FontRef<'static>>> = LazyLock::new(|| FontRef::try_from_slice(FONT_BYTES).ok());

/// Box colours, one per phrase index (cycling): strong, mutually distinct hues.
pub const PALETTE: [[u8; 3]; 12] = [
    [230, 25, 75],
    [60, 180, 75],
    [0, 130, 200],
    [245, 130, 48],
    [145, 30, 180],
    [70, 240, 240],
    [240, 50, 230],
    [210, 245, 60],
    [0, 128, 128],
    [170, 110, 40],
    [255, 225, 25],
    [128, 0, 0],
];

/// The box colour of phrase `phrase_index`.
pub fn phrase_colour(phrase_index: usize) -> Rgb<u8> {
    Rgb(PALETTE[phrase_index % PALETTE.len()])
}

/// Black or white, whichever reads better on `background` (by its luma).
pub fn text_colour(background: Rgb<u8>) -> Rgb<u8> {
    let [r, g, b] = background.0.map(f32::from);
    if 0.299 * r + 0.587 * g + 0.114 * b > 150.0 { Rgb([0, 0, 0]) } else { Rgb([255, 255, 255]) }
}

/// Box outline width in pixels for an image: grows with the image, at least 2.
pub fn line_width(width: u32, height: u32) -> u32 {
    ((width.min(height) as f32 / 250.0).round() as u32).max(2)
}

/// A copy of `image` with every detection drawn: an outline in its phrase's colour and, above
/// the box (inside it when the box touches the top edge), a filled label "phrase 0.87".
/// Higher-scoring detections are drawn over lower ones.
pub fn annotate(image: &RgbImage, detections: &[Detection]) -> RgbImage {
    let mut out = image.clone();
    let (width, height) = out.dimensions();
    let thickness = i64::from(line_width(width, height));
    let font_px = (width.min(height) as f32 * 0.03).clamp(12.0, 40.0);

    let mut order: Vec<&Detection> = detections.iter().collect();
    order.sort_by(|a, b| a.score.total_cmp(&b.score));
    let visible: Vec<(&Detection, PixelRect)> =
        order.into_iter().filter_map(|d| PixelRect::of_box(&d.bbox, width, height).map(|r| (d, r))).collect();

    // All outlines first, so no box line crosses a label.
    for (detection, rect) in &visible {
        draw_outline(&mut out, rect, thickness, phrase_colour(detection.phrase_index));
    }
    for (detection, rect) in &visible {
        draw_label(&mut out, rect, &label_text(detection), font_px, phrase_colour(detection.phrase_index));
    }
    out
}

/// The label of a detection: `"phrase 0.87"` (just the score for an empty phrase).
fn label_text(detection: &Detection) -> String {
    // A phrase is one line of text; control characters would draw as boxes.
    let phrase: String = detection
        .phrase
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string();
    if phrase.is_empty() {
        format!("{:.2}", detection.score)
    } else {
        format!("{phrase} {:.2}", detection.score)
    }
}

/// An inclusive pixel rectangle, possibly extending past the image.
#[derive(Clone, Copy, Debug)]
struct PixelRect {
    left: i64,
    top: i64,
    right: i64,
    bottom: i64,
}

impl PixelRect {
    /// The pixels a box covers, or `None` when it has a non-finite coordinate or lies wholly
    /// outside the image. Reversed coordinates are reordered; an empty box covers one pixel.
    fn of_box(b: &BoxXyxy, width: u32, height: u32) -> Option<Self> {
        let coords = [b.x0, b.y0, b.x1, b.y1];
        if coords.iter().any(|v| !v.is_finite()) {
            return None;
        }
        // Far-away coordinates are clipped anyway; bounding them keeps the i64 maths exact.
        let [x0, y0, x1, y1] = coords.map(|v| v.clamp(-1.0e7, 1.0e7));
        let (left, right) = (x0.min(x1).floor() as i64, x0.max(x1).ceil() as i64 - 1);
        let (top, bottom) = (y0.min(y1).floor() as i64, y0.max(y1).ceil() as i64 - 1);
        let rect = Self { left, top, right: right.max(left), bottom: bottom.max(top) };
        let outside = rect.right < 0
            || rect.bottom < 0
            || rect.left >= i64::from(width)
            || rect.top >= i64::from(height);
        (!outside).then_some(rect)
    }
}

/// Fills the inclusive rectangle, clipped to the image.
fn fill_rect(image: &mut RgbImage, rect: PixelRect, colour: Rgb<u8>) {
    let (width, height) = image.dimensions();
    let x_range = rect.left.max(0)..=rect.right.min(i64::from(width) - 1);
    for y in rect.top.max(0)..=rect.bottom.min(i64::from(height) - 1) {
        for x in x_range.clone() {
            // In range by the clipping above, so the casts are exact.
            image.put_pixel(x as u32, y as u32, colour);
        }
    }
}

/// The outline of `rect`, `thickness` pixels wide, drawn inside it.
fn draw_outline(image: &mut RgbImage, rect: &PixelRect, thickness: i64, colour: Rgb<u8>) {
    let t = thickness - 1;
    let PixelRect { left, top, right, bottom } = *rect;
    fill_rect(image, PixelRect { left, top, right, bottom: top + t }, colour);
    fill_rect(image, PixelRect { left, top: bottom - t, right, bottom }, colour);
    fill_rect(image, PixelRect { left, top, right: left + t, bottom }, colour);
    fill_rect(image, PixelRect { left: right - t, top, right, bottom }, colour);
}

/// A filled label with `text` at the top-left of `rect`: above it when there is room, else
/// inside it; shifted left to stay in the image where it fits.
fn draw_label(image: &mut RgbImage, rect: &PixelRect, text: &str, font_px: f32, colour: Rgb<u8>) {
    let Some(font) = FONT.as_ref() else {
        return;
    };
    let scale = PxScale::from(font_px);
    let scaled = font.as_scaled(scale);
    let pad = (font_px * 0.2).round().max(2.0) as i64;
    let text_width = glyph_positions(&scaled, text).last().map_or(0.0, |&(_, x, advance)| x + advance);
    let label_w = text_width.ceil() as i64 + 2 * pad;
    let label_h = (scaled.ascent() - scaled.descent()).ceil() as i64 + 2 * pad;

    let image_w = i64::from(image.width());
    let left = rect.left.min(image_w - label_w).max(0);
    let top = if rect.top >= label_h { rect.top - label_h } else { rect.top.max(0) };
    fill_rect(image, PixelRect { left, top, right: left + label_w - 1, bottom: top + label_h - 1 }, colour);

    let ink = text_colour(colour);
    let baseline = (top + pad) as f32 + scaled.ascent();
    for (id, x, _) in glyph_positions(&scaled, text) {
        let glyph = id.with_scale_and_position(scale, point((left + pad) as f32 + x, baseline));
        let Some(outline) = font.outline_glyph(glyph) else {
            continue; // spaces have no outline
        };
        let bounds = outline.px_bounds();
        outline.draw(|gx, gy, coverage| {
            let x = bounds.min.x as i64 + i64::from(gx);
            let y = bounds.min.y as i64 + i64::from(gy);
            blend(image, x, y, ink, coverage);
        });
    }
}

/// Each glyph of `text` with its x offset from the start of the line and its advance.
fn glyph_positions<F: Font, S: ScaleFont<F>>(scaled: &S, text: &str) -> Vec<(GlyphId, f32, f32)> {
    let mut caret = 0.0;
    let mut previous: Option<GlyphId> = None;
    let mut positions = Vec::with_capacity(text.len());
    for c in text.chars() {
        let id = scaled.glyph_id(c);
        if let Some(prev) = previous {
            caret += scaled.kern(prev, id);
        }
        let advance = scaled.h_advance(id);
        positions.push((id, caret, advance));
        caret += advance;
        previous = Some(id);
    }
    positions
}

/// Mixes `colour` into the pixel at `(x, y)` by `coverage` in `[0, 1]`; outside pixels are skipped.
fn blend(image: &mut RgbImage, x: i64, y: i64, colour: Rgb<u8>, coverage: f32) {
    let (Ok(x), Ok(y)) = (u32::try_from(x), u32::try_from(y)) else {
        return;
    };
    let Some(pixel) = image.get_pixel_mut_checked(x, y) else {
        return;
    };
    let a = coverage.clamp(0.0, 1.0);
    for (channel, ink) in pixel.0.iter_mut().zip(colour.0) {
        *channel = (f32::from(*channel) * (1.0 - a) + f32::from(ink) * a).round() as u8;
    }
}

/// The image format written for an extension we can encode, by lower-cased extension.
fn writable_format(extension: &str) -> Option<ImageFormat> {
    match extension.to_ascii_lowercase().as_str() {
        "png" => Some(ImageFormat::Png),
        "jpg" | "jpeg" => Some(ImageFormat::Jpeg),
        "webp" => Some(ImageFormat::WebP),
        "bmp" => Some(ImageFormat::Bmp),
        _ => None,
    }
}

/// Where the annotated copy of `input` goes in `out_dir`: the input's file name, keeping its
/// extension when it is one we can write (png, jpg/jpeg, webp, bmp) and using `.png` otherwise.
/// A name already in `taken` (an earlier input with the same name) gets a suffix: `img.jpg`,
/// `img-1.jpg`, `img-2.jpg`, ... The chosen path is added to `taken`.
///
/// Errors when the output would be the input file itself (`out_dir` is the input's folder),
/// or `input` has no file name. Callers should compute every output path before writing any.
pub fn annotated_path(
    out_dir: &Path,
    input: &Path,
    taken: &mut HashSet<PathBuf>,
) -> Result<PathBuf, DataError> {
    let no_name = || {
        DataError::Invalid(format!("{}: not a file name, cannot name its annotated copy", input.display()))
    };
    let stem = input.file_stem().ok_or_else(no_name)?.to_string_lossy().into_owned();
    let extension = match input.extension().map(|e| e.to_string_lossy().into_owned()) {
        Some(ext) if writable_format(&ext).is_some() => ext,
        _ => "png".to_string(),
    };
    let first = out_dir.join(format!("{stem}.{extension}"));
    if same_file(&first, input) {
        return Err(DataError::Invalid(format!(
            "{}: the annotated copy would overwrite this input; choose another --out directory",
            input.display()
        )));
    }
    let mut candidate = first;
    let mut n = 0u64;
    while taken.contains(&candidate) || same_file(&candidate, input) {
        n += 1;
        candidate = out_dir.join(format!("{stem}-{n}.{extension}"));
    }
    taken.insert(candidate.clone());
    Ok(candidate)
}

/// Whether two paths name the same existing file (through symlinks and `..`).
fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Encodes `image` in the format of `path`'s extension (png, jpg/jpeg at quality 90, lossless
/// webp, bmp) and writes it atomically, creating missing folders.
pub fn write_annotated(path: &Path, image: &RgbImage) -> Result<(), DataError> {
    let format = path.extension().and_then(|e| writable_format(&e.to_string_lossy())).ok_or_else(|| {
        DataError::Invalid(format!(
            "{}: cannot write images of this type (use png, jpg, webp or bmp)",
            path.display()
        ))
    })?;
    let write_error = |source: std::io::Error| DataError::Write { path: path.to_path_buf(), source };
    let mut bytes = Vec::new();
    let encoded = match format {
        ImageFormat::Jpeg => {
            image.write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90))
        }
        _ => image.write_to(&mut Cursor::new(&mut bytes), format),
    };
    encoded.map_err(|e| write_error(std::io::Error::other(e)))?;
    glint_core::io::write_atomic(path, &bytes).map_err(write_error)
}
