//! Buffer pool and uniform arena.
//!
//! A training step with the same shapes as the last one must not create GPU buffers, so
//! tensors take their buffers from a pool keyed by (kind, size) and give them back when
//! the last handle drops.
//!
//! Why reuse can wait for a submission: `Queue::write_buffer` is staged and runs at the
//! next `submit`, *before* that submission's command buffers. If a buffer freed while an
//! unsubmitted encoder still reads it were handed out again and written by an upload, the
//! encoder would read the new data. So a buffer dropped while a tsumugi `Encoder` is open
//! is only *retired*, and becomes reusable when no encoder is open any more (all were
//! submitted or dropped). A buffer dropped while none is open is free at once: whoever
//! encodes into a raw `wgpu::CommandEncoder` keeps the tensors it uses alive until it is
//! submitted. The uniform arena is reset at the same points.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use crate::{Error, Result};

/// What a pooled buffer is for; buffers of different kinds never mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum BufferKind {
    /// Tensor storage: STORAGE | COPY_SRC | COPY_DST.
    Storage,
    /// Readback staging: MAP_READ | COPY_DST.
    Readback,
}

impl BufferKind {
    fn usage(self) -> wgpu::BufferUsages {
        match self {
            BufferKind::Storage => {
                wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST
            }
            BufferKind::Readback => wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        }
    }
}

/// Counters of the pool, for tests ("no buffer created after step one") and memory reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// GPU buffers created by the pool since the context was made.
    pub buffers_created: u64,
    /// Bytes of those buffers.
    pub bytes_created: u64,
    /// Buffers held by tensors (or readbacks) right now.
    pub buffers_in_use: u64,
    /// Bytes held by tensors right now.
    pub bytes_in_use: u64,
    /// The largest `bytes_in_use` seen.
    pub peak_bytes_in_use: u64,
    /// Uniform arena chunks created (each [`UNIFORM_CHUNK_BYTES`] bytes).
    pub uniform_chunks_created: u64,
}

/// Size of one uniform arena chunk.
pub const UNIFORM_CHUNK_BYTES: u64 = 64 * 1024;

/// Every pooled size is a multiple of this: keeps `array<vec4<f32>>` views whole and
/// lets nearby sizes share buffers.
const SIZE_GRANULE: u64 = 256;

/// Everything that recycling touches, behind one lock, so that "no encoder is open" and
/// "recycle" happen as one step: another thread cannot open an encoder and write
/// parameters in between.
struct PoolState {
    /// Encoders created by the context and neither submitted nor dropped, plus the host
    /// recordings in `host_recordings`.
    open_encoders: usize,
    /// Graphs recording into a host's encoder since the last `recycle_after_submit`: each
    /// counts as an open encoder until the host says it has submitted.
    host_recordings: usize,
    uniforms: UniformArena,
    free: HashMap<(BufferKind, u64), Vec<wgpu::Buffer>>,
    retired: Vec<(BufferKind, u64, wgpu::Buffer)>,
    stats: PoolStats,
}

impl PoolState {
    fn recycle(&mut self) {
        for (kind, size, buffer) in std::mem::take(&mut self.retired) {
            self.free.entry((kind, size)).or_default().push(buffer);
        }
        self.uniforms.recycle();
    }
}

/// The pool; cheap to clone (shared state).
#[derive(Clone)]
pub(crate) struct BufferPool {
    state: Arc<Mutex<PoolState>>,
}

/// A buffer on loan from the pool; goes back (retired) on drop.
pub(crate) struct PooledBuffer {
    buffer: wgpu::Buffer,
    kind: BufferKind,
    size: u64,
    pool: Weak<Mutex<PoolState>>,
    /// Set when every GPU use of the buffer is known to have completed (a readback after
    /// its map): then it goes straight back to the free list instead of being retired.
    completed: bool,
    /// Set when the buffer's state is unknown (a readback whose map failed or is still
    /// pending): it is not pooled again, only released.
    discarded: bool,
}

