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
//
// The step parameters, the bindings the three cells share (xproj, W_hh, lengths,
// h_states, output, dgates, dy, dstate and their vec4 views), the launch overrides and
// the loads of h_{t-1}, W_hh and dgates_{t+1} (step_len, h_chunk, w_block, w_row_units,
// h_prev_share, w_gates_k4, ...) and the loops of the sequence kernel and of the
// backward's recurrent part (sequence_forward, backward_step, around this file's
// cell_backward) are in common_recurrent.wgsl, prepended with GATES = 4; the forward
// step of both paths (cell_step and its vec4 form, around this file's
// cell_pointwise and cell_pointwise_units4), the same for GRU, in common_gated.wgsl.

// For common_recurrent.wgsl: 4 gate rows of W_hh per unit (i, f, g, o), 4 columns of
// gates and dgates.
const GATES: u32 = 4u;
const GATE_COLUMNS: u32 = 4u;

@group(0) @binding(5) var<storage, read_write> c_states: array<f32>;   // [B, T+1, H]
@group(0) @binding(6) var<storage, read_write> gates: array<f32>;      // [B, T, 4H]

// Backward bindings (their own entry point layout).
@group(0) @binding(11) var<storage, read> saved_gates: array<f32>;     // [B, T, 4H]
@group(0) @binding(12) var<storage, read> saved_c: array<f32>;         // [B, T+1, H]

// What the forward of (b, u) at step t gives h_states (written by the caller, through
// its own view of the buffer): h_t, or, at a padded step (ran false), "copy h_{t-1}".
struct HiddenUpdate {
    ran: bool,
    h: f32,
}

// The forward of (b, u) at step t from the recurrent part of its 4 gate pre-activations:
// writes the gates, c_t and the output; h_t is returned (see HiddenUpdate).
fn lstm_pointwise(t: u32, b: u32, u: u32, recurrent: vec4<f32>) -> HiddenUpdate {
    let hidden = params.hidden;
    let steps = params.steps;
    let state_prev = (b * (steps + 1u) + t) * hidden + u;
    let state_next = state_prev + hidden;
    let gate_base = (b * steps + t) * 4u * hidden + u;
    let out_index = (b * steps + t) * hidden + u;
    if (t >= step_len(b)) {
        // Padded step: carry the state, output nothing, no gates.
        c_states[state_next] = c_states[state_prev];
        output[out_index] = 0.0;
        for (var q = 0u; q < 4u; q++) {
            gates[gate_base + q * hidden] = 0.0;
        }
        return HiddenUpdate(false, 0.0);
    }
    let x = vec4<f32>(xproj[gate_base], xproj[gate_base + hidden], xproj[gate_base + 2u * hidden], xproj[gate_base + 3u * hidden]);
    let pre = recurrent + x;
    let cell = lstm_cell_forward_values(
        mat4x4<f32>(vec4<f32>(pre.x), vec4<f32>(pre.y), vec4<f32>(pre.z), vec4<f32>(pre.w)),
        vec4<f32>(c_states[state_prev]),
    );
    gates[gate_base] = cell.gates[0].x;
    gates[gate_base + hidden] = cell.gates[1].x;
    gates[gate_base + 2u * hidden] = cell.gates[2].x;
    gates[gate_base + 3u * hidden] = cell.gates[3].x;
    c_states[state_next] = cell.c.x;
    output[out_index] = cell.h.x;
    return HiddenUpdate(true, cell.h.x);
}

// One step of up to 4 units (one per component): the gates after their nonlinearities
// (columns i, f, g, o), c_t and h_t.
struct CellValues {
    gates: mat4x4<f32>,
    c: vec4<f32>,
    h: vec4<f32>,
}

// From the gate pre-activations (columns i, f, g, o) and c_{t-1}:
// c_t = f * c_{t-1} + i * g, h_t = o * tanh(c_t).
fn lstm_cell_forward_values(pre: mat4x4<f32>, c_prev: vec4<f32>) -> CellValues {
    let i = sigmoid_stable4(pre[0]);
    let f = sigmoid_stable4(pre[1]);
    let g = tanh_stable4(pre[2]);
    let o = sigmoid_stable4(pre[3]);
    let c = f * c_prev + i * g;
    return CellValues(mat4x4<f32>(i, f, g, o), c, o * tanh_stable4(c));
}

