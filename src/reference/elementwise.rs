//! CPU reference of `shaders/elementwise.wgsl`: pointwise ops, concat/split on the last
//! axis, full reductions and dropout, in plain f64 loops (the dropout mask in the same
//! u32 arithmetic as the shader, so it matches bit for bit).
//!
//! Backward functions return the gradient alone; accumulating into an existing gradient
//! is the caller's `+=`.

// ---- add, mul ----

/// y = a + b (same shapes).
pub fn add_forward(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(a, b)| a + b).collect()
}

/// forward: y = a + b, so da = dy and db = dy. Returns `(da, db)`.
pub fn add_backward(grad_y: &[f64]) -> (Vec<f64>, Vec<f64>) {
    (grad_y.to_vec(), grad_y.to_vec())
}

/// y = a * b (same shapes).
pub fn mul_forward(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(a, b)| a * b).collect()
}

/// forward: y = a * b, so da = dy * b and db = dy * a. Returns `(da, db)`.
pub fn mul_backward(a: &[f64], b: &[f64], grad_y: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let grad_a = grad_y.iter().zip(b).map(|(g, b)| g * b).collect();
    let grad_b = grad_y.iter().zip(a).map(|(g, a)| g * a).collect();
    (grad_a, grad_b)
}

// ---- activations: the backward takes the saved output y ----

/// y = tanh(x).
pub fn tanh_forward(x: &[f64]) -> Vec<f64> {
    x.iter().map(|x| x.tanh()).collect()
}

/// forward: y = tanh(x), so dx = dy * (1 - y^2).
pub fn tanh_backward(y: &[f64], grad_y: &[f64]) -> Vec<f64> {
    y.iter().zip(grad_y).map(|(y, g)| g * (1.0 - y * y)).collect()
}

/// y = 1 / (1 + exp(-x)).
pub fn sigmoid_forward(x: &[f64]) -> Vec<f64> {
    x.iter().map(|x| 1.0 / (1.0 + (-x).exp())).collect()
}

/// forward: y = sigmoid(x), so dx = dy * y * (1 - y).
pub fn sigmoid_backward(y: &[f64], grad_y: &[f64]) -> Vec<f64> {
    y.iter().zip(grad_y).map(|(y, g)| g * y * (1.0 - y)).collect()
}

/// y = max(x, 0).
pub fn relu_forward(x: &[f64]) -> Vec<f64> {
    x.iter().map(|&x| if x < 0.0 { 0.0 } else { x }).collect()
}

/// forward: y = max(x, 0), so dx = dy where y > 0 and 0 elsewhere (0 at x = 0, as PyTorch).
pub fn relu_backward(y: &[f64], grad_y: &[f64]) -> Vec<f64> {
    y.iter()
        .zip(grad_y)
        .map(|(&y, &g)| if y > 0.0 { g } else { 0.0 })
        .collect()
}

// ---- concat and split on the last axis ----

/// a is [R, A], b is [R, B]; returns y [R, A+B] with each row a's row then b's.
pub fn concat_forward(a: &[f64], b: &[f64], cols_a: usize, cols_b: usize) -> Vec<f64> {
    let rows = a.len() / cols_a;
    let mut y = Vec::with_capacity(rows * (cols_a + cols_b));
    for r in 0..rows {
        y.extend_from_slice(&a[r * cols_a..(r + 1) * cols_a]);
        y.extend_from_slice(&b[r * cols_b..(r + 1) * cols_b]);
    }
    y
}

/// forward: y[r, :] = a[r, :] ++ b[r, :], so (da, db) are the two column ranges of dy.
/// This is also split's forward.
pub fn concat_backward(grad_y: &[f64], cols_a: usize, cols_b: usize) -> (Vec<f64>, Vec<f64>) {
    let width = cols_a + cols_b;
    let mut grad_a = Vec::with_capacity(grad_y.len() / width * cols_a);
    let mut grad_b = Vec::with_capacity(grad_y.len() / width * cols_b);
    for row in grad_y.chunks(width) {
        grad_a.extend_from_slice(&row[..cols_a]);
        grad_b.extend_from_slice(&row[cols_a..]);
    }
    (grad_a, grad_b)
}

