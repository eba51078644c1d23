//! A tiny "game" that owns its wgpu device, queue and frame loop, and lets tsumugi in:
//! a char-LSTM (the chapter's CharLevelRNN, trained at start-up on the game's own device, or
//! loaded with `--checkpoint`) advances every NPC's line by one character per frame,
//! sampled on the GPU; the game's render pipeline draws the lines and each NPC's output
//! distribution as a strip of bars, binding the generator's buffers directly. Nothing
//! the model produces is read back inside a frame.
//!
//! ```sh
//! cargo run --release --example game_npc                    # 30 frames to PNGs, headless
//! cargo run --release --example game_npc -- --help
//! cargo run --release --example game_npc --features window -- --window
//! ```
//!
//! It prints the GPU time the model adds to a frame: from timestamp queries around the
//! generator's step where the adapter has TIMESTAMP_QUERY, else the wall time of a step
//! submitted alone (and says which).

mod model;
mod render;

use std::path::{Path, PathBuf};
use std::time::Instant;

use model::{model, print_gpu_times, start_lines, vocabulary};
use render::{map_all_blocking, Layout, Offscreen, Renderer, OFFSCREEN_FORMAT};
use tsumugi::nn::generator::Generator;
use tsumugi::sampling::Sampling;
use tsumugi::Context;

const HELP: &str = "game_npc: NPCs speak through a char-LSTM running inside a wgpu render loop

USAGE: cargo run --release --example game_npc [--features window] -- [OPTIONS]

OPTIONS:
  --frames N          frames to render (default 30; at most 2000)
  --npcs N            NPC lines, one generator stream each (default 8)
  --out DIR           folder for the PNG frames (default game_npc_frames)
  --checkpoint PATH   load the model from PATH if it exists, else train it and save it there
  --train-steps N     training steps at start-up when no checkpoint is loaded (default 100)
  --hidden H          the LSTM's hidden size, 2 layers (default 64; 256 times the bench's model)
  --temperature T     sampling temperature, > 0 (default 0.8)
  --top-k K           sample among the K most likely characters (default: all)
  --seed S            sampling seed (default 1)
  --wall-time         time the model by wall clock even where timestamp queries exist
  --window            draw into a window instead of PNGs (needs --features window)
  -h, --help          this text";

#[derive(Debug)]
struct Args {
    frames: usize,
    npcs: usize,
    out: PathBuf,
    checkpoint: Option<PathBuf>,
    train_steps: u64,
    hidden: usize,
    sampling: Sampling,
    wall_time: bool,
    window: bool,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut args = Args {
        frames: 30,
        npcs: 8,
        out: PathBuf::from("game_npc_frames"),
        checkpoint: None,
        train_steps: 100,
        hidden: 64,
        sampling: Sampling {
            temperature: 0.8,
            top_k: None,
            seed: 1,
        },
        wall_time: false,
        window: false,
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
            "--frames" => args.frames = number("--frames", value("--frames")?)?,
            "--npcs" => args.npcs = number("--npcs", value("--npcs")?)?,
            "--out" => args.out = PathBuf::from(value("--out")?),
            "--checkpoint" => args.checkpoint = Some(PathBuf::from(value("--checkpoint")?)),
            "--train-steps" => args.train_steps = number("--train-steps", value("--train-steps")?)?,
            "--temperature" => args.sampling.temperature = number("--temperature", value("--temperature")?)?,
            "--top-k" => args.sampling.top_k = Some(number("--top-k", value("--top-k")?)?),
            "--hidden" => args.hidden = number("--hidden", value("--hidden")?)?,
            "--seed" => args.sampling.seed = number("--seed", value("--seed")?)?,
            "--wall-time" => args.wall_time = true,
            "--window" => args.window = true,
            other => return Err(format!("unknown option '{other}'")),
        }
    }
    if args.frames == 0 || args.frames > 2000 {
        return Err(format!("--frames must be in 1..=2000, got {}", args.frames));
    }
    if args.hidden == 0 || args.hidden > 1024 {
        return Err(format!("--hidden must be in 1..=1024, got {}", args.hidden));
    }
    if args.npcs == 0 || args.npcs > 64 {
        return Err(format!("--npcs must be in 1..=64, got {}", args.npcs));
    }
    // Checked before minutes of training, not after.
    args.sampling.check(vocabulary().len()).map_err(|e| e.to_string())?;
    Ok(Some(args))
}

