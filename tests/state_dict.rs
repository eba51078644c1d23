//! PyTorch state dicts: tsumugi's files carry PyTorch's names, shapes and dtype and load
//! back bit-identical; prefixes nest models; strict loads list every problem and load
//! nothing; broken or hostile files are clear errors, never panics or huge allocations.

mod common;

use common::ctx;
use common::models::seq2seq;
use rand::rngs::StdRng;
use rand::SeedableRng;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use tsumugi::graph::ParamStore;
use tsumugi::io::{
    load_state_dict, load_state_dict_from_bytes, save_state_dict, state_dict_to_bytes, LoadOptions, Mismatch,
    MAX_HEADER_BYTES,
};
use tsumugi::nn::models::RecurrentModel;
use tsumugi::nn::{embedding, linear, recurrent, EmbeddingConfig, VarBuilder};
use tsumugi::nn::{CellKind, RecurrentConfig};
use tsumugi::Error;

fn folder(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tsumugi-state-dict-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary folder");
    dir
}

/// Every parameter's bits, by name.
fn bits(store: &ParamStore) -> Vec<(String, Vec<u32>)> {
    store
        .entries()
        .map(|(name, value, _)| {
            let values: Vec<f32> = value.to_vec().expect("read a parameter");
            (name.to_string(), values.iter().map(|v| v.to_bits()).collect())
        })
        .collect()
}

/// `(name, dtype, shape)` of every tensor of a safetensors file under `prefix`, with the
/// prefix removed, sorted.
fn layout(bytes: &[u8], prefix: &str) -> Vec<(String, Dtype, Vec<usize>)> {
    let file = SafeTensors::deserialize(bytes).expect("a safetensors file");
    let mut layout: Vec<_> = file
        .iter()
        .filter_map(|(name, view)| {
            let name = name.strip_prefix(prefix)?;
            Some((name.to_string(), view.dtype(), view.shape().to_vec()))
        })
        .collect();
    layout.sort_by(|a, b| a.0.cmp(&b.0));
    layout
}

fn golden(case: &str) -> Vec<u8> {
    let path = format!("{}/tests/golden/{case}.safetensors", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|err| panic!("{path}: {err}"))
}

