//! Launchers of `shaders/matmul.wgsl`: `C[b] = op(A[b]) op(B[b]) (+ bias) (+ beta C[b])`
//! and its backward (dA, dB, dbias).
//!
//! Shapes (M, N, K as usual; a leading batch dimension is optional):
//! - `a`: `[M, K]`, or `[K, M]` with `trans_a`; `[batch, .., ..]` or 2-D (shared by every batch)
//! - `b`: `[K, N]`, or `[N, K]` with `trans_b`; likewise
//! - `bias`: `[N]`, added to every row
//! - `c`: `[batch, M, N]` if `a` or `b` has a batch dimension, else `[M, N]`
//!
//! `y = x W^T + b` of a PyTorch `Linear` is `a = x`, `b = W` with `trans_b`.
//!
//! A product of at most 4 rows (a batch-1 recurrent or decoder step) runs
//! `matmul_forward_few_rows`, a matrix-vector product; any other runs
//! `matmul_forward_subgroup` where the context runs subgroup kernels
//! ([`Context::subgroup_kernels`]), else the portable `matmul_forward`. The tile is chosen
//! per product (rows, columns per invocation, workgroup width) so that small products
//! still spread over several workgroups.
//!
//! The launchers and their operations live here; `plan` holds the shader's parameter
//! block and chooses each product's kernel, tile and grid, `strided` the strided views
//! of `matmul_strided`, and `column_sums` the bias gradient's kernel.

mod column_sums;
mod plan;
mod strided;

pub(crate) use column_sums::{encode_column_sums, encode_strided_column_sums};
pub use strided::{MatrixView, StridedMatmul, Strides};

use super::check_tensors;
use crate::gpu::{Context, Recorder};
use crate::{DType, Error, Result, Tensor};
use plan::{encode_product, Product, View};
use strided::{check_inside, check_no_self_overlap, to_view};

/// The operation: which operands are transposed, and how much of the old `C` to keep.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Matmul {
    /// Use `A^T` (`a` is stored `[K, M]`).
    pub trans_a: bool,
    /// Use `B^T` (`b` is stored `[N, K]`).
    pub trans_b: bool,
    /// `C = product + beta * C`; 0 overwrites `C` without reading it (NaN included).
    pub beta: f32,
}

/// The sizes of one matmul, as worked out from the operands' shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulDims {
    /// Number of products (1 when neither operand has a batch dimension).
    pub batch: usize,
    /// Rows of `op(A)` and `C`.
    pub m: usize,
    /// Columns of `op(B)` and `C`.
    pub n: usize,
    /// Columns of `op(A)`, rows of `op(B)`.
    pub k: usize,
    /// `a` is 2-D: one matrix shared by every batch.
    pub a_shared: bool,
    /// `b` is 2-D: one matrix shared by every batch.
    pub b_shared: bool,
    /// `c` has a batch dimension.
    pub c_batched: bool,
}

impl MatmulDims {
    /// Works out the sizes from the shapes of `a` and `b`, or says which shape is wrong.
    pub fn new(op: &Matmul, a_shape: &[usize], b_shape: &[usize]) -> Result<MatmulDims> {
        let split =
            |name: &str, shape: &[usize], trans: bool, letters: &str| -> Result<(Option<usize>, usize, usize)> {
                let (batch, rows, cols) = match *shape {
                    [rows, cols] => (None, rows, cols),
                    [batch, rows, cols] => (Some(batch), rows, cols),
                    _ => return Err(Error::shape(name, format!("[{letters}] or [batch, {letters}]"), shape)),
                };
                if rows == 0 || cols == 0 || batch == Some(0) {
                    return Err(Error::shape(name, "every dimension >= 1", shape));
                }
                Ok(if trans {
                    (batch, cols, rows)
                } else {
                    (batch, rows, cols)
                })
            };
        let a_letters = if op.trans_a { "K, M" } else { "M, K" };
        let b_letters = if op.trans_b { "N, K" } else { "K, N" };
        let (a_batch, m, k) = split("matmul: a", a_shape, op.trans_a, a_letters)?;
        let (b_batch, b_k, n) = split("matmul: b", b_shape, op.trans_b, b_letters)?;
        if b_k != k {
            let expected = if op.trans_b {
                format!("[.., N, {k}]")
            } else {
                format!("[.., {k}, N]")
            };
            return Err(Error::shape("matmul: b (K must match a)", expected, b_shape));
        }
        let batch = match (a_batch, b_batch) {
            (Some(x), Some(y)) if x != y => {
                return Err(Error::shape(
                    "matmul: b (batch must match a)",
                    format!("[{x}, .., ..] or a 2-D shared matrix"),
                    b_shape,
                ))
            }
            (Some(x), _) | (None, Some(x)) => x,
            (None, None) => 1,
        };
        Ok(MatmulDims {
            batch,
            m,
            n,
            k,
            a_shared: a_batch.is_none(),
            b_shared: b_batch.is_none(),
            c_batched: a_batch.is_some() || b_batch.is_some(),
        })
    }

