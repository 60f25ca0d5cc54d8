//! Official GLIP checkpoints (microsoft/GLIP's `.pth`, maskrcnn-benchmark's module tree):
//!
//! - the key lists of the official GLIP-T and GLIP-L, built from the official code's module tree
//!   (`tests/fixtures/glip_official/glip_{t,l}_keys.tsv`), convert to exactly the parameters of
//!   [`GlipConfig::glip_t`] / [`GlipConfig::glip_l`], each with its shape;
//! - a tiny GLIP built and run by the official code (`tests/fixtures/glip_official/make_tiny.py`:
//!   GLIP-T's config shrunk, random weights, saved as the official trainer saves) loads, and gives
//!   the official outputs stage by stage and the official detections.
//!
//! Tolerances: backbone, FPN and text features within 1e-4 absolute + 1e-4 relative (f32 on both
//! sides, O(1) values; the script's float64 rerun is within ~2e-6 of its f32 output); the
//! logits, box regressions and centerness after two fused tower layers within 1e-3 + 1e-3·|x|
//! (summation orders over ~750 positions in the fusion's softmaxes); decoded boxes within
//! 1e-2 px; detections: the same phrases in the same order with scores within 1e-4 and boxes
//! within 1e-2 px (the fixture's decisions — thresholds, NMS overlaps — all have margins above
//! 3e-3, checked by the script).

mod common;

use burn::store::burn_pack::Tensor as PackTensor;
use burn::tensor::{Bytes, DType, Device};
use common::{Io, assert_close, fixtures};
use glint_core::prompt::{Prompt, TextTokenizer};
use glint_nn::backbone::SwinConfig;
use glint_nn::detector::glip::{
    Glip, GlipBackboneConfig, GlipConfig, GlipDetectOptions, GlipText, InputFrame,
};
use glint_nn::head::glip::GlipHeadConfig;
use glint_nn::text::BertConfig;
use glint_nn::weights::glip::GlipCheckpoint;
use glint_nn::weights::{LoadOptions, WeightsError};

/// The fixture model's shape (`tiny/config.json`): GLIP-T with every width shrunk.
fn tiny_config() -> GlipConfig {
    let glip_t = GlipConfig::glip_t();
    GlipConfig {
        backbone: GlipBackboneConfig::Swin(SwinConfig {
            embed_dim: 8,
            depths: vec![2, 2, 2, 2],
            num_heads: vec![2, 2, 4, 4],
            ..SwinConfig::swin_tiny()
        }),
        fpn_channels: 32,
        text: BertConfig {
            hidden_size: 16,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            intermediate_size: 64,
            ..BertConfig::default()
        },
        head: GlipHeadConfig { num_layers: 2, fusion_embed_dim: 64, fusion_heads: 8, ..glip_t.head.clone() },
        ..glip_t
    }
}

fn tiny_dir() -> std::path::PathBuf {
    fixtures("glip_official").join("tiny")
}

/// A tensor of `shape` whose bytes are zeros, made only when it is applied.
fn zeros(name: &str, shape: Vec<usize>, dtype: DType) -> PackTensor {
    let len = shape.iter().product::<usize>() * dtype.size();
    PackTensor::deferred(name.to_string(), dtype, shape, None, len, move || {
        Ok(Bytes::from_bytes_vec(vec![0; len]))
    })
}

/// The keys of an official model's manifest (`key \t shape \t dtype`) as the tensors of a
/// checkpoint, all zeros.
fn manifest_checkpoint(manifest: &str, name: &str) -> GlipCheckpoint {
    let manifest = std::fs::read_to_string(fixtures("glip_official").join(manifest)).unwrap();
    let tensors: Vec<PackTensor> = manifest
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            let shape = match fields[1] {
                "scalar" => vec![],
                dims => dims.split('x').map(|d| d.parse().unwrap()).collect(),
            };
            let dtype = match fields[2] {
                "float32" => DType::F32,
                "int64" => DType::I64,
                other => panic!("{other}"),
            };
            // The official trainer saves from DistributedDataParallel: every key has `module.`.
            zeros(&format!("module.{}", fields[0]), shape, dtype)
        })
        .collect();
    GlipCheckpoint::from_tensors(name, tensors).unwrap()
}

#[test]
fn every_key_of_the_official_glip_t_fills_exactly_one_parameter_of_the_right_shape() {
    let checkpoint = manifest_checkpoint("glip_t_keys.tsv", "glip_tiny_model_o365_goldg.pth");
    // 746 keys less 18 buffers and cls_logits' two; 5 scales stacked in one; 24 fused qkv
    // tensors (12 Swin blocks' weights and biases) split in three.
    assert_eq!(checkpoint.tensors().len(), 746 - 18 - 2 - 5 + 1 + 24 * 2);
    assert_eq!(checkpoint.official_config(), GlipConfig::glip_t());
    let model = GlipConfig::glip_t().init(&Device::flex()).unwrap();
    if let Err(e) = checkpoint.apply(model, &LoadOptions::new()) {
        panic!("{e}");
    }
}

#[test]
fn every_key_of_the_official_glip_l_fills_exactly_one_parameter_of_the_right_shape() {
    let checkpoint = manifest_checkpoint("glip_l_keys.tsv", "glip_large_model.pth");
    // 1022 keys less 30 buffers (24 Swin blocks' position indices, 5 anchor sets, BERT's
    // position ids) and cls_logits' two; 5 scales stacked in one; 48 fused qkv tensors split
    // in three.
    assert_eq!(checkpoint.tensors().len(), 1022 - 30 - 2 - 5 + 1 + 48 * 2);
    assert_eq!(checkpoint.official_config(), GlipConfig::glip_l(), "told from GLIP-T by its keys");
    let model = GlipConfig::glip_l().init(&Device::flex()).unwrap();
    if let Err(e) = checkpoint.apply(model, &LoadOptions::new()) {
        panic!("{e}");
    }
}

