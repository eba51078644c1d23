//! English-to-Japanese translation: the chapter's Seq2SeqWithAttention (LSTM encoder,
//! Bahdanau attention, LSTM decoder over [embedding; context]) trained on the Tanaka
//! corpus (`data/tanaka_en_ja/`), then evaluated on its dev split with corpus chrF and
//! character BLEU-4, sample translations and attention heat maps.
//!
//! ```sh
//! cargo run --release --example translate                      # train (defaults), evaluate, save
//! cargo run --release --example translate -- --translate "I like tea."
//! cargo run --release --example translate -- --eval data/tanaka_en_ja/dev.tsv --beam 4
//! cargo run --release --example translate -- --toy              # the chapter's 4 sentences
//! cargo run --release --example translate -- --help
//! ```
//!
//! This file is the program (flags, training); `evaluate.rs` scores translations (and runs
//! `--translate` / `--eval`), `translator.rs` holds the model with its vocabularies and
//! checkpoint, `heat_maps.rs` the attention heat maps, `toy.rs` the `--toy` run.

#[path = "../cli/mod.rs"]
mod cli;
mod data;
mod evaluate;
mod heat_maps;
mod run;
mod toy;
mod translator;

use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::SeedableRng;
use tsumugi::graph::{Graph, ParamStore};
use tsumugi::kernels::Lengths;
use tsumugi::loss::CrossEntropy;
use tsumugi::nn::seq2seq::Seq2Seq;
use tsumugi::optim::Adam;
use tsumugi::text::{bucketed_batches, char_tokens, read_tsv, word_tokens, Example, Seq2SeqBatch, Vocab};
use tsumugi::{Context, Error, Tensor};

use data::training_pairs;
use evaluate::{decoding_name, evaluate, evaluate_checkpoint, print_samples};
use heat_maps::heat_maps;
use run::{decayed_lr, EpochRecord, History, Schedule};
use toy::toy;
use translator::{Meta, Translator};

const HELP: &str = "\
translate: English-to-Japanese seq2seq with Bahdanau attention on the Tanaka corpus

USAGE: cargo run --release --example translate -- [FLAGS]

Training (the default action), then evaluation on the dev split:
  --epochs N            epochs over the training split            [default: 10]
  --minutes X           a training-time budget: training stops when it is spent (mid-epoch
                        if need be), with the learning-rate schedule spread over it, then
                        evaluates and saves as usual; --epochs stays an upper bound if given
  --batch N             sentence pairs per step                    [default: 64]
  --lr X                Adam learning rate                         [default: 0.003]
  --lr-end X            learning rate at the last step, reached by
                        linear decay from --lr                     [default: --lr]
  --decay-start F       the decay starts after this fraction of the whole run
                        (counted across --resume)                  [default: 0]
  --hidden N            LSTM hidden size                           [default: 256]
  --embed N             embedding size                             [default: 128]
  --teacher-forcing X   teacher-forcing ratio in [0, 1]            [default: 1]
  --clip X              gradient-norm clipping                     [default: 1]
  --label-smoothing X   cross-entropy label smoothing in [0, 1)    [default: 0]
  --min-freq N          keep tokens seen at least N times          [default: 2]
  --max-train N         use only the first N training pairs        [default: all]
  --seed N              seed of initialisation and batching        [default: 0]
  --dev-every-epoch     score greedy dev chrF after every epoch (about 10 s each) and draw
                        the curve (loss and dev chrF per epoch) as OUT/curve.png
  --full                train on train_full.tsv.xz (113,698 pairs) instead of train.tsv,
                        by default with the recipe measured there: --epochs 6
                        --lr-end 0.0003 --decay-start 0.5
  --data DIR            dataset folder                             [default: data/tanaka_en_ja]
  --out DIR             heat maps and vocabularies go here         [default: target/translate]
  --checkpoint PATH     checkpoint file                            [default: OUT/translate.safetensors]
  --resume              continue training from the checkpoint
  --profile N           time N training steps per kernel on the GPU (after 3
                        warm-up steps), print the table and stop

Using a trained checkpoint (no training):
  --eval FILE           chrF and BLEU of the checkpoint on a TSV english<TAB>japanese[<TAB>...]
  --translate TEXT      translate one English sentence
  --beam N              beam width for decoding (1 = greedy); after
                        training, dev is scored greedy and with it [default: 4]
  --average A,B,..      use the mean of the weights of these checkpoints of one run
                        (checkpoint averaging) instead of --checkpoint
  --samples N           sample translations printed after scoring  [default: 5]
  --length-penalty X    beam ranking by log-prob / length^X       [default: 1]

