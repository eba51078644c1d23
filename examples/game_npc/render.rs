//! The game_npc example's renderer: a compute pass that appends each NPC's drawn token to
//! its line, and a render pass that draws the lines (a 3x5 bitmap font) and each NPC's
//! output distribution as a strip of bars. Both bind the generator's buffers directly.
//! Shared with `tests/game.rs`, which checks the bars' pixels against the probabilities.
#![allow(dead_code)]

use wgpu::util::DeviceExt;

/// Mirror of `Frame` in npc.wgsl: where everything goes, in pixels.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Layout {
    pub width: u32,
    pub height: u32,
    /// B, one row per NPC.
    pub streams: u32,
    /// V, one bar per token.
    pub vocab: u32,
    /// Characters shown per line (the last ones written).
    pub line_len: u32,
    /// Font pixels per glyph pixel: a glyph cell is 4 x 6 of them.
    pub scale: u32,
    pub row_h: u32,
    pub text_x: u32,
    pub bars_x: u32,
    pub bar_w: u32,
    pub bar_h: u32,
    pub top: u32,
}

impl Layout {
    /// Lines of `line_len` characters, bars `bar_w` x `bar_h` beside them.
    pub fn new(streams: usize, vocab: usize, line_len: usize, bar_w: u32, bar_h: u32) -> Layout {
        let scale = 2;
        let (top, text_x) = (8, 8);
        let bars_x = text_x + line_len as u32 * 4 * scale + 16;
        let row_h = (6 * scale).max(bar_h) + 6;
        let width = bars_x + vocab as u32 * bar_w + 8;
        let height = top + streams as u32 * row_h + 2;
        Layout {
            width,
            height,
            streams: streams as u32,
            vocab: vocab as u32,
            line_len: line_len as u32,
            scale,
            row_h,
            text_x,
            bars_x,
            bar_w,
            bar_h,
            top,
        }
    }

    /// The leftmost pixel column of bar `j` and the pixel row just below NPC `row`'s strip.
    pub fn bar_column(&self, row: usize, j: usize) -> (u32, u32) {
        (
            self.bars_x + j as u32 * self.bar_w,
            self.top + row as u32 * self.row_h + self.bar_h,
        )
    }
}

/// Glyphs of a 3x5 font for the characters a char model of English text draws; others
/// are blank. Rows top to bottom, `#` = ink.
const GLYPHS: &[(char, [&str; 5])] = &[
    ('a', [".#.", "#.#", "###", "#.#", "#.#"]),
    ('b', ["##.", "#.#", "##.", "#.#", "##."]),
    ('c', [".##", "#..", "#..", "#..", ".##"]),
    ('d', ["##.", "#.#", "#.#", "#.#", "##."]),
    ('e', ["###", "#..", "##.", "#..", "###"]),
    ('f', ["###", "#..", "##.", "#..", "#.."]),
    ('g', [".##", "#..", "#.#", "#.#", ".##"]),
    ('h', ["#.#", "#.#", "###", "#.#", "#.#"]),
    ('i', ["###", ".#.", ".#.", ".#.", "###"]),
    ('j', ["..#", "..#", "..#", "#.#", ".#."]),
    ('k', ["#.#", "#.#", "##.", "#.#", "#.#"]),
    ('l', ["#..", "#..", "#..", "#..", "###"]),
    ('m', ["#.#", "###", "###", "#.#", "#.#"]),
    ('n', ["##.", "#.#", "#.#", "#.#", "#.#"]),
    ('o', [".#.", "#.#", "#.#", "#.#", ".#."]),
    ('p', ["##.", "#.#", "##.", "#..", "#.."]),
    ('q', [".#.", "#.#", "#.#", "##.", ".##"]),
    ('r', ["##.", "#.#", "##.", "#.#", "#.#"]),
    ('s', [".##", "#..", ".#.", "..#", "##."]),
    ('t', ["###", ".#.", ".#.", ".#.", ".#."]),
    ('u', ["#.#", "#.#", "#.#", "#.#", "###"]),
    ('v', ["#.#", "#.#", "#.#", "#.#", ".#."]),
    ('w', ["#.#", "#.#", "###", "###", "#.#"]),
    ('x', ["#.#", "#.#", ".#.", "#.#", "#.#"]),
    ('y', ["#.#", "#.#", ".#.", ".#.", ".#."]),
    ('z', ["###", "..#", ".#.", "#..", "###"]),
    ('0', ["###", "#.#", "#.#", "#.#", "###"]),
    ('1', [".#.", "##.", ".#.", ".#.", "###"]),
    ('2', ["##.", "..#", ".#.", "#..", "###"]),
    ('3', ["##.", "..#", ".#.", "..#", "##."]),
    ('4', ["#.#", "#.#", "###", "..#", "..#"]),
    ('5', ["###", "#..", "##.", "..#", "##."]),
    ('6', [".##", "#..", "###", "#.#", "###"]),
    ('7', ["###", "..#", ".#.", ".#.", ".#."]),
    ('8', ["###", "#.#", "###", "#.#", "###"]),
    ('9', ["###", "#.#", "###", "..#", "##."]),
    ('!', [".#.", ".#.", ".#.", "...", ".#."]),
    ('?', ["##.", "..#", ".#.", "...", ".#."]),
    ('.', ["...", "...", "...", "...", ".#."]),
    (',', ["...", "...", "...", ".#.", "#.."]),
    ('\'', [".#.", ".#.", "...", "...", "..."]),
    ('"', ["#.#", "#.#", "...", "...", "..."]),
    ('-', ["...", "...", "###", "...", "..."]),
    (':', ["...", ".#.", "...", ".#.", "..."]),
    (';', ["...", ".#.", "...", ".#.", "#.."]),
];

