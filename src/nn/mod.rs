//! Modules with PyTorch's shapes, parameter names and default initialisation, built on
//! the [`graph`](crate::graph) ops. Each module registers its parameters in a
//! [`ParamStore`] under `{prefix}.{name}` (the state-dict names) and adds its ops to a
//! [`Graph`] in `forward`. One `StdRng`, seeded once, initialises a whole model.

use rand::rngs::StdRng;
use rand::Rng;

use crate::graph::{Graph, ParamId, ParamStore, RecurrentOut, RecurrentWeights, Var};
use crate::kernels::rnn_cell::Nonlinearity;
use crate::kernels::Lengths;
use crate::{Context, Error, Result, Tensor};

/// U(-bound, bound), PyTorch's `kaiming_uniform_(a=sqrt(5))`-equivalent default for
/// Linear weights and the rule for every recurrent weight and bias.
fn uniform(ctx: &Context, rng: &mut StdRng, shape: &[usize], bound: f32) -> Result<Tensor> {
    let data: Vec<f32> = (0..shape.iter().product())
        .map(|_| rng.random_range(-bound..=bound))
        .collect();
    Tensor::from_slice(ctx, &data, shape)
}

/// `len` draws of N(0, 1) by Box-Muller, `nn.Embedding`'s default.
fn normal(rng: &mut StdRng, len: usize) -> Vec<f32> {
    (0..len)
        .map(|_| {
            let u: f32 = rng.random_range(f32::MIN_POSITIVE..1.0);
            let v: f32 = rng.random_range(0.0..1.0);
            (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
        })
        .collect()
}

/// `nn.Linear(in_features, out_features, bias)`: `y = x W^T + b`.
#[derive(Clone, Copy, Debug)]
pub struct Linear {
    /// `{prefix}.weight`, `[out, in]`.
    pub weight: ParamId,
    /// `{prefix}.bias`, `[out]`.
    pub bias: Option<ParamId>,
}

impl Linear {
    /// Registers the parameters, initialised as PyTorch: U(-1/sqrt(in), 1/sqrt(in)).
    pub fn new(
        ctx: &Context,
        store: &mut ParamStore,
        rng: &mut StdRng,
        prefix: &str,
        in_features: usize,
        out_features: usize,
        bias: bool,
    ) -> Result<Linear> {
        let bound = 1.0 / (in_features as f32).sqrt();
        let weight = uniform(ctx, rng, &[out_features, in_features], bound)?;
        let weight = store.add(&format!("{prefix}.weight"), weight, true)?;
        let bias = if bias {
            let b = uniform(ctx, rng, &[out_features], bound)?;
            Some(store.add(&format!("{prefix}.bias"), b, true)?)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }

    /// `x [.., in]` to `[.., out]`.
    pub fn forward(&self, g: &mut Graph<'_>, x: Var) -> Result<Var> {
        let w = g.param(self.weight);
        let b = self.bias.map(|b| g.param(b));
        g.linear(x, w, b)
    }
}

/// `nn.Embedding(num_embeddings, embedding_dim, padding_idx)`.
#[derive(Clone, Copy, Debug)]
pub struct Embedding {
    /// `{prefix}.weight`, `[V, E]`.
    pub weight: ParamId,
    /// The row that gets no gradient (and starts at zero).
    pub padding_idx: Option<u32>,
}

impl Embedding {
    /// Registers the table, N(0, 1) with the padding row zeroed, as PyTorch.
    pub fn new(
        ctx: &Context,
        store: &mut ParamStore,
        rng: &mut StdRng,
        prefix: &str,
        num_embeddings: usize,
        embedding_dim: usize,
        padding_idx: Option<u32>,
    ) -> Result<Embedding> {
        let mut data = normal(rng, num_embeddings * embedding_dim);
        if let Some(pad) = padding_idx {
            let pad = pad as usize;
            if pad >= num_embeddings {
                return Err(Error::invalid(format!(
                    "embedding {prefix}: padding_idx {pad} is outside 0..{num_embeddings}"
                )));
            }
            data[pad * embedding_dim..(pad + 1) * embedding_dim].fill(0.0);
        }
        let table = Tensor::from_slice(ctx, &data, &[num_embeddings, embedding_dim])?;
        let weight = store.add(&format!("{prefix}.weight"), table, true)?;
        Ok(Embedding { weight, padding_idx })
    }

    /// `nn.Embedding.from_pretrained(table, freeze)`: a frozen table gets no gradient and
    /// is not counted as trainable.
    pub fn from_pretrained(
        store: &mut ParamStore,
        prefix: &str,
        table: Tensor,
        freeze: bool,
        padding_idx: Option<u32>,
    ) -> Result<Embedding> {
        if table.shape().len() != 2 {
            return Err(Error::shape(
                format!("embedding {prefix}: table"),
                "[V, E]",
                table.shape(),
            ));
        }
        let weight = store.add(&format!("{prefix}.weight"), table, !freeze)?;
        Ok(Embedding { weight, padding_idx })
    }

    /// ids `[B, T]` (u32) to `[B, T, E]`.
    pub fn forward(&self, g: &mut Graph<'_>, ids: &Tensor) -> Result<Var> {
        let w = g.param(self.weight);
        g.embedding(ids, w, self.padding_idx)
    }
}

/// Which recurrence a [`Recurrent`] layer stack runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CellKind {
    /// `nn.LSTM`
    Lstm,
    /// `nn.GRU`
    Gru,
    /// `nn.RNN` with its nonlinearity.
    Rnn(Nonlinearity),
}

impl CellKind {
    fn gates(self) -> usize {
        match self {
            CellKind::Lstm => 4,
            CellKind::Gru => 3,
            CellKind::Rnn(_) => 1,
        }
    }
}

/// `nn.LSTM` / `nn.GRU` / `nn.RNN` with `batch_first=True`, `num_layers`, `dropout`
/// between layers (unidirectional for now).
#[derive(Clone, Debug)]
pub struct Recurrent {
    kind: CellKind,
    /// Per layer: `weight_ih_l{k}`, `weight_hh_l{k}`, `bias_ih_l{k}`, `bias_hh_l{k}`.
    layers: Vec<[ParamId; 4]>,
    dropout: f32,
}

/// What [`Recurrent::forward`] returns: the last layer's output and every layer's
/// final states, PyTorch's `(output, h_n)` / `(output, (h_n, c_n))` with h_n split by layer.
#[derive(Clone, Debug)]
pub struct RecurrentStates {
    /// `[B, T, H]` of the last layer.
    pub output: Var,
    /// `[B, H]` per layer, first layer first.
    pub h_n: Vec<Var>,
    /// `[B, H]` per layer for an LSTM, empty otherwise.
    pub c_n: Vec<Var>,
}

impl Recurrent {
    /// Registers `num_layers` layers of `kind` over `input_size` features with
    /// `hidden_size` units, all weights U(-1/sqrt(H), 1/sqrt(H)) as PyTorch.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ctx: &Context,
        store: &mut ParamStore,
        rng: &mut StdRng,
        prefix: &str,
        kind: CellKind,
        input_size: usize,
        hidden_size: usize,
        num_layers: usize,
        dropout: f32,
    ) -> Result<Recurrent> {
        if num_layers == 0 || hidden_size == 0 || input_size == 0 {
            return Err(Error::invalid(format!(
                "{prefix}: input_size, hidden_size and num_layers must be >= 1"
            )));
        }
        if !(0.0..=1.0).contains(&dropout) {
            return Err(Error::invalid(format!("{prefix}: dropout {dropout} is outside [0, 1]")));
        }
        let rows = kind.gates() * hidden_size;
        let bound = 1.0 / (hidden_size as f32).sqrt();
        let mut layers = Vec::with_capacity(num_layers);
        for layer in 0..num_layers {
            let inputs = if layer == 0 { input_size } else { hidden_size };
            let mut add = |name: &str, shape: &[usize]| -> Result<ParamId> {
                let value = uniform(ctx, rng, shape, bound)?;
                store.add(&format!("{prefix}.{name}_l{layer}"), value, true)
            };
            layers.push([
                add("weight_ih", &[rows, inputs])?,
                add("weight_hh", &[rows, hidden_size])?,
                add("bias_ih", &[rows])?,
                add("bias_hh", &[rows])?,
            ]);
        }
        Ok(Recurrent { kind, layers, dropout })
    }

    /// Runs every layer over `x` `[B, T, I]` with optional per-row lengths and zero
    /// initial states; dropout (training only) on each layer's output but the last.
    pub fn forward(&self, g: &mut Graph<'_>, x: Var, lengths: Option<&Lengths>) -> Result<RecurrentStates> {
        self.forward_from(g, x, lengths, &[], &[])
    }

    /// [`Recurrent::forward`] from initial states: `h0[k]` (and `c0[k]` for an LSTM)
    /// `[B, H]` per layer, as PyTorch's `(h_0, c_0)`; empty slices mean zeros.
    pub fn forward_from(
        &self,
        g: &mut Graph<'_>,
        x: Var,
        lengths: Option<&Lengths>,
        h0: &[Var],
        c0: &[Var],
    ) -> Result<RecurrentStates> {
        let layers = self.layers.len();
        let lstm = self.kind == CellKind::Lstm;
        if !(h0.is_empty() || h0.len() == layers) || !(c0.is_empty() || (lstm && c0.len() == layers)) {
            return Err(Error::invalid(format!(
                "initial states: {layers} layers need {layers} h0{}, got {} and {}",
                if lstm { " and c0" } else { "" },
                h0.len(),
                c0.len()
            )));
        }
        let zeros_c = lstm && !h0.is_empty() && c0.is_empty();
        if zeros_c {
            return Err(Error::invalid("an LSTM's initial state needs both h0 and c0"));
        }
        let mut states = RecurrentStates {
            output: x,
            h_n: Vec::new(),
            c_n: Vec::new(),
        };
        for (k, [w_ih, w_hh, b_ih, b_hh]) in self.layers.iter().enumerate() {
            let input = if k == 0 {
                x
            } else {
                g.dropout(states.output, self.dropout)?
            };
            let weights = RecurrentWeights {
                w_ih: g.param(*w_ih),
                w_hh: g.param(*w_hh),
                b_ih: g.param(*b_ih),
                b_hh: g.param(*b_hh),
            };
            let h = h0.get(k).copied();
            let RecurrentOut { output, h_n, c_n } = match self.kind {
                CellKind::Lstm => g.lstm(input, weights, lengths, h.zip(c0.get(k).copied()))?,
                CellKind::Gru => g.gru(input, weights, lengths, h)?,
                CellKind::Rnn(act) => g.rnn(input, weights, act, lengths, h)?,
            };
            states.output = output;
            states.h_n.push(h_n);
            states.c_n.extend(c_n);
        }
        Ok(states)
    }
}
