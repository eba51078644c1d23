//! Launchers of `shaders/embedding.wgsl`: the lookup of `nn.Embedding` and its
//! deterministic backward.
//!
//! Shapes (N = element count of `ids`, usually `[B, T]`):
//! - `ids`: u32, any shape, e.g. `[B, T]`
//! - `weight`, `grad_weight`: f32 `[V, E]`
//! - `out`, `grad_out`: f32 `ids.shape ++ [E]`, e.g. `[B, T, E]`
//! - `error_flag`: u32 `[1]`, a counter of out-of-range ids seen by the forward
//!
//! Ids from the host go through [`upload_ids`], which rejects an id >= V before anything
//! is dispatched. Ids made on the GPU (a sampled token fed back) are guarded in the
//! shader instead. A frozen embedding simply never calls [`embedding_backward`].

use super::{check_tensors, element_grid};
use crate::gpu::{Access, Context, Dispatch, KernelSpec, Recorder, EMBEDDING};
use crate::tensor::element_count;
use crate::{DType, Error, Result, Tensor};

/// Uploads host token ids as a u32 tensor of `shape`, checking every id against the
/// vocabulary size first: `Err(InvalidArgument)` names the first bad position (as an
/// index into `shape`) and its id, and nothing is uploaded.
pub fn upload_ids(ctx: &Context, ids: &[u32], shape: &[usize], vocab: usize) -> Result<Tensor> {
    let count = element_count(shape)?;
    if ids.len() != count {
        return Err(Error::shape(
            "embedding: ids data",
            format!("{count} elements for shape {shape:?}"),
            &[ids.len()],
        ));
    }
    if let Some(flat) = ids.iter().position(|&id| id as usize >= vocab) {
        return Err(Error::invalid(format!(
            "embedding ids: id {} at position {:?} (element {flat}) is not below the vocabulary size {vocab}",
            ids[flat],
            unflatten(flat, shape)
        )));
    }
    Tensor::from_slice(ctx, ids, shape)
}

/// The multi-index of element `flat` of a row-major `shape`.
fn unflatten(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for (slot, &dim) in index.iter_mut().zip(shape).rev() {
        *slot = flat % dim;
        flat /= dim;
    }
    index
}

/// Options of [`embedding_backward`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EmbeddingBackward {
    /// The row that gets no gradient (`nn.Embedding(padding_idx=...)`); must be < V.
    pub padding_idx: Option<u32>,
    /// Add into `grad_weight` (a weight used twice, e.g. tied input and output
    /// embeddings) instead of overwriting it. When accumulating, rows whose id does not
    /// occur (and the padding row) are left untouched; when overwriting they become 0.
    pub accumulate: bool,
}

/// Scratch memory of [`embedding_backward`]: the sorted (id, position) keys. Made once
/// and reused every step, so the backward allocates nothing; the caller owns it, so it
/// outlives the encoder it is used in (a launcher cannot keep a temporary alive until a
/// host submits its own encoder).
#[derive(Clone, Debug)]
pub struct EmbeddingWorkspace {
    keys: Tensor,
    sort_len: usize,
}

/// Keys per workgroup of the block sort (`BLOCK` in the shader).
const BLOCK: usize = 512;

/// Length of the bitonic sort for `positions` keys: a power of two, at least one block.
fn sort_len(positions: usize) -> usize {
    positions.next_power_of_two().max(BLOCK)
}

impl EmbeddingWorkspace {
    /// A workspace for backward passes over up to `positions` ids (`B * T`).
    pub fn new(ctx: &Context, positions: usize) -> Result<Self> {
        if positions == 0 {
            return Err(Error::invalid("embedding workspace: positions must be >= 1"));
        }
        let sort_len = sort_len(positions);
        let keys = Tensor::zeros(ctx, &[sort_len, 2], DType::U32)?;
        Ok(EmbeddingWorkspace { keys, sort_len })
    }

    /// The most positions a backward with this workspace may have.
    pub fn capacity(&self) -> usize {
        self.sort_len
    }
}

/// Mirror of `Params` in embedding.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    positions: u32,
    vocab: u32,
    embed: u32,
    padded: u32,
    stage_k: u32,
    stage_j: u32,
    padding_idx: u32,
    has_padding: u32,
    accumulate: u32,
    _pad: [u32; 3],
}

const EMBEDDING_FORWARD: KernelSpec = KernelSpec {
    family: &EMBEDDING,
    entry_point: "embedding_forward",
    bindings: &[
        (0, Access::Read),
        (1, Access::Read),
        (3, Access::ReadWrite),
        (4, Access::ReadWrite),
        (7, Access::Params),
    ],
};

