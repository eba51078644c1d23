//! 2.3: `Encoder(100, 128, 256)`, `Decoder(100, 128, 256)` and `Seq2Seq` (parameter
//! counts, a pass over random ids without teacher forcing), then the chapter's
//! English-to-Japanese toy: four pairs, word-level Japanese, max lengths 5 and 7,
//! `Encoder(13, 64, 128)`, `Decoder(19, 64, 128)`, Adam 1e-3, teacher forcing 0.5,
//! `CrossEntropyLoss(ignore_index=0)`, 500 epochs, the loss every 100; then greedy
//! translations of the four sentences, which must equal their targets.

use rand::rngs::StdRng;
use rand::SeedableRng;
use tsumugi::graph::{Graph, ParamStore};
use tsumugi::nn::seq2seq::{AttentionKind, Decoder, Encoder, Seq2Seq, TeacherForcing};
use tsumugi::{Context, Tensor};

use crate::common::{adam, count_line, count_prefix, cross_entropy, randint, size, train_step, AnyResult, Walk};
use crate::data::{encode, ja_tokens, vocab_of, EN_MAX_LEN, EOS, JA_MAX_LEN, SOS, TRANSLATION};
use tsumugi::nn::seq2seq::{DecoderConfig, EncoderConfig};
use tsumugi::nn::VarBuilder;

pub fn run(walk: &mut Walk) -> AnyResult<()> {
    sizes(walk)?;
    let toy = Toy::new()?;
    let mut trained = toy.train(walk, None, 2300)?;
    let translations = toy.translate(walk, &mut trained)?;
    toy.check(&translations)
}

/// `Seq2Seq(Encoder(vocab, embed, hidden), Decoder(...))`, with or without the
/// attention decoder, its parameters in `store` under `encoder.*` and `decoder.*`.
pub fn build(
    ctx: &Context,
    store: &mut ParamStore,
    rng: &mut StdRng,
    (src_vocab, tgt_vocab, embed, hidden): (usize, usize, usize, usize),
    attention: Option<AttentionKind>,
) -> tsumugi::Result<Seq2Seq> {
    Ok(Seq2Seq {
        encoder: Encoder::build(
            EncoderConfig {
                vocab: src_vocab,
                embed,
                hidden,
                padding_idx: None,
            },
            VarBuilder::with_prefix(ctx, store, rng, "encoder"),
        )?,
        decoder: Decoder::build(
            DecoderConfig {
                vocab: tgt_vocab,
                embed,
                hidden,
                padding_idx: None,
                attention,
            },
            VarBuilder::with_prefix(ctx, store, rng, "decoder"),
        )?,
    })
}

/// Target ids `[B, T]` (row-major) as the decoder's per-step inputs: column t as `[B, 1]`.
pub fn columns(ctx: &Context, ids: &[u32], batch: usize, steps: usize) -> tsumugi::Result<Vec<Tensor>> {
    (0..steps)
        .map(|t| {
            let column: Vec<u32> = (0..batch).map(|b| ids[b * steps + t]).collect();
            Tensor::from_slice(ctx, &column, &[batch, 1])
        })
        .collect()
}

fn sizes(walk: &mut Walk) -> AnyResult<()> {
    let ctx = &walk.ctx;
    let mut rng = StdRng::seed_from_u64(230);
    let mut store = ParamStore::new();
    let model = build(ctx, &mut store, &mut rng, (100, 100, 128, 256), None)?;
    println!("=== Seq2Seqモデル ===");
    count_line("Encoderパラメータ", count_prefix(&store, "encoder."), Some(275_456));
    count_line("Decoderパラメータ", count_prefix(&store, "decoder."), Some(301_156));
    count_line("総パラメータ", store.count().0, Some(576_612));
    let (batch, src_len, tgt_len) = (2, 5, 6);
    let source = randint(&mut rng, 100, batch * src_len);
    let target = randint(&mut rng, 100, batch * tgt_len);
    let source = Tensor::from_slice(ctx, &source, &[batch, src_len])?;
    // The listing's loop runs the decoder for t = 1..6 on target[:, 0] and then its own
    // argmax (teacher_forcing_ratio=0.0): five steps, whose logits fill outputs[:, 1:].
    let inputs = columns(ctx, &target, batch, tgt_len)?;
    let mut g = Graph::eval(ctx, &mut store);
    let logits = model.forward(&mut g, &source, None, &inputs[..tgt_len - 1], 0.0, &mut rng)?;
    let shape = g.value(logits).shape().to_vec();
    g.submit();
    println!("\n入力形状: {}", size(source.shape()));
    println!(
        "出力形状: {}  (tsumugi's logits {shape:?}: the {} decoded steps, rows (b, t); the listing's \
         `outputs` adds the all-zero step 0)",
        size(&[batch, tgt_len, 100]),
        tgt_len - 1
    );
    Ok(())
}

