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
//!
//! This file holds the shader's binding table, the shared checks and dispatch, add, mul and
//! the activations; `concat` (concat and split), `reduce` (sum and mean) and `dropout`
//! hold the rest, re-exported here.

mod concat;
mod dropout;
pub mod pointwise;
mod reduce;

pub use concat::{concat_backward, concat_forward, split_backward, split_forward};
pub use dropout::{dropout_backward, dropout_forward, Dropout};
pub use reduce::{mean_backward, mean_forward, sum_backward, sum_forward};

use super::check_tensors;
use crate::gpu::{Access, Context, KernelSpec, Recorder, ELEMENTWISE};
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
    // The tape's arithmetic (pointwise.rs).
    op: u32,
    which: u32,
    len_a: u32,
    len_b: u32,
    outer: u32,
    dim: u32,
    inner: u32,
    start: u32,
    count: u32,
    factor: f32,
    divisor: f32,
    _pad: u32,
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
    super::encode_elementwise(ctx, encoder, kernel, buffers, params, units, WG)
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
