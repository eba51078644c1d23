//! The chapter's toy English-to-Japanese translator with the library's Seq2Seq (LSTM
//! encoder, attention decoder fed `[embedding; context]`), trained with teacher forcing
//! and cross-entropy ignoring `<pad>`, then greedy decoding with each chosen token fed back
//! on the GPU; and the chapter's models' parameter counts. (The chapter's text lost its
//! special tokens: `<pad>`, `<sos>`, `<eos>` are restored.)

mod common;

use common::ctx;
use rand::rngs::StdRng;
use rand::SeedableRng;
use tsumugi::graph::{Graph, ParamStore};
use tsumugi::loss::CrossEntropy;
use tsumugi::nn::seq2seq::{
    Attention, AttentionKind, BahdanauAttention, BeamSearch, Decoder, Encoder, LuongAttention, LuongScore, Seq2Seq,
};
use tsumugi::nn::seq2seq::{DecoderConfig, EncoderConfig};
use tsumugi::nn::VarBuilder;
use tsumugi::optim::Adam;
use tsumugi::{Context, Tensor};

const PAIRS: [(&str, &str); 4] = [
    ("good morning", "おはよう"),
    ("thank you", "ありがとう"),
    ("good night", "おやすみ"),
    ("see you", "またね"),
];
const PAD: u32 = 0;
const SOS: u32 = 1;
const EOS: u32 = 2;

fn seq2seq(
    ctx: &Context,
    store: &mut ParamStore,
    vocab: (usize, usize),
    dims: (usize, usize),
    attention: Option<AttentionKind>,
) -> Seq2Seq {
    let mut rng = StdRng::seed_from_u64(11);
    let (embed, hidden) = dims;
    Seq2Seq {
        encoder: Encoder::build(
            EncoderConfig {
                vocab: vocab.0,
                embed,
                hidden,
                padding_idx: Some(PAD),
            },
            VarBuilder::with_prefix(ctx, store, &mut rng, "encoder"),
        )
        .unwrap(),
        decoder: Decoder::build(
            DecoderConfig {
                vocab: vocab.1,
                embed,
                hidden,
                padding_idx: Some(PAD),
                attention,
            },
            VarBuilder::with_prefix(ctx, store, &mut rng, "decoder"),
        )
        .unwrap(),
    }
}

#[test]
fn seq2seq_parameter_counts_equal_pytorchs_for_the_chapters_models() {
    let ctx = ctx();
    // Seq2Seq(Encoder(100, 128, 256), Decoder(100, 128, 256)):
    // >>> sum(p.numel() for p in model.parameters())  # PyTorch 2.x
    // 841828
    let mut store = ParamStore::new();
    seq2seq(ctx, &mut store, (100, 100), (128, 256), None);
    assert_eq!(store.count(), (841_828, 841_828));
    // Seq2SeqWithAttention(Encoder(100, 128, 256), AttentionDecoder(100, 128, 256)), the
    // decoder LSTM over [embedding; context] (128 + 256) and BahdanauAttention(256):
    // >>> sum(p.numel() for p in model.parameters())
    // 1235813
    let mut store = ParamStore::new();
    seq2seq(ctx, &mut store, (100, 100), (128, 256), Some(AttentionKind::Bahdanau));
    assert_eq!(store.count(), (1_235_813, 1_235_813));
    assert!(store.find("decoder.attention.W1.weight").is_some());
    assert!(store.find("decoder.lstm.weight_ih_l0").is_some());
}

#[test]
fn seq2seq_with_attention_learns_the_toy_translator_and_greedy_and_beam_decoding_return_its_targets() {
    for attention in [
        AttentionKind::Bahdanau,
        AttentionKind::Luong(LuongScore::General),
        AttentionKind::Luong(LuongScore::Concat),
    ] {
        translate_toy(attention);
    }
}

