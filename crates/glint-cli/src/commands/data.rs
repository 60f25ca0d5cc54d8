//! `glint data`: make and inspect datasets.

use std::path::{Path, PathBuf};

use std::time::Instant;

use clap::{Args, Subcommand, ValueEnum};
use glint_core::prompt::{MAX_TEXT_LEN, Prompt, TextTokenizer, chunk_prompt};
use glint_data::dataset::Dataset;
use glint_data::synth::{self, SynthConfig};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Subcommand)]
pub enum DataCommand {
    /// Generate the synthetic shapes grounding dataset (COCO json + ODVG jsonl, base/novel split).
    Synth(SynthArgs),
    /// Load a COCO json or ODVG jsonl file, report what was fixed or is wrong, and count it.
    Check(CheckArgs),
    /// Show how a prompt reaches the text encoder: phrases, tokens, positive map, chunks.
    Prompt(PromptArgs),
}

#[derive(Args)]
pub struct SynthArgs {
    /// Output directory; must be empty or not exist yet.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Number of images (train + val).
    #[arg(long, default_value_t = SynthConfig::default().images)]
    images: usize,
    /// Random seed: the same seed gives the same bytes (on the same platform).
    #[arg(long, default_value_t = SynthConfig::default().seed)]
    seed: u64,
    /// Width and height of every image, in pixels.
    #[arg(long, default_value_t = SynthConfig::default().image_size)]
    image_size: u32,
    /// Fraction of the images held out for validation.
    #[arg(long, default_value_t = SynthConfig::default().val_fraction)]
    val_fraction: f64,
}

/// Annotation file formats `glint data check` reads.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// `.jsonl` (or any file with --label-map) is ODVG, anything else COCO.
    Auto,
    /// COCO detection json.
    Coco,
    /// ODVG JSON Lines (MM-Detection's converters name these `*_od.json` / `*_vg.json`).
    Odvg,
}

#[derive(Args)]
pub struct CheckArgs {
    /// The annotation file (COCO json or ODVG JSON Lines).
    file: PathBuf,
    /// The file's format.
    #[arg(long, value_enum, default_value_t = Format::Auto)]
    format: Format,
    /// Directory the image paths are relative to [default: `images/` beside FILE if it exists,
    /// else FILE's directory].
    #[arg(long, value_name = "DIR")]
    images: Option<PathBuf>,
    /// ODVG detection data: the `label_map` json (without it ODVG is read as grounding data).
    #[arg(long, value_name = "FILE")]
    label_map: Option<PathBuf>,
    /// Also open and decode every image (slower; finds missing and corrupt files).
    #[arg(long)]
    decode: bool,
}

/// Warnings printed before "... and N more" (all of them with -v).
const WARNINGS_SHOWN: usize = 20;

#[derive(Args)]
pub struct PromptArgs {
    /// The prompt: phrases separated by "." ("cat . remote control .").
    prompt: String,
    /// The text encoder's `tokenizer.json` (BERT uncased WordPiece for GLIP / Grounding DINO).
    #[arg(long, value_name = "FILE")]
    tokenizer: PathBuf,
    /// Most tokens the text encoder reads, [CLS] and [SEP] included; longer prompts are chunked.
    #[arg(long, default_value_t = MAX_TEXT_LEN as u16, value_parser = clap::value_parser!(u16).range(4..=512))]
    max_tokens: u16,
}

pub fn run(command: DataCommand) -> anyhow::Result<()> {
    match command {
        DataCommand::Synth(args) => synth(args),
        DataCommand::Check(args) => check(args),
        DataCommand::Prompt(args) => prompt(args),
    }
}

fn synth(args: SynthArgs) -> anyhow::Result<()> {
    let config = SynthConfig {
        images: args.images,
        seed: args.seed,
        image_size: args.image_size,
        val_fraction: args.val_fraction,
        ..SynthConfig::default()
    };
    tracing::info!(
        "generating {} images of {}px with seed {} into {}",
        config.images,
        config.image_size,
        config.seed,
        args.out.display()
    );
    let started = Instant::now();
    let bar = progress_bar(config.images as u64, "rendering");
    let summary = synth::generate(&config, &args.out, |done| bar.set_position(done as u64))?;
    bar.finish_and_clear();
    tracing::info!("generated in {:.2?}", started.elapsed());
    println!("{summary}");
    Ok(())
}

