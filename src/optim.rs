//! What an optimizer step is, PyTorch's way: [`Adam`] and [`Sgd`] with PyTorch's names and
//! defaults. Plain descriptions with no GPU in them, shared by the launchers
//! ([`crate::kernels::optim`]), the tape ([`crate::graph::Graph::adam_step`]) and the CPU
//! references ([`crate::reference::optim`]).

/// `torch.optim.Adam` (no AMSGrad): the defaults are PyTorch's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Adam {
    /// Learning rate, > 0.
    pub lr: f64,
    /// `(beta1, beta2)`, each in `[0, 1)`.
    pub betas: (f64, f64),
    /// Added to the denominator, >= 0.
    pub eps: f64,
    /// L2 penalty added to the gradient (not AdamW's decoupled decay), >= 0.
    pub weight_decay: f64,
}

impl Default for Adam {
    fn default() -> Self {
        Adam {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// `torch.optim.SGD`: the defaults are PyTorch's (plain SGD, lr 1e-3).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sgd {
    /// Learning rate, > 0.
    pub lr: f64,
    /// Momentum factor, >= 0; 0 needs no momentum buffer.
    pub momentum: f64,
    /// Dampening of the momentum, finite; must be 0 with `nesterov`.
    pub dampening: f64,
    /// L2 penalty added to the gradient, >= 0.
    pub weight_decay: f64,
    /// Nesterov momentum (needs `momentum > 0` and `dampening == 0`, as PyTorch).
    pub nesterov: bool,
}

impl Default for Sgd {
    fn default() -> Self {
        Sgd {
            lr: 1e-3,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
        }
    }
}
