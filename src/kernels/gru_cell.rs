//! Launchers of `shaders/gru_cell.wgsl`: one GRU step forward (or a whole sequence in
//! one workgroup) and one step backward, in PyTorch's form (gate order r, z, n,
//! `n = tanh(W_in x + b_in + r * (W_hn h + b_hn))`, `h' = (1 - z) n + z h`).
//!
//! A layer runs them as: `xproj = x W_ih^T + b_ih` as one matmul over all `B * T` rows
//! (b_hh stays in the step: b_hn sits inside `r * (..)`), then [`gru_forward`], and in
//! the backward [`gru_backward`] followed by matmuls over the two gradient views of
//! `grad_gates` `[B, T, 4H]` = (dr, dz, dn, dhn) (pre-activation gradients, dhn that of
//! `W_hn h + b_hn`): `d xproj` is its columns 0..3H, the gradient of `h W_hh^T + b_hh` is
//! columns 0..2H and 3H..4H. So `dW_ih = dxproj^T x`, `db_ih = sum dxproj`,
//! `dW_hh = sum_t dgh_t^T h_{t-1}`, `db_hh = sum dgh`.
//!
//! Shapes: `xproj` `[B, T, 3H]`; `w_hh` `[3H, H]`; `b_hh` `[3H]`; `gates` and
//! `grad_gates` `[B, T, 4H]`; `h_states` `[B, T+1, H]` with h0 in slot 0 and the final
//! state in slot T; `output` `[B, T, H]`; `grad_state` `[B, H]`: dh_n in, dh0 out.

use super::recurrent::{backward_sequence, encode_cell, forward_sequence, Operand, Step, StepDispatch, SubgroupStep};
use super::Lengths;
use crate::gpu::{Access, Context, KernelSpec, Recorder, GRU_CELL};
use crate::{Result, Tensor};

pub use super::recurrent::{RecurrentDims as GruDims, SEQUENCE_MAX_BLOCKS};

const FORWARD_BINDINGS: &[(u32, Access)] = &[
    (0, Access::Read),
    (1, Access::Read),
    (2, Access::Read),
    (3, Access::Read),
    (4, Access::ReadWrite),
    (5, Access::Read),
    (6, Access::ReadWrite),
    (7, Access::ReadWrite),
    (8, Access::Params),
];

const GRU_CELL_FORWARD: KernelSpec = KernelSpec {
    family: &GRU_CELL,
    entry_point: "gru_cell_forward",
    bindings: FORWARD_BINDINGS,
};

const GRU_SEQUENCE_FORWARD: KernelSpec = KernelSpec {
    family: &GRU_CELL,
    entry_point: "gru_sequence_forward",
    bindings: FORWARD_BINDINGS,
};

