//! sample_tokens against the f64 reference (probabilities, and tokens up to draws that
//! land within rounding of a CDF boundary), the empirical frequencies of many draws
//! against the probabilities, top-k never drawing outside the top k, reproducibility by
//! (seed, step), and the argument checks.

mod common;

use common::{assert_close, ctx, nan_tensor, seeded, to_f64, Tolerance};
use tsumugi::kernels::sampling::{sample_tokens, Sampling};
use tsumugi::reference::sampling as reference;
use tsumugi::{DType, Error, Tensor};

/// Runs the kernel on `logits` `[n, v]`; returns (probs, tokens).
fn run(op: &Sampling, step: u64, logits: &[f32], n: usize, v: usize) -> (Vec<f32>, Vec<u32>) {
    let ctx = ctx();
    let logits = Tensor::from_slice(ctx, logits, &[n, v]).expect("logits");
    let probs = nan_tensor(&[n, v]);
    let tokens = Tensor::full(ctx, &[n], u32::MAX).expect("tokens");
    let mut encoder = ctx.create_encoder();
    sample_tokens(ctx, &mut encoder, op, step, &logits, &probs, &tokens).expect("sample_tokens");
    ctx.submit(encoder);
    (probs.to_vec().expect("probs"), tokens.to_vec().expect("tokens"))
}

/// GPU tokens equal the reference's, except where the row's uniform number lies within
/// `margin` of a boundary of the reference CDF, where f32 and f64 sums may disagree.
fn assert_tokens_match(case: &str, got: &[u32], want: &reference::SampleReference, v: usize) {
    for (row, (&g, &w)) in got.iter().zip(&want.tokens).enumerate() {
        if g == w {
            continue;
        }
        let probs = &want.probs[row * v..(row + 1) * v];
        let u = want.uniforms[row];
        let (lo, hi) = (g.min(w) as usize, g.max(w) as usize);
        // The CDF between the two tokens' boundaries must be flat at u (to rounding).
        let below: f64 = probs[..lo].iter().sum::<f64>() + probs[lo];
        let upto: f64 = probs[..hi].iter().sum();
        let margin = 1e-5;
        assert!(
            (u - below).abs() < margin || (u - upto).abs() < margin,
            "tokens [{case}] row {row}: gpu {g} ref {w} with u = {u} (boundaries {below}, {upto})"
        );
    }
}

fn check_case(n: usize, v: usize, temperature: f32, top_k: Option<usize>, seed: u64) {
    let case = format!("n{n}_v{v}_t{temperature}_k{top_k:?}_seed{seed}");
    let logits: Vec<f32> = seeded(seed + (n * v) as u64, n * v).iter().map(|x| 3.0 * x).collect();
    let op = Sampling {
        temperature,
        top_k,
        seed,
    };
    let step = 7 + seed;
    let (probs, tokens) = run(&op, step, &logits, n, v);
    let k = top_k.unwrap_or(v);
    let want = reference::sample_tokens(&to_f64(&logits), v, 1.0 / temperature, k, seed, step);
    assert_close(
        "probs",
        &case,
        &probs,
        &want.probs,
        Tolerance { atol: 1e-6, rtol: 1e-4 },
    );
    assert_tokens_match(&case, &tokens, &want, v);
}

#[test]
fn sample_tokens_matches_reference_n1_v1() {
    check_case(1, 1, 1.0, None, 1);
}

#[test]
fn sample_tokens_matches_reference_n1_v7_top_k_3() {
    check_case(1, 7, 0.8, Some(3), 2);
}

#[test]
fn sample_tokens_matches_reference_n3_v65() {
    check_case(3, 65, 1.0, None, 3);
}

#[test]
fn sample_tokens_matches_reference_n17_v97_temperature_and_top_k() {
    check_case(17, 97, 0.7, Some(5), 4);
    check_case(17, 97, 1.6, Some(97), 5);
}

#[test]
fn sample_tokens_matches_reference_n5_v1000_top_k_1_is_argmax() {
    check_case(5, 1000, 1.0, Some(1), 6);
    let logits: Vec<f32> = seeded(60, 5 * 1000);
    let (_, tokens) = run(
        &Sampling {
            top_k: Some(1),
            ..Sampling::default()
        },
        0,
        &logits,
        5,
        1000,
    );
    let argmax = tsumugi::reference::cross_entropy::argmax(&to_f64(&logits), 1000);
    assert_eq!(tokens, argmax, "top_k = 1 is greedy");
}

/// Close to the CPU adapters' loop budget (35 rounds over chunks of 1250 at 8
/// invocations per row): still complete, not cut short.
#[test]
fn sample_tokens_matches_reference_n1_v10000_top_k_35_near_the_loop_budget() {
    check_case(1, 10_000, 1.0, Some(35), 9);
}

#[test]
fn sample_tokens_matches_reference_n2_v1000_all_tokens() {
    check_case(2, 1000, 1.3, None, 8);
}

