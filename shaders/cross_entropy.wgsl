// cross_entropy.wgsl: fused log-softmax + NLL (torch.nn.CrossEntropyLoss) with its
// gradient, and the decoding picks argmax and top_k.
//
// Letters: N rows (batch * time), V classes (vocabulary). logits [N, V] f32, targets [N] u32.
//
// cross_entropy_count_targets  status = [1 + first n with t_n >= V and t_n != ignore (0 if
//                              none), C = #{n : t_n != ignore}]                 (one workgroup)
// cross_entropy_forward        lse_n = log sum_c exp(x_nc);  row_loss_n = (1 - ls)(lse_n - x_n,t)
//                              + ls (lse_n - mean_c x_nc);  dlogits_nc = s (softmax_nc
//                              - (1 - ls)[c = t_n] - ls / V), s = 1/C (Mean) or 1 (Sum)
//                                                                  (one workgroup per row)
// cross_entropy_reduce         loss = sum_n row_loss_n (/ C for Mean)           (one workgroup)
// argmax                       out_n = first c with x_nc maximal               (one workgroup per row)
// top_k                        the k largest (x_nc, c) of each row, descending, lower c first
//                              on ties                                         (one workgroup per row)
//
// The loss is always the root of the graph, so "forward" writes the gradient too and
// nothing is saved for a later backward: the three cross-entropy dispatches run in one
// encoder, count first, because dlogits needs C before any row is finished. Ignored rows
// contribute 0 loss and 0 gradient; every row ignored with Mean gives NaN (PyTorch's
// 0/0). A target >= V that is not ignored cannot be checked on the host without a
// readback, so the kernel guards it: NaN row loss, zero gradient row, status[0] set.
//
// Determinism: every sum is a fixed tree over a fixed assignment of elements to
// invocations (strided by the workgroup size), never an atomic, so the result depends
// only on the inputs and the workgroup size the launcher picked from the shape.
//
// Order of argmax and top_k, as torch.argmax/topk: larger value first, NaN above every
// number, the lower index first among equal values. That order, the pick of one row
// (next_pick), NONE, MAX_WG and ROW_WG are in common_select.wgsl, prepended to this
// family and to sampling.wgsl.

struct Params {
    rows: u32,
    vocab: u32,
    ignore_index: u32,
    has_ignore: u32,
    mean: u32,
    k: u32,
    label_smoothing: f32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read> targets: array<u32>;
// Written by cross_entropy_count_targets, read by the two dispatches after it.
@group(0) @binding(2) var<storage, read_write> status: array<u32>;
@group(0) @binding(3) var<storage, read_write> dlogits: array<f32>;
@group(0) @binding(4) var<storage, read_write> row_loss: array<f32>;
@group(0) @binding(5) var<storage, read_write> loss: array<f32>;
@group(0) @binding(6) var<uniform> params: Params;
@group(0) @binding(7) var<storage, read_write> top_values: array<f32>;
@group(0) @binding(8) var<storage, read_write> top_indices: array<u32>;

// Invocations of the single-workgroup reductions (those of the per-row kernels are
// ROW_WG). A power of two (the trees halve it), a multiple of 8, at most MAX_WG.
override REDUCE_WG: u32 = 256u;

// Sized for the largest workgroup: 4 x 256 x 4 bytes = 4 KiB (argmax and top_k use
// common_select.wgsl's two arrays instead).
var<workgroup> red_max: array<f32, MAX_WG>;
var<workgroup> red_sum: array<f32, MAX_WG>;
var<workgroup> red_aux: array<f32, MAX_WG>;
var<workgroup> red_index: array<u32, MAX_WG>;

fn is_ignored(label: u32) -> bool {
    return params.has_ignore != 0u && label == params.ignore_index;
}

@compute @workgroup_size(REDUCE_WG)
fn cross_entropy_count_targets(@builtin(local_invocation_index) lid: u32) {
    // Counts are integers, so the order would not matter; the tree is only there to
    // avoid atomics on one shared word, and it finds the *first* bad row.
    var count = 0u;
    var first_bad = NONE;
    for (var r = lid; r < params.rows; r += REDUCE_WG) {
        let label = targets[r];
        if (!is_ignored(label)) {
            count += 1u;
            if (label >= params.vocab) {
                first_bad = min(first_bad, r);
            }
        }
    }
    red_index[lid] = count;
    red_aux[lid] = bitcast<f32>(first_bad);
    workgroupBarrier();
    for (var stride = REDUCE_WG / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            red_index[lid] += red_index[lid + stride];
            let other = bitcast<u32>(red_aux[lid + stride]);
            red_aux[lid] = bitcast<f32>(min(bitcast<u32>(red_aux[lid]), other));
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        let bad = bitcast<u32>(red_aux[0]);
        // Rows fit in u32 / 2 (checked by the launcher), so bad + 1 cannot wrap.
        status[0] = select(0u, bad + 1u, bad != NONE);
        status[1] = red_index[0];
    }
}

@compute @workgroup_size(ROW_WG)
fn cross_entropy_forward(
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

    // Pass 1: online softmax statistics per invocation: running max m, sum of exp(x - m)
    // rescaled whenever m grows, and for label smoothing the sum of x - shift. One read
    // of the row instead of separate max and sum passes. The shift (the row's first
    // logit, 0 if that is infinite) keeps the mean accurate for logits far from 0, where
    // a plain sum of x would lose the digits the loss is made of.
    let first = logits[base];
    let shift = select(0.0, first, is_finite_f32(first));
    var m = F32_LOWEST;
    var s = 0.0;
    var sum_d = 0.0;
    for (var c = lid; c < v; c += ROW_WG) {
        let x = logits[base + c];
        if (x > m) {
            s = s * exp(m - x) + 1.0;
            m = x;
        } else {
            s += exp(x - m);
        }
        sum_d += x - shift;
    }
    red_max[lid] = m;
    red_sum[lid] = s;
    red_aux[lid] = sum_d;
    workgroupBarrier();
    for (var stride = ROW_WG / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            // Merge two (max, sum) pairs at the larger max; an empty pair has sum 0 and
            // max F32_LOWEST, so it adds 0 * exp(finite) = 0.
            let m_a = red_max[lid];
            let m_b = red_max[lid + stride];
            let m_ab = max(m_a, m_b);
            red_sum[lid] = red_sum[lid] * exp(m_a - m_ab) + red_sum[lid + stride] * exp(m_b - m_ab);
            red_max[lid] = m_ab;
            red_aux[lid] += red_aux[lid + stride];
        }
        workgroupBarrier();
    }
    let row_max = red_max[0];
    let row_sum = red_sum[0];
    let row_sum_d = red_aux[0];

