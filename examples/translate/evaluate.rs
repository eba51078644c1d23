//! Evaluation: translating a dev or test file in batches of similar source length and
//! scoring it with corpus chrF and character BLEU-4, sample translations, and the
//! `--translate` / `--eval` run on a saved checkpoint.

use std::path::{Path, PathBuf};
use std::time::Instant;

use tsumugi::graph::ParamStore;
use tsumugi::metrics::{char_bleu, chrf};
use tsumugi::text::{read_tsv, word_tokens, Pair};
use tsumugi::Context;

use crate::translator::Translator;
use crate::{AnyResult, Args};

/// `--translate` and `--eval`: loads the checkpoint, translates the sentence and scores the
/// file; nothing is trained.
pub fn evaluate_checkpoint(args: &Args, checkpoint: &Path) -> AnyResult<()> {
    let ctx = Context::new()?;
    let mut store = ParamStore::new();
    let (model, meta) = if args.average.is_empty() {
        let (model, meta, _) = Translator::load(&ctx, &mut store, checkpoint)?;
        (model, meta)
    } else {
        let (model, meta, _) = Translator::load(&ctx, &mut store, &args.average[0])?;
        average_into(&ctx, &mut store, &model, &args.average)?;
        (model, meta)
    };
    let model = Translator {
        length_penalty: args.length_penalty,
        ..model
    };
    if let Some(text) = &args.translate {
        let out = model.translate(&ctx, &mut store, &[text.as_str()], args.beam)?;
        println!("{text}\n-> {}", out[0]);
    }
    if let Some(path) = &args.eval {
        let pairs = read_tsv(path)?;
        if pairs.is_empty() {
            return Err(format!("{}: no sentence pairs", path.display()).into());
        }
        let start = Instant::now();
        let scores = evaluate(&ctx, &mut store, &model, &pairs, args.beam)?;
        println!(
            "{}: {} pairs, chrF {:.1}, char-BLEU {:.1} ({}, {:.0} s; {})",
            path.display(),
            pairs.len(),
            scores.chrf,
            scores.bleu,
            decoding_name(args.beam),
            start.elapsed().as_secs_f64(),
            if args.average.is_empty() {
                format!("checkpoint after epoch {}", meta.epoch)
            } else {
                format!("the mean of {} checkpoints", args.average.len())
            }
        );
        print_samples(&pairs, &scores.hypotheses, args.samples);
    }
    Ok(())
}

/// `--average`: replaces the weights in `store` (loaded from `files[0]`) by the element-wise
/// mean over all `files`, which must be checkpoints of one model (same vocabularies and
/// parameter shapes), as in checkpoint averaging (Vaswani et al. 2017).
fn average_into(ctx: &Context, store: &mut ParamStore, model: &Translator, files: &[PathBuf]) -> AnyResult<()> {
    let mut sums: Vec<(String, Vec<f64>)> = Vec::new();
    for (name, tensor, _) in store.entries() {
        let values = tensor.to_vec::<f32>()?;
        sums.push((name.to_string(), values.iter().map(|&x| f64::from(x)).collect()));
    }
    let mut epochs = Vec::new();
    for (i, file) in files.iter().enumerate() {
        let mut other = ParamStore::new();
        let (other_model, meta, _) = Translator::load(ctx, &mut other, file)?;
        epochs.push(meta.epoch.to_string());
        if i == 0 {
            continue;
        }
        if other_model.src_vocab.to_text() != model.src_vocab.to_text()
            || other_model.tgt_vocab.to_text() != model.tgt_vocab.to_text()
        {
            return Err(format!(
                "--average: {} has other vocabularies than {}: not the same run",
                file.display(),
                files[0].display()
            )
            .into());
        }
        for (name, sum) in &mut sums {
            let id = other
                .find(name)
                .ok_or_else(|| format!("--average: {} has no tensor {name}", file.display()))?;
            let values = other.value(id).to_vec::<f32>()?;
            if values.len() != sum.len() {
                return Err(format!("--average: {name} has another shape in {}", file.display()).into());
            }
            for (s, v) in sum.iter_mut().zip(values) {
                *s += f64::from(v);
            }
        }
    }
    for (name, sum) in &sums {
        let id = store
            .find(name)
            .ok_or_else(|| format!("--average: no parameter {name}"))?;
        let mean: Vec<f32> = sum.iter().map(|&s| (s / files.len() as f64) as f32).collect();
        store.value(id).write(&mean)?;
    }
    println!(
        "weights: the mean of {} checkpoints (after epochs {})",
        files.len(),
        epochs.join(", ")
    );
    Ok(())
}

pub fn decoding_name(beam: usize) -> String {
    if beam == 1 {
        "greedy".to_string()
    } else {
        format!("beam {beam}")
    }
}

pub struct Scores {
    pub chrf: f64,
    pub bleu: f64,
    pub hypotheses: Vec<String>,
}

/// Translates every pair's source (in batches of similar source length) and scores the
/// translations against the targets.
pub fn evaluate(
    ctx: &Context,
    store: &mut ParamStore,
    model: &Translator,
    pairs: &[Pair],
    beam: usize,
) -> AnyResult<Scores> {
    let mut order: Vec<usize> = (0..pairs.len()).collect();
    order.sort_by_key(|&i| word_tokens(&pairs[i].source).len());
    let chunk = if beam > 1 { 64 } else { 200 };
    let mut hypotheses = vec![String::new(); pairs.len()];
    for indices in order.chunks(chunk) {
        let sentences: Vec<&str> = indices.iter().map(|&i| pairs[i].source.as_str()).collect();
        let out = model.translate(ctx, store, &sentences, beam)?;
        for (&i, text) in indices.iter().zip(out) {
            hypotheses[i] = text;
        }
    }
    let hyps: Vec<&str> = hypotheses.iter().map(String::as_str).collect();
    let refs: Vec<&str> = pairs.iter().map(|p| p.target.as_str()).collect();
    Ok(Scores {
        chrf: chrf(&hyps, &refs)?,
        bleu: char_bleu(&hyps, &refs)?,
        hypotheses,
    })
}

pub fn print_samples(pairs: &[Pair], hypotheses: &[String], n: usize) {
    for (pair, hyp) in pairs.iter().zip(hypotheses).take(n) {
        println!("  EN:  {}\n  REF: {}\n  OUT: {}\n", pair.source, pair.target, hyp);
    }
}
