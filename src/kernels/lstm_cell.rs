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

use super::{check_tensors, Lengths};
use crate::gpu::{Access, Context, Dispatch, KernelSpec, LSTM_CELL};
use crate::{DType, Error, Result, Tensor};

/// Mirror of `Params` in lstm_cell.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
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

/// Invocations per workgroup of the step kernels (a multiple of lavapipe's 8 lanes).
const WG_X: u32 = 32;
/// Invocations of the single workgroup that runs a whole sequence.
const SEQ_WG: u32 = 64;
/// [`lstm_forward`] runs the whole sequence in one workgroup when the step has at most
/// this many 4x4 (batch x unit) blocks, i.e. each of the 64 invocations loops over at
/// most 4 blocks per step instead of paying a dispatch per step.
pub const SEQUENCE_MAX_BLOCKS: usize = 4 * SEQ_WG as usize;

/// The sizes of one LSTM layer-direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LstmDims {
    /// B
    pub batch: usize,
    /// T
    pub steps: usize,
    /// H
    pub hidden: usize,
}

impl LstmDims {
    /// Reads B, T, H from `xproj` `[B, T, 4H]`.
    fn from_xproj(name: &str, xproj: &Tensor) -> Result<LstmDims> {
        match *xproj.shape() {
            [batch, steps, width] if batch > 0 && steps > 0 && width > 0 && width % 4 == 0 => Ok(LstmDims {
                batch,
                steps,
                hidden: width / 4,
            }),
            _ => Err(Error::shape(name, "[B, T, 4H] with B, T, H >= 1", xproj.shape())),
        }
    }

    fn states(&self) -> [usize; 3] {
        [self.batch, self.steps + 1, self.hidden]
    }

    fn gates(&self) -> [usize; 3] {
        [self.batch, self.steps, 4 * self.hidden]
    }

    fn sequence(&self) -> [usize; 3] {
        [self.batch, self.steps, self.hidden]
    }

    fn blocks(&self) -> usize {
        self.batch.div_ceil(4) * self.hidden.div_ceil(4)
    }

    fn params(&self, lengths: Option<&Lengths>) -> Params {
        Params {
            batch: self.batch as u32,
            steps: self.steps as u32,
            hidden: self.hidden as u32,
            has_lengths: u32::from(lengths.is_some()),
            ..Params::default()
        }
    }

