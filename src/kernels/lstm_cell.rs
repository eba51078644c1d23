//! Launchers of `shaders/lstm_cell.wgsl`: one LSTM step forward (or a whole sequence in
//! one workgroup) and one step backward, with PyTorch's gate order i, f, g, o.
//!
//! A layer runs them as (DESIGN.md, "The hot paths"): the input projection
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

use super::recurrent::{backward_sequence, encode_step, forward_sequence, Step, StepDispatch};
use super::{check_tensors, Lengths};
use crate::gpu::{Access, Context, KernelSpec, LSTM_CELL};
use crate::{DType, Result, Tensor};

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
    fn encode(&self, ctx: &Context, encoder: &mut wgpu::CommandEncoder, step: Step) -> Result<()> {
        let dims = LstmDims::from_tensor("lstm: xproj", self.xproj, 4, "4H")?;
        self.w_hh.check_shape("lstm: w_hh", &[4 * dims.hidden, dims.hidden])?;
        self.h_states.check_shape("lstm: h_states", &dims.states())?;
        self.c_states.check_shape("lstm: c_states", &dims.states())?;
        self.gates.check_shape("lstm: gates", &dims.per_step(4))?;
        self.output.check_shape("lstm: output", &dims.per_step(1))?;
        dims.check_lengths("lstm: lengths", self.lengths)?;
        if let Step::Forward(t) = step {
            dims.check_step(t)?;
        }
        let inputs = [("lstm: xproj", self.xproj), ("lstm: w_hh", self.w_hh)];
        let outputs = [
            ("lstm: h_states", self.h_states),
            ("lstm: c_states", self.c_states),
            ("lstm: gates", self.gates),
            ("lstm: output", self.output),
        ];
        for (name, tensor) in inputs.iter().chain(&outputs) {
            tensor.check_dtype(name, DType::F32)?;
        }
        check_tensors(ctx, &inputs, &outputs)?;
        let lengths = self
            .lengths
            .map_or(ctx.placeholder(), |lengths| lengths.tensor().buffer());
        let kernel = match step {
            Step::Sequence => &LSTM_SEQUENCE_FORWARD,
            _ => &LSTM_CELL_FORWARD,
        };
        let dispatch = StepDispatch {
            kernel,
            dims,
            step,
            lengths: self.lengths,
            has_dy: false,
            extra_overrides: &[],
        };
        encode_step(
            ctx,
            encoder,
            dispatch,
            &[
                (0, self.xproj.buffer(), "lstm: xproj"),
                (1, self.w_hh.buffer(), "lstm: w_hh"),
                (2, self.w_hh.buffer(), "lstm: w_hh"),
                (3, lengths, "lstm: lengths"),
                (4, self.h_states.buffer(), "lstm: h_states"),
                (5, self.c_states.buffer(), "lstm: c_states"),
                (6, self.gates.buffer(), "lstm: gates"),
                (7, self.output.buffer(), "lstm: output"),
            ],
        )
    }
}

/// Encodes step `t` of the forward: reads slot t of the states, writes slot t+1, the
/// gates and the output at t.
pub fn lstm_cell_forward(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    forward: &LstmForward<'_>,
    t: usize,
) -> Result<()> {
    forward.encode(ctx, encoder, Step::Forward(t))
}

/// Encodes every step in one dispatch of a single workgroup (same results as
/// [`lstm_cell_forward`] for t = 0..T). Best when B * H is small.
pub fn lstm_sequence_forward(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    forward: &LstmForward<'_>,
) -> Result<()> {
    forward.encode(ctx, encoder, Step::Sequence)
}

/// Encodes the whole forward: one workgroup for the whole sequence when a step has at
/// most [`SEQUENCE_MAX_BLOCKS`] blocks, else one dispatch per step.
pub fn lstm_forward(ctx: &Context, encoder: &mut wgpu::CommandEncoder, forward: &LstmForward<'_>) -> Result<()> {
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
    fn encode(&self, ctx: &Context, encoder: &mut wgpu::CommandEncoder, step: Step) -> Result<()> {
        let dims = LstmDims::from_tensor("lstm: gates", self.gates, 4, "4H")?;
        self.w_hh.check_shape("lstm: w_hh", &[4 * dims.hidden, dims.hidden])?;
        self.c_states.check_shape("lstm: c_states", &dims.states())?;
        self.grad_gates.check_shape("lstm: grad_gates", &dims.per_step(4))?;
        self.grad_state
            .check_shape("lstm: grad_state", &[2, dims.batch, dims.hidden])?;
        if let Some(grad_output) = self.grad_output {
            grad_output.check_shape("lstm: grad_output", &dims.per_step(1))?;
        }
        dims.check_lengths("lstm: lengths", self.lengths)?;
        if let Step::Backward(t) = step {
            dims.check_step(t)?;
        }
        let mut inputs = vec![
            ("lstm: w_hh", self.w_hh),
            ("lstm: gates", self.gates),
            ("lstm: c_states", self.c_states),
        ];
        inputs.extend(self.grad_output.map(|grad_output| ("lstm: grad_output", grad_output)));
        let outputs = [
            ("lstm: grad_gates", self.grad_gates),
            ("lstm: grad_state", self.grad_state),
        ];
        for (name, tensor) in inputs.iter().chain(&outputs) {
            tensor.check_dtype(name, DType::F32)?;
        }
        check_tensors(ctx, &inputs, &outputs)?;
        let lengths = self
            .lengths
            .map_or(ctx.placeholder(), |lengths| lengths.tensor().buffer());
        let grad_output = self.grad_output.map_or(ctx.placeholder(), Tensor::buffer);
        let dispatch = StepDispatch {
            kernel: &LSTM_CELL_BACKWARD,
            dims,
            step,
            lengths: self.lengths,
            has_dy: self.grad_output.is_some(),
            extra_overrides: &[],
        };
        encode_step(
            ctx,
            encoder,
            dispatch,
            &[
                (1, self.w_hh.buffer(), "lstm: w_hh"),
                (2, self.w_hh.buffer(), "lstm: w_hh"),
                (3, lengths, "lstm: lengths"),
                (9, self.grad_gates.buffer(), "lstm: grad_gates"),
                (10, grad_output, "lstm: grad_output"),
                (11, self.gates.buffer(), "lstm: gates"),
                (12, self.c_states.buffer(), "lstm: c_states"),
                (13, self.grad_state.buffer(), "lstm: grad_state"),
            ],
        )
    }
}

/// Encodes step `t` of the backward. Steps must run from T-1 down to 0; step t reads
/// `grad_gates` at t+1 (written by the previous call) and `grad_state`.
pub fn lstm_cell_backward(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    backward: &LstmBackward<'_>,
    t: usize,
) -> Result<()> {
    backward.encode(ctx, encoder, Step::Backward(t))
}

/// Encodes the last dispatch of the backward, after step 0: adds `(dgates_0 W_hh)` to the
/// carried dh, leaving (dh0, dc0) in `grad_state`.
pub fn lstm_initial_state_backward(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    backward: &LstmBackward<'_>,
) -> Result<()> {
    backward.encode(ctx, encoder, Step::InitialState)
}

/// Encodes the whole backward through time: steps T-1..0, then the initial state.
pub fn lstm_backward(ctx: &Context, encoder: &mut wgpu::CommandEncoder, backward: &LstmBackward<'_>) -> Result<()> {
    let dims = LstmDims::from_tensor("lstm: gates", backward.gates, 4, "4H")?;
    backward_sequence(&dims, |step| backward.encode(ctx, encoder, step))
}
