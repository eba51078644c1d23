//! The elementwise family against the CPU reference: add, mul, tanh, sigmoid, relu,
//! concat/split and sum/mean, forward and backward (overwriting and accumulating), and
//! every reference backward against finite differences. Dropout is in `dropout.rs`.

mod common;

use common::elementwise::{grad_tensor, name, plus, read, run, upload, SHAPES};
use common::{
    assert_close, assert_gradient_matches_finite_differences, ctx, grid, nan_tensor, seeded, to_f64, Tolerance,
};
use tsumugi::kernels::elementwise::{
    add_backward, add_forward, concat_backward, concat_forward, dropout_forward, mean_backward, mean_forward,
    mul_backward, mul_forward, relu_backward, relu_forward, sigmoid_backward, sigmoid_forward, split_backward,
    split_forward, sum_backward, sum_forward, tanh_backward, tanh_forward, BinaryGrads, Dropout,
};
use tsumugi::reference::elementwise as reference;
use tsumugi::{Context, DType, Error, Tensor};

/// Pointwise math of the GPU's f32 against f64: a few ulp of the result.
const ACTIVATION: Tolerance = Tolerance { atol: 1e-6, rtol: 1e-5 };

// ---- add and mul ----

#[test]
fn add_and_mul_forward_match_reference_on_the_shape_table() {
    for (i, shape) in SHAPES.iter().enumerate() {
        let len = shape.iter().product();
        let (a, b) = (seeded(10 + i as u64, len), seeded(20 + i as u64, len));
        let (a_t, b_t) = (upload(&a, shape), upload(&b, shape));
        let (sum, product) = (nan_tensor(shape), nan_tensor(shape));
        run(|ctx, encoder| {
            add_forward(ctx, encoder, &a_t, &b_t, &sum).unwrap();
            mul_forward(ctx, encoder, &a_t, &b_t, &product).unwrap();
        });
        // One f32 rounding of an exact f64 result: within half an ulp.
        let case = name(shape);
        let tol = Tolerance { atol: 0.0, rtol: 6e-8 };
        assert_close(
            "add: y",
            &case,
            &read(&sum),
            &reference::add_forward(&to_f64(&a), &to_f64(&b)),
            tol,
        );
        assert_close(
            "mul: y",
            &case,
            &read(&product),
            &reference::mul_forward(&to_f64(&a), &to_f64(&b)),
            tol,
        );
    }
}

#[test]
fn add_and_mul_backward_match_reference_overwriting_and_accumulating() {
    for (i, shape) in SHAPES.iter().enumerate() {
        for accumulate in [false, true] {
            let len = shape.iter().product();
            let seed = 100 + 10 * i as u64;
            let (a, b, dy) = (seeded(seed, len), seeded(seed + 1, len), seeded(seed + 2, len));
            let (start_a, start_b) = (grid(seed + 3, len), grid(seed + 4, len));
            let (a_t, b_t, dy_t) = (upload(&a, shape), upload(&b, shape), upload(&dy, shape));
            let add_a = grad_tensor(shape, &start_a, accumulate);
            let add_b = grad_tensor(shape, &start_b, accumulate);
            let mul_a = grad_tensor(shape, &start_a, accumulate);
            let mul_b = grad_tensor(shape, &start_b, accumulate);
            run(|ctx, encoder| {
                let grads = BinaryGrads {
                    a: Some(&add_a),
                    b: Some(&add_b),
                    accumulate,
                };
                add_backward(ctx, encoder, &dy_t, grads).unwrap();
                let grads = BinaryGrads {
                    a: Some(&mul_a),
                    b: Some(&mul_b),
                    accumulate,
                };
                mul_backward(ctx, encoder, &a_t, &b_t, &dy_t, grads).unwrap();
            });
            let (mut want_add_a, mut want_add_b) = reference::add_backward(&to_f64(&dy));
            let (mut want_mul_a, mut want_mul_b) = reference::mul_backward(&to_f64(&a), &to_f64(&b), &to_f64(&dy));
            if accumulate {
                want_add_a = plus(&want_add_a, &start_a);
                want_add_b = plus(&want_add_b, &start_b);
                want_mul_a = plus(&want_mul_a, &start_a);
                want_mul_b = plus(&want_mul_b, &start_b);
            }
            let case = format!("{}{}", name(shape), if accumulate { " accumulate" } else { "" });
            let tol = Tolerance { atol: 1e-7, rtol: 1e-6 };
            assert_close("add: grad_a", &case, &read(&add_a), &want_add_a, tol);
            assert_close("add: grad_b", &case, &read(&add_b), &want_add_b, tol);
            assert_close("mul: grad_a", &case, &read(&mul_a), &want_mul_a, tol);
            assert_close("mul: grad_b", &case, &read(&mul_b), &want_mul_b, tol);
        }
    }
}

