//! Launchers of the tape's arithmetic in `shaders/elementwise.wgsl`: add, sub, mul and div
//! with broadcasting, scale, square, exp and log, sums and means over one dimension, and
//! slices along one dimension, each with its backward.
//!
//! Shapes: a binary op's operands either share one shape, or one of them is broadcast:
//! its shape is a suffix of the other's (a row `[N]` over `[.., N]`, `[T, H]` over
//! `[B, T, H]`) or it is a scalar `[1]`; `y` has the larger shape ([`broadcast_shape`]).
//! A dimension `dim` splits a shape into `[outer, D, inner]` (the products of the dims
//! before it, its size, the product of the dims after it): sum and mean over `dim` take
//! `x [.., D, ..]` to `y` without that dim (`[1]` when none is left), and a slice takes
//! `count` indices from `start` along it.
//!
//! Every gradient output takes an `accumulate` flag: add into what it holds (a tensor
//! that feeds several ops) instead of overwriting it.

use super::{check_f32, encode, kernel, BinaryGrads, Params, IN0, IN1, IN2, OUT0, PARAMS};
use crate::gpu::{Context, Dispatch, KernelSpec, Recorder};
use crate::kernels::{check_loop_budget, check_tensors, row_grid};
use crate::{Error, Result, Tensor};

/// A two-operand op of [`binary_forward`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    /// `a + b`
    Add,
    /// `a - b`
    Sub,
    /// `a * b`
    Mul,
    /// `a / b`
    Div,
}

/// A one-operand op of [`unary_forward`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unary {
    /// `s * x` for a host factor `s` (`-x` is `Scale(-1.0)`).
    Scale(f32),
    /// `x * x`
    Square,
    /// `exp(x)`
    Exp,
    /// `ln(x)` (NaN below 0, -inf at 0, as `torch.log`).
    Log,
}

impl Binary {
    fn code(self) -> u32 {
        match self {
            Binary::Add => 0,
            Binary::Sub => 1,
            Binary::Mul => 2,
            Binary::Div => 3,
        }
    }

    /// The op's name in errors.
    pub fn name(self) -> &'static str {
        match self {
            Binary::Add => "add",
            Binary::Sub => "sub",
            Binary::Mul => "mul",
            Binary::Div => "div",
        }
    }
}

impl Unary {
    /// (op code, factor) as the shader's params hold them.
    fn code(self) -> (u32, f32) {
        match self {
            Unary::Scale(s) => (0, s),
            Unary::Square => (1, 0.0),
            Unary::Exp => (2, 0.0),
            Unary::Log => (3, 0.0),
        }
    }

    /// The op's name in errors.
    pub fn name(self) -> &'static str {
        match self {
            Unary::Scale(_) => "scale",
            Unary::Square => "square",
            Unary::Exp => "exp",
            Unary::Log => "log",
        }
    }

    /// What the backward reads: the forward's output for exp (`dx = dy * y`), its input
    /// for the others (scale reads neither).
    pub fn saves_output(self) -> bool {
        matches!(self, Unary::Exp)
    }
}

const BINARY_FORWARD: KernelSpec = kernel("binary_forward", &[IN0, IN1, OUT0, PARAMS]);
const BINARY_BACKWARD: KernelSpec = kernel("binary_backward", &[IN0, IN1, IN2, OUT0, PARAMS]);
const BINARY_BACKWARD_REDUCE: KernelSpec = kernel("binary_backward_reduce", &[IN0, IN1, IN2, OUT0, PARAMS]);
const UNARY_FORWARD: KernelSpec = kernel("unary_forward", &[IN0, OUT0, PARAMS]);
const UNARY_BACKWARD: KernelSpec = kernel("unary_backward", &[IN0, IN2, OUT0, PARAMS]);
const SUM_DIM_FORWARD: KernelSpec = kernel("sum_dim_forward", &[IN0, OUT0, PARAMS]);
const SUM_DIM_BACKWARD: KernelSpec = kernel("sum_dim_backward", &[IN2, OUT0, PARAMS]);
const SLICE_FORWARD: KernelSpec = kernel("slice_forward", &[IN0, OUT0, PARAMS]);
const SLICE_BACKWARD: KernelSpec = kernel("slice_backward", &[IN2, OUT0, PARAMS]);

