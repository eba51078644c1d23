//! Concat and split on the last axis (`[.., A] ++ [.., B] -> [.., A+B]` and back), each
//! the other's backward.

use super::{check_f32, encode, grad_outputs, BinaryGrads, GradOutputs, Params, CONCAT_BACKWARD, CONCAT_FORWARD};
use crate::gpu::{Context, Recorder};
use crate::kernels::check_tensors;
use crate::{DType, Error, Result, Tensor};

/// The shapes of a last-axis concat: `(a [.., A], b [.., B]) -> y [.., A+B]`, checked;
/// returns (A, B, shape of y).
fn concat_shapes(names: [&str; 2], a: &Tensor, b: &Tensor) -> Result<(usize, usize, Vec<usize>)> {
    let a_shape = check_f32(names[0], a, None)?;
    b.check_dtype(names[1], DType::F32)?;
    let (&cols_a, lead) = a_shape.split_last().unwrap_or((&0, &[]));
    let b_shape = b.shape();
    match b_shape.split_last() {
        Some((&cols_b, b_lead)) if b_lead == lead && cols_b > 0 => {
            let mut y_shape = lead.to_vec();
            y_shape.push(cols_a + cols_b);
            Ok((cols_a, cols_b, y_shape))
        }
        _ => Err(Error::shape(
            names[1],
            format!("[{}B] with B >= 1", leading(lead)),
            b_shape,
        )),
    }
}

/// `"2, 3, "` for leading dimensions [2, 3]: a shape prefix for error messages.
fn leading(lead: &[usize]) -> String {
    lead.iter().map(|d| format!("{d}, ")).collect()
}

/// Shared body of concat_forward and split_backward: `y (+)= a ++ b` on the last axis.
fn encode_concat(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    names: [&str; 3],
    [a, b, y]: [&Tensor; 3],
    accumulate: bool,
) -> Result<()> {
    let (cols_a, cols_b, y_shape) = concat_shapes([names[0], names[1]], a, b)?;
    check_f32(names[2], y, Some(&y_shape))?;
    check_tensors(ctx, &[(names[0], a), (names[1], b)], &[(names[2], y)])?;
    let params = Params {
        len: y.len() as u32,
        accumulate: u32::from(accumulate),
        cols_a: cols_a as u32,
        cols_b: cols_b as u32,
        ..Params::default()
    };
    encode(
        ctx,
        encoder,
        &CONCAT_FORWARD,
        &[
            (0, a.buffer(), names[0]),
            (1, b.buffer(), names[1]),
            (3, y.buffer(), names[2]),
        ],
        &params,
        y.len(),
    )
}

/// Shared body of concat_backward and split_forward: `(a, b) (+)= split of x` on the
/// last axis, at `cols_a`.
fn encode_split(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    names: [&str; 3],
    x: &Tensor,
    outs: BinaryGrads<'_>,
    cols_a: Option<usize>,
) -> Result<()> {
    let x_shape = check_f32(names[0], x, None)?;
    let (&width, lead) = x_shape.split_last().unwrap_or((&0, &[]));
    // Split point: from a's shape if given, else from b's.
    let cols_a = match (cols_a, outs.a, outs.b) {
        (Some(cols), _, _) => cols,
        (None, Some(a), _) => a.shape().last().copied().unwrap_or(0),
        (None, None, Some(b)) => width.saturating_sub(b.shape().last().copied().unwrap_or(0)),
        (None, None, None) => return Ok(()),
    };
    if cols_a == 0 || cols_a >= width {
        let a_shape = outs.a.map(|a| a.shape().to_vec()).unwrap_or_default();
        return Err(Error::shape(
            names[1],
            format!(
                "[{}A] with 1 <= A < {width} (the last axis of {} {x_shape:?})",
                leading(lead),
                names[0]
            ),
            &a_shape,
        ));
    }
    let a_shape: Vec<usize> = lead.iter().copied().chain([cols_a]).collect();
    let b_shape: Vec<usize> = lead.iter().copied().chain([width - cols_a]).collect();
    let GradOutputs {
        present: outputs,
        bindings: [out0, out1],
        flags: [has_a, has_b],
    } = grad_outputs(ctx, &outs, [names[1], names[2]], [&a_shape, &b_shape])?;
    check_tensors(ctx, &[(names[0], x)], &outputs)?;
    let params = Params {
        len: x.len() as u32,
        accumulate: u32::from(outs.accumulate),
        cols_a: cols_a as u32,
        cols_b: (width - cols_a) as u32,
        has_out0: has_a,
        has_out1: has_b,
        ..Params::default()
    };
    encode(
        ctx,
        encoder,
        &CONCAT_BACKWARD,
        &[(0, x.buffer(), names[0]), out0, out1],
        &params,
        x.len(),
    )
}

/// Encodes `y = a ++ b` along the last axis: `[.., A] ++ [.., B] -> [.., A+B]`.
pub fn concat_forward(ctx: &Context, encoder: &mut dyn Recorder, a: &Tensor, b: &Tensor, y: &Tensor) -> Result<()> {
    encode_concat(ctx, encoder, ["concat: a", "concat: b", "concat: y"], [a, b, y], false)
}

/// Encodes the gradients of `y = a ++ b`: `da, db = dy[.., :A], dy[.., A:]` (a split).
/// The split point comes from `grads.a`'s last axis, or from `grads.b`'s.
pub fn concat_backward(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    grad_y: &Tensor,
    grads: BinaryGrads<'_>,
) -> Result<()> {
    let names = ["concat: grad_y", "concat: grad_a", "concat: grad_b"];
    encode_split(ctx, encoder, names, grad_y, grads, None)
}

/// Encodes `(a, b) = split(x)` along the last axis at `a`'s width:
/// `[.., A+B] -> [.., A], [.., B]`.
pub fn split_forward(ctx: &Context, encoder: &mut dyn Recorder, x: &Tensor, a: &Tensor, b: &Tensor) -> Result<()> {
    let outs = BinaryGrads {
        a: Some(a),
        b: Some(b),
        accumulate: false,
    };
    let cols_a = a.shape().last().copied();
    encode_split(ctx, encoder, ["split: x", "split: a", "split: b"], x, outs, cols_a)
}

/// Encodes the gradient of `(a, b) = split(x)`: `dx = da ++ db`.
pub fn split_backward(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    grad_a: &Tensor,
    grad_b: &Tensor,
    grad_x: &Tensor,
    accumulate: bool,
) -> Result<()> {
    let names = ["split: grad_a", "split: grad_b", "split: grad_x"];
    encode_concat(ctx, encoder, names, [grad_a, grad_b, grad_x], accumulate)
}
