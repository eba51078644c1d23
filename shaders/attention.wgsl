// attention.wgsl: one decoder step of attention over a source sequence, fused (scores,
// masked softmax, context), and its backward.
//
// Letters: B batch, S source length, A score width (additive: attention units, dot: the
// query/key size), Dv value size.
//
// attention_forward, per batch row b (one workgroup per row):
//     additive (Bahdanau):  score[s] = v . tanh(query[b] + keys[b, s])
//         with query = W1 q + b1 (per step) and keys = W2 k + b2 (once per sequence),
//         both matmuls outside this kernel. (The chapter's V has a bias; it shifts every
//         score equally, so the softmax ignores it and it gets no gradient.)
//     dot (Luong dot, and general with query = q W_a):  score[s] = query[b] . keys[b, s]
//     weights[b, s] = softmax over s < len[b] of score (0 at s >= len[b])
//     context[b]    = sum_s weights[b, s] values[b, s]
//   Saves nothing beyond its outputs: the backward reads weights and recomputes tanh.
// attention_backward_scores, per row b:
//     dweights[s] = grad_context[b] . values[b, s] (+ grad_weights[b, s])
//     dscore[b, s] = weights[s] (dweights[s] - sum_s' weights[s'] dweights[s'])
//     grad_values[b, s] (+)= weights[s] grad_context[b]
// attention_backward_query_keys, per row b, from dscore:
//     additive: dpre[s, a] = dscore[s] v[a] (1 - tanh^2);  grad_query[b, a] = sum_s dpre
//               grad_keys[b, s, a] (+)= dpre;  grad_v_rows[b, a] (+)= sum_s dscore[s] tanh
//     dot:      grad_query[b] = sum_s dscore[s] keys[b, s];  grad_keys[b, s] (+)= dscore[s] query[b]
//   (+)= accumulates over decoder steps when `accumulate` is set (keys and values are
//   shared by every step); grad_v_rows keeps one row per b so no two workgroups write the
//   same element, and the caller sums its rows. All sums run in a fixed order: no atomics.
//
// Reductions over s (max, sum) go through per-invocation partials in workgroup memory
// combined by invocation 0 in order: two barriers instead of a barrier per tree level,
// which a software rasteriser pays dearly for.

struct Params {
    batch: u32,
    source: u32,
    width: u32,
    value_width: u32,
    has_lengths: u32,
    has_grad_weights: u32,
    accumulate: u32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read> query: array<f32>;            // [B, A]
@group(0) @binding(1) var<storage, read> keys: array<f32>;             // [B, S, A]
@group(0) @binding(2) var<storage, read> v: array<f32>;                // [A] (additive)
@group(0) @binding(3) var<storage, read> values: array<f32>;           // [B, S, Dv]
@group(0) @binding(4) var<storage, read> lengths: array<u32>;          // [B]
@group(0) @binding(5) var<storage, read_write> weights: array<f32>;    // [B, S]
@group(0) @binding(6) var<storage, read_write> context: array<f32>;    // [B, Dv]
@group(0) @binding(7) var<uniform> params: Params;

@group(0) @binding(8) var<storage, read> saved_weights: array<f32>;    // [B, S]
@group(0) @binding(9) var<storage, read> grad_context: array<f32>;     // [B, Dv]
@group(0) @binding(10) var<storage, read> grad_weights: array<f32>;    // [B, S]
@group(0) @binding(11) var<storage, read_write> dscore: array<f32>;    // [B, S]
@group(0) @binding(12) var<storage, read_write> grad_values: array<f32>; // [B, S, Dv]
@group(0) @binding(13) var<storage, read_write> grad_query: array<f32>;  // [B, A]
@group(0) @binding(14) var<storage, read_write> grad_keys: array<f32>;   // [B, S, A]
@group(0) @binding(15) var<storage, read_write> grad_v_rows: array<f32>; // [B, A]
@group(0) @binding(16) var<storage, read> saved_dscore: array<f32>;    // [B, S]

override WG: u32 = 64u;
// Source positions the workgroup can hold (S rounded up by the launcher).
override MAX_S: u32 = 64u;
// 0: additive (Bahdanau), 1: dot.
override SCORE: u32 = 0u;

var<workgroup> row: array<f32, MAX_S>;
var<workgroup> partial: array<vec2<f32>, WG>;
var<workgroup> total: vec2<f32>;

fn source_len(b: u32) -> u32 {
    if (params.has_lengths != 0u) {
        return min(lengths[b], params.source);
    }
    return params.source;
}

fn score(b: u32, s: u32) -> f32 {
    let width = params.width;
    let q = b * width;
    let k = (b * params.source + s) * width;
    var sum = 0.0;
    for (var a = 0u; a < width; a++) {
        if (SCORE == 1u) {
            sum += query[q + a] * keys[k + a];
        } else {
            sum += v[a] * tanh_stable(query[q + a] + keys[k + a]);
        }
    }
    return sum;
}

@compute @workgroup_size(WG, 1, 1)
fn attention_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let b = wg.x;
    let len = source_len(b);
    for (var s = lid; s < len; s += WG) {
        row[s] = score(b, s);
    }
    softmax_row(b, lid, len);
    // context[b, d] = sum_s w[s] values[b, s, d], in order of s.
    let dv = params.value_width;
    for (var d = lid; d < dv; d += WG) {
        var sum = 0.0;
        for (var s = 0u; s < len; s++) {
            sum += row[s] * values[(b * params.source + s) * dv + d];
        }
        context[b * dv + d] = sum;
    }
}

