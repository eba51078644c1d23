//! Launchers of `shaders/optim.wgsl`: `torch.optim.Adam`, `torch.optim.SGD` and
//! `torch.nn.utils.clip_grad_norm_` (norm type 2).
//!
//! One dispatch per parameter tensor: a model's parameters are a handful of tensors, so
//! the launch count stays small, and a list-of-tensors kernel would need one binding per
//! tensor (browsers allow 8 storage buffers per stage). Every parameter, gradient and
//! state tensor is f32 and all tensors of one step have the parameter's shape.
//! Hyperparameters are f64, like PyTorch's Python floats: the bias corrections are
//! computed on the host in f64 and handed to the kernel as f32.

use super::{check_tensors, element_grid, row_grid};
use crate::gpu::{Access, Context, Dispatch, KernelSpec, Recorder, OPTIM};
use crate::{DType, Error, Result, Tensor};

pub use crate::optim::{Adam, Sgd};

/// Mirror of `Params` in optim.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    len: u32,
    first_partial: u32,
    partials: u32,
    flags: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    one_minus_beta1: f32,
    one_minus_beta2: f32,
    eps: f32,
    weight_decay: f32,
    step_size: f32,
    bias_correction2_sqrt: f32,
    max_norm: f32,
    _pad0: u32,
    _pad1: u32,
}

const FLAG_MOMENTUM: u32 = 1;
const FLAG_FIRST_STEP: u32 = 2;
const FLAG_NESTEROV: u32 = 4;
const FLAG_GUARDED: u32 = 8;

const ADAM_STEP: KernelSpec = KernelSpec {
    family: &OPTIM,
    entry_point: "adam_step",
    bindings: &[
        (0, Access::ReadWrite),
        (1, Access::Read),
        (2, Access::ReadWrite),
        (3, Access::ReadWrite),
        (4, Access::Params),
        (8, Access::Read),
    ],
};

const SGD_STEP: KernelSpec = KernelSpec {
    family: &OPTIM,
    entry_point: "sgd_step",
    bindings: &[
        (0, Access::ReadWrite),
        (1, Access::Read),
        (2, Access::ReadWrite),
        (4, Access::Params),
        (8, Access::Read),
    ],
};

const ADAM_PROBE: KernelSpec = KernelSpec {
    family: &OPTIM,
    entry_point: "adam_probe",
    bindings: &[
        (0, Access::ReadWrite),
        (1, Access::Read),
        (2, Access::ReadWrite),
        (3, Access::ReadWrite),
        (4, Access::Params),
        (9, Access::ReadWrite),
    ],
};

const SGD_PROBE: KernelSpec = KernelSpec {
    family: &OPTIM,
    entry_point: "sgd_probe",
    bindings: &[
        (0, Access::ReadWrite),
        (1, Access::Read),
        (2, Access::ReadWrite),
        (4, Access::Params),
        (9, Access::ReadWrite),
    ],
};

const CLIP_GRAD_NORM_PARTIAL: KernelSpec = KernelSpec {
    family: &OPTIM,
    entry_point: "clip_grad_norm_partial",
    bindings: &[(4, Access::Params), (5, Access::ReadWrite), (6, Access::ReadWrite)],
};

const CLIP_GRAD_NORM_TOTAL: KernelSpec = KernelSpec {
    family: &OPTIM,
    entry_point: "clip_grad_norm_total",
    bindings: &[(4, Access::Params), (6, Access::ReadWrite), (7, Access::ReadWrite)],
};

const CLIP_GRAD_NORM_SCALE: KernelSpec = KernelSpec {
    family: &OPTIM,
    entry_point: "clip_grad_norm_scale",
    bindings: &[(4, Access::Params), (5, Access::ReadWrite), (7, Access::ReadWrite)],
};

