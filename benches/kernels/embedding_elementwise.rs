//! Embedding (forward, backward) and elementwise (dropout, tanh) kernels: memory-bound,
//! reported in GB/s.

use std::time::Duration;

use criterion::Criterion;
use rand::{Rng, SeedableRng};
use tsumugi::kernels::elementwise::{dropout_backward, dropout_forward, tanh_backward, tanh_forward, Dropout};
use tsumugi::kernels::embedding::{
    embedding_backward, embedding_forward, upload_ids, EmbeddingBackward, EmbeddingWorkspace,
};
use tsumugi::{reference, Context, DType, Tensor};

use crate::common::{seeded, time_gpu, to_f64, verify_all};

/// B, T, V, E of the embedding benches; the elementwise ones run over B * T * E elements.
const B: usize = 32;
const T: usize = 64;
const V: usize = 1000;
const E: usize = 256;

pub(crate) fn embedding_elementwise_benches(criterion: &mut Criterion) {
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
