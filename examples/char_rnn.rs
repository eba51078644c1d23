//! Character-level language model: the chapter's CharLevelRNN (embedding, 2-layer LSTM,
//! Linear per step) trained on Tiny Shakespeare (`data/tinyshakespeare/input.txt`,
//! from karpathy/char-rnn, MIT) with random windows of the first 90 % of the text; the
//! last 10 % gives a validation loss. Then it writes text: a `--prime` run through the
//! model, then `--length` characters each drawn from `softmax(logits / temperature)`.
//!
//! Sampling is done on the host from the read-back logits (65 values a step, a seeded
//! `StdRng`); the states stay on the GPU between steps.
//!
//! ```sh
//! cargo run --release --example char_rnn                                   # train, save, sample
//! cargo run --release --example char_rnn -- --resume --steps 1000          # go on to step 1000
//! cargo run --release --example char_rnn -- --sample-only --prime "ROMEO:" --temperature 0.6
//! ```

#[path = "cli/mod.rs"]
mod cli;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tsumugi::graph::{check_step_finite, Graph, ParamStore, Var};
use tsumugi::io::{read_checkpoint, save_checkpoint_with, CheckpointFile, Metadata};
use tsumugi::loss::CrossEntropy;
use tsumugi::nn::models::RecurrentModel;
use tsumugi::optim::Adam;
use tsumugi::{Context, Tensor};

type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;

const HELP: &str = "\
char_rnn: the chapter's CharLevelRNN (2-layer LSTM) on Tiny Shakespeare, then sampling

USAGE: cargo run --release --example char_rnn -- [FLAGS]

Training (the default action; a checkpoint is saved every --save-every steps and at the end):
  --steps N             train up to this many Adam steps in all      [default: 300]
  --batch N             windows per step                             [default: 32]
  --seq-len N           characters per window                        [default: 64]
  --embed N             embedding size                               [default: 32]
  --hidden N            LSTM hidden size                             [default: 128]
  --layers N            LSTM layers                                  [default: 2]
  --lr X                Adam learning rate                           [default: 0.003]
  --seed N              initialisation, windows and sampling seed    [default: 0]
  --log-every N         print the loss every N steps                 [default: 25]
  --save-every N        checkpoint every N steps                     [default: 100]
  --data FILE           the text                                     [default: data/tinyshakespeare/input.txt]
  --checkpoint PATH     checkpoint file (characters and sizes inside) [default: target/char_rnn/char_rnn.safetensors]
  --resume              continue from the checkpoint up to --steps

Sampling (after training, or alone with --sample-only):
  --sample-only         load the checkpoint and only generate text
  --prime TEXT          text the sample starts from                  [default: \"ROMEO:\"]
  --length N            characters to generate                       [default: 400]
  --temperature X       > 0; lower is safer, higher is wilder        [default: 0.8]

  -h, --help            this text
";

#[derive(Clone, Debug)]
struct Args {
    steps: u64,
    batch: usize,
    seq_len: usize,
    embed: usize,
    hidden: usize,
    layers: usize,
    lr: f64,
    seed: u64,
    log_every: u64,
    save_every: u64,
    data: PathBuf,
    checkpoint: PathBuf,
    resume: bool,
    sample_only: bool,
    prime: String,
    length: usize,
    temperature: f32,
}

fn parse_args() -> AnyResult<Option<Args>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut args = Args {
        steps: 300,
        batch: 32,
        seq_len: 64,
        embed: 32,
        hidden: 128,
        layers: 2,
        lr: 0.003,
        seed: 0,
        log_every: 25,
        save_every: 100,
        data: root.join("data/tinyshakespeare/input.txt"),
        checkpoint: root.join("target/char_rnn/char_rnn.safetensors"),
        resume: false,
        sample_only: false,
        prime: "ROMEO:".into(),
        length: 400,
        temperature: 0.8,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--steps" => args.steps = cli::value(&flag, it.next())?,
            "--batch" => args.batch = cli::value(&flag, it.next())?,
            "--seq-len" => args.seq_len = cli::value(&flag, it.next())?,
            "--embed" => args.embed = cli::value(&flag, it.next())?,
            "--hidden" => args.hidden = cli::value(&flag, it.next())?,
            "--layers" => args.layers = cli::value(&flag, it.next())?,
            "--lr" => args.lr = cli::value(&flag, it.next())?,
            "--seed" => args.seed = cli::value(&flag, it.next())?,
            "--log-every" => args.log_every = cli::value(&flag, it.next())?,
            "--save-every" => args.save_every = cli::value(&flag, it.next())?,
            "--data" => args.data = cli::value(&flag, it.next())?,
            "--checkpoint" => args.checkpoint = cli::value(&flag, it.next())?,
            "--resume" => args.resume = true,
            "--sample-only" => args.sample_only = true,
            "--prime" => args.prime = cli::value(&flag, it.next())?,
            "--length" => args.length = cli::value(&flag, it.next())?,
            "--temperature" => args.temperature = cli::value(&flag, it.next())?,
            other => return Err(format!("unknown flag {other:?} (see --help)").into()),
        }
    }
    if [args.batch, args.seq_len, args.embed, args.hidden, args.layers].contains(&0) {
        return Err("--batch, --seq-len, --embed, --hidden and --layers must be at least 1".into());
    }
    if args.log_every == 0 || args.save_every == 0 {
        return Err("--log-every and --save-every must be at least 1".into());
    }
    // The kernels compute in f32: 1e39 is finite as an f64 and infinite there.
    if !(args.lr > 0.0 && (args.lr as f32).is_finite()) {
        return Err(format!("--lr must be a positive number, at most {:e} (f32)", f32::MAX).into());
    }
    if !(args.temperature > 0.0 && args.temperature.is_finite()) {
        return Err("--temperature must be a positive number".into());
    }
    if args.prime.is_empty() {
        return Err("--prime must not be empty (the model needs a first character)".into());
    }
    Ok(Some(args))
}

