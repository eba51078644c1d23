//! Choosing an adapter: the best device type first, Vulkan before GL, and the user's
//! `WGPU_BACKEND` and `WGPU_ADAPTER_NAME` honoured.

use crate::{Error, Result};

/// What tsumugi chose to run on, for logs and examples.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdapterSummary {
    /// The adapter's name, e.g. `llvmpipe (LLVM 15.0.6, 256 bits)` or `NVIDIA H100`.
    pub name: String,
    /// The backend it runs through.
    pub backend: wgpu::Backend,
    /// Discrete, integrated, virtual, CPU or other.
    pub device_type: wgpu::DeviceType,
    /// The driver's name and version, as the driver reports them.
    pub driver: String,
}

impl From<&wgpu::AdapterInfo> for AdapterSummary {
    fn from(info: &wgpu::AdapterInfo) -> Self {
        let driver = match (info.driver.is_empty(), info.driver_info.is_empty()) {
            (false, false) => format!("{} {}", info.driver, info.driver_info),
            (false, true) => info.driver.clone(),
            (true, false) => info.driver_info.clone(),
            (true, true) => String::new(),
        };
        AdapterSummary {
            name: info.name.clone(),
            backend: info.backend,
            device_type: info.device_type,
            driver,
        }
    }
}

impl std::fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A browser's WebGPU leaves the name empty (it hides the GPU's description).
        let name = if self.name.is_empty() {
            "unnamed adapter"
        } else {
            &self.name
        };
        write!(f, "{name} ({:?}, {:?}", self.backend, self.device_type)?;
        if !self.driver.is_empty() {
            write!(f, ", {}", self.driver)?;
        }
        write!(f, ")")
    }
}

/// How to pick an adapter. `Default` reads the environment: `WGPU_BACKEND` (a comma list
/// such as `vulkan` or `gl`) and `WGPU_ADAPTER_NAME` (a case-insensitive substring).
#[derive(Clone, Debug)]
pub struct AdapterOptions {
    /// The backends to look at.
    pub backends: wgpu::Backends,
    /// Keep only adapters whose name contains this (case-insensitive).
    pub name_contains: Option<String>,
}

impl Default for AdapterOptions {
    fn default() -> Self {
        AdapterOptions {
            backends: wgpu::Backends::from_env().unwrap_or(wgpu::Backends::PRIMARY | wgpu::Backends::GL),
            name_contains: std::env::var("WGPU_ADAPTER_NAME")
                .ok()
                .filter(|name| !name.trim().is_empty()),
        }
    }
}

/// Lower is better: discrete GPUs first, then integrated, virtual, CPU, anything else.
fn device_type_rank(device_type: wgpu::DeviceType) -> u8 {
    match device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

/// Lower is better among adapters of the same type. Vulkan, Metal and DX12 give compute
/// shaders their full feature set; GL is the fallback when no Vulkan driver is installed.
fn backend_rank(backend: wgpu::Backend) -> u8 {
    match backend {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        wgpu::Backend::BrowserWebGpu => 1,
        wgpu::Backend::Gl => 2,
        wgpu::Backend::Noop => 9,
    }
}

/// Lists every adapter on the given backends, best first, in the order `choose_adapter`
/// ranks them.
pub async fn enumerate_adapters(instance: &wgpu::Instance, backends: wgpu::Backends) -> Vec<wgpu::Adapter> {
    let mut adapters = instance.enumerate_adapters(backends).await;
    adapters.retain(|adapter| adapter.get_info().backend != wgpu::Backend::Noop);
    adapters.sort_by_key(|adapter| {
        let info = adapter.get_info();
        (device_type_rank(info.device_type), backend_rank(info.backend))
    });
    adapters
}

/// Picks the best adapter that matches `options`.
pub(crate) async fn choose_adapter(instance: &wgpu::Instance, options: &AdapterOptions) -> Result<wgpu::Adapter> {
    if options.backends.is_empty() {
        // wgpu reads an unknown WGPU_BACKEND value as no backend at all.
        let said = std::env::var("WGPU_BACKEND")
            .map(|value| format!("WGPU_BACKEND={value:?} names"))
            .unwrap_or_else(|_| "AdapterOptions::backends holds".to_string());
        return Err(Error::NoAdapter {
            reason: format!(
                "{said} no backend wgpu knows; use a comma list of vulkan, metal, dx12, gl, webgpu (or primary)"
            ),
        });
    }
    let adapters = enumerate_adapters(instance, options.backends).await;
    let seen: Vec<String> = adapters
        .iter()
        .map(|adapter| AdapterSummary::from(&adapter.get_info()).to_string())
        .collect();
    let wanted = options.name_contains.as_ref().map(|name| name.to_lowercase());
    let chosen = adapters.into_iter().find(|adapter| match &wanted {
        Some(name) => adapter.get_info().name.to_lowercase().contains(name.as_str()),
        None => true,
    });
    chosen.ok_or_else(|| {
        let asked = match &options.name_contains {
            Some(name) => format!("backends {:?} with a name containing {name:?}", options.backends),
            None => format!("backends {:?}", options.backends),
        };
        let found = if seen.is_empty() && cfg!(target_arch = "wasm32") {
            // In a page the browser decides: WebGPU may be off, or blocked for this GPU.
            "the browser gave none (is WebGPU enabled? chrome://gpu says why not)".to_string()
        } else if seen.is_empty() {
            "none found (install a GPU driver, or Mesa's software drivers: \
             apt-get install mesa-vulkan-drivers libvulkan1)"
                .to_string()
        } else {
            format!("found only: {}", seen.join("; "))
        };
        Error::NoAdapter {
            reason: format!("asked for {asked}; {found}"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discrete_gpus_rank_before_cpus_and_vulkan_before_gl() {
        assert!(device_type_rank(wgpu::DeviceType::DiscreteGpu) < device_type_rank(wgpu::DeviceType::IntegratedGpu));
        assert!(device_type_rank(wgpu::DeviceType::VirtualGpu) < device_type_rank(wgpu::DeviceType::Cpu));
        assert!(backend_rank(wgpu::Backend::Vulkan) < backend_rank(wgpu::Backend::Gl));
    }
}
