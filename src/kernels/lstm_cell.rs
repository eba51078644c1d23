//! Launchers of `shaders/lstm_cell.wgsl`: one LSTM step forward (or a whole sequence in
//! one workgroup) and one step backward, with PyTorch's gate order i, f, g, o.
//!
//! A layer runs them as the hot path wants it: the input projection
//! `xproj = x W_ih^T + (b_ih + b_hh)` as one matmul over all `B * T` rows, then
//! [`lstm_forward`] (one fused dispatch per step: recurrent product + gate math), and in
//! the backward [`lstm_backward`] (one dispatch per step) followed by one matmul each for
//! `dW_hh = sum_t dgates_t^T h_{t-1}`, `dW_ih = dgates^T x`, `dx = dgates W_ih` and the
//! bias sums (`db_ih = db_hh = sum of dgates`).
//!
//! Shapes: `xproj`, `gates`, `grad_gates` `[B, T, 4H]`; `w_hh` `[4H, H]` (PyTorch's
//! layout); `h_states`, `c_states` `[B, T+1, H]` with the initial state in slot 0 and the
//! final state in slot T (padded steps carry it); `output` `[B, T, H]`; `grad_state`
//! `[2, B, H]` holding (dh, dc): the final state's gradient on the way in, the initial
//! state's on the way out.

use super::recurrent::{backward_sequence, encode_cell, forward_sequence, Operand, Step, StepDispatch, SubgroupStep};
use super::Lengths;
use crate::gpu::{Access, Context, KernelSpec, Recorder, LSTM_CELL};
use crate::{Result, Tensor};

pub use super::recurrent::{RecurrentDims as LstmDims, SEQUENCE_MAX_BLOCKS};

const FORWARD_BINDINGS: &[(u32, Access)] = &[
    (0, Access::Read),
    (1, Access::Read),
    (2, Access::Read),
    (3, Access::Read),
    (4, Access::ReadWrite),
    (5, Access::ReadWrite),
    (6, Access::ReadWrite),
    (7, Access::ReadWrite),
    (8, Access::Params),
];

const LSTM_CELL_FORWARD: KernelSpec = KernelSpec {
    family: &LSTM_CELL,
    entry_point: "lstm_cell_forward",
    bindings: FORWARD_BINDINGS,
};

const LSTM_SEQUENCE_FORWARD: KernelSpec = KernelSpec {
    family: &LSTM_CELL,
    entry_point: "lstm_sequence_forward",
    bindings: FORWARD_BINDINGS,
};

const LSTM_CELL_BACKWARD: KernelSpec = KernelSpec {
    family: &LSTM_CELL,
    entry_point: "lstm_cell_backward",
    bindings: &[
        (1, Access::Read),
        (2, Access::Read),
        (3, Access::Read),
        (8, Access::Params),
        (9, Access::ReadWrite),
        (10, Access::Read),
        (11, Access::Read),
        (12, Access::Read),
        (13, Access::ReadWrite),
    ],
};

const LSTM_CELL_FORWARD_SUBGROUP: KernelSpec = KernelSpec {
    family: &LSTM_CELL,
    entry_point: "lstm_cell_forward_subgroup",
    bindings: &[
        (2, Access::Read),
        (3, Access::Read),
        (8, Access::Params),
        (14, Access::ReadWrite),
        (20, Access::Read),
        (21, Access::ReadWrite),
        (22, Access::ReadWrite),
        (23, Access::ReadWrite),
    ],
};

/// One unit (its 4 gates) per invocation; the k loop over H in steps of 4, and the
/// pointwise loops (8 blocks of a 4-unit shuffle and 4 gates).
const FORWARD_SUBGROUP: SubgroupStep = SubgroupStep {
    kernel: &LSTM_CELL_FORWARD_SUBGROUP,
    units: 1,
    iterations: |dims| dims.hidden.div_ceil(4) as u64 + 8 * (5 + 5) + 16,
};

