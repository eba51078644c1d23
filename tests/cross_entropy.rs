//! cross_entropy_forward, argmax and top_k against the CPU reference, the reference
//! gradient against finite differences, and the edge cases PyTorch defines.

mod common;

use common::{
    assert_close, assert_gradient_matches_finite_differences, ctx, grid, nan_tensor, seeded, to_f64, Tolerance,
};
use rand::{Rng, SeedableRng};
use tsumugi::kernels::cross_entropy::{
    argmax, cross_entropy_check_status, cross_entropy_check_targets, cross_entropy_forward, top_k, CrossEntropy,
    CrossEntropyOutputs, Reduction, STATUS_LEN,
};
use tsumugi::reference;
use tsumugi::reference::cross_entropy::CrossEntropyReference;
use tsumugi::{DType, Error, Tensor};

/// (N, V): 1, primes, sizes either side of the per-row workgroups (8 classes per
/// invocation, 8..256 invocations) and a realistic vocabulary.
const SIZES: &[(usize, usize)] = &[
    (1, 1),
    (1, 2),
    (3, 37),
    (33, 1000),
    (3, 2),
    (33, 37),
    (1, 1000),
    (5, 2049),
    (2, 64),
    (7, 65),
];

/// The GPU's outputs, read back.
struct GpuResult {
    loss: f32,
    dlogits: Vec<f32>,
    row_loss: Vec<f32>,
    status: Vec<u32>,
}

fn run(op: &CrossEntropy, logits: &[f32], targets: &[u32], n: usize, v: usize) -> GpuResult {
    let ctx = ctx();
    let logits_t = Tensor::from_slice(ctx, logits, &[n, v]).unwrap();
    let targets_t = Tensor::from_slice(ctx, targets, &[n]).unwrap();
    let loss = nan_tensor(&[1]);
    let dlogits = nan_tensor(&[n, v]);
    let row_loss = nan_tensor(&[n]);
    // Pre-filled with garbage so an unwritten status fails too.
    let status = Tensor::full(ctx, &[STATUS_LEN], 0xdead_beefu32).unwrap();
    let mut encoder = ctx.create_encoder();
    let out = CrossEntropyOutputs {
        loss: &loss,
        dlogits: &dlogits,
        row_loss: &row_loss,
        status: &status,
    };
    cross_entropy_forward(ctx, &mut encoder, op, &logits_t, &targets_t, out).unwrap();
    ctx.submit(encoder);
    GpuResult {
        loss: loss.to_vec::<f32>().unwrap()[0],
        dlogits: dlogits.to_vec().unwrap(),
        row_loss: row_loss.to_vec().unwrap(),
        status: status.to_vec().unwrap(),
    }
}

/// Targets in [0, V), with every third row set to `ignore` where one is given.
fn targets(seed: u64, n: usize, v: usize, ignore: Option<u32>) -> Vec<u32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|row| match ignore {
            Some(id) if row % 3 == 1 => id,
            _ => rng.random_range(0..v as u32),
        })
        .collect()
}

/// Logits in [-4, 4): wide enough that the softmax is far from uniform.
fn logits(seed: u64, len: usize) -> Vec<f32> {
    seeded(seed, len).iter().map(|x| 4.0 * x).collect()
}

/// assert_close where the reference may hold NaN (PyTorch's 0 / 0, invalid targets):
/// the GPU must give NaN exactly there and match everywhere else.
fn assert_close_or_both_nan(output: &str, case: &str, got: &[f32], want: &[f64]) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.is_nan(), w.is_nan(), "{output} [{case}]: [{i}] gpu {g} ref {w}");
    }
    let keep = |i: &usize| !want[*i].is_nan();
    let got: Vec<f32> = (0..got.len()).filter(keep).map(|i| got[i]).collect();
    let want: Vec<f64> = (0..want.len()).filter(keep).map(|i| want[i]).collect();
    assert_close(output, case, &got, &want, Tolerance::F32_SUMS);
}

fn compare(case: &str, gpu: &GpuResult, want: &CrossEntropyReference) {
    assert_close_or_both_nan("loss", case, &[gpu.loss], &[want.loss]);
    assert_close_or_both_nan("row_loss", case, &gpu.row_loss, &want.row_loss);
    assert_close("dlogits", case, &gpu.dlogits, &want.dlogits, Tolerance::F32_SUMS);
    assert_eq!(gpu.status, want.status, "status [{case}]");
}

