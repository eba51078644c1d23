// gru_cell.wgsl: one GRU time step in PyTorch's form (nn.GRU, gate order r, z, n)
// forward and backward, and the same step looped over a whole sequence in one workgroup.
//
// Letters: B batch, T time, H hidden. Gate q of unit u is row q * H + u of W_hh and
// column q * H + u of xproj.
//
// gru_cell_forward      at step t, for each (b, u) with t < len[b]:
//     (hr, hz, hn) = h_{t-1}[b] W_hh^T + b_hh           (xproj = x W_ih^T + b_ih, hoisted)
//     r = sigmoid(x_r + hr);  z = sigmoid(x_z + hz);  n = tanh(x_n + r * hn)
//     h_t = (1 - z) * n + z * h_{t-1};  output[b, t] = h_t
//   (PyTorch's n puts r inside, on (W_hn h + b_hn); the chapter's textbook formula
//   differs, nn.GRU is the contract.) A padded step carries h and writes output 0.
//   Saves gates [B, T, 4H] = (r, z, n, hn) and h_states [B, T+1, H] (slot 0 = h0).
// gru_sequence_forward  every step in one dispatch of one workgroup (small B * H).
// gru_cell_backward     at step t (t = T-1 .. 0), for each (b, u) with t < len[b]:
//     dh = dstate[b, u] + (dgh[b, t+1] W_hh)[u] + dy[b, t, u]
//     dn = dh (1 - z);  dz = dh (h_{t-1} - n);  dn_pre = dn (1 - n^2)
//     dgates[b, t] = (dr_pre, dz_pre, dn_pre, dhn)
//       with dr_pre = dn_pre hn r (1 - r), dz_pre = dz z (1 - z), dhn = dn_pre r
//     dstate[b, u] = dh z      (the direct path h_{t-1} -> h_t)
//   so d xproj = (dr_pre, dz_pre, dn_pre) and the gradient of h W_hh^T + b_hh is
//   dgh = (dr_pre, dz_pre, dhn): columns 0..2H and 3H..4H of dgates. A padded step
//   writes 0 and carries dstate; a last dispatch with pointwise = 0 forms dh0.
//
// An invocation owns BATCH_BLOCK (1 to 4) batch rows x 4 units; the three gate rows of a
// unit are one mat4x4 (fourth row zero), loaded once per 4 steps of k for all the rows,
// and BATCH_BLOCK is chosen by the launcher as in lstm_cell.wgsl.
//
// The step parameters, the bindings the three cells share, the launch overrides and the
// loads of h_{t-1}, W_hh and dgates_{t+1} (step_len, h_chunk, w_chunk, w_block,
// w_row_units, ...) and the loops around cell_step and cell_backward (sequence_forward,
// backward_step) are in common_recurrent.wgsl, prepended with GATES = 3 and
// GATE_COLUMNS = 4; the forward step of both paths (cell_step and its vec4 form,
// around this file's cell_pointwise and cell_pointwise_units4), the same as LSTM's, in
// common_gated.wgsl.

// For common_recurrent.wgsl: 3 gate rows of W_hh per unit (r, z, n), 4 columns of gates
// and dgates (r, z, n, hn).
const GATES: u32 = 3u;
const GATE_COLUMNS: u32 = 4u;

@group(0) @binding(5) var<storage, read> b_hh: array<f32>;             // [3H]
@group(0) @binding(6) var<storage, read_write> gates: array<f32>;      // [B, T, 4H]

// Backward bindings (their own entry point layout).
@group(0) @binding(11) var<storage, read> saved_gates: array<f32>;     // [B, T, 4H]
@group(0) @binding(12) var<storage, read> saved_h: array<f32>;         // [B, T+1, H]

