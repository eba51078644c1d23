//! Matmul forward on square, batched and recurrent-step shapes, in GFLOP/s, on each kernel
//! path the context has; every shape is checked on sampled outputs before it is timed.

use std::time::Duration;

use criterion::Criterion;
use rand::{Rng, SeedableRng};
use tsumugi::kernels::matmul::{matmul_forward, Matmul, MatmulDims};
use tsumugi::{Context, Tensor};

use crate::common::{kernel_paths, seeded, time_gpu};

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

pub(crate) fn matmul_benches(criterion: &mut Criterion) {
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
