//! CPU reference of `shaders/lstm_cell.wgsl`: PyTorch's LSTM recurrence over a whole
//! sequence, forward and backward, in f64 loops.
//!
//! Shapes as in [`crate::kernels::lstm_cell`]: xproj and gates `[B, T, 4H]` (gate q of
//! unit u at column q * H + u, q in i, f, g, o), w_hh `[4H, H]`, states `[B, T+1, H]`.

use crate::kernels::lstm_cell::LstmDims;

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// What the forward computes and saves.
#[derive(Clone, Debug)]
pub struct LstmSaved {
    /// `[B, T+1, H]`, slot 0 = h0, slot T = final h (carried through padded steps).
    pub h_states: Vec<f64>,
    /// `[B, T+1, H]`, likewise for c.
    pub c_states: Vec<f64>,
    /// `[B, T, 4H]` after the nonlinearities; 0 at padded steps.
    pub gates: Vec<f64>,
    /// `[B, T, H]`; 0 at padded steps.
    pub output: Vec<f64>,
}

/// Runs every step. `lengths` as `pack_padded_sequence`: step t of row b runs iff
/// `t < lengths[b]` (None: all T).
pub fn lstm_cell_forward(
    dims: &LstmDims,
    xproj: &[f64],
    w_hh: &[f64],
    lengths: Option<&[usize]>,
    h0: &[f64],
    c0: &[f64],
) -> LstmSaved {
    let LstmDims { batch, steps, hidden } = *dims;
    let state = |b: usize, t: usize, u: usize| (b * (steps + 1) + t) * hidden + u;
    let gate = |b: usize, t: usize, q: usize, u: usize| (b * steps + t) * 4 * hidden + q * hidden + u;
    let mut saved = LstmSaved {
        h_states: vec![0.0; batch * (steps + 1) * hidden],
        c_states: vec![0.0; batch * (steps + 1) * hidden],
        gates: vec![0.0; batch * steps * 4 * hidden],
        output: vec![0.0; batch * steps * hidden],
    };
    for b in 0..batch {
        for u in 0..hidden {
            saved.h_states[state(b, 0, u)] = h0[b * hidden + u];
            saved.c_states[state(b, 0, u)] = c0[b * hidden + u];
        }
        let len = lengths.map_or(steps, |lengths| lengths[b]);
        for t in 0..steps {
            for u in 0..hidden {
                if t >= len {
                    // padded: carry the state, no output
                    saved.h_states[state(b, t + 1, u)] = saved.h_states[state(b, t, u)];
                    saved.c_states[state(b, t + 1, u)] = saved.c_states[state(b, t, u)];
                    continue;
                }
                // pre[q] = xproj[b, t, q*H + u] + sum_k h_{t-1}[b, k] W_hh[q*H + u, k]
                let mut pre = [0.0f64; 4];
                for (q, pre) in pre.iter_mut().enumerate() {
                    *pre = xproj[gate(b, t, q, u)];
                    for k in 0..hidden {
                        *pre += saved.h_states[state(b, t, k)] * w_hh[(q * hidden + u) * hidden + k];
                    }
                }
                let (i, f, g, o) = (sigmoid(pre[0]), sigmoid(pre[1]), pre[2].tanh(), sigmoid(pre[3]));
                let c = f * saved.c_states[state(b, t, u)] + i * g;
                let h = o * c.tanh();
                for (q, value) in [i, f, g, o].into_iter().enumerate() {
                    saved.gates[gate(b, t, q, u)] = value;
                }
                saved.c_states[state(b, t + 1, u)] = c;
                saved.h_states[state(b, t + 1, u)] = h;
                saved.output[(b * steps + t) * hidden + u] = h;
            }
        }
    }
    saved
}

/// Gradients of the forward's inputs.
#[derive(Clone, Debug)]
pub struct LstmGrads {
    /// d xproj `[B, T, 4H]` (the gate pre-activations' gradient).
    pub grad_gates: Vec<f64>,
    /// `[B, H]`
    pub grad_h0: Vec<f64>,
    /// `[B, H]`
    pub grad_c0: Vec<f64>,
    /// `[4H, H]`: `sum_t dgates_t^T h_{t-1}`.
    pub grad_w_hh: Vec<f64>,
}

/// Backpropagation through time. `grad_output` `[B, T, H]` (None: the output was not
/// used), `grad_h_n`, `grad_c_n` `[B, H]`: gradients of the final state.
pub fn lstm_cell_backward(
    dims: &LstmDims,
    w_hh: &[f64],
    lengths: Option<&[usize]>,
    saved: &LstmSaved,
    grad_output: Option<&[f64]>,
    grad_h_n: &[f64],
    grad_c_n: &[f64],
) -> LstmGrads {
    let LstmDims { batch, steps, hidden } = *dims;
    let state = |b: usize, t: usize, u: usize| (b * (steps + 1) + t) * hidden + u;
    let gate = |b: usize, t: usize, q: usize, u: usize| (b * steps + t) * 4 * hidden + q * hidden + u;
    let mut grads = LstmGrads {
        grad_gates: vec![0.0; batch * steps * 4 * hidden],
        grad_h0: vec![0.0; batch * hidden],
        grad_c0: vec![0.0; batch * hidden],
        grad_w_hh: vec![0.0; 4 * hidden * hidden],
    };
    for b in 0..batch {
        let len = lengths.map_or(steps, |lengths| lengths[b]);
        // dh, dc: gradients of the state after step t (padded steps pass them through).
        let mut dh: Vec<f64> = grad_h_n[b * hidden..(b + 1) * hidden].to_vec();
        let mut dc: Vec<f64> = grad_c_n[b * hidden..(b + 1) * hidden].to_vec();
        for t in (0..len).rev() {
            let mut dh_prev = vec![0.0; hidden];
            for u in 0..hidden {
                let dh_total = dh[u] + grad_output.map_or(0.0, |dy| dy[(b * steps + t) * hidden + u]);
                let (i, f, g, o) = (
                    saved.gates[gate(b, t, 0, u)],
                    saved.gates[gate(b, t, 1, u)],
                    saved.gates[gate(b, t, 2, u)],
                    saved.gates[gate(b, t, 3, u)],
                );
                let c_prev = saved.c_states[state(b, t, u)];
                let tanh_c = saved.c_states[state(b, t + 1, u)].tanh();
                // h = o * tanh(c); c = f * c_prev + i * g
                let dc_total = dc[u] + dh_total * o * (1.0 - tanh_c * tanh_c);
                let dpre = [
                    dc_total * g * i * (1.0 - i),
                    dc_total * c_prev * f * (1.0 - f),
                    dc_total * i * (1.0 - g * g),
                    dh_total * tanh_c * o * (1.0 - o),
                ];
                for (q, &d) in dpre.iter().enumerate() {
                    grads.grad_gates[gate(b, t, q, u)] = d;
                    let row = (q * hidden + u) * hidden;
                    for k in 0..hidden {
                        // pre[q*H + u] += h_{t-1}[k] * W_hh[q*H + u, k]
                        dh_prev[k] += d * w_hh[row + k];
                        grads.grad_w_hh[row + k] += d * saved.h_states[state(b, t, k)];
                    }
                }
                dc[u] = dc_total * f;
            }
            dh = dh_prev;
        }
        grads.grad_h0[b * hidden..(b + 1) * hidden].copy_from_slice(&dh);
        grads.grad_c0[b * hidden..(b + 1) * hidden].copy_from_slice(&dc);
    }
    grads
}