/// The font buffer: 96 glyphs (ASCII 32..127), bit `3 row + col` set for ink. Capitals
/// share the small letters' glyphs.
pub fn font_bits() -> Vec<u32> {
    let mut font = vec![0u32; 96];
    for &(ch, rows) in GLYPHS {
        let mut bits = 0;
        for (r, row) in rows.iter().enumerate() {
            for (c, pixel) in row.chars().enumerate() {
                if pixel == '#' {
                    bits |= 1 << (r * 3 + c);
                }
            }
        }
        font[ch as usize - 32] = bits;
        if ch.is_ascii_lowercase() {
            font[ch.to_ascii_uppercase() as usize - 32] = bits;
        }
    }
    font
}

/// The renderer's pipelines, buffers and bind groups.
pub struct Renderer {
    pub layout: Layout,
    text: wgpu::Buffer,
    cursor: wgpu::Buffer,
    append_pipeline: wgpu::ComputePipeline,
    append_group: wgpu::BindGroup,
    draw_pipeline: wgpu::RenderPipeline,
    draw_group: wgpu::BindGroup,
}

impl Renderer {
    /// Builds the pipelines for a `format` target. `tokens` (u32 `[B]`) and `probs`
    /// (f32 `[B, V]`) are the generator's buffers; `charmap` maps each token to its
    /// ASCII code.
    pub fn new(
        device: &wgpu::Device,
        format: wgpu::TextureFormat,
        layout: Layout,
        tokens: &wgpu::Buffer,
        probs: &wgpu::Buffer,
        charmap: &[u32],
    ) -> Renderer {
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("npc.wgsl"),
            source: wgpu::ShaderSource::Wgsl(include_str!("npc.wgsl").into()),
        });
        let storage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
        let init = |label, contents: &[u8], usage| {
            device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents,
                usage,
            })
        };
        let frame = init("npc frame", bytemuck::bytes_of(&layout), wgpu::BufferUsages::UNIFORM);
        let text = init(
            "npc text",
            bytemuck::cast_slice(&vec![0u32; (layout.streams * layout.line_len) as usize]),
            storage,
        );
        let cursor = init(
            "npc cursor",
            bytemuck::cast_slice(&vec![0u32; layout.streams as usize]),
            storage,
        );
        let font = init("npc font", bytemuck::cast_slice(&font_bits()), storage);
        let charmap = init("npc charmap", bytemuck::cast_slice(charmap), storage);

        let append_pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some("append_tokens"),
            layout: None,
            module: &module,
            entry_point: Some("append_tokens"),
            compilation_options: Default::default(),
            cache: None,
        });
        let bind = |pipeline_layout: &wgpu::BindGroupLayout, entries: &[(u32, &wgpu::Buffer)]| {
            let entries: Vec<wgpu::BindGroupEntry> = entries
                .iter()
                .map(|&(binding, buffer)| wgpu::BindGroupEntry {
                    binding,
                    resource: buffer.as_entire_binding(),
                })
                .collect();
            device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("npc"),
                layout: pipeline_layout,
                entries: &entries,
            })
        };
        let append_group = bind(
            &append_pipeline.get_bind_group_layout(0),
            &[(0, &frame), (2, tokens), (6, &charmap), (7, &text), (8, &cursor)],
        );
        let draw_pipeline = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
            label: Some("npc draw"),
            layout: None,
            vertex: wgpu::VertexState {
                module: &module,
                entry_point: Some("vs_main"),
                compilation_options: Default::default(),
                buffers: &[],
            },
            primitive: wgpu::PrimitiveState::default(),
            depth_stencil: None,
            multisample: wgpu::MultisampleState::default(),
            fragment: Some(wgpu::FragmentState {
                module: &module,
                entry_point: Some("fs_main"),
                compilation_options: Default::default(),
                targets: &[Some(format.into())],
            }),
            multiview_mask: None,
            cache: None,
        });
        let draw_group = bind(
            &draw_pipeline.get_bind_group_layout(0),
            &[
                (0, &frame),
                (1, probs),
                (2, tokens),
                (3, &text),
                (4, &cursor),
                (5, &font),
            ],
        );
        Renderer {
            layout,
            text,
            cursor,
            append_pipeline,
            append_group,
            draw_pipeline,
            draw_group,
        }
    }

    /// Appends each NPC's drawn token to its line (run after the generator's step).
    pub fn append(&self, encoder: &mut wgpu::CommandEncoder) {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("append_tokens"),
            timestamp_writes: None,
        });
        pass.set_pipeline(&self.append_pipeline);
        pass.set_bind_group(0, &self.append_group, &[]);
        pass.dispatch_workgroups(self.layout.streams.div_ceil(64), 1, 1);
    }

    /// Empties NPC `row`'s line (with the generator's `reset_slot`, a fresh start).
    pub fn clear_line(&self, encoder: &mut wgpu::CommandEncoder, row: usize) {
        let line = u64::from(self.layout.line_len) * 4;
        encoder.clear_buffer(&self.text, row as u64 * line, Some(line));
        encoder.clear_buffer(&self.cursor, row as u64 * 4, Some(4));
    }

    /// Draws every line and strip into `view`.
    pub fn draw(&self, encoder: &mut wgpu::CommandEncoder, view: &wgpu::TextureView) {
        let mut pass = encoder.begin_render_pass(&wgpu::RenderPassDescriptor {
            label: Some("npc draw"),
            color_attachments: &[Some(wgpu::RenderPassColorAttachment {
                view,
                depth_slice: None,
                resolve_target: None,
                ops: wgpu::Operations {
                    load: wgpu::LoadOp::Clear(wgpu::Color::BLACK),
                    store: wgpu::StoreOp::Store,
                },
            })],
            depth_stencil_attachment: None,
            timestamp_writes: None,
            occlusion_query_set: None,
            multiview_mask: None,
        });
        pass.set_pipeline(&self.draw_pipeline);
        pass.set_bind_group(0, &self.draw_group, &[]);
        pass.draw(0..3, 0..1);
    }
}