#[test]
fn the_fixture_s_glint_config_is_the_tiny_config() {
    // `glint_config.json` is what the `Detector` test puts beside the `.pth` as its config.
    let path = tiny_dir().join("glint_config.json");
    assert_eq!(GlipConfig::from_json_file(&path).unwrap(), tiny_config());
}

#[test]
fn an_unknown_key_is_named_with_its_file() {
    let tensors = vec![
        zeros("module.rpn.head.dyhead_tower.0.b_attn.gamma_v", vec![32], DType::F32),
        zeros("module.rpn.head.mystery.weight", vec![4], DType::F32),
    ];
    let error = GlipCheckpoint::from_tensors("glip.pth", tensors).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("glip.pth") && message.contains("module.rpn.head.mystery.weight"), "{message}");
    let not_glip =
        GlipCheckpoint::from_tensors("dino.pth", vec![zeros("bert.pooler.weight", vec![4], DType::F32)]);
    assert!(matches!(not_glip, Err(WeightsError::Read { .. })), "{not_glip:?}");
}

#[test]
fn a_tiny_official_glip_gives_the_official_outputs_and_detections() {
    let device = Device::flex();
    let model = tiny_config().init(&device).unwrap();
    let model: Glip = model.load_official(tiny_dir().join("model.pth")).unwrap_or_else(|e| panic!("{e}"));
    let io = Io::open(&tiny_dir().join("io.safetensors"));

    let pixels = io.float::<4>("pixels", &device);
    let maps = model.backbone.forward(pixels.clone()).unwrap();
    for (i, map) in maps.iter().enumerate() {
        let name = format!("backbone.{i}");
        assert_close(&name, map.clone(), &io.f32s(&name), &io.shape(&name), 1e-4, 1e-4);
    }
    let levels = model.fpn.forward(maps);
    for (i, level) in levels.iter().enumerate() {
        let name = format!("fpn.{i}");
        assert_close(&name, level.clone(), &io.f32s(&name), &io.shape(&name), 1e-4, 1e-4);
    }

    // The official code pads every prompt to 256 tokens; the padding is masked.
    let ids: Vec<u32> = io.i64s("input_ids").iter().map(|&id| id as u32).collect();
    let real = io.i64s("attention_mask").iter().filter(|&&m| m == 1).count();
    assert_eq!(real, 10);
    let text = GlipText::new(&[&ids[..real]], &device);
    let features = model.encode_text(&text);
    let hidden = io.f32s("text.hidden");
    let width = tiny_config().text.hidden_size;
    assert_close("text.hidden", features.clone(), &hidden[..real * width], &[1, real, width], 1e-4, 1e-4);

    let output = model.head.forward(levels, features, text.padding.clone()).unwrap();
    let logits = io.f32s("logits");
    let n = output.logits.dims()[1];
    let real_logits: Vec<f32> = (0..n).flat_map(|a| logits[a * 256..a * 256 + real].to_vec()).collect();
    assert_close("logits", output.logits.clone(), &real_logits, &[1, n, real], 1e-3, 1e-3);
    assert_close(
        "bbox_reg",
        output.box_deltas.clone(),
        &io.f32s("bbox_reg"),
        &io.shape("bbox_reg"),
        1e-3,
        1e-3,
    );
    assert_close(
        "centerness",
        output.centerness.clone(),
        &io.f32s("centerness"),
        &io.shape("centerness"),
        1e-3,
        1e-3,
    );

    let anchors: Vec<f32> = model.anchors(&output.level_sizes).iter().flat_map(|b| b.to_array()).collect();
    let expected = io.f32s("anchors");
    assert_eq!(anchors.len(), expected.len());
    assert!(anchors.iter().zip(&expected).all(|(a, e)| (a - e).abs() < 1e-4), "anchors differ");
    assert_close(
        "boxes",
        model.decode_boxes(&output).reshape([n, 4]),
        &io.f32s("boxes"),
        &[n, 4],
        1e-2,
        1e-5,
    );

    let tokenizer = TextTokenizer::from_file(fixtures("tokenizer").join("tokenizer.json")).unwrap();
    let prompt = Prompt::new(["cat", "remote control", "traffic light"]).unwrap();
    let encoded = tokenizer.encode_prompt(&prompt).unwrap();
    assert_eq!(encoded.tokens.ids(), &ids[..real]);
    let phrases: Vec<String> = prompt.phrases().to_vec();
    let frame = InputFrame { original: [224.0, 160.0], scale: [1.0, 1.0] };
    let found = model
        .detections(&output, &[frame], &encoded.positive_map, &phrases, &GlipDetectOptions::default())
        .remove(0);
    let boxes = io.f32s("det.boxes");
    let scores = io.f32s("det.scores");
    let labels = io.i64s("det.labels");
    assert_eq!(found.len(), scores.len(), "{found:?}");
    let mut by_score = found.clone();
    by_score.sort_by(|a, b| b.score.total_cmp(&a.score));
    for (k, d) in by_score.iter().enumerate() {
        assert_eq!(d.phrase_index as i64 + 1, labels[k], "detection {k}: {d:?}");
        assert!((d.score - scores[k]).abs() < 1e-4, "detection {k}: score {} against {}", d.score, scores[k]);
        let expected = &boxes[k * 4..k * 4 + 4];
        let diff = d.bbox.to_array().iter().zip(expected).map(|(a, e)| (a - e).abs()).fold(0.0f32, f32::max);
        assert!(diff < 1e-2, "detection {k}: box {:?} against {expected:?}", d.bbox);
    }
}
