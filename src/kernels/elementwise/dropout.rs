//! Inverted dropout: the `Dropout` descriptor and its forward and backward, the mask
//! regenerated from Philox4x32-10 rather than stored.

use super::{check_f32, encode, Params, DROPOUT_BACKWARD, DROPOUT_FORWARD};
use crate::gpu::{Context, Recorder};
use crate::kernels::check_tensors;
use crate::{DType, Error, Result, Tensor};

/// Inverted dropout: each element is zeroed with probability `p`, the rest scaled by
/// `1 / (1 - p)`. The mask is a pure function of `(seed, step, element index)` through
/// Philox4x32-10, so the backward regenerates it and a training run is reproducible.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Dropout {
    /// Probability of zeroing an element, in `[0, 1]`: 0 is the identity, 1 gives zeros.
    pub p: f32,
    /// The run's seed (the Philox key).
    pub seed: u64,
    /// Which training step (or which call within it): a new mask for each value.
    pub step: u64,
}

/// The dropout fields of the params, after checking `p`.
fn dropout_params(op: &Dropout, len: usize, accumulate: bool) -> Result<Params> {
    if !(0.0..=1.0).contains(&op.p) {
        return Err(Error::invalid(format!("dropout p must be in [0, 1], got {}", op.p)));
    }
    Ok(Params {
        len: len as u32,
        accumulate: u32::from(accumulate),
        // Computed once in f32, as the reference's dropout_scale; 0 for p = 1, where
        // the shader writes zeros without using it.
        scale: if op.p >= 1.0 { 0.0 } else { 1.0 / (1.0 - op.p) },
        p: op.p,
        seed_lo: op.seed as u32,
        seed_hi: (op.seed >> 32) as u32,
        step_lo: op.step as u32,
        step_hi: (op.step >> 32) as u32,
        ..Params::default()
    })
}

/// Encodes `y = x * keep / (1 - p)`, where element i is kept with probability `1 - p`
/// by Philox4x32-10 keyed by `(op.seed, op.step, i)`. `mask` (u32, the shape of `x`),
/// when given, receives 1 for kept and 0 for dropped elements; the backward does not
/// need it.
pub fn dropout_forward(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    op: &Dropout,
    x: &Tensor,
    y: &Tensor,
    mask: Option<&Tensor>,
) -> Result<()> {
    let shape = check_f32("dropout: x", x, None)?;
    check_f32("dropout: y", y, Some(shape))?;
    let mut outputs = vec![("dropout: y", y)];
    if let Some(mask) = mask {
        mask.check_dtype("dropout: mask", DType::U32)?;
        mask.check_shape("dropout: mask", shape)?;
        outputs.push(("dropout: mask", mask));
    }
    check_tensors(ctx, &[("dropout: x", x)], &outputs)?;
    let params = Params {
        has_out1: u32::from(mask.is_some()),
        ..dropout_params(op, x.len(), false)?
    };
    encode(
        ctx,
        encoder,
        &DROPOUT_FORWARD,
        &[
            (0, x.buffer(), "dropout: x"),
            (3, y.buffer(), "dropout: y"),
            (5, mask.map_or(ctx.placeholder(), Tensor::buffer), "dropout: mask"),
        ],
        &params,
        // One invocation per four elements: one Philox call gives four words.
        x.len().div_ceil(4),
    )
}

/// Encodes `dx = dy * keep / (1 - p)` with the mask regenerated from `op` (the same
/// `Dropout` as the forward's), never read from memory.
pub fn dropout_backward(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    op: &Dropout,
    grad_y: &Tensor,
    grad_x: &Tensor,
    accumulate: bool,
) -> Result<()> {
    let shape = check_f32("dropout: grad_y", grad_y, None)?;
    check_f32("dropout: grad_x", grad_x, Some(shape))?;
    check_tensors(ctx, &[("dropout: grad_y", grad_y)], &[("dropout: grad_x", grad_x)])?;
    let params = dropout_params(op, grad_y.len(), accumulate)?;
    encode(
        ctx,
        encoder,
        &DROPOUT_BACKWARD,
        &[
            (0, grad_y.buffer(), "dropout: grad_y"),
            (3, grad_x.buffer(), "dropout: grad_x"),
        ],
        &params,
        grad_y.len().div_ceil(4),
    )
}
