//! Files: PyTorch state dicts ([`load_state_dict`], [`save_state_dict`]) and checkpoints
//! ([`save_checkpoint_with`], [`load_checkpoint`]: parameters under their PyTorch
//! state-dict names, optimizer state, step count and the caller's metadata in one
//! safetensors file), written atomically. Every loader has a `*_from_bytes` form, which is
//! what a browser (wasm32, no file system) uses.
//!
//! # Converting from ONNX or Keras
//!
//! tsumugi uses PyTorch's layout: `weight_ih` is `[gates * H, I]` (`y = x W^T`), gate
//! blocks stacked in PyTorch's order, two biases `bias_ih` and `bias_hh`, the backward
//! direction as `*_reverse`. Other formats stack the
//! gates differently; reorder the H-row blocks when converting:
//!
//! | source | stores | gate order | to tsumugi |
//! |---|---|---|---|
//! | PyTorch `nn.LSTM` | `[4H, I]`, two biases | i, f, g, o | as is |
//! | ONNX `LSTM` | `W [dirs, 4H, I]`, `R [dirs, 4H, H]`, `B [dirs, 8H]` = Wb then Rb | i, o, f, c | blocks (0, 2, 3, 1); Wb to `bias_ih`, Rb to `bias_hh`; direction 1 is `_reverse` |
//! | Keras `LSTM` | `kernel [I, 4H]`, `recurrent_kernel [H, 4H]`, one bias | i, f, c, o | transpose; `bias_ih` = bias, `bias_hh` = 0 |
//! | PyTorch `nn.GRU` | `[3H, I]`, two biases | r, z, n | as is |
//! | ONNX `GRU` | `W [dirs, 3H, I]`, `R`, `B [dirs, 6H]` | z, r, h | blocks (1, 0, 2); needs `linear_before_reset=1` |
//! | Keras `GRU` | `kernel [I, 3H]`, `recurrent_kernel`, bias `[2, 3H]` | z, r, h | transpose, blocks (1, 0, 2); needs `reset_after=True` (the TF2 default) |
//!
//! The GRU is PyTorch's: `r = σ(W_ir x + b_ir + W_hr h + b_hr)`,
//! `z = σ(W_iz x + b_iz + W_hz h + b_hz)`, `n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))`,
//! `h' = (1 - z) ⊙ n + z ⊙ h`. The
//! reset gate multiplies `W_hn h + b_hn`, after the matmul: ONNX's `linear_before_reset=0`
//! (its default) and Keras's `reset_after=False` put it before (`W_hn (r ⊙ h)`), a different
//! function that no reordering converts. ONNX's `B` and Keras's two-row bias split into
//! `bias_ih` and `bias_hh` the same way.

mod checkpoint;
mod state_dict;

#[cfg(not(target_arch = "wasm32"))]
use std::io::Write;
#[cfg(not(target_arch = "wasm32"))]
use std::path::Path;

#[cfg(not(target_arch = "wasm32"))]
use crate::error::io_error;
#[cfg(not(target_arch = "wasm32"))]
use crate::{Error, Result};

pub use checkpoint::{checkpoint_metadata_from_bytes, load_checkpoint_from_bytes, CheckpointFile, Metadata};
#[cfg(not(target_arch = "wasm32"))]
pub use checkpoint::{
    checkpoint_to_bytes, load_checkpoint, read_checkpoint, read_checkpoint_metadata, save_checkpoint,
    save_checkpoint_with,
};
pub use state_dict::{
    load_state_dict_from_bytes, state_dict_to_bytes_async, LoadOptions, LoadReport, Mismatch, MAX_HEADER_BYTES,
};
// Files, and writers that read the GPU back blocking: not on wasm32.
#[cfg(not(target_arch = "wasm32"))]
pub use state_dict::{load_state_dict, save_state_dict, state_dict_to_bytes};

/// The prefix and suffix of the temporary files [`write_atomically`] writes beside `name`.
#[cfg(not(target_arch = "wasm32"))]
fn temporary_prefix(name: &str) -> String {
    format!(".{name}.tmp-")
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, fsync, rename, and an
/// fsync of the folder, so a crash leaves either the old file or the new one, whole.
/// Temporaries that an earlier, killed writer of the same file left behind are removed
/// first (those of processes that no longer run). Errors name the path. Not on wasm32
/// (no file system there).
#[cfg(not(target_arch = "wasm32"))]
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let folder = match path.parent() {
        Some(folder) if !folder.as_os_str().is_empty() => folder,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| Error::Format {
            source_name: path.display().to_string(),
            message: "not a file path".into(),
        })?
        .to_string_lossy();
    if path.is_dir() {
        return Err(io_error(
            path,
            std::io::Error::new(std::io::ErrorKind::IsADirectory, "is a folder, not a file"),
        ));
    }
    remove_stale_temporaries(folder, &name);
    let temporary = folder.join(format!("{}{}", temporary_prefix(&name), std::process::id()));
    let result = (|| -> std::io::Result<()> {
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
    result.map_err(|err| io_error(path, err))
}

/// Removes `folder/.{name}.tmp-PID` files whose process is gone: a writer killed between
/// creating its temporary and renaming it leaves a whole checkpoint's worth of bytes
/// behind. Where the system cannot say whether a process runs (no `/proc`), only
/// temporaries untouched for an hour are removed. Best effort: failures are ignored.
#[cfg(not(target_arch = "wasm32"))]
fn remove_stale_temporaries(folder: &Path, name: &str) {
    let prefix = temporary_prefix(name);
    let Ok(entries) = std::fs::read_dir(folder) else {
        return;
    };
    let proc = Path::new("/proc/self").exists();
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        let stale = if pid == std::process::id() {
            true
        } else if proc {
            !Path::new("/proc").join(pid.to_string()).exists()
        } else {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age.as_secs() > 3600)
        };
        if stale {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
