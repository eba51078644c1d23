//! LSTM, GRU and RNN layers over whole sequences: the input projection as one matmul, one
//! fused step kernel per time step, and their backward the same way round; the states
//! live in `[B, T + 1, H]` slot tensors, slot 0 the initial state.

use super::{copy_of, Backward, Graph, RecurrentOut, RecurrentWeights, Var};
use crate::kernels::elementwise::split_forward;
use crate::kernels::gru_cell::{gru_backward, gru_forward, GruBackward, GruForward};
use crate::kernels::lstm_cell::{lstm_backward, lstm_cell_backward, lstm_forward, LstmBackward, LstmForward};
use crate::kernels::matmul::{encode_strided_column_sums, matmul_forward, Matmul, MatrixView, Strides};
use crate::kernels::recurrent::{last_state_slot, recurrent_weight_grad, state_slots, StateSlots};
use crate::kernels::rnn_cell::{rnn_backward, rnn_forward, Nonlinearity, RnnBackward, RnnForward};
use crate::kernels::Lengths;
use crate::{DType, Error, Result, Tensor};

impl<'s> Graph<'s> {
    /// One LSTM layer, batch-first, zero initial state, optional per-row lengths (padded
    /// steps carry the state and output 0, as `pack_padded_sequence`): the output
    /// `[B, T, H]` and the final states h_n, c_n `[B, H]` (each row's state after its last
    /// real step), as one layer of `nn.LSTM`.
    pub fn lstm(
        &mut self,
        x: Var,
        weights: RecurrentWeights,
        lengths: Option<&Lengths>,
        initial: Option<(Var, Var)>,
    ) -> Result<RecurrentOut> {
        self.recurrent_dims(x, weights.w_hh, 4)?;
        // The input projection for every step at once, biases folded into its epilogue.
        let bias = self.add(weights.b_ih, weights.b_hh)?;
        let xproj = self.linear(x, weights.w_ih, Some(bias))?;
        self.lstm_projected(xproj, weights.w_hh, lengths, initial)
    }

