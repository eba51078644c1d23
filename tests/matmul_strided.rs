//! matmul_strided: strided views of a state sequence (a weight gradient summed over the
//! batches of every step, one time step written in place) and the views it refuses.

mod common;

use common::{assert_close, ctx, on_every_kernel_path, seeded, to_f64, Tolerance};
use tsumugi::kernels::matmul::{matmul_strided, MatrixView, StridedMatmul, Strides};
use tsumugi::{reference, Error, Tensor};

fn run(
    op: &StridedMatmul,
    lhs: (&[f32], Strides),
    rhs: (&[f32], Strides),
    out: (&[f32], Strides),
) -> (Vec<f32>, Vec<f64>) {
    let ctx = ctx();
    let upload = |data: &[f32]| Tensor::from_slice(ctx, data, &[data.len()]).unwrap();
    let (lhs_t, rhs_t, out_t) = (upload(lhs.0), upload(rhs.0), upload(out.0));
    let mut encoder = ctx.create_encoder();
    matmul_strided(
        ctx,
        &mut encoder,
        op,
        MatrixView {
            tensor: &lhs_t,
            strides: lhs.1,
        },
        MatrixView {
            tensor: &rhs_t,
            strides: rhs.1,
        },
        None,
        MatrixView {
            tensor: &out_t,
            strides: out.1,
        },
    )
    .unwrap();
    ctx.submit(encoder);
    let want = reference::matmul::matmul_strided(
        op,
        (&to_f64(lhs.0), lhs.1),
        (&to_f64(rhs.0), rhs.1),
        None,
        (&to_f64(out.0), out.1),
    );
    (out_t.to_vec().unwrap(), want)
}

#[test]
fn matmul_strided_sums_a_weight_gradient_over_batches_of_a_state_sequence() {
    on_every_kernel_path(|| {
        // dW_hh [4H, H] = sum_b dgates[b]^T h_states[b, 0..T] with h_states [B, T+1, H]:
        // the recurrent layers' weight gradient, read through strides, no copies.
        for (batch, steps, hidden, beta) in [(3, 5, 7, 0.0), (1, 1, 1, 0.0), (4, 9, 8, 1.0), (2, 33, 13, 0.5)] {
            let gates = 4 * hidden;
            let dgates = seeded(1, batch * steps * gates);
            let h_states = seeded(2, batch * (steps + 1) * hidden);
            let start = seeded(3, gates * hidden);
            let op = StridedMatmul {
                rows: gates,
                cols: hidden,
                inner: steps,
                batch,
                sum_batches: true,
                beta,
            };
            let lhs = Strides {
                offset: 0,
                batch: steps * gates,
                row: 1,
                col: gates,
            };
            let rhs = Strides {
                offset: 0,
                batch: (steps + 1) * hidden,
                row: hidden,
                col: 1,
            };
            let out = Strides::row_major(gates, hidden);
            let (got, want) = run(&op, (&dgates, lhs), (&h_states, rhs), (&start, out));
            let case = format!("b{batch}_t{steps}_h{hidden}_beta{beta}");
            assert_close("dW_hh", &case, &got, &want, Tolerance::F32_SUMS);
        }
    });
}

#[test]
fn matmul_strided_writes_one_time_step_and_leaves_the_rest_untouched() {
    on_every_kernel_path(|| {
        // y[:, t, :] = x[:, t, :] W^T with x [B, T, I], W [N, I], y [B, T, N].
        let (b, t_len, i, n, t) = (5, 4, 6, 3, 2);
        let x = seeded(4, b * t_len * i);
        let w = seeded(5, n * i);
        let y = vec![f32::NAN; b * t_len * n];
        let op = StridedMatmul {
            rows: b,
            cols: n,
            inner: i,
            batch: 1,
            sum_batches: false,
            beta: 0.0,
        };
        let lhs = Strides {
            offset: t * i,
            batch: 0,
            row: t_len * i,
            col: 1,
        };
        let rhs = Strides {
            offset: 0,
            batch: 0,
            row: 1,
            col: i,
        };
        let out = Strides {
            offset: t * n,
            batch: 0,
            row: t_len * n,
            col: 1,
        };
        let (got, want) = run(&op, (&x, lhs), (&w, rhs), (&y, out));
        for (index, (g, w)) in got.iter().zip(&want).enumerate() {
            let step = index / n % t_len;
            if step == t {
                assert!((f64::from(*g) - w).abs() < 1e-5, "y[{index}] = {g}, want {w}");
            } else {
                assert!(g.is_nan(), "y[{index}] outside the view was written: {g}");
            }
        }
    });
}

#[test]
fn matmul_strided_rejects_views_outside_the_tensor_and_overlapping_outputs() {
    let ctx = ctx();
    let a = Tensor::zeros(ctx, &[12], tsumugi::DType::F32).unwrap();
    let b = Tensor::zeros(ctx, &[12], tsumugi::DType::F32).unwrap();
    let c = Tensor::zeros(ctx, &[12], tsumugi::DType::F32).unwrap();
    let op = StridedMatmul {
        rows: 3,
        cols: 4,
        inner: 4,
        batch: 1,
        sum_batches: false,
        beta: 0.0,
    };
    let view = |tensor, strides| MatrixView { tensor, strides };
    let mut encoder = ctx.create_encoder();
    // [3, 4] needs 12 elements, [3, 4] at offset 1 needs 13.
    let shifted = Strides {
        offset: 1,
        ..Strides::row_major(3, 4)
    };
    let err = matmul_strided(
        ctx,
        &mut encoder,
        &op,
        view(&a, shifted),
        view(&b, Strides::row_major(4, 3)),
        None,
        view(&c, Strides::row_major(3, 4)),
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::ShapeMismatch { tensor, .. } if tensor == "matmul_strided: lhs"),
        "{err}"
    );
    let op = StridedMatmul {
        rows: 3,
        cols: 3,
        inner: 4,
        ..op
    };
    // Rows 1 apart but 3 columns 1 apart too: elements written twice.
    let overlapping = Strides {
        offset: 0,
        batch: 0,
        row: 1,
        col: 1,
    };
    let err = matmul_strided(
        ctx,
        &mut encoder,
        &op,
        view(&a, Strides::row_major(3, 4)),
        view(&b, Strides::row_major(4, 3)),
        None,
        view(&c, overlapping),
    )
    .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    let err = matmul_strided(
        ctx,
        &mut encoder,
        &op,
        view(&a, Strides::row_major(3, 4)),
        view(&b, Strides::row_major(4, 3)),
        None,
        view(&a, Strides::row_major(3, 3)),
    )
    .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "out aliasing lhs: {err}");
}
