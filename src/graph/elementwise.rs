//! The tape's arithmetic: sub, mul and div with broadcasting (add lives beside the
//! other ops and comes here for broadcast operands), scale, neg, square, exp and log,
//! mean, sums and means over one dimension, slices and selections along one.
//!
//! Each op encodes its forward kernel now and records a backward closure that opens with
//! its math. With these, a custom loss takes a few lines:
//! `sum(y * w) + 0.5 * sum(h * h)` is `g.sum(g.mul(y, w)?)?`, `g.square(h)?`, and so on.

use super::{Graph, Var, Wants};
use crate::kernels::elementwise::{mean_backward, mean_forward, BinaryGrads};
use crate::kernels::pointwise::{
    binary_backward, binary_forward, broadcast_shape, mean_dim_backward, mean_dim_forward, reduced_shape,
    slice_backward, slice_forward, sum_dim_backward, sum_dim_forward, unary_backward, unary_forward, Binary, Unary,
};
use crate::{DType, Error, Result, Tensor};

impl Graph<'_> {
    /// `a - b`, broadcasting as [`Graph::add`].
    pub fn sub(&mut self, a: Var, b: Var) -> Result<Var> {
        self.binary(Binary::Sub, a, b)
    }

    /// `a * b` elementwise, broadcasting as [`Graph::add`].
    ///
    /// A custom loss, `sum(output * w) + 0.5 * sum(h_n ** 2)` with a row `w` broadcast over
    /// the rows of `output`:
    ///
    /// ```
    /// use tsumugi::graph::{Graph, ParamStore};
    /// use tsumugi::{Context, Tensor};
    /// # fn main() -> tsumugi::Result<()> {
    /// let ctx = Context::new()?;
    /// let mut store = ParamStore::new();
    /// let w_id = store.add("w", Tensor::from_slice(&ctx, &[0.5f32, -1.0, 2.0], &[3])?, true)?;
    /// let h_id = store.add("h", Tensor::from_slice(&ctx, &[1.0f32, -2.0], &[1, 2])?, true)?;
    /// let batch = Tensor::from_slice(&ctx, &[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
    ///
    /// let mut g = Graph::train(&ctx, &mut store, 0, 1);
    /// let (output, w, h_n) = (g.input(&batch), g.param(w_id)?, g.param(h_id)?);
    /// let yw = g.mul(output, w)?; // [B, N] * [N]
    /// let first = g.sum(yw)?;
    /// let h2 = g.square(h_n)?;
    /// let h2_sum = g.sum(h2)?;
    /// let second = g.scale(h2_sum, 0.5)?;
    /// let loss = g.add(first, second)?;
    /// g.backward(loss)?;
    /// g.submit();
    ///
    /// // dw = Σ_rows output, dh_n = h_n
    /// assert_eq!(store.grad(w_id).unwrap().to_vec::<f32>()?, [5.0, 7.0, 9.0]);
    /// assert_eq!(store.grad(h_id).unwrap().to_vec::<f32>()?, [1.0, -2.0]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn mul(&mut self, a: Var, b: Var) -> Result<Var> {
        self.binary(Binary::Mul, a, b)
    }

    /// `a / b` elementwise, broadcasting as [`Graph::add`] (IEEE division: `x / 0` is
    /// infinite or NaN, as in PyTorch).
    pub fn div(&mut self, a: Var, b: Var) -> Result<Var> {
        self.binary(Binary::Div, a, b)
    }

    /// `a op b` where the operands share a shape, or one is broadcast over the other: its
    /// shape is a suffix of the other's (a row `[N]` over `[.., N]`) or `[1]`.
    pub(super) fn binary(&mut self, op: Binary, a: Var, b: Var) -> Result<Var> {
        let (ta, tb) = (self.value(a).clone(), self.value(b).clone());
        let shape = broadcast_shape(ta.shape(), tb.shape()).ok_or_else(|| {
            Error::shape(
                format!("{}: b", op.name()),
                format!("{:?}, a suffix of it, or [1] (broadcast over a)", ta.shape()),
                tb.shape(),
            )
        })?;
        let y = Tensor::empty(&self.ctx, &shape, DType::F32)?;
        binary_forward(&self.ctx, self.encoder.get(), op, &ta, &tb, &y)?;
        let out = self.computed(y, &[a, b]);
        self.record(move |g| {
            // forward: y = a op b, a broadcast operand read at i % its length; so
            //   add: da += dy;      db += dy         sub: da += dy;      db += -dy
            //   mul: da += dy * b;  db += dy * a     div: da += dy / b;  db += -dy * a / b²
            // and a broadcast operand sums over the rows it was repeated on:
            //   db[n] += Σ_rows dy[row, n] * ∂y/∂b
            let Some(dy) = g.grad(out) else { return Ok(()) };
            // add's gradient of an operand of y's shape is dy itself: nothing reads out's
            // gradient after this, so the first fresh such operand takes the buffer as its
            // own (no kernel); the other gets its own, as the two may be added to later.
            let mut handed_over = false;
            for (v, is_a) in [(a, true), (b, false)] {
                let full = if is_a { ta.len() } else { tb.len() } == dy.len();
                if op == Binary::Add && full && !handed_over && a != b && g.wants(v) == Wants::Take {
                    g.deliver(Some(v), &dy)?;
                    handed_over = true;
                    continue;
                }
                if let Some((grad, accumulate)) = g.accumulate_into(v)? {
                    let grads = BinaryGrads {
                        a: is_a.then_some(&grad),
                        b: (!is_a).then_some(&grad),
                        accumulate,
                    };
                    binary_backward(g.ctx, g.encoder, op, &ta, &tb, &dy, grads)?;
                }
            }
            Ok(())
        });
        Ok(out)
    }

    /// `s * x` for a host factor `s`.
    pub fn scale(&mut self, x: Var, s: f32) -> Result<Var> {
        self.unary(Unary::Scale(s), x)
    }

    /// `-x`.
    pub fn neg(&mut self, x: Var) -> Result<Var> {
        self.unary(Unary::Scale(-1.0), x)
    }

    /// `x * x` elementwise (`x ** 2`).
    pub fn square(&mut self, x: Var) -> Result<Var> {
        self.unary(Unary::Square, x)
    }

    /// `exp(x)` elementwise.
    pub fn exp(&mut self, x: Var) -> Result<Var> {
        self.unary(Unary::Exp, x)
    }

    /// `ln(x)` elementwise (NaN below 0, -inf at 0, as `torch.log`).
    pub fn log(&mut self, x: Var) -> Result<Var> {
        self.unary(Unary::Log, x)
    }

    fn unary(&mut self, op: Unary, x: Var) -> Result<Var> {
        let tx = self.value(x).clone();
        let y = Tensor::empty(&self.ctx, tx.shape(), DType::F32)?;
        unary_forward(&self.ctx, self.encoder.get(), op, &tx, &y)?;
        let saved = if op.saves_output() { y.clone() } else { tx };
        let out = self.computed(y, &[x]);
        self.record(move |g| {
            // forward: y = s x  ⇒  dx += s dy;       y = x²    ⇒  dx += 2 x dy;
            //          y = eˣ   ⇒  dx += y dy;       y = ln x  ⇒  dx += dy / x
            let Some(dy) = g.grad(out) else { return Ok(()) };
            if let Some((grad, accumulate)) = g.accumulate_into(x)? {
                unary_backward(g.ctx, g.encoder, op, &saved, &dy, &grad, accumulate)?;
            }
            Ok(())
        });
        Ok(out)
    }

    /// The mean of every element of `x`, `[1]` (`x.mean()`), summed in a fixed order.
    pub fn mean(&mut self, x: Var) -> Result<Var> {
        let tx = self.value(x).clone();
        let y = Tensor::empty(&self.ctx, &[1], DType::F32)?;
        mean_forward(&self.ctx, self.encoder.get(), &tx, &y)?;
        let out = self.computed(y, &[x]);
        self.record(move |g| {
            // forward: y = Σ_i x[i] / n  ⇒  dx[i] += dy / n
            let Some(dy) = g.grad(out) else { return Ok(()) };
            if let Some((grad, accumulate)) = g.accumulate_into(x)? {
                mean_backward(g.ctx, g.encoder, &dy, &grad, accumulate)?;
            }
            Ok(())
        });
        Ok(out)
    }

    /// `x.sum(dim)`: `x`'s shape without `dim` (`[1]` from a one-dimensional `x`), each
    /// element summed in a fixed order.
    pub fn sum_dim(&mut self, x: Var, dim: usize) -> Result<Var> {
        self.reduce_dim(x, dim, false)
    }

    /// `x.mean(dim)`: [`Graph::sum_dim`] divided by the size of `dim`.
    pub fn mean_dim(&mut self, x: Var, dim: usize) -> Result<Var> {
        self.reduce_dim(x, dim, true)
    }

    fn reduce_dim(&mut self, x: Var, dim: usize, mean: bool) -> Result<Var> {
        let tx = self.value(x).clone();
        let y = Tensor::empty(&self.ctx, &reduced_shape(tx.shape(), dim), DType::F32)?;
        if mean {
            mean_dim_forward(&self.ctx, self.encoder.get(), &tx, dim, &y)?;
        } else {
            sum_dim_forward(&self.ctx, self.encoder.get(), &tx, dim, &y)?;
        }
        let out = self.computed(y, &[x]);
        self.record(move |g| {
            // forward: y[o, k] = Σ_d x[o, d, k] (/ D for the mean)  ⇒  dx[o, d, k] += dy[o, k] (/ D)
            let Some(dy) = g.grad(out) else { return Ok(()) };
            if let Some((grad, accumulate)) = g.accumulate_into(x)? {
                if mean {
                    mean_dim_backward(g.ctx, g.encoder, &dy, dim, &grad, accumulate)?;
                } else {
                    sum_dim_backward(g.ctx, g.encoder, &dy, dim, &grad, accumulate)?;
                }
            }
            Ok(())
        });
        Ok(out)
    }

    /// `x.narrow(dim, start, len)`: indices `start..start + len` along `dim` (a copy); the
    /// gradient of the rest of `x` is zero.
    pub fn slice(&mut self, x: Var, dim: usize, start: usize, len: usize) -> Result<Var> {
        let shape = self.value(x).shape().to_vec();
        if dim >= shape.len() {
            return Err(Error::invalid(format!(
                "slice: dimension {dim} is outside the {} dimensions of {shape:?}",
                shape.len()
            )));
        }
        let mut y_shape = shape;
        y_shape[dim] = len;
        self.slice_into(x, dim, start, &y_shape, None)
    }

    /// `x.select(dim, index)`: the slice at `index` along `dim`, with that dimension
    /// removed (`[1]` from a one-dimensional `x`).
    pub fn select(&mut self, x: Var, dim: usize, index: usize) -> Result<Var> {
        let shape = self.value(x).shape().to_vec();
        if dim >= shape.len() {
            return Err(Error::invalid(format!(
                "select: dimension {dim} is outside the {} dimensions of {shape:?}",
                shape.len()
            )));
        }
        let mut kept = shape.clone();
        kept[dim] = 1;
        self.slice_into(x, dim, index, &kept, Some(reduced_shape(&shape, dim)))
    }

    /// A slice of shape `kept` (`x`'s with the slice's length at `dim`), given the shape
    /// `shape` when set (select drops the dimension; the elements are the same).
    fn slice_into(
        &mut self,
        x: Var,
        dim: usize,
        start: usize,
        kept: &[usize],
        shape: Option<Vec<usize>>,
    ) -> Result<Var> {
        let tx = self.value(x).clone();
        let y = Tensor::empty(&self.ctx, kept, DType::F32)?;
        slice_forward(&self.ctx, self.encoder.get(), &tx, dim, start, &y)?;
        let y = match &shape {
            Some(shape) => y.reshape(shape)?,
            None => y,
        };
        let out = self.computed(y, &[x]);
        let kept = kept.to_vec();
        self.record(move |g| {
            // forward: y[o, l, k] = x[o, start + l, k]  ⇒  dx[o, start + l, k] += dy[o, l, k],
            // and the rest of dx gets 0
            let Some(dy) = g.grad(out) else { return Ok(()) };
            if let Some((grad, accumulate)) = g.accumulate_into(x)? {
                slice_backward(g.ctx, g.encoder, &dy.reshape(&kept)?, dim, start, &grad, accumulate)?;
            }
            Ok(())
        });
        Ok(out)
    }
}
