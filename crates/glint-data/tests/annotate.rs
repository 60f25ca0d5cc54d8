//! Annotated images: box outlines in phrase colours, readable labels, robustness to bad boxes,
//! and output paths that never land on an input.

use std::collections::HashSet;
use std::path::Path;

use glint_core::detection::Detection;
use glint_core::geometry::BoxXyxy;
use glint_data::annotate::{
    annotate, annotated_path, line_width, phrase_colour, text_colour, write_annotated,
};
use image::{Rgb, RgbImage};

const GREY: Rgb<u8> = Rgb([100, 100, 100]);

fn grey(width: u32, height: u32) -> RgbImage {
    RgbImage::from_pixel(width, height, GREY)
}

fn detection(x0: f32, y0: f32, x1: f32, y1: f32, phrase: &str, phrase_index: usize) -> Detection {
    Detection { bbox: BoxXyxy::new(x0, y0, x1, y1), score: 0.87, phrase: phrase.to_string(), phrase_index }
}

/// Pixels in the inclusive rectangle that are neither `a` nor `b`.
fn count_other(image: &RgbImage, (x0, y0, x1, y1): (u32, u32, u32, u32), a: Rgb<u8>, b: Rgb<u8>) -> usize {
    (y0..=y1)
        .flat_map(|y| (x0..=x1).map(move |x| (x, y)))
        .filter(|&(x, y)| ![a, b].contains(image.get_pixel(x, y)))
        .count()
}

#[test]
fn box_edges_take_the_phrase_colour_and_the_rest_is_untouched() {
    let image = grey(200, 150);
    let out = annotate(&image, &[detection(40.0, 60.0, 120.0, 130.0, "cat", 0)]);
    let colour = phrase_colour(0);
    assert_eq!(line_width(200, 150), 2);
    // Each edge, drawn 2 px wide inside the box.
    for (x, y) in [(40, 95), (41, 95), (119, 95), (118, 95), (80, 60), (80, 61), (80, 129), (80, 128)] {
        assert_eq!(out.get_pixel(x, y), &colour, "edge pixel ({x}, {y})");
    }
    // Inside the outline, just outside the box, and far away: unchanged.
    for (x, y) in [
        (42, 95),
        (117, 95),
        (80, 62),
        (80, 127),
        (80, 95),
        (39, 95),
        (120, 95),
        (80, 130),
        (190, 5),
        (5, 145),
    ] {
        assert_eq!(out.get_pixel(x, y), &GREY, "pixel ({x}, {y})");
    }
    // The input is not modified.
    assert!(image == grey(200, 150), "input unchanged");
}

#[test]
fn line_width_grows_with_the_image() {
    assert_eq!(line_width(10, 10), 2);
    assert_eq!(line_width(640, 480), 2);
    assert_eq!(line_width(1920, 1080), 4);
    assert_eq!(line_width(4000, 3000), 12);
    let out = annotate(&grey(1920, 1080), &[detection(100.0, 300.0, 500.0, 700.0, "dog", 0)]);
    assert_eq!(out.get_pixel(103, 500), &phrase_colour(0));
    assert_eq!(out.get_pixel(104, 500), &GREY);
}

#[test]
fn two_phrases_get_different_colours() {
    assert_ne!(phrase_colour(0), phrase_colour(1));
    let colours: HashSet<Rgb<u8>> = (0..12).map(phrase_colour).collect();
    assert_eq!(colours.len(), 12, "the palette has 12 distinct colours");

    let out = annotate(
        &grey(300, 200),
        &[
            detection(20.0, 50.0, 100.0, 150.0, "cat", 0),
            detection(180.0, 50.0, 280.0, 150.0, "remote control", 1),
        ],
    );
    assert_eq!(out.get_pixel(20, 100), &phrase_colour(0));
    assert_eq!(out.get_pixel(180, 100), &phrase_colour(1));
}