// The forward of (b, u) at step t from h's part of its gates (recurrent = (h W_hh^T)
// for r, z, n; common_gated.wgsl's cell_step calls it).
fn cell_pointwise(t: u32, b: u32, u: u32, recurrent: vec4<f32>) {
    let hidden = params.hidden;
    let steps = params.steps;
    if (b >= params.batch || u >= hidden) {
        return;
    }
    let state_prev = (b * (steps + 1u) + t) * hidden + u;
    let x_base = (b * steps + t) * 3u * hidden + u;
    let gate_base = (b * steps + t) * 4u * hidden + u;
    let out_index = (b * steps + t) * hidden + u;
    let h_prev = h_states[state_prev];
    if (t >= step_len(b)) {
        h_states[state_prev + hidden] = h_prev;
        output[out_index] = 0.0;
        for (var q = 0u; q < 4u; q++) {
            gates[gate_base + q * hidden] = 0.0;
        }
        return;
    }
    let x = vec4<f32>(xproj[x_base], xproj[x_base + hidden], xproj[x_base + 2u * hidden], 0.0);
    let hh = recurrent + vec4<f32>(b_hh[u], b_hh[hidden + u], b_hh[2u * hidden + u], 0.0);
    let cell = gru_cell_forward_values(
        mat4x4<f32>(vec4<f32>(x.x), vec4<f32>(x.y), vec4<f32>(x.z), vec4<f32>()),
        mat4x4<f32>(vec4<f32>(hh.x), vec4<f32>(hh.y), vec4<f32>(hh.z), vec4<f32>()),
        vec4<f32>(h_prev),
    );
    for (var q = 0u; q < 4u; q++) {
        gates[gate_base + q * hidden] = cell.gates[q].x;
    }
    h_states[state_prev + hidden] = cell.h.x;
    output[out_index] = cell.h.x;
}

// One step of up to 4 units (one per component): the saved gates (columns r, z, n,
// hn = W_hn h + b_hn) and h_t.
struct GruValues {
    gates: mat4x4<f32>,
    h: vec4<f32>,
}

// From x's part (x W_ih^T + b_ih) and h's part (h W_hh^T + b_hh) of the gates (columns
// r, z, n; the fourth unused) and h_{t-1}:
// r = sigmoid(x_r + hr), z = sigmoid(x_z + hz), n = tanh(x_n + r hn), h = (1 - z) n + z h_prev.
fn gru_cell_forward_values(x: mat4x4<f32>, hh: mat4x4<f32>, h_prev: vec4<f32>) -> GruValues {
    let r = sigmoid_stable4(x[0] + hh[0]);
    let z = sigmoid_stable4(x[1] + hh[1]);
    let hn = hh[2];
    let n = tanh_stable4(x[2] + r * hn);
    return GruValues(mat4x4<f32>(r, z, n, hn), (1.0 - z) * n + z * h_prev);
}

// From dh arriving at step t, the saved gates (columns r, z, n, hn) and h_{t-1}: the
// gates' gradients (columns dr_pre, dz_pre, dn_pre, dhn) and the direct part of dh_{t-1}.
fn gru_cell_grads(dh: vec4<f32>, gates: mat4x4<f32>, h_prev: vec4<f32>) -> CellGrads {
    let r = gates[0];
    let z = gates[1];
    let n = gates[2];
    let hn = gates[3];
    // h = (1 - z) n + z h_prev;  n = tanh(x_n + r hn)
    let dn_pre = dh * (1.0 - z) * (1.0 - n * n);
    return CellGrads(
        mat4x4<f32>(dn_pre * hn * r * (1.0 - r), dh * (h_prev - n) * z * (1.0 - z), dn_pre, dn_pre * r),
        dh * z,
    );
}

// The gradients of one step of up to 4 units (one per component): the 4 columns of
// dgates and what the step hands dh_{t-1} directly.
struct CellGrads {
    dgates: mat4x4<f32>,
    dh_prev: vec4<f32>,
}

@compute @workgroup_size(WG_X, 1, 1)
fn gru_cell_forward(@builtin(global_invocation_id) gid: vec3<u32>) {
    cell_step(params.t, gid.y * BATCH_BLOCK, gid.x * 4u);
}

