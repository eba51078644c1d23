//! A stateful token generator for games and renderers: an Embedding -> LSTM/GRU/RNN stack ->
//! Linear model that advances every stream (one per NPC, say) by one token per
//! [`Generator::step`], samples on the GPU and keeps its state there between frames.
//!
//! A step is a handful of dispatches and buffer copies encoded into the caller's
//! [`Recorder`] (a `wgpu::CommandEncoder` or an [`crate::Encoder`]): the embedding gather of each stream's current token, per layer
//! the input projection (one matmul) and one fused cell step, the output projection,
//! and [`sample_tokens`]. It never submits, waits or reads back; the drawn tokens stay
//! on the GPU and are the next step's input. All streams share every dispatch.
//!
//! Buffers a host may bind (all `Tensor::buffer()`, data at offset 0, row-major,
//! B = [`Generator::streams`], V = [`Generator::vocab`], H = hidden size):
//! - [`Generator::tokens`]: `u32 [B]`, the token each stream drew at its last step (the
//!   input of the next step);
//! - [`Generator::probabilities`]: `f32 [B, V]`, the distribution each stream's last
//!   token was drawn from (after temperature and top-k, each row summing to 1);
//! - [`Generator::logits`]: `f32 [B, V]`, the raw output-layer scores of the last step;
//! - [`Generator::hidden`]: `f32 [B, H]` per layer, that layer's hidden state after the
//!   last step (zeros for a stream reset since).
//!
//! They are written by the commands of a step, so they hold its results once the
//! encoder it was encoded into has run; to read one on the CPU, submit first, then
//! `tensor.read::<T>()` (asynchronous; the copy is queued behind the submission) or
//! `to_vec` (blocking, for tools and tests).
//!
//! Like every launcher, the generator writes each dispatch's parameters into the
//! context's uniform arena; a host that encodes into its own encoders calls
//! [`Context::recycle_after_submit`] after submitting them (once a frame).
//!
//! The state of a stream advances as PyTorch's `nn.LSTM`/`nn.GRU` over the tokens fed so
//! far: step t of stream b gives exactly the logits that the batch forward of the same
//! model over that stream's first t+1 tokens gives at position t.
//!
//! ```no_run
//! use tsumugi::graph::ParamStore;
//! use tsumugi::sampling::Sampling;
//! use tsumugi::nn::generator::Generator;
//! use tsumugi::nn::{Embedding, Linear, Recurrent};
//! use tsumugi::Context;
//!
//! /// At load time: tsumugi on the game's device and queue, 16 NPC streams.
//! fn start(
//!     device: &wgpu::Device,
//!     queue: &wgpu::Queue,
//!     (store, embedding, lstm, fc): (&ParamStore, &Embedding, &Recurrent, &Linear),
//! ) -> tsumugi::Result<(Context, Generator)> {
//!     let ctx = Context::from_wgpu(device.clone(), queue.clone());
//!     let sampling = Sampling { temperature: 0.8, top_k: Some(10), seed: 1 };
//!     let mut npcs = Generator::new(&ctx, store, embedding, lstm, fc, 16, sampling)?;
//!     let mut encoder = device.create_command_encoder(&Default::default());
//!     for slot in 0..npcs.streams() {
//!         npcs.reset_slot(&mut encoder, slot, 0)?; // start token 0
//!     }
//!     queue.submit([encoder.finish()]);
//!     Ok((ctx, npcs))
//! }
//!
//! /// Every frame: one token for every NPC, in the frame's own encoder.
//! fn frame(device: &wgpu::Device, queue: &wgpu::Queue, ctx: &Context, npcs: &mut Generator) -> tsumugi::Result<()> {
//!     let mut encoder = device.create_command_encoder(&Default::default());
//!     npcs.step(&mut encoder)?;
//!     // The game's passes bind npcs.tokens().buffer() (u32 [B]) and
//!     // npcs.probabilities().buffer() (f32 [B, V]) here, read-only.
//!     queue.submit([encoder.finish()]);
//!     ctx.recycle_after_submit();
//!     Ok(())
//! }
//! ```

