//! PyTorch state dicts in safetensors: what `safetensors.torch.save_file(model.state_dict(),
//! path)` writes loads into a [`ParamStore`] by name, and what [`save_state_dict`] writes
//! loads back with `model.load_state_dict(safetensors.torch.load_file(path))`.
//!
//! A file name is the optional prefix followed by the store's name (the modules register
//! PyTorch's names: `encoder.embedding.weight`, `decoder.lstm.weight_ih_l0`,
//! `rnn.bias_hh_l1_reverse`, `decoder.attention.W1.weight`, ...). Loads are strict by
//! default, as `load_state_dict`: one error lists every missing, unexpected, mis-shaped
//! and wrongly typed tensor and nothing is loaded; a non-strict load copies what matches
//! and returns the lists.
//!
//! Bad files are errors, never panics: the header's length is checked against the bytes
//! that are really there (and capped) before anything is parsed, the safetensors crate
//! checks every tensor's offsets and shape against the data (with overflow checks), and
//! the only buffers sized from a file are copies of tensors whose shape already matched a
//! parameter of the store.

use std::collections::HashMap;
use std::fmt;
#[cfg(not(target_arch = "wasm32"))]
use std::path::Path;

use safetensors::tensor::{Dtype, Metadata, TensorView};

use crate::graph::{ParamId, ParamStore};
#[cfg(not(target_arch = "wasm32"))]
use crate::Tensor;
use crate::{Error, Result};

/// The largest header accepted, in bytes. A state dict's header is about 100 bytes per
/// tensor, so this allows some 160,000 tensors while keeping a hostile length from
/// costing more than a bounded parse.
pub const MAX_HEADER_BYTES: u64 = 16 << 20;

/// How [`load_state_dict`] matches a file against a store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadOptions {
    /// Put before every store name to find its tensor in the file, for a model nested in
    /// a larger one: with `"model"` (or `"model."`), parameter `fc.weight` is read from
    /// `model.fc.weight`. Tensors outside the prefix are ignored. Empty: names as they are.
    pub prefix: String,
    /// Strict (the default, as `load_state_dict(strict=True)`): any missing, unexpected,
    /// mis-shaped or non-F32 tensor is an error and nothing is loaded. Not strict: the
    /// tensors that match are loaded and the rest is reported in the [`LoadReport`].
    pub strict: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            prefix: String::new(),
            strict: true,
        }
    }
}

impl LoadOptions {
    /// Strict, under `prefix`.
    pub fn with_prefix(prefix: &str) -> Self {
        LoadOptions {
            prefix: prefix.to_string(),
            strict: true,
        }
    }

    /// The same options, not strict.
    pub fn non_strict(self) -> Self {
        LoadOptions { strict: false, ..self }
    }
}

/// A tensor of the file whose shape or element type differs from its parameter's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// The name in the file.
    pub name: String,
    /// The parameter's shape.
    pub expected: Vec<usize>,
    /// The file's shape.
    pub found: Vec<usize>,
    /// The file's element type as safetensors writes it (`F32`, `F64`, `BF16`, ...);
    /// parameters are `F32`.
    pub dtype: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.name)?;
        let mut separator = "";
        if self.dtype != "F32" {
            write!(f, " dtype {}, expected F32", self.dtype)?;
            separator = ";";
        }
        if self.found != self.expected {
            write!(f, "{separator} shape {:?}, expected {:?}", self.found, self.expected)?;
        }
        Ok(())
    }
}

/// What a load did: names as they are in the file (prefix included), sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Tensors copied into the store.
    pub loaded: Vec<String>,
    /// Parameters with no tensor in the file (they keep their values).
    pub missing: Vec<String>,
    /// Tensors under the prefix that match no parameter.
    pub unexpected: Vec<String>,
    /// Tensors with the wrong shape or element type (not loaded).
    pub mismatched: Vec<Mismatch>,
}

impl LoadReport {
    /// True when every parameter was loaded and nothing else was under the prefix.
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.mismatched.is_empty()
    }

    /// Every problem in one line: `missing a [3, 4]; unexpected b; c: shape ..`.
    pub(crate) fn problems(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        parts.extend(self.missing.iter().map(|n| format!("missing {n}")));
        parts.extend(self.unexpected.iter().map(|n| format!("unexpected {n}")));
        parts.extend(self.mismatched.iter().map(Mismatch::to_string));
        parts.join("; ")
    }
}

pub(crate) fn format_error(source_name: &str, message: impl fmt::Display) -> Error {
    Error::Format {
        source_name: source_name.to_string(),
        message: message.to_string(),
    }
}

/// A validated safetensors buffer: its header and the data that follows it.
pub(crate) struct Parsed<'a> {
    metadata: Metadata,
    data: &'a [u8],
}

