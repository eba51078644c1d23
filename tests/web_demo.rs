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
