//! The synthetic shapes dataset (`glint data synth`): what a user of the generated files relies
//! on — the layout, COCO and ODVG files that agree with each other and with the pixels, the
//! base / novel split, and byte-for-byte reproducibility.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use glint::data::coco::load_coco;
use glint::data::odvg::load_odvg;
use glint::data::synth::{Colour, Shape, SizeClass, Split, SynthConfig, generate, load_categories};
use serde_json::Value;

const SIZE: u32 = 128;

fn small_config(seed: u64) -> SynthConfig {
    SynthConfig { images: 12, image_size: SIZE, seed, ..SynthConfig::default() }
}

fn generate_into(config: &SynthConfig) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    generate(config, dir.path(), |_| {}).unwrap();
    dir
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn read_jsonl(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines().map(|line| serde_json::from_str(line).unwrap()).collect()
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn four(v: &Value) -> [f64; 4] {
    let a = v.as_array().unwrap();
    assert_eq!(a.len(), 4, "{v}");
    [num(&a[0]), num(&a[1]), num(&a[2]), num(&a[3])]
}

/// Every file under `root`, as relative path → bytes.
fn all_files(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.insert(path.strip_prefix(root).unwrap().to_path_buf(), std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// What a phrase says about its object (the grammar of `synth/caption.rs`).
#[derive(Clone, Debug, PartialEq)]
enum Claim {
    /// "a {attrs}": the only object with these attributes.
    Unique,
    /// "the {attrs} on the left" (rank 0) / "the second {attrs} from the top" (rank 1), counted
    /// from the start (left, top) or the end (right, bottom) of `axis` (0 = x, 1 = y).
    Rank { axis: usize, from_start: bool, rank: usize },
    /// "the {attrs} at the top left".
    Corner { top: bool, left: bool },
    /// "the {attrs} left of the {landmark attrs}" (`before`: left of / above).
    Relation { axis: usize, before: bool, landmark: (SizeClass, Colour, Shape) },
    /// "the largest {colour} {shape}" / "the smallest ...".
    Extreme { largest: bool },
}

/// A parsed phrase: its object's attributes (no size for an extreme) and what it claims.
#[derive(Debug)]
struct Parsed {
    size: Option<SizeClass>,
    colour: Colour,
    shape: Shape,
    claim: Claim,
}

fn parse_attributes(words: &[&str], phrase: &str) -> (SizeClass, Colour, Shape) {
    assert_eq!(words.len(), 3, "attributes in {phrase:?}");
    (
        SizeClass::from_name(words[0]).unwrap_or_else(|| panic!("size in {phrase:?}")),
        Colour::from_name(words[1]).unwrap_or_else(|| panic!("colour in {phrase:?}")),
        Shape::from_name(words[2]).unwrap_or_else(|| panic!("shape in {phrase:?}")),
    )
}

fn parse_phrase(phrase: &str) -> Parsed {
    const ORDINALS: [&str; 9] =
        ["second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth"];
    let words: Vec<&str> = phrase.split(' ').collect();
    assert!(words.len() >= 4, "phrase {phrase:?}");
    let with = |(size, colour, shape): (SizeClass, Colour, Shape), claim| Parsed {
        size: Some(size),
        colour,
        shape,
        claim,
    };
    if words[0] == "a" {
        return with(parse_attributes(&words[1..], phrase), Claim::Unique);
    }
    assert_eq!(words[0], "the", "phrase {phrase:?}");
    if let Some(largest) = match words[1] {
        "largest" => Some(true),
        "smallest" => Some(false),
        _ => None,
    } {
        assert_eq!(words.len(), 4, "phrase {phrase:?}");
        return Parsed {
            size: None,
            colour: Colour::from_name(words[2]).unwrap_or_else(|| panic!("colour in {phrase:?}")),
            shape: Shape::from_name(words[3]).unwrap_or_else(|| panic!("shape in {phrase:?}")),
            claim: Claim::Extreme { largest },
        };
    }
    if let Some(index) = ORDINALS.iter().position(|o| *o == words[1]) {
        let attrs = parse_attributes(&words[2..words.len().min(5)], phrase);
        let (axis, from_start) = match words[5..] {
            ["from", "the", "left"] => (0, true),
            ["from", "the", "right"] => (0, false),
            ["from", "the", "top"] => (1, true),
            ["from", "the", "bottom"] => (1, false),
            _ => panic!("phrase {phrase:?}"),
        };
        return with(attrs, Claim::Rank { axis, from_start, rank: index + 1 });
    }
    let attrs = parse_attributes(&words[1..4], phrase);
    let rank = |axis, from_start| Claim::Rank { axis, from_start, rank: 0 };
    let relation = |axis, before, landmark: &[&str]| Claim::Relation {
        axis,
        before,
        landmark: parse_attributes(landmark, phrase),
    };
    let claim = match &words[4..] {
        ["on", "the", "left"] => rank(0, true),
        ["on", "the", "right"] => rank(0, false),
        ["at", "the", "top"] => rank(1, true),
        ["at", "the", "bottom"] => rank(1, false),
        ["at", "the", vertical @ ("top" | "bottom"), horizontal @ ("left" | "right")] => {
            Claim::Corner { top: *vertical == "top", left: *horizontal == "left" }
        }
        ["left", "of", "the", landmark @ ..] => relation(0, true, landmark),
        ["right", "of", "the", landmark @ ..] => relation(0, false, landmark),
        ["above", "the", landmark @ ..] => relation(1, true, landmark),
        ["below", "the", landmark @ ..] => relation(1, false, landmark),
        _ => panic!("phrase {phrase:?}"),
    };
    with(attrs, claim)
}

/// An annotated object as the files describe it: size from the COCO area, shape from the COCO
/// category, colour from the ODVG phrase, box from ODVG.
#[derive(Clone, Copy, Debug)]
struct Object {
    attributes: (SizeClass, Colour, Shape),
    bbox: [f64; 4],
    area: f64,
}

impl Object {
    fn centre_and_extent(&self, axis: usize) -> (f64, f64) {
        let (lo, hi) = (self.bbox[axis], self.bbox[axis + 2]);
        ((lo + hi) / 2.0, hi - lo)
    }
}

/// The documented "clearly before" (left of / above, or from the end when `!from_start`):
/// centres apart by at least a quarter of the summed extents. The files print the same f32
/// corners the generator compared; 1e-3 px absorbs the f64 arithmetic here.
fn clearly_before(axis: usize, from_start: bool, a: &Object, b: &Object) -> bool {
    let (a, b) = if from_start { (a, b) } else { (b, a) };
    let ((ca, ea), (cb, eb)) = (a.centre_and_extent(axis), b.centre_and_extent(axis));
    cb - ca >= (ea + eb) / 4.0 - 1e-3
}

/// Checks that the phrase of `objects[target]` is true of the image and singles it out; returns
/// a name for the kind of phrase.
fn check_claim(objects: &[Object], target: usize, claim: &Claim, at: &str) -> &'static str {
    let t = &objects[target];
    let twins: Vec<&Object> = objects
        .iter()
        .enumerate()
        .filter(|(i, o)| *i != target && o.attributes == t.attributes)
        .map(|(_, o)| o)
        .collect();
    if *claim == Claim::Unique {
        assert!(twins.is_empty(), "{at}: a plain phrase for an object with {} twins", twins.len());
        return "unique";
    }
    assert!(!twins.is_empty(), "{at}: a referring phrase for an object nothing else looks like");
    match claim {
        Claim::Unique => unreachable!(),
        Claim::Rank { axis, from_start, rank } => {
            let before = twins.iter().filter(|o| clearly_before(*axis, *from_start, o, t)).count();
            let after = twins.iter().filter(|o| clearly_before(*axis, *from_start, t, o)).count();
            assert_eq!(before + after, twins.len(), "{at}: a twin is not clearly on either side");
            assert_eq!(before, *rank, "{at}: the rank counts the twins before it");
            assert!(before <= after, "{at}: the nearer end is named");
            match (rank, axis) {
                (0, 0) => "left / right",
                (0, _) => "top / bottom",
                _ => "ordinal",
            }
        }
        Claim::Corner { top, left } => {
            for o in &twins {
                let ahead = clearly_before(0, *left, o, t) || clearly_before(1, *top, o, t);
                let behind = clearly_before(0, *left, t, o) || clearly_before(1, *top, t, o);
                assert!(!ahead && behind, "{at}: {o:?} is not behind the corner");
            }
            "corner"
        }
        Claim::Relation { axis, before, landmark } => {
            let landmarks: Vec<&Object> = objects.iter().filter(|o| o.attributes == *landmark).collect();
            assert_eq!(landmarks.len(), 1, "{at}: the landmark is unique");
            let l = landmarks[0];
            assert!(clearly_before(*axis, *before, t, l), "{at}: not clearly on that side of the landmark");
            let offset = |axis: usize| (t.centre_and_extent(axis).0 - l.centre_and_extent(axis).0).abs();
            assert!(offset(*axis) >= offset(1 - axis) - 1e-3, "{at}: mostly to the side instead");
            let (landmark_centre, _) = l.centre_and_extent(*axis);
            for o in &twins {
                let (centre, _) = o.centre_and_extent(*axis);
                let on_side = if *before { centre < landmark_centre } else { centre > landmark_centre };
                assert!(!on_side, "{at}: a twin is on that side of the landmark too");
            }
            "relation"
        }
        Claim::Extreme { largest } => {
            for o in objects.iter().enumerate().filter(|(i, o)| {
                *i != target && (o.attributes.1, o.attributes.2) == (t.attributes.1, t.attributes.2)
            }) {
                let (big, small) = if *largest { (t.area, o.1.area) } else { (o.1.area, t.area) };
                // The generator compares the f32 areas the file prints.
                assert!(big >= 1.25 * small - 1e-2, "{at}: areas {big} vs {small}");
            }
            "extreme"
        }
    }
}

/// One image's annotations, joined across the COCO and ODVG files of a split.
struct Annotated {
    file_name: String,
    /// COCO annotations in file order: (category name, xywh, area).
    coco: Vec<(String, [f64; 4], f64)>,
    caption: String,
    /// ODVG regions in file order: (xyxy, phrase, tokens_positive).
    regions: Vec<([f64; 4], String, Vec<[usize; 2]>)>,
}

/// One split's images, which must all be `size` pixels square.
fn load_split(dir: &Path, split: &str, size: u32) -> Vec<Annotated> {
    let coco = read_json(&dir.join(format!("{split}.json")));
    let names: HashMap<u64, String> = coco["categories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["id"].as_u64().unwrap(), c["name"].as_str().unwrap().to_string()))
        .collect();
    let mut by_image: BTreeMap<u64, Vec<(String, [f64; 4], f64)>> = BTreeMap::new();
    for ann in coco["annotations"].as_array().unwrap() {
        assert_eq!(ann["iscrowd"], 0);
        let name = names[&ann["category_id"].as_u64().unwrap()].clone();
        by_image.entry(ann["image_id"].as_u64().unwrap()).or_default().push((
            name,
            four(&ann["bbox"]),
            num(&ann["area"]),
        ));
    }
    let odvg = read_jsonl(&dir.join(format!("{split}.odvg.jsonl")));
    let images = coco["images"].as_array().unwrap();
    assert_eq!(images.len(), odvg.len(), "{split}: COCO and ODVG list the same images");
    images
        .iter()
        .zip(odvg)
        .map(|(image, record)| {
            let file_name = image["file_name"].as_str().unwrap().to_string();
            assert_eq!(record["filename"], file_name.as_str());
            for key in ["width", "height"] {
                assert_eq!(image[key], size);
                assert_eq!(record[key], size);
            }
            let regions = record["grounding"]["regions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    let spans = r["tokens_positive"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|s| [s[0].as_u64().unwrap() as usize, s[1].as_u64().unwrap() as usize])
                        .collect();
                    (four(&r["bbox"]), r["phrase"].as_str().unwrap().to_string(), spans)
                })
                .collect();
            Annotated {
                coco: by_image.remove(&image["id"].as_u64().unwrap()).unwrap_or_default(),
                caption: record["grounding"]["caption"].as_str().unwrap().to_string(),
                file_name,
                regions,
            }
        })
        .collect()
}

#[test]
fn writes_the_documented_layout() {
    let config = small_config(1);
    let dir = tempfile::tempdir().unwrap();
    let mut reported = Vec::new();
    let summary = generate(&config, dir.path(), |done| reported.push(done)).unwrap();
    assert_eq!(reported, (1..=12).collect::<Vec<_>>(), "progress counts finished images");

    let files = all_files(dir.path());
    let mut expected: BTreeSet<PathBuf> =
        ["train.json", "val.json", "train.odvg.jsonl", "val.odvg.jsonl", "categories.json"]
            .map(PathBuf::from)
            .into();
    expected.extend((1..=12).map(|id| PathBuf::from(format!("images/{id:06}.jpg"))));
    assert_eq!(
        files.keys().cloned().collect::<BTreeSet<_>>(),
        expected,
        "no missing, stray or temporary files"
    );

    for id in 1..=12 {
        let image = image::open(dir.path().join(format!("images/{id:06}.jpg"))).unwrap();
        assert_eq!((image.width(), image.height()), (SIZE, SIZE));
    }

    let train = load_split(dir.path(), "train", SIZE);
    let val = load_split(dir.path(), "val", SIZE);
    assert_eq!((train.len(), val.len()), (12 - config.val_images(), config.val_images()));
    assert!(!train.is_empty() && !val.is_empty(), "both splits present");
    let count = |split: &[Annotated]| split.iter().map(|a| a.coco.len()).sum::<usize>();
    assert_eq!((summary.train_images, summary.val_images), (train.len(), val.len()));
    assert_eq!((summary.train_annotations, summary.val_annotations), (count(&train), count(&val)));
    let names: BTreeSet<&str> = train.iter().chain(&val).map(|a| a.file_name.as_str()).collect();
    assert_eq!(names.len(), 12, "train and val are disjoint and cover every image");
    for a in train.iter().chain(&val) {
        assert!(!a.coco.is_empty(), "{}: every image has objects", a.file_name);
    }

    // glint's own loaders read both files back without fixing anything, and agree.
    let images = dir.path().join("images");
    for split in ["train", "val"] {
        let coco = load_coco(&dir.path().join(format!("{split}.json")), &images).unwrap();
        let odvg = load_odvg(&dir.path().join(format!("{split}.odvg.jsonl")), &images, None).unwrap();
        assert!(coco.warnings.is_empty(), "{:?}", coco.warnings);
        assert!(odvg.warnings.is_empty(), "{:?}", odvg.warnings);
        assert_eq!(coco.samples.len(), odvg.samples.len());
        for (c, o) in coco.samples.iter().zip(&odvg.samples) {
            assert_eq!((c.image_id, &c.image_path), (o.image_id, &o.image_path));
            assert!(c.image_path.is_file(), "{}", c.image_path.display());
            assert_eq!(c.regions.len(), o.regions.len());
        }
    }
}

#[test]
fn boxes_lie_inside_their_image_with_positive_area() {
    let dir = generate_into(&small_config(2));
    for split in ["train", "val"] {
        let coco = read_json(&dir.path().join(format!("{split}.json")));
        let image_ids: BTreeSet<u64> =
            coco["images"].as_array().unwrap().iter().map(|i| i["id"].as_u64().unwrap()).collect();
        let category_ids: BTreeSet<u64> =
            coco["categories"].as_array().unwrap().iter().map(|c| c["id"].as_u64().unwrap()).collect();
        let mut ann_ids = BTreeSet::new();
        for ann in coco["annotations"].as_array().unwrap() {
            let id = ann["id"].as_u64().unwrap();
            // pycocotools treats annotation id 0 as "unmatched".
            assert!(id >= 1 && ann_ids.insert(id), "annotation ids are unique and positive");
            assert!(image_ids.contains(&ann["image_id"].as_u64().unwrap()));
            assert!(category_ids.contains(&ann["category_id"].as_u64().unwrap()));
            let [x, y, w, h] = four(&ann["bbox"]);
            let size = SIZE as f64;
            assert!(x >= 0.0 && y >= 0.0 && w > 0.0 && h > 0.0, "{ann}");
            // Corners are rounded to 0.01; x + w is that corner up to f32 precision.
            assert!(x + w <= size + 0.011 && y + h <= size + 0.011, "{ann}");
            let area = num(&ann["area"]);
            assert!(area > 0.0 && area <= w * h + 1.0, "drawn area fits in the box: {ann}");
        }
    }
}

/// Checks one image's caption, phrases and boxes against each other and the COCO file, and
/// that every phrase is true of the image and singles its object out. Returns the kind of each
/// phrase.
fn check_image(image: &Annotated) -> Vec<&'static str> {
    let at = &image.file_name;
    let caption: Vec<char> = image.caption.chars().collect();
    assert_eq!(image.coco.len(), image.regions.len(), "{at}: one region per COCO annotation");
    let mut objects = Vec::new();
    let mut claims = Vec::new();
    for ((category, xywh, area), (xyxy, phrase, spans)) in image.coco.iter().zip(&image.regions) {
        // The same object in both files: boxes agree up to the 0.01 rounding of each.
        let [x, y, w, h] = *xywh;
        let from_coco = [x, y, x + w, y + h];
        for (a, b) in from_coco.iter().zip(xyxy) {
            assert!((a - b).abs() <= 0.011, "{at}: COCO {xywh:?} vs ODVG {xyxy:?}");
        }
        // The phrase names the annotation's category and its COCO size bucket.
        let parsed = parse_phrase(phrase);
        let size = SizeClass::from_area(*area);
        assert_eq!(parsed.shape.name(), category, "{at}: {phrase:?}");
        if let Some(named) = parsed.size {
            assert_eq!(named, size, "{at}: {phrase:?} has area {area}");
        }
        assert!(!phrase.contains(['.', '?']), "{at}: {phrase:?}");
        // Each region has one span, and it spells the phrase in the caption.
        assert_eq!(spans.len(), 1, "{at}: {phrase:?}");
        let [start, end] = spans[0];
        assert!(start < end && end <= caption.len(), "{at}: span {start}..{end}");
        assert_eq!(caption[start..end].iter().collect::<String>(), *phrase, "{at}");
        objects.push(Object { attributes: (size, parsed.colour, parsed.shape), bbox: *xyxy, area: *area });
        claims.push(parsed.claim);
    }
    // One phrase per object, distinct: the caption lists the objects' phrases in order.
    let phrases: Vec<&str> = image.regions.iter().map(|r| r.1.as_str()).collect();
    let distinct: BTreeSet<&str> = phrases.iter().copied().collect();
    assert_eq!(distinct.len(), phrases.len(), "{at}: two objects share a phrase: {phrases:?}");
    assert_eq!(image.caption, format!("{} .", phrases.join(" . ")), "{at}: the caption is the phrases");
    claims
        .iter()
        .enumerate()
        .map(|(i, claim)| check_claim(&objects, i, claim, &format!("{at}: {:?}", phrases[i])))
        .collect()
}

#[test]
fn captions_phrases_and_boxes_agree() {
    let dir = generate_into(&small_config(3));
    let mut regions_seen = 0;
    for image in load_split(dir.path(), "train", SIZE).into_iter().chain(load_split(dir.path(), "val", SIZE))
    {
        regions_seen += check_image(&image).len();
    }
    assert!(regions_seen >= 24, "a dozen images hold a few objects each, got {regions_seen}");
}

/// The image flipped left to right: boxes mirrored, the words "left" and "right" swapped.
fn mirrored(image: &Annotated, width: f64) -> Annotated {
    let swap = |phrase: &str| -> String {
        let words = phrase.split(' ').map(|w| match w {
            "left" => "right",
            "right" => "left",
            other => other,
        });
        words.collect::<Vec<_>>().join(" ")
    };
    let phrases: Vec<String> = image.regions.iter().map(|r| swap(&r.1)).collect();
    let mut start = 0;
    let regions = image
        .regions
        .iter()
        .zip(&phrases)
        .map(|((bbox, _, _), phrase)| {
            let end = start + phrase.chars().count();
            let span = vec![[start, end]];
            start = end + " . ".len();
            ([width - bbox[2], bbox[1], width - bbox[0], bbox[3]], phrase.clone(), span)
        })
        .collect();
    Annotated {
        file_name: format!("{} (mirrored)", image.file_name),
        coco: image
            .coco
            .iter()
            .map(|(c, [x, y, w, h], a)| (c.clone(), [width - x - w, *y, *w, *h], *a))
            .collect(),
        caption: format!("{} .", phrases.join(" . ")),
        regions,
    }
}

#[test]
fn look_alike_objects_get_true_referring_phrases() {
    // Crowded scenes, so that many objects share size, colour and shape with another.
    let config = SynthConfig {
        images: 200,
        image_size: 320,
        min_objects: 12,
        max_objects: 18,
        val_fraction: 0.0,
        ..SynthConfig::default()
    };
    let dir = generate_into(&config);
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for image in load_split(dir.path(), "train", 320) {
        for kind in check_image(&image) {
            *kinds.entry(kind).or_default() += 1;
        }
        // A horizontal flip that swaps "left" and "right" (as training augmentation does)
        // keeps every phrase true.
        check_image(&mirrored(&image, 320.0));
    }
    println!("{kinds:?}");
    for kind in ["unique", "left / right", "top / bottom", "relation", "extreme"] {
        assert!(kinds.get(kind).copied().unwrap_or(0) >= 2, "few {kind:?} phrases: {kinds:?}");
    }
}

#[test]
fn categories_declare_disjoint_base_and_novel_shapes() {
    let dir = generate_into(&small_config(4));
    let categories = load_categories(&dir.path().join("categories.json")).unwrap();
    assert!(categories.len() >= 8);
    let coco = read_json(&dir.path().join("train.json"));
    let coco_categories: Vec<(u64, &str)> = coco["categories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["id"].as_u64().unwrap(), c["name"].as_str().unwrap()))
        .collect();
    let declared: Vec<(u64, &str)> = categories.iter().map(|c| (c.id, c.name.as_str())).collect();
    assert_eq!(declared, coco_categories, "categories.json and COCO list the same ids and names");

    let names = |split: Split| -> BTreeSet<&str> {
        categories.iter().filter(|c| c.split == split).map(|c| c.name.as_str()).collect()
    };
    let (base, novel) = (names(Split::Base), names(Split::Novel));
    assert_eq!(novel, BTreeSet::from(["crescent", "diamond", "pentagon"]));
    assert!(base.len() >= 6 && base.is_disjoint(&novel));
    assert_eq!(base.len() + novel.len(), categories.len());

    // The split is configurable; the raw JSON uses the lower-case split names.
    let custom = SynthConfig { images: 2, novel: vec!["star".into(), "heart".into()], ..small_config(4) };
    let dir = generate_into(&custom);
    let raw = read_json(&dir.path().join("categories.json"));
    let novel: BTreeSet<&str> = raw["categories"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["split"] == "novel")
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(novel, BTreeSet::from(["heart", "star"]));
}

#[test]
fn same_seed_gives_the_same_bytes_and_another_seed_does_not() {
    let first = all_files(generate_into(&small_config(5)).path());
    let second = all_files(generate_into(&small_config(5)).path());
    assert_eq!(first.keys().collect::<Vec<_>>(), second.keys().collect::<Vec<_>>());
    for (path, bytes) in &first {
        assert!(*bytes == second[path], "{} differs between two runs with the same seed", path.display());
    }
    let other = all_files(generate_into(&small_config(6)).path());
    assert_ne!(first[Path::new("train.json")], other[Path::new("train.json")]);
    assert_ne!(first[Path::new("images/000001.jpg")], other[Path::new("images/000001.jpg")]);
}

fn colour_distance(pixel: &image::Rgb<u8>, colour: Colour) -> f32 {
    pixel.0.iter().zip(colour.rgb()).map(|(a, b)| (*a as f32 - b as f32).powi(2)).sum::<f32>().sqrt()
}

#[test]
fn each_isolated_shape_is_drawn_in_its_colour_and_fills_its_box_tightly() {
    // "Near" the nominal colour: within 70 RGB units, which covers the colour jitter (±10 per
    // channel), shading (±15%), noise and JPEG, while the muted backgrounds and grey / brown
    // clutter stay further away.
    const NEAR: f32 = 70.0;
    // Sparse scenes, so that many objects stand alone.
    let dir = generate_into(&SynthConfig { images: 24, min_objects: 1, max_objects: 3, ..small_config(7) });
    let mut checked = 0;
    for image in load_split(dir.path(), "train", SIZE).into_iter().chain(load_split(dir.path(), "val", SIZE))
    {
        let pixels = image::open(dir.path().join("images").join(&image.file_name)).unwrap().to_rgb8();
        let boxes: Vec<[f64; 4]> = image.regions.iter().map(|r| r.0).collect();
        for (i, (bbox, phrase, _)) in image.regions.iter().enumerate() {
            // Only objects whose box, grown by 6 px, touches no other box: their surroundings
            // are background.
            let grown = [bbox[0] - 6.0, bbox[1] - 6.0, bbox[2] + 6.0, bbox[3] + 6.0];
            let touches =
                |b: &[f64; 4]| b[0] < grown[2] && grown[0] < b[2] && b[1] < grown[3] && grown[1] < b[3];
            if boxes.iter().enumerate().any(|(j, b)| j != i && touches(b)) {
                continue;
            }
            let colour = parse_phrase(phrase).colour;
            let near = |x: i64, y: i64| {
                let inside = (0..SIZE as i64).contains(&x) && (0..SIZE as i64).contains(&y);
                inside.then(|| colour_distance(pixels.get_pixel(x as u32, y as u32), colour) < NEAR)
            };
            let [x0, y0, x1, y1] = bbox.map(|v| v.round() as i64);
            let at = format!("{} {phrase:?} {bbox:?}", image.file_name);

            // Inside: the shape fills a fair part of its box (a star or crescent fills ~35%).
            let inside: Vec<bool> = (y0..y1)
                .flat_map(|y| (x0..x1).map(move |x| (x, y)))
                .filter_map(|(x, y)| near(x, y))
                .collect();
            let fill = inside.iter().filter(|n| **n).count() as f32 / inside.len() as f32;
            assert!(fill > 0.2, "{at}: only {fill:.2} of the box has the object's colour");

            // Tight: each side's 3-pixel strip inside the box touches the shape ...
            let strip_hits = |xs: std::ops::Range<i64>, ys: std::ops::Range<i64>| {
                ys.flat_map(|y| xs.clone().map(move |x| (x, y)))
                    .filter(|&(x, y)| near(x, y) == Some(true))
                    .count()
            };
            assert!(strip_hits(x0..x0 + 3, y0..y1) > 0, "{at}: left side");
            assert!(strip_hits(x1 - 3..x1, y0..y1) > 0, "{at}: right side");
            assert!(strip_hits(x0..x1, y0..y0 + 3) > 0, "{at}: top side");
            assert!(strip_hits(x0..x1, y1 - 3..y1) > 0, "{at}: bottom side");

            // ... and the ring 2 to 5 pixels outside it is (nearly) free of the colour.
            let ring: Vec<bool> = (y0 - 5..y1 + 5)
                .flat_map(|y| (x0 - 5..x1 + 5).map(move |x| (x, y)))
                .filter(|&(x, y)| x < x0 - 1 || x > x1 || y < y0 - 1 || y > y1)
                .filter_map(|(x, y)| near(x, y))
                .collect();
            if !ring.is_empty() {
                let leak = ring.iter().filter(|n| **n).count() as f32 / ring.len() as f32;
                assert!(leak < 0.05, "{at}: {leak:.2} of the ring around the box has the object's colour");
            }
            checked += 1;
        }
    }
    assert!(checked >= 8, "too few isolated objects to check: {checked}");
}

#[test]
fn full_size_images_cover_the_vocabulary() {
    // At 320 px every shape, colour and COCO size bucket occurs, and objects overlap.
    let dir = generate_into(&SynthConfig {
        images: 40,
        image_size: 320,
        val_fraction: 0.0,
        ..SynthConfig::default()
    });
    let mut shapes = BTreeSet::new();
    let mut colours = BTreeSet::new();
    let mut sizes = BTreeSet::new();
    let mut overlapping = 0;
    for record in read_jsonl(&dir.path().join("train.odvg.jsonl")) {
        let regions = record["grounding"]["regions"].as_array().unwrap();
        let boxes: Vec<[f64; 4]> = regions.iter().map(|r| four(&r["bbox"])).collect();
        for r in regions {
            let parsed = parse_phrase(r["phrase"].as_str().unwrap());
            shapes.insert(parsed.shape.name());
            colours.insert(parsed.colour.name());
            sizes.extend(parsed.size.map(SizeClass::name));
        }
        for (i, a) in boxes.iter().enumerate() {
            for b in &boxes[i + 1..] {
                if a[0] < b[2] && b[0] < a[2] && a[1] < b[3] && b[1] < a[3] {
                    overlapping += 1;
                }
            }
        }
    }
    assert_eq!(shapes.len(), Shape::ALL.len(), "{shapes:?}");
    assert_eq!(colours.len(), Colour::ALL.len(), "{colours:?}");
    assert_eq!(sizes.len(), 3, "{sizes:?}");
    assert!(overlapping >= 5, "objects should sometimes overlap, got {overlapping} overlapping pairs");
}

#[test]
fn refuses_a_non_empty_output_directory_and_bad_configs() {
    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().join("notes.txt");
    std::fs::write(&keep, b"mine").unwrap();
    let err = generate(&small_config(8), dir.path(), |_| {}).unwrap_err().to_string();
    assert!(err.contains(&dir.path().display().to_string()) && err.contains("not empty"), "{err}");
    assert_eq!(std::fs::read(&keep).unwrap(), b"mine");

    let empty = tempfile::tempdir().unwrap();
    let bad = SynthConfig { novel: vec!["octagon".into()], ..small_config(8) };
    let err = generate(&bad, empty.path(), |_| {}).unwrap_err().to_string();
    assert!(err.contains("octagon"), "{err}");
    assert!(all_files(empty.path()).is_empty(), "nothing written for a bad config");

    // An absurd image count is a one-line error, not an attempt to allocate for it.
    let huge = SynthConfig { images: usize::MAX, ..small_config(8) };
    let err = generate(&huge, empty.path(), |_| {}).unwrap_err().to_string();
    assert!(err.contains("images must be in 1..=1000000") && !err.contains('\n'), "{err}");
    assert!(all_files(empty.path()).is_empty());
}
