#!/usr/bin/env python3
"""Opens the web example in headless Chromium and checks its result against the native run.

Serves examples/web (which must hold pkg/, built by wasm-bindgen) on 127.0.0.1, opens it
with Chromium's WebGPU (SwiftShader where there is no GPU), waits for the page's
`TSUMUGI_WEB_RESULT {json}` console line, and compares it with the native test's
`TSUMUGI_NATIVE_RESULT {json}` line (tests/web_demo.rs, same seeds and sizes):

- the greedy translations (of a copy of the trained translator loaded from its state-dict
  bytes), the size of those bytes and the generated text must be identical;
- every reported loss must agree within ABS_TOL + REL_TOL * |native|: both runs execute
  the same kernels, but on different drivers whose float arithmetic (fused multiply-adds,
  transcendental functions) may round differently, and 200-300 Adam steps carry any
  difference forward. Measured on lavapipe vs Chromium's SwiftShader the largest
  relative difference is about 1e-6; a wrong kernel moves the curves by far more.

Usage: check.py NATIVE_LINE_FILE [--timeout SECONDS] [--chromium PATH]
Exit status 0 when the page's result matches, 1 otherwise (with the reason).
"""

import argparse
import functools
import http.server
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

ABS_TOL = 1e-3
REL_TOL = 1e-2

HERE = os.path.dirname(os.path.abspath(__file__))


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the example's folder; .wasm as application/wasm, no request log."""

    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".wasm": "application/wasm", ".js": "text/javascript"}

    def log_message(self, *args):
        pass


def serve():
    handler = functools.partial(QuietHandler, directory=HERE)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def read_line(path, tag):
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith(tag + " "):
                return json.loads(line[len(tag) + 1 :])
    sys.exit(f"{path}: no {tag} line")


def run_page(chromium, url, timeout):
    """Runs Chromium until the page logs its result or error line; returns (kind, text, seconds)."""
    profile = tempfile.mkdtemp(prefix="tsumugi-chromium-")
    command = [
        chromium,
        "--headless=new",
        "--no-sandbox",
        "--enable-unsafe-webgpu",
        "--disable-gpu-sandbox",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        url,
    ]
    start = time.monotonic()
    # A session of its own, so that the browser and every helper process it starts end
    # together below.
    browser = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
        text=True,
        encoding="utf-8",
        errors="replace",
    )
    found = {}
    pattern = re.compile(r"(TSUMUGI_WEB_RESULT|TSUMUGI_WEB_ERROR) (.*)\", source: ")

    def watch():
        for line in browser.stderr:
            match = pattern.search(line)
            if match:
                found["line"] = (match.group(1), match.group(2))
                return

    reader = threading.Thread(target=watch, daemon=True)
    reader.start()
    reader.join(timeout)
    seconds = time.monotonic() - start
    try:
        os.killpg(browser.pid, signal.SIGTERM)
        browser.wait(10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(browser.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if "line" not in found:
        return ("timeout", f"no result line within {timeout} s", seconds)
    kind, text = found["line"]
    return (kind, text, seconds)


def compare(native, web):
    problems = []
    for key in ("translations", "state_dict_bytes", "generated"):
        if native[key] != web[key]:
            problems.append(f"{key}: native {native[key]!r}, browser {web[key]!r}")
    worst = 0.0
    for key in ("translate_losses", "char_losses"):
        n_steps = [s for s, _ in native[key]]
        w_steps = [s for s, _ in web[key]]
        if n_steps != w_steps:
            problems.append(f"{key}: reported at steps {w_steps} in the browser, {n_steps} natively")
            continue
        for (step, n), (_, w) in zip(native[key], web[key]):
            if not math.isfinite(w) or abs(w - n) > ABS_TOL + REL_TOL * abs(n):
                problems.append(f"{key} step {step}: native {n}, browser {w}")
            elif n != 0:
                worst = max(worst, abs(w - n) / abs(n))
    return problems, worst


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("native", help="a file holding the native test's TSUMUGI_NATIVE_RESULT line")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--chromium", default="chromium")
    args = parser.parse_args()
    native = read_line(args.native, "TSUMUGI_NATIVE_RESULT")
    if not os.path.exists(os.path.join(HERE, "pkg", "web.js")):
        sys.exit(f"{HERE}/pkg/web.js is missing: build the page with wasm-bindgen first (see main.rs)")
    server = serve()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    kind, text, seconds = run_page(args.chromium, url, args.timeout)
    server.shutdown()
    if kind != "TSUMUGI_WEB_RESULT":
        sys.exit(f"the page failed after {seconds:.1f} s: {kind} {text}")
    web = json.loads(text)
    print(f"TSUMUGI_WEB_RESULT {text}")
    print(f"page: {web['adapter']}; trained in {web['train_ms'] / 1e3:.1f} s ({seconds:.1f} s with the browser's start)")
    print(f"native: {native['adapter']}; trained in {native['train_ms'] / 1e3:.1f} s")
    for key in ("translate_losses", "char_losses"):
        print(f"final {key[:-7]} loss: browser {web[key][-1][1]:.6g}, native {native[key][-1][1]:.6g}")
    for got in web["translations"]:
        print(f"  translation: {got}")
    print(f"  generated: {web['generated']!r}")
    problems, worst = compare(native, web)
    if problems:
        print("the browser's result differs from the native run:")
        for problem in problems:
            print(f"  {problem}")
        sys.exit(1)
    print(
        f"the browser's result matches the native run (largest relative loss difference {worst:.2g}, "
        f"tolerance {ABS_TOL} + {REL_TOL} x |native|)"
    )


if __name__ == "__main__":
    main()
