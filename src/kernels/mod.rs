//! Kernel launchers, one module per family of `shaders/`.
//!
//! Each launcher checks shapes (a typed error naming the tensor and both shapes), fetches
//! the cached pipeline, binds and dispatches into the caller's encoder. None submits or
//! waits.

pub mod attention;
pub mod beam;
pub mod cross_entropy;
pub mod elementwise;
pub mod embedding;
pub mod gru_cell;
pub mod lstm_cell;
pub mod matmul;
pub mod optim;
/// The tape's arithmetic, in the elementwise family (also `kernels::elementwise::pointwise`).
pub use elementwise::pointwise;
pub mod recurrent;
pub mod rnn_cell;
pub mod sampling;
pub mod sequence;

use crate::gpu::{Context, Dispatch, KernelSpec, Recorder};
use crate::{Error, Result, Tensor};

/// Per-row sequence lengths `[B]` on the GPU, validated on the way up: every length is
/// in `1..=steps`, as `pack_padded_sequence` requires. A recurrent kernel treats step
/// `t >= len[b]` of row b as padding: the state is carried, the output is zero.
#[derive(Clone, Debug)]
pub struct Lengths {
    tensor: Tensor,
    host: Vec<u32>,
    steps: usize,
}

impl Lengths {
    /// Uploads `lengths` (one per batch row) after checking `0 < len <= steps`.
    pub fn new(ctx: &Context, lengths: &[u32], steps: usize) -> Result<Lengths> {
        if lengths.is_empty() {
            return Err(Error::invalid("lengths: empty batch"));
        }
        if let Some((row, &len)) = lengths
            .iter()
            .enumerate()
            .find(|&(_, &len)| len == 0 || len as usize > steps)
        {
            return Err(Error::invalid(format!(
                "lengths[{row}] = {len} is outside 1..={steps} (the sequence has {steps} steps)"
            )));
        }
        Ok(Lengths {
            tensor: Tensor::from_slice(ctx, lengths, &[lengths.len()])?,
            host: lengths.to_vec(),
            steps,
        })
    }

    /// The lengths as uploaded.
    pub fn as_slice(&self) -> &[u32] {
        &self.host
    }

    /// Each row's length `times` times in a row (`repeat_interleave`): the lengths of a
    /// batch whose rows were each repeated, as beam search repeats each source.
    pub fn repeat_each(&self, times: usize) -> Result<Lengths> {
        let repeated: Vec<u32> = self
            .host
            .iter()
            .flat_map(|&len| std::iter::repeat_n(len, times))
            .collect();
        Lengths::new(self.tensor.context(), &repeated, self.steps)
    }

    /// The `[B]` u32 tensor.
    pub fn tensor(&self) -> &Tensor {
        &self.tensor
    }

    /// Number of rows.
    pub fn batch(&self) -> usize {
        self.tensor.len()
    }

    /// The sequence length the lengths were checked against.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Checks the lengths belong to a `[batch, steps, ..]` sequence.
    pub(crate) fn check(&self, name: &str, batch: usize, steps: usize) -> Result<()> {
        if self.batch() != batch || self.steps != steps {
            return Err(Error::shape(
                name,
                format!("{batch} lengths checked against {steps} steps"),
                &[self.batch(), self.steps],
            ));
        }
        Ok(())
    }
}

/// The error for `name`, a tensor of another context than the launcher's `ctx`: it names a
/// tensor of `ctx` among `all` too, where there is one, and both contexts' ids.
pub(crate) fn other_context_error<'a>(
    ctx: &Context,
    name: &str,
    tensor: &Tensor,
    all: impl Iterator<Item = &'a (&'a str, &'a Tensor)>,
) -> Error {
    let (theirs, ours) = (tensor.context().id(), ctx.id());
    let message = match all
        .filter(|(_, t)| t.context().same_context(ctx))
        .map(|(n, _)| *n)
        .next()
    {
        Some(other) => format!(
            "{name} belongs to context #{theirs} but {other} to context #{ours}, the launcher's; \
             tensors of two contexts cannot be used together, even on one device (clone one Context instead)"
        ),
        None => format!(
            "{name} belongs to context #{theirs}, not to context #{ours}, the launcher's; \
             tensors of two contexts cannot be used together, even on one device (clone one Context instead)"
        ),
    };
    Error::invalid(message)
}

