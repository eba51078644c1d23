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
//! One file per family of ops, each an `impl Graph` of its own: `shape` (reshape, split,
//! concat, stack, reversal), `elementwise` (arithmetic with broadcasting, reductions over
//! a dimension, slices), `linear` (linear layers, batched weight gradients, embedding,
//! dropout), `recurrent` (LSTM, GRU and RNN layers), `attention`, `loss` (sum,
//! cross-entropy, argmax) and `optimize` (clipping, Adam, SGD and the training guard);
//! `params` holds the [`ParamStore`]. This file holds the tape itself and the routing of
//! gradients during [`Graph::backward`].

use std::collections::HashMap;

mod attention;
mod elementwise;
mod linear;
mod loss;
mod optimize;
mod params;
mod recurrent;
mod shape;

pub use optimize::check_step_finite;
use params::Param;
pub use params::{ParamId, ParamStore};

use crate::kernels::elementwise::{add_backward, add_forward, BinaryGrads};
use crate::{Context, DType, Encoder, Error, Recorder, Result, Tensor};

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
        .command_encoder()
        .copy_buffer_to_buffer(x.buffer(), 0, copy.buffer(), 0, x.size_in_bytes());
    Ok(copy)
}

/// One training (or inference) step under construction.
pub struct Graph<'s> {
    ctx: Context,
    /// Where the step's commands go: an encoder of its own, submitted by
    /// [`Graph::submit`], or a host's (see [`Graph::eval_into`]).
    encoder: GraphRecorder<'s>,
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

/// Where a graph records its commands.
enum GraphRecorder<'s> {
    /// Its own encoder, submitted by [`Graph::submit`].
    Own(Box<Encoder>),
    /// A host's recorder (its frame's `wgpu::CommandEncoder`, say), submitted by the host.
    Host(&'s mut dyn Recorder),
}

impl GraphRecorder<'_> {
    fn get(&mut self) -> &mut dyn Recorder {
        match self {
            GraphRecorder::Own(encoder) => &mut **encoder,
            GraphRecorder::Host(recorder) => &mut **recorder,
        }
    }
}

/// What a recorded backward sees: the gradients so far and where to write its inputs'.
pub struct Backward<'a> {
    ctx: &'a Context,
    encoder: &'a mut dyn Recorder,
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
            .command_encoder()
            .clear_buffer(zeros.buffer(), 0, Some(zeros.size_in_bytes()));
        Ok(zeros)
    }

    /// What a contribution to the gradient of `v` would do, without side effects: the
    /// one question a backward asks before it computes a gradient (skip the work, hand a
    /// buffer over, or choose the kernel's accumulate flag).
    fn wants(&self, v: Var) -> Wants {
        match self.sources[v.0] {
            Source::Input | Source::Computed { requires_grad: false } => Wants::Nothing,
            Source::Param(id) => {
                let p = &self.store.params[id.index];
                match (p.trainable, p.grad_live) {
                    (false, _) => Wants::Nothing,
                    (true, false) => Wants::Write,
                    (true, true) => Wants::Add,
                }
            }
            Source::Computed { requires_grad: true } => match self.grads[v.0] {
                None => Wants::Take,
                Some(_) => Wants::Add,
            },
        }
    }

    /// The gradient flowing into `v` (None: nothing downstream used it).
    fn grad(&self, v: Var) -> Option<Tensor> {
        self.grads[v.0].clone()
    }

    /// The one router of gradients: the buffer a contribution to the gradient of `v` is
    /// written into, and whether the kernel adds to what it holds (`true`) or writes over
    /// it (`false`, the first contribution). None when `v` takes no gradient (an input, a
    /// frozen parameter, a constant), so the caller skips the kernel.
    ///
    /// A parameter's gradient lives in the store and accumulates across backward passes
    /// until `zero_grad`; a computed value's first contribution gets a new buffer.
    fn accumulate_into(&mut self, v: Var) -> Result<Option<(Tensor, bool)>> {
        let wants = self.wants(v);
        let grad = match (wants, self.sources[v.0]) {
            (Wants::Nothing, _) => return Ok(None),
            (_, Source::Param(id)) => {
                let p = &mut self.store.params[id.index];
                p.grad_live = true;
                p.grad.clone()
            }
            (_, _) => match &self.grads[v.0] {
                Some(grad) => grad.clone(),
                None => {
                    let grad = Tensor::empty(self.ctx, self.values[v.0].shape(), DType::F32)?;
                    self.grads[v.0] = Some(grad.clone());
                    grad
                }
            },
        };
        Ok(Some((grad, wants == Wants::Add)))
    }

    /// Hands a finished contribution to the gradient of `v` (through
    /// [`Backward::accumulate_into`]): when it is the first for a computed value, `grad`'s
    /// buffer becomes the gradient as it is, no dispatch (the caller hands over a tensor
    /// nothing else will write, to one value only); otherwise it is added, or copied over
    /// a parameter's stale gradient.
    fn deliver(&mut self, v: Option<Var>, grad: &Tensor) -> Result<()> {
        let Some(v) = v else { return Ok(()) };
        if self.wants(v) == Wants::Take {
            self.grads[v.0] = Some(grad.clone());
            return Ok(());
        }
        match self.accumulate_into(v)? {
            Some((target, true)) => {
                let grads = BinaryGrads {
                    a: Some(&target),
                    b: None,
                    accumulate: true,
                };
                add_backward(self.ctx, self.encoder, grad, grads)
            }
            Some((target, false)) => {
                self.encoder.command_encoder().copy_buffer_to_buffer(
                    grad.buffer(),
                    0,
                    target.buffer(),
                    0,
                    grad.size_in_bytes(),
                );
                Ok(())
            }
            None => Ok(()),
        }
    }
}

