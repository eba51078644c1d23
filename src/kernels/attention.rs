//! Launchers of `shaders/attention.wgsl`: one decoder step of attention (scores, masked
//! softmax over the source, context) fused in one dispatch, and its backward in two.
//!
//! Shapes: `query` `[B, A]`, `keys` `[B, S, A]`, `v` `[A]` (additive only), `values`
//! `[B, S, Dv]`, `weights` and `grad_score` `[B, S]`, `context` `[B, Dv]`.
//!
//! The chapter's `BahdanauAttention(query, values)` is [`Score::Additive`] with
//! `query = W1 q + b1` (a matmul per decoder step), `keys = W2 values + b2` (one matmul
//! per source sequence, DESIGN.md's "computed once per sequence") and `v = V.weight`.
//! Luong's dot score is [`Score::Dot`] with `query = q`, `keys = values`; "general" is
//! [`Score::Dot`] with `query = q W_a`; "concat" is [`Score::Additive`] with `W_c` split
//! into its query and key halves. The gradients of those matmuls (W1, W2, b1, b2, W_a)
//! follow from `grad_query` and `grad_keys` by matmuls; `grad_v_rows` `[B, A]` holds one
//! partial `dv` per batch row, to be summed over rows (e.g. `matmul_backward`'s bias sum).

use super::{check_loop_budget, check_tensors, Lengths};
use crate::gpu::{Access, Context, Dispatch, KernelSpec, ATTENTION};
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

fn overrides(ctx: &Context, score: Score, source: usize) -> Result<[(&'static str, u32); 3]> {
    // Workgroup memory holds one f32 per source position, rounded up to a power of two
    // so that few pipeline variants exist, plus the reduction partials.
    let max_s = source.next_power_of_two().max(WG as usize);
    let needed = (max_s * 4 + WG as usize * 8 + 8) as u64;
    let allowed = u64::from(ctx.limits().max_compute_workgroup_storage_size);
    if needed > allowed {
        return Err(Error::DeviceLimit {
            tensor: format!("attention over {source} source positions"),
            limit: "max_compute_workgroup_storage_size",
            needed,
            allowed,
        });
    }
    Ok([
        ("WG", WG),
        ("MAX_S", max_s as u32),
        ("SCORE", u32::from(score == Score::Dot)),
    ])
}

/// Upper bounds of the loop iterations of one invocation of each entry point, checked
/// against a CPU adapter's budget (see `check_loop_budget`). Every loop also pays one
/// iteration for its exit test.
fn check_iterations(ctx: &Context, dims: &AttentionDims, backward: bool) -> Result<()> {
    let wg = u64::from(WG);
    let (s, a, dv) = (dims.source as u64, dims.width as u64, dims.value_width as u64);
    let per_position = s.div_ceil(wg);
    if backward {
        let scores = per_position * (dv + 2) + wg + (s * dv).div_ceil(wg) + 8;
        check_loop_budget(ctx, "attention_backward_scores", scores)?;
        check_loop_budget(ctx, "attention_backward_query_keys", a.div_ceil(wg) * (s + 1) + 4)
    } else {
        let forward = per_position * (a + 5) + 2 * wg + dv.div_ceil(wg) * (s + 1) + 8;
        check_loop_budget(ctx, "attention_forward", forward)
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
pub fn attention_forward(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    forward: &AttentionForward<'_>,
) -> Result<()> {
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
    check_iterations(ctx, &dims, false)?;
    let lengths = f.lengths.map_or(ctx.placeholder(), |lengths| lengths.tensor().buffer());
    ctx.encode_dispatch(
        encoder,
        Dispatch {
            kernel: &ATTENTION_FORWARD,
            overrides: &overrides(ctx, f.score, dims.source)?,
            buffers: &[
                (0, f.query.buffer(), "attention: query"),
                (1, f.keys.buffer(), "attention: keys"),
                (2, f.v.map_or(ctx.placeholder(), Tensor::buffer), "attention: v"),
                (3, f.values.buffer(), "attention: values"),
                (4, lengths, "attention: lengths"),
                (5, f.weights.buffer(), "attention: weights"),
                (6, f.context.buffer(), "attention: context"),
            ],
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
pub fn attention_backward(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    backward: &AttentionBackward<'_>,
) -> Result<()> {
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
    check_iterations(ctx, &dims, true)?;

    let overrides = overrides(ctx, g.score, s)?;
    let params = Params {
        has_grad_weights: u32::from(g.grad_weights.is_some()),
        accumulate: u32::from(g.accumulate),
        ..params(&dims, g.lengths)
    };
    let lengths = g.lengths.map_or(ctx.placeholder(), |lengths| lengths.tensor().buffer());
    ctx.encode_dispatch(
        encoder,
        Dispatch {
            kernel: &ATTENTION_BACKWARD_SCORES,
            overrides: &overrides,
            buffers: &[
                (3, g.values.buffer(), "attention: values"),
                (4, lengths, "attention: lengths"),
                (8, g.weights.buffer(), "attention: weights"),
                (9, g.grad_context.buffer(), "attention: grad_context"),
                (
                    10,
                    g.grad_weights.map_or(ctx.placeholder(), Tensor::buffer),
                    "attention: grad_weights",
                ),
                (11, g.grad_score.buffer(), "attention: grad_score"),
                (12, g.grad_values.buffer(), "attention: grad_values"),
            ],
            params: &params,
            workgroups: [b as u32, 1, 1],
        },
    )?;
    ctx.encode_dispatch(
        encoder,
        Dispatch {
            kernel: &ATTENTION_BACKWARD_QUERY_KEYS,
            overrides: &overrides,
            buffers: &[
                (0, g.query.buffer(), "attention: query"),
                (1, g.keys.buffer(), "attention: keys"),
                (2, g.v.map_or(ctx.placeholder(), Tensor::buffer), "attention: v"),
                (4, lengths, "attention: lengths"),
                (13, g.grad_query.buffer(), "attention: grad_query"),
                (14, g.grad_keys.buffer(), "attention: grad_keys"),
                (
                    15,
                    g.grad_v_rows.map_or(ctx.scratch_placeholder(), Tensor::buffer),
                    "attention: grad_v_rows",
                ),
                (16, g.grad_score.buffer(), "attention: grad_score"),
            ],
            params: &params,
            workgroups: [b as u32, 1, 1],
        },
    )
}
