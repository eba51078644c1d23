//! Launchers of `shaders/attention.wgsl`: one decoder step of attention (scores, masked
//! softmax over the source, context) fused in one dispatch, and its backward in two.
//!
//! Shapes: `query` `[B, A]`, `keys` `[B, S, A]`, `v` `[A]` (additive only), `values`
//! `[B, S, Dv]`, `weights` and `grad_score` `[B, S]`, `context` `[B, Dv]`.
//!
//! The chapter's `BahdanauAttention(query, values)` is [`Score::Additive`] with
//! `query = W1 q + b1` (a matmul per decoder step), `keys = W2 values + b2` (one matmul
//! per source sequence, so computed once per sequence) and `v = V.weight`.
//! Luong's dot score is [`Score::Dot`] with `query = q`, `keys = values`; "general" is
//! [`Score::Dot`] with `query = q W_a`; "concat" is [`Score::Additive`] with `W_c` split
//! into its query and key halves. The gradients of those matmuls (W1, W2, b1, b2, W_a)
//! follow from `grad_query` and `grad_keys` by matmuls; `grad_v_rows` `[B, A]` holds one
//! partial `dv` per batch row, to be summed over rows (e.g. `matmul_backward`'s bias sum).
//!
//! Where the context runs subgroup kernels ([`crate::Context::subgroup_kernels`]) and A
//! and Dv are multiples of 4 up to 1024, the kernels of the file's subgroup section run,
//! with an invocation per 4 columns instead of per source position.

use super::{check_loop_budget, check_tensors, Lengths};
use crate::gpu::{Access, Context, Dispatch, KernelSpec, Recorder, ATTENTION};
use crate::{DType, Error, Result, Tensor};

/// How a query is compared with a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Score {
    /// Bahdanau: `v . tanh(query + key)`.
    Additive,
    /// Luong dot (and general, with a transformed query): `query . key`.
    Dot,
}

/// Mirror of `Params` in attention.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    batch: u32,
    source: u32,
    width: u32,
    value_width: u32,
    has_lengths: u32,
    has_grad_weights: u32,
    accumulate: u32,
    _pad: u32,
}

const ATTENTION_FORWARD: KernelSpec = KernelSpec {
    family: &ATTENTION,
    entry_point: "attention_forward",
    bindings: &[
        (0, Access::Read),
        (1, Access::Read),
        (2, Access::Read),
        (3, Access::Read),
        (4, Access::Read),
        (5, Access::ReadWrite),
        (6, Access::ReadWrite),
        (7, Access::Params),
    ],
};

const ATTENTION_BACKWARD_SCORES: KernelSpec = KernelSpec {
    family: &ATTENTION,
    entry_point: "attention_backward_scores",
    bindings: &[
        (3, Access::Read),
        (4, Access::Read),
        (7, Access::Params),
        (8, Access::Read),
        (9, Access::Read),
        (10, Access::Read),
        (11, Access::ReadWrite),
        (12, Access::ReadWrite),
    ],
};

const ATTENTION_BACKWARD_QUERY_KEYS: KernelSpec = KernelSpec {
    family: &ATTENTION,
    entry_point: "attention_backward_query_keys",
    bindings: &[
        (0, Access::Read),
        (1, Access::Read),
        (2, Access::Read),
        (4, Access::Read),
        (7, Access::Params),
        (13, Access::ReadWrite),
        (14, Access::ReadWrite),
        (15, Access::ReadWrite),
        (16, Access::Read),
    ],
};

/// Invocations per workgroup (one workgroup per batch row).
const WG: u32 = 64;

const ATTENTION_FORWARD_SUBGROUP: KernelSpec = KernelSpec {
    family: &ATTENTION,
    entry_point: "attention_forward_subgroup",
    bindings: &[
        (4, Access::Read),
        (5, Access::ReadWrite),
        (7, Access::Params),
        (17, Access::Read),
        (18, Access::Read),
        (19, Access::Read),
        (20, Access::Read),
        (21, Access::ReadWrite),
    ],
};

const ATTENTION_BACKWARD_SCORES_SUBGROUP: KernelSpec = KernelSpec {
    family: &ATTENTION,
    entry_point: "attention_backward_scores_subgroup",
    bindings: &[
        (4, Access::Read),
        (7, Access::Params),
        (8, Access::Read),
        (10, Access::Read),
        (11, Access::ReadWrite),
        (20, Access::Read),
        (22, Access::Read),
        (23, Access::ReadWrite),
    ],
};

