//! The shared checkpoint loader (`glint_nn::weights`): round trips, PyTorch layout conversion,
//! prefix / ignore / remap selection, and one error naming every missing, unexpected and
//! mis-shaped tensor. Values are copied, not computed, so comparisons are exact.

mod common;

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::store::{BurnToPyTorchAdapter, ModuleSnapshot, SafetensorsStore};
use burn::tensor::{Device, Tensor, TensorData};
use glint_nn::text::{Bert, BertConfig};
use glint_nn::weights::{LoadOptions, WeightsError, load_pytorch, load_safetensors};
use safetensors::{Dtype, tensor::TensorView};

#[derive(Module, Debug)]
struct Block {
    fc: Linear,
}

#[derive(Module, Debug)]
struct Tiny {
    fc: Linear,
    norm: LayerNorm,
    emb: Embedding,
    blocks: Vec<Block>,
}

fn tiny(device: &Device) -> Tiny {
    Tiny {
        fc: LinearConfig::new(2, 3).init(device),
        norm: LayerNormConfig::new(3).init(device),
        emb: EmbeddingConfig::new(4, 3).init(device),
        blocks: (0..2).map(|_| Block { fc: LinearConfig::new(3, 3).init(device) }).collect(),
    }
}

/// `(name, shape)` -> deterministic values `k + 0.01·i` with `k` unique per tensor.
fn values(k: usize, shape: &[usize]) -> Vec<f32> {
    let n: usize = shape.iter().product();
    (0..n).map(|i| k as f32 + 0.01 * i as f32).collect()
}

/// The tiny module's tensors as PyTorch would save them (Linear weights `[out, in]`, norms
/// `weight` / `bias`), each key prefixed.
fn pytorch_tensors(prefix: &str) -> Vec<(String, Vec<usize>)> {
    let mut t = vec![
        ("fc.weight", vec![3, 2]),
        ("fc.bias", vec![3]),
        ("norm.weight", vec![3]),
        ("norm.bias", vec![3]),
        ("emb.weight", vec![4, 3]),
        ("blocks.0.fc.weight", vec![3, 3]),
        ("blocks.0.fc.bias", vec![3]),
        ("blocks.1.fc.weight", vec![3, 3]),
        ("blocks.1.fc.bias", vec![3]),
    ]
    .into_iter()
    .map(|(n, s)| (format!("{prefix}{n}"), s))
    .collect::<Vec<_>>();
    t.sort();
    t
}

fn write(path: &Path, tensors: &[(String, Vec<usize>)]) {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .enumerate()
        .map(|(k, (_, shape))| values(k, shape).iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape), b)| (name.clone(), TensorView::new(Dtype::F32, shape.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

fn value_of(tensors: &[(String, Vec<usize>)], name: &str) -> Vec<f32> {
    let k = tensors.iter().position(|(n, _)| n == name).unwrap();
    values(k, &tensors[k].1)
}

fn vec1(t: Tensor<1>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec().unwrap()
}

fn vec2(t: Tensor<2>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec().unwrap()
}

fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols).flat_map(|c| (0..rows).map(move |r| v[r * cols + c])).collect()
}

fn mismatch(err: &WeightsError) -> &glint_nn::weights::Mismatch {
    err.mismatch().unwrap_or_else(|| panic!("expected a mismatch report, got: {err}"))
}

