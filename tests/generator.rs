//! The game generator (nn::generator): each step's logits, probabilities and hidden
//! state equal the batch forward of the same model (Graph, inference) over the same
//! tokens, whether the tokens are fed (step_with) or drawn and fed back on the GPU
//! (step); resetting one slot restarts only that stream; a run is reproducible and does
//! not depend on how steps are split over submissions; bad arguments are errors.

mod common;

use common::{assert_close, ctx, to_f64, Tolerance};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tsumugi::graph::{Graph, ParamStore};
use tsumugi::kernels::rnn_cell::Nonlinearity;
use tsumugi::nn::generator::Generator;
use tsumugi::nn::models::RecurrentModel;
use tsumugi::nn::{embedding, linear, recurrent, EmbeddingConfig, VarBuilder};
use tsumugi::nn::{CellKind, Embedding, Linear, Recurrent, RecurrentConfig};
use tsumugi::sampling::Sampling;
use tsumugi::{Context, DType, Error, Tensor};

struct Model {
    store: ParamStore,
    embedding: Embedding,
    rnn: Recurrent,
    fc: Linear,
    hidden: usize,
}

fn model(ctx: &Context, kind: CellKind, layers: usize, vocab: usize, hidden: usize, seed: u64) -> Model {
    let mut store = ParamStore::new();
    let mut rng = StdRng::seed_from_u64(seed);
    let embed = 6;
    let embedding = embedding(
        vocab,
        embed,
        EmbeddingConfig { padding_idx: None },
        VarBuilder::with_prefix(ctx, &mut store, &mut rng, "embedding"),
    )
    .unwrap();
    let config = RecurrentConfig {
        num_layers: layers,
        ..RecurrentConfig::new(kind, embed, hidden)
    };
    let rnn = recurrent(config, VarBuilder::with_prefix(ctx, &mut store, &mut rng, "rnn")).unwrap();
    let fc = linear(hidden, vocab, VarBuilder::with_prefix(ctx, &mut store, &mut rng, "fc")).unwrap();
    Model {
        store,
        embedding,
        rnn,
        fc,
        hidden,
    }
}

impl Model {
    fn generator(&self, streams: usize, sampling: Sampling) -> Generator {
        Generator::new(
            ctx(),
            &self.store,
            &self.embedding,
            &self.rnn,
            &self.fc,
            streams,
            sampling,
        )
        .unwrap()
    }

    /// The batch forward over ids `[B, T]`: logits `[B, T, V]` and the last layer's
    /// output `[B, T, H]`.
    fn batch(&mut self, ids: &[u32], b: usize, t: usize) -> (Vec<f32>, Vec<f32>) {
        let ctx = ctx();
        let ids = Tensor::from_slice(ctx, ids, &[b, t]).unwrap();
        let mut g = Graph::eval(ctx, &mut self.store);
        let x = self.embedding.forward(&mut g, &ids).unwrap();
        let output = self.rnn.forward(&mut g, x, None).unwrap().output;
        let logits = self.fc.forward(&mut g, output).unwrap();
        let (logits, output) = (g.value(logits).clone(), g.value(output).clone());
        g.submit();
        (logits.to_vec().unwrap(), output.to_vec().unwrap())
    }
}

/// Column t of a `[B, T, W]` array: `[B, W]`.
fn at(values: &[f32], b: usize, t: usize, steps: usize, width: usize) -> Vec<f64> {
    (0..b)
        .flat_map(|row| {
            let start = (row * steps + t) * width;
            to_f64(&values[start..start + width])
        })
        .collect()
}

fn softmax_rows(logits: &[f64], v: usize) -> Vec<f64> {
    logits
        .chunks(v)
        .flat_map(|row| {
            let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = row.iter().map(|x| (x - m).exp()).sum();
            row.iter().map(move |x| (x - m).exp() / sum).collect::<Vec<_>>()
        })
        .collect()
}

const TOL: Tolerance = Tolerance { atol: 2e-5, rtol: 2e-4 };