const ATTENTION_BACKWARD_QUERY_KEYS4: KernelSpec = KernelSpec {
    family: &ATTENTION,
    entry_point: "attention_backward_query_keys4",
    bindings: &[
        (4, Access::Read),
        (7, Access::Params),
        (16, Access::Read),
        (17, Access::Read),
        (18, Access::Read),
        (19, Access::Read),
        (24, Access::ReadWrite),
        (25, Access::ReadWrite),
        (26, Access::ReadWrite),
    ],
};

/// Which kernels a call runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// The portable kernels: an invocation per source position, `WG` per workgroup.
    Positions,
    /// The subgroup section's: an invocation per 4 columns of A and of Dv, `wg` per
    /// workgroup (a power of two from 8 to 256 covering both).
    Columns { wg: u32 },
}

impl Layout {
    fn choose(ctx: &Context, dims: &AttentionDims) -> Layout {
        let chunks = dims.width.max(dims.value_width) / 4;
        let aligned = dims.width.is_multiple_of(4) && dims.value_width.is_multiple_of(4);
        if !ctx.subgroup_kernels() || !aligned || chunks > 256 {
            return Layout::Positions;
        }
        let wg = (chunks.next_power_of_two() as u32).clamp(8, 256);
        let columns = Layout::Columns { wg };
        if columns.workgroup_bytes(dims.source) <= u64::from(ctx.limits().max_compute_workgroup_storage_size)
            && wg <= ctx.limits().max_compute_invocations_per_workgroup
        {
            columns
        } else {
            Layout::Positions
        }
    }

    fn wg(&self) -> u32 {
        match *self {
            Layout::Positions => WG,
            Layout::Columns { wg } => wg,
        }
    }

    /// Source positions the workgroup memory holds: S rounded up to a power of two (so
    /// that few pipeline variants exist), at least 64.
    fn max_s(source: usize) -> usize {
        source.next_power_of_two().max(64)
    }

    /// Workgroup memory: one f32 per source position and the reduction partials, plus
    /// the subgroups' parts of each position's sum for the column layout.
    fn workgroup_bytes(&self, source: usize) -> u64 {
        let max_s = Self::max_s(source) as u64;
        let base = max_s * 4 + u64::from(self.wg()) * 8 + 8;
        match *self {
            Layout::Positions => base,
            Layout::Columns { wg } => base + max_s * u64::from(wg / 8) * 4,
        }
    }
}

/// The sizes of one attention step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionDims {
    /// B
    pub batch: usize,
    /// S
    pub source: usize,
    /// A: query/key width.
    pub width: usize,
    /// Dv: value width.
    pub value_width: usize,
}

/// Shape checks shared by the forward and the backward; returns the sizes.
fn check_inputs(
    score: Score,
    query: &Tensor,
    keys: &Tensor,
    v: Option<&Tensor>,
    values: &Tensor,
    lengths: Option<&Lengths>,
) -> Result<AttentionDims> {
    let (batch, width) = match *query.shape() {
        [batch, width] if batch > 0 && width > 0 => (batch, width),
        _ => return Err(Error::shape("attention: query", "[B, A] with B, A >= 1", query.shape())),
    };
    let (source, value_width) = match *values.shape() {
        [b, source, value_width] if b == batch && source > 0 && value_width > 0 => (source, value_width),
        _ => {
            return Err(Error::shape(
                "attention: values",
                format!("[{batch}, S, Dv] with S, Dv >= 1"),
                values.shape(),
            ))
        }
    };
    keys.check_shape("attention: keys", &[batch, source, width])?;
    match (score, v) {
        (Score::Additive, Some(v)) => v.check_shape("attention: v", &[width])?,
        (Score::Additive, None) => return Err(Error::invalid("additive attention needs v")),
        (Score::Dot, Some(_)) => return Err(Error::invalid("dot attention takes no v")),
        (Score::Dot, None) => {}
    }
    if let Some(lengths) = lengths {
        lengths.check("attention: lengths", batch, source)?;
    }
    Ok(AttentionDims {
        batch,
        source,
        width,
        value_width,
    })
}

fn overrides(ctx: &Context, layout: Layout, score: Score, source: usize) -> Result<Vec<(&'static str, u32)>> {
    let needed = layout.workgroup_bytes(source);
    let allowed = u64::from(ctx.limits().max_compute_workgroup_storage_size);
    if needed > allowed {
        return Err(Error::DeviceLimit {
            tensor: format!("attention over {source} source positions"),
            limit: "max_compute_workgroup_storage_size",
            needed,
            allowed,
        });
    }
    let mut overrides = vec![
        ("WG", layout.wg()),
        ("MAX_S", Layout::max_s(source) as u32),
        ("SCORE", u32::from(score == Score::Dot)),
    ];
    if let Layout::Columns { wg } = layout {
        overrides.push(("MAX_SUBGROUPS", wg / 8));
    }
    Ok(overrides)
}