    /// [`Graph::lstm`] from its input projection `xproj = x W_ih^T + b_ih + b_hh`
    /// `[B, T, 4H]`, computed by the caller: for a decoder whose inputs are partly known
    /// in advance (its embeddings under teacher forcing), that part of the projection
    /// can be one product over every step. `w_hh` `[4H, H]`; the rest as `lstm`.
    pub fn lstm_projected(
        &mut self,
        xproj: Var,
        w_hh: Var,
        lengths: Option<&Lengths>,
        initial: Option<(Var, Var)>,
    ) -> Result<RecurrentOut> {
        let (batch, steps, hidden) = self.recurrent_dims(xproj, w_hh, 4)?;
        let xproj_shape = self.value(xproj).shape();
        if xproj_shape[2] != 4 * hidden {
            return Err(Error::shape(
                "lstm: the input projection",
                format!("[B, T, {}]", 4 * hidden),
                xproj_shape,
            ));
        }
        let (txproj, tw_hh) = (self.value(xproj).clone(), self.value(w_hh).clone());
        let (h0, c0) = (initial.map(|(h, _)| h), initial.map(|(_, c)| c));
        let th0 = h0.map(|h| self.value(h).clone());
        let h_states = self.states_with(h0, batch, steps, hidden)?;
        let c_states = self.states_with(c0, batch, steps, hidden)?;
        let gates = Tensor::empty(&self.ctx, &[batch, steps, 4 * hidden], DType::F32)?;
        let output = Tensor::empty(&self.ctx, &[batch, steps, hidden], DType::F32)?;
        let forward = LstmForward {
            xproj: &txproj,
            w_hh: &tw_hh,
            lengths,
            h_states: &h_states,
            c_states: &c_states,
            gates: &gates,
            output: &output,
        };
        lstm_forward(&self.ctx, self.encoder.get(), &forward)?;
        let mut from = vec![xproj, w_hh];
        from.extend(h0.into_iter().chain(c0));
        let h_n = self.final_state(&h_states)?;
        let c_n = self.final_state(&c_states)?;
        let (out, h_n, c_n) = (
            self.computed(output, &from),
            self.computed(h_n, &from),
            self.computed(c_n, &from),
        );
        let lengths = lengths.cloned();
        let ctx = self.ctx.clone();
        self.record(move |g| {
            // forward, each step: gates = xproj_t + h_{t-1} W_hhᵀ; i, f, o = σ, g = tanh of their
            // blocks; c_t = f c_{t-1} + i g;  h_t = o tanh(c_t). So now, backwards in t: dgates_t
            // from dh_t and dc_t;  dh_{t-1} = dgates_t W_hh;  dc_{t-1} = dc_t f; and after the loop
            // dW_hh = Σ_t dgates_tᵀ h_{t-1}, dxproj = dgates (the input projection's backward).
            let (d_out, d_h, d_c) = (g.grad(out), g.grad(h_n), g.grad(c_n));
            if d_out.is_none() && d_h.is_none() && d_c.is_none() {
                return Ok(());
            }
            // (dh_n, dc_n): each the final state's gradient, or zeros, put in place by
            // buffer copies and clears (no kernel, no upload).
            let grad_state = Tensor::empty(&ctx, &[2, batch, hidden], DType::F32)?;
            let half = grad_state.size_in_bytes() / 2;
            for (i, d) in [&d_h, &d_c].into_iter().enumerate() {
                let offset = i as u64 * half;
                match d {
                    Some(d) => g.encoder.command_encoder().copy_buffer_to_buffer(
                        d.buffer(),
                        0,
                        grad_state.buffer(),
                        offset,
                        half,
                    ),
                    None => g
                        .encoder
                        .command_encoder()
                        .clear_buffer(grad_state.buffer(), offset, Some(half)),
                }
            }
            let Some((grad_gates, false)) = g.accumulate_into(xproj)? else {
                return Err(Error::invalid(
                    "lstm: the input projection's gradient was already written",
                ));
            };
            let backward = LstmBackward {
                w_hh: &tw_hh,
                lengths: lengths.as_ref(),
                grad_output: d_out.as_ref(),
                gates: &gates,
                c_states: &c_states,
                grad_gates: &grad_gates,
                grad_state: &grad_state,
            };
            if steps == 1 && h0.is_some() && c0.is_some() {
                // One step from a given state (a decoder run step by step): the cell's
                // pointwise backward, then dh0 = dgates W_hh as a tiled matmul, which runs
                // faster than the cell kernel's own product; dc0 is in grad_state.
                lstm_cell_backward(g.ctx, g.encoder, &backward, 0)?;
                let dh0 = Tensor::empty(&ctx, &[batch, hidden], DType::F32)?;
                let dgates = grad_gates.reshape(&[batch, 4 * hidden])?;
                matmul_forward(g.ctx, g.encoder, &Matmul::default(), &dgates, &tw_hh, None, &dh0)?;
                let dc0 = Tensor::empty(&ctx, &[batch, hidden], DType::F32)?;
                let bytes = dc0.size_in_bytes();
                g.encoder
                    .command_encoder()
                    .copy_buffer_to_buffer(grad_state.buffer(), bytes, dc0.buffer(), 0, bytes);
                g.deliver(h0, &dh0)?;
                g.deliver(c0, &dc0)?;
            } else if h0.is_some() || c0.is_some() {
                lstm_backward(g.ctx, g.encoder, &backward)?;
                // grad_state now holds (dh0, dc0).
                let (dh0, dc0) = (
                    Tensor::empty(&ctx, &[1, batch * hidden], DType::F32)?,
                    Tensor::empty(&ctx, &[1, batch * hidden], DType::F32)?,
                );
                let halves = grad_state.reshape(&[1, 2 * batch * hidden])?;
                split_forward(g.ctx, g.encoder, &halves, &dh0, &dc0)?;
                g.deliver(h0, &dh0.reshape(&[batch, hidden])?)?;
                g.deliver(c0, &dc0.reshape(&[batch, hidden])?)?;
            } else {
                // No initial state takes a gradient: the steps only, without the final
                // dispatch that would form dh0.
                for t in (0..steps).rev() {
                    lstm_cell_backward(g.ctx, g.encoder, &backward, t)?;
                }
            }
            match (&th0, g.batched.contains_key(&w_hh.0)) {
                // One step from h0: dW_hh = dgates^T h0, kept for the batched product.
                (Some(h0), true) if steps == 1 => {
                    if g.wants(w_hh).any() {
                        let use_ = (h0.clone(), grad_gates.reshape(&[batch, 4 * hidden])?);
                        g.batched.entry(w_hh.0).or_default().push(use_);
                    }
                    Ok(())
                }
                _ => g.recurrent_weight_grad(w_hh, &grad_gates, 4, &h_states, &[(0, 0, 4)]),
            }
        });
        Ok(RecurrentOut {
            output: out,
            h_n,
            c_n: Some(c_n),
        })
    }

