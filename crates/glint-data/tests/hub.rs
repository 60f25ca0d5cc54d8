//! Model resolution against Hub caches laid out exactly as `huggingface_hub` lays them out:
//! `models--owner--name/{blobs/<etag>, snapshots/<commit>/<file> -> ../../blobs/<etag>, refs/<revision>}`.
//! Every test is offline and builds its own cache; none reads process environment variables.

use std::path::{Path, PathBuf};

use glint_data::hub::{HubError, HubOptions, resolve_model};

const COMMIT_A: &str = "1111111111111111111111111111111111111111";
const COMMIT_B: &str = "abcdef0123456789abcdef0123456789abcdef01";
const FILES: [&str; 2] = ["config.json", "model.safetensors"];

fn offline(cache: &Path) -> HubOptions {
    HubOptions { cache_dir: cache.to_path_buf(), offline: true }
}

/// Adds snapshot `commit` of `repo` ("owner/name") holding `files` (name, content) to the
/// cache, each a blob plus a relative symlink, and points each of `refs` at the commit.
fn add_snapshot(cache: &Path, repo: &str, commit: &str, files: &[(&str, &str)], refs: &[&str]) -> PathBuf {
    let repo_dir = cache.join(format!("models--{}", repo.replace('/', "--")));
    let snapshot = repo_dir.join("snapshots").join(commit);
    std::fs::create_dir_all(repo_dir.join("blobs")).unwrap();
    for (name, content) in files {
        // Blob names are etags (sha256 or git sha1); any unique hex name will do here.
        let etag = format!("{:064x}", fxhash(&format!("{commit}/{name}/{content}")));
        std::fs::write(repo_dir.join("blobs").join(&etag), content).unwrap();
        let link = snapshot.join(name);
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        let depth = Path::new(name).components().count() + 1;
        let target = Path::new(&"../".repeat(depth)).join("blobs").join(&etag);
        std::os::unix::fs::symlink(target, &link).unwrap();
    }
    for r in refs {
        let ref_path = repo_dir.join("refs").join(r);
        std::fs::create_dir_all(ref_path.parent().unwrap()).unwrap();
        std::fs::write(ref_path, commit).unwrap();
    }
    snapshot
}

fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3))
}

fn both_files(tag: &str) -> Vec<(&'static str, String)> {
    vec![("config.json", format!("{{\"tag\": \"{tag}\"}}")), ("model.safetensors", format!("weights {tag}"))]
}

fn as_refs<'a>(files: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    files.iter().map(|(n, c)| (*n, c.as_str())).collect()
}

#[test]
fn repo_id_resolves_through_refs_main_to_the_snapshot() {
    let cache = tempfile::tempdir().unwrap();
    let files = both_files("a");
    let snapshot = add_snapshot(
        cache.path(),
        "IDEA-Research/grounding-dino-tiny",
        COMMIT_A,
        &as_refs(&files),
        &["main"],
    );

    let dir = resolve_model("IDEA-Research/grounding-dino-tiny", &FILES, &offline(cache.path())).unwrap();
    assert_eq!(dir, snapshot);
    // The files are readable through the symlinks into blobs/.
    assert_eq!(std::fs::read_to_string(dir.join("config.json")).unwrap(), "{\"tag\": \"a\"}");
    assert_eq!(std::fs::read_to_string(dir.join("model.safetensors")).unwrap(), "weights a");
}

#[test]
fn ref_files_with_a_trailing_newline_are_accepted() {
    let cache = tempfile::tempdir().unwrap();
    let files = both_files("a");
    let snapshot = add_snapshot(cache.path(), "owner/model", COMMIT_A, &as_refs(&files), &[]);
    let refs = cache.path().join("models--owner--model/refs");
    std::fs::create_dir_all(&refs).unwrap();
    std::fs::write(refs.join("main"), format!("{COMMIT_A}\n")).unwrap();
    assert_eq!(resolve_model("owner/model", &FILES, &offline(cache.path())).unwrap(), snapshot);
}

