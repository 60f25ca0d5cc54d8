//! The `glint` command-line tool: parses arguments, calls the libraries, prints.

mod commands;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// glint — grounded, open-vocabulary object detection.
///
/// Give an image and a text prompt ("cat . remote control ."), get boxes tied to the prompt's
/// phrases, with Grounding DINO checkpoints in Hugging Face format.
#[derive(Parser)]
#[command(name = "glint", version, propagate_version = true)]
struct Cli {
    /// More log output (-v: info, -vv: debug, -vvv: trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Detect the phrases of a text prompt in images.
    Detect(commands::detect::DetectArgs),
    /// Per-stage latency and peak memory of a detector on one image.
    Bench(commands::bench::BenchArgs),
    /// Make and inspect datasets.
    #[command(subcommand)]
    Data(commands::data::DataCommand),
    /// COCO bbox evaluation (pycocotools numbers) of a results file, or of a model run on the
    /// ground truth's images.
    Eval(commands::eval::EvalArgs),
    /// Train a GLIP model from a TOML config (checkpoints, --resume, evaluation).
    Train(commands::train::TrainArgs),
    /// The K-shot benchmark: K-shot splits × seeds × tuning modes (zero-shot, prompt, linear,
    /// full), scored with COCO AP, one table of mean ± std over seeds.
    Fewshot(commands::fewshot::FewShotArgs),
}

fn main() -> ExitCode {
    // Burn materialises some state (a resumed optimiser's) on its default device, which is a GPU
    // when the wgpu backend is compiled in; on a machine without one that would fail. Our own
    // tensors always name their device, so the default can be the CPU. Set before any thread
    // exists, as `set_var` requires.
    if std::env::var_os("BURN_DEVICE").is_none() {
        // SAFETY: single-threaded here (nothing has been spawned yet).
        unsafe { std::env::set_var("BURN_DEVICE", "flex") };
    }
    restore_default_sigpipe();
    keep_freed_memory();
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let result = match cli.command {
        Command::Detect(args) => commands::detect::run(args),
        Command::Bench(args) => commands::bench::run(args),
        Command::Data(command) => commands::data::run(command),
        Command::Eval(args) => commands::eval::run(args),
        Command::Train(args) => commands::train::run(args),
        Command::Fewshot(args) => commands::fewshot::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", one_line(&error));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, joined by ": ", skipping a cause whose text the line
/// already holds (library errors often quote their source in their own message).
fn one_line(error: &anyhow::Error) -> String {
    let mut line = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !line.contains(&cause) {
            line.push_str(": ");
            line.push_str(&cause);
        }
    }
    line.replace('\n', " ")
}

/// `glint ... | head` should end quietly when `head` closes the pipe, as other command-line tools
/// do; Rust ignores SIGPIPE by default, which turns that into a panic inside `println!`.
#[cfg(unix)]
fn restore_default_sigpipe() {
    const SIGPIPE: i32 = 13;
    const SIG_DFL: usize = 0;
    unsafe extern "C" {
        fn signal(signum: i32, handler: usize) -> usize;
    }
    // SAFETY: called first thing in main, before any thread starts; SIG_DFL is always valid.
    unsafe {
        signal(SIGPIPE, SIG_DFL);
    }
}

#[cfg(not(unix))]
fn restore_default_sigpipe() {}

/// glibc serves every block above its mmap threshold (at most 32 MiB) with a fresh mapping and
/// unmaps it when freed, so each forward pass page-faults and zeroes its large activations
/// again: Grounding-DINO-T's 2048-wide feed-forward activations alone are 109 MB at 800×800.
/// Serving every block from the heap and keeping freed memory there took that model from 5.62 s
/// to 4.66 s on 2 cores (benches/README.md), at the same peak RSS.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    const M_TRIM_THRESHOLD: i32 = -1;
    const M_MMAP_MAX: i32 = -4;
    unsafe extern "C" {
        fn mallopt(param: i32, value: i32) -> i32;
    }
    // SAFETY: called first thing in main, before any thread starts or allocates much.
    unsafe {
        mallopt(M_MMAP_MAX, 0);
        mallopt(M_TRIM_THRESHOLD, 1 << 30);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).without_time().init();
}
