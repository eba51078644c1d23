//! Text for sequence-to-sequence models: reading parallel TSV files, tokenisers (words,
//! characters), vocabularies with special tokens, and length-bucketed padded batches laid
//! out the way [`crate::nn::seq2seq::Seq2Seq`] consumes them, and pretrained word
//! vectors in GloVe's text format ([`WordVectors`]) with the embedding table they give a
//! vocabulary. Everything here is host-side and needs no GPU.

use std::collections::HashMap;
#[cfg(not(target_arch = "wasm32"))]
use std::path::Path;

use rand::seq::SliceRandom;
use rand::Rng;

use crate::{Error, Result};

/// One line of a parallel corpus: source, target, and whatever columns followed (an id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pair {
    /// First column.
    pub source: String,
    /// Second column.
    pub target: String,
    /// 1-based line number in the file, for messages.
    pub line: usize,
}

/// Reads `source<TAB>target[<TAB>...]` lines from `path` (UTF-8, LF or CRLF; blank lines
/// are skipped). A missing file is `Error::Io` naming the path; a line that is not UTF-8
/// or has fewer than two columns is `Error::Format` naming the file and the line.
/// Not on wasm32 (no file system there): use [`parse_tsv`].
#[cfg(not(target_arch = "wasm32"))]
pub fn read_tsv(path: &Path) -> Result<Vec<Pair>> {
    let bytes = std::fs::read(path).map_err(|err| {
        Error::Io(std::io::Error::new(
            err.kind(),
            format!("cannot read {}: {err}", path.display()),
        ))
    })?;
    parse_tsv(&path.display().to_string(), &bytes)
}

/// [`read_tsv`] on bytes already in memory; `name` names them in errors.
pub fn parse_tsv(name: &str, bytes: &[u8]) -> Result<Vec<Pair>> {
    // A UTF-8 byte-order mark is not part of the first sentence (it became a token).
    let bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
    let mut pairs = Vec::new();
    for (index, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = index + 1;
        let text = std::str::from_utf8(raw).map_err(|err| Error::Format {
            source_name: name.to_string(),
            message: format!("line {line} is not UTF-8 (byte {} of the line)", err.valid_up_to()),
        })?;
        let text = text.strip_suffix('\r').unwrap_or(text);
        if text.trim().is_empty() {
            continue;
        }
        let mut columns = text.split('\t');
        match (columns.next(), columns.next()) {
            (Some(source), Some(target)) => pairs.push(Pair {
                source: source.to_string(),
                target: target.to_string(),
                line,
            }),
            _ => {
                return Err(Error::Format {
                    source_name: name.to_string(),
                    message: format!("line {line} has no TAB: expected source<TAB>target"),
                })
            }
        }
    }
    Ok(pairs)
}

/// Lower-cased words with punctuation split off, as Python's
/// `re.findall(r"\w+|[^\w\s]", s.lower())`: runs of letters, digits and `_` are words,
/// every other non-space character is a token of its own.
/// `"Tom's here."` gives `["tom", "'", "s", "here", "."]`.
pub fn word_tokens(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut word = String::new();
    for c in text.chars().flat_map(char::to_lowercase) {
        if c.is_alphanumeric() || c == '_' {
            word.push(c);
            continue;
        }
        if !word.is_empty() {
            tokens.push(std::mem::take(&mut word));
        }
        if !c.is_whitespace() {
            tokens.push(c.to_string());
        }
    }
    if !word.is_empty() {
        tokens.push(word);
    }
    tokens
}

/// Every non-whitespace character as a token (Japanese has no spaces between words).
pub fn char_tokens(text: &str) -> Vec<String> {
    text.chars().filter(|c| !c.is_whitespace()).map(String::from).collect()
}

/// The padding token, id 0.
pub const PAD: &str = "<pad>";
/// Start of sequence, id 1: the decoder's first input.
pub const SOS: &str = "<sos>";
/// End of sequence, id 2.
pub const EOS: &str = "<eos>";
/// Unknown token, id 3: anything not in the vocabulary.
pub const UNK: &str = "<unk>";

/// A vocabulary: the four special tokens at ids 0..4 ([`PAD`], [`SOS`], [`EOS`],
/// [`UNK`]), then the tokens of the training data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vocab {
    tokens: Vec<String>,
    index: HashMap<String, u32>,
}

impl Vocab {
    /// Id of `<pad>`.
    pub const PAD_ID: u32 = 0;
    /// Id of `<sos>`.
    pub const SOS_ID: u32 = 1;
    /// Id of `<eos>`.
    pub const EOS_ID: u32 = 2;
    /// Id of `<unk>`.
    pub const UNK_ID: u32 = 3;

