// elementwise.wgsl: pointwise ops, concat/split on the last axis, full reductions,
// dropout, and the tape's arithmetic (broadcasting binary ops, unary maps, sums over one
// dimension, slices), each a forward and a backward entry point. Any shape; n = number of
// elements. One family, one binding layout, one Params: the launchers are
// src/kernels/elementwise/ (pointwise.rs for the tape's arithmetic).
//
// add_forward        y = a + b                       add_backward      da = dy, db = dy
// mul_forward        y = a * b                       mul_backward      da = dy * b, db = dy * a
// tanh_forward       y = tanh(x)                     tanh_backward     dx = dy * (1 - y^2)
// sigmoid_forward    y = 1 / (1 + exp(-x))           sigmoid_backward  dx = dy * y * (1 - y)
// relu_forward       y = max(x, 0)                   relu_backward     dx = dy * (y > 0)
// concat_forward     y[r, :] = a[r, :] ++ b[r, :]    concat_backward   da, db = dy[r, :A], dy[r, A:]
//                    (a [R, A], b [R, B], y [R, A+B]; R = product of the leading dims)
//                    split is concat's backward and concat is split's, so these two
//                    entry points serve both ops (src/kernels/elementwise/concat.rs).
// sum_forward        y[0] = sum_i x[i] / divisor     sum_backward      dx[i] = dy[0] / divisor
//                    (divisor 1 for sum, n for mean, as torch.mean divides the sum)
// dropout_forward    y = x * keep / (1 - p)          dropout_backward  dx = dy * keep / (1 - p)
//                    keep = uniform(Philox(counter = (i / 4, 0, step), key = seed))[i % 4] >= p
//
// binary_forward          y[i] = a[i % len_a] op b[i % len_b],  op in {+, -, *, /}
// binary_backward         one operand of y's shape:  da[i] (+)= dy[i] * ∂(a op b)/∂a
// binary_backward_reduce  a broadcast operand:       db[j] (+)= Σ_{i ≡ j mod len_b} dy[i] * ∂(a op b)/∂b
//                         ∂/∂a, ∂/∂b:  add 1, 1;  sub 1, -1;  mul b, a;  div 1/b, -a/b²
// unary_forward           y = f(x):      scale s·x,  square x²,  exp eˣ,  log ln x
// unary_backward          dx (+)= dy * f'(x):  scale s,  square 2x,  exp y,  log 1/x
// sum_dim_forward         y[o, k] = Σ_d x[o, d, k] / divisor     (divisor 1 for sum, D for mean)
// sum_dim_backward        dx[o, d, k] (+)= dy[o, k] / divisor
// slice_forward           y[o, l, k] = x[o, start + l, k]          (l < count)
// slice_backward          dx[o, d, k] (+)= dy[o, d - start, k] for start <= d < start + count, else 0
//
// Broadcasting: an operand's elements repeat with the period of its length, so an operand
// whose shape is a suffix of y's (a row [N] over [.., N], [T, H] over [B, T, H]) or a
// scalar [1] is read at i % len. Its gradient sums dy over the repeats: y viewed as
// [len_y / len_b, len_b], a column sum, which binary_backward_reduce runs as a reduction
// over the middle axis of [1, len_y / len_b, len_b] (the same walk as sum_dim_forward).
//
// The [outer, D, inner] view: a dimension `dim` of a row-major shape splits it into the
// product of the dims before it (outer), its own size (D) and the product of the dims
// after it (inner); sum_dim and slice work on that view of any rank.
//
// Saved for backward: tanh and sigmoid use their output y, relu its output (y > 0 iff
// x > 0, PyTorch's threshold_backward on the result), mul both inputs; dropout saves
// nothing: the backward regenerates the mask from (seed, step, i), so the optional mask
// output exists only for tests and callers that want to look at it.
//
// The arithmetic saves: mul and div their operands; square and log their input x; exp its
// output y; scale nothing.
//
// Every gradient output honours `accumulate`: add into what it holds (a tensor feeding
// several ops) instead of overwriting it; an overwrite never reads the old value, so a
// NaN-filled output cannot leak in.
//
// Determinism: every output element is written by exactly one invocation, and the
// reduction sums in a fixed order (below), so results are bitwise reproducible.

