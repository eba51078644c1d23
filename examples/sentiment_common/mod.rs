#![allow(dead_code)] // each example uses its own part of this module

//! What the `sentiment` and `pretrained_embeddings` examples share: the rt-polarity
//! data with its fixed held-out split, padded length-bucketed batches with per-row
//! lengths, the chapter's two classifiers, a training epoch and an evaluation.
//!
//! The split: the 10,662 sentences (negatives first, then positives, in file order) are
//! shuffled by an `StdRng` seeded with [`SPLIT_SEED`] (whatever `--seed` is), the first
//! 10 % (1,066) are the test set and the other 9,596 the training set. The vocabulary
//! comes from the training set only.

use std::path::Path;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use tsumugi::graph::{check_step_finite, Graph, ParamStore};
use tsumugi::kernels::Lengths;
use tsumugi::loss::CrossEntropy;
use tsumugi::metrics::ConfusionMatrix;
use tsumugi::nn::models::{Readout, RecurrentModel};
use tsumugi::nn::{linear, recurrent, VarBuilder};
use tsumugi::nn::{CellKind, Embedding, RecurrentConfig};
use tsumugi::optim::Adam;
use tsumugi::text::{word_tokens, Vocab};
use tsumugi::{Context, Tensor};

pub type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;

/// Seed of the train/test shuffle: fixed, so every run and every model sees the same split.
pub const SPLIT_SEED: u64 = 2005;
/// Class names, label 0 and 1.
pub const CLASSES: [&str; 2] = ["neg", "pos"];

/// A tokenised sentence and its label (0 negative, 1 positive).
#[derive(Clone, Debug)]
pub struct Labelled {
    pub tokens: Vec<String>,
    pub label: usize,
}

/// Reads a UTF-8 text file, naming it (and where the data should be) when it fails.
pub fn read_text(path: &Path) -> AnyResult<String> {
    let bytes = std::fs::read(path).map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    let text = String::from_utf8(bytes).map_err(|err| format!("{}: not UTF-8 ({err})", path.display()))?;
    // A byte-order mark is not part of the first sentence.
    Ok(text.strip_prefix('\u{feff}').map(str::to_string).unwrap_or(text))
}

/// `rt-polarity.neg` (label 0) and `rt-polarity.pos` (label 1) from `dir`, split into
/// (train, test) as the module docs say.
pub fn load_rt_polarity(dir: &Path) -> AnyResult<(Vec<Labelled>, Vec<Labelled>)> {
    let mut all = Vec::new();
    for (label, file) in [(0, "rt-polarity.neg"), (1, "rt-polarity.pos")] {
        let path = dir.join(file);
        let text = read_text(&path)?;
        let before = all.len();
        all.extend(text.lines().filter(|l| !l.trim().is_empty()).map(|line| Labelled {
            tokens: word_tokens(line),
            label,
        }));
        if all.len() == before {
            return Err(format!(
                "{}: no sentences (training on nothing would replace a model)",
                path.display()
            )
            .into());
        }
    }
    if all.len() < 10 {
        return Err(format!(
            "{}: {} sentences in all, too few for a 90/10 split with a test set",
            dir.display(),
            all.len()
        )
        .into());
    }
    all.shuffle(&mut StdRng::seed_from_u64(SPLIT_SEED));
    let test = all.len() / 10;
    let train = all.split_off(test);
    Ok((train, all))
}

/// `sentence<TAB>0|1` lines (the `--eval` format); a bad label names its line.
pub fn load_labelled_tsv(path: &Path) -> AnyResult<Vec<Labelled>> {
    let pairs = tsumugi::text::read_tsv(path)?;
    pairs
        .into_iter()
        .map(|pair| match pair.target.trim() {
            "0" | "1" => Ok(Labelled {
                tokens: word_tokens(&pair.source),
                label: usize::from(pair.target.trim() == "1"),
            }),
            other => Err(format!(
                "{} line {}: the label is {other:?}, expected 0 (negative) or 1 (positive)",
                path.display(),
                pair.line
            )
            .into()),
        })
        .collect()
}

/// A padded batch on the GPU: ids `[B, T]`, lengths, labels `[B]`.
pub struct Batch {
    pub ids: Tensor,
    pub lengths: Lengths,
    pub labels: Tensor,
    pub host_labels: Vec<usize>,
}

