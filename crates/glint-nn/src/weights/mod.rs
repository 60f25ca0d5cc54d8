//! Loading checkpoints into Burn modules: the one shared way every stage loads its weights.
//!
//! A checkpoint (Hugging Face `.safetensors` or a PyTorch `.pth`) is read lazily with burn-store,
//! its keys are narrowed to a prefix (to load one sub-module out of a whole-model checkpoint),
//! deliberately unused keys are dropped, the rest renamed by a short regex table, and the tensors
//! are applied through burn-store's [`PyTorchToBurnAdapter`]: `Linear` weights are transposed from
//! PyTorch's `[out, in]` to Burn's `[in, out]`, and normalisation layers' `weight` / `bias` fill
//! Burn's `gamma` / `beta`. Floats are cast to the module device's float type.
//!
//! Loading is all or nothing: every parameter of the module must be filled, every selected key
//! must be used, and every shape must agree. Otherwise [`WeightsError::Mismatch`] names the file
//! and lists, in one error, every missing, unexpected and mis-shaped tensor, so nothing is ever
//! silently left at its random initialisation.
//!
//! ```no_run
//! # use glint_nn::weights::{load_safetensors, LoadOptions};
//! # fn demo<M: burn::module::Module>(bert: M) -> Result<M, glint_nn::weights::WeightsError> {
//! let options = LoadOptions::new()
//!     .with_prefix("model.text_backbone.")
//!     .with_ignore(r"^pooler\.");
//! let bert = load_safetensors(bert, "model.safetensors", &options)?;
//! # Ok(bert) }
//! ```

pub mod glip;
pub mod idea;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleVisitor, Param};
use burn::store::burn_pack::Tensor as PackTensor;
use burn::store::{
    ApplyError, BurnToPyTorchAdapter, ChainAdapter, FloatCastAdapter, KeyRemapper, ModuleAdapter,
    ModuleSnapshot, ModuleStore, PyTorchToBurnAdapter, PytorchStore, SafetensorsStore,
};
use burn::tensor::{Bool, DType, Int, Tensor, TensorData};

/// How checkpoint keys are selected and renamed before they are matched to module parameters.
///
/// Order of operations on every key of the file:
/// 1. keys not starting with [`prefix`](Self::prefix) are outside the sub-module and left alone
///    (neither loaded nor reported); the prefix is stripped from the others;
/// 2. keys (prefix stripped) matching one of the [`ignore`](Self::ignore) regexes are dropped on
///    purpose (e.g. `^pooler\.` for a BERT whose pooler is not used);
/// 3. every [`remap`](Self::remap) rule (regex, replacement with `$1`-style groups) is applied in
///    order, each to the result of the previous one.
///
/// The result must be the module's parameter path in PyTorch naming (e.g.
/// `encoder.layer.0.attention.self.query.weight`; `LayerNorm` `weight` / `bias` stand for Burn's
/// `gamma` / `beta`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Only keys under this prefix are loaded, with the prefix stripped; empty = the whole file.
    /// A missing trailing `.` is added (`"model.text_backbone"` = `"model.text_backbone."`).
    pub prefix: String,
    /// Regexes of (prefix-stripped) keys that are deliberately not loaded.
    pub ignore: Vec<String>,
    /// `(regex, replacement)` renames applied in order after the prefix is stripped.
    pub remap: Vec<(String, String)>,
    /// `.pth` only: the entry of the pickled dict that holds the state dict (e.g. `"model"` for
    /// IDEA-Research checkpoints, `{"model": state_dict, ...}`); `None` = the top level.
    pub top_level_key: Option<String>,
}

impl LoadOptions {
    /// Whole file, no renames, nothing ignored.
    pub fn new() -> Self {
        Self::default()
    }

    /// Load only the keys under `prefix` (stripped before matching).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Drop (prefix-stripped) keys matching this regex instead of reporting them as unexpected.
    pub fn with_ignore(mut self, pattern: impl Into<String>) -> Self {
        self.ignore.push(pattern.into());
        self
    }

