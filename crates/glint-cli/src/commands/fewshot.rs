//! `glint fewshot`: the K-shot benchmark (K-shot splits × seeds × tuning modes, one table).

use std::path::PathBuf;

use clap::Args;
use glint_train::fewshot::{FewShotConfig, FewShotEvent, FewShotOptions, run_fewshot};
use glint_train::run::Event;
use indicatif::{ProgressBar, ProgressStyle};

use super::device::DeviceArgs;

#[derive(Args)]
pub struct FewShotArgs {
    /// The benchmark config (TOML; see configs/fewshot-*.toml).
    #[arg(long, value_name = "CONFIG.toml")]
    config: PathBuf,
    /// The results directory (default: runs/CONFIG-NAME). A new benchmark needs it empty or missing.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Continue the benchmark in the results directory where it stopped.
    #[arg(long)]
    resume: bool,
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn run(args: FewShotArgs) -> anyhow::Result<()> {
    let config = FewShotConfig::from_toml_file(&args.config)?;
    let out = super::out_dir(&args.config, args.out)?;
    let opened = args.device.open()?;
    let options = FewShotOptions { out: out.clone(), resume: args.resume, device: opened.device.autodiff() };
    eprintln!("few-shot benchmark on {} into {}", opened.description, out.display());
    let bar = ProgressBar::new(config.tuning.steps as u64);
    bar.set_style(
        ProgressStyle::with_template("  {bar:30} {pos}/{len} {msg} [{elapsed_precise}]")
            .expect("a valid progress template"),
    );
    let table = run_fewshot(&config, &options, |event| match event {
        FewShotEvent::Started { index, total, run, done } => {
            let state = if done { " (done before)" } else { "" };
            bar.suspend(|| {
                eprintln!(
                    "[{}/{total}] {} shots, seed {}, {}{state}",
                    index + 1,
                    run.shots,
                    run.seed,
                    run.mode.name()
                )
            });
            bar.set_position(0);
            bar.reset_eta();
        }
        FewShotEvent::Training(Event::Step(m)) => {
            bar.set_position(m.step as u64);
            bar.set_message(format!("loss {:.3} lr {:.2e}", m.loss, m.lr));
        }
        FewShotEvent::Training(Event::Started { start_step, .. }) => bar.set_position(start_step as u64),
        FewShotEvent::Training(_) => {}
        FewShotEvent::Evaluating { done, total } => bar.set_message(format!("evaluating {done}/{total}")),
        FewShotEvent::Scored { metrics, .. } => {
            bar.suspend(|| eprintln!("  AP {:.3}, AP50 {:.3}", metrics.ap, metrics.ap50));
        }
    })?;
    bar.finish_and_clear();
    println!("{}", table.markdown());
    eprintln!("table and results in {}", out.display());
    Ok(())
}
