// CI's WGSL check: every tsumugi kernel compiled by Dawn's WGSL compiler (Tint), the one in
// Chrome. See shaders/README.md ("The portability check").
//
//   node .ci/tint/check.mjs PIPELINE_LOG [--only=node|chromium] [--verbose]
//
// PIPELINE_LOG is what `TSUMUGI_PIPELINE_LOG=PIPELINE_LOG cargo test --release` wrote on
// an adapter that runs both kernel paths (lavapipe): each family's module sources and
// every pipeline the tests built. The check compiles them on
//   - Dawn for Node (npm `webgpu`) on its OpenGL ES backend (EGL_PLATFORM=surfaceless),
//     which has no subgroups: the portable modules and their pipelines;
//   - headless Chromium's WebGPU on SwiftShader, which has subgroups: the portable
//     modules and the subgroup modules (`enable subgroups;`) with all their pipelines;
// and exits non-zero on any error, or when a module variant was checked nowhere.
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { checkPlan } from './kernels.mjs';

const started = Date.now();
// --verbose: a line per module and pipeline as it is built (to find one that hangs).
const progress = process.argv.includes('--verbose') ? (text) => console.log(`[${((Date.now() - started) / 1000).toFixed(1)} s] ${text}`) : () => {};
const here = path.dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const logPath = args.find((a) => !a.startsWith('--'));
const only = (args.find((a) => a.startsWith('--only=')) || '').slice('--only='.length);
if (!logPath) {
  console.error('usage: node check.mjs PIPELINE_LOG [--only=node|chromium] [--verbose]');
  process.exit(2);
}

function readPlan(file) {
  const sources = new Map();
  const pipelines = new Map();
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    const entry = JSON.parse(line);
    if (entry.kind === 'source') {
      const key = `${entry.family}/${entry.subgroups}`;
      const seen = sources.get(key);
      // Every process writes the same sources; different text means a mixed-up log.
      if (seen && seen.wgsl !== entry.wgsl) throw new Error(`${file}: two different sources for ${key}`);
      sources.set(key, entry);
    } else if (entry.kind === 'pipeline') {
      const key = JSON.stringify([entry.family, entry.entry_point, entry.overrides, entry.bindings]);
      pipelines.set(key, entry);
    }
  }
  return { sources: [...sources.values()], pipelines: [...pipelines.values()] };
}

async function checkOnNode(plan) {
  process.env.EGL_PLATFORM ||= 'surfaceless';
  const { create, globals } = await import('webgpu');
  Object.assign(globalThis, globals);
  // Held for the whole run: once the instance is garbage-collected, Dawn's event
  // processing touches freed memory (a crash seconds into the check).
  const gpu = create(['backend=opengles']);
  globalThis.tsumugiDawnInstance = gpu;
  const requestAdapter = async () => {
    const adapter = await gpu.requestAdapter({ featureLevel: 'compatibility' });
    if (!adapter) throw new Error('Dawn for Node gave no OpenGL ES adapter');
    return adapter;
  };
  return checkPlan(requestAdapter, plan, 'dawn-node-gles', progress);
}

function chromiumBinary() {
  for (const name of [process.env.CHROMIUM, 'chromium', 'chromium-browser', 'google-chrome']) {
    if (!name) continue;
    for (const dir of name.includes('/') ? [''] : (process.env.PATH || '').split(':')) {
      const candidate = dir ? path.join(dir, name) : name;
      if (fs.existsSync(candidate)) return candidate;
    }
  }
  throw new Error('no chromium found (install Debian\'s chromium, or set CHROMIUM)');
}

