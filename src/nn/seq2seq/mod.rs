//! The chapter's sequence-to-sequence models: `Encoder`, `Decoder`, `AttentionDecoder`
//! with `BahdanauAttention` (W1, W2, V), `LuongAttention` (dot, general, concat), and `Seq2Seq`
//! with teacher forcing drawn per step and greedy decoding that feeds each chosen token
//! back on the GPU. Parameter names follow the chapter's classes (`encoder.embedding.weight`,
//! `decoder.lstm.weight_ih_l0`, `decoder.attention.W1.weight`, ...).

use rand::rngs::StdRng;
use rand::Rng;

mod attention;
mod decode;
mod encoder;

pub use attention::{Attention, AttentionKind, BahdanauAttention, LuongAttention, LuongScore, Memory};
pub use decode::{BeamDecoding, BeamSearch};
pub use encoder::{Decoder, DecoderStep, Encoder};

use super::VarBuilder;
use crate::graph::{Graph, Var};
// Beam search reads its result back blocking, so it is native-only (see `beam_search`).
use crate::kernels::Lengths;
use crate::{Error, Result, Tensor};

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