fn options() -> Vec<CrossEntropy> {
    let mut all = Vec::new();
    for reduction in [Reduction::Mean, Reduction::Sum] {
        for ignore_index in [None, Some(0)] {
            for label_smoothing in [0.0, 0.1] {
                all.push(CrossEntropy {
                    ignore_index,
                    reduction,
                    label_smoothing,
                });
            }
        }
    }
    all
}

#[test]
fn cross_entropy_forward_matches_reference_on_the_shape_table() {
    for (i, &(n, v)) in SIZES.iter().enumerate() {
        for (j, op) in options().iter().enumerate() {
            let seed = 100 + (i * 16 + j) as u64;
            let x = logits(seed, n * v);
            let t = targets(seed + 1, n, v, op.ignore_index);
            let gpu = run(op, &x, &t, n, v);
            let want = reference::cross_entropy::cross_entropy_forward(op, &to_f64(&x), &t, v);
            compare(&format!("n{n}_v{v} {op:?} seed {seed}"), &gpu, &want);
        }
    }
}

#[test]
fn cross_entropy_forward_matches_reference_v37_ignore_index() {
    // An ignore_index inside the vocabulary, on about half of the rows, and one outside it.
    for (ignore, seed) in [(5u32, 11u64), (u32::MAX, 12)] {
        let (n, v) = (33, 37);
        let op = CrossEntropy {
            ignore_index: Some(ignore),
            label_smoothing: 0.2,
            ..CrossEntropy::default()
        };
        let x = logits(seed, n * v);
        let mut t = targets(seed + 1, n, v, None);
        for row in (0..n).filter(|row| row % 2 == 0) {
            t[row] = ignore;
        }
        let gpu = run(&op, &x, &t, n, v);
        let want = reference::cross_entropy::cross_entropy_forward(&op, &to_f64(&x), &t, v);
        let kept = t.iter().filter(|&&id| id != ignore).count() as u32;
        assert!(kept <= 16 && want.status[1] == kept, "at most 16 of 33 rows are kept");
        compare(&format!("v37 ignore {ignore}"), &gpu, &want);
        for row in (0..n).filter(|row| row % 2 == 0) {
            assert_eq!(gpu.row_loss[row], 0.0, "ignored row {row} has a loss");
            assert!(gpu.dlogits[row * v..(row + 1) * v].iter().all(|&g| g == 0.0));
        }
    }
}

#[test]
fn cross_entropy_forward_matches_hand_checked_numbers() {
    // torch.nn.functional.cross_entropy(torch.tensor([[1., 2., 3.]]), torch.tensor([2]))
    // = log(e + e^2 + e^3) - 3 = 0.4076059644; the gradient is softmax - onehot.
    let gpu = run(&CrossEntropy::default(), &[1.0, 2.0, 3.0], &[2], 1, 3);
    assert_close("loss", "1x3", &[gpu.loss], &[0.407_605_964_4], Tolerance::F32_SUMS);
    let want = [0.090_030_573_2, 0.244_728_471_1, 0.665_240_955_8 - 1.0];
    assert_close("dlogits", "1x3", &gpu.dlogits, &want, Tolerance::F32_SUMS);
    // Two rows, Mean: the average of the two rows, and half of each row's gradient.
    let gpu = run(&CrossEntropy::default(), &[1.0, 2.0, 3.0, 1.0, 2.0, 3.0], &[2, 0], 2, 3);
    let row1 = 0.407_605_964_4 + 2.0;
    assert_close(
        "loss",
        "2x3",
        &[gpu.loss],
        &[(0.407_605_964_4 + row1) / 2.0],
        Tolerance::F32_SUMS,
    );
    assert_close(
        "dlogits[1, 0]",
        "2x3",
        &gpu.dlogits[3..4],
        &[(0.090_030_573_2 - 1.0) / 2.0],
        Tolerance::F32_SUMS,
    );
}

#[test]
fn cross_entropy_forward_is_stable_for_large_logits() {
    // Logits around 1e4 overflow a naive exp; f32 still resolves their differences.
    let (n, v) = (3, 37);
    let x: Vec<f32> = logits(5, n * v).iter().map(|x| 1.0e4 + x).collect();
    for op in options() {
        let t = targets(6, n, v, op.ignore_index);
        let gpu = run(&op, &x, &t, n, v);
        let want = reference::cross_entropy::cross_entropy_forward(&op, &to_f64(&x), &t, v);
        compare(&format!("offset 1e4 {op:?}"), &gpu, &want);
    }
}

