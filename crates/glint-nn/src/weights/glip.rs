//! Official GLIP checkpoints (microsoft/GLIP, maskrcnn-benchmark's module tree:
//! `glip_tiny_model_o365_goldg.pth` and fine-tunes saved by the same code), converted to the
//! parameter names of glint's [`Glip`](crate::detector::glip::Glip) (as its `model.safetensors`
//! holds them).
//!
//! Such a file is a pickled `{"model": state_dict, ...}` (often with `model_ema` beside it, not
//! read), every key usually prefixed `module.` (saved from `DistributedDataParallel`). The
//! conversion, by key:
//!
//! | official | glint |
//! |---|---|
//! | `backbone.body.patch_embed.{proj,norm}` | `backbone.embeddings.{patch_embeddings.projection,norm}` |
//! | `backbone.body.layers.L.blocks.B.{norm1,norm2,attn.proj,mlp.fc1,mlp.fc2}` | `backbone.encoder.layers.L.blocks.B.{layernorm_before,layernorm_after,attention.output.dense,intermediate.dense,output.dense}` |
//! | `….attn.qkv` `[3C, C]` | `….attention.{query,key,value}`, split along dim 0 |
//! | `….attn.relative_position_bias_table` | `….attention.relative_position_bias_table` |
//! | `backbone.body.layers.L.downsample.*` | `backbone.encoder.layers.L.downsample.*` |
//! | `backbone.body.norm{i}` (after Swin stage `i`, 0-based) | `backbone.hidden_states_norms.{i+1}` |
//! | `backbone.fpn.fpn_inner{k}`, `fpn_layer{k}` (`k` = 2, 3, 4) | `fpn.lateral.{k-2}`, `fpn.output.{k-2}` |
//! | `backbone.fpn.top_blocks.p6`, `.p7` | `fpn.extra.0`, `fpn.extra.1` |
//! | `language_backbone.body.model.*` (BERT) | `text.*` (`attention.self` → `attention.self_attention`, `LayerNorm` → `layer_norm`) |
//! | `rpn.head.dyhead_tower.{3i}.b_attn.*` (fusion) | `head.layers.i.fusion.*` (`v`/`l` → `vision`/`text`, `gamma_*` → `*_param`) |
//! | `rpn.head.dyhead_tower.{3i+1}.*` (BERT layer) | `head.layers.i.text_layer.*` |
//! | `rpn.head.dyhead_tower.{3i+2}.DyConv.{0,1,2}.{conv,bn}` | `head.layers.i.dyconv.conv_{coarser,same,finer}.{·,norm}` |
//! | `rpn.head.dyhead_tower.{3i+2}.{offset,AttnConv.1,relu.fc.0,relu.fc.2}` | `….dyconv.{offset,attention,dyrelu.fc1,dyrelu.fc2}` |
//! | `rpn.head.{bbox_pred,centerness,log_scale,bias_lang,bias0}` | `head.*` |
//! | `rpn.head.dot_product_projection_text` | `head.text_projection` |
//! | `rpn.head.scales.N.scale` (one `[1]` each) | `head.scales` (`[levels]`, stacked in level order) |
//!
//! Deliberately dropped: `rpn.head.cls_logits` (GLIP evaluates it only for its channel count),
//! `rpn.anchor_generator.cell_anchors.*` (recomputed), the Swin `relative_position_index`
//! buffers, and BERT's `position_ids` / `token_type_ids` buffers and `pooler`. Every other key is
//! an error, listed by name in one [`WeightsError::Mismatch`], as is every glint parameter the
//! file does not fill. Tensors are read lazily, when applied.
//!
//! The list of keys the official GLIP-T holds (`tests/fixtures/glip_official/glip_t_keys.tsv`,
//! built from the official module tree) is converted in the tests, which check it fills every
//! parameter of [`GlipConfig::glip_t`](crate::detector::glip::GlipConfig::glip_t) exactly once
//! with the right shape.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::store::burn_pack::{Error as PackError, Tensor as PackTensor};
use burn::tensor::Bytes;
use regex::Regex;

use super::idea::split_qkv;
use super::{LoadOptions, Mismatch, WeightsError, apply_converted, read_pth};

/// What one official key becomes.
enum Target {
    Name(String),
    /// Fused query / key / value: `*` in the name stands for `query`, `key`, `value`.
    Qkv(String),
    /// `rpn.head.scales.N.scale`: entry `N` of `head.scales`.
    Scale(usize),
    Drop,
}

/// Renames inside a BERT layer (official = transformers' names).
fn bert_suffix(suffix: &str) -> String {
    suffix.replace("attention.self.", "attention.self_attention.").replace("LayerNorm.", "layer_norm.")
}

