"""Timing for tests that print a speed figure (printed, never asserted: these machines are noisy)."""

import time

import torch


def cpu_time_ms(fn, *args, repeats: int = 3) -> float:
    """Best of ``repeats`` calls in milliseconds, after one warm-up call (best: other jobs share the CPU)."""
    times = []
    with torch.no_grad():
        fn(*args)
        for _ in range(repeats):
            start = time.perf_counter()
            fn(*args)
            times.append(time.perf_counter() - start)
    return min(times) * 1000