    /// Rename keys matching `pattern` (regex) with `replacement` (`$1`-style groups allowed).
    pub fn with_remap(mut self, pattern: impl Into<String>, replacement: impl Into<String>) -> Self {
        self.remap.push((pattern.into(), replacement.into()));
        self
    }

    /// Append a whole remap table.
    pub fn with_remaps(mut self, table: &[(&str, &str)]) -> Self {
        self.remap.extend(table.iter().map(|(p, r)| ((*p).to_string(), (*r).to_string())));
        self
    }

    /// `.pth` only: read the state dict from this entry of the top-level dict.
    pub fn with_top_level_key(mut self, key: impl Into<String>) -> Self {
        self.top_level_key = Some(key.into());
        self
    }

    fn normalised_prefix(&self) -> String {
        if self.prefix.is_empty() || self.prefix.ends_with('.') {
            self.prefix.clone()
        } else {
            format!("{}.", self.prefix)
        }
    }
}

/// A tensor whose shape in the checkpoint differs from the module's parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeMismatch {
    /// The module parameter, in PyTorch naming (prefix stripped, after remapping).
    pub name: String,
    /// The key in the checkpoint file.
    pub key: String,
    /// The shape the module needs, in the checkpoint's (PyTorch) layout.
    pub expected: Vec<usize>,
    /// The shape found in the checkpoint.
    pub found: Vec<usize>,
}

/// Everything that kept a checkpoint from filling a module, all at once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mismatch {
    /// The checkpoint file.
    pub path: PathBuf,
    /// The key prefix that was loaded (empty = whole file).
    pub prefix: String,
    /// Module parameters (PyTorch naming, prefix stripped) that no checkpoint key filled.
    pub missing: Vec<String>,
    /// Checkpoint keys (as in the file) under the prefix that no parameter used.
    pub unexpected: Vec<String>,
    /// Tensors present on both sides whose shapes differ.
    pub mis_shaped: Vec<ShapeMismatch>,
    /// Module names that several checkpoint keys were renamed to: `(name, keys)`.
    pub duplicates: Vec<(String, Vec<String>)>,
    /// Other per-tensor failures (wrong dtype, unreadable data), each naming its tensor.
    pub other: Vec<String>,
}

impl Mismatch {
    fn is_empty(&self) -> bool {
        self.missing.is_empty()
            && self.unexpected.is_empty()
            && self.mis_shaped.is_empty()
            && self.duplicates.is_empty()
            && self.other.is_empty()
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "checkpoint {}", self.path.display())?;
        if !self.prefix.is_empty() {
            write!(f, " (keys under `{}`)", self.prefix)?;
        }
        write!(f, " does not fit the model:")?;
        let mut sep = " ";
        if !self.missing.is_empty() {
            write!(f, "{sep}{} missing tensor(s): {}", self.missing.len(), self.missing.join(", "))?;
            sep = "; ";
        }
        if !self.unexpected.is_empty() {
            write!(f, "{sep}{} unexpected tensor(s): {}", self.unexpected.len(), self.unexpected.join(", "))?;
            sep = "; ";
        }
        if !self.mis_shaped.is_empty() {
            write!(f, "{sep}{} mis-shaped tensor(s): ", self.mis_shaped.len())?;
            for (i, m) in self.mis_shaped.iter().enumerate() {
                if i > 0 {
                    write!(f, ", ")?;
                }
                write!(f, "{}", m.key)?;
                if !m.key.ends_with(&m.name) {
                    write!(f, " (as {})", m.name)?;
                }
                write!(f, " expected {:?}, found {:?}", m.expected, m.found)?;
            }
            sep = "; ";
        }
        if !self.duplicates.is_empty() {
            write!(f, "{sep}{} name(s) given by several keys: ", self.duplicates.len())?;
            for (i, (name, keys)) in self.duplicates.iter().enumerate() {
                if i > 0 {
                    write!(f, ", ")?;
                }
                write!(f, "{name} <- {}", keys.join(" | "))?;
            }
            sep = "; ";
        }
        if !self.other.is_empty() {
            write!(f, "{sep}{} other error(s): {}", self.other.len(), self.other.join("; "))?;
        }
        Ok(())
    }
}

