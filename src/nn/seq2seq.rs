//! The chapter's sequence-to-sequence models: `Encoder`, `Decoder`, `AttentionDecoder`
//! with `BahdanauAttention` (W1, W2, V), `LuongAttention` (dot, general), and `Seq2Seq`
//! with teacher forcing drawn per step and greedy decoding that feeds each chosen token
//! back on the GPU. Parameter names follow the chapter's classes (`encoder.embedding.weight`,
//! `decoder.lstm.weight_ih_l0`, `decoder.attention.W1.weight`, ...).

use rand::rngs::StdRng;
use rand::Rng;

use super::{CellKind, Embedding, Linear, Recurrent, RecurrentConfig};
use crate::graph::{Graph, ParamStore, Var};
use crate::kernels::attention::Score;
use crate::kernels::Lengths;
use crate::{Context, Error, Result, Tensor};

/// `BahdanauAttention(hidden)`: `score = V(tanh(W1 q + W2 values))`.
#[derive(Clone, Copy, Debug)]
pub struct BahdanauAttention {
    /// `{prefix}.W1`: Linear(H, H).
    pub w1: Linear,
    /// `{prefix}.W2`: Linear(H, H).
    pub w2: Linear,
    /// `{prefix}.V`: Linear(H, 1); its bias shifts every score equally and gets no gradient.
    pub v: Linear,
    hidden: usize,
}

impl BahdanauAttention {
    /// Registers W1, W2 and V.
    pub fn new(ctx: &Context, store: &mut ParamStore, rng: &mut StdRng, prefix: &str, hidden: usize) -> Result<Self> {
        Ok(BahdanauAttention {
            w1: Linear::new(ctx, store, rng, &format!("{prefix}.W1"), hidden, hidden, true)?,
            w2: Linear::new(ctx, store, rng, &format!("{prefix}.W2"), hidden, hidden, true)?,
            v: Linear::new(ctx, store, rng, &format!("{prefix}.V"), hidden, 1, true)?,
            hidden,
        })
    }
}

/// `LuongAttention` with the dot or general score (`q . k`, `q W_a . k`).
#[derive(Clone, Copy, Debug)]
pub struct LuongAttention {
    /// `{prefix}.W_a`: Linear(H, H, bias=False), general only.
    pub w_a: Option<Linear>,
}

impl LuongAttention {
    /// Dot (no parameters) or, with `general`, a bias-free `W_a`.
    pub fn new(
        ctx: &Context,
        store: &mut ParamStore,
        rng: &mut StdRng,
        prefix: &str,
        hidden: usize,
        general: bool,
    ) -> Result<Self> {
        let w_a = if general {
            Some(Linear::new(
                ctx,
                store,
                rng,
                &format!("{prefix}.W_a"),
                hidden,
                hidden,
                false,
            )?)
        } else {
            None
        };
        Ok(LuongAttention { w_a })
    }
}

/// Either attention of an [`AttentionDecoder`].
#[derive(Clone, Copy, Debug)]
pub enum Attention {
    /// Additive.
    Bahdanau(BahdanauAttention),
    /// Dot or general.
    Luong(LuongAttention),
}

/// What an attention needs from the encoder, computed once per source sequence.
#[derive(Clone, Copy, Debug)]
pub struct Memory {
    /// Encoder outputs `[B, S, H]`: the values.
    pub values: Var,
    /// The keys: `W2 values` (Bahdanau) or the values themselves (Luong).
    pub keys: Var,
    /// Bahdanau's `V.weight` as a vector `[H]`.
    pub v: Option<Var>,
}

impl Attention {
    /// Prepares the keys of a source sequence (Bahdanau's `W2 values` once, not per step).
    pub fn memory(&self, g: &mut Graph<'_>, values: Var) -> Result<Memory> {
        match self {
            Attention::Bahdanau(a) => {
                let keys = a.w2.forward(g, values)?;
                let v = g.param(a.v.weight);
                let v = g.reshape(v, &[a.hidden])?;
                Ok(Memory {
                    values,
                    keys,
                    v: Some(v),
                })
            }
            Attention::Luong(_) => Ok(Memory {
                values,
                keys: values,
                v: None,
            }),
        }
    }

    /// One step: the context `[B, H]` and the weights `[B, S]` for the query state `[B, H]`.
    pub fn forward(
        &self,
        g: &mut Graph<'_>,
        query: Var,
        memory: &Memory,
        lengths: Option<&Lengths>,
    ) -> Result<(Var, Var)> {
        match self {
            Attention::Bahdanau(a) => {
                let q = a.w1.forward(g, query)?;
                g.attention(Score::Additive, q, memory.keys, memory.v, memory.values, lengths)
            }
            Attention::Luong(a) => {
                let q = match a.w_a {
                    Some(w_a) => w_a.forward(g, query)?,
                    None => query,
                };
                g.attention(Score::Dot, q, memory.keys, None, memory.values, lengths)
            }
        }
    }
}

