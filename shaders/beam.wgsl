// beam.wgsl: the two kernels of one beam-search step that stay on the GPU.
//
// Letters: B source sentences, K beams per sentence, V vocabulary. Row r = b * K + k is
// beam k of sentence b. Scores are cumulative log-probabilities.
//
// beam_expand   one workgroup per row r:
//                 finished[r] != 0  cand[r, eos] = score[r], every other class -inf
//                                   (a finished hypothesis survives unchanged: its only
//                                   continuation is <eos> at no cost)
//                 first && k > 0    cand[r, :] = -inf (at the first step every beam of a
//                                   sentence holds the same <sos>; only beam 0 expands,
//                                   or the K best would be K copies of one token)
//                 otherwise         cand[r, v] = score[r] + logits[r, v] - logsumexp(logits[r, :])
//               The K best of each sentence's K * V candidates are then picked by the
//               cross_entropy family's top_k on cand viewed as [B, K * V], whose
//               decoding order and per-row pick (common_select.wgsl) argmax and
//               sampling share: this file has no selection code of its own.
// beam_select   one invocation per row r = b * K + j, from top_k's index i of pick j:
//                 parent[r] = b * K + i / V, token[r] = i % V,
//                 finished_out[r] = finished[parent[r]] | (token[r] == eos),
//                 history[step, r] = (token[r], parent[r])
//               The caller gathers the decoder's state rows by parent and feeds token back
//               as the next input; top_k's values are the new scores.
// beam_best     one invocation per sentence b, after the last step: each of its K rows'
//               path is walked back through history to its first eos (its length L, or
//               all steps), the row with the best log_prob / L^length_penalty wins (ties:
//               the lowest k), and its path is written to best[b, :], eos after its end.
//               The same ranking as the host's `backtrack`, which is its reference; the
//               penalties 0 and 1 are exact, others use pow and may differ in the last
//               bit. So a host's frame gets the translation in a GPU buffer, no readback.
// Not differentiable: decoding has no backward.

struct Params {
    rows: u32,
    vocab: u32,
    beam: u32,
    eos: u32,
    first: u32,
    step: u32,
    // beam_best: the steps decoded (history's first dimension) and the ranking's exponent.
    steps: u32,
    length_penalty: f32,
}

@group(0) @binding(0) var<storage, read> logits: array<f32>;           // [B*K, V]
@group(0) @binding(1) var<storage, read> scores: array<f32>;           // [B*K]
@group(0) @binding(2) var<storage, read> finished: array<u32>;         // [B*K]
@group(0) @binding(3) var<storage, read_write> candidates: array<f32>; // [B*K, V]
@group(0) @binding(4) var<storage, read> picks: array<u32>;            // [B, K] from top_k
@group(0) @binding(5) var<storage, read_write> tokens: array<u32>;     // [B*K]
@group(0) @binding(6) var<storage, read_write> parents: array<u32>;    // [B*K]
@group(0) @binding(7) var<storage, read_write> finished_out: array<u32>; // [B*K]
@group(0) @binding(8) var<storage, read_write> history: array<u32>;    // [steps, B*K, 2]
@group(0) @binding(9) var<uniform> params: Params;
@group(0) @binding(10) var<storage, read_write> best: array<u32>;      // [B, steps]

override WG: u32 = 64u;
const MAX_WG: u32 = 256u;

var<workgroup> red: array<f32, MAX_WG>;

// From bits in a `var`, so at run time: an infinity produced by a constant expression is
// a shader-creation error under the WGSL spec (see shaders/README.md).
fn negative_infinity() -> f32 {
    var bits = 0xff800000u;
    return bitcast<f32>(bits);
}

