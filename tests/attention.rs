//! attention_forward and attention_backward (additive and dot, masked by source
//! lengths) against the CPU reference, and the reference backward against finite
//! differences.

mod common;

use common::{
    assert_close, assert_gradient_matches_finite_differences, ctx, nan_tensor, on_every_kernel_path, seeded, to_f64,
    Tolerance,
};
use tsumugi::kernels::attention::{
    attention_backward, attention_forward, AttentionBackward, AttentionDims, AttentionForward, Score,
};
use tsumugi::kernels::Lengths;
use tsumugi::reference::attention::{self as reference, AttentionInputs};
use tsumugi::{Error, Tensor};

#[derive(Debug)]
struct Case {
    dims: AttentionDims,
    score: Score,
    lengths: Option<Vec<u32>>,
}

fn case(
    batch: usize,
    source: usize,
    width: usize,
    value_width: usize,
    score: Score,
    lengths: Option<Vec<u32>>,
) -> Case {
    Case {
        dims: AttentionDims {
            batch,
            source,
            width,
            value_width,
        },
        score,
        lengths,
    }
}

/// 1, primes, S past the 64-wide workgroup (several positions per invocation) and past
/// 128 (a larger workgroup array), padded rows; widths that are multiples of 4 (the
/// subgroup kernels: from 8 to 256 invocations of 4 columns, A and Dv apart) and not.
fn cases() -> Vec<Case> {
    vec![
        case(3, 20, 256, 256, Score::Additive, Some(vec![20, 7, 13])),
        case(2, 9, 36, 132, Score::Additive, Some(vec![3, 9])),
        case(1, 70, 1024, 8, Score::Dot, None),
        case(1, 1, 1, 1, Score::Additive, None),
        case(3, 5, 7, 4, Score::Additive, Some(vec![5, 2, 1])),
        case(2, 65, 16, 33, Score::Dot, Some(vec![65, 40])),
        case(4, 13, 8, 8, Score::Dot, None),
        case(5, 100, 64, 64, Score::Additive, Some(vec![100, 1, 64, 99, 37])),
        case(1, 200, 5, 3, Score::Additive, None),
    ]
}

impl Case {
    fn name(&self) -> String {
        let d = self.dims;
        format!(
            "{:?}_b{}_s{}_a{}_dv{}{}",
            self.score,
            d.batch,
            d.source,
            d.width,
            d.value_width,
            if self.lengths.is_some() { "_lengths" } else { "" }
        )
    }

    fn lengths_usize(&self) -> Option<Vec<usize>> {
        self.lengths.as_ref().map(|l| l.iter().map(|&x| x as usize).collect())
    }
}

struct Data {
    query: Vec<f32>,
    keys: Vec<f32>,
    v: Option<Vec<f32>>,
    values: Vec<f32>,
}

impl Data {
    fn new(case: &Case, seed: u64) -> Data {
        let d = case.dims;
        Data {
            query: seeded(seed, d.batch * d.width),
            keys: seeded(seed + 1, d.batch * d.source * d.width),
            v: (case.score == Score::Additive).then(|| seeded(seed + 2, d.width)),
            values: seeded(seed + 3, d.batch * d.source * d.value_width),
        }
    }
}

struct Gpu {
    query: Tensor,
    keys: Tensor,
    v: Option<Tensor>,
    values: Tensor,
    lengths: Option<Lengths>,
    weights: Tensor,
    context: Tensor,
}

impl Gpu {
    fn new(case: &Case, data: &Data) -> Gpu {
        let ctx = ctx();
        let d = case.dims;
        Gpu {
            query: Tensor::from_slice(ctx, &data.query, &[d.batch, d.width]).unwrap(),
            keys: Tensor::from_slice(ctx, &data.keys, &[d.batch, d.source, d.width]).unwrap(),
            v: data.v.as_ref().map(|v| Tensor::from_slice(ctx, v, &[d.width]).unwrap()),
            values: Tensor::from_slice(ctx, &data.values, &[d.batch, d.source, d.value_width]).unwrap(),
            lengths: case.lengths.as_ref().map(|l| Lengths::new(ctx, l, d.source).unwrap()),
            weights: nan_tensor(&[d.batch, d.source]),
            context: nan_tensor(&[d.batch, d.value_width]),
        }
    }

