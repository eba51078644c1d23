//! The training guard: a step whose loss or gradients are NaN or Inf changes no weight
//! and no optimizer state (decided on the GPU), the host's check names the step, the last
//! checkpoint still loads, and training goes on from the weights before the bad step.

mod common;

use common::{ctx, seeded};
use rand::rngs::StdRng;
use rand::SeedableRng;
use tsumugi::graph::{check_step_finite, Graph, ParamStore};
use tsumugi::io::{load_checkpoint, save_checkpoint};
use tsumugi::kernels::optim::{adam_step, adam_step_guarded, sgd_step, sgd_step_guarded, Adam, Sgd, UPDATE_REFUSED};
use tsumugi::kernels::rnn_cell::Nonlinearity;
use tsumugi::loss::CrossEntropy;
use tsumugi::nn::{linear, recurrent, VarBuilder};
use tsumugi::nn::{CellKind, RecurrentConfig};
use tsumugi::{Error, Tensor};

#[test]
fn guarded_optimizer_steps_skip_on_a_non_finite_norm_and_equal_plain_steps_otherwise() {
    let ctx = ctx();
    let len = 1000;
    let upload = |seed: u64| Tensor::from_slice(ctx, &seeded(seed, len), &[len]).unwrap();
    let read = |t: &Tensor| t.to_vec::<f32>().unwrap();
    let grad = upload(2);
    for guard_value in [1.5f32, f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let guard = Tensor::from_slice(ctx, &[guard_value], &[1]).unwrap();
        let skip = !guard_value.is_finite();
        // Adam: a state that is not zero, so "untouched" is visible.
        let (plain, guarded) = ((upload(1), upload(3), upload(4)), (upload(1), upload(3), upload(4)));
        let squares = |t: &Tensor| {
            let v: Vec<f32> = read(t).iter().map(|x| x * x).collect();
            t.write(&v).unwrap();
        };
        squares(&plain.2);
        squares(&guarded.2);
        let before = read(&guarded.0);
        let mut encoder = ctx.create_encoder();
        adam_step(
            ctx,
            &mut encoder,
            &Adam::default(),
            3,
            &plain.0,
            &grad,
            &plain.1,
            &plain.2,
        )
        .unwrap();
        let (p, m, v) = &guarded;
        adam_step_guarded(ctx, &mut encoder, &Adam::default(), 3, p, &grad, m, v, &guard).unwrap();
        // SGD with momentum.
        let sgd = Sgd {
            momentum: 0.9,
            ..Sgd::default()
        };
        let (sgd_plain, sgd_guarded) = ((upload(5), upload(6)), (upload(5), upload(6)));
        sgd_step(ctx, &mut encoder, &sgd, false, &sgd_plain.0, &grad, Some(&sgd_plain.1)).unwrap();
        sgd_step_guarded(
            ctx,
            &mut encoder,
            &sgd,
            false,
            &sgd_guarded.0,
            &grad,
            Some(&sgd_guarded.1),
            &guard,
        )
        .unwrap();
        ctx.submit(encoder);
        let case = format!("guard {guard_value}");
        if skip {
            assert_eq!(read(&guarded.0), before, "{case}: Adam moved the parameter");
            assert_eq!(read(&guarded.1), seeded(3, len), "{case}: Adam moved exp_avg");
            assert_eq!(read(&sgd_guarded.0), seeded(5, len), "{case}: SGD moved the parameter");
            assert_eq!(read(&sgd_guarded.1), seeded(6, len), "{case}: SGD moved its momentum");
        } else {
            assert_eq!(read(&guarded.0), read(&plain.0), "{case}");
            assert_eq!(read(&guarded.1), read(&plain.1), "{case}");
            assert_eq!(read(&guarded.2), read(&plain.2), "{case}");
            assert_eq!(read(&sgd_guarded.0), read(&sgd_plain.0), "{case}");
            assert_ne!(read(&guarded.0), before, "{case}: the step did nothing");
        }
    }
    // A guard that is not one f32 is an error.
    let (p, g, m, v) = (upload(1), upload(2), upload(3), upload(4));
    let mut encoder = ctx.create_encoder();
    let wide = Tensor::from_slice(ctx, &[1.0f32, 2.0], &[2]).unwrap();
    assert!(adam_step_guarded(ctx, &mut encoder, &Adam::default(), 1, &p, &g, &m, &v, &wide).is_err());
    let ids = Tensor::from_slice(ctx, &[1u32], &[1]).unwrap();
    assert!(sgd_step_guarded(ctx, &mut encoder, &Sgd::default(), true, &p, &g, None, &ids).is_err());
    ctx.submit(encoder);
}

/// A parameter's name, value and Adam moments.
type Snapshot = (String, Vec<f32>, Vec<f32>, Vec<f32>);

