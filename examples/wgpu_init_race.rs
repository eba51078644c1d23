//! Plain-wgpu reproducer of the race behind tsumugi's multi-threaded wrong results
//! (no tsumugi code involved).
//!
//! wgpu-core zero-fills the parts of a buffer that were never written ("lazy
//! initialisation") when a command buffer that needs them is submitted. A binding with a
//! dynamic offset needs the *whole* buffer initialised, so the first submission that
//! binds a fresh buffer that way clears every range not yet written. In
//! `Queue::submit`, wgpu-core drains those ranges from the buffer's init tracker and
//! records the clear in the command buffer's transit encoder *before* it takes the
//! pending-writes lock; the pending writes then run *before* the transit encoder. A
//! `Queue::write_buffer` from another thread that lands in that window is marked
//! initialised already (so it does not save its range), yet its copy runs first and the
//! clear zeroes it.
//!
//! Each round: a fresh 64 KiB uniform buffer, a command buffer binding it with a
//! dynamic offset; one thread submits it while another writes 16-byte values into the
//! rest of the buffer. Then the buffer is read back and every slot checked.
//!
//! `cargo run --release --example wgpu_init_race [rounds]`; prints how many slots were
//! zeroed. With `--initialise`, each buffer is created with `mapped_at_creation` (so
//! wgpu-core marks it initialised at creation) and no slot is ever lost.

use std::sync::Barrier;

const BYTES: u64 = 64 * 1024;
const SLOT: u64 = 256;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let initialise = args.iter().any(|a| a == "--initialise");
    let rounds: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(200);

    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle().with_env());
    let adapter =
        pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default())).expect("an adapter");
    println!("adapter: {:?}", adapter.get_info());
    let (device, queue) =
        pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default())).expect("a device");

    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: None,
        source: wgpu::ShaderSource::Wgsl(
            "struct P { v: vec4<u32> }
             @group(0) @binding(0) var<uniform> p: P;
             @group(0) @binding(1) var<storage, read_write> out: array<u32>;
             @compute @workgroup_size(1) fn main() { out[0] = p.v.x; }"
                .into(),
        ),
    });
    let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: None,
        entries: &[
            wgpu::BindGroupLayoutEntry {
                binding: 0,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Uniform,
                    has_dynamic_offset: true,
                    min_binding_size: None,
                },
                count: None,
            },
            wgpu::BindGroupLayoutEntry {
                binding: 1,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage { read_only: false },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            },
        ],
    });
    let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: None,
        bind_group_layouts: &[Some(&layout)],
        immediate_size: 0,
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: None,
        layout: Some(&pipeline_layout),
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    let out = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 256,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let readback = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: BYTES,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });

    let slots = BYTES / SLOT;
    let (mut bad_rounds, mut zeroed) = (0usize, 0u64);
    for round in 0..rounds {
        let uniforms = device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: BYTES,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: initialise,
        });
        if initialise {
            uniforms.unmap();
        }
        queue.write_buffer(&uniforms, 0, bytemuck::cast_slice(&[1u32; 4]));
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: &uniforms,
                        offset: 0,
                        size: wgpu::BufferSize::new(16),
                    }),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: out.as_entire_binding(),
                },
            ],
        });
        let mut encoder = device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind_group, &[0]);
            pass.dispatch_workgroups(1, 1, 1);
        }
        let commands = encoder.finish();

        let barrier = Barrier::new(2);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                barrier.wait();
                for slot in 1..slots {
                    let value = slot as u32 + 1;
                    queue.write_buffer(&uniforms, slot * SLOT, bytemuck::cast_slice(&[value; 4]));
                }
            });
            barrier.wait();
            queue.submit([commands]);
        });

        let mut encoder = device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(&uniforms, 0, &readback, 0, BYTES);
        queue.submit([encoder.finish()]);
        readback.slice(..).map_async(wgpu::MapMode::Read, |r| r.expect("map"));
        device.poll(wgpu::PollType::wait_indefinitely()).expect("poll");
        let lost: Vec<u64> = {
            let view = readback.slice(..).get_mapped_range().expect("mapped");
            let words: &[u32] = bytemuck::cast_slice(&view);
            (1..slots)
                .filter(|&slot| words[(slot * SLOT / 4) as usize] != slot as u32 + 1)
                .collect()
        };
        readback.unmap();
        if !lost.is_empty() {
            bad_rounds += 1;
            zeroed += lost.len() as u64;
            println!(
                "round {round}: {} of {} slots written by the other thread read back as zero (first: slot {})",
                lost.len(),
                slots - 1,
                lost[0]
            );
        }
    }
    println!(
        "{bad_rounds} of {rounds} rounds lost writes ({zeroed} slots zeroed){}",
        if initialise {
            " with buffers initialised at creation"
        } else {
            ""
        }
    );
    if bad_rounds > 0 {
        std::process::exit(1);
    }
}
