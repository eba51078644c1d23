//! The tape executor end to end on lavapipe: a small LSTM sentiment classifier trains to
//! 100% training accuracy, and a repeated step allocates no GPU buffer.
//! Finite-difference checks of the recurrent, encoder-decoder and attention ops are in
//! `graph_gradients.rs`.

mod common;

use common::ctx;
use rand::{Rng, SeedableRng};
use tsumugi::graph::{Graph, ParamId, ParamStore, RecurrentWeights};
use tsumugi::loss::CrossEntropy;
use tsumugi::nn::{recurrent, VarBuilder};
use tsumugi::optim::Adam;
use tsumugi::{Context, Tensor};

/// The chapter's eight movie reviews (section 2.2, label 1 = positive), word ids by
/// first appearance over its 20 words and '<pad>' = 0, padded to the listing's max_len
/// 10. No lengths are passed, so, as in the listing, the classifier reads the state after
/// the padding and must carry each review's words through it.
#[path = "../examples/chapter/data.rs"]
mod chapter;
const VOCAB: usize = 21;
const EMBED: usize = 16;
const HIDDEN: usize = 24;

struct Model {
    embedding: ParamId,
    w_ih: ParamId,
    w_hh: ParamId,
    b_ih: ParamId,
    b_hh: ParamId,
    fc_w: ParamId,
    fc_b: ParamId,
}

