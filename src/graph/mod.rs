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
//! This first version covers what the chapter's classifiers need (embedding, one-layer
//! unidirectional LSTM, linear, dropout, cross-entropy, Adam); more ops follow.

use crate::kernels::cross_entropy::{cross_entropy_forward, CrossEntropy, CrossEntropyOutputs, STATUS_LEN};
use crate::kernels::elementwise::{
    add_backward, add_forward, dropout_backward, dropout_forward, split_backward, split_forward, BinaryGrads, Dropout,
};
use crate::kernels::embedding::{embedding_backward, embedding_forward, EmbeddingBackward, EmbeddingWorkspace};
use crate::kernels::lstm_cell::{lstm_backward, lstm_forward, LstmBackward, LstmForward};
use crate::kernels::matmul::{
    matmul_backward, matmul_forward, matmul_strided, Matmul, MatmulGrads, MatrixView, StridedMatmul, Strides,
};
use crate::kernels::optim::{adam_step, Adam};
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
    /// Adam's first and second moments, made at the first step that needs them.
    moments: Option<(Tensor, Tensor)>,
}

/// Handle of a parameter in its [`ParamStore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ParamId(usize);

/// The parameters of a model, by PyTorch state-dict name.
#[derive(Debug, Default)]
pub struct ParamStore {
    params: Vec<Param>,
}

impl ParamStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
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
        Ok(ParamId(self.params.len() - 1))
    }

    /// The parameter's current value.
    pub fn value(&self, id: ParamId) -> &Tensor {
        &self.params[id.0].value
    }

    /// The parameter's gradient, if a backward pass wrote one since `zero_grad`.
    pub fn grad(&self, id: ParamId) -> Option<&Tensor> {
        let p = &self.params[id.0];
        p.grad_live.then_some(&p.grad)
    }

    /// The parameter's name.
    pub fn name(&self, id: ParamId) -> &str {
        &self.params[id.0].name
    }

    /// Forgets every gradient (PyTorch's `zero_grad(set_to_none=True)`): the next
    /// backward overwrites instead of adding. Costs no GPU work.
    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.grad_live = false;
        }
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
    step: u64,
}

/// What a recorded backward sees: the gradients so far and where to write its inputs'.
pub struct Backward<'a> {
    ctx: &'a Context,
    encoder: &'a mut wgpu::CommandEncoder,
    store: &'a mut ParamStore,
    sources: &'a [Source],
    grads: &'a mut Vec<Option<Tensor>>,
    values: &'a [Tensor],
}

impl Backward<'_> {
    /// The gradient flowing into `v` (None: nothing downstream used it).
    fn grad(&self, v: Var) -> Option<Tensor> {
        self.grads[v.0].clone()
    }

    /// Where the gradient of `v` goes, and whether to add to what is there: None when `v`
    /// needs none (an input, a frozen parameter).
    fn target(&mut self, v: Var) -> Result<Option<(Tensor, bool)>> {
        match self.sources[v.0] {
            Source::Input | Source::Computed { requires_grad: false } => Ok(None),
            Source::Param(id) => {
                let p = &mut self.store.params[id.0];
                if !p.trainable {
                    return Ok(None);
                }
                let accumulate = p.grad_live;
                p.grad_live = true;
                Ok(Some((p.grad.clone(), accumulate)))
            }
            Source::Computed { requires_grad: true } => match &self.grads[v.0] {
                Some(grad) => Ok(Some((grad.clone(), true))),
                None => {
                    let grad = Tensor::empty(self.ctx, self.values[v.0].shape(), DType::F32)?;
                    self.grads[v.0] = Some(grad.clone());
                    Ok(Some((grad, false)))
                }
            },
        }
    }
}

impl<'s> Graph<'s> {
    /// Starts a step on `ctx` over the parameters in `store`. `training` enables dropout;
    /// `seed` and `step` key the dropout masks, so a run is reproducible.
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
            step,
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
            Source::Param(id) => self.store.params[id.0].trainable,
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

    /// The tensor behind `v`.
    pub fn value(&self, v: Var) -> &Tensor {
        &self.values[v.0]
    }

    /// A tensor that needs no gradient (a batch of inputs).
    pub fn input(&mut self, tensor: &Tensor) -> Var {
        self.push(tensor.clone(), Source::Input)
    }