/// Invocations of the element-wise passes and of the norm's trees.
const WG: u32 = 256;
/// Elements per invocation of the norm's partial sums: one partial per 4096 elements.
const CLIP_ITEMS: u32 = 16;
const CLIP_CHUNK: usize = (WG * CLIP_ITEMS) as usize;

/// `InvalidArgument` unless `ok` and `value` is a finite f32: hyper-parameters are f64 as
/// PyTorch's Python floats, but the kernels compute in f32, where a learning rate of 1e39
/// is infinite and would turn every weight into NaN.
fn check_hyper(optimizer: &str, name: &str, value: f64, ok: bool, range: &str) -> Result<()> {
    if !ok || !(value as f32).is_finite() {
        return Err(Error::invalid(format!(
            "{optimizer}: {name} must be {range} (as an f32: at most {:e}), got {value}",
            f32::MAX
        )));
    }
    Ok(())
}

/// The bits of the quiet NaN that [`adam_probe`] and [`sgd_probe`] store in a guarded
/// step's gradient norm when its update would make a parameter or its optimizer state
/// NaN or Inf, so that the guarded steps after them change nothing.
/// [`check_step_finite`](crate::graph::check_step_finite) reports it as a refused update.
pub const UPDATE_REFUSED: u32 = 0x7fc0_f1e5;

/// f32, and exactly the parameter's shape, or an error naming `name` and both shapes.
fn check_like(name: &str, tensor: &Tensor, param: &Tensor) -> Result<()> {
    tensor.check_dtype(name, DType::F32)?;
    tensor.check_shape(name, param.shape())
}

/// Encodes one Adam step (`t` counts steps from 1) for one parameter tensor: updates
/// `param`, `exp_avg` and `exp_avg_sq` in place from `grad`. Start the state at zero.
/// One dispatch; never submits or waits.
#[allow(clippy::too_many_arguments)]
pub fn adam_step(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    op: &Adam,
    t: u64,
    param: &Tensor,
    grad: &Tensor,
    exp_avg: &Tensor,
    exp_avg_sq: &Tensor,
) -> Result<()> {
    encode_adam(ctx, encoder, op, t, [param, grad, exp_avg, exp_avg_sq], Guard::None)
}

/// [`adam_step`] that does nothing (parameter and state untouched) when `guard[0]`, the
/// step's gradient norm `[1]` (from [`clip_grad_norm`]), is NaN or Inf. The test runs on
/// the GPU, so nothing waits for the norm.
#[allow(clippy::too_many_arguments)]
pub fn adam_step_guarded(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    op: &Adam,
    t: u64,
    param: &Tensor,
    grad: &Tensor,
    exp_avg: &Tensor,
    exp_avg_sq: &Tensor,
    guard: &Tensor,
) -> Result<()> {
    encode_adam(
        ctx,
        encoder,
        op,
        t,
        [param, grad, exp_avg, exp_avg_sq],
        Guard::Step(guard),
    )
}

/// The check before a guarded Adam step: computes the step of one parameter tensor without
/// writing it, and sets `guard[0]` (the step's gradient norm `[1]`, while it is finite) to
/// the NaN [`UPDATE_REFUSED`] where a new parameter or state value would be NaN or Inf. Run
/// it for every parameter before their [`adam_step_guarded`]s (as
/// [`Graph::adam_step_guarded`](crate::graph::Graph::adam_step_guarded) does), so that an
/// update that would destroy one weight changes none. One dispatch; never waits.
#[allow(clippy::too_many_arguments)]
pub fn adam_probe(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    op: &Adam,
    t: u64,
    param: &Tensor,
    grad: &Tensor,
    exp_avg: &Tensor,
    exp_avg_sq: &Tensor,
    guard: &Tensor,
) -> Result<()> {
    encode_adam(
        ctx,
        encoder,
        op,
        t,
        [param, grad, exp_avg, exp_avg_sq],
        Guard::Probe(guard),
    )
}

