//! tsumugi inside Bevy 0.20: NPCs speak lines that the chapter's character LSTM
//! generates on Bevy's own device. The generator is built on Bevy's `RenderDevice` and
//! `RenderQueue` (`Context::from_wgpu`, no second device); a system of Bevy's
//! `RenderGraph` schedule encodes its step into Bevy's command encoder every frame, and
//! game_npc's passes draw each NPC's line and the per-token probability bars from the
//! generator's GPU buffers into a Bevy `Image`, in the same encoder. Each frame's
//! drawn tokens also come back to the CPU with one asynchronous read, a frame late, for
//! the lines printed at the end. Headless: no window system is built; the last frame is
//! saved as a PNG and its bars are checked against the probabilities (within one pixel).
//!
//! ```sh
//! cd examples/bevy_npc && cargo run --release -- --help
//! ```

mod check;
#[path = "../../game_npc/model.rs"]
mod model;
mod npc;
#[path = "../../game_npc/render.rs"]
mod render;
mod timing;

use std::path::PathBuf;
use std::time::Duration;

use bevy::app::ScheduleRunnerPlugin;
use bevy::prelude::*;
use bevy::window::ExitCondition;
use npc::{NpcPlugin, Outcome, Settings};
use tsumugi::sampling::Sampling;

const HELP: &str = "bevy_npc: NPCs speak through tsumugi's char-LSTM inside Bevy's render world

USAGE: cargo run --release -- [OPTIONS]      (in examples/bevy_npc)

OPTIONS:
  --frames N          frames to render (default 30; at most 2000)
  --npcs N            NPC lines, one generator stream each (default 16)
  --out FILE          the last frame as PNG (default bevy_npc_frame.png)
  --checkpoint PATH   load the model from PATH if it exists, else train it and save it there
  --train-steps N     training steps at start-up when no checkpoint is loaded (default 100)
  --hidden H          the LSTM's hidden size, 2 layers (default 64)
  --bar-height PX     height of the probability bars in pixels (default 24)
  --temperature T     sampling temperature, > 0 (default 0.8)
  --top-k K           sample among the K most likely characters (default: all)
  --seed S            sampling seed (default 1)
  --wall-time         time the model by wall clock even where timestamp queries exist
  --portable-kernels  tsumugi's portable kernels even where Bevy's device has subgroups
                      (game_npc's device has none: the same kernels, for comparing times)
  -h, --help          this text

It exits with status 1 when a bar of the last frame is off its probability by more than
one pixel, or when tsumugi created a device of its own.";

fn parse_args() -> Result<Option<Settings>, String> {
    let mut settings = Settings {
        frames: 30,
        npcs: 16,
        out: PathBuf::from("bevy_npc_frame.png"),
        checkpoint: None,
        train_steps: 100,
        hidden: 64,
        bar_h: 24,
        sampling: Sampling {
            temperature: 0.8,
            top_k: None,
            seed: 1,
        },
        wall_time: false,
        portable_kernels: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        fn number<T: std::str::FromStr>(name: &str, text: String) -> Result<T, String> {
            text.parse()
                .map_err(|_| format!("{name}: '{text}' is not a valid number"))
        }
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--frames" => settings.frames = number("--frames", value("--frames")?)?,
            "--npcs" => settings.npcs = number("--npcs", value("--npcs")?)?,
            "--out" => settings.out = PathBuf::from(value("--out")?),
            "--checkpoint" => settings.checkpoint = Some(PathBuf::from(value("--checkpoint")?)),
            "--train-steps" => settings.train_steps = number("--train-steps", value("--train-steps")?)?,
            "--hidden" => settings.hidden = number("--hidden", value("--hidden")?)?,
            "--bar-height" => settings.bar_h = number("--bar-height", value("--bar-height")?)?,
            "--temperature" => settings.sampling.temperature = number("--temperature", value("--temperature")?)?,
            "--top-k" => settings.sampling.top_k = Some(number("--top-k", value("--top-k")?)?),
            "--seed" => settings.sampling.seed = number("--seed", value("--seed")?)?,
            "--wall-time" => settings.wall_time = true,
            "--portable-kernels" => settings.portable_kernels = true,
            other => return Err(format!("unknown option '{other}'")),
        }
    }
    if settings.frames == 0 || settings.frames > 2000 {
        return Err(format!("--frames must be in 1..=2000, got {}", settings.frames));
    }
    if settings.npcs == 0 || settings.npcs > 64 {
        return Err(format!("--npcs must be in 1..=64, got {}", settings.npcs));
    }
    if settings.hidden == 0 || settings.hidden > 1024 {
        return Err(format!("--hidden must be in 1..=1024, got {}", settings.hidden));
    }
    if settings.bar_h < 4 || settings.bar_h > 400 {
        return Err(format!("--bar-height must be in 4..=400, got {}", settings.bar_h));
    }
    // Checked before minutes of training, not after.
    settings
        .sampling
        .check(model::vocabulary().len())
        .map_err(|e| e.to_string())?;
    Ok(Some(settings))
}

fn main() {
    let settings = match parse_args() {
        Ok(Some(settings)) => settings,
        Ok(None) => {
            println!("{HELP}");
            return;
        }
        Err(err) => {
            eprintln!("error: {err}\n(see --help)");
            std::process::exit(2);
        }
    };
    let exit = App::new()
        .add_plugins(DefaultPlugins.set(WindowPlugin {
            // Headless: no window; the app exits when the NPCs' run is over.
            primary_window: None,
            exit_condition: ExitCondition::DontExit,
            ..default()
        }))
        .add_plugins(ScheduleRunnerPlugin::run_loop(Duration::ZERO))
        .add_plugins(NpcPlugin {
            settings,
            outcome: Outcome::default(),
        })
        .run();
    if let AppExit::Error(code) = exit {
        std::process::exit(i32::from(code.get()));
    }
}
