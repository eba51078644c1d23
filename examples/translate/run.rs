//! The bookkeeping of a training run: how long it will take (an estimate printed after
//! the first steps), how far through its schedule it is (by steps, or by time under
//! `--minutes`), and its curve (loss and dev scores per epoch, kept in the checkpoint so
//! a resumed run continues it, and drawn as a PNG).

use std::path::Path;
use std::time::{Duration, Instant};

use plotters::prelude::*;

use crate::AnyResult;

/// Steps timed for the estimate, after the warm-up steps that build the pipelines.
const ESTIMATE_STEPS: u64 = 20;
/// The first steps of a run compile every kernel; they are left out of the estimate.
const WARM_UP_STEPS: u64 = 3;

/// Where a run is in its schedule, and when it stops.
pub struct Schedule {
    /// Steps of this run (epochs x batches per epoch), its length without a time budget.
    pub total_steps: u64,
    /// Steps trained before this run (a resumed run's earlier epochs): the schedule is
    /// the whole run's, so a run resumed between epochs decays as an unbroken one.
    pub steps_before: u64,
    /// `--minutes`: the training time the schedule is stretched over, and its end.
    pub budget: Option<Duration>,
    started: Instant,
    /// When the steps timed for the estimate began (after the warm-up).
    timing_from: Option<Instant>,
}

impl Schedule {
    pub fn new(total_steps: u64, steps_before: u64, budget_minutes: Option<f64>) -> Schedule {
        Schedule {
            total_steps,
            steps_before,
            budget: budget_minutes.map(|m| Duration::from_secs_f64(m * 60.0)),
            started: Instant::now(),
            timing_from: None,
        }
    }

    /// How far through the whole run's schedule (0 to 1) it is before step `done_steps + 1`
    /// of this run: by steps, or under a budget by training time, so that a learning-rate
    /// decay reaches its end when the budget does instead of being cut off.
    pub fn progress(&self, done_steps: u64) -> f64 {
        let by_steps = done_steps as f64 / self.total_steps.max(1) as f64;
        // With both a budget and a step count (--minutes and --epochs), whichever ends
        // first sets the pace.
        let by_time = self.budget.map_or(0.0, |budget| {
            self.started.elapsed().as_secs_f64() / budget.as_secs_f64()
        });
        let this_run = by_steps.max(by_time).min(1.0);
        let (before, run) = (self.steps_before as f64, self.total_steps as f64);
        ((before + this_run * run) / (before + run).max(1.0)).min(1.0)
    }

    /// Whether the budget is spent (never without one).
    pub fn over_budget(&self) -> bool {
        self.budget.is_some_and(|budget| self.started.elapsed() >= budget)
    }

    /// Called after each step of this run (`run_steps` counts them from 1): after the
    /// warm-up and the timed steps, prints what the whole run will take.
    pub fn after_step(&mut self, run_steps: u64, steps_per_epoch: u64) {
        if run_steps == WARM_UP_STEPS {
            self.timing_from = Some(Instant::now());
        }
        let Some(from) = self.timing_from else { return };
        if run_steps != WARM_UP_STEPS + ESTIMATE_STEPS {
            return;
        }
        let per_step = from.elapsed().as_secs_f64() / ESTIMATE_STEPS as f64;
        let warm_up = self.started.elapsed().as_secs_f64() - from.elapsed().as_secs_f64();
        match self.budget {
            None => {
                let total = warm_up + per_step * (self.total_steps - WARM_UP_STEPS) as f64;
                println!(
                    "estimate: {:.2} s per step, {} steps: training takes about {:.0} min (then the dev \
                     evaluation); --minutes N sets a budget instead",
                    per_step,
                    self.total_steps,
                    total / 60.0
                );
            }
            Some(budget) => {
                let steps = ((budget.as_secs_f64() - warm_up) / per_step).max(0.0);
                println!(
                    "estimate: {:.2} s per step; the budget of {:.1} min holds about {:.0} steps ({:.1} epochs \
                     of {steps_per_epoch}), the learning-rate schedule spread over it",
                    per_step,
                    budget.as_secs_f64() / 60.0,
                    steps,
                    steps / steps_per_epoch.max(1) as f64
                );
            }
        }
    }
}

