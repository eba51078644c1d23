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

// Index of this invocation in a 1-D problem spread over a 2-D grid of workgroups. The
// launchers fold long problems into y because one dimension holds at most 65535
// workgroups; `wg_size` is the family's workgroup size (an override, so passed in).
fn flat_index(wid: vec3<u32>, num_wg: vec3<u32>, lid: u32, wg_size: u32) -> u32 {
    return (wid.y * num_wg.x + wid.x) * wg_size + lid;
}