use crate::graph::{ParamId, ParamStore};
use crate::kernels::elementwise::add_forward;
use crate::kernels::embedding::{embedding_forward, upload_ids};
use crate::kernels::gru_cell::{gru_cell_forward, GruForward};
use crate::kernels::lstm_cell::{lstm_cell_forward, LstmForward};
use crate::kernels::matmul::{matmul_forward, Matmul};
use crate::kernels::rnn_cell::{rnn_cell_forward, RnnForward};
use crate::kernels::sampling::{sample_tokens, Sampling};
use crate::nn::models::{Readout, RecurrentModel};
use crate::nn::{CellKind, Embedding, Linear, Recurrent};
use crate::{Context, DType, Error, Recorder, Result, Tensor};

/// One recurrent layer's weights and per-step tensors.
struct Layer {
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor,
    b_hh: Tensor,
    /// The bias of the input projection: `b_ih + b_hh` for an LSTM or RNN, `b_ih` for a GRU
    /// (whose `b_hn` sits inside `r * (..)`, so b_hh stays in the cell).
    xproj_bias: Tensor,
    /// `[B, 1, gates H]`, and the same as `[B, gates H]` for the matmul.
    xproj: Tensor,
    xproj_2d: Tensor,
    /// Two `[B, 2, H]` state buffers used in turn: a step reads slot 0 of one and the
    /// cell writes slot 1; one buffer copy shifted by H moves every row's slot 1 into
    /// slot 0 of the other (the other's slot 1 gets the next row's slot 0, which the next
    /// step overwrites).
    h: [Tensor; 2],
    /// The same for the LSTM's cell state.
    c: Option<[Tensor; 2]>,
    /// `[B, 1, 4H]`: what the cell saves for a backward (unused here).
    gates: Tensor,
    /// `[B, 1, H]`: the new hidden state; and the same as `[B, H]`.
    output: Tensor,
    output_2d: Tensor,
}

/// The generator; see the module docs.
pub struct Generator {
    ctx: Context,
    kind: CellKind,
    streams: usize,
    vocab: usize,
    hidden: usize,
    sampling: Sampling,
    embedding: Tensor,
    layers: Vec<Layer>,
    fc_weight: Tensor,
    fc_bias: Option<Tensor>,
    /// `[B]` u32 and the same as `[B, 1]` for the embedding.
    tokens: Tensor,
    tokens_2d: Tensor,
    /// `[B, 1, E]` and `[B, E]`.
    embedded: Tensor,
    embedded_2d: Tensor,
    logits: Tensor,
    probs: Tensor,
    /// `[1]` u32: counts ids >= V met by the embedding (a host tensor fed unchecked).
    error_flag: Tensor,
    /// `[V]` u32 holding 0..V: [`Generator::reset_slot`] copies a start token from it,
    /// so the write is ordered with the encoder's other commands (a queue write is not).
    iota: Tensor,
    step: u64,
    parity: usize,
}

impl std::fmt::Debug for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator")
            .field("kind", &self.kind)
            .field("streams", &self.streams)
            .field("vocab", &self.vocab)
            .field("hidden", &self.hidden)
            .field("layers", &self.layers.len())
            .field("sampling", &self.sampling)
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

/// The value of parameter `id` of `store` on `ctx`'s device, or `Err(InvalidArgument)`
/// naming it (an id of another store, a tensor of another device).
fn param(ctx: &Context, store: &ParamStore, id: ParamId, name: &str) -> Result<Tensor> {
    let tensor = store
        .get(id)
        .ok_or_else(|| Error::invalid(format!("generator: {name} is not a parameter of this store")))?;
    check_same_context(ctx, name, tensor)?;
    Ok(tensor.clone())
}

