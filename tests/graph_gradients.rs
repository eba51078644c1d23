//! Gradients through the tape's recurrent layers (per-row lengths, outputs and final
//! states), initial states and concat, and attention (additive and dot), each against
//! finite differences of the GPU loss.

mod common;

use common::ctx;

mod cells {
    use super::ctx;
    use rand::{Rng, SeedableRng};
    use tsumugi::graph::{Graph, ParamId, ParamStore, RecurrentWeights};
    use tsumugi::kernels::rnn_cell::Nonlinearity;
    use tsumugi::kernels::Lengths;
    use tsumugi::loss::CrossEntropy;
    use tsumugi::{Context, Tensor};

    #[derive(Clone, Copy, Debug)]
    enum Cell {
        Lstm,
        Gru,
        Rnn(Nonlinearity),
    }

    impl Cell {
        fn gates(self) -> usize {
            match self {
                Cell::Lstm => 4,
                Cell::Gru => 3,
                Cell::Rnn(_) => 1,
            }
        }
    }

    const B: usize = 3;
    const T: usize = 4;
    const I: usize = 5;
    const H: usize = 6;
    const V: usize = 7;
    const IGNORE: u32 = 99;

    struct Net {
        cell: Cell,
        per_token: bool,
        params: Vec<ParamId>,
    }

    fn net(ctx: &Context, store: &mut ParamStore, cell: Cell, per_token: bool, seed: u64) -> Net {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let g = cell.gates();
        let mut add = |name: &str, shape: &[usize]| {
            let data: Vec<f32> = (0..shape.iter().product())
                .map(|_| rng.random_range(-0.5..0.5))
                .collect();
            store
                .add(name, Tensor::from_slice(ctx, &data, shape).unwrap(), true)
                .unwrap()
        };
        let params = vec![
            add("embedding.weight", &[V, I]),
            add("rnn.weight_ih_l0", &[g * H, I]),
            add("rnn.weight_hh_l0", &[g * H, H]),
            add("rnn.bias_ih_l0", &[g * H]),
            add("rnn.bias_hh_l0", &[g * H]),
            add("fc.weight", &[V, H]),
            add("fc.bias", &[V]),
        ];
        Net {
            cell,
            per_token,
            params,
        }
    }

    /// ids [B, T], lengths (row 1 and 2 padded), and targets: per token (ignored past
    /// each row's length) or per row.
    fn batch(ctx: &Context, per_token: bool) -> (Tensor, Lengths, Tensor) {
        let lengths = [4u32, 2, 3];
        let ids: Vec<u32> = (0..B * T).map(|i| (i * 3 % V) as u32).collect();
        let targets: Vec<u32> = if per_token {
            (0..B * T)
                .map(|i| {
                    if (i % T) < lengths[i / T] as usize {
                        ((i * 5 + 1) % V) as u32
                    } else {
                        IGNORE
                    }
                })
                .collect()
        } else {
            vec![1, 4, 6]
        };
        (
            Tensor::from_slice(ctx, &ids, &[B, T]).unwrap(),
            Lengths::new(ctx, &lengths, T).unwrap(),
            Tensor::from_slice(ctx, &targets, &[targets.len()]).unwrap(),
        )
    }

    fn loss(ctx: &Context, store: &mut ParamStore, n: &Net, with_grads: bool) -> f64 {
        let (ids, lengths, targets) = batch(ctx, n.per_token);
        store.zero_grad();
        let mut g = Graph::eval(ctx, store);
        let p: Vec<_> = n.params.iter().map(|&id| g.param(id).unwrap()).collect();
        let x = g.embedding(&ids, p[0], None).unwrap();
        let weights = RecurrentWeights {
            w_ih: p[1],
            w_hh: p[2],
            b_ih: p[3],
            b_hh: p[4],
        };
        let out = match n.cell {
            Cell::Lstm => g.lstm(x, weights, Some(&lengths), None),
            Cell::Gru => g.gru(x, weights, Some(&lengths), None),
            Cell::Rnn(act) => g.rnn(x, weights, act, Some(&lengths), None),
        }
        .unwrap();
        let logits = if n.per_token {
            let y = g.linear(out.output, p[5], Some(p[6])).unwrap();
            g.reshape(y, &[B * T, V]).unwrap()
        } else {
            g.linear(out.h_n, p[5], Some(p[6])).unwrap()
        };
        let op = CrossEntropy {
            ignore_index: Some(IGNORE),
            ..CrossEntropy::default()
        };
        let l = g.cross_entropy(logits, &targets, &op).unwrap();
        let value = g.value(l).clone();
        if with_grads {
            g.backward(l).unwrap();
        }
        g.submit();
        f64::from(value.to_vec::<f32>().unwrap()[0])
    }