#[test]
fn cross_entropy_forward_mean_with_every_target_ignored_is_nan() {
    // PyTorch: 0 / 0 = NaN for Mean, 0 for Sum; no gradient anywhere.
    let (n, v) = (3, 5);
    let x = logits(7, n * v);
    for (reduction, want_nan) in [(Reduction::Mean, true), (Reduction::Sum, false)] {
        let op = CrossEntropy {
            ignore_index: Some(2),
            reduction,
            label_smoothing: 0.1,
        };
        let gpu = run(&op, &x, &[2, 2, 2], n, v);
        assert_eq!(gpu.loss.is_nan(), want_nan, "{reduction:?}: loss {}", gpu.loss);
        if !want_nan {
            assert_eq!(gpu.loss, 0.0);
        }
        assert!(
            gpu.dlogits.iter().all(|&g| g == 0.0),
            "{reduction:?}: gradient of ignored rows"
        );
        assert_eq!(gpu.status, vec![0, 0]);
        assert_eq!(cross_entropy_check_status(&gpu.status).unwrap(), 0);
    }
}

#[test]
fn cross_entropy_forward_flags_out_of_range_targets_on_the_gpu() {
    let (n, v) = (5, 37);
    let x = logits(8, n * v);
    let op = CrossEntropy {
        ignore_index: Some(100),
        ..CrossEntropy::default()
    };
    // Row 1 is ignored (100 >= V but it is ignore_index), rows 2 and 4 are bad.
    let t = [3, 100, 37, 1, 1000];
    let gpu = run(&op, &x, &t, n, v);
    let want = reference::cross_entropy::cross_entropy_forward(&op, &to_f64(&x), &t, v);
    assert_eq!(gpu.status, vec![3, 4], "error flag names row 2, 4 rows counted");
    assert!(gpu.loss.is_nan() && want.loss.is_nan());
    assert!(gpu.row_loss[2].is_nan() && gpu.row_loss[4].is_nan());
    assert_close(
        "row_loss",
        "kept rows",
        &[gpu.row_loss[0], gpu.row_loss[3]],
        &[want.row_loss[0], want.row_loss[3]],
        Tolerance::F32_SUMS,
    );
    // The good rows keep their gradient (divided by the 4 counted targets), the bad ones are zero.
    assert_close(
        "dlogits",
        "bad targets",
        &gpu.dlogits,
        &want.dlogits,
        Tolerance::F32_SUMS,
    );
    assert!(gpu.dlogits[2 * v..3 * v].iter().all(|&g| g == 0.0));
    match cross_entropy_check_status(&gpu.status) {
        Err(Error::InvalidArgument { message }) => assert!(message.contains("targets[2]"), "{message}"),
        other => panic!("expected InvalidArgument naming targets[2], got {other:?}"),
    }
}

