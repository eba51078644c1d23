//! The tape's arithmetic end to end: custom losses built from add/sub/mul/div (with
//! broadcasting), scale, neg, square, exp, log, sums and means, slices, selections and
//! reshapes, whose parameter gradients match a closed form and finite differences of the
//! GPU loss; `backward_with` from a given upstream gradient; and cross-entropy inside a
//! larger loss.

mod common;

use common::{assert_close, assert_param_gradients_match_finite_differences, ctx, seeded, to_f64, Tolerance};
use tsumugi::graph::{Graph, ParamId, ParamStore};
use tsumugi::loss::CrossEntropy;
use tsumugi::{Error, Tensor};

fn param(store: &mut ParamStore, name: &str, data: &[f32], shape: &[usize]) -> ParamId {
    let value = Tensor::from_slice(ctx(), data, shape).expect("upload");
    store.add(name, value, true).expect("a new parameter")
}

fn read(tensor: &Tensor) -> Vec<f32> {
    tensor.to_vec().expect("read back")
}

fn grad(store: &ParamStore, id: ParamId) -> Vec<f32> {
    read(
        store
            .grad(id)
            .unwrap_or_else(|| panic!("no gradient for {}", store.name(id))),
    )
}

const B: usize = 3;
const I: usize = 5;
const N: usize = 33;
const H: usize = 7;

/// `loss = sum(y * w) + 0.5 * sum(h * h)` with `y = x Wᵀ` `[B, N]` and a row `w` `[N]`
/// broadcast over y's rows: the issue's custom loss, in the lines a user writes.
fn custom_loss(store: &mut ParamStore, ids: [ParamId; 3], x: &Tensor, backward: bool) -> f64 {
    store.zero_grad();
    let mut g = Graph::eval(ctx(), store);
    let [fc_w, w, h] = ids.map(|id| g.param(id).unwrap());
    let x = g.input(x);
    let y = g.linear(x, fc_w, None).unwrap();
    let yw = g.mul(y, w).unwrap();
    let first = g.sum(yw).unwrap();
    let h2 = g.square(h).unwrap();
    let h2_sum = g.sum(h2).unwrap();
    let second = g.scale(h2_sum, 0.5).unwrap();
    let loss = g.add(first, second).unwrap();
    let value = g.value(loss).clone();
    if backward {
        g.backward(loss).unwrap();
    }
    g.submit();
    f64::from(read(&value)[0])
}

#[test]
fn custom_loss_sum_y_w_plus_half_sum_h_squared_matches_closed_form_b3_n33() {
    let mut store = ParamStore::new();
    let (fc_w, w, h, x) = (seeded(1, N * I), seeded(2, N), seeded(3, B * H), seeded(4, B * I));
    let ids = [
        param(&mut store, "fc.weight", &fc_w, &[N, I]),
        param(&mut store, "w", &w, &[N]),
        param(&mut store, "h", &h, &[B, H]),
    ];
    let x_t = Tensor::from_slice(ctx(), &x, &[B, I]).unwrap();
    let loss = custom_loss(&mut store, ids, &x_t, true);
    // The closed form in f64: y = x Wᵀ; dW[n, i] = w[n] Σ_b x[b, i]; dw[n] = Σ_b y[b, n];
    // dh = h; loss = Σ y w + Σ h² / 2.
    let (fc_w, w, h, x) = (to_f64(&fc_w), to_f64(&w), to_f64(&h), to_f64(&x));
    let y: Vec<f64> = (0..B * N)
        .map(|bn| (0..I).map(|i| x[bn / N * I + i] * fc_w[bn % N * I + i]).sum())
        .collect();
    let want_loss: f64 =
        y.iter().enumerate().map(|(bn, y)| y * w[bn % N]).sum::<f64>() + h.iter().map(|h| h * h).sum::<f64>() / 2.0;
    let want_dfc: Vec<f64> = (0..N * I)
        .map(|ni| w[ni / I] * (0..B).map(|b| x[b * I + ni % I]).sum::<f64>())
        .collect();
    let want_dw: Vec<f64> = (0..N).map(|n| (0..B).map(|b| y[b * N + n]).sum()).collect();
    let case = "b3 i5 n33 h7";
    assert_close("loss", case, &[loss as f32], &[want_loss], Tolerance::F32_SUMS);
    assert_close(
        "d fc.weight",
        case,
        &grad(&store, ids[0]),
        &want_dfc,
        Tolerance::F32_SUMS,
    );
    assert_close("d w", case, &grad(&store, ids[1]), &want_dw, Tolerance::F32_SUMS);
    assert_close("d h", case, &grad(&store, ids[2]), &h, Tolerance::F32_SUMS);
    assert_param_gradients_match_finite_differences(case, &mut store, &ids, 4, |store| {
        custom_loss(store, ids, &x_t, false)
    });
}