    /// One GRU layer in PyTorch's form, batch-first, zero initial state, optional lengths:
    /// the output `[B, T, H]` and h_n `[B, H]`, as one layer of `nn.GRU`.
    pub fn gru(
        &mut self,
        x: Var,
        weights: RecurrentWeights,
        lengths: Option<&Lengths>,
        h0: Option<Var>,
    ) -> Result<RecurrentOut> {
        let (batch, steps, hidden) = self.recurrent_dims(x, weights.w_hh, 3)?;
        let xproj = self.linear(x, weights.w_ih, Some(weights.b_ih))?;
        let (txproj, tw_hh, tb_hh) = (
            self.value(xproj).clone(),
            self.value(weights.w_hh).clone(),
            self.value(weights.b_hh).clone(),
        );
        let h_states = self.states_with(h0, batch, steps, hidden)?;
        let gates = Tensor::empty(&self.ctx, &[batch, steps, 4 * hidden], DType::F32)?;
        let output = Tensor::empty(&self.ctx, &[batch, steps, hidden], DType::F32)?;
        let forward = GruForward {
            xproj: &txproj,
            w_hh: &tw_hh,
            b_hh: &tb_hh,
            lengths,
            h_states: &h_states,
            gates: &gates,
            output: &output,
        };
        gru_forward(&self.ctx, self.encoder.get(), &forward)?;
        let mut from = vec![xproj, weights.w_hh, weights.b_hh];
        from.extend(h0);
        let h_n = self.final_state(&h_states)?;
        let (out, h_n) = (self.computed(output, &from), self.computed(h_n, &from));
        let (w_hh, b_hh, lengths) = (weights.w_hh, weights.b_hh, lengths.cloned());
        let ctx = self.ctx.clone();
        self.record(move |g| {
            // forward, each step: r, z = σ(xproj_t + h_{t-1} W_hhᵀ) in their blocks;
            // n = tanh(xn_t + r ⊙ (h_{t-1} W_hnᵀ + b_hn));  h_t = (1 - z) n + z h_{t-1}. So now,
            // backwards in t: dgates_t from dh_t;  dh_{t-1} = z dh_t + dgates_t W_hh (r scaling n's
            // block); after the loop dW_hh = Σ_t dgates_tᵀ h_{t-1}, dxproj = dgates.
            let (d_out, d_h) = (g.grad(out), g.grad(h_n));
            if d_out.is_none() && d_h.is_none() {
                return Ok(());
            }
            let grad_state = match &d_h {
                Some(d_h) => d_h.clone(),
                None => g.zeros(&[batch, hidden])?,
            };
            // The backward turns grad_state into dh0; keep the caller's d_h intact.
            let grad_state = copy_of(g, &grad_state)?;
            let grad_gates = Tensor::empty(&ctx, &[batch, steps, 4 * hidden], DType::F32)?;
            let backward = GruBackward {
                w_hh: &tw_hh,
                lengths: lengths.as_ref(),
                grad_output: d_out.as_ref(),
                gates: &gates,
                h_states: &h_states,
                grad_gates: &grad_gates,
                grad_state: &grad_state,
            };
            gru_backward(g.ctx, g.encoder, &backward)?;
            g.deliver(h0, &grad_state)?;
            // grad_gates = (dr, dz, dn, dhn): d xproj is its first 3H columns.
            let rows = batch * steps;
            let Some((dxproj, false)) = g.accumulate_into(xproj)? else {
                return Err(Error::invalid(
                    "gru: the input projection's gradient was already written",
                ));
            };
            let dhn = Tensor::empty(&ctx, &[rows, hidden], DType::F32)?;
            let flat = grad_gates.reshape(&[rows, 4 * hidden])?;
            split_forward(g.ctx, g.encoder, &flat, &dxproj.reshape(&[rows, 3 * hidden])?, &dhn)?;
            // The gradient of h W_hh^T + b_hh is (dr, dz, dhn): columns 0..2H and 3H..4H.
            let pieces = [(0, 0, 2), (3, 2, 1)];
            g.recurrent_weight_grad(w_hh, &grad_gates, 4, &h_states, &pieces)?;
            if let Some((grad, accumulate)) = g.accumulate_into(b_hh)? {
                // Column sums over every (row, step) of those columns: no ones uploaded.
                for (column, row, gates_count) in pieces {
                    let columns = MatrixView {
                        tensor: &grad_gates,
                        strides: Strides {
                            offset: column * hidden,
                            batch: 0,
                            row: 4 * hidden,
                            col: 1,
                        },
                    };
                    let beta = if accumulate { 1.0 } else { 0.0 };
                    let dims = (1, rows, gates_count * hidden);
                    encode_strided_column_sums(g.ctx, g.encoder, columns, dims, (&grad, row * hidden), beta)?;
                }
            }
            Ok(())
        });
        Ok(RecurrentOut {
            output: out,
            h_n,
            c_n: None,
        })
    }

