//! The web example's training and generation, in one place for both runs of it: the page
//! (`main.rs`, compiled to wasm32 and run on the browser's WebGPU device) and the native
//! test (`tests/web_demo.rs`), with the same seeds and sizes, so that the two results can
//! be compared line for line.
//!
//! Every wait is an `.await` on a readback ([`Tensor::read`]): in a browser the browser
//! completes it, natively [`block_on`] polls the device until it does.

use rand::rngs::StdRng;
use rand::SeedableRng;
use tsumugi::graph::{Graph, ParamStore};
use tsumugi::io::{load_state_dict_from_bytes, state_dict_to_bytes_async, LoadOptions};
use tsumugi::kernels::Lengths;
use tsumugi::loss::CrossEntropy;
use tsumugi::nn::generator::Generator;
use tsumugi::nn::models::RecurrentModel;
use tsumugi::nn::seq2seq::{AttentionKind, Decoder, Encoder, Seq2Seq};
use tsumugi::nn::seq2seq::{DecoderConfig, EncoderConfig};
use tsumugi::nn::VarBuilder;
use tsumugi::optim::Adam;
use tsumugi::sampling::Sampling;
use tsumugi::text::{word_tokens, Example, Seq2SeqBatch, Vocab};
use tsumugi::{Context, Result, Tensor};

/// The chapter's toy corpus, word-level on both sides (the Japanese is written with a
/// space between words).
pub const PAIRS: [(&str, &str); 4] = [
    ("i am a student", "私 は 学生 です"),
    ("he is a teacher", "彼 は 教師 です"),
    ("she likes cats", "彼女 は 猫 が 好き です"),
    ("we study english", "私たち は 英語 を 勉強 します"),
];

/// The character model's text (a public-domain rhyme), learnt by heart.
pub const TEXT: &str = "twinkle, twinkle, little star,\nhow i wonder what you are!\n\
up above the world so high,\nlike a diamond in the sky.\n";

/// Seeds and sizes of both runs.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    /// Seeds the initial weights of both models.
    pub seed: u64,
    /// Translator: embedding and hidden size, Adam steps.
    pub embed: usize,
    pub hidden: usize,
    pub translate_steps: u64,
    /// Character model (one LSTM layer): embedding and hidden size, Adam steps, the
    /// length of each training window.
    pub char_embed: usize,
    pub char_hidden: usize,
    pub char_steps: u64,
    pub window: usize,
    /// Characters generated after the prompt.
    pub generate: usize,
    /// The loss is read back (and shown) every this many steps, and at the last one.
    pub report_every: u64,
}

/// What the page and the native test run.
pub const SIZES: Sizes = Sizes {
    seed: 7,
    embed: 16,
    hidden: 32,
    translate_steps: 200,
    char_embed: 16,
    char_hidden: 64,
    char_steps: 300,
    window: 56,
    generate: 56,
    report_every: 10,
};

/// One loss read back during training.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// `"translator"` or `"chars"`.
    pub model: &'static str,
    pub step: u64,
    pub steps: u64,
    pub loss: f32,
}

/// Everything the page shows at the end, and the result line it logs.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub translate_losses: Vec<(u64, f32)>,
    /// The size of the trained translator's state dict, which a second, differently
    /// initialised translator loads from these bytes.
    pub state_dict_bytes: usize,
    /// That second translator's greedy translations of the four sources, words joined by
    /// spaces: right only if training and the round trip through bytes both worked.
    pub translations: Vec<String>,
    pub char_losses: Vec<(u64, f32)>,
    /// The prompt (the text's first character) and the greedy continuation.
    pub generated: String,
}

impl Outcome {
    /// One line of JSON (no serde: a handful of fields) for the console and the CI check.
    pub fn to_json(&self, adapter: &str, train_ms: f64) -> String {
        let losses = |list: &[(u64, f32)]| {
            let items: Vec<String> = list.iter().map(|(s, l)| format!("[{s},{l}]")).collect();
            format!("[{}]", items.join(","))
        };
        let translations: Vec<String> = self.translations.iter().map(|t| json_string(t)).collect();
        format!(
            "{{\"adapter\":{},\"seed\":{},\"train_ms\":{train_ms:.0},\"translate_losses\":{},\
             \"state_dict_bytes\":{},\"translations\":[{}],\"char_losses\":{},\"generated\":{}}}",
            json_string(adapter),
            SIZES.seed,
            losses(&self.translate_losses),
            self.state_dict_bytes,
            translations.join(","),
            losses(&self.char_losses),
            json_string(&self.generated),
        )
    }
}

/// `s` as a JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Trains both models and generates, reporting each loss read back to `progress`.
pub async fn run(ctx: &Context, sizes: &Sizes, progress: &mut dyn FnMut(Progress)) -> Result<Outcome> {
    let (translate_losses, state_dict_bytes, translations) = translator(ctx, sizes, progress).await?;
    let (char_losses, generated) = characters(ctx, sizes, progress).await?;
    Ok(Outcome {
        translate_losses,
        state_dict_bytes,
        translations,
        char_losses,
        generated,
    })
}

