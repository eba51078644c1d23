//! Launchers of `shaders/cross_entropy.wgsl`: softmax cross-entropy with its gradient,
//! exactly `torch.nn.CrossEntropyLoss(ignore_index, reduction, label_smoothing)` over
//! class-index targets, and the decoding picks [`argmax`] and [`top_k`].
//!
//! Shapes (N rows, V classes):
//! - `logits`: `[N, V]` f32; `targets`: `[N]` u32
//! - `loss`: `[1]` f32; `dlogits`: `[N, V]` f32; `row_loss`: `[N]` f32;
//!   `status`: `[STATUS_LEN]` u32
//! - [`argmax`]: `[N]` u32; [`top_k`]: values `[N, k]` f32 and indices `[N, k]` u32
//!
//! The loss is always the root of the graph, so [`cross_entropy_forward`] writes the
//! gradient of the reduced loss in the same call: no upstream gradient, nothing saved.

use super::{check_loop_budget, check_tensors, row_grid};
use crate::gpu::{Access, Context, Dispatch, KernelSpec, Recorder, CROSS_ENTROPY};
use crate::{DType, Error, Result, Tensor};

pub use crate::loss::{CrossEntropy, Reduction};

/// Where [`cross_entropy_forward`] writes.
#[derive(Clone, Copy, Debug)]
pub struct CrossEntropyOutputs<'a> {
    /// `[1]` f32: the reduced loss.
    pub loss: &'a Tensor,
    /// `[N, V]` f32: the gradient of `loss` with respect to the logits (already divided
    /// by the count for Mean); rows of ignored or invalid targets are zero.
    pub dlogits: &'a Tensor,
    /// `[N]` f32: each row's loss before reduction (PyTorch's `reduction='none'`): 0 for
    /// ignored rows, NaN for invalid targets. Also the operand of the fixed-order sum.
    pub row_loss: &'a Tensor,
    /// `[STATUS_LEN]` u32, overwritten by every call: `[STATUS_ERROR]` is 0, or 1 + the
    /// first row whose target is `>= V` and not ignored; `[STATUS_COUNT]` is the number
    /// of non-ignored targets. Read it back (when convenient) and pass it to
    /// [`cross_entropy_check_status`].
    pub status: &'a Tensor,
}

/// Elements of the status tensor.
pub const STATUS_LEN: usize = 2;
/// Index of the error flag in the status tensor.
pub const STATUS_ERROR: usize = 0;
/// Index of the count of non-ignored targets in the status tensor.
pub const STATUS_COUNT: usize = 1;

/// Mirror of `Params` in cross_entropy.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    vocab: u32,
    ignore_index: u32,
    has_ignore: u32,
    mean: u32,
    k: u32,
    label_smoothing: f32,
    _pad: u32,
}

impl Params {
    fn new(rows: usize, vocab: usize) -> Params {
        Params {
            rows: rows as u32,
            vocab: vocab as u32,
            ignore_index: 0,
            has_ignore: 0,
            mean: 0,
            k: 0,
            label_smoothing: 0.0,
            _pad: 0,
        }
    }
}

const CROSS_ENTROPY_COUNT_TARGETS: KernelSpec = KernelSpec {
    family: &CROSS_ENTROPY,
    entry_point: "cross_entropy_count_targets",
    bindings: &[(1, Access::Read), (2, Access::ReadWrite), (6, Access::Params)],
};

const CROSS_ENTROPY_FORWARD: KernelSpec = KernelSpec {
    family: &CROSS_ENTROPY,
    entry_point: "cross_entropy_forward",
    bindings: &[
        (0, Access::Read),
        (1, Access::Read),
        (2, Access::ReadWrite),
        (3, Access::ReadWrite),
        (4, Access::ReadWrite),
        (6, Access::Params),
    ],
};

