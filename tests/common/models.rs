//! The test-only model builders: the chapter's seq2seq models as `make_golden.py` builds
//! them (the classifiers and character models are the library's `nn::models`).

use rand::rngs::StdRng;
use rand::SeedableRng;
use tsumugi::graph::ParamStore;
use tsumugi::nn::seq2seq::{AttentionKind, Decoder, Encoder, Seq2Seq};
use tsumugi::nn::seq2seq::{DecoderConfig, EncoderConfig};
use tsumugi::nn::VarBuilder;
use tsumugi::{Context, Result};

/// The chapter's `Seq2Seq(Encoder(src_vocab, emb, hidden), Decoder(tgt_vocab, emb,
/// hidden))`, or `Seq2SeqWithAttention` with `AttentionDecoder` (Bahdanau) when
/// `attention`; no padding_idx, as the chapter's embeddings.
pub fn seq2seq(
    ctx: &Context,
    store: &mut ParamStore,
    seed: u64,
    (src_vocab, tgt_vocab, emb, hidden): (usize, usize, usize, usize),
    attention: bool,
) -> Result<Seq2Seq> {
    let mut rng = StdRng::seed_from_u64(seed);
    let encoder = Encoder::build(
        EncoderConfig {
            vocab: src_vocab,
            embed: emb,
            hidden,
            padding_idx: None,
        },
        VarBuilder::with_prefix(ctx, store, &mut rng, "encoder"),
    )?;
    let attention = attention.then_some(AttentionKind::Bahdanau);
    let decoder = Decoder::build(
        DecoderConfig {
            vocab: tgt_vocab,
            embed: emb,
            hidden,
            padding_idx: None,
            attention,
        },
        VarBuilder::with_prefix(ctx, store, &mut rng, "decoder"),
    )?;
    Ok(Seq2Seq { encoder, decoder })
}
