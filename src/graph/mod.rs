//! The tape: ops encode their forward kernels into the step's encoder as they are called
//! and record how to run their backward kernels; [`Graph::backward`] replays the record
//! in reverse. Nothing waits for the GPU: a whole training step (forward, backward,
//! optimizer) is one submission, made by [`Graph::submit`].
//!
//! Gradients follow PyTorch's rules: a parameter's gradient lives in the [`ParamStore`]
//! and accumulates over backward passes until [`ParamStore::zero_grad`]; a tensor used by
//! several ops gets the sum of their contributions. Kernels take an `accumulate` flag,
//! so the first contribution overwrites and later ones add: no zero-fill dispatch.
//!
//! This first version covers what the chapter's classifiers need (embedding, linear,
//! dropout, unidirectional LSTM/GRU/RNN layers with lengths, cross-entropy, Adam); more
//! ops follow.

use std::collections::HashMap;

mod elementwise;

use crate::kernels::attention::{attention_backward, attention_forward, AttentionBackward, AttentionForward, Score};
use crate::kernels::cross_entropy::{argmax, cross_entropy_forward, CrossEntropy, CrossEntropyOutputs, STATUS_LEN};
use crate::kernels::elementwise::{
    add_backward, add_forward, concat_backward, concat_forward, dropout_backward, dropout_forward, split_backward,
    split_forward, sum_backward, sum_forward, BinaryGrads, Dropout,
};
use crate::kernels::embedding::{embedding_backward, embedding_forward, EmbeddingBackward, EmbeddingWorkspace};
use crate::kernels::gru_cell::{gru_backward, gru_forward, GruBackward, GruForward};
use crate::kernels::lstm_cell::{lstm_backward, lstm_cell_backward, lstm_forward, LstmBackward, LstmForward};
use crate::kernels::matmul::{
    encode_column_sums, encode_strided_column_sums, matmul_backward, matmul_forward, matmul_strided, Matmul,
    MatmulGrads, MatrixView, StridedMatmul, Strides,
};
use crate::kernels::optim::{
    adam_probe, adam_step, adam_step_guarded, clip_grad_norm, clip_grad_norm_partials_len, sgd_probe, sgd_step,
    sgd_step_guarded, Adam, Sgd, UPDATE_REFUSED,
};
use crate::kernels::rnn_cell::{rnn_backward, rnn_forward, Nonlinearity, RnnBackward, RnnForward};
use crate::kernels::sequence::{reverse_sequence_backward, reverse_sequence_forward};
use crate::kernels::Lengths;
use crate::{Context, DType, Encoder, Error, Result, Tensor};

/// A parameter: its value, its gradient buffer, whether the optimizer updates it.
#[derive(Debug)]
struct Param {
    name: String,
    value: Tensor,
    grad: Tensor,
    /// The gradient holds a contribution since the last `zero_grad` (PyTorch: not None).
    grad_live: bool,
    trainable: bool,
    /// The optimizer's state, made at its first step: Adam's first and second moments, or
    /// SGD's momentum buffer (twice; a parameter is trained by one optimizer).
    moments: Option<(Tensor, Tensor)>,
}

/// Handle of a parameter in its [`ParamStore`]: the store's identity and the index there,
/// so that a handle of another store is an error, never another store's parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ParamId {
    store: usize,
    index: usize,
}

/// The identity the next [`ParamStore`] gets.
static NEXT_STORE_ID: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

/// The parameters of a model, by PyTorch state-dict name.
#[derive(Debug)]
pub struct ParamStore {
    /// This store's identity (see [`ParamId`]).
    id: usize,
    params: Vec<Param>,
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
    /// [`Graph::adam_step_guarded`]). Not on wasm32 (it blocks).
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

/// A value of the graph: the result of an op, an input or a parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Var(usize);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Input,
    Param(ParamId),
    Computed { requires_grad: bool },
}

type BackwardFn = Box<dyn FnOnce(&mut Backward<'_>) -> Result<()>>;

/// The four weights of one recurrent layer-direction, PyTorch's `weight_ih_l{k}`,
/// `weight_hh_l{k}`, `bias_ih_l{k}`, `bias_hh_l{k}`.
#[derive(Clone, Copy, Debug)]
pub struct RecurrentWeights {
    /// `[gates H, I]`
    pub w_ih: Var,
    /// `[gates H, H]`
    pub w_hh: Var,
    /// `[gates H]`
    pub b_ih: Var,
    /// `[gates H]`
    pub b_hh: Var,
}

/// What a recurrent layer returns.
#[derive(Clone, Copy, Debug)]
pub struct RecurrentOut {
    /// `[B, T, H]`, zero at padded steps.
    pub output: Var,
    /// `[B, H]`: each row's hidden state after its last real step.
    pub h_n: Var,
    /// `[B, H]`: the LSTM's cell state likewise (None for GRU and RNN).
    pub c_n: Option<Var>,
}

/// A copy of `x` (a kernel that overwrites its input must not consume a caller's value).
fn copy_of(g: &mut Backward<'_>, x: &Tensor) -> Result<Tensor> {
    let copy = Tensor::empty(g.ctx, x.shape(), DType::F32)?;
    g.encoder
        .copy_buffer_to_buffer(x.buffer(), 0, copy.buffer(), 0, x.size_in_bytes());
    Ok(copy)
}

/// One training (or inference) step under construction.
pub struct Graph<'s> {
    ctx: Context,
    encoder: Encoder,
    store: &'s mut ParamStore,
    values: Vec<Tensor>,
    sources: Vec<Source>,
    tape: Vec<BackwardFn>,
    training: bool,
    seed: u64,
    /// Counts dropout calls, so each gets its own mask.
    dropout_calls: u64,
    /// `[1]` u32 shared by the step's embedding lookups: ids >= V counted on the GPU.
    id_errors: Option<Tensor>,
    /// The status of the step's latest cross-entropy (see [`Graph::target_errors`]).
    target_status: Option<Tensor>,
    step: u64,
    /// The aliases made by [`Graph::batch_weight_grad`] (by index), which collect their
    /// uses' (x, dy) instead of computing a weight gradient per use.
    batched: HashMap<usize, Vec<(Tensor, Tensor)>>,
}

/// What a recorded backward sees: the gradients so far and where to write its inputs'.
pub struct Backward<'a> {
    ctx: &'a Context,
    encoder: &'a mut Encoder,
    store: &'a mut ParamStore,
    sources: &'a [Source],
    grads: &'a mut Vec<Option<Tensor>>,
    values: &'a [Tensor],
    /// (x, dy) of each use of a [`Graph::batch_weight_grad`] alias, by the alias's index.
    batched: HashMap<usize, Vec<(Tensor, Tensor)>>,
    /// The root when its gradient is the 1 of [`Graph::backward`]: cross-entropy, whose
    /// gradient is computed with its forward for dy = 1, hands it on as it is only there.
    unit_root: Option<Var>,
}