fn tmp(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

#[test]
fn loads_pytorch_layout_and_transposes_linear_weights() {
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let path = tmp(&dir, "tiny.safetensors");
    let tensors = pytorch_tensors("");
    write(&path, &tensors);

    let m = load_safetensors(tiny(&device), &path, &LoadOptions::new()).unwrap();
    // Burn's Linear weight is [in, out]: the transpose of PyTorch's [out, in].
    assert_eq!(vec2(m.fc.weight.val()), transpose(&value_of(&tensors, "fc.weight"), 3, 2));
    assert_eq!(vec1(m.fc.bias.clone().unwrap().val()), value_of(&tensors, "fc.bias"));
    assert_eq!(vec1(m.norm.gamma.val()), value_of(&tensors, "norm.weight"));
    assert_eq!(vec1(m.norm.beta.clone().unwrap().val()), value_of(&tensors, "norm.bias"));
    assert_eq!(vec2(m.emb.weight.val()), value_of(&tensors, "emb.weight"));
    assert_eq!(vec2(m.blocks[1].fc.weight.val()), transpose(&value_of(&tensors, "blocks.1.fc.weight"), 3, 3));

    // The layer computes x·Wᵀ + b with W as PyTorch stores it.
    let x = [0.5f32, -1.5];
    let w = value_of(&tensors, "fc.weight");
    let b = value_of(&tensors, "fc.bias");
    let expected: Vec<f32> = (0..3).map(|o| w[o * 2] * x[0] + w[o * 2 + 1] * x[1] + b[o]).collect();
    let y = m.fc.forward(Tensor::<2>::from_data(TensorData::new(x.to_vec(), [1, 2]), &device));
    for (a, e) in vec2(y).iter().zip(&expected) {
        assert!((a - e).abs() < 1e-6, "{a} vs {e}");
    }
}

#[test]
fn round_trip_through_burn_store() {
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let path = tmp(&dir, "saved.safetensors");
    device.seed(7);
    let source = tiny(&device);
    let mut store = SafetensorsStore::from_file(&path).with_to_adapter(BurnToPyTorchAdapter);
    source.save_into(&mut store).unwrap();

    device.seed(8);
    let fresh = tiny(&device);
    assert_ne!(vec2(fresh.fc.weight.val()), vec2(source.fc.weight.val()));
    let loaded = load_safetensors(fresh, &path, &LoadOptions::new()).unwrap();
    assert_eq!(vec2(loaded.fc.weight.val()), vec2(source.fc.weight.val()));
    assert_eq!(vec1(loaded.norm.gamma.val()), vec1(source.norm.gamma.val()));
    assert_eq!(vec2(loaded.emb.weight.val()), vec2(source.emb.weight.val()));
    assert_eq!(vec2(loaded.blocks[0].fc.weight.val()), vec2(source.blocks[0].fc.weight.val()));
}

#[test]
fn one_error_names_every_missing_extra_and_misshaped_tensor() {
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let path = tmp(&dir, "broken.safetensors");
    let mut tensors: Vec<(String, Vec<usize>)> = pytorch_tensors("")
        .into_iter()
        .filter(|(n, _)| n != "fc.bias" && n != "norm.weight")
        .map(|(n, s)| {
            if n == "blocks.1.fc.weight" {
                (n, vec![4, 3])
            } else if n == "emb.weight" {
                (n, vec![5, 3])
            } else {
                (n, s)
            }
        })
        .collect();
    tensors.push(("extra.weight".into(), vec![2]));
    tensors.push(("blocks.2.fc.bias".into(), vec![3]));
    write(&path, &tensors);

    let err = load_safetensors(tiny(&device), &path, &LoadOptions::new()).unwrap_err();
    let report = mismatch(&err);
    assert_eq!(report.path, path);
    // Missing parameters are named as a PyTorch checkpoint spells them (LayerNorm `weight`).
    assert_eq!(report.missing, vec!["fc.bias", "norm.weight"]);
    assert_eq!(report.unexpected, vec!["blocks.2.fc.bias", "extra.weight"]);
    let shapes: Vec<(&str, &[usize], &[usize])> = report
        .mis_shaped
        .iter()
        .map(|m| (m.name.as_str(), m.expected.as_slice(), m.found.as_slice()))
        .collect();
    // Shapes in the checkpoint's own layout (Linear [out, in]).
    assert!(shapes.contains(&("blocks.1.fc.weight", &[3, 3], &[4, 3])), "{shapes:?}");
    assert!(shapes.contains(&("emb.weight", &[4, 3], &[5, 3])), "{shapes:?}");
    assert_eq!(shapes.len(), 2);

    let message = err.to_string();
    eprintln!("{message}");
    assert!(!message.contains('\n'), "one line: {message}");
    for needle in [
        path.display().to_string().as_str(),
        "fc.bias",
        "norm.weight",
        "extra.weight",
        "blocks.2.fc.bias",
        "blocks.1.fc.weight expected [3, 3], found [4, 3]",
        "emb.weight expected [4, 3], found [5, 3]",
    ] {
        assert!(message.contains(needle), "{needle:?} not in: {message}");
    }
}

#[test]
fn a_misshaped_square_linear_is_reported_in_pytorch_layout() {
    // [3, 2] where the module needs [3, 3] (PyTorch [out, in]): Burn compares the transposed
    // [2, 3] to [3, 3]; the report must give both in the file's layout.
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let path = tmp(&dir, "square.safetensors");
    let tensors: Vec<_> = pytorch_tensors("")
        .into_iter()
        .map(|(n, s)| if n == "blocks.0.fc.weight" { (n, vec![3, 2]) } else { (n, s) })
        .collect();
    write(&path, &tensors);
    let err = load_safetensors(tiny(&device), &path, &LoadOptions::new()).unwrap_err();
    let m = &mismatch(&err).mis_shaped;
    assert_eq!(m.len(), 1);
    assert_eq!((m[0].expected.as_slice(), m[0].found.as_slice()), (&[3usize, 3][..], &[3usize, 2][..]));
}

#[test]
fn prefix_selects_a_submodule_and_ignore_and_remap_apply_after_it() {
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let path = tmp(&dir, "whole.safetensors");
    // A "whole model": the sub-module under `model.sub.` (its norm under another name), plus
    // tensors of other stages and a pooler-like extra under the prefix.
    let mut tensors: Vec<(String, Vec<usize>)> =
        pytorch_tensors("model.sub.").into_iter().map(|(n, s)| (n.replace(".norm.", ".ln."), s)).collect();
    tensors.push(("model.other.weight".into(), vec![7]));
    tensors.push(("head.bias".into(), vec![2]));
    tensors.push(("model.sub.pooler.dense.weight".into(), vec![2, 2]));
    tensors.sort();
    write(&path, &tensors);

    let options = LoadOptions::new()
        .with_prefix("model.sub") // trailing dot added
        .with_ignore(r"^pooler\.")
        .with_remap(r"^ln\.", "norm.");
    let m = load_safetensors(tiny(&device), &path, &options).unwrap();
    assert_eq!(vec1(m.norm.gamma.val()), value_of(&tensors, "model.sub.ln.weight"));
    assert_eq!(vec2(m.fc.weight.val()), transpose(&value_of(&tensors, "model.sub.fc.weight"), 3, 2));

    // Without the ignore rule the pooler is unexpected (named by its full key); keys outside
    // the prefix are never reported.
    let options = LoadOptions::new().with_prefix("model.sub.").with_remap(r"^ln\.", "norm.");
    let err = load_safetensors(tiny(&device), &path, &options).unwrap_err();
    let report = mismatch(&err);
    assert_eq!(report.unexpected, vec!["model.sub.pooler.dense.weight"]);
    assert!(report.missing.is_empty() && report.mis_shaped.is_empty());
    assert!(err.to_string().contains("keys under `model.sub.`"), "{err}");

    // Without the remap the norm is missing and its checkpoint keys unexpected.
    let options = LoadOptions::new().with_prefix("model.sub.").with_ignore(r"^pooler\.");
    let err = load_safetensors(tiny(&device), &path, &options).unwrap_err();
    let report = mismatch(&err);
    assert_eq!(report.missing, vec!["norm.bias", "norm.weight"]);
    assert_eq!(report.unexpected, vec!["model.sub.ln.bias", "model.sub.ln.weight"]);
}

#[test]
fn two_keys_renamed_to_one_parameter_are_reported() {
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let path = tmp(&dir, "dup.safetensors");
    let mut tensors = pytorch_tensors("");
    tensors.push(("alt_fc.bias".into(), vec![3]));
    tensors.sort();
    write(&path, &tensors);
    let options = LoadOptions::new().with_remap(r"^alt_fc\.", "fc.");
    let err = load_safetensors(tiny(&device), &path, &options).unwrap_err();
    let report = mismatch(&err);
    assert_eq!(
        report.duplicates,
        vec![("fc.bias".to_string(), vec!["alt_fc.bias".to_string(), "fc.bias".to_string()])]
    );
}

#[test]
fn unreadable_files_and_bad_patterns_name_the_file() {
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();

    let missing = tmp(&dir, "nope.safetensors");
    let err = load_safetensors(tiny(&device), &missing, &LoadOptions::new()).unwrap_err();
    assert!(matches!(err, WeightsError::Read { .. }), "{err}");
    assert!(err.to_string().contains("nope.safetensors"), "{err}");

    let garbage = tmp(&dir, "garbage.safetensors");
    std::fs::write(&garbage, b"definitely not a safetensors file").unwrap();
    let err = load_safetensors(tiny(&device), &garbage, &LoadOptions::new()).unwrap_err();
    assert!(matches!(err, WeightsError::Read { .. }), "{err}");
    assert!(err.to_string().contains("garbage.safetensors"), "{err}");

    let good = tmp(&dir, "good.safetensors");
    write(&good, &pytorch_tensors(""));
    let err = load_safetensors(tiny(&device), &good, &LoadOptions::new().with_remap("(", "x")).unwrap_err();
    assert!(matches!(err, WeightsError::Pattern { .. }), "{err}");
    assert!(err.to_string().contains("good.safetensors"), "{err}");

    let err = load_pytorch(tiny(&device), tmp(&dir, "nope.pth"), &LoadOptions::new()).unwrap_err();
    assert!(matches!(err, WeightsError::Read { .. }), "{err}");
    assert!(err.to_string().contains("nope.pth"), "{err}");

    let err = load_pytorch(tiny(&device), &garbage, &LoadOptions::new()).unwrap_err();
    assert!(matches!(err, WeightsError::Read { .. }), "{err}");
}

fn fixture(name: &str) -> PathBuf {
    common::fixtures("bert").join(name)
}

#[test]
fn pytorch_checkpoint_loads_like_the_safetensors_one() {
    // tests/fixtures/bert/weights.pth: `{"model": {"module.bert.<key>": tensor}, "epoch": 3}`,
    // the layout of IDEA-Research checkpoints, holding the same tensors as weights.safetensors.
    let device = Device::flex();
    let config = BertConfig::from_json_file(fixture("config.json")).unwrap();
    let from_st = config.init(&device).load_safetensors(fixture("weights.safetensors"), "").unwrap();
    let options = glint_nn::text::hf_load_options("module.bert.").with_top_level_key("model");
    let from_pth: Bert = load_pytorch(config.init(&device), fixture("weights.pth"), &options).unwrap();
    let pairs = [
        (from_st.embeddings.word_embeddings.weight.val(), from_pth.embeddings.word_embeddings.weight.val()),
        (
            from_st.encoder.layer[1].attention.self_attention.key.weight.val(),
            from_pth.encoder.layer[1].attention.self_attention.key.weight.val(),
        ),
        (
            from_st.encoder.layer[0].output.dense.weight.val(),
            from_pth.encoder.layer[0].output.dense.weight.val(),
        ),
    ];
    for (x, y) in pairs {
        assert_eq!(vec2(x), vec2(y));
    }
    assert_eq!(
        vec1(from_st.encoder.layer[1].output.layer_norm.gamma.val()),
        vec1(from_pth.encoder.layer[1].output.layer_norm.gamma.val())
    );

    // Wrong prefix: everything is missing, and the .pth file is named.
    let options = glint_nn::text::hf_load_options("bert.").with_top_level_key("model");
    let err = load_pytorch(config.init(&device), fixture("weights.pth"), &options).unwrap_err();
    let report = mismatch(&err);
    assert!(report.missing.contains(&"embeddings.word_embeddings.weight".to_string()));
    assert!(err.to_string().contains("weights.pth"), "{err}");
}
