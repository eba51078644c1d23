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

use super::check_tensors;
use crate::gpu::{Access, Context, Dispatch, KernelSpec, Recorder, MATMUL};
use crate::{DType, Error, Result, Tensor};

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

// ---- the shader's parameter block ----

/// Mirror of `View` in matmul.wgsl: element (r, c) of batch b is at
/// `offset + b * batch_stride + r * row_stride + c * col_stride`.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct View {
    offset: u32,
    batch_stride: u32,
    row_stride: u32,
    col_stride: u32,
}

impl View {
    /// A row-major `[rows, cols]` matrix per batch (batch stride 0 if shared).
    fn row_major(rows: usize, cols: usize, shared: bool) -> View {
        View {
            offset: 0,
            batch_stride: if shared { 0 } else { (rows * cols) as u32 },
            row_stride: cols as u32,
            col_stride: 1,
        }
    }

    fn transposed(self) -> View {
        View {
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    fn aligned(self) -> bool {
        self.offset.is_multiple_of(4) && self.batch_stride.is_multiple_of(4)
    }

    /// How the kernel may load this view as its left operand `[rows, inner]`.
    fn lhs_load(self, rows: usize) -> u32 {
        if self.col_stride == 1 && self.row_stride.is_multiple_of(4) && self.aligned() {
            1
        } else if self.row_stride == 1 && rows.is_multiple_of(4) && self.col_stride.is_multiple_of(4) && self.aligned()
        {
            2
        } else {
            0
        }
    }

    /// How the kernel may load this view as its right operand `[inner, cols]`.
    fn rhs_load(self, cols: usize) -> u32 {
        if self.row_stride == 1 && self.col_stride.is_multiple_of(4) && self.aligned() {
            1
        } else if self.col_stride == 1 && cols.is_multiple_of(4) && self.row_stride.is_multiple_of(4) && self.aligned()
        {
            2
        } else {
            0
        }
    }
}

/// Mirror of `Params` in matmul.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    lhs: View,
    rhs: View,
    out: View,
    rows: u32,
    cols: u32,
    inner: u32,
    batch: u32,
    sum_batches: u32,
    has_bias: u32,
    beta: f32,
    _pad: u32,
}

/// The bindings of the three forward entry points (they share one layout).
const FORWARD_BINDINGS: &[(u32, Access)] = &[
    (0, Access::Read),
    (1, Access::Read),
    (2, Access::Read),
    (3, Access::Read),
    (4, Access::Read),
    (5, Access::ReadWrite),
    (6, Access::Params),
];

const MATMUL_FORWARD: KernelSpec = KernelSpec {
    family: &MATMUL,
    entry_point: "matmul_forward",
    bindings: FORWARD_BINDINGS,
};

const MATMUL_FORWARD_SUBGROUP: KernelSpec = KernelSpec {
    family: &MATMUL,
    entry_point: "matmul_forward_subgroup",
    bindings: FORWARD_BINDINGS,
};

const MATMUL_FORWARD_FEW_ROWS: KernelSpec = KernelSpec {
    family: &MATMUL,
    entry_point: "matmul_forward_few_rows",
    bindings: FORWARD_BINDINGS,
};

/// Products of at most this many rows run `matmul_forward_few_rows` on every adapter.
const FEW_ROWS_MAX: usize = 4;

const MATMUL_BACKWARD_BIAS: KernelSpec = KernelSpec {
    family: &MATMUL,
    entry_point: "matmul_backward_bias",
    bindings: &[(0, Access::Read), (5, Access::ReadWrite), (6, Access::Params)],
};

/// Invocations per workgroup: 64 fits every adapter's default and is a multiple of
/// lavapipe's 8 lanes. Each invocation owns BLOCK x BLOCK outputs.
const WG_INVOCATIONS: u32 = 64;
const BLOCK: u32 = 8;

/// Workgroup shape (x over columns, y over rows): 8 x 8 for tall products, flatter for
/// few rows, so a recurrent step with B = 1 does not leave 7 of 8 invocations idle.
fn workgroup_shape(rows: usize) -> (u32, u32) {
    let row_blocks = (rows as u32).div_ceil(BLOCK);
    let wg_y = row_blocks.next_power_of_two().min(8);
    (WG_INVOCATIONS / wg_y, wg_y)
}
const BIAS_WG: u32 = 64;

/// Fewest workgroups the subgroup kernel's tiles are shrunk to give where the product
/// allows: enough for every core of a CPU adapter to take several (on lavapipe's 2 cores
/// 4, 8 and 16 measured alike on S2; smaller tiles load more per multiply-add).
const SUBGROUP_MIN_WORKGROUPS: usize = 8;

/// Which entry point computes a product, and its tiling.
#[derive(Clone, Copy, Debug)]
enum Kernel {
    /// `matmul_forward`: 8 x 8 outputs per invocation, `wg` = (x, y) invocations.
    Portable {
        wg: (u32, u32),
        lhs_load: u32,
        rhs_load: u32,
    },
    /// `matmul_forward_subgroup`: `rows` (8 to 32) x `4 * invocations` outputs per
    /// workgroup. Loading L along its rows (`lhs_load` 2) needs 32-row tiles.
    Subgroup {
        rows: u32,
        invocations: u32,
        cols: u32,
        lhs_load: u32,
        rhs_load: u32,
    },
    /// `matmul_forward_few_rows`: all `rows` (1 to 4) x 4 columns per invocation,
    /// `invocations` per workgroup; `lhs_load` 0 or 1.
    FewRows {
        rows: u32,
        invocations: u32,
        lhs_load: u32,
        rhs_load: u32,
    },
}

impl Kernel {
    fn choose(ctx: &Context, product: &Product<'_>) -> Kernel {
        let batches = if product.sum_batches { 1 } else { product.batch };
        if product.rows <= FEW_ROWS_MAX {
            // As wide a workgroup as still gives SUBGROUP_MIN_WORKGROUPS where the
            // columns allow (on lavapipe 1024 columns: 8 workgroups of 32).
            let count = |invocations: u32| product.cols.div_ceil(4 * invocations as usize) * batches;
            let mut invocations = (product.cols.div_ceil(4).next_power_of_two() as u32).clamp(8, 64);
            while invocations > 8 && count(invocations) < SUBGROUP_MIN_WORKGROUPS {
                invocations /= 2;
            }
            return Kernel::FewRows {
                rows: product.rows as u32,
                invocations,
                // Only loads along K are vec4 here (4 rows along their length would be
                // the rows this kernel does not have).
                lhs_load: u32::from(product.lhs.0.lhs_load(product.rows) == 1),
                rhs_load: product.rhs.0.rhs_load(product.cols),
            };
        }
        if !ctx.subgroup_kernels() {
            return Kernel::Portable {
                wg: workgroup_shape(product.rows),
                lhs_load: product.lhs.0.lhs_load(product.rows),
                rhs_load: product.rhs.0.rhs_load(product.cols),
            };
        }
        // The largest tile (32 rows x 64 invocations of 8 columns, no wider than the
        // product) that still gives enough workgroups: narrower first (a lane past the
        // last column costs as much as a busy one), then shorter (rows share their loads
        // of R), then 4 columns per invocation.
        let count = |rows: u32, invocations: u32, cols: u32| {
            product.rows.div_ceil(rows as usize) * product.cols.div_ceil((cols * invocations) as usize) * batches
        };
        let mut rows = (product.rows.div_ceil(8) * 8).min(32) as u32;
        let mut cols = 8;
        let mut invocations = (product.cols.div_ceil(cols as usize).next_power_of_two() as u32).clamp(8, 64);
        while invocations > 8 && count(rows, invocations, cols) < SUBGROUP_MIN_WORKGROUPS {
            invocations /= 2;
        }
        while rows > 8 && count(rows, invocations, cols) < SUBGROUP_MIN_WORKGROUPS {
            rows = if rows > 16 { 16 } else { 8 };
        }
        if cols == 8 && count(rows, invocations, cols) < SUBGROUP_MIN_WORKGROUPS {
            cols = 4;
        }
        let lhs_load = match product.lhs.0.lhs_load(product.rows) {
            2 if rows != 32 => 0,
            load => load,
        };
        Kernel::Subgroup {
            rows,
            invocations,
            cols,
            lhs_load,
            rhs_load: product.rhs.0.rhs_load(product.cols),
        }
    }

