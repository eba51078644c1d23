// rnn_cell.wgsl: one Elman RNN time step (PyTorch's nn.RNN, nonlinearity tanh or relu)
// forward and backward, and the same step looped over a whole sequence in one workgroup.
//
// Letters: B batch, T time, H hidden.
//
// rnn_cell_forward      at step t, for each (b, u) with t < len[b]:
//     h_t = act(xproj[b, t] + h_{t-1}[b] W_hh^T)    (xproj = x W_ih^T + b_ih + b_hh, hoisted)
//     output[b, t] = h_t;  a padded step carries h and writes output 0.
//   Saves h_states [B, T+1, H] (slot 0 = h0): act' is a function of h_t for both
//   nonlinearities (tanh: 1 - h^2; relu: h > 0), so nothing else is kept.
// rnn_sequence_forward  every step in one dispatch of one workgroup (small B * H).
// rnn_cell_backward     at step t (t = T-1 .. 0), for each (b, u) with t < len[b]:
//     dh = dstate[b, u] + (dgates[b, t+1] W_hh)[u] + dy[b, t, u]
//     dgates[b, t, u] = dh * act'(h_t);  dstate[b, u] = 0
//   A padded step writes 0 and carries dstate; a last dispatch with pointwise = 0 forms
//   dh0. After the loop: dW_hh = sum_t dgates_t^T h_{t-1}, dW_ih = dgates^T x,
//   db_ih = db_hh = sum dgates, dx = dgates W_ih.
//
// An invocation owns BATCH_BLOCK (1 to 4) batch rows x 4 units: per 4 steps of k it
// loads a 4 x 4 block of W_hh once and multiplies it by h_{t-1} of each of its rows
// (BATCH_BLOCK chosen by the launcher as in lstm_cell.wgsl).