    fn overrides(&self) -> [(&'static str, u32); 3] {
        [
            ("WG_X", WG_X),
            ("W_VEC4", u32::from(self.hidden.is_multiple_of(4))),
            ("SEQ_WG", SEQ_WG),
        ]
    }

    fn step_workgroups(&self) -> [u32; 3] {
        [
            (self.hidden.div_ceil(4) as u32).div_ceil(WG_X),
            self.batch.div_ceil(4) as u32,
            1,
        ]
    }
}

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
    fn check(&self, ctx: &Context) -> Result<LstmDims> {
        let dims = LstmDims::from_xproj("lstm: xproj", self.xproj)?;
        self.w_hh.check_shape("lstm: w_hh", &[4 * dims.hidden, dims.hidden])?;
        self.h_states.check_shape("lstm: h_states", &dims.states())?;
        self.c_states.check_shape("lstm: c_states", &dims.states())?;
        self.gates.check_shape("lstm: gates", &dims.gates())?;
        self.output.check_shape("lstm: output", &dims.sequence())?;
        if let Some(lengths) = self.lengths {
            lengths.check("lstm: lengths", dims.batch, dims.steps)?;
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
        Ok(dims)
    }

    fn encode(
        &self,
        ctx: &Context,
        encoder: &mut wgpu::CommandEncoder,
        kernel: &KernelSpec,
        params: Params,
        workgroups: [u32; 3],
        dims: &LstmDims,
    ) -> Result<()> {
        let lengths = self
            .lengths
            .map_or(ctx.placeholder(), |lengths| lengths.tensor().buffer());
        ctx.encode_dispatch(
            encoder,
            Dispatch {
                kernel,
                overrides: &dims.overrides(),
                buffers: &[
                    (0, self.xproj.buffer(), "lstm: xproj"),
                    (1, self.w_hh.buffer(), "lstm: w_hh"),
                    (2, self.w_hh.buffer(), "lstm: w_hh"),
                    (3, lengths, "lstm: lengths"),
                    (4, self.h_states.buffer(), "lstm: h_states"),
                    (5, self.c_states.buffer(), "lstm: c_states"),
                    (6, self.gates.buffer(), "lstm: gates"),
                    (7, self.output.buffer(), "lstm: output"),
                ],
                params: &params,
                workgroups,
            },
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
    let dims = forward.check(ctx)?;
    if t >= dims.steps {
        return Err(Error::invalid(format!("lstm step {t} is outside 0..{}", dims.steps)));
    }
    let params = Params {
        t: t as u32,
        ..dims.params(forward.lengths)
    };
    forward.encode(ctx, encoder, &LSTM_CELL_FORWARD, params, dims.step_workgroups(), &dims)
}

/// Encodes every step in one dispatch of a single workgroup (same results as
/// [`lstm_cell_forward`] for t = 0..T). Best when B * H is small.
pub fn lstm_sequence_forward(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    forward: &LstmForward<'_>,
) -> Result<()> {
    let dims = forward.check(ctx)?;
    forward.encode(
        ctx,
        encoder,
        &LSTM_SEQUENCE_FORWARD,
        dims.params(forward.lengths),
        [1, 1, 1],
        &dims,
    )
}

/// Encodes the whole forward: one workgroup for the whole sequence when the step has at
/// most [`SEQUENCE_MAX_BLOCKS`] blocks, else one dispatch per step.
pub fn lstm_forward(ctx: &Context, encoder: &mut wgpu::CommandEncoder, forward: &LstmForward<'_>) -> Result<()> {
    let dims = forward.check(ctx)?;
    if dims.blocks() <= SEQUENCE_MAX_BLOCKS {
        return lstm_sequence_forward(ctx, encoder, forward);
    }
    for t in 0..dims.steps {
        lstm_cell_forward(ctx, encoder, forward, t)?;
    }
    Ok(())
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
    fn check(&self, ctx: &Context) -> Result<LstmDims> {
        let dims = LstmDims::from_xproj("lstm: gates", self.gates)?;
        self.w_hh.check_shape("lstm: w_hh", &[4 * dims.hidden, dims.hidden])?;
        self.c_states.check_shape("lstm: c_states", &dims.states())?;
        self.grad_gates.check_shape("lstm: grad_gates", &dims.gates())?;
        self.grad_state
            .check_shape("lstm: grad_state", &[2, dims.batch, dims.hidden])?;
        if let Some(grad_output) = self.grad_output {
            grad_output.check_shape("lstm: grad_output", &dims.sequence())?;
        }
        if let Some(lengths) = self.lengths {
            lengths.check("lstm: lengths", dims.batch, dims.steps)?;
        }
        let mut inputs = vec![
            ("lstm: w_hh", self.w_hh),
            ("lstm: gates", self.gates),
            ("lstm: c_states", self.c_states),
        ];
        if let Some(grad_output) = self.grad_output {
            inputs.push(("lstm: grad_output", grad_output));
        }
        let outputs = [
            ("lstm: grad_gates", self.grad_gates),
            ("lstm: grad_state", self.grad_state),
        ];
        for (name, tensor) in inputs.iter().chain(&outputs) {
            tensor.check_dtype(name, DType::F32)?;
        }
        check_tensors(ctx, &inputs, &outputs)?;
        Ok(dims)
    }

    fn encode(&self, ctx: &Context, encoder: &mut wgpu::CommandEncoder, params: Params, dims: &LstmDims) -> Result<()> {
        let lengths = self
            .lengths
            .map_or(ctx.placeholder(), |lengths| lengths.tensor().buffer());
        let grad_output = self.grad_output.map_or(ctx.placeholder(), Tensor::buffer);
        let params = Params {
            has_dy: u32::from(self.grad_output.is_some()),
            ..params
        };
        ctx.encode_dispatch(
            encoder,
            Dispatch {
                kernel: &LSTM_CELL_BACKWARD,
                overrides: &dims.overrides(),
                buffers: &[
                    (1, self.w_hh.buffer(), "lstm: w_hh"),
                    (2, self.w_hh.buffer(), "lstm: w_hh"),
                    (3, lengths, "lstm: lengths"),
                    (9, self.grad_gates.buffer(), "lstm: grad_gates"),
                    (10, grad_output, "lstm: grad_output"),
                    (11, self.gates.buffer(), "lstm: gates"),
                    (12, self.c_states.buffer(), "lstm: c_states"),
                    (13, self.grad_state.buffer(), "lstm: grad_state"),
                ],
                params: &params,
                workgroups: dims.step_workgroups(),
            },
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
    let dims = backward.check(ctx)?;
    if t >= dims.steps {
        return Err(Error::invalid(format!("lstm step {t} is outside 0..{}", dims.steps)));
    }
    let params = Params {
        t: t as u32,
        has_next: u32::from(t + 1 < dims.steps),
        next: (t + 1) as u32,
        pointwise: 1,
        ..dims.params(backward.lengths)
    };
    backward.encode(ctx, encoder, params, &dims)
}

/// Encodes the last dispatch of the backward, after step 0: adds `(dgates_0 W_hh)` to the
/// carried dh, leaving (dh0, dc0) in `grad_state`.
pub fn lstm_initial_state_backward(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    backward: &LstmBackward<'_>,
) -> Result<()> {
    let dims = backward.check(ctx)?;
    let params = Params {
        has_next: 1,
        next: 0,
        pointwise: 0,
        ..dims.params(backward.lengths)
    };
    backward.encode(ctx, encoder, params, &dims)
}

/// Encodes the whole backward through time: steps T-1..0, then the initial state.
pub fn lstm_backward(ctx: &Context, encoder: &mut wgpu::CommandEncoder, backward: &LstmBackward<'_>) -> Result<()> {
    let dims = backward.check(ctx)?;
    for t in (0..dims.steps).rev() {
        lstm_cell_backward(ctx, encoder, backward, t)?;
    }
    lstm_initial_state_backward(ctx, encoder, backward)
}
