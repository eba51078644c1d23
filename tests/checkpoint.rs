//! Checkpoints: resuming from one gives exactly the losses of an uninterrupted run; loads
//! are strict and bad files are clear errors.

mod common;

use common::ctx;
use rand::rngs::StdRng;
use rand::SeedableRng;
use tsumugi::graph::{Graph, ParamStore};
use tsumugi::io::{
    checkpoint_metadata_from_bytes, load_checkpoint, load_checkpoint_from_bytes, read_checkpoint,
    read_checkpoint_metadata, save_checkpoint, save_checkpoint_with, Metadata,
};
use tsumugi::loss::CrossEntropy;
use tsumugi::nn::{embedding, linear, recurrent, EmbeddingConfig, VarBuilder};
use tsumugi::nn::{CellKind, Embedding, Linear, Recurrent, RecurrentConfig};
use tsumugi::optim::Adam;
use tsumugi::{Context, Error, Tensor};

struct Model {
    embedding: Embedding,
    lstm: Recurrent,
    fc: Linear,
}

fn model(ctx: &Context, store: &mut ParamStore, seed: u64, hidden: usize) -> Model {
    let mut rng = StdRng::seed_from_u64(seed);
    let config = RecurrentConfig {
        num_layers: 2,
        dropout: 0.2,
        ..RecurrentConfig::new(CellKind::Lstm, 8, hidden)
    };
    Model {
        embedding: embedding(
            10,
            8,
            EmbeddingConfig { padding_idx: Some(0) },
            VarBuilder::with_prefix(ctx, store, &mut rng, "embedding"),
        )
        .unwrap(),
        lstm: recurrent(config, VarBuilder::with_prefix(ctx, store, &mut rng, "lstm")).unwrap(),
        fc: linear(hidden, 2, VarBuilder::with_prefix(ctx, store, &mut rng, "fc")).unwrap(),
    }
}

/// One training step t; returns the loss's bits.
fn step(ctx: &Context, store: &mut ParamStore, m: &Model, t: u64) -> u32 {
    let ids = Tensor::from_slice(ctx, &[1u32, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3], &[3, 4]).unwrap();
    let labels = Tensor::from_slice(ctx, &[0u32, 1, 0], &[3]).unwrap();
    store.zero_grad();
    let mut g = Graph::train(ctx, store, 9, t);
    let x = m.embedding.forward(&mut g, &ids).unwrap();
    let h = m.lstm.forward(&mut g, x, None).unwrap().h_n[1];
    let logits = m.fc.forward(&mut g, h).unwrap();
    let loss = g.cross_entropy(logits, &labels, &CrossEntropy::default()).unwrap();
    let loss_t = g.value(loss).clone();
    g.backward(loss).unwrap();
    g.adam_step(&Adam::default(), t).unwrap();
    g.submit();
    loss_t.to_vec::<f32>().unwrap()[0].to_bits()
}

