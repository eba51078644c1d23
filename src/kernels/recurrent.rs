//! What the LSTM, GRU and RNN step launchers share: the sizes of a layer-direction, the
//! step kernels' parameter block (the same `Params` in each cell shader), the workgroup
//! shapes, and the loops that encode a whole sequence forward and backward. A per-step
//! dispatch runs the cell's subgroup kernel where the context runs subgroup kernels,
//! H % 4 == 0 and B >= 8 (see `SubgroupStep`), else the portable step kernel.

use crate::gpu::{Context, Dispatch, KernelSpec, Recorder};
use crate::{DType, Error, Result, Tensor};

use super::matmul::{matmul_strided, MatrixView, StridedMatmul, Strides};
use super::{check_loop_budget, check_tensors, loop_budget, Lengths};

/// The sizes of one recurrent layer-direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecurrentDims {
    /// B
    pub batch: usize,
    /// T
    pub steps: usize,
    /// H
    pub hidden: usize,
}

impl RecurrentDims {
    /// Reads B, T, H from a `[B, T, width * H]` tensor.
    pub(crate) fn from_tensor(name: &str, tensor: &Tensor, width: usize, letters: &str) -> Result<RecurrentDims> {
        match *tensor.shape() {
            [batch, steps, columns] if batch > 0 && steps > 0 && columns > 0 && columns % width == 0 => {
                Ok(RecurrentDims {
                    batch,
                    steps,
                    hidden: columns / width,
                })
            }
            _ => Err(Error::shape(
                name,
                format!("[B, T, {letters}] with B, T, H >= 1"),
                tensor.shape(),
            )),
        }
    }

    /// `[B, T+1, H]`: the states, slot 0 = initial.
    pub(crate) fn states(&self) -> [usize; 3] {
        [self.batch, self.steps + 1, self.hidden]
    }

    /// `[B, T, width * H]`
    pub(crate) fn per_step(&self, width: usize) -> [usize; 3] {
        [self.batch, self.steps, width * self.hidden]
    }

    /// Batch rows per invocation (the shaders' `BATCH_BLOCK`, 1 to 4): as few row
    /// blocks as 4-row blocks give, each as small as that allows, so no invocation
    /// computes clamped duplicate rows where it can be avoided (B = 1: 1 row, not 4 of
    /// which 3 are thrown away; B = 5: 2 blocks of 3, not of 4; B = 9: 3 of 3).
    pub(crate) fn batch_block(&self) -> usize {
        self.batch.div_ceil(self.batch.div_ceil(4).max(1)).clamp(1, 4)
    }

    /// Number of (BATCH_BLOCK x 4) (batch x unit) blocks of one step.
    pub(crate) fn blocks(&self) -> usize {
        self.batch.div_ceil(self.batch_block()) * self.hidden.div_ceil(4)
    }

    pub(crate) fn check_lengths(&self, name: &str, lengths: Option<&Lengths>) -> Result<()> {
        match lengths {
            Some(lengths) => lengths.check(name, self.batch, self.steps),
            None => Ok(()),
        }
    }

    /// An upper bound of the loop iterations one invocation runs for one step, over the
    /// three cells (CPU adapters cut loops short past a budget, see
    /// `check_loop_budget`), counting every loop as not unrolled: the forward's k loop
    /// costs per 4 columns 1 + 16 (scalar W loads, 4 units x 4 gate rows) + BATCH_BLOCK
    /// (the row loop); the GRU backward's 3H rows cost per 4 rows 1 + BATCH_BLOCK (the
    /// row loop) + 4 BATCH_BLOCK (dgh_chunk's loop), the most of the three cells; plus
    /// the pointwise loops (at most 4 rows x 4 units x 4 gates + the row and unit loops).
    fn iterations_per_step(&self, backward: bool) -> u64 {
        let hidden = self.hidden as u64;
        let rows = self.batch_block() as u64;
        if backward {
            (3 * hidden).div_ceil(4) * (1 + 5 * rows) + 120
        } else {
            hidden.div_ceil(4) * (17 + rows) + 120
        }
    }

    /// Loop iterations of the single invocation that runs the most in a whole-sequence
    /// dispatch.
    fn sequence_iterations(&self) -> u64 {
        let blocks_per_invocation = self.blocks().div_ceil(SEQ_WG as usize) as u64;
        self.steps as u64 * (blocks_per_invocation * self.iterations_per_step(false) + 1)
    }

    pub(crate) fn check_step(&self, t: usize) -> Result<()> {
        if t >= self.steps {
            return Err(Error::invalid(format!("step {t} is outside 0..{}", self.steps)));
        }
        Ok(())
    }
}