const LSTM_CELL_BACKWARD_SUBGROUP: KernelSpec = KernelSpec {
    family: &LSTM_CELL,
    entry_point: "lstm_cell_backward_subgroup",
    bindings: &[
        (2, Access::Read),
        (3, Access::Read),
        (8, Access::Params),
        (15, Access::ReadWrite),
        (16, Access::Read),
        (17, Access::Read),
        (18, Access::Read),
        (19, Access::ReadWrite),
    ],
};

/// Four units per invocation; the j loop over 4H in steps of 4, and the pointwise loops
/// (8 blocks of 4 rows x 2 gate loops of 4).
const BACKWARD_SUBGROUP: SubgroupStep = SubgroupStep {
    kernel: &LSTM_CELL_BACKWARD_SUBGROUP,
    units: 4,
    iterations: |dims| dims.hidden as u64 + 8 * 4 * (1 + 2 * 5) + 16,
};

/// The tensors of an LSTM layer-direction's forward (see the module docs for shapes).
#[derive(Clone, Copy, Debug)]
pub struct LstmForward<'a> {
    /// `x W_ih^T + b_ih + b_hh`, `[B, T, 4H]`.
    pub xproj: &'a Tensor,
    /// `W_hh`, `[4H, H]`.
    pub w_hh: &'a Tensor,
    /// Optional per-row lengths.
    pub lengths: Option<&'a Lengths>,
    /// `[B, T+1, H]`: slot 0 holds h0 (written by the caller), slot t+1 gets h_t.
    pub h_states: &'a Tensor,
    /// `[B, T+1, H]`: slot 0 holds c0, slot t+1 gets c_t.
    pub c_states: &'a Tensor,
    /// `[B, T, 4H]`: i, f, g, o after their nonlinearities, saved for the backward.
    pub gates: &'a Tensor,
    /// `[B, T, H]`: h_t at real steps, 0 at padded steps.
    pub output: &'a Tensor,
}

impl LstmForward<'_> {
    fn encode(&self, ctx: &Context, encoder: &mut dyn Recorder, step: Step) -> Result<()> {
        let dims = LstmDims::from_tensor("lstm: xproj", self.xproj, 4, "4H")?;
        let kernel = match step {
            Step::Sequence => &LSTM_SEQUENCE_FORWARD,
            _ => &LSTM_CELL_FORWARD,
        };
        let dispatch = StepDispatch {
            kernel,
            subgroup: Some(FORWARD_SUBGROUP),
            dims,
            step,
            lengths: self.lengths,
            has_dy: false,
            extra_overrides: &[],
        };
        let (states, hidden) = (dims.states(), dims.hidden);
        encode_cell(
            ctx,
            encoder,
            dispatch,
            "lstm: lengths",
            &[
                Operand::read(&[0, 20], "lstm: xproj", self.xproj, &dims.per_step(4)),
                Operand::read(&[1, 2], "lstm: w_hh", self.w_hh, &[4 * hidden, hidden]),
                Operand::write(&[4, 14], "lstm: h_states", self.h_states, &states),
                Operand::write(&[5, 21], "lstm: c_states", self.c_states, &states),
                Operand::write(&[6, 22], "lstm: gates", self.gates, &dims.per_step(4)),
                Operand::write(&[7, 23], "lstm: output", self.output, &dims.per_step(1)),
            ],
        )
    }
}

/// Encodes step `t` of the forward: reads slot t of the states, writes slot t+1, the
/// gates and the output at t.
pub fn lstm_cell_forward(ctx: &Context, encoder: &mut dyn Recorder, forward: &LstmForward<'_>, t: usize) -> Result<()> {
    forward.encode(ctx, encoder, Step::Forward(t))
}

/// Encodes every step in one dispatch of a single workgroup (same results as
/// [`lstm_cell_forward`] for t = 0..T). Best when B * H is small.
pub fn lstm_sequence_forward(ctx: &Context, encoder: &mut dyn Recorder, forward: &LstmForward<'_>) -> Result<()> {
    forward.encode(ctx, encoder, Step::Sequence)
}

