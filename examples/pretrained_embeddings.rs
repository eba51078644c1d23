//! Pretrained word vectors on the sentiment task: the same classifier (the chapter's
//! TextClassifierGRU by default, `--model lstm` for SentimentLSTM) trained three times on
//! rt-polarity's fixed 90/10 split with the same seed, batches and recurrent
//! initialisation, changing only the embedding table:
//!
//! - `frozen`: GloVe 6B 50d (`data/glove_6b_50d_top5k/`, PDDL 1.0), not trained
//!   (`nn.Embedding.from_pretrained(glove, freeze=True)`);
//! - `fine-tuned`: the same table, trained with the rest;
//! - `random`: N(0, 1) as `nn.Embedding` starts, trained.
//!
//! Vocabulary words without a GloVe vector (and the special tokens) get N(0, s^2) rows,
//! s the standard deviation of the GloVe values, so they look like the others. Prints
//! each variant's test accuracy per epoch and a summary, and draws the three training
//! loss curves (moving averages over 20 steps) into one PNG. The chart has no text (the
//! bitmap backend is built without a font engine); its legend and axes are printed.
//!
//! ```sh
//! cargo run --release --example pretrained_embeddings [-- --epochs 3 --model gru]
//! ```

mod sentiment_common;

#[path = "cli/mod.rs"]
mod cli;
use std::path::{Path, PathBuf};
use std::time::Instant;

use plotters::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sentiment_common::{
    build_vocab, evaluate, load_rt_polarity, parse_model, train_epoch, AnyResult, ModelSpec, TrainSettings,
};
use tsumugi::graph::ParamStore;
use tsumugi::io::write_atomically;
use tsumugi::nn::{CellKind, Embedding};
use tsumugi::text::{Vocab, WordVectors};
use tsumugi::{Context, Tensor};

const HELP: &str = "\
pretrained_embeddings: GloVe 50d frozen vs fine-tuned vs random embeddings on rt-polarity

USAGE: cargo run --release --example pretrained_embeddings -- [FLAGS]

  --model gru|lstm      TextClassifierGRU or SentimentLSTM (2 layers) [default: gru]
  --epochs N            epochs per variant                         [default: 3]
  --batch N             sentences per step                         [default: 64]
  --lr X                Adam learning rate                         [default: 0.002]
  --hidden N            hidden size (the embedding is GloVe's 50)  [default: 64]
  --min-freq N          vocabulary: training tokens seen N+ times  [default: 2]
  --seed N              the seed every variant shares              [default: 0]
  --data DIR            folder with rt-polarity.neg/.pos           [default: data/rt_polarity]
  --glove FILE          GloVe text file                            [default: data/glove_6b_50d_top5k/glove.6B.50d.top5k.txt]
  --out FILE            the loss-curve PNG                         [default: target/pretrained_embeddings/loss_curves.png]
  -h, --help            this text
";

#[derive(Clone, Debug)]
struct Args {
    kind: CellKind,
    epochs: usize,
    batch: usize,
    lr: f64,
    hidden: usize,
    min_freq: usize,
    seed: u64,
    data: PathBuf,
    glove: PathBuf,
    out: PathBuf,
}

fn parse_args() -> AnyResult<Option<Args>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut args = Args {
        kind: CellKind::Gru,
        epochs: 3,
        batch: 64,
        lr: 0.002,
        hidden: 64,
        min_freq: 2,
        seed: 0,
        data: root.join("data/rt_polarity"),
        glove: root.join("data/glove_6b_50d_top5k/glove.6B.50d.top5k.txt"),
        out: root.join("target/pretrained_embeddings/loss_curves.png"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--model" => args.kind = parse_model(&flag, it.next())?,
            "--epochs" => args.epochs = cli::value(&flag, it.next())?,
            "--batch" => args.batch = cli::value(&flag, it.next())?,
            "--lr" => args.lr = cli::value(&flag, it.next())?,
            "--hidden" => args.hidden = cli::value(&flag, it.next())?,
            "--min-freq" => args.min_freq = cli::value(&flag, it.next())?,
            "--seed" => args.seed = cli::value(&flag, it.next())?,
            "--data" => args.data = cli::value(&flag, it.next())?,
            "--glove" => args.glove = cli::value(&flag, it.next())?,
            "--out" => args.out = cli::value(&flag, it.next())?,
            other => return Err(format!("unknown flag {other:?} (see --help)").into()),
        }
    }
    if args.batch == 0 || args.hidden == 0 || args.epochs == 0 {
        return Err("--batch, --hidden and --epochs must be at least 1".into());
    }
    if !(args.lr > 0.0 && args.lr.is_finite()) {
        return Err("--lr must be a positive number".into());
    }
    Ok(Some(args))
}

fn main() {
    cli::run_main(HELP, parse_args, run);
}

