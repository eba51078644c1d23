//! Column sums with `matmul_backward_bias`: the bias gradient of a matmul, and any sum
//! over the batches and rows of a strided view (a GRU's `db_hh`, attention's `dv`).

use super::plan::{Params, View};
use super::strided::{check_inside, to_view, MatrixView, Strides};
use crate::gpu::{Access, Context, Dispatch, KernelSpec, Recorder, MATMUL};
use crate::kernels::loop_budget;
use crate::{Error, Result, Tensor};

const MATMUL_BACKWARD_BIAS: KernelSpec = KernelSpec {
    family: &MATMUL,
    entry_point: "matmul_backward_bias",
    bindings: &[(0, Access::Read), (5, Access::ReadWrite), (6, Access::Params)],
};

const BIAS_WG: u32 = 64;

/// `out[n] = sum over (b, m) of x[b, m, n] (+ beta * out[n])`: the bias gradient of a
/// matmul, and any column sum of a row-major `x` `(batch, rows, cols)`. Also what the
/// graph uses for a sum over a batch (attention's `dv`), instead of a product with an
/// uploaded vector of ones.
pub(crate) fn encode_column_sums(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    grad_c: &Tensor,
    (batch, rows, cols): (usize, usize, usize),
    grad_bias: &Tensor,
    beta: f32,
) -> Result<()> {
    if grad_c.len() != batch * rows * cols || grad_bias.len() != cols {
        return Err(Error::invalid(format!(
            "column sums: {:?} is not {batch} x {rows} x {cols}, or {:?} not [{cols}]",
            grad_c.shape(),
            grad_bias.shape()
        )));
    }
    let x = MatrixView {
        tensor: grad_c,
        strides: Strides::row_major(rows, cols),
    };
    encode_strided_column_sums(ctx, encoder, x, (batch, rows, cols), (grad_bias, 0), beta)
}

/// `out[at + n] = sum over (b, m) of x[b, m, n] (+ beta * out[at + n])` over a strided
/// view `x` of `(batch, rows, cols)` (columns of a wider matrix, say: a GRU's `db_hh` is
/// the column sums of some of its gate gradients' columns), into `out` from element `at`.
pub(crate) fn encode_strided_column_sums(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    x: MatrixView<'_>,
    (batch, rows, cols): (usize, usize, usize),
    (out, at): (&Tensor, usize),
    beta: f32,
) -> Result<()> {
    if batch == 0 || rows == 0 || cols == 0 {
        return Err(Error::invalid(format!(
            "column sums: {batch} x {rows} x {cols} has no elements"
        )));
    }
    check_inside("column sums: x", &x, batch, rows, cols)?;
    if at + cols > out.len() {
        return Err(Error::shape(
            "column sums: out",
            format!("at least {} elements", at + cols),
            out.shape(),
        ));
    }
    let x_view = to_view("column sums: x", &x.strides)?;
    let out_view = to_view(
        "column sums: out",
        &Strides {
            offset: at,
            batch: 0,
            row: cols,
            col: 1,
        },
    )?;
    // One invocation per column loops over every (batch, row): on a CPU adapter the
    // rows are cut into chunks that accumulate, like encode_product's K chunks.
    let budget = loop_budget(ctx).map_or(usize::MAX, |budget| (budget - 16) as usize);
    // Each batch costs its rows plus one iteration of the batch loop itself.
    let (batch_chunk, row_chunk) = if rows < budget {
        ((budget / (rows + 1)).min(batch), rows)
    } else {
        (1, budget - 1)
    };
    let mut first = true;
    for b0 in (0..batch).step_by(batch_chunk) {
        for r0 in (0..rows).step_by(row_chunk) {
            let lhs = View {
                // Inside x's tensor (checked above), so within u32 like its strides.
                offset: (x.strides.offset + b0 * x.strides.batch + r0 * x.strides.row) as u32,
                ..x_view
            };
            let params = Params {
                lhs,
                rhs: lhs,
                out: out_view,
                rows: row_chunk.min(rows - r0) as u32,
                cols: cols as u32,
                inner: 0,
                batch: batch_chunk.min(batch - b0) as u32,
                sum_batches: 1,
                has_bias: 0,
                beta: if first { beta } else { 1.0 },
                _pad: 0,
            };
            first = false;
            ctx.encode_dispatch(
                encoder,
                Dispatch {
                    kernel: &MATMUL_BACKWARD_BIAS,
                    overrides: &[("BIAS_WG", BIAS_WG)],
                    buffers: &[
                        (0, x.tensor.buffer(), "matmul: grad_c"),
                        (5, out.buffer(), "matmul: grad_bias"),
                    ],
                    params: &params,
                    workgroups: [(cols as u32).div_ceil(BIAS_WG), 1, 1],
                },
            )?;
        }
    }
    Ok(())
}
