//! CPU reference of `shaders/rnn_cell.wgsl`: PyTorch's Elman RNN recurrence (tanh or
//! relu) over a whole sequence, forward and backward, in f64 loops.
//!
//! Shapes as in [`crate::kernels::rnn_cell`]: xproj and output `[B, T, H]`, w_hh
//! `[H, H]`, states `[B, T+1, H]`.

use crate::kernels::rnn_cell::{Nonlinearity, RnnDims};

fn activate(nonlinearity: Nonlinearity, x: f64) -> f64 {
    match nonlinearity {
        Nonlinearity::Tanh => x.tanh(),
        Nonlinearity::Relu => x.max(0.0),
    }
}

/// d act / d pre-activation, from the activation's output h.
fn slope(nonlinearity: Nonlinearity, h: f64) -> f64 {
    match nonlinearity {
        Nonlinearity::Tanh => 1.0 - h * h,
        Nonlinearity::Relu => f64::from(u8::from(h > 0.0)),
    }
}

/// What the forward computes and saves.
#[derive(Clone, Debug)]
pub struct RnnSaved {
    /// `[B, T+1, H]`, slot 0 = h0, slot T = final h (carried through padded steps).
    pub h_states: Vec<f64>,
    /// `[B, T, H]`; 0 at padded steps.
    pub output: Vec<f64>,
}

/// Runs every step; step t of row b runs iff `t < lengths[b]` (None: all T).
pub fn rnn_cell_forward(
    dims: &RnnDims,
    nonlinearity: Nonlinearity,
    xproj: &[f64],
    w_hh: &[f64],
    lengths: Option<&[usize]>,
    h0: &[f64],
) -> RnnSaved {
    let RnnDims { batch, steps, hidden } = *dims;
    let state = |b: usize, t: usize, u: usize| (b * (steps + 1) + t) * hidden + u;
    let mut saved = RnnSaved {
        h_states: vec![0.0; batch * (steps + 1) * hidden],
        output: vec![0.0; batch * steps * hidden],
    };
    for b in 0..batch {
        for u in 0..hidden {
            saved.h_states[state(b, 0, u)] = h0[b * hidden + u];
        }
        let len = lengths.map_or(steps, |lengths| lengths[b]);
        for t in 0..steps {
            for u in 0..hidden {
                if t >= len {
                    saved.h_states[state(b, t + 1, u)] = saved.h_states[state(b, t, u)];
                    continue;
                }
                // h_t[u] = act(xproj[b, t, u] + sum_k h_{t-1}[k] W_hh[u, k])
                let mut pre = xproj[(b * steps + t) * hidden + u];
                for k in 0..hidden {
                    pre += saved.h_states[state(b, t, k)] * w_hh[u * hidden + k];
                }
                let h = activate(nonlinearity, pre);
                saved.h_states[state(b, t + 1, u)] = h;
                saved.output[(b * steps + t) * hidden + u] = h;
            }
        }
    }
    saved
}

/// Gradients of the forward's inputs.
#[derive(Clone, Debug)]
pub struct RnnGrads {
    /// d xproj `[B, T, H]`.
    pub grad_gates: Vec<f64>,
    /// `[B, H]`
    pub grad_h0: Vec<f64>,
    /// `[H, H]`
    pub grad_w_hh: Vec<f64>,
}

/// Backpropagation through time; `grad_output` `[B, T, H]` (None: unused output),
/// `grad_h_n` `[B, H]`: gradient of the final state.
pub fn rnn_cell_backward(
    dims: &RnnDims,
    nonlinearity: Nonlinearity,
    w_hh: &[f64],
    lengths: Option<&[usize]>,
    saved: &RnnSaved,
    grad_output: Option<&[f64]>,
    grad_h_n: &[f64],
) -> RnnGrads {
    let RnnDims { batch, steps, hidden } = *dims;
    let state = |b: usize, t: usize, u: usize| (b * (steps + 1) + t) * hidden + u;
    let mut grads = RnnGrads {
        grad_gates: vec![0.0; batch * steps * hidden],
        grad_h0: vec![0.0; batch * hidden],
        grad_w_hh: vec![0.0; hidden * hidden],
    };
    for b in 0..batch {
        let len = lengths.map_or(steps, |lengths| lengths[b]);
        let mut dh: Vec<f64> = grad_h_n[b * hidden..(b + 1) * hidden].to_vec();
        for t in (0..len).rev() {
            let mut dh_prev = vec![0.0; hidden];
            for u in 0..hidden {
                let index = (b * steps + t) * hidden + u;
                let dh_total = dh[u] + grad_output.map_or(0.0, |dy| dy[index]);
                let dpre = dh_total * slope(nonlinearity, saved.h_states[state(b, t + 1, u)]);
                grads.grad_gates[index] = dpre;
                for k in 0..hidden {
                    dh_prev[k] += dpre * w_hh[u * hidden + k];
                    grads.grad_w_hh[u * hidden + k] += dpre * saved.h_states[state(b, t, k)];
                }
            }
            dh = dh_prev;
        }
        grads.grad_h0[b * hidden..(b + 1) * hidden].copy_from_slice(&dh);
    }
    grads
}
