//! CPU references: the same math as each kernel family in plain f64 loops, one module per
//! family, written for clarity and never for speed. Every kernel test compares the GPU
//! against these, and the references' backward passes are checked against finite
//! differences.

pub mod attention;
pub mod beam;
pub mod cross_entropy;
pub mod elementwise;
pub mod embedding;
pub mod gru_cell;
pub mod lstm_cell;
pub mod matmul;
pub mod optim;
pub mod pointwise;
pub mod rnn_cell;
pub mod sampling;
pub mod sequence;
