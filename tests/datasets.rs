//! Dataset loaders and writers: COCO detection json and ODVG jsonl (detection and grounding)
//! become `Sample`s with the documented fix / reject rules, and the writers round-trip exactly.
//!
//! Fixtures are hand-written files in `tests/fixtures/datasets/` (malformed ones in `bad/`).
//! Boxes are compared exactly: every coordinate in the fixtures is representable in f32, and
//! the loaders do no arithmetic on them except COCO's x + width (done in f64, exact here).

// Phrases usually have one span: `vec![0..3]` is the data, not a mistaken range.
#![allow(clippy::single_range_in_vec_init)]

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use glint::core::geometry::BoxXyxy;
use glint::data::coco::{load_coco, write_coco};
use glint::data::dataset::category_prompt;
use glint::data::odvg::{load_label_map, load_odvg, write_odvg};
use glint::data::transforms::hflip;
use glint::data::{Category, DataError, Phrase, Region, Sample};
use image::RgbImage;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/datasets").join(name)
}

fn bad(name: &str) -> PathBuf {
    fixture("bad").join(name)
}

fn region(x0: f32, y0: f32, x1: f32, y1: f32, phrase: usize) -> Region {
    Region { bbox: BoxXyxy::new(x0, y0, x1, y1), phrase, iscrowd: false, area: None }
}

fn with_area(region: Region, area: f32) -> Region {
    Region { area: Some(area), ..region }
}

/// The caption text a phrase's spans cover (spans are character offsets).
fn covered(caption: &str, spans: &[Range<usize>]) -> Vec<String> {
    let chars: Vec<char> = caption.chars().collect();
    spans.iter().map(|s| chars[s.clone()].iter().collect()).collect()
}

#[test]
fn coco_file_becomes_samples_with_category_phrases() {
    let root = Path::new("/data/coco/val2017");
    let dataset = load_coco(&fixture("coco_valid.json"), root).unwrap();

    // Categories keep file order and their names as written.
    let ids: Vec<u64> = dataset.categories.iter().map(|c| c.id).collect();
    assert_eq!(ids, [18, 1, 75]);
    assert_eq!(dataset.categories[2].name, "remote  control");

    // Every image is a sample, in file order, the empty one included.
    let image_ids: Vec<u64> = dataset.samples.iter().map(|s| s.image_id).collect();
    assert_eq!(image_ids, [42, 7, 9]);
    let first = &dataset.samples[0];
    assert_eq!(first.image_path, root.join("a/000042.jpg"));
    assert_eq!((first.width, first.height), (640, 480));

    // One caption for the whole dataset: the prompt of the category names, phrase i = category i.
    for sample in &dataset.samples {
        assert_eq!(&*sample.caption, "dog . person . remote control .");
        let texts: Vec<&str> = sample.phrases.iter().map(|p| p.text.as_str()).collect();
        assert_eq!(texts, ["dog", "person", "remote control"]);
        for (phrase, category) in sample.phrases.iter().zip(&dataset.categories) {
            assert_eq!(phrase.category_id, Some(category.id));
            assert_eq!(covered(&sample.caption, &phrase.spans), std::slice::from_ref(&phrase.text));
        }
    }

    // xywh -> xyxy; the box partly outside is clipped; crowd kept; bad boxes dropped.
    // `area` is kept as given (the clipped box's too, as pycocotools uses it); an area equal
    // to the box area, or none, is `None`.
    assert_eq!(
        first.regions,
        [
            with_area(region(10.5, 20.25, 110.5, 70.25, 0), 4321.5),
            with_area(region(600.0, 400.0, 640.0, 480.0, 2), 8000.0)
        ]
    );
    let second = &dataset.samples[1];
    assert_eq!(
        second.regions,
        [
            Region { bbox: BoxXyxy::new(0.0, 0.0, 100.0, 50.0), phrase: 1, iscrowd: true, area: None },
            region(1.0, 2.0, 4.0, 6.0, 2),
        ]
    );
    assert!(dataset.samples[2].regions.is_empty());
    let areas: Vec<f32> = first.regions.iter().chain(&second.regions).map(Region::area_or_box).collect();
    assert_eq!(areas, [4321.5, 8000.0, 5000.0, 12.0]);

    // One warning per clipped or dropped box, naming the file and the annotation id.
    assert_eq!(dataset.warnings.len(), 4, "{:#?}", dataset.warnings);
    let expect = [(2, "clipped"), (4, "entirely outside"), (5, "negative width"), (6, "zero area")];
    for (warning, (id, what)) in dataset.warnings.iter().zip(expect) {
        assert!(warning.contains("coco_valid.json"), "{warning}");
        assert!(warning.contains(&format!("(annotation id {id})")), "{warning}");
        assert!(warning.contains(what), "{warning}");
    }
}