/// Upper bounds of the loop iterations of one invocation of each entry point, checked
/// against a CPU adapter's budget (see `check_loop_budget`). Every loop also pays one
/// iteration for its exit test.
fn check_iterations(ctx: &Context, layout: Layout, dims: &AttentionDims, backward: bool) -> Result<()> {
    let wg = u64::from(layout.wg());
    let (s, a, dv) = (dims.source as u64, dims.width as u64, dims.value_width as u64);
    let per_position = s.div_ceil(wg);
    match (layout, backward) {
        (Layout::Positions, true) => {
            let scores = per_position * (dv + 2) + wg + (s * dv).div_ceil(wg) + 8;
            check_loop_budget(ctx, "attention_backward_scores", scores)?;
            check_loop_budget(ctx, "attention_backward_query_keys", a.div_ceil(wg) * (s + 1) + 4)
        }
        (Layout::Positions, false) => {
            let forward = per_position * (a + 5) + 2 * wg + dv.div_ceil(wg) * (s + 1) + 8;
            check_loop_budget(ctx, "attention_forward", forward)
        }
        // The column kernels loop over s once or twice, then reduce per position over
        // at most wg / 8 subgroups.
        (Layout::Columns { .. }, true) => {
            let scores = 2 * s + per_position * (wg / 8 + 4) + wg + 8;
            check_loop_budget(ctx, "attention_backward_scores_subgroup", scores)?;
            check_loop_budget(
                ctx,
                "attention_backward_query_keys4",
                (a / 4).div_ceil(wg) * (s + 1) + 4,
            )
        }
        (Layout::Columns { .. }, false) => {
            let forward = 2 * s + per_position * (wg / 8 + 5) + 2 * wg + 8;
            check_loop_budget(ctx, "attention_forward_subgroup", forward)
        }
    }
}

fn params(dims: &AttentionDims, lengths: Option<&Lengths>) -> Params {
    Params {
        batch: dims.batch as u32,
        source: dims.source as u32,
        width: dims.width as u32,
        value_width: dims.value_width as u32,
        has_lengths: u32::from(lengths.is_some()),
        ..Params::default()
    }
}

fn check_f32(tensors: &[(&str, &Tensor)]) -> Result<()> {
    tensors
        .iter()
        .try_for_each(|(name, tensor)| tensor.check_dtype(name, DType::F32))
}

/// The tensors of one attention step's forward (see the module docs for shapes).
#[derive(Clone, Copy, Debug)]
pub struct AttentionForward<'a> {
    /// Additive or dot.
    pub score: Score,
    /// `[B, A]`
    pub query: &'a Tensor,
    /// `[B, S, A]`
    pub keys: &'a Tensor,
    /// `[A]`, additive only.
    pub v: Option<&'a Tensor>,
    /// `[B, S, Dv]`
    pub values: &'a Tensor,
    /// Source lengths: positions `s >= len[b]` get weight 0.
    pub lengths: Option<&'a Lengths>,
    /// Written: `[B, S]`.
    pub weights: &'a Tensor,
    /// Written: `[B, Dv]`.
    pub context: &'a Tensor,
}