const CROSS_ENTROPY_REDUCE: KernelSpec = KernelSpec {
    family: &CROSS_ENTROPY,
    entry_point: "cross_entropy_reduce",
    bindings: &[
        (2, Access::ReadWrite),
        (4, Access::ReadWrite),
        (5, Access::ReadWrite),
        (6, Access::Params),
    ],
};

const ARGMAX: KernelSpec = KernelSpec {
    family: &CROSS_ENTROPY,
    entry_point: "argmax",
    bindings: &[(0, Access::Read), (6, Access::Params), (8, Access::ReadWrite)],
};

const TOP_K: KernelSpec = KernelSpec {
    family: &CROSS_ENTROPY,
    entry_point: "top_k",
    bindings: &[
        (0, Access::Read),
        (6, Access::Params),
        (7, Access::ReadWrite),
        (8, Access::ReadWrite),
    ],
};

/// Invocations of the single-workgroup passes (count, reduce): the most every adapter
/// grants by default, and the shader's array size.
const REDUCE_WG: u32 = 256;

/// Invocations per row for argmax and top_k: about 8 classes each, a power of two in
/// [8, 256], so small vocabularies do not idle most lanes and every pick round stays
/// short (see [`check_loop_budget`]).
fn pick_workgroup(vocab: usize) -> u32 {
    (vocab.div_ceil(8).next_power_of_two()).clamp(8, 256) as u32
}

/// Invocations per row for the loss: the same rule on a GPU, but always 8 (one SIMD
/// group) on a CPU adapter (lavapipe, llvmpipe), where every barrier of the trees
/// switches between the workgroup's invocations: at N = 2048, V = 1000 the loss took
/// 78 ms with 128 invocations, 47 ms with 32 and 17 ms with 8 (lavapipe, 2 cores).
fn loss_workgroup(ctx: &Context, vocab: usize) -> u32 {
    if ctx.adapter().device_type == wgpu::DeviceType::Cpu {
        return 8;
    }
    pick_workgroup(vocab)
}

/// Loop iterations of one invocation: each strided pass over `len` items in workgroups
/// of `wg`, plus the tree's levels, plus one exit test per loop.
fn loop_iterations(passes: u64, len: usize, wg: u32) -> u64 {
    passes * (len.div_ceil(wg as usize) as u64 + 1) + u64::from(wg.ilog2()) + 1
}

/// `[N, V]` with both at least 1, or a shape error naming `name`.
fn check_logits(name: &str, logits: &Tensor) -> Result<(usize, usize)> {
    logits.check_dtype(name, DType::F32)?;
    match *logits.shape() {
        [n, v] if n >= 1 && v >= 1 => Ok((n, v)),
        _ => Err(Error::shape(name, "[N, V] with N, V >= 1", logits.shape())),
    }
}

fn check_options(op: &CrossEntropy) -> Result<()> {
    let ls = op.label_smoothing;
    if !(0.0..1.0).contains(&ls) {
        return Err(Error::invalid(format!(
            "cross_entropy label_smoothing must be in [0, 1), got {ls}"
        )));
    }
    Ok(())
}