    #[test]
    fn graph_recurrent_layers_with_lengths_match_finite_differences_through_outputs_and_final_states() {
        let ctx = ctx();
        let cells = [
            Cell::Lstm,
            Cell::Gru,
            Cell::Rnn(Nonlinearity::Tanh),
            Cell::Rnn(Nonlinearity::Relu),
        ];
        for (c, cell) in cells.into_iter().enumerate() {
            for per_token in [false, true] {
                let mut store = ParamStore::new();
                let n = net(ctx, &mut store, cell, per_token, 10 + c as u64);
                loss(ctx, &mut store, &n, true);
                let case = format!("{cell:?} per_token={per_token}");
                let params = n.params.clone();
                super::common::assert_param_gradients_match_finite_differences(
                    &case,
                    &mut store,
                    &params,
                    2,
                    |store| loss(ctx, store, &n, false),
                );
            }
        }
    }
}

mod encoder_decoder {
    use super::ctx;
    use rand::{Rng, SeedableRng};
    use tsumugi::graph::{Graph, ParamId, ParamStore, RecurrentWeights};
    use tsumugi::loss::CrossEntropy;
    use tsumugi::{Context, Tensor};

    const B: usize = 2;
    const S: usize = 3;
    const T: usize = 4;
    const E: usize = 3;
    const H: usize = 5;
    const V: usize = 6;

    fn params(ctx: &Context, store: &mut ParamStore, gates: usize) -> Vec<ParamId> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(17);
        let mut add = |name: &str, shape: &[usize]| {
            let data: Vec<f32> = (0..shape.iter().product())
                .map(|_| rng.random_range(-0.5..0.5))
                .collect();
            store
                .add(name, Tensor::from_slice(ctx, &data, shape).unwrap(), true)
                .unwrap()
        };
        vec![
            add("encoder.embedding.weight", &[V, E]),
            add("encoder.rnn.weight_ih_l0", &[gates * H, E]),
            add("encoder.rnn.weight_hh_l0", &[gates * H, H]),
            add("encoder.rnn.bias_ih_l0", &[gates * H]),
            add("encoder.rnn.bias_hh_l0", &[gates * H]),
            add("decoder.embedding.weight", &[V, E]),
            add("decoder.extra.weight", &[V, E]),
            add("decoder.rnn.weight_ih_l0", &[gates * H, 2 * E]),
            add("decoder.rnn.weight_hh_l0", &[gates * H, H]),
            add("decoder.rnn.bias_ih_l0", &[gates * H]),
            add("decoder.rnn.bias_hh_l0", &[gates * H]),
            add("decoder.fc.weight", &[V, H]),
            add("decoder.fc.bias", &[V]),
        ]
    }

    /// Encoder final state -> decoder initial state; decoder input = two embeddings
    /// concatenated; per-token loss.
    fn loss(ctx: &Context, store: &mut ParamStore, ids: &[ParamId], lstm: bool, with_grads: bool) -> f64 {
        let src: Vec<u32> = (0..B * S).map(|i| (i * 2 % V) as u32).collect();
        let tgt: Vec<u32> = (0..B * T).map(|i| (i * 5 % V) as u32).collect();
        let labels: Vec<u32> = (0..B * T).map(|i| ((i + 1) % V) as u32).collect();
        let (src, tgt) = (
            Tensor::from_slice(ctx, &src, &[B, S]).unwrap(),
            Tensor::from_slice(ctx, &tgt, &[B, T]).unwrap(),
        );
        let labels = Tensor::from_slice(ctx, &labels, &[B * T]).unwrap();
        store.zero_grad();
        let mut g = Graph::eval(ctx, store);
        let p: Vec<_> = ids.iter().map(|&id| g.param(id).unwrap()).collect();
        let weights = |k: usize| RecurrentWeights {
            w_ih: p[k],
            w_hh: p[k + 1],
            b_ih: p[k + 2],
            b_hh: p[k + 3],
        };
        let x = g.embedding(&src, p[0], None).unwrap();
        let y1 = g.embedding(&tgt, p[5], None).unwrap();
        let y2 = g.embedding(&tgt, p[6], None).unwrap();
        let y = g.concat(y1, y2).unwrap();
        let out = if lstm {
            let enc = g.lstm(x, weights(1), None, None).unwrap();
            g.lstm(y, weights(7), None, Some((enc.h_n, enc.c_n.unwrap()))).unwrap()
        } else {
            let enc = g.gru(x, weights(1), None, None).unwrap();
            g.gru(y, weights(7), None, Some(enc.h_n)).unwrap()
        };
        let logits = g.linear(out.output, p[11], Some(p[12])).unwrap();
        let logits = g.reshape(logits, &[B * T, V]).unwrap();
        let l = g.cross_entropy(logits, &labels, &CrossEntropy::default()).unwrap();
        let value = g.value(l).clone();
        if with_grads {
            g.backward(l).unwrap();
        }
        g.submit();
        f64::from(value.to_vec::<f32>().unwrap()[0])
    }

    #[test]
    fn graph_initial_states_and_concat_pass_gradients_like_finite_differences() {
        let ctx = ctx();
        for lstm in [true, false] {
            let mut store = ParamStore::new();
            let ids = params(ctx, &mut store, if lstm { 4 } else { 3 });
            loss(ctx, &mut store, &ids, lstm, true);
            let case = format!("encoder-decoder lstm={lstm}");
            super::common::assert_param_gradients_match_finite_differences(&case, &mut store, &ids, 0, |store| {
                loss(ctx, store, &ids, lstm, false)
            });
        }
    }
}