    /// Builds a vocabulary from tokenised sentences: every token seen at least
    /// `min_freq` times, most frequent first (ties in code-point order, so the ids do
    /// not depend on a hash seed), after the special tokens.
    pub fn build<'a, I, S>(sentences: I, min_freq: usize) -> Vocab
    where
        I: IntoIterator<Item = &'a S>,
        S: AsRef<[String]> + 'a + ?Sized,
    {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for sentence in sentences {
            for token in sentence.as_ref() {
                *counts.entry(token.as_str()).or_default() += 1;
            }
        }
        let mut kept: Vec<(&str, usize)> = counts
            .into_iter()
            .filter(|&(token, n)| n >= min_freq.max(1) && !Self::is_special(token))
            .collect();
        kept.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let mut tokens: Vec<String> = [PAD, SOS, EOS, UNK].iter().map(|s| s.to_string()).collect();
        tokens.extend(kept.into_iter().map(|(token, _)| token.to_string()));
        Self::from_tokens_unchecked(tokens)
    }

    fn is_special(token: &str) -> bool {
        [PAD, SOS, EOS, UNK].contains(&token)
    }

    fn from_tokens_unchecked(tokens: Vec<String>) -> Vocab {
        let index = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        Vocab { tokens, index }
    }

    /// A vocabulary from its tokens in id order; the first four must be the special
    /// tokens, and no token may repeat or contain a line break.
    pub fn from_tokens(tokens: Vec<String>) -> Result<Vocab> {
        let specials = [PAD, SOS, EOS, UNK];
        if tokens.len() < 4 || tokens.iter().zip(specials).any(|(t, s)| t != s) {
            return Err(Error::invalid(format!(
                "a vocabulary starts with {specials:?}, found {:?}",
                &tokens[..tokens.len().min(4)]
            )));
        }
        let vocab = Self::from_tokens_unchecked(tokens);
        if vocab.index.len() != vocab.tokens.len() {
            // The index keeps a repeated token's last id, so its first id is the first
            // position the index does not point back to.
            let (first, token) = (vocab.tokens.iter().enumerate())
                .find(|&(i, t)| vocab.index[t] as usize != i)
                .unwrap_or((0, &vocab.tokens[0]));
            return Err(Error::invalid(format!(
                "vocabulary token {token:?} appears twice, at ids {first} and {}",
                vocab.index[token]
            )));
        }
        if let Some(bad) = vocab.tokens.iter().find(|t| t.is_empty() || t.contains(['\n', '\r'])) {
            return Err(Error::invalid(format!(
                "vocabulary token {bad:?} is empty or has a line break"
            )));
        }
        Ok(vocab)
    }

    /// Number of tokens, special ones included.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Never true: the special tokens are always there.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The id of `token`, `<unk>`'s if it is not in the vocabulary.
    pub fn id(&self, token: &str) -> u32 {
        self.index.get(token).copied().unwrap_or(Self::UNK_ID)
    }

    /// The token of `id` (`<unk>` for an id out of range).
    pub fn token(&self, id: u32) -> &str {
        self.tokens.get(id as usize).map_or(UNK, String::as_str)
    }

    /// Ids of `tokens`.
    pub fn encode(&self, tokens: &[String]) -> Vec<u32> {
        tokens.iter().map(|t| self.id(t)).collect()
    }

    /// Tokens of `ids` up to the first `<eos>`, `<pad>` and `<sos>` dropped (`<unk>` kept).
    pub fn decode(&self, ids: &[u32]) -> Vec<&str> {
        ids.iter()
            .take_while(|&&id| id != Self::EOS_ID)
            .filter(|&&id| id != Self::PAD_ID && id != Self::SOS_ID)
            .map(|&id| self.token(id))
            .collect()
    }

    /// One token per line, in id order.
    pub fn to_text(&self) -> String {
        let mut text = self.tokens.join("\n");
        text.push('\n');
        text
    }

    /// Parses [`Vocab::to_text`]'s output; `name` names it in errors.
    pub fn from_text(name: &str, text: &str) -> Result<Vocab> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let tokens: Vec<String> = text.lines().map(str::to_string).collect();
        Self::from_tokens(tokens).map_err(|err| Error::Format {
            source_name: name.to_string(),
            message: err.to_string(),
        })
    }

    /// Writes [`Vocab::to_text`] to `path` atomically. Not on wasm32: use [`Vocab::to_text`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::io::write_atomically(path, self.to_text().as_bytes())
    }

    /// Reads a vocabulary written by [`Vocab::save`]: `Error::Io` naming the path if it
    /// cannot be read, `Error::Format` naming the file (and the line, for text that is not
    /// UTF-8) if it is not a vocabulary. Not on wasm32: use [`Vocab::from_text`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load(path: &Path) -> Result<Vocab> {
        let bytes = std::fs::read(path).map_err(|err| {
            Error::Io(std::io::Error::new(
                err.kind(),
                format!("cannot read {}: {err}", path.display()),
            ))
        })?;
        let name = path.display().to_string();
        let text = std::str::from_utf8(&bytes).map_err(|err| {
            let line = bytes[..err.valid_up_to()].iter().filter(|&&b| b == b'\n').count() + 1;
            Error::Format {
                source_name: name.clone(),
                message: format!("line {line} is not UTF-8"),
            }
        })?;
        Self::from_text(&name, text)
    }
}

