//! Reference of `shaders/sampling.wgsl`: softmax with temperature, top-k filter and a
//! seeded inverse-CDF draw per row, in f64 with the kernel's random numbers.

use super::elementwise::philox4x32_10;

/// Word 1 of the sampling counter (the shader's `SAMPLE_TAG`, "SAMP").
pub const SAMPLE_TAG: u32 = 0x5341_4D50;

/// The uniform number in [0, 1) that row (stream) `row` draws with at `step`: the top
/// 24 bits of word 0 of Philox4x32-10(counter = (row, SAMPLE_TAG, step lo, step hi),
/// key = seed), exact in f32 as in the shader.
pub fn sample_uniform(seed: u64, step: u64, row: usize) -> f64 {
    let counter = [row as u32, SAMPLE_TAG, step as u32, (step >> 32) as u32];
    let word = philox4x32_10(counter, [seed as u32, (seed >> 32) as u32])[0];
    f64::from(word >> 8) / 16_777_216.0
}

/// What [`sample_tokens`] returns.
#[derive(Clone, Debug)]
pub struct SampleReference {
    /// `[N, V]`: the sampled distribution, 0 outside the top k.
    pub probs: Vec<f64>,
    /// `[N]`: the drawn token of each row.
    pub tokens: Vec<u32>,
    /// `[N]`: the uniform number each row drew with.
    pub uniforms: Vec<f64>,
}

/// logits `[N, V]`. For each row: m = max x; the kept set is the first k in decoding
/// order (larger x first, lower index first on ties); `w_c = exp((x_c - m) *
/// inv_temperature)` for kept c, else 0; `probs = w / sum w`; the token is the first c
/// whose cumulative probability exceeds u (the last kept c if rounding leaves none).
/// `inv_temperature` is `1 / T` as the launcher computes it, in f32.
pub fn sample_tokens(
    logits: &[f64],
    vocab: usize,
    inv_temperature: f32,
    k: usize,
    seed: u64,
    step: u64,
) -> SampleReference {
    let inv_t = f64::from(inv_temperature);
    let mut out = SampleReference {
        probs: Vec::with_capacity(logits.len()),
        tokens: Vec::new(),
        uniforms: Vec::new(),
    };
    for (row, x) in logits.chunks(vocab).enumerate() {
        let mut order: Vec<usize> = (0..vocab).collect();
        order.sort_by(|&a, &b| x[b].total_cmp(&x[a]).then(a.cmp(&b)));
        let mut kept = vec![false; vocab];
        for &c in &order[..k.min(vocab)] {
            kept[c] = true;
        }
        let m = x[order[0]];
        let w: Vec<f64> = (0..vocab)
            .map(|c| if kept[c] { ((x[c] - m) * inv_t).exp() } else { 0.0 })
            .collect();
        let total: f64 = w.iter().sum();
        let u = sample_uniform(seed, step, row);
        let mut acc = 0.0;
        let mut token = None;
        for (c, &p) in w.iter().enumerate() {
            if p > 0.0 {
                acc += p / total;
                if token.is_none() && u < acc {
                    token = Some(c);
                }
            }
        }
        let last_kept = (0..vocab).rev().find(|&c| w[c] > 0.0).unwrap_or(0);
        out.tokens.push(token.unwrap_or(last_kept) as u32);
        out.uniforms.push(u);
        out.probs.extend(w.iter().map(|p| p / total));
    }
    out
}
