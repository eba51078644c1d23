// matmul.wgsl: batched matrix product and the gradient of its bias.
//
// matmul_forward        out[b] = L[b] R[b] (+ bias) (+ beta * out[b])
//     L is [rows, inner], R is [inner, cols], out is [rows, cols]: M, K, N in the usual
//     letters. Each operand is a strided *view*: element (r, c) of batch b lives at
//     offset + b * batch_stride + r * row_stride + c * col_stride. A transpose is a view
//     with swapped strides (never a copy); batch_stride 0 shares an operand (weights)
//     across the batch. With sum_batches = 1 the products of every batch are added into
//     one output: the gradient of a shared operand.
// matmul_backward_bias  dbias[n] = sum over b, m of dC[b, m, n] (+ beta * dbias[n])
//
// The gradients of C = op(A) op(B) are products too, so the Rust launcher encodes them
// as matmul_forward dispatches over remapped views (src/kernels/matmul.rs):
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
