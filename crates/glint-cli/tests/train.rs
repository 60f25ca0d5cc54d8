//! `glint train` end to end: a run killed mid-way resumes from its last checkpoint and redoes
//! the lost steps exactly, its metrics log one line per step; bad configs and occupied run
//! directories are one-line errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn glint() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_glint"));
    command.env("XDG_RUNTIME_DIR", std::env::temp_dir());
    command
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A tiny GLIP config training on synthetic shapes generated into `dir/shapes`.
fn tiny_config(dir: &Path, steps: usize) -> PathBuf {
    let tokenizer = repo().join("tests/fixtures/tokenizer/tokenizer.json");
    let shapes = dir.join("shapes");
    let text = format!(
        r#"
tokenizer = "{tokenizer}"
batch_size = 2
steps = {steps}
checkpoint_every = 3
log_every = 1

[model]
fpn_channels = 16
anchor_scale = 4.0
max_text_len = 64
[model.backbone]
type = "pool_former"
layers = [1, 1, 1, 1]
dims = [8, 16, 32, 32]
[model.text]
hidden_size = 16
num_hidden_layers = 1
num_attention_heads = 2
intermediate_size = 32
max_position_embeddings = 64
hidden_dropout_prob = 0.0
attention_probs_dropout_prob = 0.0
[model.head]
num_layers = 1
norm_groups = 4
fusion_embed_dim = 16
fusion_heads = 2

[data]
train = [{{ kind = "synth", dir = "{shapes}", split = "train", synth = {{ images = 12, image_size = 96, seed = 1, max_distractors = 0 }} }}]

[transforms]
scales = [96]
max_size = 96
crop_prob = 0.0

[optimizer]
lr = 1e-3
"#,
        tokenizer = tokenizer.display(),
        shapes = shapes.display(),
    );
    let path = dir.join("tiny.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `(step, loss)` of every step line of a run's metrics log, in file order.
fn logged_losses(run: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|v| Some((v["step"].as_u64()?, v.get("loss")?.as_f64()?)))
        .collect()
}

#[test]
fn a_killed_run_resumes_from_its_last_checkpoint_and_redoes_the_lost_steps_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config(dir.path(), 12);
    let run = dir.path().join("run");
    let mut child = glint()
        .args(["train", "--device", "cpu", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(&run)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("glint train starts");
    // Kill it once a checkpoint exists and a step past the first one has been logged.
    let started = Instant::now();
    loop {
        let latest = std::fs::read_to_string(run.join("latest.json")).unwrap_or_default();
        if latest.contains("step-") && logged_losses(&run).len() > 3 {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("glint train ended before it could be killed: {status}");
        }
        assert!(started.elapsed() < Duration::from_secs(300), "no checkpoint after 5 minutes");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = logged_losses(&run);
    let latest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("latest.json")).unwrap()).unwrap();
    let checkpoint: u64 =
        latest["checkpoint"].as_str().unwrap().rsplit("step-").next().unwrap().parse().unwrap();

    let resumed = glint()
        .args(["train", "--device", "cpu", "--resume", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(&run)
        .output()
        .unwrap();
    assert!(resumed.status.success(), "resume failed: {}", stderr(&resumed));
    let after = logged_losses(&run);
    // One line per step, the last one at the end; the steps the killed run had done past its
    // checkpoint were redone with the same losses.
    let steps: Vec<u64> = after.iter().map(|&(s, _)| s).collect();
    assert_eq!(steps, (1..=12).collect::<Vec<_>>(), "steps logged: {after:?}");
    assert!(checkpoint < 12, "killed too late: {before:?}");
    for &(step, first) in &before {
        let (_, second) = after[step as usize - 1];
        assert!(
            (first - second).abs() <= 1e-4 * first.abs().max(1.0),
            "step {step}: loss {first}, then {second}"
        );
    }
    let latest = std::fs::read_to_string(run.join("latest.json")).unwrap();
    assert!(latest.contains("step-000012"), "{latest}");
    assert!(run.join("checkpoints/step-000012/model.safetensors").is_file());
}

#[test]
fn train_reports_bad_configs_and_occupied_run_directories_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let one_line_error = |output: &Output, needle: &str| {
        assert!(!output.status.success(), "expected failure: {}", stderr(output));
        let text = stderr(output);
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("error")).collect();
        assert_eq!(lines.len(), 1, "{text:?}");
        assert!(lines[0].contains(needle), "{text:?}");
        assert!(!text.contains("panicked"), "{text:?}");
    };
    let missing = glint().args(["train", "--device", "cpu", "--config", "no/such.toml"]).output().unwrap();
    one_line_error(&missing, "no/such.toml");

    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, "stepz = 3\n").unwrap();
    let output = glint().args(["train", "--device", "cpu", "--config"]).arg(&typo).output().unwrap();
    one_line_error(&output, "stepz");

    let config = tiny_config(dir.path(), 1);
    let occupied = dir.path().join("occupied");
    std::fs::create_dir_all(&occupied).unwrap();
    std::fs::write(occupied.join("keep.txt"), "mine").unwrap();
    let output = glint()
        .args(["train", "--device", "cpu", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(&occupied)
        .output()
        .unwrap();
    one_line_error(&output, "--resume");
    assert_eq!(std::fs::read_to_string(occupied.join("keep.txt")).unwrap(), "mine");
}

#[test]
fn fewshot_reports_a_bad_config_or_a_missing_base_model_in_one_line_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let fail = |config: &Path, needle: &str| {
        let out = dir.path().join("bench");
        let output = glint()
            .args(["fewshot", "--device", "cpu", "--config"])
            .arg(config)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(!output.status.success());
        let text = stderr(&output);
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("error")).collect();
        assert_eq!(lines.len(), 1, "{text:?}");
        assert!(lines[0].contains(needle), "{text:?}");
        assert!(!out.exists(), "nothing is written for a benchmark that cannot start");
    };
    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, "base_model = \"m\"\nshotz = [1]\n").unwrap();
    fail(&typo, "shotz");

    let missing = dir.path().join("missing.toml");
    let data = dir.path().join("shapes");
    std::fs::write(
        &missing,
        format!(
            "base_model = \"no/such/model\"\n[data]\ntrain = {{ kind = \"synth\", dir = {data:?} }}\nval = {{ kind = \"synth\", dir = {data:?}, split = \"val\" }}\n"
        ),
    )
    .unwrap();
    fail(&missing, "no/such/model/config.json");
}