/// Encodes the loss and its gradient: three dispatches (count the targets, one
/// workgroup per row for the row losses and `dlogits`, one fixed-order sum into
/// `loss`). Nothing is read back: the count of non-ignored targets stays on the GPU.
/// Checks every shape first; never submits or waits.
///
/// Targets live on the GPU, so an id `>= V` (that is not `ignore_index`) is caught by
/// the kernel: that row's loss is NaN (so is the total), its gradient row is zero and
/// `status[STATUS_ERROR]` names it. Check ids coming from the host beforehand with
/// [`cross_entropy_check_targets`].
pub fn cross_entropy_forward(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    op: &CrossEntropy,
    logits: &Tensor,
    targets: &Tensor,
    out: CrossEntropyOutputs<'_>,
) -> Result<()> {
    check_options(op)?;
    let (n, v) = check_logits("cross_entropy: logits", logits)?;
    targets.check_dtype("cross_entropy: targets", DType::U32)?;
    targets.check_shape("cross_entropy: targets", &[n])?;
    out.loss.check_dtype("cross_entropy: loss", DType::F32)?;
    out.loss.check_shape("cross_entropy: loss", &[1])?;
    out.dlogits.check_dtype("cross_entropy: dlogits", DType::F32)?;
    out.dlogits.check_shape("cross_entropy: dlogits", &[n, v])?;
    out.row_loss.check_dtype("cross_entropy: row_loss", DType::F32)?;
    out.row_loss.check_shape("cross_entropy: row_loss", &[n])?;
    out.status.check_dtype("cross_entropy: status", DType::U32)?;
    out.status.check_shape("cross_entropy: status", &[STATUS_LEN])?;
    check_tensors(
        ctx,
        &[("cross_entropy: logits", logits), ("cross_entropy: targets", targets)],
        &[
            ("cross_entropy: loss", out.loss),
            ("cross_entropy: dlogits", out.dlogits),
            ("cross_entropy: row_loss", out.row_loss),
            ("cross_entropy: status", out.status),
        ],
    )?;

    let row_wg = loss_workgroup(ctx, v);
    check_loop_budget(ctx, "cross_entropy: logits (per row)", loop_iterations(2, v, row_wg))?;
    check_loop_budget(ctx, "cross_entropy: targets", loop_iterations(1, n, REDUCE_WG))?;
    let params = Params {
        ignore_index: op.ignore_index.unwrap_or(0),
        has_ignore: u32::from(op.ignore_index.is_some()),
        mean: u32::from(op.reduction == Reduction::Mean),
        label_smoothing: op.label_smoothing,
        ..Params::new(n, v)
    };
    // Count first: every row's gradient is scaled by 1 / count.
    ctx.encode_dispatch(
        encoder,
        Dispatch {
            kernel: &CROSS_ENTROPY_COUNT_TARGETS,
            overrides: &[("REDUCE_WG", REDUCE_WG)],
            buffers: &[
                (1, targets.buffer(), "cross_entropy: targets"),
                (2, out.status.buffer(), "cross_entropy: status"),
            ],
            params: &params,
            workgroups: [1, 1, 1],
        },
    )?;
    ctx.encode_dispatch(
        encoder,
        Dispatch {
            kernel: &CROSS_ENTROPY_FORWARD,
            overrides: &[("ROW_WG", row_wg)],
            buffers: &[
                (0, logits.buffer(), "cross_entropy: logits"),
                (1, targets.buffer(), "cross_entropy: targets"),
                (2, out.status.buffer(), "cross_entropy: status"),
                (3, out.dlogits.buffer(), "cross_entropy: dlogits"),
                (4, out.row_loss.buffer(), "cross_entropy: row_loss"),
            ],
            params: &params,
            workgroups: row_grid(ctx, n),
        },
    )?;
    ctx.encode_dispatch(
        encoder,
        Dispatch {
            kernel: &CROSS_ENTROPY_REDUCE,
            overrides: &[("REDUCE_WG", REDUCE_WG)],
            buffers: &[
                (2, out.status.buffer(), "cross_entropy: status"),
                (4, out.row_loss.buffer(), "cross_entropy: row_loss"),
                (5, out.loss.buffer(), "cross_entropy: loss"),
            ],
            params: &params,
            workgroups: [1, 1, 1],
        },
    )
}

/// Host-side check of target ids before they are uploaded: every id is `< vocab` or
/// equal to `op.ignore_index`. The error names the first offending position.
pub fn cross_entropy_check_targets(op: &CrossEntropy, targets: &[u32], vocab: usize) -> Result<()> {
    let bad = targets
        .iter()
        .position(|&t| Some(t) != op.ignore_index && t as usize >= vocab);
    match bad {
        Some(row) => Err(Error::invalid(format!(
            "cross_entropy: targets[{row}] = {} is not a class id (V = {vocab}){}",
            targets[row],
            match op.ignore_index {
                Some(ignore) => format!(" nor ignore_index {ignore}"),
                None => String::new(),
            }
        ))),
        None => Ok(()),
    }
}

