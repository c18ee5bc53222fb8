"""Throughput of ``xraydet data check`` on the real OPIXray set (2,350 images): header mode vs ``--deep``.

Runs :func:`xraydet.data.check.check_dataset` end to end (data.yaml load, listing, reading, hashing, header or
full decode, label checks, duplicate search) several times per setting and prints the median as a markdown
table. The first run warms the page cache; it is not counted.

Usage:
    python benchmarks/bench_check.py [--data ../shared/data/opixray/data.yaml] [--repeats 5] [--workers 1 2 4]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

from xraydet.data.check import check_dataset, default_workers

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "opixray" / "data.yaml"


def time_check(data: Path, deep: bool, workers: int, repeats: int) -> tuple[float, int, int]:
    """Median seconds over ``repeats`` runs (after one warm-up), images checked, errors found."""
    report = check_dataset(data, deep=deep, workers=workers)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        report = check_dataset(data, deep=deep, workers=workers)
        times.append(time.perf_counter() - start)
    return statistics.median(times), report.n_images, report.n_errors


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, default_workers()])
    args = parser.parse_args()
    if not args.data.is_file():
        raise SystemExit(f"no data set at {args.data} (pass --data)")

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    cpu = platform.processor() or platform.machine()
    print(
        f"# check throughput: {args.data}, {os.cpu_count()} cores ({cpu}), "
        f"load average {load:.1f} at start, median of {args.repeats}\n"
    )
    print("| mode | threads | images | median s | images/s | errors |")
    print("|---|---:|---:|---:|---:|---:|")
    for deep in (False, True):
        for workers in args.workers:
            seconds, n, errors = time_check(args.data, deep, workers, args.repeats)
            mode = "--deep (full decode)" if deep else "default (header + end marker)"
            print(f"| {mode} | {workers} | {n} | {seconds:.3f} | {n / seconds:,.0f} | {errors} |", flush=True)


if __name__ == "__main__":
    main()
