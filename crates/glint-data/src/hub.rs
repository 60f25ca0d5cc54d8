//! Resolving a model argument (`--model DIR_OR_REPO_ID`) to a local directory of files.
//!
//! An existing path is a model directory. Anything else of the form `owner/name[@revision]` is a
//! Hugging Face Hub repo, looked up in the standard Hub cache exactly as `huggingface_hub` lays
//! it out (`models--{owner}--{name}/refs/{revision}` holds a commit hash; files live in
//! `snapshots/{hash}/`), so models downloaded by Python tools are found without the network.
//! Files missing from the cache are downloaded into it (with a progress bar) unless offline.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};

/// Where the Hub cache is and whether the network may be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubOptions {
    /// The Hub cache root (the folder holding `models--owner--name` folders).
    pub cache_dir: PathBuf,
    /// Never touch the network: every file must already be in the cache.
    pub offline: bool,
}

impl HubOptions {
    /// Options from the process environment, as `huggingface_hub` reads it: the cache is
    /// `$HF_HUB_CACHE`, else `$HUGGINGFACE_HUB_CACHE`, else `$HF_HOME/hub`, else
    /// `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`; offline when
    /// `HF_HUB_OFFLINE` (or `TRANSFORMERS_OFFLINE`) is `1`, `true`, `yes` or `on`.
    pub fn from_env() -> Self {
        Self::from_vars(|name| std::env::var(name).ok(), std::env::home_dir())
    }

    /// [`HubOptions::from_env`] reading variables through `var` and `~` as `home`, so callers
    /// (and tests) can supply their own environment.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>, home: Option<PathBuf>) -> Self {
        let home = home.unwrap_or_default();
        let set = |name: &str| var(name).filter(|v| !v.is_empty());
        let expand = |value: String| match value.strip_prefix("~/") {
            Some(rest) => home.join(rest),
            None if value == "~" => home.clone(),
            None => PathBuf::from(value),
        };
        let cache_dir = match set("HF_HUB_CACHE").or_else(|| set("HUGGINGFACE_HUB_CACHE")) {
            Some(dir) => expand(dir),
            None => {
                let hf_home = match set("HF_HOME") {
                    Some(dir) => expand(dir),
                    None => set("XDG_CACHE_HOME")
                        .map(expand)
                        .unwrap_or_else(|| home.join(".cache"))
                        .join("huggingface"),
                };
                hf_home.join("hub")
            }
        };
        let truthy = |name: &str| {
            set(name).is_some_and(|v| matches!(v.to_ascii_uppercase().as_str(), "1" | "ON" | "YES" | "TRUE"))
        };
        Self { cache_dir, offline: truthy("HF_HUB_OFFLINE") || truthy("TRANSFORMERS_OFFLINE") }
    }
}

/// Why a model argument could not be resolved. Every message names the path or repo at fault.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The path exists but is not a directory.
    #[error("{}: not a directory (expected a model directory or a Hugging Face repo id owner/name)", .0.display())]
    NotADirectory(PathBuf),
    /// A local model directory lacks some of the files the model needs.
    #[error("model directory {} is missing {}", dir.display(), files.join(", "))]
    MissingFiles { dir: PathBuf, files: Vec<String> },
    /// The argument is neither an existing path nor a valid repo id.
    #[error("{arg}: no such directory, and not a Hugging Face repo id (owner/name[@revision]): {reason}")]
    InvalidRepoId { arg: String, reason: String },
    /// Offline, and the cache lacks some files (or, with no files requested, the revision).
    #[error("{repo}: {} (searched {})", not_cached(files), searched.display())]
    NotCached { repo: String, files: Vec<String>, searched: PathBuf },
    /// Online, and a file could not be downloaded.
    #[error("{repo}: could not download {file} and it is not in the Hugging Face cache at {}: {message}", cache.display())]
    Download { repo: String, file: String, cache: PathBuf, message: String },
    /// The repo kept changing commit while its files were downloaded.
    #[error("{repo}: the repo changed while downloading; files did not end up in one snapshot in {}; try again", cache.display())]
    Inconsistent { repo: String, cache: PathBuf },
}

fn not_cached(files: &[String]) -> String {
    match files {
        [] => "not in the Hugging Face cache".to_string(),
        [one] => format!("HF_HUB_OFFLINE is set and {one} is not in the Hugging Face cache"),
        many => format!("HF_HUB_OFFLINE is set and {} are not in the Hugging Face cache", many.join(", ")),
    }
}

/// Resolves `arg` to a directory holding every file in `files` (paths relative to the model
/// root, such as `config.json`).
///
/// - An existing path must be a directory holding all `files`; it is returned as given.
/// - Otherwise `arg` must be a Hub repo id `owner/name[@revision]` (revision defaults to `main`;
///   a 40-hex commit hash is used directly). Its snapshot folder in `options.cache_dir` is
///   returned; missing files are downloaded into the cache unless `options.offline`.
pub fn resolve_model(arg: &str, files: &[&str], options: &HubOptions) -> Result<PathBuf, HubError> {
    let path = Path::new(arg);
    // `metadata` follows symlinks, so a symlink to a model directory counts as a directory.
    if let Ok(meta) = std::fs::metadata(path) {
        if !meta.is_dir() {
            return Err(HubError::NotADirectory(path.to_path_buf()));
        }
        let missing = missing_in(path, files);
        if !missing.is_empty() {
            return Err(HubError::MissingFiles { dir: path.to_path_buf(), files: missing });
        }
        return Ok(path.to_path_buf());
    }
    let id = RepoId::parse(arg).map_err(|reason| HubError::InvalidRepoId { arg: arg.to_string(), reason })?;
    resolve_repo(&id, files, options)
}

