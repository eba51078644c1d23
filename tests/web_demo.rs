//! The web example's training (`examples/web/demo.rs`) run natively with the page's seeds
//! and sizes: the reference the CI's browser check compares the page's result line with
//! (`.ci/run`, "the web example in headless Chromium"), and a test of its own that the
//! toy translator learns the chapter's four pairs and the losses fall.
//!
//! It runs the portable kernels, as the browser does on SwiftShader (whose subgroups are
//! too narrow for the subgroup kernels), so that both runs sum in the same orders up to
//! the driver.

#[path = "../examples/web/demo.rs"]
#[allow(dead_code)]
mod demo;

use std::time::Instant;

use tsumugi::Context;

#[test]
fn the_web_example_trains_natively_as_in_the_browser() {
    let ctx = Context::new().expect("a GPU adapter (install mesa-vulkan-drivers for lavapipe)");
    ctx.set_subgroup_kernels(false)
        .expect("the portable kernels always run");
    let start = Instant::now();
    let outcome = demo::block_on(&ctx, demo::run(&ctx, &demo::SIZES, &mut |_| {}))
        .expect("the device answers")
        .expect("training and generation run");
    let train_ms = start.elapsed().as_secs_f64() * 1e3;
    // The line the CI check reads (run with --nocapture).
    println!(
        "TSUMUGI_NATIVE_RESULT {}",
        outcome.to_json(&ctx.adapter().to_string(), train_ms)
    );
    let references: Vec<&str> = demo::PAIRS.iter().map(|(_, ja)| *ja).collect();
    assert_eq!(outcome.translations, references, "greedy translations after training");
    for (name, losses) in [
        ("translator", &outcome.translate_losses),
        ("chars", &outcome.char_losses),
    ] {
        let (first, last) = (losses[0].1, losses[losses.len() - 1].1);
        assert!(
            last.is_finite() && last < first / 4.0,
            "{name}: the loss fell only from {first} to {last}: {losses:?}"
        );
    }
    assert_eq!(outcome.generated.chars().count(), demo::SIZES.generate + 1);
}

/// The page's writer (`state_dict_to_bytes_async`, the one wasm32 has) writes the very
/// bytes of the blocking one.
#[test]
fn the_async_state_dict_writer_writes_the_blocking_writers_bytes() {
    use rand::SeedableRng;
    let ctx = Context::new().expect("a GPU adapter (install mesa-vulkan-drivers for lavapipe)");
    let mut store = tsumugi::graph::ParamStore::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    tsumugi::nn::models::RecurrentModel::char_level_rnn(&ctx, &mut store, &mut rng, 11, 5, 7, 2).expect("a model");
    let blocking = tsumugi::io::state_dict_to_bytes(&store, "model").expect("the blocking writer");
    let async_bytes = demo::block_on(&ctx, tsumugi::io::state_dict_to_bytes_async(&store, "model"))
        .expect("the device answers")
        .expect("the async writer");
    assert_eq!(async_bytes, blocking);
    let mut other = tsumugi::graph::ParamStore::new();
    tsumugi::nn::models::RecurrentModel::char_level_rnn(&ctx, &mut other, &mut rng, 11, 5, 7, 2).expect("a model");
    let options = tsumugi::io::LoadOptions::with_prefix("model");
    tsumugi::io::load_state_dict_from_bytes(&async_bytes, "async bytes", &mut other, &options).expect("they load");
    for ((name, a, _), (_, b, _)) in store.entries().zip(other.entries()) {
        assert_eq!(a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap(), "{name}");
    }
}