#[test]
fn text_colour_is_readable_on_the_label() {
    assert_eq!(text_colour(Rgb([255, 225, 25])), Rgb([0, 0, 0]), "dark text on yellow");
    assert_eq!(text_colour(Rgb([70, 240, 240])), Rgb([0, 0, 0]), "dark text on cyan");
    assert_eq!(text_colour(Rgb([0, 130, 200])), Rgb([255, 255, 255]), "light text on blue");
    assert_eq!(text_colour(Rgb([128, 0, 0])), Rgb([255, 255, 255]), "light text on maroon");
}

#[test]
fn label_is_drawn_above_the_box_with_visible_text() {
    let out = annotate(&grey(300, 200), &[detection(40.0, 100.0, 250.0, 180.0, "remote control", 2)]);
    let colour = phrase_colour(2);
    // The label's filled background starts at the box's left edge, just above it.
    assert_eq!(out.get_pixel(40, 99), &colour);
    assert_eq!(out.get_pixel(41, 99), &colour);
    // Text: label pixels that are neither the background colour nor the grey image.
    let ink = count_other(&out, (40, 70, 249, 99), colour, GREY);
    assert!(ink > 30, "only {ink} text pixels in the label");
    // Pure text colour appears where glyphs fully cover pixels.
    let text = text_colour(colour);
    assert!((70..100).any(|y| (40..250).any(|x| out.get_pixel(x, y) == &text)));
    // A longer label covers more pixels than a shorter one.
    let short = annotate(&grey(300, 200), &[detection(40.0, 100.0, 250.0, 180.0, "", 2)]);
    assert!(count_other(&short, (40, 70, 249, 99), colour, GREY) < ink);
    assert!(count_other(&short, (40, 70, 249, 99), colour, GREY) > 0, "the score is drawn too");
}

#[test]
fn label_goes_inside_a_box_at_the_top_edge_and_stays_in_the_image() {
    let colour = phrase_colour(0);
    let out = annotate(&grey(200, 150), &[detection(0.0, 0.0, 100.0, 100.0, "cat", 0)]);
    assert!(count_other(&out, (2, 2, 97, 30), colour, GREY) > 20, "label text inside the box");

    // A box at the right edge keeps its label in the image: it is shifted left.
    let out = annotate(&grey(200, 150), &[detection(190.0, 80.0, 200.0, 140.0, "a long phrase", 0)]);
    assert!(count_other(&out, (100, 40, 199, 79), colour, GREY) > 20);
}

#[test]
fn out_of_image_and_degenerate_boxes_do_not_panic() {
    let image = grey(64, 48);
    let nan = f32::NAN;
    let inf = f32::INFINITY;
    let bad = [
        detection(nan, 0.0, 10.0, 10.0, "nan", 0),
        detection(0.0, 0.0, inf, 10.0, "inf", 1),
        detection(-inf, -inf, inf, inf, "both inf", 1),
        detection(-500.0, -500.0, -100.0, -100.0, "above left", 2),
        detection(1000.0, 1000.0, 2000.0, 2000.0, "below right", 3),
        detection(64.0, 10.0, 80.0, 20.0, "just right", 4),
    ];
    // Boxes wholly outside or with non-finite coordinates draw nothing, labels included.
    assert!(annotate(&image, &bad) == image, "nothing drawn for boxes that are not visible");

    let partial = [
        detection(-20.0, -20.0, 30.0, 30.0, "top left", 0),
        detection(50.0, 40.0, 500.0, 500.0, "bottom right", 1),
        detection(20.0, 20.0, 20.0, 20.0, "empty", 2),
        detection(30.0, 30.0, 25.0, 25.0, "reversed", 3),
        detection(-1e30, -1e30, 1e30, 1e30, "everything", 4),
        detection(1e30, 1e30, -1e30, -1e30, "everything reversed", 5),
        Detection { score: f32::NAN, ..detection(5.0, 5.0, 15.0, 15.0, "nan score", 5) },
    ];
    let out = annotate(&image, &partial);
    assert_eq!(out.dimensions(), (64, 48));
    // The visible part of a clipped box is drawn (below its label, which sits inside it).
    let clipped = annotate(&image, &partial[..1]);
    assert_eq!(clipped.get_pixel(29, 25), &phrase_colour(0), "right edge");
    assert_eq!(clipped.get_pixel(10, 29), &phrase_colour(0), "bottom edge");
    assert_eq!(clipped.get_pixel(20, 25), &GREY, "interior");
    assert!(out != image);

    for (w, h) in [(1, 1), (0, 0), (5, 0), (1, 300)] {
        let tiny = grey(w, h);
        assert_eq!(annotate(&tiny, &partial).dimensions(), (w, h));
    }
}

