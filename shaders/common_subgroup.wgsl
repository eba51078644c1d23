// common_subgroup.wgsl: helpers of the families' subgroup sections, prepended after
// common.wgsl by src/gpu/pipeline.rs only where the device has subgroup operations in
// subgroups of a multiple of 8 lanes (the one place that does it).
//
// The recurrent step kernels share a layout: a group of 8 lanes holds 8 consecutive
// hidden units, one per lane, for a block of batch rows; each lane loads 1/8 of the rows'
// h_{t-1} (or dgates_{t+1}) and hands it round.

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
