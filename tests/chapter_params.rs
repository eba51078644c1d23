//! Parameter counts of every model the chapter example builds (`examples/chapter`), at the
//! chapter's sizes, against PyTorch's closed forms: `nn.Embedding(V, E)` has V*E,
//! `nn.Linear(I, O)` I*O + O, and each layer of `nn.LSTM` / `nn.GRU` / `nn.RNN` has
//! G * (H*I + H*H + 2H) with G = 4, 3, 1 (I the layer's input: the embedding for the
//! first, H for the others). Each count is also written out as the number PyTorch prints,
//! so a wrong formula cannot agree with a wrong count. The chapter's own printed counts
//! were illustrative and are not these.

mod common;

#[path = "../examples/chapter/data.rs"]
mod data;

use common::ctx;
use rand::rngs::StdRng;
use rand::SeedableRng;
use tsumugi::graph::ParamStore;
use tsumugi::nn::models::{Readout, RecurrentModel, Spec};
use tsumugi::nn::seq2seq::{AttentionKind, Decoder, Encoder};
use tsumugi::nn::seq2seq::{DecoderConfig, EncoderConfig};
use tsumugi::nn::{embedding, linear, recurrent, EmbeddingConfig, VarBuilder};
use tsumugi::nn::{CellKind, Embedding, RecurrentConfig};
use tsumugi::Tensor;

fn embedding_params(v: usize, e: usize) -> usize {
    v * e
}

fn linear_params(i: usize, o: usize) -> usize {
    i * o + o
}

/// One layer of G gates, input I, hidden H.
fn layer(gates: usize, i: usize, h: usize) -> usize {
    gates * (h * i + h * h + 2 * h)
}

fn lstm(i: usize, h: usize) -> usize {
    layer(4, i, h)
}

/// The count of the parameters under `prefix`.
fn under(store: &ParamStore, prefix: &str) -> usize {
    store
        .entries()
        .filter(|(name, _, _)| name.starts_with(prefix))
        .map(|(_, value, _)| value.shape().iter().product::<usize>())
        .sum()
}

fn rng() -> StdRng {
    StdRng::seed_from_u64(0)
}

#[test]
fn section_2_1_simple_rnn_and_char_rnn() {
    let mut store = ParamStore::new();
    RecurrentModel::simple_rnn(ctx(), &mut store, &mut rng(), 10, 20, 2).unwrap();
    assert_eq!(store.count().0, layer(1, 10, 20) + linear_params(20, 2));
    assert_eq!(store.count().0, 682);

    // CharRNN over the 8 characters of "hello world".
    let mut chars: Vec<char> = data::HELLO.chars().collect();
    chars.sort_unstable();
    chars.dedup();
    assert_eq!(chars.len(), 8);
    let mut store = ParamStore::new();
    RecurrentModel::char_rnn(ctx(), &mut store, &mut rng(), 8, 16, 32).unwrap();
    assert_eq!(
        store.count().0,
        embedding_params(8, 16) + layer(1, 16, 32) + linear_params(32, 8)
    );
    assert_eq!(store.count().0, 1_992);
}

