//! The render-world side: tsumugi's generator on Bevy's `RenderDevice` and `RenderQueue`,
//! stepped every frame in Bevy's command encoder by a system of the `RenderGraph`
//! schedule, and game_npc's append and draw passes (which bind the generator's token and
//! probability buffers directly) drawing the NPCs' lines and bars, in the same encoder,
//! into a Bevy `Image` (an asset of the main world, which a sprite or UI node could
//! show). Bevy submits the encoder; nothing is read back inside a frame. For the
//! terminal, each frame's drawn tokens come back with one asynchronous read
//! (`Tensor::read`) that the render world polls without waiting, a frame or more late.
//! The last frame's image, probabilities and tokens are copied out in that frame's
//! encoder and read once, after the loop, for the pixel check.

use std::collections::VecDeque;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Instant;

use bevy::asset::RenderAssetUsages;
use bevy::prelude::*;
use bevy::render::extract_resource::{ExtractResource, ExtractResourcePlugin};
use bevy::render::render_asset::RenderAssets;
use bevy::render::renderer::{
    RenderAdapterInfo, RenderContext, RenderDevice, RenderGraph, RenderGraphSystems, RenderQueue,
};
use bevy::render::texture::GpuImage;
use bevy::render::{Render, RenderApp, RenderSystems};
use tsumugi::nn::generator::Generator;
use tsumugi::sampling::Sampling;
use tsumugi::Context;

use crate::check::{check_bars, read_mapped, save_png};
use crate::model;
use crate::render::{map_all_blocking, Layout, Offscreen, Renderer, OFFSCREEN_FORMAT};
use crate::timing::Timing;

/// What a run ended with, set once by the render world and taken by the main world,
/// which then exits.
#[derive(Resource, Clone, Default)]
pub struct Outcome(pub Arc<Mutex<Option<Result<(), String>>>>);

impl Outcome {
    fn set(&self, result: Result<(), String>) {
        *self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(result);
    }

    fn take(&self) -> Option<Result<(), String>> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take()
    }
}

/// The settings of a run (from the command line).
#[derive(Clone, Debug)]
pub struct Settings {
    pub frames: usize,
    pub npcs: usize,
    pub out: PathBuf,
    pub checkpoint: Option<PathBuf>,
    pub train_steps: u64,
    pub hidden: usize,
    pub bar_h: u32,
    pub sampling: Sampling,
    pub wall_time: bool,
    pub portable_kernels: bool,
}

/// The image the NPCs are drawn into: created by the main world, prepared on the GPU by
/// Bevy (`GpuImage`), its handle extracted into the render world every frame.
#[derive(Resource, Clone, ExtractResource)]
#[extract_app(RenderApp)]
pub struct NpcImage(pub Handle<Image>);

/// The size of that image, known once the NPCs exist in the render world.
#[derive(Resource, Clone, Copy)]
struct FrameSize {
    width: u32,
    height: u32,
}

/// Creates the image the NPCs are drawn into (at start-up, once the NPCs exist).
fn create_image(size: Option<Res<FrameSize>>, mut images: ResMut<Assets<Image>>, mut commands: Commands) {
    let Some(size) = size else {
        return;
    };
    let mut image = Image::new_target_texture(size.width, size.height, OFFSCREEN_FORMAT, None);
    // Only the GPU needs it; the check copies it out.
    image.asset_usage = RenderAssetUsages::RENDER_WORLD;
    image.texture_descriptor.usage |= wgpu::TextureUsages::COPY_SRC;
    commands.insert_resource(NpcImage(images.add(image)));
}

/// Adds the NPCs to the render world (once Bevy's renderer exists) and exits the app
/// when their run is over.
pub struct NpcPlugin {
    pub settings: Settings,
    pub outcome: Outcome,
}

impl Plugin for NpcPlugin {
    fn build(&self, app: &mut App) {
        app.insert_resource(self.outcome.clone())
            .add_plugins(ExtractResourcePlugin::<NpcImage>::default())
            .add_systems(Startup, create_image)
            .add_systems(Update, exit_when_done);
        if let Some(render_app) = app.get_sub_app_mut(RenderApp) {
            render_app
                // Beside Bevy's camera driver, before the pending command buffers are
                // submitted (RenderGraphSystems::Submit).
                .add_systems(RenderGraph, encode_frame.in_set(RenderGraphSystems::Render))
                .add_systems(Render, after_submit.in_set(RenderSystems::Cleanup));
        }
    }

