//! The chapter's toy English-to-Japanese translator, built from graph ops as its
//! Seq2SeqWithAttention: an LSTM encoder, a decoder LSTM fed `[embedding; context]` with
//! Bahdanau attention (W1, W2, V), trained with teacher forcing and cross-entropy
//! ignoring `<pad>`, then greedy decoding with each chosen token fed back on the GPU.
//! (The chapter's text lost its special tokens: `<pad>`, `<sos>`, `<eos>` are restored.)

mod common;

use common::ctx;
use rand::rngs::StdRng;
use rand::SeedableRng;
use tsumugi::graph::{Graph, ParamStore, Var};
use tsumugi::kernels::attention::Score;
use tsumugi::kernels::cross_entropy::CrossEntropy;
use tsumugi::kernels::optim::Adam;
use tsumugi::nn::{CellKind, Embedding, Linear, Recurrent, RecurrentConfig};
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
const EMBED: usize = 16;
const HIDDEN: usize = 32;

struct Vocab {
    src: Vec<String>,
    tgt: Vec<char>,
}

impl Vocab {
    fn new() -> Vocab {
        let mut src = vec!["<pad>".to_string()];
        let mut tgt = vec!['_', '^', '$']; // <pad>, <sos>, <eos>
        for (en, ja) in PAIRS {
            for word in en.split(' ') {
                if !src.iter().any(|w| w == word) {
                    src.push(word.to_string());
                }
            }
            for c in ja.chars() {
                if !tgt.contains(&c) {
                    tgt.push(c);
                }
            }
        }
        Vocab { src, tgt }
    }
}

struct Model {
    enc_embedding: Embedding,
    encoder: Recurrent,
    dec_embedding: Embedding,
    w1: Linear,
    w2: Linear,
    v: Linear,
    decoder: Recurrent,
    fc: Linear,
}

fn model(ctx: &Context, store: &mut ParamStore, vocab: &Vocab) -> Model {
    let mut rng = StdRng::seed_from_u64(11);
    let (vs, vt) = (vocab.src.len(), vocab.tgt.len());
    Model {
        enc_embedding: Embedding::new(ctx, store, &mut rng, "encoder.embedding", vs, EMBED, Some(PAD)).unwrap(),
        encoder: Recurrent::new(
            ctx,
            store,
            &mut rng,
            "encoder.lstm",
            RecurrentConfig::new(CellKind::Lstm, EMBED, HIDDEN),
        )
        .unwrap(),
        dec_embedding: Embedding::new(ctx, store, &mut rng, "decoder.embedding", vt, EMBED, Some(PAD)).unwrap(),
        w1: Linear::new(ctx, store, &mut rng, "decoder.attention.W1", HIDDEN, HIDDEN, true).unwrap(),
        w2: Linear::new(ctx, store, &mut rng, "decoder.attention.W2", HIDDEN, HIDDEN, true).unwrap(),
        v: Linear::new(ctx, store, &mut rng, "decoder.attention.V", HIDDEN, 1, true).unwrap(),
        decoder: Recurrent::new(
            ctx,
            store,
            &mut rng,
            "decoder.lstm",
            RecurrentConfig::new(CellKind::Lstm, EMBED + HIDDEN, HIDDEN),
        )
        .unwrap(),
        fc: Linear::new(ctx, store, &mut rng, "decoder.fc", HIDDEN, vt, true).unwrap(),
    }
}

/// The encoder's outputs, attention keys (W2 values, once per sequence), V as a vector,
/// and the decoder's starting state.
struct Encoded {
    values: Var,
    keys: Var,
    v: Var,
    h: Var,
    c: Var,
}

fn encode(g: &mut Graph<'_>, m: &Model, src: &Tensor) -> Encoded {
    let x = m.enc_embedding.forward(g, src).unwrap();
    let states = m.encoder.forward(g, x, None).unwrap();
    let keys = m.w2.forward(g, states.output).unwrap();
    let v_weight = g.param(m.v.weight);
    let v = g.reshape(v_weight, &[HIDDEN]).unwrap();
    Encoded {
        values: states.output,
        keys,
        v,
        h: states.h_n[0],
        c: states.c_n[0],
    }
}