const GRU_CELL_BACKWARD: KernelSpec = KernelSpec {
    family: &GRU_CELL,
    entry_point: "gru_cell_backward",
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

const GRU_CELL_FORWARD_SUBGROUP: KernelSpec = KernelSpec {
    family: &GRU_CELL,
    entry_point: "gru_cell_forward_subgroup",
    bindings: &[
        (2, Access::Read),
        (3, Access::Read),
        (8, Access::Params),
        (14, Access::ReadWrite),
        (20, Access::Read),
        (21, Access::Read),
        (22, Access::ReadWrite),
        (23, Access::ReadWrite),
    ],
};

/// One unit (its 3 gates) per invocation; the k loop over H in steps of 4, and the
/// pointwise loops (8 blocks of a 4-unit shuffle and two gate loops).
const FORWARD_SUBGROUP: SubgroupStep = SubgroupStep {
    kernel: &GRU_CELL_FORWARD_SUBGROUP,
    units: 1,
    iterations: |dims| dims.hidden.div_ceil(4) as u64 + 8 * (5 + 10) + 16,
};

const GRU_CELL_BACKWARD_SUBGROUP: KernelSpec = KernelSpec {
    family: &GRU_CELL,
    entry_point: "gru_cell_backward_subgroup",
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

/// Four units per invocation; the j loop over 3H in steps of 4, and the pointwise loops
/// (8 blocks of 4 rows x 2 gate loops of 4).
const BACKWARD_SUBGROUP: SubgroupStep = SubgroupStep {
    kernel: &GRU_CELL_BACKWARD_SUBGROUP,
    units: 4,
    iterations: |dims| (3 * dims.hidden).div_ceil(4) as u64 + 8 * 4 * (1 + 2 * 5) + 16,
};

/// The tensors of a GRU layer-direction's forward (see the module docs for shapes).
#[derive(Clone, Copy, Debug)]
pub struct GruForward<'a> {
    /// `x W_ih^T + b_ih`, `[B, T, 3H]`.
    pub xproj: &'a Tensor,
    /// `W_hh`, `[3H, H]`.
    pub w_hh: &'a Tensor,
    /// `b_hh`, `[3H]`.
    pub b_hh: &'a Tensor,
    /// Optional per-row lengths.
    pub lengths: Option<&'a Lengths>,
    /// `[B, T+1, H]`: slot 0 holds h0 (written by the caller), slot t+1 gets h_t.
    pub h_states: &'a Tensor,
    /// `[B, T, 4H]`: r, z, n and `W_hn h + b_hn`, saved for the backward.
    pub gates: &'a Tensor,
    /// `[B, T, H]`: h_t at real steps, 0 at padded steps.
    pub output: &'a Tensor,
}

impl GruForward<'_> {
    fn encode(&self, ctx: &Context, encoder: &mut dyn Recorder, step: Step) -> Result<()> {
        let dims = GruDims::from_tensor("gru: xproj", self.xproj, 3, "3H")?;
        let kernel = match step {
            Step::Sequence => &GRU_SEQUENCE_FORWARD,
            _ => &GRU_CELL_FORWARD,
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
        let hidden = dims.hidden;
        encode_cell(
            ctx,
            encoder,
            dispatch,
            "gru: lengths",
            &[
                Operand::read(&[0, 20], "gru: xproj", self.xproj, &dims.per_step(3)),
                Operand::read(&[1, 2], "gru: w_hh", self.w_hh, &[3 * hidden, hidden]),
                Operand::read(&[5, 21], "gru: b_hh", self.b_hh, &[3 * hidden]),
                Operand::write(&[4, 14], "gru: h_states", self.h_states, &dims.states()),
                Operand::write(&[6, 22], "gru: gates", self.gates, &dims.per_step(4)),
                Operand::write(&[7, 23], "gru: output", self.output, &dims.per_step(1)),
            ],
        )
    }
}

/// Encodes step `t` of the forward: reads slot t of the states, writes slot t+1, the
/// gates and the output at t.
pub fn gru_cell_forward(ctx: &Context, encoder: &mut dyn Recorder, forward: &GruForward<'_>, t: usize) -> Result<()> {
    forward.encode(ctx, encoder, Step::Forward(t))
}

/// Encodes every step in one dispatch of a single workgroup (same results as
/// [`gru_cell_forward`] for t = 0..T). Best when B * H is small.
pub fn gru_sequence_forward(ctx: &Context, encoder: &mut dyn Recorder, forward: &GruForward<'_>) -> Result<()> {
    forward.encode(ctx, encoder, Step::Sequence)
}

/// Encodes the whole forward: one workgroup for the whole sequence when a step has at
/// most [`SEQUENCE_MAX_BLOCKS`] blocks, else one dispatch per step.
pub fn gru_forward(ctx: &Context, encoder: &mut dyn Recorder, forward: &GruForward<'_>) -> Result<()> {
    let dims = GruDims::from_tensor("gru: xproj", forward.xproj, 3, "3H")?;
    forward_sequence(ctx, &dims, |step| forward.encode(ctx, encoder, step))
}

/// The tensors of a GRU layer-direction's backward (see the module docs for shapes).
#[derive(Clone, Copy, Debug)]
pub struct GruBackward<'a> {
    /// `W_hh`, `[3H, H]`.
    pub w_hh: &'a Tensor,
    /// The lengths the forward used.
    pub lengths: Option<&'a Lengths>,
    /// Gradient of the output `[B, T, H]`, if the output was used.
    pub grad_output: Option<&'a Tensor>,
    /// Saved by the forward, `[B, T, 4H]`.
    pub gates: &'a Tensor,
    /// Saved by the forward, `[B, T+1, H]`.
    pub h_states: &'a Tensor,
    /// Written: (dr, dz, dn, dhn), `[B, T, 4H]` (see the module docs).
    pub grad_gates: &'a Tensor,
    /// `[B, H]`: dh_n of the final state in (zeros if unused), dh0 out.
    pub grad_state: &'a Tensor,
}

impl GruBackward<'_> {
    fn encode(&self, ctx: &Context, encoder: &mut dyn Recorder, step: Step) -> Result<()> {
        let dims = GruDims::from_tensor("gru: gates", self.gates, 4, "4H")?;
        let dispatch = StepDispatch {
            kernel: &GRU_CELL_BACKWARD,
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
            "gru: lengths",
            &[
                Operand::read(&[1, 2], "gru: w_hh", self.w_hh, &[3 * hidden, hidden]),
                Operand::optional(&[10, 16], "gru: grad_output", self.grad_output, &dims.per_step(1)),
                Operand::read(&[11, 17], "gru: gates", self.gates, &dims.per_step(4)),
                Operand::read(&[12, 18], "gru: h_states", self.h_states, &dims.states()),
                Operand::write(&[9, 15], "gru: grad_gates", self.grad_gates, &dims.per_step(4)),
                Operand::write(&[13, 19], "gru: grad_state", self.grad_state, &[dims.batch, hidden]),
            ],
        )
    }
}

/// Encodes step `t` of the backward. Steps must run from T-1 down to 0; step t reads
/// `grad_gates` at t+1 (written by the previous call) and `grad_state`.
pub fn gru_cell_backward(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    backward: &GruBackward<'_>,
    t: usize,
) -> Result<()> {
    backward.encode(ctx, encoder, Step::Backward(t))
}

/// Encodes the last dispatch of the backward, after step 0: adds `(dgh_0 W_hh)` to the
/// carried dh, leaving dh0 in `grad_state`.
pub fn gru_initial_state_backward(ctx: &Context, encoder: &mut dyn Recorder, backward: &GruBackward<'_>) -> Result<()> {
    backward.encode(ctx, encoder, Step::InitialState)
}

/// Encodes the whole backward through time: steps T-1..0, then the initial state.
pub fn gru_backward(ctx: &Context, encoder: &mut dyn Recorder, backward: &GruBackward<'_>) -> Result<()> {
    let dims = GruDims::from_tensor("gru: gates", backward.gates, 4, "4H")?;
    backward_sequence(&dims, |step| backward.encode(ctx, encoder, step))
}