/// The toy's data: the vocabularies and the padded id matrices.
pub struct Toy {
    pub en_words: Vec<&'static str>,
    pub ja_words: Vec<&'static str>,
    /// `X` `[4, 5]` and `y` `[4, 7]`, row-major.
    pub x: Vec<u32>,
    pub y: Vec<u32>,
}

/// A trained toy model.
pub struct Trained {
    pub model: Seq2Seq,
    pub store: ParamStore,
}

/// A greedy translation: its words and, with attention, each step's weights over the
/// source positions.
pub struct Translation {
    pub words: Vec<&'static str>,
    pub weights: Vec<Vec<f32>>,
}

impl Toy {
    pub fn new() -> AnyResult<Toy> {
        let en_words = vocab_of(TRANSLATION.iter().map(|(en, _)| *en));
        let ja_sentences: Vec<Vec<&str>> = TRANSLATION.iter().map(|(_, ja)| ja_tokens(ja)).collect();
        let ja_words = vocab_of(ja_sentences.iter().flatten().copied());
        // en_vocab_size = len(en_vocab) + 1 (id 0 unused but for padding); ja_vocab
        // has '<pad>': 0 added before the same + 1, so one id is never used.
        let (en_vocab_size, ja_vocab_size) = (en_words.len() + 1, ja_words.len() + 2);
        count_line("英語語彙サイズ", en_vocab_size, Some(13));
        count_line("日本語語彙サイズ", ja_vocab_size, Some(17));
        println!(
            "  (13 distinct English words + 1; 15 Japanese words, '<sos>', '<eos>' and '<pad>' make 18, and the \
             listing adds 1)"
        );
        let x: Vec<u32> = TRANSLATION
            .iter()
            .flat_map(|(en, _)| encode(&en.split_whitespace().collect::<Vec<_>>(), &en_words, EN_MAX_LEN))
            .collect();
        // encode() pads with 0 or truncates to 7: the two 6-word targets lose their <eos>.
        let y: Vec<u32> = ja_sentences
            .iter()
            .flat_map(|s| {
                let mut ids = encode(s, &ja_words, JA_MAX_LEN + 1);
                ids.truncate(JA_MAX_LEN);
                ids
            })
            .collect();
        let n = TRANSLATION.len();
        println!(
            "\nデータ形状: X={}, y={}",
            size(&[n, EN_MAX_LEN]),
            size(&[n, JA_MAX_LEN])
        );
        Ok(Toy {
            en_words,
            ja_words,
            x,
            y,
        })
    }

    pub fn en_vocab_size(&self) -> usize {
        self.en_words.len() + 1
    }

    pub fn ja_vocab_size(&self) -> usize {
        self.ja_words.len() + 2
    }

    pub fn ja_id(&self, word: &str) -> u32 {
        self.ja_words
            .iter()
            .position(|w| *w == word)
            .map_or(0, |i| i as u32 + 1)
    }