/// The chapter's `Encoder(input_dim, emb_dim, hidden_dim)`: embedding + LSTM.
#[derive(Clone, Debug)]
pub struct Encoder {
    /// `encoder.embedding`
    pub embedding: Embedding,
    /// `encoder.lstm`
    pub lstm: Recurrent,
}

impl Encoder {
    /// Registers `{prefix}.embedding` and `{prefix}.lstm`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ctx: &Context,
        store: &mut ParamStore,
        rng: &mut StdRng,
        prefix: &str,
        vocab: usize,
        embed: usize,
        hidden: usize,
        padding_idx: Option<u32>,
    ) -> Result<Self> {
        Ok(Encoder {
            embedding: Embedding::new(
                ctx,
                store,
                rng,
                &format!("{prefix}.embedding"),
                vocab,
                embed,
                padding_idx,
            )?,
            lstm: Recurrent::new(
                ctx,
                store,
                rng,
                &format!("{prefix}.lstm"),
                RecurrentConfig::new(CellKind::Lstm, embed, hidden),
            )?,
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
    /// Registers a decoder; `attention` builds its attention under `{prefix}.attention`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ctx: &Context,
        store: &mut ParamStore,
        rng: &mut StdRng,
        prefix: &str,
        vocab: usize,
        embed: usize,
        hidden: usize,
        padding_idx: Option<u32>,
        attention: Option<AttentionKind>,
    ) -> Result<Self> {
        let embedding = Embedding::new(
            ctx,
            store,
            rng,
            &format!("{prefix}.embedding"),
            vocab,
            embed,
            padding_idx,
        )?;
        let attention_prefix = format!("{prefix}.attention");
        let attention = match attention {
            None => None,
            Some(AttentionKind::Bahdanau) => Some(Attention::Bahdanau(BahdanauAttention::new(
                ctx,
                store,
                rng,
                &attention_prefix,
                hidden,
            )?)),
            Some(AttentionKind::LuongDot) => Some(Attention::Luong(LuongAttention::new(
                ctx,
                store,
                rng,
                &attention_prefix,
                hidden,
                false,
            )?)),
            Some(AttentionKind::LuongGeneral) => Some(Attention::Luong(LuongAttention::new(
                ctx,
                store,
                rng,
                &attention_prefix,
                hidden,
                true,
            )?)),
        };
        let input = if attention.is_some() { embed + hidden } else { embed };
        let lstm = Recurrent::new(
            ctx,
            store,
            rng,
            &format!("{prefix}.lstm"),
            RecurrentConfig::new(CellKind::Lstm, input, hidden),
        )?;
        let fc = Linear::new(ctx, store, rng, &format!("{prefix}.fc"), hidden, vocab, true)?;
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

/// Which attention a decoder uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionKind {
    /// The chapter's additive attention.
    Bahdanau,
    /// Luong's dot score.
    LuongDot,
    /// Luong's general score.
    LuongGeneral,
}

/// The chapter's `Seq2Seq` / `Seq2SeqWithAttention`.
#[derive(Clone, Debug)]
pub struct Seq2Seq {
    /// `encoder.*`
    pub encoder: Encoder,
    /// `decoder.*`
    pub decoder: Decoder,
}

impl Seq2Seq {
    /// Runs the encoder, then the decoder over `tgt_inputs` (one `[B, 1]` id tensor per
    /// step, `<sos>` first). At each step after the first, with probability
    /// `teacher_forcing` (drawn from `rng`, one draw per step) the reference token goes in,
    /// else the previous step's argmax, without leaving the GPU. Returns the logits of all
    /// steps as `[B * T, V]` (rows in (b, t) order, as `output.view(-1, V)`).
    pub fn forward(
        &self,
        g: &mut Graph<'_>,
        src: &Tensor,
        src_lengths: Option<&Lengths>,
        tgt_inputs: &[Tensor],
        teacher_forcing: f64,
        rng: &mut StdRng,
    ) -> Result<Var> {
        let first = tgt_inputs
            .first()
            .ok_or_else(|| Error::invalid("seq2seq: no target steps"))?;
        let batch = first.shape().first().copied().unwrap_or(0);
        let (values, h, c) = self.encoder.forward(g, src, src_lengths)?;
        let memory = match &self.decoder.attention {
            Some(attention) => Some(attention.memory(g, values)?),
            None => None,
        };
        let mut state = (h, c);
        let mut ids = first.clone();
        let mut all: Option<Var> = None;
        for (t, reference) in tgt_inputs.iter().enumerate() {
            if t > 0 && rng.random_bool(teacher_forcing.clamp(0.0, 1.0)) {
                ids = reference.clone();
            }
            let step = self.decoder.step(g, &ids, state, memory.as_ref(), src_lengths)?;
            state = step.state;
            if t + 1 < tgt_inputs.len() {
                ids = g.argmax(step.logits)?.reshape(&[batch, 1])?;
            }
            all = Some(match all {
                None => step.logits,
                Some(before) => g.concat(before, step.logits)?,
            });
        }
        let all = all.ok_or_else(|| Error::invalid("seq2seq: no target steps"))?;
        let vocab = g.value(all).shape()[1] / tgt_inputs.len();
        g.reshape(all, &[batch * tgt_inputs.len(), vocab])
    }

    /// [`Seq2Seq::forward`] with the logits in time-major order: `[T * B, V]`, rows in
    /// (t, b) order, so the labels must be laid out the same way (cross-entropy does not
    /// care about row order). With `teacher_forcing >= 1` every step's input is known in
    /// advance, so the per-step states are stacked and `decoder.fc` runs once over all
    /// `T * B` rows (one large matmul instead of T small ones, and no per-step argmax);
    /// otherwise each step's logits are computed for its argmax and stacked. Either way
    /// nothing grows step by step. Same math and the same random draws as `forward`.
    pub fn forward_time_major(
        &self,
        g: &mut Graph<'_>,
        src: &Tensor,
        src_lengths: Option<&Lengths>,
        tgt_inputs: &[Tensor],
        teacher_forcing: f64,
        rng: &mut StdRng,
    ) -> Result<Var> {
        let first = tgt_inputs
            .first()
            .ok_or_else(|| Error::invalid("seq2seq: no target steps"))?;
        let batch = first.shape().first().copied().unwrap_or(0);
        let (values, h, c) = self.encoder.forward(g, src, src_lengths)?;
        let memory = match &self.decoder.attention {
            Some(attention) => Some(attention.memory(g, values)?),
            None => None,
        };
        let mut state = (h, c);
        let mut ids = first.clone();
        let mut rows = Vec::with_capacity(tgt_inputs.len());
        let always_forced = teacher_forcing >= 1.0;
        for (t, reference) in tgt_inputs.iter().enumerate() {
            if t > 0 && rng.random_bool(teacher_forcing.clamp(0.0, 1.0)) {
                ids = reference.clone();
            }
            if always_forced {
                let (next, _) = self.decoder.step_state(g, &ids, state, memory.as_ref(), src_lengths)?;
                state = next;
                rows.push(state.0);
            } else {
                let step = self.decoder.step(g, &ids, state, memory.as_ref(), src_lengths)?;
                state = step.state;
                if t + 1 < tgt_inputs.len() {
                    ids = g.argmax(step.logits)?.reshape(&[batch, 1])?;
                }
                rows.push(step.logits);
            }
        }
        let stacked = g.stack(&rows)?;
        if always_forced {
            self.decoder.fc.forward(g, stacked)
        } else {
            Ok(stacked)
        }
    }

    /// Greedy decoding from `<sos>` ids `[B, 1]` for `max_len` steps: the chosen ids of each
    /// step (u32 `[B]`, on the GPU until read) and, with attention, each step's weights.
    pub fn greedy(
        &self,
        g: &mut Graph<'_>,
        src: &Tensor,
        src_lengths: Option<&Lengths>,
        sos: &Tensor,
        max_len: usize,
    ) -> Result<(Vec<Tensor>, Vec<Var>)> {
        let batch = sos.shape().first().copied().unwrap_or(0);
        let (values, h, c) = self.encoder.forward(g, src, src_lengths)?;
        let memory = match &self.decoder.attention {
            Some(attention) => Some(attention.memory(g, values)?),
            None => None,
        };
        let (mut state, mut ids) = ((h, c), sos.clone());
        let (mut chosen, mut weights) = (Vec::with_capacity(max_len), Vec::new());
        for _ in 0..max_len {
            let step = self.decoder.step(g, &ids, state, memory.as_ref(), src_lengths)?;
            state = step.state;
            let best = g.argmax(step.logits)?;
            ids = best.reshape(&[batch, 1])?;
            chosen.push(best);
            weights.extend(step.weights);
        }
        Ok((chosen, weights))
    }
}
