//! The chapter's LSTM-vs-GRU comparison: parameter counts (equal to PyTorch's, checked
//! against the closed forms `G * (H*I + H*H + 2H)`, G = 4 for the LSTM and 3 for the GRU)
//! and measured time of a forward pass and of a training step (forward, cross-entropy,
//! backward, Adam) for a bare layer and for the chapter's classifiers built on each
//! (SentimentLSTM with 2 layers, TextClassifierGRU), printed as a table.
//!
//!     cargo run --release --example lstm_vs_gru [-- --batch 32 --steps 50 --input 100 --hidden 256 --samples 5]

#[path = "cli/mod.rs"]
mod cli;

use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tsumugi::graph::{Graph, ParamStore, Var};
use tsumugi::loss::CrossEntropy;
use tsumugi::nn::models::RecurrentModel;
use tsumugi::nn::{linear, recurrent, VarBuilder};
use tsumugi::nn::{CellKind, RecurrentConfig};
use tsumugi::optim::Adam;
use tsumugi::{Context, Result, Tensor};

const USAGE: &str = "usage: lstm_vs_gru [--batch N] [--steps N] [--input N] [--hidden N] [--samples N]

Parameter counts and forward / training-step times of an LSTM and a GRU.
Defaults: --batch 32 --steps 50 --input 100 --hidden 256 --samples 5
";

struct Options {
    batch: usize,
    steps: usize,
    input: usize,
    hidden: usize,
    samples: usize,
}

fn parse() -> std::result::Result<Option<Options>, Box<dyn std::error::Error>> {
    let mut o = Options {
        batch: 32,
        steps: 50,
        input: 100,
        hidden: 256,
        samples: 5,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--help" | "-h" => return Ok(None),
            "--batch" => o.batch = cli::positive(&flag, args.next())?,
            "--steps" => o.steps = cli::positive(&flag, args.next())?,
            "--input" => o.input = cli::positive(&flag, args.next())?,
            "--hidden" => o.hidden = cli::positive(&flag, args.next())?,
            "--samples" => o.samples = cli::positive(&flag, args.next())?,
            other => return Err(format!("unknown flag {other}\n\n{USAGE}").into()),
        }
    }
    Ok(Some(o))
}

fn main() {
    cli::run_main(USAGE, parse, run);
}

