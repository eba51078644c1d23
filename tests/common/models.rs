//! The chapter's models built from tsumugi's modules under PyTorch's attribute names, as
//! `tests/golden/make_golden.py` builds them in PyTorch: the golden and state-dict tests
//! share them.

use rand::rngs::StdRng;
use rand::SeedableRng;
use tsumugi::graph::{Graph, ParamStore, Var};
use tsumugi::kernels::rnn_cell::Nonlinearity;
use tsumugi::kernels::Lengths;
use tsumugi::nn::seq2seq::{AttentionKind, Decoder, Encoder, Seq2Seq};
use tsumugi::nn::{CellKind, Embedding, Linear, Recurrent, RecurrentConfig, RecurrentStates};
use tsumugi::{Context, Result, Tensor};

/// What the linear head reads.
#[derive(Clone, Copy, Debug)]
pub enum Readout {
    /// The last layer's final hidden state (SimpleRNN's `out[:, -1, :]`, which equals
    /// it without lengths; `hidden[-1]` of the classifiers), after dropout `p`.
    LastHidden { dropout: f32 },
    /// Every step's output (the character models), logits `[B * T, V]`.
    PerStep,
    /// `cat(hidden[-2], hidden[-1])`: the last layer's two directions.
    BothDirections,
}

/// Embedding (unless the input is already features) -> recurrent layers -> Linear.
pub struct RecurrentModel {
    pub embedding: Option<Embedding>,
    pub rnn: Recurrent,
    pub fc: Linear,
    pub readout: Readout,
}

/// What [`RecurrentModel::forward`] returns.
pub struct Forward {
    pub logits: Var,
    pub states: RecurrentStates,
}

/// Shape of a [`RecurrentModel`]: names and sizes as the chapter's constructors.
pub struct Spec<'a> {
    /// The recurrent module's attribute name (`rnn`, `lstm`, `gru`).
    pub rnn_name: &'a str,
    pub config: RecurrentConfig,
    /// `Some((vocab, padding_idx))` for token inputs.
    pub embedding: Option<(usize, Option<u32>)>,
    pub outputs: usize,
    pub readout: Readout,
}

impl RecurrentModel {
    pub fn new(ctx: &Context, store: &mut ParamStore, seed: u64, spec: Spec<'_>) -> Result<Self> {
        let mut rng = StdRng::seed_from_u64(seed);
        let embedding = match spec.embedding {
            Some((vocab, padding_idx)) => Some(Embedding::new(
                ctx,
                store,
                &mut rng,
                "embedding",
                vocab,
                spec.config.input_size,
                padding_idx,
            )?),
            None => None,
        };
        let rnn = Recurrent::new(ctx, store, &mut rng, spec.rnn_name, spec.config)?;
        let width = match spec.readout {
            Readout::BothDirections => 2 * spec.config.hidden_size,
            _ => spec.config.hidden_size,
        };
        let fc = Linear::new(ctx, store, &mut rng, "fc", width, spec.outputs, true)?;
        Ok(RecurrentModel {
            embedding,
            rnn,
            fc,
            readout: spec.readout,
        })
    }

    /// `SimpleRNN(input_size, hidden_size, output_size)`: nn.RNN + fc on the last step.
    pub fn simple_rnn(
        ctx: &Context,
        store: &mut ParamStore,
        input: usize,
        hidden: usize,
        output: usize,
    ) -> Result<Self> {
        let spec = Spec {
            rnn_name: "rnn",
            config: RecurrentConfig::new(CellKind::Rnn(Nonlinearity::Tanh), input, hidden),
            embedding: None,
            outputs: output,
            readout: Readout::LastHidden { dropout: 0.0 },
        };
        Self::new(ctx, store, 0, spec)
    }

    /// `CharRNN(vocab_size, embed_size, hidden_size)`: embedding -> nn.RNN -> fc per step.
    pub fn char_rnn(ctx: &Context, store: &mut ParamStore, vocab: usize, embed: usize, hidden: usize) -> Result<Self> {
        let spec = Spec {
            rnn_name: "rnn",
            config: RecurrentConfig::new(CellKind::Rnn(Nonlinearity::Tanh), embed, hidden),
            embedding: Some((vocab, None)),
            outputs: vocab,
            readout: Readout::PerStep,
        };
        Self::new(ctx, store, 0, spec)
    }

