//! Kernel throughput: `cargo bench --bench kernels`.
//!
//! Every shape is verified once against the CPU reference before it is timed, and the
//! pipelines are built before timing. One iteration is one dispatch, submitted and
//! waited for (the workloads' convention: time a GPU iteration to its result). Criterion's
//! throughput is set in FLOPs (2 M N K per product), so its `elem/s` reads as FLOP/s; a
//! `GFLOP/s` line with the median of criterion's own samples follows each shape.
//! The memory-bound sections (`loss_optim`, `embedding_elementwise`) report bytes
//! instead: the bytes each kernel must read and write at least (scratch traffic such as
//! the embedding backward's sort is not counted), as GB/s.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput};
use rand::{Rng, SeedableRng};
use tsumugi::kernels::cross_entropy::{cross_entropy_forward, CrossEntropy, CrossEntropyOutputs, STATUS_LEN};
use tsumugi::kernels::elementwise::{dropout_backward, dropout_forward, tanh_backward, tanh_forward, Dropout};
use tsumugi::kernels::embedding::{
    embedding_backward, embedding_forward, upload_ids, EmbeddingBackward, EmbeddingWorkspace,
};
use tsumugi::kernels::matmul::{matmul_forward, Matmul, MatmulDims};
use tsumugi::kernels::optim::{adam_step, Adam};
use tsumugi::{reference, Context, DType, Tensor};

struct Shape {
    name: String,
    a: Vec<usize>,
    b: Vec<usize>,
    op: Matmul,
}

fn shapes() -> Vec<Shape> {
    let square = |n: usize| Shape {
        name: format!("{n}x{n}x{n}"),
        a: vec![n, n],
        b: vec![n, n],
        op: Matmul::default(),
    };
    let mut shapes = vec![
        square(256),
        square(1024),
        Shape {
            name: "batched_32x128x128x128".into(),
            a: vec![32, 128, 128],
            b: vec![32, 128, 128],
            op: Matmul::default(),
        },
    ];
    // The recurrent step h_{t-1} W_hh^T: [B, H] x [H, 4H], W_hh stored [4H, H] as in PyTorch.
    for batch in [1, 32] {
        for hidden in [256, 512] {
            shapes.push(Shape {
                name: format!("recurrent_step_b{batch}_h{hidden}"),
                a: vec![batch, hidden],
                b: vec![4 * hidden, hidden],
                op: Matmul {
                    trans_b: true,
                    ..Matmul::default()
                },
            });
        }
    }
    shapes
}

fn seeded(seed: u64, len: usize) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// Checks 256 sampled outputs (all of them for small products) against f64 dot products.
fn verify(shape: &Shape, dims: &MatmulDims, a: &[f32], b: &[f32], c: &[f32]) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(99);
    let total = dims.batch * dims.m * dims.n;
    let samples: Vec<usize> = if total <= 256 {
        (0..total).collect()
    } else {
        (0..256).map(|_| rng.random_range(0..total)).collect()
    };
    let mut worst = 0.0f64;
    for index in samples {
        let (batch, row, col) = (index / (dims.m * dims.n), index / dims.n % dims.m, index % dims.n);
        let a_base = if dims.a_shared { 0 } else { batch * dims.m * dims.k };
        let b_base = if dims.b_shared { 0 } else { batch * dims.k * dims.n };
        let want: f64 = (0..dims.k)
            .map(|k| {
                let a_value = a[a_base + row * dims.k + k];
                let b_value = if shape.op.trans_b {
                    b[b_base + col * dims.k + k]
                } else {
                    b[b_base + k * dims.n + col]
                };
                f64::from(a_value) * f64::from(b_value)
            })
            .sum();
        let err = (f64::from(c[index]) - want).abs();
        assert!(
            err <= 1e-4 + 1e-4 * want.abs(),
            "{}: c[{index}] = {} but the reference gives {want}",
            shape.name,
            c[index]
        );
        worst = worst.max(err);
    }
    eprintln!(
        "{}: verified against the CPU reference (max abs error {worst:.2e})",
        shape.name
    );
}

