// Loads the wasm module that wasm-bindgen wrote to pkg/ and runs the page. Any failure
// is shown and logged as one TSUMUGI_WEB_ERROR line, which the CI check waits for too.
import init, { run } from "./pkg/web.js";

const status = document.getElementById("status");
try {
  if (!navigator.gpu) {
    throw new Error("this browser has no WebGPU (navigator.gpu is missing)");
  }
  await init();
  await run();
} catch (err) {
  status.textContent = `failed: ${err}`;
  console.log(`TSUMUGI_WEB_ERROR ${err}`);
}