#[test]
fn mul_backward_writes_only_the_gradients_asked_for() {
    let shape = [3, 7];
    let (a, b, dy) = (seeded(1, 21), seeded(2, 21), seeded(3, 21));
    let (a_t, b_t, dy_t) = (upload(&a, &shape), upload(&b, &shape), upload(&dy, &shape));
    let grad_b = nan_tensor(&shape);
    run(|ctx, encoder| {
        let grads = BinaryGrads {
            a: None,
            b: Some(&grad_b),
            accumulate: false,
        };
        mul_backward(ctx, encoder, &a_t, &b_t, &dy_t, grads).unwrap();
    });
    let (_, want_b) = reference::mul_backward(&to_f64(&a), &to_f64(&b), &to_f64(&dy));
    assert_close(
        "mul: grad_b",
        "3x7 only b",
        &read(&grad_b),
        &want_b,
        Tolerance::F32_SUMS,
    );
}

// ---- activations ----

type Forward = fn(&Context, &mut dyn tsumugi::Recorder, &Tensor, &Tensor) -> tsumugi::Result<()>;
type Backward = fn(&Context, &mut dyn tsumugi::Recorder, &Tensor, &Tensor, &Tensor, bool) -> tsumugi::Result<()>;

struct Activation {
    name: &'static str,
    forward: Forward,
    backward: Backward,
    reference_forward: fn(&[f64]) -> Vec<f64>,
    reference_backward: fn(&[f64], &[f64]) -> Vec<f64>,
}

const ACTIVATIONS: &[Activation] = &[
    Activation {
        name: "tanh",
        forward: tanh_forward,
        backward: tanh_backward,
        reference_forward: reference::tanh_forward,
        reference_backward: reference::tanh_backward,
    },
    Activation {
        name: "sigmoid",
        forward: sigmoid_forward,
        backward: sigmoid_backward,
        reference_forward: reference::sigmoid_forward,
        reference_backward: reference::sigmoid_backward,
    },
    Activation {
        name: "relu",
        forward: relu_forward,
        backward: relu_backward,
        reference_forward: reference::relu_forward,
        reference_backward: reference::relu_backward,
    },
];

/// Inputs over [-12, 12]: saturated tails as well as the middle.
fn activation_input(seed: u64, len: usize) -> Vec<f32> {
    seeded(seed, len).iter().map(|x| 12.0 * x).collect()
}

#[test]
fn tanh_sigmoid_relu_forward_and_backward_match_reference() {
    for act in ACTIVATIONS {
        for (i, shape) in SHAPES.iter().enumerate() {
            for accumulate in [false, true] {
                let len = shape.iter().product();
                let seed = 1000 + 10 * i as u64;
                let x = activation_input(seed, len);
                let dy = seeded(seed + 1, len);
                let start = grid(seed + 2, len);
                let (x_t, dy_t) = (upload(&x, shape), upload(&dy, shape));
                let y_t = nan_tensor(shape);
                let dx_t = grad_tensor(shape, &start, accumulate);
                run(|ctx, encoder| {
                    (act.forward)(ctx, encoder, &x_t, &y_t).unwrap();
                    (act.backward)(ctx, encoder, &y_t, &dy_t, &dx_t, accumulate).unwrap();
                });
                let case = format!(
                    "{} {}{}",
                    act.name,
                    name(shape),
                    if accumulate { " accumulate" } else { "" }
                );
                let y = read(&y_t);
                let want_y = (act.reference_forward)(&to_f64(&x));
                assert_close("y", &case, &y, &want_y, ACTIVATION);
                // The backward is checked from the GPU's own y, so it tests the backward
                // kernel alone rather than the forward's rounding twice.
                let mut want_dx = (act.reference_backward)(&to_f64(&y), &to_f64(&dy));
                if accumulate {
                    want_dx = plus(&want_dx, &start);
                }
                assert_close("grad_x", &case, &read(&dx_t), &want_dx, ACTIVATION);
            }
        }
    }
}

