//! What a loss is, PyTorch's way: [`CrossEntropy`] with `ignore_index`, reduction and label
//! smoothing. Plain descriptions with no GPU in them, shared by the launcher
//! ([`crate::kernels::cross_entropy`]), the tape ([`crate::graph::Graph::cross_entropy`]) and
//! the CPU reference ([`crate::reference::cross_entropy`]).

/// How the per-row losses are combined into the scalar loss.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reduction {
    /// Divided by the number of non-ignored targets (PyTorch's default). Every target
    /// ignored gives NaN, as PyTorch's 0 / 0.
    #[default]
    Mean,
    /// The plain sum over rows.
    Sum,
}

/// The loss's options, PyTorch's names.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CrossEntropy {
    /// Rows whose target equals this contribute neither loss nor gradient, and are not
    /// counted by [`Reduction::Mean`]. PyTorch's default -100 cannot be a u32 id, so
    /// the default here is `None`; padding id 0 is the usual choice.
    pub ignore_index: Option<u32>,
    /// Mean (default) or Sum.
    pub reduction: Reduction,
    /// In `[0, 1)`: `loss = (1 - ls) * nll + ls * mean over classes of -log p`.
    pub label_smoothing: f32,
}
