//! Kernel throughput: `cargo bench --bench kernels`.
//!
//! Every shape is verified once against the CPU reference before it is timed, and the
//! pipelines are built before timing. One iteration is one launcher call (one dispatch,
//! or the few of embedding_backward), submitted and waited for (BENCH.md's convention:
//! time a GPU iteration to its result).
//! - matmul: criterion's throughput is set in FLOPs (2 M N K per product), so its
//!   `elem/s` reads as FLOP/s; a `GFLOP/s` line with the median of criterion's own
//!   samples follows each shape.
//! - embedding and elementwise (memory-bound): throughput in bytes, the bytes each
//!   kernel must read and write at least (scratch traffic such as the backward's sort is
//!   not counted), and a `GB/s` line likewise.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::{Rng, SeedableRng};
use tsumugi::kernels::elementwise::{dropout_backward, dropout_forward, tanh_backward, tanh_forward, Dropout};
use tsumugi::kernels::embedding::{
    embedding_backward, embedding_forward, upload_ids, EmbeddingBackward, EmbeddingWorkspace,
};
use tsumugi::kernels::matmul::{matmul_forward, Matmul, MatmulDims};
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

fn matmul_benches(criterion: &mut Criterion) {
    let ctx = Context::new().expect("a GPU adapter");
    eprintln!("adapter: {}", ctx.adapter());
    let mut group = criterion.benchmark_group("matmul_forward");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for shape in shapes() {
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
        verify(&shape, &dims, &a_data, &b_data, &c.to_vec::<f32>().expect("read c"));

        let flops = 2 * dims.multiply_adds();
        let per_iteration = RefCell::new(Vec::new());
        group.throughput(Throughput::Elements(flops));
        group.bench_function(BenchmarkId::from_parameter(&shape.name), |bencher| {
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
            continue; // filtered out on the command line
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        eprintln!(
            "matmul_forward/{}: {:.2} GFLOP/s (median of {} samples, {:.3} ms per product)",
            shape.name,
            flops as f64 / median / 1e9,
            times.len(),
            median * 1e3
        );
    }
    group.finish();
}

// ---- embedding and elementwise: memory-bound, reported in GB/s ----

/// B, T, V, E of the embedding benches; the elementwise ones run over B * T * E elements.
const B: usize = 32;
const T: usize = 64;
const V: usize = 1000;
const E: usize = 256;

/// Largest |got - want| over all elements, panicking past `atol + rtol * |want|`.
fn verify_all(name: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    let mut worst = 0.0f64;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (f64::from(g) - w).abs();
        assert!(
            err <= atol + rtol * w.abs(),
            "{name}: [{i}] = {g} but the reference gives {w}"
        );
        worst = worst.max(err);
    }
    eprintln!("{name}: verified against the CPU reference (max abs error {worst:.2e})");
}

/// Times `run` (one launcher call, submitted and waited for) under criterion with
/// `bytes` of throughput, then prints GB/s from the median of criterion's samples.
fn bench_bytes(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    bytes: u64,
    run: &dyn Fn(),
) {
    let per_iteration = RefCell::new(Vec::new());
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function(BenchmarkId::from_parameter(name), |bencher| {
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
        "{name}: {:.2} GB/s (median of {} samples, {:.3} ms per call, {:.2} MB moved)",
        bytes as f64 / median / 1e9,
        times.len(),
        median * 1e3,
        bytes as f64 / 1e6
    );
}

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
    let submit = |encode: &dyn Fn(&mut wgpu::CommandEncoder)| {
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
    bench_bytes(
        &mut group,
        &format!("embedding_forward_b{B}_t{T}_v{V}_e{E}"),
        bytes,
        &forward,
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
    bench_bytes(
        &mut group,
        &format!("embedding_backward_b{B}_t{T}_v{V}_e{E}"),
        bytes,
        &backward,
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
    bench_bytes(
        &mut group,
        &format!("dropout_forward_{elements}"),
        float * 2 * elements as u64,
        &dropout_fwd,
    );

    let dropout_bwd =
        || submit(&|encoder| dropout_backward(&ctx, encoder, &drop, &dy, &dx, false).expect("dropout backward"));
    dropout_bwd();
    let want = reference::elementwise::dropout_backward(&to_f64(&dy_data), drop.p, drop.seed, drop.step);
    verify_all("dropout_backward", &dx.to_vec::<f32>().expect("dx"), &want, 0.0, 1e-7);
    bench_bytes(
        &mut group,
        &format!("dropout_backward_{elements}"),
        float * 2 * elements as u64,
        &dropout_bwd,
    );

    let tanh_fwd = || submit(&|encoder| tanh_forward(&ctx, encoder, &x, &y).expect("tanh"));
    tanh_fwd();
    let y_data = y.to_vec::<f32>().expect("y");
    let want = reference::elementwise::tanh_forward(&to_f64(&x_data));
    verify_all("tanh_forward", &y_data, &want, 1e-6, 1e-5);
    bench_bytes(
        &mut group,
        &format!("tanh_forward_{elements}"),
        float * 2 * elements as u64,
        &tanh_fwd,
    );

    let tanh_bwd = || submit(&|encoder| tanh_backward(&ctx, encoder, &y, &dy, &dx, false).expect("tanh backward"));
    tanh_bwd();
    let want = reference::elementwise::tanh_backward(&to_f64(&y_data), &to_f64(&dy_data));
    verify_all("tanh_backward", &dx.to_vec::<f32>().expect("dx"), &want, 1e-6, 1e-5);
    // y and dy read, dx written.
    bench_bytes(
        &mut group,
        &format!("tanh_backward_{elements}"),
        float * 3 * elements as u64,
        &tanh_bwd,
    );
    group.finish();
}

fn to_f64(values: &[f32]) -> Vec<f64> {
    values.iter().map(|&v| f64::from(v)).collect()
}

criterion_group!(benches, matmul_benches, embedding_elementwise_benches);
criterion_main!(benches);