impl PooledBuffer {
    pub(crate) fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }

    pub(crate) fn mark_completed(&mut self) {
        self.completed = true;
        self.discarded = false;
    }

    pub(crate) fn mark_discarded(&mut self) {
        self.discarded = true;
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let Some(state) = self.pool.upgrade() {
            let mut state = lock(&state);
            state.stats.buffers_in_use -= 1;
            state.stats.bytes_in_use -= self.size;
            let buffer = self.buffer.clone();
            if self.discarded {
                return;
            }
            if self.completed || state.open_encoders == 0 {
                state.free.entry((self.kind, self.size)).or_default().push(buffer);
            } else {
                state.retired.push((self.kind, self.size, buffer));
            }
        }
    }
}

/// A poisoned lock only means another thread panicked while holding it; the pool's
/// state is a set of buffers and counters that stay consistent, so carry on.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl BufferPool {
    pub(crate) fn new(limits: &wgpu::Limits) -> Self {
        BufferPool {
            state: Arc::new(Mutex::new(PoolState {
                open_encoders: 0,
                host_recordings: 0,
                uniforms: UniformArena::new(limits),
                free: HashMap::new(),
                retired: Vec::new(),
                stats: PoolStats::default(),
            })),
        }
    }

    /// Takes a buffer of at least `bytes` bytes (rounded up to the granule) from the pool,
    /// or creates one. `label` names the tensor in errors.
    pub(crate) fn take(
        &self,
        device: &wgpu::Device,
        limits: &wgpu::Limits,
        kind: BufferKind,
        bytes: u64,
        label: &str,
    ) -> Result<PooledBuffer> {
        let size = bytes.max(1).div_ceil(SIZE_GRANULE) * SIZE_GRANULE;
        if size > limits.max_buffer_size {
            return Err(Error::DeviceLimit {
                tensor: label.to_string(),
                limit: "max_buffer_size",
                needed: bytes,
                allowed: limits.max_buffer_size,
            });
        }
        let reused = {
            let mut state = lock(&self.state);
            let reused = state.free.get_mut(&(kind, size)).and_then(Vec::pop);
            if reused.is_some() {
                Self::count_loan(&mut state, size);
            }
            reused
        };
        let buffer = match reused {
            Some(buffer) => buffer,
            None => {
                let scope = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
                let buffer = device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
                    size,
                    usage: kind.usage(),
                    mapped_at_creation: false,
                });
                if let Some(Some(_)) = super::poll_ready(scope.pop()) {
                    return Err(Error::OutOfMemory {
                        tensor: label.to_string(),
                        bytes: size,
                    });
                }
                let mut state = lock(&self.state);
                state.stats.buffers_created += 1;
                state.stats.bytes_created += size;
                Self::count_loan(&mut state, size);
                buffer
            }
        };
        Ok(PooledBuffer {
            buffer,
            kind,
            size,
            pool: Arc::downgrade(&self.state),
            completed: false,
            discarded: false,
        })
    }

    fn count_loan(state: &mut PoolState, size: u64) {
        state.stats.buffers_in_use += 1;
        state.stats.bytes_in_use += size;
        state.stats.peak_bytes_in_use = state.stats.peak_bytes_in_use.max(state.stats.bytes_in_use);
    }

    pub(crate) fn open_encoder(&self) {
        lock(&self.state).open_encoders += 1;
    }

    /// Closes an encoder (submitted or dropped); the last one to close recycles retired
    /// buffers and the uniform arena under the same lock.
    pub(crate) fn close_encoder(&self) {
        let mut state = lock(&self.state);
        state.open_encoders -= 1;
        if state.open_encoders == 0 {
            state.recycle();
        }
    }

    /// Counts a recording into a host's encoder as an open encoder, until [`recycle`]:
    /// buffers released meanwhile are retired, not reused, as the host has not submitted.
    pub(crate) fn open_host_recording(&self) {
        let mut state = lock(&self.state);
        state.open_encoders += 1;
        state.host_recordings += 1;
    }

    /// Makes every retired buffer and the uniform arena reusable, and closes the host
    /// recordings. Call only when every command that used them has been submitted.
    pub(crate) fn recycle(&self) {
        let mut state = lock(&self.state);
        state.open_encoders -= state.host_recordings;
        state.host_recordings = 0;
        state.recycle();
    }

    /// Writes a dispatch's parameters into the uniform arena.
    pub(crate) fn push_uniforms(&self, device: &wgpu::Device, queue: &wgpu::Queue, bytes: &[u8]) -> UniformSlot {
        let mut state = lock(&self.state);
        let (slot, new_chunk) = state.uniforms.push(device, queue, bytes);
        if new_chunk {
            state.stats.uniform_chunks_created += 1;
        }
        slot
    }

    pub(crate) fn stats(&self) -> PoolStats {
        lock(&self.state).stats
    }

    /// Drops every free buffer (retired ones stay until recycled), releasing their memory.
    pub(crate) fn trim(&self) {
        lock(&self.state).free.clear();
    }
}