/// The reductions' workgroup (`REDUCE_WG`) for sums of `dim` terms: the power of two
/// covering them, from 32 to 256 (common.wgsl's `tree_scratch`), so a short sum does not
/// idle 256 invocations. A function of the shape only, so the order of a sum is too.
fn reduce_wg(dim: usize) -> u32 {
    dim.next_power_of_two().clamp(32, 256) as u32
}

/// The shape of `a op b`: the larger of the two where the other is the same shape, a
/// suffix of it, or `[1]`; None when neither broadcasts to the other.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let fits = |small: &[usize], large: &[usize]| small == [1] || large.ends_with(small);
    if fits(b, a) {
        Some(a.to_vec())
    } else if fits(a, b) {
        Some(b.to_vec())
    } else {
        None
    }
}

/// The broadcast shape of two f32 operands, or an error naming `b`'s shape and what
/// would fit `a`'s.
fn operand_shapes(names: [&str; 2], a: &Tensor, b: &Tensor) -> Result<Vec<usize>> {
    let shape_a = check_f32(names[0], a, None)?;
    let shape_b = check_f32(names[1], b, None)?;
    broadcast_shape(shape_a, shape_b).ok_or_else(|| {
        Error::shape(
            names[1],
            format!("{shape_a:?}, a suffix of it or [1] (or a shape of which {shape_a:?} is one)"),
            shape_b,
        )
    })
}

/// `[outer, D, inner]` of `shape` around `dim`, or an error naming `name`.
fn dim_view(name: &str, shape: &[usize], dim: usize) -> Result<(usize, usize, usize)> {
    if dim >= shape.len() {
        return Err(Error::invalid(format!(
            "{name}: dimension {dim} is outside the {} dimensions of {shape:?}",
            shape.len()
        )));
    }
    let outer = shape[..dim].iter().product();
    let inner = shape[dim + 1..].iter().product();
    Ok((outer, shape[dim], inner))
}

/// `shape` without `dim` (`[1]` when nothing is left): the shape of a sum over `dim`.
pub fn reduced_shape(shape: &[usize], dim: usize) -> Vec<usize> {
    let mut reduced: Vec<usize> = shape.to_vec();
    if dim < reduced.len() {
        reduced.remove(dim);
    }
    if reduced.is_empty() {
        reduced.push(1);
    }
    reduced
}

/// Encodes one reduction: a workgroup per each of `outputs` sums of `dim` terms.
fn encode_reduce(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    kernel: &KernelSpec,
    buffers: &[(u32, &wgpu::Buffer, &str)],
    params: &Params,
    outputs: usize,
) -> Result<()> {
    let wg = reduce_wg(params.dim as usize);
    // Each invocation loops over every wg-th term.
    check_loop_budget(
        ctx,
        buffers.last().map_or("sum", |b| b.2),
        (params.dim as u64).div_ceil(u64::from(wg)),
    )?;
    ctx.encode_dispatch(
        encoder,
        Dispatch {
            kernel,
            overrides: &[("REDUCE_WG", wg)],
            buffers,
            params,
            workgroups: row_grid(ctx, outputs),
        },
    )
}

/// Encodes `y = a op b`, broadcasting a same-shaped, suffix or `[1]` operand
/// ([`broadcast_shape`]); `y` has the broadcast shape.
pub fn binary_forward(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    op: Binary,
    a: &Tensor,
    b: &Tensor,
    y: &Tensor,
) -> Result<()> {
    let name = |what: &str| format!("{}: {what}", op.name());
    let (na, nb, ny) = (name("a"), name("b"), name("y"));
    let shape = operand_shapes([&na, &nb], a, b)?;
    check_f32(&ny, y, Some(&shape))?;
    check_tensors(ctx, &[(&na, a), (&nb, b)], &[(&ny, y)])?;
    let params = Params {
        len: y.len() as u32,
        op: op.code(),
        len_a: a.len() as u32,
        len_b: b.len() as u32,
        ..Params::default()
    };
    encode(
        ctx,
        encoder,
        &BINARY_FORWARD,
        &[(0, a.buffer(), &na), (1, b.buffer(), &nb), (3, y.buffer(), &ny)],
        &params,
        y.len(),
    )
}

