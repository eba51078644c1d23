//! adam_step, sgd_step and clip_grad_norm against the CPU reference over consecutive
//! steps, hand-checked numbers, and argument checks. (Optimizers have no backward, so
//! there is no finite-difference check here.)

mod common;

use common::{assert_close, ctx, grid, seeded, to_f64, Tolerance};
use tsumugi::kernels::optim::{adam_step, clip_grad_norm, clip_grad_norm_partials_len, sgd_step, Adam, Sgd};
use tsumugi::reference;
use tsumugi::{DType, Error, Tensor};

/// Element counts: 1, a prime, a realistic size, and one past 16 workgroups of 256
/// (and past one 4096-element chunk of the norm).
const LENS: &[usize] = &[1, 37, 1000, 4099];
const STEPS: u64 = 4;

/// A few f32 roundings per step on values of order 1 that move by about lr per step.
const UPDATE: Tolerance = Tolerance { atol: 1e-6, rtol: 1e-5 };

fn upload(values: &[f32]) -> Tensor {
    Tensor::from_slice(ctx(), values, &[values.len()]).unwrap()
}

fn adam_configs() -> Vec<Adam> {
    vec![
        Adam::default(),
        Adam {
            lr: 1e-2,
            weight_decay: 0.1,
            ..Adam::default()
        },
        // beta1 < 0.5 takes the other branch of PyTorch's lerp.
        Adam {
            lr: 3e-3,
            betas: (0.3, 0.9),
            eps: 1e-6,
            weight_decay: 0.0,
        },
    ]
}

#[test]
fn adam_step_matches_reference_over_consecutive_steps() {
    let ctx = ctx();
    for (c, op) in adam_configs().iter().enumerate() {
        for &len in LENS {
            let seed = 10 * c as u64 + len as u64;
            let p0 = seeded(seed, len);
            let param = upload(&p0);
            let exp_avg = Tensor::zeros(ctx, &[len], DType::F32).unwrap();
            let exp_avg_sq = Tensor::zeros(ctx, &[len], DType::F32).unwrap();
            let (mut want_p, mut want_m, mut want_v) = (to_f64(&p0), vec![0.0; len], vec![0.0; len]);
            for t in 1..=STEPS {
                let g = seeded(seed + 100 * t, len);
                let grad = upload(&g);
                let mut encoder = ctx.create_encoder();
                adam_step(ctx, &mut encoder, op, t, &param, &grad, &exp_avg, &exp_avg_sq).unwrap();
                ctx.submit(encoder);
                reference::optim::adam_step(op, t, &mut want_p, &to_f64(&g), &mut want_m, &mut want_v);
                let case = format!("len {len} step {t} {op:?}");
                assert_close("param", &case, &param.to_vec().unwrap(), &want_p, UPDATE);
                assert_close("exp_avg", &case, &exp_avg.to_vec().unwrap(), &want_m, UPDATE);
                assert_close("exp_avg_sq", &case, &exp_avg_sq.to_vec().unwrap(), &want_v, UPDATE);
            }
        }
    }
}

#[test]
fn adam_step_first_step_moves_each_parameter_by_lr_times_the_sign_of_its_gradient() {
    // t = 1: m_hat = g and v_hat = g^2, so the step is lr * g / (|g| + eps) ~ lr * sign(g).
    let ctx = ctx();
    let g = [0.5f32, -2.0, 1e-3, -0.25];
    let param = upload(&[0.0; 4]);
    let exp_avg = Tensor::zeros(ctx, &[4], DType::F32).unwrap();
    let exp_avg_sq = Tensor::zeros(ctx, &[4], DType::F32).unwrap();
    let mut encoder = ctx.create_encoder();
    adam_step(
        ctx,
        &mut encoder,
        &Adam::default(),
        1,
        &param,
        &upload(&g),
        &exp_avg,
        &exp_avg_sq,
    )
    .unwrap();
    ctx.submit(encoder);
    let tol = Tolerance { atol: 1e-9, rtol: 1e-5 };
    assert_close(
        "param",
        "adam t=1",
        &param.to_vec().unwrap(),
        &[-1e-3, 1e-3, -1e-3, 1e-3],
        tol,
    );
    // m = (1 - 0.9) g, v = (1 - 0.999) g^2.
    assert_close(
        "exp_avg",
        "adam t=1",
        &exp_avg.to_vec().unwrap(),
        &[0.05, -0.2, 1e-4, -0.025],
        tol,
    );
    assert_close(
        "exp_avg_sq",
        "adam t=1",
        &exp_avg_sq.to_vec().unwrap(),
        &[2.5e-4, 4e-3, 1e-9, 6.25e-5],
        tol,
    );
}

