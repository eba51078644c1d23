//! The benchmark workloads (described in `benches/RESULTS.md`) through the public API
//! (`graph` and `nn`), as a user runs them: K1 (LSTM layer), K2 (GRU layer), K3 (batch-1 LSTM inference), S1 (the
//! chapter's sentiment model, one training step) and S2 (the chapter's translator, one
//! training step), plus tokens/s for S1 and S2. K4 (matmul) is in `benches/kernels/matmul.rs`.
//!
//! Each workload is checked once against a composition of the CPU references before it
//! is timed (S1 and S2 in eval mode, where dropout is the identity), and every timed
//! iteration is submitted and waited for. Run with `cargo bench --bench workloads`.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tsumugi::graph::{Graph, ParamStore};
use tsumugi::kernels::attention::{AttentionDims, Score};
use tsumugi::kernels::gru_cell::GruDims;
use tsumugi::kernels::lstm_cell::LstmDims;
use tsumugi::loss::CrossEntropy;
use tsumugi::nn::seq2seq::{AttentionKind, Decoder, Encoder, Seq2Seq};
use tsumugi::nn::seq2seq::{DecoderConfig, EncoderConfig};
use tsumugi::nn::{embedding, linear, recurrent, EmbeddingConfig, VarBuilder};
use tsumugi::nn::{CellKind, RecurrentConfig};
use tsumugi::optim::Adam;
use tsumugi::reference;
use tsumugi::{Context, Tensor};

/// Times `run` with criterion and prints the median per iteration (and `per_item`
/// throughput, e.g. tokens/s, when given).
fn time(
    group: &mut BenchmarkGroup<'_, WallTime>,
    label: &str,
    id: &str,
    per_item: Option<(f64, &str)>,
    mut run: impl FnMut(),
) {
    let samples = RefCell::new(Vec::new());
    group.bench_function(BenchmarkId::new(label, id), |bencher| {
        bencher.iter_custom(|iterations| {
            let start = Instant::now();
            for _ in 0..iterations {
                run();
            }
            let elapsed = start.elapsed();
            samples.borrow_mut().push(elapsed.as_secs_f64() / iterations as f64);
            elapsed
        })
    });
    let mut samples = samples.into_inner();
    if samples.is_empty() {
        return;
    }
    samples.sort_by(f64::total_cmp);
    let median = samples[samples.len() / 2];
    let rate = per_item.map_or(String::new(), |(items, unit)| format!(", {:.0} {unit}", items / median));
    eprintln!(
        "{label}/{id}: {:.3} ms per iteration (median of {}){rate}",
        median * 1e3,
        samples.len()
    );
}

fn values(store: &ParamStore, name: &str) -> Vec<f64> {
    let id = store.find(name).unwrap_or_else(|| panic!("no parameter {name}"));
    store
        .value(id)
        .to_vec::<f32>()
        .expect("read")
        .iter()
        .map(|&x| f64::from(x))
        .collect()
}

/// `x [rows, in] W^T [in, out] + b`.
fn host_linear(x: &[f64], w: &[f64], b: Option<&[f64]>, out: usize) -> Vec<f64> {
    let inner = w.len() / out;
    let mut y = Vec::with_capacity(x.len() / inner * out);
    for row in x.chunks(inner) {
        for o in 0..out {
            let dot: f64 = row.iter().zip(&w[o * inner..(o + 1) * inner]).map(|(a, b)| a * b).sum();
            y.push(dot + b.map_or(0.0, |b| b[o]));
        }
    }
    y
}

/// Layer `layer` (`l0`, `l1`, ..) of the LSTM `prefix` (weights from the store) over `x [B, T, I]` from (h0, c0).
fn host_lstm(
    store: &ParamStore,
    prefix: &str,
    layer: &str,
    x: &[f64],
    dims: LstmDims,
    h0: &[f64],
    c0: &[f64],
) -> reference::lstm_cell::LstmSaved {
    let gates = 4 * dims.hidden;
    let b_hh = values(store, &format!("{prefix}.bias_hh_{layer}"));
    let mut xproj = host_linear(
        x,
        &values(store, &format!("{prefix}.weight_ih_{layer}")),
        Some(&values(store, &format!("{prefix}.bias_ih_{layer}"))),
        gates,
    );
    for (i, p) in xproj.iter_mut().enumerate() {
        *p += b_hh[i % gates];
    }
    reference::lstm_cell::lstm_cell_forward(
        &dims,
        &xproj,
        &values(store, &format!("{prefix}.weight_hh_{layer}")),
        None,
        h0,
        c0,
    )
}

