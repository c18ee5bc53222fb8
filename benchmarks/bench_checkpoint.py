"""How long one Ultralytics-style ``last.pt`` of yolov8m takes to serialise and write on this machine.

Ultralytics writes ``last.pt`` after every epoch: the half-precision EMA model plus the optimizer state. This
builds the same content for an untrained yolov8m (5 classes) and SGD with momentum, and prints the file size
and the median of ``--repeats`` serialise-and-write times (docs/benchmarks/gpu.md quotes it).

Usage:
    python benchmarks/bench_checkpoint.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import copy
import io
import statistics
import tempfile
import time
from pathlib import Path

import torch
from ultralytics.nn.tasks import DetectionModel


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    ns = parser.parse_args()
    model = DetectionModel("yolov8m.yaml", nc=5, verbose=False)
    ema = copy.deepcopy(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()  # creates the momentum buffers a real checkpoint carries
    times, size = [], 0
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(ns.repeats):
            start = time.perf_counter()
            buffer = io.BytesIO()
            torch.save({"ema": copy.deepcopy(ema).half(), "optimizer": optimizer.state_dict()}, buffer)
            (Path(tmp) / "last.pt").write_bytes(buffer.getvalue())
            times.append(time.perf_counter() - start)
            size = buffer.getbuffer().nbytes
    print(
        f"yolov8m last.pt: {size / 2**20:.1f} MB, median {statistics.median(times):.2f} s over {ns.repeats}"
    )


if __name__ == "__main__":
    main()