struct Params {
    batch: u32,
    steps: u32,
    hidden: u32,
    t: u32,
    has_lengths: u32,
    has_dy: u32,
    has_next: u32,
    next: u32,
    pointwise: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> xproj: array<f32>;            // [B, T, H]
@group(0) @binding(1) var<storage, read> w_hh: array<f32>;             // [H, H]
@group(0) @binding(2) var<storage, read> w_hh4: array<vec4<f32>>;      // the same, as vec4
@group(0) @binding(3) var<storage, read> lengths: array<u32>;          // [B]
@group(0) @binding(4) var<storage, read_write> h_states: array<f32>;   // [B, T+1, H]
@group(0) @binding(7) var<storage, read_write> output: array<f32>;     // [B, T, H]
@group(0) @binding(8) var<uniform> params: Params;

// Backward bindings (their own entry point layout).
@group(0) @binding(9) var<storage, read_write> dgates: array<f32>;     // [B, T, H]
@group(0) @binding(10) var<storage, read> dy: array<f32>;              // [B, T, H]
@group(0) @binding(12) var<storage, read> saved_h: array<f32>;         // [B, T+1, H]
@group(0) @binding(13) var<storage, read_write> dstate: array<f32>;    // [B, H]

override WG_X: u32 = 32u;
override W_VEC4: bool = false;
override SEQ_WG: u32 = 64u;
// Batch rows per invocation (1 to 4).
override BATCH_BLOCK: u32 = 4u;
// 0: tanh, 1: relu.
override NONLINEARITY: u32 = 0u;

fn step_len(b: u32) -> u32 {
    if (params.has_lengths != 0u) {
        return min(lengths[b], params.steps);
    }
    return params.steps;
}

fn h_chunk(b: u32, t: u32, k: u32) -> vec4<f32> {
    let hidden = params.hidden;
    let base = (b * (params.steps + 1u) + t) * hidden;
    let last = hidden - 1u;
    // Elements past H are zeroed so a partial last chunk adds nothing.
    let keep = vec4<f32>(vec4<u32>(k, k + 1u, k + 2u, k + 3u) < vec4<u32>(hidden));
    return keep * vec4<f32>(
        h_states[base + min(k, last)],
        h_states[base + min(k + 1u, last)],
        h_states[base + min(k + 2u, last)],
        h_states[base + min(k + 3u, last)],
    );
}

fn w_chunk(row: u32, k: u32) -> vec4<f32> {
    let hidden = params.hidden;
    let at = min(row, hidden - 1u) * hidden;
    if (W_VEC4) {
        return w_hh4[(at + k) / 4u];
    }
    let last = hidden - 1u;
    return vec4<f32>(w_hh[at + min(k, last)], w_hh[at + min(k + 1u, last)], w_hh[at + min(k + 2u, last)], w_hh[at + min(k + 3u, last)]);
}

fn activate(x: f32) -> f32 {
    return activate4(vec4<f32>(x)).x;
}

fn activate4(x: vec4<f32>) -> vec4<f32> {
    if (NONLINEARITY == 1u) {
        return max(x, vec4<f32>());
    }
    return tanh_stable4(x);
}

// d act / d pre-activation, from the activation's output h.
fn activation_slope(h: f32) -> f32 {
    return activation_slope4(vec4<f32>(h)).x;
}

fn activation_slope4(h: vec4<f32>) -> vec4<f32> {
    if (NONLINEARITY == 1u) {
        return select(vec4<f32>(), vec4<f32>(1.0), h > vec4<f32>());
    }
    return 1.0 - h * h;
}

fn rnn_step(t: u32, b0: u32, u0: u32) {
    let b_last = params.batch - 1u;
    // acc[bi][q] = (h_{t-1}[b0 + bi] W_hh^T)[u0 + q]
    var acc = mat4x4<f32>();
    for (var k = 0u; k < params.hidden; k += 4u) {
        let w_block = transpose(mat4x4<f32>(w_chunk(u0, k), w_chunk(u0 + 1u, k), w_chunk(u0 + 2u, k), w_chunk(u0 + 3u, k)));
        for (var bi = 0u; bi < BATCH_BLOCK; bi++) {
            acc[bi] += w_block * h_chunk(min(b0 + bi, b_last), t, k);
        }
    }
    for (var bi = 0u; bi < BATCH_BLOCK; bi++) {
        for (var q = 0u; q < 4u; q++) {
            rnn_pointwise(t, b0 + bi, u0 + q, acc[bi][q]);
        }
    }
}

fn rnn_pointwise(t: u32, b: u32, u: u32, recurrent: f32) {
    let hidden = params.hidden;
    let steps = params.steps;
    if (b >= params.batch || u >= hidden) {
        return;
    }
    let state_prev = (b * (steps + 1u) + t) * hidden + u;
    let out_index = (b * steps + t) * hidden + u;
    if (t >= step_len(b)) {
        h_states[state_prev + hidden] = h_states[state_prev];
        output[out_index] = 0.0;
        return;
    }
    let h = activate(xproj[out_index] + recurrent);
    h_states[state_prev + hidden] = h;
    output[out_index] = h;
}

@compute @workgroup_size(WG_X, 1, 1)
fn rnn_cell_forward(@builtin(global_invocation_id) gid: vec3<u32>) {
    rnn_step(params.t, gid.y * BATCH_BLOCK, gid.x * 4u);
}

@compute @workgroup_size(SEQ_WG, 1, 1)
fn rnn_sequence_forward(@builtin(local_invocation_index) lid: u32) {
    let unit_blocks = div_ceil_u32(params.hidden, 4u);
    let blocks = unit_blocks * div_ceil_u32(params.batch, BATCH_BLOCK);
    for (var t = 0u; t < params.steps; t++) {
        for (var block = lid; block < blocks; block += SEQ_WG) {
            rnn_step(t, (block / unit_blocks) * BATCH_BLOCK, (block % unit_blocks) * 4u);
        }
        // Step t+1 reads h_t written by other invocations.
        storageBarrier();
    }
}

// dgates[b, next, j .. j+4], zero past H.
fn dgates_chunk(b: u32, j: u32) -> vec4<f32> {
    let hidden = params.hidden;
    let base = (b * params.steps + params.next) * hidden;
    var chunk = vec4<f32>();
    for (var i = 0u; i < 4u; i++) {
        if (j + i < hidden) {
            chunk[i] = dgates[base + j + i];
        }
    }
    return chunk;
}

// W_hh[j, u0 .. u0+4] (rows and units clamped; the clamped ones meet zeros or are not stored).
fn w_row_units(j: u32, u0: u32) -> vec4<f32> {
    let hidden = params.hidden;
    let last = hidden - 1u;
    let at = min(j, last) * hidden;
    if (W_VEC4) {
        return w_hh4[(at + u0) / 4u];
    }
    return vec4<f32>(w_hh[at + min(u0, last)], w_hh[at + min(u0 + 1u, last)], w_hh[at + min(u0 + 2u, last)], w_hh[at + min(u0 + 3u, last)]);
}

@compute @workgroup_size(WG_X, 1, 1)
fn rnn_cell_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let batch = params.batch;
    let hidden = params.hidden;
    let u0 = gid.x * 4u;
    let b0 = gid.y * BATCH_BLOCK;
    let b_last = batch - 1u;
    // carried[bi] = (dgates[b0 + bi, next] W_hh)[u0 .. u0+4], bi < BATCH_BLOCK
    var carried = mat4x4<f32>();
    if (params.has_next != 0u) {
        for (var j = 0u; j < hidden; j += 4u) {
            let w = mat4x4<f32>(w_row_units(j, u0), w_row_units(j + 1u, u0), w_row_units(j + 2u, u0), w_row_units(j + 3u, u0));
            for (var bi = 0u; bi < BATCH_BLOCK; bi++) {
                carried[bi] += w * dgates_chunk(min(b0 + bi, b_last), j);
            }
        }
    }
    for (var bi = 0u; bi < BATCH_BLOCK; bi++) {
        let b = b0 + bi;
        if (b >= batch) {
            break;
        }
        let next_ran = params.has_next != 0u && params.next < step_len(b);
        for (var q = 0u; q < 4u; q++) {
            let u = u0 + q;
            if (u < hidden) {
                rnn_pointwise_backward(params.t, b, u, select(0.0, carried[bi][q], next_ran));
            }
        }
    }
}

