//! embedding_forward and embedding_backward against the CPU reference, the determinism
//! and accumulate contracts of the backward, the id guards, and the reference backward
//! against finite differences.

mod common;

use common::{
    assert_close, assert_gradient_matches_finite_differences, ctx, grid, nan_tensor, seeded, to_f64, Tolerance,
};
use rand::{Rng, SeedableRng};
use tsumugi::kernels::embedding::{
    embedding_backward, embedding_forward, upload_ids, EmbeddingBackward, EmbeddingWorkspace,
};
use tsumugi::reference;
use tsumugi::{DType, Error, Tensor};

/// One case: vocabulary, width, batch, time, and how the ids are drawn.
#[derive(Clone, Copy, Debug)]
struct Case {
    v: usize,
    e: usize,
    b: usize,
    t: usize,
    ids: Ids,
    padding_idx: Option<u32>,
}

#[derive(Clone, Copy, Debug)]
enum Ids {
    /// Uniform over the vocabulary.
    Uniform,
    /// Drawn from the first few ids only, so most ids repeat many times.
    Few(u32),
    /// Every position holds this id.
    All(u32),
}

impl Case {
    const fn new(v: usize, e: usize, b: usize, t: usize) -> Case {
        Case {
            v,
            e,
            b,
            t,
            ids: Ids::Uniform,
            padding_idx: None,
        }
    }

    fn name(&self) -> String {
        let ids = match self.ids {
            Ids::Uniform => String::new(),
            Ids::Few(k) => format!("_ids_below_{k}"),
            Ids::All(id) => format!("_all_ids_{id}"),
        };
        let padding = self
            .padding_idx
            .map(|p| format!("_padding_idx_{p}"))
            .unwrap_or_default();
        format!("v{}_e{}_b{}_t{}{ids}{padding}", self.v, self.e, self.b, self.t)
    }

    fn positions(&self) -> usize {
        self.b * self.t
    }

    fn ids(&self, seed: u64) -> Vec<u32> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..self.positions())
            .map(|_| match self.ids {
                Ids::Uniform => rng.random_range(0..self.v as u32),
                Ids::Few(k) => rng.random_range(0..k.min(self.v as u32)),
                Ids::All(id) => id,
            })
            .collect()
    }
}

/// 1, primes, widths around the 8-lane and 256-invocation boundaries, and position
/// counts below, at and past one 512-key sort block (P = 512, 1024, 4096: the merge
/// kernels' stages) and a realistic batch.
const SHAPES: &[Case] = &[
    Case::new(1, 1, 1, 1),
    Case::new(37, 5, 2, 3),
    Case::new(2, 7, 1, 13),
    Case::new(50, 64, 4, 33),
    Case::new(11, 257, 3, 5),
    Case::new(7, 3, 1, 600),
    Case::new(13, 17, 3, 700),
    Case::new(101, 8, 8, 64),
    Case::new(300, 31, 16, 32),
];

fn cases() -> Vec<Case> {
    let mut cases = SHAPES.to_vec();
    cases.push(Case {
        padding_idx: Some(0),
        ..Case::new(37, 5, 2, 3)
    });
    cases.push(Case {
        padding_idx: Some(3),
        ids: Ids::Few(6),
        ..Case::new(50, 9, 5, 111)
    });
    cases.push(Case {
        ids: Ids::Few(3),
        ..Case::new(29, 12, 4, 200)
    });
    cases.push(Case {
        ids: Ids::All(7),
        ..Case::new(11, 9, 4, 300)
    });
    cases
}

fn run_forward(case: &Case, ids: &[u32], weight: &[f32]) -> Vec<f32> {
    let ctx = ctx();
    let ids_t = upload_ids(ctx, ids, &[case.b, case.t], case.v).expect("valid ids");
    let weight_t = Tensor::from_slice(ctx, weight, &[case.v, case.e]).unwrap();
    let out = nan_tensor(&[case.b, case.t, case.e]);
    let flag = Tensor::zeros(ctx, &[1], DType::U32).unwrap();
    let mut encoder = ctx.create_encoder();
    embedding_forward(ctx, &mut encoder, &ids_t, &weight_t, &out, &flag).unwrap();
    ctx.submit(encoder);
    assert_eq!(
        flag.to_vec::<u32>().unwrap(),
        vec![0],
        "{}: error flag set for valid ids",
        case.name()
    );
    out.to_vec().unwrap()
}

