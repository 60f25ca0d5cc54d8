//! `glint bench`: per-stage latency and peak memory of a detector on one image.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use glint::core::prompt::Prompt;
use glint::data::image_io::load_image;
use glint::nn::detector::DetectOptions;
use glint::{Detector, Profile};
use serde::Serialize;

use super::device::DeviceArgs;

#[derive(Args)]
pub struct BenchArgs {
    /// A checkpoint directory or a Hugging Face repo id (as `glint detect --model`).
    #[arg(long, value_name = "DIR_OR_REPO_ID")]
    model: String,
    /// The image to run on.
    #[arg(long)]
    image: PathBuf,
    /// The prompt.
    #[arg(long, default_value = "cat . remote control . person .")]
    prompt: String,
    #[command(flatten)]
    device: DeviceArgs,
    /// Timed runs (after one untimed warm-up run).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Copies of the image per forward pass.
    #[arg(long, default_value_t = 1)]
    batch_size: usize,
    /// Also write the numbers as JSON (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

/// Median, minimum and maximum of one stage over the runs, in milliseconds.
#[derive(Serialize)]
struct Spread {
    stage: &'static str,
    median_ms: f64,
    min_ms: f64,
    max_ms: f64,
}

#[derive(Serialize)]
struct Report {
    model: String,
    image: PathBuf,
    width: u32,
    height: u32,
    device: String,
    precision: String,
    load_s: f64,
    warm_up_s: f64,
    batch_size: usize,
    runs: usize,
    stages: Vec<Spread>,
    images_per_second: f64,
    peak_rss_mb: Option<f64>,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.runs == 0 || args.batch_size == 0 {
        bail!("--runs and --batch-size must be at least 1");
    }
    let prompt = Prompt::parse(&args.prompt).with_context(|| format!("prompt \"{}\"", args.prompt))?;
    let device = args.device.open()?;
    let image = load_image(&args.image)?;
    let images = vec![image.clone(); args.batch_size];
    let options = DetectOptions::default();

    // Progress goes to stderr as it happens: on a GPU the warm-up (kernel compilation) can take
    // longer than the runs.
    let started = Instant::now();
    let detector = Detector::from_pretrained(&args.model, &device.device)?;
    let load_s = started.elapsed().as_secs_f64();
    eprintln!("loaded {} on {} in {load_s:.2} s", detector.dir().display(), device.description);
    let started = Instant::now();
    detector.detect_batch(&images, &prompt, &options)?;
    let warm_up_s = started.elapsed().as_secs_f64();
    eprintln!("warm-up run: {warm_up_s:.2} s");
    let mut profiles: Vec<Profile> = Vec::with_capacity(args.runs);
    for run in 1..=args.runs {
        let (_, profile) = detector.detect_profiled(&images, &prompt, &options)?;
        eprintln!("run {run}/{}: {:.1} ms", args.runs, profile.total().as_secs_f64() * 1e3);
        profiles.push(profile);
    }

    let stage = |name: &'static str, pick: fn(&Profile) -> Duration| {
        let mut ms: Vec<f64> = profiles.iter().map(|p| pick(p).as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        Spread { stage: name, median_ms: median(&ms), min_ms: ms[0], max_ms: ms[ms.len() - 1] }
    };
    let stages = vec![
        stage("preprocess", |p| p.preprocess),
        stage("backbone", |p| p.stages.backbone),
        stage("text", |p| p.stages.text),
        stage("encoder", |p| p.stages.encoder),
        stage("decoder", |p| p.stages.decoder),
        stage("postprocess", |p| p.postprocess),
        stage("total", Profile::total),
    ];
    let total_s = stages.last().map_or(0.0, |s| s.median_ms / 1e3);
    let report = Report {
        model: detector.dir().display().to_string(),
        image: args.image.clone(),
        width: image.width(),
        height: image.height(),
        device: device.description.clone(),
        precision: format!("{:?}", device.precision).to_lowercase(),
        load_s,
        warm_up_s,
        batch_size: args.batch_size,
        runs: args.runs,
        images_per_second: if total_s > 0.0 { args.batch_size as f64 / total_s } else { 0.0 },
        peak_rss_mb: peak_rss_mb(),
        stages,
    };

    println!(
        "{} on {} ({}×{}), batch {}, {} runs, device {}, {}",
        report.model,
        report.image.display(),
        report.width,
        report.height,
        report.batch_size,
        report.runs,
        report.device,
        report.precision
    );
    println!("{:<12} {:>10} {:>10} {:>10}", "stage", "median ms", "min ms", "max ms");
    for s in &report.stages {
        println!("{:<12} {:>10.1} {:>10.1} {:>10.1}", s.stage, s.median_ms, s.min_ms, s.max_ms);
    }
    println!("images/s     {:>10.2}", report.images_per_second);
    match report.peak_rss_mb {
        Some(mb) => println!("peak RSS     {mb:>10.0} MB"),
        None => println!("peak RSS     unknown on this system"),
    }
    match args.json.as_deref() {
        Some(path) if path.as_os_str() == "-" => println!("{}", serde_json::to_string_pretty(&report)?),
        Some(path) => {
            glint::core::io::write_atomic(path, (serde_json::to_string_pretty(&report)? + "\n").as_bytes())
                .with_context(|| format!("{}: cannot write", path.display()))?
        }
        None => {}
    }
    Ok(())
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 }
}

/// The process's peak resident memory (Linux `VmHWM`), in MB.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
