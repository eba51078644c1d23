// sequence.wgsl: reorderings along the time axis of batch-first sequences.
//
// reverse_sequence   y[b, t] = x[b, len[b] - 1 - t] for t < len[b], 0 for t >= len[b]
//   (each row reversed within its own length, as PyTorch's packed sequences run the
//   backward direction of a bidirectional layer). Letters: B batch, T time, D features.
//   The op is its own adjoint on the real steps and sends nothing to or from the padded
//   ones, so its backward is the same kernel applied to dy (into dx, optionally added).

struct Params {
    batch: u32,
    steps: u32,
    width: u32,
    has_lengths: u32,
    accumulate: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;            // [B, T, D]
@group(0) @binding(1) var<storage, read> lengths: array<u32>;      // [B]
@group(0) @binding(2) var<storage, read_write> y: array<f32>;      // [B, T, D]
@group(0) @binding(3) var<uniform> params: Params;

override WG: u32 = 64u;

@compute @workgroup_size(WG, 1, 1)
fn reverse_sequence(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = flat_index(wid, nwg, lid, WG);
    let steps = params.steps;
    let width = params.width;
    if (i >= params.batch * steps * width) {
        return;
    }
    let b = i / (steps * width);
    let t = (i / width) % steps;
    var len = steps;
    if (params.has_lengths != 0u) {
        len = min(lengths[b], steps);
    }
    var value = 0.0;
    if (t < len) {
        value = x[(b * steps + (len - 1u - t)) * width + i % width];
    }
    if (params.accumulate != 0u) {
        value += y[i];
    }
    y[i] = value;
}
