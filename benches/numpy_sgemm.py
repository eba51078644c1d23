#!/usr/bin/env python3
"""The CPU ceiling for benches/kernels.rs: numpy's (OpenBLAS) sgemm GFLOP/s on the same
shapes, medians of timed runs. Run it in the same sitting as `cargo bench --bench kernels`
and quote the two side by side. Needs `pip install numpy`; nothing in CI uses it.

    python3 benches/numpy_sgemm.py
"""
import statistics
import time

import numpy as np


def median_seconds(fn, runs):
    fn()  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    rng = np.random.default_rng(1)
    shapes = [
        ("256x256x256", (256, 256), (256, 256), False),
        ("1024x1024x1024", (1024, 1024), (1024, 1024), False),
        ("batched_32x128x128x128", (32, 128, 128), (32, 128, 128), False),
    ]
    for batch in (1, 32):
        for hidden in (256, 512):
            shapes.append((f"recurrent_step_b{batch}_h{hidden}", (batch, hidden), (4 * hidden, hidden), True))
    try:
        from threadpoolctl import threadpool_info

        for pool in threadpool_info():
            print(f"# {pool.get('internal_api')} {pool.get('version')} {pool.get('architecture')} threads={pool.get('num_threads')}")
    except ImportError:
        pass
    for name, a_shape, b_shape, trans_b in shapes:
        a = rng.uniform(-1, 1, a_shape).astype(np.float32)
        b = rng.uniform(-1, 1, b_shape).astype(np.float32)
        rhs = np.swapaxes(b, -1, -2) if trans_b else b
        out = a @ rhs
        flops = 2 * out.size * a.shape[-1]
        seconds = median_seconds(lambda: a @ rhs, runs=max(5, min(200, int(2e9 / flops))))
        print(f"numpy {name}: {flops / seconds / 1e9:.2f} GFLOP/s ({seconds * 1e3:.3f} ms)")


if __name__ == "__main__":
    main()
