"""Real models made to behave a known way, for tests that need a model unlike the one under test."""

from __future__ import annotations

from pathlib import Path


def trigger_happy_copy(weights: Path, out: Path) -> Path:
    """Save to ``out`` a copy of ``weights`` that calls a threat in every bag, and return ``out``.

    The bias of the last classification conv of each detection scale is set to +8: every anchor scores near
    1 for every class, as a badly trained model might. The weights file itself is not touched.
    """
    import torch

    ckpt = torch.load(weights, map_location="cpu", weights_only=False)
    model = ckpt.get("ema") or ckpt["model"]
    with torch.no_grad():
        for branch in model.model[-1].cv3:
            branch[-1].bias.fill_(8.0)
    ckpt["model"], ckpt["ema"] = model, None
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, out)
    return out