// lstm_pointwise of (b, u), with h_t written through the scalar view of h_states
// (common_gated.wgsl's cell_step calls it).
fn cell_pointwise(t: u32, b: u32, u: u32, recurrent: vec4<f32>) {
    if (b >= params.batch || u >= params.hidden) {
        return;
    }
    let state_prev = (b * (params.steps + 1u) + t) * params.hidden + u;
    let update = lstm_pointwise(t, b, u, recurrent);
    if (update.ran) {
        h_states[state_prev + params.hidden] = update.h;
    } else {
        h_states[state_prev + params.hidden] = h_states[state_prev];
    }
}

@compute @workgroup_size(WG_X, 1, 1)
fn lstm_cell_forward(@builtin(global_invocation_id) gid: vec3<u32>) {
    cell_step(params.t, gid.y * BATCH_BLOCK, gid.x * 4u);
}

@compute @workgroup_size(SEQ_WG, 1, 1)
fn lstm_sequence_forward(@builtin(local_invocation_index) lid: u32) {
    sequence_forward(lid);
}

// dgates[b, next, j .. j+4] (j < 4H always: no row past the end).
fn dgates_next_chunk(b: u32, j: u32) -> vec4<f32> {
    let base = (b * params.steps + params.next) * 4u * params.hidden + j;
    return vec4<f32>(dgates[base], dgates[base + 1u], dgates[base + 2u], dgates[base + 3u]);
}

@compute @workgroup_size(WG_X, 1, 1)
fn lstm_cell_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    backward_step(gid.y * BATCH_BLOCK, gid.x * 4u);
}

// lstm_pointwise_backward of (b, u), with its gate gradients written through the scalar
// view of dgates.
fn cell_backward(t: u32, b: u32, u: u32, carried: f32) {
    let grads = lstm_pointwise_backward(t, b, u, carried);
    if (grads.write) {
        let hidden = params.hidden;
        let gate_base = (b * params.steps + t) * 4u * hidden + u;
        for (var gate = 0u; gate < 4u; gate++) {
            dgates[gate_base + gate * hidden] = grads.values[gate];
        }
    }
}

// What the backward of (b, u) gives dgates[b, t, q * H + u] (written by the caller,
// through its own view of the buffer): `values` for q = 0..3 when `write`.
struct GateGradients {
    write: bool,
    values: vec4<f32>,
}

// The backward of (b, u) at step t given the recurrent part of dh (`carried`): updates
// dstate and returns the gate gradients (see GateGradients).
fn lstm_pointwise_backward(t: u32, b: u32, u: u32, carried: f32) -> GateGradients {
    let batch = params.batch;
    let hidden = params.hidden;
    let steps = params.steps;
    let dh_index = b * hidden + u;
    let dc_index = (batch + b) * hidden + u;
    let dh_carry = dstate[dh_index] + carried;
    if (params.pointwise == 0u) {
        dstate[dh_index] = dh_carry;
        return GateGradients(false, vec4<f32>());
    }
    if (t >= step_len(b)) {
        dstate[dh_index] = dh_carry;
        return GateGradients(true, vec4<f32>());
    }
    var dh = dh_carry;
    if (params.has_dy != 0u) {
        dh += dy[(b * steps + t) * hidden + u];
    }
    let gate_base = (b * steps + t) * 4u * hidden + u;
    let state_prev = (b * (steps + 1u) + t) * hidden + u;
    let grads = lstm_cell_grads(
        vec4<f32>(dh),
        vec4<f32>(dstate[dc_index]),
        mat4x4<f32>(
            vec4<f32>(saved_gates[gate_base]),
            vec4<f32>(saved_gates[gate_base + hidden]),
            vec4<f32>(saved_gates[gate_base + 2u * hidden]),
            vec4<f32>(saved_gates[gate_base + 3u * hidden]),
        ),
        vec4<f32>(saved_c[state_prev]),
        vec4<f32>(saved_c[state_prev + hidden]),
    );
    dstate[dh_index] = 0.0;
    dstate[dc_index] = grads.dc_prev.x;
    return GateGradients(true, vec4<f32>(grads.dgates[0].x, grads.dgates[1].x, grads.dgates[2].x, grads.dgates[3].x));
}

