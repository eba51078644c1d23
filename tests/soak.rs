//! Soak: many training steps of a small translator (LSTM encoder, Bahdanau attention
//! decoder, teacher forcing, clipped and guarded Adam, a greedy decode every so often), with
//! the GPU buffer pool and the process's resident memory sampled as it goes. After a
//! warm-up, no step may create a GPU buffer or a uniform chunk, the buffers held must not
//! grow, and resident memory must stay flat.
//!
//! `soak_training_keeps_buffers_and_memory_flat_200_steps` runs in CI. The long run is
//! ignored by default:
//!
//! ```sh
//! TSUMUGI_SOAK_STEPS=3000 cargo test --release --test soak -- --ignored --nocapture
//! ```
//!
//! Each test makes its own `Context`, so the pool's counters are this run's alone; run the
//! long one on its own (`--ignored`), as resident memory is the whole process's.

use rand::rngs::StdRng;
use rand::SeedableRng;
use tsumugi::gpu::PoolStats;
use tsumugi::graph::{check_step_finite, Graph, ParamStore};
use tsumugi::loss::CrossEntropy;
use tsumugi::nn::seq2seq::{AttentionKind, Decoder, Encoder, Seq2Seq};
use tsumugi::nn::seq2seq::{DecoderConfig, EncoderConfig};
use tsumugi::nn::VarBuilder;
use tsumugi::optim::Adam;
use tsumugi::{Context, Tensor};

const PAD: u32 = 0;
const SOS: u32 = 1;
const EOS: u32 = 2;

/// Resident set size of this process in bytes (`/proc/self/statm`, Linux); 0 elsewhere.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

#[derive(Clone, Copy, Debug)]
struct Sample {
    step: u64,
    stats: PoolStats,
    pipelines: usize,
    rss: u64,
    loss: f32,
}

impl std::fmt::Display for Sample {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "step {:>5}: loss {:.4}, buffers created {}, in use {} ({} KiB), uniform chunks {}, pipelines {}, RSS {:.1} MiB",
            self.step,
            self.loss,
            self.stats.buffers_created,
            self.stats.buffers_in_use,
            self.stats.bytes_in_use / 1024,
            self.stats.uniform_chunks_created,
            self.pipelines,
            self.rss as f64 / (1 << 20) as f64
        )
    }
}

/// Trains for `steps` steps, sampling every `every` steps; returns the samples.
fn soak(steps: u64, every: u64) -> Vec<Sample> {
    let ctx = Context::new().expect("a GPU adapter");
    // Toy parallel data: 6 source words, 8 target tokens (3 of them special), 4 pairs of
    // 3 source words and up to 4 target tokens.
    let (src_vocab, tgt_vocab, batch, src_len, tgt_len) = (6, 8, 4, 3, 5);
    let src: Vec<u32> = vec![1, 2, 3, 2, 3, 4, 5, 1, 1, 4, 5, 2];
    let targets: [&[u32]; 4] = [&[3, 4], &[5, 6, 7], &[4, 4, 3, 7], &[6]];
    let mut inputs = vec![vec![PAD; batch]; tgt_len];
    let mut labels = vec![PAD; batch * tgt_len];
    for (b, ids) in targets.iter().enumerate() {
        inputs[0][b] = SOS;
        for (t, &id) in ids.iter().enumerate() {
            inputs[t + 1][b] = id;
            labels[b * tgt_len + t] = id;
        }
        labels[b * tgt_len + ids.len()] = EOS;
    }
    let src = Tensor::from_slice(&ctx, &src, &[batch, src_len]).unwrap();
    let step_inputs: Vec<Tensor> = inputs
        .iter()
        .map(|ids| Tensor::from_slice(&ctx, ids, &[batch, 1]).unwrap())
        .collect();
    let labels = Tensor::from_slice(&ctx, &labels, &[batch * tgt_len]).unwrap();

    let mut store = ParamStore::new();
    let mut rng = StdRng::seed_from_u64(5);
    let model = Seq2Seq {
        encoder: Encoder::build(
            EncoderConfig {
                vocab: src_vocab,
                embed: 8,
                hidden: 16,
                padding_idx: Some(PAD),
            },
            VarBuilder::with_prefix(&ctx, &mut store, &mut rng, "encoder"),
        )
        .unwrap(),
        decoder: Decoder::build(
            DecoderConfig {
                vocab: tgt_vocab,
                embed: 8,
                hidden: 16,
                padding_idx: Some(PAD),
                attention: Some(AttentionKind::Bahdanau),
            },
            VarBuilder::with_prefix(&ctx, &mut store, &mut rng, "decoder"),
        )
        .unwrap(),
    };
    let adam = Adam {
        lr: 0.005,
        ..Adam::default()
    };
    let ce = CrossEntropy {
        ignore_index: Some(PAD),
        ..CrossEntropy::default()
    };
    let mut samples = Vec::new();
    for t in 1..=steps {
        store.zero_grad();
        let mut g = Graph::train(&ctx, &mut store, 1, t);
        // Teacher forcing 0.5: each step takes either input, as in the chapter's training.
        let logits = model.forward(&mut g, &src, None, &step_inputs, 0.5, &mut rng).unwrap();
        let loss = g.cross_entropy(logits, &labels, &ce).unwrap();
        let loss_t = g.value(loss).clone();
        g.backward(loss).unwrap();
        let norm = g.clip_grad_norm(1.0).unwrap();
        g.adam_step_guarded(&adam, t, &norm).unwrap();
        g.submit();
        if t % every == 0 || t == 1 {
            let loss = loss_t.to_vec::<f32>().unwrap()[0];
            let norm = norm.to_vec::<f32>().unwrap()[0];
            check_step_finite(t, loss, norm).unwrap();
            // An evaluation pass, as a training loop would run one.
            let mut g = Graph::eval(&ctx, &mut store);
            let (chosen, _) = model.greedy(&mut g, &src, None, &step_inputs[0], tgt_len).unwrap();
            g.submit();
            assert_eq!(chosen[0].to_vec::<u32>().unwrap().len(), batch);
            let sample = Sample {
                step: t,
                stats: ctx.pool_stats(),
                pipelines: ctx.pipeline_count(),
                rss: rss_bytes(),
                loss,
            };
            eprintln!("{sample}");
            samples.push(sample);
        }
    }
    samples
}