#[test]
fn relu_keeps_nan_and_gives_no_gradient_at_zero() {
    let x = [f32::NAN, 0.0, -0.0, -1.0, 2.0, f32::INFINITY, f32::NEG_INFINITY, 1e-30];
    let x_t = upload(&x, &[8]);
    let y_t = nan_tensor(&[8]);
    let dy_t = upload(&[1.0; 8], &[8]);
    let dx_t = nan_tensor(&[8]);
    run(|ctx, encoder| {
        relu_forward(ctx, encoder, &x_t, &y_t).unwrap();
        relu_backward(ctx, encoder, &y_t, &dy_t, &dx_t, false).unwrap();
    });
    let y = read(&y_t);
    assert!(y[0].is_nan(), "relu(NaN) = {}", y[0]);
    assert_eq!(&y[3..], &[0.0, 2.0, f32::INFINITY, 0.0, 1e-30]);
    assert_eq!(read(&dx_t), vec![0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0]);
}

// ---- concat and split ----

/// (leading shape, A, B): 1, primes, a 256-wide side.
const CONCAT_SHAPES: &[(&[usize], usize, usize)] = &[
    (&[1], 1, 1),
    (&[3], 5, 7),
    (&[2, 2], 256, 1),
    (&[17], 100, 33),
    (&[4, 8], 31, 64),
];

fn with_last(lead: &[usize], last: usize) -> Vec<usize> {
    lead.iter().copied().chain([last]).collect()
}

#[test]
fn concat_and_split_forward_match_reference_exactly() {
    for (i, &(lead, cols_a, cols_b)) in CONCAT_SHAPES.iter().enumerate() {
        let rows: usize = lead.iter().product();
        let seed = 2000 + 10 * i as u64;
        let (a, b) = (seeded(seed, rows * cols_a), seeded(seed + 1, rows * cols_b));
        let (a_shape, b_shape, y_shape) = (
            with_last(lead, cols_a),
            with_last(lead, cols_b),
            with_last(lead, cols_a + cols_b),
        );
        let (a_t, b_t) = (upload(&a, &a_shape), upload(&b, &b_shape));
        let y_t = nan_tensor(&y_shape);
        let (a2_t, b2_t) = (nan_tensor(&a_shape), nan_tensor(&b_shape));
        run(|ctx, encoder| {
            concat_forward(ctx, encoder, &a_t, &b_t, &y_t).unwrap();
            // Splitting the concatenation gives the operands back.
            split_forward(ctx, encoder, &y_t, &a2_t, &b2_t).unwrap();
        });
        let case = format!("{} ++ {}", name(&a_shape), name(&b_shape));
        let want = reference::concat_forward(&to_f64(&a), &to_f64(&b), cols_a, cols_b);
        assert_close("concat: y", &case, &read(&y_t), &want, Tolerance::EXACT);
        let (want_a, want_b) = reference::split_forward(&want, cols_a, cols_b);
        assert_close("split: a", &case, &read(&a2_t), &want_a, Tolerance::EXACT);
        assert_close("split: b", &case, &read(&b2_t), &want_b, Tolerance::EXACT);
    }
}

#[test]
fn concat_and_split_backward_match_reference_overwriting_and_accumulating() {
    for (i, &(lead, cols_a, cols_b)) in CONCAT_SHAPES.iter().enumerate() {
        for accumulate in [false, true] {
            let rows: usize = lead.iter().product();
            let seed = 2500 + 10 * i as u64;
            let (a_shape, b_shape, y_shape) = (
                with_last(lead, cols_a),
                with_last(lead, cols_b),
                with_last(lead, cols_a + cols_b),
            );
            let dy = grid(seed, rows * (cols_a + cols_b));
            let (da, db) = (grid(seed + 1, rows * cols_a), grid(seed + 2, rows * cols_b));
            let (start_a, start_b, start_x) = (
                grid(seed + 3, rows * cols_a),
                grid(seed + 4, rows * cols_b),
                grid(seed + 5, dy.len()),
            );
            let dy_t = upload(&dy, &y_shape);
            let (da_t, db_t) = (upload(&da, &a_shape), upload(&db, &b_shape));
            let grad_a = grad_tensor(&a_shape, &start_a, accumulate);
            let grad_b = grad_tensor(&b_shape, &start_b, accumulate);
            let grad_x = grad_tensor(&y_shape, &start_x, accumulate);
            run(|ctx, encoder| {
                let grads = BinaryGrads {
                    a: Some(&grad_a),
                    b: Some(&grad_b),
                    accumulate,
                };
                concat_backward(ctx, encoder, &dy_t, grads).unwrap();
                split_backward(ctx, encoder, &da_t, &db_t, &grad_x, accumulate).unwrap();
            });
            let (mut want_a, mut want_b) = reference::concat_backward(&to_f64(&dy), cols_a, cols_b);
            let mut want_x = reference::split_backward(&to_f64(&da), &to_f64(&db), cols_a, cols_b);
            if accumulate {
                want_a = plus(&want_a, &start_a);
                want_b = plus(&want_b, &start_b);
                want_x = plus(&want_x, &start_x);
            }
            let case = format!("{}{}", name(&y_shape), if accumulate { " accumulate" } else { "" });
            // Grid values: sums of two are exact.
            assert_close("concat: grad_a", &case, &read(&grad_a), &want_a, Tolerance::EXACT);
            assert_close("concat: grad_b", &case, &read(&grad_b), &want_b, Tolerance::EXACT);
            assert_close("split: grad_x", &case, &read(&grad_x), &want_x, Tolerance::EXACT);
        }
    }
}

