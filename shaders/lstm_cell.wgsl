// lstm_cell.wgsl: one LSTM time step (PyTorch's nn.LSTM, gate order i, f, g, o) forward
// and backward, and the same step looped over a whole sequence in one workgroup.
//
// Letters: B batch, T time, H hidden. Gate rows of W_hh and columns of xproj are
// PyTorch's: gate q of unit u is row/column q * H + u.
//
// lstm_cell_forward     at step t, for each (b, u) with t < len[b]:
//     pre    = xproj[b, t] + h_{t-1}[b] W_hh^T         (xproj = x W_ih^T + b_ih + b_hh, hoisted)
//     i, f, g, o = sigmoid, sigmoid, tanh, sigmoid of pre
//     c_t = f * c_{t-1} + i * g;  h_t = o * tanh(c_t);  output[b, t] = h_t
//   a padded step (t >= len[b]) carries h and c unchanged and writes output 0 and gates 0.
//   Saves for the backward: gates [B, T, 4H] (after their nonlinearities), and the
//   states h_states, c_states [B, T+1, H] whose slot 0 is the initial state.
// lstm_sequence_forward the same for every t in one dispatch of one workgroup, with a
//   storage barrier between steps: for small B * H (one character at a time in a game).
// lstm_cell_backward    at step t (walking t = T-1 .. 0), for each (b, u):
//     dh  = dstate_h[b, u] + (dgates[b, t+1] W_hh)[u]     (the second term if step t+1 ran)
//         + dy[b, t, u]
//     dc  = dstate_c[b, u] + dh * o * (1 - tanh(c_t)^2)
//     dgates[b, t] = (dc g i(1-i), dc c_{t-1} f(1-f), dc i (1-g^2), dh tanh(c_t) o(1-o))
//     dstate_c = dc * f;  dstate_h = 0 (step t-1 reads dh from dgates[b, t] instead)
//   A padded step writes dgates 0 and carries dstate. A last dispatch with pointwise = 0
//   and next = 0 runs only the first line, turning dstate_h into dh0. The weight gradients are one matmul each after
//   the loop: dW_hh = sum_t dgates_t^T h_{t-1}, dW_ih = dgates^T x, db = sum dgates.
//
// Layout of the work: an invocation owns BATCH_BLOCK (1 to 4) batch rows x 4 hidden
// units. Per 4 steps of k it loads the 4 units' gate rows once (4 mat4x4, W_hh rows read
// as vec4 where H % 4 == 0) and multiplies them by h_{t-1} of each of its rows. The
// launcher picks BATCH_BLOCK = ceil(B / ceil(B / 4)): as many row blocks as with 4 rows,
// but no clamped duplicate rows (at B = 1 a 4-row block would do 4x the FMAs and h
// loads). h_{t-1} is written by the previous step into the same read_write buffer, so
// it is read with scalar loads (a vec4 alias of a writable buffer is not allowed).