/// The final state `[B, H]` of a `[B, T+1, H]` state sequence.
fn last_state(states: &[f64], dims: LstmDims) -> Vec<f64> {
    let (steps, hidden) = (dims.steps, dims.hidden);
    states
        .chunks((steps + 1) * hidden)
        .flat_map(|row| row[steps * hidden..].iter().copied())
        .collect()
}

fn assert_close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let worst = got
        .iter()
        .zip(want)
        .map(|(&g, &w)| (f64::from(g) - w).abs() / (1.0 + w.abs()))
        .fold(0.0, f64::max);
    assert!(
        worst <= tol,
        "{what}: worst relative error {worst:e} against the CPU reference"
    );
    eprintln!("{what}: verified against the CPU reference (worst error {worst:.1e})");
}

fn seeded(rng: &mut StdRng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// K1 and K2: one layer, B=32, T=64, I=H=256; forward, and forward+backward of sum(outputs).
fn layer_benches(criterion: &mut Criterion) {
    let ctx = Context::new().expect("a GPU adapter");
    eprintln!("adapter: {}", ctx.adapter());
    let mut group = criterion.benchmark_group("workload_layers");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6));
    let (batch, steps, size) = (32, 64, 256);
    let mut rng = StdRng::seed_from_u64(1);
    let x_data = seeded(&mut rng, batch * steps * size);
    let x = Tensor::from_slice(&ctx, &x_data, &[batch, steps, size]).expect("upload");
    let x64: Vec<f64> = x_data.iter().map(|&v| f64::from(v)).collect();
    for (kind, id) in [
        (CellKind::Lstm, "K1_lstm_b32_t64_h256"),
        (CellKind::Gru, "K2_gru_b32_t64_h256"),
    ] {
        let mut store = ParamStore::new();
        let layer = recurrent(
            RecurrentConfig::new(kind, size, size),
            VarBuilder::with_prefix(&ctx, &mut store, &mut rng, "rnn"),
        )
        .expect("layer");
        let step = |store: &mut ParamStore, backward: bool| -> Tensor {
            store.zero_grad();
            let mut g = if backward {
                Graph::train(&ctx, store, 0, 0)
            } else {
                Graph::eval(&ctx, store)
            };
            let input = g.input(&x);
            let out = layer.forward(&mut g, input, None).expect("forward").output;
            let value = g.value(out).clone();
            if backward {
                let loss = g.sum(out).expect("sum");
                g.backward(loss).expect("backward");
            }
            g.submit();
            value
        };
        // Verify once: the output, and dW_hh of the sum loss.
        let output = step(&mut store, true).to_vec::<f32>().expect("read");
        let w_hh = values(&store, "rnn.weight_hh_l0");
        let grad_w_hh = store
            .grad(store.find("rnn.weight_hh_l0").unwrap())
            .unwrap()
            .to_vec::<f32>()
            .expect("read");
        let ones = vec![1.0; batch * steps * size];
        let zeros = vec![0.0; batch * size];
        let (want_output, want_grad) = match kind {
            CellKind::Lstm => {
                let dims = LstmDims {
                    batch,
                    steps,
                    hidden: size,
                };
                let saved = host_lstm(&store, "rnn", "l0", &x64, dims, &zeros, &zeros);
                let grads =
                    reference::lstm_cell::lstm_cell_backward(&dims, &w_hh, None, &saved, Some(&ones), &zeros, &zeros);
                (saved.output, grads.grad_w_hh)
            }
            _ => {
                let dims = GruDims {
                    batch,
                    steps,
                    hidden: size,
                };
                let xproj = host_linear(
                    &x64,
                    &values(&store, "rnn.weight_ih_l0"),
                    Some(&values(&store, "rnn.bias_ih_l0")),
                    3 * size,
                );
                let b_hh = values(&store, "rnn.bias_hh_l0");
                let saved = reference::gru_cell::gru_cell_forward(&dims, &xproj, &w_hh, &b_hh, None, &zeros);
                let grads = reference::gru_cell::gru_cell_backward(&dims, &w_hh, None, &saved, Some(&ones), &zeros);
                (saved.output, grads.grad_w_hh)
            }
        };
        assert_close(&format!("{id} output"), &output, &want_output, 1e-4);
        assert_close(&format!("{id} d weight_hh (sum loss)"), &grad_w_hh, &want_grad, 1e-3);
        time(&mut group, "forward", id, None, || {
            step(&mut store, false).to_vec::<f32>().expect("wait");
        });
        time(&mut group, "forward_backward", id, None, || {
            step(&mut store, true);
            ctx.wait_idle_blocking().expect("wait");
        });
    }
    group.finish();
}