/// Encodes the whole forward: one workgroup for the whole sequence when a step has at
/// most [`SEQUENCE_MAX_BLOCKS`] blocks, else one dispatch per step.
pub fn lstm_forward(ctx: &Context, encoder: &mut dyn Recorder, forward: &LstmForward<'_>) -> Result<()> {
    let dims = LstmDims::from_tensor("lstm: xproj", forward.xproj, 4, "4H")?;
    forward_sequence(ctx, &dims, |step| forward.encode(ctx, encoder, step))
}

/// The tensors of an LSTM layer-direction's backward (see the module docs for shapes).
#[derive(Clone, Copy, Debug)]
pub struct LstmBackward<'a> {
    /// `W_hh`, `[4H, H]`.
    pub w_hh: &'a Tensor,
    /// The lengths the forward used.
    pub lengths: Option<&'a Lengths>,
    /// Gradient of the output `[B, T, H]`, if the output was used.
    pub grad_output: Option<&'a Tensor>,
    /// Saved by the forward, `[B, T, 4H]`.
    pub gates: &'a Tensor,
    /// Saved by the forward, `[B, T+1, H]`.
    pub c_states: &'a Tensor,
    /// Written: gradient of the gate pre-activations, `[B, T, 4H]` (= d xproj).
    pub grad_gates: &'a Tensor,
    /// `[2, B, H]`: (dh_n, dc_n) of the final state in (zeros if unused), (dh0, dc0) out.
    pub grad_state: &'a Tensor,
}

impl LstmBackward<'_> {
    fn encode(&self, ctx: &Context, encoder: &mut dyn Recorder, step: Step) -> Result<()> {
        let dims = LstmDims::from_tensor("lstm: gates", self.gates, 4, "4H")?;
        let dispatch = StepDispatch {
            kernel: &LSTM_CELL_BACKWARD,
            subgroup: Some(BACKWARD_SUBGROUP),
            dims,
            step,
            lengths: self.lengths,
            has_dy: self.grad_output.is_some(),
            extra_overrides: &[],
        };
        let hidden = dims.hidden;
        encode_cell(
            ctx,
            encoder,
            dispatch,
            "lstm: lengths",
            &[
                Operand::read(&[1, 2], "lstm: w_hh", self.w_hh, &[4 * hidden, hidden]),
                Operand::optional(&[10, 16], "lstm: grad_output", self.grad_output, &dims.per_step(1)),
                Operand::read(&[11, 17], "lstm: gates", self.gates, &dims.per_step(4)),
                Operand::read(&[12, 18], "lstm: c_states", self.c_states, &dims.states()),
                Operand::write(&[9, 15], "lstm: grad_gates", self.grad_gates, &dims.per_step(4)),
                Operand::write(&[13, 19], "lstm: grad_state", self.grad_state, &[2, dims.batch, hidden]),
            ],
        )
    }
}

/// Encodes step `t` of the backward. Steps must run from T-1 down to 0; step t reads
/// `grad_gates` at t+1 (written by the previous call) and `grad_state`.
pub fn lstm_cell_backward(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    backward: &LstmBackward<'_>,
    t: usize,
) -> Result<()> {
    backward.encode(ctx, encoder, Step::Backward(t))
}

/// Encodes the last dispatch of the backward, after step 0: adds `(dgates_0 W_hh)` to the
/// carried dh, leaving (dh0, dc0) in `grad_state`.
pub fn lstm_initial_state_backward(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    backward: &LstmBackward<'_>,
) -> Result<()> {
    backward.encode(ctx, encoder, Step::InitialState)
}

/// Encodes the whole backward through time: steps T-1..0, then the initial state.
pub fn lstm_backward(ctx: &Context, encoder: &mut dyn Recorder, backward: &LstmBackward<'_>) -> Result<()> {
    let dims = LstmDims::from_tensor("lstm: gates", backward.gates, 4, "4H")?;
    backward_sequence(&dims, |step| backward.encode(ctx, encoder, step))
}
