//! 2.5: `nn.Embedding(1000, 128)` on `[[1, 2, 3, 4], [5, 6, 7, 8]]`; a pretrained table
//! (`torch.randn(1000, 100)`, the listing's stand-in for GloVe or word2vec) frozen and
//! fine-tuned in `TextClassifierWithPretrainedEmbedding(hidden 128, 2 classes)`;
//! `CharLevelRNN(27, 32, 64, 2 layers)` on "hello world" before training.

use rand::rngs::StdRng;
use rand::SeedableRng;
use tsumugi::graph::ParamStore;
use tsumugi::nn::models::{Readout, RecurrentModel};
use tsumugi::nn::{CellKind, Embedding, RecurrentConfig};
use tsumugi::{Context, Tensor};

use crate::common::{argmax_rows, count_line, fmt_row, infer, randn, size, thousands, AnyResult, Walk};
use crate::data::HELLO;
use tsumugi::nn::{embedding, linear, recurrent, EmbeddingConfig, VarBuilder};

pub fn run(walk: &mut Walk) -> AnyResult<()> {
    embedding_layer(walk)?;
    pretrained(walk)?;
    char_level(walk)
}

fn embedding_layer(walk: &mut Walk) -> AnyResult<()> {
    let ctx = &walk.ctx;
    let (vocab_size, embed_dim) = (1000, 128);
    let mut rng = StdRng::seed_from_u64(250);
    let mut store = ParamStore::new();
    let embedding = embedding(
        vocab_size,
        embed_dim,
        EmbeddingConfig { padding_idx: None },
        VarBuilder::with_prefix(ctx, &mut store, &mut rng, "embedding"),
    )?;
    println!("=== Embedding層 ===");
    println!("語彙サイズ: {vocab_size}");
    println!("埋め込み次元: {embed_dim}");
    count_line("パラメータ数", store.count().0, Some(128_000));
    let ids = Tensor::from_slice(ctx, &[1u32, 2, 3, 4, 5, 6, 7, 8], &[2, 4])?;
    let embedded = infer(ctx, &mut store, |g| Ok(vec![embedding.forward(g, &ids)?]))?;
    println!("\n入力形状: {}", size(ids.shape()));
    println!("埋め込み後の形状: {}", size(&[2, 4, embed_dim]));
    println!("\n最初の単語の埋め込みベクトル(一部):");
    println!("  {}", fmt_row(&embedded[0][..10]));
    Ok(())
}

/// `TextClassifierWithPretrainedEmbedding`: the given table, an LSTM, fc on
/// `lstm_out[:, -1, :]`.
pub fn pretrained_classifier(
    ctx: &Context,
    store: &mut ParamStore,
    rng: &mut StdRng,
    (table, shape): (&[f32], [usize; 2]),
    (hidden, classes): (usize, usize),
    freeze: bool,
) -> tsumugi::Result<RecurrentModel> {
    let table = Tensor::from_slice(ctx, table, &shape)?;
    let embedding = Embedding::from_pretrained(store, "embedding", table, freeze, None)?;
    Ok(RecurrentModel {
        embedding: Some(embedding),
        rnn: recurrent(
            RecurrentConfig::new(CellKind::Lstm, shape[1], hidden),
            VarBuilder::with_prefix(ctx, store, rng, "lstm"),
        )?,
        fc: linear(hidden, classes, VarBuilder::with_prefix(ctx, store, rng, "fc"))?,
        readout: Readout::LastHidden { dropout: 0.0 },
    })
}

fn pretrained(walk: &mut Walk) -> AnyResult<()> {
    let ctx = &walk.ctx;
    let (vocab_size, embed_dim) = (1000, 100);
    let mut rng = StdRng::seed_from_u64(251);
    let table = randn(&mut rng, vocab_size * embed_dim);
    for (freeze, title) in [
        (true, "事前学習済み埋め込み(固定)"),
        (false, "事前学習済み埋め込み(fine-tuning)"),
    ] {
        let mut store = ParamStore::new();
        let model = pretrained_classifier(
            ctx,
            &mut store,
            &mut StdRng::seed_from_u64(252),
            (&table, [vocab_size, embed_dim]),
            (128, 2),
            freeze,
        )?;
        let (total, trainable) = store.count();
        println!("\n=== {title} ===");
        println!("学習可能: {}", if freeze { "False" } else { "True" });
        println!("=== モデル統計 ===");
        if freeze {
            count_line("総パラメータ", total, Some(230_018));
            count_line("学習可能パラメータ", trainable, Some(130_018));
            count_line("固定パラメータ", total - trainable, Some(100_000));
        } else {
            count_line("総パラメータ", total, None);
            count_line("学習可能パラメータ", trainable, None);
            count_line("固定パラメータ", total - trainable, None);
        }
        // A pass over a few ids, to show the model runs on the table it was given.
        let ids = Tensor::from_slice(ctx, &[1u32, 2, 3, 4, 5, 6, 7, 8], &[2, 4])?;
        let logits = infer(ctx, &mut store, |g| Ok(vec![model.forward(g, &ids, None)?.logits]))?;
        println!("logits of [[1, 2, 3, 4], [5, 6, 7, 8]]: {}", fmt_row(&logits[0]));
    }
    println!(
        "  (the listing's counts: the LSTM(100, 128) has 4 * (128 * 100 + 128 * 128 + 2 * 128) = {}, fc {}; \
         the chapter's 230,018 / 130,018 do not follow from its sizes)",
        thousands(117_760),
        258
    );
    Ok(())
}

fn char_level(walk: &mut Walk) -> AnyResult<()> {
    let ctx = &walk.ctx;
    let chars: Vec<char> = "abcdefghijklmnopqrstuvwxyz ".chars().collect();
    let num_chars = chars.len();
    let mut rng = StdRng::seed_from_u64(253);
    let mut store = ParamStore::new();
    // dropout=0.2 between the layers only acts in training; this pass is eval.
    let model = RecurrentModel::char_level_rnn(ctx, &mut store, &mut rng, num_chars, 32, 64, 2)?;
    println!("\n=== 文字レベルモデル ===");
    println!("文字数: {num_chars}");
    count_line("総パラメータ", store.count().0, Some(24_091));
    let encoded: Vec<u32> = HELLO
        .chars()
        .map(|c| chars.iter().position(|&x| x == c).map_or(0, |i| i as u32))
        .collect();
    println!("\nテキスト: '{HELLO}'");
    println!("エンコード: {encoded:?}");
    let x = Tensor::from_slice(ctx, &encoded, &[1, encoded.len()])?;
    let logits = infer(ctx, &mut store, |g| Ok(vec![model.forward(g, &x, None)?.logits]))?;
    println!("\n出力形状: {}", size(&[1, encoded.len(), num_chars]));
    let predicted: String = argmax_rows(&logits[0], num_chars).iter().map(|&i| chars[i]).collect();
    println!("予測テキスト(訓練前): '{predicted}'");
    Ok(())
}
