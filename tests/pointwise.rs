//! The pointwise family against the CPU reference: add, sub, mul and div with
//! broadcasting (same shapes, a row, a suffix, a scalar, on either side), scale, square,
//! exp and log, sums and means over each dimension, slices along each dimension, forward
//! and backward (overwriting and accumulating), and every reference backward against
//! finite differences.

mod common;

use common::{
    assert_close, assert_gradient_matches_finite_differences, ctx, grid, nan_tensor, seeded, to_f64, Tolerance,
};
use tsumugi::kernels::elementwise::BinaryGrads;
use tsumugi::kernels::pointwise::{
    binary_backward, binary_forward, broadcast_shape, mean_dim_backward, mean_dim_forward, reduced_shape,
    slice_backward, slice_forward, sum_dim_backward, sum_dim_forward, unary_backward, unary_forward, Binary, Unary,
};
use tsumugi::reference::pointwise as reference;
use tsumugi::{Context, Error, Tensor};

const BINARY_OPS: [Binary; 4] = [Binary::Add, Binary::Sub, Binary::Mul, Binary::Div];

/// (a's shape, b's shape): the same shapes (1, a prime, the 256-invocation workgroup +1,
/// several hundred workgroups), a row over rows, a suffix over a batch, a scalar, and the
/// broadcast operand on the left.
const BINARY_CASES: &[(&[usize], &[usize])] = &[
    (&[1], &[1]),
    (&[7], &[7]),
    (&[257], &[257]),
    (&[64, 1237], &[64, 1237]),
    (&[3, 33], &[33]),
    (&[300, 7], &[7]),
    (&[2, 5, 17], &[5, 17]),
    (&[255], &[1]),
    (&[4, 1031], &[1]),
    (&[33], &[3, 33]),
    (&[1], &[2, 3, 5]),
];

/// Pointwise f32 math against f64: a few ulp (WGSL's division, exp and log are not
/// correctly rounded).
const POINTWISE: Tolerance = Tolerance { atol: 1e-6, rtol: 1e-5 };

fn name(shape: &[usize]) -> String {
    shape.iter().map(usize::to_string).collect::<Vec<_>>().join("x")
}

fn upload(data: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(ctx(), data, shape).expect("upload")
}

fn run(encode: impl FnOnce(&Context, &mut tsumugi::Encoder)) {
    let ctx = ctx();
    let mut encoder = ctx.create_encoder();
    encode(ctx, &mut encoder);
    ctx.submit(encoder);
}

fn read(tensor: &Tensor) -> Vec<f32> {
    tensor.to_vec().expect("read back")
}

fn plus(want: &[f64], start: &[f32]) -> Vec<f64> {
    want.iter().zip(start).map(|(w, s)| w + f64::from(*s)).collect()
}

/// NaN-filled when overwriting (an unwritten element fails), `start` when accumulating.
fn grad_tensor(shape: &[usize], start: &[f32], accumulate: bool) -> Tensor {
    if accumulate {
        upload(start, shape)
    } else {
        nan_tensor(shape)
    }
}

/// Seeded values kept at least 0.5 away from zero: divisors, and the inputs of log
/// (made positive).
fn away_from_zero(seed: u64, len: usize) -> Vec<f32> {
    seeded(seed, len)
        .into_iter()
        .map(|v| v.signum() * (v.abs() + 0.5))
        .collect()
}

fn operands(op: Binary, seed: u64, shapes: (&[usize], &[usize])) -> (Vec<f32>, Vec<f32>) {
    let (la, lb) = (shapes.0.iter().product(), shapes.1.iter().product());
    let b = if op == Binary::Div {
        away_from_zero(seed + 1, lb)
    } else {
        seeded(seed + 1, lb)
    };
    (seeded(seed, la), b)
}

// ---- binary ops ----