/// Timestamps around the generator's step in each frame: two queries per frame.
struct Timing {
    queries: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
    frames: u32,
}

impl Timing {
    fn new(device: &wgpu::Device, frames: usize) -> Option<Timing> {
        if !device.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
            return None;
        }
        let count = 2 * frames as u32;
        let bytes = u64::from(count) * 8;
        Some(Timing {
            queries: device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("model time"),
                ty: wgpu::QueryType::Timestamp,
                count,
            }),
            resolve: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("model time resolve"),
                size: bytes,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            }),
            readback: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("model time readback"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            frames: frames as u32,
        })
    }

    /// An empty compute pass that only writes timestamp `index`.
    fn mark(&self, encoder: &mut wgpu::CommandEncoder, index: u32, begin: bool) {
        encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("model time"),
            timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                query_set: &self.queries,
                beginning_of_pass_write_index: begin.then_some(index),
                end_of_pass_write_index: (!begin).then_some(index),
            }),
        });
    }
}

/// Everything the frame loop touches.
struct Game {
    device: wgpu::Device,
    queue: wgpu::Queue,
    ctx: Context,
    generator: Generator,
    renderer: Renderer,
    start_tokens: Vec<u32>,
    timing: Option<Timing>,
    frame: usize,
}

impl Game {
    /// Trains or loads the model on the game's device and builds the renderer for
    /// `format`; `frames` sizes the timestamp queries.
    fn new(
        device: wgpu::Device,
        queue: wgpu::Queue,
        args: &Args,
        format: wgpu::TextureFormat,
        frames: usize,
    ) -> Result<Game, String> {
        // tsumugi runs on the game's device and queue: no second device.
        let ctx = Context::from_wgpu(device.clone(), queue.clone());
        let chars = vocabulary();
        let m = model(&ctx, args.checkpoint.as_deref(), args.train_steps, args.hidden, &chars)
            .map_err(|e| e.to_string())?;
        let mut generator =
            Generator::from_model(&ctx, &m.store, &m.net, args.npcs, args.sampling).map_err(|e| e.to_string())?;
        let charmap: Vec<u32> = chars.iter().map(|&c| c as u32).collect();
        let layout = Layout::new(args.npcs, chars.len(), 40, 3, 24);
        let renderer = Renderer::new(
            &device,
            format,
            layout,
            generator.tokens().buffer(),
            generator.probabilities().buffer(),
            &charmap,
        );
        let start_tokens = start_lines(&ctx, &mut generator, &chars).map_err(|e| e.to_string())?;
        Ok(Game {
            timing: if args.wall_time {
                None
            } else {
                Timing::new(&device, frames)
            },
            device,
            queue,
            ctx,
            generator,
            renderer,
            start_tokens,
            frame: 0,
        })
    }

    /// One frame: game logic (every 12 frames an NPC starts a new line), the model's
    /// step, the append pass and the draw, in one encoder and one submission.
    fn frame(&mut self, view: &wgpu::TextureView, copy: Option<(&Offscreen, &wgpu::Buffer)>) -> Result<(), String> {
        let mut encoder = self.device.create_command_encoder(&Default::default());
        let f = self.frame;
        if f > 0 && f.is_multiple_of(12) {
            let slot = (f / 12 - 1) % self.generator.streams();
            self.generator
                .reset_slot(&mut encoder, slot, self.start_tokens[slot])
                .map_err(|e| e.to_string())?;
            self.renderer.clear_line(&mut encoder, slot);
        }
        let timed = self.timing.as_ref().filter(|t| (f as u32) < t.frames);
        if let Some(timing) = timed {
            timing.mark(&mut encoder, 2 * f as u32, true);
        }
        self.generator.step(&mut encoder).map_err(|e| e.to_string())?;
        if let Some(timing) = timed {
            timing.mark(&mut encoder, 2 * f as u32 + 1, false);
        }
        self.renderer.append(&mut encoder);
        self.renderer.draw(&mut encoder, view);
        if let Some((offscreen, staging)) = copy {
            offscreen.copy_to(&mut encoder, staging);
        }
        self.queue.submit([encoder.finish()]);
        // Everything tsumugi encoded this frame is submitted: its parameter space can be reused.
        self.ctx.recycle_after_submit();
        self.frame += 1;
        Ok(())
    }