#[test]
fn section_2_2_sentiment_lstm_and_text_classifier_gru() {
    // The vocabulary of the eight reviews: 20 words and '<pad>' (the chapter prints 24).
    let vocab = data::vocab_of(data::SENTIMENT.iter().map(|(s, _)| *s)).len() + 1;
    assert_eq!(vocab, 21);
    let mut store = ParamStore::new();
    let spec = Spec {
        rnn_name: "lstm",
        config: RecurrentConfig {
            num_layers: 2,
            dropout: 0.2,
            ..RecurrentConfig::new(CellKind::Lstm, 32, 64)
        },
        embedding: Some((vocab, None)),
        outputs: 2,
        readout: Readout::LastHidden { dropout: 0.5 },
    };
    RecurrentModel::new(ctx(), &mut store, &mut rng(), spec).unwrap();
    assert_eq!(
        store.count().0,
        embedding_params(21, 32) + lstm(32, 64) + lstm(64, 64) + linear_params(64, 2)
    );
    assert_eq!(store.count().0, 59_170);

    // The LSTM-vs-GRU comparison: SentimentLSTM(100, 32, 64, 2) with one layer (the
    // chapter prints 37,954) and TextClassifierGRU(100, 32, 64, 2) (28,866).
    let mut store = ParamStore::new();
    RecurrentModel::sentiment_lstm(ctx(), &mut store, &mut rng(), 100, 32, 64, 2, 1, 0.0).unwrap();
    assert_eq!(
        store.count().0,
        embedding_params(100, 32) + lstm(32, 64) + linear_params(64, 2)
    );
    assert_eq!(store.count().0, 28_418);
    let mut store = ParamStore::new();
    RecurrentModel::text_classifier_gru(ctx(), &mut store, &mut rng(), 100, 32, 64, 2).unwrap();
    assert_eq!(
        store.count().0,
        embedding_params(100, 32) + layer(3, 32, 64) + linear_params(64, 2)
    );
    assert_eq!(store.count().0, 22_146);
}

/// `Seq2Seq(Encoder(src, E, H), Decoder(tgt, E, H))`, with or without attention.
fn seq2seq(src: usize, tgt: usize, e: usize, h: usize, attention: Option<AttentionKind>) -> ParamStore {
    let mut store = ParamStore::new();
    let mut r = rng();
    Encoder::build(
        EncoderConfig {
            vocab: src,
            embed: e,
            hidden: h,
            padding_idx: None,
        },
        VarBuilder::with_prefix(ctx(), &mut store, &mut r, "encoder"),
    )
    .unwrap();
    Decoder::build(
        DecoderConfig {
            vocab: tgt,
            embed: e,
            hidden: h,
            padding_idx: None,
            attention,
        },
        VarBuilder::with_prefix(ctx(), &mut store, &mut r, "decoder"),
    )
    .unwrap();
    store
}

#[test]
fn section_2_3_seq2seq() {
    let store = seq2seq(100, 100, 128, 256, None);
    let encoder = embedding_params(100, 128) + lstm(128, 256);
    let decoder = embedding_params(100, 128) + lstm(128, 256) + linear_params(256, 100);
    assert_eq!(under(&store, "encoder."), encoder);
    assert_eq!(under(&store, "decoder."), decoder);
    // The chapter prints 275,456, 301,156 and 576,612.
    assert_eq!((encoder, decoder, store.count().0), (408_064, 433_764, 841_828));

    // The toy: 13 English words + 1 (the chapter prints 13), 15 Japanese words with
    // <sos>, <eos> and <pad>, + 1 (the chapter prints 17).
    let en = data::vocab_of(data::TRANSLATION.iter().map(|(en, _)| *en)).len() + 1;
    let ja_sentences: Vec<Vec<&str>> = data::TRANSLATION.iter().map(|(_, ja)| data::ja_tokens(ja)).collect();
    let ja = data::vocab_of(ja_sentences.iter().flatten().copied()).len() + 2;
    assert_eq!((en, ja), (14, 19));
    let store = seq2seq(en, ja, 64, 128, None);
    assert_eq!(
        store.count().0,
        embedding_params(14, 64) + lstm(64, 128) + embedding_params(19, 64) + lstm(64, 128) + linear_params(128, 19)
    );
}

#[test]
fn section_2_4_seq2seq_with_attention() {
    let store = seq2seq(100, 100, 128, 256, Some(AttentionKind::Bahdanau));
    // BahdanauAttention(256): W1, W2 Linear(256, 256), V Linear(256, 1); the decoder's
    // LSTM reads [embedding; context], 128 + 256 wide.
    let attention = 2 * linear_params(256, 256) + linear_params(256, 1);
    assert_eq!(under(&store, "decoder.attention."), attention);
    let total = embedding_params(100, 128)
        + lstm(128, 256)
        + embedding_params(100, 128)
        + attention
        + lstm(128 + 256, 256)
        + linear_params(256, 100);
    assert_eq!(store.count().0, total);
    assert_eq!(total, 1_235_813); // the chapter prints 609,124
}