fn sgd_configs() -> Vec<Sgd> {
    let base = Sgd {
        lr: 0.1,
        ..Sgd::default()
    };
    vec![
        base,
        Sgd {
            weight_decay: 0.01,
            ..base
        },
        Sgd { momentum: 0.9, ..base },
        Sgd {
            momentum: 0.9,
            dampening: 0.1,
            weight_decay: 0.01,
            ..base
        },
        Sgd {
            momentum: 0.9,
            nesterov: true,
            ..base
        },
        Sgd {
            momentum: 0.5,
            nesterov: true,
            weight_decay: 0.1,
            ..base
        },
    ]
}

#[test]
fn sgd_step_matches_reference_over_consecutive_steps() {
    let ctx = ctx();
    for (c, op) in sgd_configs().iter().enumerate() {
        for &len in LENS {
            let seed = 1000 + 10 * c as u64 + len as u64;
            let p0 = seeded(seed, len);
            let param = upload(&p0);
            // Garbage in the buffer: the first step must overwrite it, not decay it.
            let buffer = Tensor::full(ctx, &[len], 7.0f32).unwrap();
            let (mut want_p, mut want_buf) = (to_f64(&p0), vec![7.0; len]);
            for t in 1..=STEPS {
                let g = seeded(seed + 100 * t, len);
                let mut encoder = ctx.create_encoder();
                let momentum_buffer = (op.momentum != 0.0).then_some(&buffer);
                sgd_step(ctx, &mut encoder, op, t == 1, &param, &upload(&g), momentum_buffer).unwrap();
                ctx.submit(encoder);
                reference::optim::sgd_step(op, t == 1, &mut want_p, &to_f64(&g), &mut want_buf);
                let case = format!("len {len} step {t} {op:?}");
                assert_close("param", &case, &param.to_vec().unwrap(), &want_p, UPDATE);
                if op.momentum != 0.0 {
                    assert_close("momentum_buffer", &case, &buffer.to_vec().unwrap(), &want_buf, UPDATE);
                }
            }
        }
    }
}

#[test]
fn sgd_step_with_momentum_matches_hand_checked_numbers() {
    // p = 1, g = 0.5 twice, lr 0.1, momentum 0.9:
    // step 1: buf = 0.5, p = 0.95; step 2: buf = 0.9 * 0.5 + 0.5 = 0.95, p = 0.855.
    let ctx = ctx();
    let op = Sgd {
        lr: 0.1,
        momentum: 0.9,
        ..Sgd::default()
    };
    let param = upload(&[1.0]);
    let buffer = Tensor::zeros(ctx, &[1], DType::F32).unwrap();
    let grad = upload(&[0.5]);
    for (first, want_p, want_buf) in [(true, 0.95, 0.5), (false, 0.855, 0.95)] {
        let mut encoder = ctx.create_encoder();
        sgd_step(ctx, &mut encoder, &op, first, &param, &grad, Some(&buffer)).unwrap();
        ctx.submit(encoder);
        assert_close("param", "sgd hand", &param.to_vec().unwrap(), &[want_p], UPDATE);
        assert_close(
            "momentum_buffer",
            "sgd hand",
            &buffer.to_vec().unwrap(),
            &[want_buf],
            UPDATE,
        );
    }
}

