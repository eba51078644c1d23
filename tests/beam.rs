//! Beam search: the expansion and selection kernels against the CPU reference, the host
//! backtrack, bad input, and `Seq2Seq::beam_search` end to end (exact on a search space
//! small enough to enumerate, equal to greedy decoding with one beam).

mod common;

use common::{ctx, nan_tensor, seeded, to_f64};
use rand::rngs::StdRng;
use rand::SeedableRng;
use tsumugi::graph::{Graph, ParamStore};
use tsumugi::kernels::beam::{
    backtrack, beam_best, beam_expand, beam_select, BeamRanking, BeamSelection, BeamStep, Hypothesis,
};
use tsumugi::kernels::cross_entropy::top_k;
use tsumugi::kernels::Lengths;
use tsumugi::nn::seq2seq::{AttentionKind, BeamSearch, Decoder, Encoder, Seq2Seq};
use tsumugi::nn::seq2seq::{DecoderConfig, EncoderConfig};
use tsumugi::nn::VarBuilder;
use tsumugi::reference::beam as reference;
use tsumugi::{DType, Error, Tensor};

/// One step on the GPU: (candidates, new scores, picks, tokens, parents, finished, history).
type StepOut = (Vec<f32>, Vec<f32>, Vec<u32>, Vec<u32>, Vec<u32>, Vec<u32>, Vec<u32>);

fn gpu_step(step: &BeamStep, logits: &[f32], scores: &[f32], finished: &[u32], vocab: usize) -> StepOut {
    let ctx = ctx();
    let rows = scores.len();
    let batch = rows / step.beam;
    let logits = Tensor::from_slice(ctx, logits, &[rows, vocab]).unwrap();
    let scores = Tensor::from_slice(ctx, scores, &[rows]).unwrap();
    let finished = Tensor::from_slice(ctx, finished, &[rows]).unwrap();
    let candidates = nan_tensor(&[rows, vocab]);
    let values = nan_tensor(&[batch, step.beam]);
    let filler = |shape: &[usize]| Tensor::full(ctx, shape, u32::MAX).unwrap();
    let (picks, tokens, parents, finished_out) = (
        filler(&[batch, step.beam]),
        filler(&[rows]),
        filler(&[rows]),
        filler(&[rows]),
    );
    let history = filler(&[step.step + 1, rows, 2]);
    let mut encoder = ctx.create_encoder();
    beam_expand(ctx, &mut encoder, step, &logits, &scores, &finished, &candidates).unwrap();
    let by_sentence = candidates.reshape(&[batch, step.beam * vocab]).unwrap();
    top_k(ctx, &mut encoder, &by_sentence, step.beam, &values, &picks).unwrap();
    let out = BeamSelection {
        tokens: &tokens,
        parents: &parents,
        finished: &finished_out,
        history: &history,
    };
    beam_select(ctx, &mut encoder, step, vocab, &picks, &finished, &out).unwrap();
    ctx.submit(encoder);
    (
        candidates.to_vec().unwrap(),
        values.to_vec().unwrap(),
        picks.to_vec().unwrap(),
        tokens.to_vec().unwrap(),
        parents.to_vec().unwrap(),
        finished_out.to_vec().unwrap(),
        history.to_vec().unwrap(),
    )
}