fn fed_steps_match_batch(kind: CellKind, layers: usize, hidden: usize, case: &str) {
    let ctx = ctx();
    let (b, t, v) = (3, 6, 11);
    let mut m = model(ctx, kind, layers, v, hidden, 5);
    let mut rng = StdRng::seed_from_u64(6);
    let ids: Vec<u32> = (0..b * t).map(|_| rng.random_range(0..v as u32)).collect();
    let (logits, output) = m.batch(&ids, b, t);
    let mut generator = m.generator(b, Sampling::default());
    for step in 0..t {
        let column: Vec<u32> = (0..b).map(|row| ids[row * t + step]).collect();
        let input = generator.upload_tokens(&column).unwrap();
        let mut encoder = ctx.create_encoder();
        generator.step_with(&mut encoder, &input).unwrap();
        ctx.submit(encoder);
        let case = format!("{case} step {step}");
        let want = at(&logits, b, step, t, v);
        assert_close("logits", &case, &generator.logits().to_vec().unwrap(), &want, TOL);
        let probs = generator.probabilities().to_vec().unwrap();
        assert_close("probabilities", &case, &probs, &softmax_rows(&want, v), TOL);
        let hidden_state = generator.hidden(layers - 1).unwrap().to_vec().unwrap();
        assert_close("hidden", &case, &hidden_state, &at(&output, b, step, t, m.hidden), TOL);
    }
}

#[test]
fn generator_step_with_matches_batch_forward_lstm_2_layers_h12() {
    fed_steps_match_batch(CellKind::Lstm, 2, 12, "lstm l2 h12");
}

#[test]
fn generator_step_with_matches_batch_forward_gru_2_layers_h16() {
    fed_steps_match_batch(CellKind::Gru, 2, 16, "gru l2 h16");
}

#[test]
fn generator_step_with_matches_batch_forward_rnn_tanh_2_layers_and_relu() {
    fed_steps_match_batch(CellKind::Rnn(Nonlinearity::Tanh), 2, 10, "rnn tanh l2 h10");
    fed_steps_match_batch(CellKind::Rnn(Nonlinearity::Relu), 1, 8, "rnn relu l1 h8");
}

/// The chapter's character models from nn::models (CharRNN: nn.RNN; CharLevelRNN: a
/// 2-layer LSTM) run as generators; a step equals the model's own forward, and a
/// classifier is refused.
#[test]
fn generator_from_model_runs_the_chapters_character_models() {
    let ctx = ctx();
    let (b, t, v) = (2, 4, 10);
    let ids: Vec<u32> = vec![1, 4, 2, 9, 0, 3, 3, 7];
    for (name, char_level) in [("char_rnn", false), ("char_level_rnn", true)] {
        let mut store = ParamStore::new();
        let mut rng = StdRng::seed_from_u64(2);
        let model = if char_level {
            RecurrentModel::char_level_rnn(ctx, &mut store, &mut rng, v, 6, 8, 2).unwrap()
        } else {
            RecurrentModel::char_rnn(ctx, &mut store, &mut rng, v, 6, 8).unwrap()
        };
        let ids_t = Tensor::from_slice(ctx, &ids, &[b, t]).unwrap();
        let mut g = Graph::eval(ctx, &mut store);
        let logits = model.forward(&mut g, &ids_t, None).unwrap().logits;
        let logits = g.value(logits).clone();
        g.submit();
        let logits: Vec<f32> = logits.to_vec().unwrap(); // [B * T, V]
        let mut generator = Generator::from_model(ctx, &store, &model, b, Sampling::default()).unwrap();
        for step in 0..t {
            let input = generator.upload_tokens(&[ids[step], ids[t + step]]).unwrap();
            let mut encoder = ctx.create_encoder();
            generator.step_with(&mut encoder, &input).unwrap();
            ctx.submit(encoder);
            let got: Vec<f32> = generator.logits().to_vec().unwrap();
            assert_close(
                "logits",
                &format!("{name} step {step}"),
                &got,
                &at(&logits, b, step, t, v),
                TOL,
            );
        }
    }
    let mut store = ParamStore::new();
    let mut rng = StdRng::seed_from_u64(2);
    let classifier = RecurrentModel::sentiment_lstm(ctx, &mut store, &mut rng, 10, 6, 8, 2, 1, 0.0).unwrap();
    let err = Generator::from_model(ctx, &store, &classifier, 1, Sampling::default()).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument { message } if message.contains("per") || message.contains("every step")),
        "{err}"
    );
}