/// PyTorch's default initialisation: Embedding N(0, 1), LSTM and Linear
/// U(-1/sqrt(fan), 1/sqrt(fan)).
fn model(ctx: &Context, store: &mut ParamStore, seed: u64) -> Model {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut param = |name: &str, shape: &[usize], bound: Option<f32>| {
        let len: usize = shape.iter().product();
        let data: Vec<f32> = match bound {
            Some(b) => (0..len).map(|_| rng.random_range(-b..b)).collect(),
            // Box-Muller for N(0, 1).
            None => (0..len)
                .map(|_| {
                    let (u, v): (f32, f32) = (rng.random_range(1e-7..1.0), rng.random_range(0.0..1.0));
                    (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
                })
                .collect(),
        };
        store
            .add(name, Tensor::from_slice(ctx, &data, shape).unwrap(), true)
            .unwrap()
    };
    let lstm_bound = Some(1.0 / (HIDDEN as f32).sqrt());
    Model {
        embedding: param("embedding.weight", &[VOCAB, EMBED], None),
        w_ih: param("lstm.weight_ih_l0", &[4 * HIDDEN, EMBED], lstm_bound),
        w_hh: param("lstm.weight_hh_l0", &[4 * HIDDEN, HIDDEN], lstm_bound),
        b_ih: param("lstm.bias_ih_l0", &[4 * HIDDEN], lstm_bound),
        b_hh: param("lstm.bias_hh_l0", &[4 * HIDDEN], lstm_bound),
        fc_w: param("fc.weight", &[2, HIDDEN], Some(1.0 / (HIDDEN as f32).sqrt())),
        fc_b: param("fc.bias", &[2], Some(1.0 / (HIDDEN as f32).sqrt())),
    }
}

/// One forward (and, when training, backward and Adam step t); returns logits and loss.
fn step(
    ctx: &Context,
    store: &mut ParamStore,
    m: &Model,
    ids: &Tensor,
    labels: &Tensor,
    t: Option<u64>,
) -> (Tensor, Tensor) {
    let training = t.is_some();
    if training {
        store.zero_grad();
    }
    let mut g = if training {
        Graph::train(ctx, store, 7, t.unwrap_or(0))
    } else {
        Graph::eval(ctx, store)
    };
    let emb = g.param(m.embedding).unwrap();
    let x = g.embedding(ids, emb, None).unwrap();
    let x = g.dropout(x, 0.1).unwrap();
    let weights = RecurrentWeights {
        w_ih: g.param(m.w_ih).unwrap(),
        w_hh: g.param(m.w_hh).unwrap(),
        b_ih: g.param(m.b_ih).unwrap(),
        b_hh: g.param(m.b_hh).unwrap(),
    };
    let h_n = g.lstm(x, weights, None, None).unwrap().h_n;
    let (fc_w, fc_b) = (g.param(m.fc_w).unwrap(), g.param(m.fc_b).unwrap());
    let logits = g.linear(h_n, fc_w, Some(fc_b)).unwrap();
    let loss = g.cross_entropy(logits, labels, &CrossEntropy::default()).unwrap();
    let (logits_t, loss_t) = (g.value(logits).clone(), g.value(loss).clone());
    if let Some(t) = t {
        g.backward(loss).unwrap();
        let adam = Adam {
            lr: 0.02,
            ..Adam::default()
        };
        g.adam_step(&adam, t).unwrap();
    }
    g.submit();
    (logits_t, loss_t)
}

fn chapter_labels() -> Vec<u32> {
    chapter::SENTIMENT.iter().map(|&(_, label)| label).collect()
}

fn data(ctx: &Context) -> (Tensor, Tensor) {
    let words = chapter::vocab_of(chapter::SENTIMENT.iter().map(|(s, _)| *s));
    assert_eq!(words.len() + 1, VOCAB);
    let max_len = chapter::SENTIMENT_MAX_LEN;
    let ids: Vec<u32> = chapter::SENTIMENT
        .iter()
        .flat_map(|(s, _)| chapter::encode(&s.split_whitespace().collect::<Vec<_>>(), &words, max_len))
        .collect();
    let labels = chapter_labels();
    (
        Tensor::from_slice(ctx, &ids, &[labels.len(), max_len]).unwrap(),
        Tensor::from_slice(ctx, &labels, &[labels.len()]).unwrap(),
    )
}

#[test]
fn graph_trains_an_lstm_sentiment_classifier_to_full_training_accuracy() {
    let ctx = ctx();
    let mut store = ParamStore::new();
    let m = model(ctx, &mut store, 1);
    let (ids, labels) = data(ctx);
    let (_, first_loss) = step(ctx, &mut store, &m, &ids, &labels, Some(1));
    let first_loss = first_loss.to_vec::<f32>().unwrap()[0];
    let mut loss = first_loss;
    for t in 2..=80 {
        let (_, loss_t) = step(ctx, &mut store, &m, &ids, &labels, Some(t));
        if t % 20 == 0 {
            loss = loss_t.to_vec::<f32>().unwrap()[0];
        }
    }
    assert!(loss < first_loss * 0.2, "loss went from {first_loss} to {loss}");
    let (logits, _) = step(ctx, &mut store, &m, &ids, &labels, None);
    let logits = logits.to_vec::<f32>().unwrap();
    let predictions: Vec<u32> = logits.chunks(2).map(|l| u32::from(l[1] > l[0])).collect();
    let want = chapter_labels();
    assert_eq!(
        predictions, want,
        "training accuracy below 100% (loss {first_loss} -> {loss})"
    );
}

#[test]
fn graph_training_step_allocates_no_buffer_after_the_first() {
    // Its own context: the pool counters must not see other tests' allocations.
    let ctx = Context::new().unwrap();
    let mut store = ParamStore::new();
    let m = model(&ctx, &mut store, 2);
    let (ids, labels) = data(&ctx);
    step(&ctx, &mut store, &m, &ids, &labels, Some(1));
    step(&ctx, &mut store, &m, &ids, &labels, Some(2));
    let after_two = ctx.pool_stats();
    for t in 3..6 {
        step(&ctx, &mut store, &m, &ids, &labels, Some(t));
    }
    let after = ctx.pool_stats();
    assert_eq!(after.buffers_created, after_two.buffers_created, "{after:?}");
    assert_eq!(after.uniform_chunks_created, after_two.uniform_chunks_created);
}

#[test]
fn graph_counts_parameters_like_pytorch() {
    // nn.Embedding(21, 16), nn.LSTM(16, 24), nn.Linear(24, 2):
    // 21*16 + 4*24*(16+24) + 2*4*24 + 24*2 + 2 = 336 + 3840 + 192 + 50 = 4418.
    let ctx = ctx();
    let mut store = ParamStore::new();
    model(ctx, &mut store, 3);
    assert_eq!(store.count(), (4418, 4418));
}

/// Loss and (optionally) gradients of the whole graph with dropout off.
fn loss_and_grads(
    ctx: &Context,
    store: &mut ParamStore,
    m: &Model,
    ids: &Tensor,
    labels: &Tensor,
    with_grads: bool,
) -> f64 {
    store.zero_grad();
    let mut g = Graph::eval(ctx, store);
    let emb = g.param(m.embedding).unwrap();
    let x = g.embedding(ids, emb, None).unwrap();
    let weights = RecurrentWeights {
        w_ih: g.param(m.w_ih).unwrap(),
        w_hh: g.param(m.w_hh).unwrap(),
        b_ih: g.param(m.b_ih).unwrap(),
        b_hh: g.param(m.b_hh).unwrap(),
    };
    let h_n = g.lstm(x, weights, None, None).unwrap().h_n;
    let (fc_w, fc_b) = (g.param(m.fc_w).unwrap(), g.param(m.fc_b).unwrap());
    let logits = g.linear(h_n, fc_w, Some(fc_b)).unwrap();
    let loss = g.cross_entropy(logits, labels, &CrossEntropy::default()).unwrap();
    let loss_t = g.value(loss).clone();
    if with_grads {
        g.backward(loss).unwrap();
    }
    g.submit();
    f64::from(loss_t.to_vec::<f32>().unwrap()[0])
}

#[test]
fn graph_gradients_of_every_parameter_match_finite_differences_of_the_gpu_loss() {
    // The chain through every op (embedding, bias add, input projection, recurrence,
    // final state, linear, cross-entropy) checked on the GPU itself: central differences
    // of the f32 loss with a step large enough to rise above rounding.
    let ctx = ctx();
    let mut store = ParamStore::new();
    let m = model(ctx, &mut store, 4);
    let (ids, labels) = data(ctx);
    loss_and_grads(ctx, &mut store, &m, &ids, &labels, true);
    let params = [m.embedding, m.w_ih, m.w_hh, m.b_ih, m.b_hh, m.fc_w, m.fc_b];
    common::assert_param_gradients_match_finite_differences("sentiment lstm", &mut store, &params, 3, |store| {
        loss_and_grads(ctx, store, &m, &ids, &labels, false)
    });
}

#[test]
fn a_sum_loss_backpropagates_ones_through_a_recurrent_layer() {
    // loss = output.sum() (the benchmarks' K1/K2 loss): every output element's gradient
    // is 1, checked by finite differences through a GRU layer with lengths.
    use tsumugi::nn::{CellKind, RecurrentConfig};
    let ctx = ctx();
    let mut store = ParamStore::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let gru = recurrent(
        RecurrentConfig::new(CellKind::Gru, 3, 5),
        VarBuilder::with_prefix(ctx, &mut store, &mut rng, "gru"),
    )
    .unwrap();
    let x_data: Vec<f32> = (0..2 * 4 * 3).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let x = Tensor::from_slice(ctx, &x_data, &[2, 4, 3]).unwrap();
    let lengths = tsumugi::kernels::Lengths::new(ctx, &[4, 2], 4).unwrap();
    let loss = |store: &mut ParamStore, backward: bool| -> f64 {
        store.zero_grad();
        let mut g = Graph::eval(ctx, store);
        let input = g.input(&x);
        let out = gru.forward(&mut g, input, Some(&lengths)).unwrap();
        let loss = g.sum(out.output).unwrap();
        let value = g.value(loss).clone();
        if backward {
            g.backward(loss).unwrap();
        }
        g.submit();
        f64::from(value.to_vec::<f32>().unwrap()[0])
    };
    loss(&mut store, true);
    let params: Vec<ParamId> = ["gru.weight_ih_l0", "gru.weight_hh_l0", "gru.bias_hh_l0"]
        .iter()
        .map(|name| store.find(name).unwrap())
        .collect();
    common::assert_param_gradients_match_finite_differences("sum of a GRU's outputs", &mut store, &params, 4, |s| {
        loss(s, false)
    });
    // Only a [1] value can be the root.
    let mut g = Graph::eval(ctx, &mut store);
    let input = g.input(&x);
    assert!(g.backward(input).is_err());
    g.submit();
}

/// `stack` (torch.cat along dim 0): the pieces land one after another, and each gets its
/// own rows of the gradient, also when a piece is used twice.
#[test]
fn graph_stack_concatenates_rows_and_splits_the_gradient() {
    let ctx = common::ctx();
    let mut store = ParamStore::new();
    let a = store
        .add(
            "a",
            Tensor::from_slice(ctx, &[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap(),
            true,
        )
        .unwrap();
    let b = store
        .add(
            "b",
            Tensor::from_slice(ctx, &[0.5f32, -1.0, 2.0], &[1, 3]).unwrap(),
            true,
        )
        .unwrap();
    let mut g = Graph::train(ctx, &mut store, 0, 1);
    let (va, vb) = (g.param(a).unwrap(), g.param(b).unwrap());
    let stacked = g.stack(&[va, vb, va]).unwrap();
    assert_eq!(g.value(stacked).shape(), &[5, 3]);
    let targets = Tensor::from_slice(ctx, &[0u32, 1, 2, 0, 1], &[5]).unwrap();
    let loss = g.cross_entropy(stacked, &targets, &CrossEntropy::default()).unwrap();
    let stacked_t = g.value(stacked).clone();
    g.backward(loss).unwrap();
    g.submit();
    let rows: Vec<f32> = stacked_t.to_vec().unwrap();
    assert_eq!(
        rows,
        vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.5, -1.0, 2.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    );
    // d loss / d row = (softmax(row) - onehot(target)) / 5, a's rows twice.
    let dlogits = |row: &[f32], target: usize| -> Vec<f32> {
        let max = row.iter().cloned().fold(f32::MIN, f32::max);
        let sum: f32 = row.iter().map(|x| (x - max).exp()).sum();
        row.iter()
            .enumerate()
            .map(|(i, x)| ((x - max).exp() / sum - if i == target { 1.0 } else { 0.0 }) / 5.0)
            .collect()
    };
    // a's rows appear twice with the same targets (0 and 1): twice one row's gradient.
    let expected_a: Vec<f32> = (0..2)
        .flat_map(|r| dlogits(&rows[r * 3..r * 3 + 3], r))
        .map(|d| 2.0 * d)
        .collect();
    let expected_b = dlogits(&rows[6..9], 2);
    let got_a: Vec<f32> = store.grad(a).unwrap().to_vec().unwrap();
    let got_b: Vec<f32> = store.grad(b).unwrap().to_vec().unwrap();
    for (got, want) in got_a.iter().chain(&got_b).zip(expected_a.iter().chain(&expected_b)) {
        assert!(
            (got - want).abs() < 1e-6,
            "{got_a:?} {got_b:?} vs {expected_a:?} {expected_b:?}"
        );
    }
}

/// Ids made on the GPU (not checked by `upload_ids`) that are out of range look up a
/// zero row, and the step's shared counter says how many there were.
#[test]
fn out_of_range_gpu_ids_are_counted_per_step() {
    let ctx = common::ctx();
    let mut store = ParamStore::new();
    let table: Vec<f32> = (0..5 * 3).map(|i| i as f32 + 1.0).collect();
    let weight = store
        .add(
            "embedding.weight",
            Tensor::from_slice(ctx, &table, &[5, 3]).unwrap(),
            true,
        )
        .unwrap();
    // Made as a plain tensor, as an argmax or a sampled token would be.
    let bad = Tensor::from_slice(ctx, &[1u32, 7, 4, 9], &[4]).unwrap();
    let good = Tensor::from_slice(ctx, &[0u32, 2], &[2]).unwrap();
    let mut g = Graph::eval(ctx, &mut store);
    assert!(g.id_errors().is_none());
    let w = g.param(weight).unwrap();
    let looked_up = g.embedding(&bad, w, None).unwrap();
    g.embedding(&good, w, None).unwrap();
    let rows = g.value(looked_up).clone();
    let errors = g.id_errors().unwrap().clone();
    g.submit();
    assert_eq!(errors.to_vec::<u32>().unwrap(), vec![2]);
    let rows = rows.to_vec::<f32>().unwrap();
    assert_eq!(&rows[3..6], &[0.0, 0.0, 0.0], "id 7 reads a zero row");
    assert_eq!(&rows[0..3], &table[3..6]);
    // A step with good ids only counts nothing.
    let mut g = Graph::eval(ctx, &mut store);
    let w = g.param(weight).unwrap();
    g.embedding(&good, w, None).unwrap();
    let errors = g.id_errors().unwrap().clone();
    g.submit();
    assert_eq!(errors.to_vec::<u32>().unwrap(), vec![0]);
}

/// `batch_weight_grad`: a weight used by several linears (and directly) through its
/// alias gets the same gradient as without it, the batched product adding up the rows
/// of every use; `unstack` hands each piece its rows and gathers their gradients back.
#[test]
fn batched_weight_gradient_and_unstack_match_the_direct_graph() {
    let ctx = ctx();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut values = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect() };
    let (outputs, inputs) = (5, 7);
    let w_values = values(outputs * inputs);
    let b_values = values(outputs);
    let xs: Vec<(usize, Vec<f32>)> = [3usize, 1, 4].iter().map(|&n| (n, values(n * inputs))).collect();
    let mut grads = Vec::new();
    for batched in [false, true] {
        let mut store = ParamStore::new();
        let w = store
            .add(
                "w",
                Tensor::from_slice(ctx, &w_values, &[outputs, inputs]).unwrap(),
                true,
            )
            .unwrap();
        let b = store
            .add("b", Tensor::from_slice(ctx, &b_values, &[outputs]).unwrap(), true)
            .unwrap();
        let labels = [
            Tensor::from_slice(ctx, &[0u32, 4, 2, 2], &[4]).unwrap(),
            Tensor::from_slice(ctx, &[1u32, 3, 0, 4], &[4]).unwrap(),
        ];
        let mut g = Graph::train(ctx, &mut store, 0, 1);
        let (wv, bv) = (g.param(w).unwrap(), g.param(b).unwrap());
        let w_used = if batched { g.batch_weight_grad(wv).unwrap() } else { wv };
        let mut ys = Vec::new();
        for (n, x) in &xs {
            let x = Tensor::from_slice(ctx, x, &[*n, inputs]).unwrap();
            let x = g.input(&x);
            ys.push(g.linear(x, w_used, Some(bv)).unwrap());
        }
        // A cross-entropy per half, so each row's gradient differs.
        let stacked = g.stack(&ys).unwrap();
        let pieces = g.unstack(stacked, 2).unwrap();
        let first = g
            .cross_entropy(pieces[0], &labels[0], &CrossEntropy::default())
            .unwrap();
        let second = g
            .cross_entropy(pieces[1], &labels[1], &CrossEntropy::default())
            .unwrap();
        // And the alias itself, used by an op that is not a linear.
        let w_flat = g.reshape(w_used, &[outputs * inputs]).unwrap();
        let w_sum = g.sum(w_flat).unwrap();
        let partial = g.add(first, second).unwrap();
        let loss = g.add(partial, w_sum).unwrap();
        g.backward(loss).unwrap();
        g.submit();
        grads.push((
            store.grad(w).unwrap().to_vec::<f32>().unwrap(),
            store.grad(b).unwrap().to_vec::<f32>().unwrap(),
        ));
    }
    let close = |a: &[f32], b: &[f32], what: &str| {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= 1e-5 + 1e-5 * y.abs(), "{what}[{i}]: {x} vs {y}");
        }
    };
    close(&grads[1].0, &grads[0].0, "dW");
    close(&grads[1].1, &grads[0].1, "db");
    // Not all rows alike: the gradient is not just the sum of the inputs.
    assert!(grads[0].0.iter().any(|&x| (x - 1.0).abs() > 1e-3));
}

