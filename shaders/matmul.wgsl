// matmul.wgsl: batched matrix product and the gradient of its bias.
//
// matmul_forward        out[b] = L[b] R[b] (+ bias) (+ beta * out[b])
//     L is [rows, inner], R is [inner, cols], out is [rows, cols]: M, K, N in the usual
//     letters. Each operand is a strided *view*: element (r, c) of batch b lives at
//     offset + b * batch_stride + r * row_stride + c * col_stride. A transpose is a view
//     with swapped strides (never a copy); batch_stride 0 shares an operand (weights)
//     across the batch. With sum_batches = 1 the products of every batch are added into
//     one output: the gradient of a shared operand.
// matmul_forward_few_rows  the same for at most 4 rows (a matrix-vector product)
// matmul_backward_bias  dbias[n] = sum over b, m of dC[b, m, n] (+ beta * dbias[n])
//
// The gradients of C = op(A) op(B) are products too, so the Rust launcher encodes them
// as matmul_forward dispatches over remapped views (src/kernels/matmul/):
//     d op(A) = dC op(B)^T   written through A's view (summed over b if A is shared)
//     d op(B) = op(A)^T dC   written through B's view (summed over b if B is shared)
// Nothing is saved by the forward: the backward reads the forward's inputs.
//
// Tiling: no workgroup memory. Each invocation owns an 8x8 block of out, kept in
// registers as four mat4x4; per step of 4 along K it loads two 4x4 blocks of L and two
// of R and does four mat4x4 products: 256 FMAs for 16 vec4 loads where the operands are
// aligned (LHS_LOAD, RHS_LOAD), 64 scalar loads otherwise. Software rasterisers
// (lavapipe) load buffers lane by lane and pay for every barrier, so registers beat
// shared tiles there; 8x8 measured 1.8x faster than 4x4 on lavapipe at 1024^3. Blocks
// are whole mat4x4 values, never arrays indexed in loops, which the driver would put in
// memory. Edges: loads clamp their row/column into the matrix (always in bounds),
// stores are masked.

struct View {
    offset: u32,
    batch_stride: u32,
    row_stride: u32,
    col_stride: u32,
}

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

// The same buffer is bound twice, as scalars and as vec4s: the vec4 view is only read
// where the launcher proved the addresses are multiples of 4.
@group(0) @binding(0) var<storage, read> lhs: array<f32>;
@group(0) @binding(1) var<storage, read> lhs4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> rhs: array<f32>;
@group(0) @binding(3) var<storage, read> rhs4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<uniform> params: Params;

override WG_X: u32 = 8u;
override WG_Y: u32 = 8u;
// How L is loaded: 0 scalar; 1 vec4 along inner (col_stride 1); 2 vec4 along rows
// (row_stride 1, rows % 4 == 0).
override LHS_LOAD: u32 = 0u;
// How R is loaded: 0 scalar; 1 vec4 along inner (row_stride 1); 2 vec4 along cols
// (col_stride 1, cols % 4 == 0).
override RHS_LOAD: u32 = 0u;
override BIAS_WG: u32 = 64u;

// Block of L: column j holds L[r0 .. r0+4, k + j].
fn lhs_block(base: u32, r0: u32, k: u32) -> mat4x4<f32> {
    let v = params.lhs;
    let last = params.rows - 1u;
    if (LHS_LOAD == 1u) {
        // One vec4 per row, along k; built as columns, so transpose.
        let q0 = lhs4[(base + min(r0, last) * v.row_stride + k) / 4u];
        let q1 = lhs4[(base + min(r0 + 1u, last) * v.row_stride + k) / 4u];
        let q2 = lhs4[(base + min(r0 + 2u, last) * v.row_stride + k) / 4u];
        let q3 = lhs4[(base + min(r0 + 3u, last) * v.row_stride + k) / 4u];
        return transpose(mat4x4<f32>(q0, q1, q2, q3));
    }
    if (LHS_LOAD == 2u) {
        // One vec4 per k, along rows; rows % 4 == 0 so a block is all in or all out.
        let r = min(r0, params.rows - 4u);
        return mat4x4<f32>(
            lhs4[(base + r + k * v.col_stride) / 4u],
            lhs4[(base + r + (k + 1u) * v.col_stride) / 4u],
            lhs4[(base + r + (k + 2u) * v.col_stride) / 4u],
            lhs4[(base + r + (k + 3u) * v.col_stride) / 4u],
        );
    }
    var block: mat4x4<f32>;
    for (var j = 0u; j < 4u; j++) {
        block[j] = lhs_column(base, r0, k + j);
    }
    return block;
}