/// Whether step `step` of `steps` reads its loss back.
fn reports(sizes: &Sizes, step: u64, steps: u64) -> bool {
    step.is_multiple_of(sizes.report_every) || step == steps
}

/// The chapter's seq2seq with Bahdanau attention, its parameters registered in `store`.
fn seq2seq(
    ctx: &Context,
    store: &mut ParamStore,
    rng: &mut StdRng,
    sizes: &Sizes,
    (src_vocab, tgt_vocab): (&Vocab, &Vocab),
) -> Result<Seq2Seq> {
    let pad = Some(Vocab::PAD_ID);
    Ok(Seq2Seq {
        encoder: Encoder::build(
            EncoderConfig {
                vocab: src_vocab.len(),
                embed: sizes.embed,
                hidden: sizes.hidden,
                padding_idx: pad,
            },
            VarBuilder::with_prefix(ctx, store, rng, "encoder"),
        )?,
        decoder: Decoder::build(
            DecoderConfig {
                vocab: tgt_vocab.len(),
                embed: sizes.embed,
                hidden: sizes.hidden,
                padding_idx: pad,
                attention: Some(AttentionKind::Bahdanau),
            },
            VarBuilder::with_prefix(ctx, store, rng, "decoder"),
        )?,
    })
}

/// The chapter's toy translator on [`PAIRS`]: full teacher forcing, Adam; then its state
/// dict as bytes, loaded into a second translator (initialised from another seed), whose
/// greedy translations of the four sources are returned.
async fn translator(
    ctx: &Context,
    sizes: &Sizes,
    progress: &mut dyn FnMut(Progress),
) -> Result<(Vec<(u64, f32)>, usize, Vec<String>)> {
    let src_tokens: Vec<Vec<String>> = PAIRS.iter().map(|(en, _)| word_tokens(en)).collect();
    let tgt_tokens: Vec<Vec<String>> = PAIRS.iter().map(|(_, ja)| word_tokens(ja)).collect();
    let (src_vocab, tgt_vocab) = (Vocab::build(&src_tokens, 1), Vocab::build(&tgt_tokens, 1));
    let mut store = ParamStore::new();
    let mut rng = StdRng::seed_from_u64(sizes.seed);
    let model = seq2seq(ctx, &mut store, &mut rng, sizes, (&src_vocab, &tgt_vocab))?;
    let examples: Vec<Example> = src_tokens
        .iter()
        .zip(&tgt_tokens)
        .map(|(s, t)| Example::encode(s, t, &src_vocab, &tgt_vocab))
        .collect();
    let batch = Seq2SeqBatch::new(&examples.iter().collect::<Vec<_>>())?;
    let (b, s) = (batch.batch, batch.source_steps);
    let src = Tensor::from_slice(ctx, &batch.source, &[b, s])?;
    let lengths = Lengths::new(ctx, &batch.source_lengths, s)?;
    let inputs: Vec<Tensor> = batch
        .decoder_inputs
        .iter()
        .map(|ids| Tensor::from_slice(ctx, ids, &[b, 1]))
        .collect::<Result<_>>()?;
    let labels = Tensor::from_slice(ctx, &batch.labels, &[batch.labels.len()])?;
    let adam = Adam {
        lr: 0.01,
        ..Adam::default()
    };
    let ce = CrossEntropy {
        ignore_index: Some(Vocab::PAD_ID),
        ..CrossEntropy::default()
    };
    let mut losses = Vec::new();
    let steps = sizes.translate_steps;
    for step in 1..=steps {
        store.zero_grad();
        let mut g = Graph::train(ctx, &mut store, sizes.seed, step);
        // Full teacher forcing draws nothing that matters, but the call takes an rng.
        let logits = model.forward_time_major(&mut g, &src, Some(&lengths), &inputs, 1.0, &mut rng)?;
        let loss = g.cross_entropy(logits, &labels, &ce)?;
        let loss_value = g.value(loss).clone();
        g.backward(loss)?;
        g.clip_grad_norm(1.0)?;
        g.adam_step(&adam, step)?;
        g.submit();
        if reports(sizes, step, steps) {
            let loss = loss_value.read::<f32>().await?[0];
            losses.push((step, loss));
            progress(Progress {
                model: "translator",
                step,
                steps,
                loss,
            });
        }
    }
    // Every step has run once this completes (the page's way to await a training step;
    // the readback below would wait for them anyway).
    ctx.wait_idle().await?;
    // Through bytes, as a page would keep a model (IndexedDB, a download) and load it back.
    let bytes = state_dict_to_bytes_async(&store, "").await?;
    let mut loaded_store = ParamStore::new();
    let mut other_rng = StdRng::seed_from_u64(sizes.seed + 1);
    let loaded = seq2seq(ctx, &mut loaded_store, &mut other_rng, sizes, (&src_vocab, &tgt_vocab))?;
    load_state_dict_from_bytes(
        &bytes,
        "the trained translator",
        &mut loaded_store,
        &LoadOptions::default(),
    )?;
    // Greedy decoding: every step's argmax on the GPU, one submission, then the ids.
    let sos = Tensor::from_slice(ctx, &vec![Vocab::SOS_ID; b], &[b, 1])?;
    let mut g = Graph::eval(ctx, &mut loaded_store);
    let (chosen, _) = loaded.greedy(&mut g, &src, Some(&lengths), &sos, batch.target_steps + 1)?;
    g.submit();
    let mut steps_ids = Vec::with_capacity(chosen.len());
    for ids in &chosen {
        steps_ids.push(ids.read::<u32>().await?);
    }
    let translations = (0..b)
        .map(|row| {
            let ids: Vec<u32> = steps_ids.iter().map(|step| step[row]).collect();
            tgt_vocab.decode(&ids).join(" ")
        })
        .collect();
    Ok((losses, bytes.len(), translations))
}