/// Mirror of `Params` in lstm_cell.wgsl, gru_cell.wgsl and rnn_cell.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct StepParams {
    batch: u32,
    steps: u32,
    hidden: u32,
    t: u32,
    has_lengths: u32,
    has_dy: u32,
    has_next: u32,
    next: u32,
    pointwise: u32,
    _pad: [u32; 3],
}

/// Invocations per workgroup of the step kernels (a multiple of lavapipe's 8 lanes).
const WG_X: u32 = 32;
/// Invocations of the single workgroup that runs a whole sequence: one block each at
/// most [`SEQUENCE_MAX_BLOCKS`] (idle invocations still pay for every step's barrier).
const SEQ_WG: u32 = 32;
/// A whole sequence runs in one workgroup when a step has at most this many
/// (BATCH_BLOCK x 4) (batch x unit) blocks, i.e. when a per-step dispatch would be a
/// single workgroup too: the one dispatch then saves T - 1 dispatches and loses no
/// parallelism. Past that a step's workgroups run side by side (on lavapipe, on both
/// cores) and per-step dispatches win: B = 1, H = 256, T = 32 (64 blocks) ran in about
/// 13 ms as one workgroup against about 10 ms as 32 dispatches of 2 workgroups.
pub const SEQUENCE_MAX_BLOCKS: usize = WG_X as usize;

/// Which step of which pass a dispatch runs.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Step {
    /// Forward step t.
    Forward(usize),
    /// Every forward step in one workgroup.
    Sequence,
    /// Backward step t: pointwise at t, the recurrent product from t+1 if it exists.
    Backward(usize),
    /// After backward step 0: only the recurrent product from step 0, giving dh0.
    InitialState,
}

/// A cell's subgroup kernel for the per-step dispatches: a workgroup owns `SG_ROWS`
/// batch rows and `SG_WG` invocations of `units` hidden units each. They run for
/// H % 4 == 0 (every invocation's 4 units are one vec4) and B >= [`SUBGROUP_MIN_BATCH`].
#[derive(Clone, Copy)]
pub(crate) struct SubgroupStep {
    pub(crate) kernel: &'static KernelSpec,
    /// Hidden units per invocation.
    pub(crate) units: usize,
    /// Loop iterations of one invocation per step, for the CPU loop budget.
    pub(crate) iterations: fn(&RecurrentDims) -> u64,
}

/// The fewest batch rows the subgroup step kernels run for: their tiles have 8 rows or
/// more, and below that the portable kernels (a block of 1 to 4 rows per invocation) were
/// faster on lavapipe (B = 1, H = 256, T = 32: LSTM 7.6-7.9 against 8.7-11 ms forward,
/// GRU 6.4-6.9 against 7.6-8.5 ms).
const SUBGROUP_MIN_BATCH: usize = 8;

/// The subgroup step kernels' tile: (SG_ROWS, SG_WG) for `units` hidden units per
/// invocation. The largest (32 rows, 64 invocations) that gives enough workgroups for
/// every core (a CPU adapter's too), narrowed first (idle lanes cost as much as busy
/// ones), then shortened (rows share their loads of W_hh).
fn subgroup_tile(dims: &RecurrentDims, units: usize) -> (u32, u32) {
    const MIN_WORKGROUPS: usize = 8;
    let lanes = dims.hidden.div_ceil(units);
    let count = |rows: u32, invocations: u32| dims.batch.div_ceil(rows as usize) * lanes.div_ceil(invocations as usize);
    let mut rows = (dims.batch.div_ceil(8) * 8).min(32) as u32;
    let mut invocations = (lanes.next_power_of_two() as u32).clamp(8, 64);
    while invocations > 8 && count(rows, invocations) < MIN_WORKGROUPS {
        invocations /= 2;
    }
    while rows > 8 && count(rows, invocations) < MIN_WORKGROUPS {
        rows = if rows > 16 { 16 } else { 8 };
    }
    (rows, invocations)
}

/// One dispatch of a cell kernel, apart from its buffers.
pub(crate) struct StepDispatch<'a> {
    pub(crate) kernel: &'a KernelSpec,
    /// The subgroup kernel of the same step, where the cell has one; used for the
    /// per-step dispatches when the context runs subgroup kernels.
    pub(crate) subgroup: Option<SubgroupStep>,
    pub(crate) dims: RecurrentDims,
    pub(crate) step: Step,
    pub(crate) lengths: Option<&'a Lengths>,
    /// The backward has an output gradient to add.
    pub(crate) has_dy: bool,
    /// Overrides of this family beyond the shared ones (the RNN's nonlinearity).
    pub(crate) extra_overrides: &'a [(&'static str, u32)],
}

