//! 2.1: `SimpleRNN(10, 20, 2)` on `torch.randn(3, 5, 10)`, and `CharRNN(8, 16, 32)`
//! trained for 100 epochs (Adam 0.01) to predict the next character of "hello world"
//! from windows of 3, then generating from "h".

use rand::rngs::StdRng;
use rand::SeedableRng;
use tsumugi::graph::ParamStore;
use tsumugi::nn::models::RecurrentModel;
use tsumugi::Tensor;

use crate::common::{adam, argmax_rows, cross_entropy, infer, print_matrix, randn, size, train_step, AnyResult, Walk};
use crate::data::HELLO;

pub fn run(walk: &mut Walk) -> AnyResult<()> {
    simple_rnn(walk)?;
    char_rnn(walk)
}

fn simple_rnn(walk: &mut Walk) -> AnyResult<()> {
    let ctx = &walk.ctx;
    let (input_size, hidden_size, output_size) = (10, 20, 2);
    let (batch_size, seq_len) = (3, 5);
    let mut rng = StdRng::seed_from_u64(21);
    let mut store = ParamStore::new();
    let model = RecurrentModel::simple_rnn(ctx, &mut store, &mut rng, input_size, hidden_size, output_size)?;
    let x = randn(&mut rng, batch_size * seq_len * input_size);
    let x = Tensor::from_slice(ctx, &x, &[batch_size, seq_len, input_size])?;
    let out = infer(ctx, &mut store, |g| Ok(vec![model.forward(g, &x, None)?.logits]))?;
    println!("入力形状: {}", size(x.shape()));
    println!("出力形状: {}", size(&[batch_size, output_size]));
    println!("\n出力:");
    print_matrix(&out[0], output_size);
    Ok(())
}

fn char_rnn(walk: &mut Walk) -> AnyResult<()> {
    let ctx = &walk.ctx;
    // chars = sorted(set(text)); char_to_idx = {ch: i}
    let mut chars: Vec<char> = HELLO.chars().collect();
    chars.sort_unstable();
    chars.dedup();
    let vocab_size = chars.len();
    let idx = |c: char| chars.iter().position(|&x| x == c).map_or(0, |i| i as u32);
    println!("\n語彙サイズ: {vocab_size}");
    let mapping: Vec<String> = chars.iter().enumerate().map(|(i, c)| format!("'{c}': {i}")).collect();
    println!("文字 → インデックス: {{{}}}", mapping.join(", "));
    let encoded: Vec<u32> = HELLO.chars().map(idx).collect();
    println!("\nエンコードされたテキスト: {encoded:?}");

    let seq_len = 3;
    let samples = encoded.len() - seq_len;
    let x: Vec<u32> = (0..samples).flat_map(|i| encoded[i..i + seq_len].to_vec()).collect();
    let y: Vec<u32> = (0..samples)
        .flat_map(|i| encoded[i + 1..i + seq_len + 1].to_vec())
        .collect();
    println!("\n訓練データ:");
    println!(
        "X shape: {}, Y shape: {}",
        size(&[samples, seq_len]),
        size(&[samples, seq_len])
    );
    println!(
        "最初のサンプル - 入力: tensor({:?}), 出力: tensor({:?})",
        &x[..seq_len],
        &y[..seq_len]
    );
    let x = Tensor::from_slice(ctx, &x, &[samples, seq_len])?;
    let y = Tensor::from_slice(ctx, &y, &[samples * seq_len])?;

    let mut rng = StdRng::seed_from_u64(22);
    let mut store = ParamStore::new();
    let model = RecurrentModel::char_rnn(ctx, &mut store, &mut rng, vocab_size, 16, 32)?;
    let (optimizer, criterion) = (adam(0.01), cross_entropy(None));
    let num_epochs = 100;
    for epoch in 1..=num_epochs {
        // output.reshape(-1, vocab_size) against Y.reshape(-1): the logits come as
        // [B * T, V] in (b, t) order already.
        let (loss, _) = train_step(ctx, &mut store, &optimizer, epoch, |g| {
            let logits = model.forward(g, &x, None)?.logits;
            Ok((logits, g.cross_entropy(logits, &y, &criterion)?))
        })?;
        if epoch.is_multiple_of(20) {
            println!("Epoch [{epoch}/{num_epochs}], Loss: {loss:.4}");
        }
    }
    println!("(the chapter prints 1.4567, 0.8901, 0.4234, 0.2123, 0.1234: illustrative)");
    println!("\n訓練完了!");

    // Not in the listing: what the trained model generates. Greedy, one character at a
    // time from "h", each prediction made from the last 3 characters (the window length
    // the model was trained on, each window starting from a zero state).
    let mut text = vec![idx('h')];
    while text.len() < HELLO.len() {
        let window = &text[text.len().saturating_sub(seq_len)..];
        let ids = Tensor::from_slice(ctx, window, &[1, window.len()])?;
        let logits = infer(ctx, &mut store, |g| Ok(vec![model.forward(g, &ids, None)?.logits]))?;
        let last = argmax_rows(&logits[0], vocab_size);
        text.push(last[last.len() - 1] as u32);
    }
    let generated: String = text.iter().map(|&i| chars[i as usize]).collect();
    println!(
        "generated greedily from 'h' (each character from the last {seq_len}): '{generated}'{}",
        if generated == HELLO { " = the training text" } else { "" }
    );
    Ok(())
}
