//! Dropout against the CPU reference: the mask bit for bit (the reference's Philox
//! against Random123's known answers), the kept fraction and a new mask each step, p = 0
//! and p = 1, and the backward accumulating and without a mask output.

mod common;

use common::elementwise::{name, plus, read, run, upload, SHAPES};
use common::{assert_close, ctx, grid, nan_tensor, seeded, to_f64, Tolerance};
use tsumugi::kernels::elementwise::{dropout_backward, dropout_forward, Dropout};
use tsumugi::reference::elementwise as reference;
use tsumugi::Tensor;

/// Random123's known-answer vectors for philox4x32_10 (kat_vectors).
#[test]
fn dropout_reference_philox_matches_random123_known_answers() {
    let cases = [
        (
            [0u32; 4],
            [0u32; 2],
            [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8],
        ),
        (
            [u32::MAX; 4],
            [u32::MAX; 2],
            [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd],
        ),
        (
            [0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344],
            [0xa409_3822, 0x299f_31d0],
            [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1],
        ),
    ];
    for (counter, key, want) in cases {
        assert_eq!(
            reference::philox4x32_10(counter, key),
            want,
            "counter {counter:x?} key {key:x?}"
        );
    }
}

/// Runs dropout_forward with a mask and dropout_backward; returns (y, mask, dx).
fn run_dropout(op: &Dropout, x: &[f32], dy: &[f32], shape: &[usize]) -> (Vec<f32>, Vec<u32>, Vec<f32>) {
    let (x_t, dy_t) = (upload(x, shape), upload(dy, shape));
    let y_t = nan_tensor(shape);
    let mask_t = Tensor::full(ctx(), shape, 7u32).unwrap();
    let dx_t = nan_tensor(shape);
    run(|ctx, encoder| {
        dropout_forward(ctx, encoder, op, &x_t, &y_t, Some(&mask_t)).unwrap();
        dropout_backward(ctx, encoder, op, &dy_t, &dx_t, false).unwrap();
    });
    (read(&y_t), mask_t.to_vec().unwrap(), read(&dx_t))
}

#[test]
fn dropout_mask_equals_reference_bit_for_bit_and_outputs_match() {
    let seeds = [0u64, 1, 0xDEAD_BEEF_1234_5678, u64::MAX];
    for (i, shape) in SHAPES.iter().enumerate() {
        for p in [0.1f32, 0.5, 0.9] {
            let len = shape.iter().product();
            let op = Dropout {
                p,
                seed: seeds[i % seeds.len()],
                step: (i as u64) << 33 | 5,
            };
            let (x, dy) = (seeded(4000 + i as u64, len), seeded(4100 + i as u64, len));
            let (y, mask, dx) = run_dropout(&op, &x, &dy, shape);
            let case = format!("{} p {p} seed {} step {}", name(shape), op.seed, op.step);
            let want_mask = reference::dropout_mask(len, op.p, op.seed, op.step);
            let first_differ = mask.iter().zip(&want_mask).position(|(&m, &w)| m != u32::from(w));
            assert_eq!(first_differ, None, "mask [{case}] differs from the reference");
            let (want_y, _) = reference::dropout_forward(&to_f64(&x), op.p, op.seed, op.step);
            let tol = Tolerance { atol: 0.0, rtol: 6e-8 };
            assert_close("dropout: y", &case, &y, &want_y, tol);
            let want_dx = reference::dropout_backward(&to_f64(&dy), op.p, op.seed, op.step);
            assert_close("dropout: grad_x", &case, &dx, &want_dx, tol);
        }
    }
}