/// Times `run` (one GPU iteration, submitted and waited for) with criterion, then prints
/// `work / median time` in `unit` (work in FLOPs for GFLOP/s, bytes for GB/s).
fn time_gpu(
    group: &mut BenchmarkGroup<'_, WallTime>,
    label: &str,
    id: &str,
    work: u64,
    unit: &str,
    mut run: impl FnMut(),
) {
    let per_iteration = RefCell::new(Vec::new());
    group.throughput(if unit == "GB/s" {
        Throughput::Bytes(work)
    } else {
        Throughput::Elements(work)
    });
    group.bench_function(BenchmarkId::new(label, id), |bencher| {
        bencher.iter_custom(|iterations| {
            let start = Instant::now();
            for _ in 0..iterations {
                run();
            }
            let elapsed = start.elapsed();
            per_iteration
                .borrow_mut()
                .push(elapsed.as_secs_f64() / iterations as f64);
            elapsed
        })
    });
    let mut times = per_iteration.into_inner();
    if times.is_empty() {
        return; // filtered out on the command line
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    eprintln!(
        "{label}/{id}: {:.2} {unit} (median of {} samples, {:.3} ms per iteration)",
        work as f64 / median / 1e9,
        times.len(),
        median * 1e3
    );
}

/// The kernel paths a family is timed on: the subgroup kernels where the context runs
/// them (ids as they are), then the portable kernels (ids ending in `_portable` where the
/// subgroup kernels ran too); the caller sets the context to each in turn.
fn kernel_paths(ctx: &Context) -> Vec<(bool, &'static str)> {
    if ctx.subgroup_kernels() {
        vec![(true, ""), (false, "_portable")]
    } else {
        vec![(false, "")]
    }
}

fn matmul_benches(criterion: &mut Criterion) {
    let ctx = Context::new().expect("a GPU adapter");
    eprintln!(
        "adapter: {} (subgroup kernels: {})",
        ctx.adapter(),
        ctx.subgroup_kernels()
    );
    let mut group = criterion.benchmark_group("matmul_forward");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    let paths = kernel_paths(&ctx);
    for (shape, &(subgroups, suffix)) in shapes()
        .iter()
        .flat_map(|shape| paths.iter().map(move |path| (shape, path)))
    {
        ctx.set_subgroup_kernels(subgroups).expect("a path the context has");
        let shape = &Shape {
            name: format!("{}{suffix}", shape.name),
            a: shape.a.clone(),
            b: shape.b.clone(),
            op: shape.op,
        };
        let dims = MatmulDims::new(&shape.op, &shape.a, &shape.b).expect("valid shape");
        let a_data = seeded(1, shape.a.iter().product());
        let b_data = seeded(2, shape.b.iter().product());
        let a = Tensor::from_slice(&ctx, &a_data, &shape.a).expect("upload a");
        let b = Tensor::from_slice(&ctx, &b_data, &shape.b).expect("upload b");
        let c = Tensor::full(&ctx, &dims.c_shape(), f32::NAN).expect("c");
        let run = || {
            let mut encoder = ctx.create_encoder();
            matmul_forward(&ctx, &mut encoder, &shape.op, &a, &b, None, &c).expect("matmul");
            ctx.submit(encoder);
            ctx.wait_idle_blocking().expect("GPU");
        };
        // Builds the pipeline, and checks the answer before anything is timed.
        run();
        verify(shape, &dims, &a_data, &b_data, &c.to_vec::<f32>().expect("read c"));

        let flops = 2 * dims.multiply_adds();
        time_gpu(&mut group, "matmul_forward", &shape.name, flops, "GFLOP/s", run);
    }
    group.finish();
}

/// Random f32 values in [-scale, scale).
fn scaled(seed: u64, len: usize, scale: f32) -> Vec<f32> {
    seeded(seed, len).into_iter().map(|v| v * scale).collect()
}

fn to_f64(values: &[f32]) -> Vec<f64> {
    values.iter().map(|&v| f64::from(v)).collect()
}

/// LSTM, GRU and RNN layers' recurrence (the fused step kernels) at the K1/K2 shape of
/// the workloads (B=32, T=64, H=256; the input projection is a matmul, timed above) and K3's
/// batch-1 inference. GFLOP/s in DeepBench's convention: 2 G H^2 B T for the recurrent
/// product only (G = 4 LSTM, 3 GRU, 1 RNN); the backward counts the same product again
/// (dh = dgates W_hh), not the weight-gradient matmuls that follow the loop.
fn recurrent_benches(criterion: &mut Criterion) {
    use tsumugi::kernels::gru_cell::{gru_backward, gru_forward, GruBackward, GruDims, GruForward};
    use tsumugi::kernels::lstm_cell::{lstm_backward, lstm_forward, LstmBackward, LstmDims, LstmForward};
    use tsumugi::kernels::rnn_cell::{rnn_backward, rnn_forward, Nonlinearity, RnnBackward, RnnDims, RnnForward};
    let ctx = Context::new().expect("a GPU adapter");
    let mut group = criterion.benchmark_group("recurrent");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    let zeros = |shape: &[usize]| Tensor::zeros(&ctx, shape, tsumugi::DType::F32).expect("zeros");
    let upload = |data: &[f32], shape: &[usize]| Tensor::from_slice(&ctx, data, shape).expect("upload");
    let submit_and_wait = |encoder: tsumugi::Encoder| {
        ctx.submit(encoder);
        ctx.wait_idle_blocking().expect("GPU");
    };

    let shapes = [
        (32, 64, 256, "b32_t64_h256"),
        (1, 32, 256, "b1_t32_h256"),
        (1, 1, 256, "b1_t1_h256"),
    ];
    let paths = kernel_paths(&ctx);
    for ((batch, steps, hidden, label), &(subgroups, suffix)) in shapes
        .iter()
        .flat_map(|&shape| paths.iter().map(move |path| (shape, path)))
    {
        ctx.set_subgroup_kernels(subgroups).expect("a path the context has");
        let label = &format!("{label}{suffix}");
        let flops = |gates: usize| (2 * gates * hidden * hidden * batch * steps) as u64;
        let states = [batch, steps + 1, hidden];
        let w_scale = 1.0 / (hidden as f32).sqrt();

        // LSTM
        let dims = LstmDims { batch, steps, hidden };
        let xproj_data = seeded(1, batch * steps * 4 * hidden);
        let w_data = scaled(2, 4 * hidden * hidden, w_scale);
        let (xproj, w_hh) = (
            upload(&xproj_data, &[batch, steps, 4 * hidden]),
            upload(&w_data, &[4 * hidden, hidden]),
        );
        let (h_states, c_states) = (zeros(&states), zeros(&states));
        let (gates, output) = (zeros(&[batch, steps, 4 * hidden]), zeros(&[batch, steps, hidden]));
        let forward = LstmForward {
            xproj: &xproj,
            w_hh: &w_hh,
            lengths: None,
            h_states: &h_states,
            c_states: &c_states,
            gates: &gates,
            output: &output,
        };
        let run_forward = || {
            let mut encoder = ctx.create_encoder();
            lstm_forward(&ctx, &mut encoder, &forward).expect("lstm forward");
            submit_and_wait(encoder);
        };
        run_forward();
        let zeros_state = vec![0.0; batch * hidden];
        let want = reference::lstm_cell::lstm_cell_forward(
            &dims,
            &to_f64(&xproj_data),
            &to_f64(&w_data),
            None,
            &zeros_state,
            &zeros_state,
        );
        let err = verify_all(
            "lstm output",
            &output.to_vec::<f32>().expect("read"),
            &want.output,
            1e-4,
            1e-3,
        );
        eprintln!("lstm {label}: forward verified against the CPU reference (max abs error {err:.2e})");
        time_gpu(&mut group, "lstm_forward", label, flops(4), "GFLOP/s", run_forward);
        let grad_output = upload(&seeded(3, batch * steps * hidden), &[batch, steps, hidden]);
        let (grad_gates, grad_state) = (zeros(&[batch, steps, 4 * hidden]), zeros(&[2, batch, hidden]));
        let backward = LstmBackward {
            w_hh: &w_hh,
            lengths: None,
            grad_output: Some(&grad_output),
            gates: &gates,
            c_states: &c_states,
            grad_gates: &grad_gates,
            grad_state: &grad_state,
        };
        let run_backward = || {
            let mut encoder = ctx.create_encoder();
            lstm_backward(&ctx, &mut encoder, &backward).expect("lstm backward");
            submit_and_wait(encoder);
        };
        time_gpu(&mut group, "lstm_backward", label, flops(4), "GFLOP/s", run_backward);

        // GRU
        let dims = GruDims { batch, steps, hidden };
        let xproj_data = seeded(4, batch * steps * 3 * hidden);
        let w_data = scaled(5, 3 * hidden * hidden, w_scale);
        let b_data = scaled(6, 3 * hidden, 0.1);
        let (xproj, w_hh, b_hh) = (
            upload(&xproj_data, &[batch, steps, 3 * hidden]),
            upload(&w_data, &[3 * hidden, hidden]),
            upload(&b_data, &[3 * hidden]),
        );
        let h_states = zeros(&states);
        let (gates, output) = (zeros(&[batch, steps, 4 * hidden]), zeros(&[batch, steps, hidden]));
        let forward = GruForward {
            xproj: &xproj,
            w_hh: &w_hh,
            b_hh: &b_hh,
            lengths: None,
            h_states: &h_states,
            gates: &gates,
            output: &output,
        };
        let run_forward = || {
            let mut encoder = ctx.create_encoder();
            gru_forward(&ctx, &mut encoder, &forward).expect("gru forward");
            submit_and_wait(encoder);
        };
        run_forward();
        let want = reference::gru_cell::gru_cell_forward(
            &dims,
            &to_f64(&xproj_data),
            &to_f64(&w_data),
            &to_f64(&b_data),
            None,
            &zeros_state,
        );
        let err = verify_all(
            "gru output",
            &output.to_vec::<f32>().expect("read"),
            &want.output,
            1e-4,
            1e-3,
        );
        eprintln!("gru {label}: forward verified against the CPU reference (max abs error {err:.2e})");
        time_gpu(&mut group, "gru_forward", label, flops(3), "GFLOP/s", run_forward);
        let (grad_gates, grad_state) = (zeros(&[batch, steps, 4 * hidden]), zeros(&[batch, hidden]));
        let backward = GruBackward {
            w_hh: &w_hh,
            lengths: None,
            grad_output: Some(&grad_output),
            gates: &gates,
            h_states: &h_states,
            grad_gates: &grad_gates,
            grad_state: &grad_state,
        };
        let run_backward = || {
            let mut encoder = ctx.create_encoder();
            gru_backward(&ctx, &mut encoder, &backward).expect("gru backward");
            submit_and_wait(encoder);
        };
        time_gpu(&mut group, "gru_backward", label, flops(3), "GFLOP/s", run_backward);

        // RNN (tanh)
        let dims = RnnDims { batch, steps, hidden };
        let xproj_data = seeded(7, batch * steps * hidden);
        let w_data = scaled(8, hidden * hidden, w_scale);
        let (xproj, w_hh) = (
            upload(&xproj_data, &[batch, steps, hidden]),
            upload(&w_data, &[hidden, hidden]),
        );
        let (h_states, output) = (zeros(&states), zeros(&[batch, steps, hidden]));
        let forward = RnnForward {
            xproj: &xproj,
            w_hh: &w_hh,
            lengths: None,
            h_states: &h_states,
            output: &output,
            nonlinearity: Nonlinearity::Tanh,
        };
        let run_forward = || {
            let mut encoder = ctx.create_encoder();
            rnn_forward(&ctx, &mut encoder, &forward).expect("rnn forward");
            submit_and_wait(encoder);
        };
        run_forward();
        let want = reference::rnn_cell::rnn_cell_forward(
            &dims,
            Nonlinearity::Tanh,
            &to_f64(&xproj_data),
            &to_f64(&w_data),
            None,
            &zeros_state,
        );
        let err = verify_all(
            "rnn output",
            &output.to_vec::<f32>().expect("read"),
            &want.output,
            1e-4,
            1e-3,
        );
        eprintln!("rnn {label}: forward verified against the CPU reference (max abs error {err:.2e})");
        time_gpu(&mut group, "rnn_forward", label, flops(1), "GFLOP/s", run_forward);
        let (grad_gates, grad_state) = (zeros(&[batch, steps, hidden]), zeros(&[batch, hidden]));
        let backward = RnnBackward {
            w_hh: &w_hh,
            lengths: None,
            grad_output: Some(&grad_output),
            h_states: &h_states,
            grad_gates: &grad_gates,
            grad_state: &grad_state,
            nonlinearity: Nonlinearity::Tanh,
        };
        let run_backward = || {
            let mut encoder = ctx.create_encoder();
            rnn_backward(&ctx, &mut encoder, &backward).expect("rnn backward");
            submit_and_wait(encoder);
        };
        time_gpu(&mut group, "rnn_backward", label, flops(1), "GFLOP/s", run_backward);
    }
    group.finish();
}

// ---- loss and optimizer: memory-bound, so throughput is in bytes ----
//
// Criterion's throughput is the bytes each kernel must move at least (every input read
// once, every output written once), so its `B/s` is an effective bandwidth; a `GB/s`
// line with the median of criterion's samples follows each case.

/// Largest |gpu - want| over all elements, panicking past `atol + rtol |want|`.
fn verify_all(name: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) -> f64 {
    let mut worst = 0.0f64;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (f64::from(g) - w).abs();
        assert!(
            err <= atol + rtol * w.abs(),
            "{name}: [{i}] = {g} but the reference gives {w}"
        );
        worst = worst.max(err);
    }
    worst
}