/// The learning rate at `progress` (0 to 1) through the run: `lr` until `decay_start`, then
/// linear to `lr_end` at the end.
pub fn decayed_lr(lr: f64, lr_end: f64, decay_start: f64, progress: f64) -> f64 {
    if progress <= decay_start {
        lr
    } else {
        lr + (lr_end - lr) * (progress - decay_start) / (1.0 - decay_start)
    }
}

/// One epoch of the curve.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochRecord {
    pub epoch: usize,
    /// Training time from the first run's start, in minutes (resumed runs add theirs).
    pub minutes: f64,
    /// Mean training loss per target token over the epoch.
    pub loss: f64,
    /// Greedy dev chrF and char-BLEU, when the epoch was scored (`--dev-every-epoch`).
    pub dev: Option<(f64, f64)>,
}

/// The curve of a model's training, across resumed runs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    pub epochs: Vec<EpochRecord>,
}

impl History {
    /// One line per epoch: `epoch minutes loss [chrF BLEU]`, as kept in the checkpoint.
    pub fn to_text(&self) -> String {
        self.epochs
            .iter()
            .map(|r| {
                let dev = r.dev.map(|(c, b)| format!(" {c:.2} {b:.2}")).unwrap_or_default();
                format!("{} {:.2} {:.4}{dev}\n", r.epoch, r.minutes, r.loss)
            })
            .collect()
    }