#[test]
fn binary_forward_matches_reference_with_broadcasting() {
    for (i, &(sa, sb)) in BINARY_CASES.iter().enumerate() {
        let shape = broadcast_shape(sa, sb).expect("the table broadcasts");
        for op in BINARY_OPS {
            let (a, b) = operands(op, 10 + i as u64, (sa, sb));
            let y = nan_tensor(&shape);
            run(|ctx, encoder| binary_forward(ctx, encoder, op, &upload(&a, sa), &upload(&b, sb), &y).unwrap());
            let want = reference::binary_forward(op, &to_f64(&a), &to_f64(&b), y.len());
            let case = format!("{} {} {}", name(sa), op.name(), name(sb));
            assert_close("binary: y", &case, &read(&y), &want, POINTWISE);
        }
    }
}

#[test]
fn binary_backward_matches_reference_overwriting_and_accumulating() {
    for (i, &(sa, sb)) in BINARY_CASES.iter().enumerate() {
        let shape = broadcast_shape(sa, sb).expect("the table broadcasts");
        let len: usize = shape.iter().product();
        for op in BINARY_OPS {
            for accumulate in [false, true] {
                let seed = 100 + 10 * i as u64;
                let (a, b) = operands(op, seed, (sa, sb));
                let dy = seeded(seed + 2, len);
                let (start_a, start_b) = (grid(seed + 3, a.len()), grid(seed + 4, b.len()));
                let (grad_a, grad_b) = (
                    grad_tensor(sa, &start_a, accumulate),
                    grad_tensor(sb, &start_b, accumulate),
                );
                let (a_t, b_t, dy_t) = (upload(&a, sa), upload(&b, sb), upload(&dy, &shape));
                run(|ctx, encoder| {
                    let grads = BinaryGrads {
                        a: Some(&grad_a),
                        b: Some(&grad_b),
                        accumulate,
                    };
                    binary_backward(ctx, encoder, op, &a_t, &b_t, &dy_t, grads).unwrap();
                });
                let (mut want_a, mut want_b) = reference::binary_backward(op, &to_f64(&a), &to_f64(&b), &to_f64(&dy));
                if accumulate {
                    want_a = plus(&want_a, &start_a);
                    want_b = plus(&want_b, &start_b);
                }
                let case = format!(
                    "{} {} {}{}",
                    name(sa),
                    op.name(),
                    name(sb),
                    if accumulate { " accumulate" } else { "" }
                );
                // A broadcast operand's gradient is a sum of up to 4124 terms.
                assert_close("binary: grad_a", &case, &read(&grad_a), &want_a, Tolerance::F32_SUMS);
                assert_close("binary: grad_b", &case, &read(&grad_b), &want_b, Tolerance::F32_SUMS);
            }
        }
    }
}

#[test]
fn binary_backward_writes_only_the_gradient_asked_for() {
    let (sa, sb): (&[usize], &[usize]) = (&[3, 7], &[7]);
    let (a, b, dy) = (seeded(1, 21), away_from_zero(2, 7), seeded(3, 21));
    let grad_b = nan_tensor(sb);
    run(|ctx, encoder| {
        let grads = BinaryGrads {
            a: None,
            b: Some(&grad_b),
            accumulate: false,
        };
        binary_backward(
            ctx,
            encoder,
            Binary::Div,
            &upload(&a, sa),
            &upload(&b, sb),
            &upload(&dy, sa),
            grads,
        )
        .unwrap();
    });
    let (_, want_b) = reference::binary_backward(Binary::Div, &to_f64(&a), &to_f64(&b), &to_f64(&dy));
    assert_close(
        "div: grad_b",
        "3x7 / 7 only b",
        &read(&grad_b),
        &want_b,
        Tolerance::F32_SUMS,
    );
}

