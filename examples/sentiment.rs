//! Sentence sentiment: the chapter's SentimentLSTM (2 layers, dropout) or
//! TextClassifierGRU trained on rt-polarity (`data/rt_polarity/`, Pang & Lee 2005,
//! CC BY 4.0) with a fixed 90/10 held-out split; per epoch the training loss, the test
//! accuracy and the 2x2 confusion matrix. The trained model (checkpoint, vocabulary,
//! sizes) goes to `--out`, where `--classify` and `--eval` find it.
//!
//! ```sh
//! cargo run --release --example sentiment                       # train the LSTM
//! cargo run --release --example sentiment -- --model gru
//! cargo run --release --example sentiment -- --classify "a gorgeous, witty film"
//! cargo run --release --example sentiment -- --eval my_sentences.tsv
//! ```

mod sentiment_common;

#[path = "cli/mod.rs"]
mod cli;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::rngs::StdRng;
use rand::SeedableRng;
use sentiment_common::{
    build_vocab, evaluate, load_labelled_tsv, load_rt_polarity, parse_model, probabilities, train_epoch, AnyResult,
    Labelled, ModelSpec, TrainSettings, CLASSES, SPLIT_SEED,
};
use tsumugi::graph::ParamStore;
use tsumugi::io::{read_checkpoint, save_checkpoint_with, Metadata};
use tsumugi::nn::CellKind;
use tsumugi::text::{word_tokens, Vocab};
use tsumugi::Context;

const HELP: &str = "\
sentiment: the chapter's SentimentLSTM / TextClassifierGRU on rt-polarity

USAGE: cargo run --release --example sentiment -- [FLAGS]

Training (the default action); the test split is a fixed 10 % of the data:
  --model lstm|gru      SentimentLSTM (2 layers, dropout) or TextClassifierGRU [default: lstm]
  --epochs N            epochs over the 9,596 training sentences    [default: 4]
  --batch N             sentences per step                          [default: 64]
  --lr X                Adam learning rate                          [default: 0.002]
  --embed N             embedding size                              [default: 64]
  --hidden N            hidden size                                 [default: 64]
  --dropout X           the LSTM's dropout (between layers, before fc) [default: 0.5]
  --min-freq N          vocabulary: training tokens seen N+ times   [default: 2]
  --seed N              initialisation, batching and dropout seed   [default: 0]
  --data DIR            folder with rt-polarity.neg/.pos            [default: data/rt_polarity]
  --out DIR             the trained model goes here                 [default: target/sentiment]

Using the trained model in OUT (chosen by --model; no training):
  --classify TEXT       the probability of each class for TEXT
  --eval FILE           accuracy and confusion matrix on TSV lines sentence<TAB>0|1
                        (0 negative, 1 positive)

  -h, --help            this text
";

#[derive(Clone, Debug)]
struct Args {
    kind: CellKind,
    epochs: usize,
    batch: usize,
    lr: f64,
    embed: usize,
    hidden: usize,
    dropout: f32,
    min_freq: usize,
    seed: u64,
    data: PathBuf,
    out: PathBuf,
    classify: Option<String>,
    eval: Option<PathBuf>,
}

