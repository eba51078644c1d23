//! Bad input through the public API: each case gives a typed error that says what and
//! where, never a panic, and leaves what the caller holds as it was. README's "Bad input"
//! table lists these with the tests elsewhere that cover the rest (safetensors files in
//! `tests/state_dict.rs`, hyper-parameters in `tests/optim.rs`, the training guard in
//! `tests/guard.rs`, ...).

mod common;

use std::process::Command;

use common::{ctx, seeded};
use rand::rngs::StdRng;
use rand::SeedableRng;
use tsumugi::graph::{check_step_finite, Graph, ParamStore};
use tsumugi::kernels::cross_entropy::{cross_entropy_check_status, cross_entropy_check_targets, CrossEntropy};
use tsumugi::kernels::elementwise::{add_forward, sum_forward};
use tsumugi::kernels::embedding::upload_ids;
use tsumugi::kernels::Lengths;
use tsumugi::nn::seq2seq::{AttentionKind, Decoder, DecoderConfig, Encoder, EncoderConfig, Seq2Seq};
use tsumugi::nn::{
    embedding, linear, recurrent, CellKind, Embedding, EmbeddingConfig, Linear, Recurrent, RecurrentConfig, VarBuilder,
};
use tsumugi::optim::Adam;
use tsumugi::{Context, DType, Error, Tensor};

/// Every parameter's value, for "nothing changed" checks.
fn values(store: &ParamStore) -> Vec<(String, Vec<f32>)> {
    store
        .entries()
        .map(|(name, value, _)| (name.to_string(), value.to_vec().unwrap()))
        .collect()
}

/// An embedding (V 7, E 8), an LSTM over `lstm_input` features (H 16) and a linear layer
/// from `fc_input` features to 3 classes.
struct Classifier {
    embedding: Embedding,
    lstm: Recurrent,
    fc: Linear,
}

fn classifier(store: &mut ParamStore, lstm_input: usize, fc_input: usize) -> Classifier {
    let ctx = ctx();
    let mut rng = StdRng::seed_from_u64(1);
    Classifier {
        embedding: embedding(
            7,
            8,
            EmbeddingConfig { padding_idx: Some(0) },
            VarBuilder::with_prefix(ctx, store, &mut rng, "embedding"),
        )
        .unwrap(),
        lstm: recurrent(
            RecurrentConfig::new(CellKind::Lstm, lstm_input, 16),
            VarBuilder::with_prefix(ctx, store, &mut rng, "lstm"),
        )
        .unwrap(),
        fc: linear(fc_input, 3, VarBuilder::with_prefix(ctx, store, &mut rng, "fc")).unwrap(),
    }
}

/// One Adam step of `model` on `ids` `[B, T]`; the loss and the gradient norm.
fn train_step(
    store: &mut ParamStore,
    model: &Classifier,
    ids: &Tensor,
    lengths: Option<&Lengths>,
    labels: &Tensor,
    t: u64,
) -> tsumugi::Result<(Tensor, Tensor)> {
    store.zero_grad();
    let mut g = Graph::train(ctx(), store, 0, t);
    let x = model.embedding.forward(&mut g, ids)?;
    let states = model.lstm.forward(&mut g, x, lengths)?;
    let logits = model.fc.forward(&mut g, states.h_n[0])?;
    let loss = g.cross_entropy(logits, labels, &CrossEntropy::default())?;
    let loss_t = g.value(loss).clone();
    g.backward(loss)?;
    let norm = g.clip_grad_norm(1.0)?;
    g.adam_step_guarded(&Adam::default(), t, &norm)?;
    g.submit();
    Ok((loss_t, norm))
}