mod attention_op {
    use super::ctx;
    use rand::{Rng, SeedableRng};
    use tsumugi::graph::{Graph, ParamId, ParamStore};
    use tsumugi::kernels::attention::Score;
    use tsumugi::kernels::Lengths;
    use tsumugi::loss::CrossEntropy;
    use tsumugi::{Context, Tensor};

    const B: usize = 3;
    const S: usize = 4;
    const E: usize = 5;
    const V: usize = 6;

    fn params(ctx: &Context, store: &mut ParamStore) -> Vec<ParamId> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(23);
        let mut add = |name: &str, shape: &[usize]| {
            let data: Vec<f32> = (0..shape.iter().product())
                .map(|_| rng.random_range(-0.8..0.8))
                .collect();
            store
                .add(name, Tensor::from_slice(ctx, &data, shape).unwrap(), true)
                .unwrap()
        };
        vec![
            add("embedding.weight", &[V, E]),
            add("W1.weight", &[E, E]),
            add("W1.bias", &[E]),
            add("W2.weight", &[E, E]),
            add("W2.bias", &[E]),
            add("V.weight", &[E]),
            add("fc.weight", &[V, E]),
            add("fc.bias", &[V]),
        ]
    }

    fn loss(ctx: &Context, store: &mut ParamStore, ids: &[ParamId], score: Score, with_grads: bool) -> f64 {
        let src: Vec<u32> = (0..B * S).map(|i| (i * 5 % V) as u32).collect();
        let src = Tensor::from_slice(ctx, &src, &[B, S]).unwrap();
        let q_ids = Tensor::from_slice(ctx, &[1u32, 3, 4], &[B, 1]).unwrap();
        let labels = Tensor::from_slice(ctx, &[2u32, 0, 5], &[B]).unwrap();
        let lengths = Lengths::new(ctx, &[4, 2, 3], S).unwrap();
        store.zero_grad();
        let mut g = Graph::eval(ctx, store);
        let p: Vec<_> = ids.iter().map(|&id| g.param(id).unwrap()).collect();
        let values = g.embedding(&src, p[0], None).unwrap();
        let q = g.embedding(&q_ids, p[0], None).unwrap();
        let q = g.reshape(q, &[B, E]).unwrap();
        let (context, _) = match score {
            Score::Additive => {
                let query = g.linear(q, p[1], Some(p[2])).unwrap();
                let keys = g.linear(values, p[3], Some(p[4])).unwrap();
                g.attention(score, query, keys, Some(p[5]), values, Some(&lengths))
                    .unwrap()
            }
            Score::Dot => {
                // Luong general: query = W1 q, keys = values.
                let query = g.linear(q, p[1], None).unwrap();
                g.attention(score, query, values, None, values, Some(&lengths)).unwrap()
            }
        };
        let logits = g.linear(context, p[6], Some(p[7])).unwrap();
        let l = g.cross_entropy(logits, &labels, &CrossEntropy::default()).unwrap();
        let value = g.value(l).clone();
        if with_grads {
            g.backward(l).unwrap();
        }
        g.submit();
        f64::from(value.to_vec::<f32>().unwrap()[0])
    }

    #[test]
    fn graph_attention_gradients_match_finite_differences_additive_and_dot() {
        let ctx = ctx();
        for score in [Score::Additive, Score::Dot] {
            let mut store = ParamStore::new();
            let ids = params(ctx, &mut store);
            loss(ctx, &mut store, &ids, score, true);
            // Dot attention uses neither W1's bias, W2 nor V.
            let (used, unused): (Vec<_>, Vec<_>) = ids.iter().partition(|&&id| store.grad(id).is_some());
            assert!(
                unused.is_empty() || score == Score::Dot,
                "{score:?}: parameters without gradient"
            );
            let case = format!("{score:?} attention");
            super::common::assert_param_gradients_match_finite_differences(&case, &mut store, &used, 0, |store| {
                loss(ctx, store, &ids, score, false)
            });
        }
    }
}
