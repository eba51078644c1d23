//! # tsumugi
//!
//! Recurrent sequence models (RNN, LSTM, GRU, seq2seq with attention) trained and run on
//! any GPU through [wgpu](https://wgpu.rs), with every kernel hand-written in WGSL and
//! checked against a CPU reference.
//!
//! ## Layers
//! - [`Context`]: adapter and device (or a host application's), pipeline cache, buffer
//!   pool, readback.
//! - [`Tensor`]: a GPU buffer with a shape and a dtype, row-major.
//! - [`kernels`]: launchers that check shapes and encode dispatches into the caller's
//!   command encoder; they never submit or wait.
//! - [`reference`](mod@reference): the CPU oracle of every kernel.
//!
//! ## Dimension letters
//! Used in shapes everywhere, outermost first, written `[B, T, H]`:
//! B batch, T time, S source length, I input features, H hidden, E embedding,
//! V vocabulary, and M, N, K for matmul (`[M, K] x [K, N] -> [M, N]`).
//!
//! ## A first product
//! ```no_run
//! use tsumugi::{Context, Tensor, kernels::matmul::{matmul_forward, Matmul}};
//! # fn main() -> tsumugi::Result<()> {
//! let ctx = Context::new()?;
//! let a = Tensor::from_slice(&ctx, &[1.0f32, 2.0, 3.0, 4.0], &[2, 2])?;
//! let b = Tensor::from_slice(&ctx, &[1.0f32, 0.0, 0.0, 1.0], &[2, 2])?;
//! let c = Tensor::zeros(&ctx, &[2, 2], tsumugi::DType::F32)?;
//! let mut encoder = ctx.create_encoder();
//! matmul_forward(&ctx, &mut encoder, &Matmul::default(), &a, &b, None, &c)?;
//! ctx.submit(encoder);
//! assert_eq!(c.to_vec::<f32>()?, vec![1.0, 2.0, 3.0, 4.0]);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]
// On wasm32 wgpu's handles are neither Send nor Sync (a page has one thread), so the Arcs
// that share them between threads natively only share them within that thread there.
#![cfg_attr(target_arch = "wasm32", allow(clippy::arc_with_non_send_sync))]

mod error;
pub mod gpu;
pub mod graph;
pub mod io;
pub mod kernels;
pub mod loss;
pub mod metrics;
pub mod nn;
pub mod optim;
pub mod reference;
pub mod sampling;
mod tensor;
pub mod text;

pub use error::{Error, Result};
pub use gpu::{AdapterOptions, AdapterSummary, Context, Encoder, Recorder};
pub use tensor::{DType, Element, Tensor};
/// The wgpu tsumugi speaks (its major version decides which hosts and engines can share
/// their `Device` and `Queue` with it), so that a host names exactly this one.
pub use wgpu;

/// The README's Rust blocks, compiled as doc tests so that the front page stays true to the
/// API (`cargo test --doc`).
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
