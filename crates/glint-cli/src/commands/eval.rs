//! `glint eval`: COCO bbox evaluation of a results file, or of a model run on the ground
//! truth's images.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use glint::Detector;
use glint::nn::detector::DetectOptions;
use glint::train::TrainError;
use glint::train::evaluate::evaluate_with;
use glint_core::eval::{EvalReport, evaluate_bbox};
use glint_data::coco::load_coco;

use super::device::DeviceArgs;

#[derive(Args)]
pub struct EvalArgs {
    /// Ground truth: a COCO detection json (images, annotations, categories).
    #[arg(long, value_name = "GT.json")]
    gt: PathBuf,
    /// Detections: a COCO results json, a list of {image_id, category_id, bbox: [x, y, w, h], score}.
    #[arg(long, value_name = "DETS.json", conflicts_with = "model", required_unless_present = "model")]
    dets: Option<PathBuf>,
    /// Or a model to run on the ground truth's images, prompted with all its categories: a
    /// GLIP model directory (glint train) or a Grounding DINO checkpoint (as for `glint detect`).
    #[arg(long, value_name = "DIR_OR_REPO_ID", requires = "images")]
    model: Option<String>,
    /// A GLIP prompt tuning to apply on top of --model (prompt_tuning.safetensors), tuned for
    /// the prompt of the ground truth's categories.
    #[arg(long, value_name = "FILE", requires = "model")]
    prompt_tuning: Option<PathBuf>,
    /// Where the ground truth's `file_name`s are (with --model).
    #[arg(long, value_name = "DIR")]
    images: Option<PathBuf>,
    /// Images per forward pass (with --model).
    #[arg(long, default_value_t = 4)]
    batch_size: usize,
    #[command(flatten)]
    device: DeviceArgs,
    /// Also write the numbers as JSON (the 12 COCO metrics and per-category AP); `-` for stdout.
    #[arg(long, value_name = "OUT.json")]
    json: Option<PathBuf>,
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    if let Some(out) = args.json.as_deref().filter(|p| p.as_os_str() != "-") {
        for input in std::iter::once(&args.gt).chain(&args.dets) {
            if same_file(out, input) {
                anyhow::bail!("{}: --json would overwrite an input file; choose another path", out.display());
            }
        }
    }
    let started = Instant::now();
    let report = match (&args.dets, &args.model, &args.images) {
        (Some(dets), _, _) => evaluate_bbox(&args.gt, dets)?,
        (None, Some(model), Some(images)) => evaluate_model(&args, model, images)?,
        _ => bail!("give --dets, or --model with --images"),
    };
    tracing::info!(
        "evaluated {} detections on {} images in {:.2?}",
        report.detections,
        report.images,
        started.elapsed()
    );
    let json = serde_json::to_string_pretty(&report)?;
    match args.json.as_deref() {
        Some(path) if path.as_os_str() == "-" => {
            println!("{json}");
            return Ok(());
        }
        Some(path) => glint_core::io::write_atomic(path, format!("{json}\n").as_bytes())
            .with_context(|| format!("{}: cannot write", path.display()))?,
        None => {}
    }
    print!("{}", report.table());
    Ok(())
}

/// Run `model` on every ground-truth image (all categories as the prompt, no score threshold,
/// the 100 best boxes per image as COCO's AP counts) and evaluate its detections.
fn evaluate_model(args: &EvalArgs, model: &str, images: &Path) -> anyhow::Result<EvalReport> {
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let dataset = load_coco(&args.gt, images)?;
    let device = args.device.open()?;
    let mut detector = Detector::from_pretrained(model, &device.device)?;
    if let Some(path) = &args.prompt_tuning {
        detector = detector.with_prompt_tuning(path)?;
    }
    let options =
        DetectOptions { box_threshold: 0.0, text_threshold: 0.0, nms_iou: None, max_detections: 100 };
    let total = dataset.samples.len();
    let report = evaluate_with(
        &dataset,
        &args.gt,
        args.batch_size,
        |images, prompt| {
            detector.detect_batch(images, prompt, &options).map_err(|e| TrainError::Detection(e.to_string()))
        },
        |done| tracing::info!("{done}/{total} images"),
    );
    Ok(report?)
}

/// True when both paths name one existing file (compared after resolving links and `..`).
fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
