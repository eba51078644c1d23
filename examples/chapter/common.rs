//! What the sections share: the GPU context and output folder, PyTorch-like random
//! inputs, a training step and an inference pass over a graph, and printing helpers.

use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::Rng;
use tsumugi::graph::{Graph, ParamStore, Var};
use tsumugi::loss::CrossEntropy;
use tsumugi::optim::Adam;
use tsumugi::{Context, Tensor};

pub type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;

/// The state of a walk through the chapter.
pub struct Walk {
    pub ctx: Context,
    /// Where the PNGs go.
    pub out: PathBuf,
    /// `--font`, else the usual system paths (see [`crate::plot::load_font`]).
    pub font: Option<PathBuf>,
    /// Whether a font was registered with plotters already.
    pub font_loaded: bool,
    /// The PNGs written so far.
    pub pngs: Vec<PathBuf>,
}

impl Walk {
    pub fn new(out: &Path, font: Option<PathBuf>) -> AnyResult<Walk> {
        Ok(Walk {
            ctx: Context::new()?,
            out: out.to_path_buf(),
            font,
            font_loaded: false,
            pngs: Vec::new(),
        })
    }
}

/// `torch.randn(n)`'s distribution, N(0, 1), by Box-Muller from `rng`.
pub fn randn(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let u: f32 = rng.random_range(f32::MIN_POSITIVE..1.0);
            let v: f32 = rng.random_range(0.0..1.0);
            (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
        })
        .collect()
}

/// `torch.randint(0, high, (n,))`.
pub fn randint(rng: &mut StdRng, high: u32, n: usize) -> Vec<u32> {
    (0..n).map(|_| rng.random_range(0..high)).collect()
}

/// `[a, b, c]` with four decimals.
pub fn fmt_row(xs: &[f32]) -> String {
    let items: Vec<String> = xs.iter().map(|x| format!("{x:.4}")).collect();
    format!("[{}]", items.join(", "))
}

/// A `[rows, cols]` matrix as the chapter's tensor printouts: one row per line.
pub fn print_matrix(xs: &[f32], cols: usize) {
    for row in xs.chunks(cols) {
        println!("  {}", fmt_row(row));
    }
}

/// `torch.Size([..])`.
pub fn size(shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    format!("torch.Size([{}])", dims.join(", "))
}

/// `1,234,567`.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Prints a count beside what the chapter printed, with a note where they differ.
pub fn count_line(label: &str, count: usize, chapter: Option<usize>) {
    match chapter {
        Some(printed) if printed != count => println!(
            "{label}: {}  (the chapter prints {}, which its own listing does not give)",
            thousands(count),
            thousands(printed)
        ),
        Some(_) => println!("{label}: {}  (as the chapter prints)", thousands(count)),
        None => println!("{label}: {}", thousands(count)),
    }
}

/// The elements of the parameters whose names start with `prefix`
/// (`sum(p.numel() for p in module.parameters())` of a submodule).
pub fn count_prefix(store: &ParamStore, prefix: &str) -> usize {
    store
        .entries()
        .filter(|(name, _, _)| name.starts_with(prefix))
        .map(|(_, value, _)| value.shape().iter().product::<usize>())
        .sum()
}

/// Softmax of one row of logits.
pub fn softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = row.iter().map(|x| (x - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}

/// The index of each row's largest value (`output.argmax(dim=1)`).
pub fn argmax_rows(xs: &[f32], cols: usize) -> Vec<usize> {
    xs.chunks(cols)
        .map(|row| {
            row.iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |best, (i, &x)| if x > best.1 { (i, x) } else { best },
                )
                .0
        })
        .collect()
}

/// One training step (`optimizer.zero_grad(); loss.backward(); optimizer.step()`):
/// `forward` returns the logits and the loss; the logits (as trained, dropout on) and the
/// loss are read back.
pub fn train_step(
    ctx: &Context,
    store: &mut ParamStore,
    adam: &Adam,
    step: u64,
    forward: impl FnOnce(&mut Graph<'_>) -> tsumugi::Result<(Var, Var)>,
) -> AnyResult<(f32, Vec<f32>)> {
    store.zero_grad();
    // Seed 0 for the dropout masks; `step` makes each step's masks differ.
    let mut g = Graph::train(ctx, store, 0, step);
    let (logits, loss) = forward(&mut g)?;
    let (logits, loss_value) = (g.value(logits).clone(), g.value(loss).clone());
    g.backward(loss)?;
    g.adam_step(adam, step)?;
    g.submit();
    Ok((loss_value.to_vec::<f32>()?[0], logits.to_vec::<f32>()?))
}

/// A pass in eval mode (`model.eval(); with torch.no_grad()`), reading back the values
/// of the variables `forward` returns.
pub fn infer(
    ctx: &Context,
    store: &mut ParamStore,
    forward: impl FnOnce(&mut Graph<'_>) -> tsumugi::Result<Vec<Var>>,
) -> AnyResult<Vec<Vec<f32>>> {
    let mut g = Graph::eval(ctx, store);
    let vars = forward(&mut g)?;
    let values: Vec<Tensor> = vars.iter().map(|&v| g.value(v).clone()).collect();
    g.submit();
    let mut out = Vec::with_capacity(values.len());
    for value in values {
        out.push(value.to_vec::<f32>()?);
    }
    Ok(out)
}

/// `nn.CrossEntropyLoss()`, or with `ignore_index`.
pub fn cross_entropy(ignore_index: Option<u32>) -> CrossEntropy {
    CrossEntropy {
        ignore_index,
        ..CrossEntropy::default()
    }
}

/// `optim.Adam(lr=lr)`.
pub fn adam(lr: f64) -> Adam {
    Adam { lr, ..Adam::default() }
}
