//! Plain multi-head scaled dot-product attention with separate query / key / value inputs and
//! an optional mask of blocked pairs: transformers' `GroundingDinoMultiheadAttention` (the
//! text enhancer's self-attention and the decoder's self- and text cross-attention).
//!
//! Parameter names are the checkpoint's: `query`, `key`, `value`, `out_proj`.

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::activation::softmax;
use burn::tensor::{Bool, Device, Tensor};

/// Multi-head attention, `d_model` wide, `num_heads` heads of `d_model / num_heads`.
#[derive(Module, Debug)]
pub struct MultiHeadAttention {
    /// Query projection.
    pub query: Linear,
    /// Key projection.
    pub key: Linear,
    /// Value projection.
    pub value: Linear,
    /// Output projection.
    pub out_proj: Linear,
    /// Dropout on the attention probabilities (training only).
    pub dropout: Dropout,
    /// Number of heads.
    pub num_heads: usize,
}

impl MultiHeadAttention {
    /// A block `d_model` wide with `num_heads` heads (`num_heads` must divide `d_model`; the
    /// caller's config validation guarantees it).
    pub fn new(d_model: usize, num_heads: usize, dropout: f64, device: &Device) -> Self {
        let linear = || LinearConfig::new(d_model, d_model).init(device);
        Self {
            query: linear(),
            key: linear(),
            value: linear(),
            out_proj: linear(),
            dropout: DropoutConfig::new(dropout).init(),
            num_heads,
        }
    }

    /// Attend: `queries [B, Lq, D]`, `keys` and `values [B, Lk, D]`; `blocked`, broadcastable to
    /// `[B, heads, Lq, Lk]` (its dims 1 may be 1), is `true` where a query must not see a key.
    /// A query whose keys are all blocked attends uniformly (the reference adds the most
    /// negative float rather than `-inf`, which gives the same).
    pub fn forward(
        &self,
        queries: Tensor<3>,
        keys: Tensor<3>,
        values: Tensor<3>,
        blocked: Option<Tensor<4, Bool>>,
    ) -> Tensor<3> {
        let [batch, query_len, d_model] = queries.dims();
        let [_, key_len, _] = keys.dims();
        let heads = self.num_heads;
        let head_dim = d_model / heads;
        let split = |x: Tensor<3>, len: usize| x.reshape([batch, len, heads, head_dim]).swap_dims(1, 2);

        let q = split(self.query.forward(queries), query_len);
        let k = split(self.key.forward(keys), key_len);
        let v = split(self.value.forward(values), key_len);

        let mut scores = q.matmul(k.swap_dims(2, 3)).div_scalar((head_dim as f64).sqrt());
        if let Some(blocked) = blocked {
            let [b, h, _, _] = blocked.dims();
            let blocked = blocked.expand([
                if b == 1 { batch } else { b },
                if h == 1 { heads } else { h },
                query_len,
                key_len,
            ]);
            scores = scores.mask_fill(blocked, f32::MIN);
        }
        let probs = self.dropout.forward(softmax(scores, 3));
        let context = probs.matmul(v).swap_dims(1, 2).reshape([batch, query_len, d_model]);
        self.out_proj.forward(context)
    }
}
