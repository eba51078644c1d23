//! Bahdanau attention for one decoder step, forward and backward, in GFLOP/s.

use std::time::Duration;

use criterion::Criterion;
use tsumugi::{Context, DType, Tensor};

use crate::common::{kernel_paths, seeded, time_gpu, to_f64, verify_all};

/// Bahdanau attention for one decoder step at B=32, S=64, A=Dv=256 (the translator's
/// shape): forward (scores, softmax, context) and backward. FLOPs: the additive scores
/// cost about 3 B S A (add, tanh, multiply-add counted as 3) and the context 2 B S Dv.
pub(crate) fn attention_benches(criterion: &mut Criterion) {
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