/// Why a checkpoint could not be loaded. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// The file could not be opened or parsed.
    #[error("cannot read checkpoint {}: {message}", path.display())]
    Read {
        /// The checkpoint file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A prefix / ignore / remap pattern is not a valid regex.
    #[error("invalid key pattern `{pattern}` for checkpoint {}: {message}", path.display())]
    Pattern {
        /// The checkpoint file.
        path: PathBuf,
        /// The offending pattern.
        pattern: String,
        /// The regex error.
        message: String,
    },
    /// The checkpoint's tensors do not fit the module; every problem is listed.
    #[error("{0}")]
    Mismatch(Box<Mismatch>),
    /// The weights could not be written.
    #[error("cannot write checkpoint {}: {message}", path.display())]
    Write {
        /// The checkpoint file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

impl WeightsError {
    /// The full report when the checkpoint did not fit the module.
    pub fn mismatch(&self) -> Option<&Mismatch> {
        match self {
            WeightsError::Mismatch(m) => Some(m),
            _ => None,
        }
    }
}

/// Load a Hugging Face style `.safetensors` checkpoint into `module`.
///
/// Fails, naming the file, when it cannot be read or when any parameter is missing, any selected
/// key is unused, or any shape differs (all listed in one [`WeightsError::Mismatch`]).
pub fn load_safetensors<M: Module>(
    module: M,
    path: impl AsRef<Path>,
    options: &LoadOptions,
) -> Result<M, WeightsError> {
    let path = path.as_ref();
    apply_checkpoint(module, path, read_safetensors(path)?, options)
}

/// Every tensor of a `.safetensors` file, read lazily (data is loaded when applied), so that
/// one read can fill several modules with [`apply_tensors`].
pub fn read_safetensors(path: impl AsRef<Path>) -> Result<Vec<PackTensor>, WeightsError> {
    let path = path.as_ref();
    let mut store = SafetensorsStore::from_file(path);
    Ok(store.get_all_tensors().map_err(|e| read_error(path, e))?.values().cloned().collect())
}

/// Load a PyTorch `.pth` / `.pt` checkpoint (a pickled state dict, optionally inside the dict
/// entry [`LoadOptions::top_level_key`]) into `module`, with the same checks and reporting as
/// [`load_safetensors`]. Layer indices are kept as in the file (no renumbering).
pub fn load_pytorch<M: Module>(
    module: M,
    path: impl AsRef<Path>,
    options: &LoadOptions,
) -> Result<M, WeightsError> {
    let path = path.as_ref();
    if !path.is_file() {
        return Err(WeightsError::Read { path: path.to_path_buf(), message: "no such file".to_string() });
    }
    let mut store = PytorchStore::from_file(path).map_indices_contiguous(false);
    if let Some(key) = &options.top_level_key {
        store = store.with_top_level_key(key.clone());
    }
    // The reader may panic on a malformed pickle; keep that from escaping as a panic.
    let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        store
            .get_all_tensors()
            .map(|all| all.values().cloned().collect::<Vec<_>>())
            .map_err(|e| e.to_string())
    }));
    let tensors = match read {
        Ok(Ok(tensors)) => tensors,
        Ok(Err(message)) => {
            return Err(WeightsError::Read { path: path.to_path_buf(), message });
        }
        Err(_) => {
            return Err(WeightsError::Read {
                path: path.to_path_buf(),
                message: "malformed PyTorch checkpoint".to_string(),
            });
        }
    };
    apply_checkpoint(module, path, tensors, options)
}

