//! Shader families and the pipeline cache.
//!
//! A *family* is one file of `shaders/`, compiled once per context with
//! `shaders/common.wgsl` prepended, and after it the preludes the family shares with its
//! kin, if any (`common_recurrent.wgsl` for the three recurrent cells and
//! `common_gated.wgsl` for LSTM and GRU, `common_select.wgsl` for the selection
//! kernels). A *kernel* is one entry point of a
//! family with its explicit bind group layout; a *pipeline* is a kernel with a set of
//! `override` constants (tile and workgroup sizes). Pipelines are built on first use and
//! cached by (family, entry point, overrides).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::{Error, Result};

mod log;

/// Helpers every family may use (stable sigmoid/tanh, ...), prepended from this one place.
const COMMON_WGSL: &str = include_str!("../../shaders/common.wgsl");

/// Helpers of the subgroup sections, prepended after `COMMON_WGSL` where they are compiled.
const COMMON_SUBGROUP_WGSL: &str = include_str!("../../shaders/common_subgroup.wgsl");

/// What the recurrent families (LSTM, GRU, RNN) share: step parameters, common bindings,
/// launch overrides, the loads of h, W_hh and dgates, and the sequence and backward-step
/// loops around each cell. Prepended to those three only.
const COMMON_RECURRENT: Prelude = Prelude {
    name: "common_recurrent",
    source: include_str!("../../shaders/common_recurrent.wgsl"),
};

/// The forward step of the gated cells (LSTM, GRU) on both paths, around the family's
/// pointwise part. Prepended after `COMMON_RECURRENT` to those two only.
const COMMON_GATED: Prelude = Prelude {
    name: "common_gated",
    source: include_str!("../../shaders/common_gated.wgsl"),
};

/// The decoding order and the per-row pick of argmax, top_k and sampling. Prepended to
/// the cross-entropy and sampling families only.
const COMMON_SELECT: Prelude = Prelude {
    name: "common_select",
    source: include_str!("../../shaders/common_select.wgsl"),
};

/// A file of helpers shared by a few families, prepended after `COMMON_WGSL` (and the
/// preludes listed before it) to each of them. Like a family it may have a subgroup
/// section, compiled only with the family's.
#[derive(Debug)]
struct Prelude {
    name: &'static str,
    source: &'static str,
}

/// The line that opens a family's subgroup section: the entry points after it use
/// subgroup operations, which a device without them cannot even compile, so the section
/// is left out of the module there.
pub const SUBGROUP_SECTION: &str = "// ==== subgroup kernels ====";

/// The directive WGSL requires before subgroup built-ins (the spec, Dawn's Tint). naga 30
/// rejects it ("not yet implemented"), so it is written only where a browser's WebGPU
/// compiles the module: see [`ShaderFamily::browser_source`].
const ENABLE_SUBGROUPS: &str = "enable subgroups;";

/// One WGSL file of `shaders/`.
#[derive(Debug)]
pub struct ShaderFamily {
    /// The file name without `.wgsl`.
    pub name: &'static str,
    /// Prepended after `COMMON_WGSL`, in this order.
    preludes: &'static [&'static Prelude],
    source: &'static str,
}