/// Renames inside a fusion block (`b_attn.` stripped).
fn fusion_suffix(suffix: &str) -> Option<String> {
    let renamed = match suffix {
        "gamma_v" => "vision_param".to_string(),
        "gamma_l" => "text_param".to_string(),
        _ => {
            let (module, param) = suffix.rsplit_once('.')?;
            let module = match module {
                "layer_norm_v" => "layer_norm_vision",
                "layer_norm_l" => "layer_norm_text",
                "attn.v_proj" => "attn.vision_proj",
                "attn.l_proj" => "attn.text_proj",
                "attn.values_v_proj" => "attn.values_vision_proj",
                "attn.values_l_proj" => "attn.values_text_proj",
                "attn.out_v_proj" => "attn.out_vision_proj",
                "attn.out_l_proj" => "attn.out_text_proj",
                _ => return None,
            };
            format!("{module}.{param}")
        }
    };
    Some(renamed)
}

/// Renames inside a DyConv (official suffix after `dyhead_tower.N.`).
fn dyconv_suffix(suffix: &str) -> Option<String> {
    let (module, param) = suffix.rsplit_once('.')?;
    let module = match module {
        "DyConv.0.conv" => "conv_coarser",
        "DyConv.1.conv" => "conv_same",
        "DyConv.2.conv" => "conv_finer",
        "DyConv.0.bn" => "conv_coarser.norm",
        "DyConv.1.bn" => "conv_same.norm",
        "DyConv.2.bn" => "conv_finer.norm",
        "offset" => "offset",
        "AttnConv.1" => "attention",
        "relu.fc.0" => "dyrelu.fc1",
        "relu.fc.2" => "dyrelu.fc2",
        _ => return None,
    };
    Some(format!("{module}.{param}"))
}

/// Renames inside a Swin block (official suffix after `blocks.B.`).
fn swin_block_suffix(suffix: &str) -> Option<Target> {
    Some(match suffix {
        "attn.qkv.weight" => Target::Qkv("attention.*.weight".into()),
        "attn.qkv.bias" => Target::Qkv("attention.*.bias".into()),
        "attn.relative_position_index" => Target::Drop,
        "attn.relative_position_bias_table" => Target::Name("attention.relative_position_bias_table".into()),
        _ => {
            let (module, param) = suffix.rsplit_once('.')?;
            let module = match module {
                "norm1" => "layernorm_before",
                "norm2" => "layernorm_after",
                "attn.proj" => "attention.output.dense",
                "mlp.fc1" => "intermediate.dense",
                "mlp.fc2" => "output.dense",
                _ => return None,
            };
            Target::Name(format!("{module}.{param}"))
        }
    })
}

/// What `key` (without `module.`) becomes; `None` = unknown.
fn target(key: &str) -> Option<Target> {
    static RULES: std::sync::OnceLock<Rules> = std::sync::OnceLock::new();
    let rules = RULES.get_or_init(Rules::new);
    let name = |s: String| Some(Target::Name(s));
    if let Some(rest) = key.strip_prefix("backbone.body.") {
        if let Some(rest) = rest.strip_prefix("patch_embed.") {
            return match rest {
                "proj.weight" | "proj.bias" => {
                    name(format!("backbone.embeddings.patch_embeddings.projection.{}", &rest[5..]))
                }
                "norm.weight" | "norm.bias" => name(format!("backbone.embeddings.{rest}")),
                _ => None,
            };
        }
        if let Some(c) = rules.swin_block.captures(rest) {
            let prefix = format!("backbone.encoder.layers.{}.blocks.{}.", &c[1], &c[2]);
            return match swin_block_suffix(&c[3])? {
                Target::Name(suffix) => name(format!("{prefix}{suffix}")),
                Target::Qkv(suffix) => Some(Target::Qkv(format!("{prefix}{suffix}"))),
                other => Some(other),
            };
        }
        if let Some(c) = rules.swin_downsample.captures(rest) {
            return name(format!("backbone.encoder.layers.{}.downsample.{}", &c[1], &c[2]));
        }
        if let Some(c) = rules.swin_norm.captures(rest) {
            let stage: usize = c[1].parse().ok()?;
            return name(format!("backbone.hidden_states_norms.{}.{}", stage + 1, &c[2]));
        }
        return None;
    }
    if let Some(c) = rules.fpn.captures(key) {
        let level: usize = c[2].parse().ok()?;
        let kind = if &c[1] == "inner" { "lateral" } else { "output" };
        return name(format!("fpn.{kind}.{}.{}", level.checked_sub(2)?, &c[3]));
    }
    if let Some(rest) = key.strip_prefix("backbone.fpn.top_blocks.") {
        let (block, param) = rest.split_once('.')?;
        let index = match block {
            "p6" => 0,
            "p7" => 1,
            _ => return None,
        };
        return name(format!("fpn.extra.{index}.{param}"));
    }
    if let Some(rest) = key.strip_prefix("language_backbone.body.model.") {
        if rest.starts_with("pooler.")
            || rest == "embeddings.position_ids"
            || rest == "embeddings.token_type_ids"
        {
            return Some(Target::Drop);
        }
        return name(format!("text.{}", bert_suffix(rest)));
    }
    if key.starts_with("rpn.anchor_generator.cell_anchors.") || key.starts_with("rpn.head.cls_logits.") {
        return Some(Target::Drop);
    }
    if let Some(c) = rules.tower.captures(key) {
        let index: usize = c[1].parse().ok()?;
        let (layer, part, suffix) = (index / 3, index % 3, &c[2]);
        let prefix = format!("head.layers.{layer}.");
        return match part {
            0 => name(format!("{prefix}fusion.{}", fusion_suffix(suffix.strip_prefix("b_attn.")?)?)),
            1 => name(format!("{prefix}text_layer.{}", bert_suffix(suffix))),
            _ => name(format!("{prefix}dyconv.{}", dyconv_suffix(suffix)?)),
        };
    }
    if let Some(c) = rules.scale.captures(key) {
        return Some(Target::Scale(c[1].parse().ok()?));
    }
    let rest = key.strip_prefix("rpn.head.")?;
    match rest {
        "log_scale" | "bias_lang" | "bias0" => name(format!("head.{rest}")),
        "dot_product_projection_text.weight" | "dot_product_projection_text.bias" => {
            name(format!("head.text_projection.{}", &rest["dot_product_projection_text.".len()..]))
        }
        "bbox_pred.weight" | "bbox_pred.bias" | "centerness.weight" | "centerness.bias" => {
            name(format!("head.{rest}"))
        }
        _ => None,
    }
}