fn check(args: CheckArgs) -> anyhow::Result<()> {
    let image_root = args.images.clone().unwrap_or_else(|| default_image_root(&args.file));
    let is_odvg = match args.format {
        Format::Odvg => true,
        Format::Coco => false,
        Format::Auto => args.label_map.is_some() || args.file.extension().is_some_and(|e| e == "jsonl"),
    };
    tracing::info!("reading {} as {}", args.file.display(), if is_odvg { "ODVG" } else { "COCO" });
    let started = Instant::now();
    let dataset: Dataset = if is_odvg {
        glint_data::odvg::load_odvg(&args.file, &image_root, args.label_map.as_deref())?
    } else {
        if let Some(label_map) = &args.label_map {
            anyhow::bail!("{}: --label-map is for ODVG files, not COCO json", label_map.display());
        }
        glint_data::coco::load_coco(&args.file, &image_root)?
    };
    tracing::info!("loaded in {:.2?}; image paths relative to {}", started.elapsed(), image_root.display());
    let shown = if tracing::enabled!(tracing::Level::INFO) { dataset.warnings.len() } else { WARNINGS_SHOWN };
    for warning in dataset.warnings.iter().take(shown) {
        println!("warning: {warning}");
    }
    if dataset.warnings.len() > shown {
        println!("warning: ... and {} more (-v shows all)", dataset.warnings.len() - shown);
    }
    let boxes: usize = dataset.samples.iter().map(|s| s.regions.len()).sum();
    let crowd: usize = dataset.samples.iter().flat_map(|s| &s.regions).filter(|r| r.iscrowd).count();
    let empty = dataset.samples.iter().filter(|s| s.regions.is_empty()).count();
    println!(
        "{}: {} images ({empty} without boxes), {boxes} boxes ({crowd} crowd), {} categories, {} warnings",
        args.file.display(),
        dataset.samples.len(),
        dataset.categories.len(),
        dataset.warnings.len()
    );
    if args.decode {
        let bar = progress_bar(dataset.samples.len() as u64, "decoding");
        for sample in &dataset.samples {
            let image = glint_data::load_image(&sample.image_path)?;
            if (image.width(), image.height()) != (sample.width, sample.height) {
                anyhow::bail!(
                    "{}: image is {}×{} but {} declares {}×{}",
                    sample.image_path.display(),
                    image.width(),
                    image.height(),
                    args.file.display(),
                    sample.width,
                    sample.height
                );
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        println!("all {} images decode at their declared size", dataset.samples.len());
    }
    Ok(())
}

fn prompt(args: PromptArgs) -> anyhow::Result<()> {
    let prompt = Prompt::parse(&args.prompt)?;
    let tokenizer = TextTokenizer::from_file(&args.tokenizer)?;
    let chunked = chunk_prompt(&prompt, &tokenizer, usize::from(args.max_tokens))?;
    tracing::info!("{} phrases, {} chunks", prompt.len(), chunked.len());
    println!(
        "{} phrases in {} chunk{} of at most {} tokens",
        prompt.len(),
        chunked.len(),
        if chunked.len() == 1 { "" } else { "s" },
        args.max_tokens
    );
    for (index, chunk) in chunked.chunks().iter().enumerate() {
        let encoded = tokenizer.encode_prompt(&chunk.prompt)?;
        println!(
            "\nchunk {}: {} tokens: {}",
            index + 1,
            encoded.tokens.len(),
            encoded.tokens.tokens().join(" ")
        );
        for (local, phrase) in chunk.prompt.phrases().iter().enumerate() {
            let tokens = encoded.positive_map.tokens(local);
            let words: Vec<&str> = tokens.iter().map(|&t| encoded.tokens.tokens()[t].as_str()).collect();
            println!(
                "  phrase {:>3} {:?}: tokens {:?} {}",
                chunk.phrase_indices[local],
                phrase,
                tokens,
                words.join(" ")
            );
        }
    }
    Ok(())
}

fn default_image_root(file: &Path) -> PathBuf {
    let dir = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let images = dir.join("images");
    if images.is_dir() { images } else { dir.to_path_buf() }
}

fn progress_bar(len: u64, message: &'static str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} [{elapsed_precise} < {eta_precise}]")
            .expect("static template is valid"),
    );
    bar.set_message(message);
    bar
}