    /// One Elman RNN layer (`nn.RNN`, tanh or relu), batch-first, zero initial state,
    /// optional lengths: the output `[B, T, H]` and h_n `[B, H]`.
    pub fn rnn(
        &mut self,
        x: Var,
        weights: RecurrentWeights,
        nonlinearity: Nonlinearity,
        lengths: Option<&Lengths>,
        h0: Option<Var>,
    ) -> Result<RecurrentOut> {
        let (batch, steps, hidden) = self.recurrent_dims(x, weights.w_hh, 1)?;
        let bias = self.add(weights.b_ih, weights.b_hh)?;
        let xproj = self.linear(x, weights.w_ih, Some(bias))?;
        let (txproj, tw_hh) = (self.value(xproj).clone(), self.value(weights.w_hh).clone());
        let h_states = self.states_with(h0, batch, steps, hidden)?;
        let output = Tensor::empty(&self.ctx, &[batch, steps, hidden], DType::F32)?;
        let forward = RnnForward {
            xproj: &txproj,
            w_hh: &tw_hh,
            lengths,
            h_states: &h_states,
            output: &output,
            nonlinearity,
        };
        rnn_forward(&self.ctx, self.encoder.get(), &forward)?;
        let mut from = vec![xproj, weights.w_hh];
        from.extend(h0);
        let h_n = self.final_state(&h_states)?;
        let (out, h_n) = (self.computed(output, &from), self.computed(h_n, &from));
        let (w_hh, lengths) = (weights.w_hh, lengths.cloned());
        self.record(move |g| {
            // forward, each step: h_t = act(xproj_t + h_{t-1} W_hhᵀ)  ⇒  backwards in t:
            // dpre_t = dh_t ⊙ act'(pre_t);  dh_{t-1} += dpre_t W_hh; after the loop
            // dW_hh = Σ_t dpre_tᵀ h_{t-1}, dxproj = dpre.
            let (d_out, d_h) = (g.grad(out), g.grad(h_n));
            if d_out.is_none() && d_h.is_none() {
                return Ok(());
            }
            let grad_state = match &d_h {
                Some(d_h) => copy_of(g, d_h)?,
                None => g.zeros(&[batch, hidden])?,
            };
            let Some((grad_gates, false)) = g.accumulate_into(xproj)? else {
                return Err(Error::invalid(
                    "rnn: the input projection's gradient was already written",
                ));
            };
            let backward = RnnBackward {
                w_hh: &tw_hh,
                lengths: lengths.as_ref(),
                grad_output: d_out.as_ref(),
                h_states: &h_states,
                grad_gates: &grad_gates,
                grad_state: &grad_state,
                nonlinearity,
            };
            rnn_backward(g.ctx, g.encoder, &backward)?;
            g.deliver(h0, &grad_state)?;
            g.recurrent_weight_grad(w_hh, &grad_gates, 1, &h_states, &[(0, 0, 1)])
        });
        Ok(RecurrentOut {
            output: out,
            h_n,
            c_n: None,
        })
    }

    /// A `[B, T+1, H]` state-slot tensor for a layer's states (see
    /// [`crate::kernels::recurrent::state_slots`]), slot 0 the initial state `initial` `[B, H]`.
    fn states_with(&mut self, initial: Option<Var>, batch: usize, steps: usize, hidden: usize) -> Result<Tensor> {
        let initial = initial.map(|h0| self.value(h0).clone());
        state_slots(&self.ctx, self.encoder.get(), initial.as_ref(), batch, steps, hidden)
    }

    /// (B, T, H) of a recurrent layer over `x` `[B, T, I]` with `w_hh` `[gates H, H]`.
    fn recurrent_dims(&self, x: Var, w_hh: Var, gates: usize) -> Result<(usize, usize, usize)> {
        let (x_shape, w_shape) = (self.value(x).shape(), self.value(w_hh).shape());
        let [batch, steps, _] = x_shape[..] else {
            return Err(Error::shape("recurrent layer: x", "[B, T, I]", x_shape));
        };
        match w_shape[..] {
            [rows, hidden] if rows == gates * hidden && hidden > 0 => Ok((batch, steps, hidden)),
            _ => Err(Error::shape("recurrent layer: w_hh", format!("[{gates}H, H]"), w_shape)),
        }
    }

    /// Slot T of a `[B, T+1, H]` state-slot tensor: each row's state after its last step.
    fn final_state(&mut self, states: &Tensor) -> Result<Tensor> {
        last_state_slot(&self.ctx, self.encoder.get(), states)
    }
}

impl Backward<'_> {
    /// `dW_hh (+)= Σ_b dgates[b]ᵀ h_states[b, 0..T]` into `w_hh`'s gradient, if it takes
    /// one (see [`crate::kernels::recurrent::recurrent_weight_grad`] for `pieces`).
    fn recurrent_weight_grad(
        &mut self,
        w_hh: Var,
        grad_gates: &Tensor,
        width: usize,
        h_states: &Tensor,
        pieces: &[(usize, usize, usize)],
    ) -> Result<()> {
        let Some((grad, accumulate)) = self.accumulate_into(w_hh)? else {
            return Ok(());
        };
        let slots = StateSlots {
            grad_gates,
            width,
            h_states,
        };
        recurrent_weight_grad(self.ctx, self.encoder, &slots, pieces, &grad, accumulate)
    }
}
