// common_recurrent.wgsl: what the three recurrent families (lstm_cell, gru_cell,
// rnn_cell) share: the step parameters, the bindings they all have, the launch overrides,
// the helpers that read h_{t-1}, W_hh and dgates_{t+1}, and the loops around each
// family's cell (sequence_forward, backward_step). Prepended after common.wgsl
// to those three families only, by src/gpu/pipeline.rs (the one place that does it). Its
// part from the section line below on is compiled only together with the family's.
//
// Letters: B batch, T time, H hidden; G = GATES, the gates of a unit (rows of W_hh and
// columns of xproj per hidden unit: LSTM 4, GRU 3, RNN 1); C = GATE_COLUMNS, the columns
// of gates and dgates per unit (LSTM 4, GRU 4 with hn, RNN 1). Gate q of unit u is row
// q * H + u of W_hh and column q * H + u of xproj, gates and dgates (PyTorch's layout).
//
// Each family defines:
//   const GATES, const GATE_COLUMNS  (1, 3 or 4; constants, so the untaken gate rows of
//                                     w_block and w_gates_k4 compile away)
//   fn cell_step(t, b0, u0)          the forward of step t for batch rows
//                                    b0 .. b0+BATCH_BLOCK and units u0 .. u0+4
//   fn dgates_next_chunk(b, j)       rows j .. j+4 (of G H) of the gradient that
//                                    meets W_hh, at step next = t + 1 (zero past G H)
//   fn cell_backward(t, b, u, r)     the backward of (b, u) at step t, given r, the
//                                    recurrent part of dh
//   its own bindings: 5, 6, 11, 12 (and 17, 18, 21, 22 after its section line).

