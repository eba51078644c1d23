//! Reading GPU buffers back to the CPU: a copy into a pooled staging buffer, then its
//! map, awaited (`read_buffer`) or waited for by polling the device (`read_buffer_blocking`,
//! native only), and the unbounded device wait both blocking paths share.

#[cfg(not(target_arch = "wasm32"))]
use super::poll_ready;
use super::pool::{BufferKind, PooledBuffer};
use super::Context;
use crate::{Error, Result};

/// Reads `bytes` bytes from the start of `source` back to the CPU.
///
/// Encodes and submits a copy into a pooled staging buffer, then waits for the map
/// through a futures-intrusive channel. On native, the future completes when somebody
/// polls the device (a host's frame loop, or [`read_buffer_blocking`]); on the web the
/// browser drives it.
pub(crate) async fn read_buffer(ctx: &Context, source: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
    let (staging, receiver) = start_readback(ctx, source, bytes)?;
    let outcome = receiver.receive().await;
    finish_readback(staging, bytes, outcome)
}

/// Blocks until everything submitted so far has finished.
///
/// One unbounded wait, not a loop of short ones: with a timeout, wgpu-core 30 can see a
/// submission another thread has just numbered but not yet queued, take the queue for
/// empty, and fail an internal assertion (seen here about once in a dozen test runs). The
/// cost is on wgpu's GL backend, which holds its context lock for the whole wait: another
/// thread needing the context panics after 6 s, so very long waits on GL from several
/// threads at once are best avoided.
#[cfg(not(target_arch = "wasm32"))]
pub(super) fn wait_for_gpu(ctx: &Context, what: &str) -> Result<()> {
    ctx.inner
        .device
        .poll(wgpu::PollType::wait_indefinitely())
        .map(|_| ())
        .map_err(|err| Error::Gpu {
            message: format!("{what}: {err}"),
        })
}

/// [`read_buffer`], blocking until the GPU has finished.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn read_buffer_blocking(ctx: &Context, source: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
    let (staging, receiver) = start_readback(ctx, source, bytes)?;
    // Another thread's poll may be the one that runs our map callback, a moment after our
    // own wait returns, so wait until the channel has the answer.
    let outcome = loop {
        wait_for_gpu(ctx, "waiting for a readback")?;
        ctx.check_device()?;
        if let Some(outcome) = poll_ready(receiver.receive()) {
            break outcome;
        }
        std::thread::yield_now();
    };
    finish_readback(staging, bytes, outcome)
}

type MapOutcome = std::result::Result<(), wgpu::BufferAsyncError>;
type MapReceiver = futures_intrusive::channel::shared::OneshotReceiver<MapOutcome>;

fn start_readback(ctx: &Context, source: &wgpu::Buffer, bytes: u64) -> Result<(PooledBuffer, MapReceiver)> {
    // Copies and maps work in multiples of 4 bytes.
    let padded = bytes.max(4).div_ceil(4) * 4;
    let mut staging = ctx.take_buffer(BufferKind::Readback, padded, "readback staging")?;
    // Until its map has completed and it is unmapped, a staging buffer dropped (say, with
    // an abandoned future) must not go back to the pool.
    staging.mark_discarded();
    // A plain encoder, submitted at once: the copy must not wait for (or hold back) the
    // recycling of the caller's open encoders.
    let mut encoder = ctx.device().create_command_encoder(&wgpu::CommandEncoderDescriptor {
        label: Some("tsumugi readback"),
    });
    encoder.copy_buffer_to_buffer(source, 0, staging.buffer(), 0, padded);
    ctx.inner.queue.submit([encoder.finish()]);
    let (sender, receiver) = futures_intrusive::channel::shared::oneshot_channel();
    staging
        .buffer()
        .map_async(wgpu::MapMode::Read, 0..padded, move |outcome| {
            // The receiver may be gone if the caller dropped the future; nothing to do then.
            let _ = sender.send(outcome);
        });
    Ok((staging, receiver))
}

fn finish_readback(mut staging: PooledBuffer, bytes: u64, outcome: Option<MapOutcome>) -> Result<Vec<u8>> {
    let padded = bytes.max(4).div_ceil(4) * 4;
    let data = match outcome {
        Some(Ok(())) => {
            let data = staging
                .buffer()
                .get_mapped_range(0..padded)
                .map(|view| view[..bytes as usize].to_vec())
                .map_err(|err| Error::Gpu {
                    message: format!("reading a mapped buffer: {err}"),
                });
            staging.buffer().unmap();
            // The copy and the map are done, so the staging buffer can go straight back.
            staging.mark_completed();
            data
        }
        // The map failed or never answered: the buffer's state is unknown, so it must
        // not be pooled again.
        Some(Err(err)) => {
            staging.mark_discarded();
            Err(Error::Gpu {
                message: format!("mapping a readback buffer: {err}"),
            })
        }
        None => {
            staging.mark_discarded();
            Err(Error::Gpu {
                message: "a readback was dropped before its buffer was mapped (device lost?)".into(),
            })
        }
    };
    drop(staging);
    data
}
