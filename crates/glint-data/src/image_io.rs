//! Image decoding: any JPEG / PNG / WebP / BMP file to an 8-bit RGB image, upright.
//!
//! The reference is what GroundingDINO and GLIP data loaders do with PIL:
//! `ImageOps.exif_transpose(Image.open(p)).convert("RGB")`. So:
//! - the format is guessed from the bytes, never from the extension;
//! - the EXIF orientation (JPEG, PNG `eXIf`, WebP) is applied, so width and height are the
//!   displayed ones;
//! - alpha is dropped, not composited (PIL's `convert("RGB")` from RGBA / LA keeps the colour
//!   channels as they are);
//! - grayscale is replicated to three channels; palette images are expanded;
//! - 16-bit samples keep their high byte (`v >> 8`), which is what PIL does for 16-bit RGB(A)
//!   PNGs. For 16-bit *grayscale* PIL instead clips values to 255 (nearly white images); glint
//!   deliberately keeps the high byte there too.
//!
//! Lossless formats decode to exactly PIL's pixels. JPEG decoders (zune-jpeg here, libjpeg-turbo
//! in PIL) round the inverse DCT and chroma upsampling differently, so JPEG pixels may differ
//! from PIL's by a few levels.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage, metadata::Orientation};

use crate::error::DataError;

/// Reads and decodes the image file at `path` (see the module docs for the conversions).
///
/// A missing or unreadable file is [`DataError::Io`]; an empty, truncated, corrupt or
/// non-image file is [`DataError::Image`]; both name the file.
pub fn load_image(path: impl AsRef<Path>) -> Result<RgbImage, DataError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    decode_image_bytes(&bytes, path)
}

/// Decodes an encoded image held in memory; `name` is the file it came from, used in errors.
pub fn decode_image_bytes(bytes: &[u8], name: impl AsRef<Path>) -> Result<RgbImage, DataError> {
    let name = name.as_ref();
    let fail = |message: String| DataError::Image { path: name.to_path_buf(), message };
    if bytes.is_empty() {
        return Err(fail("the file is empty".into()));
    }
    let reader =
        ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| fail(e.to_string()))?;
    match reader.format() {
        None => return Err(fail("not a JPEG, PNG, WebP or BMP image".into())),
        // The JPEG decoder fills a cut-off image with gray instead of failing; PIL refuses it.
        Some(ImageFormat::Jpeg) if !jpeg_is_complete(bytes) => {
            return Err(fail("truncated JPEG (the data ends before the end-of-image marker)".into()));
        }
        Some(_) => {}
    }
    let mut decoder = reader.into_decoder().map_err(|e| fail(e.to_string()))?;
    // Unreadable EXIF is not worth rejecting an image that decodes: PIL ignores it too.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).map_err(|e| fail(e.to_string()))?;
    image.apply_orientation(orientation);
    Ok(to_rgb8(image))
}

/// Whether a JPEG's marker structure reaches its end-of-image marker (EOI). Walks the segments
/// by their lengths and the entropy-coded data to the next marker, so an EOI inside an embedded
/// EXIF thumbnail does not count. Data that does not look like a JPEG at all is left for the
/// decoder to reject (returns true).
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    const SOS: u8 = 0xDA;
    const EOI: u8 = 0xD9;
    let is_restart = |m: u8| (0xD0..=0xD7).contains(&m);
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return true;
    }
    let mut i = 2;
    loop {
        match bytes.get(i) {
            None => return false,
            Some(0xFF) => {}
            Some(_) => return true, // not a marker: malformed, the decoder will say so
        }
        while bytes.get(i) == Some(&0xFF) {
            i += 1; // a marker may be preceded by any number of 0xFF fill bytes
        }
        let Some(&marker) = bytes.get(i) else { return false };
        i += 1;
        if marker == EOI {
            return true;
        }
        if is_restart(marker) || marker == 0x01 {
            continue; // markers without a length field
        }
        let Some(length) = bytes.get(i..i + 2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]]))) else {
            return false;
        };
        i += length;
        if marker == SOS {
            // Entropy-coded data: 0xFF is followed by 0x00 (stuffing) or a restart marker;
            // anything else starts the next segment.
            loop {
                match (bytes.get(i), bytes.get(i + 1)) {
                    (Some(0xFF), Some(&next)) if next != 0x00 && !is_restart(next) => break,
                    (Some(_), Some(_)) => i += 1,
                    _ => return false,
                }
            }
        }
    }
}

