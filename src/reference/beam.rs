//! CPU reference of `shaders/beam.wgsl`.

/// Candidate scores `[rows, vocab]`: `scores[r] + log_softmax(logits[r])` for a live row,
/// `scores[r]` at `eos` and `-inf` elsewhere for a finished row, `-inf` for rows
/// `r % beam > 0` when `first`.
pub fn beam_expand(
    logits: &[f64],
    scores: &[f64],
    finished: &[bool],
    vocab: usize,
    beam: usize,
    eos: usize,
    first: bool,
) -> Vec<f64> {
    let mut candidates = vec![f64::NEG_INFINITY; logits.len()];
    for (row, (out, x)) in candidates.chunks_mut(vocab).zip(logits.chunks(vocab)).enumerate() {
        if finished[row] {
            out[eos] = scores[row];
            continue;
        }
        if first && row % beam != 0 {
            continue;
        }
        let max = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let log_sum = x.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
        for (o, v) in out.iter_mut().zip(x) {
            *o = scores[row] + v - max - log_sum;
        }
    }
    candidates
}

/// The picks' bookkeeping: for pick `j` of sentence `b` with index `i` into the
/// sentence's `beam * vocab` candidates, row `b * beam + j` gets token `i % vocab`,
/// parent `b * beam + i / vocab`, and is finished if its parent was or the token is
/// `eos`. Returns (tokens, parents, finished).
pub fn beam_select(
    picks: &[usize],
    finished: &[bool],
    vocab: usize,
    beam: usize,
    eos: usize,
) -> (Vec<usize>, Vec<usize>, Vec<bool>) {
    let mut tokens = Vec::with_capacity(picks.len());
    let mut parents = Vec::with_capacity(picks.len());
    let mut finished_out = Vec::with_capacity(picks.len());
    for (row, &pick) in picks.iter().enumerate() {
        let parent = row / beam * beam + pick / vocab;
        let token = pick % vocab;
        tokens.push(token);
        parents.push(parent);
        finished_out.push(finished[parent] || token == eos);
    }
    (tokens, parents, finished_out)
}

/// The `k` best of `values` in descending order, the lower index first among equals
/// (top_k's order for finite values).
pub fn top_k(values: &[f64], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    order.truncate(k);
    order
}