fn folder(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tsumugi-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn resuming_from_a_checkpoint_gives_the_same_losses_as_an_uninterrupted_run() {
    let ctx = ctx();
    let dir = folder("resume");
    let path = dir.join("model.safetensors");
    let mut store = ParamStore::new();
    let m = model(ctx, &mut store, 1, 12);
    for t in 1..=3 {
        step(ctx, &mut store, &m, t);
    }
    save_checkpoint(&path, &store, 3).unwrap();
    let uninterrupted: Vec<u32> = (4..=6).map(|t| step(ctx, &mut store, &m, t)).collect();

    // A fresh model with other initial weights, then the checkpoint.
    let mut resumed_store = ParamStore::new();
    let resumed = model(ctx, &mut resumed_store, 2, 12);
    let step_count = load_checkpoint(&path, &mut resumed_store).unwrap();
    assert_eq!(step_count, 3);
    let resumed: Vec<u32> = (4..=6).map(|t| step(ctx, &mut resumed_store, &resumed, t)).collect();
    assert_eq!(resumed, uninterrupted, "losses after resuming differ");
    // The atomic write leaves no temporary file behind.
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["model.safetensors".to_string()]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn loading_a_checkpoint_of_another_model_or_a_broken_file_is_a_clear_error() {
    let ctx = ctx();
    let dir = folder("strict");
    let path = dir.join("model.safetensors");
    let mut store = ParamStore::new();
    model(ctx, &mut store, 1, 12);
    save_checkpoint(&path, &store, 0).unwrap();

    // Another hidden size: every LSTM and fc tensor is mis-shaped; one error lists them.
    let mut other = ParamStore::new();
    model(ctx, &mut other, 1, 6);
    match load_checkpoint(&path, &mut other) {
        Err(Error::Format { message, .. }) => {
            assert!(
                message.contains("lstm.weight_hh_l1: shape [48, 12], expected [24, 6]"),
                "{message}"
            );
            assert!(message.contains("fc.weight"), "{message}");
        }
        other => panic!("expected a format error, got {other:?}"),
    }
    // Truncated, and garbage: errors, not panics.
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    assert!(matches!(load_checkpoint(&path, &mut store), Err(Error::Format { .. })));
    std::fs::write(&path, [0xffu8; 64]).unwrap();
    assert!(matches!(load_checkpoint(&path, &mut store), Err(Error::Format { .. })));
    assert!(matches!(
        load_checkpoint(&dir.join("missing.safetensors"), &mut store),
        Err(Error::Io(_))
    ));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_checkpoint_carries_its_metadata_in_the_same_file_and_loads_from_bytes() {
    let ctx = ctx();
    let dir = folder("checkpoint-metadata");
    let path = dir.join("model.safetensors");
    let mut store = ParamStore::new();
    let m = model(ctx, &mut store, 1, 6);
    step(ctx, &mut store, &m, 1);
    let metadata = Metadata::from([
        ("hidden".to_string(), "6".to_string()),
        ("epoch".to_string(), "3".to_string()),
        ("vocab".to_string(), "<pad>\n<unk>\nhello\n".to_string()),
    ]);
    save_checkpoint_with(&path, &store, 7, &metadata).unwrap();
    assert_eq!(read_checkpoint_metadata(&path).unwrap(), (7, metadata.clone()));
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(checkpoint_metadata_from_bytes("model", &bytes).unwrap(), (7, metadata));
    // From bytes, as a browser loads it: the same weights and optimizer state.
    let mut restored = ParamStore::new();
    model(ctx, &mut restored, 2, 6);
    assert_eq!(load_checkpoint_from_bytes("model", &bytes, &mut restored).unwrap(), 7);
    let values = |s: &ParamStore| -> Vec<(String, Vec<f32>, Vec<f32>)> {
        s.entries()
            .map(|(n, v, st)| (n.to_string(), v.to_vec().unwrap(), st.unwrap().1.to_vec().unwrap()))
            .collect()
    };
    assert_eq!(values(&restored), values(&store));
    // Read once: the metadata and the weights of one save.
    let file = read_checkpoint(&path).unwrap();
    assert_eq!(file.metadata().unwrap().1["epoch"], "3");
    let mut once = ParamStore::new();
    model(ctx, &mut once, 4, 6);
    assert_eq!(file.load_into(&mut once).unwrap(), 7);
    assert_eq!(values(&once), values(&store));
    // Keys tsumugi writes itself are refused.
    let reserved = Metadata::from([("tsumugi.step".to_string(), "1".to_string())]);
    let err = save_checkpoint_with(&path, &store, 1, &reserved).unwrap_err();
    assert!(err.to_string().contains("tsumugi.step"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_checkpoint_with_a_non_finite_weight_is_refused_and_the_good_file_stays() {
    let ctx = ctx();
    let dir = folder("checkpoint-nonfinite");
    let path = dir.join("model.safetensors");
    let mut store = ParamStore::new();
    let m = model(ctx, &mut store, 1, 5);
    save_checkpoint(&path, &store, 1).unwrap();
    let good = std::fs::read(&path).unwrap();
    let mut w = store.value(m.fc.weight).to_vec::<f32>().unwrap();
    w[3] = f32::NAN;
    store.value(m.fc.weight).write(&w).unwrap();
    let err = save_checkpoint(&path, &store, 2).unwrap_err();
    assert!(
        matches!(&err, Error::NonFiniteValue { tensor, index, .. } if tensor == "fc.weight" && index == &vec![0, 3]),
        "{err}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), good, "the good checkpoint was replaced");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn io_errors_name_the_path() {
    let ctx = ctx();
    let dir = folder("checkpoint-paths");
    let mut store = ParamStore::new();
    model(ctx, &mut store, 1, 5);
    let missing = dir.join("nowhere").join("model.safetensors");
    for err in [
        load_checkpoint(&missing, &mut store).unwrap_err(),
        save_checkpoint(&missing, &store, 1).unwrap_err(),
        save_checkpoint(&dir, &store, 1).unwrap_err(),
        read_checkpoint_metadata(&missing).unwrap_err(),
    ] {
        let message = err.to_string();
        assert!(message.contains(&*dir.to_string_lossy()), "{message}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}
