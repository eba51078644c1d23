//! The exercises with code: 2, `SimpleLSTM(50, 32, 64, 3)` on `randint(0, 50, (4, 10))`;
//! 4, `BahdanauAttention(64)` on random encoder outputs `[2, 5, 64]` and decoder state
//! `[2, 64]` (the weights sum to 1; bar chart and heat map PNG); 5, a TextClassifier
//! (embedding 50, LSTM 64, 2 classes) on 50 random sequences of 10 ids over 100 words
//! with random labels, trained 100 epochs with random, pretrained-frozen and
//! pretrained-fine-tuned embeddings (loss curves and test accuracy bars PNG).

use std::path::Path;

use plotters::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;
use tsumugi::graph::{Graph, ParamStore};
use tsumugi::nn::models::{Readout, RecurrentModel, Spec};
use tsumugi::nn::seq2seq::{Attention, BahdanauAttention};
use tsumugi::nn::{CellKind, RecurrentConfig};
use tsumugi::text::WordVectors;
use tsumugi::Tensor;

use crate::common::{
    adam, argmax_rows, count_line, cross_entropy, fmt_row, infer, print_matrix, randint, randn, size, train_step,
    AnyResult, Walk,
};
use crate::data::SIMPLE_LSTM;
use crate::plot::{bars, curves, figure, heat_map, Heat};
use crate::s2_5::pretrained_classifier;

/// Exercise 2's `SimpleLSTM`: embedding, one LSTM layer, fc on `lstm_out[:, -1, :]`.
pub fn ex2(walk: &mut Walk) -> AnyResult<()> {
    let ctx = &walk.ctx;
    let (vocab_size, embed_size, hidden_size, num_classes) = SIMPLE_LSTM;
    let mut rng = StdRng::seed_from_u64(902);
    let mut store = ParamStore::new();
    let spec = Spec {
        rnn_name: "lstm",
        config: RecurrentConfig::new(CellKind::Lstm, embed_size, hidden_size),
        embedding: Some((vocab_size, None)),
        outputs: num_classes,
        readout: Readout::LastHidden { dropout: 0.0 },
    };
    let model = RecurrentModel::new(ctx, &mut store, &mut rng, spec)?;
    println!("=== LSTMモデル ===");
    count_line("総パラメータ", store.count().0, Some(26_563));
    println!("  (50 * 32 + 4 * (64 * 32 + 64 * 64 + 2 * 64) + 64 * 3 + 3 = 1,600 + 25,088 + 195)");
    let (batch_size, seq_len) = (4, 10);
    let x = Tensor::from_slice(
        ctx,
        &randint(&mut rng, vocab_size as u32, batch_size * seq_len),
        &[batch_size, seq_len],
    )?;
    println!("\n入力形状: {}", size(x.shape()));
    let output = infer(ctx, &mut store, |g| Ok(vec![model.forward(g, &x, None)?.logits]))?;
    println!("出力形状: {}", size(&[batch_size, num_classes]));
    println!("\n出力:");
    print_matrix(&output[0], num_classes);
    println!("\n予測クラス: tensor({:?})", argmax_rows(&output[0], num_classes));
    println!("(the chapter's outputs and classes [1, 0, 1, 0] are illustrative; these come from an untrained model)");
    Ok(())
}