// ---- sum and mean ----

fn reduce(x: &[f32], shape: &[usize], mean: bool) -> f32 {
    let x_t = upload(x, shape);
    let y_t = nan_tensor(&[1]);
    run(|ctx, encoder| {
        if mean {
            mean_forward(ctx, encoder, &x_t, &y_t).unwrap();
        } else {
            sum_forward(ctx, encoder, &x_t, &y_t).unwrap();
        }
    });
    read(&y_t)[0]
}

#[test]
fn sum_and_mean_forward_match_reference() {
    for (i, shape) in SHAPES.iter().enumerate() {
        let len: usize = shape.iter().product();
        let case = name(shape);
        // Grid values: every partial sum is exact, so the sum must be exactly right.
        let x = grid(3000 + i as u64, len);
        let want = reference::sum_forward(&to_f64(&x));
        assert_close(
            "sum: y",
            &format!("grid {case}"),
            &[reduce(&x, shape, false)],
            &[want],
            Tolerance::EXACT,
        );
        let want = reference::mean_forward(&to_f64(&x));
        let tol = Tolerance { atol: 0.0, rtol: 1e-7 };
        assert_close(
            "mean: y",
            &format!("grid {case}"),
            &[reduce(&x, shape, true)],
            &[want],
            tol,
        );
        // Ordinary floats: the rounding of n additions, relative to sum |x|.
        let x = seeded(3100 + i as u64, len);
        let abs_sum: f64 = x.iter().map(|v| f64::from(v.abs())).sum();
        let tol = Tolerance {
            atol: 1e-6 * abs_sum,
            rtol: 0.0,
        };
        let want = reference::sum_forward(&to_f64(&x));
        assert_close("sum: y", &case, &[reduce(&x, shape, false)], &[want], tol);
        let want = reference::mean_forward(&to_f64(&x));
        let tol = Tolerance {
            atol: 1e-6 * abs_sum / len as f64,
            rtol: 0.0,
        };
        assert_close("mean: y", &case, &[reduce(&x, shape, true)], &[want], tol);
    }
}

#[test]
fn sum_forward_is_bitwise_identical_across_runs() {
    let shape = [64, 1237];
    let x = seeded(77, 64 * 1237);
    let first = reduce(&x, &shape, false);
    for _ in 0..3 {
        assert_eq!(reduce(&x, &shape, false).to_bits(), first.to_bits());
    }
}

#[test]
fn sum_and_mean_backward_broadcast_the_gradient() {
    for (i, shape) in SHAPES.iter().enumerate() {
        for accumulate in [false, true] {
            let len = shape.iter().product();
            let start = grid(3200 + i as u64, len);
            let dy_t = upload(&[1.5], &[1]);
            let sum_dx = grad_tensor(shape, &start, accumulate);
            let mean_dx = grad_tensor(shape, &start, accumulate);
            run(|ctx, encoder| {
                sum_backward(ctx, encoder, &dy_t, &sum_dx, accumulate).unwrap();
                mean_backward(ctx, encoder, &dy_t, &mean_dx, accumulate).unwrap();
            });
            let mut want_sum = reference::sum_backward(1.5, len);
            let mut want_mean = reference::mean_backward(1.5, len);
            if accumulate {
                want_sum = plus(&want_sum, &start);
                want_mean = plus(&want_mean, &start);
            }
            let case = format!("{}{}", name(shape), if accumulate { " accumulate" } else { "" });
            assert_close("sum: grad_x", &case, &read(&sum_dx), &want_sum, Tolerance::EXACT);
            let tol = Tolerance { atol: 0.0, rtol: 2e-7 };
            assert_close("mean: grad_x", &case, &read(&mean_dx), &want_mean, tol);
        }
    }
}

