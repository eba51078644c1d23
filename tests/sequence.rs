//! reverse_sequence forward and backward against the CPU reference, the reference
//! backward against finite differences.

mod common;

use common::{
    assert_close, assert_gradient_matches_finite_differences, ctx, grid, nan_tensor, seeded, to_f64, Tolerance,
};
use tsumugi::kernels::sequence::{reverse_sequence_backward, reverse_sequence_forward};
use tsumugi::kernels::Lengths;
use tsumugi::reference::sequence as reference;
use tsumugi::{Error, Tensor};

/// (B, T, D, lengths): 1, primes, more elements than one 64-wide workgroup.
fn cases() -> Vec<(usize, usize, usize, Option<Vec<u32>>)> {
    vec![
        (1, 1, 1, None),
        (3, 5, 7, Some(vec![5, 1, 3])),
        (2, 4, 1, None),
        (4, 13, 33, Some(vec![13, 7, 1, 12])),
    ]
}

#[test]
fn reverse_sequence_matches_reference_forward_and_backward() {
    let ctx = ctx();
    for (i, (b, t, d, lengths)) in cases().into_iter().enumerate() {
        let case = format!("b{b}_t{t}_d{d}{}", if lengths.is_some() { "_lengths" } else { "" });
        let lens = lengths.as_ref().map(|l| Lengths::new(ctx, l, t).unwrap());
        let lens_usize: Option<Vec<usize>> = lengths.as_ref().map(|l| l.iter().map(|&x| x as usize).collect());
        // Grid values: a reordering is exact.
        let x = grid(i as u64, b * t * d);
        let x_t = Tensor::from_slice(ctx, &x, &[b, t, d]).unwrap();
        let y = nan_tensor(&[b, t, d]);
        let start = seeded(50 + i as u64, b * t * d);
        let grad_x = Tensor::from_slice(ctx, &start, &[b, t, d]).unwrap();
        let mut encoder = ctx.create_encoder();
        reverse_sequence_forward(ctx, &mut encoder, &x_t, lens.as_ref(), &y).unwrap();
        reverse_sequence_backward(ctx, &mut encoder, &x_t, lens.as_ref(), &grad_x, true).unwrap();
        ctx.submit(encoder);
        let want = reference::reverse_sequence_forward(&to_f64(&x), b, t, d, lens_usize.as_deref());
        assert_close("y", &case, &y.to_vec().unwrap(), &want, Tolerance::EXACT);
        let back = reference::reverse_sequence_backward(&to_f64(&x), b, t, d, lens_usize.as_deref());
        let want: Vec<f64> = back.iter().zip(&start).map(|(g, s)| g + f64::from(*s)).collect();
        assert_close(
            "grad_x accumulated",
            &case,
            &grad_x.to_vec().unwrap(),
            &want,
            Tolerance::F32_SUMS,
        );
    }
}

#[test]
fn reverse_sequence_reference_backward_matches_finite_differences() {
    let (b, t, d) = (2, 3, 2);
    let lengths = [3usize, 2];
    let x = to_f64(&seeded(1, b * t * d));
    let w = to_f64(&seeded(2, b * t * d));
    let loss = |x: &[f64]| -> f64 {
        let y = reference::reverse_sequence_forward(x, b, t, d, Some(&lengths));
        y.iter().zip(&w).map(|(a, b)| a * b).sum()
    };
    let grad = reference::reverse_sequence_backward(&w, b, t, d, Some(&lengths));
    assert_gradient_matches_finite_differences("grad_x", "b2_t3_d2_lengths", &x, &grad, loss);
}

#[test]
fn reverse_sequence_rejects_mismatched_shapes() {
    let ctx = ctx();
    let x = Tensor::zeros(ctx, &[2, 3, 4], tsumugi::DType::F32).unwrap();
    let y = Tensor::zeros(ctx, &[2, 3, 5], tsumugi::DType::F32).unwrap();
    let mut encoder = ctx.create_encoder();
    let err = reverse_sequence_forward(ctx, &mut encoder, &x, None, &y).unwrap_err();
    assert!(
        matches!(&err, Error::ShapeMismatch { tensor, .. } if tensor == "reverse_sequence: y"),
        "{err}"
    );
    let lengths = Lengths::new(ctx, &[1, 2, 3], 3).unwrap();
    let y = Tensor::zeros(ctx, &[2, 3, 4], tsumugi::DType::F32).unwrap();
    let err = reverse_sequence_forward(ctx, &mut encoder, &x, Some(&lengths), &y).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
}