impl ShaderFamily {
    /// The WGSL that is compiled: `common.wgsl`, the family's preludes (if any) and the
    /// family's file, each prelude and the file without its subgroup section (from the
    /// line [`SUBGROUP_SECTION`] on) unless `subgroups` and the family has a section; with
    /// the sections, `common_subgroup.wgsl` comes after `common.wgsl`.
    pub fn composed_source(&self, subgroups: bool) -> String {
        let sections = subgroups && self.has_subgroup_section();
        let part = |text: &'static str| match text.find(SUBGROUP_SECTION) {
            Some(at) if !sections => &text[..at],
            _ => text,
        };
        let mut source = String::from(COMMON_WGSL);
        if sections {
            source.push('\n');
            source.push_str(COMMON_SUBGROUP_WGSL);
        }
        for prelude in self.preludes {
            source.push_str(&format!(
                "\n// ---- {}.wgsl ----\n{}",
                prelude.name,
                part(prelude.source)
            ));
        }
        source.push_str(&format!("\n// ---- {}.wgsl ----\n{}", self.name, part(self.source)));
        source
    }

    /// What a browser's WebGPU (Dawn's Tint, ...) compiles: [`Self::composed_source`],
    /// opened by `enable subgroups;` where the subgroup section is in.
    pub fn browser_source(&self, subgroups: bool) -> String {
        let source = self.composed_source(subgroups);
        if subgroups && self.has_subgroup_section() {
            format!("{ENABLE_SUBGROUPS}\n{source}")
        } else {
            source
        }
    }

    /// The source for a device on `backend`: the browser's form on
    /// [`wgpu::Backend::BrowserWebGpu`], naga's everywhere else.
    fn source_for(&self, subgroups: bool, backend: wgpu::Backend) -> String {
        if backend == wgpu::Backend::BrowserWebGpu {
            self.browser_source(subgroups)
        } else {
            self.composed_source(subgroups)
        }
    }

    /// Whether the file has a subgroup section.
    pub fn has_subgroup_section(&self) -> bool {
        self.source.contains(SUBGROUP_SECTION)
    }

    /// Whether `entry_point` is defined in the subgroup section (so it needs subgroup
    /// operations); false for a name the file does not define.
    pub fn in_subgroup_section(&self, entry_point: &str) -> bool {
        match (
            self.source.find(SUBGROUP_SECTION),
            self.source.find(&format!("fn {entry_point}(")),
        ) {
            (Some(section), Some(definition)) => definition > section,
            _ => false,
        }
    }
}

/// Batched matmul and its backward.
pub(crate) const MATMUL: ShaderFamily = ShaderFamily {
    name: "matmul",
    preludes: &[],
    source: include_str!("../../shaders/matmul.wgsl"),
};

/// LSTM step forward/backward and the whole-sequence kernel.
pub(crate) const LSTM_CELL: ShaderFamily = ShaderFamily {
    name: "lstm_cell",
    preludes: &[&COMMON_RECURRENT, &COMMON_GATED],
    source: include_str!("../../shaders/lstm_cell.wgsl"),
};

/// GRU step forward/backward and the whole-sequence kernel.
pub(crate) const GRU_CELL: ShaderFamily = ShaderFamily {
    name: "gru_cell",
    preludes: &[&COMMON_RECURRENT, &COMMON_GATED],
    source: include_str!("../../shaders/gru_cell.wgsl"),
};

/// Elman RNN (tanh, relu) step forward/backward and the whole-sequence kernel.
pub(crate) const RNN_CELL: ShaderFamily = ShaderFamily {
    name: "rnn_cell",
    preludes: &[&COMMON_RECURRENT],
    source: include_str!("../../shaders/rnn_cell.wgsl"),
};

/// Additive (Bahdanau) and dot (Luong) attention for one decoder step, and its backward.
pub(crate) const ATTENTION: ShaderFamily = ShaderFamily {
    name: "attention",
    preludes: &[],
    source: include_str!("../../shaders/attention.wgsl"),
};

/// Fused softmax cross-entropy with its gradient, argmax and top-k.
pub(crate) const CROSS_ENTROPY: ShaderFamily = ShaderFamily {
    name: "cross_entropy",
    preludes: &[&COMMON_SELECT],
    source: include_str!("../../shaders/cross_entropy.wgsl"),
};

/// Adam, SGD and global gradient-norm clipping.
pub(crate) const OPTIM: ShaderFamily = ShaderFamily {
    name: "optim",
    preludes: &[],
    source: include_str!("../../shaders/optim.wgsl"),
};

/// Embedding lookup and its sorted, atomic-free backward.
pub(crate) const EMBEDDING: ShaderFamily = ShaderFamily {
    name: "embedding",
    preludes: &[],
    source: include_str!("../../shaders/embedding.wgsl"),
};

/// Pointwise ops, concat/split, full reductions, dropout and the tape's arithmetic
/// (broadcasting binary ops, unary maps, sums over a dimension, slices).
pub(crate) const ELEMENTWISE: ShaderFamily = ShaderFamily {
    name: "elementwise",
    preludes: &[],
    source: include_str!("../../shaders/elementwise.wgsl"),
};

/// Per-row reversal of sequences within their lengths.
pub(crate) const SEQUENCE: ShaderFamily = ShaderFamily {
    name: "sequence",
    preludes: &[],
    source: include_str!("../../shaders/sequence.wgsl"),
};