/// Runs the backward into `start` (NaN when None, so an unwritten row fails).
fn run_backward(case: &Case, ids: &[u32], grad_out: &[f32], start: Option<&[f32]>, accumulate: bool) -> Vec<f32> {
    let ctx = ctx();
    let ids_t = upload_ids(ctx, ids, &[case.b, case.t], case.v).expect("valid ids");
    let grad_out_t = Tensor::from_slice(ctx, grad_out, &[case.b, case.t, case.e]).unwrap();
    let grad_weight = match start {
        Some(start) => Tensor::from_slice(ctx, start, &[case.v, case.e]).unwrap(),
        None => nan_tensor(&[case.v, case.e]),
    };
    let workspace = EmbeddingWorkspace::new(ctx, case.positions()).unwrap();
    let op = EmbeddingBackward {
        padding_idx: case.padding_idx,
        accumulate,
    };
    let mut encoder = ctx.create_encoder();
    embedding_backward(ctx, &mut encoder, &op, &ids_t, &grad_out_t, &grad_weight, &workspace).unwrap();
    ctx.submit(encoder);
    grad_weight.to_vec().unwrap()
}

#[test]
fn embedding_forward_matches_reference_on_the_shape_table() {
    for (i, case) in cases().iter().enumerate() {
        let seed = 100 + i as u64;
        let ids = case.ids(seed);
        let weight = seeded(seed + 1, case.v * case.e);
        let got = run_forward(case, &ids, &weight);
        let want = reference::embedding::embedding_forward(&ids, &to_f64(&weight), case.e);
        // A gather copies: exact.
        assert_close(
            "out",
            &format!("{} seed {seed}", case.name()),
            &got,
            &want,
            Tolerance::EXACT,
        );
    }
}

/// Grid-valued gradients make every sum exact in f32 in any order, so the comparison is
/// exact and only an indexing or sorting bug can fail it; seeded values check the sums
/// of ordinary floats.
fn check_backward(case: &Case, seed: u64) {
    let ids = case.ids(seed);
    for (values, tol) in [("grid", Tolerance::EXACT), ("seeded", Tolerance::F32_SUMS)] {
        let grad_out = if values == "grid" {
            grid(seed + 1, case.positions() * case.e)
        } else {
            seeded(seed + 1, case.positions() * case.e)
        };
        let got = run_backward(case, &ids, &grad_out, None, false);
        let want = reference::embedding::embedding_backward(&ids, &to_f64(&grad_out), case.v, case.e, case.padding_idx);
        assert_close(
            "grad_weight",
            &format!("{} {values} seed {seed}", case.name()),
            &got,
            &want,
            tol,
        );
    }
}

#[test]
fn embedding_backward_matches_reference_on_the_shape_table() {
    for (i, case) in SHAPES.iter().enumerate() {
        check_backward(case, 300 + i as u64);
    }
}

#[test]
fn embedding_backward_matches_reference_v1_e1_b1_t1() {
    check_backward(&Case::new(1, 1, 1, 1), 1);
}

#[test]
fn embedding_backward_matches_reference_v37_e5_padding_idx() {
    for padding_idx in [0, 5, 36] {
        let case = Case {
            padding_idx: Some(padding_idx),
            ids: Ids::Few(8),
            ..Case::new(37, 5, 2, 3)
        };
        check_backward(&case, 40 + u64::from(padding_idx));
        let case = Case {
            padding_idx: Some(padding_idx),
            ..Case::new(37, 5, 7, 97)
        };
        check_backward(&case, 50 + u64::from(padding_idx));
    }
}

#[test]
fn embedding_backward_matches_reference_v29_e12_b4_t200_repeated_ids() {
    let case = Case {
        ids: Ids::Few(3),
        ..Case::new(29, 12, 4, 200)
    };
    check_backward(&case, 60);
}