/// Apply tensors that were already read (and possibly renamed, e.g. converted from another
/// checkpoint layout by [`idea`]) to `module`, with the same selection, renaming, checks and
/// reporting as [`load_safetensors`]; `path` is the file they came from, named in errors.
pub fn apply_tensors<M: Module>(
    module: M,
    path: impl AsRef<Path>,
    tensors: Vec<PackTensor>,
    options: &LoadOptions,
) -> Result<M, WeightsError> {
    apply_checkpoint(module, path.as_ref(), tensors, options)
}

/// The tensors of an original checkpoint `.pth` (lazily read): the state dict under `"model"`
/// (the layout IDEA-Research's and GLIP's code save), or the top level.
pub fn read_pth(path: &Path) -> Result<Vec<PackTensor>, WeightsError> {
    if !path.is_file() {
        return Err(WeightsError::Read { path: path.to_path_buf(), message: "no such file".to_string() });
    }
    let read = |key: Option<&str>| -> Result<Vec<PackTensor>, String> {
        let mut store = PytorchStore::from_file(path).map_indices_contiguous(false);
        if let Some(key) = key {
            store = store.with_top_level_key(key);
        }
        // The reader may panic on a malformed pickle; keep that from escaping as a panic.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            store
                .get_all_tensors()
                .map(|all| all.values().cloned().collect::<Vec<_>>())
                .map_err(|e| e.to_string())
        }))
        .unwrap_or_else(|_| Err("malformed PyTorch checkpoint".to_string()))
    };
    match read(Some("model")) {
        Ok(tensors) => Ok(tensors),
        // Not IDEA's `{"model": ...}`: perhaps a bare state dict (the conversion then decides).
        Err(first) => read(None).map_err(|_| WeightsError::Read {
            path: path.to_path_buf(),
            message: format!("{first} (a checkpoint of IDEA-Research's or GLIP's code is a pickled {{\"model\": state_dict}})"),
        }),
    }
}

/// [`apply_tensors`] for tensors converted from another checkpoint layout: unexpected,
/// mis-shaped, duplicated and unreadable tensors are reported under the keys of the original
/// file (`sources`: converted name -> original key).
pub(crate) fn apply_converted<M: Module>(
    module: M,
    path: &Path,
    tensors: Vec<PackTensor>,
    options: &LoadOptions,
    sources: &HashMap<String, String>,
) -> Result<M, WeightsError> {
    apply_tensors(module, path, tensors, options).map_err(|error| match error {
        WeightsError::Mismatch(mut report) => {
            let source = |name: &str| sources.get(name).cloned().unwrap_or_else(|| name.to_string());
            for key in &mut report.unexpected {
                *key = source(key);
            }
            for m in &mut report.mis_shaped {
                m.key = source(&m.key);
            }
            for (_, keys) in &mut report.duplicates {
                for key in keys.iter_mut() {
                    *key = source(key);
                }
            }
            for line in &mut report.other {
                if let Some((name, rest)) = line.split_once(": ")
                    && let Some(key) = sources.get(name)
                {
                    *line = format!("{key}: {rest}");
                }
            }
            WeightsError::Mismatch(report)
        }
        other => other,
    })
}

fn read_error(path: &Path, e: impl fmt::Display) -> WeightsError {
    WeightsError::Read { path: path.to_path_buf(), message: e.to_string() }
}

fn compile(path: &Path, patterns: &[(String, String)]) -> Result<KeyRemapper, WeightsError> {
    let mut remapper = KeyRemapper::new();
    for (pattern, replacement) in patterns {
        remapper = remapper.add_pattern(pattern, replacement.clone()).map_err(|e| WeightsError::Pattern {
            path: path.to_path_buf(),
            pattern: pattern.clone(),
            message: e.to_string(),
        })?;
    }
    Ok(remapper)
}

/// The selection and renaming of [`LoadOptions`], compiled.
struct Renaming {
    prefix: String,
    ignore: KeyRemapper,
    remap: KeyRemapper,
}