    /// The model's GPU time per frame in ms, from the timestamps of the frames timed so
    /// far (one readback, after the loop), or None without TIMESTAMP_QUERY.
    fn model_times(&self) -> Option<Vec<f64>> {
        let timing = self.timing.as_ref()?;
        let frames = (self.frame as u32).min(timing.frames);
        if frames == 0 {
            return Some(Vec::new());
        }
        let mut encoder = self.device.create_command_encoder(&Default::default());
        encoder.resolve_query_set(&timing.queries, 0..2 * frames, &timing.resolve, 0);
        encoder.copy_buffer_to_buffer(&timing.resolve, 0, &timing.readback, 0, u64::from(frames) * 16);
        self.queue.submit([encoder.finish()]);
        map_all_blocking(&self.device, &[&timing.readback]);
        let period = f64::from(self.queue.get_timestamp_period());
        let ticks: Vec<u64> = {
            let view = timing.readback.slice(..).get_mapped_range().expect("mapped timestamps");
            bytemuck::pod_collect_to_vec(&view[..frames as usize * 16])
        };
        timing.readback.unmap();
        Some(
            ticks
                .chunks(2)
                .map(|pair| pair[1].saturating_sub(pair[0]) as f64 * period / 1e6)
                .collect(),
        )
    }

    /// Wall time of `n` generator steps each submitted alone and waited for, in ms: the
    /// fallback where timestamps are unavailable (it includes submission overhead).
    fn wall_time_per_step(&mut self, n: usize) -> Result<f64, String> {
        let start = Instant::now();
        for _ in 0..n {
            let mut encoder = self.device.create_command_encoder(&Default::default());
            self.generator.step(&mut encoder).map_err(|e| e.to_string())?;
            self.queue.submit([encoder.finish()]);
            self.ctx.recycle_after_submit();
            self.device
                .poll(wgpu::PollType::wait_indefinitely())
                .map_err(|e| e.to_string())?;
        }
        Ok(start.elapsed().as_secs_f64() * 1e3 / n as f64)
    }

    fn report(&mut self, frame_wall_ms: f64) -> Result<(), String> {
        let streams = self.generator.streams();
        match self.model_times() {
            Some(times) if !times.is_empty() => {
                print_gpu_times(streams, &times);
            }
            _ => {
                let ms = self.wall_time_per_step(20)?;
                println!(
                    "model time per frame: no timestamp queries (adapter without them, or --wall-time); wall \
                     time of one step ({streams} NPCs) submitted alone and waited for: {ms:.3} ms"
                );
            }
        }
        println!("whole frame (encode + submit, CPU wall time, not waiting for the GPU): {frame_wall_ms:.3} ms");
        Ok(())
    }
}

/// The game's own device: whatever adapter wgpu picks (WGPU_BACKEND is honoured), with
/// timestamp queries when the adapter has them.
fn game_device(
    instance: &wgpu::Instance,
    surface: Option<&wgpu::Surface<'_>>,
) -> Result<(wgpu::Adapter, wgpu::Device, wgpu::Queue), String> {
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
        power_preference: wgpu::PowerPreference::HighPerformance,
        compatible_surface: surface,
        ..Default::default()
    }))
    .map_err(|e| format!("no GPU adapter: {e}"))?;
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("game"),
        required_features: adapter.features() & wgpu::Features::TIMESTAMP_QUERY,
        required_limits: adapter.limits(),
        ..Default::default()
    }))
    .map_err(|e| format!("the adapter refused a device: {e}"))?;
    let info = adapter.get_info();
    println!("adapter: {} ({:?})", info.name, info.backend);
    Ok((adapter, device, queue))
}

