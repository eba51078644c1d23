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

// sigmoid_stable of each component.
fn sigmoid_stable4(x: vec4<f32>) -> vec4<f32> {
    // exp of -|x| only; for x < 0 the same e / (1 + e) as sigmoid_stable.
    let e = exp(-abs(x));
    return select(e / (1.0 + e), 1.0 / (1.0 + e), x >= vec4<f32>());
}

// tanh_stable of each component.
fn tanh_stable4(x: vec4<f32>) -> vec4<f32> {
    let e = exp(-2.0 * abs(x));
    let t = (1.0 - e) / (1.0 + e);
    return select(-t, t, x >= vec4<f32>());
}

// Number of groups of `size` needed to cover `count` items.
fn div_ceil_u32(count: u32, size: u32) -> u32 {
    return (count + size - 1u) / size;
}

// NaN test on the bits: drivers may compile with finite-math assumptions, under which
// `x != x` folds to false (and Mesa's GL path folds `select(x, 0.0, x < 0.0)` into
// max(x, 0), dropping a NaN). Integer compares are never folded that way.
fn is_nan_f32(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}

// A quiet NaN built from bits, for results PyTorch defines as NaN (0/0 means, invalid
// rows): a literal 0.0 / 0.0 may be folded or rejected by the shader compiler. The bits
// sit in a `var` so that the bitcast runs at run time: a NaN produced by a constant
// expression is a shader-creation error under the WGSL spec (Tint rejects it; naga
// does not). See shaders/README.md.
fn nan_f32() -> f32 {
    var bits = 0x7fc00000u;
    return bitcast<f32>(bits);
}

// The most negative finite f32: the start of a running max. Unlike -inf it keeps
// exp(x - max) finite (0 for x = -inf) in every online-softmax update.
// Written in hex because it is exact there: the decimal -3.40282347e38 lies just past
// the f32 range, which the WGSL spec makes an error (Tint rejects it).
const F32_LOWEST: f32 = -0x1.fffffep+127f;

// flat_index from the global invocation id: the same index for a 1-D grid dispatched as
// (x, y) workgroups of `wg` invocations (more than 65535 workgroups spill into y).
fn flat_index_gid(gid: vec3<u32>, num_workgroups: vec3<u32>, wg: u32) -> u32 {
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

// Index of this invocation in a 1-D problem spread over a 2-D grid of workgroups. The
// launchers fold long problems into y because one dimension holds at most 65535
// workgroups; `wg_size` is the family's workgroup size (an override, so passed in).
fn flat_index(wid: vec3<u32>, num_wg: vec3<u32>, lid: u32, wg_size: u32) -> u32 {
    return (wid.y * num_wg.x + wid.x) * wg_size + lid;
}

// ---- Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", 2011)
// A counter-based generator: the output is a pure function of (counter, key), so any
// element's random bits can be recomputed anywhere (dropout's backward regenerates its
// mask instead of saving it). WGSL has no u64, so the 32x32 -> 64-bit product is built
// from 16-bit halves. src/reference/elementwise.rs holds the same generator, checked
// against Random123's known-answer vectors, so GPU and CPU masks agree bit for bit.

// (high, low) words of the 64-bit product a * b.
fn mul_hi_lo_u32(a: u32, b: u32) -> vec2<u32> {
    let a_lo = a & 0xFFFFu;
    let a_hi = a >> 16u;
    let b_lo = b & 0xFFFFu;
    let b_hi = b >> 16u;
    let ll = a_lo * b_lo;
    let lh = a_lo * b_hi;
    let hl = a_hi * b_lo;
    // Bits 16..48 of the product, before the carries of the low halves are moved up.
    let mid = (ll >> 16u) + (lh & 0xFFFFu) + (hl & 0xFFFFu);
    let hi = a_hi * b_hi + (lh >> 16u) + (hl >> 16u) + (mid >> 16u);
    return vec2<u32>(hi, a * b);
}

// Ten rounds of Philox4x32 with the Weyl key schedule; four independent u32 words out.
fn philox4x32_10(counter: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
    var ctr = counter;
    var k = key;
    for (var round = 0u; round < 10u; round++) {
        if (round > 0u) {
            k += vec2<u32>(0x9E3779B9u, 0xBB67AE85u);
        }
        let p0 = mul_hi_lo_u32(0xD2511F53u, ctr.x);
        let p1 = mul_hi_lo_u32(0xCD9E8D57u, ctr.z);
        ctr = vec4<u32>(p1.x ^ ctr.y ^ k.x, p1.y, p0.x ^ ctr.w ^ k.y, p0.y);
    }
    return ctr;
}

// A uniform f32 in [0, 1) from the top 24 bits of a word: exact, so CPU and GPU agree.
fn uniform_from_bits(bits: u32) -> f32 {
    return f32(bits >> 8u) * 5.9604645e-8; // 2^-24
}

// The scratch of workgroup_tree_sum. A workgroup variable counts against an entry point's
// workgroup memory only where that entry point uses it, so kernels that never sum pay
// nothing for it. (A pointer to workgroup memory cannot be a function argument in naga.)
var<workgroup> tree_scratch: array<f32, 256>;

// The fixed-order sum over a workgroup: invocation `lid` of `count` (a power of two, at most
// 256) puts its `value` in tree_scratch[lid], then pairs are combined at strides count / 2,
// count / 4, ..., 1 (l += l + s), so the order depends only on count, never on
// scheduling: bitwise reproducible. Every invocation gets the total. Holds barriers: every
// invocation of the workgroup must call it, from uniform control flow.
fn workgroup_tree_sum(lid: u32, count: u32, value: f32) -> f32 {
    tree_scratch[lid] = value;
    workgroupBarrier();
    for (var stride = count / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            tree_scratch[lid] += tree_scratch[lid + stride];
        }
        workgroupBarrier();
    }
    let total = tree_scratch[0];
    // The next use of the scratch must not overwrite it before every invocation read it.
    workgroupBarrier();
    return total;
}