pub fn ex4(walk: &mut Walk) -> AnyResult<()> {
    let ctx = &walk.ctx;
    let (batch_size, seq_len, hidden_size) = (2, 5, 64);
    let mut rng = StdRng::seed_from_u64(904);
    let encoder_outputs = randn(&mut rng, batch_size * seq_len * hidden_size);
    let encoder_outputs = Tensor::from_slice(ctx, &encoder_outputs, &[batch_size, seq_len, hidden_size])?;
    let decoder_hidden = Tensor::from_slice(
        ctx,
        &randn(&mut rng, batch_size * hidden_size),
        &[batch_size, hidden_size],
    )?;
    let mut store = ParamStore::new();
    let attention = Attention::Bahdanau(BahdanauAttention::new(
        ctx,
        &mut store,
        &mut rng,
        "attention",
        hidden_size,
    )?);
    let mut g = Graph::eval(ctx, &mut store);
    let (values, query) = (g.input(&encoder_outputs), g.input(&decoder_hidden));
    let memory = attention.memory(&mut g, values)?;
    let (context, weights) = attention.forward(&mut g, query, &memory, None)?;
    let (context, weights) = (g.value(context).clone(), g.value(weights).clone());
    g.submit();
    println!("=== Bahdanau Attention ===");
    println!("エンコーダ出力形状: {}", size(encoder_outputs.shape()));
    println!("デコーダ隠れ状態形状: {}", size(decoder_hidden.shape()));
    println!("\nコンテキストベクトル形状: {}", size(context.shape()));
    println!("アテンション重み形状: {}", size(weights.shape()));
    let weights = weights.to_vec::<f32>()?;
    println!("\n最初のバッチのアテンション重み:");
    println!("tensor({})", fmt_row(&weights[..seq_len]));
    let sum: f32 = weights[..seq_len].iter().sum();
    println!("合計: {sum:.4}(1.0であることを確認)");
    println!("(the chapter prints [0.2134, 0.1987, 0.2345, 0.1876, 0.1658]: illustrative)");
    for (b, row) in weights.chunks(seq_len).enumerate() {
        let s: f32 = row.iter().sum();
        if (s - 1.0).abs() > 1e-5 {
            return Err(format!("batch {b}: the attention weights sum to {s}, not 1").into());
        }
    }

    let positions: Vec<String> = (0..seq_len).map(|i| i.to_string()).collect();
    let batches: Vec<String> = (0..batch_size).map(|i| i.to_string()).collect();
    let heat = Heat {
        values: &weights,
        rows: batch_size,
        cols: seq_len,
        x_ticks: &positions,
        y_ticks: &batches,
        x_label: "Encoder Position",
        y_label: "Batch",
        title: "Attention Weights Heatmap",
        annotate: false,
    };
    let mut texts = heat.texts();
    texts.extend(["Attention Weights (Batch 1)", "Attention Weight", "0123456789.-"]);
    // figsize=(10, 4): the bar chart left, the heat map right.
    let path = figure(walk, "exercise4_attention.png", (1000, 400), &texts, |root| {
        let (left, right) = root.split_horizontally(500);
        bars(
            &left,
            "Attention Weights (Batch 1)",
            &positions,
            &weights[..seq_len],
            &[RGBColor(31, 119, 180)],
            ("Encoder Position", "Attention Weight"),
            (0.0, 1.0),
            false,
        )?;
        heat_map(&right, &heat)
    })?;
    println!("bar chart and heat map: {}", path.display());
    Ok(())
}

/// Exercise 5's three variants: name, colour, and whether the table is GloVe's
/// (`Some(freeze)`) or random.
const VARIANTS: [(&str, RGBColor, Option<bool>); 3] = [
    ("Random", RGBColor(0x31, 0x82, 0xce), None),
    ("Pretrained (Frozen)", RGBColor(0xf5, 0x9e, 0x0b), Some(true)),
    ("Pretrained (Fine-tuning)", RGBColor(0x10, 0xb9, 0x81), Some(false)),
];

