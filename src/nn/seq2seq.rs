//! The chapter's sequence-to-sequence models: `Encoder`, `Decoder`, `AttentionDecoder`
//! with `BahdanauAttention` (W1, W2, V), `LuongAttention` (dot, general, concat), and `Seq2Seq`
//! with teacher forcing drawn per step and greedy decoding that feeds each chosen token
//! back on the GPU. Parameter names follow the chapter's classes (`encoder.embedding.weight`,
//! `decoder.lstm.weight_ih_l0`, `decoder.attention.W1.weight`, ...).

use rand::rngs::StdRng;
use rand::Rng;

use super::{
    embedding, linear, linear_no_bias, recurrent, CellKind, Embedding, EmbeddingConfig, Linear, Recurrent,
    RecurrentConfig, VarBuilder,
};
use crate::graph::{Graph, ParamId, ParamStore, Var};
use crate::kernels::attention::Score;
// Beam search reads its result back blocking, so it is native-only (see `beam_search`).
#[cfg(not(target_arch = "wasm32"))]
use crate::kernels::beam::{backtrack, beam_expand, beam_select, BeamSelection, BeamStep, Hypothesis};
#[cfg(not(target_arch = "wasm32"))]
use crate::kernels::cross_entropy::top_k;
use crate::kernels::Lengths;
use crate::{Context, DType, Error, Result, Tensor};

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
        Self::build(hidden, VarBuilder::with_prefix(ctx, store, rng, prefix))
    }

    /// Registers `W1`, `W2` and `V` under the builder's prefix.
    pub fn build(hidden: usize, mut vb: VarBuilder<'_>) -> Result<Self> {
        Ok(BahdanauAttention {
            w1: linear(hidden, hidden, vb.pp("W1"))?,
            w2: linear(hidden, hidden, vb.pp("W2"))?,
            v: linear(hidden, 1, vb.pp("V"))?,
            hidden,
        })
    }
}

/// Luong's three scores of a query `q` (the decoder state) against a key `k` (an
/// encoder output).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LuongScore {
    /// `q . k`, no parameters.
    Dot,
    /// `(W_a q) . k`, a bias-free `W_a` `[H, H]`.
    General,
    /// `v . tanh(W_a [q; k] + b)`, `W_a` `[H, 2H]` with bias and `v` `[H]`: the layout of
    /// PyTorch's chatbot tutorial's `Attn('concat')` (`attn` = Linear(2H, H), `v` a
    /// parameter). Computed as an additive score with `W_a` split into its query and key
    /// halves, so the key half runs once per source, not once per step.
    Concat,
}

/// `LuongAttention` with the dot, general or concat score.
#[derive(Clone, Copy, Debug)]
pub struct LuongAttention {
    /// Which score.
    pub score: LuongScore,
    /// `{prefix}.W_a`: Linear(H, H, bias=False) for general, Linear(2H, H) for concat.
    pub w_a: Option<Linear>,
    /// `{prefix}.v` `[H]`, concat only.
    pub v: Option<ParamId>,
    hidden: usize,
}

impl LuongAttention {
    /// Registers the score's parameters under `prefix` (none for dot).
    pub fn new(
        ctx: &Context,
        store: &mut ParamStore,
        rng: &mut StdRng,
        prefix: &str,
        hidden: usize,
        score: LuongScore,
    ) -> Result<Self> {
        Self::build(hidden, score, VarBuilder::with_prefix(ctx, store, rng, prefix))
    }

    /// Registers `W_a` (and `v` for concat) under the builder's prefix.
    pub fn build(hidden: usize, score: LuongScore, mut vb: VarBuilder<'_>) -> Result<Self> {
        let (w_a, v) = match score {
            LuongScore::Dot => (None, None),
            LuongScore::General => (Some(linear_no_bias(hidden, hidden, vb.pp("W_a"))?), None),
            LuongScore::Concat => {
                let w_a = linear(2 * hidden, hidden, vb.pp("W_a"))?;
                let bound = 1.0 / (hidden as f32).sqrt();
                (Some(w_a), Some(vb.uniform("v", &[hidden], bound)?))
            }
        };
        Ok(LuongAttention { score, w_a, v, hidden })
    }
}