#[test]
fn a_nan_input_stops_training_at_its_step_and_leaves_weights_and_checkpoint_intact() {
    let ctx = ctx();
    let (batch, steps, features, hidden) = (3, 4, 5, 6);
    let mut store = ParamStore::new();
    let mut rng = StdRng::seed_from_u64(3);
    let config = RecurrentConfig::new(CellKind::Rnn(Nonlinearity::Tanh), features, hidden);
    let rnn = recurrent(config, VarBuilder::with_prefix(ctx, &mut store, &mut rng, "rnn")).unwrap();
    let fc = linear(hidden, 2, VarBuilder::with_prefix(ctx, &mut store, &mut rng, "fc")).unwrap();
    let labels = Tensor::from_slice(ctx, &[0u32, 1, 1], &[batch]).unwrap();
    let clean = seeded(7, batch * steps * features);
    let adam = Adam {
        lr: 0.01,
        ..Adam::default()
    };
    // One guarded training step on `x`; returns (loss, gradient norm) read back.
    let train = |store: &mut ParamStore, x: &[f32], t: u64| -> (f32, f32) {
        let x = Tensor::from_slice(ctx, x, &[batch, steps, features]).unwrap();
        store.zero_grad();
        let mut g = Graph::train(ctx, store, 0, t);
        let x = g.input(&x);
        let h = rnn.forward(&mut g, x, None).unwrap().h_n[0];
        let logits = fc.forward(&mut g, h).unwrap();
        let loss = g.cross_entropy(logits, &labels, &CrossEntropy::default()).unwrap();
        let loss_t = g.value(loss).clone();
        g.backward(loss).unwrap();
        let norm = g.clip_grad_norm(1.0).unwrap();
        g.adam_step_guarded(&adam, t, &norm).unwrap();
        g.submit();
        (loss_t.to_vec::<f32>().unwrap()[0], norm.to_vec::<f32>().unwrap()[0])
    };
    let snapshot = |store: &ParamStore| -> Vec<Snapshot> {
        store
            .entries()
            .map(|(name, value, state)| {
                let (m, v) = state.map_or((vec![], vec![]), |(m, v)| (m.to_vec().unwrap(), v.to_vec().unwrap()));
                (name.to_string(), value.to_vec().unwrap(), m, v)
            })
            .collect()
    };

    let dir = std::env::temp_dir().join(format!("tsumugi-guard-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("last_good.safetensors");
    let mut t = 1;
    for _ in 0..3 {
        let (loss, norm) = train(&mut store, &clean, t);
        check_step_finite(t, loss, norm).unwrap();
        t += 1;
    }
    save_checkpoint(&path, &store, t - 1).unwrap();
    let before = snapshot(&store);

    let mut poisoned = clean.clone();
    poisoned[17] = f32::NAN;
    let (loss, norm) = train(&mut store, &poisoned, t);
    let err = check_step_finite(t, loss, norm).unwrap_err();
    assert!(
        matches!(err, Error::NonFinite { step, quantity: "loss", .. } if step == 4),
        "{err}"
    );
    assert!(err.to_string().contains("step 4"), "{err}");
    assert_eq!(
        snapshot(&store),
        before,
        "the NaN step changed the weights or the optimizer state"
    );

    // An Inf input too (tanh saturates, but the products with Inf give NaN gradients).
    let mut infinite = clean.clone();
    infinite[3] = f32::INFINITY;
    let (loss, norm) = train(&mut store, &infinite, t);
    assert!(check_step_finite(t, loss, norm).is_err());
    assert_eq!(snapshot(&store), before);

    // The last good checkpoint is intact and equals the weights the guard kept.
    let mut restored = ParamStore::new();
    let mut rng = StdRng::seed_from_u64(99);
    recurrent(config, VarBuilder::with_prefix(ctx, &mut restored, &mut rng, "rnn")).unwrap();
    linear(hidden, 2, VarBuilder::with_prefix(ctx, &mut restored, &mut rng, "fc")).unwrap();
    assert_eq!(load_checkpoint(&path, &mut restored).unwrap(), 3);
    assert_eq!(snapshot(&restored), before);

    // Clean data again: training goes on from there.
    let (loss, norm) = train(&mut store, &clean, t);
    check_step_finite(t, loss, norm).unwrap();
    assert_ne!(snapshot(&store), before);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Whether one reference step (f64) leaves every value representable in f32.
fn stays_in_f32(values: &[&[f64]]) -> bool {
    values.iter().all(|v| v.iter().all(|&x| (x as f32).is_finite()))
}

#[test]
fn adam_and_sgd_probes_refuse_exactly_the_updates_the_reference_takes_out_of_f32() {
    let ctx = ctx();
    let widen = |v: &[f32]| -> Vec<f64> { v.iter().map(|&x| f64::from(x)).collect() };
    let adam = Adam {
        lr: 2e37,
        ..Adam::default()
    };
    let sgd = Sgd {
        lr: 2e37,
        momentum: 0.9,
        ..Sgd::default()
    };
    for len in [1usize, 7, 1000] {
        for big in [None, Some(0), Some(len - 1), Some(len / 2)] {
            let case = format!("len {len}, a weight of 3.3e38 at {big:?}");
            let mut param = seeded(1, len);
            let mut grad = seeded(2, len);
            if let Some(at) = big {
                // The step moves against the gradient's sign: up, past f32::MAX.
                param[at] = 3.3e38;
                grad[at] = -1.0;
            }
            // Fresh state: each step moves an element by about lr (Adam) or lr |g| (SGD).
            let (m0, v0) = (vec![0.0f32; len], vec![0.0f32; len]);
            // Adam's first step.
            let (mut p, mut m, mut v) = (widen(&param), widen(&m0), widen(&v0));
            tsumugi::reference::optim::adam_step(&adam, 1, &mut p, &widen(&grad), &mut m, &mut v);
            let adam_ok = stays_in_f32(&[&p, &m, &v]);
            // SGD with momentum, its first step.
            let (mut sp, mut sb) = (widen(&param), widen(&m0));
            tsumugi::reference::optim::sgd_step(&sgd, true, &mut sp, &widen(&grad), &mut sb);
            let sgd_ok = stays_in_f32(&[&sp, &sb]);
            assert_eq!(adam_ok, big.is_none(), "{case}: the case does not test what it says");

            let upload = |v: &[f32]| Tensor::from_slice(ctx, v, &[len]).unwrap();
            let (tp, tg, tm, tv) = (upload(&param), upload(&grad), upload(&m0), upload(&v0));
            let verdict = || Tensor::from_slice(ctx, &[1.5f32], &[1]).unwrap();
            let (adam_verdict, sgd_verdict) = (verdict(), verdict());
            let mut encoder = ctx.create_encoder();
            tsumugi::kernels::optim::adam_probe(ctx, &mut encoder, &adam, 1, &tp, &tg, &tm, &tv, &adam_verdict)
                .unwrap();
            tsumugi::kernels::optim::sgd_probe(ctx, &mut encoder, &sgd, true, &tp, &tg, Some(&tm), &sgd_verdict)
                .unwrap();
            ctx.submit(encoder);
            for (name, verdict, ok) in [("adam", &adam_verdict, adam_ok), ("sgd", &sgd_verdict, sgd_ok)] {
                let bits = verdict.to_vec::<f32>().unwrap()[0].to_bits();
                let expected = if ok { 1.5f32.to_bits() } else { UPDATE_REFUSED };
                assert_eq!(
                    bits,
                    expected,
                    "{name}_probe, {case}: verdict {:e}",
                    f32::from_bits(bits)
                );
            }
            // A probe writes nothing else.
            assert_eq!(
                tp.to_vec::<f32>().unwrap(),
                param,
                "{case}: a probe moved the parameter"
            );
            assert_eq!(tm.to_vec::<f32>().unwrap(), m0, "{case}: a probe moved exp_avg");
        }
    }
    // An already non-finite norm keeps its value (the loss or a gradient was the cause).
    let p = Tensor::from_slice(ctx, &[3.3e38f32], &[1]).unwrap();
    let g = Tensor::from_slice(ctx, &[-1.0f32], &[1]).unwrap();
    let (m, v) = (
        Tensor::from_slice(ctx, &[0.0f32], &[1]).unwrap(),
        Tensor::from_slice(ctx, &[0.0f32], &[1]).unwrap(),
    );
    let norm = Tensor::from_slice(ctx, &[f32::INFINITY], &[1]).unwrap();
    let mut encoder = ctx.create_encoder();
    tsumugi::kernels::optim::adam_probe(ctx, &mut encoder, &adam, 1, &p, &g, &m, &v, &norm).unwrap();
    ctx.submit(encoder);
    assert_eq!(norm.to_vec::<f32>().unwrap(), vec![f32::INFINITY]);
}

#[test]
fn a_guarded_step_that_would_destroy_one_weight_changes_none_and_check_step_finite_says_so() {
    let ctx = ctx();
    let mut store = ParamStore::new();
    let mut rng = StdRng::seed_from_u64(5);
    let first = linear(3, 4, VarBuilder::with_prefix(ctx, &mut store, &mut rng, "first")).unwrap();
    let second = linear(4, 2, VarBuilder::with_prefix(ctx, &mut store, &mut rng, "second")).unwrap();
    // The loss is the sum of the logits of one row, so the gradient of second.bias is
    // exactly 1 and each step moves it down by lr (Adam with beta1 = 0 too). One bias sits
    // at -3.3e38: a learning rate of 1e38, finite in f32, takes it past -f32::MAX, while
    // every other update stays finite.
    let mut bias = store.value(second.bias.unwrap()).to_vec::<f32>().unwrap();
    bias[0] = -3.3e38;
    store.value(second.bias.unwrap()).write(&bias).unwrap();
    let x = Tensor::from_slice(ctx, &seeded(9, 3), &[1, 3]).unwrap();
    let before: Vec<Vec<f32>> = store.entries().map(|(_, v, _)| v.to_vec().unwrap()).collect();
    for optimizer in ["adam", "sgd"] {
        store.zero_grad();
        let mut g = Graph::train(ctx, &mut store, 0, 1);
        let input = g.input(&x);
        let h = first.forward(&mut g, input).unwrap();
        let logits = second.forward(&mut g, h).unwrap();
        let loss = g.sum(logits).unwrap();
        let loss_t = g.value(loss).clone();
        g.backward(loss).unwrap();
        let norm = g.clip_grad_norm(1e30).unwrap();
        match optimizer {
            "adam" => {
                let adam = Adam {
                    lr: 1e38,
                    betas: (0.0, 0.999),
                    ..Adam::default()
                };
                g.adam_step_guarded(&adam, 1, &norm).unwrap()
            }
            _ => g
                .sgd_step_guarded(
                    &Sgd {
                        lr: 1e38,
                        ..Sgd::default()
                    },
                    &norm,
                )
                .unwrap(),
        }
        g.submit();
        let (loss, norm) = (loss_t.to_vec::<f32>().unwrap()[0], norm.to_vec::<f32>().unwrap()[0]);
        assert!(
            loss.is_finite(),
            "{optimizer}: the loss {loss} should be finite for this test"
        );
        let after: Vec<Vec<f32>> = store.entries().map(|(_, v, _)| v.to_vec().unwrap()).collect();
        assert_eq!(after, before, "{optimizer}: a refused update changed weights");
        let err = check_step_finite(1, loss, norm).unwrap_err();
        assert!(
            matches!(err, Error::NonFinite { quantity, .. } if quantity.starts_with("updated weights")),
            "{optimizer}: {err}"
        );
    }
    // The same steps with a learning rate that keeps every weight finite do train.
    store.zero_grad();
    let mut g = Graph::train(ctx, &mut store, 0, 2);
    let input = g.input(&x);
    let h = first.forward(&mut g, input).unwrap();
    let logits = second.forward(&mut g, h).unwrap();
    let loss = g.sum(logits).unwrap();
    g.backward(loss).unwrap();
    let norm = g.clip_grad_norm(1e30).unwrap();
    g.sgd_step_guarded(
        &Sgd {
            lr: 0.1,
            ..Sgd::default()
        },
        &norm,
    )
    .unwrap();
    g.submit();
    check_step_finite(2, 0.0, norm.to_vec::<f32>().unwrap()[0]).unwrap();
    let after: Vec<Vec<f32>> = store.entries().map(|(_, v, _)| v.to_vec().unwrap()).collect();
    assert_ne!(after, before);
}

#[test]
fn a_learning_rate_finite_in_f64_but_not_in_f32_is_refused_before_anything_is_encoded() {
    let ctx = ctx();
    let p = Tensor::from_slice(ctx, &[1.0f32; 4], &[4]).unwrap();
    let g = Tensor::from_slice(ctx, &[0.5f32; 4], &[4]).unwrap();
    let (m, v) = (
        Tensor::from_slice(ctx, &[0.0f32; 4], &[4]).unwrap(),
        Tensor::from_slice(ctx, &[0.0f32; 4], &[4]).unwrap(),
    );
    let mut encoder = ctx.create_encoder();
    let mut adam = |op: Adam| adam_step(ctx, &mut encoder, &op, 1, &p, &g, &m, &v).unwrap_err();
    let err = adam(Adam {
        lr: 1e39,
        ..Adam::default()
    });
    assert!(
        matches!(err, Error::InvalidArgument { .. }) && err.to_string().contains("lr"),
        "{err}"
    );
    let err = adam(Adam {
        weight_decay: 1e300,
        ..Adam::default()
    });
    assert!(err.to_string().contains("weight_decay"), "{err}");
    // lr / (1 - beta1^t) beyond f32 at the first step although lr itself is not.
    let err = adam(Adam {
        lr: 1e38,
        ..Adam::default()
    });
    assert!(err.to_string().contains("beyond f32"), "{err}");
    let sgd = Sgd {
        lr: 1e39,
        ..Sgd::default()
    };
    let err = sgd_step(ctx, &mut encoder, &sgd, true, &p, &g, None).unwrap_err();
    assert!(err.to_string().contains("lr"), "{err}");
    ctx.submit(encoder);
    assert_eq!(p.to_vec::<f32>().unwrap(), vec![1.0; 4]);
}
