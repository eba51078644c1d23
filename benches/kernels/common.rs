//! Helpers every bench family shares: seeded inputs, checking a GPU result against its
//! f64 reference, the kernel paths a family is timed on, and `time_gpu`, which times one
//! iteration with criterion and prints its GFLOP/s or GB/s.

use std::cell::RefCell;
use std::time::Instant;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Throughput};
use rand::{Rng, SeedableRng};
use tsumugi::Context;

pub(crate) fn seeded(seed: u64, len: usize) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// Random f32 values in [-scale, scale).
pub(crate) fn scaled(seed: u64, len: usize, scale: f32) -> Vec<f32> {
    seeded(seed, len).into_iter().map(|v| v * scale).collect()
}

pub(crate) fn to_f64(values: &[f32]) -> Vec<f64> {
    values.iter().map(|&v| f64::from(v)).collect()
}

/// Largest |gpu - want| over all elements, panicking past `atol + rtol |want|`.
pub(crate) fn verify_all(name: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) -> f64 {
    let mut worst = 0.0f64;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (f64::from(g) - w).abs();
        assert!(
            err <= atol + rtol * w.abs(),
            "{name}: [{i}] = {g} but the reference gives {w}"
        );
        worst = worst.max(err);
    }
    worst
}

/// Times `run` (one GPU iteration, submitted and waited for) with criterion, then prints
/// `work / median time` in `unit` (work in FLOPs for GFLOP/s, bytes for GB/s).
pub(crate) fn time_gpu(
    group: &mut BenchmarkGroup<'_, WallTime>,
    label: &str,
    id: &str,
    work: u64,
    unit: &str,
    mut run: impl FnMut(),
) {
    let per_iteration = RefCell::new(Vec::new());
    group.throughput(if unit == "GB/s" {
        Throughput::Bytes(work)
    } else {
        Throughput::Elements(work)
    });
    group.bench_function(BenchmarkId::new(label, id), |bencher| {
        bencher.iter_custom(|iterations| {
            let start = Instant::now();
            for _ in 0..iterations {
                run();
            }
            let elapsed = start.elapsed();
            per_iteration
                .borrow_mut()
                .push(elapsed.as_secs_f64() / iterations as f64);
            elapsed
        })
    });
    let mut times = per_iteration.into_inner();
    if times.is_empty() {
        return; // filtered out on the command line
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    eprintln!(
        "{label}/{id}: {:.2} {unit} (median of {} samples, {:.3} ms per iteration)",
        work as f64 / median / 1e9,
        times.len(),
        median * 1e3
    );
}

/// The kernel paths a family is timed on: the subgroup kernels where the context runs
/// them (ids as they are), then the portable kernels (ids ending in `_portable` where the
/// subgroup kernels ran too); the caller sets the context to each in turn.
pub(crate) fn kernel_paths(ctx: &Context) -> Vec<(bool, &'static str)> {
    if ctx.subgroup_kernels() {
        vec![(true, ""), (false, "_portable")]
    } else {
        vec![(false, "")]
    }
}
