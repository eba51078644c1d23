//! Corpus-level translation metrics with sacreBLEU's definitions (checked against
//! sacreBLEU 2.6.0 in `tests/metrics.rs`): chrF (character n-grams up to 6, beta 2,
//! whitespace ignored: sacreBLEU's default `CHRF()`) and BLEU-4 over characters
//! (`BLEU(tokenize="char")`: exponential smoothing, brevity penalty). Scores are in
//! 0..=100, one reference per hypothesis. For classifiers, a [`ConfusionMatrix`] with
//! accuracy.

use std::collections::HashMap;

use crate::{Error, Result};

fn check_lengths(metric: &str, hypotheses: usize, references: usize) -> Result<()> {
    if hypotheses != references {
        return Err(Error::invalid(format!(
            "{metric}: {hypotheses} hypotheses but {references} references"
        )));
    }
    Ok(())
}

/// Counts of the n-grams of `items`.
fn ngram_counts<T: Eq + std::hash::Hash>(items: &[T], n: usize) -> HashMap<&[T], usize> {
    let mut counts = HashMap::new();
    if items.len() >= n {
        for gram in items.windows(n) {
            *counts.entry(gram).or_insert(0) += 1;
        }
    }
    counts
}

/// (hypothesis n-grams, reference n-grams, clipped matches) of one order.
fn ngram_stats<T: Eq + std::hash::Hash>(hyp: &[T], reference: &[T], n: usize) -> [usize; 3] {
    let (h, r) = (ngram_counts(hyp, n), ngram_counts(reference, n));
    let matches = h
        .iter()
        .map(|(gram, &count)| count.min(r.get(gram).copied().unwrap_or(0)))
        .sum();
    [h.values().sum(), r.values().sum(), matches]
}

/// Corpus chrF: sacreBLEU's `CHRF()` (char_order 6, word_order 0, beta 2, whitespace
/// removed before counting, no eps smoothing). The n-gram statistics are summed over the
/// corpus; precision and recall are averaged over the orders that occur in both
/// hypotheses and references, then combined into the F-beta score.
pub fn chrf(hypotheses: &[&str], references: &[&str]) -> Result<f64> {
    const ORDER: usize = 6;
    const BETA: f64 = 2.0;
    check_lengths("chrF", hypotheses.len(), references.len())?;
    let mut stats = [[0usize; 3]; ORDER];
    for (hyp, reference) in hypotheses.iter().zip(references) {
        let hyp: Vec<char> = hyp.chars().filter(|c| !c.is_whitespace()).collect();
        let reference: Vec<char> = reference.chars().filter(|c| !c.is_whitespace()).collect();
        for (n, total) in stats.iter_mut().enumerate() {
            let s = ngram_stats(&hyp, &reference, n + 1);
            for (t, v) in total.iter_mut().zip(s) {
                *t += v;
            }
        }
    }
    let (mut precision, mut recall, mut orders) = (0.0, 0.0, 0usize);
    for [hyp, reference, matches] in stats {
        if hyp > 0 && reference > 0 {
            precision += matches as f64 / hyp as f64;
            recall += matches as f64 / reference as f64;
            orders += 1;
        }
    }
    if orders == 0 {
        return Ok(0.0);
    }
    let (precision, recall) = (precision / orders as f64, recall / orders as f64);
    let factor = BETA * BETA;
    if precision + recall == 0.0 {
        return Ok(0.0);
    }
    Ok(100.0 * (1.0 + factor) * precision * recall / (factor * precision + recall))
}

