//! Seq2seq decoding inside a host's frame: on a device and queue made with plain wgpu (as
//! a game makes them), a graph records greedy decoding with attention into the host's own
//! `wgpu::CommandEncoder` (`Graph::eval_into`), submits nothing and waits for nothing, and
//! leaves the chosen tokens and the attention weights in GPU buffers. After the host
//! submits, they equal what the same decoding gives on a graph with its own encoder; the
//! buffers the graph released stay out of reuse until the host's `recycle_after_submit`,
//! and tsumugi created no device.

mod common;

use common::host_device;
use rand::rngs::StdRng;
use rand::SeedableRng;
use tsumugi::graph::{Graph, ParamStore};
use tsumugi::kernels::Lengths;
use tsumugi::nn::seq2seq::{AttentionKind, BeamSearch, DecoderConfig, EncoderConfig, Seq2Seq};
use tsumugi::nn::VarBuilder;
use tsumugi::{Context, Tensor};

const STEPS: usize = 6;

/// Greedy decoding of `src`; returns (token ids per step, attention weights per step) as
/// tensors still on the GPU.
fn decode(
    g: &mut Graph<'_>,
    model: &Seq2Seq,
    src: &Tensor,
    lengths: &Lengths,
    sos: &Tensor,
) -> (Vec<Tensor>, Vec<Tensor>) {
    let (ids, weights) = model.greedy(g, src, lengths, sos, STEPS).unwrap();
    let weights = weights.iter().map(|&w| g.value(w).clone()).collect();
    (ids, weights)
}

fn read(tensors: &[Tensor]) -> (Vec<Vec<u32>>, Vec<Vec<f32>>) {
    let ids = tensors
        .iter()
        .filter(|t| t.dtype() == tsumugi::DType::U32)
        .map(|t| t.to_vec::<u32>().unwrap())
        .collect();
    let weights = tensors
        .iter()
        .filter(|t| t.dtype() == tsumugi::DType::F32)
        .map(|t| t.to_vec::<f32>().unwrap())
        .collect();
    (ids, weights)
}

#[test]
fn greedy_decoding_recorded_into_a_hosts_encoder_equals_its_own_encoders_and_creates_no_device() {
    let devices_before = tsumugi::gpu::devices_created();
    let (device, queue) = host_device();
    let ctx = Context::from_wgpu(device.clone(), queue.clone());
    let mut store = ParamStore::new();
    let model = model(&ctx, &mut store, 12);
    // Three sources of lengths 4, 2 and 3 (padded with 0), each decoded from <sos> = 1.
    let src = Tensor::from_slice(&ctx, &[5u32, 7, 2, 9, 3, 4, 0, 0, 8, 8, 6, 0], &[3, 4]).unwrap();
    let lengths = Lengths::new(&ctx, &[4, 2, 3], 4).unwrap();
    let sos = Tensor::from_slice(&ctx, &[1u32; 3], &[3, 1]).unwrap();

    // The reference: a graph with its own encoder, submitted by the graph.
    let mut g = Graph::eval(&ctx, &mut store);
    let (ids, weights) = decode(&mut g, &model, &src, &lengths, &sos);
    g.submit();
    let expected = read(&[ids, weights].concat());

    // The host's frame: its encoder, its submission.
    let mut frame = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
        label: Some("host frame"),
    });
    let mut g = Graph::eval_into(&ctx, &mut store, &mut frame);
    let (ids, weights) = decode(&mut g, &model, &src, &lengths, &sos);
    // Ends the recording; submits nothing. Until the host submits, what the frame's
    // commands read must not be reused: neither the buffers the graph released nor the
    // dispatch parameters in the uniform arena. Other work on the same context in between
    // (two decodings of other sources, submitted by their own graphs, and uploads of
    // garbage into fresh tensors) would otherwise overwrite them before the frame runs.
    // (Other shapes, so that their dispatch parameters differ from the frame's.)
    g.submit();
    let other = Tensor::from_slice(&ctx, &[9u32, 9, 9, 9, 2, 2, 2, 2, 3, 3], &[2, 5]).unwrap();
    let other_lengths = Lengths::new(&ctx, &[5, 2], 5).unwrap();
    let other_sos = Tensor::from_slice(&ctx, &[1u32; 2], &[2, 1]).unwrap();
    for _ in 0..2 {
        let mut g = Graph::eval(&ctx, &mut store);
        let (ids, _) = decode(&mut g, &model, &other, &other_lengths, &other_sos);
        g.submit();
        ids[0].to_vec::<u32>().unwrap();
    }
    let scribbles: Vec<Tensor> = (0..64)
        .flat_map(|i| {
            [
                Tensor::full(&ctx, &[3, 16], f32::NAN).unwrap(),
                Tensor::full(&ctx, &[3, 11], -1.0e30f32 * i as f32).unwrap(),
                Tensor::full(&ctx, &[3, 4, 16], f32::NAN).unwrap(),
            ]
        })
        .collect();
    queue.submit([frame.finish()]);
    ctx.recycle_after_submit();
    drop(scribbles);
    let got = read(&[ids, weights].concat());
    assert_eq!(got.0, expected.0, "the tokens decoded in the host's encoder differ");
    assert_eq!(
        got.1, expected.1,
        "the attention weights decoded in the host's encoder differ"
    );
    // Each step's weights sum to 1 over the source's own length and are 0 past it.
    for step in &got.1 {
        for (row, len) in step.chunks(4).zip([4, 2, 3]) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{row:?}");
            assert!(row[len..].iter().all(|&w| w == 0.0), "{row:?}");
        }
    }
    assert_eq!(
        tsumugi::gpu::devices_created(),
        devices_before,
        "tsumugi created a device"
    );
}