/// One encoded example: source ids (with a closing `<eos>`) and target ids (without
/// `<sos>` or `<eos>`; [`Seq2SeqBatch`] adds them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Example {
    /// Source ids, ending in `<eos>` (so no source is empty).
    pub source: Vec<u32>,
    /// Target ids.
    pub target: Vec<u32>,
}

impl Example {
    /// Encodes a pair with the given tokenisers and vocabularies.
    pub fn encode(source: &[String], target: &[String], source_vocab: &Vocab, target_vocab: &Vocab) -> Example {
        let mut src = source_vocab.encode(source);
        src.push(Vocab::EOS_ID);
        Example {
            source: src,
            target: target_vocab.encode(target),
        }
    }
}

/// A padded batch as the seq2seq model takes it, all host-side:
/// - `source` `[B, S]` row-major, `<pad>` after each row's length, `source_lengths` `[B]`;
/// - `decoder_inputs`: T steps of `[B]` ids, `<sos> y1 .. yn` then `<pad>`;
/// - `labels` `[T * B]` in time-major (t, b) order, `y1 .. yn <eos>` then `<pad>`
///   (for [`crate::nn::seq2seq::Seq2Seq::forward_time_major`] and a cross-entropy that
///   ignores `<pad>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seq2SeqBatch {
    /// B.
    pub batch: usize,
    /// S, the longest source.
    pub source_steps: usize,
    /// T, the longest target plus one (for `<eos>`).
    pub target_steps: usize,
    /// `[B, S]`.
    pub source: Vec<u32>,
    /// `[B]`, each in `1..=S`.
    pub source_lengths: Vec<u32>,
    /// `T x [B]`.
    pub decoder_inputs: Vec<Vec<u32>>,
    /// `[T * B]`, (t, b) order.
    pub labels: Vec<u32>,
    /// Target tokens that count in the loss (labels that are not `<pad>`).
    pub target_tokens: usize,
}

impl Seq2SeqBatch {
    /// Pads `examples` into one batch.
    pub fn new(examples: &[&Example]) -> Result<Seq2SeqBatch> {
        let batch = examples.len();
        if batch == 0 {
            return Err(Error::invalid("a batch needs at least one example"));
        }
        if let Some(i) = examples.iter().position(|e| e.source.is_empty()) {
            return Err(Error::invalid(format!("example {i} of the batch has an empty source")));
        }
        let source_steps = examples.iter().map(|e| e.source.len()).max().unwrap_or(1);
        let target_steps = examples.iter().map(|e| e.target.len()).max().unwrap_or(0) + 1;
        let pad = Vocab::PAD_ID;
        let mut source = vec![pad; batch * source_steps];
        let mut decoder_inputs = vec![vec![pad; batch]; target_steps];
        let mut labels = vec![pad; target_steps * batch];
        for (b, example) in examples.iter().enumerate() {
            source[b * source_steps..b * source_steps + example.source.len()].copy_from_slice(&example.source);
            decoder_inputs[0][b] = Vocab::SOS_ID;
            for (t, &id) in example.target.iter().enumerate() {
                decoder_inputs[t + 1][b] = id;
                labels[t * batch + b] = id;
            }
            labels[example.target.len() * batch + b] = Vocab::EOS_ID;
        }
        Ok(Seq2SeqBatch {
            batch,
            source_steps,
            target_steps,
            source,
            source_lengths: examples.iter().map(|e| e.source.len() as u32).collect(),
            decoder_inputs,
            target_tokens: examples.iter().map(|e| e.target.len() + 1).sum(),
            labels,
        })
    }
}

/// Length-bucketed batches of `examples`: the indices are shuffled, sorted (stably) by
/// target then source length, cut into batches of `batch_size`, and the batch order is
/// shuffled. Neighbours in length share a batch, so little of a batch is padding, and
/// a new `rng` draw gives new batches each epoch.
pub fn bucketed_batches(examples: &[Example], batch_size: usize, rng: &mut impl Rng) -> Result<Vec<Vec<usize>>> {
    if batch_size == 0 {
        return Err(Error::invalid("batch size 0"));
    }
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.shuffle(rng);
    order.sort_by_key(|&i| (examples[i].target.len(), examples[i].source.len()));
    let mut batches: Vec<Vec<usize>> = order.chunks(batch_size).map(<[usize]>::to_vec).collect();
    batches.shuffle(rng);
    Ok(batches)
}

