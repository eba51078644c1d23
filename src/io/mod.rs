//! Checkpoints: a [`ParamStore`]'s parameters (under their PyTorch state-dict names) and
//! its optimizer state in one safetensors file, written atomically.
//!
//! Layout: every parameter as an F32 tensor named as in the store; the optimizer state of
//! parameter `p` as `optimizer.p.state0` and `optimizer.p.state1` (Adam's exp_avg and
//! exp_avg_sq; SGD's momentum buffer twice); the step count in the metadata under
//! `tsumugi.step`. A file written by `safetensors.torch.save_file(model.state_dict())`
//! loads too (it simply has no optimizer state).

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::graph::ParamStore;
use crate::{Error, Result, Tensor};

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
    let mut named: Vec<(String, Vec<f32>, Vec<usize>)> = Vec::new();
    for (name, value, state) in store.entries() {
        named.push((name.to_string(), value.to_vec()?, value.shape().to_vec()));
        if let Some((first, second)) = state {
            for (suffix, tensor) in [("state0", first), ("state1", second)] {
                named.push((
                    format!("optimizer.{name}.{suffix}"),
                    tensor.to_vec()?,
                    tensor.shape().to_vec(),
                ));
            }
        }
    }
    let views = named
        .iter()
        .map(|(name, data, shape)| {
            TensorView::new(Dtype::F32, shape.clone(), bytemuck::cast_slice(data))
                .map(|view| (name.clone(), view))
                .map_err(|err| format_error(path, err))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata = HashMap::from([(STEP_KEY.to_string(), step.to_string())]);
    let bytes = safetensors::tensor::serialize(views, Some(metadata)).map_err(|err| format_error(path, err))?;
    write_atomically(path, &bytes)
}

/// Loads a checkpoint into `store`, by name, strictly: every parameter must be present
/// with its shape and F32, and nothing else but optimizer state may be in the file. One
/// error lists every problem. Returns the step count (0 for a plain state dict).
pub fn load_checkpoint(path: &Path, store: &mut ParamStore) -> Result<u64> {
    let bytes = std::fs::read(path)?;
    // The crate validates the header against the file's length before anything is read.
    let file = SafeTensors::deserialize(&bytes).map_err(|err| format_error(path, err))?;
    let (_, metadata) = SafeTensors::read_metadata(&bytes).map_err(|err| format_error(path, err))?;
    let step = match metadata.metadata().as_ref().and_then(|m| m.get(STEP_KEY)) {
        Some(step) => step
            .parse::<u64>()
            .map_err(|_| format_error(path, format!("{STEP_KEY} is not a count: {step:?}")))?,
        None => 0,
    };
    let mut problems = Vec::new();
    let mut loads: Vec<(String, Vec<f32>)> = Vec::new();
    let expected: Vec<(String, Vec<usize>)> = store
        .entries()
        .map(|(name, value, _)| (name.to_string(), value.shape().to_vec()))
        .collect();
    for (name, shape) in &expected {
        match file.tensor(name) {
            Err(_) => problems.push(format!("missing {name} {shape:?}")),
            Ok(view) if view.dtype() != Dtype::F32 => {
                problems.push(format!("{name}: dtype {:?}, expected F32", view.dtype()))
            }
            Ok(view) if view.shape() != &shape[..] => {
                problems.push(format!("{name}: shape {:?}, expected {shape:?}", view.shape()))
            }
            Ok(view) => loads.push((name.clone(), bytemuck::pod_collect_to_vec(view.data()))),
        }
    }
    let known = |name: &str| {
        expected.iter().any(|(n, _)| n == name)
            || expected
                .iter()
                .any(|(n, _)| name == format!("optimizer.{n}.state0") || name == format!("optimizer.{n}.state1"))
    };
    for name in file.names() {
        if !known(name) {
            problems.push(format!("unexpected {name}"));
        }
    }
    if !problems.is_empty() {
        problems.sort();
        return Err(format_error(
            path,
            format!("does not match the model: {}", problems.join("; ")),
        ));
    }
    for (name, data) in loads {
        let id = store
            .find(&name)
            .ok_or_else(|| format_error(path, format!("no parameter {name}")))?;
        store.value(id).write(&data)?;
        let state = |suffix: &str| -> Result<Option<Tensor>> {
            match file.tensor(&format!("optimizer.{name}.{suffix}")) {
                Err(_) => Ok(None),
                Ok(view) if view.dtype() == Dtype::F32 && view.shape() == store.value(id).shape() => {
                    let data: Vec<f32> = bytemuck::pod_collect_to_vec(view.data());
                    Ok(Some(Tensor::from_slice(
                        store.value(id).context(),
                        &data,
                        view.shape(),
                    )?))
                }
                Ok(view) => Err(format_error(
                    path,
                    format!(
                        "optimizer.{name}.{suffix}: {:?} {:?}, expected F32 {:?}",
                        view.dtype(),
                        view.shape(),
                        store.value(id).shape()
                    ),
                )),
            }
        };
        let moments = match (state("state0")?, state("state1")?) {
            (Some(first), Some(second)) => Some((first, second)),
            _ => None,
        };
        store.set_optimizer_state(id, moments);
    }
    Ok(step)
}
