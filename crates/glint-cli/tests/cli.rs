//! End-to-end tests of the `glint` binary: what a user types, what they get back.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs the CLI as a desktop session would: `--device auto` (the default) probes Vulkan, and
/// Mesa's software driver (CI's lavapipe) complains on stderr when `XDG_RUNTIME_DIR` is unset.
fn glint(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_glint"))
        .args(args)
        .env("XDG_RUNTIME_DIR", runtime_dir())
        .output()
        .expect("the glint binary runs")
}

fn runtime_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        dir
    })
    .path()
}

fn fixture(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(relative)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A user error: non-zero exit, one line on stderr that starts with `error:` and names `needle`.
fn assert_one_line_error(output: &Output, needle: &str) {
    assert!(!output.status.success(), "expected failure, got success; stderr: {}", stderr(output));
    let text = stderr(output);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr, got: {text:?}");
    assert!(lines[0].starts_with("error: "), "{text:?}");
    assert!(lines[0].contains(needle), "error {text:?} should name {needle:?}");
    assert!(!text.contains("panicked"), "{text:?}");
}

#[test]
fn eval_prints_the_coco_table_and_writes_json() {
    let gt = fixture("eval/mixed_gt.json");
    let dets = fixture("eval/mixed_dets.json");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("eval/mixed_expected.json")).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("metrics.json");

    let output = glint(&[
        "eval",
        "--gt",
        gt.to_str().unwrap(),
        "--dets",
        dets.to_str().unwrap(),
        "--json",
        out.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.contains("Average Precision"), "{stdout}");

    let written: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let ap = written["metrics"]["AP"].as_f64().unwrap();
    let expected_ap = expected["metrics"]["AP"].as_f64().unwrap();
    assert!((ap - expected_ap).abs() < 1e-4, "AP {ap} vs pycocotools {expected_ap}");
    assert!(stdout.contains(&format!("{ap:.3}")), "table should show AP {ap:.3}: {stdout}");
}

#[test]
fn eval_json_to_stdout() {
    let gt = fixture("eval/perfect_gt.json");
    let dets = fixture("eval/perfect_dets.json");
    let output =
        glint(&["eval", "--gt", gt.to_str().unwrap(), "--dets", dets.to_str().unwrap(), "--json", "-"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("stdout is only the JSON report");
    assert_eq!(report["metrics"]["AP50"].as_f64(), Some(1.0));
}

#[test]
fn eval_bad_inputs_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let gt = fixture("eval/mixed_gt.json");
    let missing = dir.path().join("missing-dets.json");
    let output = glint(&["eval", "--gt", gt.to_str().unwrap(), "--dets", missing.to_str().unwrap()]);
    assert_one_line_error(&output, "missing-dets.json");

    let malformed = dir.path().join("broken.json");
    std::fs::write(&malformed, "[{\"image_id\": 1, ").unwrap();
    let output = glint(&["eval", "--gt", gt.to_str().unwrap(), "--dets", malformed.to_str().unwrap()]);
    assert_one_line_error(&output, "broken.json");

    let output = glint(&["eval", "--gt", malformed.to_str().unwrap(), "--dets", gt.to_str().unwrap()]);
    assert_one_line_error(&output, "broken.json");
}

#[test]
fn synth_then_check_then_eval_ground_truth_against_itself() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("shapes");
    let output = glint(&[
        "data",
        "synth",
        "--out",
        out.to_str().unwrap(),
        "--images",
        "10",
        "--seed",
        "3",
        "--image-size",
        "96",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("wrote 10 images"), "{stdout}");

    for file in ["train.json", "val.json", "train.odvg.jsonl", "val.odvg.jsonl", "categories.json"] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    let output = glint(&["data", "check", out.join("train.json").to_str().unwrap(), "--decode"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("decode at their declared size"));
    let output = glint(&["data", "check", out.join("val.odvg.jsonl").to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));

    // Ground truth turned into results (score 1) must score AP 1: the files agree on ids and boxes.
    let gt: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("val.json")).unwrap()).unwrap();
    let results: Vec<serde_json::Value> = gt["annotations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| serde_json::json!({"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}))
        .collect();
    let dets = dir.path().join("dets.json");
    std::fs::write(&dets, serde_json::to_string(&results).unwrap()).unwrap();
    let output = glint(&[
        "eval",
        "--gt",
        out.join("val.json").to_str().unwrap(),
        "--dets",
        dets.to_str().unwrap(),
        "--json",
        "-",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["metrics"]["AP"].as_f64(), Some(1.0));
}

