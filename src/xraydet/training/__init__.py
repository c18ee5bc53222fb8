"""Training engine: presets, typed jobs, hooks (gate, red flags, checkpoints, timeout), resume, MLflow.

Public API::

    job = load_job("examples/jobs/phase1.yaml", overrides=["epochs=3"])
    result = run_training(job, run_dir=None)          # -> RunResult (also run_dir/summary.json)
    result = resume_training(result.run_dir, epochs=6) # continue a killed run / extend a finished one
    load_run_result(run_dir)
"""

from __future__ import annotations

import os

os.environ.setdefault("YOLO_OFFLINE", "true")

from xraydet.training.hooks import HookBase, Verdict, register_hook
from xraydet.training.job import GateConfig, RedFlagConfig, TrainJob, job_from_dict, load_job
from xraydet.training.presets import list_presets, load_preset
from xraydet.training.resume import resume_training
from xraydet.training.summary import RunResult, load_run_result
from xraydet.training.trainer import run_training

__all__ = [
    "GateConfig",
    "HookBase",
    "RedFlagConfig",
    "RunResult",
    "TrainJob",
    "Verdict",
    "job_from_dict",
    "list_presets",
    "load_job",
    "load_preset",
    "load_run_result",
    "register_hook",
    "resume_training",
    "run_training",
]