/// Encodes one decoder step: scores, masked softmax and context, one workgroup per row.
pub fn attention_forward(ctx: &Context, encoder: &mut dyn Recorder, forward: &AttentionForward<'_>) -> Result<()> {
    let f = forward;
    let dims = check_inputs(f.score, f.query, f.keys, f.v, f.values, f.lengths)?;
    f.weights
        .check_shape("attention: weights", &[dims.batch, dims.source])?;
    f.context
        .check_shape("attention: context", &[dims.batch, dims.value_width])?;
    let mut inputs = vec![
        ("attention: query", f.query),
        ("attention: keys", f.keys),
        ("attention: values", f.values),
    ];
    inputs.extend(f.v.map(|v| ("attention: v", v)));
    let outputs = [("attention: weights", f.weights), ("attention: context", f.context)];
    check_f32(&inputs)?;
    check_f32(&outputs)?;
    check_tensors(ctx, &inputs, &outputs)?;
    let layout = Layout::choose(ctx, &dims);
    check_iterations(ctx, layout, &dims, false)?;
    let lengths = f.lengths.map_or(ctx.placeholder(), |lengths| lengths.tensor().buffer());
    let v = f.v.map_or(ctx.placeholder(), Tensor::buffer);
    let buffers: &[(u32, &wgpu::Buffer, &str)] = match layout {
        Layout::Positions => &[
            (0, f.query.buffer(), "attention: query"),
            (1, f.keys.buffer(), "attention: keys"),
            (2, v, "attention: v"),
            (3, f.values.buffer(), "attention: values"),
            (4, lengths, "attention: lengths"),
            (5, f.weights.buffer(), "attention: weights"),
            (6, f.context.buffer(), "attention: context"),
        ],
        Layout::Columns { .. } => &[
            (4, lengths, "attention: lengths"),
            (5, f.weights.buffer(), "attention: weights"),
            (17, f.query.buffer(), "attention: query"),
            (18, f.keys.buffer(), "attention: keys"),
            (19, v, "attention: v"),
            (20, f.values.buffer(), "attention: values"),
            (21, f.context.buffer(), "attention: context"),
        ],
    };
    ctx.encode_dispatch(
        encoder,
        Dispatch {
            kernel: match layout {
                Layout::Positions => &ATTENTION_FORWARD,
                Layout::Columns { .. } => &ATTENTION_FORWARD_SUBGROUP,
            },
            overrides: &overrides(ctx, layout, f.score, dims.source)?,
            buffers,
            params: &params(&dims, f.lengths),
            workgroups: [dims.batch as u32, 1, 1],
        },
    )
}

/// The tensors of one attention step's backward (see the module docs for shapes).
#[derive(Clone, Copy, Debug)]
pub struct AttentionBackward<'a> {
    /// Additive or dot, as in the forward.
    pub score: Score,
    /// The forward's inputs.
    pub query: &'a Tensor,
    /// The forward's inputs.
    pub keys: &'a Tensor,
    /// The forward's inputs.
    pub v: Option<&'a Tensor>,
    /// The forward's inputs.
    pub values: &'a Tensor,
    /// The forward's inputs.
    pub lengths: Option<&'a Lengths>,
    /// The forward's output, `[B, S]`.
    pub weights: &'a Tensor,
    /// `[B, Dv]`
    pub grad_context: &'a Tensor,
    /// `[B, S]`, if the weights were used downstream (plotted weights are not).
    pub grad_weights: Option<&'a Tensor>,
    /// Written: scratch `[B, S]`, the gradient of the scores.
    pub grad_score: &'a Tensor,
    /// Written (or accumulated): `[B, S, Dv]`.
    pub grad_values: &'a Tensor,
    /// Written: `[B, A]`.
    pub grad_query: &'a Tensor,
    /// Written (or accumulated): `[B, S, A]`.
    pub grad_keys: &'a Tensor,
    /// Written (or accumulated), additive only: `[B, A]`, dv per row (sum the rows).
    pub grad_v_rows: Option<&'a Tensor>,
    /// Add into `grad_values`, `grad_keys`, `grad_v_rows` (decoder steps share them).
    pub accumulate: bool,
}

