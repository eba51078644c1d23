#!/usr/bin/env bash
# Same-run comparison of tsumugi with its peers on the benchmark workloads (K1-K4, S1, S2;
# benches/RESULTS.md describes them and keeps the results).
#
# Runs, ROUNDS times and interleaved (tsumugi, Burn, PyTorch, tsumugi, ...), so that a slow
# patch of the machine hits everyone alike:
#   - tsumugi: `cargo bench --bench workloads` (K1, K2, K3, S1, S2) and the K4 matmuls of
#     `cargo bench --bench kernels`;
#   - Burn on wgpu (BURN_BIN: the peers' burn_bench binary built with --features burn-wgpu;
#     skipped when unset), on the same adapter;
#   - PyTorch on the CPU (TORCH_PYTHON: a python with torch; skipped when unset),
# then prints each workload's median over the rounds and the ratios peer / tsumugi
# (above 1: tsumugi is faster). Nothing in CI or the tests depends on this script.
#
#   BURN_BIN=/path/to/burn_bench_wgsl TORCH_PYTHON=/path/to/venv/bin/python benches/compare.sh
#
# Environment: ROUNDS (default 3); PEERS, the folder of the peers' harness with
# bench_torch.py (required with TORCH_PYTHON).
# Run it on an otherwise idle machine: on 2 cores, a build beside it distorts everything.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
PEERS=${PEERS:-}
if [[ -n "${TORCH_PYTHON:-}" && ! -f "$PEERS/bench_torch.py" ]]; then
    echo "TORCH_PYTHON is set but PEERS (${PEERS:-unset}) has no bench_torch.py: set PEERS to the peers' harness folder" >&2
    exit 2
fi
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

cargo bench --no-run --bench workloads --bench kernels >/dev/null 2>&1
for round in $(seq 1 "$ROUNDS"); do
    echo "round $round of $ROUNDS" >&2
    cargo bench --bench workloads 2>&1 | grep "ms per iteration" >"$OUT/tsumugi.$round" || true
    cargo bench --bench kernels -- "matmul_forward/.*(1024x1024x1024|batched_32x128x128x128)" 2>&1 |
        grep "ms per iteration" >>"$OUT/tsumugi.$round" || true
    if [[ -n "${BURN_BIN:-}" ]]; then
        "$BURN_BIN" wgpu --only K1,K2,K3,K4,S1,S2 2>/dev/null | grep "median" >"$OUT/burn.$round" || true
    fi
    if [[ -n "${TORCH_PYTHON:-}" ]]; then
        (cd "$PEERS" && "$TORCH_PYTHON" bench_torch.py --threads 2 --only K1,K2,K3,K4,S1,S2) 2>/dev/null |
            grep "median" >"$OUT/torch.$round" || true
    fi
done

python3 - "$OUT" "$ROUNDS" <<'EOF'
import re, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
# (key, description, tsumugi pattern, Burn pattern, PyTorch pattern)
WORKLOADS = [
    ("K1 fwd", "LSTM layer forward", r"^forward/K1_", r"K1 LSTM .* forward ", r"^K1 .*forward \(no_grad\)|^K1 LSTM.*forward +median"),
    ("K1 f+b", "LSTM layer forward+backward", r"^forward_backward/K1_", r"K1 LSTM .* forward\+backward", r"^K1 .*forward\+backward"),
    ("K2 fwd", "GRU layer forward", r"^forward/K2_", r"K2 GRU .* forward ", r"^K2 .*forward \(no_grad\)|^K2 GRU.*forward +median"),
    ("K2 f+b", "GRU layer forward+backward", r"^forward_backward/K2_", r"K2 GRU .* forward\+backward", r"^K2 .*forward\+backward"),
    ("K3 step", "LSTM B1 one step", r"K3_one_step", r"K3 LSTM B1 single step", r"K3 LSTM B1 single step \(nn\.LSTM"),
    ("K3 T32", "LSTM B1 T=32 in one call", r"K3_t32_one_call", r"K3 LSTM B1 T32 whole", r"K3 LSTM B1 T32 whole"),
    ("K3 32x1", "LSTM B1 32 calls of one step", r"K3_32_calls", r"K3 LSTM B1 T32 streamed", r"K3 LSTM B1 T32 streamed"),
    ("K4 mm", "matmul 1024^3", r"1024x1024x1024", r"K4 matmul 1024", r"K4 torch matmul 1024"),
    ("K4 bmm", "batched 32 x 128^3", r"batched_32x128", r"K4 batched matmul", r"K4 torch bmm"),
    ("S1", "sentiment train step", r"S1_sentiment", r"S1 seed-sentiment", r"S1 seed-sentiment"),
    ("S2", "translator train step", r"S2_translator", r"S2 seed-translate", r"S2 seed-translate"),
]

def ms(text):
    # tsumugi: "... 12.3 ms per iteration"; the peers: "median   12.3 ms (min ...".
    m = re.search(r"([0-9.]+) (ms|us) per iteration", text) or re.search(r"median\s+([0-9.]+) (ms|us)", text)
    if not m:
        return None
    return float(m.group(1)) / (1000.0 if m.group(2) == "us" else 1.0)

def medians(peer, column):
    found = {}
    for r in range(1, rounds + 1):
        try:
            lines = open(f"{out}/{peer}.{r}").read().splitlines()
        except FileNotFoundError:
            continue
        for key, _, *patterns in WORKLOADS:
            for line in lines:
                # Burn prefixes "tag | name"; the tsumugi lines start with the bench id.
                body = line.split(" | ", 1)[-1]
                if re.search(patterns[column], body):
                    t = ms(body)
                    if t is not None:
                        found.setdefault(key, []).append(t)
                    break
    return {k: statistics.median(v) for k, v in found.items()}

tsumugi, burn, torch = medians("tsumugi", 0), medians("burn", 1), medians("torch", 2)
print(f"{'workload':<34} {'tsumugi':>11} {'Burn wgpu':>11} {'PyTorch':>11} {'Burn/ts':>8} {'Torch/ts':>9}")
for key, name, *_ in WORKLOADS:
    cell = lambda d: f"{d[key]:9.2f}ms" if key in d else f"{'-':>11}"
    ratio = lambda d: f"{d[key] / tsumugi[key]:7.2f}x" if key in d and key in tsumugi else f"{'-':>8}"
    print(f"{key + ' ' + name:<34} {cell(tsumugi)} {cell(burn)} {cell(torch)} {ratio(burn)} {ratio(torch):>9}")
print(f"(medians over {rounds} interleaved rounds; ratio above 1: tsumugi is faster)")
EOF
