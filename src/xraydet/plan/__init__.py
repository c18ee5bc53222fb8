"""Declarative improvement plans: data steps, training phases with decision gates, transitions on outcomes,
evaluation, readiness gate and deployment, run by :func:`run_plan`, resumable with :func:`resume_plan`.

Example:
    >>> from xraydet.plan import load_plan, run_plan  # doctest: +SKIP
    >>> state = run_plan(load_plan("cpu-demo"), "runs/plans/cpu-demo")  # doctest: +SKIP
    >>> state.status, state.trail  # doctest: +SKIP
    ('finished', ['synth-original', ..., 'deploy'])
"""

from xraydet.plan.runner import PlanEvent, plan_status, resume_plan, run_plan
from xraydet.plan.schema import Plan, PlanError, bundled_plans, load_plan, parse_plan
from xraydet.plan.state import PlanState, StepRecord
from xraydet.plan.steps import StepContext, StepResult, register_step_kind, step_kind_names

__all__ = [
    "Plan",
    "PlanError",
    "PlanEvent",
    "PlanState",
    "StepContext",
    "StepRecord",
    "StepResult",
    "bundled_plans",
    "load_plan",
    "parse_plan",
    "plan_status",
    "register_step_kind",
    "resume_plan",
    "run_plan",
    "step_kind_names",
]
