//! GLIP's prompt tuning: the whole model stays as it is and only an offset added to the text
//! encoder's output for one fixed prompt is learnt (GLIP's `language_prompt_v2`: a zero-initialised
//! `[max_text_len, D]` table, row `i` added to token `i`'s features).
//!
//! The offset is saved on its own, `prompt_tuning.safetensors` (one `delta` tensor, the prompt in
//! the file's metadata): a few KB that apply on top of the base model they were learnt with.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor, TensorData};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

/// The file a prompt tuning is saved in, in a model directory or on its own.
pub const PROMPT_TUNING_FILE: &str = "prompt_tuning.safetensors";

/// The metadata key holding the prompt the offset was learnt for.
const PROMPT_KEY: &str = "glint.prompt";

/// Why a prompt tuning file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PromptTuningError {
    #[error("cannot read prompt tuning {}: {message}", path.display())]
    Read { path: PathBuf, message: String },
    #[error("cannot write prompt tuning {}: {message}", path.display())]
    Write { path: PathBuf, message: String },
}

/// A learnt offset on the token features of one prompt.
#[derive(Module, Debug)]
pub struct PromptTuning {
    /// `[max_text_len, D]`; row `i` is added to token `i` of the prompt.
    pub delta: Param<Tensor<2>>,
    /// The prompt the offset was learnt for (its caption, e.g. `"pentagon . diamond ."`).
    #[module(skip)]
    pub prompt: String,
}

impl PromptTuning {
    /// No offset yet, for a model with `max_text_len` tokens of `dim` features.
    pub fn zeros(prompt: impl Into<String>, max_text_len: usize, dim: usize, device: &Device) -> Self {
        Self { delta: Param::from_tensor(Tensor::zeros([max_text_len, dim], device)), prompt: prompt.into() }
    }

    /// `features [B, L, D]` plus the offset's first `L` rows.
    pub fn apply(&self, features: Tensor<3>) -> Tensor<3> {
        let [_, len, dim] = features.dims();
        let rows = self.delta.val().dims()[0];
        // Tokens past the table (longer than the model takes) get no offset.
        let delta = match len <= rows {
            true => self.delta.val().slice([0..len, 0..dim]),
            false => {
                let pad = Tensor::zeros([len - rows, dim], &features.device());
                Tensor::cat(vec![self.delta.val(), pad], 0)
            }
        };
        features + delta.unsqueeze_dim(0)
    }

    /// Write the offset and its prompt to `path`, atomically.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), PromptTuningError> {
        let path = path.as_ref();
        let error = |message: String| PromptTuningError::Write { path: path.to_path_buf(), message };
        let shape = self.delta.val().dims().to_vec();
        let values = self.delta.val().into_data().convert::<f32>();
        let bytes = values.as_bytes();
        let view = TensorView::new(Dtype::F32, shape, bytes).map_err(|e| error(e.to_string()))?;
        let metadata = HashMap::from([(PROMPT_KEY.to_string(), self.prompt.clone())]);
        let file =
            safetensors::serialize([("delta", view)], Some(metadata)).map_err(|e| error(e.to_string()))?;
        glint_core::io::write_atomic(path, &file).map_err(|e| error(e.to_string()))
    }

    /// Read a prompt tuning written by [`Self::save`].
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<Self, PromptTuningError> {
        let path = path.as_ref();
        let error = |message: String| PromptTuningError::Read { path: path.to_path_buf(), message };
        let bytes = std::fs::read(path).map_err(|e| error(e.to_string()))?;
        let (_, metadata) = SafeTensors::read_metadata(&bytes).map_err(|e| error(e.to_string()))?;
        let prompt =
            metadata.metadata().as_ref().and_then(|m| m.get(PROMPT_KEY).cloned()).ok_or_else(|| {
                error(format!("no \"{PROMPT_KEY}\" in its metadata: not a glint prompt tuning"))
            })?;
        let tensors = SafeTensors::deserialize(&bytes).map_err(|e| error(e.to_string()))?;
        let delta = tensors.tensor("delta").map_err(|e| error(e.to_string()))?;
        let [rows, dim] = delta.shape() else {
            return Err(error(format!("delta has shape {:?}, expected [tokens, features]", delta.shape())));
        };
        if delta.dtype() != Dtype::F32 {
            return Err(error(format!("delta is {:?}, expected F32", delta.dtype())));
        }
        let values: Vec<f32> =
            delta.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        let tensor = Tensor::from_data(TensorData::new(values, [*rows, *dim]), device);
        Ok(Self { delta: Param::from_tensor(tensor), prompt })
    }
}
