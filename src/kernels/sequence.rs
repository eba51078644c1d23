//! Launchers of `shaders/sequence.wgsl`: reversing each row of a batch-first sequence
//! within its length (the backward direction of a bidirectional recurrent layer).
//!
//! Shapes: `x`, `y` `[B, T, D]`; lengths `[B]` (None: every row has T steps).

use super::{check_tensors, element_grid, Lengths};
use crate::gpu::{Access, Context, Dispatch, KernelSpec, Recorder, SEQUENCE};
use crate::{DType, Error, Result, Tensor};

/// Mirror of `Params` in sequence.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    batch: u32,
    steps: u32,
    width: u32,
    has_lengths: u32,
    accumulate: u32,
    _pad: [u32; 3],
}

const REVERSE_SEQUENCE: KernelSpec = KernelSpec {
    family: &SEQUENCE,
    entry_point: "reverse_sequence",
    bindings: &[
        (0, Access::Read),
        (1, Access::Read),
        (2, Access::ReadWrite),
        (3, Access::Params),
    ],
};

const WG: u32 = 64;

fn encode(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    names: [&str; 2],
    x: &Tensor,
    lengths: Option<&Lengths>,
    y: &Tensor,
    accumulate: bool,
) -> Result<()> {
    let [batch, steps, width] = x.shape()[..] else {
        return Err(Error::shape(names[0], "[B, T, D]", x.shape()));
    };
    y.check_shape(names[1], x.shape())?;
    x.check_dtype(names[0], DType::F32)?;
    y.check_dtype(names[1], DType::F32)?;
    if let Some(lengths) = lengths {
        lengths.check("reverse_sequence: lengths", batch, steps)?;
    }
    check_tensors(ctx, &[(names[0], x)], &[(names[1], y)])?;
    if x.is_empty() {
        return Ok(());
    }
    let params = Params {
        batch: batch as u32,
        steps: steps as u32,
        width: width as u32,
        has_lengths: u32::from(lengths.is_some()),
        accumulate: u32::from(accumulate),
        ..Params::default()
    };
    let lengths = lengths.map_or(ctx.placeholder(), |lengths| lengths.tensor().buffer());
    ctx.encode_dispatch(
        encoder,
        Dispatch {
            kernel: &REVERSE_SEQUENCE,
            overrides: &[("WG", WG)],
            buffers: &[
                (0, x.buffer(), names[0]),
                (1, lengths, "reverse_sequence: lengths"),
                (2, y.buffer(), names[1]),
            ],
            params: &params,
            workgroups: element_grid(ctx, x.len(), WG),
        },
    )
}

/// Encodes `y[b, t] = x[b, len[b] - 1 - t]` for `t < len[b]`, 0 past it.
pub fn reverse_sequence_forward(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    x: &Tensor,
    lengths: Option<&Lengths>,
    y: &Tensor,
) -> Result<()> {
    let names = ["reverse_sequence: x", "reverse_sequence: y"];
    encode(ctx, encoder, names, x, lengths, y, false)
}

/// Encodes the gradient: the same reversal of `grad_y` into `grad_x` (added to it with
/// `accumulate`).
pub fn reverse_sequence_backward(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    grad_y: &Tensor,
    lengths: Option<&Lengths>,
    grad_x: &Tensor,
    accumulate: bool,
) -> Result<()> {
    let names = ["reverse_sequence: grad_y", "reverse_sequence: grad_x"];
    encode(ctx, encoder, names, grad_y, lengths, grad_x, accumulate)
}