/// x [R, A+B] -> (a [R, A], b [R, B]): concat's backward.
pub fn split_forward(x: &[f64], cols_a: usize, cols_b: usize) -> (Vec<f64>, Vec<f64>) {
    concat_backward(x, cols_a, cols_b)
}

/// forward: (a, b) = split(x), so dx = concat(da, db).
pub fn split_backward(grad_a: &[f64], grad_b: &[f64], cols_a: usize, cols_b: usize) -> Vec<f64> {
    concat_forward(grad_a, grad_b, cols_a, cols_b)
}

// ---- full reductions ----

/// y = sum of every element.
pub fn sum_forward(x: &[f64]) -> f64 {
    x.iter().sum()
}

/// forward: `y = sum_i x[i]`, so `dx[i] = dy` for every i.
pub fn sum_backward(grad_y: f64, len: usize) -> Vec<f64> {
    vec![grad_y; len]
}

/// y = sum of every element / n.
pub fn mean_forward(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

/// forward: `y = sum_i x[i] / n`, so `dx[i] = dy / n`.
pub fn mean_backward(grad_y: f64, len: usize) -> Vec<f64> {
    vec![grad_y / len as f64; len]
}

// ---- dropout ----

/// Philox4x32-10 (Salmon et al. 2011, as in Random123 and cuRAND): four random words as a
/// pure function of a 128-bit counter and a 64-bit key. The shader's `philox4x32_10`
/// does exactly this with 16-bit partial products.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mul_hi_lo = |a: u32, b: u32| {
        let product = u64::from(a) * u64::from(b);
        ((product >> 32) as u32, product as u32)
    };
    let mut ctr = counter;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            // Weyl sequence key schedule: golden ratio and sqrt(3) - 1.
            k[0] = k[0].wrapping_add(0x9E37_79B9);
            k[1] = k[1].wrapping_add(0xBB67_AE85);
        }
        let (hi0, lo0) = mul_hi_lo(0xD251_1F53, ctr[0]);
        let (hi1, lo1) = mul_hi_lo(0xCD9E_8D57, ctr[2]);
        ctr = [hi1 ^ ctr[1] ^ k[0], lo1, hi0 ^ ctr[3] ^ k[1], lo0];
    }
    ctr
}

/// The keep decisions (true = kept) of `len` elements for dropout probability `p`:
/// element i is kept when the top 24 bits of word i % 4 of
/// Philox(counter = (i / 4, 0, step), key = seed), read as a fraction in [0, 1), are
/// >= p. The comparison is made in f32, where both sides are exact, as in the shader.
pub fn dropout_mask(len: usize, p: f32, seed: u64, step: u64) -> Vec<bool> {
    let key = [seed as u32, (seed >> 32) as u32];
    let mut keep = Vec::with_capacity(len);
    for i in 0..len {
        if i % 4 == 0 {
            let counter = [(i / 4) as u32, 0, step as u32, (step >> 32) as u32];
            let words = philox4x32_10(counter, key);
            for word in words.iter().take(len - i) {
                let uniform = (word >> 8) as f32 * (1.0 / 16_777_216.0);
                keep.push(uniform >= p);
            }
        }
    }
    keep
}

/// The factor kept elements are multiplied by: 1 / (1 - p), computed in f32 as the
/// launcher does, and 0 for p = 1 (everything is dropped).
pub fn dropout_scale(p: f32) -> f32 {
    if p >= 1.0 {
        0.0
    } else {
        1.0 / (1.0 - p)
    }
}

/// y = x * keep / (1 - p) (inverted dropout; zeros for p = 1). Returns `(y, keep)`.
pub fn dropout_forward(x: &[f64], p: f32, seed: u64, step: u64) -> (Vec<f64>, Vec<bool>) {
    let keep = dropout_mask(x.len(), p, seed, step);
    let scale = f64::from(dropout_scale(p));
    let y = x
        .iter()
        .zip(&keep)
        .map(|(&x, &k)| if k { x * scale } else { 0.0 })
        .collect();
    (y, keep)
}

/// forward: y = x * keep / (1 - p), so dx = dy * keep / (1 - p), with the mask
/// regenerated from (seed, step) rather than saved.
pub fn dropout_backward(grad_y: &[f64], p: f32, seed: u64, step: u64) -> Vec<f64> {
    dropout_forward(grad_y, p, seed, step).0
}