/// `Err(InvalidArgument)` unless `tensor` lives on `ctx`'s device.
fn check_same_context(ctx: &Context, name: &str, tensor: &Tensor) -> Result<()> {
    if !tensor.context().same_context(ctx) {
        return Err(Error::invalid(format!(
            "generator: {name} belongs to context #{}, not to the generator's context #{}",
            tensor.context().id(),
            ctx.id()
        )));
    }
    Ok(())
}

impl Generator {
    /// A generator of `streams` independent streams over the model `embedding` ->
    /// `recurrent` (LSTM, GRU or RNN, unidirectional, any number of layers; dropout is off at
    /// inference) -> `fc`, whose parameters live in `store`. The weights are shared with
    /// the store, not copied (call [`Generator::refresh_weights`] after changing them).
    /// Every stream starts with zero state and token 0. `ctx` is the context the
    /// generator encodes on: the host's, made by [`Context::from_wgpu`], inside a game.
    /// Uploads a few small constants and submits one tiny encoder that folds the
    /// biases; nothing waits. Call it between frames (at load time), not while an encoder
    /// of the host's holding tsumugi work is still unsubmitted.
    pub fn new(
        ctx: &Context,
        store: &ParamStore,
        embedding: &Embedding,
        recurrent: &Recurrent,
        fc: &Linear,
        streams: usize,
        sampling: Sampling,
    ) -> Result<Generator> {
        let config = recurrent.config();
        let gates = match config.kind {
            CellKind::Lstm => 4,
            CellKind::Gru => 3,
            CellKind::Rnn(_) => 1,
        };
        if config.bidirectional {
            return Err(Error::invalid(
                "generator: a bidirectional stack cannot run one token at a time",
            ));
        }
        if streams == 0 {
            return Err(Error::invalid("generator: streams must be >= 1"));
        }
        let table = param(ctx, store, embedding.weight, "embedding.weight")?;
        let [vocab, embed] = table.shape()[..] else {
            return Err(Error::shape("generator: embedding.weight", "[V, E]", table.shape()));
        };
        if embed != config.input_size {
            return Err(Error::shape(
                "generator: embedding.weight (E must be the recurrent input size)",
                format!("[V, {}]", config.input_size),
                table.shape(),
            ));
        }
        let hidden = config.hidden_size;
        let fc_weight = param(ctx, store, fc.weight, "fc.weight")?;
        fc_weight.check_shape("generator: fc.weight", &[vocab, hidden])?;
        let fc_bias = fc.bias.map(|b| param(ctx, store, b, "fc.bias")).transpose()?;
        if let Some(bias) = &fc_bias {
            bias.check_shape("generator: fc.bias", &[vocab])?;
        }
        sampling.check(vocab)?;
        let b = streams;
        let f32_tensor = |shape: &[usize]| Tensor::zeros(ctx, shape, DType::F32);
        let mut layers = Vec::with_capacity(config.num_layers);
        for layer in 0..config.num_layers {
            let ids = recurrent
                .layer_params(layer, 0)
                .ok_or_else(|| Error::invalid(format!("generator: the stack has no layer {layer}")))?;
            let [w_ih, w_hh, b_ih, b_hh] = [
                param(ctx, store, ids[0], "weight_ih")?,
                param(ctx, store, ids[1], "weight_hh")?,
                param(ctx, store, ids[2], "bias_ih")?,
                param(ctx, store, ids[3], "bias_hh")?,
            ];
            let inputs = if layer == 0 { embed } else { hidden };
            w_ih.check_shape("generator: weight_ih", &[gates * hidden, inputs])?;
            w_hh.check_shape("generator: weight_hh", &[gates * hidden, hidden])?;
            let xproj = f32_tensor(&[b, 1, gates * hidden])?;
            let output = f32_tensor(&[b, 1, hidden])?;
            let state = || -> Result<[Tensor; 2]> { Ok([f32_tensor(&[b, 2, hidden])?, f32_tensor(&[b, 2, hidden])?]) };
            layers.push(Layer {
                xproj_bias: f32_tensor(&[gates * hidden])?,
                xproj_2d: xproj.reshape(&[b, gates * hidden])?,
                xproj,
                h: state()?,
                c: if config.kind == CellKind::Lstm {
                    Some(state()?)
                } else {
                    None
                },
                gates: f32_tensor(&[b, 1, 4 * hidden])?,
                output_2d: output.reshape(&[b, hidden])?,
                output,
                w_ih,
                w_hh,
                b_ih,
                b_hh,
            });
        }
        let tokens = Tensor::zeros(ctx, &[b], DType::U32)?;
        let embedded = f32_tensor(&[b, 1, embed])?;
        let iota: Vec<u32> = (0..vocab as u32).collect();
        let generator = Generator {
            ctx: ctx.clone(),
            kind: config.kind,
            streams,
            vocab,
            hidden,
            sampling,
            embedding: table,
            fc_weight,
            fc_bias,
            tokens_2d: tokens.reshape(&[b, 1])?,
            tokens,
            embedded_2d: embedded.reshape(&[b, embed])?,
            embedded,
            logits: f32_tensor(&[b, vocab])?,
            probs: f32_tensor(&[b, vocab])?,
            error_flag: Tensor::zeros(ctx, &[1], DType::U32)?,
            iota: Tensor::from_slice(ctx, &iota, &[vocab])?,
            layers,
            step: 0,
            parity: 0,
        };
        generator.write_biases()?;
        Ok(generator)
    }

