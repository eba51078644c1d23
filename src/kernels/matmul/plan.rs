//! Tile planning for `shaders/matmul.wgsl`: the mirror of its parameter block (`View`,
//! `Params`), its forward entry points, which of them computes a product and with what
//! tile (`Kernel::choose`), and how a product is encoded (overrides and grid), cut into
//! chunks where a CPU adapter's loop budget asks for it.

use crate::gpu::{Access, Context, Dispatch, KernelSpec, Recorder, MATMUL};
use crate::kernels::loop_budget;
use crate::{Result, Tensor};

// ---- the shader's parameter block ----

/// Mirror of `View` in matmul.wgsl: element (r, c) of batch b is at
/// `offset + b * batch_stride + r * row_stride + c * col_stride`.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct View {
    pub(super) offset: u32,
    pub(super) batch_stride: u32,
    pub(super) row_stride: u32,
    pub(super) col_stride: u32,
}

impl View {
    /// A row-major `[rows, cols]` matrix per batch (batch stride 0 if shared).
    pub(super) fn row_major(rows: usize, cols: usize, shared: bool) -> View {
        View {
            offset: 0,
            batch_stride: if shared { 0 } else { (rows * cols) as u32 },
            row_stride: cols as u32,
            col_stride: 1,
        }
    }

    pub(super) fn transposed(self) -> View {
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
pub(super) struct Params {
    pub(super) lhs: View,
    pub(super) rhs: View,
    pub(super) out: View,
    pub(super) rows: u32,
    pub(super) cols: u32,
    pub(super) inner: u32,
    pub(super) batch: u32,
    pub(super) sum_batches: u32,
    pub(super) has_bias: u32,
    pub(super) beta: f32,
    pub(super) _pad: u32,
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
pub(super) struct Product<'a> {
    pub(super) lhs: (View, &'a Tensor),
    pub(super) rhs: (View, &'a Tensor),
    pub(super) out: (View, &'a Tensor),
    pub(super) bias: Option<&'a Tensor>,
    pub(super) rows: usize,
    pub(super) cols: usize,
    pub(super) inner: usize,
    pub(super) batch: usize,
    pub(super) sum_batches: bool,
    pub(super) beta: f32,
    pub(super) names: [&'a str; 3],
}

/// Encodes a product, split into several dispatches when one invocation would run more
/// loop iterations than a CPU adapter allows (see `check_loop_budget`): the batches of a
/// summed product and the K dimension are cut into chunks, each accumulating into the
/// output (beta 1 after the first), so nothing is silently truncated.
pub(super) fn encode_product(ctx: &Context, encoder: &mut dyn Recorder, product: Product<'_>) -> Result<()> {
    let kernel = Kernel::choose(ctx, &product);
    let Some(budget) = loop_budget(ctx) else {
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
