//! Launchers of `shaders/elementwise.wgsl`: add, mul, tanh, sigmoid, relu, concat and
//! split on the last axis, sum and mean to a `[1]` tensor, and dropout, each with its
//! backward.
//!
//! Shapes: the operands of the pointwise ops all have one shape (any rank, >= 1 element);
//! concat takes `a [.., A]` and `b [.., B]` with the same leading dimensions to
//! `y [.., A+B]`; sum and mean reduce every element to `y [1]`.
//!
//! Every gradient output takes an `accumulate` flag: add into what it holds (a tensor
//! that feeds several ops) instead of overwriting it. The backward of tanh, sigmoid and
//! relu takes the forward's output `y`, which is what it saves.

use super::{check_tensors, element_grid};
use crate::gpu::{Access, Context, Dispatch, KernelSpec, Recorder, ELEMENTWISE};
use crate::{DType, Error, Result, Tensor};

/// Where the backward of a two-operand op writes; `None` skips that gradient.
#[derive(Clone, Copy, Debug, Default)]
pub struct BinaryGrads<'a> {
    /// `da`, the shape of `a`.
    pub a: Option<&'a Tensor>,
    /// `db`, the shape of `b`.
    pub b: Option<&'a Tensor>,
    /// Add into the gradients instead of overwriting them.
    pub accumulate: bool,
}

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

/// Mirror of `Params` in elementwise.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    len: u32,
    accumulate: u32,
    scale: f32,
    p: f32,
    seed_lo: u32,
    seed_hi: u32,
    step_lo: u32,
    step_hi: u32,
    cols_a: u32,
    cols_b: u32,
    has_out0: u32,
    has_out1: u32,
}

const IN0: (u32, Access) = (0, Access::Read);
const IN1: (u32, Access) = (1, Access::Read);
const IN2: (u32, Access) = (2, Access::Read);
const OUT0: (u32, Access) = (3, Access::ReadWrite);
const OUT1: (u32, Access) = (4, Access::ReadWrite);
const MASK: (u32, Access) = (5, Access::ReadWrite);
const PARAMS: (u32, Access) = (6, Access::Params);

const fn kernel(entry_point: &'static str, bindings: &'static [(u32, Access)]) -> KernelSpec {
    KernelSpec {
        family: &ELEMENTWISE,
        entry_point,
        bindings,
    }
}

const ADD_FORWARD: KernelSpec = kernel("add_forward", &[IN0, IN1, OUT0, PARAMS]);
const ADD_BACKWARD: KernelSpec = kernel("add_backward", &[IN0, OUT0, OUT1, PARAMS]);
const MUL_FORWARD: KernelSpec = kernel("mul_forward", &[IN0, IN1, OUT0, PARAMS]);
const MUL_BACKWARD: KernelSpec = kernel("mul_backward", &[IN0, IN1, IN2, OUT0, OUT1, PARAMS]);
const TANH_FORWARD: KernelSpec = kernel("tanh_forward", &[IN0, OUT0, PARAMS]);
const TANH_BACKWARD: KernelSpec = kernel("tanh_backward", &[IN0, IN2, OUT0, PARAMS]);
const SIGMOID_FORWARD: KernelSpec = kernel("sigmoid_forward", &[IN0, OUT0, PARAMS]);
const SIGMOID_BACKWARD: KernelSpec = kernel("sigmoid_backward", &[IN0, IN2, OUT0, PARAMS]);
const RELU_FORWARD: KernelSpec = kernel("relu_forward", &[IN0, OUT0, PARAMS]);
const RELU_BACKWARD: KernelSpec = kernel("relu_backward", &[IN0, IN2, OUT0, PARAMS]);
const CONCAT_FORWARD: KernelSpec = kernel("concat_forward", &[IN0, IN1, OUT0, PARAMS]);
const CONCAT_BACKWARD: KernelSpec = kernel("concat_backward", &[IN0, OUT0, OUT1, PARAMS]);
const SUM_FORWARD: KernelSpec = kernel("sum_forward", &[IN0, OUT0, PARAMS]);
const SUM_BACKWARD: KernelSpec = kernel("sum_backward", &[IN0, OUT0, PARAMS]);
const DROPOUT_FORWARD: KernelSpec = kernel("dropout_forward", &[IN0, OUT0, MASK, PARAMS]);
const DROPOUT_BACKWARD: KernelSpec = kernel("dropout_backward", &[IN0, OUT0, PARAMS]);

/// Invocations per workgroup of the pointwise kernels (`WG`): a multiple of lavapipe's 8
/// lanes, within every adapter's default 256.
const WG: u32 = 256;
/// The one workgroup of the reduction (`REDUCE_WG`, at most the shader's `REDUCE_MAX`).
const REDUCE_WG: u32 = 256;

/// f32, at least one element, and `expected` shape if given; returns the shape.
fn check_f32<'t>(name: &str, tensor: &'t Tensor, expected: Option<&[usize]>) -> Result<&'t [usize]> {
    tensor.check_dtype(name, DType::F32)?;
    if let Some(expected) = expected {
        tensor.check_shape(name, expected)?;
    } else if tensor.is_empty() || tensor.shape().is_empty() {
        return Err(Error::shape(name, "at least one element", tensor.shape()));
    }
    Ok(tensor.shape())
}