    /// [`Generator::new`] over one of the chapter's character models
    /// ([`RecurrentModel::char_rnn`], [`RecurrentModel::char_level_rnn`], or any
    /// [`RecurrentModel`] with an embedding and a per-step readout), e.g. loaded from a
    /// PyTorch state dict.
    pub fn from_model(
        ctx: &Context,
        store: &ParamStore,
        model: &RecurrentModel,
        streams: usize,
        sampling: Sampling,
    ) -> Result<Generator> {
        let Some(embedding) = &model.embedding else {
            return Err(Error::invalid(
                "generator: the model has no embedding (it reads features, not tokens)",
            ));
        };
        if !matches!(model.readout, Readout::PerStep) {
            return Err(Error::invalid(
                "generator: the model's head does not read every step (a classifier, not a character model)",
            ));
        }
        Self::new(ctx, store, embedding, &model.rnn, &model.fc, streams, sampling)
    }

    /// Folds the biases of the input projections (`b_ih + b_hh` for an LSTM or RNN,
    /// `b_ih` for a GRU) in an encoder of its own, submitted at once. A context encoder, so that
    /// threads sharing the context stay safe; its submission recycles the uniform space
    /// of finished work, hence "between frames" in the callers' docs.
    fn write_biases(&self) -> Result<()> {
        let mut encoder = self.ctx.create_encoder();
        for layer in &self.layers {
            if self.kind != CellKind::Gru {
                add_forward(&self.ctx, &mut encoder, &layer.b_ih, &layer.b_hh, &layer.xproj_bias)?;
            } else {
                encoder.copy_buffer_to_buffer(
                    layer.b_ih.buffer(),
                    0,
                    layer.xproj_bias.buffer(),
                    0,
                    layer.b_ih.size_in_bytes(),
                );
            }
        }
        self.ctx.submit(encoder);
        Ok(())
    }

    /// Recomputes the folded input-projection biases from the store's current values,
    /// after the model's parameters changed (further training, a loaded checkpoint); the
    /// weights themselves are shared and need nothing. Submits one small encoder of its
    /// own, so call it between frames, not while an encoder of the host's holding
    /// tsumugi work is still unsubmitted.
    pub fn refresh_weights(&self) -> Result<()> {
        self.write_biases()
    }