#[test]
fn synth_refuses_to_write_into_a_non_empty_directory() {
    let dir = tempfile::tempdir().unwrap();
    let precious = dir.path().join("notes.txt");
    std::fs::write(&precious, "mine").unwrap();
    let output = glint(&["data", "synth", "--out", dir.path().to_str().unwrap(), "--images", "2"]);
    assert_one_line_error(&output, dir.path().file_name().unwrap().to_str().unwrap());
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "mine");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "nothing else was written");
}

#[test]
fn check_reports_bad_annotation_files_and_images() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"images\": [").unwrap();
    assert_one_line_error(&glint(&["data", "check", bad.to_str().unwrap()]), "bad.json");

    // A valid COCO file whose image is corrupt: --decode names the image.
    std::fs::write(dir.path().join("photo.jpg"), b"not a jpeg at all").unwrap();
    let coco = dir.path().join("ann.json");
    std::fs::write(
        &coco,
        r#"{"images": [{"id": 1, "file_name": "photo.jpg", "width": 4, "height": 4}],
            "annotations": [], "categories": [{"id": 1, "name": "cat"}]}"#,
    )
    .unwrap();
    let output = glint(&["data", "check", coco.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_one_line_error(&glint(&["data", "check", coco.to_str().unwrap(), "--decode"]), "photo.jpg");
}

#[test]
fn help_lists_the_commands() {
    let output = glint(&["--help"]);
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    for command in ["data", "eval"] {
        assert!(text.contains(command), "{text}");
    }
    let output = glint(&["data", "synth", "--help"]);
    assert!(String::from_utf8_lossy(&output.stdout).contains("--seed"));
}

/// `glint eval` on a realistic results file: the synthetic set of seed 0 and the shipped demo
/// detections (`datasets/demo/make_dets.py`) must still belong together, and the numbers must
/// stay pycocotools' (AP and AP50 measured with pycocotools 2.0.11 on the same two files).
#[test]
fn eval_gives_pycocotools_numbers_on_the_demo_detections() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("shapes");
    let output = glint(&["data", "synth", "--out", out.to_str().unwrap(), "--images", "200", "--seed", "0"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let dets = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/demo/shapes-seed0-val-dets.json");
    let output = glint(&[
        "eval",
        "--gt",
        out.join("val.json").to_str().unwrap(),
        "--dets",
        dets.to_str().unwrap(),
        "--json",
        "-",
    ]);
    assert!(
        output.status.success(),
        "the demo detections no longer fit the generator: rerun datasets/demo/make_dets.py ({})",
        stderr(&output)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let ap = report["metrics"]["AP"].as_f64().unwrap();
    let ap50 = report["metrics"]["AP50"].as_f64().unwrap();
    assert!(
        (ap - 0.385_976_928_954_505_3).abs() < 1e-4,
        "AP {ap}: rerun datasets/demo/make_dets.py if the generator changed"
    );
    assert!((ap50 - 0.645_586_873_813_431_8).abs() < 1e-4, "AP50 {ap50}");
}

#[test]
fn prompt_shows_tokens_and_positive_map() {
    let tokenizer = fixture("tokenizer/tokenizer.json");
    let output =
        glint(&["data", "prompt", "--tokenizer", tokenizer.to_str().unwrap(), "Cat. remote  control"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("2 phrases in 1 chunk"), "{text}");
    assert!(text.contains("[CLS] cat . remote control . [SEP]"), "{text}");
    assert!(text.contains("\"remote control\": tokens [3, 4] remote control"), "{text}");
}

#[test]
fn long_prompts_are_chunked_and_empty_ones_rejected() {
    let tokenizer = fixture("tokenizer/tokenizer.json");
    let phrases: Vec<String> = (0..500).map(|i| format!("object number {i}")).collect();
    let long = phrases.join(" . ");
    let output = glint(&["data", "prompt", "--tokenizer", tokenizer.to_str().unwrap(), &long]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.starts_with("500 phrases in "), "{text}");
    assert!(text.contains("phrase 499 \"object number 499\""), "no phrase is dropped");

    assert_one_line_error(
        &glint(&["data", "prompt", "--tokenizer", tokenizer.to_str().unwrap(), " . . "]),
        "no phrases",
    );
    let missing = Path::new("/nonexistent/tokenizer.json");
    assert_one_line_error(
        &glint(&["data", "prompt", "--tokenizer", missing.to_str().unwrap(), "cat"]),
        "/nonexistent/tokenizer.json",
    );
    let word = "a".repeat(300);
    let spaced: Vec<&str> = std::iter::repeat_n("x", 300).collect();
    let output = glint(&[
        "data",
        "prompt",
        "--tokenizer",
        tokenizer.to_str().unwrap(),
        &format!("cat . {}", spaced.join(" ")),
    ]);
    assert_one_line_error(&output, "tokens");
    let output = glint(&["data", "prompt", "--tokenizer", tokenizer.to_str().unwrap(), &word]);
    assert!(output.status.success(), "one long word is a few word pieces: {}", stderr(&output));
}

#[test]
fn verbose_flag_logs_to_stderr() {
    let gt = fixture("eval/perfect_gt.json");
    let dets = fixture("eval/perfect_dets.json");
    let quiet = glint(&["eval", "--gt", gt.to_str().unwrap(), "--dets", dets.to_str().unwrap()]);
    assert!(quiet.status.success());
    assert!(stderr(&quiet).is_empty(), "no logs by default: {}", stderr(&quiet));
    let verbose = glint(&["-v", "eval", "--gt", gt.to_str().unwrap(), "--dets", dets.to_str().unwrap()]);
    assert!(verbose.status.success());
    assert!(stderr(&verbose).contains("evaluated"), "{}", stderr(&verbose));
    assert_eq!(verbose.stdout, quiet.stdout, "logs never go to stdout");
}

#[test]
fn eval_refuses_to_overwrite_its_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let gt = dir.path().join("gt.json");
    std::fs::copy(fixture("eval/perfect_gt.json"), &gt).unwrap();
    let before = std::fs::read(&gt).unwrap();
    let dets = fixture("eval/perfect_dets.json");
    let output = glint(&[
        "eval",
        "--gt",
        gt.to_str().unwrap(),
        "--dets",
        dets.to_str().unwrap(),
        "--json",
        gt.to_str().unwrap(),
    ]);
    assert_one_line_error(&output, "gt.json");
    assert_eq!(std::fs::read(&gt).unwrap(), before, "the ground truth is untouched");
}

#[test]
fn check_reads_odvg_lines_named_json_and_limits_warnings() {
    let dir = tempfile::tempdir().unwrap();
    // MM-Detection's converters write ODVG lines into `*_vg.json` files.
    let odvg = dir.path().join("goldg_vg.json");
    let mut lines = String::new();
    for i in 0..30 {
        // Each record has one box sticking out of its image: clipped, with a warning.
        lines.push_str(&format!(
            "{{\"filename\": \"{i}.jpg\", \"height\": 10, \"width\": 10, \"grounding\": {{\"caption\": \"a cat\", \"regions\": [{{\"bbox\": [2, 2, 14, 8], \"phrase\": \"a cat\", \"tokens_positive\": [[0, 5]]}}]}}}}\n"
        ));
    }
    std::fs::write(&odvg, lines).unwrap();
    let as_coco = glint(&["data", "check", odvg.to_str().unwrap()]);
    assert_one_line_error(&as_coco, "goldg_vg.json");
    let output = glint(&["data", "check", odvg.to_str().unwrap(), "--format", "odvg"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("30 images"), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.starts_with("warning:")).count(),
        21,
        "20 warnings and a count: {text}"
    );
    assert!(text.contains("... and 10 more"), "{text}");
    let output = glint(&["-v", "data", "check", odvg.to_str().unwrap(), "--format", "odvg"]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(text.lines().filter(|l| l.starts_with("warning:")).count(), 30, "-v shows all: {text}");
}

/// The tiny transformers-made Grounding DINO checkpoint and what transformers' post-processing
/// found in the two fixture images (tests/fixtures/make_grounding_dino.py).
fn grounding_dino_expected() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("grounding_dino/tiny_detect.json")).unwrap())
        .unwrap()
}

#[test]
fn detect_prints_the_boxes_and_scores_transformers_gives() {
    let expected = grounding_dino_expected();
    let model = fixture("grounding_dino/tiny");
    let images: Vec<PathBuf> = expected["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| fixture(&format!("grounding_dino/{}", i["file"].as_str().unwrap())))
        .collect();
    let threshold = expected["box_threshold"].as_f64().unwrap().to_string();
    let mut args = vec![
        "detect",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        expected["prompt"].as_str().unwrap(),
        "--box-threshold",
        &threshold,
        "--text-threshold",
        "0",
        "--batch-size",
        "2",
        "--json",
        "-",
    ];
    args.extend(images.iter().map(|p| p.to_str().unwrap()));
    let output = glint(&args);
    assert!(output.status.success(), "{}", stderr(&output));
    let found: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let found = found.as_array().unwrap();
    assert_eq!(found.len(), 2);
    for (result, reference) in found.iter().zip(expected["images"].as_array().unwrap()) {
        assert_eq!(result["width"], reference["width"]);
        assert_eq!(result["height"], reference["height"]);
        let mut wanted: Vec<&serde_json::Value> =
            reference["detections"].as_array().unwrap().iter().collect();
        wanted.sort_by(|a, b| b["score"].as_f64().unwrap().total_cmp(&a["score"].as_f64().unwrap()));
        let got = result["detections"].as_array().unwrap();
        assert_eq!(got.len(), wanted.len(), "{result}");
        for (g, w) in got.iter().zip(wanted) {
            let score = g["score"].as_f64().unwrap();
            assert!((score - w["score"].as_f64().unwrap()).abs() <= 1e-4, "{g} vs {w}");
            for k in 0..4 {
                let (a, b) = (g["bbox"][k].as_f64().unwrap(), w["bbox"][k].as_f64().unwrap());
                assert!((a - b).abs() <= 0.1, "{g} vs {w}");
            }
            let phrase = g["phrase"].as_str().unwrap();
            let index = g["phrase_index"].as_u64().unwrap() as usize;
            assert_eq!(["red circle", "blue square", "green triangle"][index], phrase);
        }
    }
}

#[test]
fn detect_writes_annotated_copies_and_never_an_input() {
    let model = fixture("grounding_dino/tiny");
    let image = fixture("grounding_dino/images/shapes_a.png");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("annotated");
    let json = dir.path().join("detections.json");
    let output = glint(&[
        "detect",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "red circle . blue square",
        "--box-threshold",
        "0.1",
        "--text-threshold",
        "0.01",
        "--out",
        out.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
        image.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let written: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(!written[0]["detections"].as_array().unwrap().is_empty(), "{written}");
    let annotated = image::open(out.join("shapes_a.png")).unwrap().to_rgb8();
    let original = image::open(&image).unwrap().to_rgb8();
    assert_eq!(annotated.dimensions(), original.dimensions());
    assert_ne!(annotated, original, "boxes were drawn");

    // Writing the annotated copy into the images' own directory would overwrite the input.
    let output = glint(&[
        "detect",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "red circle",
        "--out",
        image.parent().unwrap().to_str().unwrap(),
        image.to_str().unwrap(),
    ]);
    assert_one_line_error(&output, "shapes_a.png");
}

#[test]
fn detect_reports_bad_input_in_one_line() {
    let model = fixture("grounding_dino/tiny");
    let image = fixture("grounding_dino/images/shapes_a.png");
    let missing = fixture("grounding_dino/images/absent.png");
    let output =
        glint(&["detect", "--model", model.to_str().unwrap(), "--prompt", "cat", missing.to_str().unwrap()]);
    assert_one_line_error(&output, "absent.png");

    let output =
        glint(&["detect", "--model", "/nonexistent/model-dir", "--prompt", "cat", image.to_str().unwrap()]);
    assert_one_line_error(&output, "/nonexistent/model-dir");

    let output =
        glint(&["detect", "--model", model.to_str().unwrap(), "--prompt", " . ", image.to_str().unwrap()]);
    assert_one_line_error(&output, "prompt");

    let output = glint(&[
        "detect",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "cat",
        "--box-threshold",
        "1.5",
        image.to_str().unwrap(),
    ]);
    assert_one_line_error(&output, "--box-threshold");

    let output = glint(&[
        "detect",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "cat",
        "--device",
        "cpu",
        "--precision",
        "f16",
        image.to_str().unwrap(),
    ]);
    assert_one_line_error(&output, "f16 precision needs a GPU");
}

/// A Hugging Face hub cache holding the tiny checkpoint as `glint-test/grounding-dino-tiny`,
/// laid out as huggingface_hub writes it: blobs, snapshot symlinks, `refs/main`.
fn hub_cache_with_tiny_model(files: &[&str]) -> tempfile::TempDir {
    let cache = tempfile::tempdir().unwrap();
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let repo = cache.path().join("models--glint-test--grounding-dino-tiny");
    let snapshot = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    for (i, file) in files.iter().enumerate() {
        let etag = format!("{i:064x}");
        std::fs::copy(fixture(&format!("grounding_dino/tiny/{file}")), repo.join("blobs").join(&etag))
            .unwrap();
        std::os::unix::fs::symlink(Path::new("../../blobs").join(&etag), snapshot.join(file)).unwrap();
    }
    cache
}

#[test]
fn detect_resolves_a_repo_id_through_the_hub_cache_offline() {
    let image = fixture("grounding_dino/images/shapes_b.png");
    let run = |model: &str, cache: &Path| {
        Command::new(env!("CARGO_BIN_EXE_glint"))
            .args([
                "detect",
                "--model",
                model,
                "--prompt",
                "red circle . blue square",
                "--box-threshold",
                "0.2",
            ])
            .args(["--text-threshold", "0.01", "--json", "-", image.to_str().unwrap()])
            .env("HF_HUB_CACHE", cache)
            .env("HF_HUB_OFFLINE", "1")
            .env("XDG_RUNTIME_DIR", runtime_dir())
            .output()
            .unwrap()
    };
    let cache = hub_cache_with_tiny_model(&["config.json", "model.safetensors", "tokenizer.json"]);
    let from_hub = run("glint-test/grounding-dino-tiny", cache.path());
    assert!(from_hub.status.success(), "{}", stderr(&from_hub));
    let from_dir = run(fixture("grounding_dino/tiny").to_str().unwrap(), cache.path());
    assert!(from_dir.status.success(), "{}", stderr(&from_dir));
    let detections =
        |o: &Output| serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()[0]["detections"].clone();
    assert_eq!(detections(&from_hub), detections(&from_dir));

    // Offline, a file missing from the cache is named; nothing is downloaded.
    let partial = hub_cache_with_tiny_model(&["config.json", "tokenizer.json"]);
    let output = run("glint-test/grounding-dino-tiny", partial.path());
    assert_one_line_error(&output, "model.safetensors");
}

#[test]
fn detect_finds_more_of_an_exemplar_box_and_rejects_a_malformed_one() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let model = repo.join("models/glip-shapes-nano");
    let image = repo.join("datasets/demo/shapes-000807.jpg");
    let image = image.to_str().unwrap();
    let detect = |extra: &[&str]| {
        let mut args = vec!["detect", "--device", "cpu", "--model", model.to_str().unwrap()];
        args.extend(extra);
        args.push(image);
        glint(&args)
    };
    let output = detect(&["--exemplar", &format!("{image}:208,79,278,149"), "--json", "-"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let detections = json[0]["detections"].as_array().unwrap();
    assert!(!detections.is_empty());
    assert!(detections.iter().all(|d| d["phrase"] == "exemplar 1"), "{detections:?}");

    assert_one_line_error(&detect(&["--exemplar", &format!("{image}:208,79,278")]), "x0,y0,x1,y1");
    assert!(!detect(&[]).status.success(), "a prompt or an exemplar is needed");
}
