//! `glint eval`: COCO bbox evaluation.

use std::path::PathBuf;

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use glint_core::eval::evaluate_bbox;

#[derive(Args)]
pub struct EvalArgs {
    /// Ground truth: a COCO detection json (images, annotations, categories).
    #[arg(long, value_name = "GT.json")]
    gt: PathBuf,
    /// Detections: a COCO results json, a list of {image_id, category_id, bbox: [x, y, w, h], score}.
    #[arg(long, value_name = "DETS.json")]
    dets: PathBuf,
    /// Also write the numbers as JSON (the 12 COCO metrics and per-category AP); `-` for stdout.
    #[arg(long, value_name = "OUT.json")]
    json: Option<PathBuf>,
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    if let Some(out) = args.json.as_deref().filter(|p| p.as_os_str() != "-") {
        for input in [&args.gt, &args.dets] {
            if same_file(out, input) {
                anyhow::bail!("{}: --json would overwrite an input file; choose another path", out.display());
            }
        }
    }
    let started = Instant::now();
    let report = evaluate_bbox(&args.gt, &args.dets)?;
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

/// True when both paths name one existing file (compared after resolving links and `..`).
fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