@compute @workgroup_size(SEQ_WG, 1, 1)
fn gru_sequence_forward(@builtin(local_invocation_index) lid: u32) {
    sequence_forward(lid);
}

// dgh[b, next, j .. j+4] for rows j of W_hh (0 <= j < 3H): dgh is dgates without its
// third quarter (dn_pre), i.e. row j >= 2H reads column j + H. Rows past 3H read 0.
fn dgates_next_chunk(b: u32, j: u32) -> vec4<f32> {
    let hidden = params.hidden;
    let base = (b * params.steps + params.next) * 4u * hidden;
    var chunk = vec4<f32>();
    for (var i = 0u; i < 4u; i++) {
        let row = j + i;
        if (row < 3u * hidden) {
            chunk[i] = dgates[base + select(row, row + hidden, row >= 2u * hidden)];
        }
    }
    return chunk;
}

@compute @workgroup_size(WG_X, 1, 1)
fn gru_cell_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
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
    let gates = mat4x4<f32>(
        vec4<f32>(saved_gates[gate_base]),
        vec4<f32>(saved_gates[gate_base + hidden]),
        vec4<f32>(saved_gates[gate_base + 2u * hidden]),
        vec4<f32>(saved_gates[gate_base + 3u * hidden]),
    );
    let grads = gru_cell_grads(vec4<f32>(dh), gates, vec4<f32>(saved_h[(b * (steps + 1u) + t) * hidden + u]));
    for (var q = 0u; q < 4u; q++) {
        dgates[gate_base + q * hidden] = grads.dgates[q].x;
    }
    dstate[dh_index] = grads.dh_prev.x;
}

// ==== subgroup kernels ====
// Compiled only where the device has subgroup operations in subgroups of a multiple of 8
// lanes (src/gpu/pipeline.rs leaves this section out elsewhere), for H % 4 == 0; the
// layout of lstm_cell.wgsl's subgroup kernels (helpers in common_subgroup.wgsl).
//
// gru_cell_forward_subgroup   step t of gru_cell_forward (common_gated.wgsl's
//     gated_forward_subgroup): a workgroup owns SG_ROWS batch rows x SG_WG units, an
//     invocation one unit (its 3 gate rows of W_hh) and every row; each group of 8 lanes
//     loads the rows' h_{t-1} once and shuffles it round, then turns the gates round so
//     that an invocation takes one row and 4 units for the pointwise part.
// gru_cell_backward_subgroup  step t of gru_cell_backward: an invocation owns 4 units
//     (4 columns of W_hh) of every row, the rows of dgh[b, t+1] are loaded once per 8 lanes
//     and shuffled, and the pointwise part is on vec4s of the 4 units.
// Both bind only vec4 views of the per-unit tensors.

@group(0) @binding(17) var<storage, read> saved_gates4: array<vec4<f32>>;     // saved_gates
@group(0) @binding(18) var<storage, read> saved_h4: array<vec4<f32>>;         // saved_h
@group(0) @binding(21) var<storage, read> b_hh4: array<vec4<f32>>;            // b_hh
@group(0) @binding(22) var<storage, read_write> gates4: array<vec4<f32>>;     // gates

