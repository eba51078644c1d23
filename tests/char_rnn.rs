//! The chapter's "hello world" character model: an LSTM reads each character and predicts
//! the next; trained with Adam and gradient clipping it reaches a loss below 0.1, and the
//! clipped norm is reported without a readback inside the step.

mod common;

use common::ctx;
use rand::rngs::StdRng;
use rand::SeedableRng;
use tsumugi::graph::{Graph, ParamStore};
use tsumugi::loss::CrossEntropy;
use tsumugi::nn::{embedding, linear, recurrent, EmbeddingConfig, VarBuilder};
use tsumugi::nn::{CellKind, RecurrentConfig};
use tsumugi::optim::{Adam, Sgd};
use tsumugi::Tensor;

const TEXT: &str = "hello world";

fn train(kind: CellKind, steps: u64, sgd: bool) -> (f32, f32) {
    let ctx = ctx();
    let mut chars: Vec<char> = TEXT.chars().collect();
    chars.sort_unstable();
    chars.dedup();
    let id = |c: char| chars.iter().position(|&x| x == c).unwrap() as u32;
    let text: Vec<u32> = TEXT.chars().map(id).collect();
    let n = text.len() - 1;
    let inputs = Tensor::from_slice(ctx, &text[..n], &[1, n]).unwrap();
    let targets = Tensor::from_slice(ctx, &text[1..], &[n]).unwrap();
    let v = chars.len();

    let mut rng = StdRng::seed_from_u64(8);
    let mut store = ParamStore::new();
    let embedding = embedding(
        v,
        16,
        EmbeddingConfig { padding_idx: None },
        VarBuilder::with_prefix(ctx, &mut store, &mut rng, "embedding"),
    )
    .unwrap();
    let rnn = recurrent(
        RecurrentConfig {
            num_layers: 1,
            dropout: 0.0,
            ..RecurrentConfig::new(kind, 16, 32)
        },
        VarBuilder::with_prefix(ctx, &mut store, &mut rng, "rnn"),
    )
    .unwrap();
    let fc = linear(32, v, VarBuilder::with_prefix(ctx, &mut store, &mut rng, "fc")).unwrap();
    let (mut first, mut last, mut norm) = (0.0, 0.0, Tensor::zeros(ctx, &[1], tsumugi::DType::F32).unwrap());
    for t in 1..=steps {
        store.zero_grad();
        let mut g = Graph::train(ctx, &mut store, 1, t);
        let x = embedding.forward(&mut g, &inputs).unwrap();
        let out = rnn.forward(&mut g, x, None).unwrap().output;
        let logits = fc.forward(&mut g, out).unwrap();
        let logits = g.reshape(logits, &[n, v]).unwrap();
        let loss = g.cross_entropy(logits, &targets, &CrossEntropy::default()).unwrap();
        let loss_t = g.value(loss).clone();
        g.backward(loss).unwrap();
        norm = g.clip_grad_norm(1.0).unwrap();
        if sgd {
            let op = Sgd {
                lr: 0.5,
                momentum: 0.9,
                ..Sgd::default()
            };
            g.sgd_step(&op).unwrap();
        } else {
            let op = Adam {
                lr: 0.01,
                ..Adam::default()
            };
            g.adam_step(&op, t).unwrap();
        }
        g.submit();
        if t == 1 {
            first = loss_t.to_vec::<f32>().unwrap()[0];
        }
        if t == steps {
            last = loss_t.to_vec::<f32>().unwrap()[0];
        }
    }
    let norm = norm.to_vec::<f32>().unwrap()[0];
    assert!(norm.is_finite() && norm >= 0.0, "gradient norm {norm}");
    (first, last)
}

#[test]
fn char_lstm_learns_hello_world_to_a_loss_below_0_1_with_adam_and_clipping() {
    let (first, last) = train(CellKind::Lstm, 200, false);
    assert!(last < 0.1, "loss {first} -> {last}");
}

#[test]
fn char_gru_learns_hello_world_with_sgd_momentum_and_clipping() {
    let (first, last) = train(CellKind::Gru, 200, true);
    assert!(last < 0.1, "loss {first} -> {last}");
}