    /// Advances every stream by one token: feeds each stream's current token (the one it
    /// drew at its last step, or its start token), runs the model, and draws the next
    /// token on the GPU. Encodes into `encoder`; never submits or waits.
    pub fn step(&mut self, encoder: &mut dyn Recorder) -> Result<()> {
        let ids = self.tokens_2d.clone();
        self.encode_step(encoder, &ids)
    }

    /// [`Generator::step`] with the input tokens given instead of the last drawn ones
    /// (priming streams with a prompt, or teacher forcing): `input` is `u32 [B]`, one
    /// token per stream. Make it with [`Generator::upload_tokens`], which checks the ids;
    /// an id >= V in a tensor made otherwise cannot be checked without a readback, so
    /// the embedding reads zeros for it and counts it in [`Generator::error_flag`].
    /// The host keeps `input` alive until the encoder is submitted.
    pub fn step_with(&mut self, encoder: &mut dyn Recorder, input: &Tensor) -> Result<()> {
        input.check_dtype("generator: input tokens", DType::U32)?;
        input.check_shape("generator: input tokens", &[self.streams])?;
        let ids = input.reshape(&[self.streams, 1])?;
        self.encode_step(encoder, &ids)
    }

    fn encode_step(&mut self, encoder: &mut dyn Recorder, ids: &Tensor) -> Result<()> {
        let ctx = &self.ctx;
        let (p, q) = (self.parity, 1 - self.parity);
        embedding_forward(ctx, encoder, ids, &self.embedding, &self.embedded, &self.error_flag)?;
        let linear = Matmul {
            trans_b: true,
            ..Matmul::default()
        };
        let mut x = &self.embedded_2d;
        // Bytes of the shifted copy that moves slot 1 of every row into slot 0 of the
        // other state buffer: everything but the first H floats.
        let shifted = ((2 * self.streams - 1) * self.hidden * 4) as u64;
        let slot = (self.hidden * 4) as u64;
        for layer in &self.layers {
            matmul_forward(
                ctx,
                encoder,
                &linear,
                x,
                &layer.w_ih,
                Some(&layer.xproj_bias),
                &layer.xproj_2d,
            )?;
            match (&layer.c, self.kind) {
                (Some(c), _) => lstm_cell_forward(
                    ctx,
                    encoder,
                    &LstmForward {
                        xproj: &layer.xproj,
                        w_hh: &layer.w_hh,
                        lengths: None,
                        h_states: &layer.h[p],
                        c_states: &c[p],
                        gates: &layer.gates,
                        output: &layer.output,
                    },
                    0,
                )?,
                (None, CellKind::Gru) => gru_cell_forward(
                    ctx,
                    encoder,
                    &GruForward {
                        xproj: &layer.xproj,
                        w_hh: &layer.w_hh,
                        b_hh: &layer.b_hh,
                        lengths: None,
                        h_states: &layer.h[p],
                        gates: &layer.gates,
                        output: &layer.output,
                    },
                    0,
                )?,
                (None, kind) => rnn_cell_forward(
                    ctx,
                    encoder,
                    &RnnForward {
                        xproj: &layer.xproj,
                        w_hh: &layer.w_hh,
                        lengths: None,
                        h_states: &layer.h[p],
                        output: &layer.output,
                        nonlinearity: match kind {
                            CellKind::Rnn(nonlinearity) => nonlinearity,
                            _ => return Err(Error::invalid("generator: unexpected cell kind")),
                        },
                    },
                    0,
                )?,
            }
            encoder
                .command_encoder()
                .copy_buffer_to_buffer(layer.h[p].buffer(), slot, layer.h[q].buffer(), 0, shifted);
            if let Some(c) = &layer.c {
                encoder
                    .command_encoder()
                    .copy_buffer_to_buffer(c[p].buffer(), slot, c[q].buffer(), 0, shifted);
            }
            x = &layer.output_2d;
        }
        matmul_forward(
            ctx,
            encoder,
            &linear,
            x,
            &self.fc_weight,
            self.fc_bias.as_ref(),
            &self.logits,
        )?;
        sample_tokens(
            ctx,
            encoder,
            &self.sampling,
            self.step,
            &self.logits,
            &self.probs,
            &self.tokens,
        )?;
        self.step += 1;
        self.parity = q;
        Ok(())
    }