#[test]
fn output_names_follow_the_input_and_are_deduplicated() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("out");
    let mut taken = HashSet::new();
    let name = |input: &str, taken: &mut HashSet<_>| {
        annotated_path(&out, &root.path().join(input), taken).unwrap().strip_prefix(&out).unwrap().to_owned()
    };
    assert_eq!(name("a/img.jpg", &mut taken), Path::new("img.jpg"));
    assert_eq!(name("b/img.jpg", &mut taken), Path::new("img-1.jpg"));
    assert_eq!(name("c/img.jpg", &mut taken), Path::new("img-2.jpg"));
    assert_eq!(name("img.png", &mut taken), Path::new("img.png"));
    assert_eq!(name("photo.JPEG", &mut taken), Path::new("photo.JPEG"));
    assert_eq!(name("scan.webp", &mut taken), Path::new("scan.webp"));
    assert_eq!(name("old.bmp", &mut taken), Path::new("old.bmp"));
    // Formats we do not write become PNG; so do extensionless names.
    assert_eq!(name("scan.tiff", &mut taken), Path::new("scan.png"));
    assert_eq!(name("raw", &mut taken), Path::new("raw.png"));
    assert_eq!(name("d/scan.gif", &mut taken), Path::new("scan-1.png"));
    assert_eq!(taken.len(), 10);
}

#[test]
fn the_input_file_itself_is_never_the_output() {
    let root = tempfile::tempdir().unwrap();
    let input = root.path().join("img.jpg");
    std::fs::write(&input, b"not really a jpeg").unwrap();
    let mut taken = HashSet::new();

    let err = annotated_path(root.path(), &input, &mut taken).unwrap_err();
    assert!(err.to_string().contains(&input.display().to_string()), "{err}");
    // Spelled differently, through `..` or a symlinked folder: still the same file.
    std::fs::create_dir(root.path().join("sub")).unwrap();
    assert!(annotated_path(&root.path().join("sub/.."), &input, &mut taken).is_err());
    std::os::unix::fs::symlink(root.path(), root.path().join("link")).unwrap();
    assert!(annotated_path(&root.path().join("link"), &input, &mut taken).is_err());
    assert!(taken.is_empty());

    // A de-duplicated name never lands on the input either (here through a symlink in the
    // output folder pointing at the input).
    let out = root.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::os::unix::fs::symlink(&input, out.join("img-1.jpg")).unwrap();
    let mut taken = HashSet::from([out.join("img.jpg")]);
    assert_eq!(annotated_path(&out, &input, &mut taken).unwrap(), out.join("img-2.jpg"));
}

#[test]
fn annotated_images_are_written_and_decode_back() {
    let root = tempfile::tempdir().unwrap();
    let image = annotate(&grey(80, 60), &[detection(10.0, 20.0, 70.0, 55.0, "cat", 0)]);
    for name in ["a.png", "nested/b.jpg", "c.webp", "d.bmp", "e.JPEG"] {
        let path = root.path().join(name);
        write_annotated(&path, &image).unwrap();
        let back = image::open(&path).unwrap().to_rgb8();
        assert_eq!(back.dimensions(), (80, 60), "{name}");
        if !name.to_lowercase().ends_with("jpg") && !name.to_lowercase().ends_with("jpeg") {
            assert!(back == image, "{name} is lossless");
        }
    }
    let err = write_annotated(&root.path().join("f.tiff"), &image).unwrap_err();
    assert!(err.to_string().contains("f.tiff"), "{err}");
    assert!(!root.path().join("f.tiff").exists());
}
