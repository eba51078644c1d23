//! Several threads encoding and submitting on one `Context` at once.
//!
//! Regression test for wrong results seen only with several test threads: wgpu-core
//! lazily zero-fills the never-written parts of a buffer bound with a dynamic offset at
//! the first submission that binds it, and in `Queue::submit` it decides what to clear
//! before it takes the queue's pending writes. A dispatch's parameters written by
//! another thread into the same fresh uniform-arena chunk in that window were zeroed
//! (the dispatch then saw `len == 0` and wrote nothing). See
//! `examples/wgpu_init_race.rs` for the plain-wgpu reproducer.

use std::sync::Barrier;

use tsumugi::kernels::elementwise::relu_forward;
use tsumugi::{AdapterOptions, Context, Tensor};

const THREADS: usize = 4;
const DISPATCHES_PER_THREAD: usize = 6;
const ROUNDS: usize = 300;

#[test]
fn dispatches_encoded_on_several_threads_all_run_with_their_own_parameters() {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle().with_env());
    let adapter = pollster::block_on(tsumugi::gpu::enumerate_adapters(
        &instance,
        AdapterOptions::default().backends,
    ))
    .into_iter()
    .next()
    .expect("an adapter");
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default())).unwrap();

    let mut failures = Vec::new();
    for round in 0..ROUNDS {
        // A fresh context per round has a fresh uniform arena, whose first chunk is
        // where the race was.
        let ctx = Context::from_wgpu(device.clone(), queue.clone());
        // Build the pipeline without submitting anything, so the first submission of
        // the round happens below, with every thread encoding at once.
        {
            let x = Tensor::from_slice(&ctx, &[1.0f32], &[1]).unwrap();
            let y = Tensor::full(&ctx, &[1], 0.0f32).unwrap();
            let mut encoder = ctx.create_encoder();
            relu_forward(&ctx, &mut encoder, &x, &y).unwrap();
        }
        let barrier = Barrier::new(THREADS);
        let results: Vec<Vec<(f32, Tensor)>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..THREADS)
                .map(|thread| {
                    let (ctx, barrier) = (&ctx, &barrier);
                    scope.spawn(move || {
                        barrier.wait();
                        (0..DISPATCHES_PER_THREAD)
                            .map(|i| {
                                let value = (1 + thread * DISPATCHES_PER_THREAD + i) as f32;
                                let x = Tensor::from_slice(ctx, &[value; 64], &[64]).unwrap();
                                let y = Tensor::full(ctx, &[64], f32::NAN).unwrap();
                                let mut encoder = ctx.create_encoder();
                                relu_forward(ctx, &mut encoder, &x, &y).unwrap();
                                ctx.submit(encoder);
                                (value, y)
                            })
                            .collect()
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        for (value, y) in results.into_iter().flatten() {
            let got = y.to_vec::<f32>().unwrap();
            if got.iter().any(|&g| g.to_bits() != value.to_bits()) {
                failures.push(format!("round {round}: relu({value}) read back {:?}", &got[..4]));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} dispatches wrong:\n{}",
        failures.len(),
        ROUNDS * THREADS * DISPATCHES_PER_THREAD,
        failures.join("\n")
    );
}
