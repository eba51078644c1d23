//! matmul_forward and matmul_backward against the CPU reference, and the reference
//! backward against finite differences. The strided views (`matmul_strided`) are in
//! `matmul_strided.rs`.

mod common;

use common::{
    assert_close, assert_gradient_matches_finite_differences, ctx, grid, nan_tensor, on_every_kernel_path, seeded,
    to_f64, Tolerance,
};
use tsumugi::kernels::matmul::{matmul_backward, matmul_forward, Matmul, MatmulDims, MatmulGrads};
use tsumugi::reference;
use tsumugi::{DType, Error, Tensor};

/// One case of the shape table.
#[derive(Clone, Copy, Debug)]
struct Case {
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    trans_a: bool,
    trans_b: bool,
    a_shared: bool,
    b_shared: bool,
}

impl Case {
    fn name(&self) -> String {
        format!(
            "b{}_{}x{}x{}{}{}{}{}",
            self.batch,
            self.m,
            self.n,
            self.k,
            if self.trans_a { "_ta" } else { "" },
            if self.trans_b { "_tb" } else { "" },
            if self.a_shared { "_shared_a" } else { "" },
            if self.b_shared { "_shared_b" } else { "" },
        )
    }

    fn op(&self, beta: f32) -> Matmul {
        Matmul {
            trans_a: self.trans_a,
            trans_b: self.trans_b,
            beta,
        }
    }

    fn a_shape(&self) -> Vec<usize> {
        let (r, c) = if self.trans_a {
            (self.k, self.m)
        } else {
            (self.m, self.k)
        };
        if self.a_shared {
            vec![r, c]
        } else {
            vec![self.batch, r, c]
        }
    }

    fn b_shape(&self) -> Vec<usize> {
        let (r, c) = if self.trans_b {
            (self.n, self.k)
        } else {
            (self.k, self.n)
        };
        if self.b_shared {
            vec![r, c]
        } else {
            vec![self.batch, r, c]
        }
    }
}

/// (batch, M, N, K): 1, primes, the 64-wide workgroup tile -1/0/+1, the 8-wide
/// invocation block and its 4-wide halves (vec4 loads), the subgroup kernel's tiles
/// (8 to 32 rows, 32 to 256 columns) +1, a realistic recurrent-step size; batch 1 and 3;
/// the few-rows kernel's 1 to 4 rows, with columns past its 4-wide blocks and widest
/// workgroup (257, 1029) and K past a multiple of 4.
const SIZES: &[(usize, usize, usize, usize)] = &[
    (1, 33, 257, 20),
    (2, 24, 36, 9),
    (1, 40, 100, 6),
    (1, 1, 1, 1),
    (1, 23, 1, 17),
    (3, 1, 7, 5),
    (1, 100, 99, 100),
    (3, 65, 63, 129),
    (1, 63, 64, 65),
    (3, 64, 65, 63),
    (1, 4, 4, 4),
    (3, 8, 12, 16),
    (1, 12, 20, 8),
    (2, 64, 128, 64),
    (1, 3, 1024, 256),
    (2, 2, 37, 11),
    (1, 4, 1029, 258),
    (3, 4, 16, 12),
    (1, 1, 1024, 256),
    (2, 5, 13, 7),
];

/// Every size, with every transpose and sharing pattern spread over them.
fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for (i, &(batch, m, n, k)) in SIZES.iter().enumerate() {
        for variant in 0..4 {
            let pattern = (i + variant) % 4;
            let shared = i % 3;
            cases.push(Case {
                batch,
                m,
                n,
                k,
                trans_a: variant & 1 == 1,
                trans_b: variant & 2 == 2,
                a_shared: batch > 1 && shared == 1 && pattern != 0,
                b_shared: batch == 1 || shared == 2 || pattern == 3,
            });
        }
    }
    cases
}

