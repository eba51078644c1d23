//! Checkpoints: a [`ParamStore`]'s parameters under their PyTorch state-dict names, its
//! optimizer state, the step count and the caller's metadata, all in one safetensors file
//! written atomically, so that weights and what describes them (sizes, epoch, vocabularies)
//! can never disagree.
//!
//! Layout: every parameter as an F32 tensor named as in the store; the optimizer state of
//! parameter `p` as `optimizer.p.state0` and `optimizer.p.state1` (Adam's exp_avg and
//! exp_avg_sq; SGD's momentum buffer twice); in the header's metadata the step count under
//! `tsumugi.step` and each caller entry under its own key. A file written by
//! `safetensors.torch.save_file(model.state_dict())` loads too (it simply has no optimizer
//! state), and a checkpoint loads in PyTorch with `load_state_dict(strict=False)` (the
//! optimizer entries are unexpected there); `safetensors.safe_open(path).metadata()` shows
//! the metadata.

use std::collections::BTreeMap;
#[cfg(not(target_arch = "wasm32"))]
use std::path::Path;

use safetensors::tensor::Dtype;

use super::state_dict::{apply, f32_from_le, format_error, plan, Parsed};
use crate::graph::ParamStore;
// Only the writer, which reads the GPU back blocking (native-only), builds errors here.
#[cfg(not(target_arch = "wasm32"))]
use crate::Error;
use crate::{Result, Tensor};

/// What a checkpoint carries besides its tensors: string keys and values in the
/// safetensors header (`__metadata__`), in a stable order.
pub type Metadata = BTreeMap<String, String>;

/// The metadata key of the step count.
const STEP_KEY: &str = "tsumugi.step";

/// Keys the safetensors writer sets itself.
#[cfg(not(target_arch = "wasm32"))]
const RESERVED: [&str; 2] = [STEP_KEY, "format"];

/// The bytes of a checkpoint of `store` at `step` with `metadata`. Reads every tensor back
/// from the GPU (a checkpoint is an explicit sync point) and refuses, with
/// `NonFiniteValue` naming the tensor and the element, a parameter or optimizer state
/// holding NaN or Inf: such a checkpoint would replace a good one with a broken one.
#[cfg(not(target_arch = "wasm32"))]
pub fn checkpoint_to_bytes(store: &ParamStore, step: u64, metadata: &Metadata, source_name: &str) -> Result<Vec<u8>> {
    if let Some(key) = metadata.keys().find(|k| RESERVED.contains(&k.as_str())) {
        return Err(Error::invalid(format!(
            "{source_name}: checkpoint metadata may not use the key {key:?}, which tsumugi writes itself"
        )));
    }
    let mut tensors = Vec::new();
    let mut add = |name: String, tensor: &Tensor| -> Result<()> {
        let values = tensor.to_vec::<f32>()?;
        if let Some(at) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFiniteValue {
                tensor: name,
                index: unflatten(at, tensor.shape()),
                value: values[at],
            });
        }
        tensors.push((
            name,
            tensor.shape().to_vec(),
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ));
        Ok(())
    };
    for (name, value, state) in store.entries() {
        add(name.to_string(), value)?;
        if let Some((first, second)) = state {
            add(format!("optimizer.{name}.state0"), first)?;
            add(format!("optimizer.{name}.state1"), second)?;
        }
    }
    let mut extra: Vec<(&str, String)> = vec![(STEP_KEY, step.to_string())];
    extra.extend(metadata.iter().map(|(k, v)| (k.as_str(), v.clone())));
    super::state_dict::serialize(&tensors, &extra, source_name)
}

/// A row-major flat index as a multi-index of `shape`.
#[cfg(not(target_arch = "wasm32"))]
fn unflatten(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for (slot, &dim) in index.iter_mut().zip(shape).rev() {
        *slot = flat % dim.max(1);
        flat /= dim.max(1);
    }
    index
}

/// Saves a checkpoint of `store` at `step` with `metadata` to `path`, atomically (see
/// [`write_atomically`](super::write_atomically)): after a crash or a failed write the
/// previous file is whole, and weights and metadata always come from the same save. A
/// checkpoint whose weights are not all finite is refused before anything is written.
#[cfg(not(target_arch = "wasm32"))]
pub fn save_checkpoint_with(path: &Path, store: &ParamStore, step: u64, metadata: &Metadata) -> Result<()> {
    let bytes = checkpoint_to_bytes(store, step, metadata, &path.display().to_string())?;
    super::write_atomically(path, &bytes)
}

/// [`save_checkpoint_with`] without metadata of the caller's.
#[cfg(not(target_arch = "wasm32"))]
pub fn save_checkpoint(path: &Path, store: &ParamStore, step: u64) -> Result<()> {
    save_checkpoint_with(path, store, step, &Metadata::new())
}

/// A checkpoint's step count (0 for a plain state dict) and metadata, from its header
/// alone: what a program needs to rebuild the model before loading the weights.
pub fn checkpoint_metadata_from_bytes(source_name: &str, bytes: &[u8]) -> Result<(u64, Metadata)> {
    let parsed = Parsed::new(bytes, source_name)?;
    header_of(&parsed, source_name)
}