/// One tensor a cell kernel binds: where, under which name, the shape it must have.
pub(crate) struct Operand<'a> {
    /// Its bindings: one, or two for W_hh (read as scalars and as vec4).
    bindings: &'static [u32],
    name: &'static str,
    /// None: an optional operand that is absent (a placeholder is bound).
    tensor: Option<&'a Tensor>,
    shape: Vec<usize>,
    written: bool,
}

impl<'a> Operand<'a> {
    pub(crate) fn read(bindings: &'static [u32], name: &'static str, tensor: &'a Tensor, shape: &[usize]) -> Self {
        Self::optional(bindings, name, Some(tensor), shape)
    }

    pub(crate) fn optional(
        bindings: &'static [u32],
        name: &'static str,
        tensor: Option<&'a Tensor>,
        shape: &[usize],
    ) -> Self {
        Operand {
            bindings,
            name,
            tensor,
            shape: shape.to_vec(),
            written: false,
        }
    }

    pub(crate) fn write(bindings: &'static [u32], name: &'static str, tensor: &'a Tensor, shape: &[usize]) -> Self {
        Operand {
            written: true,
            ..Self::read(bindings, name, tensor, shape)
        }
    }
}

/// Checks a cell dispatch's operands (shapes, f32, same device, no aliasing), the
/// lengths and the step, binds them (the lengths at binding 3, as in every cell shader;
/// each operand at those of its bindings the chosen kernel has) and encodes the dispatch.
pub(crate) fn encode_cell(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    dispatch: StepDispatch<'_>,
    lengths_name: &str,
    operands: &[Operand<'_>],
) -> Result<()> {
    let dims = dispatch.dims;
    let present = || operands.iter().filter_map(|op| op.tensor.map(|tensor| (op, tensor)));
    for (op, tensor) in present() {
        tensor.check_shape(op.name, &op.shape)?;
        tensor.check_dtype(op.name, DType::F32)?;
    }
    dims.check_lengths(lengths_name, dispatch.lengths)?;
    if let Step::Forward(t) | Step::Backward(t) = dispatch.step {
        dims.check_step(t)?;
    }
    let inputs: Vec<(&str, &Tensor)> = present()
        .filter(|(op, _)| !op.written)
        .map(|(op, t)| (op.name, t))
        .collect();
    let outputs: Vec<(&str, &Tensor)> = present()
        .filter(|(op, _)| op.written)
        .map(|(op, t)| (op.name, t))
        .collect();
    check_tensors(ctx, &inputs, &outputs)?;
    let lengths = dispatch
        .lengths
        .map_or(ctx.placeholder(), |lengths| lengths.tensor().buffer());
    let kernel = chosen_kernel(ctx, &dispatch);
    let bound = |binding: &u32| kernel.bindings.iter().any(|(b, _)| b == binding);
    let mut buffers = vec![(3, lengths, lengths_name)];
    for op in operands {
        let buffer = match (op.tensor, op.written) {
            (Some(tensor), _) => tensor.buffer(),
            (None, false) => ctx.placeholder(),
            (None, true) => ctx.scratch_placeholder(),
        };
        buffers.extend(
            op.bindings
                .iter()
                .filter(|binding| bound(binding))
                .map(|&binding| (binding, buffer, op.name)),
        );
    }
    encode_step(ctx, encoder, dispatch, &buffers)
}

/// The subgroup kernel of a per-step dispatch, where the cell has one and the context
/// runs them.
fn subgroup_step(ctx: &Context, dispatch: &StepDispatch<'_>) -> Option<SubgroupStep> {
    match dispatch.step {
        Step::Sequence => None,
        _ => dispatch.subgroup.filter(|_| {
            let dims = &dispatch.dims;
            ctx.subgroup_kernels() && dims.hidden.is_multiple_of(4) && dims.batch >= SUBGROUP_MIN_BATCH
        }),
    }
}

fn chosen_kernel<'a>(ctx: &Context, dispatch: &StepDispatch<'a>) -> &'a KernelSpec {
    subgroup_step(ctx, dispatch).map_or(dispatch.kernel, |sub| sub.kernel)
}

