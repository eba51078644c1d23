//! Bahdanau (additive) and Luong (dot) attention for one decoder step.

use super::{Graph, Var};
use crate::kernels::attention::{attention_backward, attention_forward, AttentionBackward, AttentionForward, Score};
use crate::kernels::matmul::encode_column_sums;
use crate::kernels::Lengths;
use crate::{DType, Error, Result, Tensor};

impl<'s> Graph<'s> {
    /// One decoder step of attention over a source sequence (kernels::attention): the
    /// context `[B, Dv]` and the weights `[B, S]`. Additive (Bahdanau, the chapter's
    /// `V(tanh(W1 q + W2 values))`) takes `query = W1 q + b1` `[B, A]`,
    /// `keys = W2 values + b2` `[B, S, A]` (computed once per sequence) and `v` `[A]`
    /// (`V.weight` reshaped; `V.bias` shifts every score equally, so it gets no gradient);
    /// dot (Luong) takes `query` `[B, D]`, `keys` `[B, S, D]` and no v.
    pub fn attention(
        &mut self,
        score: Score,
        query: Var,
        keys: Var,
        v: Option<Var>,
        values: Var,
        lengths: Option<&Lengths>,
    ) -> Result<(Var, Var)> {
        let (tq, tk, tvals) = (
            self.value(query).clone(),
            self.value(keys).clone(),
            self.value(values).clone(),
        );
        let tv = v.map(|v| self.value(v).clone());
        let [batch, source, value_width] = tvals.shape()[..] else {
            return Err(Error::shape("attention: values", "[B, S, Dv]", tvals.shape()));
        };
        let weights = Tensor::empty(&self.ctx, &[batch, source], DType::F32)?;
        let context = Tensor::empty(&self.ctx, &[batch, value_width], DType::F32)?;
        let forward = AttentionForward {
            score,
            query: &tq,
            keys: &tk,
            v: tv.as_ref(),
            values: &tvals,
            lengths,
            weights: &weights,
            context: &context,
        };
        attention_forward(&self.ctx, self.encoder.get(), &forward)?;
        let mut from = vec![query, keys, values];
        from.extend(v);
        let (context_var, weights_var) = (self.computed(context, &from), self.computed(weights.clone(), &from));
        let lengths = lengths.cloned();
        self.record(move |g| {
            // forward: score[b, s] = vᵀ tanh(q[b] W1ᵀ + keys[b, s]) (additive; q[b]·keys[b, s] for dot),
            // w[b] = masked softmax(score[b]), context[b] = Σ_s w[b, s] values[b, s]; so now
            // dw[b, s] = dcontext[b]·values[b, s];  dvalues[b, s] += w[b, s] dcontext[b];
            // dscore = w ⊙ (dw - Σ_s w dw);  and through tanh into dq, dkeys and dv (the kernels).
            let (d_context, d_weights) = (g.grad(context_var), g.grad(weights_var));
            if d_context.is_none() && d_weights.is_none() {
                return Ok(());
            }
            let ctx = g.ctx.clone();
            let width = tq.shape()[1];
            let d_context = match d_context {
                Some(d) => d,
                None => g.zeros(&[batch, value_width])?,
            };
            // The keys' and values' gradients go straight into their targets when both
            // are written the same way (a decoder's steps all add into the encoder's
            // memory), else into scratch, each then delivered with its own flag.
            let direct = match (g.wants(keys).accumulates(), g.wants(values).accumulates()) {
                (Some(k), Some(v)) if k == v && keys != values => Some(k),
                _ => None,
            };
            let (grad_keys, grad_values, accumulate) = match direct {
                Some(_) => {
                    let (Some((grad_keys, k)), Some((grad_values, v))) =
                        (g.accumulate_into(keys)?, g.accumulate_into(values)?)
                    else {
                        return Err(Error::invalid("attention: a gradient target went missing"));
                    };
                    debug_assert_eq!(k, v);
                    (grad_keys, grad_values, k)
                }
                None => (
                    Tensor::empty(&ctx, tk.shape(), DType::F32)?,
                    Tensor::empty(&ctx, tvals.shape(), DType::F32)?,
                    false,
                ),
            };
            let grad_score = Tensor::empty(&ctx, &[batch, source], DType::F32)?;
            let grad_query = Tensor::empty(&ctx, tq.shape(), DType::F32)?;
            let grad_v_rows = match score {
                Score::Additive => {
                    let rows = Tensor::empty(&ctx, &[batch, width], DType::F32)?;
                    if accumulate {
                        g.encoder
                            .command_encoder()
                            .clear_buffer(rows.buffer(), 0, Some(rows.size_in_bytes()));
                    }
                    Some(rows)
                }
                Score::Dot => None,
            };
            let backward = AttentionBackward {
                score,
                query: &tq,
                keys: &tk,
                v: tv.as_ref(),
                values: &tvals,
                lengths: lengths.as_ref(),
                weights: &weights,
                grad_context: &d_context,
                grad_weights: d_weights.as_ref(),
                grad_score: &grad_score,
                grad_values: &grad_values,
                grad_query: &grad_query,
                grad_keys: &grad_keys,
                grad_v_rows: grad_v_rows.as_ref(),
                accumulate,
            };
            attention_backward(g.ctx, g.encoder, &backward)?;
            g.deliver(Some(query), &grad_query)?;
            if direct.is_none() {
                g.deliver(Some(keys), &grad_keys)?;
                g.deliver(Some(values), &grad_values)?;
            }
            if let (Some(rows), Some(v)) = (grad_v_rows, v) {
                // dv = the rows' sum, added straight into v's gradient.
                if let Some((dv, accumulate)) = g.accumulate_into(v)? {
                    let beta = if accumulate { 1.0 } else { 0.0 };
                    encode_column_sums(g.ctx, g.encoder, &rows, (1, batch, width), &dv, beta)?;
                }
            }
            Ok(())
        });
        Ok((context_var, weights_var))
    }
}
