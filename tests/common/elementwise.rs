//! The elementwise tests' shape table and small helpers (upload, run one encoder, read
//! back, the reference of an accumulated gradient), shared by `tests/elementwise.rs` and
//! `tests/dropout.rs`.

use tsumugi::{Context, Tensor};

use super::{ctx, nan_tensor};

/// 1, primes, the 256-invocation workgroup -1/0/+1, a multi-dimensional shape and one
/// that needs several hundred workgroups.
pub const SHAPES: &[&[usize]] = &[
    &[1],
    &[7],
    &[255],
    &[256],
    &[257],
    &[3, 5, 17],
    &[2, 1, 1031],
    &[64, 1237],
];

pub fn name(shape: &[usize]) -> String {
    shape.iter().map(usize::to_string).collect::<Vec<_>>().join("x")
}

pub fn upload(data: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(ctx(), data, shape).expect("upload")
}

/// Runs one encoder holding whatever `encode` puts in it.
pub fn run(encode: impl FnOnce(&Context, &mut tsumugi::Encoder)) {
    let ctx = ctx();
    let mut encoder = ctx.create_encoder();
    encode(ctx, &mut encoder);
    ctx.submit(encoder);
}

pub fn read(tensor: &Tensor) -> Vec<f32> {
    tensor.to_vec().expect("read back")
}

/// `want + start`, the reference of an accumulated gradient.
pub fn plus(want: &[f64], start: &[f32]) -> Vec<f64> {
    want.iter().zip(start).map(|(w, s)| w + f64::from(*s)).collect()
}

/// A gradient output: NaN-filled when overwriting (so an unwritten element fails), or
/// holding `start` when accumulating.
pub fn grad_tensor(shape: &[usize], start: &[f32], accumulate: bool) -> Tensor {
    if accumulate {
        upload(start, shape)
    } else {
        nan_tensor(shape)
    }
}