/// Beam-search expansion and selection (decoding only, no backward).
pub(crate) const BEAM: ShaderFamily = ShaderFamily {
    name: "beam",
    preludes: &[],
    source: include_str!("../../shaders/beam.wgsl"),
};

/// Softmax with temperature, top-k and a seeded draw per row (a game's generator).
pub(crate) const SAMPLING: ShaderFamily = ShaderFamily {
    name: "sampling",
    preludes: &[&COMMON_SELECT],
    source: include_str!("../../shaders/sampling.wgsl"),
};

/// Every family, so a test can validate them all without an adapter.
pub fn shader_families() -> &'static [ShaderFamily] {
    &[
        MATMUL,
        LSTM_CELL,
        GRU_CELL,
        RNN_CELL,
        ATTENTION,
        CROSS_ENTROPY,
        OPTIM,
        EMBEDDING,
        ELEMENTWISE,
        SEQUENCE,
        BEAM,
        SAMPLING,
    ]
}

/// How a kernel sees one binding of group 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Access {
    /// `var<storage, read>`
    Read,
    /// `var<storage, read_write>`
    ReadWrite,
    /// `var<uniform>` with a dynamic offset into the uniform arena; always the params.
    Params,
}

/// One entry point and the bindings it uses, as (binding number, access).
pub(crate) struct KernelSpec {
    pub(crate) family: &'static ShaderFamily,
    pub(crate) entry_point: &'static str,
    pub(crate) bindings: &'static [(u32, Access)],
}

/// A built pipeline and the layout its bind groups must follow.
pub(crate) struct Pipeline {
    pub(crate) pipeline: wgpu::ComputePipeline,
    pub(crate) bind_group_layout: wgpu::BindGroupLayout,
}

