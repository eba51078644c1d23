//! 2.2: `SentimentLSTM(vocab, 32, 64, 2, num_layers=2)` (dropout 0.2 between the layers,
//! 0.5 before fc) trained for 200 epochs (Adam 0.001) on the chapter's eight reviews
//! padded to 10, then classifying its two test sentences; `TextClassifierGRU` against
//! a one-layer SentimentLSTM: parameters and the time of 100 forward passes over
//! `randint(0, 100, (32, 20))`.

use std::time::Instant;

use rand::rngs::StdRng;
use rand::SeedableRng;
use tsumugi::graph::ParamStore;
use tsumugi::nn::models::{Readout, RecurrentModel, Spec};
use tsumugi::nn::{CellKind, RecurrentConfig};
use tsumugi::Tensor;

use crate::common::{
    adam, argmax_rows, count_line, cross_entropy, infer, randint, size, softmax, train_step, AnyResult, Walk,
};
use crate::data::{encode, vocab_of, SENTIMENT, SENTIMENT_MAX_LEN, SENTIMENT_TEST};

pub fn run(walk: &mut Walk) -> AnyResult<()> {
    sentiment(walk)?;
    lstm_vs_gru(walk)
}

/// The chapter's `SentimentLSTM`: its LSTM drops 0.2 between layers when it has more
/// than one, its head drops 0.5, and fc reads `lstm_out[:, -1, :]` (the last layer's
/// final state: no lengths, so padded steps run too, as in the listing).
pub fn sentiment_lstm(
    walk: &Walk,
    store: &mut ParamStore,
    rng: &mut StdRng,
    (vocab, embed, hidden, classes, layers): (usize, usize, usize, usize, usize),
) -> tsumugi::Result<RecurrentModel> {
    let spec = Spec {
        rnn_name: "lstm",
        config: RecurrentConfig {
            num_layers: layers,
            dropout: if layers > 1 { 0.2 } else { 0.0 },
            ..RecurrentConfig::new(CellKind::Lstm, embed, hidden)
        },
        embedding: Some((vocab, None)),
        outputs: classes,
        readout: Readout::LastHidden { dropout: 0.5 },
    };
    RecurrentModel::new(&walk.ctx, store, rng, spec)
}

fn sentiment(walk: &mut Walk) -> AnyResult<()> {
    let ctx = &walk.ctx;
    let words = vocab_of(SENTIMENT.iter().map(|(s, _)| *s));
    // word_to_idx with '<pad>' = 0 added.
    let vocab_size = words.len() + 1;
    count_line("語彙サイズ", vocab_size, Some(24));
    println!("  (20 distinct words in the 8 sentences, plus '<pad>')");
    let first: Vec<String> = words
        .iter()
        .take(5)
        .enumerate()
        .map(|(i, w)| format!("'{w}': {}", i + 1))
        .collect();
    println!("単語 → インデックス(一部): {{{}}}", first.join(", "));
    let max_len = SENTIMENT_MAX_LEN;
    let ids: Vec<u32> = SENTIMENT
        .iter()
        .flat_map(|(s, _)| encode(&s.split_whitespace().collect::<Vec<_>>(), &words, max_len))
        .collect();
    let labels: Vec<u32> = SENTIMENT.iter().map(|&(_, l)| l).collect();
    let n = labels.len();
    println!("\nデータ形状:");
    println!("X: {}, y: {}", size(&[n, max_len]), size(&[n]));
    let x = Tensor::from_slice(ctx, &ids, &[n, max_len])?;
    let y = Tensor::from_slice(ctx, &labels, &[n])?;

    let mut rng = StdRng::seed_from_u64(220);
    let mut store = ParamStore::new();
    let model = sentiment_lstm(walk, &mut store, &mut rng, (vocab_size, 32, 64, 2, 2))?;
    let (optimizer, criterion) = (adam(0.001), cross_entropy(None));
    let num_epochs = 200;
    for epoch in 1..=num_epochs {
        let (loss, logits) = train_step(ctx, &mut store, &optimizer, epoch, |g| {
            let logits = model.forward(g, &x, None)?.logits;
            Ok((logits, g.cross_entropy(logits, &y, &criterion)?))
        })?;
        if epoch.is_multiple_of(50) {
            // As the listing: the accuracy of this step's (training-mode) outputs.
            let predicted = argmax_rows(&logits, 2);
            let correct = predicted.iter().zip(&labels).filter(|(p, l)| **p as u32 == **l).count();
            println!(
                "Epoch [{epoch}/{num_epochs}], Loss: {loss:.4}, Accuracy: {:.4}",
                correct as f64 / n as f64
            );
        }
    }
    println!("(the chapter prints losses 0.5234, 0.2156, 0.0987, 0.0456 and accuracies 0.75, 1, 1, 1: illustrative)");
    for sentence in SENTIMENT_TEST {
        let ids = encode(&sentence.split_whitespace().collect::<Vec<_>>(), &words, max_len);
        let x_test = Tensor::from_slice(ctx, &ids, &[1, max_len])?;
        let logits = infer(ctx, &mut store, |g| Ok(vec![model.forward(g, &x_test, None)?.logits]))?;
        let p = softmax(&logits[0]);
        println!("\n文: '{sentence}'");
        println!("予測: {}", if p[1] > p[0] { "Positive" } else { "Negative" });
        println!("確率: [[{:.4} {:.4}]]", p[0], p[1]);
    }
    println!("(the chapter prints [[0.0234 0.9766]] and [[0.9823 0.0177]])");
    Ok(())
}