/// `linear_add(x, w, c)` is `add(c, linear(x, w))` in value and in every gradient: with
/// and without a batched weight, and with c used again (so its gradient adds up).
#[test]
fn linear_add_matches_an_add_of_a_linear_in_value_and_every_gradient() {
    let ctx = ctx();
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    let mut values = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect() };
    let (rows, inputs, outputs) = (3, 6, 5);
    let init = [
        ("x", values(rows * inputs), vec![rows, inputs]),
        ("w", values(outputs * inputs), vec![outputs, inputs]),
        ("z", values(rows * 4), vec![rows, 4]),
        ("wc", values(outputs * 4), vec![outputs, 4]),
    ];
    let labels = Tensor::from_slice(ctx, &[1u32, 4, 0], &[rows]).unwrap();
    let mut runs = Vec::new();
    for batched in [false, true] {
        for fused in [false, true] {
            let mut store = ParamStore::new();
            let ids: Vec<ParamId> = init
                .iter()
                .map(|(name, data, shape)| {
                    store
                        .add(name, Tensor::from_slice(ctx, data, shape).unwrap(), true)
                        .unwrap()
                })
                .collect();
            let mut g = Graph::train(ctx, &mut store, 0, 1);
            let [x, w, z, wc] = [0, 1, 2, 3].map(|i| g.param(ids[i]).unwrap());
            let w = if batched { g.batch_weight_grad(w).unwrap() } else { w };
            // c: a computed value, used twice.
            let c = g.linear(z, wc, None).unwrap();
            let y = if fused {
                g.linear_add(x, w, c).unwrap()
            } else {
                let product = g.linear(x, w, None).unwrap();
                g.add(c, product).unwrap()
            };
            let ce = g.cross_entropy(y, &labels, &CrossEntropy::default()).unwrap();
            let c_flat = g.reshape(c, &[rows * outputs]).unwrap();
            let c_sum = g.sum(c_flat).unwrap();
            let loss = g.add(ce, c_sum).unwrap();
            let loss_value = g.value(loss).clone();
            g.backward(loss).unwrap();
            g.submit();
            let grads: Vec<Vec<f32>> = ids
                .iter()
                .map(|&id| store.grad(id).unwrap().to_vec().unwrap())
                .collect();
            runs.push((
                format!("batched {batched} fused {fused}"),
                loss_value.to_vec::<f32>().unwrap(),
                grads,
            ));
        }
    }
    let (_, want_loss, want_grads) = &runs[0];
    for (name, loss, grads) in &runs[1..] {
        assert!(
            (loss[0] - want_loss[0]).abs() <= 1e-5,
            "{name}: loss {} vs {}",
            loss[0],
            want_loss[0]
        );
        for ((got, want), (param, ..)) in grads.iter().zip(want_grads).zip(&init) {
            for (i, (a, b)) in got.iter().zip(want).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-5 + 1e-5 * b.abs(),
                    "{name}: d{param}[{i}]: {a} vs {b}"
                );
            }
        }
    }
}