// L[r0 .. r0+4, k] with scalar loads.
fn lhs_column(base: u32, r0: u32, k: u32) -> vec4<f32> {
    let v = params.lhs;
    let last = params.rows - 1u;
    let at = base + k * v.col_stride;
    return vec4<f32>(
        lhs[at + min(r0, last) * v.row_stride],
        lhs[at + min(r0 + 1u, last) * v.row_stride],
        lhs[at + min(r0 + 2u, last) * v.row_stride],
        lhs[at + min(r0 + 3u, last) * v.row_stride],
    );
}

// Block of R: column c holds R[k .. k+4, c0 + c].
fn rhs_block(base: u32, k: u32, c0: u32) -> mat4x4<f32> {
    let v = params.rhs;
    let last = params.cols - 1u;
    if (RHS_LOAD == 1u) {
        // One vec4 per column, along k.
        return mat4x4<f32>(
            rhs4[(base + k + min(c0, last) * v.col_stride) / 4u],
            rhs4[(base + k + min(c0 + 1u, last) * v.col_stride) / 4u],
            rhs4[(base + k + min(c0 + 2u, last) * v.col_stride) / 4u],
            rhs4[(base + k + min(c0 + 3u, last) * v.col_stride) / 4u],
        );
    }
    if (RHS_LOAD == 2u) {
        // One vec4 per k, along cols; built as columns, so transpose.
        let c = min(c0, params.cols - 4u);
        let q0 = rhs4[(base + k * v.row_stride + c) / 4u];
        let q1 = rhs4[(base + (k + 1u) * v.row_stride + c) / 4u];
        let q2 = rhs4[(base + (k + 2u) * v.row_stride + c) / 4u];
        let q3 = rhs4[(base + (k + 3u) * v.row_stride + c) / 4u];
        return transpose(mat4x4<f32>(q0, q1, q2, q3));
    }
    var rows_of_block: mat4x4<f32>;
    for (var j = 0u; j < 4u; j++) {
        rows_of_block[j] = rhs_row(base, k + j, c0);
    }
    return transpose(rows_of_block);
}

// R[k, c0 .. c0+4] with scalar loads.
fn rhs_row(base: u32, k: u32, c0: u32) -> vec4<f32> {
    let v = params.rhs;
    let last = params.cols - 1u;
    let at = base + k * v.row_stride;
    return vec4<f32>(
        rhs[at + min(c0, last) * v.col_stride],
        rhs[at + min(c0 + 1u, last) * v.col_stride],
        rhs[at + min(c0 + 2u, last) * v.col_stride],
        rhs[at + min(c0 + 3u, last) * v.col_stride],
    );
}

@compute @workgroup_size(WG_X, WG_Y, 1)
fn matmul_forward(@builtin(global_invocation_id) gid: vec3<u32>) {
    // This invocation's 8x8 block of out, as four 4x4 blocks: acc_ij covers rows
    // r0 + 4i .. +4 and columns c0 + 4j .. +4, with acc_ij[c][r] = out[row r, col c].
    let c0 = gid.x * 8u;
    let r0 = gid.y * 8u;
    let sum = params.sum_batches != 0u;
    let b_first = select(gid.z, 0u, sum);
    let b_end = select(gid.z + 1u, params.batch, sum);
    let k4 = params.inner & ~3u;

    var acc00 = mat4x4<f32>();
    var acc01 = mat4x4<f32>();
    var acc10 = mat4x4<f32>();
    var acc11 = mat4x4<f32>();
    for (var b = b_first; b < b_end; b++) {
        let lhs_base = params.lhs.offset + b * params.lhs.batch_stride;
        let rhs_base = params.rhs.offset + b * params.rhs.batch_stride;
        for (var k = 0u; k < k4; k += 4u) {
            let l0 = lhs_block(lhs_base, r0, k);
            let l1 = lhs_block(lhs_base, r0 + 4u, k);
            let q0 = rhs_block(rhs_base, k, c0);
            let q1 = rhs_block(rhs_base, k, c0 + 4u);
            acc00 += l0 * q0;
            acc01 += l0 * q1;
            acc10 += l1 * q0;
            acc11 += l1 * q1;
        }
        for (var k = k4; k < params.inner; k++) {
            let l0 = lhs_column(lhs_base, r0, k);
            let l1 = lhs_column(lhs_base, r0 + 4u, k);
            let q0 = rhs_row(rhs_base, k, c0);
            let q1 = rhs_row(rhs_base, k, c0 + 4u);
            acc00 += outer(l0, q0);
            acc01 += outer(l0, q1);
            acc10 += outer(l1, q0);
            acc11 += outer(l1, q1);
        }
    }

    let out_base = params.out.offset + select(gid.z, 0u, sum) * params.out.batch_stride;
    store_block(out_base, r0, c0, acc00);
    store_block(out_base, r0, c0 + 4u, acc01);
    store_block(out_base, r0 + 4u, c0, acc10);
    store_block(out_base, r0 + 4u, c0 + 4u, acc11);
}