    /// Runs after RenderPlugin's `finish`, which has put Bevy's device and queue into the
    /// render world.
    fn finish(&self, app: &mut App) {
        let Some(render_app) = app.get_sub_app_mut(RenderApp) else {
            self.outcome
                .set(Err("Bevy has no render world (no GPU adapter?)".into()));
            return;
        };
        match Npcs::new(render_app.world(), &self.settings, self.outcome.clone()) {
            Ok(npcs) => {
                let layout = npcs.renderer.layout;
                render_app.insert_resource(npcs);
                app.insert_resource(FrameSize {
                    width: layout.width,
                    height: layout.height,
                });
            }
            Err(err) => self.outcome.set(Err(err)),
        }
    }
}

fn exit_when_done(outcome: Res<Outcome>, mut exit: MessageWriter<AppExit>) {
    match outcome.take() {
        Some(Ok(())) => {
            exit.write(AppExit::Success);
        }
        Some(Err(err)) => {
            eprintln!("error: {err}");
            exit.write(AppExit::error());
        }
        None => {}
    }
}

/// The render world's system: one frame of the NPCs, in Bevy's command encoder, drawn
/// into the NPCs' image.
fn encode_frame(
    mut render_context: RenderContext,
    npcs: Option<ResMut<Npcs>>,
    image: Option<Res<NpcImage>>,
    gpu_images: Res<RenderAssets<GpuImage>>,
) {
    let (Some(mut npcs), Some(image)) = (npcs, image) else {
        return;
    };
    if npcs.frame >= npcs.settings.frames || npcs.finished {
        return;
    }
    // No frame of the NPCs runs before Bevy has prepared the image's texture
    // (RenderSystems::PrepareAssets).
    let Some(target) = gpu_images.get(&image.0) else {
        return;
    };
    if let Err(err) = npcs.encode(render_context.command_encoder(), target) {
        npcs.finished = true;
        npcs.outcome.set(Err(err));
    }
}

/// After Bevy's submission of the frame (RenderSystems::Cleanup follows the render
/// graph): tsumugi's uniform space is recycled, and after the last frame the run is
/// checked and reported.
fn after_submit(npcs: Option<ResMut<Npcs>>) {
    let Some(mut npcs) = npcs else {
        return;
    };
    if npcs.finished {
        return;
    }
    // Everything tsumugi encoded this frame went out with Bevy's submission.
    npcs.ctx.recycle_after_submit();
    let npcs = &mut *npcs;
    if let Some(frame) = npcs.frame.checked_sub(1).filter(|_| npcs.encoded_this_frame) {
        npcs.encoded_this_frame = false;
        let streams = npcs.generator.streams();
        if let Err(err) = npcs.lines.read(&npcs.device, npcs.generator.tokens(), frame, streams) {
            npcs.finished = true;
            npcs.outcome.set(Err(err));
            return;
        }
    }
    if npcs.frame == npcs.settings.frames {
        npcs.finished = true;
        let result = npcs.finish_run();
        npcs.outcome.set(result);
    }
}

/// One frame's drawn tokens on their way to the CPU.
type TokenRead = Pin<Box<dyn Future<Output = tsumugi::Result<Vec<u32>>> + Send>>;

/// A read in flight, or one that completed at its first poll (a finished future must not
/// be polled again).
enum Read {
    Pending(TokenRead),
    Done(tsumugi::Result<Vec<u32>>),
}

/// The NPCs' lines as the CPU learns them: every frame's tokens are read asynchronously
/// after Bevy's submission and arrive a frame or more later; nothing waits for them
/// until the run is over.
struct Lines {
    chars: Vec<char>,
    /// Reads in flight, oldest first, with the frame each belongs to. The mutex only
    /// makes the resource Sync (a boxed future is Send, not Sync); it is never contended.
    pending: Mutex<VecDeque<(usize, Read)>>,
    lines: Vec<String>,
    /// The tokens of the newest frame received.
    last: Vec<u32>,
    /// The most frames a read took to arrive while the frames went on.
    max_lag: usize,
}