    /// Loop iterations of one invocation per 4-wide step of K: the K loop, plus for the
    /// portable kernel the 4-iteration loop of each scalar-loaded 4x4 block (two blocks
    /// per operand).
    fn iterations_per_k_step(&self) -> u64 {
        match *self {
            Kernel::Portable { lhs_load, rhs_load, .. } => {
                1 + if lhs_load == 0 { 8 } else { 0 } + if rhs_load == 0 { 8 } else { 0 }
            }
            Kernel::Subgroup { .. } | Kernel::FewRows { .. } => 1,
        }
    }

    /// Loop iterations outside the K loop: the 4x4 stores (20 each: four of the portable
    /// kernel, up to sixteen of the subgroup kernel's, one of the few-rows kernel's) and
    /// the portable kernel's K tail of up to 3.
    fn fixed_iterations(&self) -> u64 {
        match *self {
            Kernel::Portable { .. } => 80 + 3,
            Kernel::Subgroup { .. } => 320,
            Kernel::FewRows { .. } => 20,
        }
    }
}

/// The views of one product the kernel computes: `out = lhs * rhs`.
#[derive(Clone, Copy)]
struct Product<'a> {
    lhs: (View, &'a Tensor),
    rhs: (View, &'a Tensor),
    out: (View, &'a Tensor),
    bias: Option<&'a Tensor>,
    rows: usize,
    cols: usize,
    inner: usize,
    batch: usize,
    sum_batches: bool,
    beta: f32,
    names: [&'a str; 3],
}

/// Encodes a product, split into several dispatches when one invocation would run more
/// loop iterations than a CPU adapter allows (see `check_loop_budget`): the batches of a
/// summed product and the K dimension are cut into chunks, each accumulating into the
/// output (beta 1 after the first), so nothing is silently truncated.
fn encode_product(ctx: &Context, encoder: &mut dyn Recorder, product: Product<'_>) -> Result<()> {
    let kernel = Kernel::choose(ctx, &product);
    let Some(budget) = super::loop_budget(ctx) else {
        return encode_product_dispatch(ctx, encoder, product, kernel);
    };
    let per_step = kernel.iterations_per_k_step();
    let summed = if product.sum_batches { product.batch } else { 1 };
    // The K loop, a tail of up to 3, and one iteration of the batch loop itself.
    let per_batch = product.inner.div_ceil(4) as u64 * per_step + 4;
    let available = budget - kernel.fixed_iterations() - 16;
    if summed as u64 * per_batch <= available {
        return encode_product_dispatch(ctx, encoder, product, kernel);
    }
    let (batch_chunk, k_chunk) = if per_batch <= available {
        ((available / per_batch) as usize, product.inner)
    } else {
        (1, (available / per_step) as usize * 4)
    };
    let mut first = true;
    for b0 in (0..summed).step_by(batch_chunk) {
        for k0 in (0..product.inner).step_by(k_chunk) {
            let (lhs_view, lhs) = product.lhs;
            let (rhs_view, rhs) = product.rhs;
            let shift = |view: View, batch_stride: u32, k_stride: u32| View {
                offset: view.offset + b0 as u32 * batch_stride + k0 as u32 * k_stride,
                ..view
            };
            // Summed batches move through the batch strides; per-batch products keep
            // them (each z of the dispatch is still one batch).
            let (lhs_b, rhs_b) = if product.sum_batches {
                (lhs_view.batch_stride, rhs_view.batch_stride)
            } else {
                (0, 0)
            };
            let chunk = Product {
                lhs: (shift(lhs_view, lhs_b, lhs_view.col_stride), lhs),
                rhs: (shift(rhs_view, rhs_b, rhs_view.row_stride), rhs),
                inner: k_chunk.min(product.inner - k0),
                batch: if product.sum_batches {
                    batch_chunk.min(summed - b0)
                } else {
                    product.batch
                },
                bias: if first { product.bias } else { None },
                beta: if first { product.beta } else { 1.0 },
                ..product
            };
            encode_product_dispatch(ctx, encoder, chunk, kernel)?;
            first = false;
        }
    }
    Ok(())
}

fn encode_product_dispatch(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    product: Product<'_>,
    kernel: Kernel,
) -> Result<()> {
    let (lhs_view, lhs) = product.lhs;
    let (rhs_view, rhs) = product.rhs;
    let (out_view, out) = product.out;
    let params = Params {
        lhs: lhs_view,
        rhs: rhs_view,
        out: out_view,
        rows: product.rows as u32,
        cols: product.cols as u32,
        inner: product.inner as u32,
        batch: product.batch as u32,
        sum_batches: u32::from(product.sum_batches),
        has_bias: u32::from(product.bias.is_some()),
        beta: product.beta,
        _pad: 0,
    };
    let bias = product.bias.map_or(ctx.placeholder(), Tensor::buffer);
    let [lhs_name, rhs_name, out_name] = product.names;
    let batches = if product.sum_batches { 1 } else { product.batch as u32 };
    let (cols, rows) = (product.cols as u32, product.rows as u32);
    let buffers = [
        (0, lhs.buffer(), lhs_name),
        (1, lhs.buffer(), lhs_name),
        (2, rhs.buffer(), rhs_name),
        (3, rhs.buffer(), rhs_name),
        (4, bias, "matmul: bias"),
        (5, out.buffer(), out_name),
    ];
    // The three entry points share their bindings and parameters; each arm gives its
    // kernel, tile overrides and grid.
    let mut dispatch = |kernel: &KernelSpec, overrides: &[(&'static str, u32)], workgroups: [u32; 3]| {
        ctx.encode_dispatch(
            encoder,
            Dispatch {
                kernel,
                overrides,
                buffers: &buffers,
                params: &params,
                workgroups,
            },
        )
    };
    match kernel {
        Kernel::Portable {
            wg: (wg_x, wg_y),
            lhs_load,
            rhs_load,
        } => dispatch(
            &MATMUL_FORWARD,
            &[
                ("WG_X", wg_x),
                ("WG_Y", wg_y),
                ("LHS_LOAD", lhs_load),
                ("RHS_LOAD", rhs_load),
            ],
            [cols.div_ceil(wg_x * BLOCK), rows.div_ceil(wg_y * BLOCK), batches],
        ),
        Kernel::Subgroup {
            rows: tile_rows,
            invocations,
            cols: tile_cols,
            lhs_load,
            rhs_load,
        } => dispatch(
            &MATMUL_FORWARD_SUBGROUP,
            &[
                ("SG_ROWS", tile_rows),
                ("SG_WG", invocations),
                ("SG_COLS", tile_cols),
                ("LHS_LOAD", lhs_load),
                ("RHS_LOAD", rhs_load),
            ],
            [
                cols.div_ceil(tile_cols * invocations),
                rows.div_ceil(tile_rows),
                batches,
            ],
        ),
        Kernel::FewRows {
            rows: few_rows,
            invocations,
            lhs_load,
            rhs_load,
        } => dispatch(
            &MATMUL_FORWARD_FEW_ROWS,
            &[
                ("FEW_ROWS", few_rows),
                ("FEW_WG", invocations),
                ("LHS_LOAD", lhs_load),
                ("RHS_LOAD", rhs_load),
            ],
            [cols.div_ceil(4 * invocations), 1, batches],
        ),
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
    let budget = super::loop_budget(ctx).map_or(usize::MAX, |budget| (budget - 16) as usize);
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

fn to_view(name: &str, strides: &Strides) -> Result<View> {
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
fn check_inside(name: &str, view: &MatrixView<'_>, batches: usize, rows: usize, cols: usize) -> Result<()> {
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
fn check_no_self_overlap(view: &Strides, batches: usize, rows: usize, cols: usize) -> Result<()> {
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