    fn forward(&self, case: &Case) -> AttentionForward<'_> {
        AttentionForward {
            score: case.score,
            query: &self.query,
            keys: &self.keys,
            v: self.v.as_ref(),
            values: &self.values,
            lengths: self.lengths.as_ref(),
            weights: &self.weights,
            context: &self.context,
        }
    }
}

/// The reference's forward, and the inputs as f64 (query, keys, v, values).
type ReferenceRun = (
    reference::AttentionOutput,
    Vec<f64>,
    Vec<f64>,
    Option<Vec<f64>>,
    Vec<f64>,
);

fn run_reference(case: &Case, data: &Data) -> ReferenceRun {
    let (query, keys, v, values) = (
        to_f64(&data.query),
        to_f64(&data.keys),
        data.v.as_deref().map(to_f64),
        to_f64(&data.values),
    );
    let lengths = case.lengths_usize();
    let inputs = AttentionInputs {
        score: case.score,
        query: &query,
        keys: &keys,
        v: v.as_deref(),
        values: &values,
        lengths: lengths.as_deref(),
    };
    (
        reference::attention_forward(&case.dims, &inputs),
        query,
        keys,
        v,
        values,
    )
}

#[test]
fn attention_forward_matches_reference() {
    for (i, case) in cases().iter().enumerate() {
        check_forward(case, 10 + i as u64);
    }
}

fn check_forward(case: &Case, seed: u64) {
    on_every_kernel_path(|| check_forward_on(case, seed));
}

fn check_forward_on(case: &Case, seed: u64) {
    {
        let data = Data::new(case, seed);
        let gpu = Gpu::new(case, &data);
        let ctx = ctx();
        let mut encoder = ctx.create_encoder();
        attention_forward(ctx, &mut encoder, &gpu.forward(case)).unwrap();
        ctx.submit(encoder);
        let (want, ..) = run_reference(case, &data);
        let tol = Tolerance { atol: 1e-5, rtol: 1e-4 };
        assert_close(
            "weights",
            &case.name(),
            &gpu.weights.to_vec().unwrap(),
            &want.weights,
            tol,
        );
        assert_close(
            "context",
            &case.name(),
            &gpu.context.to_vec().unwrap(),
            &want.context,
            tol,
        );
    }
}

#[test]
fn attention_backward_matches_reference() {
    for (i, case) in cases().iter().enumerate() {
        check_backward(case, 40 + i as u64);
    }
}

fn check_backward(case: &Case, seed: u64) {
    on_every_kernel_path(|| check_backward_on(case, seed));
}

