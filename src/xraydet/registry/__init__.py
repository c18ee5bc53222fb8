"""Model registry on MLflow: register weights with their eval report, promote through the readiness gate and a
comparison with the champion, roll back, and resolve references to local weights.

Example:
    >>> from xraydet.registry import register_model, promote, resolve_model  # doctest: +SKIP
    >>> v = register_model("runs/train/weights/best.pt", "xray", report="runs/eval/best")  # doctest: +SKIP
    >>> promote("xray", v, "data/opixray/data.yaml").promoted  # doctest: +SKIP
    True
    >>> resolve_model("xray")  # the champion's weights  # doctest: +SKIP
"""

from xraydet.registry.lifecycle import champion, promote, rollback
from xraydet.registry.promotion import ComparisonPolicy, ComparisonRule, PromotionDecision
from xraydet.registry.refs import parse_ref, resolve_model, resolve_version
from xraydet.registry.source import RegistryModelSource
from xraydet.registry.store import (
    CHAMPION,
    RegistryError,
    champion_history,
    list_models,
    list_versions,
    register_model,
)

__all__ = [
    "CHAMPION",
    "ComparisonPolicy",
    "ComparisonRule",
    "PromotionDecision",
    "RegistryError",
    "RegistryModelSource",
    "champion",
    "champion_history",
    "list_models",
    "list_versions",
    "parse_ref",
    "promote",
    "register_model",
    "resolve_model",
    "resolve_version",
    "rollback",
]