/// Every new op in one loss over `A [3, 5, 7]`, a row `r [7]` and a scalar `s [1]`:
/// broadcast sub/div/add/mul on both sides, scale, neg, square, exp, log, sum and mean
/// over a dimension and over all, slice, select and reshape.
fn every_op_loss(store: &mut ParamStore, ids: [ParamId; 3], two: &Tensor, weights: &Tensor, backward: bool) -> f64 {
    store.zero_grad();
    let mut g = Graph::eval(ctx(), store);
    let [a, r, s] = ids.map(|id| g.param(id).unwrap());
    let (two, weights) = (g.input(two), g.input(weights));
    // u = (A - r) / (s + 2)
    let centred = g.sub(a, r).unwrap();
    let denominator = g.add(s, two).unwrap();
    let u = g.div(centred, denominator).unwrap();
    // mean over dim 1 of exp(0.3 u), reshaped and weighted
    let scaled = g.scale(u, 0.3).unwrap();
    let e = g.exp(scaled).unwrap();
    let m = g.mean_dim(e, 1).unwrap();
    let flat = g.reshape(m, &[21]).unwrap();
    let weighted = g.mul(flat, weights).unwrap();
    let term1 = g.sum(weighted).unwrap();
    // mean of the sums over dim 2 of log(u² + 2)
    let u2 = g.square(u).unwrap();
    let shifted = g.add(u2, two).unwrap();
    let logs = g.log(shifted).unwrap();
    let k = g.sum_dim(logs, 2).unwrap();
    let term2 = g.mean(k).unwrap();
    // -Σ A[:, 1:4, 4]
    let sl = g.slice(a, 1, 1, 3).unwrap();
    let se = g.select(sl, 2, 4).unwrap();
    let negated = g.neg(se).unwrap();
    let term3 = g.sum(negated).unwrap();
    // mean(s / (A² + 2)): the scalar broadcast on the left
    let a2 = g.square(a).unwrap();
    let a2_shift = g.add(two, a2).unwrap();
    let ratio = g.div(s, a2_shift).unwrap();
    let term4 = g.mean(ratio).unwrap();
    let sum12 = g.add(term1, term2).unwrap();
    let sum34 = g.add(term3, term4).unwrap();
    let loss = g.add(sum12, sum34).unwrap();
    let value = g.value(loss).clone();
    if backward {
        g.backward(loss).unwrap();
    }
    g.submit();
    f64::from(read(&value)[0])
}

#[test]
fn every_new_op_in_one_loss_matches_finite_differences_of_the_gpu_loss_3x5x7() {
    let mut store = ParamStore::new();
    let ids = [
        param(&mut store, "a", &seeded(10, 105), &[3, 5, 7]),
        param(&mut store, "r", &seeded(11, 7), &[7]),
        param(&mut store, "s", &[0.5], &[1]),
    ];
    let two = Tensor::from_slice(ctx(), &[2.0f32], &[1]).unwrap();
    let weights = Tensor::from_slice(ctx(), &seeded(12, 21), &[21]).unwrap();
    every_op_loss(&mut store, ids, &two, &weights, true);
    assert_param_gradients_match_finite_differences("every op 3x5x7", &mut store, &ids, 6, |store| {
        every_op_loss(store, ids, &two, &weights, false)
    });
}

#[test]
fn reshape_slice_and_select_send_gradients_to_the_elements_they_read_2x6() {
    let mut store = ParamStore::new();
    let x_data = seeded(20, 12);
    let x = param(&mut store, "x", &x_data, &[2, 6]);
    let w_data = seeded(21, 12);
    let w = Tensor::from_slice(ctx(), &w_data, &[3, 4]).unwrap();
    let mut g = Graph::eval(ctx(), &mut store);
    let xv = g.param(x).unwrap();
    // sum(reshape(x, [3, 4]) * w) + sum(x[:, 2:5]) + 3 * sum(x[1, :])
    let reshaped = g.reshape(xv, &[3, 4]).unwrap();
    let wv = g.input(&w);
    let product = g.mul(reshaped, wv).unwrap();
    let t1 = g.sum(product).unwrap();
    let sl = g.slice(xv, 1, 2, 3).unwrap();
    let t2 = g.sum(sl).unwrap();
    // Ranges outside the shape are errors, not a panic or a wrapped index.
    assert!(g.slice(xv, 1, 5, 2).is_err());
    assert!(g.slice(xv, 1, usize::MAX, 2).is_err());
    assert!(g.select(xv, 2, 0).is_err());
    assert!(g.select(xv, 0, 2).is_err());
    let row = g.select(xv, 0, 1).unwrap();
    assert_eq!(g.value(row).shape(), [6]);
    let row_sum = g.sum(row).unwrap();
    let t3 = g.scale(row_sum, 3.0).unwrap();
    let t12 = g.add(t1, t2).unwrap();
    let loss = g.add(t12, t3).unwrap();
    g.backward(loss).unwrap();
    g.submit();
    let want: Vec<f64> = (0..12)
        .map(|i| {
            let (r, c) = (i / 6, i % 6);
            f64::from(w_data[i]) + if (2..5).contains(&c) { 1.0 } else { 0.0 } + if r == 1 { 3.0 } else { 0.0 }
        })
        .collect();
    assert_close("d x", "2x6", &grad(&store, x), &want, Tolerance::F32_SUMS);
}

