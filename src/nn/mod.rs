//! Modules with PyTorch's shapes, parameter names and default initialisation, built on
//! the [`graph`](crate::graph) ops. Each module registers its parameters in a
//! [`ParamStore`] under `{prefix}.{name}` (the state-dict names) and adds its ops to a
//! [`Graph`] in `forward`. One `StdRng`, seeded once, initialises a whole model.

mod builder;
pub mod generator;
pub mod models;
pub mod seq2seq;

pub(crate) use builder::join;
pub use builder::VarBuilder;

use rand::rngs::StdRng;
use rand::Rng;

use crate::graph::{Graph, ParamId, ParamStore, RecurrentOut, RecurrentWeights, Var};
use crate::kernels::rnn_cell::Nonlinearity;
use crate::kernels::Lengths;
use crate::{Context, Error, Result, Tensor};

/// U(-bound, bound), PyTorch's `kaiming_uniform_(a=sqrt(5))`-equivalent default for
/// Linear weights and the rule for every recurrent weight and bias.
pub(crate) fn uniform(ctx: &Context, rng: &mut StdRng, name: &str, shape: &[usize], bound: f32) -> Result<Tensor> {
    let count = ctx.check_tensor_size(name, shape)?;
    let data: Vec<f32> = (0..count).map(|_| rng.random_range(-bound..=bound)).collect();
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
    fn build(in_features: usize, out_features: usize, bias: bool, mut vb: VarBuilder<'_>) -> Result<Linear> {
        let bound = 1.0 / (in_features as f32).sqrt();
        let weight = vb.uniform("weight", &[out_features, in_features], bound)?;
        let bias = if bias {
            Some(vb.uniform("bias", &[out_features], bound)?)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }

    /// `x [.., in]` to `[.., out]`.
    pub fn forward(&self, g: &mut Graph<'_>, x: Var) -> Result<Var> {
        // Checked here too, so that a module wired to the wrong one names itself.
        let w = g.param(self.weight)?;
        let in_features = g.value(w).shape()[1];
        let x_shape = g.value(x).shape();
        if x_shape.last() != Some(&in_features) {
            let name = g.param_name(self.weight);
            return Err(Error::shape(
                format!("{}: input", name.strip_suffix(".weight").unwrap_or(name)),
                format!("[.., {in_features}]"),
                x_shape,
            ));
        }
        let b = self.bias.map(|b| g.param(b)).transpose()?;
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
        let weight = store.add(&join(prefix, "weight"), table, !freeze)?;
        Ok(Embedding { weight, padding_idx })
    }

    /// ids `[B, T]` (u32) to `[B, T, E]`.
    pub fn forward(&self, g: &mut Graph<'_>, ids: &Tensor) -> Result<Var> {
        let w = g.param(self.weight)?;
        g.embedding(ids, w, self.padding_idx)
    }
}

/// `nn.Linear(in_features, out_features)`: registers `weight` `[out, in]` and `bias`
/// `[out]` under the builder's prefix, U(-1/sqrt(in), 1/sqrt(in)) as PyTorch.
pub fn linear(in_features: usize, out_features: usize, vb: VarBuilder<'_>) -> Result<Linear> {
    Linear::build(in_features, out_features, true, vb)
}

/// `nn.Linear(in_features, out_features, bias=False)`.
pub fn linear_no_bias(in_features: usize, out_features: usize, vb: VarBuilder<'_>) -> Result<Linear> {
    Linear::build(in_features, out_features, false, vb)
}

/// The options of `nn.Embedding` beyond its sizes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EmbeddingConfig {
    /// The row that starts at zero and gets no gradient.
    pub padding_idx: Option<u32>,
}

/// `nn.Embedding(num_embeddings, embedding_dim, padding_idx)`: registers `weight`
/// `[V, E]` under the builder's prefix, N(0, 1) with the padding row zeroed, as PyTorch.
pub fn embedding(
    num_embeddings: usize,
    embedding_dim: usize,
    config: EmbeddingConfig,
    mut vb: VarBuilder<'_>,
) -> Result<Embedding> {
    let name = vb.name("weight");
    let ctx = vb.context();
    let count = ctx.check_tensor_size(&name, &[num_embeddings, embedding_dim])?;
    if let Some(pad) = config.padding_idx.filter(|&pad| pad as usize >= num_embeddings) {
        return Err(Error::invalid(format!(
            "embedding {name}: padding_idx {pad} is outside 0..{num_embeddings}"
        )));
    }
    let mut data = normal(vb.rng(), count);
    if let Some(pad) = config.padding_idx {
        let pad = pad as usize;
        data[pad * embedding_dim..(pad + 1) * embedding_dim].fill(0.0);
    }
    let table = Tensor::from_slice(ctx, &data, &[num_embeddings, embedding_dim])?;
    let weight = vb.add("weight", table, true)?;
    Ok(Embedding {
        weight,
        padding_idx: config.padding_idx,
    })
}