/// Converts to 8-bit RGB: alpha dropped, gray replicated, 16-bit samples to their high byte.
fn to_rgb8(image: DynamicImage) -> RgbImage {
    let (width, height) = (image.width(), image.height());
    let high_byte = |v: u16| (v >> 8) as u8;
    match image {
        DynamicImage::ImageRgb8(rgb) => rgb,
        DynamicImage::ImageLuma16(gray) => RgbImage::from_fn(width, height, |x, y| {
            let v = high_byte(gray.get_pixel(x, y).0[0]);
            image::Rgb([v, v, v])
        }),
        DynamicImage::ImageLumaA16(gray) => RgbImage::from_fn(width, height, |x, y| {
            let v = high_byte(gray.get_pixel(x, y).0[0]);
            image::Rgb([v, v, v])
        }),
        DynamicImage::ImageRgb16(rgb) => RgbImage::from_fn(width, height, |x, y| {
            let [r, g, b] = rgb.get_pixel(x, y).0;
            image::Rgb([high_byte(r), high_byte(g), high_byte(b)])
        }),
        DynamicImage::ImageRgba16(rgba) => RgbImage::from_fn(width, height, |x, y| {
            let [r, g, b, _] = rgba.get_pixel(x, y).0;
            image::Rgb([high_byte(r), high_byte(g), high_byte(b)])
        }),
        // 8-bit gray / gray+alpha / RGBA: the image crate replicates gray and ignores alpha,
        // exactly as PIL's convert("RGB") does.
        other => other.to_rgb8(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode_png(image: DynamicImage) -> Vec<u8> {
        let mut bytes = Vec::new();
        image.write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png).unwrap();
        bytes
    }

    #[test]
    fn rgba_drops_alpha_without_compositing() {
        let rgba = image::RgbaImage::from_pixel(3, 2, image::Rgba([200, 100, 50, 0]));
        let rgb = decode_image_bytes(&encode_png(DynamicImage::ImageRgba8(rgba)), "a.png").unwrap();
        assert_eq!(rgb.dimensions(), (3, 2));
        assert!(rgb.pixels().all(|p| p.0 == [200, 100, 50]));
    }

    #[test]
    fn sixteen_bit_keeps_high_byte() {
        let gray = image::ImageBuffer::<image::Luma<u16>, _>::from_pixel(2, 2, image::Luma([0x12ff]));
        let rgb = decode_image_bytes(&encode_png(DynamicImage::ImageLuma16(gray)), "g.png").unwrap();
        assert!(rgb.pixels().all(|p| p.0 == [0x12, 0x12, 0x12]));
    }

    #[test]
    fn jpeg_completeness_follows_the_marker_structure() {
        // SOI, an APP1 whose payload looks like a whole thumbnail (SOI .. SOS .. EOI), SOS with
        // a 2-byte header, entropy data with a stuffed 0xFF and a restart marker, then EOI.
        let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xE1, 0x00, 0x08, 0xFF, 0xD8, 0xFF, 0xDA, 0xFF, 0xD9];
        jpeg.extend([0xFF, 0xDA, 0x00, 0x02, 0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD3, 0x56, 0xFF, 0xFF, 0xD9]);
        assert!(jpeg_is_complete(&jpeg));
        // Cut anywhere, including right after the thumbnail's EOI: incomplete.
        for cut in 2..jpeg.len() - 1 {
            assert!(!jpeg_is_complete(&jpeg[..cut]), "cut at {cut}");
        }
        // Trailing bytes after EOI are fine, as they are for PIL.
        jpeg.extend(b"trailing");
        assert!(jpeg_is_complete(&jpeg));
    }

    #[test]
    fn garbage_is_an_error_naming_the_file() {
        let err = decode_image_bytes(b"hello", "dir/x.jpg").unwrap_err();
        assert!(matches!(err, DataError::Image { .. }));
        assert!(err.to_string().starts_with("dir/x.jpg: "), "{err}");
        let err = decode_image_bytes(b"", "e.png").unwrap_err();
        assert_eq!(err.to_string(), "e.png: cannot decode image: the file is empty");
    }
}
