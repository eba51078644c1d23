//! Kernel launchers, one module per family of `shaders/`.
//!
//! Each launcher checks shapes (a typed error naming the tensor and both shapes), fetches
//! the cached pipeline, binds and dispatches into the caller's encoder. None submits or
//! waits.

pub mod attention;
pub mod gru_cell;
pub mod lstm_cell;
pub mod matmul;
pub mod recurrent;
pub mod rnn_cell;

use crate::gpu::Context;
use crate::{Error, Result, Tensor};

/// Per-row sequence lengths `[B]` on the GPU, validated on the way up: every length is
/// in `1..=steps`, as `pack_padded_sequence` requires. A recurrent kernel treats step
/// `t >= len[b]` of row b as padding: the state is carried, the output is zero.
#[derive(Clone, Debug)]
pub struct Lengths {
    tensor: Tensor,
    steps: usize,
}

impl Lengths {
    /// Uploads `lengths` (one per batch row) after checking `0 < len <= steps`.
    pub fn new(ctx: &Context, lengths: &[u32], steps: usize) -> Result<Lengths> {
        if lengths.is_empty() {
            return Err(Error::invalid("lengths: empty batch"));
        }
        if let Some((row, &len)) = lengths
            .iter()
            .enumerate()
            .find(|&(_, &len)| len == 0 || len as usize > steps)
        {
            return Err(Error::invalid(format!(
                "lengths[{row}] = {len} is outside 1..={steps} (the sequence has {steps} steps)"
            )));
        }
        Ok(Lengths {
            tensor: Tensor::from_slice(ctx, lengths, &[lengths.len()])?,
            steps,
        })
    }

    /// The `[B]` u32 tensor.
    pub fn tensor(&self) -> &Tensor {
        &self.tensor
    }

    /// Number of rows.
    pub fn batch(&self) -> usize {
        self.tensor.len()
    }

    /// The sequence length the lengths were checked against.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Checks the lengths belong to a `[batch, steps, ..]` sequence.
    pub(crate) fn check(&self, name: &str, batch: usize, steps: usize) -> Result<()> {
        if self.batch() != batch || self.steps != steps {
            return Err(Error::shape(
                name,
                format!("{batch} lengths checked against {steps} steps"),
                &[self.batch(), self.steps],
            ));
        }
        Ok(())
    }
}

/// Checks every launcher makes before encoding: each tensor lives on `ctx`'s device,
/// its element indices fit the shaders' u32 arithmetic, and no output shares a buffer
/// with another operand (wgpu forbids a writable binding aliasing another binding, and
/// the result would depend on the order of the invocations). Shapes and dtypes are
/// the launcher's own checks.
pub(crate) fn check_tensors(ctx: &Context, inputs: &[(&str, &Tensor)], outputs: &[(&str, &Tensor)]) -> Result<()> {
    for (name, tensor) in inputs.iter().chain(outputs) {
        if !tensor.context().same_device(ctx) {
            return Err(Error::invalid(format!("{name} lives on another context's device")));
        }
        if tensor.len() > u32::MAX as usize / 2 {
            return Err(Error::DeviceLimit {
                tensor: name.to_string(),
                limit: "u32 element indices",
                needed: tensor.len() as u64,
                allowed: u64::from(u32::MAX / 2),
            });
        }
    }
    for (i, (out_name, out)) in outputs.iter().enumerate() {
        let others = inputs.iter().chain(outputs.iter().skip(i + 1));
        for (other_name, other) in others {
            if out.shares_buffer_with(other) {
                return Err(Error::invalid(format!(
                    "{out_name} shares its buffer with {other_name}"
                )));
            }
        }
    }
    Ok(())
}