/// Encodes one dispatch of a cell kernel with the shared parameter block.
fn encode_step(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    dispatch: StepDispatch<'_>,
    buffers: &[(u32, &wgpu::Buffer, &str)],
) -> Result<()> {
    let subgroup = subgroup_step(ctx, &dispatch);
    let StepDispatch {
        kernel,
        dims,
        step,
        lengths,
        has_dy,
        extra_overrides,
        ..
    } = dispatch;
    let mut params = StepParams {
        batch: dims.batch as u32,
        steps: dims.steps as u32,
        hidden: dims.hidden as u32,
        has_lengths: u32::from(lengths.is_some()),
        has_dy: u32::from(has_dy),
        ..StepParams::default()
    };
    let batch_block = dims.batch_block();
    let mut overrides = vec![("W_VEC4", u32::from(dims.hidden.is_multiple_of(4)))];
    let (kernel, per_step, iterations) = match subgroup {
        Some(sub) => {
            let (rows, invocations) = subgroup_tile(&dims, sub.units);
            overrides.extend([("SG_ROWS", rows), ("SG_WG", invocations)]);
            let lanes = dims.hidden.div_ceil(sub.units) as u32;
            let workgroups = [
                lanes.div_ceil(invocations),
                dims.batch.div_ceil(rows as usize) as u32,
                1,
            ];
            (sub.kernel, workgroups, (sub.iterations)(&dims))
        }
        None => {
            overrides.extend([("WG_X", WG_X), ("SEQ_WG", SEQ_WG), ("BATCH_BLOCK", batch_block as u32)]);
            let workgroups = [
                (dims.hidden.div_ceil(4) as u32).div_ceil(WG_X),
                dims.batch.div_ceil(batch_block) as u32,
                1,
            ];
            let iterations = match step {
                Step::Sequence => dims.sequence_iterations(),
                Step::Forward(_) => dims.iterations_per_step(false),
                Step::Backward(_) | Step::InitialState => dims.iterations_per_step(true),
            };
            (kernel, workgroups, iterations)
        }
    };
    check_loop_budget(ctx, kernel.entry_point, iterations)?;
    let workgroups = match step {
        Step::Forward(t) => {
            params.t = t as u32;
            per_step
        }
        Step::Sequence => [1, 1, 1],
        Step::Backward(t) => {
            params.t = t as u32;
            params.has_next = u32::from(t + 1 < dims.steps);
            params.next = (t + 1) as u32;
            params.pointwise = 1;
            per_step
        }
        Step::InitialState => {
            params.has_next = 1;
            params.next = 0;
            per_step
        }
    };
    overrides.extend_from_slice(extra_overrides);
    ctx.encode_dispatch(
        encoder,
        Dispatch {
            kernel,
            overrides: &overrides,
            buffers,
            params: &params,
            workgroups,
        },
    )
}

/// The whole forward: one workgroup for the sequence when small (and, on a CPU adapter,
/// within its loop budget), else a dispatch per step.
pub(crate) fn forward_sequence(
    ctx: &Context,
    dims: &RecurrentDims,
    mut encode: impl FnMut(Step) -> Result<()>,
) -> Result<()> {
    let within_budget = loop_budget(ctx).is_none_or(|budget| dims.sequence_iterations() <= budget);
    if dims.blocks() <= SEQUENCE_MAX_BLOCKS && within_budget {
        return encode(Step::Sequence);
    }
    (0..dims.steps).try_for_each(|t| encode(Step::Forward(t)))
}

/// The whole backward through time: steps T-1 .. 0, then the initial state.
pub(crate) fn backward_sequence(dims: &RecurrentDims, mut encode: impl FnMut(Step) -> Result<()>) -> Result<()> {
    for t in (0..dims.steps).rev() {
        encode(Step::Backward(t))?;
    }
    encode(Step::InitialState)
}

// ==== state slots ====
//
// A layer keeps its hidden (and cell) states in one `[B, T+1, H]` tensor per layer-
// direction: slot 0 is the initial state, slot t the state after step t, and a padded step
// carries the state of the one before it, so slot T holds each row's final state. The step
// kernels read slot t and write slot t + 1; these helpers make, read and differentiate
// through that layout.