/// Many rows with the same logits are many independent draws (each row is its own
/// stream): their frequencies pass a chi-square test against the probabilities, and with
/// top_k = 3 nothing outside the top 3 is ever drawn.
#[test]
fn sample_tokens_frequencies_match_probabilities_and_top_k_stays_in_the_top_k() {
    let v = 10;
    let n = 4000;
    let row: Vec<f32> = (0..v).map(|c| ((c * 7) % v) as f32 * 0.3 - 1.0).collect();
    let logits: Vec<f32> = row.iter().copied().cycle().take(n * v).collect();
    for (top_k, seed) in [(None, 11), (Some(3), 12)] {
        let op = Sampling {
            temperature: 1.0,
            top_k,
            seed,
        };
        let (probs, tokens) = run(&op, 3, &logits, n, v);
        let mut counts = vec![0usize; v];
        for &t in &tokens {
            counts[t as usize] += 1;
        }
        let p = &probs[..v];
        let mut chi2 = 0.0;
        for c in 0..v {
            let expected = f64::from(p[c]) * n as f64;
            if expected == 0.0 {
                assert_eq!(
                    counts[c], 0,
                    "top_k {top_k:?}: token {c} is outside the top k but was drawn"
                );
            } else {
                chi2 += (counts[c] as f64 - expected).powi(2) / expected;
            }
        }
        // 9 degrees of freedom (2 for the top 3): p = 0.001 is at 27.9 (13.8).
        let limit = if top_k.is_some() { 13.8 } else { 27.9 };
        assert!(
            chi2 < limit,
            "top_k {top_k:?}: chi-square {chi2} over {counts:?} vs {p:?}"
        );
        if let Some(k) = top_k {
            let mut order: Vec<usize> = (0..v).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            assert!(tokens.iter().all(|t| order[..k].contains(&(*t as usize))));
        }
    }
}

#[test]
fn sample_tokens_is_reproducible_by_seed_and_step() {
    let (n, v) = (64, 33);
    let logits = seeded(21, n * v);
    let op = Sampling::default();
    let (_, a) = run(&op, 5, &logits, n, v);
    let (_, b) = run(&op, 5, &logits, n, v);
    let (_, c) = run(&op, 6, &logits, n, v);
    let (_, d) = run(&Sampling { seed: 1, ..op }, 5, &logits, n, v);
    assert_eq!(a, b, "same seed and step");
    assert!(
        a.iter().zip(&c).filter(|(x, y)| x != y).count() > n / 4,
        "another step draws anew"
    );
    assert!(
        a.iter().zip(&d).filter(|(x, y)| x != y).count() > n / 4,
        "another seed draws anew"
    );
}

#[test]
fn sample_tokens_rejects_bad_arguments_with_clear_errors() {
    let ctx = ctx();
    let logits = Tensor::zeros(ctx, &[2, 5], DType::F32).unwrap();
    let probs = Tensor::zeros(ctx, &[2, 5], DType::F32).unwrap();
    let tokens = Tensor::zeros(ctx, &[2], DType::U32).unwrap();
    let mut encoder = ctx.create_encoder();
    let mut call = |op: Sampling, probs: &Tensor, tokens: &Tensor| {
        sample_tokens(ctx, &mut encoder, &op, 0, &logits, probs, tokens)
    };
    for temperature in [0.0, -1.0, f32::NAN, f32::INFINITY, 1e-40] {
        let err = call(
            Sampling {
                temperature,
                ..Sampling::default()
            },
            &probs,
            &tokens,
        )
        .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidArgument { message } if message.contains("temperature")),
            "{err}"
        );
    }
    for k in [0, 6] {
        let err = call(
            Sampling {
                top_k: Some(k),
                ..Sampling::default()
            },
            &probs,
            &tokens,
        )
        .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidArgument { message } if message.contains("top_k")),
            "{err}"
        );
    }
    let wrong = Tensor::zeros(ctx, &[3], DType::U32).unwrap();
    let err = call(Sampling::default(), &probs, &wrong).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    let err = call(Sampling::default(), &probs, &probs).unwrap_err();
    assert!(matches!(err, Error::DType { .. }), "{err}");
}

/// On a CPU adapter (lavapipe, llvmpipe), whose loops stop silently past a budget, a
/// top-k too large for it is Error::DeviceLimit before anything is encoded, never a
/// truncated draw.
#[test]
fn sample_tokens_past_the_cpu_loop_budget_is_a_device_limit_error_v200000_k1000() {
    let ctx = ctx();
    if ctx.adapter().device_type != wgpu::DeviceType::Cpu {
        return;
    }
    let (n, v) = (1, 200_000);
    let logits = Tensor::zeros(ctx, &[n, v], DType::F32).unwrap();
    let probs = Tensor::zeros(ctx, &[n, v], DType::F32).unwrap();
    let tokens = Tensor::zeros(ctx, &[n], DType::U32).unwrap();
    let op = Sampling {
        top_k: Some(1000),
        ..Sampling::default()
    };
    let mut encoder = ctx.create_encoder();
    let err = sample_tokens(ctx, &mut encoder, &op, 0, &logits, &probs, &tokens).unwrap_err();
    assert!(matches!(err, Error::DeviceLimit { .. }), "{err}");
}