struct Params {
    // Elements of the tensor the invocations walk (the output, or the input of sum).
    len: u32,
    accumulate: u32,
    // sum/mean: the divisor; dropout: 1 / (1 - p), 0 when p == 1.
    scale: f32,
    // dropout probability of zeroing an element.
    p: f32,
    seed_lo: u32,
    seed_hi: u32,
    step_lo: u32,
    step_hi: u32,
    // concat: columns of a and of b.
    cols_a: u32,
    cols_b: u32,
    // Which of the two gradient outputs (out0, out1) are bound for real.
    has_out0: u32,
    has_out1: u32,
    // The tape's arithmetic. binary: 0 add, 1 sub, 2 mul, 3 div;  unary: 0 scale, 1 square,
    // 2 exp, 3 log.
    op: u32,
    // binary_backward*: the gradient computed, 0 = da, 1 = db.
    which: u32,
    // binary: the operands' lengths (their broadcast periods).
    len_a: u32,
    len_b: u32,
    // The [outer, D, inner] view of sum_dim and slice (binary_backward_reduce: [1, rows, len]).
    outer: u32,
    dim: u32,
    inner: u32,
    // slice: the first index taken along D and how many.
    start: u32,
    count: u32,
    // unary scale: the factor s.
    factor: f32,
    // sum_dim: the divisor (1 for sum, D for mean).
    divisor: f32,
    _pad0: u32,
}

// Bindings are shared by the entry points; each one's KernelSpec lists those it uses.
//   in0: a, x, y (saved output) or dy;  in1: b;  in2: dy where in0/in1 hold saved values
//   (the arithmetic: in0 a, x or the saved value of a unary backward; in1 b; in2 dy)
//   out0: y, da or dx;  out1: db;  mask: dropout's keep mask (1 kept, 0 dropped)
@group(0) @binding(0) var<storage, read> in0: array<f32>;
@group(0) @binding(1) var<storage, read> in1: array<f32>;
@group(0) @binding(2) var<storage, read> in2: array<f32>;
@group(0) @binding(3) var<storage, read_write> out0: array<f32>;
@group(0) @binding(4) var<storage, read_write> out1: array<f32>;
@group(0) @binding(5) var<storage, read_write> mask: array<u32>;
@group(0) @binding(6) var<uniform> params: Params;

override WG: u32 = 256u;
// The reduction runs in one workgroup of this many invocations (a power of two).
override REDUCE_WG: u32 = 256u;

// Writes a gradient (or an output) element, adding the old value when accumulating.
fn store0(i: u32, value: f32) {
    if (params.accumulate != 0u) {
        out0[i] += value;
    } else {
        out0[i] = value;
    }
}

fn store1(i: u32, value: f32) {
    if (params.accumulate != 0u) {
        out1[i] += value;
    } else {
        out1[i] = value;
    }
}

@compute @workgroup_size(WG)
fn add_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wid, nwg, lid, WG);
    if (i >= params.len) {
        return;
    }
    out0[i] = in0[i] + in1[i];
}

// in0 = dy; the gradient of a sum passes through to both operands.
@compute @workgroup_size(WG)
fn add_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wid, nwg, lid, WG);
    if (i >= params.len) {
        return;
    }
    let dy = in0[i];
    if (params.has_out0 != 0u) {
        store0(i, dy);
    }
    if (params.has_out1 != 0u) {
        store1(i, dy);
    }
}

@compute @workgroup_size(WG)
fn mul_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wid, nwg, lid, WG);
    if (i >= params.len) {
        return;
    }
    out0[i] = in0[i] * in1[i];
}

