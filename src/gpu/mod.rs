//! The GPU context: adapter and device, pipeline cache, buffer pool, uniform arena and
//! readback (`readback.rs`).
//!
//! A [`Context`] either owns a device it created ([`Context::new`]) or runs on a host
//! application's device and queue ([`Context::from_wgpu`]); nothing below assumes which.
//! Launchers encode into an encoder the caller passes and never submit or wait; the
//! only blocking calls are the convenience constructors and the `*_blocking` helpers.

mod adapter;
mod pipeline;
mod pool;
mod profile;
mod readback;

use std::future::Future;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub use adapter::{enumerate_adapters, AdapterOptions, AdapterSummary};
pub use pipeline::{shader_families, ShaderFamily, SUBGROUP_SECTION};
pub(crate) use pipeline::{
    Access, KernelSpec, ATTENTION, BEAM, CROSS_ENTROPY, ELEMENTWISE, EMBEDDING, GRU_CELL, LSTM_CELL, MATMUL, OPTIM,
    RNN_CELL, SAMPLING, SEQUENCE,
};
pub(crate) use pool::{BufferKind, PooledBuffer};
pub use pool::{PoolStats, UNIFORM_CHUNK_BYTES};
pub use profile::{Profile, ProfileEntry};
pub(crate) use readback::read_buffer;
#[cfg(not(target_arch = "wasm32"))]
pub(crate) use readback::read_buffer_blocking;
#[cfg(not(target_arch = "wasm32"))]
use readback::wait_for_gpu;

use crate::{Error, Result};

/// Polls a future once. wgpu-core resolves error scopes immediately, so on native this
/// gives the answer without blocking; on the web it may be `None` (errors then surface
/// through the device's uncaptured-error handler).
pub(crate) fn poll_ready<F: Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(output) => Some(output),
        std::task::Poll::Pending => None,
    }
}

/// Devices created by [`Context::new_async`] (and so [`Context::new`]) in this process.
static DEVICES_CREATED: AtomicUsize = AtomicUsize::new(0);

/// The id the next [`Context`] gets (see [`Context::id`]).
static NEXT_CONTEXT_ID: AtomicUsize = AtomicUsize::new(1);

/// How many wgpu devices tsumugi has created in this process; a context made by
/// [`Context::from_wgpu`] creates none, which a host (or a test) can check with this.
pub fn devices_created() -> usize {
    DEVICES_CREATED.load(Ordering::SeqCst)
}

/// A handle to a device and everything tsumugi keeps per device. Cheap to clone.
///
/// One context may be used from several threads at once. On wgpu's GL backend every call
/// takes one context lock, and a thread that waits for it more than 6 s panics inside
/// wgpu-hal; a submission holds it until its work is queued, and on llvmpipe the first
/// submission of a training step, which compiles each kernel at its first dispatch, holds
/// it for about 6 s with a cold shader cache. On GL, use a context from one thread, or run
/// one step before other threads join in.
#[derive(Clone)]
pub struct Context {
    inner: Arc<Inner>,
}

