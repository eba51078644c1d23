//! Linear layers (one matmul with the bias fused, or added onto another product), the
//! batched weight gradient of a weight used at every step, embedding lookups and dropout.

use super::{copy_of, Graph, Var};
use crate::kernels::elementwise::{dropout_backward, dropout_forward, Dropout};
use crate::kernels::embedding::{embedding_backward, embedding_forward, EmbeddingBackward, EmbeddingWorkspace};
use crate::kernels::matmul::{matmul_backward, matmul_forward, Matmul, MatmulGrads};
use crate::{DType, Error, Result, Tensor};

impl<'s> Graph<'s> {
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
                self.encoder
                    .get()
                    .command_encoder()
                    .copy_buffer_to_buffer(tc.buffer(), 0, y.buffer(), 0, bytes);
                Matmul { beta: 1.0, ..op }
            }
            None => op,
        };
        matmul_forward(&self.ctx, self.encoder.get(), &forward_op, &x2, &tw, tb.as_ref(), &y)?;
        let mut from = vec![x, w];
        from.extend(b);
        from.extend(onto);
        let out = self.computed(y.reshape(&shape)?, &from);
        self.record(move |g| {
            // forward: y = x Wᵀ + b (+ c)  ⇒  dx = dy W;  dW += dyᵀ x;  db += Σ_rows dy;  dc += dy
            let Some(dy_out) = g.grad(out) else { return Ok(()) };
            let dy = dy_out.reshape(&[rows, outputs])?;
            // One matmul_backward per target, each with its own accumulate flag.
            if let Some((grad, accumulate)) = g.accumulate_into(x)? {
                let grad = grad.reshape(&[rows, inputs])?;
                let grads = MatmulGrads {
                    a: Some(&grad),
                    accumulate,
                    ..MatmulGrads::default()
                };
                matmul_backward(g.ctx, g.encoder, &op, &x2, &tw, &dy, grads)?;
            }
            if g.batched.contains_key(&w.0) {
                if g.wants(w).any() {
                    g.batched.entry(w.0).or_default().push((x2.clone(), dy.clone()));
                }
            } else if let Some((grad, accumulate)) = g.accumulate_into(w)? {
                let grads = MatmulGrads {
                    b: Some(&grad),
                    accumulate,
                    ..MatmulGrads::default()
                };
                matmul_backward(g.ctx, g.encoder, &op, &x2, &tw, &dy, grads)?;
            }
            if let Some(b) = b {
                if let Some((grad, accumulate)) = g.accumulate_into(b)? {
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
                if g.batched.contains_key(&w.0) && g.wants(c).any() {
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
            // forward: each use of the alias is y_u = x_u Wᵀ  ⇒  dW += Σ_u dy_uᵀ x_u, here as one
            // product over the stacked (x_u, dy_u) of every use, handed to W as the alias's gradient.
            let uses = g.batched.remove(&alias.0).unwrap_or_default();
            if let Some(d_alias) = g.grad(alias) {
                g.deliver(Some(w), &d_alias)?;
            }
            if uses.is_empty() {
                return Ok(());
            }
            let Some((grad, accumulate)) = g.accumulate_into(w)? else {
                return Ok(());
            };
            let rows: usize = uses.iter().map(|(x, _)| x.shape()[0]).sum();
            let x_all = Tensor::empty(g.ctx, &[rows, inputs], DType::F32)?;
            let dy_all = Tensor::empty(g.ctx, &[rows, outputs], DType::F32)?;
            let (mut x_at, mut dy_at) = (0, 0);
            for (x, dy) in &uses {
                g.encoder.command_encoder().copy_buffer_to_buffer(
                    x.buffer(),
                    0,
                    x_all.buffer(),
                    x_at,
                    x.size_in_bytes(),
                );
                g.encoder.command_encoder().copy_buffer_to_buffer(
                    dy.buffer(),
                    0,
                    dy_all.buffer(),
                    dy_at,
                    dy.size_in_bytes(),
                );
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
        embedding_forward(&self.ctx, self.encoder.get(), ids, &tw, &y, &error_flag)?;
        let out = self.computed(y, &[weight]);
        let ids = ids.clone();
        let ctx = self.ctx.clone();
        self.record(move |g| {
            // forward: y[n] = W[ids[n]]  ⇒  dW[v] += Σ_{n: ids[n] = v} dy[n] (none for the padding row)
            let Some(dy) = g.grad(out) else { return Ok(()) };
            if let Some((grad, accumulate)) = g.accumulate_into(weight)? {
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
        dropout_forward(&self.ctx, self.encoder.get(), &op, &tx, &y, None)?;
        let out = self.computed(y, &[x]);
        self.record(move |g| {
            // forward: y = x ⊙ keep / (1 - p)  ⇒  dx += dy ⊙ keep / (1 - p), the same mask
            let Some(dy) = g.grad(out) else { return Ok(()) };
            if let Some((grad, accumulate)) = g.accumulate_into(x)? {
                dropout_backward(g.ctx, g.encoder, &op, &dy, &grad, accumulate)?;
            }
            Ok(())
        });
        Ok(out)
    }
}
