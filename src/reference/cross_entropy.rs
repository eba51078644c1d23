//! CPU reference of `shaders/cross_entropy.wgsl`: PyTorch's `CrossEntropyLoss` and its
//! gradient, argmax and top-k, in plain f64 loops.

use std::cmp::Ordering;

use crate::loss::{CrossEntropy, Reduction};

/// What [`cross_entropy_forward`] computes, named as the kernel's outputs.
#[derive(Clone, Debug)]
pub struct CrossEntropyReference {
    /// The reduced loss.
    pub loss: f64,
    /// `[N, V]`: d loss / d logits.
    pub dlogits: Vec<f64>,
    /// `[N]`: per-row losses (0 ignored, NaN invalid).
    pub row_loss: Vec<f64>,
    /// `[error flag (1 + first invalid row, or 0), count of non-ignored targets]`.
    pub status: [u32; 2],
}

/// logits is `[N, V]`, targets `[N]`; returns the loss, its gradient and the status.
pub fn cross_entropy_forward(
    op: &CrossEntropy,
    logits: &[f64],
    targets: &[u32],
    vocab: usize,
) -> CrossEntropyReference {
    let n = targets.len();
    let v = vocab;
    let ls = f64::from(op.label_smoothing);
    let mut row_loss = vec![0.0; n];
    let mut dlogits = vec![0.0; n * v];
    let mut count = 0u32;
    let mut first_bad = None;
    for (row, &target) in targets.iter().enumerate() {
        if Some(target) == op.ignore_index {
            continue;
        }
        count += 1;
        if target as usize >= v {
            first_bad.get_or_insert(row);
            row_loss[row] = f64::NAN;
            continue;
        }
        let x = &logits[row * v..(row + 1) * v];
        // lse = log sum_c exp(x_c), shifted by the max so exp never overflows.
        let max = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = x.iter().map(|&xc| (xc - max).exp()).sum();
        let lse = max + sum.ln();
        // loss_n = (1 - ls) (lse - x_t) + ls * mean_c (lse - x_c)
        let nll = lse - x[target as usize];
        let mut loss = (1.0 - ls) * nll;
        if ls > 0.0 {
            let mean_x = x.iter().sum::<f64>() / v as f64;
            loss += ls * (lse - mean_x);
        }
        row_loss[row] = loss;
    }
    let total: f64 = row_loss.iter().sum();
    // Mean divides the total, and so every gradient, by the count (0 / 0 = NaN).
    let (loss, scale) = match op.reduction {
        Reduction::Mean => (total / f64::from(count), 1.0 / f64::from(count)),
        Reduction::Sum => (total, 1.0),
    };
    for (row, &target) in targets.iter().enumerate() {
        if Some(target) == op.ignore_index || target as usize >= v {
            continue; // no gradient through ignored or invalid rows
        }
        let x = &logits[row * v..(row + 1) * v];
        let max = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = x.iter().map(|&xc| (xc - max).exp()).sum();
        // d loss_n / d x_c = p_c - (1 - ls) [c = t] - ls / V
        for c in 0..v {
            let p = (x[c] - max).exp() / sum;
            let onehot = if c == target as usize { 1.0 - ls } else { 0.0 };
            dlogits[row * v + c] = scale * (p - onehot - ls / v as f64);
        }
    }
    let error = first_bad.map_or(0, |row| row as u32 + 1);
    CrossEntropyReference {
        loss,
        dlogits,
        row_loss,
        status: [error, count],
    }
}

/// The decoding order: larger first, NaN above every number, lower index first on ties.
fn decoding_order(a: (f64, usize), b: (f64, usize)) -> Ordering {
    let by_value = match (a.0.is_nan(), b.0.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => b.0.partial_cmp(&a.0).unwrap_or(Ordering::Equal),
    };
    by_value.then(a.1.cmp(&b.1))
}

/// logits is `[N, V]`; returns `[N]`: the first index of each row's maximum.
pub fn argmax(logits: &[f64], vocab: usize) -> Vec<u32> {
    top_k(logits, vocab, 1).1
}

/// logits is [N, V]; returns values and indices [N, k], each row sorted by the decoding order.
pub fn top_k(logits: &[f64], vocab: usize, k: usize) -> (Vec<f64>, Vec<u32>) {
    let mut values = Vec::new();
    let mut indices = Vec::new();
    for row in logits.chunks(vocab) {
        let mut order: Vec<(f64, usize)> = row.iter().copied().zip(0..).collect();
        order.sort_by(|&a, &b| decoding_order(a, b));
        for &(value, index) in &order[..k] {
            values.push(value);
            indices.push(index as u32);
        }
    }
    (values, indices)
}
