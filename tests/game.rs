//! tsumugi inside a host's frame loop: on a device and queue the test creates itself, the
//! generator's step, the game_npc example's append and draw passes (its renderer, shared
//! through `#[path]`) run in one encoder per frame with the generator's buffers bound
//! directly; one readback of the frame afterwards shows bars whose heights are the
//! read-back probabilities (within one pixel) and the drawn token highlighted. tsumugi
//! created no device of its own. The optional readback is asynchronous: a frame loop that
//! only polls (never waits) receives the drawn tokens a few frames later.

mod common;
#[path = "../examples/game_npc/render.rs"]
mod render;

use common::host_device;
use rand::rngs::StdRng;
use rand::SeedableRng;
use render::{map_all_blocking, Layout, Offscreen, Renderer, OFFSCREEN_FORMAT};
use std::future::Future;
use tsumugi::graph::ParamStore;
use tsumugi::nn::generator::Generator;
use tsumugi::nn::{CellKind, RecurrentConfig};
use tsumugi::sampling::Sampling;

use tsumugi::nn::{embedding, linear, recurrent, EmbeddingConfig, VarBuilder};
use tsumugi::Context;

#[test]
fn game_frame_bars_match_the_generator_probabilities_on_the_host_device() {
    let (device, queue) = host_device();
    let ctx = Context::from_wgpu(device.clone(), queue.clone());
    let (streams, vocab, hidden) = (3, 12, 16);
    let mut store = ParamStore::new();
    let mut rng = StdRng::seed_from_u64(4);
    let embedding = embedding(
        vocab,
        8,
        EmbeddingConfig { padding_idx: None },
        VarBuilder::with_prefix(&ctx, &mut store, &mut rng, "embedding"),
    )
    .unwrap();
    let config = RecurrentConfig {
        num_layers: 2,
        ..RecurrentConfig::new(CellKind::Lstm, 8, hidden)
    };
    let lstm = recurrent(config, VarBuilder::with_prefix(&ctx, &mut store, &mut rng, "lstm")).unwrap();
    let fc = linear(hidden, vocab, VarBuilder::with_prefix(&ctx, &mut store, &mut rng, "fc")).unwrap();
    // Sharpened so that bars of many heights appear.
    let sampling = Sampling {
        temperature: 0.25,
        top_k: Some(8),
        seed: 3,
    };
    let mut generator = Generator::new(&ctx, &store, &embedding, &lstm, &fc, streams, sampling).unwrap();
    assert!(
        generator.context().device() == &device,
        "the generator runs on the host's device"
    );

    let bar_h = 100;
    let layout = Layout::new(streams, vocab, 8, 4, bar_h);
    let charmap: Vec<u32> = (0..vocab as u32).map(|i| u32::from(b'a') + i).collect();
    let renderer = Renderer::new(
        &device,
        OFFSCREEN_FORMAT,
        layout,
        generator.tokens().buffer(),
        generator.probabilities().buffer(),
        &charmap,
    );
    let offscreen = Offscreen::new(&device, layout.width, layout.height);
    let staging = offscreen.staging(&device);

    // Three frames, each one encoder of the host's and one submission; the last copies
    // its image out.
    for frame in 0..3 {
        let mut encoder = device.create_command_encoder(&Default::default());
        if frame == 0 {
            for slot in 0..streams {
                generator.reset_slot(&mut encoder, slot, slot as u32 + 1).unwrap();
            }
        }
        generator.step(&mut encoder).unwrap();
        renderer.append(&mut encoder);
        renderer.draw(&mut encoder, &offscreen.view);
        if frame == 2 {
            offscreen.copy_to(&mut encoder, &staging);
        }
        queue.submit([encoder.finish()]);
        ctx.recycle_after_submit();
    }
    map_all_blocking(&device, &[&staging]);
    let pixels = offscreen.pixels(&staging);
    let probs: Vec<f32> = generator.probabilities().to_vec().unwrap();
    let tokens: Vec<u32> = generator.tokens().to_vec().unwrap();

    let width = layout.width as usize;
    let pixel = |x: u32, y: u32| {
        let at = (y as usize * width + x as usize) * 4;
        [pixels[at], pixels[at + 1], pixels[at + 2]]
    };
    // BAR is light blue, DRAWN orange, the strip's background dark: red or blue above
    // the middle means filled.
    let filled = |[r, _, b]: [u8; 3]| r > 128 || b > 128;
    let mut heights_seen = std::collections::BTreeSet::new();
    for row in 0..streams {
        for j in 0..vocab {
            let p = f64::from(probs[row * vocab + j]);
            let (x, bottom) = layout.bar_column(row, j);
            let count = (1..=bar_h).filter(|&dy| filled(pixel(x, bottom - dy))).count();
            let want = p * f64::from(bar_h);
            assert!(
                (count as f64 - want).abs() <= 1.0,
                "NPC {row}, bar {j}: {count} pixels tall, probability {p} x {bar_h} = {want:.2}"
            );
            // Filled pixels form one run from the bottom.
            assert!((1..=count as u32).all(|dy| filled(pixel(x, bottom - dy))));
            if count > 0 {
                let [r, _, b] = pixel(x, bottom - 1);
                let drawn = j as u32 == tokens[row];
                assert_eq!(
                    r > 200 && b < 128,
                    drawn,
                    "NPC {row}, bar {j}: highlighted iff it is the drawn token"
                );
            }
            heights_seen.insert(count);
        }
        let sum: f32 = probs[row * vocab..(row + 1) * vocab].iter().sum();
        assert!((sum - 1.0).abs() < 1e-5, "NPC {row}: probabilities sum to {sum}");
    }
    assert!(heights_seen.len() > 3, "bars of several heights: {heights_seen:?}");
    assert_eq!(
        tsumugi::gpu::devices_created(),
        0,
        "tsumugi created no device of its own"
    );
}

