//! One step of the game generator (embedding, 2-layer LSTM, Linear, GPU draw), the
//! per-frame cost a game pays, in GFLOP/s.

use std::time::Duration;

use criterion::Criterion;
use rand::SeedableRng;
use tsumugi::kernels::matmul::{Matmul, MatmulDims};
use tsumugi::{reference, Context};

use crate::common::{time_gpu, to_f64, verify_all};
use tsumugi::nn::{embedding, linear, recurrent, EmbeddingConfig, VarBuilder};

/// One step of the game generator (nn::generator): 16 streams (NPCs) through an
/// embedding, a 2-layer LSTM with H = 256 and a Linear to V = 65, then the GPU draw;
/// the per-frame cost a game pays. Verified once against the CPU references (embedding,
/// matmul and LSTM cell in f64) before timing. One iteration is one step encoded,
/// submitted and waited for.
pub(crate) fn generator_benches(criterion: &mut Criterion) {
    use rand::rngs::StdRng;
    use tsumugi::graph::ParamStore;
    use tsumugi::kernels::lstm_cell::LstmDims;
    use tsumugi::nn::generator::Generator;
    use tsumugi::nn::{CellKind, RecurrentConfig};
    use tsumugi::sampling::Sampling;

    let ctx = Context::new().expect("a GPU adapter");
    let mut group = criterion.benchmark_group("generator");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let (streams, vocab, embed, hidden, layers) = (16, 65, 64, 256, 2);
    let mut store = ParamStore::new();
    let mut rng = StdRng::seed_from_u64(3);
    let embedding = embedding(
        vocab,
        embed,
        EmbeddingConfig { padding_idx: None },
        VarBuilder::with_prefix(&ctx, &mut store, &mut rng, "embedding"),
    )
    .expect("embedding");
    let config = RecurrentConfig {
        num_layers: layers,
        ..RecurrentConfig::new(CellKind::Lstm, embed, hidden)
    };
    let lstm = recurrent(config, VarBuilder::with_prefix(&ctx, &mut store, &mut rng, "lstm")).expect("lstm");
    let fc = linear(hidden, vocab, VarBuilder::with_prefix(&ctx, &mut store, &mut rng, "fc")).expect("fc");
    let sampling = Sampling {
        temperature: 0.8,
        top_k: Some(10),
        seed: 1,
    };
    let mut generator = Generator::new(&ctx, &store, &embedding, &lstm, &fc, streams, sampling).expect("generator");

    // The reference: one step from zero state on the tokens [0, 1, .., 15].
    let ids: Vec<u32> = (0..streams as u32).collect();
    let input = generator.upload_tokens(&ids).expect("tokens");
    let mut encoder = ctx.create_encoder();
    generator.step_with(&mut encoder, &input).expect("generator step");
    ctx.submit(encoder);
    let value = |id| to_f64(&store.value(id).to_vec::<f32>().expect("read a parameter"));
    let mut x = reference::embedding::embedding_forward(&ids, &value(embedding.weight), embed);
    let linear = Matmul {
        trans_b: true,
        ..Matmul::default()
    };
    let zeros = vec![0.0; streams * hidden];
    for layer in 0..layers {
        let [w_ih, w_hh, b_ih, b_hh] = lstm.layer_params(layer, 0).expect("layer").map(value);
        let bias: Vec<f64> = b_ih.iter().zip(&b_hh).map(|(a, b)| a + b).collect();
        let inputs = if layer == 0 { embed } else { hidden };
        let dims = MatmulDims::new(&linear, &[streams, inputs], &[4 * hidden, inputs]).expect("dims");
        let xproj = reference::matmul::matmul_forward(&dims, &linear, &x, &w_ih, Some(&bias), &[]);
        let cell = LstmDims {
            batch: streams,
            steps: 1,
            hidden,
        };
        x = reference::lstm_cell::lstm_cell_forward(&cell, &xproj, &w_hh, None, &zeros, &zeros).output;
    }
    let dims = MatmulDims::new(&linear, &[streams, hidden], &[vocab, hidden]).expect("dims");
    let bias = value(fc.bias.expect("fc has a bias"));
    let want = reference::matmul::matmul_forward(&dims, &linear, &x, &value(fc.weight), Some(&bias), &[]);
    let got = generator.logits().to_vec::<f32>().expect("read logits");
    let err = verify_all("generator logits", &got, &want, 1e-4, 1e-3);
    eprintln!("generator: one step verified against the CPU reference (max abs error {err:.2e})");

    let run_step = || {
        let mut encoder = ctx.create_encoder();
        generator.step(&mut encoder).expect("generator step");
        ctx.submit(encoder);
        ctx.wait_idle_blocking().expect("GPU");
    };
    // Multiply-adds of a step: both layers' input and recurrent products and the output
    // layer (the embedding gather and the draw are small beside them).
    let flops = 2 * streams as u64 * (4 * hidden * (embed + hidden) + 4 * hidden * 2 * hidden + vocab * hidden) as u64;
    time_gpu(
        &mut group,
        "generator_step",
        "lstm_l2_h256_b16_v65",
        flops,
        "GFLOP/s",
        run_step,
    );
    group.finish();
}