/// Encodes one dispatch over `units` invocations of `WG`.
fn encode(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    kernel: &KernelSpec,
    buffers: &[(u32, &wgpu::Buffer, &str)],
    params: &Params,
    units: usize,
) -> Result<()> {
    ctx.encode_dispatch(
        encoder,
        Dispatch {
            kernel,
            overrides: &[("WG", WG)],
            buffers,
            params,
            workgroups: element_grid(ctx, units, WG),
        },
    )
}

/// Shared body of add_forward and mul_forward: `y = a op b`, one shape.
fn binary_forward(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    kernel: &KernelSpec,
    names: [&str; 3],
    [a, b, y]: [&Tensor; 3],
) -> Result<()> {
    let shape = check_f32(names[0], a, None)?;
    check_f32(names[1], b, Some(shape))?;
    check_f32(names[2], y, Some(shape))?;
    check_tensors(ctx, &[(names[0], a), (names[1], b)], &[(names[2], y)])?;
    let params = Params {
        len: a.len() as u32,
        ..Params::default()
    };
    encode(
        ctx,
        encoder,
        kernel,
        &[
            (0, a.buffer(), names[0]),
            (1, b.buffer(), names[1]),
            (3, y.buffer(), names[2]),
        ],
        &params,
        a.len(),
    )
}

/// The two gradient outputs of a backward, checked, as the launchers need them.
struct GradOutputs<'a> {
    /// (name, tensor) of the present ones, for `check_tensors`.
    present: Vec<(&'a str, &'a Tensor)>,
    /// Bindings 3 and 4, the placeholder where a gradient is absent.
    bindings: [(u32, &'a wgpu::Buffer, &'a str); 2],
    /// The `has_out0` / `has_out1` flags.
    flags: [u32; 2],
}

/// The gradient outputs of `grads`, checked against `shapes`.
fn grad_outputs<'a>(
    ctx: &'a Context,
    grads: &BinaryGrads<'a>,
    names: [&'a str; 2],
    shapes: [&[usize]; 2],
) -> Result<GradOutputs<'a>> {
    let mut outputs = GradOutputs {
        present: Vec::new(),
        bindings: [(3, ctx.placeholder(), names[0]), (4, ctx.placeholder(), names[1])],
        flags: [0, 0],
    };
    for (slot, grad) in [grads.a, grads.b].into_iter().enumerate() {
        if let Some(grad) = grad {
            check_f32(names[slot], grad, Some(shapes[slot]))?;
            outputs.present.push((names[slot], grad));
            outputs.bindings[slot].1 = grad.buffer();
            outputs.flags[slot] = 1;
        }
    }
    Ok(outputs)
}

/// Encodes `y = a + b`.
pub fn add_forward(ctx: &Context, encoder: &mut dyn Recorder, a: &Tensor, b: &Tensor, y: &Tensor) -> Result<()> {
    binary_forward(ctx, encoder, &ADD_FORWARD, ["add: a", "add: b", "add: y"], [a, b, y])
}

/// Encodes the gradients of `y = a + b`: `da = dy`, `db = dy`.
pub fn add_backward(ctx: &Context, encoder: &mut dyn Recorder, grad_y: &Tensor, grads: BinaryGrads<'_>) -> Result<()> {
    let shape = check_f32("add: grad_y", grad_y, None)?;
    let GradOutputs {
        present: outputs,
        bindings: [out0, out1],
        flags: [has_a, has_b],
    } = grad_outputs(ctx, &grads, ["add: grad_a", "add: grad_b"], [shape, shape])?;
    check_tensors(ctx, &[("add: grad_y", grad_y)], &outputs)?;
    if outputs.is_empty() {
        return Ok(());
    }
    let params = Params {
        len: grad_y.len() as u32,
        accumulate: u32::from(grads.accumulate),
        has_out0: has_a,
        has_out1: has_b,
        ..Params::default()
    };
    encode(
        ctx,
        encoder,
        &ADD_BACKWARD,
        &[(0, grad_y.buffer(), "add: grad_y"), out0, out1],
        &params,
        grad_y.len(),
    )
}

/// Encodes `y = a * b` (elementwise).
pub fn mul_forward(ctx: &Context, encoder: &mut dyn Recorder, a: &Tensor, b: &Tensor, y: &Tensor) -> Result<()> {
    binary_forward(ctx, encoder, &MUL_FORWARD, ["mul: a", "mul: b", "mul: y"], [a, b, y])
}