#[test]
fn coco_extreme_numbers_are_clipped_or_dropped_not_panics() {
    let dataset = load_coco(&fixture("coco_extreme_values.json"), Path::new("images")).unwrap();
    let sample = &dataset.samples[0];
    assert_eq!(sample.image_id, u64::MAX);
    // An absolute file name stays absolute.
    assert_eq!(sample.image_path, Path::new("/abs/huge.jpg"));
    // [-1e39, 0, 3e39, 5] overflows f32 on both sides and is clipped to the image.
    assert_eq!(sample.regions, [region(0.0, 0.0, u32::MAX as f32, 5.0, 0)]);
    assert_eq!(dataset.warnings.len(), 4, "{:#?}", dataset.warnings);
    assert!(dataset.warnings.iter().all(|w| w.contains("coco_extreme_values.json (annotation id")));
}

/// A blank image of the sample's size, for transforms that need one.
fn blank_image(sample: &Sample) -> RgbImage {
    RgbImage::new(sample.width, sample.height)
}

#[test]
fn detection_samples_share_one_caption_and_a_flip_keeps_category_names() {
    // One allocation for the whole dataset, not one copy per image (COCO's prompt is ~10 KB).
    let dataset = load_coco(&fixture("coco_valid.json"), Path::new("images")).unwrap();
    let first = &dataset.samples[0];
    for sample in &dataset.samples[1..] {
        assert!(Arc::ptr_eq(&sample.caption, &first.caption));
        assert!(Arc::ptr_eq(&sample.phrases, &first.phrases));
    }

    // Category names with "left" / "right": a flip mirrors the boxes but keeps the categories'
    // names (a "left hand" is still that category), so the sample keeps sharing the caption.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sides.json");
    std::fs::write(
        &path,
        r#"{"images": [{"id": 1, "file_name": "1.jpg", "width": 8, "height": 6},
                       {"id": 2, "file_name": "2.jpg", "width": 8, "height": 6}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2]}],
            "categories": [{"id": 1, "name": "left hand"}, {"id": 2, "name": "cup"}]}"#,
    )
    .unwrap();
    let dataset = load_coco(&path, dir.path()).unwrap();
    let [one, two] = &dataset.samples[..] else { panic!("expected two samples") };
    let (_, flipped) = hflip(&blank_image(one), one);
    assert_eq!(&*flipped.caption, "left hand . cup .");
    assert_eq!(flipped.regions[0].bbox.to_array(), [5.0, 1.0, 7.0, 3.0]);
    assert!(Arc::ptr_eq(&flipped.caption, &two.caption) && Arc::ptr_eq(&flipped.phrases, &two.phrases));

    // Nothing to swap: the flipped sample keeps sharing rather than allocating a copy.
    let dataset = load_coco(&fixture("coco_valid.json"), Path::new("images")).unwrap();
    let (_, flipped) = hflip(&blank_image(&dataset.samples[0]), &dataset.samples[0]);
    assert!(Arc::ptr_eq(&flipped.caption, &dataset.samples[1].caption));
    assert!(Arc::ptr_eq(&flipped.phrases, &dataset.samples[1].phrases));
}

