//! BERT text encoder against transformers' `BertModel` (fixtures from tests/fixtures/make_bert.py).
//!
//! Tolerance: |glint − transformers| ≤ 1e-4 + 1e-4·|transformers| per element. Both sides run in
//! f32 on the same weights; they differ only in summation order (matmul blocking, softmax and
//! LayerNorm reductions), worth ~1e-6 relative per op over 2 layers of O(1) LayerNorm outputs,
//! while a misplaced weight, mask or position id moves outputs by O(0.1) (the fixture perturbs
//! every LayerNorm and bias so nothing is left at an identity value).

mod common;

use std::path::{Path, PathBuf};

use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use common::Io;
use glint_core::prompt::{BERT_DELIMITER_IDS, TextMask, sub_sentence_mask};
use glint_nn::text::{Bert, BertAttentionMask, BertConfig, BertInput, hf_load_options};
use glint_nn::weights::load_safetensors;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

const ATOL: f32 = 1e-4;
const RTOL: f32 = 1e-4;

fn fixture(name: &str) -> PathBuf {
    common::fixtures("bert").join(name)
}

fn io() -> Io {
    Io::open(&fixture("io.safetensors"))
}

fn model(device: &Device) -> (BertConfig, Bert) {
    let config = BertConfig::from_json_file(fixture("config.json")).unwrap();
    // weights.safetensors is a plain BertModel state dict, pooler included (ignored by name).
    let bert = config.init(device).load_safetensors(fixture("weights.safetensors"), "").unwrap();
    (config, bert)
}

/// Compare with the fixture tensor `expected` (the tolerance is stated above).
fn assert_close(actual: Tensor<3>, io: &Io, expected: &str) {
    common::assert_close(expected, actual, &io.f32s(expected), &io.shape(expected), ATOL, RTOL);
}