/// Pretrained word vectors in GloVe's text format: one `word v1 .. vE` line per word,
/// fields separated by spaces, no header. Every line must have as many values as the
/// first; a word seen twice keeps its first vector (as `gensim` does).
#[derive(Clone, Debug, PartialEq)]
pub struct WordVectors {
    dim: usize,
    words: Vec<String>,
    /// `[N, E]` row-major, row i for `words[i]`.
    vectors: Vec<f32>,
    index: HashMap<String, usize>,
}

impl WordVectors {
    /// Reads a GloVe text file. A missing file is `Error::Io` naming the path; a line
    /// that is not UTF-8, has the wrong number of values or a value that is not a finite
    /// number is `Error::Format` naming the file and the line. Not on wasm32: use
    /// [`WordVectors::parse_glove`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_glove(path: &Path) -> Result<WordVectors> {
        let bytes = std::fs::read(path).map_err(|err| {
            Error::Io(std::io::Error::new(
                err.kind(),
                format!("cannot read {}: {err}", path.display()),
            ))
        })?;
        Self::parse_glove(&path.display().to_string(), &bytes)
    }

    /// [`WordVectors::read_glove`] on bytes already in memory; `name` names them in errors.
    pub fn parse_glove(name: &str, bytes: &[u8]) -> Result<WordVectors> {
        let format = |line: usize, message: String| Error::Format {
            source_name: name.to_string(),
            message: format!("line {line}: {message}"),
        };
        let mut vectors = WordVectors {
            dim: 0,
            words: Vec::new(),
            vectors: Vec::new(),
            index: HashMap::new(),
        };
        let bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
        for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
            let line = i + 1;
            let text = std::str::from_utf8(raw)
                .map_err(|err| format(line, format!("not UTF-8 (byte {} of the line)", err.valid_up_to())))?;
            let text = text.strip_suffix('\r').unwrap_or(text);
            if text.trim().is_empty() {
                continue;
            }
            let mut fields = text.split(' ');
            let word = fields.next().unwrap_or_default();
            if word.is_empty() {
                return Err(format(line, "starts with a space: expected `word v1 .. vE`".into()));
            }
            let start = vectors.vectors.len();
            for (k, field) in fields.enumerate() {
                match field.parse::<f32>() {
                    Ok(v) if v.is_finite() => vectors.vectors.push(v),
                    _ => {
                        return Err(format(
                            line,
                            format!("value {} of {word:?} is {field:?}, not a finite number", k + 1),
                        ))
                    }
                }
            }
            let values = vectors.vectors.len() - start;
            if vectors.words.is_empty() {
                if values == 0 {
                    return Err(format(line, format!("{word:?} has no values")));
                }
                vectors.dim = values;
            } else if values != vectors.dim {
                return Err(format(
                    line,
                    format!("{word:?} has {values} values, the first line had {}", vectors.dim),
                ));
            }
            if vectors.index.contains_key(word) {
                vectors.vectors.truncate(start);
                continue;
            }
            vectors.index.insert(word.to_string(), vectors.words.len());
            vectors.words.push(word.to_string());
        }
        if vectors.words.is_empty() {
            return Err(Error::Format {
                source_name: name.to_string(),
                message: "no word vectors".into(),
            });
        }
        Ok(vectors)
    }

    /// E, the values per word.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of words.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// Never true: a file without vectors is an error.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The words in file order.
    pub fn words(&self) -> &[String] {
        &self.words
    }

    /// The vector of `word`, if it has one.
    pub fn get(&self, word: &str) -> Option<&[f32]> {
        let i = *self.index.get(word)?;
        Some(&self.vectors[i * self.dim..(i + 1) * self.dim])
    }

    /// The standard deviation of all values (the top 5,000 words of GloVe 6B 50d: 0.72), a scale for the
    /// random rows of words without a vector.
    pub fn std(&self) -> f32 {
        let n = self.vectors.len() as f64;
        let mean = self.vectors.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = self.vectors.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;
        var.sqrt() as f32
    }

    /// An embedding table `[V, E]` for `vocab`, row-major: a token's vector where it has
    /// one, otherwise E draws of `missing()` (the special tokens always draw). Returns the
    /// table and how many of the vocabulary's non-special tokens had a vector.
    pub fn embedding_table(&self, vocab: &Vocab, mut missing: impl FnMut() -> f32) -> (Vec<f32>, usize) {
        let mut table = Vec::with_capacity(vocab.len() * self.dim);
        let mut found = 0;
        for id in 0..vocab.len() as u32 {
            let token = vocab.token(id);
            match self.get(token).filter(|_| id > Vocab::UNK_ID) {
                Some(vector) => {
                    table.extend_from_slice(vector);
                    found += 1;
                }
                None => table.extend((0..self.dim).map(|_| missing())),
            }
        }
        (table, found)
    }
}