fn headless(args: &Args) -> Result<(), String> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle().with_env());
    let (_adapter, device, queue) = game_device(&instance, None)?;
    let mut game = Game::new(device.clone(), queue, args, OFFSCREEN_FORMAT, args.frames)?;
    let layout = game.renderer.layout;
    let offscreen = Offscreen::new(&device, layout.width, layout.height);
    let staging: Vec<wgpu::Buffer> = (0..args.frames).map(|_| offscreen.staging(&device)).collect();
    // The first frame builds every pipeline; the wall time is that of the frames after it.
    let mut start = Instant::now();
    for (i, buffer) in staging.iter().enumerate() {
        game.frame(&offscreen.view, Some((&offscreen, buffer)))?;
        if i == 0 && args.frames > 1 {
            start = Instant::now();
        }
    }
    let frame_wall_ms = start.elapsed().as_secs_f64() * 1e3 / (args.frames - 1).max(1) as f64;
    // The frames were copied into their own buffers; they are read only now.
    map_all_blocking(&device, &staging.iter().collect::<Vec<_>>());
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    for (i, buffer) in staging.iter().enumerate() {
        let path = args.out.join(format!("frame_{i:04}.png"));
        save_png(&path, layout.width, layout.height, &offscreen.pixels(buffer))?;
    }
    println!(
        "{} frames ({}x{}) of {} NPCs saved to {}",
        args.frames,
        layout.width,
        layout.height,
        args.npcs,
        args.out.display()
    );
    game.report(frame_wall_ms)?;
    let created = tsumugi::gpu::devices_created();
    println!("devices created by tsumugi: {created} (it ran on the game's device)");
    Ok(())
}

fn save_png(path: &Path, width: u32, height: u32, rgba: &[u8]) -> Result<(), String> {
    let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), width, height);
    encoder.set_color(png::ColorType::Rgba);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
    writer.write_image_data(rgba).map_err(|e| e.to_string())
}

#[cfg(feature = "window")]
mod window {
    //! `--window`: the same frames, drawn into a winit window's surface and presented.

    use std::sync::Arc;

    use winit::application::ApplicationHandler;
    use winit::dpi::PhysicalSize;
    use winit::event::WindowEvent;
    use winit::event_loop::{ActiveEventLoop, EventLoop};
    use winit::window::{Window, WindowId};

    use super::{game_device, Args, Game};

    /// Frames whose model time is measured (and printed when the window closes).
    const TIMED_FRAMES: usize = 600;

    struct Running {
        window: Arc<Window>,
        surface: wgpu::Surface<'static>,
        config: wgpu::SurfaceConfiguration,
        game: Game,
        start: std::time::Instant,
    }