/// An offscreen target that can be copied out: the texture, its view, and a buffer
/// layout for `copy_texture_to_buffer` (rows padded to 256 bytes).
pub struct Offscreen {
    pub texture: wgpu::Texture,
    pub view: wgpu::TextureView,
    pub padded_row: u32,
}

/// The headless target's format: 8-bit RGBA, written as the shader's colours.
pub const OFFSCREEN_FORMAT: wgpu::TextureFormat = wgpu::TextureFormat::Rgba8Unorm;

impl Offscreen {
    pub fn new(device: &wgpu::Device, width: u32, height: u32) -> Offscreen {
        let texture = device.create_texture(&wgpu::TextureDescriptor {
            label: Some("npc frame"),
            size: wgpu::Extent3d {
                width,
                height,
                depth_or_array_layers: 1,
            },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: OFFSCREEN_FORMAT,
            usage: wgpu::TextureUsages::RENDER_ATTACHMENT | wgpu::TextureUsages::COPY_SRC,
            view_formats: &[],
        });
        let view = texture.create_view(&Default::default());
        let padded_row = (width * 4).div_ceil(wgpu::COPY_BYTES_PER_ROW_ALIGNMENT) * wgpu::COPY_BYTES_PER_ROW_ALIGNMENT;
        Offscreen {
            texture,
            view,
            padded_row,
        }
    }

    /// A buffer the frame can be copied into and mapped.
    pub fn staging(&self, device: &wgpu::Device) -> wgpu::Buffer {
        device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("npc frame readback"),
            size: u64::from(self.padded_row) * u64::from(self.texture.height()),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// Encodes the copy of the frame into `staging`.
    pub fn copy_to(&self, encoder: &mut wgpu::CommandEncoder, staging: &wgpu::Buffer) {
        encoder.copy_texture_to_buffer(
            wgpu::TexelCopyTextureInfo {
                texture: &self.texture,
                mip_level: 0,
                origin: wgpu::Origin3d::ZERO,
                aspect: wgpu::TextureAspect::All,
            },
            wgpu::TexelCopyBufferInfo {
                buffer: staging,
                layout: wgpu::TexelCopyBufferLayout {
                    offset: 0,
                    bytes_per_row: Some(self.padded_row),
                    rows_per_image: None,
                },
            },
            self.texture.size(),
        );
    }

    /// The RGBA pixels of a mapped `staging` buffer, rows unpadded.
    pub fn pixels(&self, staging: &wgpu::Buffer) -> Vec<u8> {
        let (width, height) = (self.texture.width() as usize, self.texture.height() as usize);
        let data = staging.slice(..).get_mapped_range().expect("a mapped frame");
        let mut pixels = Vec::with_capacity(width * height * 4);
        for row in data.chunks(self.padded_row as usize).take(height) {
            pixels.extend_from_slice(&row[..width * 4]);
        }
        drop(data);
        staging.unmap();
        pixels
    }
}

/// Maps every buffer for reading and waits for all of them: after the frame loop, never
/// inside it.
pub fn map_all_blocking(device: &wgpu::Device, buffers: &[&wgpu::Buffer]) {
    for buffer in buffers {
        buffer.map_async(wgpu::MapMode::Read, .., |result| result.expect("map a readback buffer"));
    }
    device
        .poll(wgpu::PollType::wait_indefinitely())
        .expect("wait for the GPU");
}
