//! Ops that move elements without arithmetic: reshape, split and concat of the last
//! dimension, stack and unstack of the first, and per-row sequence reversal.

use super::{Graph, Var};
use crate::kernels::elementwise::{concat_backward, concat_forward, split_backward, split_forward, BinaryGrads};
use crate::kernels::sequence::{reverse_sequence_backward, reverse_sequence_forward};
use crate::kernels::Lengths;
use crate::{DType, Error, Result, Tensor};

impl<'s> Graph<'s> {
    /// The same elements with another shape (no copy); the gradient flows back reshaped.
    pub fn reshape(&mut self, x: Var, shape: &[usize]) -> Result<Var> {
        let tx = self.value(x).clone();
        let y = tx.reshape(shape)?;
        let out = self.computed(y, &[x]);
        let x_shape = tx.shape().to_vec();
        self.record(move |g| {
            // forward: y = x with another shape  ⇒  dx = dy with x's shape
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
        split_forward(&self.ctx, self.encoder.get(), &tx, &ya, &yb)?;
        let a = self.computed(ya, &[x]);
        let b = self.computed(yb, &[x]);
        self.record(move |g| {
            // forward: (a, b) = (x[.., :at], x[.., at:])  ⇒  dx[.., :at] += da;  dx[.., at:] += db
            // (zero where one of them has no gradient)
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
            if let Some((grad, accumulate)) = g.accumulate_into(x)? {
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
        concat_forward(&self.ctx, self.encoder.get(), &ta, &tb, &y)?;
        let out = self.computed(y, &[a, b]);
        self.record(move |g| {
            // forward: y = [a, b] along the last dimension  ⇒  da += dy[.., :A];  db += dy[.., A:]
            let Some(dy) = g.grad(out) else { return Ok(()) };
            // One split per target: each has its own accumulate flag.
            if let Some((grad, accumulate)) = g.accumulate_into(a)? {
                let scratch = Tensor::empty(g.ctx, tb.shape(), DType::F32)?;
                let grads = BinaryGrads {
                    a: Some(&grad),
                    b: Some(&scratch),
                    accumulate,
                };
                concat_backward(g.ctx, g.encoder, &dy, grads)?;
            }
            if let Some((grad, accumulate)) = g.accumulate_into(b)? {
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
            self.encoder.get().command_encoder().copy_buffer_to_buffer(
                t.buffer(),
                0,
                y.buffer(),
                offset,
                t.size_in_bytes(),
            );
            offset += t.size_in_bytes();
        }
        let out = self.computed(y, xs);
        let xs = xs.to_vec();
        self.record(move |g| {
            // forward: y = [x_0; x_1; ...] along the first dimension  ⇒  dx_i += dy[rows of x_i]
            let Some(dy) = g.grad(out) else { return Ok(()) };
            let mut offset = 0;
            for (&x, t) in xs.iter().zip(&pieces) {
                let bytes = t.size_in_bytes();
                if g.wants(x).any() {
                    // A fresh slice per piece: deliver hands it over or adds it.
                    let dx = Tensor::empty(g.ctx, t.shape(), DType::F32)?;
                    g.encoder
                        .command_encoder()
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
            self.encoder.get().command_encoder().copy_buffer_to_buffer(
                tx.buffer(),
                i as u64 * bytes,
                y.buffer(),
                0,
                bytes,
            );
            outs.push(self.computed(y, &[x]));
        }
        let outs_for_backward = outs.clone();
        self.record(move |g| {
            // forward: y_i = x[rows i]  ⇒  dx[rows i] = dy_i (zero where y_i has no gradient)
            let grads: Vec<Option<Tensor>> = outs_for_backward.iter().map(|&y| g.grad(y)).collect();
            if grads.iter().all(Option::is_none) || !g.wants(x).any() {
                return Ok(());
            }
            let dx = Tensor::empty(g.ctx, &shape, DType::F32)?;
            for (i, dy) in grads.iter().enumerate() {
                let offset = i as u64 * bytes;
                match dy {
                    Some(dy) => {
                        g.encoder
                            .command_encoder()
                            .copy_buffer_to_buffer(dy.buffer(), 0, dx.buffer(), offset, bytes)
                    }
                    // A piece nothing downstream used sends back zeros.
                    None => g
                        .encoder
                        .command_encoder()
                        .clear_buffer(dx.buffer(), offset, Some(bytes)),
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
        reverse_sequence_forward(&self.ctx, self.encoder.get(), &tx, lengths, &y)?;
        let out = self.computed(y, &[x]);
        let lengths = lengths.cloned();
        self.record(move |g| {
            // forward: y[b, t] = x[b, len_b - 1 - t] for t < len_b, 0 past it  ⇒
            // dx[b, t] += dy[b, len_b - 1 - t] for t < len_b (the same reversal)
            let Some(dy) = g.grad(out) else { return Ok(()) };
            if let Some((grad, accumulate)) = g.accumulate_into(x)? {
                reverse_sequence_backward(g.ctx, g.encoder, &dy, lengths.as_ref(), &grad, accumulate)?;
            }
            Ok(())
        });
        Ok(out)
    }
}