/// Either attention of an attention decoder (the chapter's `AttentionDecoder`).
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
    /// The score's vector `[H]`: Bahdanau's `V.weight`, Luong concat's `v`.
    pub v: Option<Var>,
    /// Luong concat's query half of `W_a` `[H, H]`.
    pub query_weight: Option<Var>,
}

impl Attention {
    /// Prepares the keys of a source sequence (Bahdanau's `W2 values` once, not per step).
    pub fn memory(&self, g: &mut Graph<'_>, values: Var) -> Result<Memory> {
        match self {
            Attention::Bahdanau(a) => {
                let keys = a.w2.forward(g, values)?;
                let v = g.param(a.v.weight)?;
                let v = g.reshape(v, &[a.hidden])?;
                Ok(Memory {
                    values,
                    keys,
                    v: Some(v),
                    query_weight: None,
                })
            }
            Attention::Luong(a) => match (a.score, a.w_a, a.v) {
                (LuongScore::Concat, Some(w_a), Some(v)) => {
                    // W_a [q; k] + b = W_q q + (W_k k + b): the key half once per source.
                    let weight = g.param(w_a.weight)?;
                    let (w_q, w_k) = g.split(weight, a.hidden)?;
                    let bias = w_a.bias.map(|b| g.param(b)).transpose()?;
                    let keys = g.linear(values, w_k, bias)?;
                    Ok(Memory {
                        values,
                        keys,
                        v: Some(g.param(v)?),
                        query_weight: Some(w_q),
                    })
                }
                _ => Ok(Memory {
                    values,
                    keys: values,
                    v: None,
                    query_weight: None,
                }),
            },
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
            Attention::Luong(a) => match (a.score, a.w_a, memory.query_weight) {
                (LuongScore::Concat, _, Some(w_q)) => {
                    let q = g.linear(query, w_q, None)?;
                    g.attention(Score::Additive, q, memory.keys, memory.v, memory.values, lengths)
                }
                (LuongScore::Concat, _, None) => Err(Error::invalid(
                    "Luong concat attention: the memory was not made by this attention",
                )),
                (_, w_a, _) => {
                    let q = match w_a {
                        Some(w_a) => w_a.forward(g, query)?,
                        None => query,
                    };
                    g.attention(Score::Dot, q, memory.keys, None, memory.values, lengths)
                }
            },
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
    /// Registers `{prefix}.embedding` and `{prefix}.lstm`; [`Encoder::build`] with a
    /// config and a builder says the same without positional arguments.
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
        let config = EncoderConfig {
            vocab,
            embed,
            hidden,
            padding_idx,
        };
        Self::build(config, VarBuilder::with_prefix(ctx, store, rng, prefix))
    }

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
    /// Registers a decoder; `attention` builds its attention under `{prefix}.attention`.
    /// [`Decoder::build`] with a config and a builder says the same without positional
    /// arguments.
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
        let config = DecoderConfig {
            vocab,
            embed,
            hidden,
            padding_idx,
            attention,
        };
        Self::build(config, VarBuilder::with_prefix(ctx, store, rng, prefix))
    }

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
            g.encoder()
                .copy_buffer_to_buffer(step_ids.buffer(), 0, ids.buffer(), t as u64 * bytes, bytes);
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

/// Which attention a decoder uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionKind {
    /// The chapter's additive attention.
    Bahdanau,
    /// Luong's dot, general or concat score.
    Luong(LuongScore),
}