// The 4x4 outer product l r^T as a matrix whose column c is l * r[c].
fn outer(l: vec4<f32>, r: vec4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(l * r.x, l * r.y, l * r.z, l * r.w);
}

// Writes block[c][i] to out[r0 + i, c0 + c] inside the matrix, with the epilogue.
fn store_block(out_base: u32, r0: u32, c0: u32, block: mat4x4<f32>) {
    for (var c = 0u; c < 4u; c++) {
        let col = c0 + c;
        for (var i = 0u; i < 4u; i++) {
            let row = r0 + i;
            if (row < params.rows && col < params.cols) {
                let index = out_base + row * params.out.row_stride + col * params.out.col_stride;
                var value = block[c][i];
                if (params.has_bias != 0u) {
                    value += bias[col];
                }
                // beta == 0 must not read out: PyTorch ignores C then, NaN included.
                if (params.beta != 0.0) {
                    value += params.beta * out[index];
                }
                out[index] = value;
            }
        }
    }
}

// One invocation per column, summing its rows in a fixed order: deterministic, no atomics.
// dC is bound as lhs (rows M, cols N), dbias as out (col_stride 1).
@compute @workgroup_size(BIAS_WG, 1, 1)
fn matmul_backward_bias(@builtin(global_invocation_id) gid: vec3<u32>) {
    let col = gid.x;
    if (col >= params.cols) {
        return;
    }
    let v = params.lhs;
    var total = 0.0;
    for (var b = 0u; b < params.batch; b++) {
        let at = v.offset + b * v.batch_stride + col * v.col_stride;
        for (var row = 0u; row < params.rows; row++) {
            total += lhs[at + row * v.row_stride];
        }
    }
    let index = params.out.offset + col * params.out.col_stride;
    if (params.beta != 0.0) {
        total += params.beta * out[index];
    }
    out[index] = total;
}

// ---- few rows ----
// Helpers it shares with the kernel of the section below: 4-wide steps of K whose loads
// clamp into the matrix and whose lanes past `inner` read 0.

// Which of k .. k+4 lie inside the inner dimension.
fn k4_inside(k: u32) -> vec4<bool> {
    return vec4<u32>(k, k + 1u, k + 2u, k + 3u) < vec4<u32>(params.inner);
}

// k .. k+4 clamped into the inner dimension (their loads stay in bounds; k4_inside zeroes them).
fn k4_clamped(k: u32) -> vec4<u32> {
    return min(vec4<u32>(k, k + 1u, k + 2u, k + 3u), vec4<u32>(params.inner - 1u));
}

// L[row, k .. k+4] (row clamped into the matrix, zeros past inner).
fn lhs_row_k4(base: u32, row: u32, k: u32) -> vec4<f32> {
    let v = params.lhs;
    let at = base + min(row, params.rows - 1u) * v.row_stride;
    var x: vec4<f32>;
    if (LHS_LOAD == 1u) {
        // Past inner the vec4 reads the rest of the row's stride; k4_inside drops it.
        x = lhs4[(at + k) / 4u];
    } else {
        let kc = k4_clamped(k) * v.col_stride;
        x = vec4<f32>(lhs[at + kc.x], lhs[at + kc.y], lhs[at + kc.z], lhs[at + kc.w]);
    }
    return select(vec4<f32>(), x, k4_inside(k));
}