#[test]
fn saved_weights_have_pytorchs_state_dict_layout_and_load_back_bit_identical() {
    let dir = folder("round-trip");
    // The golden files' param.* tensors are PyTorch's own state_dict() of the same
    // classes: a tsumugi file with exactly that layout is what
    // `model.load_state_dict(safetensors.torch.load_file(path))` accepts.
    type Build = fn(&mut ParamStore, u64);
    let cases: [(&str, Build); 2] = [
        ("seq2seq_attention", |store, seed| {
            seq2seq(common::ctx(), store, seed, (13, 12, 8, 16), true).expect("model");
        }),
        ("bilstm_lengths", |store, seed| {
            RecurrentModel::bidirectional_classifier(
                common::ctx(),
                store,
                &mut StdRng::seed_from_u64(seed),
                CellKind::Lstm,
                (10, 5, 6, 3),
            )
            .expect("model");
        }),
    ];
    for (case, build) in cases {
        let path = dir.join(format!("{case}.safetensors"));
        let mut trained = ParamStore::new();
        build(&mut trained, 1);
        save_state_dict(&path, &trained, "").expect("save");
        let saved = std::fs::read(&path).expect("read the file");
        assert_eq!(
            layout(&saved, ""),
            layout(&golden(case), "param."),
            "{case}: names, dtypes or shapes differ from PyTorch's state_dict"
        );

        let mut fresh = ParamStore::new();
        build(&mut fresh, 2);
        assert_ne!(
            bits(&fresh),
            bits(&trained),
            "{case}: the two seeds gave the same weights"
        );
        let report = load_state_dict(&path, &mut fresh, &LoadOptions::default()).expect("load");
        assert!(report.is_complete(), "{case}: {report:?}");
        assert_eq!(report.loaded.len(), trained.entries().count());
        assert_eq!(bits(&fresh), bits(&trained), "{case}: weights changed on the way");
    }
    // The atomic write leaves no temporary file behind.
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("list the folder")
        .map(|e| e.expect("an entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["bilstm_lengths.safetensors", "seq2seq_attention.safetensors"]);
    std::fs::remove_dir_all(dir).expect("clean up");
}

#[test]
fn a_prefix_loads_a_nested_model_or_one_part_of_a_larger_one() {
    let ctx = ctx();
    let mut model = ParamStore::new();
    RecurrentModel::bidirectional_classifier(
        ctx,
        &mut model,
        &mut StdRng::seed_from_u64(1),
        CellKind::Gru,
        (10, 5, 6, 3),
    )
    .expect("model");
    // Saved as the `model` attribute of a larger PyTorch module.
    let bytes = state_dict_to_bytes(&model, "model").expect("save");
    assert!(layout(&bytes, "").iter().all(|(name, _, _)| name.starts_with("model.")));

    let mut fresh = ParamStore::new();
    RecurrentModel::bidirectional_classifier(
        ctx,
        &mut fresh,
        &mut StdRng::seed_from_u64(2),
        CellKind::Gru,
        (10, 5, 6, 3),
    )
    .expect("model");
    // Without the prefix nothing matches: every parameter is missing, every tensor unexpected.
    match load_state_dict_from_bytes(&bytes, "nested", &mut fresh, &LoadOptions::default()) {
        Err(Error::Format { source_name, message }) => {
            assert_eq!(source_name, "nested");
            assert!(message.contains("missing rnn.weight_hh_l1_reverse"), "{message}");
            assert!(
                message.contains("unexpected model.rnn.weight_hh_l1_reverse"),
                "{message}"
            );
        }
        other => panic!("expected a format error, got {other:?}"),
    }
    for prefix in ["model", "model."] {
        let report = load_state_dict_from_bytes(&bytes, "nested", &mut fresh, &LoadOptions::with_prefix(prefix))
            .expect("load under the prefix");
        assert!(report.is_complete(), "{report:?}");
        assert!(report.loaded.contains(&"model.rnn.bias_ih_l0_reverse".to_string()));
    }
    assert_eq!(bits(&fresh), bits(&model));

    // One part of a whole PyTorch model: the chapter's encoder on its own, its tensors
    // read from `encoder.*` of a Seq2SeqWithAttention file; the decoder's are outside
    // the prefix and ignored.
    let mut encoder = ParamStore::new();
    let mut rng = StdRng::seed_from_u64(3);
    embedding(
        13,
        8,
        EmbeddingConfig { padding_idx: None },
        VarBuilder::with_prefix(ctx, &mut encoder, &mut rng, "embedding"),
    )
    .expect("embedding");
    let config = RecurrentConfig::new(CellKind::Lstm, 8, 16);
    recurrent(config, VarBuilder::with_prefix(ctx, &mut encoder, &mut rng, "lstm")).expect("lstm");
    let report = load_state_dict_from_bytes(
        &golden("seq2seq_attention"),
        "golden",
        &mut encoder,
        &LoadOptions::with_prefix("param.encoder"),
    )
    .expect("load the encoder");
    assert_eq!(
        report.loaded,
        [
            "param.encoder.embedding.weight",
            "param.encoder.lstm.bias_hh_l0",
            "param.encoder.lstm.bias_ih_l0",
            "param.encoder.lstm.weight_hh_l0",
            "param.encoder.lstm.weight_ih_l0",
        ]
    );
}

/// `embedding` [5, 3] and `fc` Linear(3, 2).
fn small_model(seed: u64) -> ParamStore {
    let mut store = ParamStore::new();
    let mut rng = StdRng::seed_from_u64(seed);
    embedding(
        5,
        3,
        EmbeddingConfig { padding_idx: None },
        VarBuilder::with_prefix(ctx(), &mut store, &mut rng, "embedding"),
    )
    .expect("embedding");
    linear(3, 2, VarBuilder::with_prefix(ctx(), &mut store, &mut rng, "fc")).expect("linear");
    store
}

/// A safetensors file of `(name, dtype, shape)` tensors filled with 0x3f bytes.
fn file_of(tensors: &[(&str, Dtype, &[usize])]) -> Vec<u8> {
    let data: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, dtype, shape)| vec![0x3f; shape.iter().product::<usize>() * dtype.bitsize() / 8])
        .collect();
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .zip(&data)
        .map(|((name, dtype, shape), data)| {
            (
                name.to_string(),
                TensorView::new(*dtype, shape.to_vec(), data).expect("a view"),
            )
        })
        .collect();
    safetensors::tensor::serialize(views, None).expect("serialize")
}

