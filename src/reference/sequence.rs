//! CPU reference of `shaders/sequence.wgsl`.

/// `y[b, t] = x[b, len[b] - 1 - t]` for `t < len[b]`, 0 past it; x `[B, T, D]`.
pub fn reverse_sequence_forward(
    x: &[f64],
    batch: usize,
    steps: usize,
    width: usize,
    lengths: Option<&[usize]>,
) -> Vec<f64> {
    let mut y = vec![0.0; batch * steps * width];
    for b in 0..batch {
        let len = lengths.map_or(steps, |l| l[b]);
        for t in 0..len {
            for d in 0..width {
                y[(b * steps + t) * width + d] = x[(b * steps + len - 1 - t) * width + d];
            }
        }
    }
    y
}

/// The gradient of [`reverse_sequence_forward`]: `dx[b, s] = dy[b, len - 1 - s]` for
/// `s < len`, 0 past it (the padded inputs do not reach the output).
pub fn reverse_sequence_backward(
    grad_y: &[f64],
    batch: usize,
    steps: usize,
    width: usize,
    lengths: Option<&[usize]>,
) -> Vec<f64> {
    let mut grad_x = vec![0.0; batch * steps * width];
    for b in 0..batch {
        let len = lengths.map_or(steps, |l| l[b]);
        for t in 0..len {
            for d in 0..width {
                // y[b, t] = x[b, len - 1 - t]
                grad_x[(b * steps + len - 1 - t) * width + d] += grad_y[(b * steps + t) * width + d];
            }
        }
    }
    grad_x
}
