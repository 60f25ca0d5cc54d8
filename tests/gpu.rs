//! The wgpu path: the fused deformable-attention kernel equals the composed `grid_sample_2d`
//! version, the tiny Grounding DINO checkpoint gives the same detections on the GPU backend as
//! on the CPU, and training GLIP or Grounding DINO there follows the CPU's losses. In CI this runs on Mesa's lavapipe (software Vulkan, installed by
//! `.ci/run`, which sets `GLINT_REQUIRE_WGPU=1`); elsewhere it runs when a wgpu adapter exists
//! and is skipped with a message when none does.
//!
//! Tolerance: scores within 1e-3 and box corners within 0.5 px. GPU kernels sum in other orders
//! and fuse multiply-adds, so f32 results differ from the CPU's in the last bits, and the
//! differences grow through ~40 layers; the selected detections must be the same.

use std::path::{Path, PathBuf};

use burn::tensor::f16;
use burn::tensor::{Distribution, Tensor, TensorData};
use glint::core::prompt::Prompt;
use glint::data::image_io::load_image;
use glint::device::{DeviceChoice, Precision, open_device};
use glint::nn::attention::{composed_multi_scale_deformable_attention, multi_scale_deformable_attention};
use glint::nn::detector::DetectOptions;
use glint::{Detector, Device};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/grounding_dino")
}

