//! lstm_cell_forward / lstm_sequence_forward / lstm_cell_backward against the CPU
//! reference, and the reference backward against finite differences.

mod common;

use common::{
    assert_close, assert_gradient_matches_finite_differences, ctx, nan_tensor, on_every_kernel_path, seeded, to_f64,
    Tolerance,
};
use tsumugi::kernels::lstm_cell::{
    lstm_backward, lstm_cell_forward, lstm_forward, lstm_sequence_forward, LstmBackward, LstmDims, LstmForward,
};
use tsumugi::kernels::Lengths;
use tsumugi::reference::lstm_cell as reference;
use tsumugi::{Error, Tensor};

/// (B, T, H, lengths)
type Case = (usize, usize, usize, Option<Vec<u32>>);

/// (B, T, H, lengths): 1, primes, H not a multiple of 4 (the vec4 path) or of the 32-wide
/// workgroup, B not a multiple of the 4-row block or of the subgroup kernels' 8 to 32-row
/// tiles, padded rows.
fn cases() -> Vec<Case> {
    vec![
        (33, 2, 20, Some((0..33).map(|b| 1 + b % 2).collect())),
        (8, 3, 16, Some(vec![3, 1, 2, 3, 3, 2, 1, 3])),
        (17, 3, 9, None),
        (1, 1, 1, None),
        (3, 5, 7, Some(vec![5, 2, 1])),
        (4, 4, 8, None),
        (5, 3, 13, Some(vec![3, 3, 1, 2, 1])),
        (2, 6, 33, Some(vec![6, 4])),
        (9, 2, 64, None),
        (6, 3, 132, Some(vec![1, 3, 2, 3, 3, 1])),
        // B 65, H 132: the subgroup step kernels' tiles of 32 rows and 16 to 64 invocations,
        // so a workgroup spans several subgroups (8 lanes) or several groups of 8 lanes in
        // one subgroup (16 lanes and more), with a partial last tile of rows.
        (65, 2, 132, Some((0..65).map(|b| 1 + b % 2).collect())),
    ]
}

/// Every B < 4 with H = 1, 7, 33, 64; lengths on some rows.
fn small_batch_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for batch in 1..=3 {
        for hidden in [1, 7, 33, 64] {
            let steps = 4;
            let lengths = (batch > 1 && hidden != 64).then(|| (0..batch).map(|b| (steps - b) as u32).collect());
            cases.push((batch, steps, hidden, lengths));
        }
    }
    cases
}

fn name(batch: usize, steps: usize, hidden: usize, lengths: &Option<Vec<u32>>) -> String {
    format!(
        "b{batch}_t{steps}_h{hidden}{}",
        if lengths.is_some() { "_lengths" } else { "" }
    )
}

struct Inputs {
    dims: LstmDims,
    xproj: Vec<f32>,
    w_hh: Vec<f32>,
    h0: Vec<f32>,
    c0: Vec<f32>,
    lengths: Option<Vec<u32>>,
}

impl Inputs {
    fn new(batch: usize, steps: usize, hidden: usize, lengths: Option<Vec<u32>>, seed: u64) -> Inputs {
        let scale = |values: Vec<f32>, by: f32| values.into_iter().map(|v| v * by).collect::<Vec<f32>>();
        Inputs {
            dims: LstmDims { batch, steps, hidden },
            xproj: seeded(seed, batch * steps * 4 * hidden),
            // Keep the recurrence away from saturation so gradients stay informative.
            w_hh: scale(seeded(seed + 1, 4 * hidden * hidden), 1.0 / (hidden as f32).sqrt()),
            h0: scale(seeded(seed + 2, batch * hidden), 0.5),
            c0: seeded(seed + 3, batch * hidden),
            lengths,
        }
    }

    fn lengths_usize(&self) -> Option<Vec<usize>> {
        self.lengths.as_ref().map(|l| l.iter().map(|&x| x as usize).collect())
    }

    fn reference(&self) -> reference::LstmSaved {
        reference::lstm_cell_forward(
            &self.dims,
            &to_f64(&self.xproj),
            &to_f64(&self.w_hh),
            self.lengths_usize().as_deref(),
            &to_f64(&self.h0),
            &to_f64(&self.c0),
        )
    }