// in0 = a, in1 = b, in2 = dy.
@compute @workgroup_size(WG)
fn mul_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wid, nwg, lid, WG);
    if (i >= params.len) {
        return;
    }
    let dy = in2[i];
    if (params.has_out0 != 0u) {
        store0(i, dy * in1[i]);
    }
    if (params.has_out1 != 0u) {
        store1(i, dy * in0[i]);
    }
}

@compute @workgroup_size(WG)
fn tanh_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wid, nwg, lid, WG);
    if (i >= params.len) {
        return;
    }
    out0[i] = tanh_stable(in0[i]);
}

// in0 = y (the saved output), in2 = dy.
@compute @workgroup_size(WG)
fn tanh_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wid, nwg, lid, WG);
    if (i >= params.len) {
        return;
    }
    let y = in0[i];
    store0(i, in2[i] * (1.0 - y * y));
}

@compute @workgroup_size(WG)
fn sigmoid_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wid, nwg, lid, WG);
    if (i >= params.len) {
        return;
    }
    out0[i] = sigmoid_stable(in0[i]);
}

// in0 = y (the saved output), in2 = dy.
@compute @workgroup_size(WG)
fn sigmoid_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wid, nwg, lid, WG);
    if (i >= params.len) {
        return;
    }
    let y = in0[i];
    store0(i, in2[i] * y * (1.0 - y));
}

@compute @workgroup_size(WG)
fn relu_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wid, nwg, lid, WG);
    if (i >= params.len) {
        return;
    }
    let x = in0[i];
    // PyTorch's relu keeps NaN, which max(x, 0) need not (and the GL path's compiler
    // turns the select into a max), so NaN is tested on the bits.
    out0[i] = select(select(x, 0.0, x < 0.0), x, is_nan_f32(x));
}

// in0 = y (the saved output), in2 = dy.
@compute @workgroup_size(WG)
fn relu_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wid, nwg, lid, WG);
    if (i >= params.len) {
        return;
    }
    store0(i, select(0.0, in2[i], in0[i] > 0.0));
}

// One invocation per element of y [R, A+B] (len = R * (A+B)); in0 = a, in1 = b, out0 = y.
// Honours accumulate because it is also split's backward.
@compute @workgroup_size(WG)
fn concat_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wid, nwg, lid, WG);
    if (i >= params.len) {
        return;
    }
    let width = params.cols_a + params.cols_b;
    let row = i / width;
    let col = i % width;
    if (col < params.cols_a) {
        store0(i, in0[row * params.cols_a + col]);
    } else {
        store0(i, in1[row * params.cols_b + col - params.cols_a]);
    }
}

// One invocation per element of dy [R, A+B]; in0 = dy, out0 = da [R, A], out1 = db [R, B].
// Also split's forward.
@compute @workgroup_size(WG)
fn concat_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wid, nwg, lid, WG);
    if (i >= params.len) {
        return;
    }
    let width = params.cols_a + params.cols_b;
    let row = i / width;
    let col = i % width;
    if (col < params.cols_a) {
        if (params.has_out0 != 0u) {
            store0(row * params.cols_a + col, in0[i]);
        }
    } else if (params.has_out1 != 0u) {
        store1(row * params.cols_b + col - params.cols_a, in0[i]);
    }
}


// One workgroup; in0 = x, out0 = y [1]. Deterministic by construction: invocation l sums
// x[l], x[l + W], x[l + 2W], ... in that order, then common.wgsl's fixed binary tree
// (workgroup_tree_sum) combines the W partial sums. The order depends only on n and W,
// never on scheduling. One workgroup keeps it a single dispatch with no scratch buffer;
// the reductions tsumugi needs (losses, statistics) are far smaller than what that costs.
@compute @workgroup_size(REDUCE_WG)
fn sum_forward(@builtin(local_invocation_index) lid: u32) {
    var total = 0.0;
    for (var i = lid; i < params.len; i += REDUCE_WG) {
        total += in0[i];
    }
    let sum = workgroup_tree_sum(lid, REDUCE_WG, total);
    if (lid == 0u) {
        // A division, not a multiplication by 1/n: the same rounding as torch.mean.
        out0[0] = sum / params.scale;
    }
}

