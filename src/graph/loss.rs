//! Losses and reductions: the sum of all elements, softmax cross-entropy with its fused
//! gradient, and argmax (no gradient).

use super::{Graph, Var};
use crate::kernels::cross_entropy::{argmax, cross_entropy_forward, CrossEntropy, CrossEntropyOutputs, STATUS_LEN};
use crate::kernels::elementwise::{sum_backward, sum_forward, BinaryGrads};
use crate::{DType, Result, Tensor};

impl<'s> Graph<'s> {
    /// The sum of every element of `x`, `[1]` (`x.sum()`), summed in a fixed order; may be
    /// the root of [`Graph::backward`].
    pub fn sum(&mut self, x: Var) -> Result<Var> {
        let tx = self.value(x).clone();
        let y = Tensor::empty(&self.ctx, &[1], DType::F32)?;
        sum_forward(&self.ctx, self.encoder.get(), &tx, &y)?;
        let out = self.computed(y, &[x]);
        self.record(move |g| {
            // forward: y = Σ_i x[i]  ⇒  dx[i] += dy
            let Some(dy) = g.grad(out) else { return Ok(()) };
            if let Some((grad, accumulate)) = g.accumulate_into(x)? {
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
        cross_entropy_forward(&self.ctx, self.encoder.get(), op, &tl, targets, outputs)?;
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
            if let Some((grad, accumulate)) = g.accumulate_into(logits)? {
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
        argmax(&self.ctx, self.encoder.get(), &tl, &out)?;
        Ok(out)
    }
}
