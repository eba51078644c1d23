//! Golden tests against PyTorch: the chapter's models (SimpleRNN, CharRNN, SentimentLSTM,
//! TextClassifierGRU, Seq2Seq, Seq2SeqWithAttention, CharLevelRNN) and 2-layer
//! bidirectional LSTM/GRU classifiers over per-row lengths, each loaded from the weights
//! PyTorch initialised (by their state-dict names, strictly) and run for one training
//! step: the forward results and the loss must equal PyTorch's within 1e-5, every
//! parameter's gradient and its value after one Adam step within 1e-4 (|got - want| <=
//! tol + tol |want|).
//!
//! The files in `tests/golden/` are written by `tests/golden/make_golden.py` (run by hand
//! when a model changes: `pip install torch safetensors numpy`, then
//! `python tests/golden/make_golden.py`); CI runs only this side. Run with `--nocapture`
//! to see the largest error of every quantity.

mod common;

use std::collections::BTreeMap;

use common::models::seq2seq;
use common::{assert_close, ctx, to_f64, Tolerance};
use rand::rngs::StdRng;
use rand::SeedableRng;
use safetensors::tensor::{Dtype, SafeTensors};
use tsumugi::graph::{Graph, ParamStore, Var};
use tsumugi::io::{load_state_dict_from_bytes, LoadOptions};
use tsumugi::kernels::Lengths;
use tsumugi::loss::CrossEntropy;
use tsumugi::nn::models::RecurrentModel;
use tsumugi::nn::CellKind;
use tsumugi::optim::Adam;
use tsumugi::Tensor;

/// The learning rate of the Adam step in every file (checked against its metadata).
const LR: f64 = 0.01;
/// Forward results and the loss.
const FORWARD: Tolerance = Tolerance { atol: 1e-5, rtol: 1e-5 };
/// Gradients and the weights after the Adam step.
const STEP: Tolerance = Tolerance { atol: 1e-4, rtol: 1e-4 };
const PAD: u32 = 0;

/// One golden file and the largest error seen per quantity.
struct Golden {
    case: &'static str,
    bytes: Vec<u8>,
    worst: BTreeMap<String, f64>,
}

impl Golden {
    fn open(case: &'static str) -> Golden {
        let path = format!("{}/tests/golden/{case}.safetensors", env!("CARGO_MANIFEST_DIR"));
        let bytes = std::fs::read(&path).unwrap_or_else(|err| panic!("{path}: {err}"));
        let golden = Golden {
            case,
            bytes,
            worst: BTreeMap::new(),
        };
        let (_, metadata) = SafeTensors::read_metadata(&golden.bytes).expect("a safetensors file");
        let about = metadata
            .metadata()
            .as_ref()
            .and_then(|m| m.get("golden"))
            .cloned()
            .unwrap_or_default();
        assert!(about.starts_with(&format!("lr={LR};")), "{case}: metadata {about:?}");
        golden
    }

    fn file(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("a safetensors file")
    }

    fn f32(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        let file = self.file();
        let view = file
            .tensor(name)
            .unwrap_or_else(|_| panic!("{}: no tensor {name}", self.case));
        assert_eq!(view.dtype(), Dtype::F32, "{}: {name}", self.case);
        let values = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        (view.shape().to_vec(), values)
    }

    /// PyTorch's int64 ids (or lengths) as u32.
    fn u32(&self, name: &str) -> (Vec<usize>, Vec<u32>) {
        let file = self.file();
        let view = file
            .tensor(name)
            .unwrap_or_else(|_| panic!("{}: no tensor {name}", self.case));
        assert_eq!(view.dtype(), Dtype::I64, "{}: {name}", self.case);
        let values = view
            .data()
            .chunks_exact(8)
            .map(|c| {
                let mut word = [0u8; 8];
                word.copy_from_slice(c);
                u32::try_from(i64::from_le_bytes(word)).expect("an id in u32")
            })
            .collect();
        (view.shape().to_vec(), values)
    }

    fn ids(&self, name: &str) -> Tensor {
        let (shape, ids) = self.u32(name);
        Tensor::from_slice(ctx(), &ids, &shape).expect("upload ids")
    }