// Mirrored by StepParams in src/kernels/recurrent.rs (one block for the three cells).
struct Params {
    batch: u32,
    steps: u32,
    hidden: u32,
    t: u32,
    has_lengths: u32,
    has_dy: u32,
    // Backward: whether dgates[b, next] feeds dh (next = t + 1, or 0 for the final
    // dispatch that only forms dh0), and whether the pointwise part runs.
    has_next: u32,
    next: u32,
    pointwise: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> xproj: array<f32>;            // [B, T, G H]
@group(0) @binding(1) var<storage, read> w_hh: array<f32>;             // [G H, H]
@group(0) @binding(2) var<storage, read> w_hh4: array<vec4<f32>>;      // the same, as vec4
@group(0) @binding(3) var<storage, read> lengths: array<u32>;          // [B]
@group(0) @binding(4) var<storage, read_write> h_states: array<f32>;   // [B, T+1, H]
@group(0) @binding(7) var<storage, read_write> output: array<f32>;     // [B, T, H]
@group(0) @binding(8) var<uniform> params: Params;

// Backward bindings (their own entry point layout).
@group(0) @binding(9) var<storage, read_write> dgates: array<f32>;     // [B, T, C H]
@group(0) @binding(10) var<storage, read> dy: array<f32>;              // [B, T, H]
@group(0) @binding(13) var<storage, read_write> dstate: array<f32>;    // [B, H] (LSTM: [2, B, H])

override WG_X: u32 = 32u;
// W_hh rows may be read as vec4 (H % 4 == 0).
override W_VEC4: bool = false;
override SEQ_WG: u32 = 64u;
// Batch rows per invocation (1 to 4).
override BATCH_BLOCK: u32 = 4u;

// The steps row b runs: its length, at most T.
fn step_len(b: u32) -> u32 {
    if (params.has_lengths != 0u) {
        return min(lengths[b], params.steps);
    }
    return params.steps;
}

// h_{t-1}[b, k .. k+4] (clamped columns keep every load in bounds and are zeroed, so a
// partial last chunk adds nothing).
fn h_chunk(b: u32, t: u32, k: u32) -> vec4<f32> {
    let hidden = params.hidden;
    let base = (b * (params.steps + 1u) + t) * hidden;
    let last = hidden - 1u;
    let keep = vec4<f32>(vec4<u32>(k, k + 1u, k + 2u, k + 3u) < vec4<u32>(hidden));
    return keep * vec4<f32>(
        h_states[base + min(k, last)],
        h_states[base + min(k + 1u, last)],
        h_states[base + min(k + 2u, last)],
        h_states[base + min(k + 3u, last)],
    );
}

// W_hh[row, k .. k+4] for row < G H: one vec4 when aligned, else clamped scalars (the
// clamped columns meet h_chunk's zeros).
fn w_chunk(row: u32, k: u32) -> vec4<f32> {
    let hidden = params.hidden;
    if (W_VEC4) {
        return w_hh4[(row * hidden + k) / 4u];
    }
    let last = hidden - 1u;
    let at = row * hidden;
    return vec4<f32>(w_hh[at + min(k, last)], w_hh[at + min(k + 1u, last)], w_hh[at + min(k + 2u, last)], w_hh[at + min(k + 3u, last)]);
}

// The gate rows of unit u at columns k .. k+4, as a matrix with one column per k: column
// j holds (W_0, .., W_{G-1})[u, k + j], zero past G, so that w_block(u, k) * h_chunk
// is the recurrent part of u's G gate pre-activations for 4 steps of k.
fn w_block(u: u32, k: u32) -> mat4x4<f32> {
    let hidden = params.hidden;
    var rows = mat4x4<f32>();
    rows[0] = w_chunk(u, k);
    if (GATES >= 3u) {
        rows[1] = w_chunk(hidden + u, k);
        rows[2] = w_chunk(2u * hidden + u, k);
    }
    if (GATES == 4u) {
        rows[3] = w_chunk(3u * hidden + u, k);
    }
    return transpose(rows);
}

// W_hh[j, u0 .. u0+4] for one row j of the backward's (dgates W_hh): vec4 when aligned,
// else clamped scalars. Rows past G H are clamped (they meet zero dgates) and so are
// units past H (never stored).
fn w_row_units(j: u32, u0: u32) -> vec4<f32> {
    let hidden = params.hidden;
    let at = min(j, GATES * hidden - 1u) * hidden;
    if (W_VEC4) {
        return w_hh4[(at + u0) / 4u];
    }
    let last = hidden - 1u;
    return vec4<f32>(w_hh[at + min(u0, last)], w_hh[at + min(u0 + 1u, last)], w_hh[at + min(u0 + 2u, last)], w_hh[at + min(u0 + 3u, last)]);
}

// The whole forward in one workgroup: every step, every (BATCH_BLOCK x 4) block of rows
// and units strided over SEQ_WG invocations, a storage barrier between steps. Called by
// each family's *_sequence_forward with its cell_step.
fn sequence_forward(lid: u32) {
    let unit_blocks = div_ceil_u32(params.hidden, 4u);
    let blocks = unit_blocks * div_ceil_u32(params.batch, BATCH_BLOCK);
    for (var t = 0u; t < params.steps; t++) {
        for (var block = lid; block < blocks; block += SEQ_WG) {
            cell_step(t, (block / unit_blocks) * BATCH_BLOCK, (block % unit_blocks) * 4u);
        }
        // Step t+1 reads h_t written by other invocations.
        storageBarrier();
    }
}

// The backward of step params.t for batch rows b0 .. b0+BATCH_BLOCK and units
// u0 .. u0+4: the recurrent part of dh, (dgates[b, t+1] W_hh)[u], with W_hh's 4 x 4
// blocks loaded once for all the rows, then each family's cell_backward per (b, u).
fn backward_step(b0: u32, u0: u32) {
    let batch = params.batch;
    let hidden = params.hidden;
    let b_last = batch - 1u;
    // carried[bi] = (dgates[b0 + bi, next] W_hh)[u0 .. u0+4], bi < BATCH_BLOCK
    var carried = mat4x4<f32>();
    if (params.has_next != 0u) {
        for (var j = 0u; j < GATES * hidden; j += 4u) {
            // Column c: W_hh[j + c, u0 .. u0+4].
            let w = mat4x4<f32>(w_row_units(j, u0), w_row_units(j + 1u, u0), w_row_units(j + 2u, u0), w_row_units(j + 3u, u0));
            for (var bi = 0u; bi < BATCH_BLOCK; bi++) {
                carried[bi] += w * dgates_next_chunk(min(b0 + bi, b_last), j);
            }
        }
    }
    for (var bi = 0u; bi < BATCH_BLOCK; bi++) {
        let b = b0 + bi;
        if (b >= batch) {
            break;
        }
        // Rows whose step t+1 was padded got no dgates there: dh is carried in dstate.
        let next_ran = params.has_next != 0u && params.next < step_len(b);
        for (var q = 0u; q < 4u; q++) {
            let u = u0 + q;
            if (u < hidden) {
                cell_backward(params.t, b, u, select(0.0, carried[bi][q], next_ran));
            }
        }
    }
}

// ==== subgroup kernels ====
// The vec4 views and loads of the families' subgroup kernels (H % 4 == 0 there, so W_VEC4
// holds and every per-unit tensor is read 4 units at a time). With the shares below, a
// group of 8 lanes loads a block's rows once, 1/8 each, and accumulate_shared_rows
// (common_subgroup.wgsl) hands them round.

@group(0) @binding(14) var<storage, read_write> h_states4: array<vec4<f32>>;  // h_states
@group(0) @binding(15) var<storage, read_write> dgates4: array<vec4<f32>>;    // dgates
@group(0) @binding(16) var<storage, read> dy4: array<vec4<f32>>;              // dy
@group(0) @binding(19) var<storage, read_write> dstate4: array<vec4<f32>>;    // dstate
@group(0) @binding(20) var<storage, read> xproj4: array<vec4<f32>>;           // xproj
@group(0) @binding(23) var<storage, read_write> output4: array<vec4<f32>>;    // output

// h_{t-1}[b, k .. k+4] (b clamped into the batch).
fn h_prev_k4(b: u32, t: u32, k: u32) -> vec4<f32> {
    return h_states4[((min(b, params.batch - 1u) * (params.steps + 1u) + t) * params.hidden + k) / 4u];
}

// This lane's share of h_{t-1}[.., k .. k+4] for accumulate_shared_rows: column g is row
// b0 + 8g + lane8, g < SG_ROWS / 8 (the loads past the workgroup's rows are selected away).
fn h_prev_share(b0: u32, lane8: u32, t: u32, k: u32) -> mat4x4<f32> {
    return mat4x4<f32>(
        h_prev_k4(b0 + lane8, t, k),
        select(vec4<f32>(), h_prev_k4(b0 + 8u + lane8, t, k), share_has_group(1u)),
        select(vec4<f32>(), h_prev_k4(b0 + 16u + lane8, t, k), share_has_group(2u)),
        select(vec4<f32>(), h_prev_k4(b0 + 24u + lane8, t, k), share_has_group(3u)),
    );
}

// dgates[b, next, j .. j+4] for a column j < C H (b clamped into the batch).
fn dgates_next_k4(b: u32, j: u32) -> vec4<f32> {
    return dgates4[((min(b, params.batch - 1u) * params.steps + params.next) * GATE_COLUMNS * params.hidden + j) / 4u];
}

// This lane's share of dgates[.., next, j .. j+4], as h_prev_share.
fn dgates_next_share(b0: u32, lane8: u32, j: u32) -> mat4x4<f32> {
    return mat4x4<f32>(
        dgates_next_k4(b0 + lane8, j),
        select(vec4<f32>(), dgates_next_k4(b0 + 8u + lane8, j), share_has_group(1u)),
        select(vec4<f32>(), dgates_next_k4(b0 + 16u + lane8, j), share_has_group(2u)),
        select(vec4<f32>(), dgates_next_k4(b0 + 24u + lane8, j), share_has_group(3u)),
    );
}

// w_block through the vec4 view: column j holds (W_0, .., W_{G-1})[u, k + j], zero past G.
fn w_gates_k4(u: u32, k: u32) -> mat4x4<f32> {
    let row = (u * params.hidden + k) / 4u;
    let stride = params.hidden * params.hidden / 4u;
    var rows = mat4x4<f32>();
    rows[0] = w_hh4[row];
    if (GATES >= 3u) {
        rows[1] = w_hh4[row + stride];
        rows[2] = w_hh4[row + 2u * stride];
    }
    if (GATES == 4u) {
        rows[3] = w_hh4[row + 3u * stride];
    }
    return transpose(rows);
}

// W_hh[row .. row+4, col .. col+4] through the vec4 view: column c is W_hh[row + c,
// col .. col+4] (col % 4 == 0 and col <= H - 4).
fn w_rows_k4(row: u32, col: u32) -> mat4x4<f32> {
    let h4 = params.hidden / 4u;
    let at = (row * params.hidden + col) / 4u;
    return mat4x4<f32>(w_hh4[at], w_hh4[at + h4], w_hh4[at + 2u * h4], w_hh4[at + 3u * h4]);
}
