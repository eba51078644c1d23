//! CPU reference of `shaders/matmul.wgsl`: plain loops in f64, written to be obviously
//! right, never fast. The oracle of the kernel tests.

use crate::kernels::matmul::{Matmul, MatmulDims, Strides};

/// Where `op(X)[r, c]` of a batch lives, for `X` stored row-major as `[rows, cols]` of
/// `op(X)` per batch, or `[cols, rows]` when transposed; one matrix if shared.
#[derive(Clone, Copy)]
struct Layout {
    rows: usize,
    cols: usize,
    trans: bool,
    shared: bool,
}

impl Layout {
    fn index(&self, batch: usize, r: usize, c: usize) -> usize {
        let base = if self.shared { 0 } else { batch * self.rows * self.cols };
        if self.trans {
            base + c * self.rows + r
        } else {
            base + r * self.cols + c
        }
    }
}

fn layouts(dims: &MatmulDims, op: &Matmul) -> (Layout, Layout) {
    let a = Layout {
        rows: dims.m,
        cols: dims.k,
        trans: op.trans_a,
        shared: dims.a_shared,
    };
    let b = Layout {
        rows: dims.k,
        cols: dims.n,
        trans: op.trans_b,
        shared: dims.b_shared,
    };
    (a, b)
}

/// c is [batch, M, N] (or [M, N]); returns `op(a) op(b) + bias + beta * c`.
pub fn matmul_forward(
    dims: &MatmulDims,
    op: &Matmul,
    a: &[f64],
    b: &[f64],
    bias: Option<&[f64]>,
    c: &[f64],
) -> Vec<f64> {
    let MatmulDims { batch, m, n, k, .. } = *dims;
    let (a_at, b_at) = layouts(dims, op);
    let mut out = vec![0.0; batch * m * n];
    for bi in 0..batch {
        for row in 0..m {
            for col in 0..n {
                // out[b, m, n] = sum_k op(A)[b, m, k] * op(B)[b, k, n]
                let mut sum = 0.0;
                for inner in 0..k {
                    sum += a[a_at.index(bi, row, inner)] * b[b_at.index(bi, inner, col)];
                }
                if let Some(bias) = bias {
                    sum += bias[col];
                }
                let o = (bi * m + row) * n + col;
                // beta == 0 ignores c entirely, NaN included, as PyTorch's addmm.
                if op.beta != 0.0 {
                    sum += f64::from(op.beta) * c[o];
                }
                out[o] = sum;
            }
        }
    }
    out
}

/// Gradients of `c = op(a) op(b) + bias` given `grad_c`: `(dA, dB, dbias)`, with the
/// gradient of a shared (2-D) operand summed over the batch.
pub fn matmul_backward(
    dims: &MatmulDims,
    op: &Matmul,
    a: &[f64],
    b: &[f64],
    grad_c: &[f64],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let MatmulDims { batch, m, n, k, .. } = *dims;
    let (a_at, b_at) = layouts(dims, op);
    let mut grad_a = vec![0.0; a.len()];
    let mut grad_b = vec![0.0; b.len()];
    let mut grad_bias = vec![0.0; n];
    for bi in 0..batch {
        for row in 0..m {
            for col in 0..n {
                // forward: c[b, m, n] += op(A)[b, m, k] * op(B)[b, k, n] (+ bias[n])
                let dc = grad_c[(bi * m + row) * n + col];
                grad_bias[col] += dc;
                for inner in 0..k {
                    let (ai, bi_) = (a_at.index(bi, row, inner), b_at.index(bi, inner, col));
                    grad_a[ai] += dc * b[bi_];
                    grad_b[bi_] += dc * a[ai];
                }
            }
        }
    }
    (grad_a, grad_b, grad_bias)
}

/// [`crate::kernels::matmul::matmul_strided`] in f64: returns the whole `out` buffer
/// after the product is written into it (elements outside the view keep `out`'s values).
pub fn matmul_strided(
    op: &crate::kernels::matmul::StridedMatmul,
    lhs: (&[f64], Strides),
    rhs: (&[f64], Strides),
    bias: Option<&[f64]>,
    out: (&[f64], Strides),
) -> Vec<f64> {
    let at = |s: &Strides, b: usize, r: usize, c: usize| s.offset + b * s.batch + r * s.row + c * s.col;
    let (lhs, ls) = lhs;
    let (rhs, rs) = rhs;
    let (out_in, os) = out;
    let mut result = out_in.to_vec();
    let out_batches = if op.sum_batches { 1 } else { op.batch };
    for ob in 0..out_batches {
        for r in 0..op.rows {
            for c in 0..op.cols {
                // out[b, r, c] = sum_(b) sum_i lhs[b, r, i] rhs[b, i, c]
                let batches = if op.sum_batches { 0..op.batch } else { ob..ob + 1 };
                let mut sum = 0.0;
                for b in batches {
                    for i in 0..op.inner {
                        sum += lhs[at(&ls, b, r, i)] * rhs[at(&rs, b, i, c)];
                    }
                }
                if let Some(bias) = bias {
                    sum += bias[c];
                }
                let o = at(&os, ob, r, c);
                if op.beta != 0.0 {
                    sum += f64::from(op.beta) * out_in[o];
                }
                result[o] = sum;
            }
        }
    }
    result
}
