//! CPU reference of `shaders/optim.wgsl`: PyTorch's single-tensor `Adam` and `SGD`
//! updates and `clip_grad_norm_`, in f64, updating their arguments in place as the
//! PyTorch functions do.

use crate::optim::{Adam, Sgd};

/// One Adam step `t` (from 1) of `param`, `exp_avg`, `exp_avg_sq`, all the shape of `grad`.
pub fn adam_step(op: &Adam, t: u64, param: &mut [f64], grad: &[f64], exp_avg: &mut [f64], exp_avg_sq: &mut [f64]) {
    let (beta1, beta2) = op.betas;
    let bias_correction1 = 1.0 - beta1.powi(t as i32);
    let bias_correction2 = 1.0 - beta2.powi(t as i32);
    let step_size = op.lr / bias_correction1;
    for i in 0..param.len() {
        // grad = grad + weight_decay * param (L2, not decoupled)
        let g = grad[i] + op.weight_decay * param[i];
        // exp_avg.lerp_(grad, 1 - beta1); exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2)
        exp_avg[i] += (1.0 - beta1) * (g - exp_avg[i]);
        exp_avg_sq[i] = beta2 * exp_avg_sq[i] + (1.0 - beta2) * g * g;
        // param.addcdiv_(exp_avg, exp_avg_sq.sqrt() / sqrt(bias_correction2) + eps, -step_size)
        let denom = exp_avg_sq[i].sqrt() / bias_correction2.sqrt() + op.eps;
        param[i] -= step_size * exp_avg[i] / denom;
    }
}

/// One SGD step of `param` (and `momentum_buffer` when `op.momentum != 0`; pass an
/// empty slice otherwise). On the first step the buffer becomes the gradient.
pub fn sgd_step(op: &Sgd, first_step: bool, param: &mut [f64], grad: &[f64], momentum_buffer: &mut [f64]) {
    for i in 0..param.len() {
        let mut d = grad[i] + op.weight_decay * param[i];
        if op.momentum != 0.0 {
            // buf = d (first step) or momentum * buf + (1 - dampening) * d
            let buf = if first_step {
                d
            } else {
                op.momentum * momentum_buffer[i] + (1.0 - op.dampening) * d
            };
            momentum_buffer[i] = buf;
            d = if op.nesterov { d + op.momentum * buf } else { buf };
        }
        param[i] -= op.lr * d;
    }
}

/// Scales every gradient by `min(1, max_norm / (total + 1e-6))` where `total` is the
/// 2-norm of all of them together; returns `total`.
pub fn clip_grad_norm(grads: &mut [Vec<f64>], max_norm: f64) -> f64 {
    let total = grads.iter().flatten().map(|g| g * g).sum::<f64>().sqrt();
    let coef = (max_norm / (total + 1e-6)).min(1.0);
    for g in grads.iter_mut().flatten() {
        *g *= coef;
    }
    total
}