const EMBEDDING_BACKWARD_SORT_BLOCKS: KernelSpec = KernelSpec {
    family: &EMBEDDING,
    entry_point: "embedding_backward_sort_blocks",
    bindings: &[(0, Access::Read), (5, Access::ReadWrite), (7, Access::Params)],
};

const EMBEDDING_BACKWARD_MERGE: KernelSpec = KernelSpec {
    family: &EMBEDDING,
    entry_point: "embedding_backward_merge",
    bindings: &[(5, Access::ReadWrite), (7, Access::Params)],
};

const EMBEDDING_BACKWARD_MERGE_BLOCKS: KernelSpec = KernelSpec {
    family: &EMBEDDING,
    entry_point: "embedding_backward_merge_blocks",
    bindings: &[(5, Access::ReadWrite), (7, Access::Params)],
};

const EMBEDDING_BACKWARD: KernelSpec = KernelSpec {
    family: &EMBEDDING,
    entry_point: "embedding_backward",
    bindings: &[
        (2, Access::Read),
        (5, Access::ReadWrite),
        (6, Access::ReadWrite),
        (7, Access::Params),
    ],
};

/// Invocations per workgroup of the gather kernels: a multiple of lavapipe's 8 lanes
/// within every adapter's default 256.
const WG: u32 = 256;
/// `SORT_WG` in the shader: two keys per invocation of a block.
const SORT_WG: u32 = 256;

/// `(V, E)` of a `[V, E]` f32 table named `name`.
fn table_dims(name: &str, table: &Tensor) -> Result<(usize, usize)> {
    table.check_dtype(name, DType::F32)?;
    match *table.shape() {
        [vocab, embed] if vocab > 0 && embed > 0 => Ok((vocab, embed)),
        _ => Err(Error::shape(name, "[V, E] with V, E >= 1", table.shape())),
    }
}

/// Checks `ids` (u32, at least one element) and returns the shape `out` must have.
fn check_ids(ids: &Tensor, embed: usize) -> Result<Vec<usize>> {
    ids.check_dtype("embedding: ids", DType::U32)?;
    if ids.is_empty() || ids.shape().is_empty() {
        return Err(Error::shape(
            "embedding: ids",
            "[B, T] (any shape of >= 1 element)",
            ids.shape(),
        ));
    }
    let mut out_shape = ids.shape().to_vec();
    out_shape.push(embed);
    Ok(out_shape)
}

/// Encodes `out[.., :] = weight[ids[..], :]`. An id >= V (only possible for ids made on
/// the GPU; see [`upload_ids`]) writes zeros and adds 1 to `error_flag[0]`, which is only
/// ever incremented: zero it once (`Tensor::zeros`), read it when convenient (a step's
/// end), and zero it again after a non-zero read. Never submits or waits.
pub fn embedding_forward(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    ids: &Tensor,
    weight: &Tensor,
    out: &Tensor,
    error_flag: &Tensor,
) -> Result<()> {
    let (vocab, embed) = table_dims("embedding: weight", weight)?;
    let out_shape = check_ids(ids, embed)?;
    out.check_dtype("embedding: out", DType::F32)?;
    out.check_shape("embedding: out", &out_shape)?;
    error_flag.check_dtype("embedding: error_flag", DType::U32)?;
    error_flag.check_shape("embedding: error_flag", &[1])?;
    check_tensors(
        ctx,
        &[("embedding: ids", ids), ("embedding: weight", weight)],
        &[("embedding: out", out), ("embedding: error_flag", error_flag)],
    )?;
    let params = Params {
        positions: ids.len() as u32,
        vocab: vocab as u32,
        embed: embed as u32,
        ..Params::default()
    };
    ctx.encode_dispatch(
        encoder,
        Dispatch {
            kernel: &EMBEDDING_FORWARD,
            overrides: &[("WG", WG)],
            buffers: &[
                (0, ids.buffer(), "embedding: ids"),
                (1, weight.buffer(), "embedding: weight"),
                (3, out.buffer(), "embedding: out"),
                (4, error_flag.buffer(), "embedding: error_flag"),
            ],
            params: &params,
            workgroups: element_grid(ctx, out.len(), WG),
        },
    )
}

