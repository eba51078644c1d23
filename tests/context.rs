//! The GPU context: adapter choice, a host's device, tensors, the pool, errors.

mod common;

use std::future::Future;

use common::ctx;
use tsumugi::kernels::elementwise::add_forward;
use tsumugi::kernels::matmul::{matmul_forward, Matmul};
use tsumugi::{AdapterOptions, Context, DType, Error, Recorder, Tensor};

#[test]
fn context_reports_the_adapter_it_chose() {
    let ctx = ctx();
    // Context::new made a device, and counted it (tests/game.rs relies on the count).
    assert!(tsumugi::gpu::devices_created() >= 1);
    let adapter = ctx.adapter();
    assert!(!adapter.name.is_empty());
    let line = adapter.to_string();
    assert!(line.contains(&format!("{:?}", adapter.backend)), "{line}");
    // The real limits, not wgpu's defaults: lavapipe and llvmpipe grant 128 MiB bindings.
    assert!(
        ctx.limits().max_storage_buffer_binding_size >= 128 << 20,
        "{:?}",
        ctx.limits()
    );
}

#[test]
fn context_with_an_unknown_adapter_name_is_a_clear_error() {
    let options = AdapterOptions {
        name_contains: Some("no-such-adapter-anywhere".into()),
        ..AdapterOptions::default()
    };
    match Context::with_options(&options) {
        Err(Error::NoAdapter { reason }) => assert!(reason.contains("no-such-adapter-anywhere"), "{reason}"),
        other => panic!("expected NoAdapter, got {other:?}"),
    }
}

#[test]
fn tensors_round_trip_f32_and_u32() {
    let ctx = ctx();
    let values: Vec<f32> = (0..37).map(|i| i as f32 * 0.5 - 3.0).collect();
    let t = Tensor::from_slice(ctx, &values, &[37]).unwrap();
    assert_eq!(t.to_vec::<f32>().unwrap(), values);
    let ids: Vec<u32> = (0..12).map(|i| i * 1000 + 7).collect();
    let t = Tensor::from_slice(ctx, &ids, &[3, 4]).unwrap();
    assert_eq!(t.shape(), &[3, 4]);
    assert_eq!(t.dtype(), DType::U32);
    assert_eq!(t.to_vec::<u32>().unwrap(), ids);
    let zeros = Tensor::zeros(ctx, &[2, 3], DType::F32).unwrap();
    assert_eq!(zeros.to_vec::<f32>().unwrap(), vec![0.0; 6]);
    t.write(&[1u32; 12]).unwrap();
    assert_eq!(t.to_vec::<u32>().unwrap(), vec![1; 12]);
}

#[test]
fn tensor_errors_name_the_tensor_and_both_shapes() {
    let ctx = ctx();
    let err = Tensor::from_slice(ctx, &[1.0f32, 2.0, 3.0], &[2, 2]).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    assert!(
        err.to_string().contains("[2, 2]") && err.to_string().contains("[3]"),
        "{err}"
    );

    let t = Tensor::zeros(ctx, &[2, 2], DType::F32).unwrap();
    assert!(matches!(t.to_vec::<u32>().unwrap_err(), Error::DType { .. }));
    let err = t.check_shape("hidden state h0", &[1, 2, 2]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "shape mismatch for hidden state h0: expected [1, 2, 2], found [2, 2]"
    );
    assert!(t.reshape(&[4]).is_ok());
    assert!(matches!(t.reshape(&[5]).unwrap_err(), Error::ShapeMismatch { .. }));
    assert!(matches!(
        t.write(&[0.0f32; 3]).unwrap_err(),
        Error::ShapeMismatch { .. }
    ));
}

#[test]
fn full_fills_a_tensor_larger_than_one_upload_piece() {
    // `full` uploads in pieces of 4 MiB: every element of a 6 MiB tensor, the last too.
    let len = (6 << 20) / 4 + 3;
    let t = Tensor::full(ctx(), &[len], 2.5f32).unwrap();
    let values = t.to_vec::<f32>().unwrap();
    assert_eq!(values.len(), len);
    assert!(values.iter().all(|&v| v == 2.5), "an element was not filled");
}