    struct App<'a> {
        args: &'a Args,
        running: Option<Running>,
        error: Option<String>,
    }

    impl App<'_> {
        fn start(&mut self, event_loop: &ActiveEventLoop) -> Result<Running, String> {
            let instance = wgpu::Instance::new(
                wgpu::InstanceDescriptor::new_with_display_handle(Box::new(event_loop.owned_display_handle()))
                    .with_env(),
            );
            let layout = super::render::Layout::new(self.args.npcs, super::vocabulary().len(), 40, 3, 24);
            let attributes = Window::default_attributes()
                .with_title("tsumugi: game_npc")
                .with_inner_size(PhysicalSize::new(layout.width, layout.height));
            let window = Arc::new(event_loop.create_window(attributes).map_err(|e| e.to_string())?);
            let surface = instance.create_surface(window.clone()).map_err(|e| e.to_string())?;
            let (adapter, device, queue) = game_device(&instance, Some(&surface))?;
            let size = window.inner_size();
            let mut config = surface
                .get_default_config(&adapter, size.width.max(1), size.height.max(1))
                .ok_or("the surface does not work with this adapter")?;
            // The shader's colours are written as they are (as into the PNGs): a
            // non-sRGB format keeps them from being gamma-encoded a second time.
            if let Some(&plain) = surface.get_capabilities(&adapter).formats.iter().find(|f| !f.is_srgb()) {
                config.format = plain;
            }
            surface.configure(&device, &config);
            let game = Game::new(device, queue, self.args, config.format, TIMED_FRAMES)?;
            Ok(Running {
                window,
                surface,
                config,
                game,
                start: std::time::Instant::now(),
            })
        }

        fn redraw(&mut self) -> Result<(), String> {
            let Some(running) = self.running.as_mut() else {
                return Ok(());
            };
            let texture = match running.surface.get_current_texture() {
                wgpu::CurrentSurfaceTexture::Success(texture) | wgpu::CurrentSurfaceTexture::Suboptimal(texture) => {
                    texture
                }
                wgpu::CurrentSurfaceTexture::Timeout | wgpu::CurrentSurfaceTexture::Occluded => {
                    running.window.request_redraw();
                    return Ok(());
                }
                _ => {
                    running.surface.configure(&running.game.device, &running.config);
                    running.window.request_redraw();
                    return Ok(());
                }
            };
            let view = texture.texture.create_view(&Default::default());
            running.game.frame(&view, None)?;
            running.window.pre_present_notify();
            running.game.queue.present(texture);
            running.window.request_redraw();
            Ok(())
        }
    }

    impl ApplicationHandler for App<'_> {
        fn resumed(&mut self, event_loop: &ActiveEventLoop) {
            if self.running.is_some() {
                return;
            }
            match self.start(event_loop) {
                Ok(running) => {
                    running.window.request_redraw();
                    self.running = Some(running);
                }
                Err(err) => {
                    self.error = Some(err);
                    event_loop.exit();
                }
            }
        }

        fn window_event(&mut self, event_loop: &ActiveEventLoop, _id: WindowId, event: WindowEvent) {
            match event {
                WindowEvent::CloseRequested => event_loop.exit(),
                WindowEvent::Resized(size) => {
                    if let Some(running) = self.running.as_mut() {
                        running.config.width = size.width.max(1);
                        running.config.height = size.height.max(1);
                        running.surface.configure(&running.game.device, &running.config);
                    }
                }
                WindowEvent::RedrawRequested => {
                    if let Err(err) = self.redraw() {
                        self.error = Some(err);
                        event_loop.exit();
                    }
                }
                _ => {}
            }
        }
    }

    pub fn run(args: &Args) -> Result<(), String> {
        let event_loop = EventLoop::new().map_err(|e| format!("no window system: {e}"))?;
        let mut app = App {
            args,
            running: None,
            error: None,
        };
        event_loop.run_app(&mut app).map_err(|e| e.to_string())?;
        if let Some(err) = app.error {
            return Err(err);
        }
        if let Some(mut running) = app.running {
            let frames = running.game.frame.max(1);
            let wall = running.start.elapsed().as_secs_f64() * 1e3 / frames as f64;
            println!("{frames} frames shown");
            running.game.report(wall)?;
        }
        Ok(())
    }
}

fn main() {
    let args = match parse_args() {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{HELP}");
            return;
        }
        Err(err) => {
            eprintln!("error: {err}\n(see --help)");
            std::process::exit(2);
        }
    };
    let result = if args.window {
        #[cfg(feature = "window")]
        {
            window::run(&args)
        }
        #[cfg(not(feature = "window"))]
        {
            Err("--window needs the example built with `--features window`".to_string())
        }
    } else {
        headless(&args)
    };
    if let Err(err) = result {
        eprintln!("error: {err}");
        std::process::exit(1);
    }
}
