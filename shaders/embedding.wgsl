// embedding.wgsl: the lookup table of nn.Embedding and its deterministic backward.
//
// B batch, T time, E embedding width, V vocabulary; N = B * T positions (any ids shape
// works: N is its element count), P = N rounded up to a power of two, at least 512.
//
// embedding_forward   out[n, e] = weight[ids[n], e]          ids [N] u32, weight [V, E], out [N, E]
//     Ids made on the GPU (sampled tokens) cannot be checked by the host, so the shader
//     guards them: an id >= V writes a row of zeros and adds 1 to flag[0], a u32 counter
//     the caller reads when it wants (integer atomics are exact, so the count is too).
//     Nothing is saved for the backward: it reads ids again.
// embedding_backward  dW[v, e] = sum over n with ids[n] == v, in increasing n, of dout[n, e]
//     (dW [V, E]; the padding row gets no gradient; ids >= V contribute nothing)
//
// The backward is a gather, not a scatter, so it needs no float atomics:
//   1. embedding_backward_sort_blocks: each workgroup loads 512 keys (ids[n], n) (n >= N
//      padded with (max, max)) and bitonic-sorts them in workgroup memory.
//   2. embedding_backward_merge (one compare-exchange step of stride >= 512 over all of
//      sorted) and embedding_backward_merge_blocks (the remaining steps < 512 of one merge
//      stage, in workgroup memory) finish the bitonic network over P keys; the launcher
//      encodes them stage by stage.
//   3. embedding_backward: one invocation per (s, e) of the N sorted keys; the first key
//      of each run of equal ids (s == 0 or sorted[s - 1].x != v) sums dout[n, e] over
//      its run into dW[v, e], the others return at once. Rows that occur in no key get
//      nothing here: when overwriting, the launcher clears dW first (a buffer clear, no
//      kernel). So the work is N x E, not V x E with a search per element.
// Why it is deterministic (the argument of llm.c's encoder.cuh, without its atomics):
// the keys (id, n) are all distinct (n is unique), so their ascending order is unique:
// whatever order the sorting network's invocations run in, `sorted` ends up the same.
// Each dW[v, e] is then written by exactly one invocation, which adds its terms in
// increasing n: the same additions in the same order on every run, bit for bit (and the
// same order as the CPU reference). A repeated id costs a longer run for one row's E
// invocations, never a race.

struct Params {
    // N: positions (elements of ids).
    positions: u32,
    vocab: u32,
    embed: u32,
    // P: length of the sort, a power of two >= 512.
    padded: u32,
    // Bitonic stage: merging sequences of length stage_k, compare distance stage_j.
    stage_k: u32,
    stage_j: u32,
    padding_idx: u32,
    has_padding: u32,
    accumulate: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> ids: array<u32>;
@group(0) @binding(1) var<storage, read> weight: array<f32>;
@group(0) @binding(2) var<storage, read> grad_out: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read_write> flag: array<atomic<u32>>;
// (id, position) keys; the workspace of the backward, P entries.
@group(0) @binding(5) var<storage, read_write> sorted: array<vec2<u32>>;
@group(0) @binding(6) var<storage, read_write> grad_weight: array<f32>;
@group(0) @binding(7) var<uniform> params: Params;

override WG: u32 = 256u;
// Keys per workgroup in the block sort: two per invocation of a 256-wide workgroup,
// 4 KiB of workgroup memory.
const BLOCK: u32 = 512u;
const SORT_WG: u32 = 256u;

// One invocation per (n, e) of out.
@compute @workgroup_size(WG)
fn embedding_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wid, nwg, lid, WG);
    if (i >= params.positions * params.embed) {
        return;
    }
    let n = i / params.embed;
    let e = i % params.embed;
    let id = ids[n];
    if (id < params.vocab) {
        out[i] = weight[id * params.embed + e];
    } else {
        // Zeros rather than a read out of bounds (which WGSL would clamp into some
        // other row, a silent wrong answer); counted once per position.
        out[i] = 0.0;
        if (e == 0u) {
            atomicAdd(&flag[0], 1u);
        }
    }
}

// Key order: by id, then by position.
fn key_greater(a: vec2<u32>, b: vec2<u32>) -> bool {
    return a.x > b.x || (a.x == b.x && a.y > b.y);
}

var<workgroup> keys: array<vec2<u32>, BLOCK>;

