"""Evaluation as a screening checkpoint would see it: box metrics, screening rates, threshold sweep, latency,
plots and reports; the production readiness gate and the human review that feeds it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from xraydet.evaluation.report import EvalReport


def evaluate(*args: Any, **kwargs: Any) -> EvalReport:
    """Evaluate a detector; see :func:`xraydet.evaluation.runner.evaluate` (imported lazily)."""
    from xraydet.evaluation.runner import evaluate as _evaluate

    return _evaluate(*args, **kwargs)


__all__ = ["evaluate"]