#[test]
fn config_reads_hugging_face_json() {
    let config = BertConfig::from_json_file(fixture("config.json")).unwrap();
    assert_eq!(
        (
            config.vocab_size,
            config.hidden_size,
            config.num_hidden_layers,
            config.num_attention_heads,
            config.intermediate_size,
            config.max_position_embeddings,
            config.type_vocab_size,
        ),
        (1000, 32, 2, 4, 64, 64, 2)
    );
    assert_eq!(config.layer_norm_eps, 1e-12);
    assert_eq!(config.hidden_act, "gelu");

    // Absent fields take bert-base-uncased's values.
    let base = BertConfig::from_json_str(r#"{"model_type": "bert"}"#).unwrap();
    assert_eq!(base, BertConfig::default());
    assert_eq!((base.hidden_size, base.num_hidden_layers, base.vocab_size), (768, 12, 30522));

    // Invalid values are errors, not panics at init.
    for (json, needle) in [
        (r#"{"hidden_size": 30, "num_attention_heads": 4}"#, "multiple"),
        (r#"{"hidden_act": "mish"}"#, "mish"),
        (r#"{"hidden_dropout_prob": 1.5}"#, "hidden_dropout_prob"),
        (r#"{"position_embedding_type": "relative_key"}"#, "relative_key"),
        (r#"{"hidden_size": "big"}"#, "big"),
    ] {
        let err = BertConfig::from_json_str(json).unwrap_err().to_string();
        assert!(err.contains(needle), "{json}: {err}");
    }
    let err = BertConfig::from_json_file("/nonexistent/config.json").unwrap_err().to_string();
    assert!(err.contains("/nonexistent/config.json"), "{err}");
}

#[test]
fn padded_batch_with_token_types_matches_transformers() {
    let device = Device::flex();
    let (_, bert) = model(&device);
    let io = io();
    let mask: Vec<bool> = io.i64s("pad_attention_mask").iter().map(|&m| m != 0).collect();
    let mask = Tensor::<2, Bool>::from_data(TensorData::new(mask, io.shape("pad_attention_mask")), &device);
    let input = BertInput::new(io.int::<2>("pad_input_ids", &device))
        .with_attention_mask(BertAttentionMask::Padding(mask))
        .with_token_type_ids(io.int::<2>("pad_token_type_ids", &device));
    assert_close(bert.forward(input), &io, "pad_expected");

    // The same mask built from lengths.
    let input = BertInput::new(io.int::<2>("pad_input_ids", &device))
        .with_attention_mask(BertAttentionMask::from_lengths(&[9, 6], 9, &device))
        .with_token_type_ids(io.int::<2>("pad_token_type_ids", &device));
    assert_close(bert.forward(input), &io, "pad_expected");
}

#[test]
fn defaults_match_transformers() {
    let device = Device::flex();
    let (_, bert) = model(&device);
    let io = io();
    let out = bert.forward(BertInput::new(io.int::<2>("plain_input_ids", &device)));
    assert_close(out, &io, "plain_expected");
}

/// glint-core's sub-sentence masks for the fixture's real (bert-base-uncased) ids.
fn text_masks(io: &Io, unpadded: bool) -> Vec<TextMask> {
    let real = io.i64s("sub_real_ids");
    real.chunks(io.shape("sub_real_ids")[1])
        .map(|row| {
            let ids: Vec<u32> = row.iter().map(|&id| id as u32).filter(|&id| !unpadded || id != 0).collect();
            sub_sentence_mask(&ids, &BERT_DELIMITER_IDS)
        })
        .collect()
}

#[test]
fn grounding_dino_sub_sentence_mask_and_positions_match_transformers() {
    let device = Device::flex();
    let (_, bert) = model(&device);
    let io = io();
    let expected_mask = io.i64s("sub_attention_mask");
    let expected_positions = io.i64s("sub_position_ids");

    // Masks computed on the padded ids (as transformers does), and on the unpadded captions with
    // the padding added by `from_text_masks`: both give transformers' mask and position ids.
    for unpadded in [false, true] {
        let masks = text_masks(&io, unpadded);
        let (mask, positions) = BertAttentionMask::from_text_masks(&masks, &device);
        let BertAttentionMask::Full(full) = &mask else { panic!("expected a full mask") };
        let got: Vec<i64> = full.clone().int().into_data().convert::<i64>().try_to_vec().unwrap();
        assert_eq!(got, expected_mask, "mask (unpadded: {unpadded})");
        let got: Vec<i64> = positions.clone().into_data().convert::<i64>().try_to_vec().unwrap();
        assert_eq!(got, expected_positions, "positions (unpadded: {unpadded})");

        let input = BertInput::new(io.int::<2>("sub_input_ids", &device))
            .with_attention_mask(mask)
            .with_token_type_ids(Tensor::<2, Int>::zeros(positions.dims(), &device))
            .with_position_ids(positions);
        assert_close(bert.forward(input), &io, "sub_expected");
    }

    // Without the mask and position ids the phrases see each other: the output must differ.
    let out = bert.forward(BertInput::new(io.int::<2>("sub_input_ids", &device)));
    let expected = io.f32s("sub_expected");
    let out: Vec<f32> = out.into_data().convert::<f32>().try_to_vec().unwrap();
    let diff = out.iter().zip(&expected).map(|(a, e)| (a - e).abs()).fold(0.0, f32::max);
    assert!(diff > 1e-2, "the sub-sentence mask had no effect ({diff})");
}

/// Copy of weights.safetensors re-keyed as in a Grounding DINO checkpoint: the encoder under
/// `model.text_backbone.` (no pooler), beside other stages' tensors.
fn grounding_dino_style_checkpoint(dir: &Path, drop: Option<&str>) -> PathBuf {
    let bytes = std::fs::read(fixture("weights.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut views: Vec<(String, TensorView<'_>)> = st
        .tensors()
        .into_iter()
        .filter(|(name, _)| !name.starts_with("pooler.") && Some(name.as_str()) != drop)
        .map(|(name, view)| (format!("model.text_backbone.{name}"), view))
        .collect();
    let other = vec![0u8; 4 * 6];
    views.push((
        "model.backbone.conv_encoder.model.embeddings.patch_embeddings.projection.bias".into(),
        TensorView::new(Dtype::F32, vec![6], &other).unwrap(),
    ));
    views.push((
        "model.text_projection.weight".into(),
        TensorView::new(Dtype::F32, vec![3, 2], &other).unwrap(),
    ));
    let path = dir.join("model.safetensors");
    safetensors::serialize_to_file(views, None, &path).unwrap();
    path
}

#[test]
fn loads_from_a_grounding_dino_checkpoint_by_prefix() {
    let device = Device::flex();
    let io = io();
    let config = BertConfig::from_json_file(fixture("config.json")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = grounding_dino_style_checkpoint(dir.path(), None);
    let bert = config.init(&device).load_safetensors(&path, "model.text_backbone.").unwrap();
    assert_close(
        bert.forward(BertInput::new(io.int::<2>("plain_input_ids", &device))),
        &io,
        "plain_expected",
    );

    // A checkpoint lacking one encoder tensor is refused, naming it.
    let dir = tempfile::tempdir().unwrap();
    let key = "encoder.layer.1.attention.self.value.bias";
    let path = grounding_dino_style_checkpoint(dir.path(), Some(key));
    let err = config.init(&device).load_safetensors(&path, "model.text_backbone.").unwrap_err();
    let report = err.mismatch().expect("a mismatch report");
    assert_eq!(report.missing, vec!["encoder.layer.1.attention.self_attention.value.bias"]);
    assert!(report.unexpected.is_empty() && report.mis_shaped.is_empty(), "{err}");
    assert!(err.to_string().contains("model.safetensors"), "{err}");
}

#[test]
fn wrong_config_or_plain_loading_is_refused_with_names() {
    let device = Device::flex();
    let config = BertConfig::from_json_file(fixture("config.json")).unwrap();
    let weights = fixture("weights.safetensors");

    // One layer more than the checkpoint: every tensor of layer 2 is missing.
    let deeper = BertConfig { num_hidden_layers: 3, ..config.clone() };
    let err = deeper.init(&device).load_safetensors(&weights, "").unwrap_err();
    let report = err.mismatch().unwrap();
    assert_eq!(report.missing.len(), 16, "{err}");
    assert!(report.missing.iter().all(|m| m.starts_with("encoder.layer.2.")), "{err}");
    assert!(report.missing.contains(&"encoder.layer.2.output.layer_norm.weight".to_string()));

    // A different vocabulary / width: mis-shaped, in the checkpoint's layout.
    let wider = BertConfig { vocab_size: 999, intermediate_size: 48, ..config.clone() };
    let err = wider.init(&device).load_safetensors(&weights, "").unwrap_err();
    let report = err.mismatch().unwrap();
    let find = |key: &str| {
        report.mis_shaped.iter().find(|m| m.key == key).map(|m| (m.expected.clone(), m.found.clone()))
    };
    assert_eq!(find("embeddings.word_embeddings.weight"), Some((vec![999, 32], vec![1000, 32])));
    assert_eq!(find("encoder.layer.0.intermediate.dense.weight"), Some((vec![48, 32], vec![64, 32])));
    assert_eq!(find("encoder.layer.1.output.dense.weight"), Some((vec![32, 48], vec![32, 64])));
    assert_eq!(report.mis_shaped.len(), 7, "{err}");

    // The raw loader without BERT's table: the pooler is unexpected, renamed modules missing.
    let err = load_safetensors(config.init(&device), &weights, &Default::default()).unwrap_err();
    let report = err.mismatch().unwrap();
    assert!(report.unexpected.contains(&"pooler.dense.weight".to_string()), "{err}");
    assert!(report.unexpected.contains(&"embeddings.LayerNorm.weight".to_string()), "{err}");
    assert!(report.missing.contains(&"embeddings.layer_norm.weight".to_string()), "{err}");

    // hf_load_options is what Bert::load_safetensors uses.
    load_safetensors(config.init(&device), &weights, &hf_load_options("")).unwrap();
}