/// `nn.LSTM` / `nn.GRU` / `nn.RNN` with `config`: registers `weight_ih_l{k}`,
/// `weight_hh_l{k}`, `bias_ih_l{k}`, `bias_hh_l{k}` (and `*_reverse`) under the builder's
/// prefix, every weight U(-1/sqrt(H), 1/sqrt(H)) as PyTorch.
pub fn recurrent(config: RecurrentConfig, vb: VarBuilder<'_>) -> Result<Recurrent> {
    Recurrent::build(config, vb)
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

/// The constructor arguments of `nn.LSTM` / `nn.GRU` / `nn.RNN` (`batch_first=True`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RecurrentConfig {
    /// LSTM, GRU or RNN (with its nonlinearity).
    pub kind: CellKind,
    /// I
    pub input_size: usize,
    /// H
    pub hidden_size: usize,
    /// Stacked layers.
    pub num_layers: usize,
    /// Dropout on every layer's output but the last, while training.
    pub dropout: f32,
    /// A second direction per layer reading each row backwards within its length; the
    /// layer's output is `[forward; backward]`, `[B, T, 2H]`.
    pub bidirectional: bool,
}

impl RecurrentConfig {
    /// One unidirectional layer without dropout.
    pub fn new(kind: CellKind, input_size: usize, hidden_size: usize) -> Self {
        RecurrentConfig {
            kind,
            input_size,
            hidden_size,
            num_layers: 1,
            dropout: 0.0,
            bidirectional: false,
        }
    }
}

/// `nn.LSTM` / `nn.GRU` / `nn.RNN` with `batch_first=True`, `num_layers`, `dropout`
/// between layers and `bidirectional`.
#[derive(Clone, Debug)]
pub struct Recurrent {
    config: RecurrentConfig,
    /// Per layer and direction (forward first): `weight_ih_l{k}[_reverse]`,
    /// `weight_hh_l{k}[_reverse]`, `bias_ih_l{k}[_reverse]`, `bias_hh_l{k}[_reverse]`.
    layers: Vec<Vec<[ParamId; 4]>>,
}

/// What [`Recurrent::forward`] returns: the last layer's output and every layer's
/// final states, PyTorch's `(output, h_n)` / `(output, (h_n, c_n))` with h_n split by
/// layer and direction (layer 0 forward, layer 0 backward, layer 1 forward, ...).
#[derive(Clone, Debug)]
pub struct RecurrentStates {
    /// `[B, T, H]` of the last layer (`[B, T, 2H]` bidirectional).
    pub output: Var,
    /// `[B, H]` per layer and direction.
    pub h_n: Vec<Var>,
    /// `[B, H]` per layer and direction for an LSTM, empty otherwise.
    pub c_n: Vec<Var>,
}

impl Recurrent {
    fn build(config: RecurrentConfig, mut vb: VarBuilder<'_>) -> Result<Recurrent> {
        let RecurrentConfig {
            kind,
            input_size,
            hidden_size,
            num_layers,
            dropout,
            bidirectional,
        } = config;
        let prefix = vb.prefix().to_string();
        if num_layers == 0 || hidden_size == 0 || input_size == 0 {
            return Err(Error::invalid(format!(
                "{prefix}: input_size, hidden_size and num_layers must be >= 1"
            )));
        }
        if !(0.0..=1.0).contains(&dropout) {
            return Err(Error::invalid(format!("{prefix}: dropout {dropout} is outside [0, 1]")));
        }
        let directions = if bidirectional { 2 } else { 1 };
        let rows = hidden_size
            .checked_mul(kind.gates())
            .ok_or_else(|| Error::invalid(format!("{prefix}: hidden_size {hidden_size} is too large")))?;
        let bound = 1.0 / (hidden_size as f32).sqrt();
        let mut layers = Vec::with_capacity(num_layers);
        for layer in 0..num_layers {
            let inputs = if layer == 0 {
                input_size
            } else {
                directions * hidden_size
            };
            let mut per_direction = Vec::with_capacity(directions);
            for direction in 0..directions {
                let suffix = if direction == 1 { "_reverse" } else { "" };
                let mut add = |name: &str, shape: &[usize]| -> Result<ParamId> {
                    vb.uniform(&format!("{name}_l{layer}{suffix}"), shape, bound)
                };
                per_direction.push([
                    add("weight_ih", &[rows, inputs])?,
                    add("weight_hh", &[rows, hidden_size])?,
                    add("bias_ih", &[rows])?,
                    add("bias_hh", &[rows])?,
                ]);
            }
            layers.push(per_direction);
        }
        Ok(Recurrent { config, layers })
    }