#[test]
fn a_token_id_at_or_above_the_vocabulary_is_an_error_naming_position_and_id() {
    let ctx = ctx();
    let err = upload_ids(ctx, &[1, 2, 3, 6, 7, 1], &[2, 3], 7).unwrap_err();
    match &err {
        Error::InvalidArgument { message } => {
            assert!(message.contains("id 7") && message.contains("[1, 1]"), "{message}");
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    // u32::MAX (a -1 from elsewhere) too.
    assert!(upload_ids(ctx, &[u32::MAX], &[1, 1], 7).is_err());
}

#[test]
fn lengths_of_zero_negative_or_beyond_t_and_an_empty_batch_are_errors_naming_the_row() {
    let ctx = ctx();
    for (lengths, row) in [
        (vec![3, 0, 2], "lengths[1]"),
        // A negative length cast to u32 (a -1 from C or Python) is far beyond T.
        (vec![3, -1i32 as u32], "lengths[1]"),
        (vec![4, 2], "lengths[0]"),
    ] {
        match Lengths::new(ctx, &lengths, 3) {
            Err(Error::InvalidArgument { message }) => assert!(message.contains(row), "{message}"),
            other => panic!("{lengths:?}: expected InvalidArgument, got {other:?}"),
        }
    }
    match Lengths::new(ctx, &[], 3) {
        Err(Error::InvalidArgument { message }) => assert!(message.contains("empty batch"), "{message}"),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    // Valid lengths for another batch or another T than the input's.
    let mut store = ParamStore::new();
    let model = classifier(&mut store, 8, 16);
    let ids = Tensor::from_slice(ctx, &[1u32, 2, 3, 4, 5, 6], &[2, 3]).unwrap();
    let labels = Tensor::from_slice(ctx, &[0u32, 1], &[2]).unwrap();
    let before = values(&store);
    for (lengths, steps) in [(vec![3, 2, 1], 3), (vec![3, 2], 4)] {
        let lengths = Lengths::new(ctx, &lengths, steps).unwrap();
        let err = train_step(&mut store, &model, &ids, Some(&lengths), &labels, 1).unwrap_err();
        assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    }
    assert_eq!(values(&store), before);
}

#[test]
fn an_empty_batch_is_an_error_not_a_panic() {
    let ctx = ctx();
    let mut store = ParamStore::new();
    let model = classifier(&mut store, 8, 16);
    let ids = Tensor::from_slice::<u32>(ctx, &[], &[0, 3]).unwrap();
    let labels = Tensor::from_slice::<u32>(ctx, &[], &[0]).unwrap();
    let before = values(&store);
    let err = train_step(&mut store, &model, &ids, None, &labels, 1).unwrap_err();
    assert!(
        matches!(&err, Error::ShapeMismatch { tensor, found, .. } if tensor == "embedding: ids" && found == &vec![0, 3]),
        "{err}"
    );
    // Empty inputs straight into a recurrent layer and a linear layer.
    let mut g = Graph::train(ctx, &mut store, 0, 1);
    let x = Tensor::from_slice::<f32>(ctx, &[], &[0, 3, 8]).unwrap();
    let x = g.input(&x);
    let err = model.lstm.forward(&mut g, x, None).unwrap_err();
    assert!(
        matches!(err, Error::ShapeMismatch { .. } | Error::InvalidArgument { .. }),
        "{err}"
    );
    let x = Tensor::from_slice::<f32>(ctx, &[], &[0, 16]).unwrap();
    let x = g.input(&x);
    let err = model.fc.forward(&mut g, x).unwrap_err();
    assert!(
        matches!(err, Error::ShapeMismatch { .. } | Error::InvalidArgument { .. }),
        "{err}"
    );
    drop(g);
    assert_eq!(values(&store), before);
}

#[test]
fn mismatched_shapes_between_chained_modules_are_shape_errors_that_change_nothing() {
    let ctx = ctx();
    let ids = Tensor::from_slice(ctx, &[1u32, 2, 3, 4, 5, 6], &[2, 3]).unwrap();
    let labels = Tensor::from_slice(ctx, &[0u32, 1], &[2]).unwrap();
    // Embedding E 8 into an LSTM for 6 features; LSTM H 16 into a linear layer for 12.
    for (lstm_input, fc_input, module, want) in [
        (6, 16, "lstm: input", [2, 3, 8].as_slice()),
        (8, 12, "fc: input", &[2, 16]),
    ] {
        let mut store = ParamStore::new();
        let model = classifier(&mut store, lstm_input, fc_input);
        let before = values(&store);
        let err = train_step(&mut store, &model, &ids, None, &labels, 1).unwrap_err();
        assert!(
            matches!(&err, Error::ShapeMismatch { tensor, found, .. } if tensor == module && found == want),
            "{err}"
        );
        assert_eq!(values(&store), before, "a failed step changed the weights");
    }
    // Labels for another batch.
    let mut store = ParamStore::new();
    let model = classifier(&mut store, 8, 16);
    let three = Tensor::from_slice(ctx, &[0u32, 1, 2], &[3]).unwrap();
    let err = train_step(&mut store, &model, &ids, None, &three, 1).unwrap_err();
    assert!(
        matches!(&err, Error::ShapeMismatch { tensor, .. } if tensor.contains("targets")),
        "{err}"
    );
    // The store is still usable: a good step trains.
    let before = values(&store);
    let (loss, _) = train_step(&mut store, &model, &ids, None, &labels, 1).unwrap();
    assert!(loss.to_vec::<f32>().unwrap()[0].is_finite());
    assert_ne!(values(&store), before);

    // An encoder and a decoder of different hidden sizes.
    let mut store = ParamStore::new();
    let mut rng = StdRng::seed_from_u64(2);
    let model = Seq2Seq {
        encoder: Encoder::build(
            EncoderConfig {
                vocab: 7,
                embed: 8,
                hidden: 16,
                padding_idx: Some(0),
            },
            VarBuilder::with_prefix(ctx, &mut store, &mut rng, "encoder"),
        )
        .unwrap(),
        decoder: Decoder::build(
            DecoderConfig {
                vocab: 9,
                embed: 8,
                hidden: 12,
                padding_idx: Some(0),
                attention: Some(AttentionKind::Bahdanau),
            },
            VarBuilder::with_prefix(ctx, &mut store, &mut rng, "decoder"),
        )
        .unwrap(),
    };
    let sos = Tensor::from_slice(ctx, &[1u32, 1], &[2, 1]).unwrap();
    let mut g = Graph::eval(ctx, &mut store);
    let err = model.greedy(&mut g, &ids, None, &sos, 3).unwrap_err();
    assert!(
        matches!(&err, Error::ShapeMismatch { tensor, .. } if tensor.starts_with("decoder.")),
        "{err}"
    );
}

#[test]
fn nan_or_inf_in_a_weight_propagates_like_pytorch_and_the_guard_and_check_finite_catch_it() {
    let ctx = ctx();
    let mut store = ParamStore::new();
    let model = classifier(&mut store, 8, 16);
    let ids = Tensor::from_slice(ctx, &[1u32, 2, 3, 4, 5, 6], &[2, 3]).unwrap();
    let labels = Tensor::from_slice(ctx, &[0u32, 1], &[2]).unwrap();
    store.check_finite().unwrap();
    let fc_weight = store.find("fc.weight").unwrap();
    let mut poisoned = store.value(fc_weight).to_vec::<f32>().unwrap();
    poisoned[16 + 5] = f32::INFINITY;
    store.value(fc_weight).write(&poisoned).unwrap();
    match store.check_finite() {
        Err(Error::NonFiniteValue { tensor, index, value }) => {
            assert_eq!(
                (tensor.as_str(), index, value),
                ("fc.weight", vec![1, 5], f32::INFINITY)
            );
        }
        other => panic!("expected NonFiniteValue, got {other:?}"),
    }
    let before = values(&store);
    let (loss, norm) = train_step(&mut store, &model, &ids, None, &labels, 1).unwrap();
    let (loss, norm) = (loss.to_vec::<f32>().unwrap()[0], norm.to_vec::<f32>().unwrap()[0]);
    let err = check_step_finite(1, loss, norm).unwrap_err();
    assert!(matches!(err, Error::NonFinite { step: 1, .. }), "{err}");
    // The guarded step left every weight as it was (Inf included).
    let after = values(&store);
    assert_eq!(before.len(), after.len());
    for ((name, a), (_, b)) in before.iter().zip(&after) {
        let same = a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "{name} changed");
    }
    // An input tensor can be checked the same way.
    let mut x = seeded(3, 12);
    x[7] = f32::NAN;
    let x = Tensor::from_slice(ctx, &x, &[3, 4]).unwrap();
    assert!(matches!(x.check_finite("x"), Err(Error::NonFiniteValue { ref index, .. }) if index == &vec![1, 3]));
}

#[test]
fn a_bad_learning_rate_is_an_error_before_any_weight_changes() {
    let ctx = ctx();
    let mut store = ParamStore::new();
    let model = classifier(&mut store, 8, 16);
    let ids = Tensor::from_slice(ctx, &[1u32, 2, 3, 4, 5, 6], &[2, 3]).unwrap();
    let labels = Tensor::from_slice(ctx, &[0u32, 1], &[2]).unwrap();
    let before = values(&store);
    for lr in [0.0, -1e-3, f64::NAN, f64::INFINITY] {
        store.zero_grad();
        let mut g = Graph::train(ctx, &mut store, 0, 1);
        let x = model.embedding.forward(&mut g, &ids).unwrap();
        let h = model.lstm.forward(&mut g, x, None).unwrap().h_n[0];
        let logits = model.fc.forward(&mut g, h).unwrap();
        let loss = g.cross_entropy(logits, &labels, &CrossEntropy::default()).unwrap();
        g.backward(loss).unwrap();
        let err = g.adam_step(&Adam { lr, ..Adam::default() }, 1).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "lr {lr}: {err}");
        drop(g);
        assert_eq!(values(&store), before, "lr {lr}");
    }
}

#[test]
fn a_tensor_beyond_the_largest_storage_binding_is_a_device_limit_error() {
    let ctx = ctx();
    let limits = ctx.limits();
    let binding = limits.max_storage_buffer_binding_size;
    // A buffer the device can hold but a kernel cannot bind whole (128 MiB on lavapipe
    // and llvmpipe); skipped where the two limits are equal (SwiftShader: 1 GiB each) or
    // the binding is too large to allocate past in a test.
    if limits.max_buffer_size <= binding || binding > 512 << 20 {
        eprintln!(
            "skipped on {}: no buffer exceeds one storage binding here (max_buffer_size {}, \
             max_storage_buffer_binding_size {binding}; the test allocates past the binding only up to 512 MiB)",
            ctx.adapter(),
            limits.max_buffer_size
        );
        return;
    }
    let x = Tensor::zeros(ctx, &[(binding / 4) as usize + 64], DType::F32).unwrap();
    let y = Tensor::zeros(ctx, &[1], DType::F32).unwrap();
    let mut encoder = ctx.create_encoder();
    let err = sum_forward(ctx, &mut encoder, &x, &y).unwrap_err();
    match &err {
        Error::DeviceLimit {
            tensor,
            limit,
            needed,
            allowed,
        } => {
            assert_eq!((tensor.as_str(), *limit), ("sum: x", "max_storage_buffer_binding_size"));
            assert!(needed > allowed);
        }
        other => panic!("expected DeviceLimit, got {other:?}"),
    }
}

/// `Err(DeviceLost)` expected; the name of the call for the message.
fn assert_lost<T: std::fmt::Debug>(what: &str, result: tsumugi::Result<T>) {
    match result {
        Err(Error::DeviceLost { .. }) => {}
        other => panic!("{what} after the device was lost: expected DeviceLost, got {other:?}"),
    }
}

#[test]
fn a_lost_device_gives_device_lost_errors_not_panics() {
    // A context of its own: the shared one must live on.
    let ctx = Context::new().unwrap();
    let mut store = ParamStore::new();
    let mut rng = StdRng::seed_from_u64(1);
    let fc = linear(4, 3, VarBuilder::with_prefix(&ctx, &mut store, &mut rng, "fc")).unwrap();
    let x = Tensor::from_slice(&ctx, &seeded(1, 8), &[2, 4]).unwrap();
    let y = Tensor::zeros(&ctx, &[2, 4], DType::F32).unwrap();
    ctx.wait_idle_blocking().unwrap();

    // What a driver reset does; `destroy` is how wgpu lets a test do it.
    ctx.device().destroy();
    // An upload may be accepted before wgpu has told anyone (uploads do not wait), but
    // the first read, wait or check after it says the device is lost.
    let _ = Tensor::from_slice(&ctx, &[1.0f32], &[1]);
    assert_lost("to_vec", x.to_vec::<f32>());
    assert_lost("check_device", ctx.check_device());
    assert_lost("wait_idle_blocking", ctx.wait_idle_blocking());
    assert_lost("from_slice", Tensor::from_slice(&ctx, &[1.0f32], &[1]));
    assert_lost("zeros", Tensor::zeros(&ctx, &[4], DType::F32));
    let mut encoder = ctx.create_encoder();
    assert_lost("add_forward", add_forward(&ctx, &mut encoder, &x, &x, &y));
    drop(encoder);
    let mut g = Graph::eval(&ctx, &mut store);
    let input = g.input(&x);
    assert_lost("Linear::forward", fc.forward(&mut g, input));
    drop(g);
    let path = std::env::temp_dir().join(format!("tsumugi-lost-{}.safetensors", std::process::id()));
    assert_lost("save_checkpoint", tsumugi::io::save_checkpoint(&path, &store, 1));
    assert!(!path.exists(), "a checkpoint was written from a lost device");
}

const OOM_CHILD: &str = "TSUMUGI_BAD_INPUT_OOM_CHILD";

/// Virtual memory of this process in bytes (`/proc/self/statm`).
fn virtual_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm
        .split_whitespace()
        .next()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0)
        * 4096
}

