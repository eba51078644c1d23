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

// NaN test on the bits: WGSL lets compilers assume floats are never NaN, and Mesa's GL
// path does fold `select(x, 0.0, x < 0.0)` into max(x, 0), which drops a NaN. Integer
// compares are never folded that way.
fn is_nan_bits(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7FFFFFFFu) > 0x7F800000u;
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