#[test]
fn dropout_keeps_about_one_minus_p_and_each_step_draws_a_new_mask() {
    let len = 1 << 18;
    let shape = [len];
    let x = vec![1.0f32; len];
    for p in [0.1f32, 0.3, 0.5, 0.8] {
        let op = Dropout { p, seed: 42, step: 0 };
        let (_, mask, _) = run_dropout(&op, &x, &x, &shape);
        let kept = mask.iter().filter(|&&m| m == 1).count() as f64 / len as f64;
        // Six standard deviations of a binomial proportion.
        let sd = (f64::from(p) * (1.0 - f64::from(p)) / len as f64).sqrt();
        assert!(
            (kept - (1.0 - f64::from(p))).abs() < 6.0 * sd,
            "p {p}: kept {kept}, expected {}",
            1.0 - p
        );
        // Another step, and another seed, give a different mask (in about half the
        // elements at p = 0.5); the same (seed, step) gives the same one.
        let (_, next_step, _) = run_dropout(&Dropout { step: 1, ..op }, &x, &x, &shape);
        let (_, other_seed, _) = run_dropout(&Dropout { seed: 43, ..op }, &x, &x, &shape);
        let (_, again, _) = run_dropout(&op, &x, &x, &shape);
        let differ = |a: &[u32], b: &[u32]| a.iter().zip(b).filter(|(a, b)| a != b).count();
        let expected_differ = 2.0 * f64::from(p) * (1.0 - f64::from(p)) * len as f64;
        assert!(
            differ(&mask, &next_step) as f64 > 0.9 * expected_differ,
            "p {p}: step 1 repeats step 0"
        );
        assert!(
            differ(&mask, &other_seed) as f64 > 0.9 * expected_differ,
            "p {p}: seed 43 repeats seed 42"
        );
        assert_eq!(
            differ(&mask, &again),
            0,
            "p {p}: the same (seed, step) gave another mask"
        );
    }
}

#[test]
fn dropout_p0_is_the_identity_and_p1_gives_zeros() {
    let shape = [3, 257];
    let mut x = seeded(5000, 3 * 257);
    x[5] = f32::INFINITY;
    let dy = seeded(5001, 3 * 257);
    let (y, mask, dx) = run_dropout(
        &Dropout {
            p: 0.0,
            seed: 9,
            step: 9,
        },
        &x,
        &dy,
        &shape,
    );
    assert_eq!(y, x, "p = 0 changed x");
    assert_eq!(dx, dy, "p = 0 changed dy");
    assert!(mask.iter().all(|&m| m == 1));
    x[6] = f32::NAN;
    let (y, mask, dx) = run_dropout(
        &Dropout {
            p: 1.0,
            seed: 9,
            step: 9,
        },
        &x,
        &dy,
        &shape,
    );
    assert!(y.iter().chain(&dx).all(|&v| v == 0.0), "p = 1 must give zeros");
    assert!(mask.iter().all(|&m| m == 0));
}

#[test]
fn dropout_backward_accumulates_and_works_without_a_mask_output() {
    let shape = [1031];
    let op = Dropout {
        p: 0.25,
        seed: 3,
        step: 11,
    };
    let (x, dy, start) = (seeded(6000, 1031), seeded(6001, 1031), grid(6002, 1031));
    let (x_t, dy_t) = (upload(&x, &shape), upload(&dy, &shape));
    let y_t = nan_tensor(&shape);
    let dx_t = upload(&start, &shape);
    run(|ctx, encoder| {
        dropout_forward(ctx, encoder, &op, &x_t, &y_t, None).unwrap();
        dropout_backward(ctx, encoder, &op, &dy_t, &dx_t, true).unwrap();
    });
    let (want_y, _) = reference::dropout_forward(&to_f64(&x), op.p, op.seed, op.step);
    let want_dx = plus(
        &reference::dropout_backward(&to_f64(&dy), op.p, op.seed, op.step),
        &start,
    );
    assert_close("dropout: y", "no mask", &read(&y_t), &want_y, Tolerance::F32_SUMS);
    assert_close(
        "dropout: grad_x",
        "accumulate",
        &read(&dx_t),
        &want_dx,
        Tolerance::F32_SUMS,
    );
}