#[test]
fn cross_entropy_check_targets_names_the_offending_position() {
    let op = CrossEntropy {
        ignore_index: Some(999),
        ..CrossEntropy::default()
    };
    assert!(cross_entropy_check_targets(&op, &[0, 36, 999], 37).is_ok());
    match cross_entropy_check_targets(&op, &[0, 36, 999, 37, 40], 37) {
        Err(Error::InvalidArgument { message }) => {
            assert!(message.contains("targets[3] = 37"), "{message}");
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

#[test]
fn cross_entropy_reference_backward_matches_finite_differences() {
    for (i, &(n, v)) in [(1, 1), (1, 2), (3, 5), (4, 7)].iter().enumerate() {
        for (j, op) in options().iter().enumerate() {
            let seed = 500 + (i * 16 + j) as u64;
            let x = to_f64(&logits(seed, n * v));
            let t = targets(seed + 1, n, v, op.ignore_index);
            let want = reference::cross_entropy::cross_entropy_forward(op, &x, &t, v);
            if want.loss.is_nan() {
                continue; // every target ignored (N = 1 with ignore_index 0)
            }
            let loss = |x: &[f64]| reference::cross_entropy::cross_entropy_forward(op, x, &t, v).loss;
            let case = format!("n{n}_v{v} {op:?}");
            assert_gradient_matches_finite_differences("dlogits", &case, &x, &want.dlogits, loss);
        }
    }
}

#[test]
fn cross_entropy_rejects_bad_arguments_naming_the_tensor() {
    let ctx = ctx();
    let logits_t = Tensor::zeros(ctx, &[4, 5], DType::F32).unwrap();
    let targets_t = Tensor::zeros(ctx, &[4], DType::U32).unwrap();
    let loss = Tensor::zeros(ctx, &[1], DType::F32).unwrap();
    let dlogits = Tensor::zeros(ctx, &[4, 5], DType::F32).unwrap();
    let row_loss = Tensor::zeros(ctx, &[4], DType::F32).unwrap();
    let status = Tensor::zeros(ctx, &[STATUS_LEN], DType::U32).unwrap();
    let out = CrossEntropyOutputs {
        loss: &loss,
        dlogits: &dlogits,
        row_loss: &row_loss,
        status: &status,
    };
    let mut encoder = ctx.create_encoder();
    let op = CrossEntropy::default();
    cross_entropy_forward(ctx, &mut encoder, &op, &logits_t, &targets_t, out).expect("valid arguments");

    let short_targets = Tensor::zeros(ctx, &[3], DType::U32).unwrap();
    let err = cross_entropy_forward(ctx, &mut encoder, &op, &logits_t, &short_targets, out).unwrap_err();
    assert!(
        matches!(&err, Error::ShapeMismatch { tensor, found, .. } if tensor == "cross_entropy: targets" && found == &vec![3]),
        "{err}"
    );
    let float_targets = Tensor::zeros(ctx, &[4], DType::F32).unwrap();
    let err = cross_entropy_forward(ctx, &mut encoder, &op, &logits_t, &float_targets, out).unwrap_err();
    assert!(matches!(err, Error::DType { .. }), "{err}");
    let wrong_dlogits = Tensor::zeros(ctx, &[5, 4], DType::F32).unwrap();
    let err = cross_entropy_forward(
        ctx,
        &mut encoder,
        &op,
        &logits_t,
        &targets_t,
        CrossEntropyOutputs {
            dlogits: &wrong_dlogits,
            ..out
        },
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::ShapeMismatch { tensor, .. } if tensor == "cross_entropy: dlogits"),
        "{err}"
    );
    for label_smoothing in [1.0, -0.1, f32::NAN] {
        let bad = CrossEntropy { label_smoothing, ..op };
        let err = cross_entropy_forward(ctx, &mut encoder, &bad, &logits_t, &targets_t, out).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{label_smoothing}: {err}");
    }
    let aliased = CrossEntropyOutputs {
        dlogits: &logits_t,
        ..out
    };
    let err = cross_entropy_forward(ctx, &mut encoder, &op, &logits_t, &targets_t, aliased).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "aliasing: {err}");
    let empty = Tensor::zeros(ctx, &[0, 5], DType::F32).unwrap();
    let err = cross_entropy_forward(ctx, &mut encoder, &op, &empty, &targets_t, out).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
}

fn run_top_k(x: &[f32], n: usize, v: usize, k: usize) -> (Vec<f32>, Vec<u32>, Vec<u32>) {
    let ctx = ctx();
    let logits_t = Tensor::from_slice(ctx, x, &[n, v]).unwrap();
    let values = nan_tensor(&[n, k]);
    let indices = Tensor::full(ctx, &[n, k], u32::MAX).unwrap();
    let best = Tensor::full(ctx, &[n], u32::MAX).unwrap();
    let mut encoder = ctx.create_encoder();
    top_k(ctx, &mut encoder, &logits_t, k, &values, &indices).unwrap();
    argmax(ctx, &mut encoder, &logits_t, &best).unwrap();
    ctx.submit(encoder);
    (
        values.to_vec().unwrap(),
        indices.to_vec().unwrap(),
        best.to_vec().unwrap(),
    )
}

#[test]
fn argmax_and_top_k_match_reference_on_the_shape_table() {
    // Grid values: 17 distinct values, so every row of V > 17 has ties to break.
    for (i, &(n, v)) in SIZES.iter().enumerate() {
        let seed = 700 + i as u64;
        for x in [grid(seed, n * v), seeded(seed, n * v)] {
            for k in [1, 3.min(v), v.min(20), v] {
                let (values, indices, best) = run_top_k(&x, n, v, k);
                let (want_values, want_indices) = reference::cross_entropy::top_k(&to_f64(&x), v, k);
                let case = format!("n{n}_v{v}_k{k} seed {seed}");
                assert_close("top_k values", &case, &values, &want_values, Tolerance::EXACT);
                assert_eq!(indices, want_indices, "top_k indices [{case}]");
                assert_eq!(
                    best,
                    reference::cross_entropy::argmax(&to_f64(&x), v),
                    "argmax [{case}]"
                );
            }
        }
    }
}

#[test]
fn argmax_matches_reference_with_ties_and_nan() {
    let x = [
        1.0,
        3.0,
        3.0,
        2.0, // tie: the first 3
        f32::NAN,
        5.0,
        f32::NAN,
        0.0, // NaN is the largest, the first one wins
        -1.0,
        -1.0,
        -1.0,
        -1.0, // all equal
    ];
    let (_, indices, best) = run_top_k(&x, 3, 4, 4);
    assert_eq!(best, vec![1, 0, 0]);
    assert_eq!(best, reference::cross_entropy::argmax(&to_f64(&x), 4));
    assert_eq!(indices, vec![1, 2, 3, 0, 0, 2, 1, 3, 0, 1, 2, 3]);
    assert_eq!(indices, reference::cross_entropy::top_k(&to_f64(&x), 4, 4).1);
}

#[test]
fn top_k_rejects_k_outside_one_to_v() {
    let ctx = ctx();
    let logits_t = Tensor::zeros(ctx, &[2, 5], DType::F32).unwrap();
    let mut encoder = ctx.create_encoder();
    for k in [0, 6] {
        let values = Tensor::zeros(ctx, &[2, k], DType::F32).unwrap();
        let indices = Tensor::zeros(ctx, &[2, k], DType::U32).unwrap();
        let err = top_k(ctx, &mut encoder, &logits_t, k, &values, &indices).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "k {k}: {err}");
    }
    let values = Tensor::zeros(ctx, &[2, 3], DType::F32).unwrap();
    let indices = Tensor::zeros(ctx, &[2, 2], DType::U32).unwrap();
    let err = top_k(ctx, &mut encoder, &logits_t, 3, &values, &indices).unwrap_err();
    assert!(
        matches!(&err, Error::ShapeMismatch { tensor, .. } if tensor == "top_k: indices"),
        "{err}"
    );
}