/// Runs clip_grad_norm on tensors of `lens` scaled by `scale`; compares with the reference.
fn check_clip(lens: &[usize], scale: f32, max_norm: f64, seed: u64, grid_values: bool) -> f64 {
    let ctx = ctx();
    let data: Vec<Vec<f32>> = lens
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            let values = if grid_values {
                grid(seed + i as u64, len)
            } else {
                seeded(seed + i as u64, len)
            };
            values.iter().map(|v| v * scale).collect()
        })
        .collect();
    let tensors: Vec<Tensor> = data.iter().map(|d| upload(d)).collect();
    let grads: Vec<&Tensor> = tensors.iter().collect();
    let total_norm = Tensor::full(ctx, &[1], f32::NAN).unwrap();
    let partials = Tensor::full(ctx, &[clip_grad_norm_partials_len(&grads)], f32::NAN).unwrap();
    let mut encoder = ctx.create_encoder();
    clip_grad_norm(ctx, &mut encoder, &grads, max_norm, &total_norm, &partials).unwrap();
    ctx.submit(encoder);

    let mut want: Vec<Vec<f64>> = data.iter().map(|d| to_f64(d)).collect();
    let want_total = reference::optim::clip_grad_norm(&mut want, max_norm);
    let case = format!("lens {lens:?} scale {scale} max_norm {max_norm}");
    let got_total = total_norm.to_vec::<f32>().unwrap();
    assert_close("total_norm", &case, &got_total, &[want_total], Tolerance::F32_SUMS);
    for (i, (tensor, want)) in tensors.iter().zip(&want).enumerate() {
        assert_close(&format!("grads[{i}]"), &case, &tensor.to_vec().unwrap(), want, UPDATE);
    }
    want_total
}

#[test]
fn clip_grad_norm_matches_reference_above_and_below_max_norm() {
    // Norms: about sqrt(5137 / 3) ~ 41 for unit-scale values.
    let total = check_clip(LENS, 1.0, 5.0, 1, false);
    assert!(total > 5.0, "the norm {total} must be above max_norm for this case");
    let total = check_clip(LENS, 1.0, 1000.0, 2, false);
    assert!(total < 1000.0, "the norm {total} must be below max_norm for this case");
    // Grid values: sums of squares exact in f32, across the 4096-element chunks.
    check_clip(&[4097, 9000, 3], 1.0, 10.0, 3, true);
    // One tensor, tiny gradients: no clipping, coefficient exactly 1.
    check_clip(&[1], 1e-3, 1.0, 4, false);
    // Several tensors of the same length: the list's order is the sum's order.
    check_clip(&[37, 37, 37, 37, 37], 0.5, 0.1, 5, false);
}

#[test]
fn clip_grad_norm_of_no_gradients_is_zero() {
    let ctx = ctx();
    let total_norm = Tensor::full(ctx, &[1], f32::NAN).unwrap();
    let partials = Tensor::zeros(ctx, &[clip_grad_norm_partials_len(&[])], DType::F32).unwrap();
    let mut encoder = ctx.create_encoder();
    clip_grad_norm(ctx, &mut encoder, &[], 1.0, &total_norm, &partials).unwrap();
    ctx.submit(encoder);
    assert_eq!(total_norm.to_vec::<f32>().unwrap(), vec![0.0]);
}

fn assert_invalid(result: tsumugi::Result<()>, what: &str) {
    match result {
        Err(Error::InvalidArgument { .. }) => {}
        other => panic!("{what}: expected InvalidArgument, got {other:?}"),
    }
}