#[test]
fn explicit_revision_and_commit_hash_pick_their_own_snapshot() {
    let cache = tempfile::tempdir().unwrap();
    let (a, b) = (both_files("a"), both_files("b"));
    let main = add_snapshot(cache.path(), "owner/model", COMMIT_A, &as_refs(&a), &["main"]);
    let v1 = add_snapshot(cache.path(), "owner/model", COMMIT_B, &as_refs(&b), &["v1.0", "refs/pr/1"]);
    let options = offline(cache.path());

    assert_eq!(resolve_model("owner/model", &FILES, &options).unwrap(), main);
    assert_eq!(resolve_model("owner/model@main", &FILES, &options).unwrap(), main);
    assert_eq!(resolve_model("owner/model@v1.0", &FILES, &options).unwrap(), v1);
    // Branch names may contain '/', stored as nested folders under refs/.
    assert_eq!(resolve_model("owner/model@refs/pr/1", &FILES, &options).unwrap(), v1);
    // A commit hash needs no ref: COMMIT_A has a snapshot but only "main" points at it by name.
    assert_eq!(resolve_model(&format!("owner/model@{COMMIT_A}"), &FILES, &options).unwrap(), main);
    let dir = resolve_model(&format!("owner/model@{COMMIT_B}"), &FILES, &options).unwrap();
    assert_eq!(std::fs::read_to_string(dir.join("model.safetensors")).unwrap(), "weights b");

    // An unknown revision of a cached repo is not silently replaced by main.
    let err = resolve_model("owner/model@v2.0", &FILES, &options).unwrap_err();
    assert!(matches!(err, HubError::NotCached { .. }), "{err}");
    assert!(err.to_string().contains("refs/v2.0"), "{err}");
}

#[test]
fn offline_missing_file_is_named_with_the_path_searched() {
    let cache = tempfile::tempdir().unwrap();
    let snapshot = add_snapshot(cache.path(), "owner/model", COMMIT_A, &[("config.json", "{}")], &["main"]);
    let err = resolve_model("owner/model", &FILES, &offline(cache.path())).unwrap_err();
    let message = err.to_string();
    match &err {
        HubError::NotCached { files, searched, .. } => {
            assert_eq!(files, &["model.safetensors".to_string()]);
            assert_eq!(searched, &snapshot);
        }
        other => panic!("expected NotCached, got {other:?}"),
    }
    assert!(message.contains("model.safetensors") && message.contains("HF_HUB_OFFLINE"), "{message}");
    assert!(message.contains(&snapshot.display().to_string()), "{message}");
    assert!(!message.contains("config.json"), "only the missing file is listed: {message}");
    assert!(!message.contains('\n'), "one line: {message}");
}

#[test]
fn offline_unknown_repo_lists_every_file_in_one_error() {
    let cache = tempfile::tempdir().unwrap();
    let err = resolve_model("nobody/nothing", &FILES, &offline(cache.path())).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, HubError::NotCached { .. }), "{err:?}");
    assert!(message.contains("config.json, model.safetensors"), "{message}");
    let searched = cache.path().join("models--nobody--nothing").join("refs").join("main");
    assert!(message.contains(&searched.display().to_string()), "{message}");

    // A commit hash with no snapshot names the snapshot folder it looked for.
    let err =
        resolve_model(&format!("nobody/nothing@{COMMIT_B}"), &FILES, &offline(cache.path())).unwrap_err();
    assert!(err.to_string().contains(&format!("models--nobody--nothing/snapshots/{COMMIT_B}")), "{err}");
}

#[test]
fn with_no_files_requested_a_cached_revision_resolves_and_an_unknown_one_does_not() {
    let cache = tempfile::tempdir().unwrap();
    let snapshot = add_snapshot(cache.path(), "owner/model", COMMIT_A, &[("config.json", "{}")], &["main"]);
    assert_eq!(resolve_model("owner/model", &[], &offline(cache.path())).unwrap(), snapshot);
    let online = HubOptions { cache_dir: cache.path().to_path_buf(), offline: false };
    // Nothing to download, so even online this is answered from the cache alone.
    let err = resolve_model("owner/other", &[], &online).unwrap_err();
    assert!(matches!(err, HubError::NotCached { .. }), "{err:?}");
    assert!(err.to_string().contains("models--owner--other"), "{err}");
}

#[test]
fn a_ref_that_is_not_a_commit_hash_is_not_followed() {
    let cache = tempfile::tempdir().unwrap();
    add_snapshot(
        cache.path(),
        "owner/model",
        COMMIT_A,
        &[("config.json", "{}"), ("model.safetensors", "w")],
        &[],
    );
    let refs = cache.path().join("models--owner--model/refs");
    std::fs::create_dir_all(&refs).unwrap();
    std::fs::write(refs.join("main"), "../../../elsewhere").unwrap();
    let err = resolve_model("owner/model", &FILES, &offline(cache.path())).unwrap_err();
    assert!(matches!(err, HubError::NotCached { .. }), "{err:?}");
}