/// Encodes one decoder step's backward (two dispatches, one workgroup per row each).
pub fn attention_backward(ctx: &Context, encoder: &mut dyn Recorder, backward: &AttentionBackward<'_>) -> Result<()> {
    let g = backward;
    let dims = check_inputs(g.score, g.query, g.keys, g.v, g.values, g.lengths)?;
    let (b, s) = (dims.batch, dims.source);
    g.weights.check_shape("attention: weights", &[b, s])?;
    g.grad_context
        .check_shape("attention: grad_context", &[b, dims.value_width])?;
    if let Some(grad_weights) = g.grad_weights {
        grad_weights.check_shape("attention: grad_weights", &[b, s])?;
    }
    g.grad_score.check_shape("attention: grad_score", &[b, s])?;
    g.grad_values
        .check_shape("attention: grad_values", &[b, s, dims.value_width])?;
    g.grad_query.check_shape("attention: grad_query", &[b, dims.width])?;
    g.grad_keys.check_shape("attention: grad_keys", &[b, s, dims.width])?;
    match (g.score, g.grad_v_rows) {
        (Score::Additive, Some(rows)) => rows.check_shape("attention: grad_v_rows", &[b, dims.width])?,
        (Score::Additive, None) => return Err(Error::invalid("additive attention's backward needs grad_v_rows")),
        (Score::Dot, Some(_)) => return Err(Error::invalid("dot attention has no v to differentiate")),
        (Score::Dot, None) => {}
    }
    let mut inputs = vec![
        ("attention: query", g.query),
        ("attention: keys", g.keys),
        ("attention: values", g.values),
        ("attention: weights", g.weights),
        ("attention: grad_context", g.grad_context),
    ];
    inputs.extend(g.v.map(|v| ("attention: v", v)));
    inputs.extend(g.grad_weights.map(|w| ("attention: grad_weights", w)));
    let mut outputs = vec![
        ("attention: grad_score", g.grad_score),
        ("attention: grad_values", g.grad_values),
        ("attention: grad_query", g.grad_query),
        ("attention: grad_keys", g.grad_keys),
    ];
    outputs.extend(g.grad_v_rows.map(|rows| ("attention: grad_v_rows", rows)));
    check_f32(&inputs)?;
    check_f32(&outputs)?;
    check_tensors(ctx, &inputs, &outputs)?;
    let layout = Layout::choose(ctx, &dims);
    check_iterations(ctx, layout, &dims, true)?;

    let overrides = overrides(ctx, layout, g.score, s)?;
    let params = Params {
        has_grad_weights: u32::from(g.grad_weights.is_some()),
        accumulate: u32::from(g.accumulate),
        ..params(&dims, g.lengths)
    };
    let lengths = g.lengths.map_or(ctx.placeholder(), |lengths| lengths.tensor().buffer());
    let grad_weights = g.grad_weights.map_or(ctx.placeholder(), Tensor::buffer);
    let v = g.v.map_or(ctx.placeholder(), Tensor::buffer);
    let grad_v_rows = g.grad_v_rows.map_or(ctx.scratch_placeholder(), Tensor::buffer);
    let (scores, query_keys): (_, &[(u32, &wgpu::Buffer, &str)]) = match layout {
        Layout::Positions => (
            (
                &ATTENTION_BACKWARD_SCORES,
                [
                    (3, g.values.buffer(), "attention: values"),
                    (9, g.grad_context.buffer(), "attention: grad_context"),
                    (12, g.grad_values.buffer(), "attention: grad_values"),
                ],
                &ATTENTION_BACKWARD_QUERY_KEYS,
            ),
            &[
                (0, g.query.buffer(), "attention: query"),
                (1, g.keys.buffer(), "attention: keys"),
                (2, v, "attention: v"),
                (4, lengths, "attention: lengths"),
                (13, g.grad_query.buffer(), "attention: grad_query"),
                (14, g.grad_keys.buffer(), "attention: grad_keys"),
                (15, grad_v_rows, "attention: grad_v_rows"),
                (16, g.grad_score.buffer(), "attention: grad_score"),
            ],
        ),
        Layout::Columns { .. } => (
            (
                &ATTENTION_BACKWARD_SCORES_SUBGROUP,
                [
                    (20, g.values.buffer(), "attention: values"),
                    (22, g.grad_context.buffer(), "attention: grad_context"),
                    (23, g.grad_values.buffer(), "attention: grad_values"),
                ],
                &ATTENTION_BACKWARD_QUERY_KEYS4,
            ),
            &[
                (4, lengths, "attention: lengths"),
                (16, g.grad_score.buffer(), "attention: grad_score"),
                (17, g.query.buffer(), "attention: query"),
                (18, g.keys.buffer(), "attention: keys"),
                (19, v, "attention: v"),
                (24, g.grad_query.buffer(), "attention: grad_query"),
                (25, g.grad_keys.buffer(), "attention: grad_keys"),
                (26, grad_v_rows, "attention: grad_v_rows"),
            ],
        ),
    };
    let (scores_kernel, by_layout, query_keys_kernel) = scores;
    let mut scores_buffers = vec![
        (4, lengths, "attention: lengths"),
        (8, g.weights.buffer(), "attention: weights"),
        (10, grad_weights, "attention: grad_weights"),
        (11, g.grad_score.buffer(), "attention: grad_score"),
    ];
    scores_buffers.extend(by_layout);
    ctx.encode_dispatch(
        encoder,
        Dispatch {
            kernel: scores_kernel,
            overrides: &overrides,
            buffers: &scores_buffers,
            params: &params,
            workgroups: [b as u32, 1, 1],
        },
    )?;
    ctx.encode_dispatch(
        encoder,
        Dispatch {
            kernel: query_keys_kernel,
            overrides: &overrides,
            buffers: query_keys,
            params: &params,
            workgroups: [b as u32, 1, 1],
        },
    )
}