/// K3: LSTM inference at B=1, I=H=256: one step; T=32 in one call; 32 calls of one step.
fn inference_benches(criterion: &mut Criterion) {
    let ctx = Context::new().expect("a GPU adapter");
    let mut group = criterion.benchmark_group("workload_inference");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    let (size, steps) = (256, 32);
    let mut rng = StdRng::seed_from_u64(3);
    let mut store = ParamStore::new();
    let lstm = recurrent(
        RecurrentConfig::new(CellKind::Lstm, size, size),
        VarBuilder::with_prefix(&ctx, &mut store, &mut rng, "lstm"),
    )
    .expect("layer");
    let x_data = seeded(&mut rng, steps * size);
    let sequence = Tensor::from_slice(&ctx, &x_data, &[1, steps, size]).expect("upload");
    let step_inputs: Vec<Tensor> = x_data
        .chunks(size)
        .map(|x| Tensor::from_slice(&ctx, x, &[1, 1, size]).expect("upload"))
        .collect();
    let run_sequence = |store: &mut ParamStore| -> Tensor {
        let mut g = Graph::eval(&ctx, store);
        let input = g.input(&sequence);
        let out = lstm.forward(&mut g, input, None).expect("forward").output;
        let value = g.value(out).clone();
        g.submit();
        value
    };
    // Step by step, the state carried on the GPU: one submission per call.
    let run_steps = |store: &mut ParamStore, count: usize| -> Tensor {
        let mut state: Option<(Tensor, Tensor)> = None;
        let mut last = None;
        for input in &step_inputs[..count] {
            let mut g = Graph::eval(&ctx, store);
            let x = g.input(input);
            let out = match &state {
                None => lstm.forward(&mut g, x, None),
                Some((h, c)) => {
                    let (h, c) = (g.input(h), g.input(c));
                    lstm.forward_from(&mut g, x, None, &[h], &[c])
                }
            }
            .expect("step");
            state = Some((g.value(out.h_n[0]).clone(), g.value(out.c_n[0]).clone()));
            last = Some(g.value(out.output).clone());
            g.submit();
        }
        last.expect("a step")
    };
    let whole = run_sequence(&mut store).to_vec::<f32>().expect("read");
    let dims = LstmDims {
        batch: 1,
        steps,
        hidden: size,
    };
    let x64: Vec<f64> = x_data.iter().map(|&v| f64::from(v)).collect();
    let zeros = vec![0.0; size];
    let want = host_lstm(&store, "lstm", "l0", &x64, dims, &zeros, &zeros);
    assert_close("K3 T=32 output", &whole, &want.output, 1e-4);
    let stepped = run_steps(&mut store, steps).to_vec::<f32>().expect("read");
    assert_close(
        "K3 32 single steps, last output",
        &stepped,
        &want.output[(steps - 1) * size..],
        1e-4,
    );
    time(&mut group, "lstm_b1_h256", "K3_one_step", None, || {
        run_steps(&mut store, 1).to_vec::<f32>().expect("wait");
    });
    time(&mut group, "lstm_b1_h256", "K3_t32_one_call", None, || {
        run_sequence(&mut store).to_vec::<f32>().expect("wait");
    });
    time(&mut group, "lstm_b1_h256", "K3_32_calls_of_one_step", None, || {
        run_steps(&mut store, steps).to_vec::<f32>().expect("wait");
    });
    group.finish();
}

