//! `glint detect`: boxes for a text prompt (and exemplar boxes) in images, as JSON and annotated
//! copies.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use glint::core::detection::Detection;
use glint::core::geometry::BoxXyxy;
use glint::core::prompt::Prompt;
use glint::data::annotate::{annotate, annotated_path, write_annotated};
use glint::data::image_io::load_image;
use glint::nn::detector::DetectOptions;
use glint::{Detector, Exemplar};
use serde::Serialize;

use super::device::DeviceArgs;

#[derive(Args)]
pub struct DetectArgs {
    /// A checkpoint directory (config.json, model.safetensors, tokenizer.json): Grounding DINO as
    /// transformers writes it, or a GLIP model that `glint train` wrote (models/glip-shapes-nano
    /// ships with glint); or a Hugging Face repo id such as IDEA-Research/grounding-dino-tiny
    /// (from the hub cache; offline with HF_HUB_OFFLINE=1); or an original checkpoint file:
    /// IDEA-Research's Grounding DINO (groundingdino_swint_ogc.pth) or official GLIP
    /// (glip_tiny_model_o365_goldg.pth).
    #[arg(long, value_name = "DIR_REPO_ID_OR_PTH")]
    model: String,
    /// A GLIP prompt tuning to apply on top of the model (prompt_tuning.safetensors, from glint
    /// fewshot or a prompt-tuning glint train); --prompt must then be the prompt it was tuned for.
    #[arg(long, value_name = "FILE")]
    prompt_tuning: Option<PathBuf>,
    /// What to find: phrases separated by " . ", e.g. "cat . remote control .".
    #[arg(long, required_unless_present = "exemplar")]
    prompt: Option<String>,
    /// An example of what to find, IMAGE:x0,y0,x1,y1 (a box in that image's pixels), with no
    /// training (GLIP models): its detections are phrase "exemplar N" after the prompt's.
    /// Repeatable; --prompt is then optional.
    #[arg(long, value_name = "IMAGE:x0,y0,x1,y1")]
    exemplar: Vec<String>,
    /// Images to search.
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<PathBuf>,
    /// Keep a box when its best token probability is above this (GLIP: when its score,
    /// sqrt(phrase probability × centerness), is).
    #[arg(long, default_value_t = 0.35)]
    box_threshold: f32,
    /// ... and its best phrase's probability is above this (Grounding DINO only).
    #[arg(long, default_value_t = 0.25)]
    text_threshold: f32,
    /// Per-phrase non-maximum suppression at this IoU (Grounding DINO: none by default, as the
    /// reference; GLIP: 0.6).
    #[arg(long, value_name = "IOU")]
    nms_iou: Option<f32>,
    /// At most this many detections per image.
    #[arg(long, default_value_t = 300)]
    max_detections: usize,
    /// Write the detections as JSON to this file (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write annotated copies of the images into this directory.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArgs,
    /// Images per forward pass.
    #[arg(long, default_value_t = 1)]
    batch_size: usize,
}

/// One image's results, as written by `--json`.
#[derive(Serialize)]
struct ImageDetections<'a> {
    image: &'a Path,
    width: u32,
    height: u32,
    detections: Vec<JsonDetection<'a>>,
}

#[derive(Serialize)]
struct JsonDetection<'a> {
    bbox: [f32; 4],
    score: f32,
    phrase: &'a str,
    phrase_index: usize,
}

