//! The original IDEA-Research Grounding DINO checkpoints (`groundingdino_swint_ogc.pth`,
//! `groundingdino_swinb_cogcoor.pth`, and fine-tunes saved by the same code), converted to the
//! Hugging Face transformers names glint's Grounding DINO loads.
//!
//! Such a file is a pickled `{"model": state_dict, ...}` whose keys follow IDEA's module tree,
//! usually with a `module.` prefix (saved from `DistributedDataParallel`). The conversion is a
//! fixed table, unit by unit (a Swin block, a BERT layer, an encoder or decoder layer, ...):
//!
//! | IDEA | transformers |
//! |---|---|
//! | `backbone.0.patch_embed.{proj,norm}` | `model.backbone.conv_encoder.model.embeddings.{patch_embeddings.projection,norm}` |
//! | `backbone.0.layers.L.blocks.B.{norm1,norm2,attn.proj,mlp.fc1,mlp.fc2}` | `….encoder.layers.L.blocks.B.{layernorm_before,layernorm_after,attention.output.dense,intermediate.dense,output.dense}` |
//! | `backbone.0.layers.L.blocks.B.attn.qkv` `[3C, C]` | `….attention.self.{query,key,value}`, split along dim 0 |
//! | `backbone.0.layers.L.downsample.*` | `….encoder.layers.L.downsample.*` |
//! | `backbone.0.norm{i}` (after Swin stage `i`, 0-based) | `….hidden_states_norms.stage{i+1}` |
//! | `bert.{embeddings,encoder}.*` | `model.text_backbone.*` |
//! | `feat_map`, `input_proj.N` | `model.text_projection`, `model.input_proj_vision.N` |
//! | `transformer.{level_embed,tgt_embed,enc_output,enc_output_norm,decoder.norm,decoder.ref_point_head}` | `model.{level_embed,query_position_embeddings,enc_output,enc_output_norm,decoder.layer_norm,decoder.reference_points_head}` |
//! | `transformer.enc_out_bbox_embed` | `model.encoder_output_bbox_embed` |
//! | `transformer.encoder.layers.N` (deformable) | `model.encoder.layers.N.deformable_layer` |
//! | `transformer.encoder.text_layers.N` | `model.encoder.layers.N.text_enhancer_layer` |
//! | `transformer.encoder.fusion_layers.N` | `model.encoder.layers.N.fusion_layer` |
//! | `transformer.decoder.layers.N` | `model.decoder.layers.N` |
//! | `….self_attn.in_proj_{weight,bias}`, `ca_text.in_proj_*` (`nn.MultiheadAttention`) | `….{self_attn,encoder_attn_text}.{query,key,value}`, split along dim 0 |
//! | `bbox_embed.N` | `bbox_embed.N` (see below) |
//!
//! Deliberately dropped, because transformers (and glint) have no place for them:
//! the Swin `attn.relative_position_index` buffers (recomputed from the window size), BERT's
//! `embeddings.position_ids` / `token_type_ids` buffers and its unused `pooler`, and
//! `label_enc.weight`, the label embedding of denoising training. The box head IDEA shares
//! between decoder layers is stored under every name it has (`bbox_embed.0…5` and
//! `transformer.decoder.bbox_embed.0…5`): a copy is dropped only when it is bit-identical to the
//! tensor kept (`bbox_embed.N` for N > 0 kept when it differs: a checkpoint without
//! `dec_pred_bbox_embed_share`), so the result is what transformers' `save_pretrained` writes.
//!
//! Every other key is an error, listed by name with every incomplete unit (e.g. a Swin block
//! without its `attn.qkv.bias`) in one [`WeightsError::Mismatch`]: nothing is silently dropped.
//! Splitting is lazy: a split tensor's bytes are read from the file only when it is applied.
//!
//! A `.pth` carries no config. The published checkpoints correspond to transformers'
//! `GroundingDinoConfig` defaults (the Hub's `IDEA-Research/grounding-dino-tiny` /
//! `-base`): d_model 256, 6 + 6 encoder / decoder layers, 8 heads, FFN 2048, 4 points, 4
//! levels (Swin stages 2–4 + one stride-2 conv), 900 queries, `max_text_len` 256, sine
//! temperature 20, two-stage with one box head shared by the decoder layers and a separate
//! encoder-output box head, and a bert-base-uncased text encoder (hidden 768, 12 layers, 12
//! heads, FFN 3072, vocab 30522, 512 positions). Swin: SwinT-OGC is embed 96, depths
//! `[2, 2, 6, 2]`, heads `[3, 6, 12, 24]`, window 7 (224 pretraining); SwinB-cogcoor is embed
//! 128, depths `[2, 2, 18, 2]`, heads `[4, 8, 16, 32]`, window 12 (384 pretraining).
//!
//! ```no_run
//! # use glint_nn::weights::{LoadOptions, idea::IdeaCheckpoint};
//! # fn demo<M: burn::module::Module>(bert: M) -> Result<M, glint_nn::weights::WeightsError> {
//! let checkpoint = IdeaCheckpoint::read("groundingdino_swint_ogc.pth")?;
//! let bert = checkpoint.apply(bert, &LoadOptions::new().with_prefix("model.text_backbone."))?;
//! # Ok(bert) }
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::store::burn_pack::{Error as PackError, Tensor as PackTensor};
use burn::tensor::Bytes;