impl Lines {
    /// Starts reading frame `frame`'s tokens (the copy is queued behind the frame's
    /// submission) and takes every earlier read that has arrived, without waiting.
    fn read(
        &mut self,
        device: &wgpu::Device,
        tokens: &tsumugi::Tensor,
        frame: usize,
        streams: usize,
    ) -> Result<(), String> {
        let tokens = tokens.clone();
        let mut read: TokenRead = Box::pin(async move { tokens.read::<u32>().await });
        // The first poll queues the copy, now: behind this frame's submission and before
        // the next frame's step overwrites the tokens.
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        let read = match read.as_mut().poll(&mut context) {
            Poll::Ready(result) => Read::Done(result),
            Poll::Pending => Read::Pending(read),
        };
        self.pending
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push_back((frame, read));
        device.poll(wgpu::PollType::Poll).map_err(|e| e.to_string())?;
        self.receive(Some(frame), streams)
    }

    /// Takes the reads that have arrived, oldest first; `now` is the frame just submitted
    /// (None after the loop).
    fn receive(&mut self, now: Option<usize>, streams: usize) -> Result<(), String> {
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        loop {
            let pending = self.pending.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner());
            let Some((frame, read)) = pending.front_mut() else {
                return Ok(());
            };
            let result = match read {
                Read::Done(result) => std::mem::replace(result, Ok(Vec::new())),
                Read::Pending(future) => match future.as_mut().poll(&mut context) {
                    Poll::Ready(result) => result,
                    Poll::Pending => return Ok(()),
                },
            };
            let frame = *frame;
            pending.pop_front();
            let tokens = result.map_err(|e| e.to_string())?;
            if let Some(now) = now {
                self.max_lag = self.max_lag.max(now - frame);
            }
            // game_npc's logic, replayed: every 12 frames one NPC starts a new line.
            if frame > 0 && frame.is_multiple_of(12) {
                self.lines[(frame / 12 - 1) % streams].clear();
            }
            for (line, &token) in self.lines.iter_mut().zip(&tokens) {
                line.push(self.chars.get(token as usize).copied().unwrap_or('?'));
            }
            self.last = tokens;
        }
    }

    /// After the loop: waits for the reads still in flight.
    fn drain(&mut self, device: &wgpu::Device, streams: usize) -> Result<(), String> {
        while !self
            .pending
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .is_empty()
        {
            device
                .poll(wgpu::PollType::wait_indefinitely())
                .map_err(|e| e.to_string())?;
            self.receive(None, streams)?;
        }
        Ok(())
    }
}

/// Where the last frame's image, probabilities and tokens are copied, in that frame's
/// own encoder, to be read after the loop.
struct Capture {
    /// The NPCs' image as game_npc's copy helper sees it (Bevy's texture).
    target: Offscreen,
    image: wgpu::Buffer,
    probs: wgpu::Buffer,
    tokens: wgpu::Buffer,
}

/// Everything the NPCs need in the render world.
#[derive(Resource)]
struct Npcs {
    device: wgpu::Device,
    queue: wgpu::Queue,
    ctx: Context,
    generator: Generator,
    renderer: Renderer,
    /// Filled by the last frame.
    capture: Option<Capture>,
    timing: Option<Timing>,
    lines: Lines,
    start_tokens: Vec<u32>,
    settings: Settings,
    outcome: Outcome,
    /// Frames encoded so far.
    frame: usize,
    /// When frame 1 was encoded: frame 0 also builds pipelines, so it is left out of the
    /// wall time.
    started: Option<Instant>,
    /// Whether this render-world update encoded a frame (whose tokens are then read).
    encoded_this_frame: bool,
    finished: bool,
}