// The gradients of one step of up to 4 units (one per component): column q of dgates is
// gate q's (i, f, g, o), dc_prev what the step hands dc_{t-1}.
struct CellGrads {
    dgates: mat4x4<f32>,
    dc_prev: vec4<f32>,
}

// From dh and dc arriving at step t, the saved gates (columns i, f, g, o), c_{t-1} and c_t:
// h = o * tanh(c), c = f * c_prev + i * g.
fn lstm_cell_grads(dh: vec4<f32>, dc_in: vec4<f32>, gates: mat4x4<f32>, c_prev: vec4<f32>, c: vec4<f32>) -> CellGrads {
    let i = gates[0];
    let f = gates[1];
    let g = gates[2];
    let o = gates[3];
    let tanh_c = tanh_stable4(c);
    let dc = dc_in + dh * o * (1.0 - tanh_c * tanh_c);
    return CellGrads(
        mat4x4<f32>(dc * g * i * (1.0 - i), dc * c_prev * f * (1.0 - f), dc * i * (1.0 - g * g), dh * tanh_c * o * (1.0 - o)),
        dc * f,
    );
}

// ==== subgroup kernels ====
// Compiled only where the device has subgroup operations in subgroups of a multiple of 8
// lanes (src/gpu/pipeline.rs leaves this section out elsewhere).
//
// lstm_cell_forward_subgroup   step t of lstm_cell_forward for H % 4 == 0, laid out like
//     matmul.wgsl's matmul_forward_subgroup (common_gated.wgsl's gated_forward_subgroup):
//     a workgroup owns SG_ROWS batch rows x SG_WG units, an invocation one unit (its 4
//     gate rows of W_hh) and every row of the workgroup, whose h_{t-1} each group of 8
//     lanes loads once and hands round with subgroupShuffle; then an invocation takes one
//     row and 4 units for the pointwise part: one vec4 of every tensor.
// lstm_cell_backward_subgroup  step t of lstm_cell_backward the same way round, for
//     H % 4 == 0: an invocation owns 4 units (4 columns of W_hh, one vec4 of every
//     per-unit tensor) of every row of the workgroup, and the rows of dgates[b, t+1] are
//     loaded once per group of 8 lanes and shuffled.
// Both bind only vec4 views of the per-unit tensors (the forward reads one slot of
// h_states while writing another).

@group(0) @binding(21) var<storage, read_write> c_states4: array<vec4<f32>>;  // c_states
@group(0) @binding(22) var<storage, read_write> gates4: array<vec4<f32>>;     // gates
@group(0) @binding(17) var<storage, read> saved_gates4: array<vec4<f32>>;     // saved_gates
@group(0) @binding(18) var<storage, read> saved_c4: array<vec4<f32>>;         // saved_c

// lstm_pointwise of row b and units u0 .. u0+4 (H % 4 == 0: one vec4 of each tensor),
// from `recurrent` (column q: gate q's recurrent part for the 4 units).
fn cell_pointwise_units4(t: u32, b: u32, u0: u32, recurrent: mat4x4<f32>) {
    let hidden = params.hidden;
    let steps = params.steps;
    let h4 = hidden / 4u;
    if (b >= params.batch || u0 >= hidden) {
        return;
    }
    let prev = ((b * (steps + 1u) + t) * hidden + u0) / 4u;
    let next = prev + h4;
    let gate_at = ((b * steps + t) * 4u * hidden + u0) / 4u;
    let out_at = ((b * steps + t) * hidden + u0) / 4u;
    if (t >= step_len(b)) {
        // Padded step: carry the state, output nothing, no gates.
        h_states4[next] = h_states4[prev];
        c_states4[next] = c_states4[prev];
        output4[out_at] = vec4<f32>();
        for (var q = 0u; q < 4u; q++) {
            gates4[gate_at + q * h4] = vec4<f32>();
        }
        return;
    }
    let pre = recurrent + mat4x4<f32>(xproj4[gate_at], xproj4[gate_at + h4], xproj4[gate_at + 2u * h4], xproj4[gate_at + 3u * h4]);
    let cell = lstm_cell_forward_values(pre, c_states4[prev]);
    for (var q = 0u; q < 4u; q++) {
        gates4[gate_at + q * h4] = cell.gates[q];
    }
    c_states4[next] = cell.c;
    h_states4[next] = cell.h;
    output4[out_at] = cell.h;
}