fn translate_toy(attention: AttentionKind) {
    let ctx = ctx();
    let mut src_vocab = vec!["<pad>".to_string()];
    let mut tgt_vocab = vec!['_', '^', '$']; // <pad>, <sos>, <eos>
    for (en, ja) in PAIRS {
        for word in en.split(' ') {
            if !src_vocab.iter().any(|w| w == word) {
                src_vocab.push(word.to_string());
            }
        }
        for c in ja.chars() {
            if !tgt_vocab.contains(&c) {
                tgt_vocab.push(c);
            }
        }
    }
    let batch = PAIRS.len();
    let tgt_len = PAIRS.iter().map(|(_, ja)| ja.chars().count()).max().unwrap() + 1;
    let src: Vec<u32> = PAIRS
        .iter()
        .flat_map(|(en, _)| {
            en.split(' ')
                .map(|w| src_vocab.iter().position(|s| s == w).unwrap() as u32)
        })
        .collect();
    let src = Tensor::from_slice(ctx, &src, &[batch, 2]).unwrap();
    // Decoder inputs per step: <sos> y1 .. yn; labels: y1 .. yn <eos>; <pad> after.
    let mut inputs = vec![vec![PAD; batch]; tgt_len];
    let mut labels = vec![PAD; batch * tgt_len];
    for (b, (_, ja)) in PAIRS.iter().enumerate() {
        let ids: Vec<u32> = ja
            .chars()
            .map(|c| tgt_vocab.iter().position(|&t| t == c).unwrap() as u32)
            .collect();
        inputs[0][b] = SOS;
        for (t, &id) in ids.iter().enumerate() {
            inputs[t + 1][b] = id;
            labels[b * tgt_len + t] = id;
        }
        labels[b * tgt_len + ids.len()] = EOS;
        if ids.len() + 1 < tgt_len {
            inputs[ids.len() + 1][b] = EOS;
        }
    }
    let step_inputs: Vec<Tensor> = inputs
        .iter()
        .map(|ids| Tensor::from_slice(ctx, ids, &[batch, 1]).unwrap())
        .collect();
    let labels_t = Tensor::from_slice(ctx, &labels, &[batch * tgt_len]).unwrap();

    let mut store = ParamStore::new();
    let model = seq2seq(
        ctx,
        &mut store,
        (src_vocab.len(), tgt_vocab.len()),
        (16, 32),
        Some(attention),
    );
    let adam = Adam {
        lr: 0.01,
        ..Adam::default()
    };
    let ce = CrossEntropy {
        ignore_index: Some(PAD),
        ..CrossEntropy::default()
    };
    let mut rng = StdRng::seed_from_u64(4);
    let mut losses = Vec::new();
    for t in 1..=120u64 {
        store.zero_grad();
        let mut g = Graph::train(ctx, &mut store, 3, t);
        let logits = model.forward(&mut g, &src, None, &step_inputs, 1.0, &mut rng).unwrap();
        let loss = g.cross_entropy(logits, &labels_t, &ce).unwrap();
        let loss_t = g.value(loss).clone();
        g.backward(loss).unwrap();
        g.adam_step(&adam, t).unwrap();
        g.submit();
        if t % 40 == 0 {
            losses.push(loss_t.to_vec::<f32>().unwrap()[0]);
        }
    }

    let mut g = Graph::eval(ctx, &mut store);
    let (chosen, weights) = model.greedy(&mut g, &src, None, &step_inputs[0], tgt_len).unwrap();
    let weights: Vec<Tensor> = weights.iter().map(|&w| g.value(w).clone()).collect();
    g.submit();
    let chosen: Vec<Vec<u32>> = chosen.iter().map(|t| t.to_vec().unwrap()).collect();
    for (b, (en, ja)) in PAIRS.iter().enumerate() {
        let translation: String = chosen
            .iter()
            .map(|step| step[b])
            .take_while(|&id| id != EOS)
            .map(|id| tgt_vocab[id as usize])
            .collect();
        assert_eq!(
            translation, *ja,
            "{attention:?}: {en} (losses every 40 steps: {losses:?})"
        );
    }
    // Beam search (3 hypotheses per sentence) finds the same translations first.
    let beams = model
        .beam_search(ctx, &mut store, &src, None, SOS, &BeamSearch::new(3, tgt_len, EOS))
        .unwrap();
    for (hypotheses, (en, ja)) in beams.iter().zip(PAIRS) {
        let best: String = hypotheses[0].tokens.iter().map(|&id| tgt_vocab[id as usize]).collect();
        assert_eq!(best, ja, "{attention:?} beam search: {en}: {hypotheses:?}");
        assert!(hypotheses[0].finished);
    }
    // The heat-map rows: one softmax over the 2 source words per step and sentence.
    for step in weights {
        for row in step.to_vec::<f32>().unwrap().chunks(2) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{row:?}");
        }
    }
}