// Turns the scores in row[0 .. len] into the softmax weights, in row and in weights[b]
// (0 past len); ends with a barrier, so every invocation may read row.
fn softmax_row(b: u32, lid: u32, len: u32) {
    // The partial max of this invocation's positions.
    var local_max = -3.0e38;
    for (var s = lid; s < len; s += WG) {
        local_max = max(local_max, row[s]);
    }
    partial[lid] = vec2<f32>(local_max, 0.0);
    workgroupBarrier();
    if (lid == 0u) {
        var m = -3.0e38;
        for (var i = 0u; i < WG; i++) {
            m = max(m, partial[i].x);
        }
        total = vec2<f32>(m, 0.0);
    }
    workgroupBarrier();
    let row_max = total.x;
    var local_sum = 0.0;
    for (var s = lid; s < len; s += WG) {
        let e = exp(row[s] - row_max);
        row[s] = e;
        local_sum += e;
    }
    partial[lid] = vec2<f32>(0.0, local_sum);
    workgroupBarrier();
    if (lid == 0u) {
        var sum = 0.0;
        for (var i = 0u; i < WG; i++) {
            sum += partial[i].y;
        }
        total = vec2<f32>(row_max, sum);
    }
    workgroupBarrier();
    let inv_sum = 1.0 / total.y;
    for (var s = lid; s < params.source; s += WG) {
        var w = 0.0;
        if (s < len) {
            w = row[s] * inv_sum;
            row[s] = w;
        }
        weights[b * params.source + s] = w;
    }
    workgroupBarrier();
}

@compute @workgroup_size(WG, 1, 1)
fn attention_backward_scores(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let b = wg.x;
    let source = params.source;
    let dv = params.value_width;
    let len = source_len(b);
    // dweights[s] into row.
    for (var s = lid; s < len; s += WG) {
        var dw = 0.0;
        let at = (b * source + s) * dv;
        for (var d = 0u; d < dv; d++) {
            dw += grad_context[b * dv + d] * values[at + d];
        }
        row[s] = dw;
    }
    dscore_from_row(b, lid, len);
    // grad_values[b, s, d] (+)= w[s] grad_context[b, d]; masked positions get 0.
    for (var i = lid; i < source * dv; i += WG) {
        let s = i / dv;
        let d = i % dv;
        let index = b * source * dv + i;
        var g = saved_weights[b * source + s] * grad_context[b * dv + d];
        if (params.accumulate != 0u) {
            g += grad_values[index];
        }
        grad_values[index] = g;
    }
}

// From dweights in row[0 .. len] (the part through the context; grad_weights is added
// here), writes dscore[b] (0 past len). Each invocation reads back only the positions it
// wrote, so no barrier is needed before the call.
fn dscore_from_row(b: u32, lid: u32, len: u32) {
    let source = params.source;
    var local_dot = 0.0;
    for (var s = lid; s < len; s += WG) {
        var dw = row[s];
        if (params.has_grad_weights != 0u) {
            dw += grad_weights[b * source + s];
        }
        row[s] = dw;
        local_dot += saved_weights[b * source + s] * dw;
    }
    partial[lid] = vec2<f32>(local_dot, 0.0);
    workgroupBarrier();
    if (lid == 0u) {
        var sum = 0.0;
        for (var i = 0u; i < WG; i++) {
            sum += partial[i].x;
        }
        total = vec2<f32>(sum, 0.0);
    }
    workgroupBarrier();
    let dot = total.x;
    for (var s = lid; s < source; s += WG) {
        var ds = 0.0;
        if (s < len) {
            ds = saved_weights[b * source + s] * (row[s] - dot);
        }
        dscore[b * source + s] = ds;
    }
}