fn dims(case: &Case) -> MatmulDims {
    MatmulDims::new(&case.op(0.0), &case.a_shape(), &case.b_shape()).expect("valid case")
}

fn run_forward(case: &Case, a: &[f32], b: &[f32], bias: Option<&[f32]>, c0: Option<&[f32]>, beta: f32) -> Vec<f32> {
    let ctx = ctx();
    let d = dims(case);
    let a_t = Tensor::from_slice(ctx, a, &case.a_shape()).unwrap();
    let b_t = Tensor::from_slice(ctx, b, &case.b_shape()).unwrap();
    let bias_t = bias.map(|bias| Tensor::from_slice(ctx, bias, &[case.n]).unwrap());
    let c_t = match c0 {
        Some(c0) => Tensor::from_slice(ctx, c0, &d.c_shape()).unwrap(),
        None => nan_tensor(&d.c_shape()),
    };
    let mut encoder = ctx.create_encoder();
    matmul_forward(ctx, &mut encoder, &case.op(beta), &a_t, &b_t, bias_t.as_ref(), &c_t).unwrap();
    ctx.submit(encoder);
    c_t.to_vec().unwrap()
}

fn inputs(case: &Case, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let a_len: usize = case.a_shape().iter().product();
    let b_len: usize = case.b_shape().iter().product();
    (seeded(seed, a_len), seeded(seed + 1, b_len), seeded(seed + 2, case.n))
}

#[test]
fn matmul_forward_matches_reference_on_the_shape_table() {
    on_every_kernel_path(|| {
        for (i, case) in cases().iter().enumerate() {
            let seed = 100 + i as u64;
            let (a, b, bias) = inputs(case, seed);
            let with_bias = i % 2 == 0;
            let got = run_forward(case, &a, &b, with_bias.then_some(&bias[..]), None, 0.0);
            let want = reference::matmul::matmul_forward(
                &dims(case),
                &case.op(0.0),
                &to_f64(&a),
                &to_f64(&b),
                with_bias.then(|| to_f64(&bias)).as_deref(),
                &[],
            );
            assert_close(
                "c",
                &format!("{} seed {seed}", case.name()),
                &got,
                &want,
                Tolerance::F32_SUMS,
            );
        }
    });
}

#[test]
fn matmul_forward_is_exact_on_grid_values_for_every_load_path() {
    on_every_kernel_path(|| {
        // Aligned sizes take the vec4 paths, odd ones the scalar path; grid inputs make
        // every sum exact, so only an indexing bug can make them differ.
        for case in cases().iter().filter(|case| case.k <= 129) {
            let a = grid(7, case.a_shape().iter().product());
            let b = grid(8, case.b_shape().iter().product());
            let got = run_forward(case, &a, &b, None, None, 0.0);
            let want =
                reference::matmul::matmul_forward(&dims(case), &case.op(0.0), &to_f64(&a), &to_f64(&b), None, &[]);
            assert_close("c", &format!("grid {}", case.name()), &got, &want, Tolerance::EXACT);
        }
    });
}

#[test]
fn matmul_forward_adds_beta_times_c_and_ignores_c_when_beta_is_zero() {
    on_every_kernel_path(|| {
        let case = Case {
            batch: 3,
            m: 5,
            n: 6,
            k: 7,
            trans_a: false,
            trans_b: true,
            a_shared: false,
            b_shared: true,
        };
        let (a, b, bias) = inputs(&case, 5);
        let c0 = seeded(9, 3 * 5 * 6);
        let got = run_forward(&case, &a, &b, Some(&bias), Some(&c0), 0.5);
        let want = reference::matmul::matmul_forward(
            &dims(&case),
            &case.op(0.5),
            &to_f64(&a),
            &to_f64(&b),
            Some(&to_f64(&bias)),
            &to_f64(&c0),
        );
        assert_close("c", "beta 0.5", &got, &want, Tolerance::F32_SUMS);
        // beta 0 over a NaN-filled c: the NaN must not leak in (run_forward pre-fills NaN).
        let got = run_forward(&case, &a, &b, None, None, 0.0);
        assert!(got.iter().all(|v| v.is_finite()), "beta 0 read the old c");
    });
}