#[test]
fn a_strict_load_lists_every_problem_and_loads_nothing_a_lenient_one_loads_what_matches() {
    let bytes = file_of(&[
        ("embedding.weight", Dtype::F32, &[5, 3]),
        ("fc.weight", Dtype::F32, &[2, 4]),
        ("fc.bias", Dtype::F64, &[2]),
        ("fc.extra", Dtype::F32, &[1]),
    ]);
    let mut store = small_model(1);
    let before = bits(&store);
    match load_state_dict_from_bytes(&bytes, "other.safetensors", &mut store, &LoadOptions::default()) {
        Err(Error::Format { source_name, message }) => {
            assert_eq!(source_name, "other.safetensors");
            for problem in [
                "unexpected fc.extra",
                "fc.weight: shape [2, 4], expected [2, 3]",
                "fc.bias: dtype F64, expected F32",
            ] {
                assert!(message.contains(problem), "{problem:?} not in {message}");
            }
        }
        other => panic!("expected a format error, got {other:?}"),
    }
    assert_eq!(bits(&store), before, "a failed strict load changed the model");

    // A missing tensor, in a file that lacks fc.bias.
    let partial = file_of(&[
        ("embedding.weight", Dtype::F32, &[5, 3]),
        ("fc.weight", Dtype::F32, &[2, 3]),
    ]);
    let err = load_state_dict_from_bytes(&partial, "partial", &mut store, &LoadOptions::default()).unwrap_err();
    assert!(err.to_string().contains("missing fc.bias"), "{err}");

    let lenient = LoadOptions::default().non_strict();
    let report = load_state_dict_from_bytes(&bytes, "other.safetensors", &mut store, &lenient).expect("lenient load");
    assert_eq!(report.loaded, ["embedding.weight"]);
    assert!(report.missing.is_empty());
    assert_eq!(report.unexpected, ["fc.extra"]);
    assert_eq!(
        report.mismatched,
        [
            Mismatch {
                name: "fc.bias".into(),
                expected: vec![2],
                found: vec![2],
                dtype: "F64".into(),
            },
            Mismatch {
                name: "fc.weight".into(),
                expected: vec![2, 3],
                found: vec![2, 4],
                dtype: "F32".into(),
            },
        ]
    );
    let after = bits(&store);
    let byte = 0x3f3f3f3fu32;
    assert_eq!(after[0].1, vec![byte; 15], "embedding.weight was not loaded");
    assert_eq!(after[1..], before[1..], "fc changed though it did not match");
}

#[test]
fn other_dtypes_are_reported_not_converted() {
    for dtype in [Dtype::F64, Dtype::F16, Dtype::BF16, Dtype::I64, Dtype::U8] {
        let bytes = file_of(&[
            ("embedding.weight", dtype, &[5, 3]),
            ("fc.weight", Dtype::F32, &[2, 3]),
            ("fc.bias", Dtype::F32, &[2]),
        ]);
        let mut store = small_model(1);
        let err = load_state_dict_from_bytes(&bytes, "typed", &mut store, &LoadOptions::default()).unwrap_err();
        let expected = format!("embedding.weight: dtype {dtype:?}, expected F32");
        assert!(err.to_string().contains(&expected), "{err}");
    }
}

/// The 8-byte little-endian header length, the header, the data.
fn raw(header_len: u64, header: &[u8], data: &[u8]) -> Vec<u8> {
    let mut bytes = header_len.to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(data);
    bytes
}

fn with_header(header: &str, data: &[u8]) -> Vec<u8> {
    raw(header.len() as u64, header.as_bytes(), data)
}