    /// States `[B, T+1, H]` with slot 0 = `initial` and NaN elsewhere.
    fn states(&self, initial: &[f32]) -> Tensor {
        let LstmDims { batch, steps, hidden } = self.dims;
        let mut data = vec![f32::NAN; batch * (steps + 1) * hidden];
        for b in 0..batch {
            let at = b * (steps + 1) * hidden;
            data[at..at + hidden].copy_from_slice(&initial[b * hidden..(b + 1) * hidden]);
        }
        Tensor::from_slice(ctx(), &data, &[batch, steps + 1, hidden]).unwrap()
    }
}

struct GpuForward {
    xproj: Tensor,
    w_hh: Tensor,
    lengths: Option<Lengths>,
    h_states: Tensor,
    c_states: Tensor,
    gates: Tensor,
    output: Tensor,
}

impl GpuForward {
    fn new(inputs: &Inputs) -> GpuForward {
        let ctx = ctx();
        let LstmDims { batch, steps, hidden } = inputs.dims;
        GpuForward {
            xproj: Tensor::from_slice(ctx, &inputs.xproj, &[batch, steps, 4 * hidden]).unwrap(),
            w_hh: Tensor::from_slice(ctx, &inputs.w_hh, &[4 * hidden, hidden]).unwrap(),
            lengths: inputs.lengths.as_ref().map(|l| Lengths::new(ctx, l, steps).unwrap()),
            h_states: inputs.states(&inputs.h0),
            c_states: inputs.states(&inputs.c0),
            gates: nan_tensor(&[batch, steps, 4 * hidden]),
            output: nan_tensor(&[batch, steps, hidden]),
        }
    }

    fn view(&self) -> LstmForward<'_> {
        LstmForward {
            xproj: &self.xproj,
            w_hh: &self.w_hh,
            lengths: self.lengths.as_ref(),
            h_states: &self.h_states,
            c_states: &self.c_states,
            gates: &self.gates,
            output: &self.output,
        }
    }

    fn compare(&self, case: &str, want: &reference::LstmSaved) {
        let tol = Tolerance { atol: 2e-5, rtol: 1e-4 };
        assert_close("output", case, &self.output.to_vec().unwrap(), &want.output, tol);
        assert_close("gates", case, &self.gates.to_vec().unwrap(), &want.gates, tol);
        assert_close("h_states", case, &self.h_states.to_vec().unwrap(), &want.h_states, tol);
        assert_close("c_states", case, &self.c_states.to_vec().unwrap(), &want.c_states, tol);
    }
}

#[test]
fn lstm_cell_forward_matches_reference_step_by_step() {
    check_step_kernel(cases());
}

fn check_step_kernel(cases: Vec<Case>) {
    on_every_kernel_path(|| check_step_kernel_on(cases.clone()));
}

fn check_step_kernel_on(cases: Vec<Case>) {
    for (i, (batch, steps, hidden, lengths)) in cases.into_iter().enumerate() {
        let case = name(batch, steps, hidden, &lengths);
        let inputs = Inputs::new(batch, steps, hidden, lengths, 10 + i as u64);
        let gpu = GpuForward::new(&inputs);
        let ctx = ctx();
        let mut encoder = ctx.create_encoder();
        for t in 0..steps {
            lstm_cell_forward(ctx, &mut encoder, &gpu.view(), t).unwrap();
        }
        ctx.submit(encoder);
        gpu.compare(&format!("{case} step kernel"), &inputs.reference());
    }
}

#[test]
fn lstm_sequence_forward_matches_reference_in_one_dispatch() {
    check_sequence_kernel(cases());
}

fn check_sequence_kernel(cases: Vec<Case>) {
    for (i, (batch, steps, hidden, lengths)) in cases.into_iter().enumerate() {
        let case = name(batch, steps, hidden, &lengths);
        let inputs = Inputs::new(batch, steps, hidden, lengths, 10 + i as u64);
        let gpu = GpuForward::new(&inputs);
        let ctx = ctx();
        let mut encoder = ctx.create_encoder();
        lstm_sequence_forward(ctx, &mut encoder, &gpu.view()).unwrap();
        ctx.submit(encoder);
        gpu.compare(&format!("{case} sequence kernel"), &inputs.reference());
    }
}

#[test]
fn lstm_cell_backward_matches_reference() {
    check_backward(cases());
}

fn check_backward(cases: Vec<Case>) {
    on_every_kernel_path(|| check_backward_on(cases.clone()));
}

