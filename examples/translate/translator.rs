//! The model of this example with its vocabularies: building it, saving it and loading it
//! again (sizes, epoch and vocabularies in the checkpoint's own metadata), and decoding
//! (greedy with the attention weights, or beam search) into Japanese text.

use std::path::Path;

use rand::rngs::StdRng;
use rand::SeedableRng;
use tsumugi::graph::{Graph, ParamStore};
use tsumugi::io::{read_checkpoint, save_checkpoint_with, Metadata};
use tsumugi::kernels::Lengths;
use tsumugi::nn::seq2seq::{AttentionKind, BeamSearch, Decoder, Encoder, Seq2Seq};
use tsumugi::text::{char_tokens, word_tokens, Example, Pair, Seq2SeqBatch, Vocab};
use tsumugi::{Context, Tensor};

use crate::run::History;
use crate::AnyResult;
use tsumugi::nn::seq2seq::{DecoderConfig, EncoderConfig};
use tsumugi::nn::VarBuilder;

/// What a checkpoint needs beside its tensors to be used again: the model's sizes, the
/// epoch and (in the same file's metadata, see `Translator::save`) the vocabularies.
pub struct Meta {
    pub embed: usize,
    pub hidden: usize,
    /// Epochs completed.
    pub epoch: usize,
    /// Steps of the next epoch already trained (a run stopped by `--minutes` mid-epoch).
    pub partial_steps: u64,
    /// The curve so far: loss and dev scores per epoch.
    pub history: History,
}

/// The model with its vocabularies.
pub struct Translator {
    pub model: Seq2Seq,
    pub src_vocab: Vocab,
    pub tgt_vocab: Vocab,
    /// Beam search ranks by `log_prob / length^length_penalty` (`--length-penalty`).
    pub length_penalty: f32,
}

impl Translator {
    pub fn new(
        ctx: &Context,
        store: &mut ParamStore,
        src_vocab: Vocab,
        tgt_vocab: Vocab,
        embed: usize,
        hidden: usize,
        seed: u64,
    ) -> tsumugi::Result<Translator> {
        let mut rng = StdRng::seed_from_u64(seed);
        let pad = Some(Vocab::PAD_ID);
        let model = Seq2Seq {
            encoder: Encoder::build(
                EncoderConfig {
                    vocab: src_vocab.len(),
                    embed,
                    hidden,
                    padding_idx: pad,
                },
                VarBuilder::with_prefix(ctx, store, &mut rng, "encoder"),
            )?,
            decoder: Decoder::build(
                DecoderConfig {
                    vocab: tgt_vocab.len(),
                    embed,
                    hidden,
                    padding_idx: pad,
                    attention: Some(AttentionKind::Bahdanau),
                },
                VarBuilder::with_prefix(ctx, store, &mut rng, "decoder"),
            )?,
        };
        Ok(Translator {
            length_penalty: 1.0,
            model,
            src_vocab,
            tgt_vocab,
        })
    }

    /// Saves weights, optimizer state, sizes, epoch and both vocabularies in one
    /// checkpoint file, written atomically: they cannot disagree after a crash.
    pub fn save(&self, store: &ParamStore, checkpoint: &Path, meta: &Meta, step: u64) -> tsumugi::Result<()> {
        let metadata = Metadata::from([
            ("embed".to_string(), meta.embed.to_string()),
            ("hidden".to_string(), meta.hidden.to_string()),
            ("epoch".to_string(), meta.epoch.to_string()),
            ("partial_steps".to_string(), meta.partial_steps.to_string()),
            ("history".to_string(), meta.history.to_text()),
            ("src_vocab".to_string(), self.src_vocab.to_text()),
            ("tgt_vocab".to_string(), self.tgt_vocab.to_text()),
        ]);
        save_checkpoint_with(checkpoint, store, step, &metadata)
    }

    /// Rebuilds the model a checkpoint was saved from and loads its tensors.
    /// Returns the model, its sizes and the optimizer's step count.
    pub fn load(ctx: &Context, store: &mut ParamStore, checkpoint: &Path) -> AnyResult<(Translator, Meta, u64)> {
        if !checkpoint.exists() {
            return Err(format!(
                "{}: no checkpoint there; train first: cargo run --release --example translate",
                checkpoint.display()
            )
            .into());
        }
        // One read: the metadata and the weights come from the same save.
        let file = read_checkpoint(checkpoint)?;
        let (_, metadata) = file.metadata()?;
        let text = |key: &str| -> AnyResult<&String> {
            metadata.get(key).ok_or_else(|| {
                format!(
                    "{}: not a translate checkpoint (no `{key}` in its metadata)",
                    checkpoint.display()
                )
                .into()
            })
        };
        let number = |key: &str| -> AnyResult<usize> {
            let value = text(key)?;
            value
                .parse()
                .map_err(|_| format!("{}: `{key}` is {value:?}, not a count", checkpoint.display()).into())
        };
        let name = checkpoint.display().to_string();
        let meta = Meta {
            embed: number("embed")?,
            hidden: number("hidden")?,
            epoch: number("epoch")?,
            // Absent in checkpoints written before runs kept their curve.
            partial_steps: metadata
                .get("partial_steps")
                .map_or(Ok(0), |_| number("partial_steps"))? as u64,
            history: metadata
                .get("history")
                .map_or(Ok(History::default()), |text| History::from_text(&name, text))?,
        };
        let src_vocab = Vocab::from_text(&format!("{name} (src_vocab)"), text("src_vocab")?)?;
        let tgt_vocab = Vocab::from_text(&format!("{name} (tgt_vocab)"), text("tgt_vocab")?)?;
        let translator = Translator::new(ctx, store, src_vocab, tgt_vocab, meta.embed, meta.hidden, 0)?;
        let step = file.load_into(store)?;
        Ok((translator, meta, step))
    }

