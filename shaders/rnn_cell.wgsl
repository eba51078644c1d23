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
//
// The step parameters, the bindings the three cells share, the launch overrides and the
// loads of h_{t-1}, W_hh and dgates_{t+1} (step_len, h_chunk, w_chunk, w_row_units, ...)
// and the loops around cell_step and cell_backward (sequence_forward, backward_step) are
// in common_recurrent.wgsl, prepended with GATES = GATE_COLUMNS = 1.

// For common_recurrent.wgsl: one row of W_hh and one column of dgates per unit.
const GATES: u32 = 1u;
const GATE_COLUMNS: u32 = 1u;

// Backward binding (its own entry point layout).
@group(0) @binding(12) var<storage, read> saved_h: array<f32>;         // [B, T+1, H]

// 0: tanh, 1: relu.
override NONLINEARITY: u32 = 0u;

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

// The forward of step t for batch rows b0 .. b0+BATCH_BLOCK and units u0 .. u0+4.
fn cell_step(t: u32, b0: u32, u0: u32) {
    let b_last = params.batch - 1u;
    let u_last = params.hidden - 1u;
    // acc[bi][q] = (h_{t-1}[b0 + bi] W_hh^T)[u0 + q]
    var acc = mat4x4<f32>();
    for (var k = 0u; k < params.hidden; k += 4u) {
        // Rows of units past H are clamped (those units are never stored).
        let w = transpose(mat4x4<f32>(
            w_chunk(min(u0, u_last), k),
            w_chunk(min(u0 + 1u, u_last), k),
            w_chunk(min(u0 + 2u, u_last), k),
            w_chunk(min(u0 + 3u, u_last), k),
        ));
        for (var bi = 0u; bi < BATCH_BLOCK; bi++) {
            acc[bi] += w * h_chunk(min(b0 + bi, b_last), t, k);
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
    cell_step(params.t, gid.y * BATCH_BLOCK, gid.x * 4u);
}

@compute @workgroup_size(SEQ_WG, 1, 1)
fn rnn_sequence_forward(@builtin(local_invocation_index) lid: u32) {
    sequence_forward(lid);
}

// dgates[b, next, j .. j+4], zero past H.
fn dgates_next_chunk(b: u32, j: u32) -> vec4<f32> {
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

@compute @workgroup_size(WG_X, 1, 1)
fn rnn_cell_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    backward_step(gid.y * BATCH_BLOCK, gid.x * 4u);
}

// The backward of (b, u) at step t, given the recurrent part of dh (`carried`).
fn cell_backward(t: u32, b: u32, u: u32, carried: f32) {
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

@group(0) @binding(18) var<storage, read> saved_h4: array<vec4<f32>>;         // saved_h

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
    let w_u0 = min(u0, hidden - 4u);
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
        let w = transpose(w_rows_k4(w_u0, k));
        let share = h_prev_share(b0, lane8, params.t, k);
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
            let w = w_rows_k4(k, w_u0);
            let share = dgates_next_share(b0, lane8, k);
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