/// What a contribution to a value's gradient would do (see [`Backward::wants`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wants {
    /// Nothing: the value takes no gradient (an input, a frozen parameter, a constant).
    Nothing,
    /// A computed value's first contribution: it may take a finished buffer as its own.
    Take,
    /// A parameter's first contribution in this backward: written over its stale gradient.
    Write,
    /// Added to the gradient already there.
    Add,
}

impl Wants {
    /// Whether the value takes a gradient at all.
    fn any(self) -> bool {
        self != Wants::Nothing
    }

    /// Whether a kernel writing the contribution adds to its target (None: no target).
    fn accumulates(self) -> Option<bool> {
        match self {
            Wants::Nothing => None,
            Wants::Take | Wants::Write => Some(false),
            Wants::Add => Some(true),
        }
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
    /// `seed` and `step` key the dropout masks, so a run is reproducible. Public as
    /// [`Graph::train`] and [`Graph::eval`], which say which without a bool.
    fn new(ctx: &Context, store: &'s mut ParamStore, training: bool, seed: u64, step: u64) -> Graph<'s> {
        Graph::with_recorder(
            ctx,
            store,
            training,
            seed,
            step,
            GraphRecorder::Own(Box::new(ctx.create_encoder())),
        )
    }

    /// An inference pass (dropout off) that records into a host's `recorder` (its frame's
    /// `wgpu::CommandEncoder`, say) instead of an encoder of its own: its ops, and
    /// decoding with [`crate::nn::seq2seq::Seq2Seq::greedy`], encode there and leave their
    /// results in GPU tensors; nothing is submitted and nothing waits. [`Graph::submit`]
    /// then only ends the recording: the host submits its encoder and afterwards calls
    /// [`Context::recycle_after_submit`], until when the buffers the graph used are kept
    /// from reuse (so the graph's tensors may be dropped before the host submits).
    pub fn eval_into(ctx: &Context, store: &'s mut ParamStore, recorder: &'s mut dyn Recorder) -> Graph<'s> {
        ctx.hold_until_recycled();
        Graph::with_recorder(ctx, store, false, 0, 0, GraphRecorder::Host(recorder))
    }

    fn with_recorder(
        ctx: &Context,
        store: &'s mut ParamStore,
        training: bool,
        seed: u64,
        step: u64,
        encoder: GraphRecorder<'s>,
    ) -> Graph<'s> {
        Graph {
            encoder,
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

    /// Where the step records, for kernels of your own (or the launchers of
    /// [`crate::kernels`]) between the graph's ops: they run in the same submission, in
    /// encoding order. What they write is not on the tape and gets no gradient.
    /// [`Recorder::command_encoder`] gives the `wgpu::CommandEncoder` for copies and passes
    /// of your own.
    pub fn encoder(&mut self) -> &mut dyn Recorder {
        self.encoder.get()
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

    /// `a + b`: the same shapes, or one operand broadcast over the other, its shape a
    /// suffix of the other's (a row `[N]` over `[.., N]`) or `[1]`.
    pub fn add(&mut self, a: Var, b: Var) -> Result<Var> {
        let (ta, tb) = (self.value(a).clone(), self.value(b).clone());
        if ta.shape() != tb.shape() {
            return self.binary(crate::kernels::pointwise::Binary::Add, a, b);
        }
        let y = Tensor::empty(&self.ctx, ta.shape(), DType::F32)?;
        add_forward(&self.ctx, self.encoder.get(), &ta, &tb, &y)?;
        let out = self.computed(y, &[a, b]);
        self.record(move |g| {
            // forward: y = a + b (same shapes)  ⇒  da += dy;  db += dy
            let Some(dy) = g.grad(out) else { return Ok(()) };
            // Nothing reads out's gradient after this, so one fresh input may take it as
            // its own (no kernel); the other gets a copy, as the two may be added to
            // separately later.
            let mut handed_over = false;
            for v in [a, b] {
                if !handed_over && a != b && g.wants(v) == Wants::Take {
                    g.deliver(Some(v), &dy)?;
                    handed_over = true;
                    continue;
                }
                if let Some((grad, accumulate)) = g.accumulate_into(v)? {
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
        self.encoder.get().command_encoder().copy_buffer_to_buffer(
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
            encoder: self.encoder.get(),
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

    /// Submits the step: everything encoded so far goes to the GPU in one submission.
    /// Returns the tensors the caller still wants (e.g. the loss) untouched. A graph of
    /// [`Graph::eval_into`] submits nothing: the host submits its own encoder.
    pub fn submit(self) {
        if let GraphRecorder::Own(encoder) = self.encoder {
            self.ctx.submit(*encoder);
        }
    }
}
