//! How a generator draws its tokens: [`Sampling`] (temperature, top-k, seed). A plain
//! description with no GPU in it, shared by the launcher ([`crate::kernels::sampling`]), the
//! game generator ([`crate::nn::generator`]) and the CPU reference
//! ([`crate::reference::sampling`]).

/// How tokens are drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// Divides the logits before the softmax: below 1 sharpens, above 1 flattens. Must
    /// be finite and > 0 (a tiny temperature is effectively greedy).
    pub temperature: f32,
    /// Keep only the k most likely tokens (1 is greedy); `None` keeps all of them.
    pub top_k: Option<usize>,
    /// The key of the random stream.
    pub seed: u64,
}

impl Default for Sampling {
    /// Temperature 1, every token, seed 0.
    fn default() -> Self {
        Sampling {
            temperature: 1.0,
            top_k: None,
            seed: 0,
        }
    }
}