/// Median milliseconds of `samples` calls after one warm-up call (pipelines compile).
fn median_ms(samples: usize, mut call: impl FnMut() -> Result<()>) -> Result<f64> {
    call()?;
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let start = Instant::now();
        call()?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Median milliseconds of a forward pass (eval mode, logits read back) and of a training
/// step (cross-entropy against `labels`, backward, Adam) of the model whose logits
/// `logits` builds.
fn time_model(
    store: &mut ParamStore,
    labels: &Tensor,
    samples: usize,
    logits: impl Fn(&mut Graph<'_>) -> Result<Var>,
) -> Result<(f64, f64)> {
    let ctx = labels.context().clone();
    let forward_ms = median_ms(samples, || {
        let mut g = Graph::eval(&ctx, store);
        let out = logits(&mut g)?;
        let value = g.value(out).clone();
        g.submit();
        value.to_vec::<f32>().map(|_| ())
    })?;
    let adam = Adam::default();
    let mut step = 0;
    let train_ms = median_ms(samples, || {
        step += 1;
        store.zero_grad();
        let mut g = Graph::train(&ctx, store, 0, step);
        let out = logits(&mut g)?;
        let loss = g.cross_entropy(out, labels, &CrossEntropy::default())?;
        let value = g.value(loss).clone();
        g.backward(loss)?;
        g.adam_step(&adam, step)?;
        g.submit();
        value.to_vec::<f32>().map(|_| ())
    })?;
    Ok((forward_ms, train_ms))
}

/// What a row of the table holds.
struct Row {
    name: String,
    params: usize,
    pytorch: usize,
    forward_ms: f64,
    train_ms: f64,
}

fn run(o: &Options) -> Result<()> {
    let ctx = Context::new()?;
    println!("adapter: {}", ctx.adapter());
    let mut rng = StdRng::seed_from_u64(0);
    let (b, t, i, h) = (o.batch, o.steps, o.input, o.hidden);
    let features: Vec<f32> = (0..b * t * i).map(|_| rng.random_range(-1.0..1.0)).collect();
    let features = Tensor::from_slice(&ctx, &features, &[b, t, i])?;
    let vocab = 1000;
    let tokens: Vec<u32> = (0..b * t).map(|_| rng.random_range(0..vocab as u32)).collect();
    let tokens = Tensor::from_slice(&ctx, &tokens, &[b, t])?;
    let labels: Vec<u32> = (0..b).map(|_| rng.random_range(0..2)).collect();
    let labels = Tensor::from_slice(&ctx, &labels, &[b])?;
    let layer_params = |gates: usize, input: usize| gates * (h * input + h * h + 2 * h);

    let mut rows = Vec::new();
    for (kind, gates, name) in [(CellKind::Lstm, 4, "LSTM"), (CellKind::Gru, 3, "GRU")] {
        // The bare layer (nn.LSTM(I, H) / nn.GRU(I, H)) and a Linear(H, 2) head for the loss.
        let mut store = ParamStore::new();
        let layer = recurrent(
            RecurrentConfig::new(kind, i, h),
            VarBuilder::with_prefix(&ctx, &mut store, &mut rng, "rnn"),
        )?;
        let layer_count = store.count().0;
        let fc = linear(h, 2, VarBuilder::with_prefix(&ctx, &mut store, &mut rng, "fc"))?;
        let (forward_ms, train_ms) = time_model(&mut store, &labels, o.samples, |g| {
            let x = g.input(&features);
            let out = layer.forward(g, x, None)?;
            fc.forward(g, out.h_n[0])
        })?;
        rows.push(Row {
            name: format!("nn.{name}({i}, {h})"),
            params: layer_count,
            pytorch: layer_params(gates, i),
            forward_ms,
            train_ms,
        });

        // The chapter's classifier on the same cell: SentimentLSTM(1000, I, H, 2, 2 layers,
        // dropout 0.5) or TextClassifierGRU(1000, I, H, 2).
        let mut store = ParamStore::new();
        let (model, label, pytorch) = match kind {
            CellKind::Lstm => (
                RecurrentModel::sentiment_lstm(&ctx, &mut store, &mut rng, vocab, i, h, 2, 2, 0.5)?,
                format!("SentimentLSTM({vocab}, {i}, {h}, 2, 2 layers)"),
                vocab * i + layer_params(4, i) + layer_params(4, h) + 2 * h + 2,
            ),
            _ => (
                RecurrentModel::text_classifier_gru(&ctx, &mut store, &mut rng, vocab, i, h, 2)?,
                format!("TextClassifierGRU({vocab}, {i}, {h}, 2)"),
                vocab * i + layer_params(3, i) + 2 * h + 2,
            ),
        };
        let (forward_ms, train_ms) = time_model(&mut store, &labels, o.samples, |g| {
            Ok(model.forward(g, &tokens, None)?.logits)
        })?;
        rows.push(Row {
            name: label,
            params: store.count().0,
            pytorch,
            forward_ms,
            train_ms,
        });
    }

    println!(
        "\nbatch {b}, {t} steps; times are medians of {} runs on this adapter\n",
        o.samples
    );
    println!(
        "{:<44} {:>11} {:>13} {:>12} {:>15}",
        "model", "parameters", "PyTorch says", "forward ms", "train step ms"
    );
    for row in &rows {
        let check = if row.params == row.pytorch { "=" } else { "MISMATCH" };
        println!(
            "{:<44} {:>11} {:>11} {check} {:>12.2} {:>15.2}",
            row.name, row.params, row.pytorch, row.forward_ms, row.train_ms
        );
    }
    let (lstm, gru) = (&rows[0], &rows[2]);
    println!(
        "\nthe GRU layer has {:.0}% of the LSTM's parameters and takes {:.0}% of its forward time, {:.0}% of its training step",
        100.0 * gru.params as f64 / lstm.params as f64,
        100.0 * gru.forward_ms / lstm.forward_ms,
        100.0 * gru.train_ms / lstm.train_ms
    );
    if rows.iter().any(|r| r.params != r.pytorch) {
        return Err(tsumugi::Error::InvalidArgument {
            message: "a parameter count differs from PyTorch's".into(),
        });
    }
    Ok(())
}
