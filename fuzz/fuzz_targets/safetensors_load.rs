//! Any bytes into the safetensors state-dict loader, strict and lenient: `Ok` or a typed
//! error, never a panic, an abort or a header-sized allocation; a failed strict load
//! leaves the store as it was.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rand::rngs::StdRng;
use rand::SeedableRng;
use tsumugi::graph::ParamStore;
use tsumugi::io::{load_state_dict_from_bytes, LoadOptions};
use tsumugi::nn::{Embedding, Linear};
use tsumugi::{Context, Error};

fn ctx() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| Context::new().expect("a GPU adapter (lavapipe will do)"))
}

/// `embedding` [5, 3] and `fc` Linear(3, 2), the model of tests/safetensors_fuzz.rs.
fn small_model() -> ParamStore {
    let mut store = ParamStore::new();
    let mut rng = StdRng::seed_from_u64(1);
    Embedding::new(ctx(), &mut store, &mut rng, "embedding", 5, 3, None).unwrap();
    Linear::new(ctx(), &mut store, &mut rng, "fc", 3, 2, true).unwrap();
    store
}

fn bits(store: &ParamStore) -> Vec<Vec<u32>> {
    store
        .entries()
        .map(|(_, value, _)| value.to_vec::<f32>().unwrap().iter().map(|v| v.to_bits()).collect())
        .collect()
}

fuzz_target!(|bytes: &[u8]| {
    let mut store = small_model();
    let before = bits(&store);
    match load_state_dict_from_bytes(bytes, "fuzz", &mut store, &LoadOptions::default()) {
        Ok(report) => assert!(report.is_complete()),
        Err(Error::Format { .. }) => assert!(bits(&store) == before, "a failed strict load changed the store"),
        Err(other) => panic!("an unexpected error kind: {other:?}"),
    }
    let mut store = small_model();
    match load_state_dict_from_bytes(bytes, "fuzz", &mut store, &LoadOptions::default().non_strict()) {
        Ok(_) | Err(Error::Format { .. }) => {}
        Err(other) => panic!("an unexpected error kind: {other:?}"),
    }
});