/// Encodes the gradients of `y = a op b` (as [`binary_forward`]):
/// `da (+)= dy * ∂y/∂a`, `db (+)= dy * ∂y/∂b`, each summed over the repeats of a
/// broadcast operand. `grads.a` has `a`'s shape, `grads.b` `b`'s; `None` skips one.
pub fn binary_backward(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    op: Binary,
    a: &Tensor,
    b: &Tensor,
    grad_y: &Tensor,
    grads: BinaryGrads<'_>,
) -> Result<()> {
    let name = |what: &str| format!("{}: {what}", op.name());
    let (na, nb, ndy) = (name("a"), name("b"), name("grad_y"));
    let shape = operand_shapes([&na, &nb], a, b)?;
    check_f32(&ndy, grad_y, Some(&shape))?;
    for (which, grad, operand, grad_name) in [(0u32, grads.a, a, name("grad_a")), (1, grads.b, b, name("grad_b"))] {
        let Some(grad) = grad else { continue };
        check_f32(&grad_name, grad, Some(operand.shape()))?;
        check_tensors(ctx, &[(&na, a), (&nb, b), (&ndy, grad_y)], &[(&grad_name, grad)])?;
        let params = Params {
            len: grad.len() as u32,
            accumulate: u32::from(grads.accumulate),
            op: op.code(),
            which,
            len_a: a.len() as u32,
            len_b: b.len() as u32,
            // The reduction's view of y: [1, repeats, the operand's length].
            outer: 1,
            dim: (grad_y.len() / grad.len()) as u32,
            inner: grad.len() as u32,
            ..Params::default()
        };
        let buffers = [
            (0, a.buffer(), na.as_str()),
            (1, b.buffer(), nb.as_str()),
            (2, grad_y.buffer(), ndy.as_str()),
            (3, grad.buffer(), grad_name.as_str()),
        ];
        if grad.len() == grad_y.len() {
            encode(ctx, encoder, &BINARY_BACKWARD, &buffers, &params, grad.len())?;
        } else {
            encode_reduce(ctx, encoder, &BINARY_BACKWARD_REDUCE, &buffers, &params, grad.len())?;
        }
    }
    Ok(())
}

/// Encodes `y = f(x)` for a [`Unary`] op; `y` has `x`'s shape.
pub fn unary_forward(ctx: &Context, encoder: &mut dyn Recorder, op: Unary, x: &Tensor, y: &Tensor) -> Result<()> {
    let (nx, ny) = (format!("{}: x", op.name()), format!("{}: y", op.name()));
    let shape = check_f32(&nx, x, None)?;
    check_f32(&ny, y, Some(shape))?;
    check_tensors(ctx, &[(&nx, x)], &[(&ny, y)])?;
    let (code, factor) = op.code();
    let params = Params {
        len: x.len() as u32,
        op: code,
        factor,
        ..Params::default()
    };
    encode(
        ctx,
        encoder,
        &UNARY_FORWARD,
        &[(0, x.buffer(), &nx), (3, y.buffer(), &ny)],
        &params,
        x.len(),
    )
}

