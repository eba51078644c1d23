//! Per-kernel GPU time from timestamp queries: [`Context::start_profiling`] and
//! [`Context::finish_profiling`].
//!
//! While profiling is on, every dispatch encoded through a launcher writes a timestamp at
//! the start and end of its compute pass; [`Context::submit`] resolves them, waits for the
//! GPU and adds each dispatch's time to the (kernel, workgroup grid) it ran with. Waiting
//! makes every submission synchronous, so wall-clock time grows while the GPU times stay
//! what they are. Profiling covers work submitted with [`Context::submit`]: a dispatch
//! encoded into a host's own encoder is timed only if that encoder is submitted before
//! the next [`Context::submit`].

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[cfg(not(target_arch = "wasm32"))]
use super::read_buffer_blocking;
use super::Context;
use crate::error::{Error, Result};

/// Queries per query set (wgpu's maximum); each dispatch takes two.
const QUERIES_PER_SET: u32 = 4096;
const DISPATCHES_PER_SET: usize = (QUERIES_PER_SET / 2) as usize;

/// One (kernel, workgroup grid) of a [`Profile`].
#[derive(Clone, Debug, PartialEq)]
pub struct ProfileEntry {
    /// The WGSL entry point.
    pub kernel: &'static str,
    /// The workgroup grid it was dispatched with; a launcher's grid follows its shapes,
    /// so this tells one matmul from another.
    pub workgroups: [u32; 3],
    /// Dispatches timed.
    pub calls: u64,
    /// Their GPU time, summed.
    pub total: Duration,
}

/// GPU time per kernel, largest first; `Display` prints it as a table.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Profile {
    /// One entry per (kernel, workgroup grid), sorted by total time, largest first.
    pub entries: Vec<ProfileEntry>,
    /// Submissions whose timestamps were read.
    pub submissions: u64,
    /// Summed over submissions: from the first timed dispatch's start to the last one's
    /// end. What exceeds [`Profile::total`] went between dispatches (copies, clears,
    /// barriers, starting each pass).
    pub span: Duration,
}

impl Profile {
    /// The GPU time of every timed dispatch.
    pub fn total(&self) -> Duration {
        self.entries.iter().map(|e| e.total).sum()
    }

    /// The entries summed per kernel (over all workgroup grids), largest first.
    pub fn by_kernel(&self) -> Vec<ProfileEntry> {
        let mut merged: Vec<ProfileEntry> = Vec::new();
        for entry in &self.entries {
            match merged.iter_mut().find(|m| m.kernel == entry.kernel) {
                Some(m) => {
                    m.calls += entry.calls;
                    m.total += entry.total;
                }
                None => merged.push(ProfileEntry {
                    workgroups: [0; 3],
                    ..entry.clone()
                }),
            }
        }
        merged.sort_by_key(|e| std::cmp::Reverse(e.total));
        merged
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.total().as_secs_f64().max(f64::MIN_POSITIVE);
        writeln!(
            f,
            "{:>10} {:>6} {:>9} {:>10}  kernel [workgroups]",
            "ms", "%", "calls", "us/call"
        )?;
        for e in &self.entries {
            let ms = e.total.as_secs_f64() * 1e3;
            writeln!(
                f,
                "{ms:>10.2} {:>6.1} {:>9} {:>10.1}  {} {:?}",
                100.0 * e.total.as_secs_f64() / total,
                e.calls,
                ms * 1e3 / e.calls.max(1) as f64,
                e.kernel,
                e.workgroups
            )?;
        }
        write!(
            f,
            "{:>10.2} {:>6.1} {:>9}  total over {} submissions, which spanned {:.2} ms",
            total * 1e3,
            100.0,
            self.entries.iter().map(|e| e.calls).sum::<u64>(),
            self.submissions,
            self.span.as_secs_f64() * 1e3
        )
    }
}

/// The state behind [`Context::start_profiling`].
pub(crate) struct Profiler {
    sets: Vec<wgpu::QuerySet>,
    /// (kernel, workgroups) of each dispatch encoded since the last submission, in the
    /// order of their query slots.
    pending: Vec<(&'static str, [u32; 3])>,
    totals: HashMap<(&'static str, [u32; 3]), (u64, f64)>,
    submissions: u64,
    span_ns: f64,
    /// Nanoseconds per timestamp tick.
    period: f64,
    /// The first failure reading timestamps back, reported by `finish_profiling`.
    error: Option<Error>,
}

impl Profiler {
    /// The query set and first index for the next dispatch's two timestamps.
    pub(crate) fn next_slot(
        &mut self,
        device: &wgpu::Device,
        kernel: &'static str,
        workgroups: [u32; 3],
    ) -> (wgpu::QuerySet, u32) {
        let index = self.pending.len();
        let set = index / DISPATCHES_PER_SET;
        while self.sets.len() <= set {
            self.sets.push(device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("tsumugi profile"),
                ty: wgpu::QueryType::Timestamp,
                count: QUERIES_PER_SET,
            }));
        }
        self.pending.push((kernel, workgroups));
        (self.sets[set].clone(), 2 * (index % DISPATCHES_PER_SET) as u32)
    }
}