// Sum over the workgroup of each invocation's `value`, or the max with `take_max`;
// every invocation gets the result. Holds barriers: call from uniform control flow.
fn workgroup_reduce(lid: u32, value: f32, take_max: bool) -> f32 {
    red[lid] = value;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            let other = red[lid + stride];
            red[lid] = select(red[lid] + other, max(red[lid], other), take_max);
        }
        workgroupBarrier();
    }
    let result = red[0];
    workgroupBarrier();
    return result;
}

@compute @workgroup_size(WG)
fn beam_expand(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let row = row_of_workgroup(wid, nwg);
    if (row >= params.rows) {
        return;
    }
    let base = row * params.vocab;
    // Every invocation runs both reductions (the barriers need uniform control flow;
    // a value read from a storage buffer is not uniform to WGSL), then writes one case.
    let keep_eos = finished[row] != 0u;
    let masked = keep_eos || (params.first != 0u && row % params.beam != 0u);
    var row_max = F32_LOWEST;
    for (var c = lid; c < params.vocab; c += WG) {
        row_max = max(row_max, logits[base + c]);
    }
    row_max = workgroup_reduce(lid, row_max, true);
    var sum = 0.0;
    for (var c = lid; c < params.vocab; c += WG) {
        sum += exp(logits[base + c] - row_max);
    }
    sum = workgroup_reduce(lid, sum, false);
    let shift = scores[row] - row_max - log(sum);
    for (var c = lid; c < params.vocab; c += WG) {
        var value = logits[base + c] + shift;
        if (masked) {
            value = select(negative_infinity(), scores[row], keep_eos && c == params.eos);
        }
        candidates[base + c] = value;
    }
}

@compute @workgroup_size(WG)
fn beam_select(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let row = flat_index(wid, nwg, lid, WG);
    if (row >= params.rows) {
        return;
    }
    let sentence = row / params.beam;
    let pick = picks[row];
    let parent = sentence * params.beam + pick / params.vocab;
    let token = pick % params.vocab;
    tokens[row] = token;
    parents[row] = parent;
    finished_out[row] = u32(finished[parent] != 0u || token == params.eos);
    let slot = (params.step * params.rows + row) * 2u;
    history[slot] = token;
    history[slot + 1u] = parent;
}

// A hypothesis' ranking score: log_prob / length^length_penalty, the length counting eos.
fn ranked(log_prob: f32, length: u32) -> f32 {
    let n = f32(max(length, 1u));
    if (params.length_penalty == 0.0) {
        return log_prob;
    }
    if (params.length_penalty == 1.0) {
        return log_prob / n;
    }
    return log_prob / pow(n, params.length_penalty);
}

@compute @workgroup_size(WG)
fn beam_best(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let sentence = flat_index(wid, nwg, lid, WG);
    if (sentence >= params.rows / params.beam) {
        return;
    }
    let steps = params.steps;
    var best_row = sentence * params.beam;
    var best_score = 0.0;
    for (var k = 0u; k < params.beam; k++) {
        let row = sentence * params.beam + k;
        // Walking back, the last eos met is the path's first: length = its step + 1.
        var at = row;
        var length = steps;
        for (var t = steps; t > 0u; t--) {
            let slot = ((t - 1u) * params.rows + at) * 2u;
            if (history[slot] == params.eos) {
                length = t;
            }
            at = history[slot + 1u];
        }
        let score = ranked(scores[row], length);
        if (k == 0u || score > best_score) {
            best_score = score;
            best_row = row;
        }
    }
    let out = sentence * steps;
    var at = best_row;
    for (var t = steps; t > 0u; t--) {
        let slot = ((t - 1u) * params.rows + at) * 2u;
        best[out + t - 1u] = history[slot];
        at = history[slot + 1u];
    }
    // After its first eos a path holds only eos (a finished row's one continuation), but
    // the cut is written out anyway, so a reader may stop at the first eos or read all.
    var ended = false;
    for (var t = 0u; t < steps; t++) {
        if (ended) {
            best[out + t] = params.eos;
        }
        ended = ended || best[out + t] == params.eos;
    }
}