/// S1: the chapter's SentimentLSTM training step, B=32, T=10.
fn sentiment_bench(criterion: &mut Criterion) {
    let ctx = Context::new().expect("a GPU adapter");
    let mut group = criterion.benchmark_group("workload_training");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    let (batch, steps, vocab, embed, hidden) = (32, 10, 1000, 32, 64);
    let mut rng = StdRng::seed_from_u64(5);
    let mut store = ParamStore::new();
    let embedding = embedding(
        vocab,
        embed,
        EmbeddingConfig { padding_idx: None },
        VarBuilder::with_prefix(&ctx, &mut store, &mut rng, "embedding"),
    )
    .expect("embedding");
    let config = RecurrentConfig {
        num_layers: 2,
        dropout: 0.2,
        ..RecurrentConfig::new(CellKind::Lstm, embed, hidden)
    };
    let lstm = recurrent(config, VarBuilder::with_prefix(&ctx, &mut store, &mut rng, "lstm")).expect("lstm");
    let fc = linear(hidden, 2, VarBuilder::with_prefix(&ctx, &mut store, &mut rng, "fc")).expect("fc");
    let ids_data: Vec<u32> = (0..batch * steps).map(|_| rng.random_range(0..vocab as u32)).collect();
    let labels_data: Vec<u32> = (0..batch).map(|_| rng.random_range(0..2)).collect();
    let ids = Tensor::from_slice(&ctx, &ids_data, &[batch, steps]).expect("upload");
    let labels = Tensor::from_slice(&ctx, &labels_data, &[batch]).expect("upload");
    let adam = Adam::default();
    let mut t = 0;
    let mut step = |store: &mut ParamStore, training: bool| -> Tensor {
        store.zero_grad();
        t += 1;
        let mut g = if training {
            Graph::train(&ctx, store, 7, t)
        } else {
            Graph::eval(&ctx, store)
        };
        let x = embedding.forward(&mut g, &ids).expect("embedding");
        let states = lstm.forward(&mut g, x, None).expect("lstm");
        let last = g.dropout(states.h_n[1], 0.2).expect("dropout");
        let logits = fc.forward(&mut g, last).expect("fc");
        let loss = g
            .cross_entropy(logits, &labels, &CrossEntropy::default())
            .expect("loss");
        let value = g.value(loss).clone();
        if training {
            g.backward(loss).expect("backward");
            g.adam_step(&adam, t).expect("adam");
        }
        g.submit();
        value
    };
    // Verify the loss in eval mode against the references composed on the host.
    let loss = step(&mut store, false).to_vec::<f32>().expect("read");
    let table = values(&store, "embedding.weight");
    let x: Vec<f64> = ids_data
        .iter()
        .flat_map(|&i| table[i as usize * embed..(i as usize + 1) * embed].iter().copied())
        .collect();
    let zeros = vec![0.0; batch * hidden];
    let dims = LstmDims { batch, steps, hidden };
    let first = host_lstm(&store, "lstm", "l0", &x, dims, &zeros, &zeros);
    let second = host_lstm(&store, "lstm", "l1", &first.output, dims, &zeros, &zeros);
    let h_n = last_state(&second.h_states, LstmDims { batch, steps, hidden });
    let logits = host_linear(&h_n, &values(&store, "fc.weight"), Some(&values(&store, "fc.bias")), 2);
    let want = reference::cross_entropy::cross_entropy_forward(&CrossEntropy::default(), &logits, &labels_data, 2);
    assert_close("S1 eval loss", &loss, &[want.loss], 1e-5);
    let tokens = (batch * steps) as f64;
    time(
        &mut group,
        "train_step",
        "S1_sentiment_b32_t10",
        Some((tokens, "tokens/s")),
        || {
            step(&mut store, true).to_vec::<f32>().expect("wait");
        },
    );

    // S1's activations the backward needs: the embedding output, per layer its input,
    // gates and (h, c) states, the logits.
    let activations = batch * steps * embed
        + 2 * (batch * steps * (4 * hidden + hidden) + 2 * batch * (steps + 1) * hidden)
        + batch * 2;
    let parameters = store.count().0;
    memory_report(&ctx, "S1", parameters, activations, || {
        step(&mut store, true).to_vec::<f32>().expect("wait");
    });
    group.finish();
}

