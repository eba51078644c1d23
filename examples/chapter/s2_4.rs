//! 2.4: `Seq2SeqWithAttention(EncoderWithOutputs(100, 128, 256), AttentionDecoder(100,
//! 128, 256))` with `BahdanauAttention(256)`: its parameter count and a pass over random
//! ids without teacher forcing (the output shape, five steps of weights `[2, 5]`); then
//! `visualize_attention` on the listing's sample (`np.random.seed(42)`, `rand(8, 5)`,
//! rows normalised), as a heat map PNG with the tokens on the axes. Beyond the listing,
//! whose weights are random: the same heat map of attention a model learnt, the toy of
//! 2.3 trained with the attention decoder.

use rand::rngs::StdRng;
use rand::SeedableRng;
use tsumugi::graph::{Graph, ParamStore};
use tsumugi::nn::seq2seq::AttentionKind;
use tsumugi::Tensor;

use crate::common::{count_line, print_matrix, randint, size, AnyResult, Walk};
use crate::data::{EN_MAX_LEN, TRANSLATION};
use crate::plot::{figure, heat_map, Heat};
use crate::s2_3::{build, columns, Toy};

pub fn run(walk: &mut Walk) -> AnyResult<()> {
    sizes(walk)?;
    visualize_sample(walk)?;
    learnt(walk)
}

fn sizes(walk: &mut Walk) -> AnyResult<()> {
    let ctx = &walk.ctx;
    let mut rng = StdRng::seed_from_u64(240);
    let mut store = ParamStore::new();
    let model = build(
        ctx,
        &mut store,
        &mut rng,
        (100, 100, 128, 256),
        Some(AttentionKind::Bahdanau),
    )?;
    println!("=== Seq2Seq with Attention ===");
    count_line("総パラメータ", store.count().0, Some(609_124));
    let (batch, src_len, tgt_len) = (2, 5, 6);
    let source = Tensor::from_slice(ctx, &randint(&mut rng, 100, batch * src_len), &[batch, src_len])?;
    let target = randint(&mut rng, 100, batch * tgt_len);
    // teacher_forcing_ratio=0.0: target[:, 0], then each step's argmax, for t = 1..6;
    // stepping the decoder keeps each step's attention weights.
    let first = &columns(ctx, &target, batch, tgt_len)?[0];
    let mut g = Graph::eval(ctx, &mut store);
    let (values, h, c) = model.encoder.forward(&mut g, &source, None)?;
    let attention = model
        .decoder
        .attention
        .ok_or("the attention decoder has no attention")?;
    let memory = attention.memory(&mut g, values)?;
    let (mut state, mut ids) = ((h, c), first.clone());
    let (mut logits, mut weights) = (Vec::new(), Vec::new());
    for _ in 1..tgt_len {
        let step = model.decoder.step(&mut g, &ids, state, Some(&memory), None)?;
        state = step.state;
        ids = g.argmax(step.logits)?.reshape(&[batch, 1])?;
        logits.push(g.value(step.logits).shape().to_vec());
        weights.push(g.value(step.weights.ok_or("no attention weights")?).clone());
    }
    g.submit();
    println!(
        "\n出力形状: {}  ({} steps of logits {:?}; the listing's `outputs` adds the all-zero step 0)",
        size(&[batch, tgt_len, 100]),
        logits.len(),
        logits[0]
    );
    println!("アテンション重み数: {}", weights.len());
    println!("各アテンション重み形状: {}", size(weights[0].shape()));
    let sums: Vec<String> = weights[0]
        .to_vec::<f32>()?
        .chunks(src_len)
        .map(|row| format!("{:.6}", row.iter().sum::<f32>()))
        .collect();
    println!("  (each row of the first step's weights sums to {})", sums.join(", "));
    Ok(())
}

/// numpy's legacy `RandomState`: MT19937 seeded by `init_genrand(seed)`, doubles from
/// two draws (`random_sample`), so `np.random.seed(42); np.random.rand(8, 5)` gives the
/// listing's exact sample.
struct NumpyRandom {
    state: [u32; 624],
    index: usize,
}

impl NumpyRandom {
    fn seed(seed: u32) -> Self {
        let mut state = [0u32; 624];
        state[0] = seed;
        for i in 1..624 {
            state[i] = 1_812_433_253u32
                .wrapping_mul(state[i - 1] ^ (state[i - 1] >> 30))
                .wrapping_add(i as u32);
        }
        NumpyRandom { state, index: 624 }
    }