impl Batch {
    /// Pads `examples` with `<pad>`; an empty sentence becomes one `<unk>`.
    pub fn new(ctx: &Context, vocab: &Vocab, examples: &[&Labelled]) -> tsumugi::Result<Batch> {
        let rows: Vec<Vec<u32>> = examples
            .iter()
            .map(|e| {
                let ids = vocab.encode(&e.tokens);
                if ids.is_empty() {
                    vec![Vocab::UNK_ID]
                } else {
                    ids
                }
            })
            .collect();
        let steps = rows.iter().map(Vec::len).max().unwrap_or(1);
        let mut ids = vec![Vocab::PAD_ID; rows.len() * steps];
        for (b, row) in rows.iter().enumerate() {
            ids[b * steps..b * steps + row.len()].copy_from_slice(row);
        }
        let lengths: Vec<u32> = rows.iter().map(|r| r.len() as u32).collect();
        let host_labels: Vec<usize> = examples.iter().map(|e| e.label).collect();
        let labels: Vec<u32> = host_labels.iter().map(|&l| l as u32).collect();
        Ok(Batch {
            ids: Tensor::from_slice(ctx, &ids, &[rows.len(), steps])?,
            lengths: Lengths::new(ctx, &lengths, steps)?,
            labels: Tensor::from_slice(ctx, &labels, &[rows.len()])?,
            host_labels,
        })
    }
}

/// Length-bucketed batches: shuffled, sorted (stably) by length, cut into batches of
/// `size`, batch order shuffled; little of each batch is padding.
pub fn batches<'a>(examples: &'a [Labelled], size: usize, rng: &mut StdRng) -> Vec<Vec<&'a Labelled>> {
    let mut order: Vec<&Labelled> = examples.iter().collect();
    order.shuffle(rng);
    order.sort_by_key(|e| e.tokens.len());
    let mut batches: Vec<Vec<&Labelled>> = order.chunks(size.max(1)).map(<[&Labelled]>::to_vec).collect();
    batches.shuffle(rng);
    batches
}

/// Which of the chapter's classifiers, and its sizes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ModelSpec {
    /// `Lstm`: SentimentLSTM (2 layers, dropout); `Gru`: TextClassifierGRU (1 layer).
    pub kind: CellKind,
    pub vocab: usize,
    pub embed: usize,
    pub hidden: usize,
    pub layers: usize,
    pub dropout: f32,
}

impl ModelSpec {
    pub fn name(&self) -> &'static str {
        match self.kind {
            CellKind::Lstm => "lstm",
            _ => "gru",
        }
    }

    /// The chapter's constructor, or (with `embedding`) the same model around a given
    /// embedding; the recurrent layers and `fc` are drawn from `rng` either way.
    pub fn build(
        &self,
        ctx: &Context,
        store: &mut ParamStore,
        rng: &mut StdRng,
        embedding: Option<Embedding>,
    ) -> tsumugi::Result<RecurrentModel> {
        let Some(embedding) = embedding else {
            return match self.kind {
                CellKind::Lstm => RecurrentModel::sentiment_lstm(
                    ctx,
                    store,
                    rng,
                    self.vocab,
                    self.embed,
                    self.hidden,
                    2,
                    self.layers,
                    self.dropout,
                ),
                _ => RecurrentModel::text_classifier_gru(ctx, store, rng, self.vocab, self.embed, self.hidden, 2),
            };
        };
        let (rnn_name, config, dropout) = match self.kind {
            CellKind::Lstm => (
                "lstm",
                RecurrentConfig {
                    num_layers: self.layers,
                    dropout: self.dropout,
                    ..RecurrentConfig::new(CellKind::Lstm, self.embed, self.hidden)
                },
                self.dropout,
            ),
            _ => ("gru", RecurrentConfig::new(CellKind::Gru, self.embed, self.hidden), 0.0),
        };
        Ok(RecurrentModel {
            embedding: Some(embedding),
            rnn: recurrent(config, VarBuilder::with_prefix(ctx, store, rng, rnn_name))?,
            fc: linear(self.hidden, 2, VarBuilder::with_prefix(ctx, store, rng, "fc"))?,
            readout: Readout::LastHidden { dropout },
        })
    }

    /// `key=value` lines, saved beside the checkpoint.
    pub fn to_text(self) -> String {
        format!(
            "model={}\nvocab={}\nembed={}\nhidden={}\nlayers={}\ndropout={}\n",
            self.name(),
            self.vocab,
            self.embed,
            self.hidden,
            self.layers,
            self.dropout
        )
    }

    pub fn from_text(name: &str, text: &str) -> AnyResult<ModelSpec> {
        let get = |key: &str| -> AnyResult<&str> {
            text.lines()
                .find_map(|l| l.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
                .ok_or_else(|| format!("{name}: no {key}= line").into())
        };
        let number = |key: &str| -> AnyResult<usize> {
            let raw = get(key)?;
            raw.parse()
                .map_err(|_| format!("{name}: {key}={raw} is not a count").into())
        };
        let kind = match get("model")? {
            "lstm" => CellKind::Lstm,
            "gru" => CellKind::Gru,
            other => return Err(format!("{name}: unknown model {other:?}").into()),
        };
        let dropout_raw = get("dropout")?;
        Ok(ModelSpec {
            kind,
            vocab: number("vocab")?,
            embed: number("embed")?,
            hidden: number("hidden")?,
            layers: number("layers")?,
            dropout: dropout_raw
                .parse()
                .map_err(|_| format!("{name}: dropout={dropout_raw} is not a number"))?,
        })
    }
}