#[test]
fn embedding_backward_matches_reference_v11_e9_b4_t300_all_ids_equal() {
    for id in [0, 7, 10] {
        let case = Case {
            ids: Ids::All(id),
            ..Case::new(11, 9, 4, 300)
        };
        check_backward(&case, 70 + u64::from(id));
    }
    // The padding id everywhere: the whole gradient is zero.
    let case = Case {
        ids: Ids::All(4),
        padding_idx: Some(4),
        ..Case::new(11, 9, 2, 5)
    };
    check_backward(&case, 80);
}

#[test]
fn embedding_backward_accumulates_and_leaves_absent_rows_untouched() {
    // Ids drawn from the first 6 of 40, padding row 2: rows 6.. never occur, so they and
    // row 2 must keep their starting values bit for bit, NaN included.
    let case = Case {
        ids: Ids::Few(6),
        padding_idx: Some(2),
        ..Case::new(40, 11, 3, 37)
    };
    let ids = case.ids(90);
    let grad_out = seeded(91, case.positions() * case.e);
    let mut start = seeded(92, case.v * case.e);
    start[7 * case.e + 3] = f32::NAN;
    let got = run_backward(&case, &ids, &grad_out, Some(&start), true);
    let mut want = reference::embedding::embedding_backward(&ids, &to_f64(&grad_out), case.v, case.e, Some(2));
    for (w, s) in want.iter_mut().zip(&start) {
        *w += f64::from(*s);
    }
    for v in (0..case.v).filter(|&v| v == 2 || v >= 6) {
        for e in 0..case.e {
            let i = v * case.e + e;
            assert_eq!(
                got[i].to_bits(),
                start[i].to_bits(),
                "row {v} col {e} was touched: {} -> {}",
                start[i],
                got[i]
            );
        }
    }
    let present: Vec<usize> = (0..case.v * case.e)
        .filter(|i| i / case.e < 6 && i / case.e != 2)
        .collect();
    let got_present: Vec<f32> = present.iter().map(|&i| got[i]).collect();
    let want_present: Vec<f64> = present.iter().map(|&i| want[i]).collect();
    assert_close(
        "grad_weight",
        "accumulate v40_e11_b3_t37",
        &got_present,
        &want_present,
        Tolerance::F32_SUMS,
    );

    // Overwriting: the same absent rows become exactly zero.
    let got = run_backward(&case, &ids, &grad_out, Some(&start), false);
    for v in (0..case.v).filter(|&v| v == 2 || v >= 6) {
        assert!(
            got[v * case.e..(v + 1) * case.e].iter().all(|&g| g.to_bits() == 0),
            "row {v} is not +0 when overwriting"
        );
    }
}

#[test]
fn embedding_backward_is_bitwise_identical_across_runs() {
    // Many repeats of few ids over more than one sort block: the summation order is the
    // only thing that could differ between runs.
    let case = Case {
        ids: Ids::Few(5),
        ..Case::new(64, 33, 6, 211)
    };
    let ids = case.ids(100);
    let grad_out = seeded(101, case.positions() * case.e);
    let first = run_backward(&case, &ids, &grad_out, None, false);
    for run in 0..3 {
        let again = run_backward(&case, &ids, &grad_out, None, false);
        let differ = first.iter().zip(&again).position(|(a, b)| a.to_bits() != b.to_bits());
        assert_eq!(differ, None, "run {run} differs from the first at {differ:?}");
    }
}