/// How a seq2seq model treats the padding of its source batch: the encoder's lengths
/// (PyTorch's `pack_padded_sequence`: padded steps neither change the state nor produce
/// output) and attention's mask (padded positions get no weight) are separate choices.
/// The chapter's `Seq2SeqWithAttention` runs its encoder over the padded source and masks
/// nothing; a model trained in PyTorch with a mask in attention but a plain encoder is
/// [`SourcePadding::attention_only`]. `Some(&lengths)` (or `&lengths`) sets both, `None`
/// neither.
#[derive(Clone, Copy, Debug, Default)]
pub struct SourcePadding<'a> {
    /// Per-row source lengths for the encoder; `None` runs it over every step.
    pub encoder: Option<&'a Lengths>,
    /// Per-row source lengths masking attention; `None` attends to every step.
    pub attention: Option<&'a Lengths>,
}

impl<'a> SourcePadding<'a> {
    /// The encoder reads the padded source whole; only attention is masked.
    pub fn attention_only(lengths: &'a Lengths) -> Self {
        SourcePadding {
            encoder: None,
            attention: Some(lengths),
        }
    }
}

impl<'a> From<Option<&'a Lengths>> for SourcePadding<'a> {
    fn from(lengths: Option<&'a Lengths>) -> Self {
        SourcePadding {
            encoder: lengths,
            attention: lengths,
        }
    }
}

impl<'a> From<&'a Lengths> for SourcePadding<'a> {
    fn from(lengths: &'a Lengths) -> Self {
        Some(lengths).into()
    }
}

/// The sizes of an [`Encoder`] (the chapter's `Encoder(vocab, embed, hidden)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncoderConfig {
    /// Source vocabulary size.
    pub vocab: usize,
    /// Embedding size.
    pub embed: usize,
    /// LSTM hidden size.
    pub hidden: usize,
    /// The embedding's padding row.
    pub padding_idx: Option<u32>,
}