/// Per-dispatch parameters live in 64 KiB uniform chunks and are bound with dynamic
/// offsets, so encoding a dispatch allocates no buffer once the chunks exist.
struct UniformArena {
    chunks: Vec<wgpu::Buffer>,
    /// Chunk being filled and the next free byte in it.
    chunk: usize,
    offset: u64,
    alignment: u64,
}

/// Where a dispatch's parameters were written.
pub(crate) struct UniformSlot {
    pub(crate) buffer: wgpu::Buffer,
    pub(crate) offset: u32,
}

impl UniformArena {
    fn new(limits: &wgpu::Limits) -> Self {
        UniformArena {
            chunks: Vec::new(),
            chunk: 0,
            offset: 0,
            alignment: u64::from(limits.min_uniform_buffer_offset_alignment.max(16)),
        }
    }

    /// Writes `bytes` (at most a chunk) and returns where, and whether a chunk was created.
    fn push(&mut self, device: &wgpu::Device, queue: &wgpu::Queue, bytes: &[u8]) -> (UniformSlot, bool) {
        let len = bytes.len() as u64;
        debug_assert!(len <= UNIFORM_CHUNK_BYTES);
        if self.chunk < self.chunks.len() && self.offset + len > UNIFORM_CHUNK_BYTES {
            self.chunk += 1;
            self.offset = 0;
        }
        let new_chunk = self.chunk == self.chunks.len();
        if new_chunk {
            // Created mapped (zero-filled) and unmapped at once, so wgpu-core counts the
            // whole chunk as initialised from the start. Otherwise the first submission
            // that binds it (a dynamic-offset binding needs the *whole* buffer
            // initialised) zero-fills every range not yet written, and wgpu-core picks
            // those ranges before it takes the queue's pending writes: parameters another
            // thread writes into the chunk in that window are copied first and then
            // cleared, and that thread's dispatch runs with all-zero parameters
            // (`examples/wgpu_init_race.rs` reproduces this with plain wgpu).
            let chunk = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("tsumugi uniform arena"),
                size: UNIFORM_CHUNK_BYTES,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: true,
            });
            chunk.unmap();
            self.chunks.push(chunk);
        }
        let buffer = self.chunks[self.chunk].clone();
        let offset = self.offset;
        queue.write_buffer(&buffer, offset, bytes);
        self.offset = (offset + len).div_ceil(self.alignment) * self.alignment;
        let slot = UniformSlot {
            buffer,
            // A chunk is 64 KiB, so every offset fits u32.
            offset: offset as u32,
        };
        (slot, new_chunk)
    }

    /// Starts again at the first chunk. Same precondition as [`BufferPool::recycle`].
    fn recycle(&mut self) {
        self.chunk = 0;
        self.offset = 0;
    }
}