#[test]
fn odvg_detection_uses_the_label_map_in_label_order() {
    let categories = load_label_map(&fixture("odvg_label_map.json")).unwrap();
    let labels: Vec<u64> = categories.iter().map(|c| c.id).collect();
    assert_eq!(labels, [0, 1, 2, 10], "labels sort as numbers, not strings");

    let root = Path::new("coco/train2017");
    let dataset =
        load_odvg(&fixture("odvg_detection.jsonl"), root, Some(&fixture("odvg_label_map.json"))).unwrap();
    assert_eq!(dataset.categories, categories);
    // The blank line is skipped; image ids are record indices.
    let ids: Vec<u64> = dataset.samples.iter().map(|s| s.image_id).collect();
    assert_eq!(ids, [0, 1, 2]);

    let caption = "person . bicycle . traffic light . dog .";
    for sample in &dataset.samples {
        // One shared caption and phrase list for the dataset, as for COCO.
        assert!(Arc::ptr_eq(&sample.caption, &dataset.samples[0].caption));
        assert!(Arc::ptr_eq(&sample.phrases, &dataset.samples[0].phrases));
        assert_eq!(&*sample.caption, caption);
        let ids: Vec<Option<u64>> = sample.phrases.iter().map(|p| p.category_id).collect();
        assert_eq!(ids, [Some(0), Some(1), Some(2), Some(10)]);
        for phrase in sample.phrases.iter() {
            assert_eq!(covered(caption, &phrase.spans), std::slice::from_ref(&phrase.text));
        }
    }

    let first = &dataset.samples[0];
    assert_eq!(first.image_path, root.join("000000391895.jpg"));
    assert_eq!((first.width, first.height), (640, 360));
    // ODVG boxes are already xyxy.
    assert_eq!(
        first.regions,
        [
            region(359.17, 146.17, 471.62, 359.74, 0),
            region(339.88, 22.16, 493.76, 322.89, 1),
            region(1.0, 2.0, 3.0, 4.0, 2),
        ]
    );
    // Label 10 is phrase 3; its box is clipped; the inverted box is dropped.
    assert_eq!(dataset.samples[1].image_path, root.join("b/2.jpg"));
    assert_eq!(dataset.samples[1].regions, [region(150.0, 50.0, 200.0, 90.0, 3)]);
    assert!(dataset.samples[2].regions.is_empty());

    assert_eq!(dataset.warnings.len(), 2, "{:#?}", dataset.warnings);
    assert!(dataset.warnings[0].contains("odvg_detection.jsonl:3 (instance 0)"), "{}", dataset.warnings[0]);
    assert!(dataset.warnings[0].contains("clipped"));
    assert!(dataset.warnings[1].contains("odvg_detection.jsonl:3 (instance 1)"), "{}", dataset.warnings[1]);
    assert!(dataset.warnings[1].contains("negative width"));
}

#[test]
fn odvg_grounding_phrases_are_distinct_phrase_span_pairs() {
    let root = Path::new("flickr");
    let dataset = load_odvg(&fixture("odvg_grounding.jsonl"), root, None).unwrap();
    assert!(dataset.categories.is_empty());
    let ids: Vec<u64> = dataset.samples.iter().map(|s| s.image_id).collect();
    // Record indices skip the blank line; an explicit "image_id" wins.
    assert_eq!(ids, [0, 1, 77, 3]);

    // No tokens_positive: each phrase is located in the caption.
    let hanger = &dataset.samples[0];
    assert_eq!(hanger.image_path, root.join("g1.jpg"));
    assert_eq!(
        *hanger.phrases,
        [
            Phrase {
                text: "a paper cover that reads we heart our customers".into(),
                spans: vec![19..66],
                category_id: None
            },
            Phrase { text: "a wire hanger".into(), spans: vec![0..13], category_id: None },
        ]
    );
    assert_eq!(hanger.regions, [region(20.0, 215.0, 640.0, 480.0, 0), region(19.0, 19.0, 600.0, 400.0, 1)]);

    // Spans count characters ("café" is 4), a phrase list joins with spaces, a list of boxes
    // gives several regions, and the same text at another span is another phrase.
    let cafe = &dataset.samples[1];
    let phrases: Vec<(&str, Vec<Range<usize>>)> =
        cafe.phrases.iter().map(|p| (p.text.as_str(), p.spans.clone())).collect();
    assert_eq!(
        phrases,
        [
            ("Two women", vec![0..9]),
            ("café chairs", vec![17..21, 22..28]),
            ("the dog", vec![30..37]),
            ("the dog", vec![45..52])
        ]
    );
    assert_eq!(covered(&cafe.caption, &cafe.phrases[1].spans), ["café", "chairs"]);
    let phrase_of_region: Vec<usize> = cafe.regions.iter().map(|r| r.phrase).collect();
    assert_eq!(phrase_of_region, [0, 0, 1, 2, 3, 2]);
    assert_eq!(cafe.regions[1], region(60.0, 10.0, 100.0, 90.0, 0));

    assert!(dataset.samples[2].phrases.is_empty() && dataset.samples[2].regions.is_empty());

    // Located case-insensitively when there is no exact match; empty tokens_positive = absent.
    let circle = &dataset.samples[3];
    let spans: Vec<Vec<Range<usize>>> = circle.phrases.iter().map(|p| p.spans.clone()).collect();
    assert_eq!(spans, [vec![2..12], vec![20..30]]);

    assert_eq!(dataset.warnings.len(), 1, "{:#?}", dataset.warnings);
    assert!(dataset.warnings[0].contains("odvg_grounding.jsonl:1 (region 0)"), "{}", dataset.warnings[0]);
}

