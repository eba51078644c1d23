//! CPU reference of `shaders/attention.wgsl`: additive (Bahdanau) and dot (Luong)
//! attention for one decoder step, forward and backward, in f64 loops.
//!
//! Shapes as in [`crate::kernels::attention`]: query `[B, A]`, keys `[B, S, A]`, v `[A]`,
//! values `[B, S, Dv]`, weights `[B, S]`, context `[B, Dv]`.

use crate::kernels::attention::{AttentionDims, Score};

/// The forward's outputs.
#[derive(Clone, Debug)]
pub struct AttentionOutput {
    /// `[B, S]`, 0 past each row's length.
    pub weights: Vec<f64>,
    /// `[B, Dv]`
    pub context: Vec<f64>,
}

/// The inputs of one step.
#[derive(Clone, Copy, Debug)]
pub struct AttentionInputs<'a> {
    /// Additive or dot.
    pub score: Score,
    /// `[B, A]`
    pub query: &'a [f64],
    /// `[B, S, A]`
    pub keys: &'a [f64],
    /// `[A]`, additive only.
    pub v: Option<&'a [f64]>,
    /// `[B, S, Dv]`
    pub values: &'a [f64],
    /// Per-row source lengths (None: all S).
    pub lengths: Option<&'a [usize]>,
}

fn score(dims: &AttentionDims, x: &AttentionInputs<'_>, b: usize, s: usize) -> f64 {
    let a_width = dims.width;
    let q = &x.query[b * a_width..(b + 1) * a_width];
    let k = &x.keys[(b * dims.source + s) * a_width..(b * dims.source + s + 1) * a_width];
    match (x.score, x.v) {
        (Score::Additive, Some(v)) => (0..a_width).map(|a| v[a] * (q[a] + k[a]).tanh()).sum(),
        _ => (0..a_width).map(|a| q[a] * k[a]).sum(),
    }
}

/// Scores, softmax over `s < len[b]`, context.
pub fn attention_forward(dims: &AttentionDims, x: &AttentionInputs<'_>) -> AttentionOutput {
    let AttentionDims {
        batch,
        source,
        value_width,
        ..
    } = *dims;
    let mut out = AttentionOutput {
        weights: vec![0.0; batch * source],
        context: vec![0.0; batch * value_width],
    };
    for b in 0..batch {
        let len = x.lengths.map_or(source, |lengths| lengths[b]);
        let scores: Vec<f64> = (0..len).map(|s| score(dims, x, b, s)).collect();
        let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = scores.iter().map(|s| (s - max).exp()).sum();
        for (s, value) in scores.iter().enumerate() {
            let w = (value - max).exp() / sum;
            out.weights[b * source + s] = w;
            for d in 0..value_width {
                out.context[b * value_width + d] += w * x.values[(b * source + s) * value_width + d];
            }
        }
    }
    out
}

/// Gradients of one step.
#[derive(Clone, Debug)]
pub struct AttentionGrads {
    /// `[B, S]`: gradient of the scores.
    pub grad_score: Vec<f64>,
    /// `[B, A]`
    pub grad_query: Vec<f64>,
    /// `[B, S, A]`
    pub grad_keys: Vec<f64>,
    /// `[A]` (additive; zeros for dot), summed over the batch.
    pub grad_v: Vec<f64>,
    /// `[B, S, Dv]`
    pub grad_values: Vec<f64>,
}

/// Backward of [`attention_forward`] given `grad_context` `[B, Dv]` and optionally
/// `grad_weights` `[B, S]`.
pub fn attention_backward(
    dims: &AttentionDims,
    x: &AttentionInputs<'_>,
    out: &AttentionOutput,
    grad_context: &[f64],
    grad_weights: Option<&[f64]>,
) -> AttentionGrads {
    let AttentionDims {
        batch,
        source,
        width,
        value_width,
    } = *dims;
    let mut grads = AttentionGrads {
        grad_score: vec![0.0; batch * source],
        grad_query: vec![0.0; batch * width],
        grad_keys: vec![0.0; batch * source * width],
        grad_v: vec![0.0; width],
        grad_values: vec![0.0; batch * source * value_width],
    };
    for b in 0..batch {
        let len = x.lengths.map_or(source, |lengths| lengths[b]);
        // context = sum_s w[s] values[s]  =>  dw[s] = dcontext . values[s]; dvalues[s] = w[s] dcontext
        let mut dw = vec![0.0; len];
        for (s, dw) in dw.iter_mut().enumerate() {
            let w = out.weights[b * source + s];
            for d in 0..value_width {
                let at = (b * source + s) * value_width + d;
                *dw += grad_context[b * value_width + d] * x.values[at];
                grads.grad_values[at] += w * grad_context[b * value_width + d];
            }
            *dw += grad_weights.map_or(0.0, |g| g[b * source + s]);
        }
        // w = softmax(score)  =>  dscore[s] = w[s] (dw[s] - sum_s' w[s'] dw[s'])
        let dot: f64 = (0..len).map(|s| out.weights[b * source + s] * dw[s]).sum();
        for (s, &dw) in dw.iter().enumerate() {
            let ds = out.weights[b * source + s] * (dw - dot);
            grads.grad_score[b * source + s] = ds;
            for a in 0..width {
                let q = x.query[b * width + a];
                let k_at = (b * source + s) * width + a;
                match (x.score, x.v) {
                    (Score::Additive, Some(v)) => {
                        // score = sum_a v[a] tanh(q[a] + k[s, a])
                        let t = (q + x.keys[k_at]).tanh();
                        let dpre = ds * v[a] * (1.0 - t * t);
                        grads.grad_query[b * width + a] += dpre;
                        grads.grad_keys[k_at] += dpre;
                        grads.grad_v[a] += ds * t;
                    }
                    _ => {
                        // score = sum_a q[a] k[s, a]
                        grads.grad_query[b * width + a] += ds * x.keys[k_at];
                        grads.grad_keys[k_at] += ds * q;
                    }
                }
            }
        }
    }
    grads
}
