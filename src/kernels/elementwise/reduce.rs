//! Sum and mean of every element to a `[1]` tensor (one workgroup, a fixed order, so
//! bitwise reproducible), and their backward, which broadcasts the gradient.

use super::{check_f32, encode, Params, SUM_BACKWARD, SUM_FORWARD};
use crate::gpu::{Context, Dispatch, Recorder};
use crate::kernels::check_tensors;
use crate::{Result, Tensor};

/// The one workgroup of the reduction (`REDUCE_WG`, at most 256: common.wgsl's `tree_scratch`).
const REDUCE_WG: u32 = 256;

/// Shared body of sum_forward and mean_forward: `y[0] = sum(x) / divisor`.
fn encode_reduce(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    names: [&str; 2],
    x: &Tensor,
    y: &Tensor,
    mean: bool,
) -> Result<()> {
    check_f32(names[0], x, None)?;
    check_f32(names[1], y, Some(&[1]))?;
    check_tensors(ctx, &[(names[0], x)], &[(names[1], y)])?;
    let params = Params {
        len: x.len() as u32,
        scale: if mean { x.len() as f32 } else { 1.0 },
        ..Params::default()
    };
    ctx.encode_dispatch(
        encoder,
        Dispatch {
            kernel: &SUM_FORWARD,
            overrides: &[("REDUCE_WG", REDUCE_WG)],
            buffers: &[(0, x.buffer(), names[0]), (3, y.buffer(), names[1])],
            params: &params,
            // One workgroup: its fixed summation order is what makes the sum reproducible.
            workgroups: [1, 1, 1],
        },
    )
}

/// Shared body of sum_backward and mean_backward: `dx (+)= dy[0] / divisor`.
fn encode_broadcast(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    names: [&str; 2],
    grad_y: &Tensor,
    grad_x: &Tensor,
    accumulate: bool,
    mean: bool,
) -> Result<()> {
    check_f32(names[0], grad_y, Some(&[1]))?;
    check_f32(names[1], grad_x, None)?;
    check_tensors(ctx, &[(names[0], grad_y)], &[(names[1], grad_x)])?;
    let params = Params {
        len: grad_x.len() as u32,
        accumulate: u32::from(accumulate),
        scale: if mean { grad_x.len() as f32 } else { 1.0 },
        ..Params::default()
    };
    encode(
        ctx,
        encoder,
        &SUM_BACKWARD,
        &[(0, grad_y.buffer(), names[0]), (3, grad_x.buffer(), names[1])],
        &params,
        grad_x.len(),
    )
}

/// Encodes `y[0] = sum of every element of x` (`y` is `[1]`), in a fixed order, so the
/// result is bitwise reproducible.
pub fn sum_forward(ctx: &Context, encoder: &mut dyn Recorder, x: &Tensor, y: &Tensor) -> Result<()> {
    encode_reduce(ctx, encoder, ["sum: x", "sum: y"], x, y, false)
}

/// Encodes `dx = dy[0]` broadcast to every element of `grad_x` (the shape of `x`).
pub fn sum_backward(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    grad_y: &Tensor,
    grad_x: &Tensor,
    accumulate: bool,
) -> Result<()> {
    encode_broadcast(
        ctx,
        encoder,
        ["sum: grad_y", "sum: grad_x"],
        grad_y,
        grad_x,
        accumulate,
        false,
    )
}

/// Encodes `y[0] = sum of every element of x / n`, reproducibly (as [`sum_forward`]).
pub fn mean_forward(ctx: &Context, encoder: &mut dyn Recorder, x: &Tensor, y: &Tensor) -> Result<()> {
    encode_reduce(ctx, encoder, ["mean: x", "mean: y"], x, y, true)
}

/// Encodes `dx = dy[0] / n` broadcast to every element of `grad_x` (the shape of `x`).
pub fn mean_backward(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    grad_y: &Tensor,
    grad_x: &Tensor,
    accumulate: bool,
) -> Result<()> {
    encode_broadcast(
        ctx,
        encoder,
        ["mean: grad_y", "mean: grad_x"],
        grad_y,
        grad_x,
        accumulate,
        true,
    )
}