    /// Starts stream `slot` afresh: zero hidden (and cell) state in every layer, and
    /// `start_token` as its next input. The other streams are untouched. Encoded into
    /// `encoder` (buffer clears and a 4-byte copy), so it takes effect between the steps
    /// encoded before and after it.
    pub fn reset_slot(&mut self, encoder: &mut dyn Recorder, slot: usize, start_token: u32) -> Result<()> {
        if slot >= self.streams {
            return Err(Error::invalid(format!(
                "generator: slot {slot} is outside 0..{} (the streams)",
                self.streams
            )));
        }
        if start_token as usize >= self.vocab {
            return Err(Error::invalid(format!(
                "generator: start token {start_token} is not below the vocabulary size {}",
                self.vocab
            )));
        }
        let row = (self.hidden * 4) as u64;
        for layer in &self.layers {
            for states in std::iter::once(&layer.h).chain(layer.c.as_ref()) {
                for tensor in states {
                    encoder
                        .command_encoder()
                        .clear_buffer(tensor.buffer(), 2 * slot as u64 * row, Some(2 * row));
                }
            }
            encoder
                .command_encoder()
                .clear_buffer(layer.output.buffer(), slot as u64 * row, Some(row));
        }
        encoder.command_encoder().copy_buffer_to_buffer(
            self.iota.buffer(),
            u64::from(start_token) * 4,
            self.tokens.buffer(),
            slot as u64 * 4,
            4,
        );
        Ok(())
    }

    /// Uploads one token per stream for [`Generator::step_with`], checking each id
    /// against the vocabulary first (`Err(InvalidArgument)` names the first bad one).
    pub fn upload_tokens(&self, ids: &[u32]) -> Result<Tensor> {
        upload_ids(&self.ctx, ids, &[self.streams], self.vocab)
    }

    /// Changes how the following steps draw (temperature, top-k, seed), after checking it.
    pub fn set_sampling(&mut self, sampling: Sampling) -> Result<()> {
        sampling.check(self.vocab)?;
        self.sampling = sampling;
        Ok(())
    }

    /// How tokens are drawn.
    pub fn sampling(&self) -> &Sampling {
        &self.sampling
    }

    /// `u32 [B]`: each stream's last drawn token, the next step's input.
    pub fn tokens(&self) -> &Tensor {
        &self.tokens
    }

    /// `f32 [B, V]`: the distribution each stream's last token was drawn from.
    pub fn probabilities(&self) -> &Tensor {
        &self.probs
    }

    /// `f32 [B, V]`: the output layer's scores at the last step.
    pub fn logits(&self) -> &Tensor {
        &self.logits
    }

    /// `f32 [B, H]`: the hidden state of `layer` (0 = first) after the last step.
    pub fn hidden(&self, layer: usize) -> Result<&Tensor> {
        self.layers
            .get(layer)
            .map(|l| &l.output_2d)
            .ok_or_else(|| Error::invalid(format!("generator: layer {layer} is outside 0..{}", self.layers.len())))
    }

    /// `u32 [1]`: how many input ids >= V the embedding has met (see
    /// [`Generator::step_with`]); only ever incremented.
    pub fn error_flag(&self) -> &Tensor {
        &self.error_flag
    }

    /// B, the number of independent streams.
    pub fn streams(&self) -> usize {
        self.streams
    }

    /// V, the vocabulary size.
    pub fn vocab(&self) -> usize {
        self.vocab
    }

    /// Number of layers.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Steps encoded so far (the random step of the next draw).
    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    /// The context the generator encodes on.
    pub fn context(&self) -> &Context {
        &self.ctx
    }
}