fn loss_optim_benches(criterion: &mut Criterion) {
    let ctx = Context::new().expect("a GPU adapter");
    let mut group = criterion.benchmark_group("loss_optim");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));

    // Cross-entropy over a batch of 32 sequences of 64 steps, 1000 classes, padding id 0.
    let (n, v) = (32 * 64, 1000);
    let op = CrossEntropy {
        ignore_index: Some(0),
        ..CrossEntropy::default()
    };
    let logits_data: Vec<f32> = seeded(3, n * v).iter().map(|x| 4.0 * x).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let targets_data: Vec<u32> = (0..n).map(|_| rng.random_range(0..v as u32)).collect();
    let logits = Tensor::from_slice(&ctx, &logits_data, &[n, v]).expect("logits");
    let targets = Tensor::from_slice(&ctx, &targets_data, &[n]).expect("targets");
    let loss = Tensor::full(&ctx, &[1], f32::NAN).expect("loss");
    let dlogits = Tensor::full(&ctx, &[n, v], f32::NAN).expect("dlogits");
    let row_loss = Tensor::full(&ctx, &[n], f32::NAN).expect("row_loss");
    let status = Tensor::zeros(&ctx, &[STATUS_LEN], DType::U32).expect("status");
    let run_loss = || {
        let mut encoder = ctx.create_encoder();
        let out = CrossEntropyOutputs {
            loss: &loss,
            dlogits: &dlogits,
            row_loss: &row_loss,
            status: &status,
        };
        cross_entropy_forward(&ctx, &mut encoder, &op, &logits, &targets, out).expect("cross_entropy");
        ctx.submit(encoder);
        ctx.wait_idle_blocking().expect("GPU");
    };
    run_loss();
    let logits_f64: Vec<f64> = logits_data.iter().map(|&x| f64::from(x)).collect();
    let want = reference::cross_entropy::cross_entropy_forward(&op, &logits_f64, &targets_data, v);
    let loss_err = verify_all(
        "loss",
        &loss.to_vec::<f32>().expect("read loss"),
        &[want.loss],
        1e-5,
        1e-4,
    );
    let grad_err = verify_all(
        "dlogits",
        &dlogits.to_vec::<f32>().expect("read dlogits"),
        &want.dlogits,
        1e-6,
        1e-4,
    );
    eprintln!("cross_entropy n{n}_v{v}: verified against the CPU reference (loss err {loss_err:.2e}, dlogits max abs err {grad_err:.2e})");
    // logits read and dlogits written once, targets read, row losses written (and read).
    let bytes = (2 * n * v * 4 + 3 * n * 4) as u64;
    time_gpu(
        &mut group,
        "cross_entropy_forward",
        &format!("n{n}_v{v}"),
        bytes,
        "GB/s",
        run_loss,
    );

    // Adam over 1M parameters (one tensor, one dispatch).
    let len = 1 << 20;
    let param_data = seeded(5, len);
    let grad_data = seeded(6, len);
    let param = Tensor::from_slice(&ctx, &param_data, &[len]).expect("param");
    let grad = Tensor::from_slice(&ctx, &grad_data, &[len]).expect("grad");
    let exp_avg = Tensor::zeros(&ctx, &[len], DType::F32).expect("exp_avg");
    let exp_avg_sq = Tensor::zeros(&ctx, &[len], DType::F32).expect("exp_avg_sq");
    let adam = Adam::default();
    // The step count only changes the bias corrections; step 1 is verified, later
    // iterations keep stepping (the kernel's work does not depend on t).
    let step = std::cell::Cell::new(1u64);
    let run_adam = || {
        let mut encoder = ctx.create_encoder();
        adam_step(
            &ctx,
            &mut encoder,
            &adam,
            step.get(),
            &param,
            &grad,
            &exp_avg,
            &exp_avg_sq,
        )
        .expect("adam_step");
        ctx.submit(encoder);
        ctx.wait_idle_blocking().expect("GPU");
        step.set(step.get() + 1);
    };
    run_adam();
    let mut want_param: Vec<f64> = param_data.iter().map(|&x| f64::from(x)).collect();
    let grad_f64: Vec<f64> = grad_data.iter().map(|&x| f64::from(x)).collect();
    let (mut m, mut v2) = (vec![0.0; len], vec![0.0; len]);
    reference::optim::adam_step(&adam, 1, &mut want_param, &grad_f64, &mut m, &mut v2);
    let err = verify_all(
        "param",
        &param.to_vec::<f32>().expect("read param"),
        &want_param,
        1e-6,
        1e-5,
    );
    eprintln!("adam_step 1M: verified against the CPU reference (max abs err {err:.2e})");
    // param, grad, exp_avg, exp_avg_sq read; param, exp_avg, exp_avg_sq written.
    let bytes = (7 * len * 4) as u64;
    time_gpu(&mut group, "adam_step", "1M", bytes, "GB/s", run_adam);
    group.finish();
}

