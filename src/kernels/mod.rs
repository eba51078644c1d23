//! Kernel launchers, one module per family of `shaders/`.
//!
//! Each launcher checks shapes (a typed error naming the tensor and both shapes), fetches
//! the cached pipeline, binds and dispatches into the caller's encoder. None submits or
//! waits.

pub mod matmul;