    /// Trains `Seq2Seq(Encoder(13, 64, 128), Decoder(19, 64, 128))` (or the attention
    /// decoder) as the listing: 500 full-batch epochs, Adam 1e-3, teacher forcing 0.5,
    /// cross-entropy ignoring 0 over `output[:, 1:]` against `y[:, 1:]`. The listing
    /// draws `random.random() < 0.5` per decoder step; here `Seq2Seq::forward` makes
    /// the same per-step draw from a seeded `StdRng` (`TeacherForcing::Constant(0.5)`).
    pub fn train(&self, walk: &Walk, attention: Option<AttentionKind>, seed: u64) -> AnyResult<Trained> {
        let ctx = &walk.ctx;
        let n = TRANSLATION.len();
        let mut rng = StdRng::seed_from_u64(seed);
        let mut store = ParamStore::new();
        let sizes = (self.en_vocab_size(), self.ja_vocab_size(), 64, 128);
        let model = build(ctx, &mut store, &mut rng, sizes, attention)?;
        let x = Tensor::from_slice(ctx, &self.x, &[n, EN_MAX_LEN])?;
        // Decoder inputs y[:, 0..6] (<sos> first); labels y[:, 1..7] in (b, t) order.
        let inputs = columns(ctx, &self.y, n, JA_MAX_LEN)?;
        let labels: Vec<u32> = self.y.chunks(JA_MAX_LEN).flat_map(|row| row[1..].to_vec()).collect();
        let labels = Tensor::from_slice(ctx, &labels, &[n * (JA_MAX_LEN - 1)])?;
        let (optimizer, criterion) = (adam(1e-3), cross_entropy(Some(0)));
        let forcing = TeacherForcing::Constant(0.5);
        let mut draws = StdRng::seed_from_u64(seed + 1);
        let num_epochs = 500;
        for epoch in 1..=num_epochs {
            let ratio = forcing.ratio(epoch - 1)?;
            let (loss, _) = train_step(ctx, &mut store, &optimizer, epoch, |g| {
                let logits = model.forward(g, &x, None, &inputs[..JA_MAX_LEN - 1], ratio, &mut draws)?;
                Ok((logits, g.cross_entropy(logits, &labels, &criterion)?))
            })?;
            if epoch.is_multiple_of(100) {
                println!("Epoch [{epoch}/{num_epochs}], Loss: {loss:.4}");
            }
        }
        println!(
            "(the chapter prints 1.2345, 0.5678, 0.2345, 0.1234, 0.0678 for the model without attention: illustrative)"
        );
        println!("\n訓練完了!");
        Ok(Trained { model, store })
    }

    /// Greedy decoding of the four sources from `<sos>` for `ja_max_len - 1` steps, cut
    /// at the first `<eos>` or `<pad>`.
    pub fn translate(&self, walk: &Walk, trained: &mut Trained) -> AnyResult<Vec<Translation>> {
        let ctx = &walk.ctx;
        let n = TRANSLATION.len();
        let x = Tensor::from_slice(ctx, &self.x, &[n, EN_MAX_LEN])?;
        let sos = Tensor::full(ctx, &[n, 1], self.ja_id(SOS))?;
        let mut g = Graph::eval(ctx, &mut trained.store);
        let (chosen, weights) = trained.model.greedy(&mut g, &x, None, &sos, JA_MAX_LEN - 1)?;
        let weights: Vec<Tensor> = weights.iter().map(|&w| g.value(w).clone()).collect();
        g.submit();
        let mut steps = Vec::new();
        for ids in &chosen {
            steps.push(ids.to_vec::<u32>()?);
        }
        let mut step_weights = Vec::new();
        for w in &weights {
            step_weights.push(w.to_vec::<f32>()?);
        }
        let eos = self.ja_id(EOS);
        let mut out = Vec::new();
        for b in 0..n {
            let mut translation = Translation {
                words: Vec::new(),
                weights: Vec::new(),
            };
            for (t, ids) in steps.iter().enumerate() {
                let id = ids[b];
                if let Some(w) = step_weights.get(t) {
                    translation
                        .weights
                        .push(w[b * EN_MAX_LEN..(b + 1) * EN_MAX_LEN].to_vec());
                }
                if id == eos || id == 0 {
                    break;
                }
                translation
                    .words
                    .push(self.ja_words.get(id as usize - 1).copied().unwrap_or("<?>"));
            }
            out.push(translation);
        }
        Ok(out)
    }

    /// Prints each translation beside its target; an error if any differs.
    pub fn check(&self, translations: &[Translation]) -> AnyResult<()> {
        println!("\ngreedy translations (not printed by the listing):");
        let mut wrong = 0;
        for ((en, ja), t) in TRANSLATION.iter().zip(translations) {
            let got = t.words.join(" ");
            let ok = got == *ja;
            wrong += usize::from(!ok);
            println!("  {en:<18} -> {got:<24} {}", if ok { "= target" } else { "!= target " });
            if !ok {
                println!("      target: {ja}");
            }
        }
        if wrong > 0 {
            return Err(format!("{wrong} of the 4 greedy translations differ from their targets").into());
        }
        println!("all 4 equal their targets");
        Ok(())
    }
}