Other:
  --toy                 train on the chapter's 4 sentence pairs (character-level Japanese;
                        the chapter's word-level listing: --example chapter -- 2.3);
                        greedy decoding returns them
  -h, --help            this text
";

/// Everything the command line sets.
#[derive(Clone, Debug)]
struct Args {
    epochs: usize,
    /// `--epochs` was given (with `--minutes` it is an upper bound, else there is none).
    epochs_given: bool,
    minutes: Option<f64>,
    batch: usize,
    lr: f64,
    lr_end: Option<f64>,
    decay_start: Option<f64>,
    hidden: usize,
    embed: usize,
    teacher_forcing: f64,
    clip: f64,
    label_smoothing: f64,
    min_freq: usize,
    max_train: Option<usize>,
    seed: u64,
    full: bool,
    dev_every_epoch: bool,
    data: PathBuf,
    out: PathBuf,
    checkpoint: Option<PathBuf>,
    resume: bool,
    eval: Option<PathBuf>,
    translate: Option<String>,
    beam: usize,
    /// `--average`: checkpoints whose mean weights are evaluated.
    average: Vec<PathBuf>,
    samples: usize,
    length_penalty: f32,
    toy: bool,
    profile: Option<usize>,
    /// `--hidden` or `--embed` was given (with `--resume` they must match the checkpoint).
    sizes_given: bool,
}

impl Default for Args {
    fn default() -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        Args {
            epochs: 10,
            epochs_given: false,
            minutes: None,
            batch: 64,
            lr: 0.003,
            lr_end: None,
            decay_start: None,
            hidden: 256,
            embed: 128,
            teacher_forcing: 1.0,
            clip: 1.0,
            label_smoothing: 0.0,
            min_freq: 2,
            max_train: None,
            seed: 0,
            full: false,
            dev_every_epoch: false,
            data: root.join("data/tanaka_en_ja"),
            out: root.join("target/translate"),
            checkpoint: None,
            resume: false,
            eval: None,
            translate: None,
            beam: 4,
            average: Vec::new(),
            samples: 5,
            length_penalty: 1.0,
            toy: false,
            profile: None,
            sizes_given: false,
        }
    }
}

/// `--full`'s learning rate at its last step (from `--lr` 0.003).
const FULL_LR_END: f64 = 0.0003;

/// Training steps run before `--profile` starts timing (pipelines built, pool filled).
const PROFILE_WARM_UP: u64 = 3;

type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;