struct Rules {
    swin_block: Regex,
    swin_downsample: Regex,
    swin_norm: Regex,
    fpn: Regex,
    tower: Regex,
    scale: Regex,
}

impl Rules {
    fn new() -> Self {
        let re = |pattern: &str| Regex::new(pattern).expect("a valid pattern");
        Self {
            swin_block: re(r"^layers\.(\d+)\.blocks\.(\d+)\.(.+)$"),
            swin_downsample: re(r"^layers\.(\d+)\.downsample\.(reduction\.weight|norm\.weight|norm\.bias)$"),
            swin_norm: re(r"^norm(\d+)\.(weight|bias)$"),
            fpn: re(r"^backbone\.fpn\.fpn_(inner|layer)(\d+)\.(weight|bias)$"),
            tower: re(r"^rpn\.head\.dyhead_tower\.(\d+)\.(.+)$"),
            scale: re(r"^rpn\.head\.scales\.(\d+)\.scale$"),
        }
    }
}

/// The prefix `torch.nn.parallel.DistributedDataParallel` adds to every key.
const DDP_PREFIX: &str = "module.";

/// An official GLIP checkpoint converted to glint's names (lazily: nothing is read until applied).
#[derive(Clone)]
pub struct GlipCheckpoint {
    path: PathBuf,
    tensors: Vec<PackTensor>,
    sources: HashMap<String, String>,
}

impl std::fmt::Debug for GlipCheckpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GlipCheckpoint")
            .field("path", &self.path)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

/// Whether tensors named as in a state dict (with or without `module.`) are an official GLIP
/// model's: it has a VL-DyHead tower.
pub fn is_official_glip(names: impl IntoIterator<Item = impl AsRef<str>>) -> bool {
    names.into_iter().any(|n| {
        let n = n.as_ref();
        n.strip_prefix(DDP_PREFIX).unwrap_or(n).starts_with("rpn.head.dyhead_tower.")
    })
}

impl GlipCheckpoint {
    /// Read an official GLIP `.pth` (`{"model": state_dict, ...}`, or a bare state dict) and
    /// convert it; fails, naming the file, on a read error or keys the conversion does not know
    /// (all listed).
    pub fn read(path: impl AsRef<Path>) -> Result<Self, WeightsError> {
        let path = path.as_ref();
        Self::from_tensors(path, read_pth(path)?)
    }