use super::{LoadOptions, Mismatch, WeightsError, apply_converted, read_pth};

/// What becomes of one tensor of a unit.
#[derive(Clone, Copy)]
enum To {
    /// Same suffix under the transformers prefix.
    Same,
    /// This suffix under the transformers prefix.
    Name(&'static str),
    /// Query, key and value fused along dim 0, in that order: three tensors, `*` in the suffix
    /// standing for `query`, `key`, `value`.
    Qkv(&'static str),
    /// Deliberately not converted (and not required).
    Drop,
}

/// How a unit's indices and copies are handled.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    /// IDEA's `norm{i}` after Swin stage `i` is transformers' `stage{i+1}` (the stem is stage 0).
    StageNorm,
    /// `bbox_embed.N`: kept for N = 0; for N > 0 dropped when identical to head 0 (shared).
    BoxHead,
    /// `transformer.decoder.bbox_embed.N`: the same modules as `bbox_embed.N` in IDEA's model.
    BoxHeadAlias,
}

/// A group of IDEA tensors under one prefix (`#` = a decimal index) that exist together.
struct Unit {
    idea: &'static str,
    hf: &'static str,
    kind: Kind,
    members: &'static [(&'static str, To)],
}

const fn unit(idea: &'static str, hf: &'static str, members: &'static [(&'static str, To)]) -> Unit {
    Unit { idea, hf, kind: Kind::Plain, members }
}

const BOX_HEAD: &[(&str, To)] = &[
    ("layers.0.weight", To::Same),
    ("layers.0.bias", To::Same),
    ("layers.1.weight", To::Same),
    ("layers.1.bias", To::Same),
    ("layers.2.weight", To::Same),
    ("layers.2.bias", To::Same),
];

