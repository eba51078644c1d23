//! Parameters and their gradients: [`ParamStore`] holds each parameter under its PyTorch
//! state-dict name with its gradient buffer and optimizer state; [`ParamId`] names one.

use crate::{DType, Error, Result, Tensor};

/// A parameter: its value, its gradient buffer, whether the optimizer updates it.
#[derive(Debug)]
pub(super) struct Param {
    pub(super) name: String,
    pub(super) value: Tensor,
    pub(super) grad: Tensor,
    /// The gradient holds a contribution since the last `zero_grad` (PyTorch: not None).
    pub(super) grad_live: bool,
    pub(super) trainable: bool,
    /// The optimizer's state, made at its first step: Adam's first and second moments, or
    /// SGD's momentum buffer (twice; a parameter is trained by one optimizer).
    pub(super) moments: Option<(Tensor, Tensor)>,
}

/// Handle of a parameter in its [`ParamStore`]: the store's identity and the index there,
/// so that a handle of another store is an error, never another store's parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ParamId {
    store: usize,
    pub(super) index: usize,
}

/// The identity the next [`ParamStore`] gets.
static NEXT_STORE_ID: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

/// The parameters of a model, by PyTorch state-dict name.
#[derive(Debug)]
pub struct ParamStore {
    /// This store's identity (see [`ParamId`]).
    id: usize,
    pub(super) params: Vec<Param>,
}

impl Default for ParamStore {
    fn default() -> Self {
        ParamStore {
            id: NEXT_STORE_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            params: Vec::new(),
        }
    }
}

impl ParamStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The index of `id` here, or `InvalidArgument` for a handle of another store.
    pub(crate) fn index(&self, id: ParamId) -> Result<usize> {
        if id.store != self.id || id.index >= self.params.len() {
            return Err(Error::invalid(format!(
                "parameter handle {} of store #{} used with store #{}, which holds {} parameters \
                 (a ParamId belongs to the ParamStore that made it)",
                id.index,
                id.store,
                self.id,
                self.params.len()
            )));
        }
        Ok(id.index)
    }

    /// The index of `id`, for the accessors that return references; a handle of another
    /// store is a programming error there, named rather than an out-of-bounds index.
    fn index_or_panic(&self, id: ParamId) -> usize {
        match self.index(id) {
            Ok(index) => index,
            Err(err) => panic!("{err}"),
        }
    }

    /// Adds a parameter initialised with `value` (its gradient buffer is made alongside).
    pub fn add(&mut self, name: &str, value: Tensor, trainable: bool) -> Result<ParamId> {
        if self.params.iter().any(|p| p.name == name) {
            return Err(Error::invalid(format!("parameter {name} already exists")));
        }
        value.check_dtype(name, DType::F32)?;
        let grad = Tensor::zeros(value.context(), value.shape(), DType::F32)?;
        self.params.push(Param {
            name: name.to_string(),
            value,
            grad,
            grad_live: false,
            trainable,
            moments: None,
        });
        Ok(ParamId {
            store: self.id,
            index: self.params.len() - 1,
        })
    }

    /// The parameter's current value.
    pub fn value(&self, id: ParamId) -> &Tensor {
        &self.params[self.index_or_panic(id)].value
    }

    /// The value of `id`, or None when this store holds no such parameter (an id from
    /// another store).
    pub(crate) fn get(&self, id: ParamId) -> Option<&Tensor> {
        self.index(id).ok().map(|i| &self.params[i].value)
    }

    /// The parameter's gradient, if a backward pass wrote one since `zero_grad`.
    pub fn grad(&self, id: ParamId) -> Option<&Tensor> {
        let p = &self.params[self.index_or_panic(id)];
        p.grad_live.then_some(&p.grad)
    }

    /// The parameter's name.
    pub fn name(&self, id: ParamId) -> &str {
        &self.params[self.index_or_panic(id)].name
    }

    /// Every parameter: its name, value and optimizer state, in order of registration.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Tensor, Option<(&Tensor, &Tensor)>)> {
        self.params
            .iter()
            .map(|p| (p.name.as_str(), &p.value, p.moments.as_ref().map(|(a, b)| (a, b))))
    }

    /// Replaces a parameter's optimizer state (a loaded checkpoint's).
    pub fn set_optimizer_state(&mut self, id: ParamId, state: Option<(Tensor, Tensor)>) {
        let index = self.index_or_panic(id);
        self.params[index].moments = state;
    }

    /// The parameter registered under `name`.
    pub fn find(&self, name: &str) -> Option<ParamId> {
        let store = self.id;
        self.params
            .iter()
            .position(|p| p.name == name)
            .map(|index| ParamId { store, index })
    }

    /// Forgets every gradient (PyTorch's `zero_grad(set_to_none=True)`): the next
    /// backward overwrites instead of adding. Costs no GPU work.
    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.grad_live = false;
        }
    }

    /// Reads every parameter and its optimizer state back (blocking) and checks they are
    /// finite: `Err(NonFiniteValue)` names the first parameter holding NaN or Inf (optimizer
    /// state as `optimizer.{name}.state0`/`state1`, as in a checkpoint) and the element.
    /// For after a load or before a save; training itself is guarded per step (see
    /// [`Graph::adam_step_guarded`](super::Graph::adam_step_guarded)). Not on wasm32 (it blocks).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn check_finite(&self) -> Result<()> {
        for p in &self.params {
            p.value.check_finite(&p.name)?;
            if let Some((first, second)) = &p.moments {
                first.check_finite(&format!("optimizer.{}.state0", p.name))?;
                if !second.shares_buffer_with(first) {
                    second.check_finite(&format!("optimizer.{}.state1", p.name))?;
                }
            }
        }
        Ok(())
    }

    /// Elements of every parameter, and of the trainable ones.
    pub fn count(&self) -> (usize, usize) {
        let total = self.params.iter().map(|p| p.value.len()).sum();
        let trainable = self.params.iter().filter(|p| p.trainable).map(|p| p.value.len()).sum();
        (total, trainable)
    }
}