/// A checkpoint file read once: its metadata first (to rebuild the model it describes),
/// then its tensors into that model, both from the same bytes. Reading the file twice
/// instead ([`read_checkpoint_metadata`], then [`load_checkpoint`]) could pair the metadata
/// of one save with the weights of the next, if another process saved in between.
pub struct CheckpointFile {
    name: String,
    bytes: Vec<u8>,
}

impl CheckpointFile {
    /// A checkpoint held in memory; `name` names it in errors (a browser's download, say).
    pub fn from_bytes(name: &str, bytes: Vec<u8>) -> CheckpointFile {
        CheckpointFile {
            name: name.to_string(),
            bytes,
        }
    }

    /// The step count (0 for a plain state dict) and the caller's metadata.
    pub fn metadata(&self) -> Result<(u64, Metadata)> {
        checkpoint_metadata_from_bytes(&self.name, &self.bytes)
    }

    /// Loads the tensors into `store` as [`load_checkpoint_from_bytes`]; returns the step.
    pub fn load_into(&self, store: &mut ParamStore) -> Result<u64> {
        load_checkpoint_from_bytes(&self.name, &self.bytes, store)
    }
}

/// Reads the checkpoint at `path` once (see [`CheckpointFile`]); errors name the path.
#[cfg(not(target_arch = "wasm32"))]
pub fn read_checkpoint(path: &Path) -> Result<CheckpointFile> {
    let bytes = std::fs::read(path).map_err(|err| crate::error::io_error(path, err))?;
    Ok(CheckpointFile::from_bytes(&path.display().to_string(), bytes))
}

/// [`checkpoint_metadata_from_bytes`] of the file at `path`; errors name the path.
#[cfg(not(target_arch = "wasm32"))]
pub fn read_checkpoint_metadata(path: &Path) -> Result<(u64, Metadata)> {
    let bytes = std::fs::read(path).map_err(|err| crate::error::io_error(path, err))?;
    checkpoint_metadata_from_bytes(&path.display().to_string(), &bytes)
}

/// Loads a checkpoint from `bytes` into `store`, by name, strictly: every parameter must
/// be present with its shape and F32, and nothing else but optimizer state may be in the
/// file. One error lists every problem, and a bad file changes nothing. Returns the step
/// count (0 for a plain state dict).
pub fn load_checkpoint_from_bytes(source_name: &str, bytes: &[u8], store: &mut ParamStore) -> Result<u64> {
    let parsed = Parsed::new(bytes, source_name)?;
    let (step, _) = header_of(&parsed, source_name)?;
    let is_state = |name: &str| {
        name.strip_prefix("optimizer.")
            .and_then(|rest| rest.strip_suffix(".state0").or_else(|| rest.strip_suffix(".state1")))
            .is_some_and(|param| store.find(param).is_some())
    };
    let (report, loads) = plan(&parsed, store, "", is_state);
    if !report.is_complete() {
        return Err(format_error(
            source_name,
            format!("does not match the model: {}", report.problems()),
        ));
    }
    // Check the optimizer state too before anything is written, so a bad file changes nothing.
    let mut states = Vec::new();
    for (id, name) in &loads {
        let shape = store.value(*id).shape();
        let mut pair = Vec::new();
        for suffix in ["state0", "state1"] {
            let state_name = format!("optimizer.{name}.{suffix}");
            match parsed.tensor(&state_name) {
                None => {}
                Some((Dtype::F32, found, bytes)) if found == shape => pair.push(f32_from_le(bytes)),
                Some((dtype, found, _)) => {
                    return Err(format_error(
                        source_name,
                        format!("{state_name}: {dtype:?} {found:?}, expected F32 {shape:?}"),
                    ))
                }
            }
        }
        states.push((*id, pair));
    }
    apply(&parsed, store, &loads, source_name)?;
    for (id, pair) in states {
        let moments = match &pair[..] {
            [first, second] => {
                let (ctx, shape) = (store.value(id).context().clone(), store.value(id).shape().to_vec());
                Some((
                    Tensor::from_slice(&ctx, first, &shape)?,
                    Tensor::from_slice(&ctx, second, &shape)?,
                ))
            }
            _ => None,
        };
        store.set_optimizer_state(id, moments);
    }
    Ok(step)
}

/// [`load_checkpoint_from_bytes`] of the file at `path`; errors name the path.
#[cfg(not(target_arch = "wasm32"))]
pub fn load_checkpoint(path: &Path, store: &mut ParamStore) -> Result<u64> {
    let bytes = std::fs::read(path).map_err(|err| crate::error::io_error(path, err))?;
    load_checkpoint_from_bytes(&path.display().to_string(), &bytes, store)
}

fn header_of(parsed: &Parsed<'_>, source_name: &str) -> Result<(u64, Metadata)> {
    metadata_of(parsed.metadata(), source_name)
}

fn metadata_of(raw: Option<&std::collections::HashMap<String, String>>, source_name: &str) -> Result<(u64, Metadata)> {
    let mut metadata: Metadata = raw
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    metadata.remove("format");
    let step = match metadata.remove(STEP_KEY) {
        Some(step) => step
            .parse::<u64>()
            .map_err(|_| format_error(source_name, format!("{STEP_KEY} is not a count: {step:?}")))?,
        None => 0,
    };
    Ok((step, metadata))
}
