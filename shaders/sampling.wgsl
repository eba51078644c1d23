// sampling.wgsl: the next token of each row drawn on the GPU from softmax(logits / T),
// optionally restricted to the k most likely tokens, with a seeded counter-based draw.
// What a game's generator runs once per frame for every stream (one row per NPC).
//
// Letters: N rows (streams), V vocabulary. logits [N, V] f32 in; probs [N, V] f32 and
// tokens [N] u32 out.
//
// sample_tokens   for row n, with m = max_c x_c and kept(c) = "c is among the first k
//                 in decoding order" (larger x first, NaN above every number, the lower
//                 c first on ties; every c when k = V):
//                   w_c = kept(c) ? exp((x_c - m) / T) : 0
//                   probs[n, c] = w_c / sum_c w_c                (0 outside the top k)
//                   tokens[n] = the first kept c with u sum_c w_c < w_0 + .. + w_c
//                 where u in [0, 1) is the top 24 bits of word 0 of
//                 Philox4x32-10(counter = (n, SAMPLE_TAG, step lo, step hi), key = seed),
//                 so a draw is a pure function of (seed, stream, step). When rounding
//                 leaves u sum w at or past the scanned total, the row's last kept c.
//                 Nothing is saved: sampling has no backward.
//
// Layout of the work: one workgroup per row; invocation i owns the contiguous chunk
// [i C, (i+1) C) of the row, C = ceil(V / ROW_WG), so that the draw is chunk sums, one
// invocation's exclusive prefix over the ROW_WG chunk sums, and a scan of the single
// chunk holding the goal u sum w (`target` is a WGSL keyword). The maximum and the top-k
// threshold are k rounds of next_pick, "the next element in decoding order after the
// previous pick", as cross_entropy.wgsl's top_k (no sort, no mark per element): the
// order, next_pick, NONE, MAX_WG and ROW_WG are in common_select.wgsl, prepended to both
// families. Every sum is a fixed order, never an atomic: the result depends only on the
// inputs, the seed, the step and ROW_WG. NaN logits give NaN probabilities.

struct Params {
    rows: u32,
    vocab: u32,
    // Elements kept (1..=V); V keeps every element and skips the k rounds.
    k: u32,
    inv_temperature: f32,
    seed_lo: u32,
    seed_hi: u32,
    step_lo: u32,
    step_hi: u32,
}

@group(0) @binding(0) var<storage, read> logits: array<f32>;          // [N, V]
@group(0) @binding(1) var<storage, read_write> probs: array<f32>;     // [N, V]
@group(0) @binding(2) var<storage, read_write> tokens: array<u32>;    // [N]
@group(0) @binding(3) var<uniform> params: Params;

// Word 1 of the counter: keeps sampling's random streams apart from dropout's (whose
// word 1 is always 0) under the same seed.
const SAMPLE_TAG: u32 = 0x53414D50u;

// Chunk sums, then (after invocation 0's pass) their exclusive prefix.
var<workgroup> chunk_sum: array<f32, MAX_WG>;
// Invocation 0's answer: the chunk that holds the goal, and the goal.
var<workgroup> draw_owner: u32;
var<workgroup> draw_goal: f32;
var<workgroup> draw_total: f32;

// [lo, hi) of invocation lid's chunk (empty past the end of the row).
fn chunk_of(lid: u32) -> vec2<u32> {
    let size = div_ceil_u32(params.vocab, ROW_WG);
    let lo = min(lid * size, params.vocab);
    return vec2<u32>(lo, min(lo + size, params.vocab));
}

@compute @workgroup_size(ROW_WG)
fn sample_tokens(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let row = row_of_workgroup(wid, nwg);
    if (row >= params.rows) {
        return;
    }
    let v = params.vocab;
    let base = row * v;
    let keep_all = params.k >= v;

    // The first pick is the maximum; k - 1 more rounds find the last kept element.
    let top = next_pick(base, lid, 0.0, NONE);
    var last = top;
    if (!keep_all) {
        for (var j = 1u; j < params.k; j++) {
            last = next_pick(base, lid, last.value, last.index);
        }
    }

    // Unnormalised weights of the chunk, kept in probs until the draw has read them.
    let span = chunk_of(lid);
    var sum = 0.0;
    for (var c = span.x; c < span.y; c++) {
        let x = logits[base + c];
        var w = 0.0;
        if (keep_all || c == last.index || ranks_before(x, c, last.value, last.index)) {
            w = exp((x - top.value) * params.inv_temperature);
        }
        probs[base + c] = w;
        sum += w;
    }
    chunk_sum[lid] = sum;
    workgroupBarrier();

    if (lid == 0u) {
        let seed = vec2<u32>(params.seed_lo, params.seed_hi);
        let counter = vec4<u32>(row, SAMPLE_TAG, params.step_lo, params.step_hi);
        let u = uniform_from_bits(philox4x32_10(counter, seed).x);
        var total = 0.0;
        for (var i = 0u; i < ROW_WG; i++) {
            total += chunk_sum[i];
        }
        let goal = u * total;
        // The last non-empty chunk whose prefix is <= goal: the one holding it, or
        // the last one with weight when rounding put the goal at the very end.
        var prefix = 0.0;
        var owner = 0u;
        for (var i = 0u; i < ROW_WG; i++) {
            let s = chunk_sum[i];
            chunk_sum[i] = prefix;
            if (s > 0.0 && prefix <= goal) {
                owner = i;
            }
            prefix += s;
        }
        draw_owner = owner;
        draw_goal = goal;
        draw_total = total;
    }
    workgroupBarrier();

    let total = draw_total;
    if (lid == draw_owner) {
        let goal = draw_goal;
        var acc = chunk_sum[lid];
        var token = NONE;
        var last_kept = span.x;
        for (var c = span.x; c < span.y; c++) {
            let w = probs[base + c];
            if (w > 0.0) {
                acc += w;
                last_kept = c;
                if (token == NONE && goal < acc) {
                    token = c;
                }
            }
        }
        tokens[row] = select(token, last_kept, token == NONE);
    }
    // Each invocation normalises only its own chunk, after its own reads above.
    for (var c = span.x; c < span.y; c++) {
        probs[base + c] = probs[base + c] / total;
    }
}
