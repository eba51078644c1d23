//! Launchers of `shaders/rnn_cell.wgsl`: one Elman RNN step (`nn.RNN`, tanh or relu)
//! forward (or a whole sequence in one workgroup) and one step backward.
//!
//! A layer runs them as: `xproj = x W_ih^T + (b_ih + b_hh)` as one matmul over all
//! `B * T` rows, then [`rnn_forward`], and in the backward [`rnn_backward`] followed by
//! one matmul each for `dW_hh = sum_t dgates_t^T h_{t-1}`, `dW_ih = dgates^T x`,
//! `dx = dgates W_ih` and the bias sums (`db_ih = db_hh = sum of dgates`).
//!
//! Shapes: `xproj`, `output`, `grad_gates`, `grad_output` `[B, T, H]`; `w_hh` `[H, H]`;
//! `h_states` `[B, T+1, H]` with h0 in slot 0 and the final state in slot T (padded steps
//! carry it); `grad_state` `[B, H]`: dh_n in, dh0 out.

use super::recurrent::{backward_sequence, encode_cell, forward_sequence, Operand, Step, StepDispatch, SubgroupStep};
use super::Lengths;
use crate::gpu::{Access, Context, KernelSpec, Recorder, RNN_CELL};
use crate::{Result, Tensor};

pub use super::recurrent::{RecurrentDims as RnnDims, SEQUENCE_MAX_BLOCKS};

/// `nn.RNN`'s `nonlinearity`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Nonlinearity {
    /// `tanh` (PyTorch's default).
    #[default]
    Tanh,
    /// `relu`.
    Relu,
}

impl Nonlinearity {
    fn overrides(self) -> [(&'static str, u32); 1] {
        [("NONLINEARITY", u32::from(self == Nonlinearity::Relu))]
    }
}

const FORWARD_BINDINGS: &[(u32, Access)] = &[
    (0, Access::Read),
    (1, Access::Read),
    (2, Access::Read),
    (3, Access::Read),
    (4, Access::ReadWrite),
    (7, Access::ReadWrite),
    (8, Access::Params),
];

const RNN_CELL_FORWARD: KernelSpec = KernelSpec {
    family: &RNN_CELL,
    entry_point: "rnn_cell_forward",
    bindings: FORWARD_BINDINGS,
};

const RNN_SEQUENCE_FORWARD: KernelSpec = KernelSpec {
    family: &RNN_CELL,
    entry_point: "rnn_sequence_forward",
    bindings: FORWARD_BINDINGS,
};

const RNN_CELL_BACKWARD: KernelSpec = KernelSpec {
    family: &RNN_CELL,
    entry_point: "rnn_cell_backward",
    bindings: &[
        (1, Access::Read),
        (2, Access::Read),
        (3, Access::Read),
        (8, Access::Params),
        (9, Access::ReadWrite),
        (10, Access::Read),
        (12, Access::Read),
        (13, Access::ReadWrite),
    ],
};

const RNN_CELL_FORWARD_SUBGROUP: KernelSpec = KernelSpec {
    family: &RNN_CELL,
    entry_point: "rnn_cell_forward_subgroup",
    bindings: &[
        (2, Access::Read),
        (3, Access::Read),
        (8, Access::Params),
        (14, Access::ReadWrite),
        (20, Access::Read),
        (23, Access::ReadWrite),
    ],
};

/// Four units per invocation; the k loop over H in steps of 4, and the pointwise loops
/// (up to 8 blocks of 4 rows).
const FORWARD_SUBGROUP: SubgroupStep = SubgroupStep {
    kernel: &RNN_CELL_FORWARD_SUBGROUP,
    units: 4,
    iterations: |dims| dims.hidden.div_ceil(4) as u64 + 9 * 5 + 16,
};

const RNN_CELL_BACKWARD_SUBGROUP: KernelSpec = KernelSpec {
    family: &RNN_CELL,
    entry_point: "rnn_cell_backward_subgroup",
    bindings: &[
        (2, Access::Read),
        (3, Access::Read),
        (8, Access::Params),
        (15, Access::ReadWrite),
        (16, Access::Read),
        (18, Access::Read),
        (19, Access::ReadWrite),
    ],
};

/// Four units per invocation, likewise.
const BACKWARD_SUBGROUP: SubgroupStep = SubgroupStep {
    kernel: &RNN_CELL_BACKWARD_SUBGROUP,
    units: 4,
    iterations: |dims| dims.hidden.div_ceil(4) as u64 + 9 * 5 + 16,
};

/// The tensors of an RNN layer-direction's forward (see the module docs for shapes).
#[derive(Clone, Copy, Debug)]
pub struct RnnForward<'a> {
    /// `x W_ih^T + b_ih + b_hh`, `[B, T, H]`.
    pub xproj: &'a Tensor,
    /// `W_hh`, `[H, H]`.
    pub w_hh: &'a Tensor,
    /// Optional per-row lengths.
    pub lengths: Option<&'a Lengths>,
    /// `[B, T+1, H]`: slot 0 holds h0 (written by the caller), slot t+1 gets h_t.
    pub h_states: &'a Tensor,
    /// `[B, T, H]`: h_t at real steps, 0 at padded steps.
    pub output: &'a Tensor,
    /// tanh or relu.
    pub nonlinearity: Nonlinearity,
}

