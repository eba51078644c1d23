//! gru_cell_forward / gru_sequence_forward / gru_cell_backward against the CPU
//! reference, and the reference backward against finite differences.

mod common;

use common::{
    assert_close, assert_gradient_matches_finite_differences, ctx, nan_tensor, on_every_kernel_path, seeded, to_f64,
    Tolerance,
};
use tsumugi::kernels::gru_cell::{
    gru_backward, gru_cell_forward, gru_forward, gru_sequence_forward, GruBackward, GruDims, GruForward,
};
use tsumugi::kernels::Lengths;
use tsumugi::reference::gru_cell as reference;
use tsumugi::{Error, Tensor};

/// (B, T, H, lengths)
type Case = (usize, usize, usize, Option<Vec<u32>>);

/// (B, T, H, lengths): 1, primes, H not a multiple of 4 (3H straddles vec4 chunks),
/// B not a multiple of the 4-row block or of the subgroup kernels' 8 to 32-row tiles,
/// padded rows, enough blocks for the step kernel.
fn cases() -> Vec<Case> {
    vec![
        (33, 2, 20, Some((0..33).map(|b| 1 + b % 2).collect())),
        (8, 3, 16, Some(vec![3, 1, 2, 3, 3, 2, 1, 3])),
        (17, 3, 12, None),
        (1, 1, 1, None),
        (3, 5, 7, Some(vec![5, 2, 1])),
        (4, 4, 8, None),
        (5, 3, 13, Some(vec![3, 3, 1, 2, 1])),
        (2, 6, 33, Some(vec![6, 4])),
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
    dims: GruDims,
    xproj: Vec<f32>,
    w_hh: Vec<f32>,
    b_hh: Vec<f32>,
    h0: Vec<f32>,
    lengths: Option<Vec<u32>>,
}

impl Inputs {
    fn new(batch: usize, steps: usize, hidden: usize, lengths: Option<Vec<u32>>, seed: u64) -> Inputs {
        let scale = |values: Vec<f32>, by: f32| values.into_iter().map(|v| v * by).collect::<Vec<f32>>();
        Inputs {
            dims: GruDims { batch, steps, hidden },
            xproj: seeded(seed, batch * steps * 3 * hidden),
            w_hh: scale(seeded(seed + 1, 3 * hidden * hidden), 1.0 / (hidden as f32).sqrt()),
            b_hh: scale(seeded(seed + 2, 3 * hidden), 0.5),
            h0: scale(seeded(seed + 3, batch * hidden), 0.5),
            lengths,
        }
    }

    fn lengths_usize(&self) -> Option<Vec<usize>> {
        self.lengths.as_ref().map(|l| l.iter().map(|&x| x as usize).collect())
    }

    fn reference(&self) -> reference::GruSaved {
        reference::gru_cell_forward(
            &self.dims,
            &to_f64(&self.xproj),
            &to_f64(&self.w_hh),
            &to_f64(&self.b_hh),
            self.lengths_usize().as_deref(),
            &to_f64(&self.h0),
        )
    }
}

struct GpuForward {
    xproj: Tensor,
    w_hh: Tensor,
    b_hh: Tensor,
    lengths: Option<Lengths>,
    h_states: Tensor,
    gates: Tensor,
    output: Tensor,
}

impl GpuForward {
    fn new(inputs: &Inputs) -> GpuForward {
        let ctx = ctx();
        let GruDims { batch, steps, hidden } = inputs.dims;
        let mut states = vec![f32::NAN; batch * (steps + 1) * hidden];
        for b in 0..batch {
            let at = b * (steps + 1) * hidden;
            states[at..at + hidden].copy_from_slice(&inputs.h0[b * hidden..(b + 1) * hidden]);
        }
        GpuForward {
            xproj: Tensor::from_slice(ctx, &inputs.xproj, &[batch, steps, 3 * hidden]).unwrap(),
            w_hh: Tensor::from_slice(ctx, &inputs.w_hh, &[3 * hidden, hidden]).unwrap(),
            b_hh: Tensor::from_slice(ctx, &inputs.b_hh, &[3 * hidden]).unwrap(),
            lengths: inputs.lengths.as_ref().map(|l| Lengths::new(ctx, l, steps).unwrap()),
            h_states: Tensor::from_slice(ctx, &states, &[batch, steps + 1, hidden]).unwrap(),
            gates: nan_tensor(&[batch, steps, 4 * hidden]),
            output: nan_tensor(&[batch, steps, hidden]),
        }
    }

    fn view(&self) -> GruForward<'_> {
        GruForward {
            xproj: &self.xproj,
            w_hh: &self.w_hh,
            b_hh: &self.b_hh,
            lengths: self.lengths.as_ref(),
            h_states: &self.h_states,
            gates: &self.gates,
            output: &self.output,
        }
    }

    fn compare(&self, case: &str, want: &reference::GruSaved) {
        let tol = Tolerance { atol: 2e-5, rtol: 1e-4 };
        assert_close("output", case, &self.output.to_vec().unwrap(), &want.output, tol);
        assert_close("gates", case, &self.gates.to_vec().unwrap(), &want.gates, tol);
        assert_close("h_states", case, &self.h_states.to_vec().unwrap(), &want.h_states, tol);
    }
}