// The compare-exchange steps j = first_j, first_j / 2, ..., 1 of stage k on the block in
// workgroup memory. Directions come from the *global* index, so neighbouring blocks end
// up sorted in opposite directions, as the next stage of the network needs.
fn merge_in_workgroup(block_start: u32, lid: u32, k: u32, first_j: u32) {
    for (var j = first_j; j > 0u; j /= 2u) {
        // Invocation lid owns the pair (a, a + j): lid's bits below j stay, the rest
        // move up by one to skip the partner half.
        let a = (lid / j) * 2u * j + (lid % j);
        let b = a + j;
        let ascending = ((block_start + a) & k) == 0u;
        let x = keys[a];
        let y = keys[b];
        if (key_greater(x, y) == ascending) {
            keys[a] = y;
            keys[b] = x;
        }
        workgroupBarrier();
    }
}

// First key of this workgroup's block; past the end of the sort when the grid was
// folded into y and rounded up. Uniform per workgroup, so the early returns before the
// barriers are allowed.
fn block_of(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * BLOCK;
}

@compute @workgroup_size(SORT_WG)
fn embedding_backward_sort_blocks(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                                  @builtin(local_invocation_index) lid: u32) {
    let block_start = block_of(wid, nwg);
    if (block_start >= params.padded) {
        return;
    }
    for (var r = 0u; r < 2u; r++) {
        let local = lid + r * SORT_WG;
        let n = block_start + local;
        // Padding keys sort after every real one (ids are < 2^32 - 1 and n < N).
        keys[local] = select(vec2<u32>(0xFFFFFFFFu, 0xFFFFFFFFu), vec2<u32>(ids[min(n, params.positions - 1u)], n),
                             n < params.positions);
    }
    workgroupBarrier();
    for (var k = 2u; k <= BLOCK; k *= 2u) {
        merge_in_workgroup(block_start, lid, k, k / 2u);
    }
    for (var r = 0u; r < 2u; r++) {
        let local = lid + r * SORT_WG;
        sorted[block_start + local] = keys[local];
    }
}

// One compare-exchange step with stride stage_j >= BLOCK over all P keys; one
// invocation per pair.
@compute @workgroup_size(SORT_WG)
fn embedding_backward_merge(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                            @builtin(local_invocation_index) lid: u32) {
    let t = flat_index(wid, nwg, lid, SORT_WG);
    if (t >= params.padded / 2u) {
        return;
    }
    let j = params.stage_j;
    let a = (t / j) * 2u * j + (t % j);
    let b = a + j;
    let ascending = (a & params.stage_k) == 0u;
    let x = sorted[a];
    let y = sorted[b];
    if (key_greater(x, y) == ascending) {
        sorted[a] = y;
        sorted[b] = x;
    }
}

// The steps j = BLOCK / 2 .. 1 of stage stage_k, one block per workgroup.
@compute @workgroup_size(SORT_WG)
fn embedding_backward_merge_blocks(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                                   @builtin(local_invocation_index) lid: u32) {
    let block_start = block_of(wid, nwg);
    if (block_start >= params.padded) {
        return;
    }
    for (var r = 0u; r < 2u; r++) {
        let local = lid + r * SORT_WG;
        keys[local] = sorted[block_start + local];
    }
    workgroupBarrier();
    merge_in_workgroup(block_start, lid, params.stage_k, BLOCK / 2u);
    for (var r = 0u; r < 2u; r++) {
        let local = lid + r * SORT_WG;
        sorted[block_start + local] = keys[local];
    }
}

// One invocation per (s, e) of the sorted keys, e fastest, so a workgroup's invocations
// share s and walk the same run of keys.
@compute @workgroup_size(WG)
fn embedding_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wid, nwg, lid, WG);
    if (i >= params.positions * params.embed) {
        return;
    }
    let s = i / params.embed;
    let e = i % params.embed;
    let v = sorted[s].x;
    // Only the first key of a run writes its row; an id >= V contributes nothing, and the
    // padding row gets no gradient (PyTorch's padding_idx: zero when overwriting, from
    // the launcher's clear; untouched when accumulating).
    if (s > 0u && sorted[s - 1u].x == v) {
        return;
    }
    if (v >= params.vocab || (params.has_padding != 0u && v == params.padding_idx)) {
        return;
    }
    var total = 0.0;
    for (var r = s; r < params.positions; r++) {
        let key = sorted[r];
        if (key.x != v) {
            break;
        }
        total += grad_out[key.y * params.embed + e];
    }
    let at = v * params.embed + e;
    if (params.accumulate != 0u) {
        grad_weight[at] += total;
    } else {
        grad_weight[at] = total;
    }
}
