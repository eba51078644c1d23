//! Sequence reversal within lengths (forward and adjoint) and one beam-search step, in
//! GB/s.

use std::time::Duration;

use criterion::Criterion;
use tsumugi::{reference, Context, DType, Tensor};

use crate::common::{seeded, time_gpu, to_f64, verify_all};

/// The sequence family (reversal within lengths, forward and its adjoint) and one
/// beam-search step (expand, top-K over K*V, select), in GB/s of the bytes they must move.
pub(crate) fn sequence_beam_benches(criterion: &mut Criterion) {
    use tsumugi::kernels::beam::{beam_expand, beam_select, BeamSelection, BeamStep};
    use tsumugi::kernels::cross_entropy::top_k;
    use tsumugi::kernels::sequence::{reverse_sequence_backward, reverse_sequence_forward};
    use tsumugi::kernels::Lengths;
    let ctx = Context::new().expect("a GPU adapter");
    let mut group = criterion.benchmark_group("sequence_beam");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let float = 4u64;

    // reverse_sequence over [32, 64, 256] with lengths 33..64.
    let (batch, steps, width) = (32, 64, 256);
    let lengths_data: Vec<u32> = (0..batch as u32).map(|b| 33 + b).collect();
    let lengths = Lengths::new(&ctx, &lengths_data, steps).expect("lengths");
    let x_data = seeded(11, batch * steps * width);
    let x = Tensor::from_slice(&ctx, &x_data, &[batch, steps, width]).expect("x");
    let y = Tensor::full(&ctx, &[batch, steps, width], f32::NAN).expect("y");
    let lengths_usize: Vec<usize> = lengths_data.iter().map(|&l| l as usize).collect();
    let run = |backward: bool| {
        let mut encoder = ctx.create_encoder();
        if backward {
            reverse_sequence_backward(&ctx, &mut encoder, &x, Some(&lengths), &y, false).expect("reverse backward");
        } else {
            reverse_sequence_forward(&ctx, &mut encoder, &x, Some(&lengths), &y).expect("reverse forward");
        }
        ctx.submit(encoder);
        ctx.wait_idle_blocking().expect("GPU");
    };
    for backward in [false, true] {
        run(backward);
        let want = if backward {
            reference::sequence::reverse_sequence_backward(&to_f64(&x_data), batch, steps, width, Some(&lengths_usize))
        } else {
            reference::sequence::reverse_sequence_forward(&to_f64(&x_data), batch, steps, width, Some(&lengths_usize))
        };
        let name = if backward {
            "reverse_sequence_backward"
        } else {
            "reverse_sequence_forward"
        };
        verify_all(name, &y.to_vec::<f32>().expect("y"), &want, 0.0, 0.0);
        // Every element read once and written once.
        let bytes = 2 * float * (batch * steps * width) as u64;
        time_gpu(&mut group, name, "b32_t64_d256", bytes, "GB/s", || run(backward));
    }

    // One beam step: 16 sentences, K = 5, V = 5000.
    let (sentences, beam, vocab) = (16, 5, 5000);
    let rows = sentences * beam;
    let logits_data = seeded(12, rows * vocab);
    let logits = Tensor::from_slice(&ctx, &logits_data, &[rows, vocab]).expect("logits");
    let scores_data = seeded(13, rows);
    let scores = Tensor::from_slice(&ctx, &scores_data, &[rows]).expect("scores");
    let finished_data: Vec<u32> = (0..rows as u32).map(|r| u32::from(r % 7 == 3)).collect();
    let finished = Tensor::from_slice(&ctx, &finished_data, &[rows]).expect("finished");
    let candidates = Tensor::full(&ctx, &[rows, vocab], f32::NAN).expect("candidates");
    let values = Tensor::zeros(&ctx, &[sentences, beam], DType::F32).expect("values");
    let u32s = |shape: &[usize]| Tensor::zeros(&ctx, shape, DType::U32).expect("u32 tensor");
    let (picks, tokens, parents, finished_out) =
        (u32s(&[sentences, beam]), u32s(&[rows]), u32s(&[rows]), u32s(&[rows]));
    let history = u32s(&[1, rows, 2]);
    let step = BeamStep {
        beam,
        eos: 2,
        first: false,
        step: 0,
    };
    let run = || {
        let mut encoder = ctx.create_encoder();
        beam_expand(&ctx, &mut encoder, &step, &logits, &scores, &finished, &candidates).expect("expand");
        let by_sentence = candidates.reshape(&[sentences, beam * vocab]).expect("view");
        top_k(&ctx, &mut encoder, &by_sentence, beam, &values, &picks).expect("top_k");
        let out = BeamSelection {
            tokens: &tokens,
            parents: &parents,
            finished: &finished_out,
            history: &history,
        };
        beam_select(&ctx, &mut encoder, &step, vocab, &picks, &finished, &out).expect("select");
        ctx.submit(encoder);
        ctx.wait_idle_blocking().expect("GPU");
    };
    run();
    let finished_bool: Vec<bool> = finished_data.iter().map(|&f| f != 0).collect();
    let want = reference::beam::beam_expand(
        &to_f64(&logits_data),
        &to_f64(&scores_data),
        &finished_bool,
        vocab,
        beam,
        2,
        false,
    );
    let got = candidates.to_vec::<f32>().expect("candidates");
    let finite: Vec<f64> = want.iter().map(|&w| if w.is_finite() { w } else { 0.0 }).collect();
    let got_finite: Vec<f32> = got.iter().map(|&g| if g.is_finite() { g } else { 0.0 }).collect();
    verify_all("beam_expand", &got_finite, &finite, 1e-5, 1e-5);
    // The logits read, the candidates written and read twice by top_k's K passes.
    let bytes = float * (rows * vocab) as u64 * (2 + beam as u64);
    time_gpu(&mut group, "beam_step", "b16_k5_v5000", bytes, "GB/s", run);
    group.finish();
}