impl Npcs {
    /// Trains or loads the model on Bevy's device and builds the generator and renderer
    /// there; submits one encoder that starts every NPC's line.
    fn new(world: &World, settings: &Settings, outcome: Outcome) -> Result<Npcs, String> {
        let device = world.resource::<RenderDevice>().wgpu_device().clone();
        let queue: wgpu::Queue = (**world.resource::<RenderQueue>()).clone();
        let info = world.resource::<RenderAdapterInfo>();
        println!("Bevy's adapter: {} ({:?})", info.name, info.backend);
        // tsumugi on Bevy's device and queue: no second device.
        let ctx = Context::from_wgpu(device.clone(), queue.clone());
        if settings.portable_kernels {
            ctx.set_subgroup_kernels(false).map_err(|e| e.to_string())?;
        }
        println!(
            "tsumugi's kernels: {}",
            if ctx.subgroup_kernels() {
                "subgroup (Bevy requested the adapter's SUBGROUP feature)"
            } else {
                "portable"
            }
        );
        let chars = model::vocabulary();
        let m = model::model(
            &ctx,
            settings.checkpoint.as_deref(),
            settings.train_steps,
            settings.hidden,
            &chars,
        )
        .map_err(|e| e.to_string())?;
        let mut generator = Generator::from_model(&ctx, &m.store, &m.net, settings.npcs, settings.sampling)
            .map_err(|e| e.to_string())?;
        println!(
            "tsumugi runs on Bevy's device: {}",
            generator.context().device() == &device
        );
        let charmap: Vec<u32> = chars.iter().map(|&c| c as u32).collect();
        let layout = Layout::new(settings.npcs, chars.len(), 40, 3, settings.bar_h);
        let max = device.limits().max_texture_dimension_2d;
        if layout.width > max || layout.height > max {
            return Err(format!(
                "a frame of {}x{} pixels is larger than this device's textures ({max}): fewer --npcs or a lower --bar-height",
                layout.width, layout.height
            ));
        }
        let renderer = Renderer::new(
            &device,
            OFFSCREEN_FORMAT,
            layout,
            generator.tokens().buffer(),
            generator.probabilities().buffer(),
            &charmap,
        );
        let start_tokens = model::start_lines(&ctx, &mut generator, &chars).map_err(|e| e.to_string())?;
        let timing = if settings.wall_time {
            None
        } else {
            Timing::new(&device, settings.frames)
        };
        Ok(Npcs {
            device,
            queue,
            ctx,
            generator,
            renderer,
            capture: None,
            timing,
            lines: Lines {
                chars,
                pending: Mutex::default(),
                lines: vec![String::new(); settings.npcs],
                last: Vec::new(),
                max_lag: 0,
            },
            start_tokens,
            settings: settings.clone(),
            outcome,
            frame: 0,
            started: None,
            encoded_this_frame: false,
            finished: false,
        })
    }

    /// One frame into Bevy's encoder: game logic (every 12 frames an NPC starts a new
    /// line), the model's step between two timestamps, the append pass and the draw; the
    /// last frame also copies its image, probabilities and tokens out.
    fn encode(&mut self, encoder: &mut wgpu::CommandEncoder, target: &GpuImage) -> Result<(), String> {
        let f = self.frame;
        if f == 1 {
            self.started = Some(Instant::now());
        }
        if f > 0 && f.is_multiple_of(12) {
            let slot = (f / 12 - 1) % self.generator.streams();
            self.generator
                .reset_slot(encoder, slot, self.start_tokens[slot])
                .map_err(|e| e.to_string())?;
            self.renderer.clear_line(encoder, slot);
        }
        if let Some(timing) = &self.timing {
            timing.mark(encoder, 2 * f as u32, true);
        }
        self.generator.step(encoder).map_err(|e| e.to_string())?;
        if let Some(timing) = &self.timing {
            timing.mark(encoder, 2 * f as u32 + 1, false);
        }
        self.renderer.append(encoder);
        self.renderer.draw(encoder, &target.texture_view);
        if f + 1 == self.settings.frames {
            self.capture = Some(self.copy_out(encoder, target));
        }
        self.frame += 1;
        self.encoded_this_frame = true;
        Ok(())
    }