pub fn run(args: DetectArgs) -> anyhow::Result<()> {
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    for (name, value) in [("--box-threshold", args.box_threshold), ("--text-threshold", args.text_threshold)]
    {
        if !(0.0..=1.0).contains(&value) {
            bail!("{name} {value} is outside [0, 1]");
        }
    }
    if let Some(iou) = args.nms_iou
        && !(0.0..=1.0).contains(&iou)
    {
        bail!("--nms-iou {iou} is outside [0, 1]");
    }
    let prompt = match &args.prompt {
        Some(text) => Some(Prompt::parse(text).with_context(|| format!("prompt \"{text}\""))?),
        None => None,
    };
    let exemplars = args
        .exemplar
        .iter()
        .enumerate()
        .map(|(i, spec)| parse_exemplar(spec, i))
        .collect::<anyhow::Result<Vec<Exemplar>>>()?;
    let outputs = plan_outputs(&args)?;
    let options = DetectOptions {
        box_threshold: args.box_threshold,
        text_threshold: args.text_threshold,
        nms_iou: args.nms_iou,
        max_detections: args.max_detections,
    };

    let device = args.device.open()?;
    let started = Instant::now();
    let mut detector = Detector::from_pretrained(&args.model, &device.device)?;
    if let Some(path) = &args.prompt_tuning {
        detector = detector.with_prompt_tuning(path)?;
    }
    tracing::info!(
        "loaded {} in {:.2?} on {}",
        detector.dir().display(),
        started.elapsed(),
        device.description
    );

    let mut results: Vec<(PathBuf, u32, u32, Vec<Detection>)> = Vec::with_capacity(args.images.len());
    for (batch_paths, batch_outputs) in
        args.images.chunks(args.batch_size).zip(outputs.chunks(args.batch_size))
    {
        let images = batch_paths.iter().map(load_image).collect::<Result<Vec<_>, _>>()?;
        let started = Instant::now();
        let found = match (&prompt, exemplars.is_empty()) {
            (Some(prompt), true) => detector.detect_batch(&images, prompt, &options)?,
            (prompt, _) => detector.detect_with_exemplars(&images, prompt.as_ref(), &exemplars, &options)?,
        };
        tracing::info!("{} image(s) in {:.2?}", images.len(), started.elapsed());
        for ((path, image), (detections, output)) in
            batch_paths.iter().zip(&images).zip(found.into_iter().zip(batch_outputs))
        {
            if let Some(output) = output {
                write_annotated(output, &annotate(image, &detections))?;
            }
            results.push((path.clone(), image.width(), image.height(), detections));
        }
    }

    let records: Vec<ImageDetections<'_>> = results
        .iter()
        .map(|(path, width, height, detections)| ImageDetections {
            image: path,
            width: *width,
            height: *height,
            detections: detections
                .iter()
                .map(|d| JsonDetection {
                    bbox: d.bbox.to_array(),
                    score: d.score,
                    phrase: &d.phrase,
                    phrase_index: d.phrase_index,
                })
                .collect(),
        })
        .collect();
    match args.json.as_deref() {
        Some(path) if path.as_os_str() == "-" => println!("{}", serde_json::to_string_pretty(&records)?),
        Some(path) => {
            let json = serde_json::to_string_pretty(&records)? + "\n";
            glint::core::io::write_atomic(path, json.as_bytes())
                .with_context(|| format!("{}: cannot write", path.display()))?;
        }
        None => {
            for record in &records {
                println!(
                    "{} ({}×{}): {} detection(s)",
                    record.image.display(),
                    record.width,
                    record.height,
                    record.detections.len()
                );
                for d in &record.detections {
                    let [x0, y0, x1, y1] = d.bbox;
                    println!("  {:<24} {:.3}  [{x0:.1}, {y0:.1}, {x1:.1}, {y1:.1}]", d.phrase, d.score);
                }
            }
        }
    }
    Ok(())
}

/// `IMAGE:x0,y0,x1,y1` as the `i`-th exemplar (0-based), its image loaded.
fn parse_exemplar(spec: &str, i: usize) -> anyhow::Result<Exemplar> {
    let (path, coords) = spec
        .rsplit_once(':')
        .with_context(|| format!("--exemplar \"{spec}\": expected IMAGE:x0,y0,x1,y1"))?;
    let values: Vec<f32> = coords
        .split(',')
        .map(|v| v.trim().parse::<f32>())
        .collect::<Result<_, _>>()
        .ok()
        .filter(|v: &Vec<f32>| v.len() == 4 && v.iter().all(|x| x.is_finite()))
        .with_context(|| format!("--exemplar \"{spec}\": the box must be four numbers x0,y0,x1,y1"))?;
    let image = load_image(Path::new(path))?;
    Ok(Exemplar {
        image,
        bbox: BoxXyxy::new(values[0], values[1], values[2], values[3]),
        name: format!("exemplar {}", i + 1),
    })
}

/// Where each image's annotated copy goes (all decided before anything is written, so that no
/// output lands on an input of the same run), and a check that `--json` is not an input.
fn plan_outputs(args: &DetectArgs) -> anyhow::Result<Vec<Option<PathBuf>>> {
    let inputs: HashSet<PathBuf> = args.images.iter().filter_map(|p| p.canonicalize().ok()).collect();
    if let Some(json) = args.json.as_deref().filter(|p| p.as_os_str() != "-")
        && json.canonicalize().is_ok_and(|p| inputs.contains(&p))
    {
        bail!("{}: --json would overwrite an input image", json.display());
    }
    let Some(out_dir) = &args.out else {
        return Ok(vec![None; args.images.len()]);
    };
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("{}: cannot create the output directory", out_dir.display()))?;
    let mut taken = HashSet::new();
    let mut outputs = Vec::with_capacity(args.images.len());
    for image in &args.images {
        let output = annotated_path(out_dir, image, &mut taken)?;
        if output.canonicalize().is_ok_and(|p| inputs.contains(&p)) {
            bail!(
                "{}: the annotated copy of {} would overwrite an input image",
                output.display(),
                image.display()
            );
        }
        outputs.push(Some(output));
    }
    Ok(outputs)
}