    /// The shape `c` (and `dC`) must have.
    pub fn c_shape(&self) -> Vec<usize> {
        if self.c_batched {
            vec![self.batch, self.m, self.n]
        } else {
            vec![self.m, self.n]
        }
    }

    /// Multiply-adds of the product: `batch * M * N * K`; FLOPs are twice this.
    pub fn multiply_adds(&self) -> u64 {
        (self.batch * self.m * self.n * self.k) as u64
    }
}

/// The launchers' common checks, plus f32 for every operand of a matmul.
fn check_operands(ctx: &Context, inputs: &[(&str, &Tensor)], outputs: &[(&str, &Tensor)]) -> Result<()> {
    for (name, tensor) in inputs.iter().chain(outputs) {
        tensor.check_dtype(name, DType::F32)?;
    }
    check_tensors(ctx, inputs, outputs)
}

fn check_beta(beta: f32) -> Result<()> {
    if !beta.is_finite() {
        return Err(Error::invalid(format!("matmul beta must be finite, got {beta}")));
    }
    Ok(())
}

/// Encodes `c = op(a) op(b) (+ bias) (+ beta c)` into `encoder`. Checks every shape
/// first; never submits or waits.
pub fn matmul_forward(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    op: &Matmul,
    a: &Tensor,
    b: &Tensor,
    bias: Option<&Tensor>,
    c: &Tensor,
) -> Result<()> {
    check_beta(op.beta)?;
    let dims = MatmulDims::new(op, a.shape(), b.shape())?;
    c.check_shape("matmul: c", &dims.c_shape())?;
    let mut inputs = vec![("matmul: a", a), ("matmul: b", b)];
    if let Some(bias) = bias {
        bias.check_shape("matmul: bias", &[dims.n])?;
        inputs.push(("matmul: bias", bias));
    }
    check_operands(ctx, &inputs, &[("matmul: c", c)])?;
    let a_view = operand_view(dims.m, dims.k, op.trans_a, dims.a_shared);
    let b_view = operand_view(dims.k, dims.n, op.trans_b, dims.b_shared);
    encode_product(
        ctx,
        encoder,
        Product {
            lhs: (a_view, a),
            rhs: (b_view, b),
            out: (View::row_major(dims.m, dims.n, false), c),
            bias,
            rows: dims.m,
            cols: dims.n,
            inner: dims.k,
            batch: dims.batch,
            sum_batches: false,
            beta: op.beta,
            names: ["matmul: a", "matmul: b", "matmul: c"],
        },
    )
}

/// The view of `op(X)` as a `[rows, cols]` matrix, for `X` stored `[rows, cols]`, or
/// `[cols, rows]` when transposed.
fn operand_view(rows: usize, cols: usize, trans: bool, shared: bool) -> View {
    if trans {
        View::row_major(cols, rows, shared).transposed()
    } else {
        View::row_major(rows, cols, shared)
    }
}

/// Where [`matmul_backward`] writes; `None` skips that gradient.
#[derive(Clone, Copy, Debug, Default)]
pub struct MatmulGrads<'a> {
    /// `dA`, the shape of `a`.
    pub a: Option<&'a Tensor>,
    /// `dB`, the shape of `b`.
    pub b: Option<&'a Tensor>,
    /// `dbias`, `[N]`.
    pub bias: Option<&'a Tensor>,
    /// Add to what the outputs hold (a tensor used twice) instead of overwriting them.
    pub accumulate: bool,
}