fn rnn_pointwise_backward(t: u32, b: u32, u: u32, carried: f32) {
    let hidden = params.hidden;
    let steps = params.steps;
    let dh_index = b * hidden + u;
    let dh_carry = dstate[dh_index] + carried;
    if (params.pointwise == 0u) {
        dstate[dh_index] = dh_carry;
        return;
    }
    let index = (b * steps + t) * hidden + u;
    if (t >= step_len(b)) {
        dstate[dh_index] = dh_carry;
        dgates[index] = 0.0;
        return;
    }
    var dh = dh_carry;
    if (params.has_dy != 0u) {
        dh += dy[index];
    }
    let h = saved_h[(b * (steps + 1u) + t + 1u) * hidden + u];
    dgates[index] = dh * activation_slope(h);
    dstate[dh_index] = 0.0;
}

// ==== subgroup kernels ====
// Compiled only where the device has subgroup operations in subgroups of a multiple of 8
// lanes (src/gpu/pipeline.rs leaves this section out elsewhere), for H % 4 == 0; the
// layout of lstm_cell.wgsl's subgroup kernels (helpers in common_subgroup.wgsl).
//
// rnn_cell_forward_subgroup   step t of rnn_cell_forward: a workgroup owns SG_ROWS batch
//     rows x SG_WG invocations, an invocation 4 units (4 rows of W_hh, loaded once per 4
//     steps of k for all the rows) of every row; each group of 8 lanes loads the rows'
//     h_{t-1} once and shuffles it round. The pointwise part is on vec4s of the 4 units.
// rnn_cell_backward_subgroup  step t of rnn_cell_backward the same way round (4 columns
//     of W_hh per invocation, the rows of dgates[b, t+1] shared).
// Both bind only vec4 views of the per-unit tensors.

