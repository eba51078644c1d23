// common_subgroup.wgsl: helpers of the families' subgroup sections, prepended after
// common.wgsl by src/gpu/pipeline.rs only where the device has subgroup operations in
// subgroups of a multiple of 8 lanes (the one place that does it).
//
// The recurrent step kernels share a layout: a group of 8 lanes holds 8 consecutive
// hidden units, one per lane, for a block of batch rows; each lane loads 1/8 of the rows'
// h_{t-1} (or dgates_{t+1}) and hands it round.

// Rows per workgroup of the subgroup kernels (batch rows of a recurrent step, rows of a
// matmul's output): 8, 16, 24 or 32.
override SG_ROWS: u32 = 32u;
// Invocations per workgroup, a multiple of 8.
override SG_WG: u32 = 32u;

// Adds `w` times the rows a group of 8 lanes shares to the accumulators: a_q for rows
// 4q .. 4q+4 of the workgroup's SG_ROWS, `share` being this lane's part (column g is row
// 8g + lane8, g < SG_ROWS / 8). SG_ROWS is a pipeline constant: the untaken blocks
// compile away. (Eight variables rather than an array: an array that the pointwise tail
// indexes would be kept in memory, the hot loop's accumulators with it.)
fn accumulate_shared_rows(
    a0: ptr<function, mat4x4<f32>>,
    a1: ptr<function, mat4x4<f32>>,
    a2: ptr<function, mat4x4<f32>>,
    a3: ptr<function, mat4x4<f32>>,
    a4: ptr<function, mat4x4<f32>>,
    a5: ptr<function, mat4x4<f32>>,
    a6: ptr<function, mat4x4<f32>>,
    a7: ptr<function, mat4x4<f32>>,
    share: mat4x4<f32>,
    lane0: u32,
    w: mat4x4<f32>,
) {
    *a0 += shuffled_rows_times4(share[0], lane0, 0u, w);
    *a1 += shuffled_rows_times4(share[0], lane0, 1u, w);
    if (SG_ROWS > 8u) {
        *a2 += shuffled_rows_times4(share[1], lane0, 2u, w);
        *a3 += shuffled_rows_times4(share[1], lane0, 3u, w);
    }
    if (SG_ROWS > 16u) {
        *a4 += shuffled_rows_times4(share[2], lane0, 4u, w);
        *a5 += shuffled_rows_times4(share[2], lane0, 5u, w);
    }
    if (SG_ROWS > 24u) {
        *a6 += shuffled_rows_times4(share[3], lane0, 6u, w);
        *a7 += shuffled_rows_times4(share[3], lane0, 7u, w);
    }
}

// Whether this lane's share holds group g of the workgroup's rows (g < SG_ROWS / 8): a
// share's loads past it are selected away, and so compiled away.
fn share_has_group(g: u32) -> bool {
    return 8u * g < SG_ROWS;
}

// Rows 4q .. 4q+4 of a block of rows shared by a group of 8 lanes (group g = q / 2 of 8
// rows; row 8g + j was loaded by lane lane0 + j into `rows`), each times `m`: column i of
// the result is m * row 4q + i.
fn shuffled_rows_times4(rows: vec4<f32>, lane0: u32, q: u32, m: mat4x4<f32>) -> mat4x4<f32> {
    let source = lane0 + 4u * (q % 2u);
    return mat4x4<f32>(
        m * subgroupShuffle(rows, source),
        m * subgroupShuffle(rows, source + 1u),
        m * subgroupShuffle(rows, source + 2u),
        m * subgroupShuffle(rows, source + 3u),
    );
}

// Turns a group of 8 lanes' per-unit values round: lane lane0 + j holds unit j of the
// group, with in column i 4 values (a cell's gates) of row i of a block of 4 rows. After
// the call lane8 = 4h + r holds row r and units 4h .. 4h+4: column q of the result is
// value q of those 4 units (one vec4 of each per-unit tensor, where H % 4 == 0).
fn units4_of_row(per_unit: mat4x4<f32>, lane0: u32, lane8: u32) -> mat4x4<f32> {
    let r = lane8 % 4u;
    let h = lane8 / 4u;
    // Column j: the values of unit 4h + j for row r.
    var by_unit: mat4x4<f32>;
    for (var j = 0u; j < 4u; j++) {
        let source = lane0 + 4u * h + j;
        let row0 = subgroupShuffle(per_unit[0], source);
        let row1 = subgroupShuffle(per_unit[1], source);
        let row2 = subgroupShuffle(per_unit[2], source);
        let row3 = subgroupShuffle(per_unit[3], source);
        by_unit[j] = select(select(row3, row2, r == 2u), select(row1, row0, r == 0u), r < 2u);
    }
    return transpose(by_unit);
}