    let label = targets[row];
    let ignored = is_ignored(label);
    let invalid = !ignored && label >= v;
    let keep = !ignored && !invalid;
    let ls = params.label_smoothing;
    let count = status[1];
    // Mean divides by the count of kept targets; with none kept every row is skipped.
    let scale = select(1.0, 1.0 / f32(count), params.mean != 0u && count > 0u);
    let inv_sum = 1.0 / row_sum;
    let smooth_share = ls / f32(v);

    // Pass 2: the gradient, re-reading the row (cached: it was just read).
    for (var c = lid; c < v; c += ROW_WG) {
        var g = 0.0;
        if (keep) {
            let p = exp(logits[base + c] - row_max) * inv_sum;
            g = scale * (p - smooth_share - select(0.0, 1.0 - ls, c == label));
        }
        dlogits[base + c] = g;
    }

    if (lid == 0u) {
        var value = 0.0;
        if (invalid) {
            value = nan_f32();
        } else if (keep) {
            // lse - x = (max - x) + log(sum): the difference first, exact for nearby
            // logits, as log_softmax does; lse itself would round away small losses.
            let log_sum = log(row_sum);
            value = (1.0 - ls) * ((row_max - logits[base + label]) + log_sum);
            // Only with smoothing: PyTorch never forms the mean term otherwise, and a
            // -inf logit would turn 0 * inf into NaN.
            if (ls > 0.0) {
                value += ls * (((row_max - shift) - row_sum_d / f32(v)) + log_sum);
            }
        }
        row_loss[row] = value;
    }
}

@compute @workgroup_size(REDUCE_WG)
fn cross_entropy_reduce(@builtin(local_invocation_index) lid: u32) {
    var total = 0.0;
    for (var r = lid; r < params.rows; r += REDUCE_WG) {
        total += row_loss[r];
    }
    red_sum[lid] = total;
    workgroupBarrier();
    for (var stride = REDUCE_WG / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            red_sum[lid] += red_sum[lid + stride];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        var value = red_sum[0];
        if (params.mean != 0u) {
            let count = status[1];
            // Every target ignored: PyTorch's 0 / 0 = NaN, built from bits.
            value = select(nan_f32(), value / f32(count), count > 0u);
        }
        loss[0] = value;
    }
}

@compute @workgroup_size(ROW_WG)
fn argmax(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let row = row_of_workgroup(wid, nwg);
    if (row >= params.rows) {
        return;
    }
    let pick = next_pick(row * params.vocab, lid, 0.0, NONE);
    if (lid == 0u) {
        top_indices[row] = pick.index;
    }
}

@compute @workgroup_size(ROW_WG)
fn top_k(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let row = row_of_workgroup(wid, nwg);
    if (row >= params.rows) {
        return;
    }
    var prev = Pick(0.0, NONE);
    for (var j = 0u; j < params.k; j++) {
        prev = next_pick(row * params.vocab, lid, prev.value, prev.index);
        if (lid == 0u) {
            top_values[row * params.k + j] = prev.value;
            top_indices[row * params.k + j] = prev.index;
        }
    }
}