/// The translator of these tests: attention, a source vocabulary of 13, a target one of 11.
fn model(ctx: &Context, store: &mut ParamStore, seed: u64) -> Seq2Seq {
    let mut rng = StdRng::seed_from_u64(seed);
    let encoder = EncoderConfig {
        vocab: 13,
        embed: 8,
        hidden: 16,
        padding_idx: Some(0),
    };
    let decoder = DecoderConfig {
        vocab: 11,
        embed: 8,
        hidden: 16,
        padding_idx: Some(0),
        attention: Some(AttentionKind::Bahdanau),
    };
    Seq2Seq::build(encoder, decoder, VarBuilder::new(ctx, store, &mut rng)).unwrap()
}

#[test]
fn beam_search_recorded_into_a_hosts_encoder_leaves_each_sources_best_line_on_the_gpu() {
    let devices_before = tsumugi::gpu::devices_created();
    let (device, queue) = host_device();
    let ctx = Context::from_wgpu(device.clone(), queue.clone());
    let mut store = ParamStore::new();
    let model = model(&ctx, &mut store, 7);
    let src = Tensor::from_slice(&ctx, &[5u32, 7, 2, 9, 3, 4, 0, 0, 8, 8, 6, 0], &[3, 4]).unwrap();
    let lengths = Lengths::new(&ctx, &[4, 2, 3], 4).unwrap();
    // eos = 2 with a length penalty of 1 (the default ranking), and the plain sum (0).
    for length_penalty in [1.0, 0.0] {
        let options = BeamSearch {
            length_penalty,
            ..BeamSearch::new(3, STEPS, 2)
        };
        // The reference: the native beam search, which reads back every hypothesis and
        // ranks them on the host.
        let ranked = model
            .beam_search(&ctx, &mut store, &src, &lengths, 1, &options)
            .unwrap();

        let mut frame = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("host frame"),
        });
        let mut g = Graph::eval_into(&ctx, &mut store, &mut frame);
        let decoding = model.beam(&mut g, &src, &lengths, 1, &options).unwrap();
        g.submit(); // ends the recording; submits nothing
        queue.submit([frame.finish()]);
        ctx.recycle_after_submit();
        assert_eq!(decoding.best.shape(), &[3, STEPS]);
        let best = decoding.best.to_vec::<u32>().unwrap();
        for (b, (row, hypotheses)) in best.chunks(STEPS).zip(&ranked).enumerate() {
            let mut want = hypotheses[0].tokens.clone();
            want.resize(STEPS, options.eos);
            assert_eq!(row, want, "source {b}, length penalty {length_penalty}: {hypotheses:?}");
        }
    }
    assert_eq!(
        tsumugi::gpu::devices_created(),
        devices_before,
        "tsumugi created a device"
    );
}