// cell_pointwise of row b and units u0 .. u0+4, from `recurrent` (column q: gate q's part
// h W_hh^T for the 4 units; q = 3 unused).
fn cell_pointwise_units4(t: u32, b: u32, u0: u32, recurrent: mat4x4<f32>) {
    let hidden = params.hidden;
    let steps = params.steps;
    let h4 = hidden / 4u;
    if (b >= params.batch || u0 >= hidden) {
        return;
    }
    let prev = ((b * (steps + 1u) + t) * hidden + u0) / 4u;
    let next = prev + h4;
    let x_at = ((b * steps + t) * 3u * hidden + u0) / 4u;
    let gate_at = ((b * steps + t) * 4u * hidden + u0) / 4u;
    let out_at = ((b * steps + t) * hidden + u0) / 4u;
    let h_prev = h_states4[prev];
    if (t >= step_len(b)) {
        // Padded step: carry the state, output nothing, no gates.
        h_states4[next] = h_prev;
        output4[out_at] = vec4<f32>();
        for (var q = 0u; q < 4u; q++) {
            gates4[gate_at + q * h4] = vec4<f32>();
        }
        return;
    }
    let bias = u0 / 4u;
    let x = mat4x4<f32>(xproj4[x_at], xproj4[x_at + h4], xproj4[x_at + 2u * h4], vec4<f32>());
    let hh = recurrent + mat4x4<f32>(b_hh4[bias], b_hh4[bias + h4], b_hh4[bias + 2u * h4], vec4<f32>());
    let cell = gru_cell_forward_values(x, hh, h_prev);
    for (var q = 0u; q < 4u; q++) {
        gates4[gate_at + q * h4] = cell.gates[q];
    }
    h_states4[next] = cell.h;
    output4[out_at] = cell.h;
}

@compute @workgroup_size(SG_WG, 1, 1)
fn gru_cell_forward_subgroup(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_size) subgroup_size: u32,
    @builtin(subgroup_id) subgroup: u32,
) {
    gated_forward_subgroup(wid, lane, subgroup_size, subgroup);
}

// The backward of rows b0 .. b0+4 and units u0 .. u0+4 (carried[i][q] is row b0 + i,
// unit u0 + q) at step t, as cell_backward, on vec4s of the 4 units.
fn gru_pointwise_backward_rows4(t: u32, b0: u32, u0: u32, carried: mat4x4<f32>) {
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
            let gates = mat4x4<f32>(
                saved_gates4[gate_at],
                saved_gates4[gate_at + h4],
                saved_gates4[gate_at + 2u * h4],
                saved_gates4[gate_at + 3u * h4],
            );
            let grads = gru_cell_grads(dh, gates, saved_h4[((b * (steps + 1u) + t) * hidden + u0) / 4u]);
            for (var q = 0u; q < 4u; q++) {
                dgates4[gate_at + q * h4] = grads.dgates[q];
            }
            dstate4[dh_at] = grads.dh_prev;
        }
    }
}

@compute @workgroup_size(SG_WG, 1, 1)
fn gru_cell_backward_subgroup(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let u0 = (wid.x * SG_WG + local) * 4u;
    let b0 = wid.y * SG_ROWS;
    let lane8 = lane & 7u;
    let lane0 = lane & ~7u;
    // acc_q[i] = (dgh[b0 + 4q + i, t+1] W_hh)[u0 .. u0+4]
    var acc0 = mat4x4<f32>();
    var acc1 = mat4x4<f32>();
    var acc2 = mat4x4<f32>();
    var acc3 = mat4x4<f32>();
    var acc4 = mat4x4<f32>();
    var acc5 = mat4x4<f32>();
    var acc6 = mat4x4<f32>();
    var acc7 = mat4x4<f32>();
    if (params.has_next != 0u) {
        let hidden = params.hidden;
        let w_u0 = min(u0, hidden - 4u);
        for (var j = 0u; j < 3u * hidden; j += 4u) {
            // Column c: W_hh[j + c, u0 .. u0+4] (units past H are never stored).
            let w = w_rows_k4(j, w_u0);
            // dgh[.., next, j .. j+4]: dgh is dgates without its third quarter, so rows
            // from 2H on read column j + H (H % 4 == 0 keeps a chunk in one part).
            let share = dgates_next_share(b0, lane8, select(j, j + hidden, j >= 2u * hidden));
            accumulate_shared_rows(&acc0, &acc1, &acc2, &acc3, &acc4, &acc5, &acc6, &acc7, share, lane0, w);
        }
    }
    let blocks = array<mat4x4<f32>, 8>(acc0, acc1, acc2, acc3, acc4, acc5, acc6, acc7);
    for (var q = 0u; q < SG_ROWS / 4u; q++) {
        gru_pointwise_backward_rows4(params.t, b0 + 4u * q, u0, blocks[q]);
    }
}
