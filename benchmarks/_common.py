"""Shared timing helpers for the benchmarks (not a test module)."""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: the machine is shared)")
    p.add_argument("--repeats", type=int, default=5, help="timed repetitions per measurement")
    p.add_argument("--seed", type=int, default=0)
    return p


def setup(args) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    print(f"torch {torch.__version__}, threads={torch.get_num_threads()}, seed={args.seed}")


def timeit(fn: Callable[[], object], repeats: int, warmup: int = 1) -> tuple[float, float]:
    """Median and standard deviation of wall-clock seconds over ``repeats`` calls after ``warmup``."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), (statistics.stdev(times) if len(times) > 1 else 0.0)