/// Loading `path` must fail with a one-line `Format` error containing every fragment.
fn assert_rejected(result: Result<glint::data::Dataset, DataError>, fragments: &[&str]) {
    let err = result.expect_err("the file must be rejected");
    assert!(matches!(err, DataError::Format { .. }), "{err:?}");
    let message = err.to_string();
    assert!(!message.contains('\n'), "one line: {message}");
    for fragment in fragments {
        assert!(message.contains(fragment), "{message:?} lacks {fragment:?}");
    }
}

#[test]
fn malformed_coco_files_are_rejected_naming_file_and_record() {
    let cases: &[(&str, &[&str])] = &[
        ("coco_syntax_error.json", &["coco_syntax_error.json:3:", "invalid JSON", "expected `,` or `}`"]),
        ("coco_not_object.json", &["coco_not_object.json:1:", "a COCO object"]),
        ("coco_missing_images.json", &["coco_missing_images.json: missing field \"images\""]),
        ("coco_missing_bbox.json", &["coco_missing_bbox.json (annotation id 12): missing field \"bbox\""]),
        (
            "coco_bbox_wrong_type.json",
            &["(annotation id 5)", "\"bbox\" must be an array of 4 numbers", "\"0,0,1,1\""],
        ),
        ("coco_unknown_category.json", &["(annotation id 4)", "category id 99 is not in \"categories\""]),
        ("coco_unknown_image.json", &["(annotation id 3)", "image id 2 is not in \"images\""]),
        ("coco_duplicate_image.json", &["coco_duplicate_image.json (image id 2): duplicate image id"]),
        ("coco_duplicate_annotation.json", &["(annotation id 6): duplicate annotation id"]),
        ("coco_negative_image_id.json", &["(images[1])", "\"id\" must be a non-negative integer, found -1"]),
        ("coco_zero_width.json", &["(image id 3)", "\"width\" must be a positive integer"]),
        ("coco_duplicate_category_name.json", &["categories id 1 and id 2 have the same name \"cat\""]),
        ("coco_bad_iscrowd.json", &["(annotation id 9)", "\"iscrowd\" must be 0, 1 or a boolean, found 2"]),
        ("coco_number_out_of_range.json", &["coco_number_out_of_range.json:3:", "number out of range"]),
        ("coco_nan.json", &["coco_nan.json:3:", "invalid JSON"]),
        ("coco_image_not_object.json", &["coco_image_not_object.json:2:", "an image object"]),
        (
            "coco_negative_area.json",
            &["coco_negative_area.json (annotation id 11): \"area\" must be a finite number ≥ 0, found -5"],
        ),
        (
            "coco_area_string.json",
            &["coco_area_string.json (annotation id 11)", "\"area\" must be", "found \"big\""],
        ),
        (
            "coco_area_too_large.json",
            &["coco_area_too_large.json (annotation id 11)", "\"area\" must be a finite number"],
        ),
    ];
    for (name, fragments) in cases {
        assert_rejected(load_coco(&bad(name), Path::new("images")), fragments);
    }
    // A missing file is an I/O error naming it.
    let err = load_coco(&bad("no_such_file.json"), Path::new("images")).unwrap_err();
    assert!(matches!(err, DataError::Io { .. }) && err.to_string().contains("no_such_file.json"), "{err}");
}