const UNITS: &[Unit] = &[
    unit(
        "backbone.0.patch_embed.",
        "model.backbone.conv_encoder.model.embeddings.",
        &[
            ("proj.weight", To::Name("patch_embeddings.projection.weight")),
            ("proj.bias", To::Name("patch_embeddings.projection.bias")),
            ("norm.weight", To::Same),
            ("norm.bias", To::Same),
        ],
    ),
    unit(
        "backbone.0.layers.#.blocks.#.",
        "model.backbone.conv_encoder.model.encoder.layers.#.blocks.#.",
        &[
            ("norm1.weight", To::Name("layernorm_before.weight")),
            ("norm1.bias", To::Name("layernorm_before.bias")),
            ("attn.relative_position_bias_table", To::Name("attention.self.relative_position_bias_table")),
            ("attn.relative_position_index", To::Drop),
            ("attn.qkv.weight", To::Qkv("attention.self.*.weight")),
            ("attn.qkv.bias", To::Qkv("attention.self.*.bias")),
            ("attn.proj.weight", To::Name("attention.output.dense.weight")),
            ("attn.proj.bias", To::Name("attention.output.dense.bias")),
            ("norm2.weight", To::Name("layernorm_after.weight")),
            ("norm2.bias", To::Name("layernorm_after.bias")),
            ("mlp.fc1.weight", To::Name("intermediate.dense.weight")),
            ("mlp.fc1.bias", To::Name("intermediate.dense.bias")),
            ("mlp.fc2.weight", To::Name("output.dense.weight")),
            ("mlp.fc2.bias", To::Name("output.dense.bias")),
        ],
    ),
    unit(
        "backbone.0.layers.#.downsample.",
        "model.backbone.conv_encoder.model.encoder.layers.#.downsample.",
        &[("reduction.weight", To::Same), ("norm.weight", To::Same), ("norm.bias", To::Same)],
    ),
    Unit {
        idea: "backbone.0.norm#.",
        hf: "model.backbone.conv_encoder.model.hidden_states_norms.stage#.",
        kind: Kind::StageNorm,
        members: &[("weight", To::Same), ("bias", To::Same)],
    },
    unit(
        "bert.embeddings.",
        "model.text_backbone.embeddings.",
        &[
            ("word_embeddings.weight", To::Same),
            ("position_embeddings.weight", To::Same),
            ("token_type_embeddings.weight", To::Same),
            ("LayerNorm.weight", To::Same),
            ("LayerNorm.bias", To::Same),
            ("position_ids", To::Drop),
            ("token_type_ids", To::Drop),
        ],
    ),
    unit(
        "bert.encoder.layer.#.",
        "model.text_backbone.encoder.layer.#.",
        &[
            ("attention.self.query.weight", To::Same),
            ("attention.self.query.bias", To::Same),
            ("attention.self.key.weight", To::Same),
            ("attention.self.key.bias", To::Same),
            ("attention.self.value.weight", To::Same),
            ("attention.self.value.bias", To::Same),
            ("attention.output.dense.weight", To::Same),
            ("attention.output.dense.bias", To::Same),
            ("attention.output.LayerNorm.weight", To::Same),
            ("attention.output.LayerNorm.bias", To::Same),
            ("intermediate.dense.weight", To::Same),
            ("intermediate.dense.bias", To::Same),
            ("output.dense.weight", To::Same),
            ("output.dense.bias", To::Same),
            ("output.LayerNorm.weight", To::Same),
            ("output.LayerNorm.bias", To::Same),
        ],
    ),
    unit("bert.pooler.dense.", "", &[("weight", To::Drop), ("bias", To::Drop)]),
    unit("feat_map.", "model.text_projection.", &[("weight", To::Same), ("bias", To::Same)]),
    unit(
        "input_proj.#.",
        "model.input_proj_vision.#.",
        &[("0.weight", To::Same), ("0.bias", To::Same), ("1.weight", To::Same), ("1.bias", To::Same)],
    ),
    unit(
        "transformer.",
        "model.",
        &[
            ("level_embed", To::Same),
            ("tgt_embed.weight", To::Name("query_position_embeddings.weight")),
            ("enc_output.weight", To::Same),
            ("enc_output.bias", To::Same),
            ("enc_output_norm.weight", To::Same),
            ("enc_output_norm.bias", To::Same),
            ("decoder.norm.weight", To::Name("decoder.layer_norm.weight")),
            ("decoder.norm.bias", To::Name("decoder.layer_norm.bias")),
        ],
    ),
    unit(
        "transformer.decoder.ref_point_head.",
        "model.decoder.reference_points_head.",
        &[
            ("layers.0.weight", To::Same),
            ("layers.0.bias", To::Same),
            ("layers.1.weight", To::Same),
            ("layers.1.bias", To::Same),
        ],
    ),
    unit("transformer.enc_out_bbox_embed.", "model.encoder_output_bbox_embed.", BOX_HEAD),
    Unit { idea: "bbox_embed.#.", hf: "bbox_embed.#.", kind: Kind::BoxHead, members: BOX_HEAD },
    Unit {
        idea: "transformer.decoder.bbox_embed.#.",
        hf: "bbox_embed.#.",
        kind: Kind::BoxHeadAlias,
        members: BOX_HEAD,
    },
    unit(
        "transformer.encoder.layers.#.",
        "model.encoder.layers.#.deformable_layer.",
        &[
            ("self_attn.sampling_offsets.weight", To::Same),
            ("self_attn.sampling_offsets.bias", To::Same),
            ("self_attn.attention_weights.weight", To::Same),
            ("self_attn.attention_weights.bias", To::Same),
            ("self_attn.value_proj.weight", To::Same),
            ("self_attn.value_proj.bias", To::Same),
            ("self_attn.output_proj.weight", To::Same),
            ("self_attn.output_proj.bias", To::Same),
            ("norm1.weight", To::Name("self_attn_layer_norm.weight")),
            ("norm1.bias", To::Name("self_attn_layer_norm.bias")),
            ("linear1.weight", To::Name("fc1.weight")),
            ("linear1.bias", To::Name("fc1.bias")),
            ("linear2.weight", To::Name("fc2.weight")),
            ("linear2.bias", To::Name("fc2.bias")),
            ("norm2.weight", To::Name("final_layer_norm.weight")),
            ("norm2.bias", To::Name("final_layer_norm.bias")),
        ],
    ),
    unit(
        "transformer.encoder.text_layers.#.",
        "model.encoder.layers.#.text_enhancer_layer.",
        &[
            ("self_attn.in_proj_weight", To::Qkv("self_attn.*.weight")),
            ("self_attn.in_proj_bias", To::Qkv("self_attn.*.bias")),
            ("self_attn.out_proj.weight", To::Same),
            ("self_attn.out_proj.bias", To::Same),
            ("linear1.weight", To::Name("fc1.weight")),
            ("linear1.bias", To::Name("fc1.bias")),
            ("linear2.weight", To::Name("fc2.weight")),
            ("linear2.bias", To::Name("fc2.bias")),
            ("norm1.weight", To::Name("layer_norm_before.weight")),
            ("norm1.bias", To::Name("layer_norm_before.bias")),
            ("norm2.weight", To::Name("layer_norm_after.weight")),
            ("norm2.bias", To::Name("layer_norm_after.bias")),
        ],
    ),
    unit(
        "transformer.encoder.fusion_layers.#.",
        "model.encoder.layers.#.fusion_layer.",
        &[
            ("gamma_v", To::Name("vision_param")),
            ("gamma_l", To::Name("text_param")),
            ("layer_norm_v.weight", To::Name("layer_norm_vision.weight")),
            ("layer_norm_v.bias", To::Name("layer_norm_vision.bias")),
            ("layer_norm_l.weight", To::Name("layer_norm_text.weight")),
            ("layer_norm_l.bias", To::Name("layer_norm_text.bias")),
            ("attn.v_proj.weight", To::Name("attn.vision_proj.weight")),
            ("attn.v_proj.bias", To::Name("attn.vision_proj.bias")),
            ("attn.l_proj.weight", To::Name("attn.text_proj.weight")),
            ("attn.l_proj.bias", To::Name("attn.text_proj.bias")),
            ("attn.values_v_proj.weight", To::Name("attn.values_vision_proj.weight")),
            ("attn.values_v_proj.bias", To::Name("attn.values_vision_proj.bias")),
            ("attn.values_l_proj.weight", To::Name("attn.values_text_proj.weight")),
            ("attn.values_l_proj.bias", To::Name("attn.values_text_proj.bias")),
            ("attn.out_v_proj.weight", To::Name("attn.out_vision_proj.weight")),
            ("attn.out_v_proj.bias", To::Name("attn.out_vision_proj.bias")),
            ("attn.out_l_proj.weight", To::Name("attn.out_text_proj.weight")),
            ("attn.out_l_proj.bias", To::Name("attn.out_text_proj.bias")),
        ],
    ),
    unit(
        "transformer.decoder.layers.#.",
        "model.decoder.layers.#.",
        &[
            ("cross_attn.sampling_offsets.weight", To::Name("encoder_attn.sampling_offsets.weight")),
            ("cross_attn.sampling_offsets.bias", To::Name("encoder_attn.sampling_offsets.bias")),
            ("cross_attn.attention_weights.weight", To::Name("encoder_attn.attention_weights.weight")),
            ("cross_attn.attention_weights.bias", To::Name("encoder_attn.attention_weights.bias")),
            ("cross_attn.value_proj.weight", To::Name("encoder_attn.value_proj.weight")),
            ("cross_attn.value_proj.bias", To::Name("encoder_attn.value_proj.bias")),
            ("cross_attn.output_proj.weight", To::Name("encoder_attn.output_proj.weight")),
            ("cross_attn.output_proj.bias", To::Name("encoder_attn.output_proj.bias")),
            ("norm1.weight", To::Name("encoder_attn_layer_norm.weight")),
            ("norm1.bias", To::Name("encoder_attn_layer_norm.bias")),
            ("ca_text.in_proj_weight", To::Qkv("encoder_attn_text.*.weight")),
            ("ca_text.in_proj_bias", To::Qkv("encoder_attn_text.*.bias")),
            ("ca_text.out_proj.weight", To::Name("encoder_attn_text.out_proj.weight")),
            ("ca_text.out_proj.bias", To::Name("encoder_attn_text.out_proj.bias")),
            ("catext_norm.weight", To::Name("encoder_attn_text_layer_norm.weight")),
            ("catext_norm.bias", To::Name("encoder_attn_text_layer_norm.bias")),
            ("self_attn.in_proj_weight", To::Qkv("self_attn.*.weight")),
            ("self_attn.in_proj_bias", To::Qkv("self_attn.*.bias")),
            ("self_attn.out_proj.weight", To::Same),
            ("self_attn.out_proj.bias", To::Same),
            ("norm2.weight", To::Name("self_attn_layer_norm.weight")),
            ("norm2.bias", To::Name("self_attn_layer_norm.bias")),
            ("linear1.weight", To::Name("fc1.weight")),
            ("linear1.bias", To::Name("fc1.bias")),
            ("linear2.weight", To::Name("fc2.weight")),
            ("linear2.bias", To::Name("fc2.bias")),
            ("norm3.weight", To::Name("final_layer_norm.weight")),
            ("norm3.bias", To::Name("final_layer_norm.bias")),
        ],
    ),
    unit("label_enc.", "", &[("weight", To::Drop)]),
];

