//! Lists the adapters wgpu can see, picks one the way `Context::new` does, runs one
//! matmul on it and prints its GFLOP/s and the largest error against the CPU reference.
//!
//! ```text
//! cargo run --release --example devices
//! WGPU_BACKEND=gl cargo run --release --example devices     # the GL fallback
//! WGPU_ADAPTER_NAME=llvmpipe cargo run --release --example devices
//! ```

use std::time::Instant;

use rand::{Rng, SeedableRng};
use tsumugi::kernels::matmul::{matmul_forward, Matmul, MatmulDims};
use tsumugi::{gpu, reference, AdapterOptions, AdapterSummary, Context, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = AdapterOptions::default();
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle().with_env());
    let adapters = pollster::block_on(gpu::enumerate_adapters(&instance, options.backends));
    println!("adapters on {:?}, best first:", options.backends);
    for adapter in &adapters {
        println!("  {}", AdapterSummary::from(&adapter.get_info()));
    }

    let ctx = Context::with_options(&options)?;
    println!("chosen: {}", ctx.adapter());
    let limits = ctx.limits();
    println!(
        "limits: storage binding {} MiB, workgroup storage {} KiB, {} invocations per workgroup, {} storage buffers per stage",
        limits.max_storage_buffer_binding_size >> 20,
        limits.max_compute_workgroup_storage_size >> 10,
        limits.max_compute_invocations_per_workgroup,
        limits.max_storage_buffers_per_shader_stage
    );
    // On lavapipe the subgroup size follows llvmpipe's SIMD width (LP_NATIVE_VECTOR_WIDTH:
    // 256 bits by default, 8 lanes; 512 bits, 16 lanes); CI checks this line.
    let info = ctx.device().adapter_info();
    let kernels = if ctx.subgroup_kernels() { "subgroup" } else { "portable" };
    println!(
        "subgroup size {}..{} lanes: {kernels} kernels",
        info.subgroup_min_size, info.subgroup_max_size
    );

    let (m, n, k) = (512, 512, 512);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let a_data: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
    let b_data: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1.0..1.0)).collect();
    let op = Matmul::default();
    let dims = MatmulDims::new(&op, &[m, k], &[k, n])?;
    let a = Tensor::from_slice(&ctx, &a_data, &[m, k])?;
    let b = Tensor::from_slice(&ctx, &b_data, &[k, n])?;
    let c = Tensor::full(&ctx, &[m, n], f32::NAN)?;
    let run = || -> tsumugi::Result<()> {
        let mut encoder = ctx.create_encoder();
        matmul_forward(&ctx, &mut encoder, &op, &a, &b, None, &c)?;
        ctx.submit(encoder);
        ctx.wait_idle_blocking()
    };
    run()?; // builds the pipeline
    let runs = 5;
    let start = Instant::now();
    for _ in 0..runs {
        run()?;
    }
    let seconds = start.elapsed().as_secs_f64() / f64::from(runs);
    let gflops = 2.0 * dims.multiply_adds() as f64 / seconds / 1e9;

    let got = c.to_vec::<f32>()?;
    let to_f64 = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
    let want = reference::matmul::matmul_forward(&dims, &op, &to_f64(&a_data), &to_f64(&b_data), None, &[]);
    let max_error = got
        .iter()
        .zip(&want)
        .map(|(&g, &w)| (f64::from(g) - w).abs())
        .fold(0.0, f64::max);
    println!(
        "matmul {m}x{n}x{k}: {:.3} ms, {gflops:.2} GFLOP/s, max |error| vs CPU reference {max_error:.2e}",
        seconds * 1e3
    );
    Ok(())
}