// R[k .. k+4, c0 + j] as column j (columns clamped into the matrix, zeros past inner).
fn rhs_block4(base: u32, k: u32, c0: u32) -> mat4x4<f32> {
    let v = params.rhs;
    let keep = k4_inside(k);
    let zero = vec4<f32>();
    if (RHS_LOAD == 2u) {
        // R contiguous along columns, cols % 4 == 0: one vec4 per k, built as rows.
        let at = base + min(c0, params.cols - 4u);
        let kc = k4_clamped(k) * v.row_stride;
        return transpose(mat4x4<f32>(
            select(zero, rhs4[(at + kc.x) / 4u], keep.x),
            select(zero, rhs4[(at + kc.y) / 4u], keep.y),
            select(zero, rhs4[(at + kc.z) / 4u], keep.z),
            select(zero, rhs4[(at + kc.w) / 4u], keep.w),
        ));
    }
    return mat4x4<f32>(
        rhs_col_k4(base, k, c0, keep),
        rhs_col_k4(base, k, c0 + 1u, keep),
        rhs_col_k4(base, k, c0 + 2u, keep),
        rhs_col_k4(base, k, c0 + 3u, keep),
    );
}

// R[k .. k+4, col] (col clamped into the matrix; `keep` zeroes what lies past inner).
fn rhs_col_k4(base: u32, k: u32, col: u32, keep: vec4<bool>) -> vec4<f32> {
    let v = params.rhs;
    let at = base + min(col, params.cols - 1u) * v.col_stride;
    if (RHS_LOAD == 1u) {
        return select(vec4<f32>(), rhs4[(at + k) / 4u], keep);
    }
    let kc = k4_clamped(k) * v.row_stride;
    return select(vec4<f32>(), vec4<f32>(rhs[at + kc.x], rhs[at + kc.y], rhs[at + kc.z], rhs[at + kc.w]), keep);
}

// matmul_forward_few_rows   the same product for at most 4 rows (a batch-1 or batch-4
// step of a recurrent layer, a decoder step's projections): a matrix-vector product,
// bound by reading R once. Each invocation owns 4 adjacent columns of all FEW_ROWS
// rows; per 4 steps of K it loads R's 4 x 4 block (4 vec4 where R is contiguous
// along K, PyTorch's Linear weight) and one vec4 of each row of L, for 16 FEW_ROWS
// multiply-adds. The 8-row tiles of the other two forward kernels would do 8x the
// multiply-adds of a 1-row product, over half as many invocations.
override FEW_ROWS: u32 = 4u;
override FEW_WG: u32 = 64u;

@compute @workgroup_size(FEW_WG, 1, 1)
fn matmul_forward_few_rows(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c0 = gid.x * 4u;
    let sum = params.sum_batches != 0u;
    let b_first = select(gid.z, 0u, sum);
    let b_end = select(gid.z + 1u, params.batch, sum);
    // acc_r = out[r, c0 .. c0+4] (rows past FEW_ROWS stay unused and compile away).
    var acc0 = vec4<f32>();
    var acc1 = vec4<f32>();
    var acc2 = vec4<f32>();
    var acc3 = vec4<f32>();
    for (var b = b_first; b < b_end; b++) {
        let lhs_base = params.lhs.offset + b * params.lhs.batch_stride;
        let rhs_base = params.rhs.offset + b * params.rhs.batch_stride;
        for (var k = 0u; k < params.inner; k += 4u) {
            // Column j is R[k .. k+4, c0 + j], so l * w is l's dot product with each.
            let w = rhs_block4(rhs_base, k, c0);
            acc0 += lhs_row_k4(lhs_base, 0u, k) * w;
            if (FEW_ROWS > 1u) {
                acc1 += lhs_row_k4(lhs_base, 1u, k) * w;
            }
            if (FEW_ROWS > 2u) {
                acc2 += lhs_row_k4(lhs_base, 2u, k) * w;
            }
            if (FEW_ROWS > 3u) {
                acc3 += lhs_row_k4(lhs_base, 3u, k) * w;
            }
        }
    }
    let out_base = params.out.offset + select(gid.z, 0u, sum) * params.out.batch_stride;
    // store_block takes column-major blocks (block[c][i] = out[row i, col c]); rows past
    // `rows` are masked there.
    store_block(out_base, 0u, c0, transpose(mat4x4<f32>(acc0, acc1, acc2, acc3)));
}