    pub fn encode(&self, pair: &Pair) -> Example {
        Example::encode(
            &word_tokens(&pair.source),
            &char_tokens(&pair.target),
            &self.src_vocab,
            &self.tgt_vocab,
        )
    }

    /// Source ids `[B, S]` and lengths of English sentences, each ending in `<eos>`.
    pub fn source_batch(&self, ctx: &Context, sentences: &[&str]) -> tsumugi::Result<(Tensor, Lengths, usize)> {
        let examples: Vec<Example> = sentences
            .iter()
            .map(|s| Example::encode(&word_tokens(s), &[], &self.src_vocab, &self.tgt_vocab))
            .collect();
        let refs: Vec<&Example> = examples.iter().collect();
        let batch = Seq2SeqBatch::new(&refs)?;
        let src = Tensor::from_slice(ctx, &batch.source, &[batch.batch, batch.source_steps])?;
        let lengths = Lengths::new(ctx, &batch.source_lengths, batch.source_steps)?;
        Ok((src, lengths, batch.source_steps))
    }

    /// Translations of `sentences`, greedy (`beam` 1) or by beam search.
    pub fn translate(
        &self,
        ctx: &Context,
        store: &mut ParamStore,
        sentences: &[&str],
        beam: usize,
    ) -> AnyResult<Vec<String>> {
        let (src, lengths, steps) = self.source_batch(ctx, sentences)?;
        let max_len = max_output_len(steps);
        let ids: Vec<Vec<u32>> = if beam > 1 {
            let options = BeamSearch {
                length_penalty: self.length_penalty,
                ..BeamSearch::new(beam, max_len, Vocab::EOS_ID)
            };
            let found = self
                .model
                .beam_search(ctx, store, &src, Some(&lengths), Vocab::SOS_ID, &options)?;
            found
                .into_iter()
                .map(|hyps| hyps.into_iter().next().map(|h| h.tokens).unwrap_or_default())
                .collect()
        } else {
            let (chosen, _) = self.greedy(ctx, store, &src, &lengths, max_len, false)?;
            chosen
        };
        // `<unk>` stands for characters the vocabulary lacks: left out of the text.
        Ok(ids
            .iter()
            .map(|ids| {
                let tokens = self.tgt_vocab.decode(ids);
                tokens.into_iter().filter(|&t| t != tsumugi::text::UNK).collect()
            })
            .collect())
    }

    /// Greedy decoding: each row's ids (cut at `<eos>` by the caller's decode) and, if
    /// asked, each row's attention weights `[steps][S]`.
    #[allow(clippy::type_complexity)]
    pub fn greedy(
        &self,
        ctx: &Context,
        store: &mut ParamStore,
        src: &Tensor,
        lengths: &Lengths,
        max_len: usize,
        with_weights: bool,
    ) -> tsumugi::Result<(Vec<Vec<u32>>, Vec<Vec<Vec<f32>>>)> {
        let batch = src.shape()[0];
        let source = src.shape()[1];
        let sos = Tensor::from_slice(ctx, &vec![Vocab::SOS_ID; batch], &[batch, 1])?;
        let mut g = Graph::eval(ctx, store);
        let (chosen, weights) = self.model.greedy(&mut g, src, Some(lengths), &sos, max_len)?;
        let weights: Vec<Tensor> = if with_weights {
            weights.iter().map(|&w| g.value(w).clone()).collect()
        } else {
            Vec::new()
        };
        g.submit();
        let steps: Vec<Vec<u32>> = chosen.iter().map(|t| t.to_vec()).collect::<tsumugi::Result<_>>()?;
        let rows = (0..batch).map(|b| steps.iter().map(|s| s[b]).collect()).collect();
        let mut maps = vec![Vec::new(); if with_weights { batch } else { 0 }];
        for step in &weights {
            let values: Vec<f32> = step.to_vec()?;
            for (b, map) in maps.iter_mut().enumerate() {
                map.push(values[b * source..(b + 1) * source].to_vec());
            }
        }
        Ok((rows, maps))
    }
}

/// Decoding steps for sources of up to `source_steps` tokens: the training targets have
/// at most 30 characters, and a Japanese sentence rarely has more than 3 per English word.
pub fn max_output_len(source_steps: usize) -> usize {
    (3 * source_steps + 4).clamp(32, 160)
}
