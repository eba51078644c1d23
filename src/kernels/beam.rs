//! Launchers of `shaders/beam.wgsl`: one step of beam search kept on the GPU.
//!
//! Row `r = b * K + k` is beam `k` of sentence `b`; scores are cumulative
//! log-probabilities. A step is [`beam_expand`] (`[B*K, V]` logits to candidate scores),
//! [`top_k`](super::cross_entropy::top_k) on the candidates viewed as `[B, K*V]` (the
//! new scores and the picks), then [`beam_select`] (each pick's token, parent row and
//! finished flag, plus a history row for the final backtrack). Nothing is read back
//! between steps. After the last step, [`beam_best`] leaves each sentence's best
//! hypothesis in a GPU buffer, or the host reads the history back and [`backtrack`] ranks
//! all K. Decoding has no gradient, so the family has no backward.

use super::{check_loop_budget, check_tensors, element_grid, row_grid};
use crate::gpu::{Access, Context, Dispatch, KernelSpec, Recorder, BEAM};
use crate::{DType, Error, Result, Tensor};

/// What one beam-search step needs besides its tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BeamStep {
    /// K, beams per sentence (`1..=V`).
    pub beam: usize,
    /// The `<eos>` id: a hypothesis that emits it is finished and keeps its score.
    pub eos: u32,
    /// The first step: only beam 0 of each sentence expands (all K hold the same start).
    pub first: bool,
    /// The step's index: which row of the history [`beam_select`] writes.
    pub step: usize,
}

/// Mirror of `Params` in beam.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    vocab: u32,
    beam: u32,
    eos: u32,
    first: u32,
    step: u32,
    steps: u32,
    length_penalty: f32,
}

const BEAM_EXPAND: KernelSpec = KernelSpec {
    family: &BEAM,
    entry_point: "beam_expand",
    bindings: &[
        (0, Access::Read),
        (1, Access::Read),
        (2, Access::Read),
        (3, Access::ReadWrite),
        (9, Access::Params),
    ],
};

const BEAM_SELECT: KernelSpec = KernelSpec {
    family: &BEAM,
    entry_point: "beam_select",
    bindings: &[
        (2, Access::Read),
        (4, Access::Read),
        (5, Access::ReadWrite),
        (6, Access::ReadWrite),
        (7, Access::ReadWrite),
        (8, Access::ReadWrite),
        (9, Access::Params),
    ],
};

const BEAM_BEST: KernelSpec = KernelSpec {
    family: &BEAM,
    entry_point: "beam_best",
    bindings: &[
        (1, Access::Read),
        (8, Access::ReadWrite),
        (9, Access::Params),
        (10, Access::ReadWrite),
    ],
};

/// Invocations per row of `beam_expand`: 8 on a CPU adapter, where each barrier of the
/// reductions switches between the invocations (see cross_entropy's loss), 64 on a GPU.
fn expand_workgroup(ctx: &Context) -> u32 {
    if ctx.adapter().device_type == wgpu::DeviceType::Cpu {
        8
    } else {
        64
    }
}

fn check_step(step: &BeamStep, rows: usize, vocab: usize) -> Result<()> {
    if step.beam == 0 || step.beam > vocab {
        return Err(Error::invalid(format!(
            "beam search: the beam width must be in 1..={vocab} (the vocabulary), got {}",
            step.beam
        )));
    }
    if !rows.is_multiple_of(step.beam) {
        return Err(Error::invalid(format!(
            "beam search: {rows} rows are not whole sentences of {} beams",
            step.beam
        )));
    }
    if step.eos as usize >= vocab {
        return Err(Error::invalid(format!(
            "beam search: eos id {} is outside the vocabulary of {vocab}",
            step.eos
        )));
    }
    Ok(())
}

