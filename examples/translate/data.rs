//! The training split: `train.tsv`, or with `--full` the xz-compressed full split, with
//! every sentence's length checked before anything trains.

use std::path::Path;

use tsumugi::text::{char_tokens, read_tsv, word_tokens, Pair};

use crate::{AnyResult, Args};

/// The training pairs: `train.tsv`, or with `--full` the xz-compressed `train_full.tsv.xz`.
pub fn training_pairs(args: &Args) -> AnyResult<Vec<Pair>> {
    let mut pairs = if args.full {
        let path = args.data.join("train_full.tsv.xz");
        let file = std::fs::File::open(&path).map_err(|err| format!("cannot open {}: {err}", path.display()))?;
        let mut bytes = Vec::new();
        lzma_rs::xz_decompress(&mut std::io::BufReader::new(file), &mut bytes)
            .map_err(|err| format!("{}: not a valid xz file: {err:?}", path.display()))?;
        tsumugi::text::parse_tsv(&path.display().to_string(), &bytes)?
    } else {
        read_tsv(&args.data.join("train.tsv"))?
    };
    if let Some(n) = args.max_train {
        pairs.truncate(n);
    }
    if pairs.is_empty() {
        return Err("the training split has no sentence pairs".into());
    }
    let file = if args.full { "train_full.tsv.xz" } else { "train.tsv" };
    check_sentence_lengths(&args.data.join(file), &pairs)?;
    Ok(pairs)
}

/// The longest sentence, in tokens, this example trains on: the Tanaka corpus's longest has
/// 90 Japanese characters. A longer line (a stray paragraph, a broken file) is named here
/// instead of failing later with a device limit of a kernel.
const MAX_SENTENCE_TOKENS: usize = 256;

fn check_sentence_lengths(path: &Path, pairs: &[Pair]) -> AnyResult<()> {
    for pair in pairs {
        let (en, ja) = (word_tokens(&pair.source).len(), char_tokens(&pair.target).len());
        if en.max(ja) > MAX_SENTENCE_TOKENS {
            return Err(format!(
                "{} line {}: {en} English words and {ja} Japanese characters; at most {MAX_SENTENCE_TOKENS} \
                 tokens per sentence (split or remove the line)",
                path.display(),
                pair.line
            )
            .into());
        }
    }
    Ok(())
}
