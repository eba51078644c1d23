//! CPU reference of the tape's arithmetic in `shaders/elementwise.wgsl`: broadcasting binary ops, unary maps, sums
//! over one dimension and slices along one, in plain f64 loops.
//!
//! Broadcasting as the kernels do it: an operand's elements repeat with the period of its
//! length (a suffix shape or `[1]`), so element i of `y` reads `a[i % len_a]` and
//! `b[i % len_b]`. A dimension is given as its `[outer, D, inner]` view (see
//! `src/kernels/elementwise/pointwise.rs`). Backward functions return the gradient alone;
//! accumulating into an existing gradient is the caller's `+=`.

use crate::kernels::pointwise::{Binary, Unary};

// ---- binary ops with broadcasting ----

/// `y[i] = a[i % len_a] op b[i % len_b]` for `i < len` (the broadcast length).
pub fn binary_forward(op: Binary, a: &[f64], b: &[f64], len: usize) -> Vec<f64> {
    (0..len)
        .map(|i| {
            let (a, b) = (a[i % a.len()], b[i % b.len()]);
            match op {
                Binary::Add => a + b,
                Binary::Sub => a - b,
                Binary::Mul => a * b,
                Binary::Div => a / b,
            }
        })
        .collect()
}

/// forward: `y[i] = a[i % len_a] op b[i % len_b]`, so
/// - add: `da += dy`,      `db += dy`
/// - sub: `da += dy`,      `db -= dy`
/// - mul: `da += dy * b`,  `db += dy * a`
/// - div: `da += dy / b`,  `db -= dy * a / b²`
///
/// each into the element that was read (a broadcast operand's gradient sums over its
/// repeats). Returns `(da, db)`, of `a`'s and `b`'s lengths.
pub fn binary_backward(op: Binary, a: &[f64], b: &[f64], grad_y: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let (mut grad_a, mut grad_b) = (vec![0.0; a.len()], vec![0.0; b.len()]);
    for (i, &dy) in grad_y.iter().enumerate() {
        let (ia, ib) = (i % a.len(), i % b.len());
        let (av, bv) = (a[ia], b[ib]);
        let (da, db) = match op {
            Binary::Add => (dy, dy),
            Binary::Sub => (dy, -dy),
            Binary::Mul => (dy * bv, dy * av),
            Binary::Div => (dy / bv, -dy * av / (bv * bv)),
        };
        grad_a[ia] += da;
        grad_b[ib] += db;
    }
    (grad_a, grad_b)
}

// ---- unary maps ----

/// y = f(x): scale s·x, square x², exp eˣ, log ln x.
pub fn unary_forward(op: Unary, x: &[f64]) -> Vec<f64> {
    x.iter()
        .map(|&x| match op {
            Unary::Scale(s) => f64::from(s) * x,
            Unary::Square => x * x,
            Unary::Exp => x.exp(),
            Unary::Log => x.ln(),
        })
        .collect()
}

/// forward: y = f(x), so dx = dy * f'(x): scale s, square 2x, exp y (= eˣ), log 1/x.
pub fn unary_backward(op: Unary, x: &[f64], grad_y: &[f64]) -> Vec<f64> {
    x.iter()
        .zip(grad_y)
        .map(|(&x, &dy)| match op {
            Unary::Scale(s) => f64::from(s) * dy,
            Unary::Square => 2.0 * x * dy,
            Unary::Exp => dy * x.exp(),
            Unary::Log => dy / x,
        })
        .collect()
}

// ---- sums over one dimension ----

/// x is [outer, D, inner]; y[o, k] = Σ_d x[o, d, k] / divisor (1 for sum, D for mean).
pub fn sum_dim_forward(x: &[f64], [outer, dim, inner]: [usize; 3], divisor: f64) -> Vec<f64> {
    let mut y = vec![0.0; outer * inner];
    for o in 0..outer {
        for d in 0..dim {
            for k in 0..inner {
                y[o * inner + k] += x[(o * dim + d) * inner + k];
            }
        }
    }
    y.iter().map(|s| s / divisor).collect()
}

/// forward: y[o, k] = Σ_d x[o, d, k] / divisor, so dx[o, d, k] = dy[o, k] / divisor.
pub fn sum_dim_backward(grad_y: &[f64], [outer, dim, inner]: [usize; 3], divisor: f64) -> Vec<f64> {
    let mut grad_x = vec![0.0; outer * dim * inner];
    for o in 0..outer {
        for d in 0..dim {
            for k in 0..inner {
                grad_x[(o * dim + d) * inner + k] = grad_y[o * inner + k] / divisor;
            }
        }
    }
    grad_x
}

// ---- slices along one dimension ----

/// x is [outer, D, inner]; y[o, l, k] = x[o, start + l, k] for l < count.
pub fn slice_forward(x: &[f64], [outer, dim, inner]: [usize; 3], start: usize, count: usize) -> Vec<f64> {
    let mut y = Vec::with_capacity(outer * count * inner);
    for o in 0..outer {
        let from = (o * dim + start) * inner;
        y.extend_from_slice(&x[from..from + count * inner]);
    }
    y
}

/// forward: y[o, l, k] = x[o, start + l, k], so dx[o, start + l, k] = dy[o, l, k] and
/// every other element of dx is 0.
pub fn slice_backward(grad_y: &[f64], [outer, dim, inner]: [usize; 3], start: usize, count: usize) -> Vec<f64> {
    let mut grad_x = vec![0.0; outer * dim * inner];
    for o in 0..outer {
        let to = (o * dim + start) * inner;
        grad_x[to..to + count * inner].copy_from_slice(&grad_y[o * count * inner..(o + 1) * count * inner]);
    }
    grad_x
}