// ---- embedding and elementwise: memory-bound, reported in GB/s ----

/// B, T, V, E of the embedding benches; the elementwise ones run over B * T * E elements.
const B: usize = 32;
const T: usize = 64;
const V: usize = 1000;
const E: usize = 256;

fn embedding_elementwise_benches(criterion: &mut Criterion) {
    let ctx = Context::new().expect("a GPU adapter");
    let mut group = criterion.benchmark_group("embedding_elementwise");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let positions = B * T;
    let elements = positions * E;
    let float = 4u64;
    let submit = |encode: &dyn Fn(&mut tsumugi::Encoder)| {
        let mut encoder = ctx.create_encoder();
        encode(&mut encoder);
        ctx.submit(encoder);
        ctx.wait_idle_blocking().expect("GPU");
    };

    // Embedding: ids [B, T] uniform over V, so most ids repeat a couple of times.
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let ids_data: Vec<u32> = (0..positions).map(|_| rng.random_range(0..V as u32)).collect();
    let ids = upload_ids(&ctx, &ids_data, &[B, T], V).expect("ids");
    let weight_data = seeded(4, V * E);
    let weight = Tensor::from_slice(&ctx, &weight_data, &[V, E]).expect("weight");
    let out = Tensor::full(&ctx, &[B, T, E], f32::NAN).expect("out");
    let flag = Tensor::zeros(&ctx, &[1], DType::U32).expect("flag");
    let forward = || submit(&|encoder| embedding_forward(&ctx, encoder, &ids, &weight, &out, &flag).expect("forward"));
    forward();
    let want = reference::embedding::embedding_forward(&ids_data, &to_f64(&weight_data), E);
    verify_all("embedding_forward", &out.to_vec::<f32>().expect("out"), &want, 0.0, 0.0);
    // ids, then one row of weight read and one row of out written per position.
    let bytes = float * (positions + 2 * elements) as u64;
    time_gpu(
        &mut group,
        "embedding_elementwise",
        &format!("embedding_forward_b{B}_t{T}_v{V}_e{E}"),
        bytes,
        "GB/s",
        forward,
    );

    let grad_out_data = seeded(5, elements);
    let grad_out = Tensor::from_slice(&ctx, &grad_out_data, &[B, T, E]).expect("grad_out");
    let grad_weight = Tensor::full(&ctx, &[V, E], f32::NAN).expect("grad_weight");
    let workspace = EmbeddingWorkspace::new(&ctx, positions).expect("workspace");
    let op = EmbeddingBackward::default();
    let backward = || {
        submit(&|encoder| {
            embedding_backward(&ctx, encoder, &op, &ids, &grad_out, &grad_weight, &workspace).expect("backward")
        })
    };
    backward();
    let want = reference::embedding::embedding_backward(&ids_data, &to_f64(&grad_out_data), V, E, None);
    verify_all(
        "embedding_backward",
        &grad_weight.to_vec::<f32>().expect("grad_weight"),
        &want,
        1e-5,
        1e-5,
    );
    // ids and grad_out read, dW written.
    let bytes = float * (positions + elements + V * E) as u64;
    time_gpu(
        &mut group,
        "embedding_elementwise",
        &format!("embedding_backward_b{B}_t{T}_v{V}_e{E}"),
        bytes,
        "GB/s",
        backward,
    );

    // Elementwise over [B, T, E].
    let shape = [B, T, E];
    let x_data = seeded(6, elements);
    let x = Tensor::from_slice(&ctx, &x_data, &shape).expect("x");
    let dy_data = seeded(7, elements);
    let dy = Tensor::from_slice(&ctx, &dy_data, &shape).expect("dy");
    let y = Tensor::full(&ctx, &shape, f32::NAN).expect("y");
    let dx = Tensor::full(&ctx, &shape, f32::NAN).expect("dx");
    let mask = Tensor::full(&ctx, &shape, 7u32).expect("mask");
    let drop = Dropout {
        p: 0.1,
        seed: 1234,
        step: 5,
    };

    // Checked once with the mask output, timed without it (the training path).
    submit(&|encoder| dropout_forward(&ctx, encoder, &drop, &x, &y, Some(&mask)).expect("dropout"));
    let want_mask = reference::elementwise::dropout_mask(elements, drop.p, drop.seed, drop.step);
    let got_mask = mask.to_vec::<u32>().expect("mask");
    assert!(
        got_mask.iter().zip(&want_mask).all(|(&g, &w)| g == u32::from(w)),
        "dropout mask differs from the reference"
    );
    let (want, _) = reference::elementwise::dropout_forward(&to_f64(&x_data), drop.p, drop.seed, drop.step);
    verify_all("dropout_forward", &y.to_vec::<f32>().expect("y"), &want, 0.0, 1e-7);
    let dropout_fwd = || submit(&|encoder| dropout_forward(&ctx, encoder, &drop, &x, &y, None).expect("dropout"));
    time_gpu(
        &mut group,
        "embedding_elementwise",
        &format!("dropout_forward_{elements}"),
        float * 2 * elements as u64,
        "GB/s",
        dropout_fwd,
    );

    let dropout_bwd =
        || submit(&|encoder| dropout_backward(&ctx, encoder, &drop, &dy, &dx, false).expect("dropout backward"));
    dropout_bwd();
    let want = reference::elementwise::dropout_backward(&to_f64(&dy_data), drop.p, drop.seed, drop.step);
    verify_all("dropout_backward", &dx.to_vec::<f32>().expect("dx"), &want, 0.0, 1e-7);
    time_gpu(
        &mut group,
        "embedding_elementwise",
        &format!("dropout_backward_{elements}"),
        float * 2 * elements as u64,
        "GB/s",
        dropout_bwd,
    );

    let tanh_fwd = || submit(&|encoder| tanh_forward(&ctx, encoder, &x, &y).expect("tanh"));
    tanh_fwd();
    let y_data = y.to_vec::<f32>().expect("y");
    let want = reference::elementwise::tanh_forward(&to_f64(&x_data));
    verify_all("tanh_forward", &y_data, &want, 1e-6, 1e-5);
    time_gpu(
        &mut group,
        "embedding_elementwise",
        &format!("tanh_forward_{elements}"),
        float * 2 * elements as u64,
        "GB/s",
        tanh_fwd,
    );

    let tanh_bwd = || submit(&|encoder| tanh_backward(&ctx, encoder, &y, &dy, &dx, false).expect("tanh backward"));
    tanh_bwd();
    let want = reference::elementwise::tanh_backward(&to_f64(&y_data), &to_f64(&dy_data));
    verify_all("tanh_backward", &dx.to_vec::<f32>().expect("dx"), &want, 1e-6, 1e-5);
    // y and dy read, dx written.
    time_gpu(
        &mut group,
        "embedding_elementwise",
        &format!("tanh_backward_{elements}"),
        float * 3 * elements as u64,
        "GB/s",
        tanh_bwd,
    );
    group.finish();
}