/// Encodes the candidate scores of every (row, class): `scores[r] + log_softmax(logits[r])`
/// for a live row; for a finished row `scores[r]` at `eos` and `-inf` elsewhere; `-inf`
/// for the rows `k > 0` at the first step. Shapes: logits, candidates `[B*K, V]` f32;
/// scores `[B*K]` f32; finished `[B*K]` u32 (0 = live).
pub fn beam_expand(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    step: &BeamStep,
    logits: &Tensor,
    scores: &Tensor,
    finished: &Tensor,
    candidates: &Tensor,
) -> Result<()> {
    logits.check_dtype("beam_expand: logits", DType::F32)?;
    let [rows, vocab] = *logits.shape() else {
        return Err(Error::shape("beam_expand: logits", "[B*K, V]", logits.shape()));
    };
    if rows == 0 || vocab == 0 {
        return Err(Error::shape(
            "beam_expand: logits",
            "[B*K, V] with both >= 1",
            logits.shape(),
        ));
    }
    check_step(step, rows, vocab)?;
    scores.check_dtype("beam_expand: scores", DType::F32)?;
    scores.check_shape("beam_expand: scores", &[rows])?;
    finished.check_dtype("beam_expand: finished", DType::U32)?;
    finished.check_shape("beam_expand: finished", &[rows])?;
    candidates.check_dtype("beam_expand: candidates", DType::F32)?;
    candidates.check_shape("beam_expand: candidates", &[rows, vocab])?;
    check_tensors(
        ctx,
        &[
            ("beam_expand: logits", logits),
            ("beam_expand: scores", scores),
            ("beam_expand: finished", finished),
        ],
        &[("beam_expand: candidates", candidates)],
    )?;
    let wg = expand_workgroup(ctx);
    // Three strided passes over the row and two reduction trees.
    let iterations = 3 * (vocab.div_ceil(wg as usize) as u64 + 1) + 2 * u64::from(wg.ilog2() + 1);
    check_loop_budget(ctx, "beam_expand: logits (three passes per row)", iterations)?;
    ctx.encode_dispatch(
        encoder,
        Dispatch {
            kernel: &BEAM_EXPAND,
            overrides: &[("WG", wg)],
            buffers: &[
                (0, logits.buffer(), "beam_expand: logits"),
                (1, scores.buffer(), "beam_expand: scores"),
                (2, finished.buffer(), "beam_expand: finished"),
                (3, candidates.buffer(), "beam_expand: candidates"),
            ],
            params: &Params {
                rows: rows as u32,
                vocab: vocab as u32,
                beam: step.beam as u32,
                eos: step.eos,
                first: u32::from(step.first),
                ..Params::default()
            },
            workgroups: row_grid(ctx, rows),
        },
    )
}

/// Where [`beam_select`] writes.
#[derive(Clone, Copy, Debug)]
pub struct BeamSelection<'a> {
    /// `[B*K]` u32: each new row's token (the next decoder input).
    pub tokens: &'a Tensor,
    /// `[B*K]` u32: each new row's parent row `b * K + k` (gather the state by it).
    pub parents: &'a Tensor,
    /// `[B*K]` u32: 1 where the new row's hypothesis has emitted `eos`.
    pub finished: &'a Tensor,
    /// `[steps, B*K, 2]` u32: row `step` receives `(token, parent)` of every new row.
    pub history: &'a Tensor,
}