#[test]
fn gru_cell_forward_matches_reference_step_by_step() {
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
            gru_cell_forward(ctx, &mut encoder, &gpu.view(), t).unwrap();
        }
        ctx.submit(encoder);
        gpu.compare(&format!("{case} step kernel"), &inputs.reference());
    }
}

#[test]
fn gru_sequence_forward_matches_reference_in_one_dispatch() {
    check_sequence_kernel(cases());
}

fn check_sequence_kernel(cases: Vec<Case>) {
    for (i, (batch, steps, hidden, lengths)) in cases.into_iter().enumerate() {
        let case = name(batch, steps, hidden, &lengths);
        let inputs = Inputs::new(batch, steps, hidden, lengths, 10 + i as u64);
        let gpu = GpuForward::new(&inputs);
        let ctx = ctx();
        let mut encoder = ctx.create_encoder();
        gru_sequence_forward(ctx, &mut encoder, &gpu.view()).unwrap();
        ctx.submit(encoder);
        gpu.compare(&format!("{case} sequence kernel"), &inputs.reference());
    }
}

#[test]
fn gru_cell_backward_matches_reference() {
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
            gru_forward(ctx, &mut encoder, &gpu.view()).unwrap();

            let dy = seeded(seed + 5, batch * steps * hidden);
            let dh_n = seeded(seed + 6, batch * hidden);
            let grad_output = Tensor::from_slice(ctx, &dy, &[batch, steps, hidden]).unwrap();
            let grad_state = Tensor::from_slice(ctx, &dh_n, &[batch, hidden]).unwrap();
            let grad_gates = nan_tensor(&[batch, steps, 4 * hidden]);
            let backward = GruBackward {
                w_hh: &gpu.w_hh,
                lengths: gpu.lengths.as_ref(),
                grad_output: with_dy.then_some(&grad_output),
                gates: &gpu.gates,
                h_states: &gpu.h_states,
                grad_gates: &grad_gates,
                grad_state: &grad_state,
            };
            gru_backward(ctx, &mut encoder, &backward).unwrap();
            ctx.submit(encoder);

            let saved = inputs.reference();
            let want = reference::gru_cell_backward(
                &inputs.dims,
                &to_f64(&inputs.w_hh),
                inputs.lengths_usize().as_deref(),
                &saved,
                with_dy.then(|| to_f64(&dy)).as_deref(),
                &to_f64(&dh_n),
            );
            let tol = Tolerance { atol: 5e-5, rtol: 2e-4 };
            assert_close(
                "grad_gates",
                &case,
                &grad_gates.to_vec().unwrap(),
                &want.grad_gates,
                tol,
            );
            assert_close("grad_h0", &case, &grad_state.to_vec().unwrap(), &want.grad_h0, tol);
        }
    }
}

/// B = 1, 2, 3 (a batch block of as many rows, no clamped duplicates) with H = 1, 7, 33
/// (not a multiple of 4: scalar W loads, a partial last chunk) and 64.
#[test]
fn gru_cell_forward_matches_reference_b1_b2_b3_h1_h7_h33_h64() {
    check_step_kernel(small_batch_cases());
}

#[test]
fn gru_sequence_forward_matches_reference_b1_b2_b3_h1_h7_h33_h64() {
    check_sequence_kernel(small_batch_cases());
}

