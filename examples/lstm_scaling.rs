//! How an LSTM layer's time grows with the sequence length T, the hidden size H and the
//! batch B: three sweeps around B=32, T=64, H=I=256, each timed (median of a few runs,
//! submitted and waited for) and fitted to `time ~ x^k` by least squares on log-log
//! axes. k near 1 in T is the point: one fused dispatch per step, no per-step overhead
//! that grows. `--backward` times forward+backward of `output.sum()` too.
//!
//!     cargo run --release --example lstm_scaling [-- --backward] [--samples N]

#[path = "cli/mod.rs"]
mod cli;

use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tsumugi::graph::{Graph, ParamStore};
use tsumugi::nn::{recurrent, VarBuilder};
use tsumugi::nn::{CellKind, RecurrentConfig};
use tsumugi::{Context, Result, Tensor};

/// (B, T, H)
type Shape = (usize, usize, usize);

/// A sweep: the swept dimension's name, the shapes, and which dimension of them is swept.
type Sweep = (&'static str, Vec<Shape>, fn(Shape) -> usize);

struct Options {
    backward: bool,
    samples: usize,
}

const USAGE: &str = "usage: lstm_scaling [--backward] [--samples N]

Times an LSTM layer over sweeps of T, H and B and fits time ~ x^k.
";

fn parse() -> std::result::Result<Option<Options>, Box<dyn std::error::Error>> {
    let mut options = Options {
        backward: false,
        samples: 3,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--backward" => options.backward = true,
            "--samples" => options.samples = cli::positive(&flag, args.next())?,
            "--help" | "-h" => return Ok(None),
            other => return Err(format!("unknown argument {other} (see --help)").into()),
        }
    }
    Ok(Some(options))
}

/// Median seconds of `samples` runs of one layer (B, T, H), after one warm-up run.
fn time_layer(
    ctx: &Context,
    (batch, steps, hidden): (usize, usize, usize),
    backward: bool,
    samples: usize,
) -> Result<f64> {
    let mut rng = StdRng::seed_from_u64(1);
    let mut store = ParamStore::new();
    let layer = recurrent(
        RecurrentConfig::new(CellKind::Lstm, hidden, hidden),
        VarBuilder::with_prefix(ctx, &mut store, &mut rng, "lstm"),
    )?;
    let data: Vec<f32> = (0..batch * steps * hidden)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let x = Tensor::from_slice(ctx, &data, &[batch, steps, hidden])?;
    let mut run = || -> Result<f64> {
        let start = Instant::now();
        store.zero_grad();
        let mut g = if backward {
            Graph::train(ctx, &mut store, 0, 0)
        } else {
            Graph::eval(ctx, &mut store)
        };
        let input = g.input(&x);
        let out = layer.forward(&mut g, input, None)?.output;
        if backward {
            let loss = g.sum(out)?;
            g.backward(loss)?;
        }
        g.submit();
        ctx.wait_idle_blocking()?;
        Ok(start.elapsed().as_secs_f64())
    };
    run()?;
    let mut times = (0..samples).map(|_| run()).collect::<Result<Vec<f64>>>()?;
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Least-squares slope of log(time) against log(x).
fn exponent(points: &[(f64, f64)]) -> f64 {
    let logs: Vec<(f64, f64)> = points.iter().map(|&(x, t)| (x.ln(), t.ln())).collect();
    let n = logs.len() as f64;
    let (mx, my) = (
        logs.iter().map(|p| p.0).sum::<f64>() / n,
        logs.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let cov: f64 = logs.iter().map(|&(x, y)| (x - mx) * (y - my)).sum();
    let var: f64 = logs.iter().map(|&(x, _)| (x - mx).powi(2)).sum();
    cov / var
}

fn main() {
    cli::run_main(USAGE, parse, run);
}

fn run(options: &Options) -> Result<()> {
    let ctx = Context::new()?;
    println!("adapter: {}", ctx.adapter());
    let modes: &[bool] = if options.backward { &[false, true] } else { &[false] };
    let sweeps: [Sweep; 3] = [
        ("T", [16, 32, 64, 128, 256].map(|t| (32, t, 256)).to_vec(), |d| d.1),
        ("H", [64, 128, 256, 512, 1024].map(|h| (32, 64, h)).to_vec(), |d| d.2),
        ("B", [1, 8, 32, 128].map(|b| (b, 64, 256)).to_vec(), |d| d.0),
    ];
    for &backward in modes {
        let what = if backward { "forward+backward" } else { "forward" };
        for (name, shapes, pick) in &sweeps {
            println!("\nLSTM layer {what}, sweeping {name}:");
            println!("{:>5} {:>5} {:>5} {:>12} {:>14}", "B", "T", "H", "ms", "ms per step");
            let mut points = Vec::new();
            for &shape in shapes {
                let seconds = time_layer(&ctx, shape, backward, options.samples)?;
                println!(
                    "{:>5} {:>5} {:>5} {:>12.2} {:>14.3}",
                    shape.0,
                    shape.1,
                    shape.2,
                    seconds * 1e3,
                    seconds * 1e3 / shape.1 as f64
                );
                points.push((pick(shape) as f64, seconds));
            }
            println!("fitted: time ~ {name}^{:.2}", exponent(&points));
        }
    }
    Ok(())
}
