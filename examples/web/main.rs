//! tsumugi in a browser: this page trains the chapter's toy translator (seq2seq with
//! Bahdanau attention) and a small character LSTM on the browser's WebGPU device, shows
//! the loss as it goes, then the greedy translations and generated text, and logs one
//! result line (`TSUMUGI_WEB_RESULT {json}`) to the console. The training is `demo.rs`,
//! which the native test `tests/web_demo.rs` runs with the same seeds and sizes.
//!
//! Build and serve (see the README, "In the browser"):
//! ```text
//! cargo build --release --example web --target wasm32-unknown-unknown
//! wasm-bindgen --target web --out-dir examples/web/pkg \
//!     target/wasm32-unknown-unknown/release/examples/web.wasm
//! python3 -m http.server --directory examples/web 8000   # open http://127.0.0.1:8000
//! ```
//! Natively this example is empty: it exists only for wasm32.
#![cfg(target_arch = "wasm32")]

mod demo;

use tsumugi::{AdapterOptions, Context};
use wasm_bindgen::prelude::*;

/// Milliseconds since the page started.
fn now() -> f64 {
    web_sys::window()
        .and_then(|window| window.performance())
        .map_or(0.0, |performance| performance.now())
}

/// Sets the text of the element with id `id` (the page has them all; a missing one is
/// simply not updated).
fn show(id: &str, text: &str) {
    let element = web_sys::window()
        .and_then(|window| window.document())
        .and_then(|document| document.get_element_by_id(id));
    if let Some(element) = element {
        element.set_text_content(Some(text));
    }
}

/// Trains, generates, shows everything on the page and returns the result line (also
/// logged to the console).
#[wasm_bindgen]
pub async fn run() -> Result<String, JsValue> {
    let to_js = |err: tsumugi::Error| JsValue::from_str(&err.to_string());
    show("status", "asking the browser for a WebGPU device");
    let ctx = Context::new_async(&AdapterOptions::default()).await.map_err(to_js)?;
    let adapter = ctx.adapter().to_string();
    show("adapter", &adapter);
    show("status", "training");
    let start = now();
    let mut log = String::new();
    let outcome = demo::run(&ctx, &demo::SIZES, &mut |p| {
        let line = format!("{} step {}/{}: loss {:.4}", p.model, p.step, p.steps, p.loss);
        show(&format!("{}-loss", p.model), &line);
        log.push_str(&line);
        log.push('\n');
        show("log", &log);
    })
    .await
    .map_err(to_js)?;
    let train_ms = now() - start;
    let translations: Vec<String> = demo::PAIRS
        .iter()
        .zip(&outcome.translations)
        .map(|((en, ja), got)| format!("{en} -> {got}   (reference: {ja})"))
        .collect();
    let heading = format!(
        "greedy translations by a copy loaded from the trained model's state dict ({} bytes):",
        outcome.state_dict_bytes
    );
    show("translations", &format!("{heading}\n{}", translations.join("\n")));
    show("generated", &outcome.generated);
    show("status", &format!("done in {:.1} s", train_ms / 1e3));
    let line = format!("TSUMUGI_WEB_RESULT {}", outcome.to_json(&adapter, train_ms));
    web_sys::console::log_1(&JsValue::from_str(&line));
    Ok(line)
}
