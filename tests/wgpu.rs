//! The wgpu path: the tiny Grounding DINO checkpoint gives the same detections on the GPU
//! backend as on the CPU. In CI this runs on Mesa's lavapipe (software Vulkan, installed by
//! `.ci/run`, which sets `GLINT_REQUIRE_WGPU=1`); elsewhere it runs when a wgpu adapter exists
//! and is skipped with a message when none does.
//!
//! Tolerance: scores within 1e-3 and box corners within 0.5 px. GPU kernels sum in other orders
//! and fuse multiply-adds, so f32 results differ from the CPU's in the last bits, and the
//! differences grow through ~40 layers; the selected detections must be the same.

use std::path::{Path, PathBuf};

use glint::core::prompt::Prompt;
use glint::data::image_io::load_image;
use glint::nn::detector::DetectOptions;
use glint::{Detector, Device};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/grounding_dino")
}

fn wgpu_device() -> Option<Device> {
    match Device::wgpu_options().init() {
        Ok(device) => Some(device),
        Err(error) if std::env::var("GLINT_REQUIRE_WGPU").as_deref() != Ok("1") => {
            eprintln!("skipped: no wgpu adapter ({error}); set GLINT_REQUIRE_WGPU=1 to make this a failure");
            None
        }
        Err(error) => panic!("GLINT_REQUIRE_WGPU=1 but no wgpu adapter: {error}"),
    }
}

#[test]
fn wgpu_gives_the_same_detections_as_the_cpu() {
    let Some(gpu) = wgpu_device() else { return };
    let dir = fixtures().join("tiny");
    // The fixture's threshold lies in a gap of at least 1e-3 between query scores.
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("tiny_detect.json")).unwrap()).unwrap();
    let prompt = Prompt::parse(expected["prompt"].as_str().unwrap()).unwrap();
    let image = load_image(fixtures().join("images/shapes_b.png")).unwrap();
    let box_threshold = expected["box_threshold"].as_f64().unwrap() as f32;
    let options = DetectOptions { box_threshold, text_threshold: 0.0, nms_iou: None, max_detections: 300 };

    let on_cpu =
        Detector::from_dir(&dir, &Device::flex()).unwrap().detect(&image, &prompt, &options).unwrap();
    let on_gpu = Detector::from_dir(&dir, &gpu).unwrap().detect(&image, &prompt, &options).unwrap();
    assert!(!on_cpu.is_empty());
    assert_eq!(on_gpu.len(), on_cpu.len(), "cpu {on_cpu:?}\ngpu {on_gpu:?}");
    for (g, c) in on_gpu.iter().zip(&on_cpu) {
        assert_eq!(g.phrase_index, c.phrase_index);
        assert!((g.score - c.score).abs() <= 1e-3, "score {} vs {}", g.score, c.score);
        for (a, b) in g.bbox.to_array().iter().zip(c.bbox.to_array()) {
            assert!((a - b).abs() <= 0.5, "box {:?} vs {:?}", g.bbox, c.bbox);
        }
    }
}