fn lstm_vs_gru(walk: &mut Walk) -> AnyResult<()> {
    let ctx = &walk.ctx;
    let mut rng = StdRng::seed_from_u64(221);
    let mut lstm_store = ParamStore::new();
    // SentimentLSTM(vocab_size=100, embed_size=32, hidden_size=64, num_classes=2): one layer.
    let lstm = sentiment_lstm(walk, &mut lstm_store, &mut rng, (100, 32, 64, 2, 1))?;
    let mut gru_store = ParamStore::new();
    let gru = RecurrentModel::text_classifier_gru(ctx, &mut gru_store, &mut rng, 100, 32, 64, 2)?;
    let (lstm_params, gru_params) = (lstm_store.count().0, gru_store.count().0);
    println!("\n=== LSTM vs GRU パラメータ数比較 ===");
    count_line("LSTM", lstm_params, Some(37_954));
    count_line("GRU", gru_params, Some(28_866));
    println!(
        "削減率: {:.1}%  (the chapter prints 23.9%)",
        (1.0 - gru_params as f64 / lstm_params as f64) * 100.0
    );

    let x = randint(&mut rng, 100, 32 * 20);
    let x = Tensor::from_slice(ctx, &x, &[32, 20])?;
    // Each run builds the graph, submits it and reads the logits back (PyTorch's CPU call
    // returns with them computed); one run first, untimed, compiles the pipelines.
    let time = |model: &RecurrentModel, store: &mut ParamStore| -> AnyResult<f64> {
        infer(ctx, store, |g| Ok(vec![model.forward(g, &x, None)?.logits]))?;
        let start = Instant::now();
        for _ in 0..100 {
            infer(ctx, store, |g| Ok(vec![model.forward(g, &x, None)?.logits]))?;
        }
        Ok(start.elapsed().as_secs_f64())
    };
    let lstm_time = time(&lstm, &mut lstm_store)?;
    let gru_time = time(&gru, &mut gru_store)?;
    println!(
        "\n=== 推論速度比較(100回実行)===  (batch 32, 20 steps, eval mode, on {})",
        ctx.adapter()
    );
    println!("LSTM: {lstm_time:.4}秒");
    println!("GRU: {gru_time:.4}秒");
    println!(
        "高速化: {:.1}%  (the chapter prints 0.1234 s, 0.0987 s, 25.0%: illustrative)",
        (lstm_time / gru_time - 1.0) * 100.0
    );
    Ok(())
}