fn parse_args() -> AnyResult<Option<Args>> {
    let mut args = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--epochs" => {
                args.epochs = cli::value(&flag, it.next())?;
                args.epochs_given = true;
            }
            "--minutes" => args.minutes = Some(cli::value(&flag, it.next())?),
            "--batch" => args.batch = cli::value(&flag, it.next())?,
            "--lr" => args.lr = cli::value(&flag, it.next())?,
            "--lr-end" => args.lr_end = Some(cli::value(&flag, it.next())?),
            "--decay-start" => args.decay_start = Some(cli::value(&flag, it.next())?),
            "--hidden" => {
                args.hidden = cli::value(&flag, it.next())?;
                args.sizes_given = true;
            }
            "--embed" => {
                args.embed = cli::value(&flag, it.next())?;
                args.sizes_given = true;
            }
            "--teacher-forcing" => args.teacher_forcing = cli::value(&flag, it.next())?,
            "--clip" => args.clip = cli::value(&flag, it.next())?,
            "--label-smoothing" => args.label_smoothing = cli::value(&flag, it.next())?,
            "--min-freq" => args.min_freq = cli::value(&flag, it.next())?,
            "--max-train" => args.max_train = Some(cli::value(&flag, it.next())?),
            "--seed" => args.seed = cli::value(&flag, it.next())?,
            "--full" => args.full = true,
            "--dev-every-epoch" => args.dev_every_epoch = true,
            "--data" => args.data = cli::value(&flag, it.next())?,
            "--out" => args.out = cli::value(&flag, it.next())?,
            "--checkpoint" => args.checkpoint = Some(cli::value(&flag, it.next())?),
            "--resume" => args.resume = true,
            "--eval" => args.eval = Some(cli::value(&flag, it.next())?),
            "--translate" => args.translate = Some(cli::value(&flag, it.next())?),
            "--beam" => args.beam = cli::value(&flag, it.next())?,
            "--samples" => args.samples = cli::value(&flag, it.next())?,
            "--length-penalty" => args.length_penalty = cli::value(&flag, it.next())?,
            "--average" => {
                let list: String = cli::value(&flag, it.next())?;
                args.average = list.split(',').filter(|p| !p.is_empty()).map(PathBuf::from).collect();
            }
            "--toy" => args.toy = true,
            "--profile" => args.profile = Some(cli::value(&flag, it.next())?),
            other => return Err(format!("unknown flag {other:?} (see --help)").into()),
        }
    }
    if args.full {
        // The full split's recipe (benches/RESULTS.md): constant, then a linear decay to a
        // tenth over the second half of six epochs. Flags given override each part.
        if !args.epochs_given {
            args.epochs = 6;
        }
        args.lr_end = args.lr_end.or(Some(FULL_LR_END));
        args.decay_start = args.decay_start.or(Some(0.5));
    }
    if !args.length_penalty.is_finite() {
        return Err("--length-penalty must be a finite number".into());
    }
    if args.decay_start.is_some_and(|f| !(0.0..1.0).contains(&f)) {
        return Err("--decay-start must be in [0, 1)".into());
    }
    if args.epochs == 0 && args.eval.is_none() && args.translate.is_none() && !args.toy {
        return Err(
            "--epochs must be at least 1 (to use a trained checkpoint without training: --eval or --translate)".into(),
        );
    }
    if args.minutes.is_some_and(|m| !(m > 0.0 && m.is_finite())) {
        return Err("--minutes must be a positive number".into());
    }
    if args.batch == 0 || args.hidden == 0 || args.embed == 0 || args.beam == 0 || args.profile == Some(0) {
        return Err("--batch, --hidden, --embed, --beam and --profile must be at least 1".into());
    }
    if !(0.0..=1.0).contains(&args.teacher_forcing) {
        return Err(format!("--teacher-forcing must be in [0, 1], got {}", args.teacher_forcing).into());
    }
    // The kernels compute in f32: 1e39 is finite as an f64 and infinite there.
    let positive = |x: f64| x > 0.0 && (x as f32).is_finite();
    if !positive(args.lr) || !positive(args.clip) {
        return Err(format!("--lr and --clip must be positive and at most {:e} (f32)", f32::MAX).into());
    }
    if args.lr_end.is_some_and(|x| !(x >= 0.0 && (x as f32).is_finite())) {
        return Err("--lr-end must be a finite f32 number >= 0".into());
    }
    if !(0.0..1.0).contains(&args.label_smoothing) {
        return Err(format!("--label-smoothing must be in [0, 1), got {}", args.label_smoothing).into());
    }
    if !args.average.is_empty() && args.eval.is_none() && args.translate.is_none() {
        return Err("--average needs --eval FILE or --translate TEXT (it evaluates, it does not train)".into());
    }
    Ok(Some(args))
}

fn main() {
    cli::run_main(HELP, parse_args, run);
}

fn run(args: &Args) -> AnyResult<()> {
    if args.toy {
        return toy(args);
    }
    let checkpoint = args
        .checkpoint
        .clone()
        .unwrap_or_else(|| args.out.join("translate.safetensors"));
    if args.eval.is_some() || args.translate.is_some() {
        return evaluate_checkpoint(args, &checkpoint);
    }
    train(args, &checkpoint)
}

