// Compiles tsumugi's kernels on one WebGPU implementation and reports every error. Shared
// by check.mjs (Dawn for Node) and page.html (a browser), so both run the same checks.
//
// A plan (built by check.mjs from TSUMUGI_PIPELINE_LOG) holds the WGSL of each family's
// module variants (portable; with the subgroup section and `enable subgroups;`) and the
// pipelines the test suite built: entry point, override constants, bindings.

// The WebGPU defaults of core (not compatibility) devices that bound a kernel: a kernel
// must fit them on every implementation (shaders/README.md), so no more is requested,
// but for workgroup memory where a launcher checks the device's limit (checkPlan).
const CORE_DEFAULTS = {
  maxStorageBuffersPerShaderStage: 8,
  maxComputeWorkgroupStorageSize: 16384,
  maxComputeInvocationsPerWorkgroup: 256,
  maxComputeWorkgroupSizeX: 256,
  maxComputeWorkgroupSizeY: 256,
  maxComputeWorkgroupSizeZ: 64,
  maxUniformBuffersPerShaderStage: 12,
  maxDynamicUniformBuffersPerPipelineLayout: 8,
};

// `@compute @workgroup_size(...)` then `fn name(`: every entry point of a module.
export function computeEntryPoints(wgsl) {
  const names = [...wgsl.matchAll(/@compute\b[^;{]*?\bfn\s+([A-Za-z_][A-Za-z0-9_]*)\s*\(/g)].map((m) => m[1]);
  const marks = (wgsl.match(/@compute\b/g) || []).length;
  return { names, complete: names.length === marks };
}

function layoutEntries(bindings) {
  return bindings.map(([binding, access]) => ({
    binding,
    visibility: GPUShaderStage.COMPUTE,
    buffer:
      access === 'uniform'
        ? { type: 'uniform', hasDynamicOffset: true }
        : { type: access === 'read' ? 'read-only-storage' : 'storage' },
  }));
}

// Runs `make` inside validation, out-of-memory and internal error scopes; returns the
// errors' messages (empty when it built).
async function scoped(device, make) {
  const filters = ['validation', 'out-of-memory', 'internal'];
  for (const filter of filters) device.pushErrorScope(filter);
  let thrown = null;
  let value = null;
  try {
    value = await make();
  } catch (error) {
    thrown = String(error && error.message ? error.message : error);
  }
  const errors = [];
  for (let i = 0; i < filters.length; i++) {
    const error = await device.popErrorScope();
    if (error) errors.push(error.message);
  }
  if (thrown) errors.push(thrown);
  return { value, errors };
}

// A module and a pipeline built from it, both inside error scopes; returns the errors.
async function buildPipeline(device, modules, source, variant, describe) {
  let module = modules.get(device);
  if (!module) {
    const built = await scoped(device, () => device.createShaderModule({ label: variant, code: source.wgsl }));
    if (built.value && built.value.getCompilationInfo) {
      for (const m of (await built.value.getCompilationInfo()).messages) {
        if (m.type === 'error') built.errors.push(`${m.type} at ${m.lineNum}:${m.linePos}: ${m.message}`);
      }
    }
    if (built.errors.length) return { moduleErrors: built.errors, errors: [] };
    module = built.value;
    modules.set(device, module);
  }
  const result = await scoped(device, () => device.createComputePipelineAsync(describe(module)));
  return { moduleErrors: [], errors: result.errors };
}

// Checks `plan` on the adapters `requestAdapter()` gives (one per device). Returns counts, errors and what could not be checked here.
//
// Every pipeline is built on a device with WebGPU's default limits. One that fails there
// only for its workgroup memory is built again on a device with the adapter's
// maxComputeWorkgroupStorageSize, which is what tsumugi requests (Context::new asks for
// the adapter's limits) and what its launchers check before choosing such overrides; it
// is listed, not failed.
export async function checkPlan(requestAdapter, plan, where, progress = () => {}) {
  const adapter = await requestAdapter();
  const report = { where, adapter: '', modules: 0, pipelines: 0, withOverrides: 0, defaultsOnly: 0, entryPoints: 0, beyondDefaults: 0, errors: [], notChecked: [], warnings: [] };
  const info = adapter.info || {};
  report.adapter = [info.vendor, info.architecture, info.device, info.description].filter((s) => s).join(' / ') || '(no adapter info)';
  const requiredLimits = {};
  for (const [name, value] of Object.entries(CORE_DEFAULTS)) {
    if (adapter.limits[name] >= value) requiredLimits[name] = value;
    else report.warnings.push(`${where}: adapter limit ${name} = ${adapter.limits[name]} < WebGPU's default ${value}; kernels above it fail here`);
  }
  const subgroups = adapter.features.has('subgroups');
  const requiredFeatures = subgroups ? ['subgroups'] : [];
  const strict = await adapter.requestDevice({ requiredLimits, requiredFeatures });
  const grantedStorage = adapter.limits.maxComputeWorkgroupStorageSize;
  const granted = await (await requestAdapter()).requestDevice({ requiredLimits: { ...requiredLimits, maxComputeWorkgroupStorageSize: grantedStorage }, requiredFeatures });
  for (const device of [strict, granted]) {
    device.addEventListener?.('uncapturederror', (event) => report.errors.push(`${where}: uncaptured: ${event.error.message}`));
  }

  for (const source of plan.sources) {
    const variant = `${source.family}${source.subgroups ? ' (subgroup module)' : ' (portable module)'}`;
    if (source.subgroups && !subgroups) {
      report.notChecked.push(`${where}: ${variant}: the adapter has no 'subgroups' feature`);
      continue;
    }
    progress(`${where}: ${variant}`);
    const modules = new Map();
    const { names, complete } = computeEntryPoints(source.wgsl);
    if (!complete) report.errors.push(`${where}: ${variant}: an @compute entry point whose name the check cannot read`);
    const inModule = new Set(names);
    // The portable module holds only the portable kernels; the subgroup module holds all,
    // and a browser with subgroups builds every kernel of the family from it.
    const pipelines = plan.pipelines.filter((p) => p.family === source.family && (source.subgroups || !p.subgroup_section));
    const jobs = pipelines.map((p) => ({
      name: `${variant} ${p.entry_point} ${JSON.stringify(p.overrides)}`,
      entryPoint: p.entry_point,
      fromLog: true,
      overrides: Object.keys(p.overrides).length > 0,
      describe: (module) => {
        const device = module.__device;
        return { label: p.entry_point, layout: device.createPipelineLayout({ bindGroupLayouts: [device.createBindGroupLayout({ label: p.entry_point, entries: layoutEntries(p.bindings) })] }), compute: { module, entryPoint: p.entry_point, constants: p.overrides } };
      },
    }));
    const dispatched = new Set(pipelines.map((p) => p.entry_point));
    // Entry points no test dispatched still compile, with their WGSL defaults.
    for (const entryPoint of names.filter((n) => !dispatched.has(n))) {
      report.warnings.push(`${where}: ${variant} ${entryPoint}: no test built it; compiled with its WGSL defaults only`);
      jobs.push({ name: `${variant} ${entryPoint} (WGSL defaults)`, entryPoint, fromLog: false, overrides: false, describe: (module) => ({ label: entryPoint, layout: 'auto', compute: { module, entryPoint } }) });
    }
    report.modules++;
    report.entryPoints += names.length;
    for (const job of jobs) {
      if (!inModule.has(job.entryPoint)) {
        report.errors.push(`${where}: ${job.name}: the log names an entry point the module does not have`);
        continue;
      }
      progress(`${where}: ${job.name}`);
      const tag = (device) => (module) => { module.__device = device; return job.describe(module); };
      let result = await buildPipeline(strict, modules, source, variant, tag(strict));
      if (result.moduleErrors.length) {
        report.errors.push(...result.moduleErrors.map((e) => `${where}: ${variant}: ${e}`));
        break;
      }
      if (job.fromLog) report.pipelines++;
      else report.defaultsOnly++;
      if (job.overrides) report.withOverrides++;
      if (result.errors.length && result.errors.every((e) => /workgroup storage/i.test(e)) && grantedStorage > CORE_DEFAULTS.maxComputeWorkgroupStorageSize) {
        const again = await buildPipeline(granted, modules, source, variant, tag(granted));
        if (!again.moduleErrors.length && !again.errors.length) {
          report.beyondDefaults++;
          report.warnings.push(`${where}: ${job.name}: needs more than 16 KiB of workgroup memory; built with the adapter's ${grantedStorage} bytes`);
          continue;
        }
        result = again.moduleErrors.length ? { errors: again.moduleErrors } : again;
      }
      report.errors.push(...result.errors.map((e) => `${where}: ${job.name}: ${e}`));
    }
  }
  strict.destroy();
  granted.destroy();
  return report;
}
