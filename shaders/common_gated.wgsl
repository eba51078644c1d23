// common_gated.wgsl: the forward step of the gated cells (lstm_cell, gru_cell), on both
// kernel paths: the two families' copies differed only in the pointwise part they call.
// Prepended after common_recurrent.wgsl to those two families only, by
// src/gpu/pipeline.rs; its part from the section line below on is compiled only together
// with the family's.
//
// A unit's G gate rows of W_hh are one mat4x4 (w_block, w_gates_k4, zero past G), so one
// product with h_{t-1} gives the recurrent part of all of the unit's gates. (rnn_cell,
// with one gate, packs 4 units into a matrix instead and has its own step.)
//
// Each family defines:
//   fn cell_pointwise(t, b, u, recurrent: vec4<f32>)      the rest of the forward of
//       (b, u) at step t from the recurrent part of its gates (component q: gate q),
//       through the scalar views; nothing past B or H
//   fn cell_pointwise_units4(t, b, u0, recurrent: mat4x4<f32>)   (after its section
//       line) the same for units u0 .. u0+4 of row b through the vec4 views (column q:
//       gate q of the 4 units)

// The forward of step t for batch rows b0 .. b0+BATCH_BLOCK and units u0 .. u0+4: an
// invocation loads the 4 units' gate rows once per 4 steps of k (4 mat4x4) and multiplies
// them by h_{t-1} of each of its rows (the cell_step common_recurrent.wgsl's
// sequence_forward and the families' *_cell_forward run).
fn cell_step(t: u32, b0: u32, u0: u32) {
    let batch = params.batch;
    let hidden = params.hidden;
    let b_last = batch - 1u;
    let u_last = hidden - 1u;
    // acc_q[bi] = the G gate pre-activations (recurrent part) of unit u0 + q, row b0 + bi
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
        cell_pointwise(t, b0 + bi, u0, acc0[bi]);
        cell_pointwise(t, b0 + bi, u0 + 1u, acc1[bi]);
        cell_pointwise(t, b0 + bi, u0 + 2u, acc2[bi]);
        cell_pointwise(t, b0 + bi, u0 + 3u, acc3[bi]);
    }
}

// ==== subgroup kernels ====
// gated_forward_subgroup: step t of the forward for H % 4 == 0, laid out like matmul.wgsl's
// matmul_forward_subgroup: a workgroup owns SG_ROWS batch rows x SG_WG units, an
// invocation one unit (its G gate rows of W_hh, loaded once per 4 steps of k for all the
// rows) and every row of the workgroup. Each group of 8 lanes loads the rows' h_{t-1}
// once, SG_ROWS / 8 rows per lane, and hands them round with subgroupShuffle. For the
// pointwise part the gates are shuffled round once more, so that an invocation takes one
// row and 4 units: one vec4 of every tensor. The family's entry point passes its
// built-ins.
fn gated_forward_subgroup(wid: vec3<u32>, lane: u32, subgroup_size: u32, subgroup: u32) {
    let t = params.t;
    let lane8 = lane & 7u;
    let lane0 = lane & ~7u;
    // Units follow the subgroup lanes, so that a group of 8 lanes holds 8 consecutive units.
    let unit0 = wid.x * SG_WG + subgroup * subgroup_size + lane0;
    let u = unit0 + lane8;
    let b0 = wid.y * SG_ROWS;
    let w_unit = min(u, params.hidden - 1u);
    // acc_q[i] = the recurrent part of the G gates of unit u, row b0 + 4q + i.
    var acc0 = mat4x4<f32>();
    var acc1 = mat4x4<f32>();
    var acc2 = mat4x4<f32>();
    var acc3 = mat4x4<f32>();
    var acc4 = mat4x4<f32>();
    var acc5 = mat4x4<f32>();
    var acc6 = mat4x4<f32>();
    var acc7 = mat4x4<f32>();
    for (var k = 0u; k < params.hidden; k += 4u) {
        let share = h_prev_share(b0, lane8, t, k);
        let w = w_gates_k4(w_unit, k);
        accumulate_shared_rows(&acc0, &acc1, &acc2, &acc3, &acc4, &acc5, &acc6, &acc7, share, lane0, w);
    }
    // Turned round, each invocation takes one row and 4 units of every block of 4 rows:
    // lane8 = 4h + r takes row r and units 4h .. 4h+4 of the group's 8.
    let r = lane8 % 4u;
    let u4 = unit0 + 4u * (lane8 / 4u);
    let blocks = array<mat4x4<f32>, 8>(acc0, acc1, acc2, acc3, acc4, acc5, acc6, acc7);
    for (var q = 0u; q < SG_ROWS / 4u; q++) {
        cell_pointwise_units4(t, b0 + 4u * q + r, u4, units4_of_row(blocks[q], lane0, lane8));
    }
}
