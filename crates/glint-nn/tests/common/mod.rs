//! Helpers shared by the glint-nn integration tests (each test file declares `mod common;`):
//! fixture paths, a reader for the `io.safetensors` / `weights.safetensors` fixtures, the
//! elementwise tolerance check, and edited copies of a checkpoint for the loading-error tests.

// Every test binary compiles its own copy of this module and uses only some of the helpers;
// the others would be reported as dead code in that binary.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use glint_nn::weights::WeightsError;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

/// `tests/fixtures/<area>` at the repository root (written by `tests/fixtures/make_<area>.py`).
pub fn fixtures(area: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(area)
}

/// A safetensors fixture file held in memory; every accessor panics with the tensor's name
/// when it is absent or of an unexpected dtype.
pub struct Io {
    bytes: Vec<u8>,
}

impl Io {
    pub fn open(path: &Path) -> Self {
        Self { bytes: std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())) }
    }

    pub fn tensors(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("valid safetensors")
    }

    pub fn has(&self, name: &str) -> bool {
        self.tensors().names().contains(&name)
    }

    fn view(&self, name: &str, dtype: Dtype) -> (Vec<usize>, Vec<u8>) {
        let st = self.tensors();
        let view = st.tensor(name).unwrap_or_else(|_| panic!("no tensor {name}"));
        assert_eq!(view.dtype(), dtype, "{name}");
        (view.shape().to_vec(), view.data().to_vec())
    }

    pub fn shape(&self, name: &str) -> Vec<usize> {
        self.tensors().tensor(name).unwrap_or_else(|_| panic!("no tensor {name}")).shape().to_vec()
    }

    /// The values of a float32 (or float16, widened exactly) tensor, row-major.
    pub fn f32s(&self, name: &str) -> Vec<f32> {
        let st = self.tensors();
        let view = st.tensor(name).unwrap_or_else(|_| panic!("no tensor {name}"));
        match view.dtype() {
            Dtype::F16 => {
                view.data().chunks_exact(2).map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]]))).collect()
            }
            _ => {
                let (_, data) = self.view(name, Dtype::F32);
                data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
            }
        }
    }

    /// The values of an int64 tensor, row-major.
    pub fn i64s(&self, name: &str) -> Vec<i64> {
        let (_, data) = self.view(name, Dtype::I64);
        data.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect()
    }

    /// A float32 tensor on `device`.
    pub fn float<const D: usize>(&self, name: &str, device: &Device) -> Tensor<D> {
        Tensor::from_data(TensorData::new(self.f32s(name), self.shape(name)), device)
    }

    /// An int64 tensor on `device`.
    pub fn int<const D: usize>(&self, name: &str, device: &Device) -> Tensor<D, Int> {
        Tensor::from_data(TensorData::new(self.i64s(name), self.shape(name)), device)
    }

    /// A uint8 padding mask (`true` = padding) on `device`, or `None` when the fixture has none;
    /// a mask that masks nothing would not test masking, so it is refused.
    pub fn mask(&self, name: &str, device: &Device) -> Option<Tensor<2, Bool>> {
        if !self.has(name) {
            return None;
        }
        let (shape, data) = self.view(name, Dtype::U8);
        let values: Vec<bool> = data.iter().map(|&b| b != 0).collect();
        assert!(values.iter().any(|&b| b), "{name} must mask something");
        Some(Tensor::from_data(TensorData::new(values, shape), device))
    }

    /// An int64 `[levels, 2]` tensor of feature-map sizes as `[height, width]` pairs.
    pub fn shapes(&self, name: &str) -> Vec<[usize; 2]> {
        let values = self.i64s(name);
        values.chunks_exact(2).map(|hw| [hw[0] as usize, hw[1] as usize]).collect()
    }
}

/// Assert `actual` has `shape` and every element is within `atol + rtol * |expected|` of
/// `expected` (and not NaN); on failure the worst element is named. Prints the largest
/// absolute difference (visible with `--nocapture`).
pub fn assert_close<const D: usize>(
    what: &str,
    actual: Tensor<D>,
    expected: &[f32],
    shape: &[usize],
    atol: f32,
    rtol: f32,
) {
    assert_eq!(actual.dims().as_slice(), shape, "{what}: shape");
    let actual = actual.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
    assert_eq!(actual.len(), expected.len(), "{what}: number of expected values");
    let mut worst = (0.0f32, 0usize);
    let mut max_diff = 0.0f32;
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!(!a.is_nan(), "{what}[{i}] is NaN, expected {e}");
        let excess = (a - e).abs() - (atol + rtol * e.abs());
        if excess > worst.0 {
            worst = (excess, i);
        }
        max_diff = max_diff.max((a - e).abs());
    }
    let i = worst.1;
    assert!(
        worst.0 <= 0.0,
        "{what}: element {i} is {} but the reference has {} (|diff| {})",
        actual[i],
        expected[i],
        (actual[i] - expected[i]).abs()
    );
    eprintln!("{what}: max |diff| {max_diff:.2e}");
}

/// A temporary copy of the float32 checkpoint `source` with `edit` applied to its
/// (name -> (shape, values)) map.
pub fn edited_f32_weights(
    source: &Path,
    edit: impl FnOnce(&mut HashMap<String, (Vec<usize>, Vec<f32>)>),
) -> tempfile::TempPath {
    let io = Io::open(source);
    let mut tensors: HashMap<String, (Vec<usize>, Vec<f32>)> =
        io.tensors().names().iter().map(|n| (n.to_string(), (io.shape(n), io.f32s(n)))).collect();
    edit(&mut tensors);
    let bytes: HashMap<String, (Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(n, (shape, values))| (n, (shape, values.iter().flat_map(|v| v.to_le_bytes()).collect())))
        .collect();
    let views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .map(|(n, (shape, data))| (n.clone(), TensorView::new(Dtype::F32, shape.clone(), data).unwrap()))
        .collect();
    let file = tempfile::Builder::new().suffix(".safetensors").tempfile().unwrap();
    std::fs::write(file.path(), safetensors::tensor::serialize(views, None).unwrap()).unwrap();
    file.into_temp_path()
}

/// The message of the error loading the checkpoint at `path` gave; it must name the file.
pub fn load_error_naming_file<T>(path: &Path, loaded: Result<T, WeightsError>) -> String {
    match loaded {
        Ok(_) => panic!("the edited checkpoint {} loaded", path.display()),
        Err(e) => {
            let message = e.to_string();
            assert!(message.contains(&path.display().to_string()), "{message}");
            message
        }
    }
}

/// IEEE half precision bits -> the same value as f32 (every half is exactly representable).
fn f16_to_f32(bits: u16) -> f32 {
    let sign = if bits & 0x8000 != 0 { -1.0f32 } else { 1.0 };
    let exponent = i32::from((bits >> 10) & 0x1f);
    let mantissa = f32::from(bits & 0x3ff);
    match exponent {
        0 => sign * mantissa * 2f32.powi(-24),
        31 if mantissa == 0.0 => sign * f32::INFINITY,
        31 => f32::NAN,
        _ => sign * (1.0 + mantissa / 1024.0) * 2f32.powi(exponent - 15),
    }
}