impl Renaming {
    fn new(path: &Path, options: &LoadOptions) -> Result<Self, WeightsError> {
        let ignore: Vec<_> = options.ignore.iter().map(|p| (p.clone(), String::new())).collect();
        Ok(Self {
            prefix: options.normalised_prefix(),
            ignore: compile(path, &ignore)?,
            remap: compile(path, &options.remap)?,
        })
    }

    /// The parameter (PyTorch naming) a checkpoint key fills; `None` for keys outside the
    /// prefix or ignored.
    fn parameter(&self, key: &str) -> Option<String> {
        let stripped = key.strip_prefix(self.prefix.as_str())?;
        if self.ignore.patterns.iter().any(|(re, _)| re.is_match(stripped)) {
            return None;
        }
        let mut name = stripped.to_string();
        for (re, replacement) in &self.remap.patterns {
            if re.is_match(&name) {
                name = re.replace_all(&name, replacement.as_str()).into_owned();
            }
        }
        Some(name)
    }
}

/// The reverse of [`apply_tensors`]: `tensors` (a checkpoint, named as in its file) with every
/// tensor that `options` maps to a parameter of `module` replaced by that parameter's current
/// value, in the checkpoint's layout and dtype; every other tensor (other parts', ignored ones)
/// is kept as it was. A fine-tuned part is written back under its checkpoint's own keys this way.
pub fn export_tensors<M: Module>(
    module: &M,
    path: impl AsRef<Path>,
    tensors: Vec<PackTensor>,
    options: &LoadOptions,
) -> Result<Vec<PackTensor>, WeightsError> {
    let path = path.as_ref();
    let renaming = Renaming::new(path, options)?;
    let mut current: HashMap<String, PackTensor> = module
        .collect(None, Some(Box::new(BurnToPyTorchAdapter)), true)
        .into_iter()
        .map(|tensor| (tensor.name.clone(), tensor))
        .collect();
    let mut exported = Vec::with_capacity(tensors.len());
    for tensor in tensors {
        match renaming.parameter(&tensor.name).and_then(|name| current.remove(&name)) {
            Some(mut value) => {
                if value.shape != tensor.shape {
                    return Err(write_error(
                        path,
                        format!(
                            "{}: shape {:?} where the checkpoint has {:?}",
                            tensor.name, value.shape, tensor.shape
                        ),
                    ));
                }
                if value.dtype != tensor.dtype {
                    // Keep the checkpoint's precision (a float16 checkpoint stays float16).
                    let cast_error =
                        |e: &dyn fmt::Display| write_error(path, format!("{}: {e}", tensor.name));
                    let bytes = value.to_bytes().map_err(|e| cast_error(&e))?;
                    let data = TensorData::from_bytes(bytes, value.shape.clone(), value.dtype)
                        .try_cast(tensor.dtype)
                        .map_err(|e| cast_error(&e))?;
                    value = PackTensor::new(
                        String::new(),
                        tensor.dtype,
                        value.shape,
                        value.param_id,
                        data.into_bytes(),
                    );
                }
                value.name = tensor.name;
                exported.push(value);
            }
            None => exported.push(tensor),
        }
    }
    Ok(exported)
}