/// `forward_time_major` is `forward` with the rows in (t, b) order: the same logits and,
/// with the labels laid out the same way, the same loss and parameter gradients, whether
/// the output projection is hoisted (teacher forcing 1) or run per step (0.5, argmax fed
/// back).
#[test]
fn seq2seq_forward_time_major_matches_forward_with_rows_reordered() {
    let ctx = ctx();
    let (batch, src_len, steps, vocab) = (3, 4, 5, 11);
    let src: Vec<u32> = (0..batch * src_len).map(|i| 3 + (i * 7 % 8) as u32).collect();
    let src = Tensor::from_slice(ctx, &src, &[batch, src_len]).unwrap();
    let lengths = tsumugi::kernels::Lengths::new(ctx, &[4, 2, 3], src_len).unwrap();
    let inputs: Vec<Tensor> = (0..steps)
        .map(|t| {
            let ids: Vec<u32> = (0..batch).map(|b| 1 + ((t * 3 + b * 5) % 10) as u32).collect();
            Tensor::from_slice(ctx, &ids, &[batch, 1]).unwrap()
        })
        .collect();
    let labels_bt: Vec<u32> = (0..batch * steps).map(|i| (i * 4 % vocab) as u32).collect();
    let labels_tb: Vec<u32> = (0..steps * batch)
        .map(|r| labels_bt[(r % batch) * steps + r / batch])
        .collect();
    let ce = CrossEntropy {
        ignore_index: Some(PAD),
        ..CrossEntropy::default()
    };
    let attentions = [
        None,
        Some(AttentionKind::Bahdanau),
        Some(AttentionKind::Luong(LuongScore::Dot)),
    ];
    for (attention, teacher_forcing) in attentions.into_iter().flat_map(|a| [(a, 1.0), (a, 0.5)]) {
        let mut results = Vec::new();
        for time_major in [false, true] {
            let mut store = ParamStore::new();
            let model = seq2seq(ctx, &mut store, (vocab, vocab), (6, 8), attention);
            let mut rng = StdRng::seed_from_u64(5);
            let mut g = Graph::train(ctx, &mut store, 0, 1);
            let (logits, labels) = if time_major {
                let logits = model
                    .forward_time_major(&mut g, &src, Some(&lengths), &inputs, teacher_forcing, &mut rng)
                    .unwrap();
                (logits, &labels_tb)
            } else {
                let logits = model
                    .forward(&mut g, &src, Some(&lengths), &inputs, teacher_forcing, &mut rng)
                    .unwrap();
                (logits, &labels_bt)
            };
            let labels = Tensor::from_slice(ctx, labels, &[batch * steps]).unwrap();
            let loss = g.cross_entropy(logits, &labels, &ce).unwrap();
            let (logits_t, loss_t) = (g.value(logits).clone(), g.value(loss).clone());
            g.backward(loss).unwrap();
            g.submit();
            let mut logits = logits_t.to_vec::<f32>().unwrap();
            if time_major {
                // (t, b) rows back to (b, t).
                let reordered: Vec<f32> = (0..batch * steps)
                    .flat_map(|r| {
                        let (b, t) = (r / steps, r % steps);
                        let row = t * batch + b;
                        logits[row * vocab..(row + 1) * vocab].to_vec()
                    })
                    .collect();
                logits = reordered;
            }
            // Every parameter that takes a gradient (all but V.bias, which cancels), so
            // that the hoisted decoder (embedding lookup and its half of W_ih over all
            // steps at once) is checked everywhere.
            let grads: Vec<(String, Vec<f32>)> = store
                .entries()
                .filter_map(|(name, _, _)| {
                    let id = store.find(name).unwrap();
                    let grad = store.grad(id)?.to_vec::<f32>().unwrap();
                    Some((name.to_string(), grad))
                })
                .collect();
            assert!(grads.len() >= 12, "{} gradients", grads.len());
            results.push((logits, loss_t.to_vec::<f32>().unwrap()[0], grads));
        }
        let close = |a: &[f32], b: &[f32], what: &str| {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                assert!(
                    (x - y).abs() <= 1e-5 + 1e-4 * y.abs(),
                    "{what}[{i}]: {x} vs {y} (tf {teacher_forcing}, {attention:?})"
                );
            }
        };
        close(&results[1].0, &results[0].0, "logits");
        close(&[results[1].1], &[results[0].1], "loss");
        assert_eq!(results[1].2.len(), results[0].2.len());
        for ((name, a), (name_b, b)) in results[1].2.iter().zip(&results[0].2) {
            assert_eq!(name, name_b);
            close(a, b, name);
        }
    }
}