    fn next_u32(&mut self) -> u32 {
        if self.index >= 624 {
            for i in 0..624 {
                let y = (self.state[i] & 0x8000_0000) | (self.state[(i + 1) % 624] & 0x7fff_ffff);
                let mut next = self.state[(i + 397) % 624] ^ (y >> 1);
                if y & 1 == 1 {
                    next ^= 0x9908_b0df;
                }
                self.state[i] = next;
            }
            self.index = 0;
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    fn random_sample(&mut self) -> f64 {
        let a = (self.next_u32() >> 5) as f64;
        let b = (self.next_u32() >> 6) as f64;
        (a * 67_108_864.0 + b) / 9_007_199_254_740_992.0
    }
}

/// The listing's `visualize_attention(attention_weights, source_tokens, target_tokens)`.
pub fn visualize_attention(
    walk: &mut Walk,
    file: &str,
    weights: &[f32],
    source_tokens: &[String],
    target_tokens: &[String],
) -> AnyResult<std::path::PathBuf> {
    let heat = Heat {
        values: weights,
        rows: target_tokens.len(),
        cols: source_tokens.len(),
        x_ticks: source_tokens,
        y_ticks: target_tokens,
        x_label: "Source (English)",
        y_label: "Target (Japanese)",
        title: "Attention Weights Visualization",
        annotate: true,
    };
    // figsize=(10, 8) at matplotlib's 100 dpi.
    figure(walk, file, (1000, 800), &heat.texts(), |area| heat_map(area, &heat))
}

fn visualize_sample(walk: &mut Walk) -> AnyResult<()> {
    let source_tokens: Vec<String> = ["I", "love", "natural", "language", "processing"]
        .map(String::from)
        .into();
    let target_tokens: Vec<String> = ["私", "は", "自然", "言語", "処理", "が", "好き", "です"]
        .map(String::from)
        .into();
    let mut np = NumpyRandom::seed(42);
    let (rows, cols) = (target_tokens.len(), source_tokens.len());
    let raw: Vec<f64> = (0..rows * cols).map(|_| np.random_sample()).collect();
    let weights: Vec<f32> = raw
        .chunks(cols)
        .flat_map(|row| {
            let sum: f64 = row.iter().sum();
            row.iter().map(move |v| (v / sum) as f32)
        })
        .collect();
    println!("\n=== アテンション重み ===");
    println!("形状: ({rows}, {cols})");
    println!("\n最初の3単語のアテンション重み:");
    print_matrix(&weights[..3 * cols], cols);
    let path = visualize_attention(walk, "attention_sample.png", &weights, &source_tokens, &target_tokens)?;
    println!("heat map: {}", path.display());
    Ok(())
}

fn learnt(walk: &mut Walk) -> AnyResult<()> {
    println!("\nbeyond the listing: the 2.3 toy trained with the attention decoder (same data and settings)");
    let toy = Toy::new()?;
    let mut trained = toy.train(walk, Some(AttentionKind::Bahdanau), 2400)?;
    let translations = toy.translate(walk, &mut trained)?;
    toy.check(&translations)?;
    for (i, ((en, _), t)) in TRANSLATION.iter().zip(&translations).enumerate() {
        // The rows of the decoded words (and of the <eos> step, where one was decoded),
        // over the five source positions (padding included: the encoder reads them).
        let mut source: Vec<String> = en.split_whitespace().map(String::from).collect();
        source.resize(EN_MAX_LEN, "<pad>".into());
        let mut target: Vec<String> = t.words.iter().map(|w| w.to_string()).collect();
        if t.weights.len() > target.len() {
            target.push("<eos>".into());
        }
        let weights: Vec<f32> = t.weights[..target.len()].concat();
        let path = visualize_attention(
            walk,
            &format!("attention_toy_{}.png", i + 1),
            &weights,
            &source,
            &target,
        )?;
        let words = en.split_whitespace().count();
        let on_pad: f32 = weights
            .chunks(EN_MAX_LEN)
            .map(|row| row[words..].iter().sum::<f32>())
            .sum::<f32>()
            / target.len() as f32;
        println!(
            "  {en}: {} ({:.0} % of the weight on <pad>)",
            path.display(),
            100.0 * on_pad
        );
    }
    println!(
        "  (the listing passes no source lengths and masks nothing: the encoder runs over the padding, and \
         attention may read its states there, which come after the whole sentence)"
    );
    Ok(())
}