#[test]
fn optim_rejects_bad_hyperparameters_and_shapes_naming_the_tensor() {
    let ctx = ctx();
    let p = Tensor::zeros(ctx, &[3, 4], DType::F32).unwrap();
    let g = Tensor::zeros(ctx, &[3, 4], DType::F32).unwrap();
    let m = Tensor::zeros(ctx, &[3, 4], DType::F32).unwrap();
    let v = Tensor::zeros(ctx, &[3, 4], DType::F32).unwrap();
    let mut e = ctx.create_encoder();
    adam_step(ctx, &mut e, &Adam::default(), 1, &p, &g, &m, &v).expect("valid");

    let adam = Adam::default();
    for (bad, what) in [
        (Adam { lr: 0.0, ..adam }, "lr 0"),
        (Adam { lr: f64::NAN, ..adam }, "lr NaN"),
        (Adam { lr: -1e-3, ..adam }, "lr < 0"),
        (
            Adam {
                betas: (1.0, 0.999),
                ..adam
            },
            "beta1 1",
        ),
        (
            Adam {
                betas: (0.9, -0.1),
                ..adam
            },
            "beta2 < 0",
        ),
        (Adam { eps: -1e-8, ..adam }, "eps < 0"),
        (
            Adam {
                weight_decay: f64::NAN,
                ..adam
            },
            "weight_decay NaN",
        ),
    ] {
        assert_invalid(adam_step(ctx, &mut e, &bad, 1, &p, &g, &m, &v), what);
    }
    assert_invalid(adam_step(ctx, &mut e, &adam, 0, &p, &g, &m, &v), "t = 0");
    let wrong = Tensor::zeros(ctx, &[4, 3], DType::F32).unwrap();
    let err = adam_step(ctx, &mut e, &adam, 1, &p, &g, &m, &wrong).unwrap_err();
    assert!(
        matches!(&err, Error::ShapeMismatch { tensor, expected, found } if tensor == "adam_step: exp_avg_sq" && expected == "[3, 4]" && found == &vec![4, 3]),
        "{err}"
    );
    let ids = Tensor::zeros(ctx, &[3, 4], DType::U32).unwrap();
    let err = adam_step(ctx, &mut e, &adam, 1, &p, &ids, &m, &v).unwrap_err();
    assert!(
        matches!(&err, Error::DType { tensor, .. } if tensor == "adam_step: grad"),
        "{err}"
    );
    assert_invalid(
        adam_step(ctx, &mut e, &adam, 1, &p, &g, &m, &m),
        "exp_avg aliasing exp_avg_sq",
    );

    let sgd = Sgd::default();
    sgd_step(ctx, &mut e, &sgd, true, &p, &g, None).expect("plain SGD needs no buffer");
    for (bad, what) in [
        (Sgd { lr: 0.0, ..sgd }, "lr 0"),
        (Sgd { momentum: -0.5, ..sgd }, "momentum < 0"),
        (Sgd { nesterov: true, ..sgd }, "nesterov without momentum"),
        (
            Sgd {
                nesterov: true,
                momentum: 0.9,
                dampening: 0.1,
                ..sgd
            },
            "nesterov with dampening",
        ),
        (Sgd { momentum: 0.9, ..sgd }, "momentum without a buffer"),
    ] {
        assert_invalid(sgd_step(ctx, &mut e, &bad, true, &p, &g, None), what);
    }
    let with_momentum = Sgd { momentum: 0.9, ..sgd };
    let err = sgd_step(ctx, &mut e, &with_momentum, true, &p, &g, Some(&wrong)).unwrap_err();
    assert!(
        matches!(&err, Error::ShapeMismatch { tensor, .. } if tensor == "sgd_step: momentum_buffer"),
        "{err}"
    );

    let total = Tensor::zeros(ctx, &[1], DType::F32).unwrap();
    let partials = Tensor::zeros(ctx, &[clip_grad_norm_partials_len(&[&g, &m])], DType::F32).unwrap();
    clip_grad_norm(ctx, &mut e, &[&g, &m], 1.0, &total, &partials).expect("valid");
    assert_invalid(
        clip_grad_norm(ctx, &mut e, &[&g, &m], -1.0, &total, &partials),
        "max_norm < 0",
    );
    assert_invalid(
        clip_grad_norm(ctx, &mut e, &[&g, &g], 1.0, &total, &partials),
        "the same gradient twice",
    );
    let small = Tensor::zeros(ctx, &[1], DType::F32).unwrap();
    let big = Tensor::zeros(ctx, &[5000], DType::F32).unwrap();
    let err = clip_grad_norm(ctx, &mut e, &[&g, &big], 1.0, &total, &small).unwrap_err();
    assert!(
        matches!(&err, Error::ShapeMismatch { tensor, .. } if tensor == "clip_grad_norm: partials"),
        "{err}"
    );
}