// ---- finite differences of the references ----

/// loss = sum(w * f(x)) for fixed random w, so dloss/dy = w.
fn weighted(y: &[f64], w: &[f64]) -> f64 {
    y.iter().zip(w).map(|(y, w)| y * w).sum()
}

#[test]
fn elementwise_reference_backward_matches_finite_differences() {
    let len = 13;
    let (a, b, w) = (
        to_f64(&seeded(7000, len)),
        to_f64(&seeded(7001, len)),
        to_f64(&seeded(7002, len)),
    );
    let (da, db) = reference::add_backward(&w);
    assert_gradient_matches_finite_differences("add: grad_a", "13", &a, &da, |x| {
        weighted(&reference::add_forward(x, &b), &w)
    });
    assert_gradient_matches_finite_differences("add: grad_b", "13", &b, &db, |x| {
        weighted(&reference::add_forward(&a, x), &w)
    });
    let (da, db) = reference::mul_backward(&a, &b, &w);
    assert_gradient_matches_finite_differences("mul: grad_a", "13", &a, &da, |x| {
        weighted(&reference::mul_forward(x, &b), &w)
    });
    assert_gradient_matches_finite_differences("mul: grad_b", "13", &b, &db, |x| {
        weighted(&reference::mul_forward(&a, x), &w)
    });
    let x: Vec<f64> = a.iter().map(|v| 3.0 * v).collect();
    for act in ACTIVATIONS {
        let dx = (act.reference_backward)(&(act.reference_forward)(&x), &w);
        assert_gradient_matches_finite_differences(act.name, "13", &x, &dx, |x| {
            weighted(&(act.reference_forward)(x), &w)
        });
    }

    // concat [2, 3] ++ [2, 4] -> [2, 7], and split back.
    let (a, b) = (to_f64(&seeded(7010, 6)), to_f64(&seeded(7011, 8)));
    let w = to_f64(&seeded(7012, 14));
    let (da, db) = reference::concat_backward(&w, 3, 4);
    assert_gradient_matches_finite_differences("concat: grad_a", "2x3++2x4", &a, &da, |x| {
        weighted(&reference::concat_forward(x, &b, 3, 4), &w)
    });
    assert_gradient_matches_finite_differences("concat: grad_b", "2x3++2x4", &b, &db, |x| {
        weighted(&reference::concat_forward(&a, x, 3, 4), &w)
    });
    let x = to_f64(&seeded(7013, 14));
    let (wa, wb) = (to_f64(&seeded(7014, 6)), to_f64(&seeded(7015, 8)));
    let dx = reference::split_backward(&wa, &wb, 3, 4);
    assert_gradient_matches_finite_differences("split: grad_x", "2x7", &x, &dx, |x| {
        let (a, b) = reference::split_forward(x, 3, 4);
        weighted(&a, &wa) + weighted(&b, &wb)
    });

    // sum and mean, with upstream gradient 0.7.
    let x = to_f64(&seeded(7020, 11));
    let dx = reference::sum_backward(0.7, 11);
    assert_gradient_matches_finite_differences("sum: grad_x", "11", &x, &dx, |x| 0.7 * reference::sum_forward(x));
    let dx = reference::mean_backward(0.7, 11);
    assert_gradient_matches_finite_differences("mean: grad_x", "11", &x, &dx, |x| 0.7 * reference::mean_forward(x));

    // dropout: linear in x for a fixed (seed, step).
    let x = to_f64(&seeded(7030, 37));
    let w = to_f64(&seeded(7031, 37));
    let dx = reference::dropout_backward(&w, 0.4, 5, 6);
    assert_gradient_matches_finite_differences("dropout: grad_x", "37 p 0.4", &x, &dx, |x| {
        weighted(&reference::dropout_forward(x, 0.4, 5, 6).0, &w)
    });
}