#[test]
fn running_out_of_gpu_memory_is_a_typed_error_not_a_panic() {
    // A software GPU's memory is the process's, so the child process caps its address
    // space (RLIMIT_AS, through the shell's ulimit) a little above what it uses after
    // making its context, then allocates 256 MiB tensors until the driver refuses (large,
    // so that the GPU allocation fails long before a small host allocation would).
    if std::env::var(OOM_CHILD).is_ok() {
        let ctx = Context::new().unwrap();
        let mut held = Vec::new();
        for i in 0..64 {
            match Tensor::zeros(&ctx, &[64 << 20], DType::F32) {
                Ok(t) => held.push(t),
                Err(err @ (Error::OutOfMemory { .. } | Error::DeviceLost { .. })) => {
                    println!("OOM-CHILD typed error after {i} tensors: {err:?}");
                    return;
                }
                Err(other) => panic!("an unexpected error: {other:?}"),
            }
        }
        println!("OOM-CHILD no error after 16 GiB");
        return;
    }
    if !cfg!(target_os = "linux") || ctx().adapter().device_type != wgpu::DeviceType::Cpu {
        eprintln!("skipped: needs a software adapter on Linux, whose memory an rlimit caps");
        return;
    }
    // The child's context and driver reserve address space as ours did; 1 GiB on top.
    let cap_kib = (virtual_bytes() + (1 << 30)) / 1024;
    let exe = std::env::current_exe().unwrap();
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!(
            r#"ulimit -v {cap_kib} && exec "$0" --exact running_out_of_gpu_memory_is_a_typed_error_not_a_panic --nocapture"#
        ))
        .arg(exe)
        .env(OOM_CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("OOM-CHILD typed error"),
        "the child (address space capped at {cap_kib} KiB) did not end with a typed error: {:?}\n{stdout}\n{stderr}",
        output.status
    );
    eprintln!("{}", stdout.lines().find(|l| l.contains("OOM-CHILD")).unwrap_or(""));
}