// ==== subgroup kernels ====
// Compiled only where the device has subgroup operations in subgroups of a multiple of 8
// lanes (src/gpu/pipeline.rs leaves this section out elsewhere).
//
// matmul_forward_subgroup   the same product as matmul_forward (views, batches, sums, bias,
//     beta), laid out for SIMD hardware. A workgroup owns SG_ROWS rows x SG_COLS * SG_WG
//     columns of out, and every invocation SG_COLS (4 or 8) adjacent columns of all
//     SG_ROWS rows. So all the invocations of a workgroup need the same rows of L: instead
//     of each one loading all of them, every group of 8 lanes loads SG_ROWS / 8 rows per
//     lane (or, L contiguous along its rows, 4 rows per lane) and hands them round with
//     subgroupShuffle. Per 4 steps of K an invocation loads SG_ROWS / 8 + SG_COLS vec4s
//     for 4 * SG_ROWS * SG_COLS multiply-adds (32 rows x 8 columns: 12 loads for 1024
//     FMAs, against 16 for 256 in matmul_forward). Lavapipe loads storage buffers lane by
//     lane in a loop, while a shuffle is a register permute: 2 to 3x the GFLOP/s of
//     matmul_forward there. Edges: rows and columns clamp into the matrix (every lane
//     takes part in every shuffle), K past `inner` reads 0 from both operands, stores are
//     masked.

// SG_ROWS (rows per workgroup) and SG_WG (invocations per workgroup) are common_subgroup.wgsl's.
// Columns per invocation: 4 or 8 (8 shares each shuffled row of L between twice the
// multiply-adds, where the product is wide enough).
override SG_COLS: u32 = 4u;

// This lane's share of the workgroup's rows of L at k .. k+4, one row per column.
// LHS_LOAD 2 (L contiguous along rows; SG_ROWS is 32): column i is row r0 + 4 * lane8 + i,
// from four vec4 loads along rows. Otherwise column g is row r0 + 8 g + lane8 (g below
// SG_ROWS / 8).
fn lhs_share(base: u32, r0: u32, lane8: u32, k: u32) -> mat4x4<f32> {
    if (LHS_LOAD == 2u) {
        let v = params.lhs;
        // rows % 4 == 0, so the 4 rows are all inside or all past the matrix.
        let at = base + min(r0 + 4u * lane8, params.rows - 4u);
        let kc = k4_clamped(k) * v.col_stride;
        let keep = k4_inside(k);
        let zero = vec4<f32>();
        let by_k = mat4x4<f32>(
            select(zero, lhs4[(at + kc.x) / 4u], keep.x),
            select(zero, lhs4[(at + kc.y) / 4u], keep.y),
            select(zero, lhs4[(at + kc.z) / 4u], keep.z),
            select(zero, lhs4[(at + kc.w) / 4u], keep.w),
        );
        return transpose(by_k);
    }
    var share: mat4x4<f32>;
    share[0] = lhs_row_k4(base, r0 + lane8, k);
    if (SG_ROWS > 8u) {
        share[1] = lhs_row_k4(base, r0 + 8u + lane8, k);
    }
    if (SG_ROWS > 16u) {
        share[2] = lhs_row_k4(base, r0 + 16u + lane8, k);
    }
    if (SG_ROWS > 24u) {
        share[3] = lhs_row_k4(base, r0 + 24u + lane8, k);
    }
    return share;
}

// Rows 4q .. 4q+4 of the workgroup's tile at k .. k+4: column i is L[r0 + 4q + i, k..k+4],
// fetched from the lane of the group of 8 (starting at lane0) that loaded it (lhs_share).
fn tile_rows4(share: mat4x4<f32>, lane0: u32, q: u32) -> mat4x4<f32> {
    if (LHS_LOAD == 2u) {
        let source = lane0 + q;
        return mat4x4<f32>(
            subgroupShuffle(share[0], source),
            subgroupShuffle(share[1], source),
            subgroupShuffle(share[2], source),
            subgroupShuffle(share[3], source),
        );
    }
    let rows = share[q / 2u];
    let source = lane0 + 4u * (q % 2u);
    return mat4x4<f32>(
        subgroupShuffle(rows, source),
        subgroupShuffle(rows, source + 1u),
        subgroupShuffle(rows, source + 2u),
        subgroupShuffle(rows, source + 3u),
    );
}

// Adds rows 4q .. 4q+4 of the tile times the invocation's columns: the first 4 (`w`) into
// acc, the next 4 (`w_high`, SG_COLS 8) into acc_high; row i of each is column i.
fn accumulate_rows4(
    acc: ptr<function, mat4x4<f32>>,
    acc_high: ptr<function, mat4x4<f32>>,
    rows: mat4x4<f32>,
    w: mat4x4<f32>,
    w_high: mat4x4<f32>,
) {
    *acc += mat4x4<f32>(rows[0] * w, rows[1] * w, rows[2] * w, rows[3] * w);
    if (SG_COLS == 8u) {
        *acc_high += mat4x4<f32>(rows[0] * w_high, rows[1] * w_high, rows[2] * w_high, rows[3] * w_high);
    }
}

