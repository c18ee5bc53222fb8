"""Assemble docs/benchmarks.md from the per-area sections in docs/benchmarks/*.md.

Each section keeps its own text; headings are shifted so that each section's top heading is level 2 and the
file has one level-1 title. Lines inside code fences are left alone.

    python benchmarks/assemble_docs.py
"""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"
SECTIONS = ("demo.md", "data-check.md", "doctor.md", "serving.md", "tta.md", "gpu.md")
INTRO = """# Benchmarks

Every figure xraydet claims, with the script that produced it. Figures never come from timed tests: each
benchmark compares its candidates side by side in one run and reports medians and ratios. The development
machine has 2 cores and is noisy; the GPU figures come from an H200 and an H100, each lent for 15 minutes.

| section | what | script |
|---|---|---|
| CPU demo | `scripts/demo.sh`: wall time and the demo plan's figures | `scripts/demo.sh` |
| data check | `xraydet data check` images/s on the 2,350 real OPIXray scans | `benchmarks/bench_check.py` |
| data doctor | verdicts and t statistics on real labels and planted faults | `benchmarks/bench_doctor.py` |
| serving | ONNX Runtime vs Ultralytics latency; API requests/s, 1-8 clients | `benchmarks/bench_serving.py` |
| test-time augmentation | runs D, E, F and H models with `--tta off / hflip / flips` | `benchmarks/tta.py` |
| GPU training | seed presets; throughput; time-to-accuracy recipe | `benchmarks/gpu_recipe.py` |

This file is assembled from `docs/benchmarks/*.md` by `python benchmarks/assemble_docs.py`.
"""


def shift_headings(text: str, top: int = 2) -> str:
    """Shift Markdown headings (outside code fences) so the shallowest becomes level ``top``."""
    lines = text.strip().splitlines()
    fenced, levels = False, []
    for line in lines:
        fenced ^= line.startswith("```")
        if not fenced and line.startswith("#"):
            levels.append(len(line) - len(line.lstrip("#")))
    shift = top - min(levels, default=top)
    out, fenced = [], False
    for line in lines:
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            line = "#" * (level + shift) + line[level:]
        out.append(line)
    return "\n".join(out)


def rebase_images(text: str, folder: str = "benchmarks") -> str:
    """Point relative image links of a section (``![x](a.png)``) at ``folder/`` (the section's own folder).

    Example:
        >>> rebase_images("![curve](gpu-curves.png) and ![web](https://x/y.png)")
        '![curve](benchmarks/gpu-curves.png) and ![web](https://x/y.png)'
    """
    return re.sub(r"(!\[[^\]]*\]\()(?![a-z]+://|/)([^)]+\))", rf"\g<1>{folder}/\g<2>", text)


def main() -> None:
    sections = [(DOCS / "benchmarks" / name).read_text() for name in SECTIONS]
    body = [INTRO] + [rebase_images(shift_headings(text)) for text in sections]
    (DOCS / "benchmarks.md").write_text("\n\n".join(body) + "\n")


if __name__ == "__main__":
    main()