@compute @workgroup_size(WG, 1, 1)
fn attention_backward_query_keys(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let b = wg.x;
    let source = params.source;
    let width = params.width;
    let len = source_len(b);
    let accumulate = params.accumulate != 0u;
    // One invocation per column a: loops over s in order, so every sum is deterministic.
    for (var a = lid; a < width; a += WG) {
        let q = query[b * width + a];
        var grad_q = 0.0;
        var grad_v = 0.0;
        for (var s = 0u; s < source; s++) {
            let index = (b * source + s) * width + a;
            let ds = select(0.0, saved_dscore[b * source + s], s < len);
            var grad_k = 0.0;
            if (SCORE == 1u) {
                // score = query . keys[s]
                grad_q += ds * keys[index];
                grad_k = ds * q;
            } else {
                // score = v . tanh(query + keys[s])
                let t = tanh_stable(q + keys[index]);
                let dpre = ds * v[a] * (1.0 - t * t);
                grad_q += dpre;
                grad_v += ds * t;
                grad_k = dpre;
            }
            if (accumulate) {
                grad_k += grad_keys[index];
            }
            grad_keys[index] = grad_k;
        }
        grad_query[b * width + a] = grad_q;
        if (SCORE == 0u) {
            let at = b * width + a;
            if (accumulate) {
                grad_v += grad_v_rows[at];
            }
            grad_v_rows[at] = grad_v;
        }
    }
}

// ==== subgroup kernels ====
// Compiled only where the device has subgroup operations in subgroups of a multiple of 8
// lanes (src/gpu/pipeline.rs leaves this section out elsewhere). For A % 4 == 0 and
// Dv % 4 == 0 with WG >= A / 4 and WG >= Dv / 4 (the launcher checks).
//
// The same three kernels with every invocation owning a chunk of 4 columns of A (or Dv)
// instead of a source position: the loads are vec4s along the rows of keys and values
// (which lavapipe loads lane by lane, 4 columns for the price of one), and query, v and
// grad_context are loaded once per invocation. A sum over the columns (a score, a
// dweight) is a subgroupAdd per subgroup whose totals are added in subgroup order.
//
// attention_forward_subgroup        = attention_forward
// attention_backward_scores_subgroup = attention_backward_scores
// attention_backward_query_keys4   = attention_backward_query_keys (no subgroup
//     operations: each invocation already owns its columns; only the vec4 loads)

@group(0) @binding(17) var<storage, read> query4: array<vec4<f32>>;              // query
@group(0) @binding(18) var<storage, read> keys4: array<vec4<f32>>;               // keys
@group(0) @binding(19) var<storage, read> v4: array<vec4<f32>>;                  // v
@group(0) @binding(20) var<storage, read> values4: array<vec4<f32>>;             // values
@group(0) @binding(21) var<storage, read_write> context4: array<vec4<f32>>;      // context
@group(0) @binding(22) var<storage, read> grad_context4: array<vec4<f32>>;       // grad_context
@group(0) @binding(23) var<storage, read_write> grad_values4: array<vec4<f32>>;  // grad_values
@group(0) @binding(24) var<storage, read_write> grad_query4: array<vec4<f32>>;   // grad_query
@group(0) @binding(25) var<storage, read_write> grad_keys4: array<vec4<f32>>;    // grad_keys
@group(0) @binding(26) var<storage, read_write> grad_v_rows4: array<vec4<f32>>;  // grad_v_rows

// Subgroups per workgroup at most (WG / 8).
override MAX_SUBGROUPS: u32 = 8u;

// by_subgroup[s * MAX_SUBGROUPS + i]: subgroup i's part of a sum over columns for position s.
var<workgroup> by_subgroup: array<f32, MAX_S * MAX_SUBGROUPS>;

// Adds `x` over the subgroup and keeps the total as this subgroup's part for position s.
fn keep_subgroup_sum(x: f32, s: u32, subgroup: u32, lane: u32) {
    let sum = subgroupAdd(x);
    if (lane == 0u) {
        by_subgroup[s * MAX_SUBGROUPS + subgroup] = sum;
    }
}

// After a barrier: the sum over the workgroup for position s, the subgroups' parts in order.
fn workgroup_sum(s: u32, subgroups: u32) -> f32 {
    var sum = 0.0;
    for (var i = 0u; i < subgroups; i++) {
        sum += by_subgroup[s * MAX_SUBGROUPS + i];
    }
    return sum;
}

