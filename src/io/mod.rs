//! Files: PyTorch state dicts ([`load_state_dict`], [`save_state_dict`]) and checkpoints
//! (a [`ParamStore`]'s parameters under their PyTorch state-dict names plus its optimizer
//! state) in safetensors, written atomically.
//!
//! Checkpoint layout: every parameter as an F32 tensor named as in the store; the
//! optimizer state of parameter `p` as `optimizer.p.state0` and `optimizer.p.state1`
//! (Adam's exp_avg and exp_avg_sq; SGD's momentum buffer twice); the step count in the
//! metadata under `tsumugi.step`. A file written by
//! `safetensors.torch.save_file(model.state_dict())` loads too (it simply has no optimizer
//! state), and a checkpoint loads in PyTorch with `load_state_dict(strict=False)` (the
//! optimizer entries are unexpected there).

mod state_dict;

use std::io::Write;
use std::path::Path;

use safetensors::tensor::Dtype;

use crate::graph::ParamStore;
use crate::{Error, Result, Tensor};

use state_dict::{apply, f32_from_le, named, plan, serialize, Parsed};
pub use state_dict::{
    load_state_dict, load_state_dict_from_bytes, save_state_dict, state_dict_to_bytes, LoadOptions, LoadReport,
    Mismatch, MAX_HEADER_BYTES,
};

const STEP_KEY: &str = "tsumugi.step";

fn format_error(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::Format {
        source_name: path.display().to_string(),
        message: message.to_string(),
    }
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, fsync, rename, and an
/// fsync of the folder, so a crash leaves either the old file or the new one, whole.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let folder = match path.parent() {
        Some(folder) if !folder.as_os_str().is_empty() => folder,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| format_error(path, "not a file path"))?
        .to_string_lossy();
    let temporary = folder.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| -> Result<()> {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temporary, path)?;
        // The rename itself is durable only once the folder is synced.
        std::fs::File::open(folder)?.sync_all()?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

/// Saves every parameter and its optimizer state, with the optimizer's step count.
/// Reads the tensors back from the GPU (a checkpoint is an explicit sync point).
pub fn save_checkpoint(path: &Path, store: &ParamStore, step: u64) -> Result<()> {
    let mut tensors = Vec::new();
    for (name, value, state) in store.entries() {
        tensors.push(named(name.to_string(), value)?);
        if let Some((first, second)) = state {
            tensors.push(named(format!("optimizer.{name}.state0"), first)?);
            tensors.push(named(format!("optimizer.{name}.state1"), second)?);
        }
    }
    let source_name = path.display().to_string();
    let bytes = serialize(&tensors, &[(STEP_KEY, step.to_string())], &source_name)?;
    write_atomically(path, &bytes)
}

/// Loads a checkpoint into `store`, by name, strictly: every parameter must be present
/// with its shape and F32, and nothing else but optimizer state may be in the file. One
/// error lists every problem. Returns the step count (0 for a plain state dict).
pub fn load_checkpoint(path: &Path, store: &mut ParamStore) -> Result<u64> {
    let bytes = std::fs::read(path)?;
    let source_name = path.display().to_string();
    let parsed = Parsed::new(&bytes, &source_name)?;
    let step = match parsed.metadata().and_then(|m| m.get(STEP_KEY)) {
        Some(step) => step
            .parse::<u64>()
            .map_err(|_| format_error(path, format!("{STEP_KEY} is not a count: {step:?}")))?,
        None => 0,
    };
    let is_state = |name: &str| {
        name.strip_prefix("optimizer.")
            .and_then(|rest| rest.strip_suffix(".state0").or_else(|| rest.strip_suffix(".state1")))
            .is_some_and(|param| store.find(param).is_some())
    };
    let (report, loads) = plan(&parsed, store, "", is_state);
    if !report.is_complete() {
        return Err(format_error(
            path,
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
                        path,
                        format!("{state_name}: {dtype:?} {found:?}, expected F32 {shape:?}"),
                    ))
                }
            }
        }
        states.push((*id, pair));
    }
    apply(&parsed, store, &loads, &source_name)?;
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