fn check_backward_on(cases: Vec<Case>) {
    for (i, (batch, steps, hidden, lengths)) in cases.into_iter().enumerate() {
        for with_dy in [true, false] {
            let case = format!(
                "{}{}",
                name(batch, steps, hidden, &lengths),
                if with_dy { "" } else { "_no_dy" }
            );
            let seed = 40 + i as u64;
            let inputs = Inputs::new(batch, steps, hidden, lengths.clone(), seed);
            let ctx = ctx();
            let gpu = GpuForward::new(&inputs);
            let mut encoder = ctx.create_encoder();
            lstm_forward(ctx, &mut encoder, &gpu.view()).unwrap();

            let dy = seeded(seed + 5, batch * steps * hidden);
            let dh_n = seeded(seed + 6, batch * hidden);
            let dc_n = seeded(seed + 7, batch * hidden);
            let grad_output = Tensor::from_slice(ctx, &dy, &[batch, steps, hidden]).unwrap();
            let grad_state =
                Tensor::from_slice(ctx, &[dh_n.clone(), dc_n.clone()].concat(), &[2, batch, hidden]).unwrap();
            let grad_gates = nan_tensor(&[batch, steps, 4 * hidden]);
            let backward = LstmBackward {
                w_hh: &gpu.w_hh,
                lengths: gpu.lengths.as_ref(),
                grad_output: with_dy.then_some(&grad_output),
                gates: &gpu.gates,
                c_states: &gpu.c_states,
                grad_gates: &grad_gates,
                grad_state: &grad_state,
            };
            lstm_backward(ctx, &mut encoder, &backward).unwrap();
            ctx.submit(encoder);

            let saved = inputs.reference();
            let want = reference::lstm_cell_backward(
                &inputs.dims,
                &to_f64(&inputs.w_hh),
                inputs.lengths_usize().as_deref(),
                &saved,
                with_dy.then(|| to_f64(&dy)).as_deref(),
                &to_f64(&dh_n),
                &to_f64(&dc_n),
            );
            let tol = Tolerance { atol: 5e-5, rtol: 2e-4 };
            assert_close(
                "grad_gates",
                &case,
                &grad_gates.to_vec().unwrap(),
                &want.grad_gates,
                tol,
            );
            let state = grad_state.to_vec::<f32>().unwrap();
            let (dh0, dc0) = state.split_at(batch * hidden);
            assert_close("grad_h0", &case, dh0, &want.grad_h0, tol);
            assert_close("grad_c0", &case, dc0, &want.grad_c0, tol);
        }
    }
}

/// B = 1, 2, 3 (a batch block of as many rows, no clamped duplicates) with H = 1, 7, 33
/// (not a multiple of 4: scalar W loads, a partial last chunk) and 64.
#[test]
fn lstm_cell_forward_matches_reference_b1_b2_b3_h1_h7_h33_h64() {
    check_step_kernel(small_batch_cases());
}

#[test]
fn lstm_sequence_forward_matches_reference_b1_b2_b3_h1_h7_h33_h64() {
    check_sequence_kernel(small_batch_cases());
}

#[test]
fn lstm_cell_backward_matches_reference_b1_b2_b3_h1_h7_h33_h64() {
    check_backward(small_batch_cases());
}

#[test]
fn lstm_reference_backward_matches_finite_differences() {
    for (i, (batch, steps, hidden, lengths)) in [(1, 1, 1, None), (2, 3, 3, Some(vec![3u32, 1])), (3, 2, 2, None)]
        .into_iter()
        .enumerate()
    {
        let case = name(batch, steps, hidden, &lengths);
        let seed = 70 + i as u64;
        let inputs = Inputs::new(batch, steps, hidden, lengths, seed);
        let dims = inputs.dims;
        let lengths = inputs.lengths_usize();
        let (xproj, w_hh, h0, c0) = (
            to_f64(&inputs.xproj),
            to_f64(&inputs.w_hh),
            to_f64(&inputs.h0),
            to_f64(&inputs.c0),
        );
        let wy = to_f64(&seeded(seed + 5, batch * steps * hidden));
        let wh = to_f64(&seeded(seed + 6, batch * hidden));
        let wc = to_f64(&seeded(seed + 7, batch * hidden));
        // loss = sum(wy * output) + sum(wh * h_n) + sum(wc * c_n); h_n, c_n = slot T.
        let loss = |xproj: &[f64], w_hh: &[f64], h0: &[f64], c0: &[f64]| -> f64 {
            let saved = reference::lstm_cell_forward(&dims, xproj, w_hh, lengths.as_deref(), h0, c0);
            let mut total: f64 = saved.output.iter().zip(&wy).map(|(a, b)| a * b).sum();
            for b in 0..batch {
                for u in 0..hidden {
                    let at = (b * (steps + 1) + steps) * hidden + u;
                    total += wh[b * hidden + u] * saved.h_states[at] + wc[b * hidden + u] * saved.c_states[at];
                }
            }
            total
        };
        let saved = reference::lstm_cell_forward(&dims, &xproj, &w_hh, lengths.as_deref(), &h0, &c0);
        let grads = reference::lstm_cell_backward(&dims, &w_hh, lengths.as_deref(), &saved, Some(&wy), &wh, &wc);
        assert_gradient_matches_finite_differences("grad_gates", &case, &xproj, &grads.grad_gates, |x| {
            loss(x, &w_hh, &h0, &c0)
        });
        assert_gradient_matches_finite_differences("grad_w_hh", &case, &w_hh, &grads.grad_w_hh, |w| {
            loss(&xproj, w, &h0, &c0)
        });
        assert_gradient_matches_finite_differences("grad_h0", &case, &h0, &grads.grad_h0, |h| {
            loss(&xproj, &w_hh, h, &c0)
        });
        assert_gradient_matches_finite_differences("grad_c0", &case, &c0, &grads.grad_c0, |c| {
            loss(&xproj, &w_hh, &h0, c)
        });
    }
}