/// The wgpu device (set up once per process by `open_device`), or `None` with a message when
/// this machine has no adapter and `GLINT_REQUIRE_WGPU` is not `1`.
fn wgpu_device() -> Option<Device> {
    match open_device(DeviceChoice::Wgpu, Precision::F32) {
        Ok(opened) => Some(opened.device),
        Err(error) if std::env::var("GLINT_REQUIRE_WGPU").as_deref() != Ok("1") => {
            eprintln!("skipped: {error}; set GLINT_REQUIRE_WGPU=1 to make this a failure");
            None
        }
        Err(error) => panic!("GLINT_REQUIRE_WGPU=1 but {error}"),
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

#[test]
fn the_fused_gpu_kernel_equals_the_composed_grid_sample_version() {
    // The plain GPU device takes the fused CubeCL kernel; the reference is the composed
    // `grid_sample_2d` version on the CPU. Locations reach past the maps; 2 x 300 x 8 x 32 outputs span
    // many workgroups. Both sum 12 f32 products per point in other orders: 1e-4 is ample.
    // In f16 the locations themselves round to ~1e-3 of the map (a few hundredths of a pixel),
    // and 48 terms are summed in f16: the relative L2 error is ~4e-3, bounded here by 1e-2; a
    // wrong sampling convention moves the outputs by ~10%.
    let Some(gpu) = wgpu_device() else { return };
    let (batch, queries, heads, head_dim, points) = (2, 300, 8, 32, 4);
    let shapes = [[19usize, 23usize], [10, 12], [5, 6]];
    let seq: usize = shapes.iter().map(|[h, w]| h * w).sum();
    let levels = shapes.len();
    let cpu = Device::flex();
    let value = Tensor::<4>::random([batch, seq, heads, head_dim], Distribution::Normal(0.0, 1.0), &cpu);
    let locations = Tensor::<6>::random(
        [batch, queries, heads, levels, points, 2],
        Distribution::Uniform(-0.2, 1.2),
        &cpu,
    );
    let weights =
        Tensor::<5>::random([batch, queries, heads, levels, points], Distribution::Uniform(0.0, 1.0), &cpu);
    let composed =
        composed_multi_scale_deformable_attention(value.clone(), &shapes, locations.clone(), weights.clone())
            .unwrap()
            .into_data()
            .try_into_vec_as::<f32>()
            .unwrap();
    assert!(composed.iter().any(|v| v.abs() > 0.1), "the reference is not all zeros");

    let composed_gpu = composed_multi_scale_deformable_attention(
        Tensor::from_data(value.to_data(), &gpu),
        &shapes,
        Tensor::from_data(locations.to_data(), &gpu),
        Tensor::from_data(weights.to_data(), &gpu),
    )
    .unwrap()
    .into_data()
    .try_into_vec_as::<f32>()
    .unwrap();
    let worst = composed_gpu.iter().zip(&composed).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(worst <= 1e-4, "composed on the GPU: largest difference {worst}");
    for half in [false, true] {
        let on_gpu = |data: TensorData| if half { data.convert::<f16>() } else { data };
        let fused = multi_scale_deformable_attention(
            Tensor::from_data(on_gpu(value.to_data()), &gpu),
            &shapes,
            Tensor::from_data(on_gpu(locations.to_data()), &gpu),
            Tensor::from_data(on_gpu(weights.to_data()), &gpu),
        )
        .unwrap();
        assert_eq!(fused.dims(), [batch, queries, heads * head_dim]);
        let fused = fused.into_data().try_into_vec_as::<f32>().unwrap();
        if half {
            let error: f32 = fused.iter().zip(&composed).map(|(a, b)| (a - b).powi(2)).sum();
            let norm: f32 = composed.iter().map(|b| b * b).sum();
            let relative = (error / norm).sqrt();
            assert!(relative <= 1e-2, "f16: relative L2 error {relative}");
        } else {
            let worst = fused.iter().zip(&composed).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(worst <= 1e-4, "f32: largest difference {worst}");
        }
    }
}

#[test]
fn auto_takes_a_real_gpu_and_never_a_software_one() {
    // CI has only Mesa's lavapipe, a CPU rasteriser: auto must stay on the CPU path there.
    let Some(gpu) = wgpu_device() else { return };
    let auto = open_device(DeviceChoice::Auto, Precision::F32).unwrap();
    let real_gpu = gpu.identity().is_some_and(|id| id.physical.is_some());
    if real_gpu {
        assert_eq!(auto.device, gpu);
        assert!(auto.description.starts_with("wgpu ("), "{}", auto.description);
    } else {
        assert_eq!(auto.device, Device::flex());
        assert_eq!(auto.description, "cpu");
    }
}

/// Trains `config` for its few steps from the same initial weights and the same batches on the
/// CPU and on the GPU (both through autodiff), and checks that the GPU's losses follow the
/// CPU's within 1e-3 relative: the GPU sums in other orders, and each step's update carries
/// the difference forward. `config.data.train` is set here: four small synthetic images.
fn assert_gpu_training_follows_the_cpu(gpu: Device, mut config: glint::train::TrainConfig) {
    use glint::train::config::DataSource;
    use glint::train::{RunOptions, train};

    let dir = tempfile::tempdir().unwrap();
    let shapes = dir.path().join("shapes");
    let synth = glint::data::synth::SynthConfig {
        images: 4,
        image_size: 64,
        max_distractors: 0,
        ..Default::default()
    };
    glint::data::synth::generate(&synth, &shapes, |_| {}).unwrap();
    config.data.train = vec![DataSource::Synth { dir: shapes, synth, split: "train".into(), weight: 1.0 }];
    config.transforms.scales = vec![64];
    config.transforms.crop_prob = 0.0;
    let run = |device: Device, name: &str| {
        let options = RunOptions {
            out: dir.path().join(name),
            resume: false,
            device: device.autodiff(),
            stop_after: None,
        };
        train(&config, &options, |_| {}).unwrap().losses
    };
    let on_cpu = run(Device::flex(), "cpu");
    let on_gpu = run(gpu, "gpu");
    assert_eq!(on_cpu.len(), config.steps);
    for (step, (c, g)) in on_cpu.iter().zip(&on_gpu).enumerate() {
        assert!((c - g).abs() <= 1e-3 * c.abs().max(1.0), "step {}: cpu {c}, gpu {g}", step + 1);
    }
}

/// `glint train` on the GPU: GLIP, from the tiny config's initialisation.
#[test]
fn training_on_wgpu_follows_the_cpu_loss_curve() {
    use glint::nn::detector::glip::GlipConfig;
    use glint::train::TrainConfig;
    use glint::train::config::ModelConfig;

    let Some(gpu) = wgpu_device() else { return };
    let initial = tempfile::tempdir().unwrap();
    GlipConfig::tiny().init(&Device::flex()).unwrap().save_dir(initial.path()).unwrap();
    let mut config = TrainConfig {
        model: ModelConfig::Glip(GlipConfig::tiny()),
        tokenizer: Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer/tokenizer.json"),
        init_from: Some(initial.path().to_path_buf()),
        batch_size: 2,
        steps: 3,
        ..TrainConfig::default()
    };
    config.optimizer.lr = 1e-3;
    assert_gpu_training_follows_the_cpu(gpu, config);
}

/// Grounding DINO fine-tuning on the GPU, from the tiny fixture checkpoint with its dropout
/// and drop path off (the CPU and the GPU draw different random masks). The CPU takes the fused
/// deformable pass and its own backward, the GPU the composed `grid_sample_2d` version under
/// Burn's autodiff, so this also checks the two backward passes against each other inside a
/// whole model.
#[test]
fn grounding_dino_training_on_wgpu_follows_the_cpu_loss_curve() {
    use glint::train::TrainConfig;
    use glint::train::config::{GroundingDinoTraining, ModelConfig};

    let Some(gpu) = wgpu_device() else { return };
    let checkpoint = tempfile::tempdir().unwrap();
    let fixture = fixtures().join("tiny");
    for file in ["model.safetensors", "tokenizer.json"] {
        std::fs::copy(fixture.join(file), checkpoint.path().join(file)).unwrap();
    }
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("config.json")).unwrap()).unwrap();
    for key in ["dropout", "fusion_droppath"] {
        config[key] = 0.0.into();
    }
    for key in ["hidden_dropout_prob", "attention_probs_dropout_prob"] {
        config["text_config"][key] = 0.0.into();
    }
    std::fs::write(checkpoint.path().join("config.json"), config.to_string()).unwrap();

    let mut config = TrainConfig {
        model: ModelConfig::GroundingDino(GroundingDinoTraining::default()),
        tokenizer: checkpoint.path().join("tokenizer.json"),
        init_from: Some(checkpoint.path().to_path_buf()),
        batch_size: 2,
        steps: 3,
        ..TrainConfig::default()
    };
    // No warm-up, so that the second and third losses depend on the first steps' gradients.
    config.schedule.warmup_steps = 0;
    config.optimizer.lr = 1e-3;
    config.optimizer.clip_grad_norm = 0.1;
    assert_gpu_training_follows_the_cpu(gpu, config);
}
