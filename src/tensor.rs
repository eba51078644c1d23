//! A tensor: a GPU buffer with a shape and an element type.
//!
//! Row-major and contiguous, outermost dimension first (`[B, T, H]`). Cloning a tensor
//! clones the handle, not the data; the buffer goes back to the context's pool when the
//! last handle drops.

use std::sync::Arc;

use crate::gpu::{self, BufferKind, Context, PooledBuffer};
use crate::{Error, Result};

/// Element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit float: activations, weights, gradients.
    F32,
    /// 32-bit unsigned integer: token ids, lengths.
    U32,
}

impl DType {
    /// Bytes per element.
    pub fn size_in_bytes(self) -> usize {
        4
    }
}

/// A Rust type that can live in a tensor.
pub trait Element: bytemuck::Pod {
    /// The matching [`DType`].
    const DTYPE: DType;
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
}

impl Element for u32 {
    const DTYPE: DType = DType::U32;
}

/// A GPU buffer with a shape and a dtype.
#[derive(Clone)]
pub struct Tensor {
    ctx: Context,
    storage: Arc<PooledBuffer>,
    shape: Vec<usize>,
    dtype: DType,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tensor")
            .field("shape", &self.shape)
            .field("dtype", &self.dtype)
            .finish_non_exhaustive()
    }
}

/// Number of elements of `shape`, or an error if it overflows.
pub(crate) fn element_count(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &dim| acc.checked_mul(dim))
        .ok_or_else(|| Error::invalid(format!("shape {shape:?} has more elements than fit in usize")))
}

impl Tensor {
    fn allocate(ctx: &Context, shape: &[usize], dtype: DType, label: &str) -> Result<Tensor> {
        let count = element_count(shape)?;
        let bytes = (count as u64)
            .checked_mul(dtype.size_in_bytes() as u64)
            .ok_or_else(|| Error::invalid(format!("shape {shape:?} is too large")))?;
        let storage = ctx.take_buffer(BufferKind::Storage, bytes, label)?;
        Ok(Tensor {
            ctx: ctx.clone(),
            storage: Arc::new(storage),
            shape: shape.to_vec(),
            dtype,
        })
    }

    /// Uploads `data` as a tensor of `shape`; `data.len()` must equal the shape's element count.
    pub fn from_slice<T: Element>(ctx: &Context, data: &[T], shape: &[usize]) -> Result<Tensor> {
        let count = element_count(shape)?;
        if data.len() != count {
            return Err(Error::shape(
                "from_slice data",
                format!("{count} elements for shape {shape:?}"),
                &[data.len()],
            ));
        }
        let tensor = Self::allocate(ctx, shape, T::DTYPE, "tensor")?;
        if !data.is_empty() {
            ctx.queue().write_buffer(tensor.buffer(), 0, bytemuck::cast_slice(data));
        }
        Ok(tensor)
    }

    /// A tensor whose contents are unspecified (a pooled buffer's old data): for outputs a
    /// kernel overwrites entirely.
    pub(crate) fn empty(ctx: &Context, shape: &[usize], dtype: DType) -> Result<Tensor> {
        Self::allocate(ctx, shape, dtype, "tensor")
    }

    /// A tensor of zeros.
    pub fn zeros(ctx: &Context, shape: &[usize], dtype: DType) -> Result<Tensor> {
        match dtype {
            DType::F32 => Self::full(ctx, shape, 0.0f32),
            DType::U32 => Self::full(ctx, shape, 0u32),
        }
    }

    /// A tensor with every element equal to `value` (tests pre-fill outputs with NaN).
    pub fn full<T: Element>(ctx: &Context, shape: &[usize], value: T) -> Result<Tensor> {
        let count = element_count(shape)?;
        let tensor = Self::allocate(ctx, shape, T::DTYPE, "tensor")?;
        // In pieces of at most 4 MiB from one small host vector: filling a large tensor
        // must not need its size in host memory (twice, with wgpu's staging copy).
        let piece = count.min((4 << 20) / std::mem::size_of::<T>());
        let data = vec![value; piece];
        let mut offset = 0;
        while offset < count {
            let len = piece.min(count - offset);
            let at = (offset * std::mem::size_of::<T>()) as u64;
            ctx.queue()
                .write_buffer(tensor.buffer(), at, bytemuck::cast_slice(&data[..len]));
            offset += len;
        }
        Ok(tensor)
    }

