//! `--toy`: the chapter's four sentence pairs, trained until greedy decoding returns
//! every target.

use std::time::Instant;

use rand::rngs::StdRng;
use rand::SeedableRng;
use tsumugi::graph::ParamStore;
use tsumugi::loss::CrossEntropy;
use tsumugi::optim::Adam;
use tsumugi::text::{char_tokens, word_tokens, Example, Pair, Seq2SeqBatch, Vocab};
use tsumugi::Context;

use crate::translator::Translator;
use crate::{train_step, AnyResult, Args};

/// The chapter's toy translator: 4 sentence pairs, trained until greedy decoding
/// returns every target.
pub fn toy(args: &Args) -> AnyResult<()> {
    // The chapter's four pairs (its section 2.3), here with this example's character-level
    // Japanese; `cargo run --release --example chapter -- 2.3` runs the chapter's own
    // word-level listing with its sizes and settings.
    const PAIRS: [(&str, &str); 4] = [
        ("i am a student", "私は学生です"),
        ("he is a teacher", "彼は教師です"),
        ("she likes cats", "彼女は猫が好きです"),
        ("we study english", "私たちは英語を勉強します"),
    ];
    let ctx = Context::new()?;
    let pairs: Vec<Pair> = PAIRS
        .iter()
        .enumerate()
        .map(|(i, (en, ja))| Pair {
            source: en.to_string(),
            target: ja.to_string(),
            line: i + 1,
        })
        .collect();
    let src: Vec<Vec<String>> = pairs.iter().map(|p| word_tokens(&p.source)).collect();
    let tgt: Vec<Vec<String>> = pairs.iter().map(|p| char_tokens(&p.target)).collect();
    let mut store = ParamStore::new();
    // Small sizes and a larger step than the Tanaka defaults: 4 sentences need little.
    let (embed, hidden) = (16, 32);
    let translator = Translator::new(
        &ctx,
        &mut store,
        Vocab::build(&src, 1),
        Vocab::build(&tgt, 1),
        embed,
        hidden,
        args.seed,
    )?;
    let examples: Vec<Example> = pairs.iter().map(|p| translator.encode(p)).collect();
    let refs: Vec<&Example> = examples.iter().collect();
    let batch = Seq2SeqBatch::new(&refs)?;
    let toy_args = Args {
        lr: 0.01,
        ..args.clone()
    };
    let adam = Adam {
        lr: toy_args.lr,
        ..Adam::default()
    };
    let ce = CrossEntropy {
        ignore_index: Some(Vocab::PAD_ID),
        ..CrossEntropy::default()
    };
    let mut rng = StdRng::seed_from_u64(args.seed);
    let start = Instant::now();
    let mut loss = f32::NAN;
    for step in 1..=200 {
        loss = train_step(
            &ctx,
            &mut store,
            &translator.model,
            &batch,
            &toy_args,
            &adam,
            &ce,
            step,
            &mut rng,
        )?;
    }
    println!(
        "toy: 200 steps in {:.1} s, final loss {loss:.4} (embed {embed}, hidden {hidden}, Adam lr 0.01)",
        start.elapsed().as_secs_f64()
    );
    let sentences: Vec<&str> = PAIRS.iter().map(|(en, _)| *en).collect();
    let out = translator.translate(&ctx, &mut store, &sentences, 1)?;
    let mut all = true;
    for ((en, ja), got) in PAIRS.iter().zip(&out) {
        let ok = got == ja;
        all &= ok;
        println!("  {en:<16} -> {got}  (target {ja}{})", if ok { "" } else { ", WRONG" });
    }
    if !all {
        return Err("greedy decoding did not return every target".into());
    }
    println!("greedy decoding returns all 4 targets");
    Ok(())
}