    /// `SentimentLSTM(vocab, embed, hidden, output, n_layers, dropout)`: embedding ->
    /// LSTM with dropout between layers -> dropout -> fc on `hidden[-1]`.
    #[allow(clippy::too_many_arguments)]
    pub fn sentiment_lstm(
        ctx: &Context,
        store: &mut ParamStore,
        vocab: usize,
        embed: usize,
        hidden: usize,
        output: usize,
        layers: usize,
        dropout: f32,
    ) -> Result<Self> {
        let spec = Spec {
            rnn_name: "lstm",
            config: RecurrentConfig {
                num_layers: layers,
                dropout,
                ..RecurrentConfig::new(CellKind::Lstm, embed, hidden)
            },
            embedding: Some((vocab, None)),
            outputs: output,
            readout: Readout::LastHidden { dropout },
        };
        Self::new(ctx, store, 0, spec)
    }

    /// `TextClassifierGRU(vocab, embed, hidden, output)`: embedding -> GRU -> fc on `hidden[-1]`.
    pub fn text_classifier_gru(
        ctx: &Context,
        store: &mut ParamStore,
        vocab: usize,
        embed: usize,
        hidden: usize,
        output: usize,
    ) -> Result<Self> {
        let spec = Spec {
            rnn_name: "gru",
            config: RecurrentConfig::new(CellKind::Gru, embed, hidden),
            embedding: Some((vocab, None)),
            outputs: output,
            readout: Readout::LastHidden { dropout: 0.0 },
        };
        Self::new(ctx, store, 0, spec)
    }

    /// `CharLevelRNN(vocab, embed, hidden, n_layers)`: embedding -> LSTM -> fc per step.
    pub fn char_level_rnn(
        ctx: &Context,
        store: &mut ParamStore,
        vocab: usize,
        embed: usize,
        hidden: usize,
        layers: usize,
    ) -> Result<Self> {
        let spec = Spec {
            rnn_name: "lstm",
            config: RecurrentConfig {
                num_layers: layers,
                ..RecurrentConfig::new(CellKind::Lstm, embed, hidden)
            },
            embedding: Some((vocab, None)),
            outputs: vocab,
            readout: Readout::PerStep,
        };
        Self::new(ctx, store, 0, spec)
    }

    /// A 2-layer bidirectional LSTM/GRU classifier (`rnn`), `<pad>` = 0 as padding_idx,
    /// fc on `cat(hidden[-2], hidden[-1])`.
    pub fn bidirectional_classifier(
        ctx: &Context,
        store: &mut ParamStore,
        seed: u64,
        kind: CellKind,
        (vocab, embed, hidden, output): (usize, usize, usize, usize),
    ) -> Result<Self> {
        let spec = Spec {
            rnn_name: "rnn",
            config: RecurrentConfig {
                num_layers: 2,
                bidirectional: true,
                ..RecurrentConfig::new(kind, embed, hidden)
            },
            embedding: Some((vocab, Some(0))),
            outputs: output,
            readout: Readout::BothDirections,
        };
        Self::new(ctx, store, seed, spec)
    }

    /// `x` is token ids `[B, T]` (u32) with an embedding, else features `[B, T, I]`.
    pub fn forward(&self, g: &mut Graph<'_>, x: &Tensor, lengths: Option<&Lengths>) -> Result<Forward> {
        let input = match &self.embedding {
            Some(embedding) => embedding.forward(g, x)?,
            None => g.input(x),
        };
        let states = self.rnn.forward(g, input, lengths)?;
        let logits = match self.readout {
            Readout::LastHidden { dropout } => {
                let last = *states.h_n.last().expect("at least one layer");
                let last = g.dropout(last, dropout)?;
                self.fc.forward(g, last)?
            }
            Readout::PerStep => {
                let logits = self.fc.forward(g, states.output)?;
                let shape = g.value(logits).shape().to_vec();
                g.reshape(logits, &[shape[0] * shape[1], shape[2]])?
            }
            Readout::BothDirections => {
                let n = states.h_n.len();
                let both = g.concat(states.h_n[n - 2], states.h_n[n - 1])?;
                self.fc.forward(g, both)?
            }
        };
        Ok(Forward { logits, states })
    }
}

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
    let encoder = Encoder::new(ctx, store, &mut rng, "encoder", src_vocab, emb, hidden, None)?;
    let attention = attention.then_some(AttentionKind::Bahdanau);
    let decoder = Decoder::new(ctx, store, &mut rng, "decoder", tgt_vocab, emb, hidden, None, attention)?;
    Ok(Seq2Seq { encoder, decoder })
}