@group(0) @binding(14) var<storage, read_write> h_states4: array<vec4<f32>>;  // h_states
@group(0) @binding(15) var<storage, read_write> dgates4: array<vec4<f32>>;    // dgates
@group(0) @binding(16) var<storage, read> dy4: array<vec4<f32>>;              // dy
@group(0) @binding(18) var<storage, read> saved_h4: array<vec4<f32>>;         // saved_h
@group(0) @binding(19) var<storage, read_write> dstate4: array<vec4<f32>>;    // dstate
@group(0) @binding(20) var<storage, read> xproj4: array<vec4<f32>>;           // xproj
@group(0) @binding(23) var<storage, read_write> output4: array<vec4<f32>>;    // output

// The rnn_cell_forward / rnn_cell_backward pointwise part of row b and units u0 .. u0+4
// at step t, from the recurrent part (`recurrent`, over the 4 units).
fn rnn_pointwise_units4(t: u32, b: u32, u0: u32, recurrent: vec4<f32>) {
    let hidden = params.hidden;
    let steps = params.steps;
    if (b >= params.batch || u0 >= hidden) {
        return;
    }
    let prev = ((b * (steps + 1u) + t) * hidden + u0) / 4u;
    let next = prev + hidden / 4u;
    let at = ((b * steps + t) * hidden + u0) / 4u;
    if (t >= step_len(b)) {
        h_states4[next] = h_states4[prev];
        output4[at] = vec4<f32>();
        return;
    }
    let h = activate4(xproj4[at] + recurrent);
    h_states4[next] = h;
    output4[at] = h;
}

fn rnn_pointwise_backward_units4(t: u32, b: u32, u0: u32, carried: vec4<f32>) {
    let hidden = params.hidden;
    let steps = params.steps;
    if (b >= params.batch || u0 >= hidden) {
        return;
    }
    let dh_at = (b * hidden + u0) / 4u;
    // Rows whose step t+1 was padded got no dgates there: dh is carried in dstate.
    let next_ran = params.has_next != 0u && params.next < step_len(b);
    let dh_carry = dstate4[dh_at] + select(vec4<f32>(), carried, next_ran);
    let at = ((b * steps + t) * hidden + u0) / 4u;
    if (params.pointwise == 0u) {
        dstate4[dh_at] = dh_carry;
    } else if (t >= step_len(b)) {
        dstate4[dh_at] = dh_carry;
        dgates4[at] = vec4<f32>();
    } else {
        var dh = dh_carry;
        if (params.has_dy != 0u) {
            dh += dy4[at];
        }
        let h = saved_h4[((b * (steps + 1u) + t + 1u) * hidden + u0) / 4u];
        dgates4[at] = dh * activation_slope4(h);
        dstate4[dh_at] = vec4<f32>();
    }
}

// h_{t-1}[b, k .. k+4] (b clamped into the batch).
fn h_prev_k4(b: u32, k: u32) -> vec4<f32> {
    let row = min(b, params.batch - 1u);
    return h_states4[((row * (params.steps + 1u) + params.t) * params.hidden + k) / 4u];
}

// dgates[b, t+1, k .. k+4] (b clamped into the batch).
fn dgates_next_k4(b: u32, k: u32) -> vec4<f32> {
    let row = min(b, params.batch - 1u);
    return dgates4[((row * params.steps + params.next) * params.hidden + k) / 4u];
}