    /// The constructor arguments.
    pub fn config(&self) -> &RecurrentConfig {
        &self.config
    }

    /// `[weight_ih, weight_hh, bias_ih, bias_hh]` of `layer` in `direction` (0 forward,
    /// 1 reverse), or `None` past the stack.
    pub fn layer_params(&self, layer: usize, direction: usize) -> Option<[ParamId; 4]> {
        self.layers.get(layer)?.get(direction).copied()
    }

    /// Runs every layer over `x` `[B, T, I]` with optional per-row lengths and zero
    /// initial states; dropout (training only) on each layer's output but the last.
    pub fn forward(&self, g: &mut Graph<'_>, x: Var, lengths: Option<&Lengths>) -> Result<RecurrentStates> {
        self.forward_from(g, x, lengths, &[], &[])
    }

    /// [`Recurrent::forward`] from initial states: `h0` (and `c0` for an LSTM) `[B, H]`
    /// per layer and direction, as PyTorch's `(h_0, c_0)`; empty slices mean zeros.
    pub fn forward_from(
        &self,
        g: &mut Graph<'_>,
        x: Var,
        lengths: Option<&Lengths>,
        h0: &[Var],
        c0: &[Var],
    ) -> Result<RecurrentStates> {
        let states_needed = self.layers.iter().map(Vec::len).sum::<usize>();
        let lstm = self.config.kind == CellKind::Lstm;
        let h_ok = h0.is_empty() || h0.len() == states_needed;
        let c_ok = if lstm { c0.len() == h0.len() } else { c0.is_empty() };
        if !h_ok || !c_ok {
            return Err(Error::invalid(format!(
                "initial states: {states_needed} layer-directions need {states_needed} h0{}, got {} and {}",
                if lstm { " and as many c0" } else { "" },
                h0.len(),
                c0.len()
            )));
        }
        let mut states = RecurrentStates {
            output: x,
            h_n: Vec::new(),
            c_n: Vec::new(),
        };
        // The input's features, checked here so that an error names the module.
        let x_shape = g.value(x).shape();
        if x_shape.len() != 3 || x_shape[2] != self.config.input_size {
            let name = g.param_name(self.layers[0][0][0]);
            return Err(Error::shape(
                format!("{}: input", name.strip_suffix(".weight_ih_l0").unwrap_or(name)),
                format!("[B, T, {}]", self.config.input_size),
                x_shape,
            ));
        }
        let mut state_index = 0;
        for (k, directions) in self.layers.iter().enumerate() {
            let input = if k == 0 {
                x
            } else {
                g.dropout(states.output, self.config.dropout)?
            };
            let mut outputs = Vec::with_capacity(2);
            for (direction, [w_ih, w_hh, b_ih, b_hh]) in directions.iter().enumerate() {
                let reverse = direction == 1;
                let input = if reverse {
                    g.reverse_sequence(input, lengths)?
                } else {
                    input
                };
                let weights = RecurrentWeights {
                    w_ih: g.param(*w_ih)?,
                    w_hh: g.param(*w_hh)?,
                    b_ih: g.param(*b_ih)?,
                    b_hh: g.param(*b_hh)?,
                };
                let h = h0.get(state_index).copied();
                let c = c0.get(state_index).copied();
                state_index += 1;
                let RecurrentOut { output, h_n, c_n } = match self.config.kind {
                    CellKind::Lstm => g.lstm(input, weights, lengths, h.zip(c))?,
                    CellKind::Gru => g.gru(input, weights, lengths, h)?,
                    CellKind::Rnn(act) => g.rnn(input, weights, act, lengths, h)?,
                };
                outputs.push(if reverse {
                    g.reverse_sequence(output, lengths)?
                } else {
                    output
                });
                states.h_n.push(h_n);
                states.c_n.extend(c_n);
            }
            states.output = match outputs[..] {
                [forward, backward] => g.concat(forward, backward)?,
                _ => outputs[0],
            };
        }
        Ok(states)
    }
}