#[test]
fn embedding_reference_backward_matches_finite_differences() {
    // loss = sum(w * out) for fixed random w, so dloss/dout = w.
    let small = [
        Case::new(1, 1, 1, 1),
        Case::new(5, 3, 2, 3),
        Case {
            padding_idx: Some(1),
            ids: Ids::Few(3),
            ..Case::new(4, 2, 3, 4)
        },
    ];
    for (i, case) in small.iter().enumerate() {
        let seed = 900 + i as u64;
        let ids = case.ids(seed);
        let weight = to_f64(&seeded(seed + 1, case.v * case.e));
        let w = to_f64(&seeded(seed + 2, case.positions() * case.e));
        let padding = case.padding_idx;
        let loss = |weight: &[f64]| -> f64 {
            // The padding row is excluded from the gradient by definition, so the
            // finite difference treats it as frozen.
            let mut frozen = weight.to_vec();
            if let Some(p) = padding {
                let p = p as usize;
                frozen[p * case.e..(p + 1) * case.e].fill(0.0);
            }
            let out = reference::embedding::embedding_forward(&ids, &frozen, case.e);
            out.iter().zip(&w).map(|(o, w)| o * w).sum()
        };
        let grad = reference::embedding::embedding_backward(&ids, &w, case.v, case.e, padding);
        assert_gradient_matches_finite_differences("grad_weight", &case.name(), &weight, &grad, loss);
    }
}

#[test]
fn embedding_forward_guards_out_of_range_gpu_ids_with_zeros_and_the_error_flag() {
    // Ids uploaded raw stand for ids produced on the GPU, which no host check sees.
    let ctx = ctx();
    let (v, e) = (10, 6);
    let ids = [3u32, 10, 9, 4_000_000_000, 0, 11];
    let ids_t = Tensor::from_slice(ctx, &ids, &[2, 3]).unwrap();
    let weight = seeded(5, v * e);
    let weight_t = Tensor::from_slice(ctx, &weight, &[v, e]).unwrap();
    let out = nan_tensor(&[2, 3, e]);
    let flag = Tensor::zeros(ctx, &[1], DType::U32).unwrap();
    let mut encoder = ctx.create_encoder();
    embedding_forward(ctx, &mut encoder, &ids_t, &weight_t, &out, &flag).unwrap();
    ctx.submit(encoder);
    let want = reference::embedding::embedding_forward(&ids, &to_f64(&weight), e);
    assert_close(
        "out",
        "out-of-range ids",
        &out.to_vec().unwrap(),
        &want,
        Tolerance::EXACT,
    );
    assert_eq!(flag.to_vec::<u32>().unwrap(), vec![3], "three ids are >= V");

    // The backward ignores them instead of writing out of bounds.
    let grad_out = grid(6, ids.len() * e);
    let grad_out_t = Tensor::from_slice(ctx, &grad_out, &[2, 3, e]).unwrap();
    let grad_weight = nan_tensor(&[v, e]);
    let workspace = EmbeddingWorkspace::new(ctx, ids.len()).unwrap();
    let mut encoder = ctx.create_encoder();
    let op = EmbeddingBackward::default();
    embedding_backward(ctx, &mut encoder, &op, &ids_t, &grad_out_t, &grad_weight, &workspace).unwrap();
    ctx.submit(encoder);
    let want = reference::embedding::embedding_backward(&ids, &to_f64(&grad_out), v, e, None);
    assert_close(
        "grad_weight",
        "out-of-range ids",
        &grad_weight.to_vec().unwrap(),
        &want,
        Tolerance::EXACT,
    );
}