struct Params {
    batch: u32,
    steps: u32,
    hidden: u32,
    t: u32,
    has_lengths: u32,
    has_dy: u32,
    // lstm_cell_backward: whether dgates[b, next] feeds dh (next = t + 1, or 0 for the
    // final dispatch that only forms dh0), and whether the pointwise part runs.
    has_next: u32,
    next: u32,
    pointwise: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> xproj: array<f32>;            // [B, T, 4H]
@group(0) @binding(1) var<storage, read> w_hh: array<f32>;             // [4H, H]
@group(0) @binding(2) var<storage, read> w_hh4: array<vec4<f32>>;      // the same, as vec4
@group(0) @binding(3) var<storage, read> lengths: array<u32>;          // [B]
@group(0) @binding(4) var<storage, read_write> h_states: array<f32>;   // [B, T+1, H]
@group(0) @binding(5) var<storage, read_write> c_states: array<f32>;   // [B, T+1, H]
@group(0) @binding(6) var<storage, read_write> gates: array<f32>;      // [B, T, 4H]
@group(0) @binding(7) var<storage, read_write> output: array<f32>;     // [B, T, H]
@group(0) @binding(8) var<uniform> params: Params;

// Backward bindings (their own entry point layout).
@group(0) @binding(9) var<storage, read_write> dgates: array<f32>;     // [B, T, 4H]
@group(0) @binding(10) var<storage, read> dy: array<f32>;              // [B, T, H]
@group(0) @binding(11) var<storage, read> saved_gates: array<f32>;     // [B, T, 4H]
@group(0) @binding(12) var<storage, read> saved_c: array<f32>;         // [B, T+1, H]
@group(0) @binding(13) var<storage, read_write> dstate: array<f32>;    // [2, B, H]: dh, dc

override WG_X: u32 = 32u;
// W_hh rows may be read as vec4 (H % 4 == 0).
override W_VEC4: bool = false;
override SEQ_WG: u32 = 64u;
// Batch rows per invocation (1 to 4).
override BATCH_BLOCK: u32 = 4u;

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

// The 4 gate rows of unit u at columns k .. k+4, as a matrix with one column per k:
// column j holds (W_i[u, k+j], W_f[u, k+j], W_g[u, k+j], W_o[u, k+j]).
fn w_block(u: u32, k: u32) -> mat4x4<f32> {
    let hidden = params.hidden;
    if (W_VEC4) {
        let row = u * hidden + k;
        let stride = hidden * hidden;
        return transpose(mat4x4<f32>(
            w_hh4[row / 4u],
            w_hh4[(row + stride) / 4u],
            w_hh4[(row + 2u * stride) / 4u],
            w_hh4[(row + 3u * stride) / 4u],
        ));
    }
    var rows: mat4x4<f32>;
    let last = hidden - 1u;
    for (var q = 0u; q < 4u; q++) {
        let row = (q * hidden + u) * hidden;
        rows[q] = vec4<f32>(
            w_hh[row + min(k, last)],
            w_hh[row + min(k + 1u, last)],
            w_hh[row + min(k + 2u, last)],
            w_hh[row + min(k + 3u, last)],
        );
    }
    return transpose(rows);
}

// The forward of step t for batch rows b0 .. b0+BATCH_BLOCK and units u0 .. u0+4.
fn lstm_step(t: u32, b0: u32, u0: u32) {
    let batch = params.batch;
    let hidden = params.hidden;
    let b_last = batch - 1u;
    let u_last = hidden - 1u;
    // acc_q[bi] = the 4 gate pre-activations (recurrent part) of unit u0 + q, row b0 + bi
    // (columns past BATCH_BLOCK stay unused).
    var acc0 = mat4x4<f32>();
    var acc1 = mat4x4<f32>();
    var acc2 = mat4x4<f32>();
    var acc3 = mat4x4<f32>();
    for (var k = 0u; k < hidden; k += 4u) {
        let w0 = w_block(min(u0, u_last), k);
        let w1 = w_block(min(u0 + 1u, u_last), k);
        let w2 = w_block(min(u0 + 2u, u_last), k);
        let w3 = w_block(min(u0 + 3u, u_last), k);
        // A constant trip count once BATCH_BLOCK is set: the compiler may unroll it.
        for (var bi = 0u; bi < BATCH_BLOCK; bi++) {
            let h = h_chunk(min(b0 + bi, b_last), t, k);
            acc0[bi] += w0 * h;
            acc1[bi] += w1 * h;
            acc2[bi] += w2 * h;
            acc3[bi] += w3 * h;
        }
    }
    for (var bi = 0u; bi < BATCH_BLOCK; bi++) {
        lstm_pointwise(t, b0 + bi, u0, acc0[bi]);
        lstm_pointwise(t, b0 + bi, u0 + 1u, acc1[bi]);
        lstm_pointwise(t, b0 + bi, u0 + 2u, acc2[bi]);
        lstm_pointwise(t, b0 + bi, u0 + 3u, acc3[bi]);
    }
}

fn lstm_pointwise(t: u32, b: u32, u: u32, recurrent: vec4<f32>) {
    let batch = params.batch;
    let hidden = params.hidden;
    let steps = params.steps;
    if (b >= batch || u >= hidden) {
        return;
    }
    let state_prev = (b * (steps + 1u) + t) * hidden + u;
    let state_next = state_prev + hidden;
    let gate_base = (b * steps + t) * 4u * hidden + u;
    let out_index = (b * steps + t) * hidden + u;
    if (t >= step_len(b)) {
        // Padded step: carry the state, output nothing, no gates.
        h_states[state_next] = h_states[state_prev];
        c_states[state_next] = c_states[state_prev];
        output[out_index] = 0.0;
        for (var q = 0u; q < 4u; q++) {
            gates[gate_base + q * hidden] = 0.0;
        }
        return;
    }
    let i = sigmoid_stable(xproj[gate_base] + recurrent.x);
    let f = sigmoid_stable(xproj[gate_base + hidden] + recurrent.y);
    let g = tanh_stable(xproj[gate_base + 2u * hidden] + recurrent.z);
    let o = sigmoid_stable(xproj[gate_base + 3u * hidden] + recurrent.w);
    let c = f * c_states[state_prev] + i * g;
    let h = o * tanh_stable(c);
    gates[gate_base] = i;
    gates[gate_base + hidden] = f;
    gates[gate_base + 2u * hidden] = g;
    gates[gate_base + 3u * hidden] = o;
    c_states[state_next] = c;
    h_states[state_next] = h;
    output[out_index] = h;
}

@compute @workgroup_size(WG_X, 1, 1)
fn lstm_cell_forward(@builtin(global_invocation_id) gid: vec3<u32>) {
    lstm_step(params.t, gid.y * BATCH_BLOCK, gid.x * 4u);
}

@compute @workgroup_size(SEQ_WG, 1, 1)
fn lstm_sequence_forward(@builtin(local_invocation_index) lid: u32) {
    let unit_blocks = div_ceil_u32(params.hidden, 4u);
    let blocks = unit_blocks * div_ceil_u32(params.batch, BATCH_BLOCK);
    for (var t = 0u; t < params.steps; t++) {
        for (var block = lid; block < blocks; block += SEQ_WG) {
            lstm_step(t, (block / unit_blocks) * BATCH_BLOCK, (block % unit_blocks) * 4u);
        }
        // Step t+1 reads h_t written by other invocations.
        storageBarrier();
    }
}

// dgates[b, t+1, j .. j+4] (clamped rows keep loads in bounds; j < 4H always).
fn dgates_chunk(b: u32, t: u32, j: u32) -> vec4<f32> {
    let base = (b * params.steps + t) * 4u * params.hidden + j;
    return vec4<f32>(dgates[base], dgates[base + 1u], dgates[base + 2u], dgates[base + 3u]);
}

// W_hh[j, u0 .. u0+4] for one row j: vec4 when aligned, else clamped scalars (the
// clamped units are never stored).
fn w_row_units(j: u32, u0: u32) -> vec4<f32> {
    let hidden = params.hidden;
    if (W_VEC4) {
        return w_hh4[(j * hidden + u0) / 4u];
    }
    let last = hidden - 1u;
    let row = j * hidden;
    return vec4<f32>(w_hh[row + min(u0, last)], w_hh[row + min(u0 + 1u, last)], w_hh[row + min(u0 + 2u, last)], w_hh[row + min(u0 + 3u, last)]);
}

@compute @workgroup_size(WG_X, 1, 1)
fn lstm_cell_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let batch = params.batch;
    let hidden = params.hidden;
    let u0 = gid.x * 4u;
    let b0 = gid.y * BATCH_BLOCK;
    let b_last = batch - 1u;
    let t = params.t;
    let next = params.next;
    // carried[bi] = (dgates[b0 + bi, t+1] W_hh)[u0 .. u0+4], bi < BATCH_BLOCK
    var carried = mat4x4<f32>();
    if (params.has_next != 0u) {
        let width = 4u * hidden;
        for (var j = 0u; j < width; j += 4u) {
            // Column c: W_hh[j + c, u0 .. u0+4], loaded once for all the block's rows.
            let w = mat4x4<f32>(w_row_units(j, u0), w_row_units(j + 1u, u0), w_row_units(j + 2u, u0), w_row_units(j + 3u, u0));
            for (var bi = 0u; bi < BATCH_BLOCK; bi++) {
                carried[bi] += w * dgates_chunk(min(b0 + bi, b_last), next, j);
            }
        }
    }
    for (var bi = 0u; bi < BATCH_BLOCK; bi++) {
        let b = b0 + bi;
        if (b >= batch) {
            break;
        }
        // Rows whose step t+1 was padded got no dgates there: dh is carried in dstate.
        let next_ran = params.has_next != 0u && next < step_len(b);
        for (var q = 0u; q < 4u; q++) {
            let u = u0 + q;
            if (u < hidden) {
                lstm_pointwise_backward(t, b, u, select(0.0, carried[bi][q], next_ran));
            }
        }
    }
}