/// A draw of N(0, 1) by Box-Muller.
fn normal(rng: &mut StdRng) -> f32 {
    let u: f32 = rng.random_range(f32::MIN_POSITIVE..1.0);
    let v: f32 = rng.random_range(0.0..1.0);
    (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Variant {
    Frozen,
    FineTuned,
    Random,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Frozen => "frozen GloVe",
            Variant::FineTuned => "fine-tuned GloVe",
            Variant::Random => "random",
        }
    }

    /// The curve's colour and its name in the printed legend.
    fn colour(self) -> (RGBColor, &'static str) {
        match self {
            Variant::Frozen => (RGBColor(31, 119, 180), "blue"),
            Variant::FineTuned => (RGBColor(214, 39, 40), "red"),
            Variant::Random => (RGBColor(44, 160, 44), "green"),
        }
    }
}

/// What one variant's training gave.
struct Outcome {
    variant: Variant,
    losses: Vec<f32>,
    accuracies: Vec<f64>,
    trainable: usize,
}

fn run(args: &Args) -> AnyResult<()> {
    let start = Instant::now();
    let (train, test) = load_rt_polarity(&args.data)
        .map_err(|err| format!("{err}\n(the data ships in data/rt_polarity; --data DIR points elsewhere)"))?;
    let glove = WordVectors::read_glove(&args.glove).map_err(|err| {
        format!("{err}\n(the vectors ship in data/glove_6b_50d_top5k; --glove FILE points elsewhere)")
    })?;
    let vocab = build_vocab(&train, args.min_freq);
    let covered = (4..vocab.len() as u32)
        .filter(|&id| glove.get(vocab.token(id)).is_some())
        .count();
    let (tokens, known) = train.iter().flat_map(|e| &e.tokens).fold((0, 0), |(n, k), t| {
        let in_vocab = vocab.id(t) != Vocab::UNK_ID;
        (n + 1, k + usize::from(in_vocab && glove.get(t).is_some()))
    });
    let ctx = Context::new()?;
    println!("adapter: {}", ctx.adapter());
    println!(
        "rt-polarity: {} training, {} test sentences; vocabulary {} (min freq {}); GloVe: {} words x {}, \
         {covered} of the {} vocabulary words found ({:.1} % of training tokens)",
        train.len(),
        test.len(),
        vocab.len(),
        args.min_freq,
        glove.len(),
        glove.dim(),
        vocab.len() - 4,
        100.0 * known as f64 / tokens.max(1) as f64
    );
    let spec = ModelSpec {
        kind: args.kind,
        vocab: vocab.len(),
        embed: glove.dim(),
        hidden: args.hidden,
        layers: if args.kind == CellKind::Lstm { 2 } else { 1 },
        dropout: if args.kind == CellKind::Lstm { 0.5 } else { 0.0 },
    };
    let settings = TrainSettings {
        batch: args.batch,
        lr: args.lr,
        clip: 1.0,
        seed: args.seed,
    };
    let scale = glove.std();
    let mut outcomes = Vec::new();
    for variant in [Variant::Frozen, Variant::FineTuned, Variant::Random] {
        let variant_start = Instant::now();
        // Separate streams, so every variant gets the same recurrent and fc weights and
        // the same batches; only the table differs.
        let mut table_rng = StdRng::seed_from_u64(args.seed ^ 0x5EED_7AB1E);
        let mut rng = StdRng::seed_from_u64(args.seed);
        let mut batch_rng = StdRng::seed_from_u64(args.seed.wrapping_add(1));
        let table = match variant {
            Variant::Random => (0..vocab.len() * glove.dim()).map(|_| normal(&mut table_rng)).collect(),
            _ => glove.embedding_table(&vocab, || scale * normal(&mut table_rng)).0,
        };
        let mut store = ParamStore::new();
        let table = Tensor::from_slice(&ctx, &table, &[vocab.len(), glove.dim()])?;
        let embedding = Embedding::from_pretrained(&mut store, "embedding", table, variant == Variant::Frozen, None)?;
        let model = spec.build(&ctx, &mut store, &mut rng, Some(embedding))?;
        let trainable = store.count().1;
        let mut outcome = Outcome {
            variant,
            losses: Vec::new(),
            accuracies: Vec::new(),
            trainable,
        };
        let mut step = 0;
        for epoch in 1..=args.epochs {
            let losses = train_epoch(
                &ctx,
                &mut store,
                &model,
                &vocab,
                &train,
                &settings,
                &mut step,
                &mut batch_rng,
            )?;
            let matrix = evaluate(&ctx, &mut store, &model, &vocab, &test)?;
            println!(
                "{:<16} epoch {epoch}: train loss {:.4}, test accuracy {:.2} %",
                variant.name(),
                losses.iter().sum::<f32>() / losses.len().max(1) as f32,
                100.0 * matrix.accuracy()
            );
            outcome.losses.extend(losses);
            outcome.accuracies.push(matrix.accuracy());
        }
        println!("{:<16} {:.0} s", variant.name(), variant_start.elapsed().as_secs_f64());
        outcomes.push(outcome);
    }

    println!(
        "\n{} ({} hidden), {} epochs, seed {}:",
        if args.kind == CellKind::Lstm {
            "SentimentLSTM"
        } else {
            "TextClassifierGRU"
        },
        args.hidden,
        args.epochs,
        args.seed
    );
    println!(
        "{:<18} {:>20} {:>15}",
        "embedding", "trainable parameters", "test accuracy"
    );
    for o in &outcomes {
        println!(
            "{:<18} {:>20} {:>13.2} %",
            o.variant.name(),
            o.trainable,
            100.0 * o.accuracies.last().copied().unwrap_or(0.0)
        );
    }
    let (y_low, y_high) = plot(&args.out, &outcomes, 20)?;
    let steps = outcomes.first().map_or(0, |o| o.losses.len());
    println!(
        "\nloss curves: {} (x: step 1..{steps}, a black frame, epoch boundaries as grey vertical lines; y: loss {y_low:.1}..{y_high:.1}, \
         grey lines every 0.1; {})",
        args.out.display(),
        outcomes
            .iter()
            .map(|o| format!("{} = {}", o.variant.colour().1, o.variant.name()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("{:.0} s in all", start.elapsed().as_secs_f64());
    Ok(())
}

/// Moving average of `xs` over the last `window` values.
fn smooth(xs: &[f32], window: usize) -> Vec<f32> {
    let mut sum = 0.0;
    xs.iter()
        .enumerate()
        .map(|(i, &x)| {
            sum += x;
            if i >= window {
                sum -= xs[i - window];
            }
            sum / (i + 1).min(window) as f32
        })
        .collect()
}

/// Draws each outcome's smoothed loss into an 800x500 RGB PNG at `path`; returns the y
/// range shown.
fn plot(path: &Path, outcomes: &[Outcome], window: usize) -> AnyResult<(f32, f32)> {
    const W: u32 = 800;
    const H: u32 = 500;
    let curves: Vec<Vec<f32>> = outcomes.iter().map(|o| smooth(&o.losses, window)).collect();
    let steps = curves.iter().map(Vec::len).max().unwrap_or(1).max(2);
    let finite = curves.iter().flatten().copied().filter(|v| v.is_finite());
    let low = (finite.clone().fold(f32::INFINITY, f32::min) * 10.0).floor() / 10.0;
    let high = (finite.fold(f32::NEG_INFINITY, f32::max) * 10.0).ceil() / 10.0;
    let (low, high) = if low < high { (low, high) } else { (0.0, 1.0) };
    let per_epoch = outcomes
        .first()
        .map_or(steps, |o| o.losses.len() / o.accuracies.len().max(1));
    let mut pixels = vec![255u8; (W * H * 3) as usize];
    {
        let plot_error = |err: &dyn std::fmt::Display| format!("plotting: {err}");
        let root = BitMapBackend::with_buffer(&mut pixels, (W, H)).into_drawing_area();
        let mut chart = ChartBuilder::on(&root)
            .margin(20)
            .build_cartesian_2d(1f32..steps as f32, low..high)
            .map_err(|e| plot_error(&e))?;
        let grey = RGBColor(210, 210, 210);
        let mut y = low;
        while y <= high + 1e-6 {
            chart
                .draw_series(LineSeries::new([(1.0, y), (steps as f32, y)], grey))
                .map_err(|e| plot_error(&e))?;
            y += 0.1;
        }
        for boundary in (per_epoch..steps).step_by(per_epoch.max(1)) {
            let x = boundary as f32;
            chart
                .draw_series(LineSeries::new([(x, low), (x, high)], grey))
                .map_err(|e| plot_error(&e))?;
        }
        chart
            .plotting_area()
            .draw(&Rectangle::new(
                [(1.0, low), (steps as f32, high)],
                BLACK.stroke_width(1),
            ))
            .map_err(|e| plot_error(&e))?;
        for (outcome, curve) in outcomes.iter().zip(&curves) {
            let points = curve
                .iter()
                .enumerate()
                .map(|(i, &v)| ((i + 1) as f32, v.clamp(low, high)));
            chart
                .draw_series(LineSeries::new(points, outcome.variant.colour().0.stroke_width(2)))
                .map_err(|e| plot_error(&e))?;
        }
        root.present().map_err(|e| plot_error(&e))?;
    }
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, W, H);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&pixels)?;
    writer.finish()?;
    if let Some(folder) = path.parent() {
        std::fs::create_dir_all(folder).map_err(|err| format!("cannot create {}: {err}", folder.display()))?;
    }
    write_atomically(path, &bytes)?;
    Ok((low, high))
}