/// Free-running: the drawn tokens are fed back on the GPU, so the batch forward over
/// (start token, draws so far) must give each step's logits. The same run encoded into
/// a single encoder (no submission between steps) draws the same tokens.
fn free_running_matches_batch(kind: CellKind, case: &str) {
    let ctx = ctx();
    let (b, t, v) = (4, 7, 13);
    let mut m = model(ctx, kind, 2, v, 8, 9);
    let sampling = Sampling {
        temperature: 0.9,
        top_k: Some(6),
        seed: 42,
    };
    let mut generator = m.generator(b, sampling);
    let starts = [1u32, 5, 0, 12];
    let mut encoder = ctx.create_encoder();
    for (slot, &start) in starts.iter().enumerate() {
        generator.reset_slot(&mut encoder, slot, start).unwrap();
    }
    ctx.submit(encoder);
    let mut inputs: Vec<Vec<u32>> = starts.iter().map(|&s| vec![s]).collect();
    let mut step_logits = Vec::new();
    for _ in 0..t {
        let mut encoder = ctx.create_encoder();
        generator.step(&mut encoder).unwrap();
        ctx.submit(encoder);
        step_logits.push(generator.logits().to_vec::<f32>().unwrap());
        let drawn: Vec<u32> = generator.tokens().to_vec().unwrap();
        for (row, &token) in drawn.iter().enumerate() {
            inputs[row].push(token);
        }
    }
    // The batch forward over each stream's inputs (its start token and every draw but
    // the last).
    let ids: Vec<u32> = inputs.iter().flat_map(|row| row[..t].to_vec()).collect();
    let (logits, _) = m.batch(&ids, b, t);
    for (step, got) in step_logits.iter().enumerate() {
        assert_close(
            "logits",
            &format!("{case} step {step}"),
            got,
            &at(&logits, b, step, t, v),
            TOL,
        );
    }

    let mut again = m.generator(b, sampling);
    let mut encoder = ctx.create_encoder();
    for (slot, &start) in starts.iter().enumerate() {
        again.reset_slot(&mut encoder, slot, start).unwrap();
    }
    for _ in 0..t {
        again.step(&mut encoder).unwrap();
    }
    ctx.submit(encoder);
    let last: Vec<u32> = inputs.iter().map(|row| row[t]).collect();
    assert_eq!(
        again.tokens().to_vec::<u32>().unwrap(),
        last,
        "{case}: one encoder for all steps"
    );
    assert_eq!(again.steps_taken(), t as u64);
}

#[test]
fn generator_free_running_steps_match_batch_forward_lstm() {
    free_running_matches_batch(CellKind::Lstm, "lstm");
}

#[test]
fn generator_free_running_steps_match_batch_forward_gru() {
    free_running_matches_batch(CellKind::Gru, "gru");
}

#[test]
fn generator_reset_slot_restarts_one_stream_and_leaves_the_others() {
    let ctx = ctx();
    let (b, v) = (3, 9);
    let mut m = model(ctx, CellKind::Lstm, 2, v, 8, 13);
    let mut generator = m.generator(b, Sampling::default());
    let prompt = [[2u32, 7, 4], [1, 1, 8]];
    let mut encoder = ctx.create_encoder();
    let inputs: Vec<Tensor> = prompt.iter().map(|col| generator.upload_tokens(col).unwrap()).collect();
    for input in &inputs {
        generator.step_with(&mut encoder, input).unwrap();
    }
    generator.reset_slot(&mut encoder, 1, 3).unwrap();
    ctx.submit(encoder);
    // Slot 1's hidden state was cleared by the reset; the others still hold theirs.
    let hidden: Vec<f32> = generator.hidden(1).unwrap().to_vec().unwrap();
    assert!(
        hidden[8..16].iter().all(|&h| h == 0.0),
        "reset row: {:?}",
        &hidden[8..16]
    );
    assert!(hidden[..8].iter().any(|&h| h != 0.0));
    let drawn: Vec<u32> = generator.tokens().to_vec().unwrap();
    assert_eq!(drawn[1], 3, "the start token replaces slot 1's draw");
    let mut encoder = ctx.create_encoder();
    generator.step(&mut encoder).unwrap();
    ctx.submit(encoder);
    let got: Vec<f32> = generator.logits().to_vec().unwrap();
    // Slots 0 and 2 continue their three-token sequence; slot 1 starts over at token 3.
    let ids: Vec<u32> = vec![2, 1, drawn[0], 3, 0, 0, 4, 8, drawn[2]];
    let (logits, _) = m.batch(&ids, 3, 3);
    let want_cont = at(&logits, 3, 2, 3, v);
    let want_fresh = at(&logits, 3, 0, 3, v);
    assert_close("logits slot 0", "after reset", &got[..v], &want_cont[..v], TOL);
    assert_close(
        "logits slot 1",
        "after reset",
        &got[v..2 * v],
        &want_fresh[v..2 * v],
        TOL,
    );
    assert_close("logits slot 2", "after reset", &got[2 * v..], &want_cont[2 * v..], TOL);
}