/// The prefix `torch.nn.parallel.DistributedDataParallel` adds to every key.
const DDP_PREFIX: &str = "module.";

/// Top-level key families every Grounding DINO state dict has.
const FAMILIES: [&str; 3] = ["backbone.0.", "bert.", "transformer."];

/// An IDEA-Research Grounding DINO checkpoint converted to transformers names.
///
/// Holds the converted tensors (lazy: nothing but the shared box-head copies is read until
/// applied) and, for error messages, the IDEA key each one came from.
#[derive(Clone)]
pub struct IdeaCheckpoint {
    path: PathBuf,
    tensors: Vec<PackTensor>,
    sources: HashMap<String, String>,
}

impl std::fmt::Debug for IdeaCheckpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdeaCheckpoint")
            .field("path", &self.path)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl IdeaCheckpoint {
    /// Read an IDEA-Research `.pth` (`{"model": state_dict, ...}`, or a bare state dict) and
    /// convert it.
    ///
    /// Fails, naming the file, when it cannot be read, is not a Grounding DINO checkpoint, or
    /// holds keys the conversion does not know, incomplete units or tensors that cannot be
    /// split (all listed in one [`WeightsError::Mismatch`]).
    pub fn read(path: impl AsRef<Path>) -> Result<Self, WeightsError> {
        let path = path.as_ref();
        let tensors = read_pth(path)?;
        Self::from_tensors(path, tensors)
    }

    /// Convert tensors named as in an IDEA-Research state dict (with or without the `module.`
    /// prefix); `path` is the file they came from, named in errors.
    pub fn from_tensors(path: impl AsRef<Path>, tensors: Vec<PackTensor>) -> Result<Self, WeightsError> {
        convert(path.as_ref(), tensors)
    }

    /// The checkpoint file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The converted tensors, under transformers names, sorted by name.
    pub fn tensors(&self) -> &[PackTensor] {
        &self.tensors
    }

    /// The converted tensors, under transformers names, sorted by name.
    pub fn into_tensors(self) -> Vec<PackTensor> {
        self.tensors
    }

    /// The IDEA key (as in the file) a converted tensor came from; a part of a fused tensor is
    /// named as e.g. `module.backbone.0.layers.0.blocks.0.attn.qkv.weight (key part)`.
    pub fn source(&self, name: &str) -> Option<&str> {
        self.sources.get(name).map(String::as_str)
    }

    /// Load the converted tensors into `module` exactly as
    /// [`load_safetensors`](super::load_safetensors) loads a transformers checkpoint with the
    /// same `options` (prefix, ignores, remaps on transformers names). Unexpected and mis-shaped
    /// tensors are reported under their IDEA keys.
    pub fn apply<M: Module>(&self, module: M, options: &LoadOptions) -> Result<M, WeightsError> {
        apply_converted(module, &self.path, self.tensors.clone(), options, &self.sources)
    }
}