/// A parsed `owner/name[@revision]`.
struct RepoId {
    repo: String,
    revision: String,
}

impl RepoId {
    fn parse(arg: &str) -> Result<Self, String> {
        let (repo, revision) = match arg.split_once('@') {
            Some((repo, revision)) => (repo, revision),
            None => (arg, "main"),
        };
        let mut parts = repo.split('/');
        let (Some(owner), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err("expected exactly one '/' between owner and name".to_string());
        };
        for part in [owner, name] {
            check_id_part(part)?;
        }
        if name.ends_with(".git") {
            return Err("the name cannot end in .git".to_string());
        }
        // The revision becomes a path under `refs/`: branch names may hold '/', never '..'.
        if revision.is_empty()
            || revision.split('/').any(|c| c.is_empty() || c == "." || c == "..")
            || revision.contains(['\\', '@'])
            || revision.chars().any(char::is_control)
        {
            return Err(format!("invalid revision '{revision}'"));
        }
        Ok(Self { repo: repo.to_string(), revision: revision.to_string() })
    }

    fn display(&self) -> String {
        format!("{}@{}", self.repo, self.revision)
    }
}

/// The Hub's rule for an owner or repo name: 1 to 96 of `A-Z a-z 0-9 _ - .`, starting and
/// ending with a letter, digit or `_`, and no `--` or `..`.
fn check_id_part(part: &str) -> Result<(), String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let ok = !part.is_empty()
        && part.len() <= 96
        && part.chars().all(|c| word(c) || c == '-' || c == '.')
        && part.starts_with(word)
        && part.ends_with(word)
        && !part.contains("--")
        && !part.contains("..");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{part}' must be 1-96 letters, digits, '_', '-' or '.', start and end with a letter or digit, without '--' or '..'"
        ))
    }
}

fn is_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The entries of `files` that are not files (or symlinks to files) under `dir`.
fn missing_in(dir: &Path, files: &[&str]) -> Vec<String> {
    files.iter().filter(|f| !dir.join(f).is_file()).map(|f| f.to_string()).collect()
}

fn resolve_repo(id: &RepoId, files: &[&str], options: &HubOptions) -> Result<PathBuf, HubError> {
    let hub_repo = Repo::with_revision(id.repo.clone(), RepoType::Model, id.revision.clone());
    let repo_dir = options.cache_dir.join(hub_repo.folder_name());
    let mut snapshot = cached_snapshot(&repo_dir, &id.revision);
    let mut missing = match &snapshot {
        Some(dir) => missing_in(dir, files),
        None => files.iter().map(|f| f.to_string()).collect(),
    };
    if missing.is_empty()
        && let Some(dir) = snapshot
    {
        return Ok(dir);
    }
    // Offline, or nothing to download that would create the snapshot.
    if options.offline || missing.is_empty() {
        // Name the most specific place looked at: the snapshot, or the ref that was not found.
        let searched = snapshot.unwrap_or_else(|| match is_commit_hash(&id.revision) {
            true => repo_dir.join("snapshots").join(&id.revision),
            false => repo_dir.join("refs").join(&id.revision),
        });
        return Err(HubError::NotCached { repo: id.display(), files: missing, searched });
    }

    let download_error = |file: &str, message: String| HubError::Download {
        repo: id.display(),
        file: file.to_string(),
        cache: repo_dir.clone(),
        message,
    };
    let mut builder = ApiBuilder::from_cache(Cache::new(options.cache_dir.clone())).with_progress(true);
    if let Some(endpoint) = std::env::var("HF_ENDPOINT").ok().filter(|e| !e.is_empty()) {
        builder = builder.with_endpoint(endpoint);
    }
    if let Some(token) = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty()) {
        builder = builder.with_token(Some(token));
    }
    let api =
        builder.build().map_err(|e| download_error(missing.first().map_or("", |f| f), e.to_string()))?;
    let api_repo = api.repo(hub_repo);

    // Each download lands in the snapshot of the commit the revision points to now. If that
    // commit moved since the cache was filled, fetch the rest into the new snapshot too.
    for _round in 0..3 {
        for file in &missing {
            let path = api_repo.download(file).map_err(|e| download_error(file, e.to_string()))?;
            let depth = Path::new(file).components().count();
            snapshot = path.ancestors().nth(depth).map(Path::to_path_buf);
        }
        let Some(dir) = &snapshot else { break };
        missing = missing_in(dir, files);
        if missing.is_empty() {
            return Ok(dir.clone());
        }
    }
    Err(HubError::Inconsistent { repo: id.display(), cache: repo_dir })
}

/// The snapshot folder `revision` points to in the cache, if the cache knows the revision.
fn cached_snapshot(repo_dir: &Path, revision: &str) -> Option<PathBuf> {
    let commit = if is_commit_hash(revision) {
        revision.to_string()
    } else {
        let text = std::fs::read_to_string(repo_dir.join("refs").join(revision)).ok()?;
        let commit = text.trim();
        // A ref holds a commit hash; anything else would name a path outside `snapshots/`.
        if !is_commit_hash(commit) {
            return None;
        }
        commit.to_string()
    };
    let dir = repo_dir.join("snapshots").join(commit);
    dir.is_dir().then_some(dir)
}
