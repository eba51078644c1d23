//! The chapter's `Encoder` (embedding, LSTM) and `Decoder` / `AttentionDecoder`
//! (embedding, attention, LSTM over `[embedding; context]`, fc), one step at a time or, under
//! full teacher forcing, over all steps at once.

use crate::graph::{Graph, Var};
use crate::kernels::Lengths;
use crate::nn::{
    embedding, linear, recurrent, CellKind, Embedding, EmbeddingConfig, Linear, Recurrent, RecurrentConfig, VarBuilder,
};
use crate::{DType, Error, Result, Tensor};

use super::{Attention, AttentionKind, BahdanauAttention, DecoderConfig, EncoderConfig, LuongAttention, Memory};

/// The chapter's `Encoder(input_dim, emb_dim, hidden_dim)`: embedding + LSTM.
#[derive(Clone, Debug)]
pub struct Encoder {
    /// `encoder.embedding`
    pub embedding: Embedding,
    /// `encoder.lstm`
    pub lstm: Recurrent,
}

impl Encoder {
    /// Registers `embedding` and `lstm` under the builder's prefix.
    pub fn build(config: EncoderConfig, mut vb: VarBuilder<'_>) -> Result<Self> {
        let EncoderConfig {
            vocab,
            embed,
            hidden,
            padding_idx,
        } = config;
        Ok(Encoder {
            embedding: embedding(vocab, embed, EmbeddingConfig { padding_idx }, vb.pp("embedding"))?,
            lstm: recurrent(RecurrentConfig::new(CellKind::Lstm, embed, hidden), vb.pp("lstm"))?,
        })
    }

    /// Source ids `[B, S]` to the outputs `[B, S, H]` and the final (h, c).
    pub fn forward(&self, g: &mut Graph<'_>, src: &Tensor, lengths: Option<&Lengths>) -> Result<(Var, Var, Var)> {
        let x = self.embedding.forward(g, src)?;
        let states = self.lstm.forward(g, x, lengths)?;
        Ok((states.output, states.h_n[0], states.c_n[0]))
    }
}

/// A decoder: the chapter's `Decoder` (embedding, LSTM, fc) or `AttentionDecoder`
/// (embedding, attention, LSTM over `[embedding; context]`, fc).
#[derive(Clone, Debug)]
pub struct Decoder {
    /// `decoder.embedding`
    pub embedding: Embedding,
    /// `decoder.attention`, for an attention decoder.
    pub attention: Option<Attention>,
    /// `decoder.lstm`
    pub lstm: Recurrent,
    /// `decoder.fc`
    pub fc: Linear,
    embed: usize,
}

impl Decoder {
    /// Registers `embedding`, `attention` (if any), `lstm` and `fc` under the builder's prefix.
    pub fn build(config: DecoderConfig, mut vb: VarBuilder<'_>) -> Result<Self> {
        let DecoderConfig {
            vocab,
            embed,
            hidden,
            padding_idx,
            attention,
        } = config;
        let embedding = embedding(vocab, embed, EmbeddingConfig { padding_idx }, vb.pp("embedding"))?;
        let attention = match attention {
            None => None,
            Some(AttentionKind::Bahdanau) => Some(Attention::Bahdanau(BahdanauAttention::build(
                hidden,
                vb.pp("attention"),
            )?)),
            Some(AttentionKind::Luong(score)) => Some(Attention::Luong(LuongAttention::build(
                hidden,
                score,
                vb.pp("attention"),
            )?)),
        };
        let input = if attention.is_some() { embed + hidden } else { embed };
        let lstm = recurrent(RecurrentConfig::new(CellKind::Lstm, input, hidden), vb.pp("lstm"))?;
        let fc = linear(hidden, vocab, vb.pp("fc"))?;
        Ok(Decoder {
            embedding,
            attention,
            lstm,
            fc,
            embed,
        })
    }

    /// One step from token ids `[B, 1]` and the state (h, c): the logits `[B, V]`, the new
    /// state and, with attention, the weights `[B, S]`.
    pub fn step(
        &self,
        g: &mut Graph<'_>,
        ids: &Tensor,
        state: (Var, Var),
        memory: Option<&Memory>,
        src_lengths: Option<&Lengths>,
    ) -> Result<DecoderStep> {
        let (state, weights) = self.step_state(g, ids, state, memory, src_lengths)?;
        Ok(DecoderStep {
            logits: self.fc.forward(g, state.0)?,
            state,
            weights,
        })
    }