/// Creates the output folder and checks that the checkpoint can be written there, before
/// any training: a bad `--out` must not fail an hour later, after the first epoch.
fn check_output_paths(out: &Path, checkpoint: &Path) -> AnyResult<()> {
    if out.exists() && !out.is_dir() {
        return Err(format!("--out {}: is a file, not a folder", out.display()).into());
    }
    std::fs::create_dir_all(out).map_err(|err| format!("--out {}: cannot create it: {err}", out.display()))?;
    if checkpoint.is_dir() {
        return Err(format!("--checkpoint {}: is a folder, not a file", checkpoint.display()).into());
    }
    let folder = checkpoint
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(folder)
        .map_err(|err| format!("--checkpoint {}: cannot create its folder: {err}", checkpoint.display()))?;
    // A probe file proves the folder takes writes (permissions, a read-only mount).
    let probe = folder.join(format!(".translate-write-probe-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .map_err(|err| format!("--checkpoint {}: cannot write there: {err}", checkpoint.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

fn train(args: &Args, checkpoint: &Path) -> AnyResult<()> {
    check_output_paths(&args.out, checkpoint)?;
    let dev_path = args.data.join("dev.tsv");
    let train_pairs = training_pairs(args)?;
    let dev_pairs = read_tsv(&dev_path)?;
    if dev_pairs.is_empty() {
        return Err(format!("{}: no sentence pairs", dev_path.display()).into());
    }
    let ctx = Context::new()?;
    println!("adapter: {}", ctx.adapter());
    let mut store = ParamStore::new();
    let (translator, mut epoch, mut step, mut history) = if args.resume {
        let (translator, meta, step) = Translator::load(&ctx, &mut store, checkpoint)?;
        if args.sizes_given && (meta.hidden, meta.embed) != (args.hidden, args.embed) {
            return Err(format!(
                "--resume: {} has hidden {} and embed {}, but --hidden {} --embed {} were given; \
                 drop them or train a new model",
                checkpoint.display(),
                meta.hidden,
                meta.embed,
                args.hidden,
                args.embed
            )
            .into());
        }
        println!(
            "resumed {} after epoch {} (step {step}{})",
            checkpoint.display(),
            meta.epoch,
            if meta.partial_steps > 0 {
                format!("; {} steps of epoch {} were trained before a --minutes budget ended, so that epoch runs whole again", meta.partial_steps, meta.epoch + 1)
            } else {
                String::new()
            }
        );
        (translator, meta.epoch, step, meta.history)
    } else {
        let src: Vec<Vec<String>> = train_pairs.iter().map(|p| word_tokens(&p.source)).collect();
        let tgt: Vec<Vec<String>> = train_pairs.iter().map(|p| char_tokens(&p.target)).collect();
        let src_vocab = Vocab::build(&src, args.min_freq);
        let tgt_vocab = Vocab::build(&tgt, args.min_freq);
        let translator = Translator::new(
            &ctx,
            &mut store,
            src_vocab,
            tgt_vocab,
            args.embed,
            args.hidden,
            args.seed,
        )?;
        (translator, 0, 0, History::default())
    };
    let translator = Translator {
        length_penalty: args.length_penalty,
        ..translator
    };
    let examples: Vec<Example> = train_pairs.iter().map(|p| translator.encode(p)).collect();
    let (total, _) = store.count();
    println!(
        "{} training pairs ({}), {} dev pairs; vocabularies: {} English words, {} Japanese characters; {} parameters",
        examples.len(),
        if args.full { "train_full" } else { "train" },
        dev_pairs.len(),
        translator.src_vocab.len(),
        translator.tgt_vocab.len(),
        total
    );
    let (embed, hidden) = translator_dims(&store, &translator);
    println!(
        "embed {embed}, hidden {hidden}, batch {}, Adam lr {}{}, clip {}, teacher forcing {}{}, epochs: {}",
        args.batch,
        args.lr,
        args.lr_end
            .map(|end| format!(
                " decaying linearly to {end}{}",
                match args.decay_start {
                    Some(f) if f > 0.0 => format!(" over the last {:.0}% of the run", 100.0 * (1.0 - f)),
                    _ => String::new(),
                }
            ))
            .unwrap_or_default(),
        args.clip,
        args.teacher_forcing,
        if args.label_smoothing > 0.0 {
            format!(", label smoothing {}", args.label_smoothing)
        } else {
            String::new()
        },
        match (args.minutes, args.epochs_given) {
            (Some(m), false) => format!("as many as {m} min allow"),
            (Some(m), true) => format!("at most {} within {m} min", args.epochs),
            (None, _) => args.epochs.to_string(),
        }
    );
    let lr_end = args.lr_end.unwrap_or(args.lr);
    let ce = CrossEntropy {
        ignore_index: Some(Vocab::PAD_ID),
        label_smoothing: args.label_smoothing as f32,
        ..CrossEntropy::default()
    };
    // Batching and teacher forcing draw from their own stream, keyed by the epoch so a
    // resumed run continues where it would have been.
    let start = Instant::now();
    let mut profile_start = start;
    let mut run_steps = 0u64;
    let first_epoch = epoch;
    // Under a budget without --epochs, epochs go on until the budget ends them.
    let epochs = if args.minutes.is_some() && !args.epochs_given {
        usize::MAX / 2
    } else {
        args.epochs
    };
    let steps_per_epoch = bucketed_batches(&examples, args.batch, &mut StdRng::seed_from_u64(0))?.len() as u64;
    let mut schedule = Schedule::new(
        steps_per_epoch.saturating_mul(epochs as u64),
        steps_per_epoch.saturating_mul(first_epoch as u64),
        args.minutes,
    );
    let minutes_before = history.minutes();
    let mut stopped_by_budget = false;
    let mut partial_steps = 0u64;
    let mut last_lr = args.lr;
    while epoch < first_epoch + epochs && !stopped_by_budget {
        epoch += 1;
        let mut rng = StdRng::seed_from_u64(args.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let batches = bucketed_batches(&examples, args.batch, &mut rng)?;
        let bar = ProgressBar::new(batches.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}<{eta})")
                .map_err(|err| format!("progress bar template: {err}"))?
                .progress_chars("=> "),
        );
        bar.set_prefix(if epochs == args.epochs {
            format!("{epoch}/{}", first_epoch + epochs)
        } else {
            epoch.to_string()
        });
        let epoch_start = Instant::now();
        let (mut loss_sum, mut loss_tokens, mut tokens) = (0.0f64, 0usize, 0usize);
        for (i, indices) in batches.iter().enumerate() {
            // How far through the whole run's schedule (steps, or time under --minutes).
            let done = schedule.progress(run_steps);
            let adam = Adam {
                lr: decayed_lr(args.lr, lr_end, args.decay_start.unwrap_or(0.0), done),
                ..Adam::default()
            };
            last_lr = adam.lr;
            let refs: Vec<&Example> = indices.iter().map(|&i| &examples[i]).collect();
            let batch = Seq2SeqBatch::new(&refs)?;
            step += 1;
            let loss = train_step(
                &ctx,
                &mut store,
                &translator.model,
                &batch,
                args,
                &adam,
                &ce,
                step,
                &mut rng,
            )?;
            run_steps += 1;
            schedule.after_step(run_steps, steps_per_epoch);
            if let Some(steps) = args.profile {
                if run_steps == PROFILE_WARM_UP {
                    ctx.start_profiling()?;
                    profile_start = Instant::now();
                } else if run_steps == PROFILE_WARM_UP + steps as u64 {
                    let profile = ctx.finish_profiling()?;
                    bar.finish_and_clear();
                    println!(
                        "GPU time of training steps {} to {run_steps} of this run ({:.0} ms of wall-clock time):",
                        PROFILE_WARM_UP + 1,
                        profile_start.elapsed().as_secs_f64() * 1e3
                    );
                    println!("{profile}");
                    println!("per kernel:");
                    for e in profile.by_kernel() {
                        println!(
                            "{:>10.2} ms {:>7} calls  {}",
                            e.total.as_secs_f64() * 1e3,
                            e.calls,
                            e.kernel
                        );
                    }
                    return Ok(());
                }
            }
            loss_sum += f64::from(loss) * batch.target_tokens as f64;
            loss_tokens += batch.target_tokens;
            tokens += batch.target_tokens + batch.source_lengths.iter().map(|&l| l as usize).sum::<usize>();
            bar.set_message(format!(
                "loss {:.3}, {:.0} tok/s",
                loss_sum / loss_tokens as f64,
                tokens as f64 / epoch_start.elapsed().as_secs_f64()
            ));
            bar.inc(1);
            if schedule.over_budget() && i + 1 < batches.len() {
                stopped_by_budget = true;
                partial_steps = (i + 1) as u64;
                break;
            }
        }
        bar.finish_and_clear();
        println!(
            "epoch {epoch}: loss {:.3}, {:.0} tok/s, {:.1} min, lr at its end {last_lr:.2e}",
            loss_sum / loss_tokens.max(1) as f64,
            tokens as f64 / epoch_start.elapsed().as_secs_f64(),
            epoch_start.elapsed().as_secs_f64() / 60.0
        );
        if stopped_by_budget {
            println!(
                "the --minutes budget ended training after {partial_steps} of epoch {epoch}'s {} steps",
                batches.len()
            );
            let meta = Meta {
                embed,
                hidden,
                epoch: epoch - 1,
                partial_steps,
                history: history.clone(),
            };
            translator.save(&store, checkpoint, &meta, step)?;
            break;
        }
        let dev = if args.dev_every_epoch {
            let scores = evaluate(&ctx, &mut store, &translator, &dev_pairs, 1)?;
            println!("  dev (greedy): chrF {:.1}, char-BLEU {:.1}", scores.chrf, scores.bleu);
            Some((scores.chrf, scores.bleu))
        } else {
            None
        };
        history.epochs.push(EpochRecord {
            epoch,
            minutes: minutes_before + start.elapsed().as_secs_f64() / 60.0,
            loss: loss_sum / loss_tokens.max(1) as f64,
            dev,
        });
        let meta = Meta {
            embed,
            hidden,
            epoch,
            partial_steps: 0,
            history: history.clone(),
        };
        translator.save(&store, checkpoint, &meta, step)?;
        if args.dev_every_epoch {
            history.write_png(&args.out.join("curve.png"))?;
        }
        if schedule.over_budget() {
            stopped_by_budget = true;
        }
    }
    if let Some(steps) = args.profile {
        return Err(format!(
            "--profile {steps}: the run had only {run_steps} steps, fewer than {PROFILE_WARM_UP} warm-up steps and {steps} to time"
        )
        .into());
    }
    let train_time = start.elapsed();
    println!(
        "trained {} epochs{} in {:.1} min; checkpoint {}",
        epoch - first_epoch - usize::from(partial_steps > 0),
        if partial_steps > 0 {
            format!(" and {partial_steps} steps")
        } else {
            String::new()
        },
        train_time.as_secs_f64() / 60.0,
        checkpoint.display()
    );
    history.print();
    if args.dev_every_epoch {
        println!("curve: {}", args.out.join("curve.png").display());
    }

    // Greedy decoding always (what the chapter and the PyTorch reference report), and
    // beam search too when --beam asks for it; the samples show the last.
    let mut decodings = vec![1];
    if args.beam > 1 {
        decodings.push(args.beam);
    }
    let mut scores = None;
    for beam in decodings {
        let eval_start = Instant::now();
        let result = evaluate(&ctx, &mut store, &translator, &dev_pairs, beam)?;
        println!(
            "dev ({} pairs, {}): chrF {:.1}, char-BLEU {:.1} (evaluation {:.0} s; total {:.1} min)",
            dev_pairs.len(),
            decoding_name(beam),
            result.chrf,
            result.bleu,
            eval_start.elapsed().as_secs_f64(),
            start.elapsed().as_secs_f64() / 60.0
        );
        scores = Some(result);
    }
    let scores = scores.ok_or("no evaluation ran")?;
    print_samples(&dev_pairs, &scores.hypotheses, args.samples);
    heat_maps(
        &ctx,
        &mut store,
        &translator,
        &dev_pairs[..dev_pairs.len().min(4)],
        &args.out,
    )?;
    Ok(())
}

/// (embed, hidden) of a trained model, from its parameter shapes.
fn translator_dims(store: &ParamStore, translator: &Translator) -> (usize, usize) {
    let embed = store.value(translator.model.encoder.embedding.weight).shape()[1];
    let hidden = store.value(translator.model.decoder.fc.weight).shape()[1];
    (embed, hidden)
}

/// One training step on one batch: the mean cross-entropy per target token.
#[allow(clippy::too_many_arguments)]
fn train_step(
    ctx: &Context,
    store: &mut ParamStore,
    model: &Seq2Seq,
    batch: &Seq2SeqBatch,
    args: &Args,
    adam: &Adam,
    ce: &CrossEntropy,
    step: u64,
    rng: &mut StdRng,
) -> tsumugi::Result<f32> {
    let src = Tensor::from_slice(ctx, &batch.source, &[batch.batch, batch.source_steps])?;
    let lengths = Lengths::new(ctx, &batch.source_lengths, batch.source_steps)?;
    let inputs: Vec<Tensor> = batch
        .decoder_inputs
        .iter()
        .map(|ids| Tensor::from_slice(ctx, ids, &[batch.batch, 1]))
        .collect::<tsumugi::Result<_>>()?;
    let labels = Tensor::from_slice(ctx, &batch.labels, &[batch.labels.len()])?;
    store.zero_grad();
    let mut g = Graph::train(ctx, store, args.seed, step);
    let logits = model.forward_time_major(&mut g, &src, Some(&lengths), &inputs, args.teacher_forcing, rng)?;
    let loss = g.cross_entropy(logits, &labels, ce)?;
    let loss_value = g.value(loss).clone();
    g.backward(loss)?;
    g.clip_grad_norm(args.clip)?;
    g.adam_step(adam, step)?;
    g.submit();
    let loss = loss_value.to_vec::<f32>()?[0];
    if !loss.is_finite() {
        return Err(Error::InvalidArgument {
            message: format!("the loss became {loss} at step {step}; try a smaller --lr"),
        });
    }
    Ok(loss)
}