#[test]
fn malformed_odvg_files_are_rejected_naming_file_and_line() {
    let grounding: &[(&str, &[&str])] = &[
        ("odvg_bad_json.jsonl", &["odvg_bad_json.jsonl:3:", "invalid JSON"]),
        ("odvg_not_object.jsonl", &["odvg_not_object.jsonl:2: expected a JSON object, found [1,2,3]"]),
        ("odvg_missing_caption.jsonl", &["odvg_missing_caption.jsonl:1: missing field \"caption\""]),
        (
            "odvg_span_out_of_range.jsonl",
            &["odvg_span_out_of_range.jsonl:2: region 1: span [2, 9]", "inside the caption (5 characters)"],
        ),
        (
            "odvg_span_text_mismatch.jsonl",
            &["odvg_span_text_mismatch.jsonl:1: region 0:", "\"dog\" cover \"cat\""],
        ),
        (
            "odvg_phrase_not_found.jsonl",
            &["odvg_phrase_not_found.jsonl:1: region 0:", "does not occur in the caption"],
        ),
        (
            "odvg_width_string.jsonl",
            &["odvg_width_string.jsonl:1:", "\"width\" must be a positive integer", "\"100\""],
        ),
        ("odvg_duplicate_image_id.jsonl", &["odvg_duplicate_image_id.jsonl:2: duplicate image id 1"]),
        ("odvg_nan.jsonl", &["odvg_nan.jsonl:1:", "invalid JSON"]),
        ("odvg_short_bbox.jsonl", &["odvg_short_bbox.jsonl:1: region 0:", "array of 4 numbers"]),
    ];
    for (name, fragments) in grounding {
        assert_rejected(load_odvg(&bad(name), Path::new("images"), None), fragments);
    }

    let label_map = fixture("odvg_label_map.json");
    let detection: &[(&str, &[&str])] = &[
        (
            "odvg_unknown_label.jsonl",
            &["odvg_unknown_label.jsonl:2: instance 0: label 3 is not in the label map"],
        ),
        (
            "odvg_category_mismatch.jsonl",
            &["odvg_category_mismatch.jsonl:1: instance 1:", "\"dog\"", "\"bicycle\""],
        ),
        (
            "odvg_grounding_with_label_map.jsonl",
            &["odvg_grounding_with_label_map.jsonl:1: missing field \"detection\""],
        ),
    ];
    for (name, fragments) in detection {
        assert_rejected(load_odvg(&bad(name), Path::new("images"), Some(&label_map)), fragments);
    }

    let err = load_label_map(&bad("label_map_bad_key.json")).unwrap_err().to_string();
    assert!(err.contains("label_map_bad_key.json (label \"one\")"), "{err}");
    assert_rejected(
        load_odvg(
            &fixture("odvg_detection.jsonl"),
            Path::new("images"),
            Some(&bad("label_map_bad_key.json")),
        ),
        &["label_map_bad_key.json (label \"one\")"],
    );
}

