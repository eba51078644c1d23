//! CPU references: the same math as each kernel family in plain f64 loops, one module per
//! family, written for clarity and never for speed. Every kernel test compares the GPU
//! against these, and the references' backward passes are checked against finite
//! differences.

pub mod elementwise;
pub mod embedding;
pub mod matmul;