impl Backward<'_> {
    /// A zero tensor cleared on the GPU inside the step (no upload from the host).
    fn zeros(&mut self, shape: &[usize]) -> Result<Tensor> {
        let zeros = Tensor::empty(self.ctx, shape, DType::F32)?;
        self.encoder
            .clear_buffer(zeros.buffer(), 0, Some(zeros.size_in_bytes()));
        Ok(zeros)
    }

    /// The gradient target of a value only one op consumes (a layer's input projection),
    /// so its gradient is always written fresh.
    fn fresh_target(&mut self, v: Var, layer: &str) -> Result<Tensor> {
        match self.target(v)? {
            Some((grad, false)) => Ok(grad),
            _ => Err(Error::invalid(format!(
                "{layer}: the input projection's gradient was already written"
            ))),
        }
    }

    /// `dW_hh (+)= sum_b dgates[b]^T h_states[b, 0..T]`, in pieces: each piece
    /// (first column block, first row block, blocks) maps `blocks` H-wide column blocks of
    /// `grad_gates` `[B, T, width H]` to the same number of H-row blocks of dW_hh.
    fn recurrent_weight_grad(
        &mut self,
        w_hh: Var,
        grad_gates: &Tensor,
        width: usize,
        h_states: &Tensor,
        pieces: &[(usize, usize, usize)],
    ) -> Result<()> {
        let Some((grad, accumulate)) = self.target(w_hh)? else {
            return Ok(());
        };
        let [batch, slots, hidden] = h_states.shape()[..] else {
            return Err(Error::shape("recurrent layer: states", "[B, T+1, H]", h_states.shape()));
        };
        let steps = slots - 1;
        // With one step (a decoder run step by step) the batch folds into the inner
        // dimension: one product over K = B instead of B products over K = 1, which the
        // tiled kernel runs several times faster.
        let (inner, products, lhs_col, rhs_row) = if steps == 1 {
            (batch, 1, width * hidden, slots * hidden)
        } else {
            (steps, batch, width * hidden, hidden)
        };
        for &(column, row, blocks) in pieces {
            let op = StridedMatmul {
                rows: blocks * hidden,
                cols: hidden,
                inner,
                batch: products,
                sum_batches: true,
                beta: if accumulate { 1.0 } else { 0.0 },
            };
            let lhs = Strides {
                offset: column * hidden,
                batch: steps * width * hidden,
                row: 1,
                col: lhs_col,
            };
            let rhs = Strides {
                offset: 0,
                batch: slots * hidden,
                row: rhs_row,
                col: 1,
            };
            let out = Strides {
                offset: row * hidden * hidden,
                ..Strides::row_major(blocks * hidden, hidden)
            };
            matmul_strided(
                self.ctx,
                self.encoder,
                &op,
                MatrixView {
                    tensor: grad_gates,
                    strides: lhs,
                },
                MatrixView {
                    tensor: h_states,
                    strides: rhs,
                },
                None,
                MatrixView {
                    tensor: &grad,
                    strides: out,
                },
            )?;
        }
        Ok(())
    }

    /// Adds (or writes) `grad` into the gradient of `v`, if it needs one.
    ///
    /// A computed value's first gradient takes `grad`'s buffer as it is, no dispatch: the
    /// caller hands over a tensor nothing else will write and delivers it to one value
    /// only (a scratch result, or the gradient of an output only this op consumed).
    fn deliver(&mut self, v: Option<Var>, grad: &Tensor) -> Result<()> {
        let Some(v) = v else { return Ok(()) };
        if self.takes_fresh(v) {
            self.grads[v.0] = Some(grad.clone());
            return Ok(());
        }
        match self.target(v)? {
            Some((target, true)) => {
                let grads = BinaryGrads {
                    a: Some(&target),
                    b: None,
                    accumulate: true,
                };
                add_backward(self.ctx, self.encoder, grad, grads)
            }
            Some((target, false)) => {
                self.encoder
                    .copy_buffer_to_buffer(grad.buffer(), 0, target.buffer(), 0, grad.size_in_bytes());
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Whether a gradient for `v` would be added to what its target holds (`Some(true)`)
    /// or written over it (`Some(false)`); None when `v` takes none. No side effects,
    /// unlike `target`.
    fn target_accumulates(&self, v: Var) -> Option<bool> {
        match self.sources[v.0] {
            Source::Input | Source::Computed { requires_grad: false } => None,
            Source::Param(id) => {
                let p = &self.store.params[id.index];
                p.trainable.then_some(p.grad_live)
            }
            Source::Computed { requires_grad: true } => Some(self.grads[v.0].is_some()),
        }
    }

    /// Whether [`Graph::deliver`] would hand a gradient to `v` as it is: a computed
    /// value that needs one and has none yet.
    fn takes_fresh(&self, v: Var) -> bool {
        self.sources[v.0] == (Source::Computed { requires_grad: true }) && self.grads[v.0].is_none()
    }

    /// Whether `v` takes a gradient at all (a computed value that needs one, or a
    /// trainable parameter).
    fn target_needed(&self, v: Var) -> bool {
        self.target_accumulates(v).is_some()
    }

    /// The gradient flowing into `v` (None: nothing downstream used it).
    fn grad(&self, v: Var) -> Option<Tensor> {
        self.grads[v.0].clone()
    }

    /// Where the gradient of `v` goes, and whether to add to what is there: None when `v`
    /// needs none (an input, a frozen parameter).
    fn target(&mut self, v: Var) -> Result<Option<(Tensor, bool)>> {
        let Some(accumulate) = self.target_accumulates(v) else {
            return Ok(None);
        };
        let grad = match self.sources[v.0] {
            Source::Param(id) => {
                let p = &mut self.store.params[id.index];
                p.grad_live = true;
                p.grad.clone()
            }
            _ => match &self.grads[v.0] {
                Some(grad) => grad.clone(),
                None => {
                    let grad = Tensor::empty(self.ctx, self.values[v.0].shape(), DType::F32)?;
                    self.grads[v.0] = Some(grad.clone());
                    grad
                }
            },
        };
        Ok(Some((grad, accumulate)))
    }
}

impl<'s> Graph<'s> {
    /// Starts a training step (PyTorch's `model.train()`): dropout is on, its masks keyed
    /// by `seed` and `step` (the optimizer's step count), so a run is reproducible.
    pub fn train(ctx: &Context, store: &'s mut ParamStore, seed: u64, step: u64) -> Graph<'s> {
        Graph::new(ctx, store, true, seed, step)
    }

    /// Starts an inference pass (PyTorch's `model.eval()`): dropout is off.
    pub fn eval(ctx: &Context, store: &'s mut ParamStore) -> Graph<'s> {
        Graph::new(ctx, store, false, 0, 0)
    }

    /// Starts a step on `ctx` over the parameters in `store`. `training` enables dropout;
    /// `seed` and `step` key the dropout masks, so a run is reproducible.
    /// [`Graph::train`] and [`Graph::eval`] say which without a bool.
    pub fn new(ctx: &Context, store: &'s mut ParamStore, training: bool, seed: u64, step: u64) -> Graph<'s> {
        Graph {
            encoder: ctx.create_encoder(),
            ctx: ctx.clone(),
            store,
            values: Vec::new(),
            sources: Vec::new(),
            tape: Vec::new(),
            training,
            seed,
            dropout_calls: 0,
            id_errors: None,
            target_status: None,
            step,
            batched: HashMap::new(),
        }
    }

    fn push(&mut self, value: Tensor, source: Source) -> Var {
        self.values.push(value);
        self.sources.push(source);
        Var(self.values.len() - 1)
    }

    fn requires_grad(&self, v: Var) -> bool {
        match self.sources[v.0] {
            Source::Input => false,
            Source::Param(id) => self.store.params[id.index].trainable,
            Source::Computed { requires_grad } => requires_grad,
        }
    }

    fn computed(&mut self, value: Tensor, from: &[Var]) -> Var {
        let requires_grad = from.iter().any(|&v| self.requires_grad(v));
        self.push(value, Source::Computed { requires_grad })
    }

    fn record(&mut self, backward: impl FnOnce(&mut Backward<'_>) -> Result<()> + 'static) {
        self.tape.push(Box::new(backward));
    }

    /// The context the step runs on.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// The step's command encoder, for kernels of your own (or the launchers of
    /// [`crate::kernels`]) between the graph's ops: they run in the same submission, in
    /// encoding order. What they write is not on the tape and gets no gradient. It derefs
    /// to `wgpu::CommandEncoder` for copies and passes of your own.
    pub fn encoder(&mut self) -> &mut Encoder {
        &mut self.encoder
    }

    /// The count of token ids `>= V` that this step's embedding lookups met (`[1]` u32;
    /// None before the first lookup), read after [`Graph::submit`]. Ids uploaded through
    /// [`upload_ids`](crate::kernels::embedding::upload_ids) are checked on the host; this
    /// catches ids made on the GPU (a sampled or argmax token fed back), which look up a
    /// zero row instead.
    pub fn id_errors(&self) -> Option<&Tensor> {
        self.id_errors.as_ref()
    }

    /// The status of this step's latest [`Graph::cross_entropy`] (`[STATUS_LEN]` u32; None
    /// before one), read after [`Graph::submit`] and checked with
    /// [`cross_entropy_check_status`](crate::kernels::cross_entropy::cross_entropy_check_status):
    /// `InvalidArgument` naming the first row whose target is `>= V`. Targets live on the
    /// GPU, so the graph cannot check them without waiting; such a row's loss is NaN, which
    /// the training guard turns into a skipped step, and this says why. Targets made on the
    /// host are best checked before upload with
    /// [`cross_entropy_check_targets`](crate::kernels::cross_entropy::cross_entropy_check_targets).
    pub fn target_errors(&self) -> Option<&Tensor> {
        self.target_status.as_ref()
    }

    /// The tensor behind `v`.
    pub fn value(&self, v: Var) -> &Tensor {
        &self.values[v.0]
    }

    /// A tensor that needs no gradient (a batch of inputs).
    pub fn input(&mut self, tensor: &Tensor) -> Var {
        self.push(tensor.clone(), Source::Input)
    }

    /// A parameter of the step's store; `InvalidArgument` for a handle of another store.
    pub fn param(&mut self, id: ParamId) -> Result<Var> {
        let value = self.store.params[self.store.index(id)?].value.clone();
        Ok(self.push(value, Source::Param(id)))
    }

    /// The state-dict name of a parameter of the step's store (modules name themselves in
    /// their errors with it).
    pub fn param_name(&self, id: ParamId) -> &str {
        self.store.name(id)
    }

    /// The same elements with another shape (no copy); the gradient flows back reshaped.
    pub fn reshape(&mut self, x: Var, shape: &[usize]) -> Result<Var> {
        let tx = self.value(x).clone();
        let y = tx.reshape(shape)?;
        let out = self.computed(y, &[x]);
        let x_shape = tx.shape().to_vec();
        self.record(move |g| {
            // Only this op consumes `out`, so its gradient can become x's as it is.
            let Some(dy) = g.grad(out) else { return Ok(()) };
            g.deliver(Some(x), &dy.reshape(&x_shape)?)
        });
        Ok(out)
    }

    /// `x[.., :at]` and `x[.., at:]`: `[.., A + B]` to `[.., A]`, `[.., B]` (copies). A
    /// half nothing downstream uses sends back zeros.
    pub fn split(&mut self, x: Var, at: usize) -> Result<(Var, Var)> {
        let tx = self.value(x).clone();
        let shape = tx.shape().to_vec();
        let width = shape.last().copied().unwrap_or(0);
        if at == 0 || at >= width {
            return Err(Error::invalid(format!(
                "split: the point {at} must be inside the last axis of {shape:?} (1..{width})"
            )));
        }
        let mut shape_a = shape.clone();
        let mut shape_b = shape;
        *shape_a.last_mut().unwrap_or(&mut 0) = at;
        *shape_b.last_mut().unwrap_or(&mut 0) = width - at;
        let ya = Tensor::empty(&self.ctx, &shape_a, DType::F32)?;
        let yb = Tensor::empty(&self.ctx, &shape_b, DType::F32)?;
        split_forward(&self.ctx, &mut self.encoder, &tx, &ya, &yb)?;
        let a = self.computed(ya, &[x]);
        let b = self.computed(yb, &[x]);
        self.record(move |g| {
            let (da, db) = (g.grad(a), g.grad(b));
            if da.is_none() && db.is_none() {
                return Ok(());
            }
            let da = match da {
                Some(da) => da,
                None => g.zeros(&shape_a)?,
            };
            let db = match db {
                Some(db) => db,
                None => g.zeros(&shape_b)?,
            };
            if let Some((grad, accumulate)) = g.target(x)? {
                split_backward(g.ctx, g.encoder, &da, &db, &grad, accumulate)?;
            }
            Ok(())
        });
        Ok((a, b))
    }

    /// `a ++ b` along the last axis: `[.., A]`, `[.., B]` to `[.., A + B]`.
    pub fn concat(&mut self, a: Var, b: Var) -> Result<Var> {
        let (ta, tb) = (self.value(a).clone(), self.value(b).clone());
        let mut shape = ta.shape().to_vec();
        let (Some(last), Some(&b_last)) = (shape.last_mut(), tb.shape().last()) else {
            return Err(Error::shape("concat: a", "[.., A]", ta.shape()));
        };
        *last += b_last;
        let y = Tensor::empty(&self.ctx, &shape, DType::F32)?;
        concat_forward(&self.ctx, &mut self.encoder, &ta, &tb, &y)?;
        let out = self.computed(y, &[a, b]);
        self.record(move |g| {
            let Some(dy) = g.grad(out) else { return Ok(()) };
            // One split per target: each has its own accumulate flag.
            if let Some((grad, accumulate)) = g.target(a)? {
                let scratch = Tensor::empty(g.ctx, tb.shape(), DType::F32)?;
                let grads = BinaryGrads {
                    a: Some(&grad),
                    b: Some(&scratch),
                    accumulate,
                };
                concat_backward(g.ctx, g.encoder, &dy, grads)?;
            }
            if let Some((grad, accumulate)) = g.target(b)? {
                let scratch = Tensor::empty(g.ctx, ta.shape(), DType::F32)?;
                let grads = BinaryGrads {
                    a: Some(&scratch),
                    b: Some(&grad),
                    accumulate,
                };
                concat_backward(g.ctx, g.encoder, &dy, grads)?;
            }
            Ok(())
        });
        Ok(out)
    }

    /// `torch.cat(xs, dim=0)`: values of the same trailing shape `[N_i, ..]` stacked along
    /// the first axis into `[sum N_i, ..]`. The pieces are contiguous in the result, so
    /// forward and backward are buffer copies, one per piece, and no kernel: the way to
    /// gather a decoder's per-step states `[B, H]` into one `[T * B, H]` (rows in (t, b)
    /// order) for a single output projection, instead of growing a concatenation step by
    /// step (which copies O(T^2) elements).
    pub fn stack(&mut self, xs: &[Var]) -> Result<Var> {
        let first = xs.first().ok_or_else(|| Error::invalid("stack: no values"))?;
        let inner = self.value(*first).shape().get(1..).unwrap_or(&[]).to_vec();
        let pieces: Vec<Tensor> = xs.iter().map(|&x| self.value(x).clone()).collect();
        let mut rows = 0;
        for (i, t) in pieces.iter().enumerate() {
            match t.shape().split_first() {
                Some((&n, rest)) if rest == inner.as_slice() && t.dtype() == DType::F32 => rows += n,
                _ => {
                    let mut expected = vec!["N".to_string()];
                    expected.extend(inner.iter().map(usize::to_string));
                    return Err(Error::shape(
                        format!("stack: value {i}"),
                        format!("[{}] (f32)", expected.join(", ")),
                        t.shape(),
                    ));
                }
            }
        }
        let mut shape = vec![rows];
        shape.extend(&inner);
        let y = Tensor::empty(&self.ctx, &shape, DType::F32)?;
        let mut offset = 0;
        for t in &pieces {
            self.encoder
                .copy_buffer_to_buffer(t.buffer(), 0, y.buffer(), offset, t.size_in_bytes());
            offset += t.size_in_bytes();
        }
        let out = self.computed(y, xs);
        let xs = xs.to_vec();
        self.record(move |g| {
            let Some(dy) = g.grad(out) else { return Ok(()) };
            let mut offset = 0;
            for (&x, t) in xs.iter().zip(&pieces) {
                let bytes = t.size_in_bytes();
                if g.target_needed(x) {
                    // A fresh slice per piece: deliver hands it over or adds it.
                    let dx = Tensor::empty(g.ctx, t.shape(), DType::F32)?;
                    g.encoder
                        .copy_buffer_to_buffer(dy.buffer(), offset, dx.buffer(), 0, bytes);
                    g.deliver(Some(x), &dx)?;
                }
                offset += bytes;
            }
            Ok(())
        });
        Ok(out)
    }

    /// The inverse of [`Graph::stack`]: `x` `[N, ..]` cut along the first axis into
    /// `pieces` equal parts `[N / pieces, ..]`, in order. Forward and backward are buffer
    /// copies, one per piece: the way to hand each decoder step its rows of a product
    /// computed once for all steps (`[T * B, ..]`, rows in (t, b) order).
    pub fn unstack(&mut self, x: Var, pieces: usize) -> Result<Vec<Var>> {
        let tx = self.value(x).clone();
        let shape = tx.shape().to_vec();
        let rows = shape.first().copied().unwrap_or(0);
        if pieces == 0 || rows % pieces != 0 || tx.dtype() != DType::F32 {
            return Err(Error::invalid(format!(
                "unstack: {pieces} pieces do not divide the first axis of the f32 value {shape:?}"
            )));
        }
        let mut piece_shape = shape.clone();
        piece_shape[0] = rows / pieces;
        let bytes = tx.size_in_bytes() / pieces as u64;
        let mut outs = Vec::with_capacity(pieces);
        for i in 0..pieces {
            let y = Tensor::empty(&self.ctx, &piece_shape, DType::F32)?;
            self.encoder
                .copy_buffer_to_buffer(tx.buffer(), i as u64 * bytes, y.buffer(), 0, bytes);
            outs.push(self.computed(y, &[x]));
        }
        let outs_for_backward = outs.clone();
        self.record(move |g| {
            let grads: Vec<Option<Tensor>> = outs_for_backward.iter().map(|&y| g.grad(y)).collect();
            if grads.iter().all(Option::is_none) || !g.target_needed(x) {
                return Ok(());
            }
            let dx = Tensor::empty(g.ctx, &shape, DType::F32)?;
            for (i, dy) in grads.iter().enumerate() {
                let offset = i as u64 * bytes;
                match dy {
                    Some(dy) => g
                        .encoder
                        .copy_buffer_to_buffer(dy.buffer(), 0, dx.buffer(), offset, bytes),
                    // A piece nothing downstream used sends back zeros.
                    None => g.encoder.clear_buffer(dx.buffer(), offset, Some(bytes)),
                }
            }
            g.deliver(Some(x), &dx)
        });
        Ok(outs)
    }

    /// Each row of `x` `[B, T, D]` reversed within its length (zeros past it): the input
    /// and output order of a bidirectional layer's backward direction.
    pub fn reverse_sequence(&mut self, x: Var, lengths: Option<&Lengths>) -> Result<Var> {
        let tx = self.value(x).clone();
        let y = Tensor::empty(&self.ctx, tx.shape(), DType::F32)?;
        reverse_sequence_forward(&self.ctx, &mut self.encoder, &tx, lengths, &y)?;
        let out = self.computed(y, &[x]);
        let lengths = lengths.cloned();
        self.record(move |g| {
            let Some(dy) = g.grad(out) else { return Ok(()) };
            if let Some((grad, accumulate)) = g.target(x)? {
                reverse_sequence_backward(g.ctx, g.encoder, &dy, lengths.as_ref(), &grad, accumulate)?;
            }
            Ok(())
        });
        Ok(out)
    }

    /// `a + b`: the same shapes, or one operand broadcast over the other, its shape a
    /// suffix of the other's (a row `[N]` over `[.., N]`) or `[1]`.
    pub fn add(&mut self, a: Var, b: Var) -> Result<Var> {
        let (ta, tb) = (self.value(a).clone(), self.value(b).clone());
        if ta.shape() != tb.shape() {
            return self.binary(crate::kernels::pointwise::Binary::Add, a, b);
        }
        let y = Tensor::empty(&self.ctx, ta.shape(), DType::F32)?;
        add_forward(&self.ctx, &mut self.encoder, &ta, &tb, &y)?;
        let out = self.computed(y, &[a, b]);
        self.record(move |g| {
            let Some(dy) = g.grad(out) else { return Ok(()) };
            // Nothing reads out's gradient after this, so one fresh input may take it as
            // its own (no kernel); the other gets a copy, as the two may be added to
            // separately later.
            let mut handed_over = false;
            for v in [a, b] {
                if !handed_over && a != b && g.takes_fresh(v) {
                    g.deliver(Some(v), &dy)?;
                    handed_over = true;
                    continue;
                }
                if let Some((grad, accumulate)) = g.target(v)? {
                    let grads = BinaryGrads {
                        a: Some(&grad),
                        b: None,
                        accumulate,
                    };
                    add_backward(g.ctx, g.encoder, &dy, grads)?;
                }
            }
            Ok(())
        });
        Ok(out)
    }

    /// `x W^T + b` as `nn.Linear`: x `[.., I]`, w `[O, I]`, b `[O]`; out `[.., O]`.
    pub fn linear(&mut self, x: Var, w: Var, b: Option<Var>) -> Result<Var> {
        self.linear_onto(x, w, b, None)
    }

    /// `c + x W^T`: [`Graph::add`] of `c` and [`Graph::linear`] of `x` (no bias) in one
    /// product, which adds itself onto a copy of `c` (`[.., O]`, the output's shape)
    /// instead of writing a separate result for an add to read.
    pub fn linear_add(&mut self, x: Var, w: Var, c: Var) -> Result<Var> {
        self.linear_onto(x, w, None, Some(c))
    }

    fn linear_onto(&mut self, x: Var, w: Var, b: Option<Var>, onto: Option<Var>) -> Result<Var> {
        let (tx, tw) = (self.value(x).clone(), self.value(w).clone());
        let tb = b.map(|b| self.value(b).clone());
        let (&inputs, lead) = tx
            .shape()
            .split_last()
            .ok_or_else(|| Error::shape("linear: x", "[.., I]", tx.shape()))?;
        let rows: usize = lead.iter().product();
        let outputs = match *tw.shape() {
            [o, i] if i == inputs => o,
            _ => return Err(Error::shape("linear: w", format!("[O, {inputs}]"), tw.shape())),
        };
        let x2 = tx.reshape(&[rows, inputs])?;
        let mut shape = lead.to_vec();
        shape.push(outputs);
        let y = Tensor::empty(&self.ctx, &[rows, outputs], DType::F32)?;
        let op = Matmul {
            trans_b: true,
            ..Matmul::default()
        };
        let forward_op = match onto {
            Some(c) => {
                let tc = self.value(c).clone();
                tc.check_shape("linear_add: c", &shape)?;
                tc.check_dtype("linear_add: c", DType::F32)?;
                let bytes = tc.size_in_bytes();
                self.encoder.copy_buffer_to_buffer(tc.buffer(), 0, y.buffer(), 0, bytes);
                Matmul { beta: 1.0, ..op }
            }
            None => op,
        };
        matmul_forward(&self.ctx, &mut self.encoder, &forward_op, &x2, &tw, tb.as_ref(), &y)?;
        let mut from = vec![x, w];
        from.extend(b);
        from.extend(onto);
        let out = self.computed(y.reshape(&shape)?, &from);
        self.record(move |g| {
            let Some(dy_out) = g.grad(out) else { return Ok(()) };
            let dy = dy_out.reshape(&[rows, outputs])?;
            // One matmul_backward per target, each with its own accumulate flag.
            if let Some((grad, accumulate)) = g.target(x)? {
                let grad = grad.reshape(&[rows, inputs])?;
                let grads = MatmulGrads {
                    a: Some(&grad),
                    accumulate,
                    ..MatmulGrads::default()
                };
                matmul_backward(g.ctx, g.encoder, &op, &x2, &tw, &dy, grads)?;
            }
            if g.batched.contains_key(&w.0) {
                if g.target_needed(w) {
                    g.batched.entry(w.0).or_default().push((x2.clone(), dy.clone()));
                }
            } else if let Some((grad, accumulate)) = g.target(w)? {
                let grads = MatmulGrads {
                    b: Some(&grad),
                    accumulate,
                    ..MatmulGrads::default()
                };
                matmul_backward(g.ctx, g.encoder, &op, &x2, &tw, &dy, grads)?;
            }
            if let Some(b) = b {
                if let Some((grad, accumulate)) = g.target(b)? {
                    let grads = MatmulGrads {
                        bias: Some(&grad),
                        accumulate,
                        ..MatmulGrads::default()
                    };
                    matmul_backward(g.ctx, g.encoder, &op, &x2, &tw, &dy, grads)?;
                }
            }
            // c's gradient is dy itself, delivered last (after every read of dy above).
            // A batched weight keeps dy for a product at the end of the backward, so c,
            // which may take dy as its own and be added to, gets a copy then.
            if let Some(c) = onto {
                if g.batched.contains_key(&w.0) && g.target_needed(c) {
                    let copy = copy_of(g, &dy_out)?;
                    g.deliver(Some(c), &copy)?;
                } else {
                    g.deliver(Some(c), &dy_out)?;
                }
            }
            Ok(())
        });
        Ok(out)
    }

    /// An alias of the weight `w` `[O, I]` whose uses as [`Graph::linear`]'s weight (and
    /// as the `w_hh` of a one-step [`Graph::lstm_projected`] from an initial state) do not
    /// each compute their weight gradient: they keep their `(x, dy)`, and when the
    /// backward reaches this call (after every later use) all of them go into one product,
    /// `dW = dY^T X` over the rows of every use. For a decoder run step by step that is
    /// one matmul over `T * B` rows instead of T matmuls over B rows, which small-matrix
    /// hardware (a software rasteriser above all) runs several times slower per FLOP.
    /// Same gradient up to the order of summation.
    pub fn batch_weight_grad(&mut self, w: Var) -> Result<Var> {
        let tw = self.value(w).clone();
        let [outputs, inputs] = tw.shape()[..] else {
            return Err(Error::shape("batch_weight_grad: w", "[O, I]", tw.shape()));
        };
        let alias = self.computed(tw.clone(), &[w]);
        self.batched.insert(alias.0, Vec::new());
        self.record(move |g| {
            let uses = g.batched.remove(&alias.0).unwrap_or_default();
            if let Some(d_alias) = g.grad(alias) {
                g.deliver(Some(w), &d_alias)?;
            }
            if uses.is_empty() {
                return Ok(());
            }
            let Some((grad, accumulate)) = g.target(w)? else {
                return Ok(());
            };
            let rows: usize = uses.iter().map(|(x, _)| x.shape()[0]).sum();
            let x_all = Tensor::empty(g.ctx, &[rows, inputs], DType::F32)?;
            let dy_all = Tensor::empty(g.ctx, &[rows, outputs], DType::F32)?;
            let (mut x_at, mut dy_at) = (0, 0);
            for (x, dy) in &uses {
                g.encoder
                    .copy_buffer_to_buffer(x.buffer(), 0, x_all.buffer(), x_at, x.size_in_bytes());
                g.encoder
                    .copy_buffer_to_buffer(dy.buffer(), 0, dy_all.buffer(), dy_at, dy.size_in_bytes());
                x_at += x.size_in_bytes();
                dy_at += dy.size_in_bytes();
            }
            let op = Matmul {
                trans_b: true,
                ..Matmul::default()
            };
            let grads = MatmulGrads {
                b: Some(&grad),
                accumulate,
                ..MatmulGrads::default()
            };
            matmul_backward(g.ctx, g.encoder, &op, &x_all, &tw, &dy_all, grads)
        });
        Ok(alias)
    }

    /// `nn.Embedding`: ids `[B, T]` (u32, checked on upload) into `[B, T, E]`.
    pub fn embedding(&mut self, ids: &Tensor, weight: Var, padding_idx: Option<u32>) -> Result<Var> {
        let tw = self.value(weight).clone();
        let embed = *tw.shape().last().unwrap_or(&0);
        let mut shape = ids.shape().to_vec();
        shape.push(embed);
        let y = Tensor::empty(&self.ctx, &shape, DType::F32)?;
        let error_flag = match &self.id_errors {
            Some(flag) => flag.clone(),
            None => {
                let flag = Tensor::zeros(&self.ctx, &[1], DType::U32)?;
                self.id_errors = Some(flag.clone());
                flag
            }
        };
        embedding_forward(&self.ctx, &mut self.encoder, ids, &tw, &y, &error_flag)?;
        let out = self.computed(y, &[weight]);
        let ids = ids.clone();
        let ctx = self.ctx.clone();
        self.record(move |g| {
            let Some(dy) = g.grad(out) else { return Ok(()) };
            if let Some((grad, accumulate)) = g.target(weight)? {
                let workspace = EmbeddingWorkspace::new(&ctx, ids.len())?;
                let op = EmbeddingBackward {
                    padding_idx,
                    accumulate,
                };
                embedding_backward(g.ctx, g.encoder, &op, &ids, &dy, &grad, &workspace)?;
            }
            Ok(())
        });
        Ok(out)
    }

    /// Inverted dropout with probability `p` while training; the identity in eval mode.
    pub fn dropout(&mut self, x: Var, p: f32) -> Result<Var> {
        if !self.training || p == 0.0 {
            return Ok(x);
        }
        self.dropout_calls += 1;
        let op = Dropout {
            p,
            seed: self.seed,
            // Every call of every step draws its own mask.
            step: self.step.wrapping_mul(1 << 16).wrapping_add(self.dropout_calls),
        };
        let tx = self.value(x).clone();
        let y = Tensor::empty(&self.ctx, tx.shape(), DType::F32)?;
        dropout_forward(&self.ctx, &mut self.encoder, &op, &tx, &y, None)?;
        let out = self.computed(y, &[x]);
        self.record(move |g| {
            let Some(dy) = g.grad(out) else { return Ok(()) };
            if let Some((grad, accumulate)) = g.target(x)? {
                dropout_backward(g.ctx, g.encoder, &op, &dy, &grad, accumulate)?;
            }
            Ok(())
        });
        Ok(out)
    }

    /// One LSTM layer, batch-first, zero initial state, optional per-row lengths (padded
    /// steps carry the state and output 0, as `pack_padded_sequence`): the output
    /// `[B, T, H]` and the final states h_n, c_n `[B, H]` (each row's state after its last
    /// real step), as one layer of `nn.LSTM`.
    pub fn lstm(
        &mut self,
        x: Var,
        weights: RecurrentWeights,
        lengths: Option<&Lengths>,
        initial: Option<(Var, Var)>,
    ) -> Result<RecurrentOut> {
        self.recurrent_dims(x, weights.w_hh, 4)?;
        // The input projection for every step at once, biases folded into its epilogue.
        let bias = self.add(weights.b_ih, weights.b_hh)?;
        let xproj = self.linear(x, weights.w_ih, Some(bias))?;
        self.lstm_projected(xproj, weights.w_hh, lengths, initial)
    }

    /// [`Graph::lstm`] from its input projection `xproj = x W_ih^T + b_ih + b_hh`
    /// `[B, T, 4H]`, computed by the caller: for a decoder whose inputs are partly known
    /// in advance (its embeddings under teacher forcing), that part of the projection
    /// can be one product over every step. `w_hh` `[4H, H]`; the rest as `lstm`.
    pub fn lstm_projected(
        &mut self,
        xproj: Var,
        w_hh: Var,
        lengths: Option<&Lengths>,
        initial: Option<(Var, Var)>,
    ) -> Result<RecurrentOut> {
        let (batch, steps, hidden) = self.recurrent_dims(xproj, w_hh, 4)?;
        let xproj_shape = self.value(xproj).shape();
        if xproj_shape[2] != 4 * hidden {
            return Err(Error::shape(
                "lstm: the input projection",
                format!("[B, T, {}]", 4 * hidden),
                xproj_shape,
            ));
        }
        let (txproj, tw_hh) = (self.value(xproj).clone(), self.value(w_hh).clone());
        let (h0, c0) = (initial.map(|(h, _)| h), initial.map(|(_, c)| c));
        let th0 = h0.map(|h| self.value(h).clone());
        let h_states = self.states_with(h0, batch, steps, hidden)?;
        let c_states = self.states_with(c0, batch, steps, hidden)?;
        let gates = Tensor::empty(&self.ctx, &[batch, steps, 4 * hidden], DType::F32)?;
        let output = Tensor::empty(&self.ctx, &[batch, steps, hidden], DType::F32)?;
        let forward = LstmForward {
            xproj: &txproj,
            w_hh: &tw_hh,
            lengths,
            h_states: &h_states,
            c_states: &c_states,
            gates: &gates,
            output: &output,
        };
        lstm_forward(&self.ctx, &mut self.encoder, &forward)?;
        let mut from = vec![xproj, w_hh];
        from.extend(h0.into_iter().chain(c0));
        let h_n = self.final_state(&h_states)?;
        let c_n = self.final_state(&c_states)?;
        let (out, h_n, c_n) = (
            self.computed(output, &from),
            self.computed(h_n, &from),
            self.computed(c_n, &from),
        );
        let lengths = lengths.cloned();
        let ctx = self.ctx.clone();
        self.record(move |g| {
            let (d_out, d_h, d_c) = (g.grad(out), g.grad(h_n), g.grad(c_n));
            if d_out.is_none() && d_h.is_none() && d_c.is_none() {
                return Ok(());
            }
            // (dh_n, dc_n): each the final state's gradient, or zeros, put in place by
            // buffer copies and clears (no kernel, no upload).
            let grad_state = Tensor::empty(&ctx, &[2, batch, hidden], DType::F32)?;
            let half = grad_state.size_in_bytes() / 2;
            for (i, d) in [&d_h, &d_c].into_iter().enumerate() {
                let offset = i as u64 * half;
                match d {
                    Some(d) => g
                        .encoder
                        .copy_buffer_to_buffer(d.buffer(), 0, grad_state.buffer(), offset, half),
                    None => g.encoder.clear_buffer(grad_state.buffer(), offset, Some(half)),
                }
            }
            let grad_gates = g.fresh_target(xproj, "lstm")?;
            let backward = LstmBackward {
                w_hh: &tw_hh,
                lengths: lengths.as_ref(),
                grad_output: d_out.as_ref(),
                gates: &gates,
                c_states: &c_states,
                grad_gates: &grad_gates,
                grad_state: &grad_state,
            };
            if steps == 1 && h0.is_some() && c0.is_some() {
                // One step from a given state (a decoder run step by step): the cell's
                // pointwise backward, then dh0 = dgates W_hh as a tiled matmul, which runs
                // faster than the cell kernel's own product; dc0 is in grad_state.
                lstm_cell_backward(g.ctx, g.encoder, &backward, 0)?;
                let dh0 = Tensor::empty(&ctx, &[batch, hidden], DType::F32)?;
                let dgates = grad_gates.reshape(&[batch, 4 * hidden])?;
                matmul_forward(g.ctx, g.encoder, &Matmul::default(), &dgates, &tw_hh, None, &dh0)?;
                let dc0 = Tensor::empty(&ctx, &[batch, hidden], DType::F32)?;
                let bytes = dc0.size_in_bytes();
                g.encoder
                    .copy_buffer_to_buffer(grad_state.buffer(), bytes, dc0.buffer(), 0, bytes);
                g.deliver(h0, &dh0)?;
                g.deliver(c0, &dc0)?;
            } else if h0.is_some() || c0.is_some() {
                lstm_backward(g.ctx, g.encoder, &backward)?;
                // grad_state now holds (dh0, dc0).
                let (dh0, dc0) = (
                    Tensor::empty(&ctx, &[1, batch * hidden], DType::F32)?,
                    Tensor::empty(&ctx, &[1, batch * hidden], DType::F32)?,
                );
                let halves = grad_state.reshape(&[1, 2 * batch * hidden])?;
                split_forward(g.ctx, g.encoder, &halves, &dh0, &dc0)?;
                g.deliver(h0, &dh0.reshape(&[batch, hidden])?)?;
                g.deliver(c0, &dc0.reshape(&[batch, hidden])?)?;
            } else {
                // No initial state takes a gradient: the steps only, without the final
                // dispatch that would form dh0.
                for t in (0..steps).rev() {
                    lstm_cell_backward(g.ctx, g.encoder, &backward, t)?;
                }
            }
            match (&th0, g.batched.contains_key(&w_hh.0)) {
                // One step from h0: dW_hh = dgates^T h0, kept for the batched product.
                (Some(h0), true) if steps == 1 => {
                    if g.target_needed(w_hh) {
                        let use_ = (h0.clone(), grad_gates.reshape(&[batch, 4 * hidden])?);
                        g.batched.entry(w_hh.0).or_default().push(use_);
                    }
                    Ok(())
                }
                _ => g.recurrent_weight_grad(w_hh, &grad_gates, 4, &h_states, &[(0, 0, 4)]),
            }
        });
        Ok(RecurrentOut {
            output: out,
            h_n,
            c_n: Some(c_n),
        })
    }

    /// One GRU layer in PyTorch's form, batch-first, zero initial state, optional lengths:
    /// the output `[B, T, H]` and h_n `[B, H]`, as one layer of `nn.GRU`.
    pub fn gru(
        &mut self,
        x: Var,
        weights: RecurrentWeights,
        lengths: Option<&Lengths>,
        h0: Option<Var>,
    ) -> Result<RecurrentOut> {
        let (batch, steps, hidden) = self.recurrent_dims(x, weights.w_hh, 3)?;
        let xproj = self.linear(x, weights.w_ih, Some(weights.b_ih))?;
        let (txproj, tw_hh, tb_hh) = (
            self.value(xproj).clone(),
            self.value(weights.w_hh).clone(),
            self.value(weights.b_hh).clone(),
        );
        let h_states = self.states_with(h0, batch, steps, hidden)?;
        let gates = Tensor::empty(&self.ctx, &[batch, steps, 4 * hidden], DType::F32)?;
        let output = Tensor::empty(&self.ctx, &[batch, steps, hidden], DType::F32)?;
        let forward = GruForward {
            xproj: &txproj,
            w_hh: &tw_hh,
            b_hh: &tb_hh,
            lengths,
            h_states: &h_states,
            gates: &gates,
            output: &output,
        };
        gru_forward(&self.ctx, &mut self.encoder, &forward)?;
        let mut from = vec![xproj, weights.w_hh, weights.b_hh];
        from.extend(h0);
        let h_n = self.final_state(&h_states)?;
        let (out, h_n) = (self.computed(output, &from), self.computed(h_n, &from));
        let (w_hh, b_hh, lengths) = (weights.w_hh, weights.b_hh, lengths.cloned());
        let ctx = self.ctx.clone();
        self.record(move |g| {
            let (d_out, d_h) = (g.grad(out), g.grad(h_n));
            if d_out.is_none() && d_h.is_none() {
                return Ok(());
            }
            let grad_state = match &d_h {
                Some(d_h) => d_h.clone(),
                None => g.zeros(&[batch, hidden])?,
            };
            // The backward turns grad_state into dh0; keep the caller's d_h intact.
            let grad_state = copy_of(g, &grad_state)?;
            let grad_gates = Tensor::empty(&ctx, &[batch, steps, 4 * hidden], DType::F32)?;
            let backward = GruBackward {
                w_hh: &tw_hh,
                lengths: lengths.as_ref(),
                grad_output: d_out.as_ref(),
                gates: &gates,
                h_states: &h_states,
                grad_gates: &grad_gates,
                grad_state: &grad_state,
            };
            gru_backward(g.ctx, g.encoder, &backward)?;
            g.deliver(h0, &grad_state)?;
            // grad_gates = (dr, dz, dn, dhn): d xproj is its first 3H columns.
            let rows = batch * steps;
            let dxproj = g.fresh_target(xproj, "gru")?;
            let dhn = Tensor::empty(&ctx, &[rows, hidden], DType::F32)?;
            let flat = grad_gates.reshape(&[rows, 4 * hidden])?;
            split_forward(g.ctx, g.encoder, &flat, &dxproj.reshape(&[rows, 3 * hidden])?, &dhn)?;
            // The gradient of h W_hh^T + b_hh is (dr, dz, dhn): columns 0..2H and 3H..4H.
            let pieces = [(0, 0, 2), (3, 2, 1)];
            g.recurrent_weight_grad(w_hh, &grad_gates, 4, &h_states, &pieces)?;
            if let Some((grad, accumulate)) = g.target(b_hh)? {
                // Column sums over every (row, step) of those columns: no ones uploaded.
                for (column, row, gates_count) in pieces {
                    let columns = MatrixView {
                        tensor: &grad_gates,
                        strides: Strides {
                            offset: column * hidden,
                            batch: 0,
                            row: 4 * hidden,
                            col: 1,
                        },
                    };
                    let beta = if accumulate { 1.0 } else { 0.0 };
                    let dims = (1, rows, gates_count * hidden);
                    encode_strided_column_sums(g.ctx, g.encoder, columns, dims, (&grad, row * hidden), beta)?;
                }
            }
            Ok(())
        });
        Ok(RecurrentOut {
            output: out,
            h_n,
            c_n: None,
        })
    }

    /// One Elman RNN layer (`nn.RNN`, tanh or relu), batch-first, zero initial state,
    /// optional lengths: the output `[B, T, H]` and h_n `[B, H]`.
    pub fn rnn(
        &mut self,
        x: Var,
        weights: RecurrentWeights,
        nonlinearity: Nonlinearity,
        lengths: Option<&Lengths>,
        h0: Option<Var>,
    ) -> Result<RecurrentOut> {
        let (batch, steps, hidden) = self.recurrent_dims(x, weights.w_hh, 1)?;
        let bias = self.add(weights.b_ih, weights.b_hh)?;
        let xproj = self.linear(x, weights.w_ih, Some(bias))?;
        let (txproj, tw_hh) = (self.value(xproj).clone(), self.value(weights.w_hh).clone());
        let h_states = self.states_with(h0, batch, steps, hidden)?;
        let output = Tensor::empty(&self.ctx, &[batch, steps, hidden], DType::F32)?;
        let forward = RnnForward {
            xproj: &txproj,
            w_hh: &tw_hh,
            lengths,
            h_states: &h_states,
            output: &output,
            nonlinearity,
        };
        rnn_forward(&self.ctx, &mut self.encoder, &forward)?;
        let mut from = vec![xproj, weights.w_hh];
        from.extend(h0);
        let h_n = self.final_state(&h_states)?;
        let (out, h_n) = (self.computed(output, &from), self.computed(h_n, &from));
        let (w_hh, lengths) = (weights.w_hh, lengths.cloned());
        self.record(move |g| {
            let (d_out, d_h) = (g.grad(out), g.grad(h_n));
            if d_out.is_none() && d_h.is_none() {
                return Ok(());
            }
            let grad_state = match &d_h {
                Some(d_h) => copy_of(g, d_h)?,
                None => g.zeros(&[batch, hidden])?,
            };
            let grad_gates = g.fresh_target(xproj, "rnn")?;
            let backward = RnnBackward {
                w_hh: &tw_hh,
                lengths: lengths.as_ref(),
                grad_output: d_out.as_ref(),
                h_states: &h_states,
                grad_gates: &grad_gates,
                grad_state: &grad_state,
                nonlinearity,
            };
            rnn_backward(g.ctx, g.encoder, &backward)?;
            g.deliver(h0, &grad_state)?;
            g.recurrent_weight_grad(w_hh, &grad_gates, 1, &h_states, &[(0, 0, 1)])
        });
        Ok(RecurrentOut {
            output: out,
            h_n,
            c_n: None,
        })
    }

    /// A `[B, T+1, H]` state buffer whose slot 0 holds `initial` `[B, H]` (zeros if None).
    fn states_with(&mut self, initial: Option<Var>, batch: usize, steps: usize, hidden: usize) -> Result<Tensor> {
        // The kernels write slots 1..=T of every row (padded steps carry the state), so
        // only slot 0 needs a value; zeros are cleared on the GPU inside the step, not
        // uploaded from the host.
        let states = Tensor::empty(&self.ctx, &[batch, steps + 1, hidden], DType::F32)?;
        match initial {
            None => self
                .encoder
                .clear_buffer(states.buffer(), 0, Some(states.size_in_bytes())),
            Some(h0) => {
                let h0_t = self.value(h0).clone();
                h0_t.check_shape("recurrent layer: initial state", &[batch, hidden])?;
                h0_t.check_dtype("recurrent layer: initial state", DType::F32)?;
                // One buffer copy per row into its slot 0, rather than a kernel writing
                // every slot (the mirror of final_state).
                let row_bytes = (hidden * 4) as u64;
                for b in 0..batch {
                    let to = (b * (steps + 1) * hidden * 4) as u64;
                    self.encoder.copy_buffer_to_buffer(
                        h0_t.buffer(),
                        b as u64 * row_bytes,
                        states.buffer(),
                        to,
                        row_bytes,
                    );
                }
            }
        }
        Ok(states)
    }

    /// (B, T, H) of a recurrent layer over `x` `[B, T, I]` with `w_hh` `[gates H, H]`.
    fn recurrent_dims(&self, x: Var, w_hh: Var, gates: usize) -> Result<(usize, usize, usize)> {
        let (x_shape, w_shape) = (self.value(x).shape(), self.value(w_hh).shape());
        let [batch, steps, _] = x_shape[..] else {
            return Err(Error::shape("recurrent layer: x", "[B, T, I]", x_shape));
        };
        match w_shape[..] {
            [rows, hidden] if rows == gates * hidden && hidden > 0 => Ok((batch, steps, hidden)),
            _ => Err(Error::shape("recurrent layer: w_hh", format!("[{gates}H, H]"), w_shape)),
        }
    }

    /// Slot T of a `[B, T+1, H]` state buffer (padded steps carry each row's last state
    /// there): the last H of each row viewed `[B, (T+1) H]`.
    fn final_state(&mut self, states: &Tensor) -> Result<Tensor> {
        let [batch, slots, hidden] = states.shape()[..] else {
            return Err(Error::shape("recurrent layer: states", "[B, T+1, H]", states.shape()));
        };
        // One buffer copy per row of just its last slot (f32 offsets keep the 4-byte
        // alignment copies need), rather than a kernel moving every slot.
        let last = Tensor::empty(&self.ctx, &[batch, hidden], DType::F32)?;
        let row_bytes = (hidden * 4) as u64;
        for b in 0..batch {
            let from = ((b * slots + slots - 1) * hidden * 4) as u64;
            self.encoder
                .copy_buffer_to_buffer(states.buffer(), from, last.buffer(), b as u64 * row_bytes, row_bytes);
        }
        Ok(last)
    }

    /// One decoder step of attention over a source sequence (kernels::attention): the
    /// context `[B, Dv]` and the weights `[B, S]`. Additive (Bahdanau, the chapter's
    /// `V(tanh(W1 q + W2 values))`) takes `query = W1 q + b1` `[B, A]`,
    /// `keys = W2 values + b2` `[B, S, A]` (computed once per sequence) and `v` `[A]`
    /// (`V.weight` reshaped; `V.bias` shifts every score equally, so it gets no gradient);
    /// dot (Luong) takes `query` `[B, D]`, `keys` `[B, S, D]` and no v.
    pub fn attention(
        &mut self,
        score: Score,
        query: Var,
        keys: Var,
        v: Option<Var>,
        values: Var,
        lengths: Option<&Lengths>,
    ) -> Result<(Var, Var)> {
        let (tq, tk, tvals) = (
            self.value(query).clone(),
            self.value(keys).clone(),
            self.value(values).clone(),
        );
        let tv = v.map(|v| self.value(v).clone());
        let [batch, source, value_width] = tvals.shape()[..] else {
            return Err(Error::shape("attention: values", "[B, S, Dv]", tvals.shape()));
        };
        let weights = Tensor::empty(&self.ctx, &[batch, source], DType::F32)?;
        let context = Tensor::empty(&self.ctx, &[batch, value_width], DType::F32)?;
        let forward = AttentionForward {
            score,
            query: &tq,
            keys: &tk,
            v: tv.as_ref(),
            values: &tvals,
            lengths,
            weights: &weights,
            context: &context,
        };
        attention_forward(&self.ctx, &mut self.encoder, &forward)?;
        let mut from = vec![query, keys, values];
        from.extend(v);
        let (context_var, weights_var) = (self.computed(context, &from), self.computed(weights.clone(), &from));
        let lengths = lengths.cloned();
        self.record(move |g| {
            let (d_context, d_weights) = (g.grad(context_var), g.grad(weights_var));
            if d_context.is_none() && d_weights.is_none() {
                return Ok(());
            }
            let ctx = g.ctx.clone();
            let width = tq.shape()[1];
            let d_context = match d_context {
                Some(d) => d,
                None => g.zeros(&[batch, value_width])?,
            };
            // The keys' and values' gradients go straight into their targets when both
            // are written the same way (a decoder's steps all add into the encoder's
            // memory), else into scratch, each then delivered with its own flag.
            let direct = match (g.target_accumulates(keys), g.target_accumulates(values)) {
                (Some(k), Some(v)) if k == v && keys != values => Some(k),
                _ => None,
            };
            let (grad_keys, grad_values, accumulate) = match direct {
                Some(_) => {
                    let (Some((grad_keys, k)), Some((grad_values, v))) = (g.target(keys)?, g.target(values)?) else {
                        return Err(Error::invalid("attention: a gradient target went missing"));
                    };
                    debug_assert_eq!(k, v);
                    (grad_keys, grad_values, k)
                }
                None => (
                    Tensor::empty(&ctx, tk.shape(), DType::F32)?,
                    Tensor::empty(&ctx, tvals.shape(), DType::F32)?,
                    false,
                ),
            };
            let grad_score = Tensor::empty(&ctx, &[batch, source], DType::F32)?;
            let grad_query = Tensor::empty(&ctx, tq.shape(), DType::F32)?;
            let grad_v_rows = match score {
                Score::Additive => {
                    let rows = Tensor::empty(&ctx, &[batch, width], DType::F32)?;
                    if accumulate {
                        g.encoder.clear_buffer(rows.buffer(), 0, Some(rows.size_in_bytes()));
                    }
                    Some(rows)
                }
                Score::Dot => None,
            };
            let backward = AttentionBackward {
                score,
                query: &tq,
                keys: &tk,
                v: tv.as_ref(),
                values: &tvals,
                lengths: lengths.as_ref(),
                weights: &weights,
                grad_context: &d_context,
                grad_weights: d_weights.as_ref(),
                grad_score: &grad_score,
                grad_values: &grad_values,
                grad_query: &grad_query,
                grad_keys: &grad_keys,
                grad_v_rows: grad_v_rows.as_ref(),
                accumulate,
            };
            attention_backward(g.ctx, g.encoder, &backward)?;
            g.deliver(Some(query), &grad_query)?;
            if direct.is_none() {
                g.deliver(Some(keys), &grad_keys)?;
                g.deliver(Some(values), &grad_values)?;
            }
            if let (Some(rows), Some(v)) = (grad_v_rows, v) {
                // dv = the rows' sum, added straight into v's gradient.
                if let Some((dv, accumulate)) = g.target(v)? {
                    let beta = if accumulate { 1.0 } else { 0.0 };
                    encode_column_sums(g.ctx, g.encoder, &rows, (1, batch, width), &dv, beta)?;
                }
            }
            Ok(())
        });
        Ok((context_var, weights_var))
    }

    /// The sum of every element of `x`, `[1]` (`x.sum()`), summed in a fixed order; may be
    /// the root of [`Graph::backward`].
    pub fn sum(&mut self, x: Var) -> Result<Var> {
        let tx = self.value(x).clone();
        let y = Tensor::empty(&self.ctx, &[1], DType::F32)?;
        sum_forward(&self.ctx, &mut self.encoder, &tx, &y)?;
        let out = self.computed(y, &[x]);
        self.record(move |g| {
            let Some(dy) = g.grad(out) else { return Ok(()) };
            if let Some((grad, accumulate)) = g.target(x)? {
                sum_backward(g.ctx, g.encoder, &dy, &grad, accumulate)?;
            }
            Ok(())
        });
        Ok(out)
    }

    /// Softmax cross-entropy of `logits` `[N, V]` against `targets` `[N]` (u32): the loss
    /// `[1]`, to be the root of [`Graph::backward`].
    pub fn cross_entropy(&mut self, logits: Var, targets: &Tensor, op: &CrossEntropy) -> Result<Var> {
        let tl = self.value(logits).clone();
        let rows = tl.shape().first().copied().unwrap_or(0);
        let loss = Tensor::empty(&self.ctx, &[1], DType::F32)?;
        let dlogits = Tensor::empty(&self.ctx, tl.shape(), DType::F32)?;
        let row_loss = Tensor::empty(&self.ctx, &[rows], DType::F32)?;
        let status = Tensor::zeros(&self.ctx, &[STATUS_LEN], DType::U32)?;
        let outputs = CrossEntropyOutputs {
            loss: &loss,
            dlogits: &dlogits,
            row_loss: &row_loss,
            status: &status,
        };
        cross_entropy_forward(&self.ctx, &mut self.encoder, op, &tl, targets, outputs)?;
        self.target_status = Some(status);
        let out = self.computed(loss, &[logits]);
        self.record(move |g| {
            // forward: loss = CE(logits), with dlogits = ∂loss/∂logits computed beside it;
            // so now: dlogits_total += dloss * dlogits. At the root of Graph::backward
            // dloss = 1 and dlogits is the gradient as it is; inside a custom loss (a
            // scaled or summed cross-entropy, backward_with) it is scaled by dloss [1].
            let Some(dloss) = g.grad(out) else { return Ok(()) };
            if g.unit_root == Some(out) {
                return g.deliver(Some(logits), &dlogits);
            }
            if let Some((grad, accumulate)) = g.target(logits)? {
                // mul's da = dy * b with dy = dlogits and b = dloss broadcast.
                let grads = BinaryGrads {
                    a: Some(&grad),
                    b: None,
                    accumulate,
                };
                let op = crate::kernels::pointwise::Binary::Mul;
                crate::kernels::pointwise::binary_backward(g.ctx, g.encoder, op, &tl, &dloss, &dlogits, grads)?;
            }
            Ok(())
        });
        Ok(out)
    }

    /// The index of the largest logit of each row of `logits` `[N, V]`, as u32 `[N]`, left
    /// on the GPU (greedy decoding feeds it straight back into an embedding). Not
    /// differentiable.
    pub fn argmax(&mut self, logits: Var) -> Result<Tensor> {
        let tl = self.value(logits).clone();
        let rows = tl.shape().first().copied().unwrap_or(0);
        let out = Tensor::empty(&self.ctx, &[rows], DType::U32)?;
        argmax(&self.ctx, &mut self.encoder, &tl, &out)?;
        Ok(out)
    }

    /// Encodes the backward pass from `loss`, a `[1]` value: a [`Graph::cross_entropy`], a
    /// [`Graph::sum`] or [`Graph::mean`], or a custom loss built from them with the tape's
    /// arithmetic ([`Graph::scale`], [`Graph::add`], ...). [`Graph::backward_with`] starts
    /// from another shape or gradient.
    pub fn backward(&mut self, loss: Var) -> Result<()> {
        if self.values[loss.0].shape() != [1] {
            return Err(Error::shape("backward: loss", "[1]", self.values[loss.0].shape()));
        }
        // The root's gradient: 1 (a cross-entropy at the root hands on the gradient it
        // computed with its forward as it is; a sum broadcasts it).
        let ones = Tensor::full(&self.ctx, &[1], 1.0f32)?;
        self.backward_from(loss, ones, true)
    }

    /// Encodes the backward pass from `v` with `upstream_grad` as its gradient (the shape
    /// of `v`, f32): what `tensor.backward(gradient)` does in PyTorch, for a non-scalar
    /// root or a loss weighted from outside. `upstream_grad` is copied, never written.
    pub fn backward_with(&mut self, v: Var, upstream_grad: &Tensor) -> Result<()> {
        upstream_grad.check_dtype("backward_with: upstream_grad", DType::F32)?;
        upstream_grad.check_shape("backward_with: upstream_grad", self.values[v.0].shape())?;
        if !upstream_grad.context().same_context(&self.ctx) {
            return Err(crate::kernels::other_context_error(
                &self.ctx,
                "backward_with: upstream_grad",
                upstream_grad,
                std::iter::empty(),
            ));
        }
        // A copy: an op may hand its output's gradient on to an input as that input's own
        // buffer, and later contributions are added into it; the caller's tensor must not
        // change.
        let grad = Tensor::empty(&self.ctx, upstream_grad.shape(), DType::F32)?;
        self.encoder.copy_buffer_to_buffer(
            upstream_grad.buffer(),
            0,
            grad.buffer(),
            0,
            upstream_grad.size_in_bytes(),
        );
        self.backward_from(v, grad, false)
    }

    /// Walks the tape in reverse from `root`, whose gradient is `root_grad` (`unit`: the
    /// `[1]` one of [`Graph::backward`]).
    fn backward_from(&mut self, root: Var, root_grad: Tensor, unit: bool) -> Result<()> {
        let mut grads: Vec<Option<Tensor>> = vec![None; self.values.len()];
        grads[root.0] = Some(root_grad);
        let tape = std::mem::take(&mut self.tape);
        let mut backward = Backward {
            ctx: &self.ctx,
            encoder: &mut self.encoder,
            store: self.store,
            sources: &self.sources,
            grads: &mut grads,
            values: &self.values,
            batched: std::mem::take(&mut self.batched),
            unit_root: unit.then_some(root),
        };
        for op in tape.into_iter().rev() {
            op(&mut backward)?;
        }
        Ok(())
    }

    /// Encodes one Adam step (t counts from 1) over every trainable parameter that has a
    /// gradient, as `torch.optim.Adam.step`.
    pub fn adam_step(&mut self, op: &Adam, t: u64) -> Result<()> {
        self.adam(op, t, None)
    }

    /// The training guard's Adam step: when `grad_norm` (the `[1]` total norm from
    /// [`Graph::clip_grad_norm`]) is NaN or Inf, which any NaN or Inf in the loss or a
    /// gradient makes it, no parameter and no optimizer state changes; nor when the update
    /// would make any weight or state NaN or Inf (every parameter's update is computed
    /// first by a probe, which then sets the norm to the NaN
    /// [`UPDATE_REFUSED`]). Decided on the GPU, so
    /// nothing waits; read the norm after the submission and stop with
    /// [`check_step_finite`] (a skipped step still counts in `t`).
    pub fn adam_step_guarded(&mut self, op: &Adam, t: u64, grad_norm: &Tensor) -> Result<()> {
        self.adam(op, t, Some(grad_norm))
    }

    fn adam(&mut self, op: &Adam, t: u64, guard: Option<&Tensor>) -> Result<()> {
        let live = |p: &&mut Param| p.trainable && p.grad_live;
        for p in self.store.params.iter_mut().filter(live) {
            if p.moments.is_none() {
                p.moments = Some((
                    Tensor::zeros(&self.ctx, p.value.shape(), DType::F32)?,
                    Tensor::zeros(&self.ctx, p.value.shape(), DType::F32)?,
                ));
            }
        }
        let (ctx, encoder) = (&self.ctx, &mut self.encoder);
        // A guarded step first checks every parameter's update, so that one that would
        // make any weight or state non-finite changes none.
        if let Some(norm) = guard {
            for p in self.store.params.iter_mut().filter(live) {
                if let Some((m, v)) = &p.moments {
                    adam_probe(ctx, encoder, op, t, &p.value, &p.grad, m, v, norm)?;
                }
            }
        }
        for p in self.store.params.iter_mut().filter(live) {
            if let Some((m, v)) = &p.moments {
                match guard {
                    Some(norm) => adam_step_guarded(ctx, encoder, op, t, &p.value, &p.grad, m, v, norm)?,
                    None => adam_step(ctx, encoder, op, t, &p.value, &p.grad, m, v)?,
                }
            }
        }
        Ok(())
    }

    /// Encodes `clip_grad_norm_(max_norm)` over every trainable parameter's live gradient
    /// and returns the total norm before clipping, `[1]`, readable after the submission.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> Result<Tensor> {
        let grads: Vec<&Tensor> = self
            .store
            .params
            .iter()
            .filter(|p| p.trainable && p.grad_live)
            .map(|p| &p.grad)
            .collect();
        let total_norm = Tensor::empty(&self.ctx, &[1], DType::F32)?;
        let partials = Tensor::empty(&self.ctx, &[clip_grad_norm_partials_len(&grads)], DType::F32)?;
        clip_grad_norm(&self.ctx, &mut self.encoder, &grads, max_norm, &total_norm, &partials)?;
        Ok(total_norm)
    }

    /// Encodes one SGD step (`torch.optim.SGD.step`) over every trainable parameter that
    /// has a gradient; the momentum buffers live with the parameters.
    pub fn sgd_step(&mut self, op: &Sgd) -> Result<()> {
        self.sgd(op, None)
    }

    /// The training guard's SGD step: nothing changes when `grad_norm` is NaN or Inf (see
    /// [`Graph::adam_step_guarded`]).
    pub fn sgd_step_guarded(&mut self, op: &Sgd, grad_norm: &Tensor) -> Result<()> {
        self.sgd(op, Some(grad_norm))
    }

    fn sgd(&mut self, op: &Sgd, guard: Option<&Tensor>) -> Result<()> {
        let live = |p: &&mut Param| p.trainable && p.grad_live;
        // Per live parameter: whether this is its momentum buffer's first step.
        let mut first_steps = Vec::new();
        for p in self.store.params.iter_mut().filter(live) {
            let first_step = op.momentum != 0.0 && p.moments.is_none();
            if first_step {
                let buffer = Tensor::zeros(&self.ctx, p.value.shape(), DType::F32)?;
                p.moments = Some((buffer.clone(), buffer));
            }
            first_steps.push(first_step);
        }
        let (ctx, encoder) = (&self.ctx, &mut self.encoder);
        // As for Adam: every update is checked before any is made.
        if let Some(norm) = guard {
            for (p, &first_step) in self.store.params.iter_mut().filter(live).zip(&first_steps) {
                let buffer = p.moments.as_ref().map(|(m, _)| m);
                sgd_probe(ctx, encoder, op, first_step, &p.value, &p.grad, buffer, norm)?;
            }
        }
        for (p, &first_step) in self.store.params.iter_mut().filter(live).zip(&first_steps) {
            let buffer = p.moments.as_ref().map(|(m, _)| m);
            match guard {
                Some(norm) => sgd_step_guarded(ctx, encoder, op, first_step, &p.value, &p.grad, buffer, norm)?,
                None => sgd_step(ctx, encoder, op, first_step, &p.value, &p.grad, buffer)?,
            }
        }
        Ok(())
    }

    /// Submits the step: everything encoded so far goes to the GPU in one submission.
    /// Returns the tensors the caller still wants (e.g. the loss) untouched.
    pub fn submit(self) {
        self.ctx.submit(self.encoder);
    }
}

/// The host's half of the training guard: after step `step`'s submission, with its loss
/// and gradient norm read back, `Error::NonFinite` naming the step and the quantity if
/// either is NaN or Inf, or if the guarded step refused an update that would have made a
/// weight or optimizer state NaN or Inf (the norm then holds
/// [`UPDATE_REFUSED`]). With
/// [`Graph::adam_step_guarded`] or [`Graph::sgd_step_guarded`] that step changed no
/// weight, so stopping here keeps the model (and the last checkpoint) as they were before it.
pub fn check_step_finite(step: u64, loss: f32, grad_norm: f32) -> Result<()> {
    if grad_norm.to_bits() == UPDATE_REFUSED {
        return Err(Error::NonFinite {
            step,
            quantity: "updated weights (the update was refused)",
            value: grad_norm,
        });
    }
    for (quantity, value) in [("loss", loss), ("gradient norm", grad_norm)] {
        if !value.is_finite() {
            return Err(Error::NonFinite { step, quantity, value });
        }
    }
    Ok(())
}
