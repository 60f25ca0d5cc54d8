//! PoolFormer backbone parity with timm's PoolFormer v1 (`timm.models.metaformer.MetaFormer` with
//! `poolformer_s12`'s settings at a tiny shape), plus the detection variant's per-output
//! GroupNorms (fixtures: tests/fixtures/make_poolformer.py; see tests/fixtures/README.md).
//!
//! Tolerance: every element of the three returned maps within 1e-4 absolute + 1e-4 relative of
//! timm's float32 output. Both sides compute in f32 and the outputs are GroupNorm-ed (|x| <= ~5);
//! the only differences are summation order in the convolutions, pools and norms (a few ulps per
//! op; the script's own float64 recomputation is within ~2e-6 of timm). The fixture's layer-scale
//! gammas are O(0.5) rather than 1e-5, so both residual branches move the outputs by O(1), and on
//! the 4×6 and 2×3 maps, where most pixels sit on a border, counting the pool's padding would move
//! them by more than 1e-2 (both checked by the script): a wrong padding, border rule, norm or
//! name mapping fails far outside the tolerance.

mod common;

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use common::{Io, assert_close, edited_f32_weights, load_error_naming_file};
use glint_nn::backbone::poolformer::{PoolFormer, PoolFormerConfig};
use glint_nn::weights::{LoadOptions, WeightsError, load_safetensors};

const ATOL: f32 = 1e-4;
const RTOL: f32 = 1e-4;

fn fixtures() -> PathBuf {
    common::fixtures("poolformer")
}

/// The fixture's shape: layers [1, 1, 2, 1], dims [8, 16, 24, 32], MLP ratio 4, outputs of
/// stages 1, 2, 3.
fn config() -> PoolFormerConfig {
    PoolFormerConfig { layers: [1, 1, 2, 1], dims: [8, 16, 24, 32], ..PoolFormerConfig::nano() }
}

fn load(path: &Path, device: &Device) -> Result<PoolFormer, WeightsError> {
    load_safetensors(config().init(device), path, &LoadOptions::new())
}

#[test]
fn matches_timm_poolformer_v1() {
    let device = Device::flex();
    let config = config();
    config.validate().unwrap();
    assert_eq!(config.out_stages, vec![1, 2, 3]);
    assert_eq!(config.out_strides(), vec![8, 16, 32]);
    assert_eq!(config.out_channels(), vec![16, 24, 32]);

    let model = load(&fixtures().join("weights.safetensors"), &device).unwrap_or_else(|e| panic!("{e}"));
    let io = Io::open(&fixtures().join("io.safetensors"));
    let input = io.float::<4>("input", &device);
    assert_eq!(input.dims(), [2, 3, 64, 96]);
    let maps = model.forward(input);
    assert_eq!(maps.len(), 3, "one map per returned stage");
    for (i, map) in maps.into_iter().enumerate() {
        let name = format!("out{i}");
        let shape = io.shape(&name);
        let stride = config.out_strides()[i];
        assert_eq!(shape, vec![2, config.out_channels()[i], 64 / stride, 96 / stride], "{name}");
        assert_close(&name, map, &io.f32s(&name), &shape, ATOL, RTOL);
    }
}

#[test]
fn missing_tensor_is_named() {
    let weights = fixtures().join("weights.safetensors");
    let gone = "stages.2.blocks.1.layer_scale_2";
    let path = edited_f32_weights(&weights, |t| {
        assert!(t.remove(gone).is_some(), "the fixture holds {gone}");
    });
    let message = load_error_naming_file(&path, load(&path, &Device::flex()));
    assert!(message.contains(gone), "{message}");
    let err = load(&path, &Device::flex()).expect_err("the same checkpoint fails again");
    let report = err.mismatch().expect("a mismatch report");
    assert_eq!(report.missing, vec![gone.to_string()], "{err}");
    assert!(report.unexpected.is_empty() && report.mis_shaped.is_empty(), "{err}");

    // A missing output norm (a `Vec` field, indexed by position) is named the same way.
    let gone = "out_norms.1.bias";
    let path = edited_f32_weights(&weights, |t| {
        assert!(t.remove(gone).is_some(), "the fixture holds {gone}");
    });
    let err = load(&path, &Device::flex()).expect_err("an output norm bias is missing");
    assert_eq!(err.mismatch().expect("a mismatch report").missing, vec![gone.to_string()], "{err}");
}
