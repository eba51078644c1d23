//! The attentions of an attention decoder: the chapter's `BahdanauAttention` (W1, W2, V)
//! and Luong's dot, general and concat scores, with the memory each computes once per
//! source (its keys) and the per-step forward.

use rand::rngs::StdRng;

use crate::graph::{Graph, ParamId, ParamStore, Var};
use crate::kernels::attention::Score;
use crate::kernels::Lengths;
use crate::nn::{linear, linear_no_bias, Linear, VarBuilder};
use crate::{Context, Error, Result};

/// `BahdanauAttention(hidden)`: `score = V(tanh(W1 q + W2 values))`.
#[derive(Clone, Copy, Debug)]
pub struct BahdanauAttention {
    /// `{prefix}.W1`: Linear(H, H).
    pub w1: Linear,
    /// `{prefix}.W2`: Linear(H, H).
    pub w2: Linear,
    /// `{prefix}.V`: Linear(H, 1); its bias shifts every score equally and gets no gradient.
    pub v: Linear,
    hidden: usize,
}

impl BahdanauAttention {
    /// Registers W1, W2 and V.
    pub fn new(ctx: &Context, store: &mut ParamStore, rng: &mut StdRng, prefix: &str, hidden: usize) -> Result<Self> {
        Self::build(hidden, VarBuilder::with_prefix(ctx, store, rng, prefix))
    }

    /// Registers `W1`, `W2` and `V` under the builder's prefix.
    pub fn build(hidden: usize, mut vb: VarBuilder<'_>) -> Result<Self> {
        Ok(BahdanauAttention {
            w1: linear(hidden, hidden, vb.pp("W1"))?,
            w2: linear(hidden, hidden, vb.pp("W2"))?,
            v: linear(hidden, 1, vb.pp("V"))?,
            hidden,
        })
    }
}

/// Luong's three scores of a query `q` (the decoder state) against a key `k` (an
/// encoder output).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LuongScore {
    /// `q . k`, no parameters.
    Dot,
    /// `(W_a q) . k`, a bias-free `W_a` `[H, H]`.
    General,
    /// `v . tanh(W_a [q; k] + b)`, `W_a` `[H, 2H]` with bias and `v` `[H]`: the layout of
    /// PyTorch's chatbot tutorial's `Attn('concat')` (`attn` = Linear(2H, H), `v` a
    /// parameter). Computed as an additive score with `W_a` split into its query and key
    /// halves, so the key half runs once per source, not once per step.
    Concat,
}

/// `LuongAttention` with the dot, general or concat score.
#[derive(Clone, Copy, Debug)]
pub struct LuongAttention {
    /// Which score.
    pub score: LuongScore,
    /// `{prefix}.W_a`: Linear(H, H, bias=False) for general, Linear(2H, H) for concat.
    pub w_a: Option<Linear>,
    /// `{prefix}.v` `[H]`, concat only.
    pub v: Option<ParamId>,
    hidden: usize,
}

impl LuongAttention {
    /// Registers the score's parameters under `prefix` (none for dot).
    pub fn new(
        ctx: &Context,
        store: &mut ParamStore,
        rng: &mut StdRng,
        prefix: &str,
        hidden: usize,
        score: LuongScore,
    ) -> Result<Self> {
        Self::build(hidden, score, VarBuilder::with_prefix(ctx, store, rng, prefix))
    }

    /// Registers `W_a` (and `v` for concat) under the builder's prefix.
    pub fn build(hidden: usize, score: LuongScore, mut vb: VarBuilder<'_>) -> Result<Self> {
        let (w_a, v) = match score {
            LuongScore::Dot => (None, None),
            LuongScore::General => (Some(linear_no_bias(hidden, hidden, vb.pp("W_a"))?), None),
            LuongScore::Concat => {
                let w_a = linear(2 * hidden, hidden, vb.pp("W_a"))?;
                let bound = 1.0 / (hidden as f32).sqrt();
                (Some(w_a), Some(vb.uniform("v", &[hidden], bound)?))
            }
        };
        Ok(LuongAttention { score, w_a, v, hidden })
    }
}

/// Either attention of an attention decoder (the chapter's `AttentionDecoder`).
#[derive(Clone, Copy, Debug)]
pub enum Attention {
    /// Additive.
    Bahdanau(BahdanauAttention),
    /// Dot or general.
    Luong(LuongAttention),
}

/// What an attention needs from the encoder, computed once per source sequence.
#[derive(Clone, Copy, Debug)]
pub struct Memory {
    /// Encoder outputs `[B, S, H]`: the values.
    pub values: Var,
    /// The keys: `W2 values` (Bahdanau) or the values themselves (Luong).
    pub keys: Var,
    /// The score's vector `[H]`: Bahdanau's `V.weight`, Luong concat's `v`.
    pub v: Option<Var>,
    /// Luong concat's query half of `W_a` `[H, H]`.
    pub query_weight: Option<Var>,
}

impl Attention {
    /// Prepares the keys of a source sequence (Bahdanau's `W2 values` once, not per step).
    pub fn memory(&self, g: &mut Graph<'_>, values: Var) -> Result<Memory> {
        match self {
            Attention::Bahdanau(a) => {
                let keys = a.w2.forward(g, values)?;
                let v = g.param(a.v.weight)?;
                let v = g.reshape(v, &[a.hidden])?;
                Ok(Memory {
                    values,
                    keys,
                    v: Some(v),
                    query_weight: None,
                })
            }
            Attention::Luong(a) => match (a.score, a.w_a, a.v) {
                (LuongScore::Concat, Some(w_a), Some(v)) => {
                    // W_a [q; k] + b = W_q q + (W_k k + b): the key half once per source.
                    let weight = g.param(w_a.weight)?;
                    let (w_q, w_k) = g.split(weight, a.hidden)?;
                    let bias = w_a.bias.map(|b| g.param(b)).transpose()?;
                    let keys = g.linear(values, w_k, bias)?;
                    Ok(Memory {
                        values,
                        keys,
                        v: Some(g.param(v)?),
                        query_weight: Some(w_q),
                    })
                }
                _ => Ok(Memory {
                    values,
                    keys: values,
                    v: None,
                    query_weight: None,
                }),
            },
        }
    }

    /// One step: the context `[B, H]` and the weights `[B, S]` for the query state `[B, H]`.
    pub fn forward(
        &self,
        g: &mut Graph<'_>,
        query: Var,
        memory: &Memory,
        lengths: Option<&Lengths>,
    ) -> Result<(Var, Var)> {
        match self {
            Attention::Bahdanau(a) => {
                let q = a.w1.forward(g, query)?;
                g.attention(Score::Additive, q, memory.keys, memory.v, memory.values, lengths)
            }
            Attention::Luong(a) => match (a.score, a.w_a, memory.query_weight) {
                (LuongScore::Concat, _, Some(w_q)) => {
                    let q = g.linear(query, w_q, None)?;
                    g.attention(Score::Additive, q, memory.keys, memory.v, memory.values, lengths)
                }
                (LuongScore::Concat, _, None) => Err(Error::invalid(
                    "Luong concat attention: the memory was not made by this attention",
                )),
                (_, w_a, _) => {
                    let q = match w_a {
                        Some(w_a) => w_a.forward(g, query)?,
                        None => query,
                    };
                    g.attention(Score::Dot, q, memory.keys, None, memory.values, lengths)
                }
            },
        }
    }
}

/// Which attention a decoder uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionKind {
    /// The chapter's additive attention.
    Bahdanau,
    /// Luong's dot, general or concat score.
    Luong(LuongScore),
}