/// A format error that mentions `needle`, or a panic naming the case.
fn assert_format_error(case: &str, bytes: &[u8], needle: &str) {
    let mut store = small_model(1);
    match load_state_dict_from_bytes(bytes, case, &mut store, &LoadOptions::default()) {
        Err(Error::Format { source_name, message }) => {
            assert_eq!(source_name, case);
            assert!(message.contains(needle), "{case}: {needle:?} not in {message:?}");
        }
        other => panic!("{case}: expected a format error, got {other:?}"),
    }
}

#[test]
fn broken_and_hostile_files_are_clear_errors_without_panics_or_allocations_from_the_header() {
    let valid = state_dict_to_bytes(&small_model(1), "").expect("save");
    // Every truncation of a valid file, from empty to one byte short.
    for len in 0..valid.len() {
        let mut store = small_model(1);
        let result = load_state_dict_from_bytes(&valid[..len], "truncated", &mut store, &LoadOptions::default());
        assert!(
            matches!(result, Err(Error::Format { .. })),
            "{len} of {} bytes: {result:?}",
            valid.len()
        );
    }
    assert_format_error("empty", &[], "shorter than the 8-byte header length");
    // Header lengths beyond the file: rejected before anything is parsed or allocated.
    for claimed in [u64::MAX, 1 << 62, 1 << 40, 1000] {
        assert_format_error("long header", &raw(claimed, b"{}", &[]), "the header claims");
    }
    // A header within the file but beyond the cap.
    let big = raw(MAX_HEADER_BYTES + 1, &vec![b' '; MAX_HEADER_BYTES as usize + 1], &[]);
    assert_format_error("big header", &big, "more than the");

    let tensor = |dtype: &str, shape: &str, offsets: &str| {
        format!(r#"{{"fc.bias":{{"dtype":"{dtype}","shape":{shape},"data_offsets":{offsets}}}}}"#)
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "corrupt json",
            with_header(r#"{"fc.bias":{"dtype":"F32","shape":[2]"#, &[0; 8]),
        ),
        ("not utf-8", raw(4, &[0xff, 0xfe, 0xfd, 0xfc], &[])),
        ("unknown dtype", with_header(&tensor("F33", "[2]", "[0,8]"), &[0; 8])),
        ("negative dim", with_header(&tensor("F32", "[-2]", "[0,8]"), &[0; 8])),
        // 2^80 elements: the element count overflows and is caught, never allocated.
        (
            "absurd shape",
            with_header(&tensor("F32", "[1099511627776,1099511627776]", "[0,8]"), &[0; 8]),
        ),
        (
            "overflowing shape",
            with_header(&tensor("F32", "[4294967296,4294967296,4294967296]", "[0,8]"), &[0; 8]),
        ),
        // 2^40 floats claimed with offsets to match, 8 bytes present.
        (
            "huge tensor",
            with_header(&tensor("F32", "[1099511627776]", "[0,4398046511104]"), &[0; 8]),
        ),
        (
            "shape and offsets disagree",
            with_header(&tensor("F32", "[3]", "[0,8]"), &[0; 8]),
        ),
        (
            "offsets past the data",
            with_header(&tensor("F32", "[2]", "[8,16]"), &[0; 8]),
        ),
        (
            "data beyond the tensors",
            with_header(&tensor("F32", "[2]", "[0,8]"), &[0; 12]),
        ),
    ];
    for (case, bytes) in &cases {
        assert_format_error(case, bytes, "not a valid safetensors file");
    }

    // From a file on disk too; a missing file is an I/O error.
    let dir = folder("bad");
    let path = dir.join("truncated.safetensors");
    std::fs::write(&path, &valid[..valid.len() - 3]).expect("write");
    let mut store = small_model(1);
    assert!(matches!(
        load_state_dict(&path, &mut store, &LoadOptions::default()),
        Err(Error::Format { .. })
    ));
    assert!(matches!(
        load_state_dict(&dir.join("missing.safetensors"), &mut store, &LoadOptions::default()),
        Err(Error::Io(_))
    ));
    std::fs::remove_dir_all(dir).expect("clean up");
}