/// Every truncation of every line and every hostile value in place of every number of the
/// fixtures loads or fails cleanly: never a panic.
#[test]
fn hostile_inputs_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let hostile = [
        "-1",
        "0",
        "1e308",
        "-1e308",
        "1e39",
        "1.5",
        "18446744073709551616",
        "null",
        "\"x\"",
        "[]",
        "{}",
        "[[]]",
    ];
    let label_map = fixture("odvg_label_map.json");
    for name in ["odvg_grounding.jsonl", "odvg_detection.jsonl", "coco_valid.json"] {
        let text = std::fs::read_to_string(fixture(name)).unwrap();
        let mut variants: Vec<String> = Vec::new();
        for (cut, _) in text.char_indices().step_by(3) {
            variants.push(text[..cut].to_owned());
        }
        // Replace each number (a maximal run of digits, '.', '-', 'e') with each hostile value.
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i].is_ascii_digit() {
                let mut j = i;
                while j < bytes.len() && (bytes[j].is_ascii_digit() || bytes[j] == b'.' || bytes[j] == b'e') {
                    j += 1;
                }
                for value in hostile {
                    variants.push(format!("{}{value}{}", &text[..i], &text[j..]));
                }
                i = j;
            } else {
                i += 1;
            }
        }
        let path = dir.path().join(name);
        for variant in &variants {
            std::fs::write(&path, variant).unwrap();
            let _ = if name.ends_with(".json") {
                load_coco(&path, Path::new("images"))
            } else {
                load_odvg(&path, Path::new("images"), None).and(load_odvg(
                    &path,
                    Path::new("images"),
                    Some(&label_map),
                ))
            };
        }
    }
}

fn cats() -> Vec<Category> {
    vec![
        Category { id: 5, name: "Red Circle".into() },
        Category { id: 2, name: "blue square".into() },
        Category { id: 9, name: "green triangle".into() },
    ]
}

/// Detection samples in the form the COCO loader produces, with awkward float corners.
fn detection_samples(root: &Path) -> Vec<Sample> {
    let (caption, phrases) = category_prompt(&cats()).unwrap();
    let make = |id: u64, name: &str, regions: Vec<Region>| Sample {
        image_path: root.join(name),
        image_id: id,
        width: 333,
        height: 127,
        caption: caption.clone(),
        phrases: phrases.clone(),
        regions,
    };
    vec![
        make(
            3,
            "shapes/003.png",
            vec![
                region(0.1, 0.2, 0.3, 126.99, 2),
                Region {
                    bbox: BoxXyxy::new(1.0 / 3.0, 2.0 / 3.0, 332.9, 100.7),
                    phrase: 0,
                    iscrowd: true,
                    area: Some(1.0 / 7.0),
                },
                with_area(region(10.0, 20.0, 30.5, 40.25, 0), 123456.79),
            ],
        ),
        make(1, "shapes/001.png", Vec::new()),
        make(
            8,
            "/elsewhere/008.png",
            vec![region(299.99, 0.0, 333.0, 127.0, 1), with_area(region(1.0, 1.0, 3.0, 3.0, 1), 0.0)],
        ),
    ]
}

#[test]
fn coco_round_trip_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("images");
    let path = dir.path().join("out/instances.json");
    let samples = detection_samples(&root);
    write_coco(&path, &root, &cats(), &samples).unwrap();
    let back = load_coco(&path, &root).unwrap();
    assert_eq!(back.samples, samples);
    assert_eq!(back.categories, cats());
    assert!(back.warnings.is_empty(), "{:?}", back.warnings);

    // A loaded file written again reads back the same (file names relative to the root).
    let fixture_root = Path::new("/data/coco");
    let loaded = load_coco(&fixture("coco_valid.json"), fixture_root).unwrap();
    let again = dir.path().join("again.json");
    write_coco(&again, fixture_root, &loaded.categories, &loaded.samples).unwrap();
    let reloaded = load_coco(&again, fixture_root).unwrap();
    assert_eq!(reloaded.samples, loaded.samples);
    assert_eq!(reloaded.categories, loaded.categories);
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&again).unwrap()).unwrap();
    assert_eq!(json["images"][0]["file_name"], "a/000042.jpg");
    assert_eq!(json["annotations"][0]["bbox"], serde_json::json!([10.5, 20.25, 100.0, 50.0]));
    // The object area goes into `area` (as pycocotools reads it); without one, the box area.
    let written_areas: Vec<f64> =
        json["annotations"].as_array().unwrap().iter().map(|a| a["area"].as_f64().unwrap()).collect();
    assert_eq!(written_areas, [4321.5, 8000.0, 5000.0, 12.0]);

    // An area equal to the box area means the same as none: it reads back as `None`.
    let mut boxed = samples[1].clone();
    boxed.regions = vec![with_area(region(1.0, 2.0, 4.0, 6.0, 0), 12.0)];
    let boxed_path = dir.path().join("boxed.json");
    write_coco(&boxed_path, &root, &cats(), &[boxed]).unwrap();
    let back = load_coco(&boxed_path, &root).unwrap();
    assert_eq!(back.samples[0].regions, [region(1.0, 2.0, 4.0, 6.0, 0)]);
}

