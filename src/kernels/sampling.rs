//! Launcher of `shaders/sampling.wgsl`: the next token of each row drawn on the GPU from
//! `softmax(logits / temperature)`, optionally restricted to the top k, seeded.
//!
//! Shapes (N rows or streams, V vocabulary):
//! - `logits`: `[N, V]` f32
//! - `probs`: `[N, V]` f32, written: the distribution that was sampled (0 outside the
//!   top k), each row summing to 1
//! - `tokens`: `[N]` u32, written: the drawn token of each row
//!
//! Row n's draw uses the uniform number of Philox4x32-10 with counter
//! `(n, 0x53414D50, step lo, step hi)` and key `seed`: the same seed, step and logits
//! give the same tokens on every run (and the CPU reference in
//! [`reference::sampling`](crate::reference::sampling) draws the same number).

use super::{check_loop_budget, check_tensors, row_grid};
use crate::gpu::{Access, Context, Dispatch, KernelSpec, Recorder, SAMPLING};
use crate::{DType, Error, Result, Tensor};

pub use crate::sampling::Sampling;

impl Sampling {
    /// `Err(InvalidArgument)` unless the temperature is finite and > 0 and k is in
    /// `1..=vocab`. Returns the number of tokens kept.
    pub fn check(&self, vocab: usize) -> Result<usize> {
        let t = self.temperature;
        // The kernel multiplies by 1 / T, which must be finite too.
        if !(t.is_finite() && t > 0.0 && (1.0 / t).is_finite()) {
            return Err(Error::invalid(format!(
                "sampling: temperature must be finite and > 0 (and 1 / T finite), got {t}"
            )));
        }
        match self.top_k {
            Some(k) if k == 0 || k > vocab => Err(Error::invalid(format!(
                "sampling: top_k must be in 1..={vocab} (V), got {k}"
            ))),
            Some(k) => Ok(k),
            None => Ok(vocab),
        }
    }
}

/// Mirror of `Params` in sampling.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    vocab: u32,
    k: u32,
    inv_temperature: f32,
    seed_lo: u32,
    seed_hi: u32,
    step_lo: u32,
    step_hi: u32,
}

const SAMPLE_TOKENS: KernelSpec = KernelSpec {
    family: &SAMPLING,
    entry_point: "sample_tokens",
    bindings: &[
        (0, Access::Read),
        (1, Access::ReadWrite),
        (2, Access::ReadWrite),
        (3, Access::Params),
    ],
};

/// Invocations per row: 8 (one SIMD group) on a CPU adapter, where every barrier of the
/// trees switches between the workgroup's invocations (cross_entropy.rs measured 8 as
/// the fastest there), else about V / 8, a power of two in 8..=256.
fn row_workgroup(ctx: &Context, vocab: usize) -> u32 {
    if ctx.adapter().device_type == wgpu::DeviceType::Cpu {
        return 8;
    }
    (vocab.div_ceil(8).next_power_of_two()).clamp(8, 256) as u32
}

/// An upper bound of one invocation's loop iterations: `rounds` picks over its chunk
/// (each with a tree of log2 WG steps), the weights, invocation 0's two passes over the
/// chunk sums, the owner's scan, the normalisation and Philox's ten rounds.
fn iterations(rounds: u64, vocab: usize, wg: u32) -> u64 {
    let chunk = vocab.div_ceil(wg as usize) as u64 + 1;
    let tree = u64::from(wg.ilog2()) + 1;
    rounds * (chunk + tree) + 3 * chunk + 2 * (u64::from(wg) + 1) + 11
}

/// Encodes one draw per row of `logits` (see the module docs), for random step `step`:
/// writes `probs` and `tokens`. Never submits or waits.
pub fn sample_tokens(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    op: &Sampling,
    step: u64,
    logits: &Tensor,
    probs: &Tensor,
    tokens: &Tensor,
) -> Result<()> {
    logits.check_dtype("sample_tokens: logits", DType::F32)?;
    let (rows, vocab) = match *logits.shape() {
        [n, v] if n >= 1 && v >= 1 => (n, v),
        _ => {
            return Err(Error::shape(
                "sample_tokens: logits",
                "[N, V] with N, V >= 1",
                logits.shape(),
            ))
        }
    };
    let k = op.check(vocab)?;
    probs.check_dtype("sample_tokens: probs", DType::F32)?;
    probs.check_shape("sample_tokens: probs", &[rows, vocab])?;
    tokens.check_dtype("sample_tokens: tokens", DType::U32)?;
    tokens.check_shape("sample_tokens: tokens", &[rows])?;
    check_tensors(
        ctx,
        &[("sample_tokens: logits", logits)],
        &[("sample_tokens: probs", probs), ("sample_tokens: tokens", tokens)],
    )?;
    let wg = row_workgroup(ctx, vocab);
    let rounds = if k >= vocab { 1 } else { k as u64 };
    check_loop_budget(ctx, "sample_tokens: logits (per row)", iterations(rounds, vocab, wg))?;
    let params = Params {
        rows: rows as u32,
        vocab: vocab as u32,
        k: k as u32,
        inv_temperature: 1.0 / op.temperature,
        seed_lo: op.seed as u32,
        seed_hi: (op.seed >> 32) as u32,
        step_lo: step as u32,
        step_hi: (step >> 32) as u32,
    };
    ctx.encode_dispatch(
        encoder,
        Dispatch {
            kernel: &SAMPLE_TOKENS,
            overrides: &[("ROW_WG", wg)],
            buffers: &[
                (0, logits.buffer(), "sample_tokens: logits"),
                (1, probs.buffer(), "sample_tokens: probs"),
                (2, tokens.buffer(), "sample_tokens: tokens"),
            ],
            params: &params,
            workgroups: row_grid(ctx, rows),
        },
    )
}
