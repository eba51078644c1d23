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
    // Scores and the partial max of this invocation's positions.
    var local_max = -3.0e38;
    for (var s = lid; s < len; s += WG) {
        let value = score(b, s);
        row[s] = value;
        local_max = max(local_max, value);
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

@compute @workgroup_size(WG, 1, 1)
fn attention_backward_scores(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let b = wg.x;
    let source = params.source;
    let dv = params.value_width;
    let len = source_len(b);
    // dweights[s] into row, and the partial sum of w * dweights.
    var local_dot = 0.0;
    for (var s = lid; s < len; s += WG) {
        var dw = 0.0;
        let at = (b * source + s) * dv;
        for (var d = 0u; d < dv; d++) {
            dw += grad_context[b * dv + d] * values[at + d];
        }
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