#[test]
fn a_tensor_larger_than_the_device_allows_is_a_device_limit_error() {
    let ctx = ctx();
    let too_many = (ctx.limits().max_buffer_size / 4) as usize + 1024;
    match Tensor::zeros(ctx, &[too_many], DType::F32) {
        Err(Error::DeviceLimit { limit, .. }) => assert_eq!(limit, "max_buffer_size"),
        other => panic!("expected DeviceLimit, got {other:?}"),
    }
    let overflow = Tensor::zeros(ctx, &[usize::MAX, 2], DType::F32).unwrap_err();
    assert!(matches!(overflow, Error::InvalidArgument { .. }), "{overflow}");
}

#[test]
fn repeating_a_step_with_the_same_shapes_creates_no_buffers() {
    // Its own context, so other tests' allocations do not interfere.
    let ctx = Context::new().unwrap();
    let step = |ctx: &Context| {
        let a = Tensor::from_slice(ctx, &[1.0f32; 6 * 5], &[6, 5]).unwrap();
        let b = Tensor::from_slice(ctx, &[2.0f32; 5 * 7], &[5, 7]).unwrap();
        let c = Tensor::zeros(ctx, &[6, 7], DType::F32).unwrap();
        let mut encoder = ctx.create_encoder();
        matmul_forward(ctx, &mut encoder, &Matmul::default(), &a, &b, None, &c).unwrap();
        ctx.submit(encoder);
        c.to_vec::<f32>().unwrap()
    };
    assert_eq!(step(&ctx), vec![10.0; 42]);
    let after_first = ctx.pool_stats();
    let pipelines = ctx.pipeline_count();
    for _ in 0..3 {
        assert_eq!(step(&ctx), vec![10.0; 42]);
    }
    let after = ctx.pool_stats();
    assert_eq!(after.buffers_created, after_first.buffers_created, "{after:?}");
    assert_eq!(after.uniform_chunks_created, after_first.uniform_chunks_created);
    assert_eq!(ctx.pipeline_count(), pipelines);
    assert_eq!(after.buffers_in_use, 0, "every tensor was dropped: {after:?}");
}

