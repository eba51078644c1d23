// optim.wgsl: optimizer steps and global gradient-norm clipping, as torch.optim and
// torch.nn.utils. Element-wise over one parameter tensor of L elements per dispatch.
//
// adam_step               g = grad + wd p;  m = lerp(m, g, 1 - b1);  v = b2 v + (1 - b2) g^2;
//                         p -= step_size * m / (sqrt(v) / sqrt(1 - b2^t) + eps),
//                         step_size = lr / (1 - b1^t)     (bias corrections from the host, in f64)
// sgd_step                d = grad + wd p;  buf = d on the first step, else mu buf + (1 - dampening) d;
//                         d = d + mu buf (nesterov) or buf;  p -= lr d    (mu = 0: p -= lr d)
// clip_grad_norm_partial  partials[first + w] = sum of g_i^2 over chunk w of one gradient
// clip_grad_norm_total    total_norm = sqrt(sum of every partial)                (one workgroup)
// clip_grad_norm_scale    g *= min(1, max_norm / (total_norm + 1e-6))
// Guarded adam_step / sgd_step do nothing when guard[0] (the step's gradient norm from
// clip_grad_norm_total) is NaN or Inf: the training guard, decided on the GPU.
// adam_probe / sgd_probe  run before the guarded steps of every parameter: same math,
//                         no write but guard[0] = UPDATE_REFUSED (a NaN) where a new value
//                         would be NaN or Inf, so that no parameter is updated at all.
//
// Nothing is saved for a backward: these are the ends of a training step. The state
// tensors (exp_avg, exp_avg_sq, momentum_buffer) are updated in place beside the
// parameter. Clipping never reads back: the norm is a [1] tensor that the scale pass
// reads on the GPU, and the caller may read it later.
//
// Determinism: the norm is summed per chunk of CLIP_WG * CLIP_ITEMS elements by a fixed
// tree, the chunks' partials in a fixed order by one workgroup; no atomics, so the norm
// depends only on the gradients and the list's order.

struct Params {
    len: u32,
    // clip_grad_norm_partial: index of this tensor's first partial.
    first_partial: u32,
    // clip_grad_norm_total: number of partials.
    partials: u32,
    // sgd_step: FLAG_* bits.
    flags: u32,
    lr: f32,
    // adam: beta1; sgd: momentum.
    beta1: f32,
    beta2: f32,
    // adam: the lerp weight 1 - beta1; sgd: 1 - dampening. From the host in f64.
    one_minus_beta1: f32,
    one_minus_beta2: f32,
    eps: f32,
    weight_decay: f32,
    step_size: f32,
    bias_correction2_sqrt: f32,
    max_norm: f32,
    _pad0: u32,
    _pad1: u32,
}

const FLAG_MOMENTUM: u32 = 1u;
const FLAG_FIRST_STEP: u32 = 2u;
const FLAG_NESTEROV: u32 = 4u;
// adam_step, sgd_step: skip the whole update (parameter and state) when guard[0], the
// step's gradient norm, is not finite: a NaN or Inf step never reaches the weights.
const FLAG_GUARDED: u32 = 8u;

@group(0) @binding(0) var<storage, read_write> param: array<f32>;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
// adam: exp_avg; sgd: momentum_buffer (a placeholder without momentum).
@group(0) @binding(2) var<storage, read_write> state0: array<f32>;
// adam: exp_avg_sq.
@group(0) @binding(3) var<storage, read_write> state1: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;
// clip: the gradient being measured, then scaled in place.
@group(0) @binding(5) var<storage, read_write> clip_grad: array<f32>;
@group(0) @binding(6) var<storage, read_write> partials: array<f32>;
@group(0) @binding(7) var<storage, read_write> total_norm: array<f32>;
// adam_step, sgd_step with FLAG_GUARDED: [1], the gradient norm of the step.
@group(0) @binding(8) var<storage, read> guard: array<f32>;
// adam_probe, sgd_probe: the same [1] tensor, which they may set to UPDATE_REFUSED.
@group(0) @binding(9) var<storage, read_write> verdict: array<atomic<u32>>;

// The bits of the quiet NaN a probe stores in the verdict (kernels::optim::UPDATE_REFUSED).
const UPDATE_REFUSED: u32 = 0x7fc0f1e5u;

// A guarded update whose guard is NaN or Inf does nothing.
fn update_skipped() -> bool {
    return (params.flags & FLAG_GUARDED) != 0u && !is_finite_f32(guard[0]);
}

// Invocations of the element-wise passes and of the norm's trees (a power of two <= 256).
override WG: u32 = 256u;
override CLIP_WG: u32 = 256u;
// Elements per invocation of clip_grad_norm_partial: fewer partials to sum serially.
override CLIP_ITEMS: u32 = 16u;