#[test]
fn beam_step_kernels_match_the_reference() {
    // (sentences, beam, vocab): 1s, primes, vocabularies that are not multiples of the
    // expansion's 8 or 64 invocations, beam = vocab.
    let shapes = [
        (1, 1, 1),
        (1, 1, 9),
        (2, 3, 7),
        (3, 5, 37),
        (1, 4, 130),
        (5, 2, 67),
        (2, 7, 7),
    ];
    for (case_index, &(batch, beam, vocab)) in shapes.iter().enumerate() {
        let rows = batch * beam;
        for (first, step_index) in [(true, 0), (false, 3)] {
            let case = format!("B {batch} K {beam} V {vocab} first {first}");
            let seed = case_index as u64 * 10 + u64::from(first);
            let logits: Vec<f32> = seeded(seed, rows * vocab).iter().map(|x| 4.0 * x).collect();
            let scores: Vec<f32> = seeded(seed + 5, rows).iter().map(|x| -3.0 + x).collect();
            // Some rows finished (not at the first step, where none can be).
            let finished: Vec<u32> = (0..rows).map(|r| u32::from(!first && r % 3 == 1)).collect();
            let eos = (vocab / 2) as u32;
            let step = BeamStep {
                beam,
                eos,
                first,
                step: step_index,
            };
            let (candidates, values, picks, tokens, parents, finished_out, history) =
                gpu_step(&step, &logits, &scores, &finished, vocab);

            let finished_b: Vec<bool> = finished.iter().map(|&f| f != 0).collect();
            let want = reference::beam_expand(
                &to_f64(&logits),
                &to_f64(&scores),
                &finished_b,
                vocab,
                beam,
                eos as usize,
                first,
            );
            for (i, (&got, &want)) in candidates.iter().zip(&want).enumerate() {
                let ok = if want == f64::NEG_INFINITY {
                    got == f32::NEG_INFINITY
                } else {
                    (f64::from(got) - want).abs() <= 1e-5 + 1e-5 * want.abs()
                };
                assert!(ok, "candidates [{case}] [{i}]: gpu {got} ref {want}");
            }
            // The picks are the K best of each sentence's candidates as the GPU computed
            // them (ties to the lower index), and the values are theirs.
            for b in 0..batch {
                let sentence = to_f64(&candidates[b * beam * vocab..(b + 1) * beam * vocab]);
                let best = reference::top_k(&sentence, beam);
                let got: Vec<usize> = picks[b * beam..(b + 1) * beam].iter().map(|&p| p as usize).collect();
                assert_eq!(got, best, "picks [{case}] sentence {b}");
                for (j, &p) in best.iter().enumerate() {
                    assert_eq!(f64::from(values[b * beam + j]), sentence[p], "values [{case}]");
                }
            }
            let picks_usize: Vec<usize> = picks.iter().map(|&p| p as usize).collect();
            let (want_tokens, want_parents, want_finished) =
                reference::beam_select(&picks_usize, &finished_b, vocab, beam, eos as usize);
            let as_u32 = |v: &[usize]| v.iter().map(|&x| x as u32).collect::<Vec<u32>>();
            assert_eq!(tokens, as_u32(&want_tokens), "tokens [{case}]");
            assert_eq!(parents, as_u32(&want_parents), "parents [{case}]");
            let want_finished: Vec<u32> = want_finished.iter().map(|&f| u32::from(f)).collect();
            assert_eq!(finished_out, want_finished, "finished [{case}]");
            // Only the step's own history row is written.
            let row = &history[step_index * rows * 2..];
            for r in 0..rows {
                assert_eq!(
                    (row[2 * r], row[2 * r + 1]),
                    (tokens[r], parents[r]),
                    "history [{case}]"
                );
            }
            assert!(history[..step_index * rows * 2].iter().all(|&x| x == u32::MAX));
            if first {
                // Every pick comes from beam 0 of its sentence.
                assert!(parents.iter().enumerate().all(|(r, &p)| p as usize == r / beam * beam));
            }
            // A finished row's only continuation is <eos> at its own score.
            for r in (0..rows).filter(|&r| finished_b[r]) {
                let row = &candidates[r * vocab..(r + 1) * vocab];
                assert_eq!(row[eos as usize], scores[r], "[{case}] finished row {r}");
            }
        }
    }
}