/// Bahdanau attention for one decoder step at B=32, S=64, A=Dv=256 (the translator's
/// shape): forward (scores, softmax, context) and backward. FLOPs: the additive scores
/// cost about 3 B S A (add, tanh, multiply-add counted as 3) and the context 2 B S Dv.
fn attention_benches(criterion: &mut Criterion) {
    use tsumugi::kernels::attention::{
        attention_backward, attention_forward, AttentionBackward, AttentionDims, AttentionForward, Score,
    };
    use tsumugi::reference::attention::{attention_forward as reference_forward, AttentionInputs};

    let ctx = Context::new().expect("a GPU adapter");
    let mut group = criterion.benchmark_group("attention");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let (b, s, a, dv) = (32, 64, 256, 256);
    let dims = AttentionDims {
        batch: b,
        source: s,
        width: a,
        value_width: dv,
    };
    let upload = |data: &[f32], shape: &[usize]| Tensor::from_slice(&ctx, data, shape).expect("upload");
    let zeros = |shape: &[usize]| Tensor::zeros(&ctx, shape, DType::F32).expect("zeros");
    let (q, k, v, values) = (
        seeded(1, b * a),
        seeded(2, b * s * a),
        seeded(3, a),
        seeded(4, b * s * dv),
    );
    let (query_t, keys_t, v_t, values_t) = (
        upload(&q, &[b, a]),
        upload(&k, &[b, s, a]),
        upload(&v, &[a]),
        upload(&values, &[b, s, dv]),
    );
    let (weights, context) = (zeros(&[b, s]), zeros(&[b, dv]));
    let forward = AttentionForward {
        score: Score::Additive,
        query: &query_t,
        keys: &keys_t,
        v: Some(&v_t),
        values: &values_t,
        lengths: None,
        weights: &weights,
        context: &context,
    };
    for (subgroups, suffix) in kernel_paths(&ctx) {
        ctx.set_subgroup_kernels(subgroups).expect("a path the context has");
        let id = format!("additive_b32_s64_a256{suffix}");
        let run_forward = || {
            let mut encoder = ctx.create_encoder();
            attention_forward(&ctx, &mut encoder, &forward).expect("attention forward");
            ctx.submit(encoder);
            ctx.wait_idle_blocking().expect("GPU");
        };
        run_forward();
        let (q64, k64, v64, values64) = (to_f64(&q), to_f64(&k), to_f64(&v), to_f64(&values));
        let inputs = AttentionInputs {
            score: Score::Additive,
            query: &q64,
            keys: &k64,
            v: Some(&v64),
            values: &values64,
            lengths: None,
        };
        let want = reference_forward(&dims, &inputs);
        let err = verify_all(
            "attention context",
            &context.to_vec::<f32>().expect("read"),
            &want.context,
            1e-4,
            1e-3,
        );
        eprintln!("attention: forward verified against the CPU reference (max abs error {err:.2e})");
        let flops = (3 * b * s * a + 2 * b * s * dv) as u64;
        time_gpu(&mut group, "attention_forward", &id, flops, "GFLOP/s", run_forward);

        let grad_context = upload(&seeded(5, b * dv), &[b, dv]);
        let (grad_score, grad_values, grad_query, grad_keys, grad_v_rows) = (
            zeros(&[b, s]),
            zeros(&[b, s, dv]),
            zeros(&[b, a]),
            zeros(&[b, s, a]),
            zeros(&[b, a]),
        );
        let backward = AttentionBackward {
            score: Score::Additive,
            query: &query_t,
            keys: &keys_t,
            v: Some(&v_t),
            values: &values_t,
            lengths: None,
            weights: &weights,
            grad_context: &grad_context,
            grad_weights: None,
            grad_score: &grad_score,
            grad_values: &grad_values,
            grad_query: &grad_query,
            grad_keys: &grad_keys,
            grad_v_rows: Some(&grad_v_rows),
            accumulate: false,
        };
        let run_backward = || {
            let mut encoder = ctx.create_encoder();
            attention_backward(&ctx, &mut encoder, &backward).expect("attention backward");
            ctx.submit(encoder);
            ctx.wait_idle_blocking().expect("GPU");
        };
        // The backward recomputes tanh and touches every score, key and value once more.
        time_gpu(
            &mut group,
            "attention_backward",
            &id,
            2 * flops,
            "GFLOP/s",
            run_backward,
        );
    }
    group.finish();
}