#[test]
fn upload_ids_rejects_an_out_of_range_id_naming_position_and_id() {
    let ctx = ctx();
    let ids = [1u32, 2, 3, 4, 99, 5];
    match upload_ids(ctx, &ids, &[2, 3], 50) {
        Err(Error::InvalidArgument { message }) => {
            assert!(message.contains("99"), "{message}");
            assert!(message.contains("[1, 1]"), "{message}");
            assert!(message.contains("50"), "{message}");
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    assert!(matches!(
        upload_ids(ctx, &ids, &[4, 2], 100),
        Err(Error::ShapeMismatch { .. })
    ));
    let ok = upload_ids(ctx, &ids, &[3, 2], 100).unwrap();
    assert_eq!(ok.to_vec::<u32>().unwrap(), ids);
}

#[test]
fn embedding_rejects_mismatched_shapes_naming_the_tensor() {
    let ctx = ctx();
    let ids = Tensor::zeros(ctx, &[2, 3], DType::U32).unwrap();
    let weight = Tensor::zeros(ctx, &[10, 4], DType::F32).unwrap();
    let out = Tensor::zeros(ctx, &[2, 3, 4], DType::F32).unwrap();
    let flag = Tensor::zeros(ctx, &[1], DType::U32).unwrap();
    let mut encoder = ctx.create_encoder();

    let wrong_out = Tensor::zeros(ctx, &[2, 3, 5], DType::F32).unwrap();
    let err = embedding_forward(ctx, &mut encoder, &ids, &weight, &wrong_out, &flag).unwrap_err();
    assert!(
        matches!(&err, Error::ShapeMismatch { tensor, found, .. } if tensor == "embedding: out" && found == &vec![2, 3, 5]),
        "{err}"
    );
    let float_ids = Tensor::zeros(ctx, &[2, 3], DType::F32).unwrap();
    let err = embedding_forward(ctx, &mut encoder, &float_ids, &weight, &out, &flag).unwrap_err();
    assert!(
        matches!(&err, Error::DType { tensor, .. } if tensor == "embedding: ids"),
        "{err}"
    );
    let flat_weight = Tensor::zeros(ctx, &[40], DType::F32).unwrap();
    let err = embedding_forward(ctx, &mut encoder, &ids, &flat_weight, &out, &flag).unwrap_err();
    assert!(
        matches!(&err, Error::ShapeMismatch { tensor, .. } if tensor == "embedding: weight"),
        "{err}"
    );
    let float_flag = Tensor::zeros(ctx, &[1], DType::F32).unwrap();
    let err = embedding_forward(ctx, &mut encoder, &ids, &weight, &out, &float_flag).unwrap_err();
    assert!(
        matches!(&err, Error::DType { tensor, .. } if tensor == "embedding: error_flag"),
        "{err}"
    );

    let workspace = EmbeddingWorkspace::new(ctx, 6).unwrap();
    let grad_weight = Tensor::zeros(ctx, &[10, 4], DType::F32).unwrap();
    let op = EmbeddingBackward {
        padding_idx: Some(10),
        accumulate: false,
    };
    let err = embedding_backward(ctx, &mut encoder, &op, &ids, &out, &grad_weight, &workspace).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "padding_idx >= V: {err}");
    let err = embedding_backward(
        ctx,
        &mut encoder,
        &EmbeddingBackward::default(),
        &ids,
        &wrong_out,
        &grad_weight,
        &workspace,
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::ShapeMismatch { tensor, .. } if tensor == "embedding: grad_out"),
        "{err}"
    );
    let many_ids = Tensor::zeros(ctx, &[40, 20], DType::U32).unwrap();
    let many_out = Tensor::zeros(ctx, &[40, 20, 4], DType::F32).unwrap();
    let err = embedding_backward(
        ctx,
        &mut encoder,
        &EmbeddingBackward::default(),
        &many_ids,
        &many_out,
        &grad_weight,
        &workspace,
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::InvalidArgument { .. }),
        "workspace too small: {err}"
    );
    assert!(EmbeddingWorkspace::new(ctx, 0).is_err());
}

/// Random valid shapes (V, E past the workgroup width, repeated ids, a padding index on
/// some) against the CPU reference, forward and backward.
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn case() -> impl Strategy<Value = Case> {
        (1usize..=70, 1usize..=70, 1usize..=5, 1usize..=40, any::<bool>()).prop_flat_map(|(v, e, b, t, padded)| {
            (0..v as u32).prop_map(move |p| Case {
                padding_idx: padded.then_some(p),
                ..Case::new(v, e, b, t)
            })
        })
    }

    proptest! {
        #![proptest_config(common::prop_config(32))]
        #[test]
        fn embedding_matches_reference_on_random_shapes(case in case(), seed in 0u64..1000) {
            let ids = case.ids(seed);
            let weight = seeded(seed + 1, case.v * case.e);
            let got = run_forward(&case, &ids, &weight);
            let want = reference::embedding::embedding_forward(&ids, &to_f64(&weight), case.e);
            assert_close("out", &format!("{} seed {seed}", case.name()), &got, &want, Tolerance::EXACT);
            check_backward(&case, seed);
        }
    }
}