/// Write tensors (as [`read_safetensors`] gives them, any dtype) to a `.safetensors` file,
/// atomically.
pub fn write_safetensors(tensors: &[PackTensor], path: impl AsRef<Path>) -> Result<(), WeightsError> {
    use safetensors::tensor::{Dtype, TensorView};
    let path = path.as_ref();
    let mut owned = Vec::with_capacity(tensors.len());
    for tensor in tensors {
        let dtype = match tensor.dtype {
            DType::F64 => Dtype::F64,
            DType::F32 => Dtype::F32,
            DType::F16 => Dtype::F16,
            DType::BF16 => Dtype::BF16,
            DType::I64 => Dtype::I64,
            DType::I32 => Dtype::I32,
            DType::I16 => Dtype::I16,
            DType::I8 => Dtype::I8,
            DType::U64 => Dtype::U64,
            DType::U32 => Dtype::U32,
            DType::U16 => Dtype::U16,
            DType::U8 => Dtype::U8,
            other => {
                return Err(write_error(
                    path,
                    format!("{}: dtype {other:?} has no safetensors type", tensor.name),
                ));
            }
        };
        let bytes = tensor.to_bytes().map_err(|e| write_error(path, format!("{}: {e}", tensor.name)))?;
        owned.push((tensor.name.clone(), dtype, tensor.shape.to_vec(), bytes));
    }
    let views = owned
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes).map(|view| (name.clone(), view))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| write_error(path, e))?;
    let bytes = safetensors::serialize(views, None).map_err(|e| write_error(path, e))?;
    glint_core::io::write_atomic(path, &bytes).map_err(|e| write_error(path, e))
}

/// Select, rename and apply `tensors` (named as in the file) to `module`.
fn apply_checkpoint<M: Module>(
    mut module: M,
    path: &Path,
    tensors: Vec<PackTensor>,
    options: &LoadOptions,
) -> Result<M, WeightsError> {
    let renaming = Renaming::new(path, options)?;
    let prefix = renaming.prefix.clone();

    // Select and rename; remember where every name came from.
    let mut origin: HashMap<String, String> = HashMap::new();
    let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut selected = Vec::new();
    for mut tensor in tensors {
        let key = tensor.name.clone();
        let Some(name) = renaming.parameter(&key) else {
            continue;
        };
        by_name.entry(name.clone()).or_default().push(key.clone());
        origin.insert(name.clone(), key);
        tensor.name = name;
        selected.push(tensor);
    }

    let mut report = Mismatch { path: path.to_path_buf(), prefix: prefix.clone(), ..Mismatch::default() };
    for (name, keys) in by_name {
        if keys.len() > 1 {
            report.duplicates.push((name, keys));
        }
    }

    // Which module type holds each parameter (to name it as PyTorch does).
    let mut params = ParamCollector::default();
    module.visit(&mut params);

    let mut adapter: Box<dyn ModuleAdapter> = Box::new(PyTorchToBurnAdapter);
    if let Some(device) = module.devices().first() {
        let float: DType = device.settings().float_dtype.into();
        adapter = Box::new(ChainAdapter::new(PyTorchToBurnAdapter, FloatCastAdapter::to(float)));
    }
    let result = module.apply(selected, None, Some(adapter), true);

    for (name, _) in &result.missing {
        report.missing.push(params.pytorch_name(name));
    }
    for name in &result.unused {
        report.unexpected.push(origin.get(name).cloned().unwrap_or_else(|| name.clone()));
    }
    for error in &result.errors {
        match error {
            ApplyError::ShapeMismatch { path: name, expected, found } => {
                let mut expected = expected.to_vec();
                let mut found = found.to_vec();
                // The adapter transposed the checkpoint's Linear weight before comparing: report
                // both in the checkpoint's own layout.
                if params.is_linear_weight(name) && expected.len() == 2 && found.len() == 2 {
                    expected.reverse();
                    found.reverse();
                }
                let pytorch = params.pytorch_name(name);
                report.mis_shaped.push(ShapeMismatch {
                    key: source_key(&origin, name, &pytorch),
                    name: pytorch,
                    expected,
                    found,
                });
            }
            ApplyError::DTypeMismatch { path: name, expected, found } => {
                let pytorch = params.pytorch_name(name);
                report.other.push(format!(
                    "{}: dtype {found:?} where {expected:?} is needed",
                    source_key(&origin, name, &pytorch)
                ));
            }
            ApplyError::AdapterError { path: name, message }
            | ApplyError::LoadError { path: name, message } => {
                let pytorch = params.pytorch_name(name);
                report.other.push(format!("{}: {message}", source_key(&origin, name, &pytorch)));
            }
        }
    }

    if report.is_empty() { Ok(module) } else { Err(WeightsError::Mismatch(Box::new(report))) }
}

