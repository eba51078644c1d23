//! [`VarBuilder`]: what every module constructor needs, carried as one value, after
//! candle's `VarBuilder`: the context, the parameter store, the initialising random
//! stream and the name prefix.
//!
//! ```no_run
//! # fn main() -> tsumugi::Result<()> {
//! use rand::{rngs::StdRng, SeedableRng};
//! use tsumugi::graph::ParamStore;
//! use tsumugi::nn::{embedding, linear, recurrent, CellKind, EmbeddingConfig, RecurrentConfig, VarBuilder};
//!
//! let ctx = tsumugi::Context::new()?;
//! let (mut store, mut rng) = (ParamStore::new(), StdRng::seed_from_u64(0));
//! let mut vb = VarBuilder::new(&ctx, &mut store, &mut rng);
//! let emb = embedding(100, 32, EmbeddingConfig { padding_idx: Some(0) }, vb.pp("embedding"))?;
//! let lstm = recurrent(RecurrentConfig::new(CellKind::Lstm, 32, 64), vb.pp("lstm"))?;
//! let fc = linear(64, 2, vb.pp("fc"))?;
//! // Parameters: embedding.weight, lstm.weight_ih_l0, ..., fc.weight, fc.bias. An empty
//! // prefix gives PyTorch's bare names: `linear(3, 2, vb)` registers `weight` and `bias`.
//! # Ok(())
//! # }
//! ```

use rand::rngs::StdRng;

use crate::graph::{ParamId, ParamStore};
use crate::{Context, Result, Tensor};

/// The context, store, random stream and name prefix a module is built with. `pp("name")`
/// gives the builder of a sub-module, whose parameters are named `prefix.name.*`.
pub struct VarBuilder<'a> {
    ctx: &'a Context,
    store: &'a mut ParamStore,
    rng: &'a mut StdRng,
    prefix: String,
}

/// `prefix.name`, or either alone when the other is empty (PyTorch's bare names).
pub(crate) fn join(prefix: &str, name: &str) -> String {
    match (prefix.is_empty(), name.is_empty()) {
        (true, _) => name.to_string(),
        (_, true) => prefix.to_string(),
        _ => format!("{prefix}.{name}"),
    }
}

impl<'a> VarBuilder<'a> {
    /// A builder with an empty prefix: modules built with it get PyTorch's bare names.
    pub fn new(ctx: &'a Context, store: &'a mut ParamStore, rng: &'a mut StdRng) -> Self {
        Self::with_prefix(ctx, store, rng, "")
    }

    /// A builder whose parameters are named `prefix.*`.
    pub fn with_prefix(ctx: &'a Context, store: &'a mut ParamStore, rng: &'a mut StdRng, prefix: &str) -> Self {
        VarBuilder {
            ctx,
            store,
            rng,
            prefix: prefix.to_string(),
        }
    }

    /// The builder of a sub-module named `name` (PyTorch's attribute name): it borrows
    /// this one, so sub-modules are built one after another.
    pub fn pp(&mut self, name: &str) -> VarBuilder<'_> {
        VarBuilder {
            ctx: self.ctx,
            store: &mut *self.store,
            rng: &mut *self.rng,
            prefix: join(&self.prefix, name),
        }
    }

    /// The name prefix (empty at the top).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The state-dict name of this module's parameter `leaf`.
    pub fn name(&self, leaf: &str) -> String {
        join(&self.prefix, leaf)
    }

    /// The context the parameters live on.
    pub fn context(&self) -> &'a Context {
        self.ctx
    }

    /// The store the parameters go into.
    pub fn store(&mut self) -> &mut ParamStore {
        self.store
    }

    /// Registers `value` as the parameter `leaf` of this module.
    pub fn add(&mut self, leaf: &str, value: Tensor, trainable: bool) -> Result<ParamId> {
        self.store.add(&self.name(leaf), value, trainable)
    }

    /// Registers the parameter `leaf` of `shape`, U(-bound, bound) from the builder's random
    /// stream (PyTorch's rule for Linear and recurrent weights). The size is checked
    /// against the device before any host memory is filled.
    pub fn uniform(&mut self, leaf: &str, shape: &[usize], bound: f32) -> Result<ParamId> {
        let name = self.name(leaf);
        let value = super::uniform(self.ctx, self.rng, &name, shape, bound)?;
        self.store.add(&name, value, true)
    }

    /// The random stream, for initialisations of a module's own.
    pub fn rng(&mut self) -> &mut StdRng {
        self.rng
    }
}
