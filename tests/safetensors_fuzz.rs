//! Property tests of the safetensors loaders (the CI side of `fuzz/`): mutated and
//! truncated valid files, headers built from random parts (names, dtypes, huge or
//! negative shapes, offsets), and plain random bytes. Every input gives `Ok` or a typed
//! error, never a panic and never an allocation sized by the header (a huge one would
//! abort the process); a strict load that fails leaves the store as it was.

mod common;

use common::{ctx, prop_config};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;
use tsumugi::graph::ParamStore;
use tsumugi::io::{load_checkpoint, load_state_dict_from_bytes, save_checkpoint, state_dict_to_bytes, LoadOptions};
use tsumugi::nn::{embedding, linear, EmbeddingConfig, VarBuilder};
use tsumugi::Error;

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

fn bits(store: &ParamStore) -> Vec<Vec<u32>> {
    store
        .entries()
        .map(|(_, value, _)| value.to_vec::<f32>().unwrap().iter().map(|v| v.to_bits()).collect())
        .collect()
}

/// A valid state dict of another seed's weights, so that a load that succeeds changes them.
fn valid_file() -> Vec<u8> {
    state_dict_to_bytes(&small_model(2), "").expect("save")
}

/// Loads `bytes` strictly and leniently into fresh stores: a typed result either way, and
/// a failed strict load changes nothing.
fn check_load(bytes: &[u8]) -> Result<(), TestCaseError> {
    let mut store = small_model(1);
    let before = bits(&store);
    match load_state_dict_from_bytes(bytes, "fuzzed", &mut store, &LoadOptions::default()) {
        Ok(report) => prop_assert!(report.is_complete(), "a strict load returned an incomplete report"),
        Err(Error::Format { source_name, .. }) => {
            prop_assert_eq!(source_name, "fuzzed");
            prop_assert!(bits(&store) == before, "a failed strict load changed the store");
        }
        Err(other) => prop_assert!(false, "an unexpected error kind: {other:?}"),
    }
    let mut store = small_model(1);
    let lenient = LoadOptions::default().non_strict();
    match load_state_dict_from_bytes(bytes, "fuzzed", &mut store, &lenient) {
        Ok(_) | Err(Error::Format { .. }) => {}
        Err(other) => prop_assert!(false, "an unexpected error kind: {other:?}"),
    }
    Ok(())
}

/// One edit of a byte string.
#[derive(Clone, Debug)]
enum Edit {
    /// Sets the byte at (position modulo length).
    Set(usize, u8),
    /// Flips one bit.
    Flip(usize, u8),
    /// Cuts the file at (position modulo length + 1).
    Truncate(usize),
    /// Inserts bytes.
    Insert(usize, Vec<u8>),
    /// Removes up to n bytes.
    Remove(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Edit::Set(at, byte)),
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Edit::Flip(at, bit)),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..16)).prop_map(|(at, b)| Edit::Insert(at, b)),
        (any::<usize>(), 1usize..32).prop_map(|(at, n)| Edit::Remove(at, n)),
    ]
}

fn apply(bytes: &mut Vec<u8>, edit: &Edit) {
    let len = bytes.len().max(1);
    match *edit {
        Edit::Set(at, byte) if !bytes.is_empty() => bytes[at % len] = byte,
        Edit::Flip(at, bit) if !bytes.is_empty() => bytes[at % len] ^= 1 << bit,
        Edit::Truncate(at) => bytes.truncate(at % (len + 1)),
        Edit::Insert(at, ref more) => {
            let at = at % (bytes.len() + 1);
            bytes.splice(at..at, more.iter().copied());
        }
        Edit::Remove(at, n) if !bytes.is_empty() => {
            let at = at % len;
            let end = (at + n).min(bytes.len());
            bytes.drain(at..end);
        }
        _ => {}
    }
}