/// Encodes the gradients of `y = a * b`: `da = dy * b`, `db = dy * a`.
pub fn mul_backward(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    a: &Tensor,
    b: &Tensor,
    grad_y: &Tensor,
    grads: BinaryGrads<'_>,
) -> Result<()> {
    let shape = check_f32("mul: a", a, None)?;
    check_f32("mul: b", b, Some(shape))?;
    check_f32("mul: grad_y", grad_y, Some(shape))?;
    let GradOutputs {
        present: outputs,
        bindings: [out0, out1],
        flags: [has_a, has_b],
    } = grad_outputs(ctx, &grads, ["mul: grad_a", "mul: grad_b"], [shape, shape])?;
    check_tensors(ctx, &[("mul: a", a), ("mul: b", b), ("mul: grad_y", grad_y)], &outputs)?;
    if outputs.is_empty() {
        return Ok(());
    }
    let params = Params {
        len: a.len() as u32,
        accumulate: u32::from(grads.accumulate),
        has_out0: has_a,
        has_out1: has_b,
        ..Params::default()
    };
    encode(
        ctx,
        encoder,
        &MUL_BACKWARD,
        &[
            (0, a.buffer(), "mul: a"),
            (1, b.buffer(), "mul: b"),
            (2, grad_y.buffer(), "mul: grad_y"),
            out0,
            out1,
        ],
        &params,
        a.len(),
    )
}

/// Shared body of the activations' forward: `y = f(x)`.
fn unary_forward(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    kernel: &KernelSpec,
    names: [&str; 2],
    x: &Tensor,
    y: &Tensor,
) -> Result<()> {
    let shape = check_f32(names[0], x, None)?;
    check_f32(names[1], y, Some(shape))?;
    check_tensors(ctx, &[(names[0], x)], &[(names[1], y)])?;
    let params = Params {
        len: x.len() as u32,
        ..Params::default()
    };
    encode(
        ctx,
        encoder,
        kernel,
        &[(0, x.buffer(), names[0]), (3, y.buffer(), names[1])],
        &params,
        x.len(),
    )
}

/// Shared body of the activations' backward: `dx (+)= dy * f'(from y)`.
fn unary_backward(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    kernel: &KernelSpec,
    names: [&str; 3],
    [y, grad_y, grad_x]: [&Tensor; 3],
    accumulate: bool,
) -> Result<()> {
    let shape = check_f32(names[0], y, None)?;
    check_f32(names[1], grad_y, Some(shape))?;
    check_f32(names[2], grad_x, Some(shape))?;
    check_tensors(ctx, &[(names[0], y), (names[1], grad_y)], &[(names[2], grad_x)])?;
    let params = Params {
        len: y.len() as u32,
        accumulate: u32::from(accumulate),
        ..Params::default()
    };
    encode(
        ctx,
        encoder,
        kernel,
        &[
            (0, y.buffer(), names[0]),
            (2, grad_y.buffer(), names[1]),
            (3, grad_x.buffer(), names[2]),
        ],
        &params,
        y.len(),
    )
}

/// Encodes `y = tanh(x)`.
pub fn tanh_forward(ctx: &Context, encoder: &mut dyn Recorder, x: &Tensor, y: &Tensor) -> Result<()> {
    unary_forward(ctx, encoder, &TANH_FORWARD, ["tanh: x", "tanh: y"], x, y)
}

/// Encodes `dx = dy * (1 - y^2)` from the forward's output `y`.
pub fn tanh_backward(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    y: &Tensor,
    grad_y: &Tensor,
    grad_x: &Tensor,
    accumulate: bool,
) -> Result<()> {
    let names = ["tanh: y", "tanh: grad_y", "tanh: grad_x"];
    unary_backward(ctx, encoder, &TANH_BACKWARD, names, [y, grad_y, grad_x], accumulate)
}

/// Encodes `y = 1 / (1 + exp(-x))`.
pub fn sigmoid_forward(ctx: &Context, encoder: &mut dyn Recorder, x: &Tensor, y: &Tensor) -> Result<()> {
    unary_forward(ctx, encoder, &SIGMOID_FORWARD, ["sigmoid: x", "sigmoid: y"], x, y)
}

/// Encodes `dx = dy * y * (1 - y)` from the forward's output `y`.
pub fn sigmoid_backward(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    y: &Tensor,
    grad_y: &Tensor,
    grad_x: &Tensor,
    accumulate: bool,
) -> Result<()> {
    let names = ["sigmoid: y", "sigmoid: grad_y", "sigmoid: grad_x"];
    unary_backward(ctx, encoder, &SIGMOID_BACKWARD, names, [y, grad_y, grad_x], accumulate)
}

/// Encodes `y = max(x, 0)` (NaN stays NaN, as PyTorch).
pub fn relu_forward(ctx: &Context, encoder: &mut dyn Recorder, x: &Tensor, y: &Tensor) -> Result<()> {
    unary_forward(ctx, encoder, &RELU_FORWARD, ["relu: x", "relu: y"], x, y)
}

/// Encodes `dx = dy where y > 0, else 0` from the forward's output `y`.
pub fn relu_backward(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    y: &Tensor,
    grad_y: &Tensor,
    grad_x: &Tensor,
    accumulate: bool,
) -> Result<()> {
    let names = ["relu: y", "relu: grad_y", "relu: grad_x"];
    unary_backward(ctx, encoder, &RELU_BACKWARD, names, [y, grad_y, grad_x], accumulate)
}

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