#[test]
fn generator_rejects_bad_arguments_with_clear_errors() {
    let ctx = ctx();
    let m = model(ctx, CellKind::Lstm, 1, 7, 4, 1);
    let mut generator = m.generator(2, Sampling::default());
    let mut encoder = ctx.create_encoder();
    let invalid = |err: Error, needle: &str| {
        assert!(
            matches!(&err, Error::InvalidArgument { message } if message.contains(needle)),
            "expected an InvalidArgument about {needle}, got {err}"
        );
    };
    invalid(generator.reset_slot(&mut encoder, 2, 0).unwrap_err(), "slot 2");
    invalid(generator.reset_slot(&mut encoder, 0, 7).unwrap_err(), "start token 7");
    invalid(generator.upload_tokens(&[1, 9]).unwrap_err(), "id 9");
    assert!(matches!(
        generator.upload_tokens(&[1]).unwrap_err(),
        Error::ShapeMismatch { .. }
    ));
    let floats = Tensor::zeros(ctx, &[2], DType::F32).unwrap();
    assert!(matches!(
        generator.step_with(&mut encoder, &floats).unwrap_err(),
        Error::DType { .. }
    ));
    let three = Tensor::zeros(ctx, &[3], DType::U32).unwrap();
    assert!(matches!(
        generator.step_with(&mut encoder, &three).unwrap_err(),
        Error::ShapeMismatch { .. }
    ));
    for sampling in [
        Sampling {
            temperature: 0.0,
            ..Sampling::default()
        },
        Sampling {
            temperature: f32::NAN,
            ..Sampling::default()
        },
    ] {
        invalid(generator.set_sampling(sampling).unwrap_err(), "temperature");
    }
    for k in [0, 8] {
        let sampling = Sampling {
            top_k: Some(k),
            ..Sampling::default()
        };
        invalid(generator.set_sampling(sampling).unwrap_err(), "top_k");
    }
    invalid(generator.hidden(1).unwrap_err(), "layer 1");
    let new = |streams, rnn: &Recurrent| {
        Generator::new(ctx, &m.store, &m.embedding, rnn, &m.fc, streams, Sampling::default())
    };
    invalid(new(0, &m.rnn).unwrap_err(), "streams");
    // The modules of one store with another store's (empty) parameters.
    let empty = ParamStore::new();
    invalid(
        Generator::new(ctx, &empty, &m.embedding, &m.rnn, &m.fc, 1, Sampling::default()).unwrap_err(),
        "not a parameter of this store",
    );
    let mut store = ParamStore::new();
    let mut rng = StdRng::seed_from_u64(0);
    let bidirectional = RecurrentConfig {
        bidirectional: true,
        ..RecurrentConfig::new(CellKind::Lstm, 6, 4)
    };
    let rnn = recurrent(bidirectional, VarBuilder::with_prefix(ctx, &mut store, &mut rng, "rnn")).unwrap();
    invalid(
        Generator::new(ctx, &store, &m.embedding, &rnn, &m.fc, 1, Sampling::default()).unwrap_err(),
        "bidirectional",
    );
    // Nothing bad was encoded: the encoder still submits cleanly.
    ctx.submit(encoder);
    ctx.wait_idle_blocking().unwrap();
}