/// Peak GPU bytes held by tensors (since `ctx` was made, so one workload per context)
/// beside the floor: every parameter four times (value, gradient, Adam's two moments)
/// plus `activations` f32 the backward needs; and whether a further step creates a
/// buffer or holds more bytes.
fn memory_report(ctx: &Context, name: &str, parameters: usize, activations: usize, mut step: impl FnMut()) {
    let floor = 4 * (4 * parameters + activations) as u64;
    step();
    let before = ctx.pool_stats();
    step();
    let after = ctx.pool_stats();
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    eprintln!(
        "{name} memory: peak {:.2} MiB of GPU buffers held, floor {:.2} MiB (parameters, gradients, Adam state: {:.2} MiB; activations: {:.2} MiB): {:.2}x the floor; a further step created {} buffers and held {:+} bytes more",
        mib(after.peak_bytes_in_use),
        mib(floor),
        mib(16 * parameters as u64),
        mib(4 * activations as u64),
        after.peak_bytes_in_use as f64 / floor as f64,
        after.buffers_created - before.buffers_created,
        after.bytes_in_use as i64 - before.bytes_in_use as i64,
    );
}

/// S2: the chapter's Seq2SeqWithAttention training step, B=32, S=T=20, vocabularies of 100.
fn translator_bench(criterion: &mut Criterion) {
    let ctx = Context::new().expect("a GPU adapter");
    let mut group = criterion.benchmark_group("workload_training");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    let mut rng = StdRng::seed_from_u64(6);
    let adam = Adam::default();
    // S2: the chapter's Seq2SeqWithAttention, B=32, S=T=20, vocabularies of 100.
    let (batch, src_len, tgt_len, vocab, embed, hidden) = (32, 20, 20, 100, 128, 256);
    let mut store = ParamStore::new();
    let model = Seq2Seq {
        encoder: Encoder::build(
            EncoderConfig {
                vocab,
                embed,
                hidden,
                padding_idx: Some(0),
            },
            VarBuilder::with_prefix(&ctx, &mut store, &mut rng, "encoder"),
        )
        .expect("encoder"),
        decoder: Decoder::build(
            DecoderConfig {
                vocab,
                embed,
                hidden,
                padding_idx: Some(0),
                attention: Some(AttentionKind::Bahdanau),
            },
            VarBuilder::with_prefix(&ctx, &mut store, &mut rng, "decoder"),
        )
        .expect("decoder"),
    };
    let src_data: Vec<u32> = (0..batch * src_len)
        .map(|_| rng.random_range(1..vocab as u32))
        .collect();
    let src = Tensor::from_slice(&ctx, &src_data, &[batch, src_len]).expect("upload");
    // Targets: row b has 10 + b % 11 real tokens, <pad> (0) after; inputs are <sos> (1) then the targets.
    let mut labels_data = vec![0u32; batch * tgt_len];
    let mut inputs_data = vec![vec![0u32; batch]; tgt_len];
    for b in 0..batch {
        let len = 10 + b % 11;
        inputs_data[0][b] = 1;
        for t in 0..len.min(tgt_len) {
            let id = rng.random_range(2..vocab as u32);
            labels_data[b * tgt_len + t] = id;
            if t + 1 < tgt_len {
                inputs_data[t + 1][b] = id;
            }
        }
    }
    let labels = Tensor::from_slice(&ctx, &labels_data, &[batch * tgt_len]).expect("upload");
    let inputs: Vec<Tensor> = inputs_data
        .iter()
        .map(|ids| Tensor::from_slice(&ctx, ids, &[batch, 1]).expect("upload"))
        .collect();
    let ce = CrossEntropy {
        ignore_index: Some(0),
        ..CrossEntropy::default()
    };
    let mut t = 0;
    let mut step = |store: &mut ParamStore, training: bool| -> Tensor {
        store.zero_grad();
        t += 1;
        let mut g = if training {
            Graph::train(&ctx, store, 7, t)
        } else {
            Graph::eval(&ctx, store)
        };
        let logits = model
            .forward(&mut g, &src, None, &inputs, 1.0, &mut StdRng::seed_from_u64(t))
            .expect("forward");
        let loss = g.cross_entropy(logits, &labels, &ce).expect("loss");
        let value = g.value(loss).clone();
        if training {
            g.backward(loss).expect("backward");
            g.clip_grad_norm(1.0).expect("clip");
            g.adam_step(&adam, t).expect("adam");
        }
        g.submit();
        value
    };
    let loss = step(&mut store, false).to_vec::<f32>().expect("read");
    let gather = |table: &[f64], ids: &[u32], width: usize| -> Vec<f64> {
        ids.iter()
            .flat_map(|&i| table[i as usize * width..(i as usize + 1) * width].iter().copied())
            .collect()
    };
    let enc_dims = LstmDims {
        batch,
        steps: src_len,
        hidden,
    };
    let zeros = vec![0.0; batch * hidden];
    let encoded = host_lstm(
        &store,
        "encoder.lstm",
        "l0",
        &gather(&values(&store, "encoder.embedding.weight"), &src_data, embed),
        enc_dims,
        &zeros,
        &zeros,
    );
    let keys = host_linear(
        &encoded.output,
        &values(&store, "decoder.attention.W2.weight"),
        Some(&values(&store, "decoder.attention.W2.bias")),
        hidden,
    );
    let v = values(&store, "decoder.attention.V.weight");
    let (mut h, mut c) = (
        last_state(&encoded.h_states, enc_dims),
        last_state(&encoded.c_states, enc_dims),
    );
    let mut all_logits = vec![0.0; batch * tgt_len * vocab];
    let dec_table = values(&store, "decoder.embedding.weight");
    for (t, ids) in inputs_data.iter().enumerate() {
        let emb = gather(&dec_table, ids, embed);
        let query = host_linear(
            &h,
            &values(&store, "decoder.attention.W1.weight"),
            Some(&values(&store, "decoder.attention.W1.bias")),
            hidden,
        );
        let dims = AttentionDims {
            batch,
            source: src_len,
            width: hidden,
            value_width: hidden,
        };
        let attended = reference::attention::attention_forward(
            &dims,
            &reference::attention::AttentionInputs {
                score: Score::Additive,
                query: &query,
                keys: &keys,
                v: Some(&v),
                values: &encoded.output,
                lengths: None,
            },
        );
        let x: Vec<f64> = (0..batch)
            .flat_map(|b| {
                emb[b * embed..(b + 1) * embed]
                    .iter()
                    .chain(&attended.context[b * hidden..(b + 1) * hidden])
                    .copied()
            })
            .collect();
        let dims = LstmDims {
            batch,
            steps: 1,
            hidden,
        };
        let saved = host_lstm(&store, "decoder.lstm", "l0", &x, dims, &h, &c);
        h = last_state(&saved.h_states, dims);
        c = last_state(&saved.c_states, dims);
        let logits = host_linear(
            &h,
            &values(&store, "decoder.fc.weight"),
            Some(&values(&store, "decoder.fc.bias")),
            vocab,
        );
        for b in 0..batch {
            all_logits[(b * tgt_len + t) * vocab..(b * tgt_len + t + 1) * vocab]
                .copy_from_slice(&logits[b * vocab..(b + 1) * vocab]);
        }
    }
    let want = reference::cross_entropy::cross_entropy_forward(&ce, &all_logits, &labels_data, vocab);
    assert_close("S2 eval loss", &loss, &[want.loss], 1e-5);
    let tokens = labels_data.iter().filter(|&&id| id != 0).count() as f64;
    time(
        &mut group,
        "train_step",
        "S2_translator_b32_s20_t20",
        Some((tokens, "target tokens/s")),
        || {
            step(&mut store, true).to_vec::<f32>().expect("wait");
        },
    );
    // S2's activations the backward needs: the encoder's (embedding, gates, states,
    // outputs, keys), per decoder step its embedding, query, attention weights, context,
    // LSTM input, gates and states, and all the logits.
    let per_layer =
        |steps: usize, input: usize| batch * steps * (input + 5 * hidden) + 2 * batch * (steps + 1) * hidden;
    let decoder_step = batch * (embed + hidden + src_len + hidden) + per_layer(1, embed + hidden);
    let activations =
        per_layer(src_len, embed) + batch * src_len * hidden + tgt_len * decoder_step + batch * tgt_len * vocab;
    let parameters = store.count().0;
    memory_report(&ctx, "S2", parameters, activations, || {
        step(&mut store, true).to_vec::<f32>().expect("wait");
    });
    group.finish();
}

criterion_group!(
    benches,
    layer_benches,
    inference_benches,
    sentiment_bench,
    translator_bench
);
criterion_main!(benches);