/// After the first `warm_up` samples: no buffer, uniform chunk or pipeline created, the
/// same buffers in use at every sample, resident memory within `rss_slack` bytes.
fn assert_flat(samples: &[Sample], warm_up: usize, rss_slack: u64) {
    let base = samples[warm_up];
    for s in &samples[warm_up..] {
        assert_eq!(
            s.stats.buffers_created, base.stats.buffers_created,
            "GPU buffers created after warm-up:\n  {base}\n  {s}"
        );
        assert_eq!(
            s.stats.uniform_chunks_created, base.stats.uniform_chunks_created,
            "uniform chunks created after warm-up:\n  {base}\n  {s}"
        );
        assert_eq!(
            (s.stats.buffers_in_use, s.stats.bytes_in_use),
            (base.stats.buffers_in_use, base.stats.bytes_in_use),
            "buffers held grew:\n  {base}\n  {s}"
        );
        assert_eq!(s.pipelines, base.pipelines, "pipelines built after warm-up");
        assert!(
            s.rss <= base.rss + rss_slack,
            "resident memory grew by {} KiB (slack {} KiB):\n  {base}\n  {s}",
            (s.rss - base.rss) / 1024,
            rss_slack / 1024
        );
    }
}

#[test]
fn soak_training_keeps_buffers_and_memory_flat_200_steps() {
    let samples = soak(200, 25);
    // Samples at steps 1, 25, 50, ...: the pool is warm after the first full step and
    // evaluation; resident memory still settles until about step 75 (allocator and driver
    // caches, about 10 MiB on lavapipe), hence the slack; the long run is strict.
    assert_flat(&samples, 1, 32 << 20);
}

#[test]
#[ignore = "long: thousands of steps; run with --ignored (TSUMUGI_SOAK_STEPS sets the count)"]
fn soak_training_keeps_buffers_and_memory_flat_long() {
    let steps: u64 = std::env::var("TSUMUGI_SOAK_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    let samples = soak(steps, 100);
    // Samples at steps 1, 100, 200, ...; resident memory is judged from step 500 on.
    let (first, warm, last) = (samples[0], samples[5], samples[samples.len() - 1]);
    eprintln!("first step:   {first}\nafter warm-up: {warm}\nat the end:   {last}");
    // The losses fall: the soak trains for real.
    assert!(last.loss < first.loss, "{first}\n{last}");
    assert_flat(&samples, 1, 16 << 20);
    assert_flat(&samples, 5, 4 << 20);
}