fn run_backward(case: &Case, seed: u64, accumulate: bool) {
    let ctx = ctx();
    let d = dims(case);
    let (a, b, _) = inputs(case, seed);
    let grad_c: Vec<f32> = seeded(seed + 3, d.c_shape().iter().product());
    let a_t = Tensor::from_slice(ctx, &a, &case.a_shape()).unwrap();
    let b_t = Tensor::from_slice(ctx, &b, &case.b_shape()).unwrap();
    let grad_c_t = Tensor::from_slice(ctx, &grad_c, &d.c_shape()).unwrap();
    let start_a = seeded(seed + 4, a.len());
    let start_b = seeded(seed + 5, b.len());
    let start_bias = seeded(seed + 6, case.n);
    let (grad_a_t, grad_b_t, grad_bias_t) = if accumulate {
        (
            Tensor::from_slice(ctx, &start_a, &case.a_shape()).unwrap(),
            Tensor::from_slice(ctx, &start_b, &case.b_shape()).unwrap(),
            Tensor::from_slice(ctx, &start_bias, &[case.n]).unwrap(),
        )
    } else {
        (
            nan_tensor(&case.a_shape()),
            nan_tensor(&case.b_shape()),
            nan_tensor(&[case.n]),
        )
    };
    let mut encoder = ctx.create_encoder();
    let grads = MatmulGrads {
        a: Some(&grad_a_t),
        b: Some(&grad_b_t),
        bias: Some(&grad_bias_t),
        accumulate,
    };
    matmul_backward(ctx, &mut encoder, &case.op(0.0), &a_t, &b_t, &grad_c_t, grads).unwrap();
    ctx.submit(encoder);

    let (mut want_a, mut want_b, mut want_bias) =
        reference::matmul::matmul_backward(&d, &case.op(0.0), &to_f64(&a), &to_f64(&b), &to_f64(&grad_c));
    if accumulate {
        for (want, start) in [
            (&mut want_a, &start_a),
            (&mut want_b, &start_b),
            (&mut want_bias, &start_bias),
        ] {
            for (w, s) in want.iter_mut().zip(start.iter()) {
                *w += f64::from(*s);
            }
        }
    }
    let name = format!(
        "{} seed {seed}{}",
        case.name(),
        if accumulate { " accumulate" } else { "" }
    );
    assert_close(
        "grad_a",
        &name,
        &grad_a_t.to_vec().unwrap(),
        &want_a,
        Tolerance::F32_SUMS,
    );
    assert_close(
        "grad_b",
        &name,
        &grad_b_t.to_vec().unwrap(),
        &want_b,
        Tolerance::F32_SUMS,
    );
    assert_close(
        "grad_bias",
        &name,
        &grad_bias_t.to_vec().unwrap(),
        &want_bias,
        Tolerance::F32_SUMS,
    );
}

#[test]
fn matmul_backward_matches_reference_on_the_shape_table() {
    on_every_kernel_path(|| {
        for (i, case) in cases().iter().enumerate() {
            run_backward(case, 300 + i as u64, false);
        }
    });
}

#[test]
fn matmul_backward_accumulates_into_existing_gradients() {
    on_every_kernel_path(|| {
        for (i, case) in cases().iter().enumerate().filter(|(i, _)| i % 5 == 0) {
            run_backward(case, 600 + i as u64, true);
        }
    });
}

