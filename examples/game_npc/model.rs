//! The NPCs' model: the chapter's 2-layer character LSTM (`CharLevelRNN`), trained at
//! start-up on the host's device, or loaded from (and saved to) a safetensors checkpoint.
//! Shared by game_npc and examples/bevy_npc (through `#[path]`), so both speak alike.

use std::path::Path;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tsumugi::graph::{Graph, ParamStore};
use tsumugi::loss::CrossEntropy;
use tsumugi::nn::generator::Generator;
use tsumugi::nn::models::RecurrentModel;
use tsumugi::optim::Adam;
use tsumugi::{Context, Tensor};

/// What the NPCs learn to say.
const CORPUS: &str = "the guard says: halt! who goes there? the smith says: fine steel, \
fair price. the farmer says: rain is coming, the crops need it. the guard says: the gate \
closes at dusk. the merchant says: bread, ale and rope for sale. the smith says: bring me \
iron and i will make a sword. the farmer says: the wolves took two sheep last night. the \
merchant says: fair prices, friend, fair prices! the guard says: keep to the road after \
dark. the innkeeper says: a warm bed and a hot meal, two coins. the innkeeper says: the \
ale is fresh today. the farmer says: have you seen my dog? the guard says: move along. ";

/// The char vocabulary of the corpus: sorted distinct characters.
pub fn vocabulary() -> Vec<char> {
    let mut chars: Vec<char> = CORPUS.chars().collect();
    chars.sort_unstable();
    chars.dedup();
    chars
}

/// The model's parameters and its modules.
pub struct Model {
    pub store: ParamStore,
    /// Embedding (E = 16) -> 2-layer `lstm` (H = `hidden`) -> `fc` on every step.
    pub net: RecurrentModel,
}

/// Loads the model from `checkpoint` if that file exists; else trains it for
/// `train_steps` and, given a path, saves it there.
pub fn model(
    ctx: &Context,
    checkpoint: Option<&Path>,
    train_steps: u64,
    hidden: usize,
    chars: &[char],
) -> tsumugi::Result<Model> {
    let mut store = ParamStore::new();
    let mut rng = StdRng::seed_from_u64(7);
    let net = RecurrentModel::char_level_rnn(ctx, &mut store, &mut rng, chars.len(), 16, hidden, 2)?;
    let mut model = Model { store, net };
    if let Some(path) = checkpoint.filter(|path| path.exists()) {
        let step = tsumugi::io::load_checkpoint(path, &mut model.store)?;
        println!("model: loaded {} (trained {step} steps)", path.display());
        return Ok(model);
    }
    train(ctx, &mut model, train_steps, chars, &mut rng)?;
    if let Some(path) = checkpoint {
        tsumugi::io::save_checkpoint(path, &model.store, train_steps)?;
        println!("model: saved to {}", path.display());
    }
    Ok(model)
}

/// Adam on random windows of the corpus: predict each next character.
fn train(ctx: &Context, m: &mut Model, steps: u64, chars: &[char], rng: &mut StdRng) -> tsumugi::Result<()> {
    let ids: Vec<u32> = CORPUS
        .chars()
        .map(|c| chars.iter().position(|&x| x == c).unwrap_or(0) as u32)
        .collect();
    let (batch, window) = (32, 16);
    let start = Instant::now();
    for step in 1..=steps {
        let (mut inputs, mut targets) = (Vec::new(), Vec::new());
        for _ in 0..batch {
            let at = rng.random_range(0..ids.len() - window - 1);
            inputs.extend_from_slice(&ids[at..at + window]);
            targets.extend_from_slice(&ids[at + 1..at + window + 1]);
        }
        let inputs = Tensor::from_slice(ctx, &inputs, &[batch, window])?;
        let targets = Tensor::from_slice(ctx, &targets, &[batch * window])?;
        m.store.zero_grad();
        let mut g = Graph::train(ctx, &mut m.store, 0, step);
        let logits = m.net.forward(&mut g, &inputs, None)?.logits; // [B * T, V]
        let loss = g.cross_entropy(logits, &targets, &CrossEntropy::default())?;
        let last_loss = g.value(loss).clone();
        g.backward(loss)?;
        g.clip_grad_norm(1.0)?;
        let adam = Adam {
            lr: 0.02,
            ..Adam::default()
        };
        g.adam_step(&adam, step)?;
        g.submit();
        if step == 1 || step.is_multiple_of(50) || step == steps {
            let loss = last_loss.to_vec::<f32>()?[0];
            println!(
                "train: step {step:4}  loss {loss:.3}  ({:.1} s)",
                start.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}

/// Starts each NPC's line with the first letter of a role ('t' for "the", 'b', 'h', ...),
/// resetting the generator's streams in one submission of the host's queue; returns each
/// stream's start token (a line that ends starts again from it).
pub fn start_lines(ctx: &Context, generator: &mut Generator, chars: &[char]) -> tsumugi::Result<Vec<u32>> {
    let id = |c: char| chars.iter().position(|&x| x == c).unwrap_or(0) as u32;
    let start_tokens: Vec<u32> = "tbhafwgm".chars().cycle().take(generator.streams()).map(id).collect();
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    for (slot, &token) in start_tokens.iter().enumerate() {
        generator.reset_slot(&mut encoder, slot, token)?;
    }
    ctx.queue().submit([encoder.finish()]);
    ctx.recycle_after_submit();
    Ok(start_tokens)
}

/// Prints the model's GPU time per frame from timestamp queries (`times` in ms, at least
/// one): the first frame, which also pays for first-use work in the driver, apart.
pub fn print_gpu_times(streams: usize, times: &[f64]) {
    let (first, rest) = (times[0], if times.len() > 1 { &times[1..] } else { times });
    let mut sorted = rest.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mean = rest.iter().sum::<f64>() / rest.len() as f64;
    println!(
        "model GPU time per frame (timestamp queries, {streams} NPCs): mean {mean:.3} ms, median {:.3} ms, \
         max {:.3} ms over {} frames (the first frame: {first:.3} ms)",
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1],
        rest.len()
    );
}
