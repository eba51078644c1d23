//! Decoding a trained [`Seq2Seq`], inside the caller's graph: greedy ([`Seq2Seq::greedy`])
//! and beam search ([`Seq2Seq::beam`]) take the same graph, source and padding, record
//! every step into the graph's recorder (its own encoder, or a host's frame encoder with
//! [`Graph::eval_into`]) and leave their tokens in GPU tensors: nothing is submitted and
//! nothing waits. [`Seq2Seq::beam_search`] is the native convenience that runs a graph of
//! its own and reads back all K hypotheses of every source, ranked.

use super::{Memory, Seq2Seq, SourcePadding};
use crate::graph::{Graph, Var};
use crate::kernels::beam::{beam_best, beam_expand, beam_select, BeamRanking, BeamSelection, BeamStep};
use crate::kernels::cross_entropy::top_k;
use crate::{DType, Error, Result, Tensor};

// Beam search with a blocking readback is native-only.
#[cfg(not(target_arch = "wasm32"))]
use crate::graph::ParamStore;
#[cfg(not(target_arch = "wasm32"))]
use crate::kernels::beam::{backtrack, Hypothesis};
#[cfg(not(target_arch = "wasm32"))]
use crate::Context;

/// What [`Seq2Seq::beam`] leaves on the GPU.
#[derive(Clone, Debug)]
pub struct BeamDecoding {
    /// `[B, max_len]` u32: each source's best hypothesis, `eos` from its end on.
    pub best: Tensor,
    /// `[max_len, B*K, 2]` u32: every step's (token, parent row) of every row, for
    /// [`crate::kernels::beam::backtrack`] when all K hypotheses are wanted.
    pub history: Tensor,
    /// `[B*K]` f32: the final rows' cumulative log-probabilities.
    pub scores: Tensor,
}

impl Seq2Seq {
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

    /// Beam search recorded into `g`: for each of the `B` sources of `src` `[B, S]`, the
    /// `options.beam` best hypotheses from `sos`. Every step stays on the GPU (the decoder
    /// runs on the `B * K` live hypotheses; the expansion, top-K and the reordering of the
    /// decoder's state by parent are kernels; each chosen token is fed back as the next
    /// input), and the best hypothesis of each source is left in
    /// [`BeamDecoding::best`]: nothing is submitted, waited for or read back, so it runs
    /// in a host's frame ([`Graph::eval_into`]) and in the browser. A hypothesis that
    /// emits `eos` is finished and keeps its score. With `beam = 1` it is greedy decoding.
    pub fn beam<'p>(
        &self,
        g: &mut Graph<'_>,
        src: &Tensor,
        src_padding: impl Into<SourcePadding<'p>>,
        sos: u32,
        options: &BeamSearch,
    ) -> Result<BeamDecoding> {
        let ctx = g.context().clone();
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
        let fc = g.param(self.decoder.fc.weight)?;
        let vocab = g.value(fc).shape()[0];
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
        let (memory, (h, c)) = self.encode(g, src, src_padding.encoder)?;
        // Each source's rows repeated K times: gathers by the row ids b repeated K times.
        let repeat: Vec<u32> = (0..batch as u32).flat_map(|b| std::iter::repeat_n(b, beam)).collect();
        let repeat = Tensor::from_slice(&ctx, &repeat, &[rows])?;
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
                values: repeat_rows(g, m.values)?,
                keys: repeat_rows(g, m.keys)?,
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
        let mut state = (repeat_rows(g, h)?, repeat_rows(g, c)?);
        let mut ids = Tensor::full(&ctx, &[rows, 1], sos)?;
        let mut scores = Tensor::zeros(&ctx, &[rows], DType::F32)?;
        let mut finished = Tensor::zeros(&ctx, &[rows], DType::U32)?;
        let history = Tensor::empty(&ctx, &[max_len, rows, 2], DType::U32)?;
        for t in 0..max_len {
            let step = self.decoder.step(g, &ids, state, memory.as_ref(), lengths.as_ref())?;
            let kernel_step = BeamStep {
                beam,
                eos,
                first: t == 0,
                step: t,
            };
            let logits = g.value(step.logits).clone();
            let candidates = Tensor::empty(&ctx, &[rows, vocab], DType::F32)?;
            let new_scores = Tensor::empty(&ctx, &[batch, beam], DType::F32)?;
            let picks = Tensor::empty(&ctx, &[batch, beam], DType::U32)?;
            let tokens = Tensor::empty(&ctx, &[rows], DType::U32)?;
            let parents = Tensor::empty(&ctx, &[rows], DType::U32)?;
            let finished_out = Tensor::empty(&ctx, &[rows], DType::U32)?;
            let encoder = g.encoder();
            beam_expand(&ctx, encoder, &kernel_step, &logits, &scores, &finished, &candidates)?;
            let by_sentence = candidates.reshape(&[batch, beam * vocab])?;
            top_k(&ctx, encoder, &by_sentence, beam, &new_scores, &picks)?;
            let selection = BeamSelection {
                tokens: &tokens,
                parents: &parents,
                finished: &finished_out,
                history: &history,
            };
            beam_select(&ctx, encoder, &kernel_step, vocab, &picks, &finished, &selection)?;
            state = (
                g.embedding(&parents, step.state.0, None)?,
                g.embedding(&parents, step.state.1, None)?,
            );
            ids = tokens.reshape(&[rows, 1])?;
            scores = new_scores.reshape(&[rows])?;
            finished = finished_out;
        }
        let best = Tensor::empty(&ctx, &[batch, max_len], DType::U32)?;
        let ranking = BeamRanking {
            beam,
            eos,
            length_penalty,
        };
        beam_best(&ctx, g.encoder(), &ranking, &history, &scores, &best)?;
        Ok(BeamDecoding { best, history, scores })
    }

    /// Beam search on a graph of its own over `store`, read back: for each of the `B`
    /// sources, the `options.beam` best hypotheses, best first (see [`backtrack`] for the
    /// ranking). All `max_len` steps go in one submission; only the history and the final
    /// scores are read. Not on wasm32 (it blocks); there, [`Seq2Seq::beam`] and
    /// [`crate::Tensor::read`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn beam_search<'p>(
        &self,
        ctx: &Context,
        store: &mut ParamStore,
        src: &Tensor,
        src_padding: impl Into<SourcePadding<'p>>,
        sos: u32,
        options: &BeamSearch,
    ) -> Result<Vec<Vec<Hypothesis>>> {
        let mut g = Graph::eval(ctx, store);
        let decoding = self.beam(&mut g, src, src_padding, sos, options)?;
        g.submit();
        let history = decoding.history.to_vec::<u32>()?;
        let scores = decoding.scores.to_vec::<f32>()?;
        backtrack(&history, &scores, options.beam, options.eos, options.length_penalty)
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
