//! The chapter's own data, as its listings write it, and the small vocabulary helpers its
//! listings build inline. `tests/graph.rs` and `tests/chapter_params.rs` include this file
//! too (`#[path]`), so the chapter's sentences live in one place.
#![allow(dead_code)] // each includer uses its own part

/// 2.1: the text the CharRNN learns.
pub const HELLO: &str = "hello world";

/// 2.2: the eight movie reviews of SentimentLSTM and their labels (1 positive, 0 negative).
pub const SENTIMENT: [(&str, u32); 8] = [
    ("this movie is great", 1),
    ("i love this film", 1),
    ("amazing acting and story", 1),
    ("best movie ever", 1),
    ("this is terrible", 0),
    ("worst movie i have seen", 0),
    ("i hate this film", 0),
    ("boring and dull", 0),
];

/// 2.2: the sentences the trained SentimentLSTM classifies ("the" is not in its vocabulary).
pub const SENTIMENT_TEST: [&str; 2] = ["i love this amazing movie", "this is the worst film"];

/// 2.2: `encode_sentence`'s max_len.
pub const SENTIMENT_MAX_LEN: usize = 10;

/// 2.3: the English-to-Japanese pairs, the Japanese split into words. The chapter's text
/// lost its angle brackets (`" 私 は 学生 です "`); the listing wrapped each target in
/// `<sos>` and `<eos>`, which [`ja_tokens`] puts back.
pub const TRANSLATION: [(&str, &str); 4] = [
    ("i am a student", "私 は 学生 です"),
    ("he is a teacher", "彼 は 教師 です"),
    ("she likes cats", "彼女 は 猫 が 好き です"),
    ("we study english", "私たち は 英語 を 勉強 します"),
];

/// 2.3: `en_max_len` and `ja_max_len`.
pub const EN_MAX_LEN: usize = 5;
pub const JA_MAX_LEN: usize = 7;

/// The start and end tokens of the Japanese side.
pub const SOS: &str = "<sos>";
pub const EOS: &str = "<eos>";

/// 2.3: a Japanese target as the listing's word list: `<sos> words <eos>`.
pub fn ja_tokens(words: &str) -> Vec<&str> {
    std::iter::once(SOS)
        .chain(words.split_whitespace())
        .chain(std::iter::once(EOS))
        .collect()
}

/// `{word: i + 1 for i, word in enumerate(set(words))}` with id 0 for padding. Python's
/// set order changes from run to run; first appearance is used instead, so the ids are
/// the same in every run (the chapter's own printout, `{'this': 1, 'movie': 2, ...}`,
/// shows that order).
pub fn vocab_of<'a>(sentences: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut words: Vec<&str> = Vec::new();
    for sentence in sentences {
        for word in sentence.split_whitespace() {
            if !words.contains(&word) {
                words.push(word);
            }
        }
    }
    words
}

/// `encode_sentence`: ids (word at index i of `vocab` is id i + 1, unknown words 0),
/// padded with 0 or cut to `max_len`.
pub fn encode(words: &[&str], vocab: &[&str], max_len: usize) -> Vec<u32> {
    let mut ids: Vec<u32> = words
        .iter()
        .map(|w| vocab.iter().position(|v| v == w).map_or(0, |i| i as u32 + 1))
        .collect();
    ids.resize(max_len, 0);
    ids
}

/// Exercise 2: SimpleLSTM's sizes (vocab, embed, hidden, classes).
pub const SIMPLE_LSTM: (usize, usize, usize, usize) = (50, 32, 64, 3);