// in0 = dy [1], out0 = dx: every element of x contributed dy / divisor.
@compute @workgroup_size(WG)
fn sum_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wid, nwg, lid, WG);
    if (i >= params.len) {
        return;
    }
    store0(i, in0[0] / params.scale);
}

// The four keep decisions of elements 4q .. 4q+3: one Philox call gives four words.
fn dropout_keep(q: u32) -> vec4<bool> {
    let bits = philox4x32_10(
        vec4<u32>(q, 0u, params.step_lo, params.step_hi),
        vec2<u32>(params.seed_lo, params.seed_hi),
    );
    return vec4<bool>(
        uniform_from_bits(bits.x) >= params.p,
        uniform_from_bits(bits.y) >= params.p,
        uniform_from_bits(bits.z) >= params.p,
        uniform_from_bits(bits.w) >= params.p,
    );
}

// One invocation per group of 4 elements; in0 = x, out0 = y, mask written if has_out1.
@compute @workgroup_size(WG)
fn dropout_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let q = flat_index(wid, nwg, lid, WG);
    if (q * 4u >= params.len) {
        return;
    }
    let keep = dropout_keep(q);
    for (var j = 0u; j < 4u; j++) {
        let i = q * 4u + j;
        if (i < params.len) {
            // select, not x * keep * scale: with p = 1 the scale is 0 and a NaN or an
            // infinity in x must still give 0, as PyTorch's all-zero result.
            out0[i] = select(0.0, in0[i] * params.scale, keep[j]);
            if (params.has_out1 != 0u) {
                mask[i] = select(0u, 1u, keep[j]);
            }
        }
    }
}

// in0 = dy, out0 = dx; the mask is regenerated from (seed, step), never read.
@compute @workgroup_size(WG)
fn dropout_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let q = flat_index(wid, nwg, lid, WG);
    if (q * 4u >= params.len) {
        return;
    }
    let keep = dropout_keep(q);
    for (var j = 0u; j < 4u; j++) {
        let i = q * 4u + j;
        if (i < params.len) {
            store0(i, select(0.0, in0[i] * params.scale, keep[j]));
        }
    }
}

// ---- The tape's arithmetic ----

fn binary_op(a: f32, b: f32) -> f32 {
    switch params.op {
        case 0u: { return a + b; }
        case 1u: { return a - b; }
        case 2u: { return a * b; }
        default: { return a / b; }
    }
}

// dy * ∂(a op b)/∂(a or b), as params.which says.
fn binary_grad(a: f32, b: f32, dy: f32) -> f32 {
    let wrt_b = params.which != 0u;
    switch params.op {
        case 0u: { return dy; }
        case 1u: { return select(dy, -dy, wrt_b); }
        case 2u: { return dy * select(b, a, wrt_b); }
        // -a / b² as -(a / b) / b: the same rounding as the reference's order.
        default: { return select(dy / b, -dy * (a / b) / b, wrt_b); }
    }
}

@compute @workgroup_size(WG)
fn binary_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wid, nwg, lid, WG);
    if (i >= params.len) {
        return;
    }
    out0[i] = binary_op(in0[i % params.len_a], in1[i % params.len_b]);
}

// One invocation per element of y; the gradient's operand has y's shape, so element i of
// y is its element i. in0 = a, in1 = b, in2 = dy.
@compute @workgroup_size(WG)
fn binary_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wid, nwg, lid, WG);
    if (i >= params.len) {
        return;
    }
    store0(i, binary_grad(in0[i % params.len_a], in1[i % params.len_b], in2[i]));
}