// Adam's new (param, exp_avg, exp_avg_sq) of element i.
fn adam_update(i: u32) -> vec3<f32> {
    let p = param[i];
    var g = grad[i];
    // weight_decay is L2 added to the gradient (Adam, not AdamW).
    if (params.weight_decay != 0.0) {
        g += params.weight_decay * p;
    }
    // exp_avg.lerp_(g, w) as PyTorch evaluates it: from the nearer end, so w near 1
    // (beta1 near 0) does not lose m's digits.
    let m_old = state0[i];
    let w = params.one_minus_beta1;
    let m = select(g - (g - m_old) * (1.0 - w), m_old + w * (g - m_old), w < 0.5);
    let v = state1[i] * params.beta2 + params.one_minus_beta2 * g * g;
    let denom = sqrt(v) / params.bias_correction2_sqrt + params.eps;
    return vec3<f32>(p - params.step_size * (m / denom), m, v);
}

// SGD's new (param, momentum_buffer) of element i (the buffer is unused without momentum).
fn sgd_update(i: u32) -> vec2<f32> {
    let p = param[i];
    var d = grad[i];
    if (params.weight_decay != 0.0) {
        d += params.weight_decay * p;
    }
    var buf = 0.0;
    if ((params.flags & FLAG_MOMENTUM) != 0u) {
        let mu = params.beta1;
        // PyTorch starts the buffer at the first step's d (no dampening), a host flag
        // because a zero buffer cannot tell "first step" from "zero so far".
        buf = d;
        if ((params.flags & FLAG_FIRST_STEP) == 0u) {
            buf = mu * state0[i] + params.one_minus_beta1 * d;
        }
        d = select(buf, d + mu * buf, (params.flags & FLAG_NESTEROV) != 0u);
    }
    return vec2<f32>(p - params.lr * d, buf);
}

@compute @workgroup_size(WG)
fn adam_step(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index_gid(gid, nwg, WG);
    if (i >= params.len || update_skipped()) {
        return;
    }
    let u = adam_update(i);
    param[i] = u.x;
    state0[i] = u.y;
    state1[i] = u.z;
}

@compute @workgroup_size(WG)
fn sgd_step(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index_gid(gid, nwg, WG);
    if (i >= params.len || update_skipped()) {
        return;
    }
    let u = sgd_update(i);
    if ((params.flags & FLAG_MOMENTUM) != 0u) {
        state0[i] = u.y;
    }
    param[i] = u.x;
}

// The probes write nothing but the verdict: where the step would make an element of the
// parameter or its state NaN or Inf while the verdict (the step's gradient norm) is still
// finite, they set it to UPDATE_REFUSED, a NaN, so that the guarded steps that follow
// skip every parameter. Many invocations may store the same bits; the store is atomic.
fn refuse_update() {
    if (is_finite_f32(bitcast<f32>(atomicLoad(&verdict[0])))) {
        atomicStore(&verdict[0], UPDATE_REFUSED);
    }
}

@compute @workgroup_size(WG)
fn adam_probe(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index_gid(gid, nwg, WG);
    if (i >= params.len) {
        return;
    }
    let u = adam_update(i);
    if (!(is_finite_f32(u.x) && is_finite_f32(u.y) && is_finite_f32(u.z))) {
        refuse_update();
    }
}

@compute @workgroup_size(WG)
fn sgd_probe(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index_gid(gid, nwg, WG);
    if (i >= params.len) {
        return;
    }
    let u = sgd_update(i);
    if (!(is_finite_f32(u.x) && is_finite_f32(u.y))) {
        refuse_update();
    }
}

@compute @workgroup_size(CLIP_WG)
fn clip_grad_norm_partial(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let chunk = row_of_workgroup(wid, nwg);
    let start = chunk * CLIP_WG * CLIP_ITEMS;
    // Uniform (from workgroup_id): the spill past 65535 chunks returns before any barrier.
    if (start >= params.len) {
        return;
    }
    var sum = 0.0;
    for (var j = 0u; j < CLIP_ITEMS; j++) {
        // Neighbouring invocations read neighbouring elements.
        let i = start + j * CLIP_WG + lid;
        if (i < params.len) {
            let g = clip_grad[i];
            sum += g * g;
        }
    }
    let total = workgroup_tree_sum(lid, CLIP_WG, sum);
    if (lid == 0u) {
        partials[params.first_partial + chunk] = total;
    }
}

@compute @workgroup_size(CLIP_WG)
fn clip_grad_norm_total(@builtin(local_invocation_index) lid: u32) {
    var sum = 0.0;
    for (var j = lid; j < params.partials; j += CLIP_WG) {
        sum += partials[j];
    }
    let total = workgroup_tree_sum(lid, CLIP_WG, sum);
    if (lid == 0u) {
        total_norm[0] = sqrt(total);
    }
}

@compute @workgroup_size(WG)
fn clip_grad_norm_scale(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index_gid(gid, nwg, WG);
    if (i >= params.len) {
        return;
    }
    let coef = params.max_norm / (total_norm[0] + 1e-6);
    // torch.clamp(coef, max=1) keeps a NaN, so a NaN norm makes every gradient NaN (as
    // PyTorch with error_if_nonfinite=False); WGSL's min would be free to drop it.
    let clamped = select(min(coef, 1.0), coef, is_nan_f32(coef));
    clip_grad[i] = clip_grad[i] * clamped;
}
