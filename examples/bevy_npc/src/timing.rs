//! The generator step's GPU time in each frame: timestamp queries written by empty
//! compute passes around the step in the frame's encoder (as game_npc measures it), read
//! once after the loop.

use crate::render::map_all_blocking;

/// Timestamps around the generator's step in each frame: two queries per frame.
pub struct Timing {
    queries: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
}

impl Timing {
    pub fn new(device: &wgpu::Device, frames: usize) -> Option<Timing> {
        if !device.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
            return None;
        }
        let count = 2 * frames as u32;
        let bytes = u64::from(count) * 8;
        let buffer = |label, usage| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes,
                usage,
                mapped_at_creation: false,
            })
        };
        Some(Timing {
            queries: device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("npc model time"),
                ty: wgpu::QueryType::Timestamp,
                count,
            }),
            resolve: buffer(
                "npc model time resolve",
                wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            ),
            readback: buffer(
                "npc model time readback",
                wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            ),
        })
    }

    /// An empty compute pass that only writes timestamp `index`.
    pub fn mark(&self, encoder: &mut wgpu::CommandEncoder, index: u32, begin: bool) {
        encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("npc model time"),
            timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                query_set: &self.queries,
                beginning_of_pass_write_index: begin.then_some(index),
                end_of_pass_write_index: (!begin).then_some(index),
            }),
        });
    }

    /// The step's GPU time of each of the first `frames` frames, in ms (one readback).
    pub fn read(&self, device: &wgpu::Device, queue: &wgpu::Queue, frames: u32) -> Vec<f64> {
        let mut encoder = device.create_command_encoder(&Default::default());
        encoder.resolve_query_set(&self.queries, 0..2 * frames, &self.resolve, 0);
        encoder.copy_buffer_to_buffer(&self.resolve, 0, &self.readback, 0, u64::from(frames) * 16);
        queue.submit([encoder.finish()]);
        map_all_blocking(device, &[&self.readback]);
        let period = f64::from(queue.get_timestamp_period());
        let ticks: Vec<u64> = {
            let view = self.readback.slice(..).get_mapped_range().expect("mapped timestamps");
            bytemuck::pod_collect_to_vec(&view[..frames as usize * 16])
        };
        self.readback.unmap();
        ticks
            .chunks(2)
            .map(|pair| pair[1].saturating_sub(pair[0]) as f64 * period / 1e6)
            .collect()
    }
}