#[test]
fn cross_entropy_forward_and_argmax_cover_more_rows_than_one_dispatch_dimension() {
    // 65535 workgroups per dimension: the rows past it come from the y dimension.
    let (n, v) = (65_537, 3);
    let x = logits(40, n * v);
    let op = CrossEntropy {
        ignore_index: Some(1),
        ..CrossEntropy::default()
    };
    let t = targets(41, n, v, op.ignore_index);
    let gpu = run(&op, &x, &t, n, v);
    let want = reference::cross_entropy::cross_entropy_forward(&op, &to_f64(&x), &t, v);
    compare("n65537_v3", &gpu, &want);
    let (_, _, best) = run_top_k(&x, n, v, 1);
    assert_eq!(
        best,
        reference::cross_entropy::argmax(&to_f64(&x), v),
        "argmax n65537_v3"
    );
}

#[test]
fn top_k_beyond_a_cpu_adapters_loop_budget_is_a_device_limit_error() {
    // Mesa's software rasterisers stop an invocation's loops after ~65535 iterations in
    // total; a k * V that needs more must be an error there, never a half-written result.
    let ctx = ctx();
    if ctx.adapter().device_type != wgpu::DeviceType::Cpu {
        return;
    }
    let (v, k) = (20_000, 2_000);
    let logits_t = Tensor::zeros(ctx, &[1, v], DType::F32).unwrap();
    let values = Tensor::zeros(ctx, &[1, k], DType::F32).unwrap();
    let indices = Tensor::zeros(ctx, &[1, k], DType::U32).unwrap();
    let mut encoder = ctx.create_encoder();
    let err = top_k(ctx, &mut encoder, &logits_t, k, &values, &indices).unwrap_err();
    assert!(matches!(err, Error::DeviceLimit { .. }), "{err}");
}

/// Random valid shapes (V from 1 to past the 256-wide workgroup) and options (ignore
/// index, label smoothing, reduction) against the CPU reference.
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(common::prop_config(32))]
        #[test]
        fn cross_entropy_matches_reference_on_random_shapes(
            n in 1usize..=20,
            v in 1usize..=300,
            option in 0usize..16,
            seed in 0u64..1000,
        ) {
            let ops = options();
            let op = &ops[option % ops.len()];
            let x = logits(seed, n * v);
            let t = targets(seed + 1, n, v, op.ignore_index);
            let gpu = run(op, &x, &t, n, v);
            let want = reference::cross_entropy::cross_entropy_forward(op, &to_f64(&x), &t, v);
            compare(&format!("n{n}_v{v} {op:?} seed {seed}"), &gpu, &want);
        }
    }
}
