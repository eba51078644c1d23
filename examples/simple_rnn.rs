//! The chapter's first example: `SimpleRNN(input_size, hidden_size, output_size)`, an
//! `nn.RNN` (tanh, batch-first) whose last step's output goes through a Linear layer,
//! run on random input. Prints the shapes at every stage and the outputs.
//!
//!     cargo run --release --example simple_rnn [-- --batch 3 --steps 5 --input 10 --hidden 20 --outputs 2 --seed 0]

#[path = "cli/mod.rs"]
mod cli;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tsumugi::graph::{Graph, ParamStore};
use tsumugi::nn::models::RecurrentModel;
use tsumugi::{Context, Result, Tensor};

const USAGE: &str = "usage: simple_rnn [--batch N] [--steps N] [--input N] [--hidden N] [--outputs N] [--seed N]

The chapter's SimpleRNN (nn.RNN + Linear on the last step) on random input [batch, steps, input].
Defaults: --batch 3 --steps 5 --input 10 --hidden 20 --outputs 2 --seed 0
";

struct Options {
    batch: usize,
    steps: usize,
    input: usize,
    hidden: usize,
    outputs: usize,
    seed: u64,
}

fn parse() -> std::result::Result<Option<Options>, Box<dyn std::error::Error>> {
    let mut o = Options {
        batch: 3,
        steps: 5,
        input: 10,
        hidden: 20,
        outputs: 2,
        seed: 0,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--help" | "-h" => return Ok(None),
            "--batch" => o.batch = cli::positive(&flag, args.next())?,
            "--steps" => o.steps = cli::positive(&flag, args.next())?,
            "--input" => o.input = cli::positive(&flag, args.next())?,
            "--hidden" => o.hidden = cli::positive(&flag, args.next())?,
            "--outputs" => o.outputs = cli::positive(&flag, args.next())?,
            "--seed" => o.seed = cli::value(&flag, args.next())?,
            other => return Err(format!("unknown flag {other}\n\n{USAGE}").into()),
        }
    }
    Ok(Some(o))
}

fn main() {
    cli::run_main(USAGE, parse, run);
}

fn run(o: &Options) -> Result<()> {
    let ctx = Context::new()?;
    println!("adapter: {}", ctx.adapter());
    let mut rng = StdRng::seed_from_u64(o.seed);
    let mut store = ParamStore::new();
    let model = RecurrentModel::simple_rnn(&ctx, &mut store, &mut rng, o.input, o.hidden, o.outputs)?;
    println!(
        "SimpleRNN(input_size={}, hidden_size={}, output_size={}): {} parameters",
        o.input,
        o.hidden,
        o.outputs,
        store.count().0
    );
    for (name, value, _) in store.entries() {
        println!("  {name:<18} {:?}", value.shape());
    }
    // x = torch.randn(batch, steps, input): N(0, 1) by Box-Muller.
    let normal: Vec<f32> = (0..o.batch * o.steps * o.input)
        .map(|_| {
            let (u1, u2): (f32, f32) = (rng.random_range(f32::EPSILON..1.0), rng.random());
            (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
        })
        .collect();
    let x = Tensor::from_slice(&ctx, &normal, &[o.batch, o.steps, o.input])?;
    let mut g = Graph::eval(&ctx, &mut store);
    let forward = model.forward(&mut g, &x, None)?;
    let (output, hidden, logits) = (
        g.value(forward.states.output).clone(),
        g.value(forward.states.h_n[0]).clone(),
        g.value(forward.logits).clone(),
    );
    g.submit();
    println!("\ninput x:             {:?}  (batch, seq_len, input_size)", x.shape());
    println!(
        "rnn output:          {:?}  (batch, seq_len, hidden_size)",
        output.shape()
    );
    println!(
        "rnn hidden (h_n):    [1, {}, {}]  (num_layers, batch, hidden_size)",
        o.batch, o.hidden
    );
    println!("out[:, -1, :] -> fc: {:?}  (batch, output_size)", logits.shape());
    let (output, hidden, logits) = (
        output.to_vec::<f32>()?,
        hidden.to_vec::<f32>()?,
        logits.to_vec::<f32>()?,
    );
    // The last step's output is the final hidden state (one layer, no padding).
    let last: Vec<f32> = output
        .chunks(o.steps * o.hidden)
        .flat_map(|row| row[(o.steps - 1) * o.hidden..].to_vec())
        .collect();
    println!("out[:, -1, :] == h_n[-1]: {}", last == hidden);
    println!("\noutput logits:");
    for (b, row) in logits.chunks(o.outputs).enumerate() {
        let values: Vec<String> = row.iter().map(|v| format!("{v:+.4}")).collect();
        println!("  sample {b}: [{}]", values.join(", "));
    }
    Ok(())
}
