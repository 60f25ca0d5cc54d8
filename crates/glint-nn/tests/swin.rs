//! Swin backbone parity with transformers' `SwinBackbone` (fixtures: tests/fixtures/make_swin.py).
//!
//! Tolerance: every feature map element within 1e-4 absolute + 1e-4 relative of transformers'
//! float32 output. Both sides compute in f32; the outputs are LayerNorm-ed (|x| <= ~5), and the
//! only differences are summation order in the convolution, matmuls, softmax and norms (a few
//! ulps per op, ~1e-6 after a dozen layers). A wrong index, shift, mask, padding or merge order
//! moves values by O(0.1-1), far outside the tolerance.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor};
use common::{Io, assert_close};
use glint_nn::backbone::swin::{
    GROUNDING_DINO_SWIN_PREFIX, SwinBackbone, SwinConfig, SwinError, swin_load_options,
};
use glint_nn::weights::{WeightsError, load_safetensors};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

const ATOL: f32 = 1e-4;
const RTOL: f32 = 1e-4;

fn fixtures() -> PathBuf {
    common::fixtures("swin")
}

fn gd_config() -> SwinConfig {
    let text = std::fs::read_to_string(fixtures().join("gd_config.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    serde_json::from_value(json["backbone_config"].clone()).unwrap()
}

fn config_b() -> SwinConfig {
    let text = std::fs::read_to_string(fixtures().join("config_b.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn model_a(device: &Device) -> SwinBackbone {
    let model = gd_config().init(device).unwrap();
    load_safetensors(
        model,
        fixtures().join("weights.safetensors"),
        &swin_load_options(GROUNDING_DINO_SWIN_PREFIX),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn model_b(device: &Device) -> SwinBackbone {
    let model = config_b().init(device).unwrap();
    load_safetensors(model, fixtures().join("weights_b.safetensors"), &swin_load_options(""))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Run `model` on the fixture case's pixel values and compare every feature map.
fn check_case(model: &SwinBackbone, case: &str, expected_maps: usize, device: &Device) {
    let io = Io::open(&fixtures().join("io.safetensors"));
    let maps = model.forward(io.float(&format!("{case}.pixel_values"), device)).unwrap();
    assert_eq!(maps.len(), expected_maps, "{case}: number of feature maps");
    for (i, map) in maps.into_iter().enumerate() {
        let name = format!("{case}.feature_map.{i}");
        assert_close(&name, map, &io.f32s(&name), &io.shape(&name), ATOL, RTOL);
    }
}

#[test]
fn config_reads_grounding_dino_backbone_config() {
    let config = gd_config();
    assert_eq!(config.model_type.as_deref(), Some("swin"));
    assert_eq!(config.embed_dim, 16);
    assert_eq!(config.depths, vec![2, 2]);
    assert_eq!(config.num_heads, vec![2, 4]);
    assert_eq!(config.window_size, 4);
    assert_eq!(config.patch_size, [4, 4]);
    assert_eq!(config.image_size, [32, 32]);
    assert_eq!(config.out_stages().unwrap(), vec![1, 2]);
    assert_eq!(config.out_channels().unwrap(), vec![16, 32]);
    assert_eq!(config.out_strides().unwrap(), vec![[4, 4], [8, 8]]);

    let b = config_b();
    assert_eq!(b.patch_size, [2, 2]);
    assert_eq!(b.mlp_ratio, 2.0);
    assert_eq!(b.layer_norm_eps, 1e-6);
    assert_eq!(b.out_stages().unwrap(), vec![0, 1, 3]);
    assert_eq!(b.out_channels().unwrap(), vec![12, 12, 48]);
    assert_eq!(b.out_strides().unwrap(), vec![[2, 2], [2, 2], [8, 8]]);
}

#[test]
fn grounding_dino_prefixed_checkpoint_matches_transformers() {
    let device = Device::flex();
    let model = model_a(&device);
    assert_eq!(model.out_channels(), vec![16, 32]);
    // 32x32: multiples of patch x window; stage 2 is a single (still shifted) window.
    check_case(&model, "a_square", 2, &device);
    // 45x61: patch padding, window padding at stage 2.
    check_case(&model, "a_pad", 2, &device);
    // 50x38: patch padding, window padding at both stages, odd-sized patch merge.
    check_case(&model, "a_odd", 2, &device);
}

#[test]
fn plain_swin_backbone_checkpoint_matches_transformers() {
    // Window 7, patch 2, three stages of depths [2, 1, 2], the stem among the outputs.
    let device = Device::flex();
    let model = model_b(&device);
    assert_eq!(model.out_stages(), &[0, 1, 3]);
    check_case(&model, "b_odd", 3, &device);
}

/// The fixture's tensors, with `edit` applied, written to a temporary safetensors file.
fn edited_checkpoint(
    dir: &Path,
    edit: impl FnOnce(&mut Vec<(String, Dtype, Vec<usize>, Vec<u8>)>),
) -> PathBuf {
    let bytes = std::fs::read(fixtures().join("weights.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| (name, view.dtype(), view.shape().to_vec(), view.data().to_vec()))
        .collect();
    edit(&mut tensors);
    let views: HashMap<String, TensorView> = tensors
        .iter()
        .map(|(name, dtype, shape, data)| {
            (name.clone(), TensorView::new(*dtype, shape.clone(), data).unwrap())
        })
        .collect();
    let path = dir.join("edited.safetensors");
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
    path
}

fn load_edited(path: &Path) -> WeightsError {
    let model = gd_config().init(&Device::flex()).unwrap();
    match load_safetensors(model, path, &swin_load_options(GROUNDING_DINO_SWIN_PREFIX)) {
        Ok(_) => panic!("loading {} should fail", path.display()),
        Err(e) => e,
    }
}

#[test]
fn checkpoint_skips_are_real() {
    // The fixture holds the tensors the loader must skip on purpose; without the skips they
    // would be reported as unexpected.
    let weights = Io::open(&fixtures().join("weights.safetensors"));
    let index_key =
        "model.backbone.conv_encoder.model.encoder.layers.1.blocks.1.attention.self.relative_position_index";
    assert!(weights.has(index_key));
    assert!(weights.has("model.backbone.conv_encoder.model.swin.layernorm.weight"));

    let model = gd_config().init(&Device::flex()).unwrap();
    let mut options = swin_load_options(GROUNDING_DINO_SWIN_PREFIX);
    options.ignore.clear();
    let err = load_safetensors(model, fixtures().join("weights.safetensors"), &options)
        .expect_err("unexpected tensors without the skips");
    let report = err.mismatch().expect("a mismatch report");
    assert!(report.missing.is_empty(), "{err}");
    assert!(report.unexpected.iter().any(|k| k == index_key), "{err}");
    assert_eq!(report.unexpected.len(), 4 + 2, "4 index buffers + swin.layernorm: {err}");
}

#[test]
fn missing_tensor_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let gone = "model.backbone.conv_encoder.model.encoder.layers.1.blocks.0.attention.self.relative_position_bias_table";
    let path = edited_checkpoint(dir.path(), |t| t.retain(|(name, ..)| name != gone));
    let err = load_edited(&path);
    let report = err.mismatch().expect("a mismatch report");
    assert_eq!(
        report.missing,
        vec!["encoder.layers.1.blocks.0.attention.relative_position_bias_table".to_string()]
    );
    let message = err.to_string();
    assert!(message.contains("edited.safetensors"), "{message}");
    assert!(message.contains("relative_position_bias_table"), "{message}");

    // A missing output norm is named too (stage2 = list entry 2).
    let gone = "model.backbone.conv_encoder.model.hidden_states_norms.stage2.weight";
    let path = edited_checkpoint(dir.path(), |t| t.retain(|(name, ..)| name != gone));
    let err = load_edited(&path);
    assert_eq!(err.mismatch().unwrap().missing, vec!["hidden_states_norms.2.weight".to_string()], "{err}");
}

#[test]
fn unexpected_tensor_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let extra = "model.backbone.conv_encoder.model.encoder.layers.0.blocks.0.attention.self.extra";
    let path = edited_checkpoint(dir.path(), |t| {
        t.push((extra.to_string(), Dtype::F32, vec![2], vec![0u8; 8]));
    });
    let err = load_edited(&path);
    let report = err.mismatch().expect("a mismatch report");
    assert_eq!(report.unexpected, vec![extra.to_string()], "{err}");
    assert!(report.missing.is_empty(), "{err}");
    assert!(err.to_string().contains(extra));
}

#[test]
fn mis_shaped_tensor_is_named() {
    let dir = tempfile::tempdir().unwrap();
    // A bias table for window 3 instead of 4 (25 rows instead of 49).
    let key = "model.backbone.conv_encoder.model.encoder.layers.0.blocks.1.attention.self.relative_position_bias_table";
    let path = edited_checkpoint(dir.path(), |t| {
        let entry = t.iter_mut().find(|(name, ..)| name == key).unwrap();
        entry.2 = vec![25, 2];
        entry.3.truncate(25 * 2 * 4);
    });
    let err = load_edited(&path);
    let report = err.mismatch().expect("a mismatch report");
    assert_eq!(report.mis_shaped.len(), 1, "{err}");
    assert_eq!(report.mis_shaped[0].key, key);
    assert_eq!(report.mis_shaped[0].expected, vec![49, 2]);
    assert_eq!(report.mis_shaped[0].found, vec![25, 2]);
    assert!(err.to_string().contains(key));

    // A Linear weight is reported in the checkpoint's [out, in] layout.
    let key = "model.backbone.conv_encoder.model.encoder.layers.0.downsample.reduction.weight";
    let path = edited_checkpoint(dir.path(), |t| {
        let entry = t.iter_mut().find(|(name, ..)| name == key).unwrap();
        entry.2 = vec![16, 64];
        entry.3.truncate(16 * 64 * 4);
    });
    let err = load_edited(&path);
    let report = err.mismatch().expect("a mismatch report");
    assert_eq!(report.mis_shaped.len(), 1, "{err}");
    assert_eq!(report.mis_shaped[0].key, key);
    assert_eq!(report.mis_shaped[0].expected, vec![32, 64]);
    assert_eq!(report.mis_shaped[0].found, vec![16, 64]);
}

#[test]
fn presets_match_grounding_dino() {
    let tiny = SwinConfig::swin_tiny();
    tiny.validate().unwrap();
    assert_eq!(tiny.out_stages().unwrap(), vec![2, 3, 4]);
    assert_eq!(tiny.out_channels().unwrap(), vec![192, 384, 768]);
    assert_eq!(tiny.out_strides().unwrap(), vec![[8, 8], [16, 16], [32, 32]]);
    assert_eq!((tiny.window_size, tiny.image_size), (7, [224, 224]));

    let base = SwinConfig::swin_base();
    base.validate().unwrap();
    assert_eq!(base.depths, vec![2, 2, 18, 2]);
    assert_eq!(base.num_heads, vec![4, 8, 16, 32]);
    assert_eq!((base.window_size, base.image_size), (12, [384, 384]));
    assert_eq!(base.out_channels().unwrap(), vec![256, 512, 1024]);

    // The hub's grounding-dino-tiny `backbone_config` names only what differs from the
    // SwinConfig defaults: it must read as the Swin-T preset.
    let hub: SwinConfig = serde_json::from_str(
        r#"{"model_type": "swin", "out_features": ["stage2", "stage3", "stage4"],
            "out_indices": [2, 3, 4]}"#,
    )
    .unwrap();
    assert_eq!(hub, tiny);
    // transformers' own default: the last stage only.
    let default: SwinConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(default.out_stages().unwrap(), vec![4]);
}

#[test]
fn bad_configs_and_inputs_are_errors() {
    let field = |config: SwinConfig| match config.validate() {
        Err(SwinError::Config { field, .. }) => field,
        other => panic!("expected a config error, got {other:?}"),
    };
    let base = SwinConfig::swin_tiny;
    assert_eq!(field(SwinConfig { num_heads: vec![3, 6, 12], ..base() }), "num_heads");
    assert_eq!(field(SwinConfig { num_heads: vec![5, 6, 12, 24], ..base() }), "num_heads");
    assert_eq!(field(SwinConfig { window_size: 0, ..base() }), "window_size");
    assert_eq!(field(SwinConfig { hidden_act: "mish".into(), ..base() }), "hidden_act");
    assert_eq!(field(SwinConfig { use_absolute_embeddings: true, ..base() }), "use_absolute_embeddings");
    assert_eq!(field(SwinConfig { model_type: Some("resnet".into()), ..base() }), "model_type");
    assert_eq!(
        field(SwinConfig { out_features: Some(vec!["stage9".into()]), out_indices: None, ..base() }),
        "out_features"
    );
    assert_eq!(
        field(SwinConfig {
            out_features: Some(vec!["stage4".into(), "stage2".into()]),
            out_indices: None,
            ..base()
        }),
        "out_features"
    );
    assert_eq!(field(SwinConfig { out_indices: Some(vec![1, 2, 3]), ..base() }), "out_indices");
    assert_eq!(
        SwinConfig { out_features: None, out_indices: Some(vec![-1]), ..base() }.out_stages().unwrap(),
        vec![4]
    );
    assert!(matches!(
        SwinConfig { depths: vec![], num_heads: vec![], ..base() }.init(&Device::flex()),
        Err(SwinError::Config { field: "depths", .. })
    ));

    let device = Device::flex();
    let model = gd_config().init(&device).unwrap();
    let gray = Tensor::<4>::zeros([1, 1, 16, 16], &device);
    let err = model.forward(gray).unwrap_err();
    assert!(matches!(err, SwinError::Input(_)), "{err}");
    let empty = Tensor::<4>::zeros([1, 3, 0, 16], &device);
    assert!(model.forward(empty).is_err());
}
