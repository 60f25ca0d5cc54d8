//! Original IDEA-Research Grounding DINO `.pth` checkpoints (`glint_nn::weights::idea`).
//!
//! Fixtures (tests/fixtures/grounding_dino/, see tests/fixtures/README.md):
//! - `tiny_idea.pth`: the tiny transformers checkpoint `tiny/model.safetensors` rewritten in
//!   IDEA's layout by make_grounding_dino_pth.py (fused qkv / in_proj, shared box-head copies,
//!   position-index buffers, BERT pooler, `label_enc`, `module.` prefix) — checked there
//!   against IDEA's own model code, which reproduces transformers' outputs with it;
//! - `idea_{swint_ogc,swinb_cogcoor}_keys.txt`: every tensor name and shape of the published
//!   full-size checkpoints (IDEA's `state_dict()` plus `label_enc.weight` and BERT's
//!   `position_ids`), and `hf_*_keys.txt`: the same models as transformers saves them.
//!
//! Converted tensors are compared bit for bit.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::module::Module;
use burn::store::burn_pack::Tensor as PackTensor;
use burn::store::{ModuleSnapshot, ModuleStore, PytorchStore};
use burn::tensor::{Bytes, DType, Device};
use glint_nn::backbone::{GROUNDING_DINO_SWIN_PREFIX, SwinConfig, swin_load_options};
use glint_nn::text::{BertConfig, hf_load_options};
use glint_nn::weights::idea::{IdeaCheckpoint, load_grounding_dino_pth};
use glint_nn::weights::{Mismatch, WeightsError, load_safetensors};
use safetensors::{Dtype, SafeTensors};

const TEXT_PREFIX: &str = "model.text_backbone.";

/// transformers 5 saves the unused final norm of `SwinModel`; IDEA's Swin has none.
const HF_ONLY: [&str; 2] = [
    "model.backbone.conv_encoder.model.swin.layernorm.bias",
    "model.backbone.conv_encoder.model.swin.layernorm.weight",
];

fn fixture(name: &str) -> PathBuf {
    common::fixtures("grounding_dino").join(name)
}

fn pth() -> PathBuf {
    fixture("tiny_idea.pth")
}

fn safetensors_path() -> PathBuf {
    fixture("tiny/model.safetensors")
}

/// The raw IDEA-named tensors of `tiny_idea.pth`.
fn raw_idea_tensors() -> Vec<PackTensor> {
    let mut store = PytorchStore::from_file(pth()).map_indices_contiguous(false).with_top_level_key("model");
    store.get_all_tensors().unwrap().values().cloned().collect()
}

fn bytes(t: &PackTensor) -> Vec<u8> {
    t.to_bytes().unwrap_or_else(|e| panic!("{}: {e}", t.name)).to_vec()
}

fn f32_tensor(name: &str, shape: Vec<usize>, values: &[f32]) -> PackTensor {
    let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    PackTensor::new(name.to_string(), DType::F32, shape, None, Bytes::from_bytes_vec(data))
}

/// A float16 or float32 tensor's values as f32.
fn floats(tensor: &PackTensor) -> Vec<f32> {
    let data = bytes(tensor);
    match tensor.dtype {
        DType::F16 => data
            .chunks_exact(2)
            .map(|b| {
                let bits = u16::from_le_bytes([b[0], b[1]]);
                let sign = if bits & 0x8000 != 0 { -1.0f32 } else { 1.0 };
                let (exponent, mantissa) = (i32::from((bits >> 10) & 0x1f), f32::from(bits & 0x3ff));
                match exponent {
                    0 => sign * mantissa * 2f32.powi(-24),
                    _ => sign * (1.0 + mantissa / 1024.0) * 2f32.powi(exponent - 15),
                }
            })
            .collect(),
        _ => data.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(),
    }
}

/// `tensors` with `name` replaced (or added, when absent) by `tensor`.
fn with(mut tensors: Vec<PackTensor>, tensor: PackTensor) -> Vec<PackTensor> {
    tensors.retain(|t| t.name != tensor.name);
    tensors.push(tensor);
    tensors
}