// Stores rows r .. r+4 of the invocation's columns (acc: the first 4, acc_high the next 4).
fn store_rows4(out_base: u32, r: u32, c0: u32, acc: mat4x4<f32>, acc_high: mat4x4<f32>) {
    // store_block takes column-major blocks (block[c][i] = out[row i, col c]).
    store_block(out_base, r, c0, transpose(acc));
    if (SG_COLS == 8u) {
        store_block(out_base, r, c0 + 4u, transpose(acc_high));
    }
}

@compute @workgroup_size(SG_WG, 1, 1)
fn matmul_forward_subgroup(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let c0 = (wid.x * SG_WG + local) * SG_COLS;
    let r0 = wid.y * SG_ROWS;
    // The lane's place in its group of 8 lanes, which share their loads of L.
    let lane8 = lane & 7u;
    let lane0 = lane & ~7u;
    let sum = params.sum_batches != 0u;
    let b_first = select(wid.z, 0u, sum);
    let b_end = select(wid.z + 1u, params.batch, sum);

    // acc_q[i] = out[r0 + 4q + i, c0 .. c0+4], high_q[i] the next 4 columns (SG_COLS 8);
    // the blocks past SG_ROWS stay unused. SG_ROWS and SG_COLS are pipeline constants:
    // the untaken blocks compile away.
    var acc0 = mat4x4<f32>();
    var acc1 = mat4x4<f32>();
    var acc2 = mat4x4<f32>();
    var acc3 = mat4x4<f32>();
    var acc4 = mat4x4<f32>();
    var acc5 = mat4x4<f32>();
    var acc6 = mat4x4<f32>();
    var acc7 = mat4x4<f32>();
    var high0 = mat4x4<f32>();
    var high1 = mat4x4<f32>();
    var high2 = mat4x4<f32>();
    var high3 = mat4x4<f32>();
    var high4 = mat4x4<f32>();
    var high5 = mat4x4<f32>();
    var high6 = mat4x4<f32>();
    var high7 = mat4x4<f32>();
    for (var b = b_first; b < b_end; b++) {
        let lhs_base = params.lhs.offset + b * params.lhs.batch_stride;
        let rhs_base = params.rhs.offset + b * params.rhs.batch_stride;
        for (var k = 0u; k < params.inner; k += 4u) {
            let w = rhs_block4(rhs_base, k, c0);
            var w_high = mat4x4<f32>();
            if (SG_COLS == 8u) {
                w_high = rhs_block4(rhs_base, k, c0 + 4u);
            }
            let share = lhs_share(lhs_base, r0, lane8, k);
            accumulate_rows4(&acc0, &high0, tile_rows4(share, lane0, 0u), w, w_high);
            accumulate_rows4(&acc1, &high1, tile_rows4(share, lane0, 1u), w, w_high);
            if (SG_ROWS > 8u) {
                accumulate_rows4(&acc2, &high2, tile_rows4(share, lane0, 2u), w, w_high);
                accumulate_rows4(&acc3, &high3, tile_rows4(share, lane0, 3u), w, w_high);
            }
            if (SG_ROWS > 16u) {
                accumulate_rows4(&acc4, &high4, tile_rows4(share, lane0, 4u), w, w_high);
                accumulate_rows4(&acc5, &high5, tile_rows4(share, lane0, 5u), w, w_high);
            }
            if (SG_ROWS > 24u) {
                accumulate_rows4(&acc6, &high6, tile_rows4(share, lane0, 6u), w, w_high);
                accumulate_rows4(&acc7, &high7, tile_rows4(share, lane0, 7u), w, w_high);
            }
        }
    }

    let out_base = params.out.offset + select(wid.z, 0u, sum) * params.out.batch_stride;
    store_rows4(out_base, r0, c0, acc0, high0);
    store_rows4(out_base, r0 + 4u, c0, acc1, high1);
    if (SG_ROWS > 8u) {
        store_rows4(out_base, r0 + 8u, c0, acc2, high2);
        store_rows4(out_base, r0 + 12u, c0, acc3, high3);
    }
    if (SG_ROWS > 16u) {
        store_rows4(out_base, r0 + 16u, c0, acc4, high4);
        store_rows4(out_base, r0 + 20u, c0, acc5, high5);
    }
    if (SG_ROWS > 24u) {
        store_rows4(out_base, r0 + 24u, c0, acc6, high6);
        store_rows4(out_base, r0 + 28u, c0, acc7, high7);
    }
}
