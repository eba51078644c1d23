//! The chapter's classifier and character models, built from the [`nn`](super) modules
//! under the chapter's attribute names (`embedding`, `rnn`/`lstm`/`gru`, `fc`), so their
//! state dicts are the PyTorch classes' (`tests/golden/make_golden.py` writes the same
//! classes in PyTorch, and the golden tests compare them): `SimpleRNN`, `CharRNN`,
//! `SentimentLSTM`, `TextClassifierGRU`, `CharLevelRNN`, and a bidirectional classifier.
//! The seq2seq models are in [`seq2seq`](super::seq2seq).

use rand::rngs::StdRng;

use super::{CellKind, Embedding, Linear, Recurrent, RecurrentConfig, RecurrentStates};
use crate::graph::{Graph, ParamStore, Var};
use crate::kernels::rnn_cell::Nonlinearity;
use crate::kernels::Lengths;
use crate::nn::{embedding, linear, recurrent, EmbeddingConfig, VarBuilder};
use crate::{Context, Error, Result, Tensor};

/// What the linear head reads.
#[derive(Clone, Copy, Debug)]
pub enum Readout {
    /// The last layer's final hidden state (SimpleRNN's `out[:, -1, :]`, which equals
    /// it without lengths; `hidden[-1]` of the classifiers), after dropout `p`.
    LastHidden {
        /// The dropout before `fc` (training only).
        dropout: f32,
    },
    /// Every step's output (the character models), logits `[B * T, V]`.
    PerStep,
    /// `cat(hidden[-2], hidden[-1])`: the last layer's two directions.
    BothDirections,
}

/// Embedding (unless the input is already features) -> recurrent layers -> Linear.
#[derive(Clone, Debug)]
pub struct RecurrentModel {
    /// `embedding`, for token inputs.
    pub embedding: Option<Embedding>,
    /// The recurrent layers (`rnn`, `lstm` or `gru`).
    pub rnn: Recurrent,
    /// `fc`
    pub fc: Linear,
    /// What `fc` reads.
    pub readout: Readout,
}

/// What [`RecurrentModel::forward`] returns.
#[derive(Clone, Debug)]
pub struct Forward {
    /// `[B, outputs]`, or `[B * T, outputs]` for [`Readout::PerStep`].
    pub logits: Var,
    /// The recurrent layers' outputs and final states.
    pub states: RecurrentStates,
}

/// Shape of a [`RecurrentModel`]: names and sizes as the chapter's constructors.
#[derive(Clone, Copy, Debug)]
pub struct Spec<'a> {
    /// The recurrent module's attribute name (`rnn`, `lstm`, `gru`).
    pub rnn_name: &'a str,
    /// The recurrent layers (with an embedding, `input_size` is its width).
    pub config: RecurrentConfig,
    /// `Some((vocab, padding_idx))` for token inputs.
    pub embedding: Option<(usize, Option<u32>)>,
    /// `fc`'s outputs (classes, or the vocabulary of a character model).
    pub outputs: usize,
    /// What `fc` reads.
    pub readout: Readout,
}

impl RecurrentModel {
    /// Registers the model's parameters, initialised from `rng` as PyTorch's defaults.
    pub fn new(ctx: &Context, store: &mut ParamStore, rng: &mut StdRng, spec: Spec<'_>) -> Result<Self> {
        let embedding = match spec.embedding {
            Some((vocab, padding_idx)) => Some(embedding(
                vocab,
                spec.config.input_size,
                EmbeddingConfig { padding_idx },
                VarBuilder::with_prefix(ctx, store, rng, "embedding"),
            )?),
            None => None,
        };
        let rnn = recurrent(spec.config, VarBuilder::with_prefix(ctx, store, rng, spec.rnn_name))?;
        let width = match spec.readout {
            Readout::BothDirections => 2 * spec.config.hidden_size,
            _ => spec.config.hidden_size,
        };
        let fc = linear(width, spec.outputs, VarBuilder::with_prefix(ctx, store, rng, "fc"))?;
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
        rng: &mut StdRng,
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
        Self::new(ctx, store, rng, spec)
    }

    /// `CharRNN(vocab_size, embed_size, hidden_size)`: embedding -> nn.RNN -> fc per step.
    pub fn char_rnn(
        ctx: &Context,
        store: &mut ParamStore,
        rng: &mut StdRng,
        vocab: usize,
        embed: usize,
        hidden: usize,
    ) -> Result<Self> {
        let spec = Spec {
            rnn_name: "rnn",
            config: RecurrentConfig::new(CellKind::Rnn(Nonlinearity::Tanh), embed, hidden),
            embedding: Some((vocab, None)),
            outputs: vocab,
            readout: Readout::PerStep,
        };
        Self::new(ctx, store, rng, spec)
    }

    /// `SentimentLSTM(vocab, embed, hidden, output, n_layers, dropout)`: embedding ->
    /// LSTM with dropout between layers -> dropout -> fc on `hidden[-1]`.
    #[allow(clippy::too_many_arguments)]
    pub fn sentiment_lstm(
        ctx: &Context,
        store: &mut ParamStore,
        rng: &mut StdRng,
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
        Self::new(ctx, store, rng, spec)
    }

    /// `TextClassifierGRU(vocab, embed, hidden, output)`: embedding -> GRU -> fc on `hidden[-1]`.
    pub fn text_classifier_gru(
        ctx: &Context,
        store: &mut ParamStore,
        rng: &mut StdRng,
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
        Self::new(ctx, store, rng, spec)
    }

    /// `CharLevelRNN(vocab, embed, hidden, n_layers)`: embedding -> LSTM -> fc per step.
    pub fn char_level_rnn(
        ctx: &Context,
        store: &mut ParamStore,
        rng: &mut StdRng,
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
        Self::new(ctx, store, rng, spec)
    }

    /// A 2-layer bidirectional LSTM/GRU classifier (`rnn`), `<pad>` = 0 as padding_idx,
    /// fc on `cat(hidden[-2], hidden[-1])`.
    pub fn bidirectional_classifier(
        ctx: &Context,
        store: &mut ParamStore,
        rng: &mut StdRng,
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
        Self::new(ctx, store, rng, spec)
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
                let last = *states
                    .h_n
                    .last()
                    .ok_or_else(|| Error::invalid("a model without recurrent layers"))?;
                let last = g.dropout(last, dropout)?;
                self.fc.forward(g, last)?
            }
            Readout::PerStep => {
                let logits = self.fc.forward(g, states.output)?;
                let shape = g.value(logits).shape().to_vec();
                g.reshape(logits, &[shape[0] * shape[1], shape[2]])?
            }
            Readout::BothDirections => {
                // h_n holds each layer's forward then backward state.
                let [.., forward, backward] = states.h_n[..] else {
                    return Err(Error::invalid("reading both directions needs a bidirectional layer"));
                };
                let both = g.concat(forward, backward)?;
                self.fc.forward(g, both)?
            }
        };
        Ok(Forward { logits, states })
    }
}