/// What an optimizer dispatch does with the step's gradient norm `[1]`.
#[derive(Clone, Copy)]
enum Guard<'a> {
    /// An unguarded step.
    None,
    /// A step that changes nothing when the norm is NaN or Inf.
    Step(&'a Tensor),
    /// A probe that sets the norm to [`UPDATE_REFUSED`] when the step would make a value
    /// non-finite.
    Probe(&'a Tensor),
}

impl<'a> Guard<'a> {
    /// Checks the norm tensor (`[1]`, f32) and returns it with the step's flags.
    fn check(self, name: &str) -> Result<(Option<&'a Tensor>, u32)> {
        let (tensor, flags) = match self {
            Guard::None => return Ok((None, 0)),
            Guard::Step(tensor) => (tensor, FLAG_GUARDED),
            Guard::Probe(tensor) => (tensor, 0),
        };
        tensor.check_dtype(name, DType::F32)?;
        tensor.check_shape(name, &[1])?;
        Ok((Some(tensor), flags))
    }

    /// The kernel, and the binding of the norm: read-only at 8 for a step, writable at 9
    /// for a probe.
    fn kernel(self, step: &'static KernelSpec, probe: &'static KernelSpec) -> (&'static KernelSpec, u32) {
        match self {
            Guard::Probe(_) => (probe, 9),
            _ => (step, 8),
        }
    }
}

fn encode_adam(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    op: &Adam,
    t: u64,
    [param, grad, exp_avg, exp_avg_sq]: [&Tensor; 4],
    guard: Guard<'_>,
) -> Result<()> {
    let (beta1, beta2) = op.betas;
    check_hyper(
        "adam_step",
        "lr",
        op.lr,
        op.lr > 0.0 && op.lr.is_finite(),
        "> 0 and finite",
    )?;
    check_hyper("adam_step", "beta1", beta1, (0.0..1.0).contains(&beta1), "in [0, 1)")?;
    check_hyper("adam_step", "beta2", beta2, (0.0..1.0).contains(&beta2), "in [0, 1)")?;
    check_hyper(
        "adam_step",
        "eps",
        op.eps,
        op.eps >= 0.0 && op.eps.is_finite(),
        ">= 0 and finite",
    )?;
    check_hyper(
        "adam_step",
        "weight_decay",
        op.weight_decay,
        op.weight_decay >= 0.0 && op.weight_decay.is_finite(),
        ">= 0 and finite",
    )?;
    if t == 0 {
        return Err(Error::invalid("adam_step: the step count t starts at 1, got 0"));
    }
    param.check_dtype("adam_step: param", DType::F32)?;
    check_like("adam_step: grad", grad, param)?;
    check_like("adam_step: exp_avg", exp_avg, param)?;
    check_like("adam_step: exp_avg_sq", exp_avg_sq, param)?;
    let (norm, flags) = guard.check("adam_step: guard")?;
    let mut inputs = vec![("adam_step: grad", grad)];
    let mut outputs = vec![
        ("adam_step: param", param),
        ("adam_step: exp_avg", exp_avg),
        ("adam_step: exp_avg_sq", exp_avg_sq),
    ];
    match guard {
        Guard::Probe(verdict) => outputs.push(("adam_step: guard", verdict)),
        _ => inputs.extend(norm.map(|g| ("adam_step: guard", g))),
    }
    check_tensors(ctx, &inputs, &outputs)?;
    if param.is_empty() {
        return Ok(());
    }
    // PyTorch's bias corrections, in f64 like its Python floats; t beyond i32 saturates
    // to beta^t = 0, which is what the powers are long before that.
    let power = i32::try_from(t).unwrap_or(i32::MAX);
    let bias_correction1 = 1.0 - beta1.powi(power);
    let bias_correction2 = 1.0 - beta2.powi(power);
    let step_size = op.lr / bias_correction1;
    if !(step_size as f32).is_finite() {
        return Err(Error::invalid(format!(
            "adam_step: lr / (1 - beta1^t) = {step_size:e} is beyond f32 at step {t}"
        )));
    }
    let (kernel, guard_binding) = guard.kernel(&ADAM_STEP, &ADAM_PROBE);
    let params = Params {
        len: param.len() as u32,
        lr: op.lr as f32,
        beta1: beta1 as f32,
        beta2: beta2 as f32,
        one_minus_beta1: (1.0 - beta1) as f32,
        one_minus_beta2: (1.0 - beta2) as f32,
        eps: op.eps as f32,
        weight_decay: op.weight_decay as f32,
        step_size: step_size as f32,
        bias_correction2_sqrt: bias_correction2.sqrt() as f32,
        flags,
        ..Params::default()
    };
    ctx.encode_dispatch(
        encoder,
        Dispatch {
            kernel,
            overrides: &[("WG", WG)],
            buffers: &[
                (0, param.buffer(), "adam_step: param"),
                (1, grad.buffer(), "adam_step: grad"),
                (2, exp_avg.buffer(), "adam_step: exp_avg"),
                (3, exp_avg_sq.buffer(), "adam_step: exp_avg_sq"),
                (
                    guard_binding,
                    norm.map_or(ctx.placeholder(), Tensor::buffer),
                    "adam_step: guard",
                ),
            ],
            params: &params,
            workgroups: element_grid(ctx, param.len(), WG),
        },
    )
}

/// Encodes one SGD step for one parameter tensor: updates `param` (and the momentum
/// buffer, required when `op.momentum != 0`, ignored otherwise) in place from `grad`.
/// `first_step` makes the buffer start as PyTorch's: equal to the first (decayed)
/// gradient, whatever it held. One dispatch; never submits or waits.
#[allow(clippy::too_many_arguments)]
pub fn sgd_step(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    op: &Sgd,
    first_step: bool,
    param: &Tensor,
    grad: &Tensor,
    momentum_buffer: Option<&Tensor>,
) -> Result<()> {
    encode_sgd(
        ctx,
        encoder,
        op,
        first_step,
        [param, grad],
        momentum_buffer,
        Guard::None,
    )
}

/// [`sgd_step`] that does nothing (parameter and momentum untouched) when `guard[0]`, the
/// step's gradient norm `[1]`, is NaN or Inf.
#[allow(clippy::too_many_arguments)]
pub fn sgd_step_guarded(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    op: &Sgd,
    first_step: bool,
    param: &Tensor,
    grad: &Tensor,
    momentum_buffer: Option<&Tensor>,
    guard: &Tensor,
) -> Result<()> {
    encode_sgd(
        ctx,
        encoder,
        op,
        first_step,
        [param, grad],
        momentum_buffer,
        Guard::Step(guard),
    )
}

/// The check before a guarded SGD step, as [`adam_probe`] for Adam: sets `guard[0]` to
/// [`UPDATE_REFUSED`] where the step would make a parameter or momentum value NaN or Inf.
#[allow(clippy::too_many_arguments)]
pub fn sgd_probe(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    op: &Sgd,
    first_step: bool,
    param: &Tensor,
    grad: &Tensor,
    momentum_buffer: Option<&Tensor>,
    guard: &Tensor,
) -> Result<()> {
    encode_sgd(
        ctx,
        encoder,
        op,
        first_step,
        [param, grad],
        momentum_buffer,
        Guard::Probe(guard),
    )
}

fn encode_sgd(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    op: &Sgd,
    first_step: bool,
    [param, grad]: [&Tensor; 2],
    momentum_buffer: Option<&Tensor>,
    guard: Guard<'_>,
) -> Result<()> {
    check_hyper(
        "sgd_step",
        "lr",
        op.lr,
        op.lr > 0.0 && op.lr.is_finite(),
        "> 0 and finite",
    )?;
    check_hyper(
        "sgd_step",
        "momentum",
        op.momentum,
        op.momentum >= 0.0 && op.momentum.is_finite(),
        ">= 0 and finite",
    )?;
    check_hyper(
        "sgd_step",
        "dampening",
        op.dampening,
        op.dampening.is_finite(),
        "finite",
    )?;
    check_hyper(
        "sgd_step",
        "weight_decay",
        op.weight_decay,
        op.weight_decay >= 0.0 && op.weight_decay.is_finite(),
        ">= 0 and finite",
    )?;
    if op.nesterov && (op.momentum <= 0.0 || op.dampening != 0.0) {
        return Err(Error::invalid(format!(
            "sgd_step: nesterov needs momentum > 0 and dampening 0, got momentum {} and dampening {}",
            op.momentum, op.dampening
        )));
    }
    param.check_dtype("sgd_step: param", DType::F32)?;
    check_like("sgd_step: grad", grad, param)?;
    let mut outputs = vec![("sgd_step: param", param)];
    let buffer = if op.momentum != 0.0 {
        let buffer =
            momentum_buffer.ok_or_else(|| Error::invalid("sgd_step: momentum != 0 needs a momentum_buffer tensor"))?;
        check_like("sgd_step: momentum_buffer", buffer, param)?;
        outputs.push(("sgd_step: momentum_buffer", buffer));
        Some(buffer)
    } else {
        None
    };
    let (norm, mut flags) = guard.check("sgd_step: guard")?;
    let mut inputs = vec![("sgd_step: grad", grad)];
    match guard {
        Guard::Probe(verdict) => outputs.push(("sgd_step: guard", verdict)),
        _ => inputs.extend(norm.map(|g| ("sgd_step: guard", g))),
    }
    check_tensors(ctx, &inputs, &outputs)?;
    if param.is_empty() {
        return Ok(());
    }
    if buffer.is_some() {
        flags |= FLAG_MOMENTUM;
    }
    if first_step {
        flags |= FLAG_FIRST_STEP;
    }
    if op.nesterov {
        flags |= FLAG_NESTEROV;
    }
    let (kernel, guard_binding) = guard.kernel(&SGD_STEP, &SGD_PROBE);
    let params = Params {
        len: param.len() as u32,
        flags,
        lr: op.lr as f32,
        beta1: op.momentum as f32,
        one_minus_beta1: (1.0 - op.dampening) as f32,
        weight_decay: op.weight_decay as f32,
        ..Params::default()
    };
    ctx.encode_dispatch(
        encoder,
        Dispatch {
            kernel,
            overrides: &[("WG", WG)],
            buffers: &[
                (0, param.buffer(), "sgd_step: param"),
                (1, grad.buffer(), "sgd_step: grad"),
                (
                    2,
                    // A writable binding: the scratch placeholder, so it never meets the
                    // read-only placeholder of an absent guard in one dispatch.
                    buffer.map_or(ctx.scratch_placeholder(), Tensor::buffer),
                    "sgd_step: momentum_buffer",
                ),
                (
                    guard_binding,
                    norm.map_or(ctx.placeholder(), Tensor::buffer),
                    "sgd_step: guard",
                ),
            ],
            params: &params,
            workgroups: element_grid(ctx, param.len(), WG),
        },
    )
}

/// Length of the `partials` workspace [`clip_grad_norm`] needs for these gradients:
/// one f32 per 4096 elements of each tensor, at least 1.
pub fn clip_grad_norm_partials_len(grads: &[&Tensor]) -> usize {
    grads
        .iter()
        .map(|grad| grad.len().div_ceil(CLIP_CHUNK))
        .sum::<usize>()
        .max(1)
}

/// Encodes `torch.nn.utils.clip_grad_norm_(grads, max_norm)` with norm type 2: writes
/// the total norm of all gradients together into `total_norm` (`[1]` f32) and scales
/// every gradient in place by `min(1, max_norm / (total_norm + 1e-6))`, without a
/// readback. `partials` is a workspace of shape `[clip_grad_norm_partials_len(grads)]`.
/// A non-finite norm is not an error (PyTorch's `error_if_nonfinite=False`): a NaN norm
/// makes every gradient NaN, an infinite one zeroes the finite ones.
///
/// Dispatches: one partial sum of squares per tensor, one fixed-order total, one scale
/// per tensor (2 T + 1). Never submits or waits.
pub fn clip_grad_norm(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    grads: &[&Tensor],
    max_norm: f64,
    total_norm: &Tensor,
    partials: &Tensor,
) -> Result<()> {
    check_hyper(
        "clip_grad_norm",
        "max_norm",
        max_norm,
        max_norm >= 0.0 && max_norm.is_finite(),
        ">= 0 and finite",
    )?;
    let names: Vec<String> = (0..grads.len())
        .map(|i| format!("clip_grad_norm: grads[{i}]"))
        .collect();
    for (name, grad) in names.iter().zip(grads) {
        grad.check_dtype(name, DType::F32)?;
    }
    total_norm.check_dtype("clip_grad_norm: total_norm", DType::F32)?;
    total_norm.check_shape("clip_grad_norm: total_norm", &[1])?;
    partials.check_dtype("clip_grad_norm: partials", DType::F32)?;
    partials.check_shape("clip_grad_norm: partials", &[clip_grad_norm_partials_len(grads)])?;
    let mut outputs: Vec<(&str, &Tensor)> = names.iter().map(String::as_str).zip(grads.iter().copied()).collect();
    outputs.push(("clip_grad_norm: total_norm", total_norm));
    outputs.push(("clip_grad_norm: partials", partials));
    check_tensors(ctx, &[], &outputs)?;

    // Pass 1: each tensor's chunks write their sums of squares side by side.
    let mut first_partial = 0;
    for (name, grad) in names.iter().zip(grads) {
        if grad.is_empty() {
            continue;
        }
        let chunks = grad.len().div_ceil(CLIP_CHUNK);
        ctx.encode_dispatch(
            encoder,
            Dispatch {
                kernel: &CLIP_GRAD_NORM_PARTIAL,
                overrides: &[("CLIP_WG", WG), ("CLIP_ITEMS", CLIP_ITEMS)],
                buffers: &[
                    (5, grad.buffer(), name),
                    (6, partials.buffer(), "clip_grad_norm: partials"),
                ],
                params: &Params {
                    len: grad.len() as u32,
                    first_partial: first_partial as u32,
                    ..Params::default()
                },
                workgroups: row_grid(ctx, chunks),
            },
        )?;
        first_partial += chunks;
    }
    // Pass 2: one workgroup sums the partials in a fixed order (0 for no gradients).
    ctx.encode_dispatch(
        encoder,
        Dispatch {
            kernel: &CLIP_GRAD_NORM_TOTAL,
            overrides: &[("CLIP_WG", WG)],
            buffers: &[
                (6, partials.buffer(), "clip_grad_norm: partials"),
                (7, total_norm.buffer(), "clip_grad_norm: total_norm"),
            ],
            params: &Params {
                partials: first_partial as u32,
                ..Params::default()
            },
            workgroups: [1, 1, 1],
        },
    )?;
    // Pass 3: every gradient scaled by the coefficient, read from total_norm on the GPU.
    for (name, grad) in names.iter().zip(grads) {
        if grad.is_empty() {
            continue;
        }
        ctx.encode_dispatch(
            encoder,
            Dispatch {
                kernel: &CLIP_GRAD_NORM_SCALE,
                overrides: &[("WG", WG)],
                buffers: &[
                    (5, grad.buffer(), name),
                    (7, total_norm.buffer(), "clip_grad_norm: total_norm"),
                ],
                params: &Params {
                    len: grad.len() as u32,
                    max_norm: max_norm as f32,
                    ..Params::default()
                },
                workgroups: element_grid(ctx, grad.len(), WG),
            },
        )?;
    }
    Ok(())
}