#[test]
fn section_2_5_embeddings_and_char_level_rnn() {
    let mut store = ParamStore::new();
    embedding(
        1000,
        128,
        EmbeddingConfig { padding_idx: None },
        VarBuilder::with_prefix(ctx(), &mut store, &mut rng(), "embedding"),
    )
    .unwrap();
    assert_eq!(store.count().0, 128_000);

    // TextClassifierWithPretrainedEmbedding: a frozen [1000, 100] table, LSTM(100, 128),
    // Linear(128, 2). The chapter prints 230,018 total, 130,018 trainable.
    for (freeze, trainable) in [(true, 118_018), (false, 218_018)] {
        let mut store = ParamStore::new();
        let table = Tensor::zeros(ctx(), &[1000, 100], tsumugi::DType::F32).unwrap();
        Embedding::from_pretrained(&mut store, "embedding", table, freeze, None).unwrap();
        let mut r = rng();
        recurrent(
            RecurrentConfig::new(CellKind::Lstm, 100, 128),
            VarBuilder::with_prefix(ctx(), &mut store, &mut r, "lstm"),
        )
        .unwrap();
        linear(128, 2, VarBuilder::with_prefix(ctx(), &mut store, &mut r, "fc")).unwrap();
        let total = embedding_params(1000, 100) + lstm(100, 128) + linear_params(128, 2);
        assert_eq!(
            store.count(),
            (total, total - if freeze { embedding_params(1000, 100) } else { 0 })
        );
        assert_eq!((total, store.count().1), (218_018, trainable));
    }

    // CharLevelRNN(27, 32, 64, 2 layers): the chapter prints 24,091.
    let mut store = ParamStore::new();
    RecurrentModel::char_level_rnn(ctx(), &mut store, &mut rng(), 27, 32, 64, 2).unwrap();
    assert_eq!(
        store.count().0,
        embedding_params(27, 32) + lstm(32, 64) + lstm(64, 64) + linear_params(64, 27)
    );
    assert_eq!(store.count().0, 60_987);
}

#[test]
fn exercises_2_and_5() {
    // Exercise 2's SimpleLSTM: 26,883 (the chapter prints 26,563).
    let (v, e, h, c) = data::SIMPLE_LSTM;
    let mut store = ParamStore::new();
    let spec = Spec {
        rnn_name: "lstm",
        config: RecurrentConfig::new(CellKind::Lstm, e, h),
        embedding: Some((v, None)),
        outputs: c,
        readout: Readout::LastHidden { dropout: 0.0 },
    };
    RecurrentModel::new(ctx(), &mut store, &mut rng(), spec).unwrap();
    assert_eq!(
        store.count().0,
        embedding_params(v, e) + lstm(e, h) + linear_params(h, c)
    );
    assert_eq!(store.count().0, 26_883);

    // Exercise 5's TextClassifier(100, 50, 64, 2), frozen: only the LSTM and fc train.
    let mut store = ParamStore::new();
    let table = Tensor::zeros(ctx(), &[100, 50], tsumugi::DType::F32).unwrap();
    Embedding::from_pretrained(&mut store, "embedding", table, true, None).unwrap();
    let mut r = rng();
    recurrent(
        RecurrentConfig::new(CellKind::Lstm, 50, 64),
        VarBuilder::with_prefix(ctx(), &mut store, &mut r, "lstm"),
    )
    .unwrap();
    linear(64, 2, VarBuilder::with_prefix(ctx(), &mut store, &mut r, "fc")).unwrap();
    assert_eq!(store.count(), (34_826, 29_826));
    assert_eq!(34_826, embedding_params(100, 50) + lstm(50, 64) + linear_params(64, 2));
}