    /// [`Decoder::step`] without the output projection: the new state (h, c) and the
    /// attention weights. A caller that knows every step's input in advance (teacher
    /// forcing) applies `fc` once to all steps' h instead.
    pub fn step_state(
        &self,
        g: &mut Graph<'_>,
        ids: &Tensor,
        state: (Var, Var),
        memory: Option<&Memory>,
        src_lengths: Option<&Lengths>,
    ) -> Result<((Var, Var), Option<Var>)> {
        let batch = ids.shape().first().copied().unwrap_or(0);
        let emb = self.embedding.forward(g, ids)?;
        let emb = g.reshape(emb, &[batch, self.embed])?;
        let (input, weights) = match (&self.attention, memory) {
            (Some(attention), Some(memory)) => {
                let (context, weights) = attention.forward(g, state.0, memory, src_lengths)?;
                (g.concat(emb, context)?, Some(weights))
            }
            (None, _) => (emb, None),
            (Some(_), None) => return Err(Error::invalid("an attention decoder needs the encoder's memory")),
        };
        let width = g.value(input).shape()[1];
        let input = g.reshape(input, &[batch, 1, width])?;
        let states = self.lstm.forward_from(g, input, None, &[state.0], &[state.1])?;
        Ok(((states.h_n[0], states.c_n[0]), weights))
    }
}

impl Decoder {
    /// [`Decoder::step_state`] over every step of `inputs` (one `[B, 1]` id tensor per
    /// step) when each step's input is known in advance (full teacher forcing): each
    /// step's new h `[B, H]`. The same math as stepping, arranged so that the work that
    /// does not depend on the previous step is done once for all steps: one embedding
    /// lookup (forward and backward) over `[T, B]` ids and one product of the embeddings
    /// with their half of `W_ih` (plus both biases) over `T * B` rows. Each step then
    /// multiplies only its attention context by the other half and runs the cell; the
    /// gradients of that half and of `W_hh` are each one product over all steps
    /// ([`Graph::batch_weight_grad`]).
    pub fn forced_states(
        &self,
        g: &mut Graph<'_>,
        inputs: &[Tensor],
        state: (Var, Var),
        memory: Option<&Memory>,
        src_lengths: Option<&Lengths>,
    ) -> Result<Vec<Var>> {
        let steps = inputs.len();
        let first = inputs.first().ok_or_else(|| Error::invalid("decoder: no steps"))?;
        let batch = first.shape().first().copied().unwrap_or(0);
        let ids = Tensor::empty(g.context(), &[steps, batch], DType::U32)?;
        let bytes = (batch * 4) as u64;
        for (t, step_ids) in inputs.iter().enumerate() {
            step_ids.check_dtype("decoder: step ids", DType::U32)?;
            step_ids.check_shape("decoder: step ids", &[batch, 1])?;
            g.encoder().command_encoder().copy_buffer_to_buffer(
                step_ids.buffer(),
                0,
                ids.buffer(),
                t as u64 * bytes,
                bytes,
            );
        }
        let [w_ih, w_hh, b_ih, b_hh] = self
            .lstm
            .layer_params(0, 0)
            .ok_or_else(|| Error::invalid("decoder: the LSTM has no layer"))?;
        let [w_ih, w_hh, b_ih, b_hh] = [g.param(w_ih)?, g.param(w_hh)?, g.param(b_ih)?, g.param(b_hh)?];
        let hidden = self.lstm.config().hidden_size;
        let emb = self.embedding.forward(g, &ids)?;
        let emb = g.reshape(emb, &[steps * batch, self.embed])?;
        let (w_emb, w_context) = match (&self.attention, memory) {
            (Some(_), Some(_)) => {
                let (w_emb, w_context) = g.split(w_ih, self.embed)?;
                (w_emb, Some(w_context))
            }
            (None, _) => (w_ih, None),
            (Some(_), None) => return Err(Error::invalid("an attention decoder needs the encoder's memory")),
        };
        let bias = g.add(b_ih, b_hh)?;
        let emb_proj = g.linear(emb, w_emb, Some(bias))?;
        let emb_proj = g.unstack(emb_proj, steps)?;
        // The weights every step uses get their gradients in one product over all steps.
        let w_context = w_context.map(|w| g.batch_weight_grad(w)).transpose()?;
        let w_hh = g.batch_weight_grad(w_hh)?;
        let mut state = state;
        let mut hs = Vec::with_capacity(steps);
        for emb_proj_t in emb_proj {
            let xproj = match (&self.attention, memory, w_context) {
                (Some(attention), Some(memory), Some(w_context)) => {
                    let (context, _) = attention.forward(g, state.0, memory, src_lengths)?;
                    g.linear_add(context, w_context, emb_proj_t)?
                }
                _ => emb_proj_t,
            };
            let xproj = g.reshape(xproj, &[batch, 1, 4 * hidden])?;
            let out = g.lstm_projected(xproj, w_hh, None, Some(state))?;
            let c = out
                .c_n
                .ok_or_else(|| Error::invalid("decoder: the LSTM returned no cell state"))?;
            state = (out.h_n, c);
            hs.push(state.0);
        }
        Ok(hs)
    }
}

/// One decoder step's results.
#[derive(Clone, Copy, Debug)]
pub struct DecoderStep {
    /// `[B, V]`
    pub logits: Var,
    /// The new (h, c).
    pub state: (Var, Var),
    /// Attention weights `[B, S]` (attention decoders).
    pub weights: Option<Var>,
}