/// One decoder step from token ids `[B, 1]`: the logits `[B, V]` and the new state.
fn decode_step(g: &mut Graph<'_>, m: &Model, e: &Encoded, ids: &Tensor, h: Var, c: Var) -> (Var, Var, Var) {
    let batch = ids.shape()[0];
    let emb = m.dec_embedding.forward(g, ids).unwrap();
    let emb = g.reshape(emb, &[batch, EMBED]).unwrap();
    let query = m.w1.forward(g, h).unwrap();
    let (context, _weights) = g
        .attention(Score::Additive, query, e.keys, Some(e.v), e.values, None)
        .unwrap();
    let input = g.concat(emb, context).unwrap();
    let input = g.reshape(input, &[batch, 1, EMBED + HIDDEN]).unwrap();
    let states = m.decoder.forward_from(g, input, None, &[h], &[c]).unwrap();
    let (h, c) = (states.h_n[0], states.c_n[0]);
    (m.fc.forward(g, h).unwrap(), h, c)
}

#[test]
fn seq2seq_with_attention_learns_the_toy_translator_and_greedy_decoding_returns_its_targets() {
    let ctx = ctx();
    let vocab = Vocab::new();
    let batch = PAIRS.len();
    let src_len = 2;
    let tgt_len = PAIRS.iter().map(|(_, ja)| ja.chars().count()).max().unwrap() + 1;
    let src: Vec<u32> = PAIRS
        .iter()
        .flat_map(|(en, _)| {
            en.split(' ')
                .map(|w| vocab.src.iter().position(|s| s == w).unwrap() as u32)
        })
        .collect();
    let src = Tensor::from_slice(ctx, &src, &[batch, src_len]).unwrap();
    // Decoder inputs: <sos> y1 .. yn (pad); labels: y1 .. yn <eos> (pad), per step.
    let mut inputs = vec![vec![PAD; batch]; tgt_len];
    let mut labels = vec![PAD; batch * tgt_len];
    for (b, (_, ja)) in PAIRS.iter().enumerate() {
        let ids: Vec<u32> = ja
            .chars()
            .map(|c| vocab.tgt.iter().position(|&t| t == c).unwrap() as u32)
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
    let m = model(ctx, &mut store, &vocab);
    let adam = Adam {
        lr: 0.01,
        ..Adam::default()
    };
    let ce = CrossEntropy {
        ignore_index: Some(PAD),
        ..CrossEntropy::default()
    };
    let mut losses = Vec::new();
    for t in 1..=120u64 {
        store.zero_grad();
        let mut g = Graph::new(ctx, &mut store, true, 3, t);
        let e = encode(&mut g, &m, &src);
        let (mut h, mut c) = (e.h, e.c);
        let mut all_logits: Option<Var> = None;
        // Teacher forcing: the reference token goes in at every step.
        for ids in &step_inputs {
            let (logits, h2, c2) = decode_step(&mut g, &m, &e, ids, h, c);
            (h, c) = (h2, c2);
            all_logits = Some(match all_logits {
                None => logits,
                Some(before) => g.concat(before, logits).unwrap(),
            });
        }
        // [B, T * V] -> [B * T, V], rows in the labels' (b, t) order.
        let logits = g
            .reshape(all_logits.unwrap(), &[batch * tgt_len, vocab.tgt.len()])
            .unwrap();
        let loss = g.cross_entropy(logits, &labels_t, &ce).unwrap();
        let loss_t = g.value(loss).clone();
        g.backward(loss).unwrap();
        g.adam_step(&adam, t).unwrap();
        g.submit();
        if t % 40 == 0 {
            losses.push(loss_t.to_vec::<f32>().unwrap()[0]);
        }
    }

    // Greedy decoding: argmax on the GPU, fed back as the next input; one readback.
    let mut g = Graph::new(ctx, &mut store, false, 0, 0);
    let e = encode(&mut g, &m, &src);
    let (mut h, mut c) = (e.h, e.c);
    let mut ids = step_inputs[0].clone();
    let mut chosen = Vec::new();
    for _ in 0..tgt_len {
        let (logits, h2, c2) = decode_step(&mut g, &m, &e, &ids, h, c);
        (h, c) = (h2, c2);
        let best = g.argmax(logits).unwrap();
        ids = best.reshape(&[batch, 1]).unwrap();
        chosen.push(best);
    }
    g.submit();
    let chosen: Vec<Vec<u32>> = chosen.iter().map(|t| t.to_vec().unwrap()).collect();
    for (b, (en, ja)) in PAIRS.iter().enumerate() {
        let translation: String = chosen
            .iter()
            .map(|step| step[b])
            .take_while(|&id| id != EOS)
            .map(|id| vocab.tgt[id as usize])
            .collect();
        assert_eq!(translation, *ja, "{en} (losses every 40 steps: {losses:?})");
    }
}
