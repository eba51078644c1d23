//! Loss and optimizer: memory-bound, so throughput is in bytes.
//!
//! Criterion's throughput is the bytes each kernel must move at least (every input read
//! once, every output written once), so its `B/s` is an effective bandwidth; a `GB/s`
//! line with the median of criterion's samples follows each case.

use std::time::Duration;

use criterion::Criterion;
use rand::{Rng, SeedableRng};
use tsumugi::kernels::cross_entropy::{cross_entropy_forward, CrossEntropy, CrossEntropyOutputs, STATUS_LEN};
use tsumugi::kernels::optim::{adam_step, Adam};
use tsumugi::{reference, Context, DType, Tensor};

use crate::common::{seeded, time_gpu, verify_all};

pub(crate) fn loss_optim_benches(criterion: &mut Criterion) {
    let ctx = Context::new().expect("a GPU adapter");
    let mut group = criterion.benchmark_group("loss_optim");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));

    // Cross-entropy over a batch of 32 sequences of 64 steps, 1000 classes, padding id 0.
    let (n, v) = (32 * 64, 1000);
    let op = CrossEntropy {
        ignore_index: Some(0),
        ..CrossEntropy::default()
    };
    let logits_data: Vec<f32> = seeded(3, n * v).iter().map(|x| 4.0 * x).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let targets_data: Vec<u32> = (0..n).map(|_| rng.random_range(0..v as u32)).collect();
    let logits = Tensor::from_slice(&ctx, &logits_data, &[n, v]).expect("logits");
    let targets = Tensor::from_slice(&ctx, &targets_data, &[n]).expect("targets");
    let loss = Tensor::full(&ctx, &[1], f32::NAN).expect("loss");
    let dlogits = Tensor::full(&ctx, &[n, v], f32::NAN).expect("dlogits");
    let row_loss = Tensor::full(&ctx, &[n], f32::NAN).expect("row_loss");
    let status = Tensor::zeros(&ctx, &[STATUS_LEN], DType::U32).expect("status");
    let run_loss = || {
        let mut encoder = ctx.create_encoder();
        let out = CrossEntropyOutputs {
            loss: &loss,
            dlogits: &dlogits,
            row_loss: &row_loss,
            status: &status,
        };
        cross_entropy_forward(&ctx, &mut encoder, &op, &logits, &targets, out).expect("cross_entropy");
        ctx.submit(encoder);
        ctx.wait_idle_blocking().expect("GPU");
    };
    run_loss();
    let logits_f64: Vec<f64> = logits_data.iter().map(|&x| f64::from(x)).collect();
    let want = reference::cross_entropy::cross_entropy_forward(&op, &logits_f64, &targets_data, v);
    let loss_err = verify_all(
        "loss",
        &loss.to_vec::<f32>().expect("read loss"),
        &[want.loss],
        1e-5,
        1e-4,
    );
    let grad_err = verify_all(
        "dlogits",
        &dlogits.to_vec::<f32>().expect("read dlogits"),
        &want.dlogits,
        1e-6,
        1e-4,
    );
    eprintln!("cross_entropy n{n}_v{v}: verified against the CPU reference (loss err {loss_err:.2e}, dlogits max abs err {grad_err:.2e})");
    // logits read and dlogits written once, targets read, row losses written (and read).
    let bytes = (2 * n * v * 4 + 3 * n * 4) as u64;
    time_gpu(
        &mut group,
        "cross_entropy_forward",
        &format!("n{n}_v{v}"),
        bytes,
        "GB/s",
        run_loss,
    );

    // Adam over 1M parameters (one tensor, one dispatch).
    let len = 1 << 20;
    let param_data = seeded(5, len);
    let grad_data = seeded(6, len);
    let param = Tensor::from_slice(&ctx, &param_data, &[len]).expect("param");
    let grad = Tensor::from_slice(&ctx, &grad_data, &[len]).expect("grad");
    let exp_avg = Tensor::zeros(&ctx, &[len], DType::F32).expect("exp_avg");
    let exp_avg_sq = Tensor::zeros(&ctx, &[len], DType::F32).expect("exp_avg_sq");
    let adam = Adam::default();
    // The step count only changes the bias corrections; step 1 is verified, later
    // iterations keep stepping (the kernel's work does not depend on t).
    let step = std::cell::Cell::new(1u64);
    let run_adam = || {
        let mut encoder = ctx.create_encoder();
        adam_step(
            &ctx,
            &mut encoder,
            &adam,
            step.get(),
            &param,
            &grad,
            &exp_avg,
            &exp_avg_sq,
        )
        .expect("adam_step");
        ctx.submit(encoder);
        ctx.wait_idle_blocking().expect("GPU");
        step.set(step.get() + 1);
    };
    run_adam();
    let mut want_param: Vec<f64> = param_data.iter().map(|&x| f64::from(x)).collect();
    let grad_f64: Vec<f64> = grad_data.iter().map(|&x| f64::from(x)).collect();
    let (mut m, mut v2) = (vec![0.0; len], vec![0.0; len]);
    reference::optim::adam_step(&adam, 1, &mut want_param, &grad_f64, &mut m, &mut v2);
    let err = verify_all(
        "param",
        &param.to_vec::<f32>().expect("read param"),
        &want_param,
        1e-6,
        1e-5,
    );
    eprintln!("adam_step 1M: verified against the CPU reference (max abs err {err:.2e})");
    // param, grad, exp_avg, exp_avg_sq read; param, exp_avg, exp_avg_sq written.
    let bytes = (7 * len * 4) as u64;
    time_gpu(&mut group, "adam_step", "1M", bytes, "GB/s", run_adam);
    group.finish();
}