    fn features(&self, name: &str) -> Tensor {
        let (shape, values) = self.f32(name);
        Tensor::from_slice(ctx(), &values, &shape).expect("upload features")
    }

    fn names(&self, prefix: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .file()
            .names()
            .into_iter()
            .filter(|n| n.starts_with(prefix))
            .map(str::to_string)
            .collect();
        names.sort();
        names
    }

    /// PyTorch's initial weights into the store, strictly: every parameter of the
    /// tsumugi model has PyTorch's name, shape and dtype, and nothing is left over.
    fn load_weights(&self, store: &mut ParamStore) {
        let options = LoadOptions::with_prefix("param");
        let report = load_state_dict_from_bytes(&self.bytes, self.case, store, &options)
            .unwrap_or_else(|err| panic!("{}: {err}", self.case));
        assert_eq!(report.loaded, self.names("param."), "{}", self.case);
        assert_eq!(report.loaded.len(), store.entries().count());
    }

    /// Compares `got` with the file's tensor `name`, recording the largest error under
    /// `quantity`.
    fn compare(&mut self, quantity: &str, name: &str, got: &[f32], tol: Tolerance) {
        let (_, want) = self.f32(name);
        let want = to_f64(&want);
        assert_close(name, self.case, got, &want, tol);
        let err = got
            .iter()
            .zip(&want)
            .map(|(&g, &w)| (f64::from(g) - w).abs())
            .fold(0.0, f64::max);
        let worst = self.worst.entry(quantity.to_string()).or_insert(0.0);
        *worst = worst.max(err);
    }

    /// Every parameter's gradient and its value after the Adam step.
    fn compare_step(&mut self, store: &ParamStore) {
        let names: Vec<String> = store.entries().map(|(name, _, _)| name.to_string()).collect();
        assert_eq!(names.len(), self.names("grad.").len(), "{}: gradients", self.case);
        for name in names {
            let id = store.find(&name).expect("a parameter");
            let value = store.value(id);
            // No gradient: nothing reached it (Bahdanau's V.bias, which cancels in the
            // softmax); PyTorch's is zero up to float residue.
            let grad = match store.grad(id) {
                Some(grad) => grad.to_vec().expect("read a gradient"),
                None => vec![0.0; value.len()],
            };
            self.compare("grad", &format!("grad.{name}"), &grad, STEP);
            let after: Vec<f32> = value.to_vec().expect("read a parameter");
            self.compare("adam", &format!("adam.{name}"), &after, STEP);
        }
    }

    fn report(&self) {
        let worst: Vec<String> = self.worst.iter().map(|(q, e)| format!("{q} {e:.1e}")).collect();
        eprintln!("golden {}: max abs error: {}", self.case, worst.join(", "));
    }
}

