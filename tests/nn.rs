//! nn modules: parameter counts equal PyTorch's, and a 2-layer LSTM classifier with
//! dropout trains on lavapipe.

mod common;

use common::ctx;
use rand::rngs::StdRng;
use rand::SeedableRng;
use tsumugi::graph::{Graph, ParamStore};
use tsumugi::loss::CrossEntropy;
use tsumugi::nn::{embedding, linear, recurrent, EmbeddingConfig, VarBuilder};
use tsumugi::nn::{CellKind, Embedding, Linear, Recurrent, RecurrentConfig};
use tsumugi::optim::Adam;
use tsumugi::{Context, Tensor};

/// The chapter's classifier shape: embedding -> recurrent layers -> linear on the last
/// layer's final hidden state.
struct Classifier {
    embedding: Embedding,
    rnn: Recurrent,
    fc: Linear,
}

#[allow(clippy::too_many_arguments)]
fn classifier(
    ctx: &Context,
    store: &mut ParamStore,
    kind: CellKind,
    vocab: usize,
    embed: usize,
    hidden: usize,
    outputs: usize,
    layers: usize,
    dropout: f32,
) -> Classifier {
    let mut rng = StdRng::seed_from_u64(42);
    Classifier {
        embedding: embedding(
            vocab,
            embed,
            EmbeddingConfig { padding_idx: None },
            VarBuilder::with_prefix(ctx, store, &mut rng, "embedding"),
        )
        .unwrap(),
        rnn: recurrent(
            RecurrentConfig {
                num_layers: layers,
                dropout,
                ..RecurrentConfig::new(kind, embed, hidden)
            },
            VarBuilder::with_prefix(ctx, store, &mut rng, "rnn"),
        )
        .unwrap(),
        fc: linear(hidden, outputs, VarBuilder::with_prefix(ctx, store, &mut rng, "fc")).unwrap(),
    }
}

#[test]
fn parameter_counts_equal_pytorchs_for_the_chapters_classifiers() {
    let ctx = ctx();
    // SentimentLSTM(vocab_size=24, embedding_dim=32, hidden_dim=64, output_dim=2,
    // n_layers=2, dropout=0.5): nn.Embedding(24, 32), nn.LSTM(32, 64, num_layers=2,
    // dropout=0.5, batch_first=True), nn.Linear(64, 2).
    // >>> sum(p.numel() for p in model.parameters())  # PyTorch 2.x
    // 59266
    let mut store = ParamStore::new();
    classifier(ctx, &mut store, CellKind::Lstm, 24, 32, 64, 2, 2, 0.5);
    assert_eq!(store.count(), (59_266, 59_266));

    // TextClassifierGRU(vocab_size=100, embedding_dim=32, hidden_dim=64, output_dim=2):
    // nn.Embedding(100, 32), nn.GRU(32, 64, batch_first=True), nn.Linear(64, 2) -> 22146
    let mut store = ParamStore::new();
    classifier(ctx, &mut store, CellKind::Gru, 100, 32, 64, 2, 1, 0.0);
    assert_eq!(store.count(), (22_146, 22_146));

    // CharLevelRNN(vocab_size=27, embedding_dim=32, hidden_dim=64, n_layers=2):
    // nn.Embedding(27, 32), nn.LSTM(32, 64, num_layers=2, batch_first=True),
    // nn.Linear(64, 27) -> 60987
    let mut store = ParamStore::new();
    classifier(ctx, &mut store, CellKind::Lstm, 27, 32, 64, 27, 2, 0.0);
    assert_eq!(store.count(), (60_987, 60_987));

    // SentimentLSTM with nn.Embedding.from_pretrained(table, freeze=True): the 24 x 32
    // table stays in the count but not among the trainable parameters.
    // >>> sum(p.numel() for p in model.parameters() if p.requires_grad)  -> 58498
    let mut store = ParamStore::new();
    let mut rng = StdRng::seed_from_u64(1);
    let table = Tensor::zeros(ctx, &[24, 32], tsumugi::DType::F32).unwrap();
    Embedding::from_pretrained(&mut store, "embedding", table, true, None).unwrap();
    recurrent(
        RecurrentConfig {
            num_layers: 2,
            dropout: 0.5,
            ..RecurrentConfig::new(CellKind::Lstm, 32, 64)
        },
        VarBuilder::with_prefix(ctx, &mut store, &mut rng, "lstm"),
    )
    .unwrap();
    linear(64, 2, VarBuilder::with_prefix(ctx, &mut store, &mut rng, "fc")).unwrap();
    assert_eq!(store.count(), (59_266, 58_498));
}