/// Encodes `dx (+)= dy * f'(x)` for a [`Unary`] op. `saved` is what the backward reads
/// ([`Unary::saves_output`]): the forward's output `y` for exp, its input `x` for square
/// and log; scale reads nothing from it (pass either).
pub fn unary_backward(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    op: Unary,
    saved: &Tensor,
    grad_y: &Tensor,
    grad_x: &Tensor,
    accumulate: bool,
) -> Result<()> {
    let name = |what: &str| format!("{}: {what}", op.name());
    let (ns, ndy, ndx) = (
        name(if op.saves_output() { "y" } else { "x" }),
        name("grad_y"),
        name("grad_x"),
    );
    let shape = check_f32(&ns, saved, None)?;
    check_f32(&ndy, grad_y, Some(shape))?;
    check_f32(&ndx, grad_x, Some(shape))?;
    check_tensors(ctx, &[(&ns, saved), (&ndy, grad_y)], &[(&ndx, grad_x)])?;
    let (code, factor) = op.code();
    let params = Params {
        len: grad_x.len() as u32,
        accumulate: u32::from(accumulate),
        op: code,
        factor,
        ..Params::default()
    };
    encode(
        ctx,
        encoder,
        &UNARY_BACKWARD,
        &[
            (0, saved.buffer(), &ns),
            (2, grad_y.buffer(), &ndy),
            (3, grad_x.buffer(), &ndx),
        ],
        &params,
        grad_x.len(),
    )
}

/// Shared body of sum_dim_forward and mean_dim_forward: `y = Σ_dim x / divisor`.
fn encode_sum_dim(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    what: &str,
    x: &Tensor,
    dim: usize,
    y: &Tensor,
    mean: bool,
) -> Result<()> {
    let (nx, ny) = (format!("{what}: x"), format!("{what}: y"));
    let shape = check_f32(&nx, x, None)?;
    let (outer, size, inner) = dim_view(&nx, shape, dim)?;
    check_f32(&ny, y, Some(&reduced_shape(shape, dim)))?;
    check_tensors(ctx, &[(&nx, x)], &[(&ny, y)])?;
    let params = Params {
        len: y.len() as u32,
        outer: outer as u32,
        dim: size as u32,
        inner: inner as u32,
        divisor: if mean { size as f32 } else { 1.0 },
        ..Params::default()
    };
    encode_reduce(
        ctx,
        encoder,
        &SUM_DIM_FORWARD,
        &[(0, x.buffer(), &nx), (3, y.buffer(), &ny)],
        &params,
        y.len(),
    )
}

/// Shared body of sum_dim_backward and mean_dim_backward: `dx (+)= dy / divisor`,
/// broadcast along `dim`.
fn encode_sum_dim_backward(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    what: &str,
    [grad_y, grad_x]: [&Tensor; 2],
    dim: usize,
    accumulate: bool,
    mean: bool,
) -> Result<()> {
    let (ndy, ndx) = (format!("{what}: grad_y"), format!("{what}: grad_x"));
    let shape = check_f32(&ndx, grad_x, None)?;
    let (outer, size, inner) = dim_view(&ndx, shape, dim)?;
    check_f32(&ndy, grad_y, Some(&reduced_shape(shape, dim)))?;
    check_tensors(ctx, &[(&ndy, grad_y)], &[(&ndx, grad_x)])?;
    let params = Params {
        len: grad_x.len() as u32,
        accumulate: u32::from(accumulate),
        outer: outer as u32,
        dim: size as u32,
        inner: inner as u32,
        divisor: if mean { size as f32 } else { 1.0 },
        ..Params::default()
    };
    encode(
        ctx,
        encoder,
        &SUM_DIM_BACKWARD,
        &[(2, grad_y.buffer(), &ndy), (3, grad_x.buffer(), &ndx)],
        &params,
        grad_x.len(),
    )
}

/// Encodes `y = x.sum(dim)`: `y` is `x`'s shape without `dim` (`[1]` when `x` has one
/// dimension), each element summed in a fixed order, so the result is reproducible.
pub fn sum_dim_forward(ctx: &Context, encoder: &mut dyn Recorder, x: &Tensor, dim: usize, y: &Tensor) -> Result<()> {
    encode_sum_dim(ctx, encoder, "sum_dim", x, dim, y, false)
}