impl Context {
    /// Starts timing every dispatch on the GPU; a running profile is restarted. Needs the
    /// device's `TIMESTAMP_QUERY` feature.
    ///
    /// Every dispatch a launcher encodes then writes a timestamp at the start and end of
    /// its compute pass; [`Context::submit`] resolves them, waits for the GPU and adds
    /// each dispatch's time to the (kernel, workgroup grid) it ran with. Waiting makes
    /// every submission synchronous, so wall-clock time grows while the GPU times stay
    /// what they are. Only work submitted with [`Context::submit`] is covered: a dispatch
    /// encoded into a host's own encoder is timed only if that encoder is submitted
    /// before the next [`Context::submit`]. With several encoders open at once (other
    /// threads), a submit resolves the others' timestamps before they are written, so
    /// those times are wrong: profile one encoder at a time.
    ///
    /// On wasm32 it is an error: a browser cannot wait for the GPU inside a submit.
    pub fn start_profiling(&self) -> Result<()> {
        if cfg!(target_arch = "wasm32") {
            return Err(Error::invalid(
                "profiling waits for the GPU after every submission, which a browser cannot; profile natively",
            ));
        }
        if !self.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
            return Err(Error::invalid(format!(
                "profiling: {} has no TIMESTAMP_QUERY feature",
                self.adapter().name
            )));
        }
        let mut guard = super::lock(&self.inner.profiler);
        *guard = Some(Profiler {
            sets: Vec::new(),
            pending: Vec::new(),
            totals: HashMap::new(),
            submissions: 0,
            span_ns: 0.0,
            period: f64::from(self.queue().get_timestamp_period()),
            error: None,
        });
        self.inner.profiling.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Stops profiling and returns what was measured since [`Context::start_profiling`].
    /// Dispatches encoded but not yet submitted are not counted.
    pub fn finish_profiling(&self) -> Result<Profile> {
        let mut guard = super::lock(&self.inner.profiler);
        self.inner.profiling.store(false, Ordering::SeqCst);
        let profiler = guard
            .take()
            .ok_or_else(|| Error::invalid("profiling: finish_profiling without start_profiling"))?;
        if let Some(err) = profiler.error {
            return Err(err);
        }
        let mut entries: Vec<ProfileEntry> = profiler
            .totals
            .into_iter()
            .map(|((kernel, workgroups), (calls, ns))| ProfileEntry {
                kernel,
                workgroups,
                calls,
                total: Duration::from_nanos(ns.round() as u64),
            })
            .collect();
        entries.sort_by(|a, b| b.total.cmp(&a.total).then(a.kernel.cmp(b.kernel)));
        Ok(Profile {
            entries,
            submissions: profiler.submissions,
            span: Duration::from_nanos(profiler.span_ns.round() as u64),
        })
    }

    /// Appends the resolve of this submission's timestamps to `encoder`; returns what
    /// [`Context::read_profile`] needs after the submit. None when not profiling.
    pub(crate) fn resolve_profile(&self, encoder: &mut wgpu::CommandEncoder) -> Option<ResolvedProfile> {
        if !self.profiling() {
            return None;
        }
        let mut guard = super::lock(&self.inner.profiler);
        let profiler = guard.as_mut()?;
        if profiler.pending.is_empty() {
            return None;
        }
        let pending = std::mem::take(&mut profiler.pending);
        let bytes = (pending.len() * 2 * 8) as u64;
        let buffer = self.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("tsumugi profile resolve"),
            size: bytes,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        for (i, chunk) in pending.chunks(DISPATCHES_PER_SET).enumerate() {
            let queries = (2 * chunk.len()) as u32;
            let offset = (i * DISPATCHES_PER_SET * 2 * 8) as u64;
            encoder.resolve_query_set(&profiler.sets[i], 0..queries, &buffer, offset);
        }
        Some(ResolvedProfile { buffer, pending })
    }

    /// Whether [`Context::start_profiling`] is in effect.
    pub(crate) fn profiling(&self) -> bool {
        self.inner.profiling.load(Ordering::SeqCst)
    }

    /// Waits for a submission's timestamps and adds them to the running profile.
    pub(crate) fn read_profile(&self, resolved: ResolvedProfile) {
        let bytes = resolved.buffer.size();
        #[cfg(not(target_arch = "wasm32"))]
        let read = read_buffer_blocking(self, &resolved.buffer, bytes);
        // Unreachable there: `start_profiling` refuses, so nothing is ever resolved.
        #[cfg(target_arch = "wasm32")]
        let read: Result<Vec<u8>> = Err(Error::invalid(format!(
            "profiling cannot read {bytes} bytes of timestamps back in a browser"
        )));
        let mut guard = super::lock(&self.inner.profiler);
        let Some(profiler) = guard.as_mut() else { return };
        match read {
            Ok(data) => {
                let ticks: Vec<u64> = data
                    .chunks_exact(8)
                    .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
                    .collect();
                for (i, &key) in resolved.pending.iter().enumerate() {
                    let ns = ticks[2 * i + 1].saturating_sub(ticks[2 * i]) as f64 * profiler.period;
                    let total = profiler.totals.entry(key).or_insert((0, 0.0));
                    total.0 += 1;
                    total.1 += ns;
                }
                let first = ticks.iter().step_by(2).min().copied().unwrap_or(0);
                let last = ticks.iter().skip(1).step_by(2).max().copied().unwrap_or(0);
                profiler.span_ns += last.saturating_sub(first) as f64 * profiler.period;
                profiler.submissions += 1;
            }
            Err(err) => {
                profiler.error.get_or_insert(err);
            }
        }
    }
}

/// A submission's resolved timestamps, waiting to be read.
pub(crate) struct ResolvedProfile {
    buffer: wgpu::Buffer,
    pending: Vec<(&'static str, [u32; 3])>,
}