#[test]
fn lstm_rejects_bad_lengths_and_shapes_naming_the_tensor() {
    let ctx = ctx();
    for bad in [vec![0u32, 2], vec![3, 5], vec![]] {
        assert!(
            matches!(Lengths::new(ctx, &bad, 4), Err(Error::InvalidArgument { .. })),
            "{bad:?}"
        );
    }
    let inputs = Inputs::new(2, 3, 5, None, 1);
    let gpu = GpuForward::new(&inputs);
    let wrong_w = Tensor::zeros(ctx, &[20, 4], tsumugi::DType::F32).unwrap();
    let mut encoder = ctx.create_encoder();
    let err = lstm_cell_forward(
        ctx,
        &mut encoder,
        &LstmForward {
            w_hh: &wrong_w,
            ..gpu.view()
        },
        0,
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::ShapeMismatch { tensor, .. } if tensor == "lstm: w_hh"),
        "{err}"
    );
    let wrong_lengths = Lengths::new(ctx, &[1, 2, 3], 3).unwrap();
    let err = lstm_forward(
        ctx,
        &mut encoder,
        &LstmForward {
            lengths: Some(&wrong_lengths),
            ..gpu.view()
        },
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::ShapeMismatch { tensor, .. } if tensor == "lstm: lengths"),
        "{err}"
    );
    let err = lstm_cell_forward(ctx, &mut encoder, &gpu.view(), 3).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    let err = lstm_forward(
        ctx,
        &mut encoder,
        &LstmForward {
            output: &gpu.gates,
            ..gpu.view()
        },
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::ShapeMismatch { tensor, .. } if tensor == "lstm: output"),
        "{err}"
    );
}

#[test]
fn lstm_forward_runs_long_sequences_step_by_step_where_one_workgroup_would_exceed_the_loop_budget() {
    // 200 steps of a small layer: the whole-sequence kernel would loop past a CPU
    // adapter's budget (which truncates silently), so lstm_forward dispatches per step
    // and lstm_sequence_forward refuses with DeviceLimit.
    let inputs = Inputs::new(1, 200, 64, None, 5);
    let gpu = GpuForward::new(&inputs);
    let ctx = ctx();
    let mut encoder = ctx.create_encoder();
    if ctx.adapter().device_type == wgpu::DeviceType::Cpu {
        let err = lstm_sequence_forward(ctx, &mut encoder, &gpu.view()).unwrap_err();
        assert!(matches!(err, Error::DeviceLimit { .. }), "{err}");
    }
    lstm_forward(ctx, &mut encoder, &gpu.view()).unwrap();
    ctx.submit(encoder);
    gpu.compare("b1_t200_h64", &inputs.reference());
}

/// Random valid shapes (B, T, H up to past the 32-wide workgroup and the 4-row block,
/// lengths on some) against the CPU reference: the step kernel, the one-dispatch
/// sequence kernel and the backward.
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn case() -> impl Strategy<Value = Case> {
        common::recurrent_shapes()
    }

    proptest! {
        #![proptest_config(common::prop_config(12))]
        #[test]
        fn lstm_kernels_match_reference_on_random_shapes(case in case()) {
            check_step_kernel(vec![case.clone()]);
            check_sequence_kernel(vec![case.clone()]);
            check_backward(vec![case]);
        }
    }
}