struct Inner {
    /// tsumugi's own identity of this context (see [`Context::id`]).
    id: usize,
    device: wgpu::Device,
    queue: wgpu::Queue,
    adapter: AdapterSummary,
    limits: wgpu::Limits,
    features: wgpu::Features,
    /// The device has subgroup operations in subgroups of a multiple of 8 invocations,
    /// so the families' subgroup sections are compiled (see [`Context::subgroup_kernels`]).
    subgroups: bool,
    /// Launchers pick a subgroup kernel where one exists; only ever true with `subgroups`.
    subgroup_kernels: AtomicBool,
    pipelines: pipeline::PipelineCache,
    pool: pool::BufferPool,
    /// Bound where a kernel's optional input is absent (no bias, say).
    placeholder: wgpu::Buffer,
    /// Bound where a kernel's optional *output* is absent; separate from `placeholder`
    /// because one buffer may not be bound both read-only and writable in a dispatch.
    scratch_placeholder: wgpu::Buffer,
    /// Set by the device-lost callback of a device tsumugi created.
    lost: Arc<Mutex<Option<String>>>,
    /// The first error wgpu raised outside an error scope, on a device tsumugi created
    /// (wgpu's default handler would panic); reported once by the next call.
    uncaptured: Arc<Mutex<Option<String>>>,
    /// Set while [`Context::start_profiling`] is in effect.
    profiler: Mutex<Option<profile::Profiler>>,
    /// Whether `profiler` is set: read on every dispatch and submit, so that they take
    /// the lock only while profiling.
    profiling: AtomicBool,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("id", &self.inner.id)
            .field("adapter", &self.inner.adapter)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// Chooses an adapter (discrete GPU, then integrated, virtual, CPU; Vulkan before GL,
    /// so GL is the fallback where no Vulkan driver is installed), honouring
    /// `WGPU_BACKEND` and `WGPU_ADAPTER_NAME`, and creates a device with the adapter's
    /// real limits. Blocks; use [`Context::new_async`] inside an async host, and in a
    /// browser (wasm32), where nothing may block and only `new_async` exists.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new() -> Result<Self> {
        Self::with_options(&AdapterOptions::default())
    }

    /// [`Context::new`] with explicit options instead of the environment. Not on wasm32.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn with_options(options: &AdapterOptions) -> Result<Self> {
        pollster::block_on(Self::new_async(options))
    }

    /// The asynchronous constructor behind [`Context::new`].
    pub async fn new_async(options: &AdapterOptions) -> Result<Self> {
        let mut descriptor = wgpu::InstanceDescriptor::new_without_display_handle().with_env();
        descriptor.backends = options.backends;
        let instance = wgpu::Instance::new(descriptor);
        let adapter = adapter::choose_adapter(&instance, options).await?;
        // Only the optional features a kernel has a use for; the rest stay off.
        let wanted = wgpu::Features::SUBGROUP | wgpu::Features::TIMESTAMP_QUERY;
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("tsumugi"),
                required_features: adapter.features() & wanted,
                required_limits: adapter.limits(),
                ..Default::default()
            })
            .await
            .map_err(|err| Error::RequestDevice {
                reason: err.to_string(),
            })?;
        DEVICES_CREATED.fetch_add(1, Ordering::SeqCst);
        let lost = Arc::new(Mutex::new(None));
        let lost_in_callback = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            *lock(&lost_in_callback) = Some(format!("{reason:?}: {message}"));
        });
        let uncaptured = Arc::new(Mutex::new(None));
        let uncaptured_in_handler = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |error: wgpu::Error| {
            lock(&uncaptured_in_handler).get_or_insert_with(|| error.to_string());
        }));
        Ok(Self::build(device, queue, lost, uncaptured))
    }

    /// Runs on a host application's device and queue. tsumugi installs no callbacks on
    /// them and creates no other device; it uses whatever limits and features the host
    /// requested (a kernel that needs more returns [`Error::DeviceLimit`]).
    pub fn from_wgpu(device: wgpu::Device, queue: wgpu::Queue) -> Self {
        Self::build(device, queue, Arc::default(), Arc::default())
    }

    fn build(
        device: wgpu::Device,
        queue: wgpu::Queue,
        lost: Arc<Mutex<Option<String>>>,
        uncaptured: Arc<Mutex<Option<String>>>,
    ) -> Self {
        let limits = device.limits();
        let features = device.features();
        let info = device.adapter_info();
        let adapter = AdapterSummary::from(&info);
        // The subgroup kernels hand values round groups of 8 lanes; sizes are powers of
        // two, so a minimum of 8 makes every possible size a multiple of 8.
        let subgroups = features.contains(wgpu::Features::SUBGROUP) && info.subgroup_min_size >= 8;
        let make_placeholder = |label| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: 256,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            })
        };
        let placeholder = make_placeholder("tsumugi placeholder");
        let scratch_placeholder = make_placeholder("tsumugi scratch placeholder");
        let pool = pool::BufferPool::new(&limits);
        Context {
            inner: Arc::new(Inner {
                id: NEXT_CONTEXT_ID.fetch_add(1, Ordering::Relaxed),
                device,
                queue,
                adapter,
                limits,
                features,
                subgroups,
                subgroup_kernels: AtomicBool::new(subgroups),
                pipelines: pipeline::PipelineCache::default(),
                pool,
                placeholder,
                scratch_placeholder,
                lost,
                uncaptured,
                profiler: Mutex::new(None),
                profiling: AtomicBool::new(false),
            }),
        }
    }

    /// This context's identity in the process: clones share it, and every
    /// [`Context::new`] or [`Context::from_wgpu`] gets a new one. A tensor belongs to the
    /// context that made it, and a launcher refuses tensors of another context, even one
    /// on the same device (wgpu's device ids repeat across instances, so they cannot tell
    /// devices apart): a host that uses tsumugi from several places clones one context.
    pub fn id(&self) -> usize {
        self.inner.id
    }

    /// The adapter this context runs on.
    pub fn adapter(&self) -> &AdapterSummary {
        &self.inner.adapter
    }

    /// The wgpu device (the host's, for a context made by [`Context::from_wgpu`]).
    pub fn device(&self) -> &wgpu::Device {
        &self.inner.device
    }

    /// The wgpu queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.inner.queue
    }

    /// The device's limits, as granted.
    pub fn limits(&self) -> &wgpu::Limits {
        &self.inner.limits
    }

    /// The device's features, as granted.
    pub fn features(&self) -> wgpu::Features {
        self.inner.features
    }

    /// Whether launchers use the subgroup kernels (matmul, recurrent cells) instead of the
    /// portable ones. On by default where the device has subgroup operations
    /// (`wgpu::Features::SUBGROUP`, requested by [`Context::new`]; a host's device must
    /// have enabled it) with a minimum subgroup size of 8; both kernels compute the same
    /// products.
    pub fn subgroup_kernels(&self) -> bool {
        self.inner.subgroup_kernels.load(Ordering::Relaxed)
    }

    /// Turns the subgroup kernels off (the portable kernels run instead) or back on.
    /// `InvalidArgument` when asked to turn them on where the device cannot run them.
    /// Dispatches encoded before the call keep the kernel they were encoded with.
    pub fn set_subgroup_kernels(&self, enabled: bool) -> Result<()> {
        if enabled && !self.inner.subgroups {
            return Err(Error::invalid(format!(
                "subgroup kernels need subgroup operations with at least 8 lanes, which {} does not have",
                self.inner.adapter
            )));
        }
        self.inner.subgroup_kernels.store(enabled, Ordering::Relaxed);
        Ok(())
    }

    /// A new command encoder on this device, counted as open until it is submitted with
    /// [`Context::submit`] or dropped. Launchers take any [`Recorder`]: this, or a
    /// `wgpu::CommandEncoder`.
    pub fn create_encoder(&self) -> Encoder {
        self.inner.pool.open_encoder();
        Encoder {
            pass: None,
            encoder: Some(
                self.inner
                    .device
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("tsumugi") }),
            ),
            ctx: self.clone(),
        }
    }

    /// Submits `encoder`. When no other [`Encoder`] of this context is open, the buffers
    /// and uniform space released meanwhile are recycled.
    pub fn submit(&self, mut encoder: Encoder) -> wgpu::SubmissionIndex {
        encoder.end_pass();
        let mut commands = encoder.encoder.take();
        let resolved = commands.as_mut().and_then(|e| self.resolve_profile(e));
        let index = self.inner.queue.submit(commands.map(wgpu::CommandEncoder::finish));
        drop(encoder);
        if let Some(resolved) = resolved {
            self.read_profile(resolved);
        }
        index
    }

    /// Tells the context that every command encoded so far has been submitted, so the
    /// uniform space of their parameters (and buffers retired meanwhile) can be reused.
    /// A host that encodes tsumugi's work into its own `wgpu::CommandEncoder`s calls this
    /// after submitting them (once a frame, say); until then parameter space grows. Called
    /// while such an encoder is still unsubmitted, a later dispatch's parameters could
    /// overwrite its own before it runs. (A host also keeps the tensors its encoders use
    /// alive until they are submitted, as with any wgpu resource it binds.)
    pub fn recycle_after_submit(&self) {
        self.inner.pool.recycle();
    }

    /// Keeps the buffers released from now on from reuse until the next
    /// [`Context::recycle_after_submit`]: what a graph recording into a host's encoder
    /// ([`crate::graph::Graph::eval_into`]) needs, as its tensors may be dropped before
    /// the host submits.
    pub(crate) fn hold_until_recycled(&self) {
        self.inner.pool.open_host_recording();
    }

    /// Blocks until the GPU has finished everything submitted. For tests, benches and
    /// examples; never called on the library's own paths. Not on wasm32: see
    /// [`Context::wait_idle`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn wait_idle_blocking(&self) -> Result<()> {
        wait_for_gpu(self, "waiting for the GPU")?;
        self.check_device()
    }

    /// Completes once the GPU has finished everything submitted so far: the async
    /// counterpart of [`Context::wait_idle_blocking`], and how a browser page awaits a
    /// training step. On native the future completes once the device is polled (a host's
    /// frame loop); in a browser, the browser completes it.
    pub async fn wait_idle(&self) -> Result<()> {
        let (sender, receiver) = futures_intrusive::channel::shared::oneshot_channel();
        self.inner.queue.on_submitted_work_done(move || {
            // The receiver may be gone if the caller dropped the future; nothing to do then.
            let _ = sender.send(());
        });
        receiver.receive().await.ok_or_else(|| Error::Gpu {
            message: "the submitted work was never reported done (device lost?)".into(),
        })?;
        self.check_device()
    }

    /// `Err(DeviceLost)` once the device is gone, and `Err(Gpu)` once for the first
    /// error wgpu raised outside an error scope. Only a device tsumugi created reports
    /// these here; a host's device reports them to the host's own callbacks.
    pub fn check_device(&self) -> Result<()> {
        if let Some(reason) = lock(&self.inner.lost).as_ref() {
            return Err(Error::DeviceLost { reason: reason.clone() });
        }
        if let Some(message) = lock(&self.inner.uncaptured).take() {
            // After `destroy` or a driver reset, wgpu reports the first uses of the dead
            // device as invalid objects before its lost callback has run; a non-blocking
            // poll (only on this error path) runs the callback, so the error says why.
            let _ = self.inner.device.poll(wgpu::PollType::Poll);
            if let Some(reason) = lock(&self.inner.lost).as_ref() {
                return Err(Error::DeviceLost { reason: reason.clone() });
            }
            return Err(Error::Gpu { message });
        }
        Ok(())
    }

    /// Counters of the buffer pool.
    pub fn pool_stats(&self) -> PoolStats {
        self.inner.pool.stats()
    }

    /// Releases the memory of pooled buffers that no tensor holds.
    pub fn trim_pool(&self) {
        self.inner.pool.trim();
    }

    /// How many pipelines have been built.
    pub fn pipeline_count(&self) -> usize {
        self.inner.pipelines.len()
    }

    pub(crate) fn take_buffer(&self, kind: BufferKind, bytes: u64, label: &str) -> Result<PooledBuffer> {
        self.check_device()?;
        self.inner
            .pool
            .take(&self.inner.device, &self.inner.limits, kind, bytes, label)
    }

    /// True when both are the same context (or clones of it), so that tensors of one may be
    /// bound in a dispatch of the other. Not wgpu's device equality: its ids repeat across
    /// `wgpu::Instance`s, so two devices of two instances compare equal.
    pub(crate) fn same_context(&self, other: &Context) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    pub(crate) fn placeholder(&self) -> &wgpu::Buffer {
        &self.inner.placeholder
    }

    pub(crate) fn scratch_placeholder(&self) -> &wgpu::Buffer {
        &self.inner.scratch_placeholder
    }

    /// Checks, before anything is allocated on the host or the GPU, that an f32 tensor
    /// named `tensor` of `shape` could exist on this device and be bound whole by a kernel
    /// (`max_buffer_size`, `max_storage_buffer_binding_size`). Returns its element count.
    /// Modules call this before they fill a host vector with initial weights, so a size
    /// from a flag or a file header is an error, not an aborted allocation.
    pub fn check_tensor_size(&self, tensor: &str, shape: &[usize]) -> Result<usize> {
        let count = crate::tensor::element_count(shape).map_err(|_| {
            Error::invalid(format!(
                "{tensor}: shape {shape:?} has more elements than fit in memory"
            ))
        })?;
        let bytes = (count as u64).saturating_mul(4);
        let limits = &self.inner.limits;
        for (limit, allowed) in [
            ("max_buffer_size", limits.max_buffer_size),
            (
                "max_storage_buffer_binding_size",
                limits.max_storage_buffer_binding_size,
            ),
        ] {
            if bytes > allowed {
                return Err(Error::DeviceLimit {
                    tensor: format!("{tensor} {shape:?}"),
                    limit,
                    needed: bytes,
                    allowed,
                });
            }
        }
        Ok(count)
    }

    /// Checks that a buffer of `bytes` may be bound as a storage buffer.
    pub(crate) fn check_binding_size(&self, tensor: &str, bytes: u64) -> Result<()> {
        let allowed = self.inner.limits.max_storage_buffer_binding_size;
        if bytes > allowed {
            return Err(Error::DeviceLimit {
                tensor: tensor.to_string(),
                limit: "max_storage_buffer_binding_size",
                needed: bytes,
                allowed,
            });
        }
        Ok(())
    }

    /// Encodes one dispatch of `kernel`: the four steps every launcher shares after its
    /// shape checks (cached pipeline -> params into the arena -> bind group -> dispatch).
    pub(crate) fn encode_dispatch<P: bytemuck::Pod>(
        &self,
        recorder: &mut dyn Recorder,
        dispatch: Dispatch<'_, P>,
    ) -> Result<()> {
        self.check_device()?;
        let max = self.inner.limits.max_compute_workgroups_per_dimension;
        for (axis, &count) in ["x", "y", "z"].iter().zip(dispatch.workgroups.iter()) {
            if count > max {
                return Err(Error::DeviceLimit {
                    tensor: format!("{} dispatch ({axis} workgroups)", dispatch.kernel.entry_point),
                    limit: "max_compute_workgroups_per_dimension",
                    needed: u64::from(count),
                    allowed: u64::from(max),
                });
            }
        }
        for (_, buffer, name) in dispatch.buffers {
            self.check_binding_size(name, buffer.size())?;
        }
        let pipeline = self.inner.pipelines.get(
            &self.inner.device,
            dispatch.kernel,
            dispatch.overrides,
            self.inner.subgroups,
        )?;
        let params = bytemuck::bytes_of(dispatch.params);
        let slot = self
            .inner
            .pool
            .push_uniforms(&self.inner.device, &self.inner.queue, params);
        let params_binding = dispatch
            .kernel
            .bindings
            .iter()
            .find(|(_, access)| *access == Access::Params)
            .map(|&(binding, _)| binding);
        let mut entries: Vec<wgpu::BindGroupEntry> = dispatch
            .buffers
            .iter()
            .map(|&(binding, buffer, _)| wgpu::BindGroupEntry {
                binding,
                resource: buffer.as_entire_binding(),
            })
            .collect();
        if let Some(binding) = params_binding {
            entries.push(wgpu::BindGroupEntry {
                binding,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &slot.buffer,
                    offset: 0,
                    size: NonZeroU64::new(params.len() as u64),
                }),
            });
        }
        let bind_group = self.inner.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(dispatch.kernel.entry_point),
            layout: &pipeline.bind_group_layout,
            entries: &entries,
        });
        let timestamps = self
            .profiling()
            .then(|| lock(&self.inner.profiler))
            .as_mut()
            .and_then(|guard| guard.as_mut())
            .map(|p| p.next_slot(&self.inner.device, dispatch.kernel.entry_point, dispatch.workgroups));
        let offsets: &[u32] = if params_binding.is_some() { &[slot.offset] } else { &[] };
        let timestamps = timestamps
            .as_ref()
            .map(|(query_set, first)| wgpu::ComputePassTimestampWrites {
                query_set,
                beginning_of_pass_write_index: Some(*first),
                end_of_pass_write_index: Some(first + 1),
            });
        recorder.record_dispatch(
            dispatch.kernel.entry_point,
            timestamps,
            &|pass: &mut wgpu::ComputePass<'_>| {
                pass.set_pipeline(&pipeline.pipeline);
                pass.set_bind_group(0, &bind_group, offsets);
                let [x, y, z] = dispatch.workgroups;
                pass.dispatch_workgroups(x, y, z);
            },
        );
        Ok(())
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for wgpu::CommandEncoder {}
    impl Sealed for super::Encoder {}
}