type PipelineKey = (&'static str, &'static str, Vec<(&'static str, u32)>);

#[derive(Default)]
pub(crate) struct PipelineCache {
    modules: Mutex<HashMap<&'static str, wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<PipelineKey, Arc<Pipeline>>>,
}

impl PipelineCache {
    /// The pipeline for `kernel` with `overrides`, built on first use.
    pub(crate) fn get(
        &self,
        device: &wgpu::Device,
        kernel: &KernelSpec,
        overrides: &[(&'static str, u32)],
        subgroups: bool,
    ) -> Result<Arc<Pipeline>> {
        let key = (kernel.family.name, kernel.entry_point, overrides.to_vec());
        if let Some(found) = lock(&self.pipelines).get(&key) {
            return Ok(found.clone());
        }
        let module = self.module(device, kernel, subgroups)?;
        let built = Arc::new(build_pipeline(device, &module, kernel, overrides)?);
        log::pipeline_built(kernel, overrides);
        lock(&self.pipelines).insert(key, built.clone());
        Ok(built)
    }

    pub(crate) fn len(&self) -> usize {
        lock(&self.pipelines).len()
    }

    /// The family's module, compiled on first use; with its subgroup section where the
    /// device has subgroup operations (`subgroups`, the same for every call on a device).
    fn module(&self, device: &wgpu::Device, kernel: &KernelSpec, subgroups: bool) -> Result<wgpu::ShaderModule> {
        if let Some(module) = lock(&self.modules).get(kernel.family.name) {
            return Ok(module.clone());
        }
        let source = kernel.family.source_for(subgroups, device.adapter_info().backend);
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(kernel.family.name),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        });
        if let Some(Some(error)) = super::poll_ready(scope.pop()) {
            return Err(Error::Shader {
                family: kernel.family.name,
                entry_point: kernel.entry_point,
                message: error.to_string(),
            });
        }
        lock(&self.modules).insert(kernel.family.name, module.clone());
        Ok(module)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn build_pipeline(
    device: &wgpu::Device,
    module: &wgpu::ShaderModule,
    kernel: &KernelSpec,
    overrides: &[(&'static str, u32)],
) -> Result<Pipeline> {
    let entries: Vec<wgpu::BindGroupLayoutEntry> = kernel
        .bindings
        .iter()
        .map(|&(binding, access)| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: match access {
                    Access::Read => wgpu::BufferBindingType::Storage { read_only: true },
                    Access::ReadWrite => wgpu::BufferBindingType::Storage { read_only: false },
                    Access::Params => wgpu::BufferBindingType::Uniform,
                },
                has_dynamic_offset: access == Access::Params,
                min_binding_size: None,
            },
            count: None,
        })
        .collect();
    let constants: Vec<(&str, f64)> = overrides
        .iter()
        .map(|&(name, value)| (name, f64::from(value)))
        .collect();

    let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let bind_group_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some(kernel.entry_point),
        entries: &entries,
    });
    let layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(kernel.entry_point),
        bind_group_layouts: &[Some(&bind_group_layout)],
        immediate_size: 0,
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(kernel.entry_point),
        layout: Some(&layout),
        module,
        entry_point: Some(kernel.entry_point),
        compilation_options: wgpu::PipelineCompilationOptions {
            constants: &constants,
            // Kernels initialise whatever workgroup memory they read.
            zero_initialize_workgroup_memory: false,
        },
        cache: None,
    });
    if let Some(Some(error)) = super::poll_ready(scope.pop()) {
        return Err(Error::Shader {
            family: kernel.family.name,
            entry_point: kernel.entry_point,
            message: error.to_string(),
        });
    }
    Ok(Pipeline {
        pipeline,
        bind_group_layout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BROKEN: ShaderFamily = ShaderFamily {
        name: "broken",
        preludes: &[],
        source: "@compute @workgroup_size(1) fn broken_entry() { let x: u32 = 1.5; }",
    };

    #[test]
    fn only_the_browser_form_of_a_subgroup_module_enables_subgroups() {
        assert!(MATMUL.browser_source(true).starts_with("enable subgroups;\n"));
        assert!(!MATMUL.browser_source(false).contains("enable subgroups"));
        assert!(!MATMUL.composed_source(true).contains("enable subgroups"));
        // A family without a section has no subgroup code to enable.
        assert!(!OPTIM.browser_source(true).contains("enable subgroups"));
        assert_eq!(
            MATMUL.source_for(true, wgpu::Backend::Vulkan),
            MATMUL.composed_source(true)
        );
        assert_eq!(
            MATMUL.source_for(true, wgpu::Backend::BrowserWebGpu),
            MATMUL.browser_source(true)
        );
    }

    #[test]
    fn entry_points_are_placed_in_or_out_of_the_subgroup_section_by_their_definition() {
        assert!(MATMUL.in_subgroup_section("matmul_forward_subgroup"));
        // A prefix of a subgroup kernel's name, defined before the section.
        assert!(!MATMUL.in_subgroup_section("matmul_forward"));
        assert!(!MATMUL.in_subgroup_section("no_such_kernel"));
        assert!(LSTM_CELL.in_subgroup_section("lstm_cell_backward_subgroup"));
    }

    #[test]
    fn a_prelude_is_composed_only_into_its_families_and_its_section_only_with_theirs() {
        for family in [&LSTM_CELL, &GRU_CELL, &RNN_CELL] {
            let portable = family.composed_source(false);
            assert!(portable.contains("fn step_len(") && !portable.contains("fn h_prev_share("));
            assert!(family.composed_source(true).contains("fn h_prev_share("));
        }
        // The gated step is LSTM's and GRU's; RNN has its own cell_step.
        assert!(GRU_CELL.composed_source(true).contains("fn gated_forward_subgroup("));
        assert!(!RNN_CELL.composed_source(true).contains("common_gated.wgsl ----"));
        for family in [&CROSS_ENTROPY, &SAMPLING] {
            assert!(family.composed_source(false).contains("fn next_pick("));
        }
        for family in [&MATMUL, &ATTENTION, &OPTIM, &BEAM] {
            let source = family.composed_source(true);
            assert!(!source.contains("common_recurrent.wgsl ----") && !source.contains("common_select.wgsl ----"));
        }
    }

    #[test]
    fn a_shader_that_does_not_compile_is_an_error_naming_the_entry_point() {
        let ctx = crate::Context::new().expect("an adapter");
        let kernel = KernelSpec {
            family: &BROKEN,
            entry_point: "broken_entry",
            bindings: &[],
        };
        let cache = PipelineCache::default();
        match cache.get(ctx.device(), &kernel, &[], false) {
            Err(Error::Shader {
                family, entry_point, ..
            }) => assert_eq!((family, entry_point), ("broken", "broken_entry")),
            Err(other) => panic!("expected Error::Shader, got {other}"),
            Ok(_) => panic!("a broken shader compiled"),
        }
    }
}