fn check_backward_on(case: &Case, seed: u64) {
    {
        for (accumulate, with_grad_weights) in [(false, false), (true, true)] {
            let name = format!(
                "{}{}",
                case.name(),
                if accumulate { "_accumulate_grad_weights" } else { "" }
            );
            let d = case.dims;
            let data = Data::new(case, seed);
            let gpu = Gpu::new(case, &data);
            let ctx = ctx();
            let mut encoder = ctx.create_encoder();
            attention_forward(ctx, &mut encoder, &gpu.forward(case)).unwrap();

            let grad_context = seeded(seed + 5, d.batch * d.value_width);
            let grad_weights = seeded(seed + 6, d.batch * d.source);
            let start_values = seeded(seed + 7, d.batch * d.source * d.value_width);
            let start_keys = seeded(seed + 8, d.batch * d.source * d.width);
            let start_v_rows = seeded(seed + 9, d.batch * d.width);
            let upload = |data: &[f32], shape: &[usize]| Tensor::from_slice(ctx, data, shape).unwrap();
            let start = |data: &[f32], shape: &[usize]| {
                if accumulate {
                    upload(data, shape)
                } else {
                    nan_tensor(shape)
                }
            };
            let grad_context_t = upload(&grad_context, &[d.batch, d.value_width]);
            let grad_weights_t = upload(&grad_weights, &[d.batch, d.source]);
            let grad_score = nan_tensor(&[d.batch, d.source]);
            let grad_values = start(&start_values, &[d.batch, d.source, d.value_width]);
            let grad_query = nan_tensor(&[d.batch, d.width]);
            let grad_keys = start(&start_keys, &[d.batch, d.source, d.width]);
            let grad_v_rows = (case.score == Score::Additive).then(|| start(&start_v_rows, &[d.batch, d.width]));
            let backward = AttentionBackward {
                score: case.score,
                query: &gpu.query,
                keys: &gpu.keys,
                v: gpu.v.as_ref(),
                values: &gpu.values,
                lengths: gpu.lengths.as_ref(),
                weights: &gpu.weights,
                grad_context: &grad_context_t,
                grad_weights: with_grad_weights.then_some(&grad_weights_t),
                grad_score: &grad_score,
                grad_values: &grad_values,
                grad_query: &grad_query,
                grad_keys: &grad_keys,
                grad_v_rows: grad_v_rows.as_ref(),
                accumulate,
            };
            attention_backward(ctx, &mut encoder, &backward).unwrap();
            ctx.submit(encoder);

            let (out, query, keys, v, values) = run_reference(case, &data);
            let lengths = case.lengths_usize();
            let inputs = AttentionInputs {
                score: case.score,
                query: &query,
                keys: &keys,
                v: v.as_deref(),
                values: &values,
                lengths: lengths.as_deref(),
            };
            let grad_weights_f64 = to_f64(&grad_weights);
            let want = reference::attention_backward(
                &d,
                &inputs,
                &out,
                &to_f64(&grad_context),
                with_grad_weights.then_some(&grad_weights_f64[..]),
            );
            let plus = |want: &[f64], start: &[f32]| -> Vec<f64> {
                want.iter()
                    .zip(start)
                    .map(|(w, s)| w + if accumulate { f64::from(*s) } else { 0.0 })
                    .collect()
            };
            let tol = Tolerance { atol: 2e-5, rtol: 2e-4 };
            assert_close(
                "grad_score",
                &name,
                &grad_score.to_vec().unwrap(),
                &want.grad_score,
                tol,
            );
            assert_close(
                "grad_query",
                &name,
                &grad_query.to_vec().unwrap(),
                &want.grad_query,
                tol,
            );
            assert_close(
                "grad_values",
                &name,
                &grad_values.to_vec().unwrap(),
                &plus(&want.grad_values, &start_values),
                tol,
            );
            assert_close(
                "grad_keys",
                &name,
                &grad_keys.to_vec().unwrap(),
                &plus(&want.grad_keys, &start_keys),
                tol,
            );
            if let Some(rows) = grad_v_rows {
                // The rows sum to dv; compare that sum (plus the starting rows' sum).
                let rows = rows.to_vec::<f32>().unwrap();
                let mut got = vec![0.0f64; d.width];
                let mut started = vec![0.0f64; d.width];
                for b in 0..d.batch {
                    for a in 0..d.width {
                        got[a] += f64::from(rows[b * d.width + a]);
                        started[a] += if accumulate {
                            f64::from(start_v_rows[b * d.width + a])
                        } else {
                            0.0
                        };
                    }
                }
                let got: Vec<f32> = got.iter().map(|&x| x as f32).collect();
                let want_v: Vec<f64> = want.grad_v.iter().zip(&started).map(|(w, s)| w + s).collect();
                assert_close("grad_v", &name, &got, &want_v, tol);
            }
        }
    }
}