#[test]
fn a_parameter_handle_of_another_store_is_an_error_not_a_panic_or_another_parameter() {
    let ctx = ctx();
    let mut rng = StdRng::seed_from_u64(1);
    let (mut ours, mut theirs) = (ParamStore::new(), ParamStore::new());
    let fc = linear(3, 2, VarBuilder::with_prefix(ctx, &mut ours, &mut rng, "fc")).unwrap();
    // The same index exists in the other store: it must not resolve to its parameter.
    linear(3, 2, VarBuilder::with_prefix(ctx, &mut theirs, &mut rng, "other")).unwrap();
    let x = Tensor::from_slice(ctx, &seeded(1, 6), &[2, 3]).unwrap();
    let mut g = Graph::train(ctx, &mut theirs, 0, 1);
    let input = g.input(&x);
    let err = fc.forward(&mut g, input).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    assert!(
        err.to_string().contains("belongs to the ParamStore that made it"),
        "{err}"
    );
    let err = g.param(fc.weight).unwrap_err();
    assert!(err.to_string().contains("store #"), "{err}");
}

#[test]
fn modules_larger_than_the_device_allows_are_an_error_before_any_host_allocation() {
    let ctx = ctx();
    let mut store = ParamStore::new();
    let mut rng = StdRng::seed_from_u64(1);
    // 4e8 x 128 floats (205 GB): the process aborted in nn::uniform before the check.
    let config = RecurrentConfig::new(CellKind::Lstm, 128, 100_000_000);
    let err = recurrent(config, VarBuilder::with_prefix(ctx, &mut store, &mut rng, "lstm")).unwrap_err();
    assert!(
        matches!(&err, Error::DeviceLimit { tensor, .. } if tensor.starts_with("lstm.weight_ih_l0")),
        "{err}"
    );
    let err = linear(
        1 << 20,
        1 << 20,
        VarBuilder::with_prefix(ctx, &mut store, &mut rng, "fc"),
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::DeviceLimit { tensor, .. } if tensor.starts_with("fc.weight")),
        "{err}"
    );
    let err = embedding(
        usize::MAX / 2,
        4,
        EmbeddingConfig { padding_idx: None },
        VarBuilder::with_prefix(ctx, &mut store, &mut rng, "emb"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("emb.weight"), "{err}");
    assert_eq!(store.count().0, 0, "a parameter was registered");
}