fn lstm_pointwise_backward(t: u32, b: u32, u: u32, carried: f32) {
    let batch = params.batch;
    let hidden = params.hidden;
    let steps = params.steps;
    let dh_index = b * hidden + u;
    let dc_index = (batch + b) * hidden + u;
    let dh_carry = dstate[dh_index] + carried;
    if (params.pointwise == 0u) {
        dstate[dh_index] = dh_carry;
        return;
    }
    let gate_base = (b * steps + t) * 4u * hidden + u;
    if (t >= step_len(b)) {
        dstate[dh_index] = dh_carry;
        for (var q = 0u; q < 4u; q++) {
            dgates[gate_base + q * hidden] = 0.0;
        }
        return;
    }
    var dh = dh_carry;
    if (params.has_dy != 0u) {
        dh += dy[(b * steps + t) * hidden + u];
    }
    let i = saved_gates[gate_base];
    let f = saved_gates[gate_base + hidden];
    let g = saved_gates[gate_base + 2u * hidden];
    let o = saved_gates[gate_base + 3u * hidden];
    let state_prev = (b * (steps + 1u) + t) * hidden + u;
    let c_prev = saved_c[state_prev];
    let tanh_c = tanh_stable(saved_c[state_prev + hidden]);
    // h = o * tanh(c); c = f * c_prev + i * g
    let dc = dstate[dc_index] + dh * o * (1.0 - tanh_c * tanh_c);
    dgates[gate_base] = dc * g * i * (1.0 - i);
    dgates[gate_base + hidden] = dc * c_prev * f * (1.0 - f);
    dgates[gate_base + 2u * hidden] = dc * i * (1.0 - g * g);
    dgates[gate_base + 3u * hidden] = dh * tanh_c * o * (1.0 - o);
    dstate[dh_index] = 0.0;
    dstate[dc_index] = dc * f;
}
