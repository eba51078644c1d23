//! Kernel throughput: `cargo bench --bench kernels`.
//!
//! Every shape is verified once against the CPU reference before it is timed, and the
//! pipelines are built before timing. One iteration is one dispatch, submitted and
//! waited for (the workloads' convention: time a GPU iteration to its result). Criterion's
//! throughput is set in FLOPs (2 M N K per product), so its `elem/s` reads as FLOP/s; a
//! `GFLOP/s` line with the median of criterion's own samples follows each shape.
//! The memory-bound sections (`loss_optim`, `embedding_elementwise`) report bytes
//! instead: the bytes each kernel must read and write at least (scratch traffic such as
//! the embedding backward's sort is not counted), as GB/s.
//!
//! One module per kernel family; `common` holds the seeded inputs, the checks against the
//! CPU references and the timing helper they all use.

mod attention;
mod common;
mod embedding_elementwise;
mod generator;
mod loss_optim;
mod matmul;
mod recurrent;
mod sequence_beam;

use criterion::{criterion_group, criterion_main};

criterion_group!(
    benches,
    matmul::matmul_benches,
    recurrent::recurrent_benches,
    loss_optim::loss_optim_benches,
    embedding_elementwise::embedding_elementwise_benches,
    attention::attention_benches,
    sequence_beam::sequence_beam_benches,
    generator::generator_benches
);
criterion_main!(benches);