#[test]
fn a_two_layer_lstm_classifier_with_dropout_reaches_full_training_accuracy() {
    // Eight reviews over 12 words (0 = <pad>), lengths 3 to 5, label 1 = positive.
    let reviews: [(&[u32], u32); 8] = [
        (&[1, 2, 3], 1),
        (&[1, 4, 3], 0),
        (&[5, 6, 7, 8], 1),
        (&[5, 6, 9, 8], 0),
        (&[3, 10, 11, 7], 1),
        (&[3, 10, 11, 9], 0),
        (&[1, 2, 3, 10, 7], 1),
        (&[1, 4, 3, 10, 9], 0),
    ];
    let ctx = ctx();
    let steps = 5;
    let mut ids = vec![0u32; reviews.len() * steps];
    for (row, (words, _)) in reviews.iter().enumerate() {
        ids[row * steps..row * steps + words.len()].copy_from_slice(words);
    }
    let lengths: Vec<u32> = reviews.iter().map(|(w, _)| w.len() as u32).collect();
    let labels: Vec<u32> = reviews.iter().map(|&(_, l)| l).collect();
    let ids = Tensor::from_slice(ctx, &ids, &[reviews.len(), steps]).unwrap();
    let labels_t = Tensor::from_slice(ctx, &labels, &[reviews.len()]).unwrap();
    let lengths = tsumugi::kernels::Lengths::new(ctx, &lengths, steps).unwrap();

    let mut store = ParamStore::new();
    let model = classifier(ctx, &mut store, CellKind::Lstm, 12, 16, 32, 2, 2, 0.2);
    let adam = Adam {
        lr: 0.01,
        ..Adam::default()
    };
    let run = |store: &mut ParamStore, t: Option<u64>| -> (Vec<f32>, f32) {
        store.zero_grad();
        let mut g = match t {
            Some(t) => Graph::train(ctx, store, 5, t),
            None => Graph::eval(ctx, store),
        };
        let x = model.embedding.forward(&mut g, &ids).unwrap();
        let states = model.rnn.forward(&mut g, x, Some(&lengths)).unwrap();
        let last = *states.h_n.last().unwrap();
        let last = g.dropout(last, 0.2).unwrap();
        let logits = model.fc.forward(&mut g, last).unwrap();
        let loss = g.cross_entropy(logits, &labels_t, &CrossEntropy::default()).unwrap();
        let (logits_t, loss_t) = (g.value(logits).clone(), g.value(loss).clone());
        if let Some(t) = t {
            g.backward(loss).unwrap();
            g.adam_step(&adam, t).unwrap();
        }
        g.submit();
        (logits_t.to_vec().unwrap(), loss_t.to_vec::<f32>().unwrap()[0])
    };
    let (_, first) = run(&mut store, Some(1));
    let mut last = first;
    for t in 2..=100 {
        last = run(&mut store, Some(t)).1;
    }
    let (logits, _) = run(&mut store, None);
    let predictions: Vec<u32> = logits.chunks(2).map(|l| u32::from(l[1] > l[0])).collect();
    assert_eq!(predictions, labels, "loss {first} -> {last}");
}

#[test]
fn bidirectional_layers_count_like_pytorch_and_name_the_reverse_direction() {
    // nn.LSTM(32, 64, num_layers=2, bidirectional=True, batch_first=True):
    // >>> sum(p.numel() for p in lstm.parameters())  -> 149504
    // 2 * (4*64*(32+64) + 2*256) + 2 * (4*64*(128+64) + 2*256)
    let ctx = ctx();
    let mut store = ParamStore::new();
    let mut rng = StdRng::seed_from_u64(1);
    let config = RecurrentConfig {
        num_layers: 2,
        bidirectional: true,
        ..RecurrentConfig::new(CellKind::Lstm, 32, 64)
    };
    recurrent(config, VarBuilder::with_prefix(ctx, &mut store, &mut rng, "lstm")).unwrap();
    assert_eq!(store.count(), (149_504, 149_504));
}