fn without(mut tensors: Vec<PackTensor>, name: &str) -> Vec<PackTensor> {
    let before = tensors.len();
    tensors.retain(|t| t.name != name);
    assert_eq!(tensors.len() + 1, before, "{name} not in the fixture");
    tensors
}

fn find<'a>(tensors: &'a [PackTensor], name: &str) -> &'a PackTensor {
    tensors.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("no tensor {name}"))
}

fn convert(tensors: Vec<PackTensor>) -> Result<IdeaCheckpoint, WeightsError> {
    IdeaCheckpoint::from_tensors(pth(), tensors)
}

fn mismatch(result: Result<IdeaCheckpoint, WeightsError>) -> Mismatch {
    match result {
        Err(WeightsError::Mismatch(m)) => *m,
        Err(other) => panic!("expected a mismatch, got: {other}"),
        Ok(_) => panic!("expected a mismatch, the conversion succeeded"),
    }
}

fn tiny_config() -> serde_json::Value {
    let text = std::fs::read_to_string(fixture("tiny/config.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Every parameter of a module (Burn names), as raw bytes.
fn params<M: Module>(module: &M) -> BTreeMap<String, Vec<u8>> {
    module.collect(None, None, false).iter().map(|t| (t.name.clone(), bytes(t))).collect()
}

#[test]
fn tiny_checkpoint_converts_to_exactly_the_transformers_tensors() {
    let checkpoint = IdeaCheckpoint::read(pth()).unwrap_or_else(|e| panic!("{e}"));
    let file = std::fs::read(safetensors_path()).unwrap();
    let reference = SafeTensors::deserialize(&file).unwrap();

    let mut expected: Vec<String> = reference.names().into_iter().map(String::from).collect();
    expected.retain(|n| !HF_ONLY.contains(&n.as_str()));
    expected.sort();
    let got: Vec<String> = checkpoint.tensors().iter().map(|t| t.name.clone()).collect();
    assert_eq!(got, expected);
    for name in HF_ONLY {
        assert!(reference.names().contains(&name), "{name} is no longer in the reference");
    }

    for tensor in checkpoint.tensors() {
        let view = reference.tensor(&tensor.name).unwrap();
        // The fixture's weights are float16 (as the .pth it was converted from).
        assert_eq!(view.dtype(), Dtype::F16, "{}", tensor.name);
        assert_eq!(tensor.dtype, DType::F16, "{}", tensor.name);
        assert_eq!(tensor.shape.to_vec(), view.shape(), "{}", tensor.name);
        assert_eq!(tensor.byte_len(), view.data().len(), "{}", tensor.name);
        assert!(bytes(tensor) == view.data(), "{}: values differ", tensor.name);
    }

    // Where each tensor came from, for error messages.
    let block = "model.backbone.conv_encoder.model.encoder.layers.2.blocks.1.attention.self";
    assert_eq!(
        checkpoint.source(&format!("{block}.key.weight")),
        Some("module.backbone.0.layers.2.blocks.1.attn.qkv.weight (key part)")
    );
    assert_eq!(
        checkpoint.source("model.backbone.conv_encoder.model.hidden_states_norms.stage2.weight"),
        Some("module.backbone.0.norm1.weight")
    );
    assert_eq!(
        checkpoint.source("model.decoder.layers.1.encoder_attn_text.value.bias"),
        Some("module.transformer.decoder.layers.1.ca_text.in_proj_bias (value part)")
    );
}

/// Tensors named and shaped as in a manifest, whose bytes (all zeros) are only made if read.
fn manifest_tensors(name: &str) -> Vec<PackTensor> {
    let text = std::fs::read_to_string(fixture(name)).unwrap();
    text.lines()
        .map(|line| {
            let mut fields = line.split(' ');
            let (key, shape, dtype) =
                (fields.next().unwrap(), fields.next().unwrap(), fields.next().unwrap());
            let shape: Vec<usize> = serde_json::from_str(shape).unwrap();
            let (dtype, size) = match dtype {
                "float32" => (DType::F32, 4),
                "int64" => (DType::I64, 8),
                other => panic!("{line}: dtype {other}"),
            };
            let len = shape.iter().product::<usize>() * size;
            PackTensor::deferred(format!("module.{key}"), dtype, shape, None, len, move || {
                Ok(Bytes::from_bytes_vec(vec![0; len]))
            })
        })
        .collect()
}

fn manifest_shapes(name: &str) -> BTreeMap<String, Vec<usize>> {
    manifest_tensors(name)
        .into_iter()
        .map(|t| (t.name["module.".len()..].to_string(), t.shape.to_vec()))
        .collect()
}

#[test]
fn published_checkpoint_layouts_convert_to_the_hub_layouts() {
    for (idea, hf, tensors) in [
        ("idea_swint_ogc_keys.txt", "hf_swint_ogc_keys.txt", 940),
        ("idea_swinb_cogcoor_keys.txt", "hf_swinb_cogcoor_keys.txt", 1108),
    ] {
        let input = manifest_tensors(idea);
        assert_eq!(input.len(), tensors, "{idea}");
        let checkpoint =
            IdeaCheckpoint::from_tensors(fixture(idea), input).unwrap_or_else(|e| panic!("{idea}: {e}"));
        let got: BTreeMap<String, Vec<usize>> =
            checkpoint.tensors().iter().map(|t| (t.name.clone(), t.shape.to_vec())).collect();
        let mut expected = manifest_shapes(hf);
        for name in HF_ONLY {
            assert!(expected.remove(name).is_some(), "{hf}: {name}");
        }
        assert_eq!(got, expected, "{idea} -> {hf}");
    }
}

#[test]
fn swin_and_bert_load_from_the_pth_as_from_safetensors() {
    let device = Device::flex();
    let config = tiny_config();
    let swin: SwinConfig = serde_json::from_value(config["backbone_config"].clone()).unwrap();
    let bert = BertConfig::from_json_str(&config["text_config"].to_string()).unwrap();
    let checkpoint = IdeaCheckpoint::read(pth()).unwrap();

    let swin_options = swin_load_options(GROUNDING_DINO_SWIN_PREFIX);
    let fresh = swin.init(&device).unwrap();
    let from_pth =
        checkpoint.apply(swin.init(&device).unwrap(), &swin_options).unwrap_or_else(|e| panic!("{e}"));
    let from_st = load_safetensors(swin.init(&device).unwrap(), safetensors_path(), &swin_options).unwrap();
    assert_eq!(params(&from_pth), params(&from_st));
    // The split tensors did arrive: a query weight differs from a freshly initialised one.
    let (fresh, loaded) = (params(&fresh), params(&from_pth));
    let name = loaded.keys().find(|k| k.ends_with("query.weight")).expect("a Swin query weight");
    assert_ne!(fresh[name], loaded[name], "{name}: loading changed nothing");

    let text_options = hf_load_options(TEXT_PREFIX);
    let from_pth =
        load_grounding_dino_pth(bert.init(&device), pth(), &text_options).unwrap_or_else(|e| panic!("{e}"));
    let from_st = load_safetensors(bert.init(&device), safetensors_path(), &text_options).unwrap();
    assert_eq!(params(&from_pth), params(&from_st));
}

#[test]
fn unknown_and_missing_idea_keys_are_named_in_one_error() {
    let extra = f32_tensor("module.transformer.encoder.layers.0.extra.weight", vec![2], &[1.0, 2.0]);
    let stray = f32_tensor("module.backbone.0.head.weight", vec![1], &[0.0]);
    let tensors = without(raw_idea_tensors(), "module.backbone.0.layers.2.blocks.1.attn.qkv.bias");
    let tensors = without(tensors, "module.transformer.encoder.fusion_layers.1.gamma_l");
    let report = mismatch(convert(with(with(tensors, extra), stray)));
    assert_eq!(
        report.unexpected,
        ["module.transformer.encoder.layers.0.extra.weight", "module.backbone.0.head.weight"]
    );
    assert_eq!(
        report.missing,
        [
            "module.backbone.0.layers.2.blocks.1.attn.qkv.bias",
            "module.transformer.encoder.fusion_layers.1.gamma_l"
        ]
    );
    let message = WeightsError::Mismatch(Box::new(report)).to_string();
    assert!(message.contains("tiny_idea.pth"), "{message}");
    assert!(message.contains("module.transformer.encoder.layers.0.extra.weight"), "{message}");

    // An index with a leading zero is no IDEA name.
    let odd = f32_tensor("module.input_proj.01.0.bias", vec![1], &[0.0]);
    assert_eq!(mismatch(convert(with(raw_idea_tensors(), odd))).unexpected, ["module.input_proj.01.0.bias"]);
}

#[test]
fn dropped_tensors_are_optional_and_only_those() {
    // The buffers and training-only tensors may be absent ...
    let mut tensors = raw_idea_tensors();
    tensors.retain(|t| {
        !(t.name.ends_with("relative_position_index")
            || t.name.starts_with("module.bert.pooler.")
            || t.name == "module.bert.embeddings.position_ids"
            || t.name == "module.label_enc.weight")
    });
    let pruned = convert(tensors).unwrap_or_else(|e| panic!("{e}"));
    let full = IdeaCheckpoint::read(pth()).unwrap();
    let names = |c: &IdeaCheckpoint| c.tensors().iter().map(|t| t.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&pruned), names(&full));
    // ... and a state dict without `module.` converts the same.
    let mut bare = raw_idea_tensors();
    for t in &mut bare {
        t.name = t.name["module.".len()..].to_string();
    }
    assert_eq!(names(&convert(bare).unwrap()), names(&full));
    // A key present both with and without the prefix is ambiguous.
    let twin = find(&raw_idea_tensors(), "module.feat_map.bias").clone();
    let mut renamed = twin.clone();
    renamed.name = "feat_map.bias".to_string();
    let report = mismatch(convert(with(raw_idea_tensors(), renamed)));
    assert_eq!(
        report.duplicates,
        [(
            "feat_map.bias".to_string(),
            vec!["module.feat_map.bias".to_string(), "feat_map.bias".to_string()]
        )]
    );
}

#[test]
fn mis_shaped_tensors_are_named() {
    // A fused tensor that cannot be split: reported by the conversion.
    let key = "module.backbone.0.layers.0.blocks.0.attn.qkv.weight";
    let bad = f32_tensor(key, vec![49, 16], &[0.5; 49 * 16]);
    let report = mismatch(convert(with(raw_idea_tensors(), bad)));
    assert_eq!(report.other.len(), 1, "{:?}", report.other);
    assert!(report.other[0].starts_with(key) && report.other[0].contains("[49, 16]"), "{}", report.other[0]);

    // Splittable but the wrong size for the model: reported when applied, under the IDEA key.
    let device = Device::flex();
    let swin: SwinConfig = serde_json::from_value(tiny_config()["backbone_config"].clone()).unwrap();
    let small = f32_tensor(key, vec![24, 8], &[0.5; 24 * 8]);
    let checkpoint = convert(with(raw_idea_tensors(), small)).unwrap();
    let error = checkpoint
        .apply(swin.init(&device).unwrap(), &swin_load_options(GROUNDING_DINO_SWIN_PREFIX))
        .unwrap_err();
    let report = error.mismatch().expect("a mismatch");
    let mut keys: Vec<&str> = report.mis_shaped.iter().map(|m| m.key.as_str()).collect();
    keys.sort();
    assert_eq!(
        keys,
        [format!("{key} (key part)"), format!("{key} (query part)"), format!("{key} (value part)")]
    );
    for m in &report.mis_shaped {
        assert_eq!((m.expected.clone(), m.found.clone()), (vec![16, 16], vec![8, 8]), "{}", m.key);
    }
    let message = error.to_string();
    assert!(message.contains("attn.qkv.weight (query part) (as encoder.layers.0.blocks.0"), "{message}");

    // A plain tensor of the wrong shape, and one the module does not have (under its prefix).
    let device = Device::flex();
    let bert = BertConfig::from_json_str(&tiny_config()["text_config"].to_string()).unwrap();
    let dense = f32_tensor("module.bert.encoder.layer.1.output.dense.weight", vec![16, 16], &[0.0; 256]);
    let checkpoint = convert(with(raw_idea_tensors(), dense)).unwrap();
    let error = checkpoint.apply(bert.init(&device), &hf_load_options(TEXT_PREFIX)).unwrap_err();
    let report = error.mismatch().expect("a mismatch");
    assert_eq!(report.mis_shaped.len(), 1);
    assert_eq!(report.mis_shaped[0].key, "module.bert.encoder.layer.1.output.dense.weight");
    assert_eq!(
        (report.mis_shaped[0].expected.clone(), report.mis_shaped[0].found.clone()),
        (vec![16, 32], vec![16, 16])
    );
}

#[test]
fn box_head_copies_are_dropped_only_when_identical() {
    let head = |n: usize, member: &str| format!("module.bbox_embed.{n}.layers.{member}");
    let alias = |n: usize, member: &str| format!("module.transformer.decoder.bbox_embed.{n}.layers.{member}");
    let members = ["0.weight", "0.bias", "1.weight", "1.bias", "2.weight", "2.bias"];
    let raw = raw_idea_tensors();

    // A decoder alias that differs from the tensor IDEA stores under both names.
    let original = find(&raw, &alias(1, "0.bias"));
    let mut changed = floats(original);
    changed[0] += 1.0;
    let report = mismatch(convert(with(raw.clone(), f32_tensor(&alias(1, "0.bias"), vec![32], &changed))));
    assert_eq!(report.other.len(), 1, "{:?}", report.other);
    assert!(report.other[0].starts_with(&alias(1, "0.bias")) && report.other[0].contains(&head(1, "0.bias")));

    // A second head that differs everywhere (dec_pred_bbox_embed_share = False) is kept.
    let mut unshared = raw.clone();
    for member in members {
        let t = find(&raw, &head(1, member));
        let values: Vec<f32> = floats(t).iter().map(|v| v * 2.0 + 0.25).collect();
        let shape = t.shape.to_vec();
        unshared = with(unshared, f32_tensor(&head(1, member), shape.clone(), &values));
        unshared = with(unshared, f32_tensor(&alias(1, member), shape, &values));
    }
    let checkpoint = convert(unshared).unwrap_or_else(|e| panic!("{e}"));
    let kept: Vec<&str> = checkpoint
        .tensors()
        .iter()
        .map(|t| t.name.as_str())
        .filter(|n| n.starts_with("bbox_embed."))
        .collect();
    let expected: Vec<String> =
        [0, 1].iter().flat_map(|n| members.map(|m| format!("bbox_embed.{n}.layers.{m}"))).collect::<Vec<_>>();
    let mut expected = expected;
    expected.sort();
    assert_eq!(kept, expected);
    assert_eq!(checkpoint.source("bbox_embed.1.layers.2.bias"), Some("module.bbox_embed.1.layers.2.bias"));

    // An alias without its twin names the twin.
    let report = mismatch(convert(without(raw, &head(1, "2.bias"))));
    assert!(report.missing.contains(&head(1, "2.bias")), "{:?}", report.missing);
}

#[test]
fn other_files_give_one_clear_error() {
    // An IDEA-style `{"model": ...}` checkpoint of something else (a BERT).
    let bert_pth = common::fixtures("bert").join("weights.pth");
    let error = IdeaCheckpoint::read(&bert_pth).unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, WeightsError::Read { .. }), "{message}");
    assert!(
        message.contains("weights.pth") && message.contains("not an IDEA-Research Grounding DINO checkpoint"),
        "{message}"
    );
    assert!(message.contains("`module.bert."), "{message}");

    // Not a PyTorch file at all.
    let error = IdeaCheckpoint::read(safetensors_path()).unwrap_err();
    assert!(matches!(error, WeightsError::Read { .. }), "{error}");
    assert!(error.to_string().contains("model.safetensors"), "{error}");

    // No file; no tensors.
    let error = IdeaCheckpoint::read(fixture("absent.pth")).unwrap_err();
    assert!(
        error.to_string().contains("absent.pth") && error.to_string().contains("no such file"),
        "{error}"
    );
    let error = IdeaCheckpoint::from_tensors("empty.pth", Vec::new()).unwrap_err();
    assert!(error.to_string().contains("holds no tensors"), "{error}");
}