/// Encodes the weight gradient of [`embedding_forward`] given `grad_out`:
/// `dW[v, :] = sum of grad_out[n, :] over the positions n with ids[n] == v`, summed in
/// increasing n, without float atomics, so the result is bitwise reproducible (the
/// argument is in the shader's header). The `padding_idx` row gets no gradient; ids >= V
/// contribute nothing. `workspace` must hold at least N positions. Never submits or waits.
pub fn embedding_backward(
    ctx: &Context,
    encoder: &mut dyn Recorder,
    op: &EmbeddingBackward,
    ids: &Tensor,
    grad_out: &Tensor,
    grad_weight: &Tensor,
    workspace: &EmbeddingWorkspace,
) -> Result<()> {
    let (vocab, embed) = table_dims("embedding: grad_weight", grad_weight)?;
    let out_shape = check_ids(ids, embed)?;
    grad_out.check_dtype("embedding: grad_out", DType::F32)?;
    grad_out.check_shape("embedding: grad_out", &out_shape)?;
    if let Some(padding_idx) = op.padding_idx {
        if padding_idx as usize >= vocab {
            return Err(Error::invalid(format!(
                "embedding padding_idx {padding_idx} is not below the vocabulary size {vocab} of grad_weight {:?}",
                grad_weight.shape()
            )));
        }
    }
    let positions = ids.len();
    if workspace.capacity() < positions {
        return Err(Error::invalid(format!(
            "embedding workspace holds {} positions but ids {:?} has {positions}",
            workspace.capacity(),
            ids.shape()
        )));
    }
    check_tensors(
        ctx,
        &[("embedding: ids", ids), ("embedding: grad_out", grad_out)],
        &[
            ("embedding: grad_weight", grad_weight),
            ("embedding: workspace", &workspace.keys),
        ],
    )?;

    let padded = sort_len(positions);
    let base = Params {
        positions: positions as u32,
        vocab: vocab as u32,
        embed: embed as u32,
        padded: padded as u32,
        padding_idx: op.padding_idx.unwrap_or(0),
        has_padding: u32::from(op.padding_idx.is_some()),
        accumulate: u32::from(op.accumulate),
        ..Params::default()
    };
    let keys = (5, workspace.keys.buffer(), "embedding: workspace");
    let blocks = element_grid(ctx, padded / BLOCK, 1);

    // 1. Sort every block of 512 keys (stages k = 2 .. 512 of the bitonic network).
    ctx.encode_dispatch(
        encoder,
        Dispatch {
            kernel: &EMBEDDING_BACKWARD_SORT_BLOCKS,
            overrides: &[],
            buffers: &[(0, ids.buffer(), "embedding: ids"), keys],
            params: &base,
            workgroups: blocks,
        },
    )?;
    // 2. The stages k = 1024 .. P: steps of stride >= 512 across blocks, one dispatch
    //    each, then the rest of the stage inside each block.
    let mut k = 2 * BLOCK;
    while k <= padded {
        let mut j = k / 2;
        while j >= BLOCK {
            let params = Params {
                stage_k: k as u32,
                stage_j: j as u32,
                ..base
            };
            ctx.encode_dispatch(
                encoder,
                Dispatch {
                    kernel: &EMBEDDING_BACKWARD_MERGE,
                    overrides: &[],
                    buffers: &[keys],
                    params: &params,
                    workgroups: element_grid(ctx, padded / 2, SORT_WG),
                },
            )?;
            j /= 2;
        }
        let params = Params {
            stage_k: k as u32,
            ..base
        };
        ctx.encode_dispatch(
            encoder,
            Dispatch {
                kernel: &EMBEDDING_BACKWARD_MERGE_BLOCKS,
                overrides: &[],
                buffers: &[keys],
                params: &params,
                workgroups: blocks,
            },
        )?;
        k *= 2;
    }
    // 3. Gather: one invocation per (s, e) of the sorted keys; the first of each run of
    //    equal ids sums the run into its row. Rows no id names are not visited, so when
    //    overwriting they are cleared first (a memset, ordered before the dispatch).
    if !op.accumulate {
        encoder
            .command_encoder()
            .clear_buffer(grad_weight.buffer(), 0, Some(grad_weight.size_in_bytes()));
    }
    ctx.encode_dispatch(
        encoder,
        Dispatch {
            kernel: &EMBEDDING_BACKWARD,
            overrides: &[("WG", WG)],
            buffers: &[
                (2, grad_out.buffer(), "embedding: grad_out"),
                keys,
                (6, grad_weight.buffer(), "embedding: grad_weight"),
            ],
            params: &base,
            workgroups: element_grid(ctx, positions * embed, WG),
        },
    )
}
