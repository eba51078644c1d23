// common_select.wgsl: the decoding order and the per-row pick that the selection kernels
// share: argmax and top_k (cross_entropy.wgsl), whose top_k also makes beam search's
// picks (src/kernels/beam.rs), and sample_tokens' maximum and top-k threshold
// (sampling.wgsl). Prepended after common.wgsl to those two families only, by
// src/gpu/pipeline.rs (the one place that does it).
//
// Letters: V vocabulary (the length of a row). Each family declares `logits` (its
// [N, V] f32 input) and a `params` whose `vocab` is V.
//
// The decoding order, as torch.argmax/topk: larger value first, NaN above every number,
// the lower index first among equal values (and among NaNs). It is a strict total order
// on (value, index), so a row's pick does not depend on how its elements are spread over
// the invocations.

// Invocations per row of the per-row kernels: a power of two (the trees halve it), a
// multiple of 8, at most MAX_WG; each launcher picks it from the shape.
override ROW_WG: u32 = 128u;
// Workgroup arrays are sized for the largest workgroup.
const MAX_WG: u32 = 256u;
// "No element yet" in the selection trees.
const NONE: u32 = 0xffffffffu;

var<workgroup> pick_value: array<f32, MAX_WG>;
var<workgroup> pick_index: array<u32, MAX_WG>;

// True when (a, ia) comes before (b, ib) in the decoding order.
fn ranks_before(a: f32, ia: u32, b: f32, ib: u32) -> bool {
    let a_nan = is_nan_f32(a);
    let b_nan = is_nan_f32(b);
    if (a_nan || b_nan) {
        return a_nan && (!b_nan || ia < ib);
    }
    return a > b || (a == b && ia < ib);
}

struct Pick {
    value: f32,
    index: u32,
}

// The first element of row `base` in decoding order that comes strictly after
// (prev, prev_index), or the first of all when prev_index is NONE. Scanning for the
// next element after the previous pick needs no mark per element and no sort: k
// rounds of an argmax. Called by every invocation (it holds barriers).
fn next_pick(base: u32, lid: u32, prev: f32, prev_index: u32) -> Pick {
    var best = Pick(0.0, NONE);
    for (var c = lid; c < params.vocab; c += ROW_WG) {
        let x = logits[base + c];
        let after_prev = prev_index == NONE || ranks_before(prev, prev_index, x, c);
        // Strided, so c grows: a later c only wins with a strictly better value.
        if (after_prev && (best.index == NONE || ranks_before(x, c, best.value, best.index))) {
            best = Pick(x, c);
        }
    }
    pick_value[lid] = best.value;
    pick_index[lid] = best.index;
    workgroupBarrier();
    for (var stride = ROW_WG / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            let other_index = pick_index[lid + stride];
            let other_value = pick_value[lid + stride];
            let mine = pick_index[lid];
            if (other_index != NONE && (mine == NONE || ranks_before(other_value, other_index, pick_value[lid], mine))) {
                pick_value[lid] = other_value;
                pick_index[lid] = other_index;
            }
        }
        workgroupBarrier();
    }
    let pick = Pick(pick_value[0], pick_index[0]);
    // Everyone has read slot 0 before the next round overwrites it.
    workgroupBarrier();
    return pick;
}