/// Interprets a status tensor read back from [`cross_entropy_forward`]: the count of
/// non-ignored targets, or `Error::InvalidArgument` naming the first row whose target
/// was out of range.
pub fn cross_entropy_check_status(status: &[u32]) -> Result<u32> {
    if status.len() != STATUS_LEN {
        return Err(Error::shape(
            "cross_entropy: status",
            format!("[{STATUS_LEN}]"),
            &[status.len()],
        ));
    }
    match status[STATUS_ERROR] {
        0 => Ok(status[STATUS_COUNT]),
        flag => Err(Error::invalid(format!(
            "cross_entropy: targets[{}] is >= V and not ignore_index (its loss is NaN, its gradient zero)",
            flag - 1
        ))),
    }
}

/// Encodes `out[n] = argmax_c logits[n, c]` (`[N, V]` -> `[N]` u32): the first index
/// among equal maxima; NaN counts as the largest value, as in `torch.argmax`.
pub fn argmax(ctx: &Context, encoder: &mut dyn Recorder, logits: &Tensor, out: &Tensor) -> Result<()> {
    let (n, v) = check_logits("argmax: logits", logits)?;
    out.check_dtype("argmax: out", DType::U32)?;
    out.check_shape("argmax: out", &[n])?;
    check_tensors(ctx, &[("argmax: logits", logits)], &[("argmax: out", out)])?;
    let row_wg = pick_workgroup(v);
    check_loop_budget(ctx, "argmax: logits (per row)", loop_iterations(1, v, row_wg))?;
    ctx.encode_dispatch(
        encoder,
        Dispatch {
            kernel: &ARGMAX,
            overrides: &[("ROW_WG", row_wg)],
            buffers: &[(0, logits.buffer(), "argmax: logits"), (8, out.buffer(), "argmax: out")],
            params: &Params::new(n, v),
            workgroups: row_grid(ctx, n),
        },
    )
}

/// Encodes the `k` largest logits of each row, sorted descending, with their class ids
/// (`[N, V]` -> values `[N, k]` f32, indices `[N, k]` u32), `1 <= k <= V`. Among equal
/// values the lower index comes first; NaN counts as the largest value. Costs `k`
/// passes over each row (k rounds of an argmax), meant for decoding's small `k`; on a
/// CPU adapter a `k * V` too large for its loop budget is `Error::DeviceLimit`.
pub fn top_k(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    logits: &Tensor,
    k: usize,
    values: &Tensor,
    indices: &Tensor,
) -> Result<()> {
    let (n, v) = check_logits("top_k: logits", logits)?;
    if k == 0 || k > v {
        return Err(Error::invalid(format!("top_k: k must be in 1..={v} (V), got {k}")));
    }
    values.check_dtype("top_k: values", DType::F32)?;
    values.check_shape("top_k: values", &[n, k])?;
    indices.check_dtype("top_k: indices", DType::U32)?;
    indices.check_shape("top_k: indices", &[n, k])?;
    check_tensors(
        ctx,
        &[("top_k: logits", logits)],
        &[("top_k: values", values), ("top_k: indices", indices)],
    )?;
    // k rounds, each a pass over the row and a tree.
    let row_wg = pick_workgroup(v);
    let iterations = (k as u64).saturating_mul(loop_iterations(1, v, row_wg) + 1);
    check_loop_budget(ctx, "top_k: logits (k passes per row)", iterations)?;
    ctx.encode_dispatch(
        encoder,
        Dispatch {
            kernel: &TOP_K,
            overrides: &[("ROW_WG", row_wg)],
            buffers: &[
                (0, logits.buffer(), "top_k: logits"),
                (7, values.buffer(), "top_k: values"),
                (8, indices.buffer(), "top_k: indices"),
            ],
            params: &Params {
                k: k as u32,
                ..Params::new(n, v)
            },
            workgroups: row_grid(ctx, n),
        },
    )
}
