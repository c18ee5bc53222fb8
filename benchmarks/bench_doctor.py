"""``xraydet data doctor`` on the real OPIXray val labels and on copies of them with a planted fault.

Each copy symlinks the same scans into a temp folder and rewrites only the labels: transposed (x and y
swapped), shifted by half the box right and down, read over 1000 bins (loc tokens of 1024 bins divided by
1000: every normalised coordinate times 1024/1000, clipped to the image), doubled and halved in size. It also
scores the first 150 val scans with the real labels: the sample on which the doctor's earlier mean-based
rule called them mis-scaled.
Prints each perturbation's paired t statistic (perturbed minus given; negative: the given labels score
higher) as a markdown table; a size perturbation's t is the higher of fit's and extent's, both shown.

Usage:
    python benchmarks/bench_doctor.py [--data ../shared/data/opixray/data.yaml] [--max-images 300]
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from xraydet.data.dataset import load_dataset, read_label_file, write_data_yaml
from xraydet.data.doctor import PerturbationScore, doctor


def over_1000(r: np.ndarray) -> np.ndarray:
    """(cx, cy, w, h) of loc tokens of 1024 bins divided by 1000: the corners times 1024/1000, clipped to the
    image."""
    xyxy = np.clip(np.c_[r[:, :2] - r[:, 2:] / 2, r[:, :2] + r[:, 2:] / 2] * (1024 / 1000), 0.0, 1.0)
    return np.c_[(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]]


DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "opixray" / "data.yaml"
FAULTS: dict[str, Callable[[np.ndarray], np.ndarray] | None] = {
    "real OPIXray labels": None,
    "x and y swapped": lambda r: r[:, [1, 0, 3, 2]],
    "shifted by half the box (right and down)": lambda r: (
        r + np.c_[r[:, 2] / 2, r[:, 3] / 2, np.zeros((len(r), 2))]
    ),
    "read over 1000 bins (x 1024/1000)": over_1000,
    "doubled in size": lambda r: r * [1, 1, 2, 2],
    "halved in size": lambda r: r * [1, 1, 0.5, 0.5],
}


def relabelled(
    src: Path, dest: Path, fault: Callable[[np.ndarray], np.ndarray] | None, n: int | None
) -> Path:
    """The val split's first ``n`` scans symlinked into ``dest`` with ``fault`` applied to (cx, cy, w, h)."""
    ds = load_dataset(src)
    (dest / "images" / "val").mkdir(parents=True)
    (dest / "labels" / "val").mkdir(parents=True)
    for image, label in list(ds.iter_samples("val"))[:n]:
        (dest / "images" / "val" / image.name).symlink_to(image.resolve())
        rows = read_label_file(label) if label.exists() else np.zeros((0, 5))
        if fault is not None and len(rows):
            rows[:, 1:] = fault(rows[:, 1:])
        text = "".join(f"{int(r[0])} {r[1]:.6f} {r[2]:.6f} {r[3]:.6f} {r[4]:.6f}\n" for r in rows)
        (dest / "labels" / "val" / label.name).write_text(text)
    return write_data_yaml(dest, ds.names, {"val": "images/val"}, ds.threats)


def _t_cell(p: PerturbationScore) -> str:
    """``name t`` and, for a family of several scores, each score's t (``fit/extent``)."""
    each = "/".join(f"{t:+.1f}" for t in p.t_by_score.values())
    return f"{p.name} {p.t_stat:+.1f}" + (f" ({each})" if len(p.t_by_score) > 1 else "")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--max-images", type=int, default=300)
    ns = parser.parse_args()
    cases = [(name, fault, None, ns.max_images) for name, fault in FAULTS.items()]
    cases.append(("real labels, first 150 val scans", None, 150, 150))
    print("| labels | verdict | t per perturbation | inconclusive |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="xraydet-doctor-bench-") as tmp:
        for i, (name, fault, n, max_images) in enumerate(cases):
            data = relabelled(ns.data, Path(tmp) / str(i), fault, n)
            report = doctor(data, "val", max_images=max_images, seed=0)
            verdict = report.verdict + (f": {', '.join(report.faults)}" if report.faults else "")
            ts = ", ".join(_t_cell(p) for p in report.perturbations)
            print(f"| {name} | {verdict} | {ts} | {', '.join(report.inconclusive) or '-'} |", flush=True)


if __name__ == "__main__":
    main()
