//! The end of a training step: gradient clipping and the optimizer steps over every
//! trainable parameter, guarded or not, and the host's check of a guarded step.

use super::{Graph, Param};
use crate::kernels::optim::{
    adam_probe, adam_step, adam_step_guarded, clip_grad_norm, clip_grad_norm_partials_len, sgd_probe, sgd_step,
    sgd_step_guarded, Adam, Sgd, UPDATE_REFUSED,
};
use crate::{DType, Error, Result, Tensor};

impl<'s> Graph<'s> {
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
        let (ctx, encoder) = (&self.ctx, self.encoder.get());
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
        clip_grad_norm(&self.ctx, self.encoder.get(), &grads, max_norm, &total_norm, &partials)?;
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
        let (ctx, encoder) = (&self.ctx, self.encoder.get());
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