@compute @workgroup_size(WG, 1, 1)
fn attention_forward_subgroup(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_id) subgroup: u32,
    @builtin(num_subgroups) subgroups: u32,
) {
    let b = wg.x;
    let len = source_len(b);
    let a4 = params.width / 4u;
    // This invocation's columns 4c .. 4c+4 of A; invocations past A / 4 add 0.
    let c = min(lid, a4 - 1u);
    let owns = lid < a4;
    let q = query4[b * a4 + c];
    var v_chunk = vec4<f32>();
    if (SCORE == 0u) {
        v_chunk = v4[c];
    }
    for (var s = 0u; s < len; s++) {
        let k = keys4[(b * params.source + s) * a4 + c];
        var part: f32;
        if (SCORE == 1u) {
            part = dot(q, k);
        } else {
            part = dot(v_chunk, tanh_stable4(q + k));
        }
        keep_subgroup_sum(select(0.0, part, owns), s, subgroup, lane);
    }
    workgroupBarrier();
    for (var s = lid; s < len; s += WG) {
        row[s] = workgroup_sum(s, subgroups);
    }
    softmax_row(b, lid, len);
    // context[b, 4c' .. 4c'+4] = sum_s w[s] values[b, s, 4c' .. 4c'+4], in order of s.
    let d4 = params.value_width / 4u;
    if (lid < d4) {
        var sum = vec4<f32>();
        for (var s = 0u; s < len; s++) {
            sum += row[s] * values4[(b * params.source + s) * d4 + lid];
        }
        context4[b * d4 + lid] = sum;
    }
}

@compute @workgroup_size(WG, 1, 1)
fn attention_backward_scores_subgroup(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_id) subgroup: u32,
    @builtin(num_subgroups) subgroups: u32,
) {
    let b = wg.x;
    let source = params.source;
    let len = source_len(b);
    let d4 = params.value_width / 4u;
    // This invocation's columns 4c .. 4c+4 of Dv; invocations past Dv / 4 add 0.
    let c = min(lid, d4 - 1u);
    let owns = lid < d4;
    let grad_c = grad_context4[b * d4 + c];
    for (var s = 0u; s < len; s++) {
        let part = dot(grad_c, values4[(b * source + s) * d4 + c]);
        keep_subgroup_sum(select(0.0, part, owns), s, subgroup, lane);
    }
    // grad_values[b, s] (+)= w[s] grad_context[b]; masked positions get 0.
    if (owns) {
        for (var s = 0u; s < source; s++) {
            let index = (b * source + s) * d4 + c;
            var g = saved_weights[b * source + s] * grad_c;
            if (params.accumulate != 0u) {
                g += grad_values4[index];
            }
            grad_values4[index] = g;
        }
    }
    workgroupBarrier();
    for (var s = lid; s < len; s += WG) {
        row[s] = workgroup_sum(s, subgroups);
    }
    dscore_from_row(b, lid, len);
}

@compute @workgroup_size(WG, 1, 1)
fn attention_backward_query_keys4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let b = wg.x;
    let source = params.source;
    let a4 = params.width / 4u;
    let len = source_len(b);
    let accumulate = params.accumulate != 0u;
    // One invocation per chunk of 4 columns: loops over s in order, so every sum is
    // deterministic.
    for (var c = lid; c < a4; c += WG) {
        let q = query4[b * a4 + c];
        var v_chunk = vec4<f32>();
        if (SCORE == 0u) {
            v_chunk = v4[c];
        }
        var grad_q = vec4<f32>();
        var grad_v = vec4<f32>();
        for (var s = 0u; s < source; s++) {
            let index = (b * source + s) * a4 + c;
            let ds = select(0.0, saved_dscore[b * source + s], s < len);
            var grad_k: vec4<f32>;
            if (SCORE == 1u) {
                grad_q += ds * keys4[index];
                grad_k = ds * q;
            } else {
                let t = tanh_stable4(q + keys4[index]);
                let dpre = ds * v_chunk * (1.0 - t * t);
                grad_q += dpre;
                grad_v += ds * t;
                grad_k = dpre;
            }
            if (accumulate) {
                grad_k += grad_keys4[index];
            }
            grad_keys4[index] = grad_k;
        }
        grad_query4[b * a4 + c] = grad_q;
        if (SCORE == 0u) {
            let at = b * a4 + c;
            if (accumulate) {
                grad_v += grad_v_rows4[at];
            }
            grad_v_rows4[at] = grad_v;
        }
    }
}