#[test]
fn bidirectional_two_layer_lstm_and_gru_with_lengths_match_finite_differences() {
    let ctx = ctx();
    let (b, t, v, e, h) = (3, 4, 7, 3, 4);
    let ids: Vec<u32> = (0..b * t).map(|i| (i * 3 % v) as u32).collect();
    let ids = Tensor::from_slice(ctx, &ids, &[b, t]).unwrap();
    let lengths = tsumugi::kernels::Lengths::new(ctx, &[4, 2, 3], t).unwrap();
    // Per-token targets, <pad> = 0 ignored past each row's length.
    let targets: Vec<u32> = (0..b * t)
        .map(|i| {
            if i % t < [4, 2, 3][i / t] {
                1 + (i * 5 % (v - 1)) as u32
            } else {
                0
            }
        })
        .collect();
    let targets = Tensor::from_slice(ctx, &targets, &[b * t]).unwrap();
    for kind in [CellKind::Lstm, CellKind::Gru] {
        let mut store = ParamStore::new();
        let mut rng = StdRng::seed_from_u64(5);
        // No padding_idx: id 0 also stands at real steps here, and padding_idx's rule (no
        // gradient for that row, wherever it stands) would differ from the loss's slope.
        let embedding = embedding(
            v,
            e,
            EmbeddingConfig { padding_idx: None },
            VarBuilder::with_prefix(ctx, &mut store, &mut rng, "embedding"),
        )
        .unwrap();
        let config = RecurrentConfig {
            num_layers: 2,
            bidirectional: true,
            ..RecurrentConfig::new(kind, e, h)
        };
        let rnn = recurrent(config, VarBuilder::with_prefix(ctx, &mut store, &mut rng, "rnn")).unwrap();
        let fc = linear(2 * h, v, VarBuilder::with_prefix(ctx, &mut store, &mut rng, "fc")).unwrap();
        let ce = CrossEntropy {
            ignore_index: Some(0),
            ..CrossEntropy::default()
        };
        let loss = |store: &mut ParamStore, with_grads: bool| -> f64 {
            store.zero_grad();
            let mut g = Graph::eval(ctx, store);
            let x = embedding.forward(&mut g, &ids).unwrap();
            let out = rnn.forward(&mut g, x, Some(&lengths)).unwrap().output;
            let logits = fc.forward(&mut g, out).unwrap();
            let logits = g.reshape(logits, &[b * t, v]).unwrap();
            let l = g.cross_entropy(logits, &targets, &ce).unwrap();
            let value = g.value(l).clone();
            if with_grads {
                g.backward(l).unwrap();
            }
            g.submit();
            f64::from(value.to_vec::<f32>().unwrap()[0])
        };
        loss(&mut store, true);
        let names = [
            "embedding.weight",
            "rnn.weight_ih_l0",
            "rnn.weight_hh_l0_reverse",
            "rnn.bias_hh_l1_reverse",
            "rnn.weight_ih_l1_reverse",
            "fc.weight",
        ];
        let params: Vec<_> = names
            .iter()
            .map(|name| {
                store
                    .find(name)
                    .unwrap_or_else(|| panic!("{kind:?}: no parameter {name}"))
            })
            .collect();
        let case = format!("bidirectional {kind:?}");
        common::assert_param_gradients_match_finite_differences(&case, &mut store, &params, 1, |store| {
            loss(store, false)
        });
    }
}

#[test]
fn training_with_one_seed_is_bitwise_reproducible_and_another_seed_differs() {
    // Initialisation from one StdRng seed, dropout masks from (seed, step): no atomics or
    // order-dependent sums anywhere, so two runs give the same bits.
    let ctx = ctx();
    let ids = Tensor::from_slice(ctx, &[1u32, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3], &[3, 4]).unwrap();
    let labels = Tensor::from_slice(ctx, &[0u32, 1, 0], &[3]).unwrap();
    let run = |seed: u64| -> Vec<u32> {
        let mut store = ParamStore::new();
        let mut rng = StdRng::seed_from_u64(seed);
        let embedding = embedding(
            10,
            8,
            EmbeddingConfig { padding_idx: Some(0) },
            VarBuilder::with_prefix(ctx, &mut store, &mut rng, "embedding"),
        )
        .unwrap();
        let config = RecurrentConfig {
            num_layers: 2,
            dropout: 0.3,
            ..RecurrentConfig::new(CellKind::Lstm, 8, 12)
        };
        let lstm = recurrent(config, VarBuilder::with_prefix(ctx, &mut store, &mut rng, "lstm")).unwrap();
        let fc = linear(12, 2, VarBuilder::with_prefix(ctx, &mut store, &mut rng, "fc")).unwrap();
        for t in 1..=5 {
            store.zero_grad();
            let mut g = Graph::train(ctx, &mut store, seed, t);
            let x = embedding.forward(&mut g, &ids).unwrap();
            let x = g.dropout(x, 0.3).unwrap();
            let h = lstm.forward(&mut g, x, None).unwrap().h_n[1];
            let logits = fc.forward(&mut g, h).unwrap();
            let loss = g.cross_entropy(logits, &labels, &CrossEntropy::default()).unwrap();
            g.backward(loss).unwrap();
            g.adam_step(&Adam::default(), t).unwrap();
            g.submit();
        }
        let w = store.find("lstm.weight_hh_l1").unwrap();
        store
            .value(w)
            .to_vec::<f32>()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect()
    };
    let (first, again, other) = (run(3), run(3), run(4));
    assert_eq!(first, again, "same seed, different bits");
    assert_ne!(first, other, "a different seed gave the same weights");
}