fn main() {
    cli::run_main(HELP, parse_args, run);
}

/// The characters of the text in code-point order: id i is `chars[i]`.
struct Chars {
    chars: Vec<char>,
}

impl Chars {
    fn id(&self, c: char) -> Option<u32> {
        self.chars.binary_search(&c).ok().map(|i| i as u32)
    }
}

/// What the checkpoint's metadata holds beside the weights (one file, written atomically):
/// the characters, in id order, and the model's sizes.
fn metadata(args: &Args, chars: &Chars) -> Metadata {
    Metadata::from([
        ("chars".to_string(), chars.chars.iter().collect()),
        ("embed".to_string(), args.embed.to_string()),
        ("hidden".to_string(), args.hidden.to_string()),
        ("layers".to_string(), args.layers.to_string()),
    ])
}

/// The characters and (embed, hidden, layers) of the checkpoint `file` (read from `path`),
/// from its metadata.
fn read_metadata(path: &Path, file: &CheckpointFile) -> AnyResult<(Chars, (usize, usize, usize))> {
    let (_, metadata) = file.metadata()?;
    let get = |key: &str| -> AnyResult<&String> {
        metadata.get(key).ok_or_else(|| {
            format!(
                "{}: not a char_rnn checkpoint (no `{key}` in its metadata)",
                path.display()
            )
            .into()
        })
    };
    let count = |key: &str| -> AnyResult<usize> {
        let raw = get(key)?;
        raw.parse()
            .map_err(|_| format!("{}: {key} is {raw:?}, not a count", path.display()).into())
    };
    let chars = Chars {
        chars: get("chars")?.chars().collect(),
    };
    Ok((chars, (count("embed")?, count("hidden")?, count("layers")?)))
}

/// The ids of `--prime`, or an error naming the first character the model does not know.
fn prime_ids(args: &Args, chars: &Chars) -> AnyResult<Vec<u32>> {
    args.prime
        .chars()
        .map(|c| {
            chars
                .id(c)
                .ok_or_else(|| format!("--prime: {c:?} is not among the training characters").into())
        })
        .collect()
}