impl<'a> Parsed<'a> {
    /// Checks the header length against the buffer and [`MAX_HEADER_BYTES`], then lets
    /// the safetensors crate parse and check the header (offsets contiguous, each
    /// tensor's byte count equal to its shape times its element size, computed with
    /// overflow checks, and the data ending exactly where the buffer does).
    pub(crate) fn new(bytes: &'a [u8], source_name: &str) -> Result<Parsed<'a>> {
        let Some(length) = bytes.get(..8) else {
            return Err(format_error(
                source_name,
                format!(
                    "not a safetensors file: {} bytes, shorter than the 8-byte header length",
                    bytes.len()
                ),
            ));
        };
        let mut word = [0u8; 8];
        word.copy_from_slice(length);
        let header = u64::from_le_bytes(word);
        let available = bytes.len() as u64 - 8;
        if header > available {
            return Err(format_error(
                source_name,
                format!("the header claims {header} bytes but only {available} follow (truncated or not safetensors)"),
            ));
        }
        if header > MAX_HEADER_BYTES {
            return Err(format_error(
                source_name,
                format!("the header claims {header} bytes, more than the {MAX_HEADER_BYTES} accepted"),
            ));
        }
        let (header, metadata) = safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|err| format_error(source_name, format!("not a valid safetensors file: {err}")))?;
        // read_metadata checked that 8 + header + the tensors' bytes is the buffer's length.
        let data = bytes
            .get(8 + header..)
            .ok_or_else(|| format_error(source_name, "the header runs past the end"))?;
        Ok(Parsed { metadata, data })
    }

    /// The free-form string map of the header (`__metadata__`).
    pub(crate) fn metadata(&self) -> Option<&HashMap<String, String>> {
        self.metadata.metadata().as_ref()
    }

    /// Every tensor name.
    pub(crate) fn names(&self) -> Vec<String> {
        self.metadata.offset_keys()
    }

    /// A tensor's element type, shape and bytes.
    pub(crate) fn tensor(&self, name: &str) -> Option<(Dtype, &[usize], &'a [u8])> {
        let info = self.metadata.info(name)?;
        let (start, end) = info.data_offsets;
        let bytes = self.data.get(start..end)?;
        Some((info.dtype, &info.shape, bytes))
    }
}