/// Training settings shared by both examples.
#[derive(Clone, Copy, Debug)]
pub struct TrainSettings {
    pub batch: usize,
    pub lr: f64,
    pub clip: f64,
    pub seed: u64,
}

/// One epoch over `train` in fresh length-bucketed batches: forward with lengths,
/// cross-entropy, backward, gradient clipping and the guarded Adam step. Returns each
/// step's loss; `step` counts Adam steps across epochs.
#[allow(clippy::too_many_arguments)]
pub fn train_epoch(
    ctx: &Context,
    store: &mut ParamStore,
    model: &RecurrentModel,
    vocab: &Vocab,
    train: &[Labelled],
    settings: &TrainSettings,
    step: &mut u64,
    rng: &mut StdRng,
) -> AnyResult<Vec<f32>> {
    let adam = Adam {
        lr: settings.lr,
        ..Adam::default()
    };
    let mut losses = Vec::new();
    for examples in batches(train, settings.batch, rng) {
        *step += 1;
        let batch = Batch::new(ctx, vocab, &examples)?;
        store.zero_grad();
        let mut g = Graph::train(ctx, store, settings.seed, *step);
        let logits = model.forward(&mut g, &batch.ids, Some(&batch.lengths))?.logits;
        let loss = g.cross_entropy(logits, &batch.labels, &CrossEntropy::default())?;
        let loss_value = g.value(loss).clone();
        g.backward(loss)?;
        let norm = g.clip_grad_norm(settings.clip)?;
        g.adam_step_guarded(&adam, *step, &norm)?;
        g.submit();
        let loss = loss_value.to_vec::<f32>()?[0];
        check_step_finite(*step, loss, norm.to_vec::<f32>()?[0])?;
        losses.push(loss);
    }
    Ok(losses)
}

/// Class probabilities `[N][2]` of `examples`, in batches of 256, in inference mode.
pub fn probabilities(
    ctx: &Context,
    store: &mut ParamStore,
    model: &RecurrentModel,
    vocab: &Vocab,
    examples: &[Labelled],
) -> AnyResult<Vec<[f32; 2]>> {
    let mut out = Vec::with_capacity(examples.len());
    for chunk in examples.chunks(256) {
        let refs: Vec<&Labelled> = chunk.iter().collect();
        let batch = Batch::new(ctx, vocab, &refs)?;
        let mut g = Graph::eval(ctx, store);
        let logits = model.forward(&mut g, &batch.ids, Some(&batch.lengths))?.logits;
        let value = g.value(logits).clone();
        g.submit();
        let logits = value.to_vec::<f32>()?;
        out.extend(logits.chunks(2).map(|l| {
            let m = l[0].max(l[1]);
            let (a, b) = ((l[0] - m).exp(), (l[1] - m).exp());
            [a / (a + b), b / (a + b)]
        }));
    }
    Ok(out)
}

/// The confusion matrix of the model's predictions (the likelier class) on `examples`.
pub fn evaluate(
    ctx: &Context,
    store: &mut ParamStore,
    model: &RecurrentModel,
    vocab: &Vocab,
    examples: &[Labelled],
) -> AnyResult<ConfusionMatrix> {
    let mut matrix = ConfusionMatrix::new(2)?;
    for (p, e) in probabilities(ctx, store, model, vocab, examples)?.iter().zip(examples) {
        matrix.add(e.label, usize::from(p[1] > p[0]))?;
    }
    Ok(matrix)
}

/// `--model lstm|gru`: the recurrent layer of the classifier.
pub fn parse_model(flag: &str, raw: Option<String>) -> AnyResult<CellKind> {
    match raw.as_deref() {
        Some("lstm") => Ok(CellKind::Lstm),
        Some("gru") => Ok(CellKind::Gru),
        Some(other) => Err(format!("{flag}: expected lstm or gru, got {other:?}").into()),
        None => Err(format!("{flag} needs a value (see --help)").into()),
    }
}

/// The training vocabulary: tokens seen at least `min_freq` times in `train`.
pub fn build_vocab(train: &[Labelled], min_freq: usize) -> Vocab {
    Vocab::build(train.iter().map(|e| &e.tokens), min_freq)
}