#[test]
fn cross_entropy_through_the_graph_with_a_target_beyond_the_vocabulary_is_an_error() {
    let ctx = ctx();
    let mut store = ParamStore::new();
    let mut rng = StdRng::seed_from_u64(1);
    let fc = linear(3, 4, VarBuilder::with_prefix(ctx, &mut store, &mut rng, "fc")).unwrap();
    let x = Tensor::from_slice(ctx, &seeded(2, 6), &[2, 3]).unwrap();
    let targets = Tensor::from_slice(ctx, &[1u32, 4], &[2]).unwrap();
    let mut g = Graph::train(ctx, &mut store, 0, 1);
    let input = g.input(&x);
    let logits = fc.forward(&mut g, input).unwrap();
    let loss = g.cross_entropy(logits, &targets, &CrossEntropy::default()).unwrap();
    let loss = g.value(loss).clone();
    let status = g.target_errors().expect("a cross-entropy ran").clone();
    g.submit();
    // Targets on the GPU are not read back inside the step: the loss is NaN (which the
    // training guard stops on) and the status names the row.
    assert!(loss.to_vec::<f32>().unwrap()[0].is_nan());
    let err = cross_entropy_check_status(&status.to_vec::<u32>().unwrap()).unwrap_err();
    assert!(err.to_string().contains("targets[1] is >= V"), "{err}");
    // From the host, before any upload: the check names the position and V.
    let err = cross_entropy_check_targets(&CrossEntropy::default(), &[1, 4], 4).unwrap_err();
    assert!(err.to_string().contains('4'), "{err}");
}