#[test]
fn local_directory_is_used_as_is_and_missing_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), "{}").unwrap();
    std::fs::write(dir.path().join("model.safetensors"), "w").unwrap();
    let cache = tempfile::tempdir().unwrap();
    let arg = dir.path().to_str().unwrap();
    assert_eq!(resolve_model(arg, &FILES, &offline(cache.path())).unwrap(), dir.path());

    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let err = resolve_model(arg, &FILES, &offline(cache.path())).unwrap_err();
    match &err {
        HubError::MissingFiles { dir: d, files } => {
            assert_eq!(d, dir.path());
            assert_eq!(files, &["model.safetensors".to_string()]);
        }
        other => panic!("expected MissingFiles, got {other:?}"),
    }
    assert!(err.to_string().contains(arg), "{err}");
}

#[test]
fn local_path_that_is_a_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("model.safetensors");
    std::fs::write(&file, "w").unwrap();
    let cache = tempfile::tempdir().unwrap();
    let err = resolve_model(file.to_str().unwrap(), &FILES, &offline(cache.path())).unwrap_err();
    assert!(matches!(err, HubError::NotADirectory(ref p) if p == &file), "{err:?}");
    assert!(err.to_string().contains(file.to_str().unwrap()), "{err}");
}

#[test]
fn malformed_repo_ids_are_rejected_with_the_argument_named() {
    let cache = tempfile::tempdir().unwrap();
    // A cache entry that a sloppy parser could reach for some of the inputs below.
    add_snapshot(
        cache.path(),
        "owner/model",
        COMMIT_A,
        &[("config.json", "{}"), ("model.safetensors", "w")],
        &["main"],
    );
    for arg in [
        "no-slash-and-no-such-dir",
        "owner/model/extra",
        "owner//model",
        "/model-at-root-that-does-not-exist",
        "owner/",
        "owner/model@",
        "-owner/model",
        "owner/model.",
        "own--er/model",
        "owner/mo..del",
        "owner/model.git",
        "own er/model",
        "owner/model@../../x",
        "owner/model@a//b",
        "",
    ] {
        let err = resolve_model(arg, &FILES, &offline(cache.path())).unwrap_err();
        assert!(matches!(err, HubError::InvalidRepoId { .. }), "{arg:?}: {err:?}");
        assert!(err.to_string().starts_with(arg), "{arg:?}: {err}");
    }
}

#[test]
fn options_follow_huggingface_hub_environment_rules() {
    fn with(vars: &[(&str, &str)]) -> HubOptions {
        let lookup = |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string());
        HubOptions::from_vars(lookup, Some(PathBuf::from("/home/u")))
    }
    assert_eq!(with(&[]), HubOptions { cache_dir: "/home/u/.cache/huggingface/hub".into(), offline: false });
    assert_eq!(with(&[("XDG_CACHE_HOME", "/xdg")]).cache_dir, PathBuf::from("/xdg/huggingface/hub"));
    assert_eq!(with(&[("XDG_CACHE_HOME", "/xdg"), ("HF_HOME", "/hf")]).cache_dir, PathBuf::from("/hf/hub"));
    assert_eq!(with(&[("HF_HOME", "~/hf")]).cache_dir, PathBuf::from("/home/u/hf/hub"));
    assert_eq!(
        with(&[("HF_HOME", "/hf"), ("HUGGINGFACE_HUB_CACHE", "/legacy")]).cache_dir,
        PathBuf::from("/legacy")
    );
    assert_eq!(
        with(&[("HF_HOME", "/hf"), ("HUGGINGFACE_HUB_CACHE", "/legacy"), ("HF_HUB_CACHE", "/cache")])
            .cache_dir,
        PathBuf::from("/cache")
    );
    // Empty values count as unset.
    assert_eq!(with(&[("HF_HUB_CACHE", ""), ("HF_HOME", "/hf")]).cache_dir, PathBuf::from("/hf/hub"));

    for value in ["1", "true", "TRUE", "yes", "Yes", "on"] {
        assert!(with(&[("HF_HUB_OFFLINE", value)]).offline, "HF_HUB_OFFLINE={value}");
    }
    for value in ["0", "false", "no", "", "offline"] {
        assert!(!with(&[("HF_HUB_OFFLINE", value)]).offline, "HF_HUB_OFFLINE={value}");
    }
    assert!(with(&[("TRANSFORMERS_OFFLINE", "1")]).offline);
}