#[test]
fn from_wgpu_runs_on_the_hosts_device_and_queue() {
    // A host creates its own device; tsumugi must use it rather than make another.
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle().with_env());
    let adapter = pollster::block_on(tsumugi::gpu::enumerate_adapters(&instance, wgpu::Backends::all()))
        .into_iter()
        .next()
        .expect("an adapter");
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default())).unwrap();
    let ctx = Context::from_wgpu(device.clone(), queue.clone());
    assert!(ctx.device() == &device && ctx.queue() == &queue);

    let a = Tensor::from_slice(&ctx, &[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap();
    let b = Tensor::from_slice(&ctx, &[1.0f32, 0.0, 0.0, 1.0, 1.0, 1.0], &[3, 2]).unwrap();
    let c = Tensor::full(&ctx, &[2, 2], f32::NAN).unwrap();
    // Encode into the host's own encoder, submit it as the host would.
    let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
    matmul_forward(&ctx, &mut encoder, &Matmul::default(), &a, &b, None, &c).unwrap();
    queue.submit([encoder.finish()]);
    ctx.recycle_after_submit();
    assert_eq!(c.to_vec::<f32>().unwrap(), vec![4.0, 5.0, 10.0, 11.0]);
    // The output is a plain wgpu buffer a render pipeline could bind.
    assert!(c.buffer().usage().contains(wgpu::BufferUsages::STORAGE));
}

/// Encodes dependent dispatches with a copy among them: product = a b; sum = 2 product;
/// copy = sum (a copy); out = copy + sum; sum = out + copy. Returns (out, sum), to read
/// once the caller has submitted.
fn encode_chain(ctx: &Context, recorder: &mut dyn Recorder) -> (Tensor, Tensor) {
    let a = Tensor::from_slice(ctx, &common::seeded(1, 5 * 7), &[5, 7]).unwrap();
    let b = Tensor::from_slice(ctx, &common::seeded(2, 7 * 3), &[7, 3]).unwrap();
    let [product, sum, copy, out] = [(); 4].map(|()| Tensor::zeros(ctx, &[5, 3], DType::F32).unwrap());
    matmul_forward(ctx, recorder, &Matmul::default(), &a, &b, None, &product).unwrap();
    add_forward(ctx, recorder, &product, &product, &sum).unwrap();
    recorder
        .command_encoder()
        .copy_buffer_to_buffer(sum.buffer(), 0, copy.buffer(), 0, sum.size_in_bytes());
    add_forward(ctx, recorder, &copy, &sum, &out).unwrap();
    add_forward(ctx, recorder, &out, &copy, &sum).unwrap();
    (out, sum)
}

#[test]
fn dispatches_sharing_an_encoders_pass_see_each_others_writes_like_separate_passes() {
    let ctx = ctx();
    let a = common::seeded(1, 5 * 7);
    let b = common::seeded(2, 7 * 3);
    let product: Vec<f32> = (0..5 * 3)
        .map(|i| (0..7).map(|k| a[i / 3 * 7 + k] * b[k * 3 + i % 3]).sum())
        .collect();
    // out = 4 product, then sum = 6 product.
    let want_out: Vec<f32> = product.iter().map(|p| 4.0 * p).collect();
    let want_sum: Vec<f32> = product.iter().map(|p| 6.0 * p).collect();
    let close = |got: &[f32], want: &[f32]| {
        got.iter()
            .zip(want)
            .all(|(g, w)| (g - w).abs() <= 1e-4 * (1.0 + w.abs()))
    };

    // An Encoder: the dispatches before and after the copy each share one pass.
    let mut encoder = ctx.create_encoder();
    let (out, sum) = encode_chain(ctx, &mut encoder);
    ctx.submit(encoder);
    let (shared_out, shared_sum) = (out.to_vec::<f32>().unwrap(), sum.to_vec::<f32>().unwrap());
    assert!(close(&shared_out, &want_out), "{shared_out:?} vs {want_out:?}");
    assert!(close(&shared_sum, &want_sum), "{shared_sum:?} vs {want_sum:?}");

    // A raw wgpu encoder: a pass per dispatch; the same numbers, bit for bit.
    let mut raw = ctx
        .device()
        .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
    let (out, sum) = encode_chain(ctx, &mut raw);
    ctx.queue().submit([raw.finish()]);
    ctx.recycle_after_submit();
    assert_eq!(out.to_vec::<f32>().unwrap(), shared_out);
    assert_eq!(sum.to_vec::<f32>().unwrap(), shared_sum);
}

#[test]
fn tensor_read_is_asynchronous_and_completes_when_the_device_is_polled() {
    let ctx = ctx();
    let t = Tensor::from_slice(ctx, &[3.0f32, 1.0, 4.0, 1.0, 5.0], &[5]).unwrap();
    let mut future = std::pin::pin!(t.read::<f32>());
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    // The first poll starts the copy and the map; the host's frame loop would then poll.
    let mut value = None;
    for _ in 0..1000 {
        if let std::task::Poll::Ready(result) = future.as_mut().poll(&mut cx) {
            value = Some(result.unwrap());
            break;
        }
        ctx.wait_idle_blocking().unwrap();
    }
    assert_eq!(value.expect("the read completed"), vec![3.0, 1.0, 4.0, 1.0, 5.0]);
}

/// Profiling times each dispatch per (kernel, workgroup grid); without the device
/// feature it is a clear error, and finishing a profile never started is one too.
#[test]
fn profiling_times_each_kernel_or_says_why_not() {
    // A context of its own: the profile is per context, and other tests share `ctx()`.
    let ctx = Context::new().expect("context");
    assert!(ctx.finish_profiling().is_err(), "finish without start");
    if !ctx.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
        let err = ctx.start_profiling().expect_err("no timestamp queries");
        assert!(err.to_string().contains("TIMESTAMP_QUERY"), "{err}");
        return;
    }
    let a = Tensor::from_slice(&ctx, &vec![1.0f32; 37 * 53], &[37, 53]).unwrap();
    let b = Tensor::from_slice(&ctx, &vec![1.0f32; 53 * 70], &[53, 70]).unwrap();
    let c = Tensor::zeros(&ctx, &[37, 70], DType::F32).unwrap();
    ctx.start_profiling().expect("start");
    for _ in 0..3 {
        let mut encoder = ctx.create_encoder();
        matmul_forward(&ctx, &mut encoder, &Matmul::default(), &a, &b, None, &c).unwrap();
        matmul_forward(&ctx, &mut encoder, &Matmul::default(), &a, &b, None, &c).unwrap();
        ctx.submit(encoder);
    }
    let profile = ctx.finish_profiling().expect("profile");
    assert_eq!(profile.submissions, 3);
    assert_eq!(profile.entries.len(), 1, "{profile}");
    let entry = &profile.entries[0];
    let kernel = if ctx.subgroup_kernels() {
        "matmul_forward_subgroup"
    } else {
        "matmul_forward"
    };
    assert_eq!((entry.kernel, entry.calls), (kernel, 6));
    assert!(entry.total > std::time::Duration::ZERO, "{profile}");
    assert!(profile.span >= profile.total(), "{profile}");
    assert!(profile.to_string().contains(kernel));
    // Stopped: later work is not timed, and the result is still right.
    let mut encoder = ctx.create_encoder();
    matmul_forward(&ctx, &mut encoder, &Matmul::default(), &a, &b, None, &c).unwrap();
    ctx.submit(encoder);
    assert!(c.to_vec::<f32>().unwrap().iter().all(|&x| x == 53.0));
    assert!(ctx.finish_profiling().is_err());
}