    /// Parses [`History::to_text`]; `source` names the checkpoint in errors.
    pub fn from_text(source: &str, text: &str) -> AnyResult<History> {
        let mut epochs = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let bad = || {
                format!(
                    "{source}: history line {} is not `epoch minutes loss [chrF BLEU]`: {line:?}",
                    i + 1
                )
            };
            let number = |k: usize| -> AnyResult<f64> { Ok(fields[k].parse::<f64>().map_err(|_| bad())?) };
            if fields.len() != 3 && fields.len() != 5 {
                return Err(bad().into());
            }
            epochs.push(EpochRecord {
                epoch: fields[0].parse().map_err(|_| bad())?,
                minutes: number(1)?,
                loss: number(2)?,
                dev: if fields.len() == 5 {
                    Some((number(3)?, number(4)?))
                } else {
                    None
                },
            });
        }
        Ok(History { epochs })
    }

    /// Training minutes so far (the last epoch's).
    pub fn minutes(&self) -> f64 {
        self.epochs.last().map_or(0.0, |r| r.minutes)
    }

    /// The curve as a table.
    pub fn print(&self) {
        println!("epoch  minutes  loss    dev chrF  dev char-BLEU (greedy)");
        for r in &self.epochs {
            let dev = r
                .dev
                .map_or("-         -".to_string(), |(c, b)| format!("{c:<9.1} {b:.1}"));
            println!("{:<6} {:<8.1} {:<7.3} {dev}", r.epoch, r.minutes, r.loss);
        }
    }

    /// The curve as a PNG: the training loss per epoch above (blue), greedy dev chrF below
    /// (red), each panel scaled to its own range. With a system font ([`curve_font`]) the
    /// panels have titles, axes and tick labels; without one (plotters has no font of its
    /// own) only a grey line at each epoch, and [`History::print`] gives the values.
    pub fn write_png(&self, path: &Path) -> AnyResult<()> {
        const W: u32 = 640;
        const H: u32 = 480;
        let mut pixels = vec![255u8; (W * H * 3) as usize];
        let plot_error = |e: &dyn std::fmt::Display| format!("drawing {}: {e}", path.display());
        {
            let root = BitMapBackend::with_buffer(&mut pixels, (W, H)).into_drawing_area();
            let (top, bottom) = root.split_vertically(H / 2);
            let last = self.epochs.last().map_or(1, |r| r.epoch).max(2) as f64;
            let first = self.epochs.first().map_or(1, |r| r.epoch) as f64;
            let panels: [(_, Vec<(f64, f64)>, RGBColor); 2] = [
                (
                    top,
                    self.epochs.iter().map(|r| (r.epoch as f64, r.loss)).collect(),
                    BLUE,
                ),
                (
                    bottom,
                    self.epochs
                        .iter()
                        .filter_map(|r| r.dev.map(|(c, _)| (r.epoch as f64, c)))
                        .collect(),
                    RED,
                ),
            ];
            let text = curve_font();
            let titles = ["training loss (per target token)", "dev chrF (greedy)"];
            for ((area, points, color), title) in panels.into_iter().zip(titles) {
                if points.is_empty() {
                    continue;
                }
                let low = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
                let high = points.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
                let pad = ((high - low) * 0.1).max(1e-3);
                let mut builder = ChartBuilder::on(&area);
                builder.margin(16);
                if text {
                    builder
                        .caption(title, (FONT_FAMILY, 18))
                        .x_label_area_size(32)
                        .y_label_area_size(48);
                }
                let mut chart = builder
                    .build_cartesian_2d(first..last, (low - pad)..(high + pad))
                    .map_err(|e| plot_error(&e))?;
                if text {
                    let decimals = if high - low < 1.0 { 2 } else { 1 };
                    chart
                        .configure_mesh()
                        .x_desc("epoch")
                        .x_labels((last - first) as usize + 1)
                        .x_label_formatter(&|x| format!("{x:.0}"))
                        .y_labels(6)
                        .y_label_formatter(&|y| format!("{y:.decimals$}"))
                        .label_style((FONT_FAMILY, 13))
                        .draw()
                        .map_err(|e| plot_error(&e))?;
                } else {
                    let grey = RGBColor(215, 215, 215);
                    for epoch in first as usize..=last as usize {
                        let x = epoch as f64;
                        chart
                            .draw_series(LineSeries::new([(x, low - pad), (x, high + pad)], grey))
                            .map_err(|e| plot_error(&e))?;
                    }
                }
                chart
                    .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                    .map_err(|e| plot_error(&e))?;
                chart
                    .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .map_err(|e| plot_error(&e))?;
            }
            root.present().map_err(|e| plot_error(&e))?;
        }
        let mut png = Vec::new();
        {
            let mut encoder = png::Encoder::new(&mut png, W, H);
            encoder.set_color(png::ColorType::Rgb);
            encoder.set_depth(png::BitDepth::Eight);
            let mut writer = encoder.write_header().map_err(|e| plot_error(&e))?;
            writer.write_image_data(&pixels).map_err(|e| plot_error(&e))?;
        }
        tsumugi::io::write_atomically(path, &png)?;
        Ok(())
    }
}

/// The family name the curve's text is registered under.
const FONT_FAMILY: &str = "sans-serif";

/// Fonts for the curve's text, the first that exists is used: DejaVu Sans, or the IPA
/// Gothic the chapter example's charts use (Debian's fonts-dejavu-core, fonts-ipafont-gothic).
const CURVE_FONTS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/opentype/ipafont-gothic/ipagp.ttf",
    "/usr/share/fonts/opentype/ipafont-gothic/ipag.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// Registers a system font with plotters once; false when none is installed (the curve
/// is then drawn without text).
fn curve_font() -> bool {
    static REGISTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *REGISTERED.get_or_init(|| {
        CURVE_FONTS.iter().any(|path| {
            std::fs::read(path).is_ok_and(|bytes| {
                // plotters keeps the font for the process.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, bytes).is_ok()
            })
        })
    })
}