fn run(args: &Args) -> AnyResult<()> {
    let ctx = Context::new()?;
    println!("adapter: {}", ctx.adapter());
    let mut store = ParamStore::new();
    let mut rng = StdRng::seed_from_u64(args.seed);

    if args.sample_only {
        if !args.checkpoint.exists() {
            return Err(format!(
                "no checkpoint at {}: train first (cargo run --release --example char_rnn)",
                args.checkpoint.display()
            )
            .into());
        }
        // One read: the characters, sizes and weights come from the same save.
        let file = read_checkpoint(&args.checkpoint)?;
        let (chars, (embed, hidden, layers)) = read_metadata(&args.checkpoint, &file)?;
        prime_ids(args, &chars)?;
        let model =
            RecurrentModel::char_level_rnn(&ctx, &mut store, &mut rng, chars.chars.len(), embed, hidden, layers)?;
        let step = file.load_into(&mut store)?;
        println!("{} (step {step})", args.checkpoint.display());
        return sample(&ctx, &mut store, &model, &chars, args, &mut rng);
    }

    let text = std::fs::read_to_string(&args.data).map_err(|err| {
        format!(
            "cannot read {}: {err}\n(the text ships in data/tinyshakespeare; --data FILE points elsewhere)",
            args.data.display()
        )
    })?;
    // A byte-order mark is not part of the text (it would become a character of the model).
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut chars: Vec<char> = text.chars().collect();
    chars.sort_unstable();
    chars.dedup();
    let chars = Chars { chars };
    let ids: Vec<u32> = text.chars().filter_map(|c| chars.id(c)).collect();
    let split = ids.len() * 9 / 10;
    let (train, valid) = ids.split_at(split);
    let window = args.seq_len + 1;
    if valid.len() < window || train.len() < window {
        return Err(format!(
            "{}: {} characters is too short for windows of {window}",
            args.data.display(),
            ids.len()
        )
        .into());
    }
    // Checked before any training, so that a typo does not cost a run.
    prime_ids(args, &chars)?;
    let model = RecurrentModel::char_level_rnn(
        &ctx,
        &mut store,
        &mut rng,
        chars.chars.len(),
        args.embed,
        args.hidden,
        args.layers,
    )?;
    println!(
        "{}: {} characters ({} for training, {} for validation), {} distinct",
        args.data.display(),
        ids.len(),
        train.len(),
        valid.len(),
        chars.chars.len()
    );
    println!(
        "CharLevelRNN({}, {}, {}, {} layers): {} parameters; batch {} x {} characters, Adam lr {}, clip 5",
        chars.chars.len(),
        args.embed,
        args.hidden,
        args.layers,
        store.count().0,
        args.batch,
        args.seq_len,
        args.lr
    );
    let mut step = 0;
    if args.resume {
        let file = read_checkpoint(&args.checkpoint).map_err(|err| format!("--resume: {err}"))?;
        let (saved, sizes) = read_metadata(&args.checkpoint, &file).map_err(|err| format!("--resume: {err}"))?;
        if saved.chars != chars.chars || sizes != (args.embed, args.hidden, args.layers) {
            return Err(format!(
                "{} was trained on other characters or sizes than these flags give",
                args.checkpoint.display()
            )
            .into());
        }
        step = file.load_into(&mut store).map_err(|err| format!("--resume: {err}"))?;
        println!("resumed {} at step {step}", args.checkpoint.display());
        // A different stream of windows than the first run's.
        rng = StdRng::seed_from_u64(args.seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    }
    if let Some(folder) = args.checkpoint.parent() {
        std::fs::create_dir_all(folder).map_err(|err| format!("cannot create {}: {err}", folder.display()))?;
    }
    let metadata = metadata(args, &chars);
    let save = |store: &ParamStore, step: u64| -> AnyResult<()> {
        Ok(save_checkpoint_with(&args.checkpoint, store, step, &metadata)?)
    };
    let first_step = step;

    // Validation: 16 fixed windows spread over the held-out text.
    let valid_starts: Vec<usize> = (0..16).map(|i| i * (valid.len() - window) / 15).collect();
    let (valid_x, valid_y) = windows(valid, &valid_starts, args.seq_len);
    let valid_x = Tensor::from_slice(&ctx, &valid_x, &[valid_starts.len(), args.seq_len])?;
    let valid_y = Tensor::from_slice(&ctx, &valid_y, &[valid_y.len()])?;

    let adam = Adam {
        lr: args.lr,
        ..Adam::default()
    };
    let start = Instant::now();
    let mut window_losses = Vec::new();
    while step < args.steps {
        step += 1;
        let starts: Vec<usize> = (0..args.batch)
            .map(|_| rng.random_range(0..=train.len() - window))
            .collect();
        let (x, y) = windows(train, &starts, args.seq_len);
        let x = Tensor::from_slice(&ctx, &x, &[args.batch, args.seq_len])?;
        let y = Tensor::from_slice(&ctx, &y, &[y.len()])?;
        store.zero_grad();
        let mut g = Graph::train(&ctx, &mut store, args.seed, step);
        // Logits [B * T, V] in (b, t) order, as the targets.
        let logits = model.forward(&mut g, &x, None)?.logits;
        let loss = g.cross_entropy(logits, &y, &CrossEntropy::default())?;
        let loss_value = g.value(loss).clone();
        g.backward(loss)?;
        let norm = g.clip_grad_norm(5.0)?;
        g.adam_step_guarded(&adam, step, &norm)?;
        g.submit();
        let loss = loss_value.to_vec::<f32>()?[0];
        check_step_finite(step, loss, norm.to_vec::<f32>()?[0])?;
        window_losses.push(loss);
        if step % args.log_every == 0 || step == args.steps {
            let mut g = Graph::eval(&ctx, &mut store);
            let logits = model.forward(&mut g, &valid_x, None)?.logits;
            let valid_loss = g.cross_entropy(logits, &valid_y, &CrossEntropy::default())?;
            let valid_loss = g.value(valid_loss).clone();
            g.submit();
            println!(
                "step {step:>5}: train loss {:.3} (mean of the last {}), validation loss {:.3}, {:.0} s",
                window_losses.iter().sum::<f32>() / window_losses.len() as f32,
                window_losses.len(),
                valid_loss.to_vec::<f32>()?[0],
                start.elapsed().as_secs_f64()
            );
            window_losses.clear();
        }
        if step % args.save_every == 0 {
            save(&store, step)?;
        }
    }
    // A run that trained no step leaves the checkpoint as it was.
    if step > first_step {
        save(&store, step)?;
        println!("saved {} at step {step}", args.checkpoint.display());
    } else {
        println!(
            "no step trained (the checkpoint is at step {step}, --steps {}); nothing saved",
            args.steps
        );
    }
    sample(&ctx, &mut store, &model, &chars, args, &mut rng)
}

/// Inputs `[B, T]` and next-character targets `[B * T]` of the windows at `starts`.
fn windows(ids: &[u32], starts: &[usize], steps: usize) -> (Vec<u32>, Vec<u32>) {
    let mut x = Vec::with_capacity(starts.len() * steps);
    let mut y = Vec::with_capacity(starts.len() * steps);
    for &s in starts {
        x.extend_from_slice(&ids[s..s + steps]);
        y.extend_from_slice(&ids[s + 1..s + steps + 1]);
    }
    (x, y)
}

/// Runs `ids` `[1, T]` through the model from the states `h`, `c` (empty: zeros);
/// returns the last step's logits and the new states, left on the GPU.
fn advance(
    ctx: &Context,
    store: &mut ParamStore,
    model: &RecurrentModel,
    ids: &[u32],
    h: &[Tensor],
    c: &[Tensor],
) -> AnyResult<(Vec<f32>, Vec<Tensor>, Vec<Tensor>)> {
    let embedding = model.embedding.ok_or("CharLevelRNN has an embedding")?;
    let x = Tensor::from_slice(ctx, ids, &[1, ids.len()])?;
    let mut g = Graph::eval(ctx, store);
    let input = embedding.forward(&mut g, &x)?;
    let h0: Vec<Var> = h.iter().map(|t| g.input(t)).collect();
    let c0: Vec<Var> = c.iter().map(|t| g.input(t)).collect();
    let states = model.rnn.forward_from(&mut g, input, None, &h0, &c0)?;
    let logits = model.fc.forward(&mut g, states.output)?;
    let logits = g.value(logits).clone();
    let h_n = states.h_n.iter().map(|&v| g.value(v).clone()).collect();
    let c_n = states.c_n.iter().map(|&v| g.value(v).clone()).collect();
    g.submit();
    let all = logits.to_vec::<f32>()?;
    let vocab = *logits.shape().last().unwrap_or(&1);
    Ok((all[all.len() - vocab..].to_vec(), h_n, c_n))
}

/// Draws an index from `softmax(logits / temperature)`.
fn draw(logits: &[f32], temperature: f32, rng: &mut StdRng) -> usize {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let weights: Vec<f64> = logits
        .iter()
        .map(|&l| f64::from((l - max) / temperature).exp())
        .collect();
    let mut target = rng.random::<f64>() * weights.iter().sum::<f64>();
    for (i, w) in weights.iter().enumerate() {
        target -= w;
        if target <= 0.0 {
            return i;
        }
    }
    weights.len() - 1
}

fn sample(
    ctx: &Context,
    store: &mut ParamStore,
    model: &RecurrentModel,
    chars: &Chars,
    args: &Args,
    rng: &mut StdRng,
) -> AnyResult<()> {
    let prime = prime_ids(args, chars)?;
    let start = Instant::now();
    let (mut logits, mut h, mut c) = advance(ctx, store, model, &prime, &[], &[])?;
    let mut out = args.prime.clone();
    for _ in 0..args.length {
        let next = draw(&logits, args.temperature, rng);
        out.push(chars.chars[next]);
        (logits, h, c) = advance(ctx, store, model, &[next as u32], &h, &c)?;
    }
    println!(
        "\n--- temperature {}, {} characters in {:.1} s ---\n{out}\n---",
        args.temperature,
        args.length,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
