pub mod bench;
pub mod data;
pub mod detect;
pub mod device;
pub mod eval;
pub mod fewshot;
pub mod train;

use std::path::{Path, PathBuf};

use anyhow::Context;

/// The output directory: `out` if given, else `runs/CONFIG-NAME`.
fn out_dir(config: &Path, out: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match out {
        Some(out) => Ok(out),
        None => {
            let name = config.file_stem().context("the config path has no file name")?;
            Ok(PathBuf::from("runs").join(name))
        }
    }
}