/// Every parameter's name and value, in registration order.
fn named_values(store: &ParamStore) -> Vec<(String, Vec<f32>)> {
    store
        .entries()
        .map(|(name, value, _)| (name.to_string(), value.to_vec::<f32>().unwrap()))
        .collect()
}

#[test]
fn a_var_builder_names_parameters_as_pytorch_and_builds_what_the_positional_constructors_build() {
    use tsumugi::nn::seq2seq::{AttentionKind, Decoder, DecoderConfig, Encoder, EncoderConfig, Seq2Seq};
    use tsumugi::nn::{embedding, linear, recurrent, EmbeddingConfig, VarBuilder};
    let ctx = ctx();
    // A bare module: PyTorch's state dict of nn.Linear(3, 2) is {weight, bias}, of nn.LSTM
    // weight_ih_l0 ...; an empty prefix gives exactly those names, with either form.
    let (mut store, mut rng) = (ParamStore::new(), StdRng::seed_from_u64(1));
    linear(3, 2, VarBuilder::new(ctx, &mut store, &mut rng)).unwrap();
    let names: Vec<String> = store.entries().map(|(n, _, _)| n.to_string()).collect();
    assert_eq!(names, ["weight", "bias"]);
    let (mut store, mut rng) = (ParamStore::new(), StdRng::seed_from_u64(1));
    recurrent(
        RecurrentConfig::new(CellKind::Gru, 3, 4),
        VarBuilder::with_prefix(ctx, &mut store, &mut rng, ""),
    )
    .unwrap();
    let names: Vec<String> = store.entries().map(|(n, _, _)| n.to_string()).collect();
    assert_eq!(names, ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]);

    // Sub-modules through pp(), and the same values as the positional constructors from
    // the same seed.
    let (mut built, mut rng) = (ParamStore::new(), StdRng::seed_from_u64(7));
    let mut vb = VarBuilder::new(ctx, &mut built, &mut rng);
    let mut model = vb.pp("model");
    embedding(11, 4, EmbeddingConfig { padding_idx: Some(0) }, model.pp("embedding")).unwrap();
    recurrent(RecurrentConfig::new(CellKind::Lstm, 4, 5), model.pp("lstm")).unwrap();
    linear(5, 3, model.pp("fc")).unwrap();
    let (mut positional, mut rng) = (ParamStore::new(), StdRng::seed_from_u64(7));
    embedding(
        11,
        4,
        EmbeddingConfig { padding_idx: Some(0) },
        VarBuilder::with_prefix(ctx, &mut positional, &mut rng, "model.embedding"),
    )
    .unwrap();
    let config = RecurrentConfig::new(CellKind::Lstm, 4, 5);
    recurrent(
        config,
        VarBuilder::with_prefix(ctx, &mut positional, &mut rng, "model.lstm"),
    )
    .unwrap();
    linear(
        5,
        3,
        VarBuilder::with_prefix(ctx, &mut positional, &mut rng, "model.fc"),
    )
    .unwrap();
    assert_eq!(named_values(&built), named_values(&positional));
    assert!(built.find("model.lstm.weight_hh_l0").is_some());

    // The chapter's Seq2SeqWithAttention from two configs.
    let encoder = EncoderConfig {
        vocab: 9,
        embed: 4,
        hidden: 6,
        padding_idx: Some(0),
    };
    let decoder = DecoderConfig {
        vocab: 7,
        embed: 4,
        hidden: 6,
        padding_idx: Some(0),
        attention: Some(AttentionKind::Bahdanau),
    };
    let (mut built, mut rng) = (ParamStore::new(), StdRng::seed_from_u64(3));
    Seq2Seq::build(encoder, decoder, VarBuilder::new(ctx, &mut built, &mut rng)).unwrap();
    let (mut positional, mut rng) = (ParamStore::new(), StdRng::seed_from_u64(3));
    Encoder::build(
        EncoderConfig {
            vocab: 9,
            embed: 4,
            hidden: 6,
            padding_idx: Some(0),
        },
        VarBuilder::with_prefix(ctx, &mut positional, &mut rng, "encoder"),
    )
    .unwrap();
    let attention = Some(AttentionKind::Bahdanau);
    Decoder::build(
        DecoderConfig {
            vocab: 7,
            embed: 4,
            hidden: 6,
            padding_idx: Some(0),
            attention,
        },
        VarBuilder::with_prefix(ctx, &mut positional, &mut rng, "decoder"),
    )
    .unwrap();
    assert_eq!(named_values(&built), named_values(&positional));
    assert!(built.find("decoder.attention.W1.weight").is_some());
}
