"""Training hooks (gate, red flags, checkpoints, timeout) and the registry a job file names them from."""

from __future__ import annotations

from xraydet.training.hooks.base import (
    HOOKS,
    HookBase,
    HookList,
    TrainContext,
    Verdict,
    build_hook,
    register_hook,
)
from xraydet.training.hooks.checkpoints import PeriodicCheckpoint
from xraydet.training.hooks.decision_gate import DecisionGate
from xraydet.training.hooks.red_flags import (
    LoaderStarvedFlag,
    NanLossFlag,
    OscillationFlag,
    OverfitFlag,
    PlateauFlag,
)
from xraydet.training.hooks.timeout import Timeout

__all__ = [
    "HOOKS",
    "DecisionGate",
    "HookBase",
    "HookList",
    "LoaderStarvedFlag",
    "NanLossFlag",
    "OscillationFlag",
    "OverfitFlag",
    "PeriodicCheckpoint",
    "PlateauFlag",
    "Timeout",
    "TrainContext",
    "Verdict",
    "build_hook",
    "register_hook",
]