#[test]
fn attention_reference_backward_matches_finite_differences() {
    let small = [
        case(1, 1, 1, 1, Score::Additive, None),
        case(2, 3, 2, 2, Score::Additive, Some(vec![3, 2])),
        case(2, 4, 3, 2, Score::Dot, Some(vec![1, 4])),
    ];
    for (i, case) in small.iter().enumerate() {
        let seed = 70 + i as u64;
        let d = case.dims;
        let data = Data::new(case, seed);
        let (out, query, keys, v, values) = run_reference(case, &data);
        let lengths = case.lengths_usize();
        let wc = to_f64(&seeded(seed + 5, d.batch * d.value_width));
        let ww = to_f64(&seeded(seed + 6, d.batch * d.source));
        let loss = |query: &[f64], keys: &[f64], v: Option<&[f64]>, values: &[f64]| -> f64 {
            let inputs = AttentionInputs {
                score: case.score,
                query,
                keys,
                v,
                values,
                lengths: lengths.as_deref(),
            };
            let out = reference::attention_forward(&d, &inputs);
            let c: f64 = out.context.iter().zip(&wc).map(|(a, b)| a * b).sum();
            let w: f64 = out.weights.iter().zip(&ww).map(|(a, b)| a * b).sum();
            c + w
        };
        let inputs = AttentionInputs {
            score: case.score,
            query: &query,
            keys: &keys,
            v: v.as_deref(),
            values: &values,
            lengths: lengths.as_deref(),
        };
        let grads = reference::attention_backward(&d, &inputs, &out, &wc, Some(&ww));
        let name = case.name();
        let v = v.as_deref();
        assert_gradient_matches_finite_differences("grad_query", &name, &query, &grads.grad_query, |x| {
            loss(x, &keys, v, &values)
        });
        assert_gradient_matches_finite_differences("grad_keys", &name, &keys, &grads.grad_keys, |x| {
            loss(&query, x, v, &values)
        });
        assert_gradient_matches_finite_differences("grad_values", &name, &values, &grads.grad_values, |x| {
            loss(&query, &keys, v, x)
        });
        if let Some(v) = v {
            assert_gradient_matches_finite_differences("grad_v", &name, v, &grads.grad_v, |x| {
                loss(&query, &keys, Some(x), &values)
            });
        }
    }
}

#[test]
fn attention_rejects_bad_shapes_and_missing_v() {
    let ctx = ctx();
    let c = case(2, 3, 4, 5, Score::Additive, None);
    let data = Data::new(&c, 1);
    let gpu = Gpu::new(&c, &data);
    let mut encoder = ctx.create_encoder();
    let wrong_keys = Tensor::zeros(ctx, &[2, 3, 5], tsumugi::DType::F32).unwrap();
    let err = attention_forward(
        ctx,
        &mut encoder,
        &AttentionForward {
            keys: &wrong_keys,
            ..gpu.forward(&c)
        },
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::ShapeMismatch { tensor, .. } if tensor == "attention: keys"),
        "{err}"
    );
    let err = attention_forward(
        ctx,
        &mut encoder,
        &AttentionForward {
            v: None,
            ..gpu.forward(&c)
        },
    )
    .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    let lengths = Lengths::new(ctx, &[1, 2], 4).unwrap();
    let err = attention_forward(
        ctx,
        &mut encoder,
        &AttentionForward {
            lengths: Some(&lengths),
            ..gpu.forward(&c)
        },
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::ShapeMismatch { tensor, .. } if tensor == "attention: lengths"),
        "{err}"
    );
}

/// Random valid shapes (S past the 64-wide workgroup, odd widths, both scores, lengths
/// on some) against the CPU reference, forward and backward.
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn random_case() -> impl Strategy<Value = Case> {
        let dims = (
            1usize..=4,
            1usize..=80,
            1usize..=20,
            1usize..=20,
            any::<bool>(),
            any::<bool>(),
        );
        dims.prop_flat_map(|(batch, source, width, value_width, dot, padded)| {
            let lengths = proptest::collection::vec(1..=source as u32, batch);
            lengths.prop_map(move |lengths| {
                let score = if dot { Score::Dot } else { Score::Additive };
                case(batch, source, width, value_width, score, padded.then_some(lengths))
            })
        })
    }

    proptest! {
        #![proptest_config(common::prop_config(32))]
        #[test]
        fn attention_matches_reference_on_random_shapes(case in random_case(), seed in 0u64..1000) {
            check_forward(&case, seed);
            check_backward(&case, seed);
        }
    }
}