/// The subgroup kernels are on where the device has subgroups of at least 8 lanes, can be
/// turned off and on again there, and asking for them elsewhere is an error.
#[test]
fn subgroup_kernels_are_on_where_the_device_has_them_and_can_be_turned_off() {
    let ctx = Context::new().expect("context");
    let has_subgroups =
        ctx.features().contains(wgpu::Features::SUBGROUP) && ctx.device().adapter_info().subgroup_min_size >= 8;
    assert_eq!(ctx.subgroup_kernels(), has_subgroups, "{}", ctx.adapter());
    ctx.set_subgroup_kernels(false).expect("off is always possible");
    assert!(!ctx.subgroup_kernels());
    match ctx.set_subgroup_kernels(true) {
        Ok(()) => assert!(has_subgroups && ctx.subgroup_kernels()),
        Err(err) => {
            assert!(!has_subgroups, "{err}");
            assert!(err.to_string().contains("subgroup"), "{err}");
            assert!(!ctx.subgroup_kernels());
        }
    }
}

#[test]
fn tensors_of_two_contexts_in_one_call_are_an_error_naming_both_and_nothing_is_written() {
    // Two contexts, each with its own wgpu instance: wgpu's device ids repeat across
    // instances, so only tsumugi's own identity tells them apart.
    let ctx = Context::new().expect("an adapter");
    let other = Context::new().expect("an adapter");
    assert_ne!(ctx.id(), other.id());
    assert_eq!(ctx.clone().id(), ctx.id());
    // Live tensors on both, so that buffer ids of one context exist on the other too.
    let ours: Vec<Tensor> = (0..16)
        .map(|i| Tensor::full(&ctx, &[2, 2], i as f32).unwrap())
        .collect();
    let theirs: Vec<Tensor> = (0..4)
        .map(|i| Tensor::full(&other, &[2, 2], -(i as f32)).unwrap())
        .collect();
    let a = Tensor::from_slice(&ctx, &[1.0f32, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
    let b = Tensor::from_slice(&ctx, &[1.0f32, 0.0, 0.0, 1.0], &[2, 2]).unwrap();
    let b_other = Tensor::from_slice(&other, &[1.0f32, 0.0, 0.0, 1.0], &[2, 2]).unwrap();
    let c_other = Tensor::full(&other, &[2, 2], 7.0f32).unwrap();
    let mut encoder = ctx.create_encoder();
    let err = matmul_forward(&ctx, &mut encoder, &Matmul::default(), &a, &b, None, &c_other).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    assert!(
        message.contains("matmul: c belongs to context") && message.contains("but matmul: a to context"),
        "{message}"
    );
    assert!(
        message.contains(&format!("#{}", other.id())) && message.contains(&format!("#{}", ctx.id())),
        "{message}"
    );
    let err = matmul_forward(&ctx, &mut encoder, &Matmul::default(), &a, &b_other, None, &ours[0]).unwrap_err();
    assert!(err.to_string().contains("b belongs to context"), "{err}");
    ctx.submit(encoder);
    // Nothing was written anywhere.
    assert_eq!(c_other.to_vec::<f32>().unwrap(), vec![7.0; 4]);
    for (i, t) in ours.iter().enumerate() {
        assert_eq!(
            t.to_vec::<f32>().unwrap(),
            vec![i as f32; 4],
            "tensor {i} of ctx changed"
        );
    }
    for (i, t) in theirs.iter().enumerate() {
        assert_eq!(
            t.to_vec::<f32>().unwrap(),
            vec![-(i as f32); 4],
            "tensor {i} of other changed"
        );
    }
}

#[test]
fn an_unknown_wgpu_backend_value_is_named_in_the_error() {
    let options = AdapterOptions {
        backends: wgpu::Backends::empty(),
        name_contains: None,
    };
    let err = Context::with_options(&options).unwrap_err();
    assert!(matches!(err, Error::NoAdapter { .. }), "{err}");
    assert!(err.to_string().contains("vulkan, metal, dx12, gl"), "{err}");
}