#[test]
fn backtrack_follows_parents_cuts_at_eos_and_ranks_by_length_penalty() {
    // One sentence, K = 2, 3 steps, eos = 9. Rows at each step: (token, parent).
    // step 0: r0 = (4, 0), r1 = (5, 0)
    // step 1: r0 = (9, 1) (5 then eos), r1 = (6, 0) (4, 6)
    // step 2: r0 = (7, 1) (4, 6, 7),   r1 = (9, 0) (5, eos, eos)
    let history = [4, 0, 5, 0, 9, 1, 6, 0, 7, 1, 9, 0];
    let scores = [-3.0, -1.0];
    let plain = backtrack(&history, &scores, 2, 9, 0.0).unwrap();
    assert_eq!(
        plain,
        vec![vec![
            Hypothesis {
                tokens: vec![5],
                finished: true,
                log_prob: -1.0,
                score: -1.0
            },
            Hypothesis {
                tokens: vec![4, 6, 7],
                finished: false,
                log_prob: -3.0,
                score: -3.0
            },
        ]]
    );
    // Per token (the length counts <eos>): -1 / 2 = -0.5 beats -3 / 3 = -1.
    let mean = backtrack(&history, &scores, 2, 9, 1.0).unwrap();
    assert_eq!(mean[0][0].tokens, vec![5]);
    assert_eq!(mean[0][0].score, -0.5);
    assert_eq!(mean[0][1].score, -1.0);
    let long_wins = backtrack(&history, &[-2.0, -1.2], 2, 9, 2.0).unwrap();
    // -2 / 9 = -0.22 beats -1.2 / 4 = -0.3.
    assert_eq!(long_wins[0][0].tokens, vec![4, 6, 7]);

    // A parent outside the sentence's rows, a history of the wrong size: errors.
    let corrupt = [4, 0, 5, 7, 9, 1, 6, 0, 7, 1, 9, 0];
    assert!(matches!(
        backtrack(&corrupt, &scores, 2, 9, 0.0),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(backtrack(&history[..11], &scores, 2, 9, 0.0).is_err());
    assert!(backtrack(&history, &scores, 0, 9, 0.0).is_err());
    assert!(backtrack(&history, &scores, 3, 9, 0.0).is_err());
}

/// beam_best's ranking on the GPU against `backtrack` (its reference: the first hypothesis
/// of each sentence, `eos` after its end) on random histories: parents within their
/// sentence, eos at random steps, and the three kinds of length penalty.
#[test]
fn beam_best_picks_backtracks_first_hypothesis_on_random_histories() {
    use rand::Rng;
    let ctx = ctx();
    let eos = 3u32;
    // (B, K, steps, V): ones, primes, a beam as wide as a small vocabulary.
    for (case, &(batch, beam, steps, vocab)) in [(1, 1, 1, 4), (1, 3, 5, 7), (3, 2, 7, 5), (5, 4, 13, 11), (2, 7, 3, 7)]
        .iter()
        .enumerate()
    {
        let mut rng = StdRng::seed_from_u64(40 + case as u64);
        let rows = batch * beam;
        let mut history = Vec::with_capacity(steps * rows * 2);
        for _ in 0..steps {
            for row in 0..rows {
                let token = if rng.random::<f32>() < 0.25 {
                    eos
                } else {
                    rng.random_range(0..vocab as u32)
                };
                let parent = (row / beam * beam + rng.random_range(0..beam)) as u32;
                history.extend([token, parent]);
            }
        }
        let scores: Vec<f32> = (0..rows).map(|_| -rng.random_range(0.1f32..20.0)).collect();
        let history_gpu = Tensor::from_slice(ctx, &history, &[steps, rows, 2]).unwrap();
        let scores_gpu = Tensor::from_slice(ctx, &scores, &[rows]).unwrap();
        for length_penalty in [0.0, 1.0, 0.6] {
            let ranking = BeamRanking {
                beam,
                eos,
                length_penalty,
            };
            let best = Tensor::full(ctx, &[batch, steps], u32::MAX).unwrap();
            let mut encoder = ctx.create_encoder();
            beam_best(ctx, &mut encoder, &ranking, &history_gpu, &scores_gpu, &best).unwrap();
            ctx.submit(encoder);
            let got = best.to_vec::<u32>().unwrap();
            let want = backtrack(&history, &scores, beam, eos, length_penalty).unwrap();
            for (b, (row, hypotheses)) in got.chunks(steps).zip(&want).enumerate() {
                let mut line = hypotheses[0].tokens.clone();
                line.resize(steps, eos);
                assert_eq!(
                    row, line,
                    "B {batch} K {beam} steps {steps}, penalty {length_penalty}, sentence {b}: {hypotheses:?}"
                );
            }
        }
    }
}

#[test]
fn beam_kernels_reject_bad_arguments() {
    let ctx = ctx();
    let logits = Tensor::zeros(ctx, &[6, 5], DType::F32).unwrap();
    let scores = Tensor::zeros(ctx, &[6], DType::F32).unwrap();
    let finished = Tensor::zeros(ctx, &[6], DType::U32).unwrap();
    let candidates = Tensor::zeros(ctx, &[6, 5], DType::F32).unwrap();
    let ok = BeamStep {
        beam: 3,
        eos: 2,
        first: false,
        step: 0,
    };
    let mut encoder = ctx.create_encoder();
    let mut expand = |step: BeamStep, candidates: &Tensor, finished: &Tensor| {
        beam_expand(ctx, &mut encoder, &step, &logits, &scores, finished, candidates)
    };
    assert!(expand(ok, &candidates, &finished).is_ok());
    for bad in [
        BeamStep { beam: 0, ..ok },
        BeamStep { beam: 6, ..ok },
        BeamStep { beam: 4, ..ok },
        BeamStep { eos: 5, ..ok },
    ] {
        let err = expand(bad, &candidates, &finished).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{bad:?}: {err}");
    }
    let short = Tensor::zeros(ctx, &[6, 4], DType::F32).unwrap();
    assert!(matches!(
        expand(ok, &short, &finished),
        Err(Error::ShapeMismatch { .. })
    ));
    let wrong_dtype = Tensor::zeros(ctx, &[6], DType::F32).unwrap();
    assert!(expand(ok, &candidates, &wrong_dtype).is_err());
    assert!(expand(ok, &candidates, &candidates).is_err());

    let picks = Tensor::zeros(ctx, &[2, 3], DType::U32).unwrap();
    let rows = || Tensor::zeros(ctx, &[6], DType::U32).unwrap();
    let (tokens, parents, finished_out) = (rows(), rows(), rows());
    let history = Tensor::zeros(ctx, &[2, 6, 2], DType::U32).unwrap();
    let out = BeamSelection {
        tokens: &tokens,
        parents: &parents,
        finished: &finished_out,
        history: &history,
    };
    assert!(beam_select(ctx, &mut encoder, &ok, 5, &picks, &finished, &out).is_ok());
    // The history has no row 2.
    let late = BeamStep { step: 2, ..ok };
    assert!(beam_select(ctx, &mut encoder, &late, 5, &picks, &finished, &out).is_err());
    // An output aliasing an input.
    let aliased = BeamSelection {
        tokens: &finished,
        ..out
    };
    assert!(beam_select(ctx, &mut encoder, &ok, 5, &picks, &finished, &aliased).is_err());

    // beam_best: best must be [B, steps] u32; scores whole sentences; a finite penalty.
    let ranking = BeamRanking {
        beam: 3,
        eos: 2,
        length_penalty: 1.0,
    };
    let best = Tensor::zeros(ctx, &[2, 2], DType::U32).unwrap();
    assert!(beam_best(ctx, &mut encoder, &ranking, &history, &scores, &best).is_ok());
    let wide = Tensor::zeros(ctx, &[2, 3], DType::U32).unwrap();
    assert!(matches!(
        beam_best(ctx, &mut encoder, &ranking, &history, &scores, &wide),
        Err(Error::ShapeMismatch { .. })
    ));
    let four = BeamRanking { beam: 4, ..ranking };
    assert!(beam_best(ctx, &mut encoder, &four, &history, &scores, &best).is_err());
    let nan = BeamRanking {
        length_penalty: f32::NAN,
        ..ranking
    };
    assert!(matches!(
        beam_best(ctx, &mut encoder, &nan, &history, &scores, &best),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(beam_best(ctx, &mut encoder, &ranking, &history, &scores, &history).is_err());
    ctx.submit(encoder);
}

const SOS: u32 = 1;
const EOS: u32 = 2;

fn small_model(store: &mut ParamStore, tgt_vocab: usize, attention: Option<AttentionKind>) -> Seq2Seq {
    let ctx = ctx();
    let mut rng = StdRng::seed_from_u64(21);
    Seq2Seq {
        encoder: Encoder::build(
            EncoderConfig {
                vocab: 6,
                embed: 5,
                hidden: 8,
                padding_idx: Some(0),
            },
            VarBuilder::with_prefix(ctx, store, &mut rng, "encoder"),
        )
        .unwrap(),
        decoder: Decoder::build(
            DecoderConfig {
                vocab: tgt_vocab,
                embed: 5,
                hidden: 8,
                padding_idx: Some(0),
                attention,
            },
            VarBuilder::with_prefix(ctx, store, &mut rng, "decoder"),
        )
        .unwrap(),
    }
}

/// Log-probabilities of every target token after the teacher-forced prefix `inputs`
/// (one `[rows]` id list per step) for `rows` copies of `src`: `[step][row][class]`.
fn teacher_forced_log_probs(
    model: &Seq2Seq,
    store: &mut ParamStore,
    src: &[u32],
    inputs: &[Vec<u32>],
) -> Vec<Vec<Vec<f64>>> {
    let ctx = ctx();
    let rows = inputs[0].len();
    let src_len = src.len();
    let src: Vec<u32> = (0..rows).flat_map(|_| src.iter().copied()).collect();
    let src = Tensor::from_slice(ctx, &src, &[rows, src_len]).unwrap();
    let steps: Vec<Tensor> = inputs
        .iter()
        .map(|ids| Tensor::from_slice(ctx, ids, &[rows, 1]).unwrap())
        .collect();
    let mut g = Graph::eval(ctx, store);
    let logits = model
        .forward(&mut g, &src, None, &steps, 1.0, &mut StdRng::seed_from_u64(0))
        .unwrap();
    let logits = g.value(logits).clone();
    g.submit();
    let logits = logits.to_vec::<f32>().unwrap();
    let vocab = logits.len() / (rows * inputs.len());
    let mut out = vec![vec![Vec::new(); rows]; inputs.len()];
    for r in 0..rows {
        for (t, per_step) in out.iter_mut().enumerate() {
            let row = &logits[(r * inputs.len() + t) * vocab..][..vocab];
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let log_sum = row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
            per_step[r] = row.iter().map(|&x| x as f64 - max - log_sum).collect();
        }
    }
    out
}

#[test]
fn beam_search_is_exact_when_the_beam_holds_every_prefix() {
    // Two steps, K = V = 5: the beam keeps every one-token prefix, so its K results are
    // the K most probable outputs of at most two tokens, by enumeration.
    let ctx = ctx();
    let vocab = 5;
    for attention in [None, Some(AttentionKind::Bahdanau)] {
        let mut store = ParamStore::new();
        let model = small_model(&mut store, vocab, attention);
        let src_ids = [3u32, 4, 5];
        let src = Tensor::from_slice(ctx, &src_ids, &[1, 3]).unwrap();
        let options = BeamSearch {
            length_penalty: 0.0,
            ..BeamSearch::new(vocab, 2, EOS)
        };
        let found = model.beam_search(ctx, &mut store, &src, None, SOS, &options).unwrap();

        let prefixes: Vec<u32> = (0..vocab as u32).collect();
        let lp = teacher_forced_log_probs(&model, &mut store, &src_ids, &[vec![SOS; vocab], prefixes.clone()]);
        let mut all: Vec<(Vec<u32>, f64)> = Vec::new();
        for &a in &prefixes {
            let first = lp[0][0][a as usize];
            if a == EOS {
                all.push((vec![], first));
                continue;
            }
            for b in 0..vocab as u32 {
                let tokens = if b == EOS { vec![a] } else { vec![a, b] };
                all.push((tokens, first + lp[1][a as usize][b as usize]));
            }
        }
        all.sort_by(|x, y| y.1.total_cmp(&x.1));
        assert_eq!(found.len(), 1);
        for (got, (tokens, log_prob)) in found[0].iter().zip(&all) {
            assert_eq!(&got.tokens, tokens, "{attention:?}: {found:?}");
            assert!(
                (f64::from(got.log_prob) - log_prob).abs() < 1e-4,
                "{attention:?}: {got:?} vs {log_prob}"
            );
        }
    }
}

#[test]
fn beam_search_with_one_beam_is_greedy_decoding_for_every_row_and_length() {
    let ctx = ctx();
    let mut store = ParamStore::new();
    let model = small_model(&mut store, 7, Some(AttentionKind::Bahdanau));
    let src = Tensor::from_slice(ctx, &[3u32, 4, 5, 1, 2, 0, 5, 5, 5], &[3, 3]).unwrap();
    let lengths = Lengths::new(ctx, &[3, 2, 3], 3).unwrap();
    let max_len = 6;
    let found = model
        .beam_search(
            ctx,
            &mut store,
            &src,
            Some(&lengths),
            SOS,
            &BeamSearch::new(1, max_len, EOS),
        )
        .unwrap();

    let sos = Tensor::from_slice(ctx, &[SOS; 3], &[3, 1]).unwrap();
    let mut g = Graph::eval(ctx, &mut store);
    let (chosen, _) = model.greedy(&mut g, &src, Some(&lengths), &sos, max_len).unwrap();
    g.submit();
    let chosen: Vec<Vec<u32>> = chosen.iter().map(|t| t.to_vec().unwrap()).collect();
    for (b, hypotheses) in found.iter().enumerate() {
        let greedy: Vec<u32> = chosen.iter().map(|step| step[b]).take_while(|&id| id != EOS).collect();
        assert_eq!(hypotheses.len(), 1);
        assert_eq!(hypotheses[0].tokens, greedy, "row {b}");
        assert_eq!(hypotheses[0].finished, greedy.len() < max_len);
    }
    // Bad options are errors before anything runs.
    for bad in [
        BeamSearch::new(0, 3, EOS),
        BeamSearch::new(8, 3, EOS),
        BeamSearch::new(2, 0, EOS),
        BeamSearch::new(2, 3, 7),
    ] {
        assert!(
            model.beam_search(ctx, &mut store, &src, None, SOS, &bad).is_err(),
            "{bad:?}"
        );
    }
    assert!(model
        .beam_search(ctx, &mut store, &src, None, 9, &BeamSearch::new(2, 3, EOS))
        .is_err());
}
