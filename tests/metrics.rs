//! chrF and character BLEU against sacreBLEU 2.6.0. Each expected value was printed by
//!
//! ```python
//! import sacrebleu                                     # sacrebleu.__version__ == "2.6.0"
//! from sacrebleu.metrics import CHRF, BLEU
//! CHRF().corpus_score(hyps, [refs]).score               # chrF2: char_order 6, beta 2
//! BLEU(tokenize="char").corpus_score(hyps, [refs]).score
//! ```
//!
//! with the hypotheses and references of the test.

use tsumugi::metrics::{char_bleu, chrf, ConfusionMatrix};

fn check(name: &str, hyps: &[&str], refs: &[&str], want_chrf: f64, want_bleu: f64) {
    let got_chrf = chrf(hyps, refs).expect("chrF");
    let got_bleu = char_bleu(hyps, refs).expect("BLEU");
    assert!(
        (got_chrf - want_chrf).abs() < 1e-9,
        "{name}: chrF {got_chrf} vs sacreBLEU {want_chrf}"
    );
    assert!(
        (got_bleu - want_bleu).abs() < 1e-9,
        "{name}: BLEU {got_bleu} vs sacreBLEU {want_bleu}"
    );
}

#[test]
fn metrics_of_identical_sentences_are_100() {
    let s = ["彼は私のよきパートナーだ。", "今日は雨です。"];
    check("identical", &s, &s, 100.0, 100.00000000000004);
}

#[test]
fn metrics_match_sacrebleu_on_japanese_sentences() {
    check(
        "japanese",
        &["彼は私の友達だ。", "私は雨が好きです。", "その試合は行われる。"],
        &[
            "彼は私のよきパートナーだ。",
            "今日は雨です。",
            "たとえ雨が降っても、その試合は行われるだろう。",
        ],
        30.03710820891941,
        30.284872808971905,
    );
}

#[test]
fn metrics_match_sacrebleu_when_hypotheses_are_too_short_for_some_orders() {
    // No hypothesis has a character 3-gram: BLEU is 0, chrF averages the orders present.
    check(
        "short_hyps",
        &["彼", "雨だ"],
        &["彼は学生です。", "雨が降る。"],
        9.803921568627452,
        0.0,
    );
}

#[test]
fn metrics_are_zero_without_a_common_character() {
    check("no_match", &["あいう", "えお"], &["かきく", "けこさ"], 0.0, 0.0);
}

#[test]
fn metrics_match_sacrebleu_with_an_empty_hypothesis() {
    check(
        "empty_hyp",
        &["", "彼は学生です。"],
        &["彼は学生です。", "彼は先生です。"],
        20.127865961199294,
        17.986472826920387,
    );
}

#[test]
fn metrics_ignore_whitespace_like_sacrebleu() {
    check(
        "english_spaces",
        &["the cat sat on the mat", "a dog"],
        &["the cat is on the mat", "the dog barks"],
        47.01806765015261,
        52.04495896822103,
    );
}

#[test]
fn metrics_clip_repeated_ngrams_of_a_long_hypothesis() {
    check(
        "longer_hyp",
        &["彼は私の私の私の友達だった。"],
        &["彼は私の友達だ。"],
        49.646608542844966,
        41.60751652217846,
    );
}

#[test]
fn metrics_reject_mismatched_corpus_sizes() {
    assert!(chrf(&["a"], &["a", "b"]).is_err());
    assert!(char_bleu(&["a", "b"], &["a"]).is_err());
}

#[test]
fn metrics_confusion_matrix_counts_accuracy_and_prints_rows_of_truth() {
    let mut m = ConfusionMatrix::new(2).expect("two classes");
    assert_eq!(m.accuracy(), 0.0);
    for (truth, predicted) in [(0, 0), (0, 0), (0, 1), (1, 1), (1, 0), (1, 1), (1, 1)] {
        m.add(truth, predicted).expect("classes in range");
    }
    assert_eq!(
        (m.count(0, 0), m.count(0, 1), m.count(1, 0), m.count(1, 1)),
        (2, 1, 1, 3)
    );
    assert_eq!(m.total(), 7);
    assert!((m.accuracy() - 5.0 / 7.0).abs() < 1e-12);
    assert_eq!(
        m.table(&["neg", "pos"]),
        "         pred neg pred pos\ntrue neg        2        1\ntrue pos        1        3\n"
    );
    assert!(m.add(2, 0).is_err());
    assert!(ConfusionMatrix::new(0).is_err());
}