/// Encodes the bookkeeping of the picks of `top_k` over the candidates viewed as
/// `[B, K*V]`: pick `j` of sentence `b`, index `i`, becomes row `b*K + j` with token
/// `i % V`, parent `b*K + i / V`, finished if its parent was or the token is `eos`.
/// `picks` is top_k's `[B, K]` indices; `finished` the flags the candidates were made
/// with; `vocab` is V.
pub fn beam_select(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    step: &BeamStep,
    vocab: usize,
    picks: &Tensor,
    finished: &Tensor,
    out: &BeamSelection<'_>,
) -> Result<()> {
    picks.check_dtype("beam_select: picks", DType::U32)?;
    let [sentences, beam] = *picks.shape() else {
        return Err(Error::shape("beam_select: picks", "[B, K]", picks.shape()));
    };
    let rows = sentences * beam;
    if rows == 0 || vocab == 0 || beam != step.beam {
        return Err(Error::shape(
            "beam_select: picks",
            format!("[B, {}] with B >= 1", step.beam),
            picks.shape(),
        ));
    }
    check_step(step, rows, vocab)?;
    finished.check_dtype("beam_select: finished", DType::U32)?;
    finished.check_shape("beam_select: finished", &[rows])?;
    for (name, tensor) in [
        ("beam_select: tokens", out.tokens),
        ("beam_select: parents", out.parents),
        ("beam_select: finished_out", out.finished),
    ] {
        tensor.check_dtype(name, DType::U32)?;
        tensor.check_shape(name, &[rows])?;
    }
    out.history.check_dtype("beam_select: history", DType::U32)?;
    match *out.history.shape() {
        [steps, r, 2] if r == rows && step.step < steps => {}
        _ => {
            return Err(Error::shape(
                "beam_select: history",
                format!("[steps > {}, {rows}, 2]", step.step),
                out.history.shape(),
            ))
        }
    }
    check_tensors(
        ctx,
        &[("beam_select: picks", picks), ("beam_select: finished", finished)],
        &[
            ("beam_select: tokens", out.tokens),
            ("beam_select: parents", out.parents),
            ("beam_select: finished_out", out.finished),
            ("beam_select: history", out.history),
        ],
    )?;
    const WG: u32 = 64;
    ctx.encode_dispatch(
        encoder,
        Dispatch {
            kernel: &BEAM_SELECT,
            overrides: &[("WG", WG)],
            buffers: &[
                (2, finished.buffer(), "beam_select: finished"),
                (4, picks.buffer(), "beam_select: picks"),
                (5, out.tokens.buffer(), "beam_select: tokens"),
                (6, out.parents.buffer(), "beam_select: parents"),
                (7, out.finished.buffer(), "beam_select: finished_out"),
                (8, out.history.buffer(), "beam_select: history"),
            ],
            params: &Params {
                rows: rows as u32,
                vocab: vocab as u32,
                beam: step.beam as u32,
                eos: step.eos,
                step: step.step as u32,
                ..Params::default()
            },
            workgroups: element_grid(ctx, rows, WG),
        },
    )
}

/// How [`beam_best`] ranks a sentence's K final hypotheses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BeamRanking {
    /// K, beams per sentence.
    pub beam: usize,
    /// The `<eos>` id: a path's length counts up to its first `eos`, included.
    pub eos: u32,
    /// Ranking by `log_prob / length^length_penalty` (0: the plain sum; 1: the mean per
    /// token, exact; other values go through the GPU's `pow`).
    pub length_penalty: f32,
}

/// Encodes the best hypothesis of every sentence into `best` `[B, steps]` u32: its tokens,
/// `eos` from its first `eos` on (every position after the end). `history` is
/// [`beam_select`]'s `[steps, B*K, 2]` after the last step, `scores` the final `[B*K]`
/// log-probabilities. The ranking is [`backtrack`]'s (its first hypothesis per sentence),
/// so a host's frame gets the decoded line without a readback.
pub fn beam_best(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    ranking: &BeamRanking,
    history: &Tensor,
    scores: &Tensor,
    best: &Tensor,
) -> Result<()> {
    scores.check_dtype("beam_best: scores", DType::F32)?;
    let rows = scores.len();
    if ranking.beam == 0 || rows == 0 || !rows.is_multiple_of(ranking.beam) {
        return Err(Error::shape(
            "beam_best: scores",
            format!("[B*{}] with B >= 1", ranking.beam),
            scores.shape(),
        ));
    }
    if !ranking.length_penalty.is_finite() {
        return Err(Error::invalid(format!(
            "beam_best: length_penalty must be finite, got {}",
            ranking.length_penalty
        )));
    }
    history.check_dtype("beam_best: history", DType::U32)?;
    let steps = match *history.shape() {
        [steps, r, 2] if r == rows && steps >= 1 => steps,
        _ => {
            return Err(Error::shape(
                "beam_best: history",
                format!("[steps >= 1, {rows}, 2]"),
                history.shape(),
            ))
        }
    };
    let sentences = rows / ranking.beam;
    best.check_dtype("beam_best: best", DType::U32)?;
    best.check_shape("beam_best: best", &[sentences, steps])?;
    check_tensors(
        ctx,
        &[("beam_best: history", history), ("beam_best: scores", scores)],
        &[("beam_best: best", best)],
    )?;
    // K walks back to rank, one to write and one pass to cut, per invocation.
    let iterations = (ranking.beam as u64 + 2).saturating_mul(steps as u64);
    check_loop_budget(ctx, "beam_best: history (K + 2 walks of every step)", iterations)?;
    const WG: u32 = 64;
    ctx.encode_dispatch(
        encoder,
        Dispatch {
            kernel: &BEAM_BEST,
            overrides: &[("WG", WG)],
            buffers: &[
                (1, scores.buffer(), "beam_best: scores"),
                (8, history.buffer(), "beam_best: history"),
                (10, best.buffer(), "beam_best: best"),
            ],
            params: &Params {
                rows: rows as u32,
                beam: ranking.beam as u32,
                eos: ranking.eos,
                steps: steps as u32,
                length_penalty: ranking.length_penalty,
                ..Params::default()
            },
            workgroups: element_grid(ctx, sentences, WG),
        },
    )
}