    /// Convert tensors named as in an official GLIP state dict; `path` is named in errors.
    pub fn from_tensors(path: impl AsRef<Path>, tensors: Vec<PackTensor>) -> Result<Self, WeightsError> {
        let path = path.as_ref();
        let mut report = Mismatch { path: path.to_path_buf(), ..Mismatch::default() };
        if !is_official_glip(tensors.iter().map(|t| t.name.as_str())) {
            let message =
                "not an official GLIP checkpoint: it has no `rpn.head.dyhead_tower.` tensors".to_string();
            return Err(WeightsError::Read { path: path.to_path_buf(), message });
        }
        let mut out: BTreeMap<String, PackTensor> = BTreeMap::new();
        let mut sources: HashMap<String, String> = HashMap::new();
        let mut scales: BTreeMap<usize, PackTensor> = BTreeMap::new();
        let mut emit = |name: String, source: String, mut tensor: PackTensor, report: &mut Mismatch| {
            if let Some(previous) = sources.get(&name) {
                report.duplicates.push((name, vec![previous.clone(), source]));
                return;
            }
            tensor.name = name.clone();
            sources.insert(name.clone(), source);
            out.insert(name, tensor);
        };
        for tensor in tensors {
            let key = tensor.name.strip_prefix(DDP_PREFIX).unwrap_or(&tensor.name).to_string();
            match target(&key) {
                None => report.unexpected.push(tensor.name.clone()),
                Some(Target::Drop) => {}
                Some(Target::Name(name)) => {
                    let source = tensor.name.clone();
                    emit(name, source, tensor, &mut report);
                }
                Some(Target::Qkv(template)) => match split_qkv(&tensor) {
                    Ok(parts) => {
                        for (part, piece) in ["query", "key", "value"].into_iter().zip(parts) {
                            let source = format!("{} ({part} part)", tensor.name);
                            emit(template.replace('*', part), source, piece, &mut report);
                        }
                    }
                    Err(problem) => report.other.push(format!("{}: {problem}", tensor.name)),
                },
                Some(Target::Scale(level)) => {
                    if let Some(previous) = scales.insert(level, tensor.clone()) {
                        report
                            .duplicates
                            .push((format!("head.scales[{level}]"), vec![previous.name, tensor.name]));
                    }
                }
            }
        }
        if !scales.is_empty() {
            match stack_scales(&scales) {
                Ok(stacked) => {
                    let source = scales.values().map(|t| t.name.as_str()).collect::<Vec<_>>().join(" + ");
                    emit("head.scales".into(), source, stacked, &mut report);
                }
                Err(problem) => report.other.push(problem),
            }
        }
        if !(report.unexpected.is_empty() && report.duplicates.is_empty() && report.other.is_empty()) {
            return Err(WeightsError::Mismatch(Box::new(report)));
        }
        Ok(Self { path: path.to_path_buf(), tensors: out.into_values().collect(), sources })
    }

    /// The converted tensors, under glint's names, sorted by name.
    pub fn tensors(&self) -> &[PackTensor] {
        &self.tensors
    }

    /// The official model these weights are: GLIP-L (eight tower layers) or else GLIP-T.
    pub fn official_config(&self) -> crate::detector::glip::GlipConfig {
        use crate::detector::glip::GlipConfig;
        match self.tensors.iter().any(|t| t.name.starts_with("head.layers.7.")) {
            true => GlipConfig::glip_l(),
            false => GlipConfig::glip_t(),
        }
    }

    /// The official key (as in the file) a converted tensor came from.
    pub fn source(&self, name: &str) -> Option<&str> {
        self.sources.get(name).map(String::as_str)
    }

    /// Load into a [`Glip`](crate::detector::glip::Glip) (or one of its parts, with `options`'
    /// prefix): all or nothing, unexpected and mis-shaped tensors reported under their official
    /// keys.
    pub fn apply<M: Module>(&self, module: M, options: &LoadOptions) -> Result<M, WeightsError> {
        apply_converted(module, &self.path, self.tensors.clone(), options, &self.sources)
    }
}

/// The per-level `[1]` scales as one `[levels]` tensor, in level order (levels 0..n, all present,
/// one dtype).
fn stack_scales(scales: &BTreeMap<usize, PackTensor>) -> Result<PackTensor, String> {
    let parts: Vec<PackTensor> = scales.values().cloned().collect();
    let names = || parts.iter().map(|t| t.name.clone()).collect::<Vec<_>>().join(", ");
    if scales.keys().copied().ne(0..scales.len()) {
        return Err(format!(
            "rpn.head.scales: levels {:?} are not 0..{}",
            scales.keys().collect::<Vec<_>>(),
            scales.len()
        ));
    }
    let dtype = parts[0].dtype;
    if parts.iter().any(|t| t.dtype != dtype || t.shape.iter().product::<usize>() != 1) {
        return Err(format!("{}: each scale must be one value of one dtype", names()));
    }
    let part = parts[0].byte_len();
    let count = parts.len();
    let name = parts[0].name.clone();
    Ok(PackTensor::deferred(name, dtype, vec![count], None, part * count, move || {
        let mut bytes = Vec::with_capacity(part * count);
        for t in &parts {
            let b = t.to_bytes()?;
            if b.len() != part {
                return Err(PackError::TensorBytesSizeMismatch(format!("{}: {} bytes", t.name, b.len())));
            }
            bytes.extend_from_slice(&b);
        }
        Ok(Bytes::from_bytes_vec(bytes))
    }))
}
