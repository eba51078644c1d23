//! CPU reference of `shaders/gru_cell.wgsl`: PyTorch's GRU recurrence over a whole
//! sequence, forward and backward, in f64 loops.
//!
//! Shapes as in [`crate::kernels::gru_cell`]: xproj `[B, T, 3H]` (gate q of unit u at
//! column q * H + u, q in r, z, n), w_hh `[3H, H]`, b_hh `[3H]`, gates and grad_gates
//! `[B, T, 4H]`, states `[B, T+1, H]`.

use crate::kernels::gru_cell::GruDims;

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// What the forward computes and saves.
#[derive(Clone, Debug)]
pub struct GruSaved {
    /// `[B, T+1, H]`, slot 0 = h0, slot T = final h (carried through padded steps).
    pub h_states: Vec<f64>,
    /// `[B, T, 4H]`: r, z, n, hn = W_hn h + b_hn; 0 at padded steps.
    pub gates: Vec<f64>,
    /// `[B, T, H]`; 0 at padded steps.
    pub output: Vec<f64>,
}

/// Runs every step; step t of row b runs iff `t < lengths[b]` (None: all T).
pub fn gru_cell_forward(
    dims: &GruDims,
    xproj: &[f64],
    w_hh: &[f64],
    b_hh: &[f64],
    lengths: Option<&[usize]>,
    h0: &[f64],
) -> GruSaved {
    let GruDims { batch, steps, hidden } = *dims;
    let state = |b: usize, t: usize, u: usize| (b * (steps + 1) + t) * hidden + u;
    let mut saved = GruSaved {
        h_states: vec![0.0; batch * (steps + 1) * hidden],
        gates: vec![0.0; batch * steps * 4 * hidden],
        output: vec![0.0; batch * steps * hidden],
    };
    for b in 0..batch {
        for u in 0..hidden {
            saved.h_states[state(b, 0, u)] = h0[b * hidden + u];
        }
        let len = lengths.map_or(steps, |lengths| lengths[b]);
        for t in 0..steps {
            for u in 0..hidden {
                let h_prev = saved.h_states[state(b, t, u)];
                if t >= len {
                    saved.h_states[state(b, t + 1, u)] = h_prev;
                    continue;
                }
                // hh[q] = (h_{t-1} W_hh^T + b_hh)[q*H + u]
                let mut hh = [0.0f64; 3];
                for (q, hh) in hh.iter_mut().enumerate() {
                    *hh = b_hh[q * hidden + u];
                    for k in 0..hidden {
                        *hh += saved.h_states[state(b, t, k)] * w_hh[(q * hidden + u) * hidden + k];
                    }
                }
                let x = |q: usize| xproj[(b * steps + t) * 3 * hidden + q * hidden + u];
                let r = sigmoid(x(0) + hh[0]);
                let z = sigmoid(x(1) + hh[1]);
                let n = (x(2) + r * hh[2]).tanh();
                let h = (1.0 - z) * n + z * h_prev;
                let gate = (b * steps + t) * 4 * hidden + u;
                for (q, value) in [r, z, n, hh[2]].into_iter().enumerate() {
                    saved.gates[gate + q * hidden] = value;
                }
                saved.h_states[state(b, t + 1, u)] = h;
                saved.output[(b * steps + t) * hidden + u] = h;
            }
        }
    }
    saved
}

/// Gradients of the forward's inputs.
#[derive(Clone, Debug)]
pub struct GruGrads {
    /// `[B, T, 4H]`: (dr, dz, dn) = d xproj in columns 0..3H, and d(W_hn h + b_hn).
    pub grad_gates: Vec<f64>,
    /// `[B, H]`
    pub grad_h0: Vec<f64>,
    /// `[3H, H]`
    pub grad_w_hh: Vec<f64>,
    /// `[3H]`
    pub grad_b_hh: Vec<f64>,
}

/// Backpropagation through time; `grad_output` `[B, T, H]` (None: unused output),
/// `grad_h_n` `[B, H]`: gradient of the final state.
pub fn gru_cell_backward(
    dims: &GruDims,
    w_hh: &[f64],
    lengths: Option<&[usize]>,
    saved: &GruSaved,
    grad_output: Option<&[f64]>,
    grad_h_n: &[f64],
) -> GruGrads {
    let GruDims { batch, steps, hidden } = *dims;
    let state = |b: usize, t: usize, u: usize| (b * (steps + 1) + t) * hidden + u;
    let mut grads = GruGrads {
        grad_gates: vec![0.0; batch * steps * 4 * hidden],
        grad_h0: vec![0.0; batch * hidden],
        grad_w_hh: vec![0.0; 3 * hidden * hidden],
        grad_b_hh: vec![0.0; 3 * hidden],
    };
    for b in 0..batch {
        let len = lengths.map_or(steps, |lengths| lengths[b]);
        let mut dh: Vec<f64> = grad_h_n[b * hidden..(b + 1) * hidden].to_vec();
        for t in (0..len).rev() {
            let mut dh_prev = vec![0.0; hidden];
            for u in 0..hidden {
                let dh_total = dh[u] + grad_output.map_or(0.0, |dy| dy[(b * steps + t) * hidden + u]);
                let gate = (b * steps + t) * 4 * hidden + u;
                let (r, z, n, hn) = (
                    saved.gates[gate],
                    saved.gates[gate + hidden],
                    saved.gates[gate + 2 * hidden],
                    saved.gates[gate + 3 * hidden],
                );
                let h_prev = saved.h_states[state(b, t, u)];
                // h = (1 - z) n + z h_prev;  n = tanh(x_n + r hn);  r, z = sigmoid(..)
                let dn_pre = dh_total * (1.0 - z) * (1.0 - n * n);
                let dr_pre = dn_pre * hn * r * (1.0 - r);
                let dz_pre = dh_total * (h_prev - n) * z * (1.0 - z);
                let dhn = dn_pre * r;
                for (q, d) in [dr_pre, dz_pre, dn_pre, dhn].into_iter().enumerate() {
                    grads.grad_gates[gate + q * hidden] = d;
                }
                dh_prev[u] += dh_total * z;
                // (hr, hz, hn) = h_{t-1} W_hh^T + b_hh
                for (q, d) in [dr_pre, dz_pre, dhn].into_iter().enumerate() {
                    let row = (q * hidden + u) * hidden;
                    grads.grad_b_hh[q * hidden + u] += d;
                    for k in 0..hidden {
                        dh_prev[k] += d * w_hh[row + k];
                        grads.grad_w_hh[row + k] += d * saved.h_states[state(b, t, k)];
                    }
                }
            }
            dh = dh_prev;
        }
        grads.grad_h0[b * hidden..(b + 1) * hidden].copy_from_slice(&dh);
    }
    grads
}