// One workgroup per element j of the broadcast operand (len = its length, inner = len,
// dim = len_y / len). Invocation l sums rows l, l + W, l + 2W, ... of the [dim, inner]
// view of y in that order, then workgroup_tree_sum (common.wgsl): a fixed order for a given shape.
@compute @workgroup_size(REDUCE_WG)
fn binary_backward_reduce(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
    // workgroup_id is uniform, so this return keeps the barriers in uniform control flow.
    let j = row_of_workgroup(wid, nwg);
    if (j >= params.len) {
        return;
    }
    var total = 0.0;
    for (var r = lid; r < params.dim; r += REDUCE_WG) {
        let i = r * params.inner + j;
        total += binary_grad(in0[i % params.len_a], in1[i % params.len_b], in2[i]);
    }
    let sum = workgroup_tree_sum(lid, REDUCE_WG, total);
    if (lid == 0u) {
        store0(j, sum);
    }
}

@compute @workgroup_size(WG)
fn unary_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wid, nwg, lid, WG);
    if (i >= params.len) {
        return;
    }
    let x = in0[i];
    switch params.op {
        case 0u: { out0[i] = params.factor * x; }
        case 1u: { out0[i] = x * x; }
        case 2u: { out0[i] = exp(x); }
        default: { out0[i] = log(x); }
    }
}

// in0 = the saved value (x for square and log, y for exp, unused by scale), in2 = dy.
@compute @workgroup_size(WG)
fn unary_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wid, nwg, lid, WG);
    if (i >= params.len) {
        return;
    }
    let dy = in2[i];
    switch params.op {
        case 0u: { store0(i, params.factor * dy); }
        case 1u: { store0(i, 2.0 * in0[i] * dy); }
        case 2u: { store0(i, dy * in0[i]); }
        default: { store0(i, dy / in0[i]); }
    }
}

// One workgroup per element (o, k) of y [outer, inner] (len = outer * inner); the same
// fixed order as binary_backward_reduce.
@compute @workgroup_size(REDUCE_WG)
fn sum_dim_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let j = row_of_workgroup(wid, nwg);
    if (j >= params.len) {
        return;
    }
    let o = j / params.inner;
    let k = j % params.inner;
    let base = o * params.dim * params.inner + k;
    var total = 0.0;
    for (var d = lid; d < params.dim; d += REDUCE_WG) {
        total += in0[base + d * params.inner];
    }
    let sum = workgroup_tree_sum(lid, REDUCE_WG, total);
    if (lid == 0u) {
        // A division, not a multiplication by 1/D: the same rounding as torch.mean.
        out0[j] = sum / params.divisor;
    }
}

// One invocation per element of dx [outer, D, inner]; in2 = dy [outer, inner].
@compute @workgroup_size(WG)
fn sum_dim_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wid, nwg, lid, WG);
    if (i >= params.len) {
        return;
    }
    let o = i / (params.dim * params.inner);
    let k = i % params.inner;
    store0(i, in2[o * params.inner + k] / params.divisor);
}

// One invocation per element of y [outer, count, inner]; in0 = x [outer, D, inner].
@compute @workgroup_size(WG)
fn slice_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wid, nwg, lid, WG);
    if (i >= params.len) {
        return;
    }
    let o = i / (params.count * params.inner);
    let l = (i / params.inner) % params.count;
    let k = i % params.inner;
    out0[i] = in0[(o * params.dim + params.start + l) * params.inner + k];
}

// One invocation per element of dx [outer, D, inner]; in2 = dy [outer, count, inner].
// Elements outside the slice get 0 (nothing to add when accumulating).
@compute @workgroup_size(WG)
fn slice_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wid, nwg, lid, WG);
    if (i >= params.len) {
        return;
    }
    let o = i / (params.dim * params.inner);
    let d = (i / params.inner) % params.dim;
    let k = i % params.inner;
    if (d >= params.start && d < params.start + params.count) {
        store0(i, in2[(o * params.count + d - params.start) * params.inner + k]);
    } else if (params.accumulate == 0u) {
        out0[i] = 0.0;
    }
}