#[test]
fn matmul_reference_backward_matches_finite_differences() {
    // loss = sum(w * c) for fixed random w, so dloss/dc = w.
    let small = [(1, 1, 1, 1), (1, 3, 2, 4), (3, 2, 3, 5), (2, 4, 1, 3)];
    for (i, &(batch, m, n, k)) in small.iter().enumerate() {
        for variant in 0..8 {
            let case = Case {
                batch,
                m,
                n,
                k,
                trans_a: variant & 1 == 1,
                trans_b: variant & 2 == 2,
                a_shared: batch > 1 && variant & 4 == 4,
                b_shared: batch > 1 && variant & 4 == 0,
            };
            let d = dims(&case);
            let op = case.op(0.0);
            let seed = 900 + (i * 8 + variant) as u64;
            let (a, b, bias) = inputs(&case, seed);
            let (a, b, bias) = (to_f64(&a), to_f64(&b), to_f64(&bias));
            let w = to_f64(&seeded(seed + 7, d.c_shape().iter().product()));
            let loss = |a: &[f64], b: &[f64], bias: &[f64]| -> f64 {
                let c = reference::matmul::matmul_forward(&d, &op, a, b, Some(bias), &[]);
                c.iter().zip(&w).map(|(c, w)| c * w).sum()
            };
            let (grad_a, grad_b, grad_bias) = reference::matmul::matmul_backward(&d, &op, &a, &b, &w);
            let name = case.name();
            assert_gradient_matches_finite_differences("grad_a", &name, &a, &grad_a, |x| loss(x, &b, &bias));
            assert_gradient_matches_finite_differences("grad_b", &name, &b, &grad_b, |x| loss(&a, x, &bias));
            assert_gradient_matches_finite_differences("grad_bias", &name, &bias, &grad_bias, |x| loss(&a, &b, x));
        }
    }
}

#[test]
fn matmul_rejects_mismatched_shapes_naming_the_tensor() {
    let ctx = ctx();
    let a = Tensor::zeros(ctx, &[4, 5], DType::F32).unwrap();
    let b = Tensor::zeros(ctx, &[6, 3], DType::F32).unwrap();
    let c = Tensor::zeros(ctx, &[4, 3], DType::F32).unwrap();
    let mut encoder = ctx.create_encoder();
    let err = matmul_forward(ctx, &mut encoder, &Matmul::default(), &a, &b, None, &c).unwrap_err();
    match &err {
        Error::ShapeMismatch { tensor, found, .. } => {
            assert!(tensor.contains("matmul: b"), "{err}");
            assert_eq!(found, &vec![6, 3]);
        }
        other => panic!("expected a shape error, got {other}"),
    }

    let b = Tensor::zeros(ctx, &[5, 3], DType::F32).unwrap();
    let wrong_c = Tensor::zeros(ctx, &[3, 4], DType::F32).unwrap();
    let err = matmul_forward(ctx, &mut encoder, &Matmul::default(), &a, &b, None, &wrong_c).unwrap_err();
    assert!(
        matches!(&err, Error::ShapeMismatch { tensor, .. } if tensor == "matmul: c"),
        "{err}"
    );

    let bias = Tensor::zeros(ctx, &[4], DType::F32).unwrap();
    let err = matmul_forward(ctx, &mut encoder, &Matmul::default(), &a, &b, Some(&bias), &c).unwrap_err();
    assert!(
        matches!(&err, Error::ShapeMismatch { tensor, .. } if tensor == "matmul: bias"),
        "{err}"
    );

    let batched_a = Tensor::zeros(ctx, &[2, 4, 5], DType::F32).unwrap();
    let batched_b = Tensor::zeros(ctx, &[3, 5, 3], DType::F32).unwrap();
    let batched_c = Tensor::zeros(ctx, &[2, 4, 3], DType::F32).unwrap();
    let err = matmul_forward(
        ctx,
        &mut encoder,
        &Matmul::default(),
        &batched_a,
        &batched_b,
        None,
        &batched_c,
    )
    .unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");

    let ids = Tensor::zeros(ctx, &[5, 3], DType::U32).unwrap();
    let err = matmul_forward(ctx, &mut encoder, &Matmul::default(), &a, &ids, None, &c).unwrap_err();
    assert!(matches!(err, Error::DType { .. }), "{err}");

    let nan_beta = Matmul {
        beta: f32::NAN,
        ..Matmul::default()
    };
    let err = matmul_forward(ctx, &mut encoder, &nan_beta, &a, &b, None, &c).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");

    let square = Tensor::zeros(ctx, &[4, 4], DType::F32).unwrap();
    let err = matmul_forward(ctx, &mut encoder, &Matmul::default(), &square, &square, None, &square).unwrap_err();
    assert!(
        matches!(err, Error::InvalidArgument { .. }),
        "output aliasing an input: {err}"
    );

    let empty = Tensor::zeros(ctx, &[0, 5], DType::F32).unwrap();
    let err = matmul_forward(ctx, &mut encoder, &Matmul::default(), &empty, &b, None, &c).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
}