/// Encodes the gradient of `y = x.sum(dim)`: `dx (+)= dy` broadcast along `dim`.
pub fn sum_dim_backward(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    grad_y: &Tensor,
    dim: usize,
    grad_x: &Tensor,
    accumulate: bool,
) -> Result<()> {
    encode_sum_dim_backward(ctx, encoder, "sum_dim", [grad_y, grad_x], dim, accumulate, false)
}

/// Encodes `y = x.mean(dim)`, the sum of [`sum_dim_forward`] divided by the size of `dim`.
pub fn mean_dim_forward(ctx: &Context, encoder: &mut dyn Recorder, x: &Tensor, dim: usize, y: &Tensor) -> Result<()> {
    encode_sum_dim(ctx, encoder, "mean_dim", x, dim, y, true)
}

/// Encodes the gradient of `y = x.mean(dim)`: `dx (+)= dy / D` broadcast along `dim`.
pub fn mean_dim_backward(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    grad_y: &Tensor,
    dim: usize,
    grad_x: &Tensor,
    accumulate: bool,
) -> Result<()> {
    encode_sum_dim_backward(ctx, encoder, "mean_dim", [grad_y, grad_x], dim, accumulate, true)
}

/// The `[outer, D, inner]` view and the slice's length for `x` (`full`) sliced into
/// `part` along `dim` from `start`, checked.
fn slice_view(names: [&str; 2], full: &[usize], part: &Tensor, dim: usize, start: usize) -> Result<Params> {
    let (outer, size, inner) = dim_view(names[0], full, dim)?;
    let count = part.shape().get(dim).copied().unwrap_or(0);
    let mut expected = full.to_vec();
    expected[dim] = count;
    if count == 0 || start.checked_add(count).is_none_or(|end| end > size) {
        return Err(Error::invalid(format!(
            "{}: {count} indices from {start} along dimension {dim} of {full:?} (size {size})",
            names[1]
        )));
    }
    check_f32(names[1], part, Some(&expected))?;
    Ok(Params {
        outer: outer as u32,
        dim: size as u32,
        inner: inner as u32,
        start: start as u32,
        count: count as u32,
        ..Params::default()
    })
}

/// Encodes `y = x.narrow(dim, start, count)`, a copy: `y` is `x`'s shape with `count`
/// (taken from `y`'s shape) at `dim`, and `start + count` must fit that dimension.
pub fn slice_forward(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    x: &Tensor,
    dim: usize,
    start: usize,
    y: &Tensor,
) -> Result<()> {
    let shape = check_f32("slice: x", x, None)?;
    let params = Params {
        len: y.len() as u32,
        ..slice_view(["slice: x", "slice: y"], shape, y, dim, start)?
    };
    check_tensors(ctx, &[("slice: x", x)], &[("slice: y", y)])?;
    encode(
        ctx,
        encoder,
        &SLICE_FORWARD,
        &[(0, x.buffer(), "slice: x"), (3, y.buffer(), "slice: y")],
        &params,
        y.len(),
    )
}

/// Encodes the gradient of [`slice_forward`]: `dx (+)= dy` inside the slice, zeros (or
/// nothing added) outside it.
pub fn slice_backward(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    grad_y: &Tensor,
    dim: usize,
    start: usize,
    grad_x: &Tensor,
    accumulate: bool,
) -> Result<()> {
    let shape = check_f32("slice: grad_x", grad_x, None)?;
    let params = Params {
        len: grad_x.len() as u32,
        accumulate: u32::from(accumulate),
        ..slice_view(["slice: grad_x", "slice: grad_y"], shape, grad_y, dim, start)?
    };
    check_tensors(ctx, &[("slice: grad_y", grad_y)], &[("slice: grad_x", grad_x)])?;
    encode(
        ctx,
        encoder,
        &SLICE_BACKWARD,
        &[
            (2, grad_y.buffer(), "slice: grad_y"),
            (3, grad_x.buffer(), "slice: grad_x"),
        ],
        &params,
        grad_x.len(),
    )
}