#[test]
fn coco_writer_refuses_what_it_cannot_store() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("images");
    let path = dir.path().join("out.json");
    let good = detection_samples(&root);
    let cases: Vec<(Sample, &str)> = vec![
        (
            {
                let mut s = good[0].clone();
                Arc::make_mut(&mut s.phrases)[2].category_id = None;
                s
            },
            "image id 3: region 0: phrase \"green triangle\" has no category id",
        ),
        (
            {
                let mut s = good[0].clone();
                Arc::make_mut(&mut s.phrases)[2].category_id = Some(77);
                s
            },
            "category id 77 is not among the categories",
        ),
        (
            {
                let mut s = good[0].clone();
                s.regions[0].phrase = 7;
                s
            },
            "phrase index 7 is out of range",
        ),
        (
            {
                let mut s = good[0].clone();
                s.regions[0].bbox.x1 = 400.0;
                s
            },
            "is not inside the 333x127 image",
        ),
        (
            {
                let mut s = good[0].clone();
                s.image_path = PathBuf::from("relative/elsewhere.png");
                s
            },
            "is neither under the image root",
        ),
        (
            {
                let mut s = good[0].clone();
                s.regions[1].area = Some(f32::NAN);
                s
            },
            "image id 3: region 1: area NaN is not a finite number ≥ 0",
        ),
        (
            {
                let mut s = good[0].clone();
                s.regions[2].area = Some(-1.0);
                s
            },
            "region 2: area -1 is not a finite number ≥ 0",
        ),
    ];
    for (sample, fragment) in cases {
        let err = write_coco(&path, &root, &cats(), &[sample]).unwrap_err();
        assert!(matches!(err, DataError::Invalid(_)), "{err:?}");
        let message = err.to_string();
        assert!(message.contains("out.json") && message.contains(fragment), "{message:?} lacks {fragment:?}");
    }
    let duplicate = [good[1].clone(), good[1].clone()];
    assert!(
        write_coco(&path, &root, &cats(), &duplicate)
            .unwrap_err()
            .to_string()
            .contains("image id 1: duplicate image id")
    );
    assert!(!path.exists(), "nothing is written when the samples are refused");
}

/// Grounding samples with non-ASCII captions, multi-span phrases, several boxes per phrase and
/// awkward float corners.
fn grounding_samples(root: &Path) -> Vec<Sample> {
    let phrase =
        |text: &str, spans: Vec<Range<usize>>| Phrase { text: text.into(), spans, category_id: None };
    vec![
        Sample {
            image_path: root.join("g/0.jpg"),
            image_id: 10,
            width: 64,
            height: 48,
            caption: "Ein Hund läuft über die Straße, der Hund bellt.".into(),
            phrases: vec![
                phrase("die Straße", vec![20..30]),
                phrase("Hund", vec![4..8]),
                phrase("Hund", vec![36..40]),
            ]
            .into(),
            regions: vec![
                region(0.1, 30.3, 63.9, 47.7, 0),
                region(1.0 / 3.0, 2.0, 10.0, 20.0, 1),
                region(11.0, 2.0, 20.5, 20.0, 1),
                region(40.0, 2.0, 50.0, 20.0, 2),
            ],
        },
        Sample {
            image_path: root.join("g/1.jpg"),
            image_id: 4,
            width: 10,
            height: 10,
            caption: "a cat, black and small".into(),
            phrases: vec![phrase("cat black", vec![2..5, 7..12])].into(),
            regions: vec![region(1.0, 1.0, 9.0, 9.0, 0)],
        },
        Sample {
            image_path: root.join("g/2.jpg"),
            image_id: 0,
            width: 5,
            height: 5,
            caption: "an empty field".into(),
            phrases: Arc::default(),
            regions: Vec::new(),
        },
    ]
}