/// The sequence family (reversal within lengths, forward and its adjoint) and one
/// beam-search step (expand, top-K over K*V, select), in GB/s of the bytes they must move.
fn sequence_beam_benches(criterion: &mut Criterion) {
    use tsumugi::kernels::beam::{beam_expand, beam_select, BeamSelection, BeamStep};
    use tsumugi::kernels::cross_entropy::top_k;
    use tsumugi::kernels::sequence::{reverse_sequence_backward, reverse_sequence_forward};
    use tsumugi::kernels::Lengths;
    let ctx = Context::new().expect("a GPU adapter");
    let mut group = criterion.benchmark_group("sequence_beam");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let float = 4u64;

    // reverse_sequence over [32, 64, 256] with lengths 33..64.
    let (batch, steps, width) = (32, 64, 256);
    let lengths_data: Vec<u32> = (0..batch as u32).map(|b| 33 + b).collect();
    let lengths = Lengths::new(&ctx, &lengths_data, steps).expect("lengths");
    let x_data = seeded(11, batch * steps * width);
    let x = Tensor::from_slice(&ctx, &x_data, &[batch, steps, width]).expect("x");
    let y = Tensor::full(&ctx, &[batch, steps, width], f32::NAN).expect("y");
    let lengths_usize: Vec<usize> = lengths_data.iter().map(|&l| l as usize).collect();
    let run = |backward: bool| {
        let mut encoder = ctx.create_encoder();
        if backward {
            reverse_sequence_backward(&ctx, &mut encoder, &x, Some(&lengths), &y, false).expect("reverse backward");
        } else {
            reverse_sequence_forward(&ctx, &mut encoder, &x, Some(&lengths), &y).expect("reverse forward");
        }
        ctx.submit(encoder);
        ctx.wait_idle_blocking().expect("GPU");
    };
    for backward in [false, true] {
        run(backward);
        let want = if backward {
            reference::sequence::reverse_sequence_backward(&to_f64(&x_data), batch, steps, width, Some(&lengths_usize))
        } else {
            reference::sequence::reverse_sequence_forward(&to_f64(&x_data), batch, steps, width, Some(&lengths_usize))
        };
        let name = if backward {
            "reverse_sequence_backward"
        } else {
            "reverse_sequence_forward"
        };
        verify_all(name, &y.to_vec::<f32>().expect("y"), &want, 0.0, 0.0);
        // Every element read once and written once.
        let bytes = 2 * float * (batch * steps * width) as u64;
        time_gpu(&mut group, name, "b32_t64_d256", bytes, "GB/s", || run(backward));
    }

    // One beam step: 16 sentences, K = 5, V = 5000.
    let (sentences, beam, vocab) = (16, 5, 5000);
    let rows = sentences * beam;
    let logits_data = seeded(12, rows * vocab);
    let logits = Tensor::from_slice(&ctx, &logits_data, &[rows, vocab]).expect("logits");
    let scores_data = seeded(13, rows);
    let scores = Tensor::from_slice(&ctx, &scores_data, &[rows]).expect("scores");
    let finished_data: Vec<u32> = (0..rows as u32).map(|r| u32::from(r % 7 == 3)).collect();
    let finished = Tensor::from_slice(&ctx, &finished_data, &[rows]).expect("finished");
    let candidates = Tensor::full(&ctx, &[rows, vocab], f32::NAN).expect("candidates");
    let values = Tensor::zeros(&ctx, &[sentences, beam], DType::F32).expect("values");
    let u32s = |shape: &[usize]| Tensor::zeros(&ctx, shape, DType::U32).expect("u32 tensor");
    let (picks, tokens, parents, finished_out) =
        (u32s(&[sentences, beam]), u32s(&[rows]), u32s(&[rows]), u32s(&[rows]));
    let history = u32s(&[1, rows, 2]);
    let step = BeamStep {
        beam,
        eos: 2,
        first: false,
        step: 0,
    };
    let run = || {
        let mut encoder = ctx.create_encoder();
        beam_expand(&ctx, &mut encoder, &step, &logits, &scores, &finished, &candidates).expect("expand");
        let by_sentence = candidates.reshape(&[sentences, beam * vocab]).expect("view");
        top_k(&ctx, &mut encoder, &by_sentence, beam, &values, &picks).expect("top_k");
        let out = BeamSelection {
            tokens: &tokens,
            parents: &parents,
            finished: &finished_out,
            history: &history,
        };
        beam_select(&ctx, &mut encoder, &step, vocab, &picks, &finished, &out).expect("select");
        ctx.submit(encoder);
        ctx.wait_idle_blocking().expect("GPU");
    };
    run();
    let finished_bool: Vec<bool> = finished_data.iter().map(|&f| f != 0).collect();
    let want = reference::beam::beam_expand(
        &to_f64(&logits_data),
        &to_f64(&scores_data),
        &finished_bool,
        vocab,
        beam,
        2,
        false,
    );
    let got = candidates.to_vec::<f32>().expect("candidates");
    let finite: Vec<f64> = want.iter().map(|&w| if w.is_finite() { w } else { 0.0 }).collect();
    let got_finite: Vec<f32> = got.iter().map(|&g| if g.is_finite() { g } else { 0.0 }).collect();
    verify_all("beam_expand", &got_finite, &finite, 1e-5, 1e-5);
    // The logits read, the candidates written and read twice by top_k's K passes.
    let bytes = float * (rows * vocab) as u64 * (2 + beam as u64);
    time_gpu(&mut group, "beam_step", "b16_k5_v5000", bytes, "GB/s", run);
    group.finish();
}