// Serves page.html, kernels.mjs and the plan on localhost, opens the page in headless
// Chromium and waits for the report it posts back.
async function checkOnChromium(plan, timeoutMs = 240000) {
  const files = {
    '/': ['page.html', 'text/html'],
    '/kernels.mjs': ['kernels.mjs', 'text/javascript'],
  };
  let settle;
  const posted = new Promise((resolve) => (settle = resolve));
  const server = http.createServer((req, res) => {
    if (req.method === 'POST' && req.url === '/result') {
      let body = '';
      req.on('data', (chunk) => (body += chunk));
      req.on('end', () => {
        res.end('ok');
        settle(JSON.parse(body));
      });
      return;
    }
    if (req.url === '/plan.json') {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify(plan));
      return;
    }
    const file = files[req.url];
    if (!file) {
      res.statusCode = 404;
      res.end();
      return;
    }
    res.setHeader('content-type', file[1]);
    res.end(fs.readFileSync(path.join(here, file[0])));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${server.address().port}/`;
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'tsumugi-chromium-'));
  const browser = spawn(
    chromiumBinary(),
    ['--headless=new', '--no-sandbox', '--enable-unsafe-webgpu', '--disable-gpu-sandbox', `--user-data-dir=${profile}`, '--no-first-run', url],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  browser.stderr.on('data', (chunk) => (stderr = (stderr + chunk).slice(-20000)));
  const exited = new Promise((resolve) => browser.on('exit', (code) => resolve({ failure: `chromium exited (${code}) before the page reported:\n${stderr}` })));
  let timer;
  const timedOut = new Promise((resolve) => (timer = setTimeout(() => resolve({ failure: `no report from the page within ${timeoutMs / 1000} s:\n${stderr}` }), timeoutMs)));
  try {
    const result = await Promise.race([posted, exited, timedOut]);
    if (result.failure) throw new Error(`chromium: ${result.failure}`);
    return result.report;
  } finally {
    clearTimeout(timer);
    server.close();
    // Chromium writes into its profile until it has exited: wait for that (10 s at most)
    // before removing the profile, and never fail the check on a leftover temp folder.
    if (browser.exitCode === null && browser.signalCode === null) {
      browser.kill();
      await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 10000))]);
    }
    try {
      fs.rmSync(profile, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 });
    } catch (error) {
      console.log(`note: could not remove ${profile}: ${error.message}`);
    }
  }
}

const plan = readPlan(logPath);
const failures = [];
if (plan.sources.length === 0 || plan.pipelines.length === 0) {
  failures.push(`${logPath} holds ${plan.sources.length} sources and ${plan.pipelines.length} pipelines: was it written by TSUMUGI_PIPELINE_LOG=... cargo test?`);
}
const reports = [];
for (const [where, run] of [['node', checkOnNode], ['chromium', checkOnChromium]]) {
  if (only && only !== where) continue;
  const started = Date.now();
  try {
    const report = await run(plan);
    report.seconds = (Date.now() - started) / 1000;
    reports.push(report);
  } catch (error) {
    failures.push(`${where}: ${error.message}`);
  }
}

// Each module variant must have been compiled somewhere.
for (const source of plan.sources) {
  const variant = `${source.family} (${source.subgroups ? 'subgroup' : 'portable'} module)`;
  const skipped = reports.filter((r) => r.notChecked.some((n) => n.includes(`: ${variant}:`)));
  if (reports.length && skipped.length === reports.length) failures.push(`${variant} was compiled nowhere: ${skipped.map((r) => r.where).join(', ')} lack subgroups`);
}

const subgroupPipelines = plan.pipelines.filter((p) => p.subgroup_section).length;
console.log(`log: ${plan.sources.length} module sources (${plan.sources.filter((s) => s.subgroups).length} with subgroup sections), ${plan.pipelines.length} distinct pipelines (${subgroupPipelines} subgroup kernels, ${plan.pipelines.filter((p) => Object.keys(p.overrides).length).length} with override constants)`);
for (const r of reports) {
  for (const w of r.warnings) console.log(`  note: ${w}`);
  for (const n of r.notChecked) console.log(`  not checked: ${n}`);
  for (const e of r.errors) console.log(`  ERROR: ${e}`);
  console.log(`${r.where} [${r.adapter}]: ${r.modules} modules, ${r.entryPoints} entry points, ${r.pipelines} pipelines from the log (${r.withOverrides} with overrides), ${r.defaultsOnly} entry points with defaults only, ${r.beyondDefaults} pipelines beyond 16 KiB of workgroup memory, ${r.errors.length} errors, ${r.seconds.toFixed(1)} s`);
  if (r.errors.length) failures.push(`${r.where}: ${r.errors.length} errors`);
}
for (const f of failures) console.log(`FAILED: ${f}`);
if (failures.length) process.exit(1);
console.log('every kernel compiled on Dawn/Tint');
// Dawn for Node keeps its instance alive; the check is done.
process.exit(0);