/// `Tensor::read` from a frame loop that never blocks: the future is polled once per
/// "frame" with a no-op waker while the device is polled without waiting, until the
/// tokens arrive; they equal what a blocking read gives afterwards.
#[test]
fn game_reads_the_drawn_tokens_back_asynchronously_without_waiting() {
    let (device, queue) = host_device();
    let ctx = Context::from_wgpu(device.clone(), queue.clone());
    let mut store = ParamStore::new();
    let mut rng = StdRng::seed_from_u64(5);
    let embedding = embedding(
        9,
        4,
        EmbeddingConfig { padding_idx: None },
        VarBuilder::with_prefix(&ctx, &mut store, &mut rng, "embedding"),
    )
    .unwrap();
    let gru = recurrent(
        RecurrentConfig::new(CellKind::Gru, 4, 8),
        VarBuilder::with_prefix(&ctx, &mut store, &mut rng, "gru"),
    )
    .unwrap();
    let fc = linear(8, 9, VarBuilder::with_prefix(&ctx, &mut store, &mut rng, "fc")).unwrap();
    let mut generator = Generator::new(&ctx, &store, &embedding, &gru, &fc, 5, Sampling::default()).unwrap();
    let mut encoder = device.create_command_encoder(&Default::default());
    generator.step(&mut encoder).unwrap();
    queue.submit([encoder.finish()]);
    ctx.recycle_after_submit();

    let tokens = generator.tokens().clone();
    let mut read = std::pin::pin!(tokens.read::<u32>());
    let mut waker_context = std::task::Context::from_waker(std::task::Waker::noop());
    let mut frames = 0;
    let got = loop {
        if let std::task::Poll::Ready(result) = read.as_mut().poll(&mut waker_context) {
            break result.unwrap();
        }
        device.poll(wgpu::PollType::Poll).unwrap();
        frames += 1;
        assert!(frames < 100_000, "the readback never arrived");
        std::thread::yield_now();
    };
    assert_eq!(got.len(), 5);
    assert!(got.iter().all(|&t| t < 9));
    assert_eq!(got, generator.tokens().to_vec::<u32>().unwrap());
}