/// Corpus BLEU-4 over characters: sacreBLEU's `BLEU(tokenize="char")` (whitespace
/// dropped, every other character a token; n-gram matches clipped per sentence and
/// summed over the corpus; exponential smoothing of zero counts; brevity penalty
/// `exp(1 - r/c)` when the hypotheses are shorter than the references).
pub fn char_bleu(hypotheses: &[&str], references: &[&str]) -> Result<f64> {
    const ORDER: usize = 4;
    check_lengths("BLEU", hypotheses.len(), references.len())?;
    let (mut correct, mut total) = ([0usize; ORDER], [0usize; ORDER]);
    let (mut hyp_len, mut ref_len) = (0usize, 0usize);
    for (hyp, reference) in hypotheses.iter().zip(references) {
        let hyp: Vec<char> = hyp.chars().filter(|c| !c.is_whitespace()).collect();
        let reference: Vec<char> = reference.chars().filter(|c| !c.is_whitespace()).collect();
        hyp_len += hyp.len();
        ref_len += reference.len();
        for n in 0..ORDER {
            let [h, _, m] = ngram_stats(&hyp, &reference, n + 1);
            total[n] += h;
            correct[n] += m;
        }
    }
    if hyp_len == 0 {
        return Ok(0.0);
    }
    let mut log_sum = 0.0;
    let mut smooth = 1.0;
    for n in 0..ORDER {
        if total[n] == 0 {
            // No n-grams of this order at all: sacreBLEU's precision stays 0, score 0.
            return Ok(0.0);
        }
        let precision = if correct[n] == 0 {
            smooth *= 2.0;
            100.0 / (smooth * total[n] as f64)
        } else {
            100.0 * correct[n] as f64 / total[n] as f64
        };
        log_sum += precision.ln();
    }
    let brevity = if hyp_len < ref_len {
        (1.0 - ref_len as f64 / hyp_len as f64).exp()
    } else {
        1.0
    };
    // Precisions are percentages: the geometric mean is too, so no factor 100 here.
    Ok(brevity * (log_sum / ORDER as f64).exp())
}

/// Counts of (true class, predicted class) pairs of a classifier, with accuracy and a
/// printable table (rows: true class, columns: predicted class).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfusionMatrix {
    classes: usize,
    /// `[classes, classes]`, row = truth.
    counts: Vec<usize>,
}

impl ConfusionMatrix {
    /// An empty matrix over `classes` classes (at least 1).
    pub fn new(classes: usize) -> Result<ConfusionMatrix> {
        if classes == 0 {
            return Err(Error::invalid("a confusion matrix needs at least one class"));
        }
        Ok(ConfusionMatrix {
            classes,
            counts: vec![0; classes * classes],
        })
    }

    /// Counts one example; a class outside `0..classes` is an error.
    pub fn add(&mut self, truth: usize, predicted: usize) -> Result<()> {
        if truth >= self.classes || predicted >= self.classes {
            return Err(Error::invalid(format!(
                "confusion matrix: class ({truth}, {predicted}) outside 0..{}",
                self.classes
            )));
        }
        self.counts[truth * self.classes + predicted] += 1;
        Ok(())
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Examples of class `truth` predicted as `predicted` (0 outside the classes).
    pub fn count(&self, truth: usize, predicted: usize) -> usize {
        if truth >= self.classes || predicted >= self.classes {
            return 0;
        }
        self.counts[truth * self.classes + predicted]
    }

    /// Examples counted.
    pub fn total(&self) -> usize {
        self.counts.iter().sum()
    }

    /// The fraction predicted right, in `[0, 1]`; 0 when nothing was counted.
    pub fn accuracy(&self) -> f64 {
        let right: usize = (0..self.classes).map(|c| self.count(c, c)).sum();
        match self.total() {
            0 => 0.0,
            total => right as f64 / total as f64,
        }
    }

    /// The table with the given class names (numbers where `names` is short): one
    /// column per predicted class, one row per true class:
    ///
    /// ```text
    ///          pred neg pred pos
    /// true neg      450       83
    /// true pos       90      443
    /// ```
    pub fn table(&self, names: &[&str]) -> String {
        let name = |c: usize| names.get(c).map_or_else(|| c.to_string(), |n| n.to_string());
        let rows: Vec<String> = (0..self.classes).map(|c| format!("true {}", name(c))).collect();
        let columns: Vec<String> = (0..self.classes).map(|c| format!("pred {}", name(c))).collect();
        let first = rows.iter().map(|r| r.chars().count()).max().unwrap_or(0);
        let width = columns
            .iter()
            .map(|c| c.chars().count())
            .chain(self.counts.iter().map(|n| n.to_string().len()))
            .max()
            .unwrap_or(1);
        let mut out = format!("{:first$}", "");
        for column in &columns {
            out += &format!(" {column:>width$}");
        }
        out.push('\n');
        for (t, row) in rows.iter().enumerate() {
            out += &format!("{row:<first$}");
            for p in 0..self.classes {
                out += &format!(" {:>width$}", self.count(t, p));
            }
            out.push('\n');
        }
        out
    }
}