    /// Copies the frame's image, probabilities and tokens into buffers of their own.
    fn copy_out(&self, encoder: &mut wgpu::CommandEncoder, target: &GpuImage) -> Capture {
        let width = target.texture.width();
        let align = wgpu::COPY_BYTES_PER_ROW_ALIGNMENT;
        let target = Offscreen {
            texture: (*target.texture).clone(),
            view: (*target.texture_view).clone(),
            padded_row: (width * 4).div_ceil(align) * align,
        };
        let readback = |label, bytes: usize| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes as u64,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        };
        let (streams, vocab) = (self.generator.streams(), self.generator.vocab());
        let capture = Capture {
            image: target.staging(&self.device),
            probs: readback("npc probabilities readback", streams * vocab * 4),
            tokens: readback("npc tokens readback", streams * 4),
            target,
        };
        capture.target.copy_to(encoder, &capture.image);
        let copy = |from: &wgpu::Buffer, to: &wgpu::Buffer, encoder: &mut wgpu::CommandEncoder| {
            encoder.copy_buffer_to_buffer(from, 0, to, 0, to.size());
        };
        copy(self.generator.probabilities().buffer(), &capture.probs, encoder);
        copy(self.generator.tokens().buffer(), &capture.tokens, encoder);
        capture
    }

    /// After the last frame: reads the captured frame back, saves it, checks every bar
    /// against the probabilities, and prints the model's time per frame.
    fn finish_run(&mut self) -> Result<(), String> {
        let frames = self.settings.frames;
        let frame_wall_ms = self
            .started
            .map(|start| start.elapsed().as_secs_f64() * 1e3 / (frames - 1).max(1) as f64);
        let capture = self.capture.as_ref().ok_or("the last frame was not captured")?;
        map_all_blocking(&self.device, &[&capture.image, &capture.probs, &capture.tokens]);
        let pixels = capture.target.pixels(&capture.image);
        let probs: Vec<f32> = read_mapped(&capture.probs);
        let tokens: Vec<u32> = read_mapped(&capture.tokens);
        let layout = self.renderer.layout;
        save_png(&self.settings.out, layout.width, layout.height, &pixels)?;
        println!(
            "{frames} frames of {} NPCs rendered by Bevy; the last ({}x{}) saved to {}",
            self.settings.npcs,
            layout.width,
            layout.height,
            self.settings.out.display()
        );
        let heights = check_bars(&layout, &pixels, &probs, &tokens)?;
        println!(
            "pixel check: {} bars of {} NPCs match the probabilities within one pixel ({heights} different heights)",
            layout.streams * layout.vocab,
            layout.streams
        );
        let streams = self.generator.streams();
        self.lines.drain(&self.device, streams)?;
        for (npc, line) in self.lines.lines.iter().enumerate() {
            println!("NPC {npc:2}: {line}");
        }
        println!(
            "the lines above came back with one asynchronous read per frame, polled without waiting: \
             at most {} frame(s) late during the loop",
            self.lines.max_lag
        );
        if self.lines.last != tokens {
            return Err(format!(
                "the last frame's tokens read asynchronously, {:?}, differ from those copied in its encoder, {tokens:?}",
                self.lines.last
            ));
        }
        self.report_time(frame_wall_ms)?;
        let created = tsumugi::gpu::devices_created();
        println!("devices created by tsumugi: {created} (it ran on Bevy's device)");
        if created != 0 {
            return Err(format!("tsumugi created {created} devices of its own"));
        }
        Ok(())
    }

    fn report_time(&mut self, frame_wall_ms: Option<f64>) -> Result<(), String> {
        let streams = self.generator.streams();
        let times = self
            .timing
            .as_ref()
            .map(|timing| timing.read(&self.device, &self.queue, self.settings.frames as u32));
        match times {
            Some(times) if times.len() > 1 => {
                model::print_gpu_times(streams, &times);
            }
            _ => {
                let ms = self.wall_time_per_step(20)?;
                println!(
                    "model time per frame: no timestamp queries (adapter without them, --wall-time, or one frame); \
                     wall time of one step ({streams} NPCs) submitted alone and waited for: {ms:.3} ms"
                );
            }
        }
        if let Some(ms) = frame_wall_ms {
            println!("whole Bevy frame (CPU wall time of an app update, not waiting for the GPU): {ms:.3} ms");
        }
        Ok(())
    }

    /// Wall time of `n` generator steps each submitted alone on Bevy's queue and waited
    /// for, in ms: the fallback where timestamps are unavailable, measured as game_npc
    /// does (it includes submission overhead).
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
}