    /// Overwrites the tensor's data with `data` (same length and dtype). The write
    /// happens at the next submission, before that submission's commands.
    pub fn write<T: Element>(&self, data: &[T]) -> Result<()> {
        self.check_dtype("write target", T::DTYPE)?;
        if data.len() != self.len() {
            return Err(Error::shape(
                "write data",
                format!("{} elements for shape {:?}", self.len(), self.shape),
                &[data.len()],
            ));
        }
        if !data.is_empty() {
            self.ctx
                .queue()
                .write_buffer(self.buffer(), 0, bytemuck::cast_slice(data));
        }
        Ok(())
    }

    /// Copies the tensor back to the CPU, blocking until the GPU has finished. For tests,
    /// examples and tools; a host's frame loop uses [`Tensor::read`]. Not on wasm32, where
    /// nothing may block: [`Tensor::read`] is the readback there.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        self.check_dtype("to_vec source", T::DTYPE)?;
        if self.is_empty() {
            return Ok(Vec::new());
        }
        let bytes = gpu::read_buffer_blocking(&self.ctx, self.buffer(), self.size_in_bytes())?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// Copies the tensor back to the CPU asynchronously. On native the future completes
    /// once the device is polled (`device.poll`), e.g. by the host's frame loop; in a
    /// browser the browser completes it.
    pub async fn read<T: Element>(&self) -> Result<Vec<T>> {
        self.check_dtype("read source", T::DTYPE)?;
        if self.is_empty() {
            return Ok(Vec::new());
        }
        let bytes = gpu::read_buffer(&self.ctx, self.buffer(), self.size_in_bytes()).await?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// Reads the tensor back (blocking, like [`Tensor::to_vec`]) and checks that every
    /// element is finite: `Err(NonFiniteValue)` names `name`, the index of the first NaN
    /// or Inf and its value. A u32 tensor is always finite. Kernels propagate NaN and Inf
    /// as PyTorch does; this is the explicit check, e.g. for weights loaded from a file.
    /// Not on wasm32 (it blocks).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn check_finite(&self, name: &str) -> Result<()> {
        if self.dtype != DType::F32 {
            return Ok(());
        }
        let values = self.to_vec::<f32>()?;
        match values.iter().position(|v| !v.is_finite()) {
            None => Ok(()),
            Some(flat) => {
                // Row-major: peel the innermost dimension off first.
                let mut index = vec![0; self.shape.len()];
                let mut rest = flat;
                for (slot, &dim) in index.iter_mut().zip(&self.shape).rev() {
                    *slot = rest % dim;
                    rest /= dim;
                }
                Err(Error::NonFiniteValue {
                    tensor: name.to_string(),
                    index,
                    value: values[flat],
                })
            }
        }
    }

    /// The shape, outermost first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True when the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of data (the buffer may be larger: pool sizes are rounded up).
    pub fn size_in_bytes(&self) -> u64 {
        (self.len() * self.dtype.size_in_bytes()) as u64
    }

    /// The GPU buffer, for binding in a host's pipelines. Data starts at offset 0,
    /// row-major; bytes past [`Tensor::size_in_bytes`] are padding.
    pub fn buffer(&self) -> &wgpu::Buffer {
        self.storage.buffer()
    }

    /// The context the tensor lives on.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// True when both tensors are views of the same buffer.
    pub fn shares_buffer_with(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.storage, &other.storage)
    }

    /// A handle to the same data with another shape of the same element count.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if element_count(shape)? != self.len() {
            return Err(Error::shape(
                "reshape target",
                format!("{} elements (from {:?})", self.len(), self.shape),
                shape,
            ));
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            ..self.clone()
        })
    }

    /// `Err(ShapeMismatch)` naming `name` unless the shape is exactly `expected`.
    pub fn check_shape(&self, name: &str, expected: &[usize]) -> Result<()> {
        if self.shape != expected {
            return Err(Error::shape(name, format!("{expected:?}"), &self.shape));
        }
        Ok(())
    }

    /// `Err(DType)` naming `name` unless the dtype is `expected`.
    pub fn check_dtype(&self, name: &str, expected: DType) -> Result<()> {
        if self.dtype != expected {
            return Err(Error::DType {
                tensor: name.to_string(),
                expected,
                found: self.dtype,
            });
        }
        Ok(())
    }
}