@compute @workgroup_size(SG_WG, 1, 1)
fn rnn_cell_forward_subgroup(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let hidden = params.hidden;
    let u0 = (wid.x * SG_WG + local) * 4u;
    let b0 = wid.y * SG_ROWS;
    let lane8 = lane & 7u;
    let lane0 = lane & ~7u;
    let w_at = (min(u0, hidden - 4u) * hidden) / 4u;
    let h4 = hidden / 4u;
    // acc_q[i] = (h_{t-1}[b0 + 4q + i] W_hh^T)[u0 .. u0+4]
    var acc0 = mat4x4<f32>();
    var acc1 = mat4x4<f32>();
    var acc2 = mat4x4<f32>();
    var acc3 = mat4x4<f32>();
    var acc4 = mat4x4<f32>();
    var acc5 = mat4x4<f32>();
    var acc6 = mat4x4<f32>();
    var acc7 = mat4x4<f32>();
    for (var k = 0u; k < hidden; k += 4u) {
        // Column j: W_hh[u0 .. u0+4, k + j] (units past H are never stored).
        let at = w_at + k / 4u;
        let w = transpose(mat4x4<f32>(w_hh4[at], w_hh4[at + h4], w_hh4[at + 2u * h4], w_hh4[at + 3u * h4]));
        let share = mat4x4<f32>(
            h_prev_k4(b0 + lane8, k),
            select(vec4<f32>(), h_prev_k4(b0 + 8u + lane8, k), share_has_group(1u)),
            select(vec4<f32>(), h_prev_k4(b0 + 16u + lane8, k), share_has_group(2u)),
            select(vec4<f32>(), h_prev_k4(b0 + 24u + lane8, k), share_has_group(3u)),
        );
        accumulate_shared_rows(&acc0, &acc1, &acc2, &acc3, &acc4, &acc5, &acc6, &acc7, share, lane0, w);
    }
    let blocks = array<mat4x4<f32>, 8>(acc0, acc1, acc2, acc3, acc4, acc5, acc6, acc7);
    for (var q = 0u; q < SG_ROWS / 4u; q++) {
        for (var i = 0u; i < 4u; i++) {
            rnn_pointwise_units4(params.t, b0 + 4u * q + i, u0, blocks[q][i]);
        }
    }
}

@compute @workgroup_size(SG_WG, 1, 1)
fn rnn_cell_backward_subgroup(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let hidden = params.hidden;
    let u0 = (wid.x * SG_WG + local) * 4u;
    let b0 = wid.y * SG_ROWS;
    let lane8 = lane & 7u;
    let lane0 = lane & ~7u;
    let w_u0 = min(u0, hidden - 4u);
    let h4 = hidden / 4u;
    // acc_q[i] = (dgates[b0 + 4q + i, t+1] W_hh)[u0 .. u0+4]
    var acc0 = mat4x4<f32>();
    var acc1 = mat4x4<f32>();
    var acc2 = mat4x4<f32>();
    var acc3 = mat4x4<f32>();
    var acc4 = mat4x4<f32>();
    var acc5 = mat4x4<f32>();
    var acc6 = mat4x4<f32>();
    var acc7 = mat4x4<f32>();
    if (params.has_next != 0u) {
        for (var k = 0u; k < hidden; k += 4u) {
            // Column j: W_hh[k + j, u0 .. u0+4].
            let at = (k * hidden + w_u0) / 4u;
            let w = mat4x4<f32>(w_hh4[at], w_hh4[at + h4], w_hh4[at + 2u * h4], w_hh4[at + 3u * h4]);
            let share = mat4x4<f32>(
                dgates_next_k4(b0 + lane8, k),
                select(vec4<f32>(), dgates_next_k4(b0 + 8u + lane8, k), share_has_group(1u)),
                select(vec4<f32>(), dgates_next_k4(b0 + 16u + lane8, k), share_has_group(2u)),
                select(vec4<f32>(), dgates_next_k4(b0 + 24u + lane8, k), share_has_group(3u)),
            );
            accumulate_shared_rows(&acc0, &acc1, &acc2, &acc3, &acc4, &acc5, &acc6, &acc7, share, lane0, w);
        }
    }
    let blocks = array<mat4x4<f32>, 8>(acc0, acc1, acc2, acc3, acc4, acc5, acc6, acc7);
    for (var q = 0u; q < SG_ROWS / 4u; q++) {
        for (var i = 0u; i < 4u; i++) {
            rnn_pointwise_backward_units4(params.t, b0 + 4u * q + i, u0, blocks[q][i]);
        }
    }
}