#[test]
fn gru_cell_backward_matches_reference_b1_b2_b3_h1_h7_h33_h64() {
    check_backward(small_batch_cases());
}

#[test]
fn gru_reference_backward_matches_finite_differences() {
    for (i, (batch, steps, hidden, lengths)) in [(1, 1, 1, None), (2, 3, 3, Some(vec![3u32, 1])), (3, 2, 2, None)]
        .into_iter()
        .enumerate()
    {
        let case = name(batch, steps, hidden, &lengths);
        let seed = 70 + i as u64;
        let inputs = Inputs::new(batch, steps, hidden, lengths, seed);
        let dims = inputs.dims;
        let lengths = inputs.lengths_usize();
        let (xproj, w_hh, b_hh, h0) = (
            to_f64(&inputs.xproj),
            to_f64(&inputs.w_hh),
            to_f64(&inputs.b_hh),
            to_f64(&inputs.h0),
        );
        let wy = to_f64(&seeded(seed + 5, batch * steps * hidden));
        let wh = to_f64(&seeded(seed + 6, batch * hidden));
        // loss = sum(wy * output) + sum(wh * h_n); h_n = slot T.
        let loss = |xproj: &[f64], w_hh: &[f64], b_hh: &[f64], h0: &[f64]| -> f64 {
            let saved = reference::gru_cell_forward(&dims, xproj, w_hh, b_hh, lengths.as_deref(), h0);
            let mut total: f64 = saved.output.iter().zip(&wy).map(|(a, b)| a * b).sum();
            for b in 0..batch {
                for u in 0..hidden {
                    total += wh[b * hidden + u] * saved.h_states[(b * (steps + 1) + steps) * hidden + u];
                }
            }
            total
        };
        let saved = reference::gru_cell_forward(&dims, &xproj, &w_hh, &b_hh, lengths.as_deref(), &h0);
        let grads = reference::gru_cell_backward(&dims, &w_hh, lengths.as_deref(), &saved, Some(&wy), &wh);
        // d xproj is grad_gates' first three quarters of each row.
        let grad_xproj: Vec<f64> = grads
            .grad_gates
            .chunks(4 * hidden)
            .flat_map(|row| row[..3 * hidden].to_vec())
            .collect();
        assert_gradient_matches_finite_differences("grad_xproj", &case, &xproj, &grad_xproj, |x| {
            loss(x, &w_hh, &b_hh, &h0)
        });
        assert_gradient_matches_finite_differences("grad_w_hh", &case, &w_hh, &grads.grad_w_hh, |w| {
            loss(&xproj, w, &b_hh, &h0)
        });
        assert_gradient_matches_finite_differences("grad_b_hh", &case, &b_hh, &grads.grad_b_hh, |b| {
            loss(&xproj, &w_hh, b, &h0)
        });
        assert_gradient_matches_finite_differences("grad_h0", &case, &h0, &grads.grad_h0, |h| {
            loss(&xproj, &w_hh, &b_hh, h)
        });
    }
}

#[test]
fn gru_rejects_mismatched_shapes_naming_the_tensor() {
    let ctx = ctx();
    let inputs = Inputs::new(2, 3, 5, None, 1);
    let gpu = GpuForward::new(&inputs);
    let wrong_bias = Tensor::zeros(ctx, &[20], tsumugi::DType::F32).unwrap();
    let mut encoder = ctx.create_encoder();
    let err = gru_cell_forward(
        ctx,
        &mut encoder,
        &GruForward {
            b_hh: &wrong_bias,
            ..gpu.view()
        },
        0,
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::ShapeMismatch { tensor, .. } if tensor == "gru: b_hh"),
        "{err}"
    );
    let err = gru_forward(
        ctx,
        &mut encoder,
        &GruForward {
            gates: &gpu.output,
            ..gpu.view()
        },
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::ShapeMismatch { tensor, .. } if tensor == "gru: gates"),
        "{err}"
    );
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
        fn gru_kernels_match_reference_on_random_shapes(case in case()) {
            check_step_kernel(vec![case.clone()]);
            check_sequence_kernel(vec![case.clone()]);
            check_backward(vec![case]);
        }
    }
}