#[test]
fn binary_reference_backward_matches_finite_differences() {
    // loss = Σ_i w[i] * y[i] with seeded weights w, so ∂loss/∂y = w.
    let cases: &[(&[usize], &[usize])] = &[(&[3, 5], &[3, 5]), (&[4, 3], &[3]), (&[7], &[1]), (&[2], &[3, 2])];
    for &(sa, sb) in cases {
        for op in BINARY_OPS {
            let (a, b) = operands(op, 7, (sa, sb));
            let (a, b) = (to_f64(&a), to_f64(&b));
            let len = broadcast_shape(sa, sb).unwrap().iter().product();
            let w = to_f64(&seeded(8, len));
            let loss = |a: &[f64], b: &[f64]| -> f64 {
                let y = reference::binary_forward(op, a, b, len);
                y.iter().zip(&w).map(|(y, w)| y * w).sum()
            };
            let (da, db) = reference::binary_backward(op, &a, &b, &w);
            let case = format!("{} {} {}", name(sa), op.name(), name(sb));
            assert_gradient_matches_finite_differences("binary: da", &case, &a, &da, |a| loss(a, &b));
            assert_gradient_matches_finite_differences("binary: db", &case, &b, &db, |b| loss(&a, b));
        }
    }
}

#[test]
fn binary_ops_refuse_shapes_that_do_not_broadcast() {
    let (a, b, y) = (nan_tensor(&[3, 5]), nan_tensor(&[3]), nan_tensor(&[3, 5]));
    let mut encoder = ctx().create_encoder();
    let err = binary_forward(ctx(), &mut encoder, Binary::Mul, &a, &b, &y).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    assert!(err.to_string().contains("mul: b"), "{err}");
    // The right operands into the wrong output shape.
    let err = binary_forward(
        ctx(),
        &mut encoder,
        Binary::Add,
        &a,
        &nan_tensor(&[5]),
        &nan_tensor(&[5]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("add: y"), "{err}");
}

// ---- unary maps ----

const UNARY_OPS: [Unary; 5] = [
    Unary::Scale(0.75),
    Unary::Scale(-1.0),
    Unary::Square,
    Unary::Exp,
    Unary::Log,
];

const UNARY_SHAPES: &[&[usize]] = &[&[1], &[7], &[255], &[256], &[257], &[3, 5, 17], &[64, 1237]];

fn unary_input(op: Unary, seed: u64, len: usize) -> Vec<f32> {
    match op {
        Unary::Log => away_from_zero(seed, len).into_iter().map(f32::abs).collect(),
        // Within exp's and square's comfortable range; seeded is [-1, 1), widened.
        _ => seeded(seed, len).into_iter().map(|v| 3.0 * v).collect(),
    }
}

#[test]
fn unary_forward_and_backward_match_reference() {
    for (i, shape) in UNARY_SHAPES.iter().enumerate() {
        let len = shape.iter().product();
        for op in UNARY_OPS {
            for accumulate in [false, true] {
                let seed = 300 + 10 * i as u64;
                let (x, dy, start) = (unary_input(op, seed, len), seeded(seed + 1, len), grid(seed + 2, len));
                let (x_t, dy_t) = (upload(&x, shape), upload(&dy, shape));
                let (y, dx) = (nan_tensor(shape), grad_tensor(shape, &start, accumulate));
                run(|ctx, encoder| {
                    unary_forward(ctx, encoder, op, &x_t, &y).unwrap();
                    let saved = if op.saves_output() { &y } else { &x_t };
                    unary_backward(ctx, encoder, op, saved, &dy_t, &dx, accumulate).unwrap();
                });
                let case = format!("{} {op:?}{}", name(shape), if accumulate { " accumulate" } else { "" });
                let x64 = to_f64(&x);
                assert_close(
                    "unary: y",
                    &case,
                    &read(&y),
                    &reference::unary_forward(op, &x64),
                    POINTWISE,
                );
                let mut want = reference::unary_backward(op, &x64, &to_f64(&dy));
                if accumulate {
                    want = plus(&want, &start);
                }
                assert_close("unary: grad_x", &case, &read(&dx), &want, POINTWISE);
            }
        }
    }
}

#[test]
fn unary_reference_backward_matches_finite_differences() {
    for op in UNARY_OPS {
        let x = to_f64(&unary_input(op, 5, 11));
        let w = to_f64(&seeded(6, 11));
        let loss = |x: &[f64]| -> f64 {
            let y = reference::unary_forward(op, x);
            y.iter().zip(&w).map(|(y, w)| y * w).sum()
        };
        let dx = reference::unary_backward(op, &x, &w);
        assert_gradient_matches_finite_differences("unary: dx", &format!("11 {op:?}"), &x, &dx, loss);
    }
}

// ---- sums over one dimension ----

const DIM_SHAPES: &[&[usize]] = &[
    &[1],
    &[257],
    &[3, 33],
    &[64, 1237],
    &[2, 5, 17],
    &[1031, 3],
    &[2, 300, 1],
];

/// `[outer, D, inner]` of `shape` around `dim`.
fn view(shape: &[usize], dim: usize) -> [usize; 3] {
    [
        shape[..dim].iter().product(),
        shape[dim],
        shape[dim + 1..].iter().product(),
    ]
}

#[test]
fn sum_dim_and_mean_dim_match_reference_over_every_dimension() {
    for (i, shape) in DIM_SHAPES.iter().enumerate() {
        for dim in 0..shape.len() {
            for (mean, accumulate) in [(false, false), (true, false), (false, true), (true, true)] {
                let seed = 500 + 10 * i as u64 + dim as u64;
                let x = seeded(seed, shape.iter().product());
                let reduced = reduced_shape(shape, dim);
                let dy = seeded(seed + 1, reduced.iter().product());
                let start = grid(seed + 2, x.len());
                let (x_t, dy_t) = (upload(&x, shape), upload(&dy, &reduced));
                let (y, dx) = (nan_tensor(&reduced), grad_tensor(shape, &start, accumulate));
                run(|ctx, encoder| {
                    if mean {
                        mean_dim_forward(ctx, encoder, &x_t, dim, &y).unwrap();
                        mean_dim_backward(ctx, encoder, &dy_t, dim, &dx, accumulate).unwrap();
                    } else {
                        sum_dim_forward(ctx, encoder, &x_t, dim, &y).unwrap();
                        sum_dim_backward(ctx, encoder, &dy_t, dim, &dx, accumulate).unwrap();
                    }
                });
                let v = view(shape, dim);
                let divisor = if mean { v[1] as f64 } else { 1.0 };
                let case = format!(
                    "{} {} dim {dim}{}",
                    name(shape),
                    if mean { "mean" } else { "sum" },
                    if accumulate { " accumulate" } else { "" }
                );
                let want_y = reference::sum_dim_forward(&to_f64(&x), v, divisor);
                assert_close("sum_dim: y", &case, &read(&y), &want_y, Tolerance::F32_SUMS);
                let mut want_dx = reference::sum_dim_backward(&to_f64(&dy), v, divisor);
                if accumulate {
                    want_dx = plus(&want_dx, &start);
                }
                assert_close("sum_dim: grad_x", &case, &read(&dx), &want_dx, POINTWISE);
            }
        }
    }
}

#[test]
fn sum_dim_is_exact_and_bitwise_reproducible_on_grid_values() {
    // Grid values k/4 sum exactly in any order: an exact match exposes indexing bugs.
    let shape = [3, 1000, 5];
    let x = grid(77, 15_000);
    let x_t = upload(&x, &shape);
    let (first, second) = (nan_tensor(&[3, 5]), nan_tensor(&[3, 5]));
    run(|ctx, encoder| {
        sum_dim_forward(ctx, encoder, &x_t, 1, &first).unwrap();
        sum_dim_forward(ctx, encoder, &x_t, 1, &second).unwrap();
    });
    let want = reference::sum_dim_forward(&to_f64(&x), [3, 1000, 5], 1.0);
    assert_close(
        "sum_dim: y",
        "3x1000x5 dim 1 grid",
        &read(&first),
        &want,
        Tolerance::EXACT,
    );
    assert_eq!(read(&first), read(&second), "two runs of one sum differ");
}

#[test]
fn sum_dim_reference_backward_matches_finite_differences() {
    for (shape, dim) in [(&[3, 4, 5][..], 1), (&[6][..], 0), (&[2, 7][..], 1)] {
        let v = view(shape, dim);
        let x = to_f64(&seeded(9, shape.iter().product()));
        let w = to_f64(&seeded(10, v[0] * v[2]));
        for divisor in [1.0, v[1] as f64] {
            let loss = |x: &[f64]| -> f64 {
                let y = reference::sum_dim_forward(x, v, divisor);
                y.iter().zip(&w).map(|(y, w)| y * w).sum()
            };
            let dx = reference::sum_dim_backward(&w, v, divisor);
            let case = format!("{} dim {dim} / {divisor}", name(shape));
            assert_gradient_matches_finite_differences("sum_dim: dx", &case, &x, &dx, loss);
        }
    }
}

// ---- slices ----

/// (shape, dim, start, count): the first, last and a middle index, a whole dimension,
/// and a dimension of size 1.
const SLICES: &[(&[usize], usize, usize, usize)] = &[
    (&[7], 0, 0, 1),
    (&[257], 0, 100, 157),
    (&[3, 33], 1, 32, 1),
    (&[3, 33], 0, 1, 2),
    (&[2, 5, 17], 1, 1, 3),
    (&[2, 5, 17], 2, 0, 17),
    (&[64, 1237], 1, 600, 300),
    (&[1, 4, 1], 0, 0, 1),
];

#[test]
fn slice_forward_and_backward_match_reference() {
    for (i, &(shape, dim, start, count)) in SLICES.iter().enumerate() {
        for accumulate in [false, true] {
            let seed = 700 + 10 * i as u64;
            let mut part = shape.to_vec();
            part[dim] = count;
            let x = seeded(seed, shape.iter().product());
            let dy = seeded(seed + 1, part.iter().product());
            let start_dx = grid(seed + 2, x.len());
            let (x_t, dy_t) = (upload(&x, shape), upload(&dy, &part));
            let (y, dx) = (nan_tensor(&part), grad_tensor(shape, &start_dx, accumulate));
            run(|ctx, encoder| {
                slice_forward(ctx, encoder, &x_t, dim, start, &y).unwrap();
                slice_backward(ctx, encoder, &dy_t, dim, start, &dx, accumulate).unwrap();
            });
            let v = view(shape, dim);
            let case = format!(
                "{} dim {dim} from {start} take {count}{}",
                name(shape),
                if accumulate { " accumulate" } else { "" }
            );
            let want_y = reference::slice_forward(&to_f64(&x), v, start, count);
            assert_close("slice: y", &case, &read(&y), &want_y, Tolerance::EXACT);
            let mut want_dx = reference::slice_backward(&to_f64(&dy), v, start, count);
            if accumulate {
                want_dx = plus(&want_dx, &start_dx);
            }
            assert_close("slice: grad_x", &case, &read(&dx), &want_dx, Tolerance::EXACT);
        }
    }
}

#[test]
fn slice_reference_backward_matches_finite_differences() {
    let (shape, dim, start, count) = ([2, 5, 3], 1, 1, 3);
    let v = view(&shape, dim);
    let x = to_f64(&seeded(11, 30));
    let w = to_f64(&seeded(12, 18));
    let loss = |x: &[f64]| -> f64 {
        let y = reference::slice_forward(x, v, start, count);
        y.iter().zip(&w).map(|(y, w)| y * w).sum()
    };
    let dx = reference::slice_backward(&w, v, start, count);
    assert_gradient_matches_finite_differences("slice: dx", "2x5x3 dim 1 from 1 take 3", &x, &dx, loss);
}

#[test]
fn dimension_ops_refuse_a_dimension_or_range_outside_the_shape() {
    let x = nan_tensor(&[3, 4]);
    let mut encoder = ctx().create_encoder();
    let err = sum_dim_forward(ctx(), &mut encoder, &x, 2, &nan_tensor(&[3])).unwrap_err();
    assert!(err.to_string().contains("dimension 2"), "{err}");
    let err = sum_dim_forward(ctx(), &mut encoder, &x, 1, &nan_tensor(&[4])).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    let err = slice_forward(ctx(), &mut encoder, &x, 1, 2, &nan_tensor(&[3, 3])).unwrap_err();
    assert!(err.to_string().contains("3 indices from 2"), "{err}");
    let err = slice_forward(ctx(), &mut encoder, &x, 1, 0, &nan_tensor(&[2, 2])).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(common::prop_config(32))]
        #[test]
        fn binary_sum_dim_and_slice_match_reference_on_random_shapes(
            shape in proptest::collection::vec(1usize..=70, 1..=3),
            // b's shape: the last `suffix` dims of a's, [1] for 0; `swap` puts it on the left.
            suffix in 0usize..=3,
            swap in any::<bool>(),
            op in 0usize..4,
            dim in 0usize..3,
            cut in (0.0f64..1.0, 0.0f64..1.0),
            seed in 0u64..1000,
        ) {
            let op = BINARY_OPS[op];
            let suffix = suffix.min(shape.len());
            let small: Vec<usize> = if suffix == 0 { vec![1] } else { shape[shape.len() - suffix..].to_vec() };
            let (sa, sb) = if swap { (&small[..], &shape[..]) } else { (&shape[..], &small[..]) };
            let (a, b) = operands(op, seed, (sa, sb));
            let dy = seeded(seed + 2, shape.iter().product());
            let (a_t, b_t, dy_t) = (upload(&a, sa), upload(&b, sb), upload(&dy, &shape));
            let (y, grad_a, grad_b) = (nan_tensor(&shape), nan_tensor(sa), nan_tensor(sb));
            // A sum over and a slice along one dimension of the full shape (dy as x).
            let dim = dim % shape.len();
            let size = shape[dim];
            let start = ((cut.0 * size as f64) as usize).min(size - 1);
            let count = 1 + ((cut.1 * (size - start) as f64) as usize).min(size - start - 1);
            let reduced = reduced_shape(&shape, dim);
            let mut part = shape.clone();
            part[dim] = count;
            let (sum, slice) = (nan_tensor(&reduced), nan_tensor(&part));
            run(|ctx, encoder| {
                binary_forward(ctx, encoder, op, &a_t, &b_t, &y).unwrap();
                let grads = BinaryGrads { a: Some(&grad_a), b: Some(&grad_b), accumulate: false };
                binary_backward(ctx, encoder, op, &a_t, &b_t, &dy_t, grads).unwrap();
                sum_dim_forward(ctx, encoder, &dy_t, dim, &sum).unwrap();
                slice_forward(ctx, encoder, &dy_t, dim, start, &slice).unwrap();
            });
            let case = format!("{} {} {} seed {seed}, dim {dim} from {start} take {count}", name(sa), op.name(), name(sb));
            let (a64, b64, dy64) = (to_f64(&a), to_f64(&b), to_f64(&dy));
            assert_close("binary: y", &case, &read(&y), &reference::binary_forward(op, &a64, &b64, dy.len()), POINTWISE);
            let (want_a, want_b) = reference::binary_backward(op, &a64, &b64, &dy64);
            assert_close("binary: grad_a", &case, &read(&grad_a), &want_a, Tolerance::F32_SUMS);
            assert_close("binary: grad_b", &case, &read(&grad_b), &want_b, Tolerance::F32_SUMS);
            let v = view(&shape, dim);
            assert_close("sum_dim: y", &case, &read(&sum), &reference::sum_dim_forward(&dy64, v, 1.0), Tolerance::F32_SUMS);
            let want_slice = reference::slice_forward(&dy64, v, start, count);
            assert_close("slice: y", &case, &read(&slice), &want_slice, Tolerance::EXACT);
        }
    }
}