#[test]
fn odvg_grounding_round_trip_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("images");
    let path = dir.path().join("train_odvg.jsonl");
    let samples = grounding_samples(&root);
    write_odvg(&path, &root, &samples).unwrap();
    let back = load_odvg(&path, &root, None).unwrap();
    assert_eq!(back.samples, samples);
    assert!(back.warnings.is_empty(), "{:?}", back.warnings);

    // One JSON object per line, in the ODVG grounding layout other tools read.
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 3);
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["filename"], "g/0.jpg");
    assert_eq!(first["grounding"]["regions"][0]["phrase"], "die Straße");
    assert_eq!(first["grounding"]["regions"][0]["tokens_positive"], serde_json::json!([[20, 30]]));

    // ODVG stores no object area: a region's area is not written and comes back as `None`.
    let mut with_areas = samples.clone();
    with_areas[0].regions[0].area = Some(55.5);
    write_odvg(&path, &root, &with_areas).unwrap();
    assert!(!std::fs::read_to_string(&path).unwrap().contains("area"));
    assert_eq!(load_odvg(&path, &root, None).unwrap().samples, samples);

    // The grounding fixture (its clipped box now inside the image) survives a write and a read.
    let loaded = load_odvg(&fixture("odvg_grounding.jsonl"), &root, None).unwrap();
    let again = dir.path().join("again.jsonl");
    write_odvg(&again, &root, &loaded.samples).unwrap();
    assert_eq!(load_odvg(&again, &root, None).unwrap().samples, loaded.samples);
}

#[test]
fn odvg_writer_refuses_what_it_cannot_store() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("images");
    let path = dir.path().join("out.jsonl");
    let good = grounding_samples(&root);
    let cases: Vec<(Sample, &str)> = vec![
        (
            {
                let mut s = good[0].clone();
                s.regions.pop();
                s
            },
            "phrase 2 (\"Hund\") has no region",
        ),
        (
            {
                let mut s = good[0].clone();
                s.regions.swap(0, 1);
                s
            },
            "phrase 1 is used by a region before phrase 0",
        ),
        (
            {
                let mut s = good[0].clone();
                Arc::make_mut(&mut s.phrases)[2].spans = vec![4..8];
                s
            },
            "repeats an earlier phrase",
        ),
        (
            {
                let mut s = good[0].clone();
                Arc::make_mut(&mut s.phrases)[0].category_id = Some(1);
                s
            },
            "has a category id",
        ),
        (
            {
                let mut s = good[0].clone();
                Arc::make_mut(&mut s.phrases)[1].spans = vec![4..7];
                s
            },
            "phrase 1: the spans of phrase \"Hund\" cover",
        ),
        (
            {
                let mut s = good[0].clone();
                Arc::make_mut(&mut s.phrases)[1].spans = vec![40..60];
                s
            },
            "not a non-empty range inside the caption",
        ),
        (
            {
                let mut s = good[0].clone();
                s.regions[3].iscrowd = true;
                s
            },
            "region 3: crowd regions",
        ),
        (
            {
                let mut s = good[0].clone();
                s.regions[1].bbox.y1 = f32::NAN;
                s
            },
            "region 1: box",
        ),
        (
            {
                let mut s = good[0].clone();
                s.regions[1].phrase = 5;
                s
            },
            "phrase 5 is used by a region before phrase 1",
        ),
    ];
    for (sample, fragment) in cases {
        let err = write_odvg(&path, &root, &[sample]).expect_err(fragment);
        assert!(matches!(err, DataError::Invalid(_)), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains("out.jsonl: image id 10:") && message.contains(fragment),
            "{message:?} lacks {fragment:?}"
        );
    }
    assert!(!path.exists(), "nothing is written when the samples are refused");
}