/// Read an IDEA-Research Grounding DINO `.pth`, convert it to transformers names and load it
/// into `module` with `options` (as for a transformers `model.safetensors`): the one-call form of
/// [`IdeaCheckpoint::read`] + [`IdeaCheckpoint::apply`].
pub fn load_grounding_dino_pth<M: Module>(
    module: M,
    path: impl AsRef<Path>,
    options: &LoadOptions,
) -> Result<M, WeightsError> {
    IdeaCheckpoint::read(path)?.apply(module, options)
}

/// Match `key` against a unit prefix (`#` = a decimal index without leading zeros); returns the
/// indices and the rest of the key.
fn match_prefix<'k>(pattern: &str, key: &'k str) -> Option<(Vec<usize>, &'k str)> {
    let mut indices = Vec::new();
    let mut rest = key;
    let mut literal = pattern;
    while let Some(hash) = literal.find('#') {
        rest = rest.strip_prefix(&literal[..hash])?;
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 || (digits > 1 && rest.starts_with('0')) {
            return None;
        }
        indices.push(rest[..digits].parse().ok()?);
        rest = &rest[digits..];
        literal = &literal[hash + 1..];
    }
    Some((indices, rest.strip_prefix(literal)?))
}

/// `template` with each `#` replaced by the next index.
fn fill(template: &str, indices: &[usize]) -> String {
    let mut out = String::with_capacity(template.len() + 4);
    let mut indices = indices.iter();
    for c in template.chars() {
        if c == '#' {
            out.push_str(&indices.next().map(usize::to_string).unwrap_or_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// One IDEA tensor recognised by the table.
struct Found {
    unit: usize,
    indices: Vec<usize>,
    member: usize,
    /// The key as in the file.
    key: String,
    tensor: PackTensor,
}

fn convert(path: &Path, tensors: Vec<PackTensor>) -> Result<IdeaCheckpoint, WeightsError> {
    let mut report = Mismatch { path: path.to_path_buf(), ..Mismatch::default() };
    let uses_ddp = tensors.iter().any(|t| t.name.starts_with(DDP_PREFIX));
    let file_key = |key: &str| if uses_ddp { format!("{DDP_PREFIX}{key}") } else { key.to_string() };

    let stripped: Vec<(String, PackTensor)> = tensors
        .into_iter()
        .map(|t| (t.name.strip_prefix(DDP_PREFIX).unwrap_or(&t.name).to_string(), t))
        .collect();
    let absent: Vec<String> = FAMILIES
        .iter()
        .filter(|f| !stripped.iter().any(|(k, _)| k.starts_with(*f)))
        .map(|f| format!("`{f}`"))
        .collect();
    if !absent.is_empty() {
        let found = match stripped.len() {
            0 => "it holds no tensors".to_string(),
            n => {
                let sample: Vec<String> =
                    stripped.iter().take(3).map(|(_, t)| format!("`{}`", t.name)).collect();
                format!("it has no {} tensors (it has {n}, e.g. {})", absent.join(" or "), sample.join(", "))
            }
        };
        let message = format!("not an IDEA-Research Grounding DINO checkpoint: {found}");
        return Err(WeightsError::Read { path: path.to_path_buf(), message });
    }

    // Recognise every key; a key no unit knows is unexpected.
    let mut found: Vec<Found> = Vec::new();
    let mut first_key: HashMap<String, String> = HashMap::new();
    let mut repeated: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (key, tensor) in stripped {
        // The same key with and without `module.`: ambiguous, reported, the first one used.
        if let Some(first) = first_key.get(&key) {
            repeated.entry(key).or_insert_with(|| vec![first.clone()]).push(tensor.name.clone());
            continue;
        }
        first_key.insert(key.clone(), tensor.name.clone());
        let hit = UNITS.iter().enumerate().find_map(|(u, unit)| {
            let (indices, rest) = match_prefix(unit.idea, &key)?;
            let member = unit.members.iter().position(|(suffix, _)| *suffix == rest)?;
            Some((u, indices, member))
        });
        match hit {
            Some((unit, indices, member)) => {
                found.push(Found { unit, indices, member, key: tensor.name.clone(), tensor })
            }
            None => report.unexpected.push(tensor.name.clone()),
        }
    }
    report.duplicates.extend(repeated);

    // Every unit met must be complete (dropped members are optional).
    let mut seen: BTreeMap<(usize, Vec<usize>), BTreeSet<usize>> = BTreeMap::new();
    for f in &found {
        seen.entry((f.unit, f.indices.clone())).or_default().insert(f.member);
    }
    let mut missing: BTreeSet<String> = BTreeSet::new();
    for ((u, indices), members) in &seen {
        let unit = &UNITS[*u];
        for (m, (suffix, to)) in unit.members.iter().enumerate() {
            if !matches!(to, To::Drop) && !members.contains(&m) {
                missing.insert(file_key(&format!("{}{suffix}", fill(unit.idea, indices))));
            }
        }
    }

    // The box head IDEA shares between decoder layers: keep one copy per distinct head.
    let mut bytes_cache: HashMap<String, Result<Bytes, String>> = HashMap::new();
    let mut read_bytes = |t: &PackTensor| -> Result<Bytes, String> {
        bytes_cache.entry(t.name.clone()).or_insert_with(|| t.to_bytes().map_err(|e| e.to_string())).clone()
    };
    let box_heads: HashMap<(usize, usize), &Found> = found
        .iter()
        .filter(|f| UNITS[f.unit].kind == Kind::BoxHead)
        .filter_map(|f| f.indices.first().map(|&n| ((n, f.member), f)))
        .collect();
    let mut same_as_twin = |f: &Found, twin: &Found, report: &mut Mismatch| -> bool {
        if f.tensor.dtype != twin.tensor.dtype || f.tensor.shape != twin.tensor.shape {
            return false;
        }
        match (read_bytes(&f.tensor), read_bytes(&twin.tensor)) {
            (Ok(a), Ok(b)) => a[..] == b[..],
            (Err(e), _) => {
                report.other.push(format!("{}: {e}", f.key));
                true
            }
            (_, Err(e)) => {
                report.other.push(format!("{}: {e}", twin.key));
                true
            }
        }
    };
    let mut shared_heads: BTreeSet<usize> = BTreeSet::new();
    let head_numbers: BTreeSet<usize> = box_heads.keys().map(|(n, _)| *n).filter(|&n| n > 0).collect();
    for n in head_numbers {
        let all_same = (0..BOX_HEAD.len()).all(|m| match (box_heads.get(&(n, m)), box_heads.get(&(0, m))) {
            (Some(f), Some(head0)) => same_as_twin(f, head0, &mut report),
            _ => false,
        });
        if all_same {
            shared_heads.insert(n);
        }
    }
    for f in found.iter().filter(|f| UNITS[f.unit].kind == Kind::BoxHeadAlias) {
        let n = f.indices.first().copied().unwrap_or_default();
        match box_heads.get(&(n, f.member)) {
            Some(twin) if same_as_twin(f, twin, &mut report) => {}
            Some(twin) => report.other.push(format!(
                "{} differs from {}, which IDEA's model stores as the same tensor",
                f.key, twin.key
            )),
            None => {
                missing.insert(file_key(&format!("bbox_embed.{n}.{}", BOX_HEAD[f.member].0)));
            }
        }
    }
    report.missing.extend(missing);

    // Rename and split.
    let mut out: BTreeMap<String, PackTensor> = BTreeMap::new();
    let mut sources: HashMap<String, String> = HashMap::new();
    let mut emit = |name: String, source: String, tensor: PackTensor, report: &mut Mismatch| {
        if let Some(previous) = sources.get(&name) {
            report.duplicates.push((name, vec![previous.clone(), source]));
            return;
        }
        sources.insert(name.clone(), source);
        out.insert(name, tensor);
    };
    for f in found {
        let unit = &UNITS[f.unit];
        let (suffix, to) = unit.members[f.member];
        let indices = match unit.kind {
            Kind::StageNorm => f.indices.iter().map(|i| i + 1).collect(),
            Kind::BoxHead if f.indices.first().is_some_and(|n| shared_heads.contains(n)) => continue,
            Kind::BoxHeadAlias => continue,
            _ => f.indices.clone(),
        };
        let prefix = fill(unit.hf, &indices);
        match to {
            To::Drop => {}
            To::Same => emit(
                format!("{prefix}{suffix}"),
                f.key.clone(),
                rename(f.tensor, &prefix, suffix),
                &mut report,
            ),
            To::Name(name) => {
                emit(format!("{prefix}{name}"), f.key.clone(), rename(f.tensor, &prefix, name), &mut report)
            }
            To::Qkv(template) => match split_qkv(&f.tensor) {
                Ok(parts) => {
                    for (part, tensor) in ["query", "key", "value"].into_iter().zip(parts) {
                        let name = format!("{prefix}{}", template.replace('*', part));
                        let mut tensor = tensor;
                        tensor.name = name.clone();
                        emit(name, format!("{} ({part} part)", f.key), tensor, &mut report);
                    }
                }
                Err(problem) => report.other.push(format!("{}: {problem}", f.key)),
            },
        }
    }

    if !(report.missing.is_empty()
        && report.unexpected.is_empty()
        && report.mis_shaped.is_empty()
        && report.duplicates.is_empty()
        && report.other.is_empty())
    {
        return Err(WeightsError::Mismatch(Box::new(report)));
    }
    Ok(IdeaCheckpoint { path: path.to_path_buf(), tensors: out.into_values().collect(), sources })
}

fn rename(mut tensor: PackTensor, prefix: &str, suffix: &str) -> PackTensor {
    tensor.name = format!("{prefix}{suffix}");
    tensor
}

/// The three equal row blocks of a fused `[3n, ...]` query / key / value tensor, each read
/// lazily from the fused one.
pub(super) fn split_qkv(fused: &PackTensor) -> Result<[PackTensor; 3], String> {
    let dims = fused.shape.to_vec();
    let rows = dims.first().copied().unwrap_or(0);
    let square = dims.len() != 2 || dims.get(1).is_some_and(|&d| rows == 3 * d);
    if dims.is_empty() || dims.len() > 2 || rows == 0 || !rows.is_multiple_of(3) || !square {
        return Err(format!(
            "shape {dims:?} cannot be split into query, key and value (expected [3n, n] or [3n])"
        ));
    }
    let len = fused.byte_len();
    if !len.is_multiple_of(3) {
        return Err(format!("{len} bytes cannot be split into three equal parts"));
    }
    let part = len / 3;
    let mut shape = dims;
    shape[0] = rows / 3;
    let make = |i: usize| {
        let source = fused.clone();
        let range = i * part..(i + 1) * part;
        PackTensor::deferred(fused.name.clone(), fused.dtype, shape.clone(), None, part, move || {
            let bytes = source.to_bytes()?;
            let slice = bytes.get(range.clone()).ok_or_else(|| {
                PackError::TensorBytesSizeMismatch(format!(
                    "{}: {} bytes where {} were expected",
                    source.name,
                    bytes.len(),
                    3 * part
                ))
            })?;
            Ok(Bytes::from_bytes_vec(slice.to_vec()))
        })
    };
    Ok([make(0), make(1), make(2)])
}