/// Checks every launcher makes before encoding: each tensor lives on `ctx`'s device,
/// its element indices fit the shaders' u32 arithmetic, and no output shares a buffer
/// with another operand (wgpu forbids a writable binding aliasing another binding, and
/// the result would depend on the order of the invocations). Shapes and dtypes are
/// the launcher's own checks.
pub(crate) fn check_tensors(ctx: &Context, inputs: &[(&str, &Tensor)], outputs: &[(&str, &Tensor)]) -> Result<()> {
    for (name, tensor) in inputs.iter().chain(outputs) {
        if !tensor.context().same_context(ctx) {
            return Err(other_context_error(ctx, name, tensor, inputs.iter().chain(outputs)));
        }
        if tensor.len() > u32::MAX as usize / 2 {
            return Err(Error::DeviceLimit {
                tensor: name.to_string(),
                limit: "u32 element indices",
                needed: tensor.len() as u64,
                allowed: u64::from(u32::MAX / 2),
            });
        }
    }
    for (i, (out_name, out)) in outputs.iter().enumerate() {
        let others = inputs.iter().chain(outputs.iter().skip(i + 1));
        for (other_name, other) in others {
            if out.shares_buffer_with(other) {
                return Err(Error::invalid(format!(
                    "{out_name} shares its buffer with {other_name}"
                )));
            }
        }
    }
    Ok(())
}

/// Workgroups of a dispatch with one workgroup per row: x up to the device's
/// per-dimension limit, the rest in y (the shaders' `row_of_workgroup`). Extra
/// workgroups in the last y line return at once.
pub(crate) fn row_grid(ctx: &Context, rows: usize) -> [u32; 3] {
    let max = ctx.limits().max_compute_workgroups_per_dimension.max(1) as usize;
    let x = rows.clamp(1, max);
    [x as u32, rows.div_ceil(x) as u32, 1]
}

/// Workgroups of an element-wise dispatch over `len` elements in workgroups of `wg`
/// invocations, spilling into y like [`row_grid`] (the shaders' `flat_index`).
pub(crate) fn element_grid(ctx: &Context, len: usize, wg: u32) -> [u32; 3] {
    row_grid(ctx, len.div_ceil(wg as usize))
}

/// Encodes one element-wise dispatch of `kernel` over `units` invocations in workgroups of
/// `wg` (its `WG` override): what the element-wise families' launchers share after their
/// checks.
pub(crate) fn encode_elementwise<P: bytemuck::Pod>(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    kernel: &KernelSpec,
    buffers: &[(u32, &wgpu::Buffer, &str)],
    params: &P,
    units: usize,
    wg: u32,
) -> Result<()> {
    ctx.encode_dispatch(
        encoder,
        Dispatch {
            kernel,
            overrides: &[("WG", wg)],
            buffers,
            params,
            workgroups: element_grid(ctx, units, wg),
        },
    )
}

/// Mesa's software rasterisers (lavapipe, llvmpipe: the CPU adapters) silently stop
/// the loops of an invocation once it has run about 65535 loop iterations in total,
/// over all its loops together (gallivm's `LP_MAX_TGSI_LOOP_ITERATIONS` budget): the
/// rest of the kernel's work is skipped without an error. Found by top_k on lavapipe
/// (Mesa 22.3), which stopped writing after ~501 of 1000 picks at 8 invocations per
/// row. Launchers whose invocations loop over a dimension pass an upper bound of their
/// iterations here; past the budget on a CPU adapter they return `Error::DeviceLimit`
/// instead of a wrong answer.
pub(crate) fn check_loop_budget(ctx: &Context, what: &str, iterations: u64) -> Result<()> {
    match loop_budget(ctx) {
        Some(allowed) if iterations > allowed => Err(Error::DeviceLimit {
            tensor: what.to_string(),
            limit: "loop iterations per invocation on a CPU adapter (Mesa gallivm)",
            needed: iterations,
            allowed,
        }),
        _ => Ok(()),
    }
}

/// The loop budget of [`check_loop_budget`] on CPU adapters, None elsewhere. Launchers
/// that can split their work (matmul over K) size their dispatches with it. It is three
/// quarters of gallivm's 65535: a loop also spends budget on the test that ends it, and
/// a matmul gradient summed over 2729 batches of 23 rows (65496 counted iterations) was
/// still cut short, so estimates get a wide margin rather than an exact count.
pub(crate) fn loop_budget(ctx: &Context) -> Option<u64> {
    const CPU_LOOP_BUDGET: u64 = 49_152;
    (ctx.adapter().device_type == wgpu::DeviceType::Cpu).then_some(CPU_LOOP_BUDGET)
}
