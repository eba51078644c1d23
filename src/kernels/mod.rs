//! Kernel launchers, one module per family of `shaders/`.
//!
//! Each launcher checks shapes (a typed error naming the tensor and both shapes), fetches
//! the cached pipeline, binds and dispatches into the caller's encoder. None submits or
//! waits.

pub mod elementwise;
pub mod embedding;
pub mod matmul;

use crate::gpu::Context;
use crate::{Error, Result, Tensor};

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

/// Workgroups covering `units` invocations of `wg_size` each. One grid dimension holds
/// at most `max_compute_workgroups_per_dimension` (65535 by default) workgroups, so long
/// problems are folded into y; shaders recover the flat index with `flat_index` from
/// common.wgsl and guard the rounded-up tail. A y beyond the limit is reported by
/// `encode_dispatch` as `Error::DeviceLimit`.
pub(crate) fn grid_for(ctx: &Context, units: usize, wg_size: u32) -> [u32; 3] {
    let groups = (units as u64).div_ceil(u64::from(wg_size));
    let max = u64::from(ctx.limits().max_compute_workgroups_per_dimension.max(1));
    if groups <= max {
        [groups as u32, 1, 1]
    } else {
        let y = groups.div_ceil(max);
        let x = groups.div_ceil(y);
        [x as u32, u32::try_from(y).unwrap_or(u32::MAX), 1]
    }
}