/// Where launchers record their work: a `wgpu::CommandEncoder` (a host's own), where each
/// dispatch gets a compute pass of its own, or an [`Encoder`], where consecutive
/// dispatches share one compute pass (wgpu orders them and puts the barriers between
/// them) until something else is recorded or the encoder is submitted. Launchers take
/// `&mut dyn Recorder`, so either is passed as `&mut encoder`.
pub trait Recorder: sealed::Sealed {
    /// The command encoder, for copies, clears and a host's own passes; an [`Encoder`]
    /// ends its shared compute pass first.
    fn command_encoder(&mut self) -> &mut wgpu::CommandEncoder;

    /// Records one dispatch: `record` sets its pipeline and bind group and dispatches.
    /// With timestamp writes (profiling), the dispatch gets a pass of its own.
    #[doc(hidden)]
    fn record_dispatch(
        &mut self,
        label: &str,
        timestamps: Option<wgpu::ComputePassTimestampWrites<'_>>,
        record: &dyn Fn(&mut wgpu::ComputePass<'_>),
    );
}

impl Recorder for wgpu::CommandEncoder {
    fn command_encoder(&mut self) -> &mut wgpu::CommandEncoder {
        self
    }

    fn record_dispatch(
        &mut self,
        label: &str,
        timestamps: Option<wgpu::ComputePassTimestampWrites<'_>>,
        record: &dyn Fn(&mut wgpu::ComputePass<'_>),
    ) {
        let mut pass = self.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(label),
            timestamp_writes: timestamps,
        });
        record(&mut pass);
    }
}