    /// A parameter of the store.
    pub fn param(&mut self, id: ParamId) -> Var {
        let value = self.store.params[id.0].value.clone();
        self.push(value, Source::Param(id))
    }

    /// `a + b`, same shapes.
    pub fn add(&mut self, a: Var, b: Var) -> Result<Var> {
        let (ta, tb) = (self.value(a).clone(), self.value(b).clone());
        let y = Tensor::empty(&self.ctx, ta.shape(), DType::F32)?;
        add_forward(&self.ctx, &mut self.encoder, &ta, &tb, &y)?;
        let out = self.computed(y, &[a, b]);
        self.record(move |g| {
            let Some(dy) = g.grad(out) else { return Ok(()) };
            for v in [a, b] {
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
        matmul_forward(&self.ctx, &mut self.encoder, &op, &x2, &tw, tb.as_ref(), &y)?;
        let mut from = vec![x, w];
        from.extend(b);
        let out = self.computed(y.reshape(&shape)?, &from);
        self.record(move |g| {
            let Some(dy) = g.grad(out) else { return Ok(()) };
            let dy = dy.reshape(&[rows, outputs])?;
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
            if let Some((grad, accumulate)) = g.target(w)? {
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
            Ok(())
        });
        Ok(out)
    }

    /// `nn.Embedding`: ids `[B, T]` (u32, checked on upload) into `[B, T, E]`.
    pub fn embedding(&mut self, ids: &Tensor, weight: Var, padding_idx: Option<u32>) -> Result<Var> {
        let tw = self.value(weight).clone();
        let embed = *tw.shape().last().unwrap_or(&0);
        let mut shape = ids.shape().to_vec();
        shape.push(embed);
        let y = Tensor::empty(&self.ctx, &shape, DType::F32)?;
        let error_flag = Tensor::zeros(&self.ctx, &[1], DType::U32)?;
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

    /// One LSTM layer (batch-first, zero initial state), as `nn.LSTM` with one layer:
    /// returns the output `[B, T, H]` and the final hidden state `[B, H]`.
    pub fn lstm(&mut self, x: Var, w_ih: Var, w_hh: Var, b_ih: Var, b_hh: Var) -> Result<(Var, Var)> {
        let shape = self.value(x).shape().to_vec();
        let [batch, steps, _] = shape[..] else {
            return Err(Error::shape("lstm: x", "[B, T, I]", &shape));
        };
        let hidden = self.value(w_hh).shape()[1..].first().copied().unwrap_or(0);
        // The input projection for every step at once, biases folded into its epilogue.
        let bias = self.add(b_ih, b_hh)?;
        let xproj = self.linear(x, w_ih, Some(bias))?;
        let (txproj, tw_hh) = (self.value(xproj).clone(), self.value(w_hh).clone());
        let states = [batch, steps + 1, hidden];
        let h_states = Tensor::zeros(&self.ctx, &states, DType::F32)?;
        let c_states = Tensor::zeros(&self.ctx, &states, DType::F32)?;
        let gates = Tensor::empty(&self.ctx, &[batch, steps, 4 * hidden], DType::F32)?;
        let output = Tensor::empty(&self.ctx, &[batch, steps, hidden], DType::F32)?;
        let forward = LstmForward {
            xproj: &txproj,
            w_hh: &tw_hh,
            lengths: None,
            h_states: &h_states,
            c_states: &c_states,
            gates: &gates,
            output: &output,
        };
        lstm_forward(&self.ctx, &mut self.encoder, &forward)?;
        // h_n = slot T of h_states: the last H of each row of h_states viewed [B, (T+1) H].
        let h_n = Tensor::empty(&self.ctx, &[batch, hidden], DType::F32)?;
        let earlier = Tensor::empty(&self.ctx, &[batch, steps * hidden], DType::F32)?;
        let rows = h_states.reshape(&[batch, (steps + 1) * hidden])?;
        split_forward(&self.ctx, &mut self.encoder, &rows, &earlier, &h_n)?;
        let out = self.computed(output, &[xproj, w_hh]);
        let last = self.computed(h_n, &[xproj, w_hh]);
        let ctx = self.ctx.clone();
        self.record(move |g| {
            let (d_out, d_last) = (g.grad(out), g.grad(last));
            if d_out.is_none() && d_last.is_none() {
                return Ok(());
            }
            // (dh_n, dc_n) = (d_last or 0, 0)
            let grad_state = Tensor::zeros(&ctx, &[2, batch, hidden], DType::F32)?;
            if let Some(d_last) = &d_last {
                let zeros = Tensor::zeros(&ctx, &[1, batch * hidden], DType::F32)?;
                let halves = grad_state.reshape(&[1, 2 * batch * hidden])?;
                split_backward(
                    g.ctx,
                    g.encoder,
                    &d_last.reshape(&[1, batch * hidden])?,
                    &zeros,
                    &halves,
                    false,
                )?;
            }
            let grad_gates = match g.target(xproj)? {
                Some((grad, false)) => grad,
                // xproj feeds nothing else, so its gradient is always fresh.
                _ => {
                    return Err(Error::invalid(
                        "lstm: the input projection's gradient was already written",
                    ))
                }
            };
            let backward = LstmBackward {
                w_hh: &tw_hh,
                lengths: None,
                grad_output: d_out.as_ref(),
                gates: &gates,
                c_states: &c_states,
                grad_gates: &grad_gates,
                grad_state: &grad_state,
            };
            lstm_backward(g.ctx, g.encoder, &backward)?;
            // dW_hh = sum_b dgates[b]^T h_states[b, 0..T]
            if let Some((grad, accumulate)) = g.target(w_hh)? {
                let op = StridedMatmul {
                    rows: 4 * hidden,
                    cols: hidden,
                    inner: steps,
                    batch,
                    sum_batches: true,
                    beta: if accumulate { 1.0 } else { 0.0 },
                };
                let lhs = Strides {
                    offset: 0,
                    batch: steps * 4 * hidden,
                    row: 1,
                    col: 4 * hidden,
                };
                let rhs = Strides {
                    offset: 0,
                    batch: (steps + 1) * hidden,
                    row: hidden,
                    col: 1,
                };
                matmul_strided(
                    g.ctx,
                    g.encoder,
                    &op,
                    MatrixView {
                        tensor: &grad_gates,
                        strides: lhs,
                    },
                    MatrixView {
                        tensor: &h_states,
                        strides: rhs,
                    },
                    None,
                    MatrixView {
                        tensor: &grad,
                        strides: Strides::row_major(4 * hidden, hidden),
                    },
                )?;
            }
            Ok(())
        });
        Ok((out, last))
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
        let out = self.computed(loss, &[logits]);
        self.record(move |g| {
            // The root: dloss = 1, so dlogits (computed with the loss) is the gradient.
            if g.grad(out).is_none() {
                return Ok(());
            }
            if let Some((grad, accumulate)) = g.target(logits)? {
                let grads = BinaryGrads {
                    a: Some(&grad),
                    b: None,
                    accumulate,
                };
                add_backward(g.ctx, g.encoder, &dlogits, grads)?;
            }
            Ok(())
        });
        Ok(out)
    }

    /// Encodes the backward pass from `loss` (a `[1]` value from [`Graph::cross_entropy`]).
    pub fn backward(&mut self, loss: Var) -> Result<()> {
        let mut grads: Vec<Option<Tensor>> = vec![None; self.values.len()];
        // The root's gradient is 1; its recorded backward only needs to know it exists.
        grads[loss.0] = Some(self.values[loss.0].clone());
        let tape = std::mem::take(&mut self.tape);
        let mut backward = Backward {
            ctx: &self.ctx,
            encoder: &mut self.encoder,
            store: self.store,
            sources: &self.sources,
            grads: &mut grads,
            values: &self.values,
        };
        for op in tape.into_iter().rev() {
            op(&mut backward)?;
        }
        Ok(())
    }

    /// Encodes one Adam step (t counts from 1) over every trainable parameter that has a
    /// gradient, as `torch.optim.Adam.step`.
    pub fn adam_step(&mut self, op: &Adam, t: u64) -> Result<()> {
        for p in &mut self.store.params {
            if !p.trainable || !p.grad_live {
                continue;
            }
            if p.moments.is_none() {
                p.moments = Some((
                    Tensor::zeros(&self.ctx, p.value.shape(), DType::F32)?,
                    Tensor::zeros(&self.ctx, p.value.shape(), DType::F32)?,
                ));
            }
            if let Some((m, v)) = &p.moments {
                adam_step(&self.ctx, &mut self.encoder, op, t, &p.value, &p.grad, m, v)?;
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
