//! Any bytes into the TSV reader, the vocabulary reader and the tokenisers: `Ok` or a
//! typed error naming the source and the line, never a panic. Host only.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tsumugi::text::{char_tokens, parse_tsv, word_tokens, Vocab};
use tsumugi::Error;

fuzz_target!(|bytes: &[u8]| {
    match parse_tsv("fuzz.tsv", bytes) {
        Ok(pairs) => {
            for pair in pairs {
                assert!(!pair.source.contains('\t') && !pair.target.contains('\t'));
            }
        }
        Err(Error::Format { message, .. }) => assert!(message.starts_with("line "), "{message}"),
        Err(other) => panic!("an unexpected error kind: {other:?}"),
    }
    if let Ok(text) = std::str::from_utf8(bytes) {
        for token in word_tokens(text).iter().chain(&char_tokens(text)) {
            assert!(!token.is_empty() && !token.chars().any(char::is_whitespace));
        }
        match Vocab::from_text("fuzz.vocab", text) {
            Ok(vocab) => assert_eq!(Vocab::from_text("again", &vocab.to_text()).unwrap(), vocab),
            Err(Error::Format { .. }) => {}
            Err(other) => panic!("an unexpected error kind: {other:?}"),
        }
    }
});