/// Mostly the 8-byte header length and the header, where parsing happens.
fn header_edit() -> impl Strategy<Value = Edit> {
    (0usize..160, any::<u8>()).prop_map(|(at, byte)| Edit::Set(at, byte))
}

/// A header assembled from plausible and hostile parts.
fn header() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        Just("embedding.weight".to_string()),
        Just("fc.weight".to_string()),
        Just("fc.bias".to_string()),
        Just("__metadata__".to_string()),
        "[a-z._]{0,12}",
    ];
    let dtype = prop_oneof![
        Just("F32"),
        Just("F16"),
        Just("BF16"),
        Just("F64"),
        Just("I64"),
        Just("U8"),
        Just("BOOL"),
        Just("F33"),
        Just(""),
    ];
    let dim = prop_oneof![
        0i128..8,
        Just(-1i128),
        Just(1 << 31),
        Just(1 << 40),
        Just(u64::MAX as i128),
        Just(1i128 << 70),
    ];
    let offset = prop_oneof![0i128..200, Just(-8i128), Just(1 << 40), Just(u64::MAX as i128)];
    let tensor = (
        name,
        dtype,
        proptest::collection::vec(dim, 0..4),
        (offset.clone(), offset),
    )
        .prop_map(|(name, dtype, shape, (start, end))| {
            let shape: Vec<String> = shape.iter().map(i128::to_string).collect();
            format!(
                r#""{name}":{{"dtype":"{dtype}","shape":[{}],"data_offsets":[{start},{end}]}}"#,
                shape.join(",")
            )
        });
    proptest::collection::vec(tensor, 0..4).prop_map(|tensors| format!("{{{}}}", tensors.join(",")))
}

proptest! {
    #![proptest_config(prop_config(256))]

    #[test]
    fn mutated_valid_files_load_or_give_a_format_error(edits in proptest::collection::vec(edit(), 1..4)) {
        let mut bytes = valid_file();
        for edit in &edits {
            apply(&mut bytes, edit);
        }
        check_load(&bytes)?;
    }

    #[test]
    fn files_with_a_mutated_header_load_or_give_a_format_error(edits in proptest::collection::vec(header_edit(), 1..4)) {
        let mut bytes = valid_file();
        for edit in &edits {
            apply(&mut bytes, edit);
        }
        check_load(&bytes)?;
    }

    #[test]
    fn random_headers_give_a_format_error_or_load(
        header in header(),
        data in proptest::collection::vec(any::<u8>(), 0..200),
        // The header length as written, or off by a little or a lot.
        skew in prop_oneof![Just(0i64), -4i64..4, Just(i64::MAX / 2)],
    ) {
        let len = (header.len() as i64).saturating_add(skew).max(0) as u64;
        let mut bytes = len.to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(&data);
        check_load(&bytes)?;
    }

    #[test]
    fn random_bytes_give_a_format_error(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        check_load(&bytes)?;
    }
}

proptest! {
    // A checkpoint is read from a file; fewer cases, as each writes one.
    #![proptest_config(prop_config(32))]

    #[test]
    fn mutated_checkpoints_load_or_give_a_format_error_and_change_nothing(edits in proptest::collection::vec(edit(), 1..4)) {
        let dir = std::env::temp_dir().join(format!("tsumugi-fuzz-checkpoint-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("checkpoint.safetensors");
        save_checkpoint(&path, &small_model(2), 7).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        for edit in &edits {
            apply(&mut bytes, edit);
        }
        std::fs::write(&path, &bytes).unwrap();
        let mut store = small_model(1);
        let before = bits(&store);
        let result = load_checkpoint(&path, &mut store);
        std::fs::remove_dir_all(&dir).unwrap();
        match result {
            Ok(_) => {}
            Err(Error::Format { .. }) => prop_assert!(bits(&store) == before, "a failed load changed the store"),
            Err(other) => prop_assert!(false, "an unexpected error kind: {other:?}"),
        }
    }
}