/// The sizes and attention of a [`Decoder`] (the chapter's `Decoder` or `AttentionDecoder`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DecoderConfig {
    /// Target vocabulary size.
    pub vocab: usize,
    /// Embedding size.
    pub embed: usize,
    /// LSTM hidden size (the encoder's).
    pub hidden: usize,
    /// The embedding's padding row.
    pub padding_idx: Option<u32>,
    /// `None` for the chapter's plain `Decoder`.
    pub attention: Option<AttentionKind>,
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
    /// Registers `encoder.*` and `decoder.*` under the builder's prefix.
    pub fn build(encoder: EncoderConfig, decoder: DecoderConfig, mut vb: VarBuilder<'_>) -> Result<Self> {
        Ok(Seq2Seq {
            encoder: Encoder::build(encoder, vb.pp("encoder"))?,
            decoder: Decoder::build(decoder, vb.pp("decoder"))?,
        })
    }

    /// Runs the encoder, then the decoder over `tgt_inputs` (one `[B, 1]` id tensor per
    /// step, `<sos>` first). At each step after the first, with probability
    /// `teacher_forcing` (drawn from `rng`, one draw per step) the reference token goes in,
    /// else the previous step's argmax, without leaving the GPU. Returns the logits of all
    /// steps as `[B * T, V]` (rows in (b, t) order, as `output.view(-1, V)`).
    ///
    /// Computed as [`Seq2Seq::forward_time_major`] (under full teacher forcing the
    /// decoder's per-step states, stacked, go through `decoder.fc` in one product), with
    /// the stacked rows put into (b, t) order by one row gather; a caller whose loss does
    /// not care about row order can skip the gather with `forward_time_major`.
    pub fn forward<'p>(
        &self,
        g: &mut Graph<'_>,
        src: &Tensor,
        src_padding: impl Into<SourcePadding<'p>>,
        tgt_inputs: &[Tensor],
        teacher_forcing: f64,
        rng: &mut StdRng,
    ) -> Result<Var> {
        let src_padding = src_padding.into();
        let steps = tgt_inputs.len();
        let batch = tgt_inputs.first().and_then(|t| t.shape().first()).copied().unwrap_or(0);
        let always_forced = teacher_forcing >= 1.0;
        let rows = self.teacher_forced_steps(g, src, src_padding, tgt_inputs, teacher_forcing, rng, !always_forced)?;
        // [T * B, W] in (t, b) order (W = H forced, else V) to (b, t): row b * T + t is
        // stacked row t * B + b, gathered as an embedding lookup of the stacked rows.
        let stacked = g.stack(&rows)?;
        let order: Vec<u32> = (0..batch * steps)
            .map(|r| ((r % steps) * batch + r / steps) as u32)
            .collect();
        let order = Tensor::from_slice(g.context(), &order, &[batch * steps])?;
        let batch_major = g.embedding(&order, stacked, None)?;
        if always_forced {
            self.decoder.fc.forward(g, batch_major)
        } else {
            Ok(batch_major)
        }
    }

    /// [`Seq2Seq::forward`] with the logits in time-major order: `[T * B, V]`, rows in
    /// (t, b) order, so the labels must be laid out the same way (cross-entropy does not
    /// care about row order). With `teacher_forcing >= 1` every step's input is known in
    /// advance, so the per-step states are stacked and `decoder.fc` runs once over all
    /// `T * B` rows (one large matmul instead of T small ones, and no per-step argmax);
    /// otherwise each step's logits are computed for its argmax and stacked. Either way
    /// nothing grows step by step. Same math and the same random draws as `forward`.
    pub fn forward_time_major<'p>(
        &self,
        g: &mut Graph<'_>,
        src: &Tensor,
        src_padding: impl Into<SourcePadding<'p>>,
        tgt_inputs: &[Tensor],
        teacher_forcing: f64,
        rng: &mut StdRng,
    ) -> Result<Var> {
        let src_padding = src_padding.into();
        // Under full teacher forcing no step needs its logits: the states are stacked and
        // `decoder.fc` runs once over all T * B rows.
        let always_forced = teacher_forcing >= 1.0;
        let steps = self.teacher_forced_steps(g, src, src_padding, tgt_inputs, teacher_forcing, rng, !always_forced)?;
        let stacked = g.stack(&steps)?;
        if always_forced {
            self.decoder.fc.forward(g, stacked)
        } else {
            Ok(stacked)
        }
    }

    /// The encoder, and the attention's memory of its outputs: what every decoding starts
    /// from. Returns the memory and the encoder's final (h, c).
    fn encode(
        &self,
        g: &mut Graph<'_>,
        src: &Tensor,
        encoder_lengths: Option<&Lengths>,
    ) -> Result<(Option<Memory>, (Var, Var))> {
        let (values, h, c) = self.encoder.forward(g, src, encoder_lengths)?;
        let memory = match &self.decoder.attention {
            Some(attention) => Some(attention.memory(g, values)?),
            None => None,
        };
        Ok((memory, (h, c)))
    }

    /// The decoder over `tgt_inputs` (one `[B, 1]` id tensor per step, `<sos>` first) with
    /// teacher forcing: before each step after the first, one draw from `rng` decides
    /// whether the reference token or the previous step's argmax goes in. The argmax is
    /// only computed for a step that uses it. Returns each step's logits `[B, V]` when
    /// `logits` is set, else each step's new hidden state `[B, H]` from
    /// [`Decoder::forced_states`] (then every step must be forced, as no argmax can be
    /// taken).
    #[allow(clippy::too_many_arguments)]
    fn teacher_forced_steps(
        &self,
        g: &mut Graph<'_>,
        src: &Tensor,
        src_padding: SourcePadding<'_>,
        tgt_inputs: &[Tensor],
        teacher_forcing: f64,
        rng: &mut StdRng,
        logits: bool,
    ) -> Result<Vec<Var>> {
        let src_lengths = src_padding.attention;
        if !(0.0..=1.0).contains(&teacher_forcing) {
            return Err(Error::invalid(format!(
                "seq2seq: the teacher-forcing ratio must be in [0, 1], got {teacher_forcing}"
            )));
        }
        let first = tgt_inputs
            .first()
            .ok_or_else(|| Error::invalid("seq2seq: no target steps"))?;
        let batch = first.shape().first().copied().unwrap_or(0);
        let (memory, mut state) = self.encode(g, src, src_padding.encoder)?;
        if !logits {
            // Every step must be forced; the draws are made all the same, so that the
            // random stream continues as with logits.
            for t in 1..tgt_inputs.len() {
                if !rng.random_bool(teacher_forcing) {
                    return Err(Error::invalid(format!(
                        "seq2seq: step {t} is not teacher-forced, so it needs logits"
                    )));
                }
            }
            return self
                .decoder
                .forced_states(g, tgt_inputs, state, memory.as_ref(), src_lengths);
        }
        let mut ids = first.clone();
        let mut rows = Vec::with_capacity(tgt_inputs.len());
        for t in 0..tgt_inputs.len() {
            // The draw for step t + 1, made before it so an unused argmax is skipped; the
            // draws come in the same order as drawing at the start of each step.
            let next_forced = t + 1 < tgt_inputs.len() && rng.random_bool(teacher_forcing);
            let step = self.decoder.step(g, &ids, state, memory.as_ref(), src_lengths)?;
            state = step.state;
            if next_forced {
                ids = tgt_inputs[t + 1].clone();
            } else if t + 1 < tgt_inputs.len() {
                ids = g.argmax(step.logits)?.reshape(&[batch, 1])?;
            }
            rows.push(step.logits);
        }
        Ok(rows)
    }

    /// Greedy decoding from `<sos>` ids `[B, 1]` for `max_len` steps: the chosen ids of each
    /// step (u32 `[B]`, on the GPU until read) and, with attention, each step's weights.
    pub fn greedy<'p>(
        &self,
        g: &mut Graph<'_>,
        src: &Tensor,
        src_padding: impl Into<SourcePadding<'p>>,
        sos: &Tensor,
        max_len: usize,
    ) -> Result<(Vec<Tensor>, Vec<Var>)> {
        let src_padding = src_padding.into();
        let src_lengths = src_padding.attention;
        let batch = sos.shape().first().copied().unwrap_or(0);
        let (memory, mut state) = self.encode(g, src, src_padding.encoder)?;
        let mut ids = sos.clone();
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

    /// Beam search: for each of the `B` sources of `src` `[B, S]`, the `options.beam`
    /// best hypotheses from `sos`, best first (see [`backtrack`] for the ranking). Every
    /// step stays on the GPU (the decoder runs on the `B * K` live hypotheses, the
    /// expansion, top-K and the reordering of the decoder's state by parent are kernels;
    /// each chosen token is fed back as the next input), all `max_len` steps go in one
    /// submission, and only the history and the final scores are read back. A hypothesis
    /// that emits `eos` is finished and keeps its score. With `beam = 1` it is greedy
    /// decoding. Runs its own graph in eval mode over `store`. Not on wasm32 (it reads the
    /// result back blocking); there, [`Seq2Seq::greedy`] and [`crate::Tensor::read`].
    #[cfg(not(target_arch = "wasm32"))]
    #[allow(clippy::too_many_arguments)]
    pub fn beam_search<'p>(
        &self,
        ctx: &Context,
        store: &mut ParamStore,
        src: &Tensor,
        src_padding: impl Into<SourcePadding<'p>>,
        sos: u32,
        options: &BeamSearch,
    ) -> Result<Vec<Vec<Hypothesis>>> {
        let src_padding = src_padding.into();
        let src_lengths = src_padding.attention;
        let &BeamSearch {
            beam,
            max_len,
            eos,
            length_penalty,
        } = options;
        let (batch, steps) = match *src.shape() {
            [b, s] if b >= 1 && s >= 1 => (b, s),
            _ => return Err(Error::shape("beam_search: src", "[B, S] with B, S >= 1", src.shape())),
        };
        let vocab = store.value(self.decoder.fc.weight).shape()[0];
        if beam == 0 || beam > vocab || max_len == 0 {
            return Err(Error::invalid(format!(
                "beam_search: need 1 <= beam <= {vocab} (the target vocabulary) and max_len >= 1, got beam {beam}, max_len {max_len}"
            )));
        }
        for (name, id) in [("sos", sos), ("eos", eos)] {
            if id as usize >= vocab {
                return Err(Error::invalid(format!(
                    "beam_search: {name} id {id} is outside the target vocabulary of {vocab}"
                )));
            }
        }
        let rows = batch * beam;
        let mut g = Graph::new(ctx, store, false, 0, 0);
        let (memory, (h, c)) = self.encode(&mut g, src, src_padding.encoder)?;
        // Each source's rows repeated K times: gathers by the row ids b repeated K times.
        let repeat: Vec<u32> = (0..batch as u32).flat_map(|b| std::iter::repeat_n(b, beam)).collect();
        let repeat = Tensor::from_slice(ctx, &repeat, &[rows])?;
        let repeat_rows = |g: &mut Graph<'_>, x: Var| -> Result<Var> {
            let shape = g.value(x).shape().to_vec();
            let width = shape[1..].iter().product::<usize>();
            let flat = g.reshape(x, &[batch, width])?;
            let out = g.embedding(&repeat, flat, None)?;
            let mut out_shape = shape;
            out_shape[0] = rows;
            g.reshape(out, &out_shape)
        };
        let memory = match memory {
            Some(m) => Some(Memory {
                values: repeat_rows(&mut g, m.values)?,
                keys: repeat_rows(&mut g, m.keys)?,
                ..m
            }),
            None => None,
        };
        let lengths = src_lengths.map(|l| l.repeat_each(beam)).transpose()?;
        if let Some(l) = &lengths {
            if l.steps() != steps {
                return Err(Error::shape(
                    "beam_search: src_lengths",
                    format!("lengths of {steps} steps"),
                    &[l.steps()],
                ));
            }
        }
        let mut state = (repeat_rows(&mut g, h)?, repeat_rows(&mut g, c)?);
        let mut ids = Tensor::full(ctx, &[rows, 1], sos)?;
        let mut scores = Tensor::zeros(ctx, &[rows], DType::F32)?;
        let mut finished = Tensor::zeros(ctx, &[rows], DType::U32)?;
        let history = Tensor::empty(ctx, &[max_len, rows, 2], DType::U32)?;
        for t in 0..max_len {
            let step = self
                .decoder
                .step(&mut g, &ids, state, memory.as_ref(), lengths.as_ref())?;
            let kernel_step = BeamStep {
                beam,
                eos,
                first: t == 0,
                step: t,
            };
            let logits = g.value(step.logits).clone();
            let candidates = Tensor::empty(ctx, &[rows, vocab], DType::F32)?;
            let new_scores = Tensor::empty(ctx, &[batch, beam], DType::F32)?;
            let picks = Tensor::empty(ctx, &[batch, beam], DType::U32)?;
            let tokens = Tensor::empty(ctx, &[rows], DType::U32)?;
            let parents = Tensor::empty(ctx, &[rows], DType::U32)?;
            let finished_out = Tensor::empty(ctx, &[rows], DType::U32)?;
            let encoder = g.encoder();
            beam_expand(ctx, encoder, &kernel_step, &logits, &scores, &finished, &candidates)?;
            let by_sentence = candidates.reshape(&[batch, beam * vocab])?;
            top_k(ctx, encoder, &by_sentence, beam, &new_scores, &picks)?;
            let selection = BeamSelection {
                tokens: &tokens,
                parents: &parents,
                finished: &finished_out,
                history: &history,
            };
            beam_select(ctx, encoder, &kernel_step, vocab, &picks, &finished, &selection)?;
            state = (
                g.embedding(&parents, step.state.0, None)?,
                g.embedding(&parents, step.state.1, None)?,
            );
            ids = tokens.reshape(&[rows, 1])?;
            scores = new_scores.reshape(&[rows])?;
            finished = finished_out;
        }
        g.submit();
        let history = history.to_vec::<u32>()?;
        let scores = scores.to_vec::<f32>()?;
        backtrack(&history, &scores, beam, eos, length_penalty)
    }
}