#[test]
fn every_attention_modules_gradients_match_finite_differences() {
    // Each attention of a decoder on its own, with inputs large enough that the scores
    // matter (through a whole seq2seq at the initial scale its gradients are ~1e-5,
    // below what finite differences of an f32 loss resolve): query `[B, H]` and encoder
    // outputs `[B, S, H]` as parameters, context projected to 3 classes, a summed
    // cross-entropy. Luong concat's W_a gradient comes from both halves of its split.
    let ctx = ctx();
    let (batch, steps, hidden) = (2, 4, 5);
    let lengths = tsumugi::kernels::Lengths::new(ctx, &[4, 3], steps).unwrap();
    let labels = Tensor::from_slice(ctx, &[2u32, 0], &[batch]).unwrap();
    let ce = CrossEntropy {
        reduction: tsumugi::kernels::cross_entropy::Reduction::Sum,
        ..CrossEntropy::default()
    };
    let kinds = [
        AttentionKind::Bahdanau,
        AttentionKind::Luong(LuongScore::Dot),
        AttentionKind::Luong(LuongScore::General),
        AttentionKind::Luong(LuongScore::Concat),
    ];
    for kind in kinds {
        let mut store = ParamStore::new();
        let mut rng = StdRng::seed_from_u64(8);
        let prefix = "attention";
        let attention = match kind {
            AttentionKind::Bahdanau => {
                Attention::Bahdanau(BahdanauAttention::new(ctx, &mut store, &mut rng, prefix, hidden).unwrap())
            }
            AttentionKind::Luong(score) => {
                Attention::Luong(LuongAttention::new(ctx, &mut store, &mut rng, prefix, hidden, score).unwrap())
            }
        };
        let mut add = |name: &str, shape: &[usize], seed: u64, scale: f32| {
            let data: Vec<f32> = common::seeded(seed, shape.iter().product())
                .iter()
                .map(|x| scale * x)
                .collect();
            store
                .add(name, Tensor::from_slice(ctx, &data, shape).unwrap(), true)
                .unwrap()
        };
        let query = add("query", &[batch, hidden], 1, 1.5);
        let values = add("values", &[batch, steps, hidden], 2, 1.5);
        let proj = add("proj", &[3, hidden], 3, 2.0);
        // Sharper scores: the attention's own weights at twice their initial scale.
        let ids: Vec<_> = store
            .entries()
            .filter(|(name, _, _)| name.starts_with(prefix))
            .map(|(name, _, _)| store.find(name).unwrap())
            .collect();
        for &id in &ids {
            let scaled: Vec<f32> = store
                .value(id)
                .to_vec::<f32>()
                .unwrap()
                .iter()
                .map(|x| 2.0 * x)
                .collect();
            store.value(id).write(&scaled).unwrap();
        }
        let loss = |store: &mut ParamStore, backward: bool| -> f64 {
            store.zero_grad();
            let mut g = Graph::eval(ctx, store);
            let (q, v, p) = (
                g.param(query).unwrap(),
                g.param(values).unwrap(),
                g.param(proj).unwrap(),
            );
            let memory = attention.memory(&mut g, v).unwrap();
            let (context, _) = attention.forward(&mut g, q, &memory, Some(&lengths)).unwrap();
            let logits = g.linear(context, p, None).unwrap();
            let loss = g.cross_entropy(logits, &labels, &ce).unwrap();
            let value = g.value(loss).clone();
            if backward {
                g.backward(loss).unwrap();
            }
            g.submit();
            f64::from(value.to_vec::<f32>().unwrap()[0])
        };
        loss(&mut store, true);
        // Bahdanau's V.bias shifts every score alike: it gets no gradient, by design.
        let mut params: Vec<_> = ids
            .into_iter()
            .filter(|&id| store.name(id) != "attention.V.bias")
            .collect();
        params.extend([query, values]);
        for &id in &params {
            let grad: Vec<f32> = store.grad(id).unwrap().to_vec().unwrap();
            let largest = grad.iter().fold(0f32, |a, b| a.max(b.abs()));
            let name = store.name(id);
            assert!(
                largest > 0.05,
                "{kind:?}: {name} has gradients of at most {largest}: too small to check"
            );
        }
        common::assert_param_gradients_match_finite_differences(
            &format!("{kind:?}"),
            &mut store,
            &params,
            4,
            |store| loss(store, false),
        );
    }
}