/// One step of the game generator (nn::generator): 16 streams (NPCs) through an
/// embedding, a 2-layer LSTM with H = 256 and a Linear to V = 65, then the GPU draw;
/// the per-frame cost a game pays. Verified once against the CPU references (embedding,
/// matmul and LSTM cell in f64) before timing. One iteration is one step encoded,
/// submitted and waited for.
fn generator_benches(criterion: &mut Criterion) {
    use rand::rngs::StdRng;
    use tsumugi::graph::ParamStore;
    use tsumugi::kernels::lstm_cell::LstmDims;
    use tsumugi::kernels::sampling::Sampling;
    use tsumugi::nn::generator::Generator;
    use tsumugi::nn::{CellKind, Embedding, Linear, Recurrent, RecurrentConfig};

    let ctx = Context::new().expect("a GPU adapter");
    let mut group = criterion.benchmark_group("generator");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let (streams, vocab, embed, hidden, layers) = (16, 65, 64, 256, 2);
    let mut store = ParamStore::new();
    let mut rng = StdRng::seed_from_u64(3);
    let embedding = Embedding::new(&ctx, &mut store, &mut rng, "embedding", vocab, embed, None).expect("embedding");
    let config = RecurrentConfig {
        num_layers: layers,
        ..RecurrentConfig::new(CellKind::Lstm, embed, hidden)
    };
    let lstm = Recurrent::new(&ctx, &mut store, &mut rng, "lstm", config).expect("lstm");
    let fc = Linear::new(&ctx, &mut store, &mut rng, "fc", hidden, vocab, true).expect("fc");
    let sampling = Sampling {
        temperature: 0.8,
        top_k: Some(10),
        seed: 1,
    };
    let mut generator = Generator::new(&ctx, &store, &embedding, &lstm, &fc, streams, sampling).expect("generator");

    // The reference: one step from zero state on the tokens [0, 1, .., 15].
    let ids: Vec<u32> = (0..streams as u32).collect();
    let input = generator.upload_tokens(&ids).expect("tokens");
    let mut encoder = ctx.create_encoder();
    generator.step_with(&mut encoder, &input).expect("generator step");
    ctx.submit(encoder);
    let value = |id| to_f64(&store.value(id).to_vec::<f32>().expect("read a parameter"));
    let mut x = reference::embedding::embedding_forward(&ids, &value(embedding.weight), embed);
    let linear = Matmul {
        trans_b: true,
        ..Matmul::default()
    };
    let zeros = vec![0.0; streams * hidden];
    for layer in 0..layers {
        let [w_ih, w_hh, b_ih, b_hh] = lstm.layer_params(layer, 0).expect("layer").map(value);
        let bias: Vec<f64> = b_ih.iter().zip(&b_hh).map(|(a, b)| a + b).collect();
        let inputs = if layer == 0 { embed } else { hidden };
        let dims = MatmulDims::new(&linear, &[streams, inputs], &[4 * hidden, inputs]).expect("dims");
        let xproj = reference::matmul::matmul_forward(&dims, &linear, &x, &w_ih, Some(&bias), &[]);
        let cell = LstmDims {
            batch: streams,
            steps: 1,
            hidden,
        };
        x = reference::lstm_cell::lstm_cell_forward(&cell, &xproj, &w_hh, None, &zeros, &zeros).output;
    }
    let dims = MatmulDims::new(&linear, &[streams, hidden], &[vocab, hidden]).expect("dims");
    let bias = value(fc.bias.expect("fc has a bias"));
    let want = reference::matmul::matmul_forward(&dims, &linear, &x, &value(fc.weight), Some(&bias), &[]);
    let got = generator.logits().to_vec::<f32>().expect("read logits");
    let err = verify_all("generator logits", &got, &want, 1e-4, 1e-3);
    eprintln!("generator: one step verified against the CPU reference (max abs error {err:.2e})");

    let run_step = || {
        let mut encoder = ctx.create_encoder();
        generator.step(&mut encoder).expect("generator step");
        ctx.submit(encoder);
        ctx.wait_idle_blocking().expect("GPU");
    };
    // Multiply-adds of a step: both layers' input and recurrent products and the output
    // layer (the embedding gather and the draw are small beside them).
    let flops = 2 * streams as u64 * (4 * hidden * (embed + hidden) + 4 * hidden * 2 * hidden + vocab * hidden) as u64;
    time_gpu(
        &mut group,
        "generator_step",
        "lstm_l2_h256_b16_v65",
        flops,
        "GFLOP/s",
        run_step,
    );
    group.finish();
}

criterion_group!(
    benches,
    matmul_benches,
    recurrent_benches,
    loss_optim_benches,
    embedding_elementwise_benches,
    attention_benches,
    sequence_beam_benches,
    generator_benches
);
criterion_main!(benches);