/// The checkpoint key that fed module parameter `name` (Burn naming) / `pytorch` (its name in
/// PyTorch naming): the norm layers' `gamma` is found under `weight` in the checkpoint.
fn source_key(origin: &HashMap<String, String>, name: &str, pytorch: &str) -> String {
    origin.get(pytorch).or_else(|| origin.get(name)).cloned().unwrap_or_else(|| pytorch.to_string())
}

const NORM_TYPES: [&str; 4] = ["Struct:LayerNorm", "Struct:BatchNorm", "Struct:GroupNorm", "Struct:RmsNorm"];

/// Records, for every parameter path (enum variants skipped, as when loading), the type of the
/// module that holds it, without initialising lazy parameters.
#[derive(Default)]
struct ParamCollector {
    path: Vec<String>,
    containers: Vec<(String, bool)>,
    owners: HashMap<String, String>,
}

impl ParamCollector {
    fn record(&mut self) {
        let owner = self
            .containers
            .iter()
            .rev()
            .map(|(c, _)| c)
            .find(|c| c.starts_with("Struct:") || c.starts_with("Enum:"))
            .cloned()
            .unwrap_or_default();
        self.owners.insert(self.path.join("."), owner);
    }

    fn owner(&self, name: &str) -> &str {
        self.owners.get(name).map(String::as_str).unwrap_or("")
    }

    fn is_linear_weight(&self, name: &str) -> bool {
        self.owner(name) == "Struct:Linear" && name.rsplit('.').next() == Some("weight")
    }

    /// The parameter's name as a PyTorch checkpoint spells it.
    fn pytorch_name(&self, name: &str) -> String {
        if NORM_TYPES.contains(&self.owner(name)) {
            let (head, last) = name.rsplit_once('.').unwrap_or(("", name));
            let renamed = match last {
                "gamma" => "weight",
                "beta" => "bias",
                other => other,
            };
            if head.is_empty() {
                return renamed.to_string();
            }
            return format!("{head}.{renamed}");
        }
        name.to_string()
    }
}

impl ModuleVisitor for ParamCollector {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        let named = !container_type.starts_with("Enum:");
        self.containers.push((container_type.to_string(), named));
        if named {
            self.path.push(name.to_string());
        }
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        if let Some((_, named)) = self.containers.pop()
            && named
        {
            self.path.pop();
        }
    }

    fn visit_float<const D: usize>(&mut self, _param: &Param<Tensor<D>>) {
        self.record();
    }

    fn visit_int<const D: usize>(&mut self, _param: &Param<Tensor<D, Int>>) {
        self.record();
    }

    fn visit_bool<const D: usize>(&mut self, _param: &Param<Tensor<D, Bool>>) {
        self.record();
    }
}

/// Write every parameter of `module` to a `.safetensors` file in PyTorch layout (`Linear`
/// weights `[out, in]`, normalisation `weight` / `bias`), the layout [`load_safetensors`] reads.
/// The file is replaced atomically: a crash leaves the old file or the new one, never half of one.
pub fn save_safetensors<M: Module>(module: &M, path: impl AsRef<Path>) -> Result<(), WeightsError> {
    let path = path.as_ref();
    // Enum modules (a GLIP's backbone) add no level to the names, as when loading.
    let mut store =
        SafetensorsStore::from_bytes(None).with_to_adapter(BurnToPyTorchAdapter).skip_enum_variants(true);
    module.save_into(&mut store).map_err(|e| write_error(path, e))?;
    let bytes = store.get_bytes().map_err(|e| write_error(path, e))?;
    glint_core::io::write_atomic(path, &bytes).map_err(|e| write_error(path, e))
}

fn write_error(path: &Path, e: impl fmt::Display) -> WeightsError {
    WeightsError::Write { path: path.to_path_buf(), message: e.to_string() }
}