/// Scheduled sampling (Bengio et al., 2015): the teacher-forcing ratio as a function of
/// the training step `i` (counted from 0), decaying from always feeding the reference
/// token towards feeding the model's own predictions. Pass `ratio(i)` to
/// [`Seq2Seq::forward`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TeacherForcing {
    /// The same ratio at every step (the chapter's `teacher_forcing_ratio`).
    Constant(f64),
    /// From `start` to `end` in a straight line over `steps` steps, then `end`.
    Linear {
        /// The ratio at step 0.
        start: f64,
        /// The ratio from step `steps` on.
        end: f64,
        /// The length of the decay.
        steps: u64,
    },
    /// `k^i`, `0 < k < 1`.
    Exponential {
        /// The decay per step.
        k: f64,
    },
    /// `k / (k + exp(i / k))`, `k >= 1`: stays near 1 for about `k ln k` steps, then falls.
    InverseSigmoid {
        /// The schedule's scale.
        k: f64,
    },
}

impl TeacherForcing {
    /// The ratio at step `step`, in [0, 1]; an error names a parameter outside its range.
    pub fn ratio(&self, step: u64) -> Result<f64> {
        let i = step as f64;
        let unit = |name: &str, x: f64| {
            if (0.0..=1.0).contains(&x) {
                Ok(x)
            } else {
                Err(Error::invalid(format!(
                    "teacher forcing: {name} must be in [0, 1], got {x}"
                )))
            }
        };
        match *self {
            TeacherForcing::Constant(ratio) => unit("the ratio", ratio),
            TeacherForcing::Linear { start, end, steps } => {
                let (start, end) = (unit("start", start)?, unit("end", end)?);
                let progress = if steps == 0 { 1.0 } else { (i / steps as f64).min(1.0) };
                Ok(start + (end - start) * progress)
            }
            TeacherForcing::Exponential { k } if k > 0.0 && k < 1.0 => Ok(k.powf(i)),
            TeacherForcing::Exponential { k } => Err(Error::invalid(format!(
                "teacher forcing: the exponential decay k must be in (0, 1), got {k}"
            ))),
            TeacherForcing::InverseSigmoid { k } if k >= 1.0 => Ok(k / (k + (i / k).exp())),
            TeacherForcing::InverseSigmoid { k } => Err(Error::invalid(format!(
                "teacher forcing: the inverse-sigmoid scale k must be >= 1, got {k}"
            ))),
        }
    }
}

/// The options of [`Seq2Seq::beam_search`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BeamSearch {
    /// K, the hypotheses kept per source (`1..=V`).
    pub beam: usize,
    /// Decoding steps (the longest output, `eos` included).
    pub max_len: usize,
    /// The `<eos>` id.
    pub eos: u32,
    /// Ranking by `log_prob / length^length_penalty`; 1 (the default) is the mean
    /// log-probability per token, 0 the plain sum.
    pub length_penalty: f32,
}

impl BeamSearch {
    /// `beam` hypotheses, `max_len` steps, `eos`, length penalty 1.
    pub fn new(beam: usize, max_len: usize, eos: u32) -> Self {
        BeamSearch {
            beam,
            max_len,
            eos,
            length_penalty: 1.0,
        }
    }
}
