//! `glint train`: train a GLIP model or fine-tune Grounding DINO from a TOML config, with a progress bar, a run directory
//! of metrics and checkpoints, and `--resume`.

use std::path::PathBuf;

use clap::Args;
use glint_train::run::Event;
use glint_train::{RunOptions, TrainConfig, train};
use indicatif::{ProgressBar, ProgressStyle};

use super::device::DeviceArgs;

#[derive(Args)]
pub struct TrainArgs {
    /// The training config (TOML; see configs/).
    #[arg(long, value_name = "CONFIG.toml")]
    config: PathBuf,
    /// The run directory (default: runs/CONFIG-NAME). A new run needs it empty or missing.
    #[arg(long, value_name = "RUN_DIR")]
    out: Option<PathBuf>,
    /// Continue the run in the run directory from its latest checkpoint.
    #[arg(long)]
    resume: bool,
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let config = TrainConfig::from_toml_file(&args.config)?;
    let out = super::out_dir(&args.config, args.out)?;
    let opened = args.device.open()?;
    let options = RunOptions {
        out: out.clone(),
        resume: args.resume,
        device: opened.device.autodiff(),
        stop_after: None,
    };
    let bar = ProgressBar::new(config.steps as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed_precise}, eta {eta}]")
            .expect("a valid progress template"),
    );
    eprintln!("training on {} into {}", opened.description, out.display());
    let mut last_checkpoint: Option<PathBuf> = None;
    let summary = train(&config, &options, |event| match event {
        Event::Started { start_step, .. } => {
            bar.set_position(start_step as u64);
            bar.reset_eta();
        }
        Event::Pretraining { step, steps } => bar.set_message(format!(
            "backbone pretraining {}/{steps}: loss {:.3}, accuracy {:.2}",
            step.pretrain_step, step.loss, step.accuracy
        )),
        Event::Step(m) => {
            bar.set_position(m.step as u64);
            let terms: Vec<String> = m.terms.iter().map(|(name, v)| format!("{name} {v:.3}")).collect();
            bar.set_message(format!(
                "loss {:.3} ({}) lr {:.2e} {:.1} img/s",
                m.loss,
                terms.join(", "),
                m.lr,
                m.images_per_s
            ));
        }
        Event::EvalProgress { done, total } => bar.set_message(format!("evaluating {done}/{total}")),
        Event::Evaluated { step, report, best } => {
            let best = if best { " (best so far)" } else { "" };
            bar.suspend(|| {
                eprintln!(
                    "step {step}: val AP {:.3}, AP50 {:.3}{best}\n{}",
                    report.metrics.ap,
                    report.metrics.ap50,
                    report.table()
                )
            });
        }
        Event::Checkpoint { step, dir } => {
            tracing::info!("step {step}: checkpoint {}", dir.display());
            last_checkpoint = Some(dir.to_path_buf());
        }
    })?;
    bar.finish();
    match summary.best_ap {
        Some(ap) => eprintln!(
            "done: {} steps; best val AP {ap:.3}, model in {}",
            summary.steps,
            out.join("best").display()
        ),
        None => eprintln!(
            "done: {} steps; model in {}",
            summary.steps,
            last_checkpoint.as_deref().unwrap_or(&out).display()
        ),
    }
    Ok(())
}