/// Forward results to compare: the file's `output.<name>` and the values whose
/// concatenation (in order) is that tensor.
type Outputs = Vec<(&'static str, Vec<Var>)>;

/// Loads PyTorch's weights, runs `forward` (eval mode: dropout off, backward still runs),
/// the backward and one Adam step in one submission, and compares the outputs, the
/// loss, every gradient and every updated weight with the file.
fn one_step(
    case: &'static str,
    store: &mut ParamStore,
    forward: impl FnOnce(&mut Graph<'_>, &Golden) -> (Var, Outputs),
) {
    let ctx = ctx();
    let mut golden = Golden::open(case);
    golden.load_weights(store);
    store.zero_grad();
    let mut g = Graph::eval(ctx, store);
    let (loss, outputs) = forward(&mut g, &golden);
    let loss_t = g.value(loss).clone();
    let outputs: Vec<(&str, Vec<Tensor>)> = outputs
        .into_iter()
        .map(|(name, vars)| (name, vars.iter().map(|&v| g.value(v).clone()).collect()))
        .collect();
    g.backward(loss).expect("backward");
    let adam = Adam {
        lr: LR,
        ..Adam::default()
    };
    g.adam_step(&adam, 1).expect("adam step");
    g.submit();
    for (name, tensors) in outputs {
        let got: Vec<f32> = tensors
            .iter()
            .flat_map(|t| t.to_vec::<f32>().expect("read an output"))
            .collect();
        golden.compare(name, &format!("output.{name}"), &got, FORWARD);
    }
    golden.compare("loss", "loss", &loss_t.to_vec::<f32>().expect("read the loss"), FORWARD);
    golden.compare_step(store);
    golden.report();
}

/// A classifier or character model: logits from `input.ids` (or `input.x`), loss
/// against `input.targets`, the recurrent states as `output.h_n` / `output.c_n`.
fn recurrent_case(case: &'static str, store: &mut ParamStore, model: &RecurrentModel, extra: &[&'static str]) {
    let extra = extra.to_vec();
    one_step(case, store, |g, golden| {
        let x = match model.embedding {
            Some(_) => golden.ids("input.ids"),
            None => golden.features("input.x"),
        };
        let lengths = golden.names("input.lengths").first().map(|name| {
            let (_, lengths) = golden.u32(name);
            Lengths::new(ctx(), &lengths, x.shape()[1]).expect("lengths")
        });
        let forward = model.forward(g, &x, lengths.as_ref()).expect("forward");
        let targets = golden.ids("input.targets");
        let loss = g
            .cross_entropy(forward.logits, &targets, &CrossEntropy::default())
            .expect("loss");
        let mut outputs: Outputs = vec![("logits", vec![forward.logits]), ("h_n", forward.states.h_n.clone())];
        if !forward.states.c_n.is_empty() {
            outputs.push(("c_n", forward.states.c_n.clone()));
        }
        for name in &extra {
            // The last layer's whole output: SimpleRNN's `out`, the classifiers' padded one.
            outputs.push((name, vec![forward.states.output]));
        }
        (loss, outputs)
    });
}

#[test]
fn golden_simple_rnn_matches_pytorch() {
    let mut store = ParamStore::new();
    let model = RecurrentModel::simple_rnn(ctx(), &mut store, &mut StdRng::seed_from_u64(0), 3, 5, 2).expect("model");
    recurrent_case("simple_rnn", &mut store, &model, &["rnn_output"]);
}

#[test]
fn golden_char_rnn_matches_pytorch() {
    let mut store = ParamStore::new();
    let model = RecurrentModel::char_rnn(ctx(), &mut store, &mut StdRng::seed_from_u64(0), 8, 6, 10).expect("model");
    recurrent_case("char_rnn", &mut store, &model, &[]);
}

#[test]
fn golden_sentiment_lstm_two_layers_matches_pytorch() {
    let mut store = ParamStore::new();
    let model = RecurrentModel::sentiment_lstm(ctx(), &mut store, &mut StdRng::seed_from_u64(0), 12, 6, 8, 2, 2, 0.5)
        .expect("model");
    recurrent_case("sentiment_lstm", &mut store, &model, &[]);
}

#[test]
fn golden_text_classifier_gru_matches_pytorch() {
    let mut store = ParamStore::new();
    let model = RecurrentModel::text_classifier_gru(ctx(), &mut store, &mut StdRng::seed_from_u64(0), 12, 6, 8, 3)
        .expect("model");
    recurrent_case("text_classifier_gru", &mut store, &model, &[]);
}

#[test]
fn golden_char_level_rnn_two_layers_matches_pytorch() {
    let mut store = ParamStore::new();
    let model =
        RecurrentModel::char_level_rnn(ctx(), &mut store, &mut StdRng::seed_from_u64(0), 9, 6, 8, 2).expect("model");
    recurrent_case("char_level_rnn", &mut store, &model, &[]);
}

#[test]
fn golden_bidirectional_two_layer_lstm_with_lengths_matches_pytorch() {
    let mut store = ParamStore::new();
    let model = RecurrentModel::bidirectional_classifier(
        ctx(),
        &mut store,
        &mut StdRng::seed_from_u64(0),
        CellKind::Lstm,
        (10, 5, 6, 3),
    )
    .expect("model");
    recurrent_case("bilstm_lengths", &mut store, &model, &["output"]);
}

#[test]
fn golden_bidirectional_two_layer_gru_with_lengths_matches_pytorch() {
    let mut store = ParamStore::new();
    let model = RecurrentModel::bidirectional_classifier(
        ctx(),
        &mut store,
        &mut StdRng::seed_from_u64(0),
        CellKind::Gru,
        (10, 5, 6, 3),
    )
    .expect("model");
    recurrent_case("bigru_lengths", &mut store, &model, &["output"]);
}

/// The chapter's training step of a Seq2Seq: teacher forcing 1.0, so the decoder reads
/// `trg[:, t]` at step t; the loss over steps 1.. ignores `<pad>`. Before it, an inference
/// pass step by step compares the encoder, the decoder's final state and (with attention)
/// every step's weights.
fn seq2seq_case(case: &'static str, dims: (usize, usize, usize, usize), attention: bool) {
    let ctx = ctx();
    let mut store = ParamStore::new();
    let model = seq2seq(ctx, &mut store, 0, dims, attention).expect("model");
    let mut golden = Golden::open(case);
    golden.load_weights(&mut store);
    let src = golden.ids("input.src");
    let (trg_shape, trg) = golden.u32("input.trg");
    let (batch, steps) = (trg_shape[0], trg_shape[1]);
    // Decoder inputs trg[:, 0..T-1] as [B, 1] per step; targets trg[:, 1..] in (b, t) order.
    let step_inputs: Vec<Tensor> = (0..steps - 1)
        .map(|t| {
            let column: Vec<u32> = (0..batch).map(|b| trg[b * steps + t]).collect();
            Tensor::from_slice(ctx, &column, &[batch, 1]).expect("upload")
        })
        .collect();
    let targets: Vec<u32> = (0..batch)
        .flat_map(|b| trg[b * steps + 1..(b + 1) * steps].to_vec())
        .collect();
    let targets = Tensor::from_slice(ctx, &targets, &[targets.len()]).expect("upload");

    {
        let mut g = Graph::eval(ctx, &mut store);
        let (values, h, c) = model.encoder.forward(&mut g, &src, None).expect("encoder");
        let memory = model
            .decoder
            .attention
            .as_ref()
            .map(|attention| attention.memory(&mut g, values).expect("memory"));
        let mut state = (h, c);
        let mut weights = Vec::new();
        for ids in &step_inputs {
            let step = model
                .decoder
                .step(&mut g, ids, state, memory.as_ref(), None)
                .expect("decoder step");
            state = step.state;
            weights.extend(step.weights.map(|w| g.value(w).clone()));
        }
        let read = |v: Var, g: &Graph<'_>| g.value(v).clone();
        let outputs = [
            ("encoder_outputs", read(values, &g)),
            ("decoder_h", read(state.0, &g)),
            ("decoder_c", read(state.1, &g)),
        ];
        g.submit();
        for (name, tensor) in outputs {
            let got: Vec<f32> = tensor.to_vec().expect("read");
            golden.compare(name, &format!("output.{name}"), &got, FORWARD);
        }
        if attention {
            // [T-1, B, S]: one softmax over the source per step and row.
            let got: Vec<f32> = weights.iter().flat_map(|w| w.to_vec::<f32>().expect("read")).collect();
            golden.compare("attention", "output.attention", &got, FORWARD);
        }
    }
    let inference = std::mem::take(&mut golden.worst);

    one_step(case, &mut store, |g, _| {
        let mut rng = StdRng::seed_from_u64(0);
        let logits = model
            .forward(g, &src, None, &step_inputs, 1.0, &mut rng)
            .expect("seq2seq forward");
        let ce = CrossEntropy {
            ignore_index: Some(PAD),
            ..CrossEntropy::default()
        };
        let loss = g.cross_entropy(logits, &targets, &ce).expect("loss");
        (loss, vec![("logits", vec![logits])])
    });
    let worst: Vec<String> = inference.iter().map(|(q, e)| format!("{q} {e:.1e}")).collect();
    eprintln!("golden {case} (step by step): max abs error: {}", worst.join(", "));
}

#[test]
fn golden_seq2seq_matches_pytorch() {
    seq2seq_case("seq2seq", (9, 10, 6, 8), false);
}

#[test]
fn golden_seq2seq_with_attention_matches_pytorch() {
    seq2seq_case("seq2seq_attention", (13, 12, 8, 16), true);
}
