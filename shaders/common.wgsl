// common.wgsl: helpers shared by every kernel family. Prepended to each family's file by
// src/gpu/pipeline.rs (the one place that does it), so no helper is copied twice.

// Numerically stable logistic function: never evaluates exp of a large positive number.
fn sigmoid_stable(x: f32) -> f32 {
    if (x >= 0.0) {
        return 1.0 / (1.0 + exp(-x));
    }
    let e = exp(x);
    return e / (1.0 + e);
}

// tanh through exp of a non-positive argument, so it neither overflows nor loses the sign.
fn tanh_stable(x: f32) -> f32 {
    let e = exp(-2.0 * abs(x));
    let t = (1.0 - e) / (1.0 + e);
    return select(-t, t, x >= 0.0);
}

// Number of groups of `size` needed to cover `count` items.
fn div_ceil_u32(count: u32, size: u32) -> u32 {
    return (count + size - 1u) / size;
}

// NaN test on the bits: drivers may compile with finite-math assumptions, under which
// `x != x` can be folded to false.
fn is_nan_f32(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}

// A quiet NaN built from bits, for results PyTorch defines as NaN (0/0 means, invalid
// rows): a literal 0.0 / 0.0 may be folded or rejected by the shader compiler.
fn nan_f32() -> f32 {
    return bitcast<f32>(0x7fc00000u);
}

// The most negative finite f32: the start of a running max. Unlike -inf it keeps
// exp(x - max) finite (0 for x = -inf) in every online-softmax update.
const F32_LOWEST: f32 = -3.40282347e38;

// Element index of a 1-D grid dispatched as (x, y) workgroups of `wg` invocations: more
// than 65535 workgroups of a long tensor spill into y.
fn flat_index(gid: vec3<u32>, num_workgroups: vec3<u32>, wg: u32) -> u32 {
    return gid.y * num_workgroups.x * wg + gid.x;
}

// Row handled by a workgroup of a one-workgroup-per-row dispatch, spilling into y past
// 65535 rows. workgroup_id is uniform, so a kernel may return on it before barriers.
fn row_of_workgroup(wid: vec3<u32>, num_workgroups: vec3<u32>) -> u32 {
    return wid.y * num_workgroups.x + wid.x;
}

// Finite test on the bits, for the same reason as is_nan_f32.
fn is_finite_f32(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}
