//! Kernel test harness: one shared context, seeded inputs, NaN-filled outputs, a named
//! tolerance, and comparisons that print the worst element and the first mismatches.
#![allow(dead_code)]

pub mod elementwise;
pub mod models;

use std::cell::Cell;
use std::sync::OnceLock;

use rand::{Rng, SeedableRng};
use tsumugi::{Context, Tensor};

/// One context per test binary: creating devices on a software rasteriser is slow.
fn default_ctx() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| {
        let ctx = Context::new().expect("a GPU adapter (install mesa-vulkan-drivers for lavapipe)");
        eprintln!("adapter: {}", ctx.adapter());
        ctx
    })
}

/// A second context on the same adapter running the portable kernels, where the default
/// one runs subgroup kernels; None where it already runs the portable ones (no subgroups).
fn portable_ctx() -> Option<&'static Context> {
    static CTX: OnceLock<Option<Context>> = OnceLock::new();
    CTX.get_or_init(|| {
        default_ctx().subgroup_kernels().then(|| {
            let ctx = Context::new().expect("a second device on the adapter");
            ctx.set_subgroup_kernels(false)
                .expect("the portable kernels always run");
            ctx
        })
    })
    .as_ref()
}

thread_local! {
    /// The context of the kernel path under test on this thread (see on_every_kernel_path).
    static PATH: Cell<Option<&'static Context>> = const { Cell::new(None) };
}

/// The context tests run on: the shared default one (subgroup kernels where the adapter
/// has them), or inside [`on_every_kernel_path`] the one of the path being checked.
pub fn ctx() -> &'static Context {
    PATH.with(Cell::get).unwrap_or_else(default_ctx)
}

/// Runs `check` once per kernel path: on the default context and, where that one runs
/// subgroup kernels, on a context running the portable ones; `ctx()` is that path's
/// context meanwhile, and a failure says which path failed.
pub fn on_every_kernel_path(check: impl Fn()) {
    let mut paths = vec![(
        if default_ctx().subgroup_kernels() {
            "subgroup"
        } else {
            "portable"
        },
        default_ctx(),
    )];
    paths.extend(portable_ctx().map(|ctx| ("portable", ctx)));
    for (name, ctx) in paths {
        PATH.with(|path| path.set(Some(ctx)));
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(&check));
        PATH.with(|path| path.set(None));
        if let Err(panic) = outcome {
            eprintln!("failed on the {name} kernels");
            std::panic::resume_unwind(panic);
        }
    }
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

/// Checks the backward's gradients of `params` against central differences of a loss the
/// GPU computes (`loss` runs a forward pass over the store and returns the loss). The
/// gradients are read first: the probes' own passes call `zero_grad`. Per parameter it
/// probes `random` random elements and the one with the largest gradient; the step (1e-2)
/// and tolerance suit an f32 loss.
pub fn assert_param_gradients_match_finite_differences(
    case: &str,
    store: &mut tsumugi::graph::ParamStore,
    params: &[tsumugi::graph::ParamId],
    random: usize,
    mut loss: impl FnMut(&mut tsumugi::graph::ParamStore) -> f64,
) {
    let grads: Vec<Vec<f32>> = params
        .iter()
        .map(|&id| {
            let grad = store.grad(id);
            let grad = grad.unwrap_or_else(|| panic!("{case}: no gradient for {}", store.name(id)));
            grad.to_vec().expect("read a gradient")
        })
        .collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(params.len() as u64);
    let eps = 1e-2f32;
    for (&id, grad) in params.iter().zip(&grads) {
        let original: Vec<f32> = store.value(id).to_vec().expect("read a parameter");
        let largest = (0..grad.len()).max_by(|&a, &b| grad[a].abs().total_cmp(&grad[b].abs()));
        let picks = (0..random).map(|_| rng.random_range(0..grad.len())).chain(largest);
        for i in picks {
            let mut probe = original.clone();
            probe[i] = original[i] + eps;
            store.value(id).write(&probe).expect("write a probe");
            let up = loss(store);
            probe[i] = original[i] - eps;
            store.value(id).write(&probe).expect("write a probe");
            let down = loss(store);
            store.value(id).write(&original).expect("restore a parameter");
            let numeric = (up - down) / (2.0 * f64::from(eps));
            let analytic = f64::from(grad[i]);
            assert!(
                (numeric - analytic).abs() <= 2e-3 + 5e-2 * analytic.abs(),
                "{case}: {}[{i}]: backward {analytic}, finite difference {numeric}",
                store.name(id)
            );
        }
    }
}

/// Property-test settings: `cases` random cases from a fixed seed, so a CI run is short
/// and repeatable; `PROPTEST_CASES` and `PROPTEST_RNG_SEED` override both for a longer
/// or different search (`PROPTEST_CASES=500 cargo test --release --test matmul prop`).
/// No failure files are written; a failing case prints its shapes and seed.
pub fn prop_config(cases: u32) -> proptest::test_runner::Config {
    use proptest::test_runner::{Config, RngSeed};
    let mut config = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(0x7375_6d75_6769);
    }
    config.failure_persistence = None;
    // Shrinking re-runs GPU cases; a few steps are enough to see a smaller shape.
    config.max_shrink_iters = 32;
    config
}

/// Random recurrent-kernel shapes for property tests: (B, T, H, lengths) with B up to
/// 6, T up to 5, H up to 40 (past the 32-wide workgroup and the 4-row block), and
/// per-row lengths in 1..=T on about half of the cases.
#[allow(dead_code)] // only the recurrent kernels' test files use it
pub fn recurrent_shapes() -> impl proptest::strategy::Strategy<Value = (usize, usize, usize, Option<Vec<u32>>)> {
    use proptest::prelude::*;
    (1usize..=6, 1usize..=5, 1usize..=40, any::<bool>()).prop_flat_map(|(batch, steps, hidden, padded)| {
        let lengths = proptest::collection::vec(1..=steps as u32, batch);
        (
            Just(batch),
            Just(steps),
            Just(hidden),
            lengths.prop_map(move |l| padded.then_some(l)),
        )
    })
}

/// A device and queue made with plain wgpu, as a game or renderer makes its own: the host
/// side of the tests that run tsumugi inside a host (`Context::from_wgpu`).
pub fn host_device() -> (wgpu::Device, wgpu::Queue) {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle().with_env());
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
        .expect("an adapter (install mesa-vulkan-drivers for lavapipe)");
    pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("host"),
        required_limits: adapter.limits(),
        ..Default::default()
    }))
    .expect("a device")
}
