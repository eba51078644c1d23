//! Property tests of the text loaders and tokenisers (the CI side of `fuzz/`): TSV files
//! and vocabularies from random bytes, with invalid UTF-8 or missing columns at random
//! lines, and random text through the tokenisers. Every input gives `Ok` or a typed error
//! naming the source and the line, never a panic; what parses keeps its content. Host
//! only, no GPU.

mod common;

use common::prop_config;
use proptest::prelude::*;
use tsumugi::text::{char_tokens, parse_tsv, word_tokens, Vocab};
use tsumugi::Error;

/// A cell of a TSV file: no TAB, no line break.
fn cell() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 .,'!?あいうえおアイウエオ日本語ñé]{1,12}"
}

/// A Format error from `name` mentioning `line N`.
fn assert_line_error(
    result: tsumugi::Result<impl std::fmt::Debug>,
    name: &str,
    line: usize,
) -> Result<(), TestCaseError> {
    match result {
        Err(Error::Format { source_name, message }) => {
            prop_assert_eq!(source_name, name);
            prop_assert!(message.contains(&format!("line {line} ")), "{}", message);
        }
        other => prop_assert!(false, "expected a format error at line {line}, got {other:?}"),
    }
    Ok(())
}

proptest! {
    #![proptest_config(prop_config(1024))]

    #[test]
    fn any_bytes_parse_as_tsv_or_give_a_format_error_naming_the_line(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        match parse_tsv("fuzzed.tsv", &bytes) {
            Ok(pairs) => {
                let lines = bytes.split(|&b| b == b'\n').count();
                for pair in pairs {
                    prop_assert!((1..=lines).contains(&pair.line));
                    prop_assert!(!pair.source.contains(['\t', '\n']) && !pair.target.contains(['\t', '\n']));
                }
            }
            Err(Error::Format { source_name, message }) => {
                prop_assert_eq!(source_name, "fuzzed.tsv");
                prop_assert!(message.starts_with("line "), "{}", message);
            }
            Err(other) => prop_assert!(false, "an unexpected error kind: {other:?}"),
        }
    }

    #[test]
    fn tsv_pairs_round_trip_and_a_bad_line_is_named(
        pairs in proptest::collection::vec((cell(), cell()), 1..8),
        crlf in any::<bool>(),
        bad in any::<prop::sample::Index>(),
        invalid_utf8 in any::<bool>(),
    ) {
        let end = if crlf { "\r\n" } else { "\n" };
        let mut text: Vec<u8> = Vec::new();
        for (source, target) in &pairs {
            text.extend_from_slice(format!("{source}\t{target}\t123{end}").as_bytes());
        }
        // Cells that are all spaces make blank lines, which are skipped.
        let kept: Vec<&(String, String)> = pairs.iter().filter(|(s, t)| !format!("{s}\t{t}").trim().is_empty()).collect();
        let parsed = parse_tsv("pairs.tsv", &text).unwrap();
        prop_assert_eq!(parsed.len(), kept.len());
        for (got, want) in parsed.iter().zip(&kept) {
            prop_assert_eq!((&got.source, &got.target), (&want.0, &want.1));
        }
        // Break one line: a byte that is not UTF-8, or no TAB at all.
        let line = bad.index(pairs.len());
        let mut lines: Vec<Vec<u8>> = text.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
        if invalid_utf8 {
            lines[line].insert(1, 0xff);
        } else {
            lines[line] = b"no tab here".to_vec();
        }
        assert_line_error(parse_tsv("pairs.tsv", &lines.join(&b'\n')), "pairs.tsv", line + 1)?;
    }

    #[test]
    fn tokenisers_keep_every_non_space_character_and_never_make_empty_tokens(text in "\\PC{0,40}") {
        let words = word_tokens(&text);
        let chars = char_tokens(&text);
        for token in words.iter().chain(&chars) {
            prop_assert!(!token.is_empty() && !token.chars().any(char::is_whitespace), "{:?}", token);
        }
        let squeezed: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        prop_assert_eq!(chars.concat(), squeezed.clone());
        let lowered: String = squeezed.chars().flat_map(char::to_lowercase).filter(|c| !c.is_whitespace()).collect();
        prop_assert_eq!(words.concat(), lowered);
    }

    #[test]
    fn vocabularies_round_trip_and_any_text_loads_or_gives_a_format_error(
        sentences in proptest::collection::vec("\\PC{0,20}", 0..6),
        garbage in "\\PC{0,60}",
    ) {
        let tokenised: Vec<Vec<String>> = sentences.iter().map(|s| word_tokens(s)).collect();
        let vocab = Vocab::build(&tokenised, 1);
        let back = Vocab::from_text("vocab.txt", &vocab.to_text()).unwrap();
        prop_assert_eq!(&back, &vocab);
        for sentence in &tokenised {
            let ids = vocab.encode(sentence);
            prop_assert!(ids.iter().all(|&id| (id as usize) < vocab.len() && id != Vocab::UNK_ID));
            prop_assert_eq!(vocab.decode(&ids), sentence.iter().map(String::as_str).collect::<Vec<_>>());
        }
        match Vocab::from_text("vocab.txt", &garbage) {
            Ok(v) => prop_assert!(v.len() >= 4),
            Err(Error::Format { source_name, .. }) => prop_assert_eq!(source_name, "vocab.txt"),
            Err(other) => prop_assert!(false, "an unexpected error kind: {other:?}"),
        }
    }
}

#[test]
fn a_vocabulary_file_that_is_not_utf8_or_repeats_a_token_is_a_format_error_naming_where() {
    let dir = std::env::temp_dir().join(format!("tsumugi-text-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("vocab.txt");
    std::fs::write(&path, b"<pad>\n<sos>\n<eos>\n<unk>\nhello\nw\xffrld\n").unwrap();
    let name = path.display().to_string();
    match Vocab::load(&path) {
        Err(Error::Format { source_name, message }) => {
            assert_eq!(source_name, name);
            assert!(message.contains("line 6"), "{message}");
        }
        other => panic!("expected a format error, got {other:?}"),
    }
    std::fs::write(&path, "<pad>\n<sos>\n<eos>\n<unk>\nhello\nworld\nhello\n").unwrap();
    match Vocab::load(&path) {
        Err(Error::Format { message, .. }) => {
            assert!(message.contains("\"hello\" appears twice, at ids 4 and 6"), "{message}")
        }
        other => panic!("expected a format error, got {other:?}"),
    }
    std::fs::write(&path, "hello\n").unwrap();
    assert!(matches!(Vocab::load(&path), Err(Error::Format { .. })));
    std::fs::remove_dir_all(&dir).unwrap();
}
