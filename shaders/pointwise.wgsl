// pointwise.wgsl: the tape's arithmetic. Broadcasting binary ops, unary maps, sums over
// one dimension and slices along one dimension, each a forward and a backward entry point.
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
// Saved for backward: mul and div their operands; square and log their input x; exp its
// output y; scale nothing. Every gradient output honours `accumulate` (add into what it
// holds; an overwrite never reads the old value, so a NaN-filled output cannot leak in).
//
// Determinism: each output element is written by exactly one invocation, and the sums run
// in one workgroup per output element in a fixed order (below), so results are bitwise
// reproducible. No atomics.

struct Params {
    // Elements the invocations walk (y, dx, or the reduction's outputs).
    len: u32,
    accumulate: u32,
    // binary: 0 add, 1 sub, 2 mul, 3 div;  unary: 0 scale, 1 square, 2 exp, 3 log.
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
    _pad1: u32,
    _pad2: u32,
}

// Bindings are shared by the entry points; each one's KernelSpec lists those it uses.
//   in0: a, x, or the saved value of a unary backward;  in1: b;  in2: dy
//   out0: y, da, db or dx
@group(0) @binding(0) var<storage, read> in0: array<f32>;
@group(0) @binding(1) var<storage, read> in1: array<f32>;
@group(0) @binding(2) var<storage, read> in2: array<f32>;
@group(0) @binding(3) var<storage, read_write> out0: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

override WG: u32 = 256u;
// The reductions run one workgroup of this many invocations (a power of two) per output.
override REDUCE_WG: u32 = 256u;

// Writes an output element, adding the old value when accumulating.
fn store0(i: u32, value: f32) {
    if (params.accumulate != 0u) {
        out0[i] += value;
    } else {
        out0[i] = value;
    }
}

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