#[test]
fn elementwise_rejects_mismatched_shapes_and_arguments_naming_the_tensor() {
    let ctx = ctx();
    let f = |shape: &[usize]| Tensor::zeros(ctx, shape, DType::F32).unwrap();
    let (a, b, y) = (f(&[3, 4]), f(&[4, 3]), f(&[3, 4]));
    let mut encoder = ctx.create_encoder();
    let err = add_forward(ctx, &mut encoder, &a, &b, &y).unwrap_err();
    assert!(
        matches!(&err, Error::ShapeMismatch { tensor, found, .. } if tensor == "add: b" && found == &vec![4, 3]),
        "{err}"
    );
    let ids = Tensor::zeros(ctx, &[3, 4], DType::U32).unwrap();
    let err = tanh_forward(ctx, &mut encoder, &ids, &y).unwrap_err();
    assert!(
        matches!(&err, Error::DType { tensor, .. } if tensor == "tanh: x"),
        "{err}"
    );
    let err = relu_backward(ctx, &mut encoder, &a, &a, &f(&[12]), false).unwrap_err();
    assert!(
        matches!(&err, Error::ShapeMismatch { tensor, .. } if tensor == "relu: grad_x"),
        "{err}"
    );
    let err = sigmoid_forward(ctx, &mut encoder, &a, &a).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "in place: {err}");

    let err = concat_forward(ctx, &mut encoder, &a, &f(&[2, 5]), &f(&[3, 9])).unwrap_err();
    assert!(
        matches!(&err, Error::ShapeMismatch { tensor, .. } if tensor == "concat: b"),
        "{err}"
    );
    let err = concat_forward(ctx, &mut encoder, &a, &f(&[3, 5]), &f(&[3, 8])).unwrap_err();
    assert!(
        matches!(&err, Error::ShapeMismatch { tensor, .. } if tensor == "concat: y"),
        "{err}"
    );
    let err = split_forward(ctx, &mut encoder, &f(&[3, 9]), &a, &f(&[3, 4])).unwrap_err();
    assert!(
        matches!(&err, Error::ShapeMismatch { tensor, .. } if tensor == "split: b"),
        "{err}"
    );

    let err = sum_forward(ctx, &mut encoder, &a, &f(&[2])).unwrap_err();
    assert!(
        matches!(&err, Error::ShapeMismatch { tensor, .. } if tensor == "sum: y"),
        "{err}"
    );
    let err = mean_backward(ctx, &mut encoder, &f(&[1, 1]), &a, false).unwrap_err();
    assert!(
        matches!(&err, Error::ShapeMismatch { tensor, .. } if tensor == "mean: grad_y"),
        "{err}"
    );
    let err = sum_forward(ctx, &mut encoder, &f(&[0, 3]), &f(&[1])).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "empty input: {err}");

    for p in [-0.1f32, 1.5, f32::NAN] {
        let op = Dropout { p, seed: 0, step: 0 };
        let err = dropout_forward(ctx, &mut encoder, &op, &a, &y, None).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "p {p}: {err}");
    }
    let err = dropout_forward(ctx, &mut encoder, &Dropout::default(), &a, &y, Some(&b)).unwrap_err();
    assert!(
        matches!(&err, Error::DType { tensor, .. } if tensor == "dropout: mask"),
        "{err}"
    );
}

/// Random valid shapes (one to three dimensions, lengths not multiples of 4 or of the
/// workgroup) against the CPU reference: add, mul and sum.
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(common::prop_config(32))]
        #[test]
        fn add_mul_and_sum_match_reference_on_random_shapes(
            shape in proptest::collection::vec(1usize..=70, 1..=3),
            seed in 0u64..1000,
        ) {
            let len = shape.iter().product();
            let (a, b) = (seeded(seed, len), seeded(seed + 1, len));
            let (a_t, b_t) = (upload(&a, &shape), upload(&b, &shape));
            let (added, product, total) = (nan_tensor(&shape), nan_tensor(&shape), nan_tensor(&[1]));
            run(|ctx, encoder| {
                add_forward(ctx, encoder, &a_t, &b_t, &added).unwrap();
                mul_forward(ctx, encoder, &a_t, &b_t, &product).unwrap();
                sum_forward(ctx, encoder, &a_t, &total).unwrap();
            });
            let case = format!("{} seed {seed}", name(&shape));
            let tol = Tolerance { atol: 0.0, rtol: 6e-8 };
            assert_close("add: y", &case, &read(&added), &reference::add_forward(&to_f64(&a), &to_f64(&b)), tol);
            assert_close("mul: y", &case, &read(&product), &reference::mul_forward(&to_f64(&a), &to_f64(&b)), tol);
            let want_sum = reference::sum_forward(&to_f64(&a));
            assert_close("sum: y", &case, &read(&total), &[want_sum], Tolerance::F32_SUMS);
        }
    }
}