impl RnnForward<'_> {
    fn encode(&self, ctx: &Context, encoder: &mut dyn Recorder, step: Step) -> Result<()> {
        let dims = RnnDims::from_tensor("rnn: xproj", self.xproj, 1, "H")?;
        let kernel = match step {
            Step::Sequence => &RNN_SEQUENCE_FORWARD,
            _ => &RNN_CELL_FORWARD,
        };
        let dispatch = StepDispatch {
            kernel,
            subgroup: Some(FORWARD_SUBGROUP),
            dims,
            step,
            lengths: self.lengths,
            has_dy: false,
            extra_overrides: &self.nonlinearity.overrides(),
        };
        let hidden = dims.hidden;
        encode_cell(
            ctx,
            encoder,
            dispatch,
            "rnn: lengths",
            &[
                Operand::read(&[0, 20], "rnn: xproj", self.xproj, &dims.per_step(1)),
                Operand::read(&[1, 2], "rnn: w_hh", self.w_hh, &[hidden, hidden]),
                Operand::write(&[4, 14], "rnn: h_states", self.h_states, &dims.states()),
                Operand::write(&[7, 23], "rnn: output", self.output, &dims.per_step(1)),
            ],
        )
    }
}

/// Encodes step `t` of the forward: reads slot t of the states, writes slot t+1 and the
/// output at t.
pub fn rnn_cell_forward(ctx: &Context, encoder: &mut dyn Recorder, forward: &RnnForward<'_>, t: usize) -> Result<()> {
    forward.encode(ctx, encoder, Step::Forward(t))
}

/// Encodes every step in one dispatch of a single workgroup (same results as
/// [`rnn_cell_forward`] for t = 0..T). Best when B * H is small.
pub fn rnn_sequence_forward(ctx: &Context, encoder: &mut dyn Recorder, forward: &RnnForward<'_>) -> Result<()> {
    forward.encode(ctx, encoder, Step::Sequence)
}

/// Encodes the whole forward: one workgroup for the whole sequence when a step has at
/// most [`SEQUENCE_MAX_BLOCKS`] blocks, else one dispatch per step.
pub fn rnn_forward(ctx: &Context, encoder: &mut dyn Recorder, forward: &RnnForward<'_>) -> Result<()> {
    let dims = RnnDims::from_tensor("rnn: xproj", forward.xproj, 1, "H")?;
    forward_sequence(ctx, &dims, |step| forward.encode(ctx, encoder, step))
}

/// The tensors of an RNN layer-direction's backward (see the module docs for shapes).
#[derive(Clone, Copy, Debug)]
pub struct RnnBackward<'a> {
    /// `W_hh`, `[H, H]`.
    pub w_hh: &'a Tensor,
    /// The lengths the forward used.
    pub lengths: Option<&'a Lengths>,
    /// Gradient of the output `[B, T, H]`, if the output was used.
    pub grad_output: Option<&'a Tensor>,
    /// Saved by the forward, `[B, T+1, H]`.
    pub h_states: &'a Tensor,
    /// Written: gradient of the pre-activations, `[B, T, H]` (= d xproj).
    pub grad_gates: &'a Tensor,
    /// `[B, H]`: dh_n of the final state in (zeros if unused), dh0 out.
    pub grad_state: &'a Tensor,
    /// The forward's nonlinearity.
    pub nonlinearity: Nonlinearity,
}

impl RnnBackward<'_> {
    fn encode(&self, ctx: &Context, encoder: &mut dyn Recorder, step: Step) -> Result<()> {
        let dims = RnnDims::from_tensor("rnn: grad_gates", self.grad_gates, 1, "H")?;
        let dispatch = StepDispatch {
            kernel: &RNN_CELL_BACKWARD,
            subgroup: Some(BACKWARD_SUBGROUP),
            dims,
            step,
            lengths: self.lengths,
            has_dy: self.grad_output.is_some(),
            extra_overrides: &self.nonlinearity.overrides(),
        };
        let hidden = dims.hidden;
        encode_cell(
            ctx,
            encoder,
            dispatch,
            "rnn: lengths",
            &[
                Operand::read(&[1, 2], "rnn: w_hh", self.w_hh, &[hidden, hidden]),
                Operand::optional(&[10, 16], "rnn: grad_output", self.grad_output, &dims.per_step(1)),
                Operand::read(&[12, 18], "rnn: h_states", self.h_states, &dims.states()),
                Operand::write(&[9, 15], "rnn: grad_gates", self.grad_gates, &dims.per_step(1)),
                Operand::write(&[13, 19], "rnn: grad_state", self.grad_state, &[dims.batch, hidden]),
            ],
        )
    }
}

/// Encodes step `t` of the backward. Steps must run from T-1 down to 0.
pub fn rnn_cell_backward(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    backward: &RnnBackward<'_>,
    t: usize,
) -> Result<()> {
    backward.encode(ctx, encoder, Step::Backward(t))
}

/// Encodes the last dispatch of the backward, after step 0: adds `(dgates_0 W_hh)` to the
/// carried dh, leaving dh0 in `grad_state`.
pub fn rnn_initial_state_backward(ctx: &Context, encoder: &mut dyn Recorder, backward: &RnnBackward<'_>) -> Result<()> {
    backward.encode(ctx, encoder, Step::InitialState)
}

/// Encodes the whole backward through time: steps T-1..0, then the initial state.
pub fn rnn_backward(ctx: &Context, encoder: &mut dyn Recorder, backward: &RnnBackward<'_>) -> Result<()> {
    let dims = RnnDims::from_tensor("rnn: grad_gates", backward.grad_gates, 1, "H")?;
    backward_sequence(&dims, |step| backward.encode(ctx, encoder, step))
}