pub fn ex5(walk: &mut Walk) -> AnyResult<()> {
    let (vocab_size, embed_dim, hidden, num_samples, seq_len, num_test) = (100, 50, 64, 50, 10, 20);
    let mut rng = StdRng::seed_from_u64(42);
    let x_train = randint(&mut rng, vocab_size as u32, num_samples * seq_len);
    let y_train = randint(&mut rng, 2, num_samples);
    let x_test = randint(&mut rng, vocab_size as u32, num_test * seq_len);
    let y_test = randint(&mut rng, 2, num_test);
    // The listing simulates pretrained vectors with torch.randn(100, 50); the repository
    // has real ones of that width: GloVe 6B 50d, whose first 100 words (the most
    // frequent) make the 100-word table.
    let glove_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/glove_6b_50d_top5k/glove.6B.50d.top5k.txt");
    let glove = WordVectors::read_glove(&glove_path)?;
    if glove.dim() != embed_dim || glove.len() < vocab_size {
        return Err(format!(
            "{}: expected at least {vocab_size} vectors of {embed_dim}",
            glove_path.display()
        )
        .into());
    }
    let pretrained: Vec<f32> = glove.words()[..vocab_size]
        .iter()
        .flat_map(|w| glove.get(w).unwrap_or(&[]).to_vec())
        .collect();
    println!(
        "data: {num_samples} training and {num_test} test sequences of {seq_len} random ids over {vocab_size} words, \
         random labels (as the listing); pretrained table: GloVe 6B 50d of \"{}\" .. \"{}\"",
        glove.words()[0],
        glove.words()[vocab_size - 1]
    );
    let ctx = &walk.ctx;
    let x_train = Tensor::from_slice(ctx, &x_train, &[num_samples, seq_len])?;
    let y_train_t = Tensor::from_slice(ctx, &y_train, &[num_samples])?;
    let x_test = Tensor::from_slice(ctx, &x_test, &[num_test, seq_len])?;
    let (optimizer, criterion) = (adam(0.001), cross_entropy(None));
    let mut results = Vec::new();
    for (i, &(name, _, freeze)) in VARIANTS.iter().enumerate() {
        println!(
            "\n=== 実験{}: {} ===",
            i + 1,
            match freeze {
                None => "ランダム初期化埋め込み",
                Some(true) => "事前学習済み埋め込み(固定)",
                Some(false) => "事前学習済み埋め込み(fine-tuning)",
            }
        );
        // The same LSTM and fc initialisation in every variant; the random table is
        // nn.Embedding's N(0, 1) from a stream of its own.
        let random_table = randn(&mut StdRng::seed_from_u64(5), vocab_size * embed_dim);
        let table = if freeze.is_some() { &pretrained } else { &random_table };
        let mut store = ParamStore::new();
        let model = pretrained_classifier(
            ctx,
            &mut store,
            &mut StdRng::seed_from_u64(55),
            (table, [vocab_size, embed_dim]),
            (hidden, 2),
            freeze == Some(true),
        )?;
        let mut losses = Vec::with_capacity(100);
        for epoch in 1..=100 {
            let (loss, _) = train_step(ctx, &mut store, &optimizer, epoch, |g| {
                let logits = model.forward(g, &x_train, None)?.logits;
                Ok((logits, g.cross_entropy(logits, &y_train_t, &criterion)?))
            })?;
            losses.push(loss);
        }
        let logits = infer(ctx, &mut store, |g| Ok(vec![model.forward(g, &x_test, None)?.logits]))?;
        let predicted = argmax_rows(&logits[0], 2);
        let correct = predicted.iter().zip(&y_test).filter(|(p, y)| **p as u32 == **y).count();
        let accuracy = correct as f32 / num_test as f32;
        println!(
            "trainable parameters {}; training loss {:.4} -> {:.4}",
            store.count().1,
            losses[0],
            losses[losses.len() - 1]
        );
        println!("テスト精度: {accuracy:.4}");
        results.push((name, losses, accuracy));
    }
    let majority = y_test
        .iter()
        .filter(|&&y| y == 1)
        .count()
        .max(y_test.iter().filter(|&&y| y == 0).count());
    println!(
        "\nnote: the labels are random, so no embedding can predict them: the test accuracies are chance \
         (the majority class is {:.4} of the test set), and the loss curves show how fast each variant fits \
         noise. The chapter's closing ranking is its opinion, not an output of this listing.",
        majority as f32 / num_test as f32
    );

    let methods: Vec<String> = ["Random", "Frozen", "Fine-tuning"].map(String::from).into();
    let accuracies: Vec<f32> = results.iter().map(|r| r.2).collect();
    let series: Vec<(&str, RGBColor, &[f32])> = results
        .iter()
        .zip(&VARIANTS)
        .map(|(r, v)| (r.0, v.1, r.1.as_slice()))
        .collect();
    let mut texts: Vec<&str> = VARIANTS.iter().map(|v| v.0).collect();
    texts.extend(methods.iter().map(String::as_str));
    texts.extend([
        "Training Loss Comparison",
        "Test Accuracy Comparison",
        "Epoch",
        "Loss",
        "Test Accuracy",
        "0123456789.-",
    ]);
    let colours: Vec<RGBColor> = VARIANTS.iter().map(|v| v.1).collect();
    // figsize=(14, 5).
    let path = figure(walk, "exercise5_embeddings.png", (1400, 500), &texts, |root| {
        let (left, right) = root.split_horizontally(700);
        curves(&left, "Training Loss Comparison", &series)?;
        bars(
            &right,
            "Test Accuracy Comparison",
            &methods,
            &accuracies,
            &colours,
            ("", "Test Accuracy"),
            (0.0, 1.0),
            true,
        )
    })?;
    println!("loss curves and accuracy bars: {}", path.display());
    println!(
        "(the same comparison on real sentences and real labels, rt-polarity with GloVe 50d: \
         cargo run --release --example pretrained_embeddings)"
    );
    Ok(())
}
