//! CPU reference of `shaders/embedding.wgsl`: plain loops in f64. The oracle of the
//! kernel tests.

/// ids `[N]` (any shape, flattened), weight `[V, E]`; returns out `[N, E]` with
/// `out[n, :] = weight[ids[n], :]`. An id >= V gives a row of zeros, as the shader's guard.
pub fn embedding_forward(ids: &[u32], weight: &[f64], embed: usize) -> Vec<f64> {
    let vocab = weight.len() / embed;
    let mut out = vec![0.0; ids.len() * embed];
    for (n, &id) in ids.iter().enumerate() {
        let id = id as usize;
        if id < vocab {
            out[n * embed..(n + 1) * embed].copy_from_slice(&weight[id * embed..(id + 1) * embed]);
        }
    }
    out
}

/// The gradient of the weight `[V, E]` given grad_out `[N, E]`:
/// forward: `out[n, e] = weight[ids[n], e]`, so `dW[v, e]` = the sum over n with
/// `ids[n] == v` of `dout[n, e]`, summed in increasing n (the kernel's order). The `padding_idx` row gets no
/// gradient (PyTorch's `nn.Embedding(padding_idx=...)`); ids >= V contribute nothing.
pub fn embedding_backward(
    ids: &[u32],
    grad_out: &[f64],
    vocab: usize,
    embed: usize,
    padding_idx: Option<u32>,
) -> Vec<f64> {
    let mut grad_weight = vec![0.0; vocab * embed];
    for (n, &id) in ids.iter().enumerate() {
        if Some(id) == padding_idx || id as usize >= vocab {
            continue;
        }
        let id = id as usize;
        for e in 0..embed {
            grad_weight[id * embed + e] += grad_out[n * embed + e];
        }
    }
    grad_weight
}