/// Encodes the gradients of `c = op(a) op(b) + bias` given `grad_c`:
/// `d op(A) = dC op(B)^T`, `d op(B) = op(A)^T dC`, `dbias = sum of dC over rows`;
/// a shared (2-D) operand's gradient is summed over the batch. With `grads.accumulate`
/// the gradients are added to what the outputs hold (a tensor used twice), else overwritten.
pub fn matmul_backward(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    op: &Matmul,
    a: &Tensor,
    b: &Tensor,
    grad_c: &Tensor,
    grads: MatmulGrads<'_>,
) -> Result<()> {
    let dims = MatmulDims::new(op, a.shape(), b.shape())?;
    grad_c.check_shape("matmul: grad_c", &dims.c_shape())?;
    let mut outputs = Vec::new();
    if let Some(grad_a) = grads.a {
        grad_a.check_shape("matmul: grad_a", a.shape())?;
        outputs.push(("matmul: grad_a", grad_a));
    }
    if let Some(grad_b) = grads.b {
        grad_b.check_shape("matmul: grad_b", b.shape())?;
        outputs.push(("matmul: grad_b", grad_b));
    }
    if let Some(grad_bias) = grads.bias {
        grad_bias.check_shape("matmul: grad_bias", &[dims.n])?;
        outputs.push(("matmul: grad_bias", grad_bias));
    }
    check_operands(
        ctx,
        &[("matmul: a", a), ("matmul: b", b), ("matmul: grad_c", grad_c)],
        &outputs,
    )?;
    let beta = if grads.accumulate { 1.0 } else { 0.0 };
    let a_view = operand_view(dims.m, dims.k, op.trans_a, dims.a_shared);
    let b_view = operand_view(dims.k, dims.n, op.trans_b, dims.b_shared);
    let c_view = View::row_major(dims.m, dims.n, false);

    if let Some(grad_a) = grads.a {
        // d op(A) [M, K] = dC [M, N] * op(B)^T [N, K], written through A's own view.
        encode_product(
            ctx,
            encoder,
            Product {
                lhs: (c_view, grad_c),
                rhs: (b_view.transposed(), b),
                out: (a_view, grad_a),
                bias: None,
                rows: dims.m,
                cols: dims.k,
                inner: dims.n,
                batch: dims.batch,
                sum_batches: dims.a_shared,
                beta,
                names: ["matmul: grad_c", "matmul: b", "matmul: grad_a"],
            },
        )?;
    }
    if let Some(grad_b) = grads.b {
        // d op(B) [K, N] = op(A)^T [K, M] * dC [M, N], written through B's own view.
        encode_product(
            ctx,
            encoder,
            Product {
                lhs: (a_view.transposed(), a),
                rhs: (c_view, grad_c),
                out: (b_view, grad_b),
                bias: None,
                rows: dims.k,
                cols: dims.n,
                inner: dims.m,
                batch: dims.batch,
                sum_batches: dims.b_shared,
                beta,
                names: ["matmul: a", "matmul: grad_c", "matmul: grad_b"],
            },
        )?;
    }
    if let Some(grad_bias) = grads.bias {
        encode_column_sums(ctx, encoder, grad_c, (dims.batch, dims.m, dims.n), grad_bias, beta)?;
    }
    Ok(())
}

/// Encodes a product over strided views (see [`StridedMatmul`]). Every view is checked to
/// stay inside its tensor, the output not to overlap itself or alias an input.
pub fn matmul_strided(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    op: &StridedMatmul,
    lhs: MatrixView<'_>,
    rhs: MatrixView<'_>,
    bias: Option<&Tensor>,
    out: MatrixView<'_>,
) -> Result<()> {
    check_beta(op.beta)?;
    let StridedMatmul {
        rows,
        cols,
        inner,
        batch,
        sum_batches,
        beta,
    } = *op;
    if rows == 0 || cols == 0 || inner == 0 || batch == 0 {
        return Err(Error::invalid(format!(
            "matmul_strided: every size must be >= 1, got rows {rows}, cols {cols}, inner {inner}, batch {batch}"
        )));
    }
    check_inside("matmul_strided: lhs", &lhs, batch, rows, inner)?;
    check_inside("matmul_strided: rhs", &rhs, batch, inner, cols)?;
    let out_batches = if sum_batches { 1 } else { batch };
    check_inside("matmul_strided: out", &out, out_batches, rows, cols)?;
    check_no_self_overlap(&out.strides, out_batches, rows, cols)?;
    let mut inputs = vec![("matmul_strided: lhs", lhs.tensor), ("matmul_strided: rhs", rhs.tensor)];
    if let Some(bias) = bias {
        bias.check_shape("matmul_strided: bias", &[cols])?;
        inputs.push(("matmul_strided: bias", bias));
    }
    check_operands(ctx, &inputs, &[("matmul_strided: out", out.tensor)])?;
    let mut out_view = to_view("matmul_strided: out", &out.strides)?;
    if sum_batches {
        out_view.batch_stride = 0;
    }
    encode_product(
        ctx,
        encoder,
        Product {
            lhs: (to_view("matmul_strided: lhs", &lhs.strides)?, lhs.tensor),
            rhs: (to_view("matmul_strided: rhs", &rhs.strides)?, rhs.tensor),
            out: (out_view, out.tensor),
            bias,
            rows,
            cols,
            inner,
            batch,
            sum_batches,
            beta,
            names: ["matmul_strided: lhs", "matmul_strided: rhs", "matmul_strided: out"],
        },
    )
}