fn parse_args() -> AnyResult<Option<Args>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut args = Args {
        kind: CellKind::Lstm,
        epochs: 4,
        batch: 64,
        lr: 0.002,
        embed: 64,
        hidden: 64,
        dropout: 0.5,
        min_freq: 2,
        seed: 0,
        data: root.join("data/rt_polarity"),
        out: root.join("target/sentiment"),
        classify: None,
        eval: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--model" => args.kind = parse_model(&flag, it.next())?,
            "--epochs" => args.epochs = cli::value(&flag, it.next())?,
            "--batch" => args.batch = cli::value(&flag, it.next())?,
            "--lr" => args.lr = cli::value(&flag, it.next())?,
            "--embed" => args.embed = cli::value(&flag, it.next())?,
            "--hidden" => args.hidden = cli::value(&flag, it.next())?,
            "--dropout" => args.dropout = cli::value(&flag, it.next())?,
            "--min-freq" => args.min_freq = cli::value(&flag, it.next())?,
            "--seed" => args.seed = cli::value(&flag, it.next())?,
            "--data" => args.data = cli::value(&flag, it.next())?,
            "--out" => args.out = cli::value(&flag, it.next())?,
            "--classify" => args.classify = Some(cli::value(&flag, it.next())?),
            "--eval" => args.eval = Some(cli::value(&flag, it.next())?),
            other => return Err(format!("unknown flag {other:?} (see --help)").into()),
        }
    }
    if args.batch == 0 || args.embed == 0 || args.hidden == 0 {
        return Err("--batch, --embed and --hidden must be at least 1".into());
    }
    // The kernels compute in f32: 1e39 is finite as an f64 and infinite there.
    if !(args.lr > 0.0 && (args.lr as f32).is_finite()) {
        return Err(format!("--lr must be a positive number, at most {:e} (f32)", f32::MAX).into());
    }
    if args.epochs == 0 && args.classify.is_none() && args.eval.is_none() {
        return Err("--epochs must be at least 1 (a run that trains nothing would replace the saved model)".into());
    }
    if !(0.0..1.0).contains(&args.dropout) {
        return Err("--dropout must be in [0, 1)".into());
    }
    Ok(Some(args))
}

fn main() {
    cli::run_main(HELP, parse_args, run);
}

/// The saved model: weights, the model's sizes (`spec`) and its vocabulary (`vocab`) in
/// one checkpoint file.
fn model_file(args: &Args) -> PathBuf {
    let name = match args.kind {
        CellKind::Lstm => "sentiment_lstm",
        _ => "sentiment_gru",
    };
    args.out.join(format!("{name}.safetensors"))
}