#[test]
fn backward_with_starts_from_the_upstream_gradient_and_leaves_it_unchanged_4x6() {
    let mut store = ParamStore::new();
    let (x_data, w_data, up) = (seeded(30, 24), seeded(31, 6), seeded(32, 24));
    let x = param(&mut store, "x", &x_data, &[4, 6]);
    let w = param(&mut store, "w", &w_data, &[6]);
    let upstream = Tensor::from_slice(ctx(), &up, &[4, 6]).unwrap();
    let mut g = Graph::eval(ctx(), &mut store);
    let (xv, wv) = (g.param(x).unwrap(), g.param(w).unwrap());
    // y = x * w + x: add hands its gradient on to the product as its own buffer, and the
    // product's backward reads it, so a buffer shared with the caller would show.
    let product = g.mul(xv, wv).unwrap();
    let y = g.add(product, xv).unwrap();
    let err = g.backward_with(y, &Tensor::zeros(ctx(), &[6], tsumugi::DType::F32).unwrap());
    assert!(matches!(err, Err(Error::ShapeMismatch { .. })), "{err:?}");
    g.backward_with(y, &upstream).unwrap();
    g.submit();
    // dx = G * w + G;  dw[n] = Σ_rows G * x
    let want_x: Vec<f64> = (0..24)
        .map(|i| f64::from(up[i]) * (f64::from(w_data[i % 6]) + 1.0))
        .collect();
    let want_w: Vec<f64> = (0..6)
        .map(|n| {
            (0..4)
                .map(|r| f64::from(up[r * 6 + n]) * f64::from(x_data[r * 6 + n]))
                .sum()
        })
        .collect();
    assert_close("d x", "4x6", &grad(&store, x), &want_x, Tolerance::F32_SUMS);
    assert_close("d w", "4x6", &grad(&store, w), &want_w, Tolerance::F32_SUMS);
    assert_eq!(read(&upstream), up, "backward_with wrote into the caller's gradient");
}

/// The gradient of the logits under `loss(ce)`, where `loss` builds the root from the
/// cross-entropy (None: `backward_with(ce, [2])`).
fn logits_grad(
    store: &mut ParamStore,
    logits: ParamId,
    targets: &Tensor,
    loss: Option<fn(&mut Graph, tsumugi::graph::Var) -> tsumugi::graph::Var>,
) -> Vec<f32> {
    store.zero_grad();
    let mut g = Graph::eval(ctx(), store);
    let l = g.param(logits).unwrap();
    let ce = g.cross_entropy(l, targets, &CrossEntropy::default()).unwrap();
    match loss {
        Some(build) => {
            let root = build(&mut g, ce);
            g.backward(root).unwrap();
        }
        None => {
            let two = Tensor::from_slice(ctx(), &[2.0f32], &[1]).unwrap();
            g.backward_with(ce, &two).unwrap();
        }
    }
    g.submit();
    grad(store, logits)
}

#[test]
fn cross_entropy_inside_a_custom_loss_is_scaled_by_its_upstream_gradient_4x5() {
    let mut store = ParamStore::new();
    let logits = param(&mut store, "logits", &seeded(40, 20), &[4, 5]);
    let targets = Tensor::from_slice(ctx(), &[0u32, 3, 4, 1], &[4]).unwrap();
    let plain = to_f64(&logits_grad(&mut store, logits, &targets, Some(|_, ce| ce)));
    let times = |k: f64| plain.iter().map(|v| k * v).collect::<Vec<_>>();
    let half = logits_grad(&mut store, logits, &targets, Some(|g, ce| g.scale(ce, 0.5).unwrap()));
    assert_close("d logits", "0.5 * ce", &half, &times(0.5), Tolerance::F32_SUMS);
    let twice = logits_grad(&mut store, logits, &targets, None);
    assert_close(
        "d logits",
        "backward_with(ce, 2)",
        &twice,
        &times(2.0),
        Tolerance::F32_SUMS,
    );
    // ce + 2 ce: add hands the root's 1 on to ce, and the scale's 2 is then added into it.
    let thrice = logits_grad(
        &mut store,
        logits,
        &targets,
        Some(|g, ce| {
            let doubled = g.scale(ce, 2.0).unwrap();
            g.add(ce, doubled).unwrap()
        }),
    );
    assert_close("d logits", "ce + 2 ce", &thrice, &times(3.0), Tolerance::F32_SUMS);
}