#[test]
fn matmul_splits_loops_longer_than_a_cpu_adapter_allows_into_accumulating_dispatches() {
    on_every_kernel_path(|| {
        // K = 20001 with scalar loads, and a gradient summed over 3000 batches: one invocation
        // of each would run past lavapipe's ~65535 loop iterations, which truncates silently.
        let long_k = Case {
            batch: 1,
            m: 3,
            n: 5,
            k: 20001,
            trans_a: false,
            trans_b: false,
            a_shared: false,
            b_shared: true,
        };
        let (a, b, bias) = inputs(&long_k, 1);
        let got = run_forward(&long_k, &a, &b, Some(&bias), None, 0.0);
        let want = reference::matmul::matmul_forward(
            &dims(&long_k),
            &long_k.op(0.0),
            &to_f64(&a),
            &to_f64(&b),
            Some(&to_f64(&bias)),
            &[],
        );
        assert_close("c", "k20001", &got, &want, Tolerance { atol: 1e-3, rtol: 1e-4 });

        let many_batches = Case {
            batch: 3000,
            m: 23,
            n: 3,
            k: 2,
            trans_a: false,
            trans_b: false,
            a_shared: false,
            b_shared: true,
        };
        run_backward(&many_batches, 2, false);
        run_backward(&many_batches, 3, true);
    });
}

/// Random valid shapes (M, N, K from 1 to past the 64-wide tile, transposes, shared
/// operands) against the CPU reference, forward and backward.
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn case() -> impl Strategy<Value = Case> {
        let sizes = (1usize..=3, 1usize..=70, 1usize..=70, 1usize..=70);
        (sizes, any::<[bool; 4]>()).prop_map(|((batch, m, n, k), [trans_a, trans_b, a, b])| Case {
            batch,
            m,
            n,
            k,
            trans_a,
            trans_b,
            a_shared: batch > 1 && a,
            b_shared: batch == 1 || b,
        })
    }

    proptest! {
        #![proptest_config(common::prop_config(16))]
        #[test]
        fn matmul_matches_reference_on_random_shapes(case in case(), seed in 0u64..1000, with_bias in any::<bool>()) {
            on_every_kernel_path(|| check_random_case(&case, seed, with_bias));
        }
    }

    fn check_random_case(case: &Case, seed: u64, with_bias: bool) {
        {
            let (a, b, bias) = inputs(case, seed);
            let bias = with_bias.then_some(&bias[..]);
            let got = run_forward(case, &a, &b, bias, None, 0.0);
            let want = reference::matmul::matmul_forward(
                &dims(case),
                &case.op(0.0),
                &to_f64(&a),
                &to_f64(&b),
                bias.map(to_f64).as_deref(),
                &[],
            );
            assert_close(
                "c",
                &format!("{} seed {seed}", case.name()),
                &got,
                &want,
                Tolerance::F32_SUMS,
            );
            run_backward(case, seed, seed % 2 == 1);
        }
    }
}
