//! Feed-forward activations named as in Hugging Face configs (`hidden_act`).
//!
//! Configs keep `hidden_act` as the checkpoint's own string (so their JSON reads and writes
//! unchanged); each model parses it with [`Activation::from_hf_name`] when it validates and
//! builds.

use burn::tensor::Tensor;
use burn::tensor::activation::{gelu, gelu_approximate, relu, silu};

/// An element-wise activation from a transformers `hidden_act` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Exact GELU, `x · Φ(x)` with the erf (transformers' `gelu`).
    Gelu,
    /// Tanh approximation of GELU (`gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`: the same
    /// formula, `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`).
    GeluTanh,
    /// ReLU (`relu`).
    Relu,
    /// SiLU (`silu`, `swish`): `x · sigmoid(x)`.
    Silu,
}

impl Activation {
    /// Parse a transformers `hidden_act` name; `None` for names not supported here.
    pub fn from_hf_name(name: &str) -> Option<Self> {
        match name {
            "gelu" => Some(Self::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Some(Self::GeluTanh),
            "relu" => Some(Self::Relu),
            "silu" | "swish" => Some(Self::Silu),
            _ => None,
        }
    }

    /// Apply the activation element-wise.
    pub fn forward<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Self::Gelu => gelu(x),
            Self::GeluTanh => gelu_approximate(x),
            Self::Relu => relu(x),
            Self::Silu => silu(x),
        }
    }
}
