//! Strided views: where a matrix lies in a tensor's elements ([`Strides`], [`MatrixView`]),
//! the product over such views ([`StridedMatmul`]), and the checks that a view stays
//! inside its tensor and that an output view does not overlap itself.

use super::plan::View;
use crate::{Error, Result, Tensor};

/// Where a matrix (one per batch) lies inside a tensor's elements: element (r, c) of batch
/// b is at `offset + b * batch + r * row + c * col`. Row-major `[rows, cols]` is
/// `{ offset: 0, batch: rows * cols, row: cols, col: 1 }`; a transpose swaps `row` and
/// `col`; a matrix shared by every batch has `batch: 0`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Strides {
    /// Element offset of (0, 0) of batch 0.
    pub offset: usize,
    /// Between batches.
    pub batch: usize,
    /// Between rows.
    pub row: usize,
    /// Between columns.
    pub col: usize,
}

impl Strides {
    /// Row-major `[rows, cols]` matrices, one per batch.
    pub fn row_major(rows: usize, cols: usize) -> Strides {
        Strides {
            offset: 0,
            batch: rows * cols,
            row: cols,
            col: 1,
        }
    }

    /// The transposed view of the same elements.
    pub fn transposed(self) -> Strides {
        Strides {
            row: self.col,
            col: self.row,
            ..self
        }
    }

    /// The largest element index a `[batches, rows, cols]` walk reaches.
    fn last_index(&self, batches: usize, rows: usize, cols: usize) -> usize {
        self.offset + (batches - 1) * self.batch + (rows - 1) * self.row + (cols - 1) * self.col
    }
}

/// A strided matrix view of a tensor (see [`Strides`]).
#[derive(Clone, Copy, Debug)]
pub struct MatrixView<'a> {
    /// The tensor whose elements the view reads or writes.
    pub tensor: &'a Tensor,
    /// Where the matrices lie in it.
    pub strides: Strides,
}

/// A product over strided views: `out[b] = lhs[b] rhs[b] (+ bias) (+ beta out[b])`, with
/// `lhs[b]` `[rows, inner]`, `rhs[b]` `[inner, cols]`, `out[b]` `[rows, cols]`; or, with
/// `sum_batches`, `out = sum_b lhs[b] rhs[b] (+ ...)` into one matrix (the gradient of a
/// weight shared by every batch, e.g. `dW_hh = sum_b dgates[b]^T h_prev[b]`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StridedMatmul {
    /// Rows of lhs and out.
    pub rows: usize,
    /// Columns of rhs and out.
    pub cols: usize,
    /// Columns of lhs, rows of rhs.
    pub inner: usize,
    /// Number of products.
    pub batch: usize,
    /// Add every batch's product into one output matrix.
    pub sum_batches: bool,
    /// `out = product + beta * out`; 0 overwrites without reading.
    pub beta: f32,
}

pub(super) fn to_view(name: &str, strides: &Strides) -> Result<View> {
    let field = |value: usize| {
        u32::try_from(value).map_err(|_| Error::DeviceLimit {
            tensor: name.to_string(),
            limit: "u32 element indices",
            needed: value as u64,
            allowed: u64::from(u32::MAX),
        })
    };
    Ok(View {
        offset: field(strides.offset)?,
        batch_stride: field(strides.batch)?,
        row_stride: field(strides.row)?,
        col_stride: field(strides.col)?,
    })
}

/// Checks that a `[batches, rows, cols]` walk of `view` stays inside its tensor.
pub(super) fn check_inside(name: &str, view: &MatrixView<'_>, batches: usize, rows: usize, cols: usize) -> Result<()> {
    let last = view.strides.last_index(batches, rows, cols);
    if last >= view.tensor.len() {
        return Err(Error::shape(
            name,
            format!(
                "at least {} elements for {batches} x [{rows}, {cols}] at {:?}",
                last + 1,
                view.strides
            ),
            view.tensor.shape(),
        ));
    }
    Ok(())
}

/// Checks that no two output elements share an index (invocations would race): the
/// smaller stride must step past nothing the larger one revisits, and batches past a
/// whole matrix.
pub(super) fn check_no_self_overlap(view: &Strides, batches: usize, rows: usize, cols: usize) -> Result<()> {
    let (mut small, mut large) = ((view.row, rows), (view.col, cols));
    if small.0 > large.0 {
        std::mem::swap(&mut small, &mut large);
    }
    let matrix_ok = (small.1 == 1 || small.0 >= 1) && (large.1 == 1 || large.0 >= small.0 * small.1);
    let span = (rows - 1) * view.row + (cols - 1) * view.col + 1;
    let batches_ok = batches == 1 || view.batch >= span;
    if matrix_ok && batches_ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "matmul_strided: the out view {view:?} of {batches} x [{rows}, {cols}] writes some elements twice"
        )))
    }
}