@compute @workgroup_size(SG_WG, 1, 1)
fn lstm_cell_forward_subgroup(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_size) subgroup_size: u32,
    @builtin(subgroup_id) subgroup: u32,
) {
    gated_forward_subgroup(wid, lane, subgroup_size, subgroup);
}

// The backward of rows b0 .. b0+4 and units u0 .. u0+4 (carried[i][q] is row b0 + i,
// unit u0 + q) at step t, as lstm_pointwise_backward, through the vec4 views: H % 4 == 0
// here, so each row's 4 units are one vec4 of every tensor.
fn lstm_pointwise_backward_rows4(t: u32, b0: u32, u0: u32, carried: mat4x4<f32>) {
    let hidden = params.hidden;
    let steps = params.steps;
    let h4 = hidden / 4u;
    if (u0 >= hidden) {
        return;
    }
    for (var i = 0u; i < 4u; i++) {
        let b = b0 + i;
        if (b >= params.batch) {
            break;
        }
        let dh_at = (b * hidden + u0) / 4u;
        let dc_at = dh_at + params.batch * h4;
        // Rows whose step t+1 was padded got no dgates there: dh is carried in dstate.
        let next_ran = params.has_next != 0u && params.next < step_len(b);
        let dh_carry = dstate4[dh_at] + select(vec4<f32>(), carried[i], next_ran);
        let gate_at = ((b * steps + t) * 4u * hidden + u0) / 4u;
        if (params.pointwise == 0u) {
            dstate4[dh_at] = dh_carry;
        } else if (t >= step_len(b)) {
            dstate4[dh_at] = dh_carry;
            for (var q = 0u; q < 4u; q++) {
                dgates4[gate_at + q * h4] = vec4<f32>();
            }
        } else {
            var dh = dh_carry;
            if (params.has_dy != 0u) {
                dh += dy4[((b * steps + t) * hidden + u0) / 4u];
            }
            let state_at = ((b * (steps + 1u) + t) * hidden + u0) / 4u;
            let gates = mat4x4<f32>(
                saved_gates4[gate_at],
                saved_gates4[gate_at + h4],
                saved_gates4[gate_at + 2u * h4],
                saved_gates4[gate_at + 3u * h4],
            );
            let grads = lstm_cell_grads(dh, dstate4[dc_at], gates, saved_c4[state_at], saved_c4[state_at + h4]);
            for (var q = 0u; q < 4u; q++) {
                dgates4[gate_at + q * h4] = grads.dgates[q];
            }
            dstate4[dh_at] = vec4<f32>();
            dstate4[dc_at] = grads.dc_prev;
        }
    }
}

@compute @workgroup_size(SG_WG, 1, 1)
fn lstm_cell_backward_subgroup(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let u0 = (wid.x * SG_WG + local) * 4u;
    let b0 = wid.y * SG_ROWS;
    let lane8 = lane & 7u;
    let lane0 = lane & ~7u;
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
        let width = 4u * params.hidden;
        let w_u0 = min(u0, params.hidden - 4u);
        for (var j = 0u; j < width; j += 4u) {
            // Column c: W_hh[j + c, u0 .. u0+4] (units past H are never stored).
            let w = w_rows_k4(j, w_u0);
            let share = dgates_next_share(b0, lane8, j);
            accumulate_shared_rows(&acc0, &acc1, &acc2, &acc3, &acc4, &acc5, &acc6, &acc7, share, lane0, w);
        }
    }
    let blocks = array<mat4x4<f32>, 8>(acc0, acc1, acc2, acc3, acc4, acc5, acc6, acc7);
    for (var q = 0u; q < SG_ROWS / 4u; q++) {
        lstm_pointwise_backward_rows4(params.t, b0 + 4u * q, u0, blocks[q]);
    }
}