#[test]
fn scheduled_sampling_ratios_follow_their_schedules_and_bad_ratios_are_errors() {
    use tsumugi::nn::seq2seq::TeacherForcing;
    let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
    assert_eq!(TeacherForcing::Constant(0.5).ratio(1000).unwrap(), 0.5);
    let linear = TeacherForcing::Linear {
        start: 1.0,
        end: 0.2,
        steps: 100,
    };
    assert_eq!(linear.ratio(0).unwrap(), 1.0);
    assert!(close(linear.ratio(50).unwrap(), 0.6));
    assert!(close(linear.ratio(100).unwrap(), 0.2));
    assert!(close(linear.ratio(5000).unwrap(), 0.2));
    let exponential = TeacherForcing::Exponential { k: 0.99 };
    assert!(close(exponential.ratio(10).unwrap(), 0.99f64.powi(10)));
    // Bengio et al.'s inverse sigmoid: k / (k + exp(i / k)).
    let sigmoid = TeacherForcing::InverseSigmoid { k: 10.0 };
    assert!(close(sigmoid.ratio(0).unwrap(), 10.0 / 11.0));
    assert!(close(sigmoid.ratio(50).unwrap(), 10.0 / (10.0 + 5f64.exp())));
    for bad in [
        TeacherForcing::Constant(1.5),
        TeacherForcing::Constant(f64::NAN),
        TeacherForcing::Linear {
            start: -0.1,
            end: 0.0,
            steps: 3,
        },
        TeacherForcing::Exponential { k: 1.0 },
        TeacherForcing::InverseSigmoid { k: 0.5 },
    ] {
        assert!(bad.ratio(1).is_err(), "{bad:?}");
    }

    // A ratio outside [0, 1] given to forward is an error, not a panic.
    let ctx = ctx();
    let mut store = ParamStore::new();
    let model = seq2seq(ctx, &mut store, (5, 5), (4, 4), None);
    let src = Tensor::from_slice(ctx, &[1u32, 2], &[1, 2]).unwrap();
    let inputs = [Tensor::from_slice(ctx, &[SOS], &[1, 1]).unwrap()];
    let mut g = Graph::train(ctx, &mut store, 0, 1);
    let mut rng = StdRng::seed_from_u64(0);
    for ratio in [f64::NAN, -0.5, 2.0] {
        assert!(
            model.forward(&mut g, &src, None, &inputs, ratio, &mut rng).is_err(),
            "{ratio}"
        );
    }
}

#[test]
fn seq2seq_takes_the_encoders_lengths_and_the_attention_mask_separately() {
    use tsumugi::kernels::Lengths;
    use tsumugi::nn::seq2seq::SourcePadding;
    let ctx = ctx();
    let mut store = ParamStore::new();
    let model = seq2seq(ctx, &mut store, (9, 7), (6, 8), Some(AttentionKind::Bahdanau));
    // Row 0 is full, row 1 padded after 2 of its 4 steps.
    let src = Tensor::from_slice(ctx, &[3u32, 4, 5, 6, 7, 8, PAD, PAD], &[2, 4]).unwrap();
    let lengths = Lengths::new(ctx, &[4, 2], 4).unwrap();
    let sos = Tensor::from_slice(ctx, &[SOS, SOS], &[2, 1]).unwrap();
    // Greedy decoding for 3 steps; returns every step's attention weights [2, 4].
    let weights = |store: &mut ParamStore, padding: SourcePadding<'_>| -> Vec<Vec<f32>> {
        let mut g = Graph::eval(ctx, store);
        let (_, weights) = model.greedy(&mut g, &src, padding, &sos, 3).unwrap();
        let weights: Vec<Tensor> = weights.iter().map(|&w| g.value(w).clone()).collect();
        g.submit();
        weights.iter().map(|w| w.to_vec::<f32>().unwrap()).collect()
    };
    let both = weights(&mut store, (&lengths).into());
    let none = weights(&mut store, None.into());
    let attention_only = weights(&mut store, SourcePadding::attention_only(&lengths));
    let encoder_only = weights(
        &mut store,
        SourcePadding {
            encoder: Some(&lengths),
            attention: None,
        },
    );
    for (name, w, masked) in [
        ("both", &both, true),
        ("none", &none, false),
        ("attention_only", &attention_only, true),
        ("encoder_only", &encoder_only, false),
    ] {
        for step in w {
            // Row 1's padded positions 2 and 3 get weight exactly when attention is not masked.
            let padded = step[6] + step[7];
            assert_eq!(padded == 0.0, masked, "{name}: padded weight {padded}");
            for row in step.chunks(4) {
                assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{name}: {row:?}");
            }
        }
    }
    // The encoder's lengths change what attention attends to (its outputs past a row's
    // length), so masking alone differs from masking with packed encoding.
    assert_ne!(attention_only, both);
    assert_ne!(encoder_only, none);
    // Row 0 is full: its weights do not depend on the mask, only on the encoder run,
    // which is the same for a full row whether lengths are given or not.
    for (a, b) in attention_only.iter().zip(&none) {
        assert_eq!(a[..4], b[..4]);
    }
}