/// Little-endian F32 bytes (safetensors' byte order) to floats, on any host.
pub(crate) fn f32_from_le(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Floats to little-endian bytes.
fn f32_to_le(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// `"model"` and `"model."` both mean the names under `model.`.
fn normalized_prefix(prefix: &str) -> String {
    if prefix.is_empty() || prefix.ends_with('.') {
        prefix.to_string()
    } else {
        format!("{prefix}.")
    }
}

/// What loading `parsed` into `store` would do; `also_allowed` names file tensors that are
/// not parameters but not unexpected either (a checkpoint's optimizer state).
pub(crate) fn plan(
    parsed: &Parsed<'_>,
    store: &ParamStore,
    prefix: &str,
    also_allowed: impl Fn(&str) -> bool,
) -> (LoadReport, Vec<(ParamId, String)>) {
    let prefix = normalized_prefix(prefix);
    let mut report = LoadReport::default();
    let mut loads = Vec::new();
    let mut expected = std::collections::HashSet::new();
    for (name, value, _) in store.entries() {
        let file_name = format!("{prefix}{name}");
        match parsed.tensor(&file_name) {
            None => report.missing.push(file_name.clone()),
            Some((dtype, shape, _)) if dtype != Dtype::F32 || shape != value.shape() => {
                report.mismatched.push(Mismatch {
                    name: file_name.clone(),
                    expected: value.shape().to_vec(),
                    found: shape.to_vec(),
                    dtype: format!("{dtype:?}"),
                })
            }
            Some(_) => {
                if let Some(id) = store.find(name) {
                    loads.push((id, file_name.clone()));
                }
                report.loaded.push(file_name.clone());
            }
        }
        expected.insert(file_name);
    }
    for name in parsed.names() {
        if name.starts_with(&prefix) && !expected.contains(&name) && !also_allowed(&name) {
            report.unexpected.push(name);
        }
    }
    report.loaded.sort();
    report.missing.sort();
    report.unexpected.sort();
    report.mismatched.sort_by(|a, b| a.name.cmp(&b.name));
    (report, loads)
}

/// Copies the planned tensors into the store (shapes and dtypes already checked).
pub(crate) fn apply(
    parsed: &Parsed<'_>,
    store: &ParamStore,
    loads: &[(ParamId, String)],
    source_name: &str,
) -> Result<()> {
    for (id, file_name) in loads {
        let (_, _, bytes) = parsed
            .tensor(file_name)
            .ok_or_else(|| format_error(source_name, format!("{file_name} vanished")))?;
        store.value(*id).write(&f32_from_le(bytes))?;
    }
    Ok(())
}

/// Loads a state dict from the bytes of a safetensors file; `source_name` names it in
/// errors. See [`load_state_dict`].
pub fn load_state_dict_from_bytes(
    bytes: &[u8],
    source_name: &str,
    store: &mut ParamStore,
    options: &LoadOptions,
) -> Result<LoadReport> {
    let parsed = Parsed::new(bytes, source_name)?;
    let (report, loads) = plan(&parsed, store, &options.prefix, |_| false);
    if options.strict && !report.is_complete() {
        let under = match options.prefix.as_str() {
            "" => String::new(),
            prefix => format!(" (prefix {:?})", normalized_prefix(prefix)),
        };
        return Err(format_error(
            source_name,
            format!("does not match the model{under}: {}", report.problems()),
        ));
    }
    apply(&parsed, store, &loads, source_name)?;
    Ok(report)
}

/// Loads a file written by `safetensors.torch.save_file(model.state_dict(), path)` (or by
/// [`save_state_dict`]) into `store`, by PyTorch's names. Strict by default: one error
/// lists every missing, unexpected, mis-shaped (expected vs found) and non-F32 tensor,
/// and nothing is loaded. Returns what was loaded (and, not strict, what was not).
///
/// ```no_run
/// # fn main() -> tsumugi::Result<()> {
/// # let mut store = tsumugi::graph::ParamStore::new();
/// use tsumugi::io::{load_state_dict, LoadOptions};
/// let report = load_state_dict("model.safetensors".as_ref(), &mut store, &LoadOptions::default())?;
/// assert!(report.is_complete());
/// # Ok(())
/// # }
/// ```
///
/// Not on wasm32 (no file system there): use [`load_state_dict_from_bytes`].
#[cfg(not(target_arch = "wasm32"))]
pub fn load_state_dict(path: &Path, store: &mut ParamStore, options: &LoadOptions) -> Result<LoadReport> {
    // The buffer is the file's real length; nothing is sized from its header.
    let bytes = std::fs::read(path).map_err(|err| crate::error::io_error(path, err))?;
    load_state_dict_from_bytes(&bytes, &path.display().to_string(), store, options)
}

/// One named F32 tensor for [`serialize`]: name, shape, little-endian bytes.
pub(crate) type Named = (String, Vec<usize>, Vec<u8>);

/// Reads a tensor back from the GPU as a [`Named`] entry (blocking, so not on wasm32).
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn named(name: String, tensor: &Tensor) -> Result<Named> {
    Ok((name, tensor.shape().to_vec(), f32_to_le(&tensor.to_vec::<f32>()?)))
}

/// The bytes of a safetensors file holding `tensors`, with `format: pt` in its metadata
/// as `safetensors.torch.save_file` writes (some loaders look for it) plus `extra`.
pub(crate) fn serialize(tensors: &[Named], extra: &[(&str, String)], source_name: &str) -> Result<Vec<u8>> {
    let views = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|view| (name.clone(), view))
                .map_err(|err| format_error(source_name, format!("{name}: {err}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    metadata.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    safetensors::tensor::serialize(views, Some(metadata)).map_err(|err| format_error(source_name, err))
}

/// The bytes of a state-dict file of every parameter in `store`, each named `prefix` +
/// its store name (see [`LoadOptions::prefix`]). Reads the parameters back from the GPU,
/// blocking, so not on wasm32.
#[cfg(not(target_arch = "wasm32"))]
pub fn state_dict_to_bytes(store: &ParamStore, prefix: &str) -> Result<Vec<u8>> {
    let prefix = normalized_prefix(prefix);
    let tensors = store
        .entries()
        .map(|(name, value, _)| named(format!("{prefix}{name}"), value))
        .collect::<Result<Vec<_>>>()?;
    serialize(&tensors, &[], "state dict")
}

/// [`state_dict_to_bytes`] without blocking: each parameter is read back with
/// [`crate::Tensor::read`], so this is the writer a browser (wasm32) has, e.g. to keep a
/// model trained on the page. On native the future completes once the device is polled.
pub async fn state_dict_to_bytes_async(store: &ParamStore, prefix: &str) -> Result<Vec<u8>> {
    let prefix = normalized_prefix(prefix);
    let mut tensors = Vec::new();
    for (name, value, _) in store.entries() {
        let values = value.read::<f32>().await?;
        tensors.push((format!("{prefix}{name}"), value.shape().to_vec(), f32_to_le(&values)));
    }
    serialize(&tensors, &[], "state dict")
}

/// Saves every parameter under its PyTorch name (after `prefix`), atomically, so that
/// `model.load_state_dict(safetensors.torch.load_file(path))` loads it in PyTorch.
/// Reads the parameters back from the GPU (an explicit sync point). Not on wasm32.
#[cfg(not(target_arch = "wasm32"))]
pub fn save_state_dict(path: &Path, store: &ParamStore, prefix: &str) -> Result<()> {
    let bytes = state_dict_to_bytes(store, prefix)?;
    super::write_atomically(path, &bytes)
}