/// A `[B, T+1, H]` state-slot tensor whose slot 0 holds `initial` `[B, H]` (zeros if None).
/// The kernels write slots 1..=T of every row, so only slot 0 needs a value; zeros are
/// cleared on the GPU, not uploaded from the host.
pub(crate) fn state_slots(
    ctx: &Context,
    recorder: &mut dyn Recorder,
    initial: Option<&Tensor>,
    batch: usize,
    steps: usize,
    hidden: usize,
) -> Result<Tensor> {
    let states = Tensor::empty(ctx, &[batch, steps + 1, hidden], DType::F32)?;
    match initial {
        None => recorder
            .command_encoder()
            .clear_buffer(states.buffer(), 0, Some(states.size_in_bytes())),
        Some(h0) => {
            h0.check_shape("recurrent layer: initial state", &[batch, hidden])?;
            h0.check_dtype("recurrent layer: initial state", DType::F32)?;
            // One buffer copy per row into its slot 0, rather than a kernel writing every
            // slot (the mirror of last_state_slot).
            let row_bytes = (hidden * 4) as u64;
            for b in 0..batch {
                let to = (b * (steps + 1) * hidden * 4) as u64;
                recorder.command_encoder().copy_buffer_to_buffer(
                    h0.buffer(),
                    b as u64 * row_bytes,
                    states.buffer(),
                    to,
                    row_bytes,
                );
            }
        }
    }
    Ok(states)
}

/// Slot T of a `[B, T+1, H]` state-slot tensor (padded steps carry each row's last state
/// there): the last H of each row viewed `[B, (T+1) H]`, as a `[B, H]` tensor.
pub(crate) fn last_state_slot(ctx: &Context, recorder: &mut dyn Recorder, states: &Tensor) -> Result<Tensor> {
    let [batch, slots, hidden] = states.shape()[..] else {
        return Err(Error::shape("recurrent layer: states", "[B, T+1, H]", states.shape()));
    };
    // One buffer copy per row of just its last slot (f32 offsets keep the 4-byte alignment
    // copies need), rather than a kernel moving every slot.
    let last = Tensor::empty(ctx, &[batch, hidden], DType::F32)?;
    let row_bytes = (hidden * 4) as u64;
    for b in 0..batch {
        let from = ((b * slots + slots - 1) * hidden * 4) as u64;
        recorder.command_encoder().copy_buffer_to_buffer(
            states.buffer(),
            from,
            last.buffer(),
            b as u64 * row_bytes,
            row_bytes,
        );
    }
    Ok(last)
}

/// The operands of a recurrent weight gradient: `grad_gates` `[B, T, width H]`, the gate
/// gradients of every step, and `h_states` `[B, T+1, H]`, the state slots.
pub(crate) struct StateSlots<'a> {
    pub(crate) grad_gates: &'a Tensor,
    pub(crate) width: usize,
    pub(crate) h_states: &'a Tensor,
}

/// `grad (+)= Σ_b dgates[b]ᵀ h_states[b, 0..T]` (`accumulate`: add to what `grad`, the
/// `[gates H, H]` gradient of W_hh, holds), in pieces: each piece (first column block, first
/// row block, blocks) maps `blocks` H-wide column blocks of `grad_gates` to the same number
/// of H-row blocks of `grad`. Strided products over the slot layout: no copy of the states.
pub(crate) fn recurrent_weight_grad(
    ctx: &Context,
    recorder: &mut dyn Recorder,
    operands: &StateSlots<'_>,
    pieces: &[(usize, usize, usize)],
    grad: &Tensor,
    accumulate: bool,
) -> Result<()> {
    let &StateSlots {
        grad_gates,
        width,
        h_states,
    } = operands;
    let [batch, slots, hidden] = h_states.shape()[..] else {
        return Err(Error::shape("recurrent layer: states", "[B, T+1, H]", h_states.shape()));
    };
    let steps = slots - 1;
    // With one step (a decoder run step by step) the batch folds into the inner
    // dimension: one product over K = B instead of B products over K = 1, which the
    // tiled kernel runs several times faster.
    let (inner, products, lhs_col, rhs_row) = if steps == 1 {
        (batch, 1, width * hidden, slots * hidden)
    } else {
        (steps, batch, width * hidden, hidden)
    };
    for &(column, row, blocks) in pieces {
        let op = StridedMatmul {
            rows: blocks * hidden,
            cols: hidden,
            inner,
            batch: products,
            sum_batches: true,
            beta: if accumulate { 1.0 } else { 0.0 },
        };
        let lhs = Strides {
            offset: column * hidden,
            batch: steps * width * hidden,
            row: 1,
            col: lhs_col,
        };
        let rhs = Strides {
            offset: 0,
            batch: slots * hidden,
            row: rhs_row,
            col: 1,
        };
        let out = Strides {
            offset: row * hidden * hidden,
            ..Strides::row_major(blocks * hidden, hidden)
        };
        matmul_strided(
            ctx,
            recorder,
            &op,
            MatrixView {
                tensor: grad_gates,
                strides: lhs,
            },
            MatrixView {
                tensor: h_states,
                strides: rhs,
            },
            None,
            MatrixView {
                tensor: grad,
                strides: out,
            },
        )?;
    }
    Ok(())
}