impl Recorder for Encoder {
    fn command_encoder(&mut self) -> &mut wgpu::CommandEncoder {
        self.end_pass();
        self.encoder
            .as_mut()
            .expect("an Encoder holds its encoder until it is consumed")
    }

    fn record_dispatch(
        &mut self,
        label: &str,
        timestamps: Option<wgpu::ComputePassTimestampWrites<'_>>,
        record: &dyn Fn(&mut wgpu::ComputePass<'_>),
    ) {
        if timestamps.is_some() {
            return self.command_encoder().record_dispatch(label, timestamps, record);
        }
        if self.pass.is_none() {
            let encoder = self
                .encoder
                .as_mut()
                .expect("an Encoder holds its encoder until it is consumed");
            let pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("tsumugi dispatches"),
                timestamp_writes: None,
            });
            self.pass = Some(pass.forget_lifetime());
        }
        record(self.pass.as_mut().expect("the shared pass was just begun"));
    }
}

/// A command encoder of a [`Context`]; derefs to `wgpu::CommandEncoder`.
///
/// Consecutive dispatches share one compute pass, which ends when anything else is
/// recorded (through `DerefMut` or [`Recorder::command_encoder`]) and on submission.
///
/// While any is open (neither submitted with [`Context::submit`] nor dropped), released
/// buffers and uniform space are not reused, because commands already encoded into it may
/// still read them; this is what makes it safe to encode from several threads at once.
/// A host that encodes into its own `wgpu::CommandEncoder` instead passes that to the
/// launchers and calls [`Context::recycle_after_submit`] after submitting it.
pub struct Encoder {
    /// The compute pass of the latest dispatches (a field before `encoder`: a pass is
    /// dropped, so ended, before its encoder).
    pass: Option<wgpu::ComputePass<'static>>,
    encoder: Option<wgpu::CommandEncoder>,
    ctx: Context,
}

impl std::ops::Deref for Encoder {
    type Target = wgpu::CommandEncoder;
    fn deref(&self) -> &wgpu::CommandEncoder {
        self.encoder
            .as_ref()
            .expect("an Encoder holds its encoder until it is consumed")
    }
}

impl std::ops::DerefMut for Encoder {
    fn deref_mut(&mut self) -> &mut wgpu::CommandEncoder {
        self.command_encoder()
    }
}

impl Encoder {
    /// Ends the shared compute pass, if one is open.
    fn end_pass(&mut self) {
        self.pass = None;
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        // Submitted (or abandoned, so it will never run): nothing encoded so far can
        // read a released buffer any more once no other encoder is open.
        self.ctx.inner.pool.close_encoder();
    }
}

/// What a launcher hands to [`Context::encode_dispatch`].
pub(crate) struct Dispatch<'a, P> {
    pub(crate) kernel: &'a KernelSpec,
    pub(crate) overrides: &'a [(&'static str, u32)],
    /// (binding number, buffer, tensor name for errors); the params binding is added.
    pub(crate) buffers: &'a [(u32, &'a wgpu::Buffer, &'a str)],
    pub(crate) params: &'a P,
    pub(crate) workgroups: [u32; 3],
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