fn run(args: &Args) -> AnyResult<()> {
    if args.classify.is_some() || args.eval.is_some() {
        return use_trained(args);
    }
    let start = Instant::now();
    let (train, test) = load_rt_polarity(&args.data)
        .map_err(|err| format!("{err}\n(the data ships in data/rt_polarity; --data DIR points elsewhere)"))?;
    let vocab = build_vocab(&train, args.min_freq);
    let spec = ModelSpec {
        kind: args.kind,
        vocab: vocab.len(),
        embed: args.embed,
        hidden: args.hidden,
        layers: if args.kind == CellKind::Lstm { 2 } else { 1 },
        dropout: if args.kind == CellKind::Lstm { args.dropout } else { 0.0 },
    };
    // The output folder is made (or found unusable) before any training.
    if args.out.exists() && !args.out.is_dir() {
        return Err(format!("--out {}: is a file, not a folder", args.out.display()).into());
    }
    std::fs::create_dir_all(&args.out)
        .map_err(|err| format!("--out {}: cannot create it: {err}", args.out.display()))?;
    let ctx = Context::new()?;
    println!("adapter: {}", ctx.adapter());
    println!(
        "rt-polarity: {} training and {} test sentences (split seed {SPLIT_SEED}), vocabulary {} (min freq {})",
        train.len(),
        test.len(),
        vocab.len(),
        args.min_freq
    );
    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut store = ParamStore::new();
    let model = spec.build(&ctx, &mut store, &mut rng, None)?;
    let title = match args.kind {
        CellKind::Lstm => format!(
            "SentimentLSTM({}, {}, {}, 2, {} layers, dropout {})",
            spec.vocab, spec.embed, spec.hidden, spec.layers, spec.dropout
        ),
        _ => format!("TextClassifierGRU({}, {}, {}, 2)", spec.vocab, spec.embed, spec.hidden),
    };
    println!(
        "{title}: {} parameters; batch {}, Adam lr {}, clip 1, {} epochs",
        store.count().0,
        args.batch,
        args.lr,
        args.epochs
    );
    let settings = TrainSettings {
        batch: args.batch,
        lr: args.lr,
        clip: 1.0,
        seed: args.seed,
    };
    let mut step = 0;
    for epoch in 1..=args.epochs {
        let epoch_start = Instant::now();
        let losses = train_epoch(&ctx, &mut store, &model, &vocab, &train, &settings, &mut step, &mut rng)?;
        let matrix = evaluate(&ctx, &mut store, &model, &vocab, &test)?;
        println!(
            "epoch {epoch}: train loss {:.4}, test accuracy {:.2} % ({} of {}), {:.0} s\n{}",
            losses.iter().sum::<f32>() / losses.len().max(1) as f32,
            100.0 * matrix.accuracy(),
            matrix.count(0, 0) + matrix.count(1, 1),
            matrix.total(),
            epoch_start.elapsed().as_secs_f64(),
            matrix.table(&CLASSES)
        );
    }
    let checkpoint = model_file(args);
    let metadata = Metadata::from([
        ("spec".to_string(), spec.to_text()),
        ("vocab".to_string(), vocab.to_text()),
    ]);
    save_checkpoint_with(&checkpoint, &store, step, &metadata)?;
    println!(
        "saved {} (with its sizes and vocabulary); {:.0} s in all",
        checkpoint.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `--classify` and `--eval`: load the model that training saved in `--out`.
fn use_trained(args: &Args) -> AnyResult<()> {
    let checkpoint = model_file(args);
    if !checkpoint.exists() {
        return Err(format!(
            "no trained model at {}: train one first (cargo run --release --example sentiment -- --model {}{})",
            checkpoint.display(),
            if args.kind == CellKind::Lstm { "lstm" } else { "gru" },
            if args.out.ends_with("target/sentiment") {
                String::new()
            } else {
                format!(" --out {}", args.out.display())
            }
        )
        .into());
    }
    // One read: the sizes, the vocabulary and the weights come from the same save.
    let file = read_checkpoint(&checkpoint)?;
    let (_, metadata) = file.metadata()?;
    let name = checkpoint.display().to_string();
    let entry = |key: &str| -> AnyResult<&String> {
        metadata
            .get(key)
            .ok_or_else(|| format!("{name}: not a sentiment model (no `{key}` in its metadata)").into())
    };
    let spec = ModelSpec::from_text(&format!("{name} (spec)"), entry("spec")?)?;
    let vocab = Vocab::from_text(&format!("{name} (vocab)"), entry("vocab")?)?;
    if vocab.len() != spec.vocab {
        return Err(format!(
            "{name}: a vocabulary of {} tokens, the model has {}",
            vocab.len(),
            spec.vocab
        )
        .into());
    }
    let ctx = Context::new()?;
    let mut store = ParamStore::new();
    let model = spec.build(&ctx, &mut store, &mut StdRng::seed_from_u64(0), None)?;
    file.load_into(&mut store)?;
    if let Some(text) = &args.classify {
        let example = Labelled {
            tokens: word_tokens(text),
            label: 0,
        };
        let known = example.tokens.iter().filter(|t| vocab.id(t) != Vocab::UNK_ID).count();
        let p = probabilities(&ctx, &mut store, &model, &vocab, std::slice::from_ref(&example))?[0];
        println!("{text}");
        println!(
            "  negative {:.3}   positive {:.3}   -> {}   ({known} of {} tokens in the vocabulary)",
            p[0],
            p[1],
            if p[1] > p[0] { "positive" } else { "negative" },
            example.tokens.len()
        );
    }
    if let Some(path) = &args.eval {
        let examples = load_labelled_tsv(path)?;
        if examples.is_empty() {
            return Err(format!("{}: no sentences", path.display()).into());
        }
        let matrix = evaluate(&ctx, &mut store, &model, &vocab, &examples)?;
        println!(
            "{}: accuracy {:.2} % ({} of {})\n{}",
            path.display(),
            100.0 * matrix.accuracy(),
            matrix.count(0, 0) + matrix.count(1, 1),
            matrix.total(),
            matrix.table(&CLASSES)
        );
    }
    Ok(())
}