/// One hypothesis of beam search, read back at the end.
#[derive(Clone, Debug, PartialEq)]
pub struct Hypothesis {
    /// The tokens up to, without, `eos`.
    pub tokens: Vec<u32>,
    /// Whether it ended with `eos` (else it was cut at the last step).
    pub finished: bool,
    /// The sum of its tokens' log-probabilities (`eos` included).
    pub log_prob: f32,
    /// The ranking score: `log_prob / length^length_penalty`, the length counting `eos`.
    pub score: f32,
}

/// The host's half of beam search: rebuilds every sentence's K hypotheses from the
/// read-back history `[steps, B*K, 2]` of [`beam_select`] and the final scores `[B*K]`,
/// ranked by `log_prob / length^length_penalty` (0: the plain sum, which favours short
/// outputs; 1: the mean per token), best first, ties in beam order. A parent outside its
/// sentence's rows (a corrupt history) is an error, not a panic.
pub fn backtrack(
    history: &[u32],
    scores: &[f32],
    beam: usize,
    eos: u32,
    length_penalty: f32,
) -> Result<Vec<Vec<Hypothesis>>> {
    let rows = scores.len();
    if beam == 0 || rows == 0 || !rows.is_multiple_of(beam) || !history.len().is_multiple_of(2 * rows) {
        return Err(Error::invalid(format!(
            "beam search: a history of {} values and {rows} scores are not [steps, B*{beam}, 2] and [B*{beam}]",
            history.len()
        )));
    }
    let steps = history.len() / (2 * rows);
    let mut sentences = Vec::with_capacity(rows / beam);
    for first_row in (0..rows).step_by(beam) {
        let mut hypotheses = Vec::with_capacity(beam);
        for (row, &log_prob) in scores.iter().enumerate().skip(first_row).take(beam) {
            let mut tokens = Vec::with_capacity(steps);
            let mut at = row;
            for t in (0..steps).rev() {
                let slot = 2 * (t * rows + at);
                let (token, parent) = (history[slot], history[slot + 1] as usize);
                if !(first_row..first_row + beam).contains(&parent) {
                    return Err(Error::invalid(format!(
                        "beam search: history[{t}, {at}] names parent row {parent}, outside rows {first_row}..{}",
                        first_row + beam
                    )));
                }
                tokens.push(token);
                at = parent;
            }
            tokens.reverse();
            let end = tokens.iter().position(|&token| token == eos);
            let length = end.map_or(steps, |e| e + 1);
            tokens.truncate(end.unwrap_or(steps));
            hypotheses.push(Hypothesis {
                tokens,
                finished: end.is_some(),
                log_prob,
                score: log_prob / (length.max(1) as f32).powf(length_penalty),
            });
        }
        hypotheses.sort_by(|a, b| b.score.total_cmp(&a.score));
        sentences.push(hypotheses);
    }
    Ok(sentences)
}
