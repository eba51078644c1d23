//! Kernel test harness: one shared context, seeded inputs, NaN-filled outputs, a named
//! tolerance, and comparisons that print the worst element and the first mismatches.
#![allow(dead_code)]

use std::sync::OnceLock;

use rand::{Rng, SeedableRng};
use tsumugi::{Context, Tensor};

/// One context per test binary: creating devices on a software rasteriser is slow.
pub fn ctx() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| {
        let ctx = Context::new().expect("a GPU adapter (install mesa-vulkan-drivers for lavapipe)");
        eprintln!("adapter: {}", ctx.adapter());
        ctx
    })
}

/// Uniform values in [-1, 1) from a fixed seed.
pub fn seeded(seed: u64, len: usize) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// Grid values k/4 in [-2, 2]: products and their sums are exact in f32 in any order, so
/// an exact comparison exposes indexing bugs rather than rounding.
pub fn grid(seed: u64, len: usize) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(-8i32..=8) as f32 / 4.0).collect()
}

pub fn to_f64(values: &[f32]) -> Vec<f64> {
    values.iter().map(|&v| f64::from(v)).collect()
}

/// A tensor of NaN, so an element the kernel forgets to write fails the comparison.
pub fn nan_tensor(shape: &[usize]) -> Tensor {
    Tensor::full(ctx(), shape, f32::NAN).expect("NaN tensor")
}

/// `|got - want| <= atol + rtol * |want|`, element by element.
#[derive(Clone, Copy, Debug)]
pub struct Tolerance {
    pub atol: f64,
    pub rtol: f64,
}

impl Tolerance {
    pub const EXACT: Tolerance = Tolerance { atol: 0.0, rtol: 0.0 };
    pub const F32_SUMS: Tolerance = Tolerance { atol: 1e-5, rtol: 1e-4 };
}

/// Panics with the output's name, the case, the worst index and the first ten mismatches.
pub fn assert_close(output: &str, case: &str, got: &[f32], want: &[f64], tol: Tolerance) {
    assert_eq!(
        got.len(),
        want.len(),
        "{output} [{case}]: length {} vs reference {}",
        got.len(),
        want.len()
    );
    let mut mismatches = Vec::new();
    let mut worst = (0usize, 0.0f64);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let g = f64::from(g);
        let err = (g - w).abs();
        let ok = err <= tol.atol + tol.rtol * w.abs();
        if !ok || g.is_nan() {
            if mismatches.len() < 10 {
                mismatches.push(format!("  [{i}] gpu {g} ref {w} err {err:e}"));
            }
            if err.is_nan() || err > worst.1 {
                worst = (i, if err.is_nan() { f64::INFINITY } else { err });
            }
        }
    }
    if !mismatches.is_empty() {
        panic!(
            "{output} [{case}]: mismatches (tolerance {tol:?}), worst at [{}] err {:e}:\n{}",
            worst.0,
            worst.1,
            mismatches.join("\n")
        );
    }
}

/// Checks an analytic gradient of a scalar function against central differences in f64.
pub fn assert_gradient_matches_finite_differences(
    name: &str,
    case: &str,
    x: &[f64],
    analytic: &[f64],
    loss: impl Fn(&[f64]) -> f64,
) {
    assert_eq!(x.len(), analytic.len(), "{name} [{case}]: gradient length");
    let eps = 1e-6;
    let mut probe = x.to_vec();
    for i in 0..x.len() {
        probe[i] = x[i] + eps;
        let up = loss(&probe);
        probe[i] = x[i] - eps;
        let down = loss(&probe);
        probe[i] = x[i];
        let numeric = (up - down) / (2.0 * eps);
        let err = (numeric - analytic[i]).abs();
        assert!(
            err <= 1e-6 + 1e-6 * numeric.abs(),
            "{name} [{case}]: d/dx[{i}] analytic {} finite difference {numeric} (err {err:e})",
            analytic[i]
        );
    }
}
