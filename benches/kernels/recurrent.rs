//! The LSTM, GRU and RNN layers' fused step kernels, forward and backward, in GFLOP/s.

use std::time::Duration;

use criterion::Criterion;
use tsumugi::{reference, Context, Tensor};

use crate::common::{kernel_paths, scaled, seeded, time_gpu, to_f64, verify_all};

/// LSTM, GRU and RNN layers' recurrence (the fused step kernels) at the K1/K2 shape of
/// the workloads (B=32, T=64, H=256; the input projection is a matmul, timed above) and K3's
/// batch-1 inference. GFLOP/s in DeepBench's convention: 2 G H^2 B T for the recurrent
/// product only (G = 4 LSTM, 3 GRU, 1 RNN); the backward counts the same product again
/// (dh = dgates W_hh), not the weight-gradient matmuls that follow the loop.
pub(crate) fn recurrent_benches(criterion: &mut Criterion) {
    use tsumugi::kernels::gru_cell::{gru_backward, gru_forward, GruBackward, GruDims, GruForward};
    use tsumugi::kernels::lstm_cell::{lstm_backward, lstm_forward, LstmBackward, LstmDims, LstmForward};
    use tsumugi::kernels::rnn_cell::{rnn_backward, rnn_forward, Nonlinearity, RnnBackward, RnnDims, RnnForward};
    let ctx = Context::new().expect("a GPU adapter");
    let mut group = criterion.benchmark_group("recurrent");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    let zeros = |shape: &[usize]| Tensor::zeros(&ctx, shape, tsumugi::DType::F32).expect("zeros");
    let upload = |data: &[f32], shape: &[usize]| Tensor::from_slice(&ctx, data, shape).expect("upload");
    let submit_and_wait = |encoder: tsumugi::Encoder| {
        ctx.submit(encoder);
        ctx.wait_idle_blocking().expect("GPU");
    };

    let shapes = [
        (32, 64, 256, "b32_t64_h256"),
        (1, 32, 256, "b1_t32_h256"),
        (1, 1, 256, "b1_t1_h256"),
    ];
    let paths = kernel_paths(&ctx);
    for ((batch, steps, hidden, label), &(subgroups, suffix)) in shapes
        .iter()
        .flat_map(|&shape| paths.iter().map(move |path| (shape, path)))
    {
        ctx.set_subgroup_kernels(subgroups).expect("a path the context has");
        let label = &format!("{label}{suffix}");
        let flops = |gates: usize| (2 * gates * hidden * hidden * batch * steps) as u64;
        let states = [batch, steps + 1, hidden];
        let w_scale = 1.0 / (hidden as f32).sqrt();

        // LSTM
        let dims = LstmDims { batch, steps, hidden };
        let xproj_data = seeded(1, batch * steps * 4 * hidden);
        let w_data = scaled(2, 4 * hidden * hidden, w_scale);
        let (xproj, w_hh) = (
            upload(&xproj_data, &[batch, steps, 4 * hidden]),
            upload(&w_data, &[4 * hidden, hidden]),
        );
        let (h_states, c_states) = (zeros(&states), zeros(&states));
        let (gates, output) = (zeros(&[batch, steps, 4 * hidden]), zeros(&[batch, steps, hidden]));
        let forward = LstmForward {
            xproj: &xproj,
            w_hh: &w_hh,
            lengths: None,
            h_states: &h_states,
            c_states: &c_states,
            gates: &gates,
            output: &output,
        };
        let run_forward = || {
            let mut encoder = ctx.create_encoder();
            lstm_forward(&ctx, &mut encoder, &forward).expect("lstm forward");
            submit_and_wait(encoder);
        };
        run_forward();
        let zeros_state = vec![0.0; batch * hidden];
        let want = reference::lstm_cell::lstm_cell_forward(
            &dims,
            &to_f64(&xproj_data),
            &to_f64(&w_data),
            None,
            &zeros_state,
            &zeros_state,
        );
        let err = verify_all(
            "lstm output",
            &output.to_vec::<f32>().expect("read"),
            &want.output,
            1e-4,
            1e-3,
        );
        eprintln!("lstm {label}: forward verified against the CPU reference (max abs error {err:.2e})");
        time_gpu(&mut group, "lstm_forward", label, flops(4), "GFLOP/s", run_forward);
        let grad_output = upload(&seeded(3, batch * steps * hidden), &[batch, steps, hidden]);
        let (grad_gates, grad_state) = (zeros(&[batch, steps, 4 * hidden]), zeros(&[2, batch, hidden]));
        let backward = LstmBackward {
            w_hh: &w_hh,
            lengths: None,
            grad_output: Some(&grad_output),
            gates: &gates,
            c_states: &c_states,
            grad_gates: &grad_gates,
            grad_state: &grad_state,
        };
        let run_backward = || {
            let mut encoder = ctx.create_encoder();
            lstm_backward(&ctx, &mut encoder, &backward).expect("lstm backward");
            submit_and_wait(encoder);
        };
        time_gpu(&mut group, "lstm_backward", label, flops(4), "GFLOP/s", run_backward);

        // GRU
        let dims = GruDims { batch, steps, hidden };
        let xproj_data = seeded(4, batch * steps * 3 * hidden);
        let w_data = scaled(5, 3 * hidden * hidden, w_scale);
        let b_data = scaled(6, 3 * hidden, 0.1);
        let (xproj, w_hh, b_hh) = (
            upload(&xproj_data, &[batch, steps, 3 * hidden]),
            upload(&w_data, &[3 * hidden, hidden]),
            upload(&b_data, &[3 * hidden]),
        );
        let h_states = zeros(&states);
        let (gates, output) = (zeros(&[batch, steps, 4 * hidden]), zeros(&[batch, steps, hidden]));
        let forward = GruForward {
            xproj: &xproj,
            w_hh: &w_hh,
            b_hh: &b_hh,
            lengths: None,
            h_states: &h_states,
            gates: &gates,
            output: &output,
        };
        let run_forward = || {
            let mut encoder = ctx.create_encoder();
            gru_forward(&ctx, &mut encoder, &forward).expect("gru forward");
            submit_and_wait(encoder);
        };
        run_forward();
        let want = reference::gru_cell::gru_cell_forward(
            &dims,
            &to_f64(&xproj_data),
            &to_f64(&w_data),
            &to_f64(&b_data),
            None,
            &zeros_state,
        );
        let err = verify_all(
            "gru output",
            &output.to_vec::<f32>().expect("read"),
            &want.output,
            1e-4,
            1e-3,
        );
        eprintln!("gru {label}: forward verified against the CPU reference (max abs error {err:.2e})");
        time_gpu(&mut group, "gru_forward", label, flops(3), "GFLOP/s", run_forward);
        let (grad_gates, grad_state) = (zeros(&[batch, steps, 4 * hidden]), zeros(&[batch, hidden]));
        let backward = GruBackward {
            w_hh: &w_hh,
            lengths: None,
            grad_output: Some(&grad_output),
            gates: &gates,
            h_states: &h_states,
            grad_gates: &grad_gates,
            grad_state: &grad_state,
        };
        let run_backward = || {
            let mut encoder = ctx.create_encoder();
            gru_backward(&ctx, &mut encoder, &backward).expect("gru backward");
            submit_and_wait(encoder);
        };
        time_gpu(&mut group, "gru_backward", label, flops(3), "GFLOP/s", run_backward);

        // RNN (tanh)
        let dims = RnnDims { batch, steps, hidden };
        let xproj_data = seeded(7, batch * steps * hidden);
        let w_data = scaled(8, hidden * hidden, w_scale);
        let (xproj, w_hh) = (
            upload(&xproj_data, &[batch, steps, hidden]),
            upload(&w_data, &[hidden, hidden]),
        );
        let (h_states, output) = (zeros(&states), zeros(&[batch, steps, hidden]));
        let forward = RnnForward {
            xproj: &xproj,
            w_hh: &w_hh,
            lengths: None,
            h_states: &h_states,
            output: &output,
            nonlinearity: Nonlinearity::Tanh,
        };
        let run_forward = || {
            let mut encoder = ctx.create_encoder();
            rnn_forward(&ctx, &mut encoder, &forward).expect("rnn forward");
            submit_and_wait(encoder);
        };
        run_forward();
        let want = reference::rnn_cell::rnn_cell_forward(
            &dims,
            Nonlinearity::Tanh,
            &to_f64(&xproj_data),
            &to_f64(&w_data),
            None,
            &zeros_state,
        );
        let err = verify_all(
            "rnn output",
            &output.to_vec::<f32>().expect("read"),
            &want.output,
            1e-4,
            1e-3,
        );
        eprintln!("rnn {label}: forward verified against the CPU reference (max abs error {err:.2e})");
        time_gpu(&mut group, "rnn_forward", label, flops(1), "GFLOP/s", run_forward);
        let (grad_gates, grad_state) = (zeros(&[batch, steps, hidden]), zeros(&[batch, hidden]));
        let backward = RnnBackward {
            w_hh: &w_hh,
            lengths: None,
            grad_output: Some(&grad_output),
            h_states: &h_states,
            grad_gates: &grad_gates,
            grad_state: &grad_state,
            nonlinearity: Nonlinearity::Tanh,
        };
        let run_backward = || {
            let mut encoder = ctx.create_encoder();
            rnn_backward(&ctx, &mut encoder, &backward).expect("rnn backward");
            submit_and_wait(encoder);
        };
        time_gpu(&mut group, "rnn_backward", label, flops(1), "GFLOP/s", run_backward);
    }
    group.finish();
}