/// A one-layer character LSTM on [`TEXT`] (every window of `sizes.window` characters in
/// each step), then greedy generation from the text's first character on the GPU.
async fn characters(
    ctx: &Context,
    sizes: &Sizes,
    progress: &mut dyn FnMut(Progress),
) -> Result<(Vec<(u64, f32)>, String)> {
    let chars: Vec<String> = TEXT.chars().map(String::from).collect();
    let vocab = Vocab::build([&chars], 1);
    let ids = vocab.encode(&chars);
    let mut store = ParamStore::new();
    let mut rng = StdRng::seed_from_u64(sizes.seed);
    let model = RecurrentModel::char_level_rnn(
        ctx,
        &mut store,
        &mut rng,
        vocab.len(),
        sizes.char_embed,
        sizes.char_hidden,
        1,
    )?;
    // Non-overlapping windows: input ids[i..i + T], target ids[i + 1..i + T + 1].
    let t = sizes.window;
    let starts: Vec<usize> = (0..ids.len().saturating_sub(t)).step_by(t).collect();
    let x: Vec<u32> = starts.iter().flat_map(|&i| ids[i..i + t].iter().copied()).collect();
    let y: Vec<u32> = starts
        .iter()
        .flat_map(|&i| ids[i + 1..i + t + 1].iter().copied())
        .collect();
    let x = Tensor::from_slice(ctx, &x, &[starts.len(), t])?;
    let y = Tensor::from_slice(ctx, &y, &[starts.len() * t])?;
    let adam = Adam {
        lr: 0.01,
        ..Adam::default()
    };
    let mut losses = Vec::new();
    let steps = sizes.char_steps;
    for step in 1..=steps {
        store.zero_grad();
        let mut g = Graph::train(ctx, &mut store, sizes.seed, step);
        // Logits [B * T, V] in (b, t) order, as the targets.
        let logits = model.forward(&mut g, &x, None)?.logits;
        let loss = g.cross_entropy(logits, &y, &CrossEntropy::default())?;
        let loss_value = g.value(loss).clone();
        g.backward(loss)?;
        g.clip_grad_norm(1.0)?;
        g.adam_step(&adam, step)?;
        g.submit();
        if reports(sizes, step, steps) {
            let loss = loss_value.read::<f32>().await?[0];
            losses.push((step, loss));
            progress(Progress {
                model: "chars",
                step,
                steps,
                loss,
            });
        }
    }
    // Greedy (top-1) sampling, every step on the GPU: each drawn token is copied into
    // `drawn`, which is read back once at the end.
    let greedy = Sampling {
        temperature: 1.0,
        top_k: Some(1),
        seed: sizes.seed,
    };
    let mut generator = Generator::from_model(ctx, &store, &model, 1, greedy)?;
    let drawn = Tensor::zeros(ctx, &[sizes.generate], tsumugi::DType::U32)?;
    let mut encoder = ctx.create_encoder();
    generator.reset_slot(&mut encoder, 0, ids[0])?;
    for i in 0..sizes.generate {
        generator.step(&mut encoder)?;
        encoder.copy_buffer_to_buffer(generator.tokens().buffer(), 0, drawn.buffer(), 4 * i as u64, 4);
    }
    ctx.submit(encoder);
    let drawn = drawn.read::<u32>().await?;
    let mut text = chars[0].clone();
    text.extend(drawn.iter().map(|&id| vocab.token(id).to_string()));
    Ok((losses, text))
}

/// Runs `future` to completion natively: polls it, and while it waits (on a readback)
/// waits for the device, whose poll runs the map callbacks that complete it.
#[cfg(not(target_arch = "wasm32"))]
pub fn block_on<F: std::future::Future>(ctx: &Context, future: F) -> Result<F::Output> {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return Ok(output);
        }
        ctx.device()
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|err| tsumugi::Error::Gpu {
                message: format!("waiting for a readback: {err}"),
            })?;
    }
}
