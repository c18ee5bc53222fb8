"""The job's settings of a built-in hook (``gate``, ``red_flags.*``, ``checkpoint_every``, ``timeout_s``)
and the hook's own parameters (what an extra ``hooks:`` entry names) share their ranges and defaults.

The bounds are read from the hooks' constructor annotations (their one source), never written here, and every
one is checked from both sides: a value just outside is refused by the job and by ``build_hook`` with the same
message, a value on the bound is accepted by both, and the defaults agree.
"""

from __future__ import annotations

import inspect
import typing
from typing import Any

import annotated_types
import pytest
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from xraydet.errors import ConfigError
from xraydet.training.hooks import HOOKS, build_hook
from xraydet.training.job import (
    GateConfig,
    LoaderStarvedConfig,
    NanConfig,
    OscillationConfig,
    OverfitConfig,
    PlateauConfig,
    TrainJob,
)

# hook name -> (the job's model holding its settings, {hook parameter: job field})
SETTINGS: dict[str, tuple[type[BaseModel], dict[str, str]]] = {
    "nan_loss": (NanConfig, {"action": "action"}),
    "decision_gate": (
        GateConfig,
        {p: p for p in ("decision_epoch", "continue_above", "stop_below", "metric", "on_stop")},
    ),
    "oscillation": (
        OscillationConfig,
        {p: p for p in ("metrics", "window", "min_sign_change_ratio", "min_rel_amplitude", "action")},
    ),
    "plateau": (PlateauConfig, {p: p for p in ("metric", "patience", "min_delta", "action")}),
    "overfitting": (OverfitConfig, {p: p for p in ("window", "min_val_rise", "action")}),
    "loader_starved": (LoaderStarvedConfig, {p: p for p in ("window", "max_wait_frac", "action")}),
    "checkpoints": (TrainJob, {"every": "checkpoint_every"}),
    "timeout": (TrainJob, {"timeout_s": "timeout_s"}),
}
NOT_JOB_SETTINGS = {"loader_starved": {"advice"}}  # filled in from the job itself (trainer.loader_advice)
SECTION_ONLY = {"enabled"}  # a section's switch, not a hook parameter
BOUNDS = (annotated_types.Ge, annotated_types.Gt, annotated_types.Le, annotated_types.Lt)


def hook_parameters(name: str) -> dict[str, inspect.Parameter]:
    cls = HOOKS[name]
    return {p: v for p, v in inspect.signature(cls.__init__).parameters.items() if p != "self"}


def bounds_of(name: str, param: str) -> tuple[type, list[Any]]:
    """The type and range constraints of a hook parameter, from its constructor annotation."""
    hint = typing.get_type_hints(HOOKS[name].__init__, include_extras=True)[param]
    if typing.get_origin(hint) is not typing.Annotated:
        return hint, []
    base, *extras = typing.get_args(hint)
    found: list[Any] = []
    for extra in extras:
        found.extend(
            m for m in (extra.metadata if isinstance(extra, FieldInfo) else [extra]) if isinstance(m, BOUNDS)
        )
    return base, found


def limit(bound: Any) -> Any:
    return next(getattr(bound, attr) for attr in ("ge", "gt", "le", "lt") if hasattr(bound, attr))


def outside_and_on(bound: Any, kind: type) -> tuple[Any, Any]:
    """A value just outside ``bound`` and one that it allows, of ``kind`` (int or float)."""
    step, inside = (1, 1) if kind is int else (0.5, 0.001)
    value = limit(bound)
    if isinstance(bound, annotated_types.Ge):
        return value - step, value
    if isinstance(bound, annotated_types.Gt):
        return value, value + inside
    if isinstance(bound, annotated_types.Le):
        return value + step, value
    return value, value - inside


# settings checked against each other: set with the value tried so that only its own range is judged
COMPANIONS = {
    ("decision_gate", "continue_above"): {"stop_below": 0.0},
    ("decision_gate", "stop_below"): {"continue_above": 1.0},
}


def job_settings(model: type[BaseModel], field: str, value: Any, **companions: Any) -> BaseModel:
    extra = {"data": "data.yaml"} if model is TrainJob else {}
    return model.model_validate({**extra, **companions, field: value})


RANGED = [
    (name, param, bound)
    for name, (_, fields) in SETTINGS.items()
    for param in fields
    for bound in bounds_of(name, param)[1]
]


def test_every_built_in_hook_and_setting_is_covered() -> None:
    built_in = {name for name, cls in HOOKS.items() if cls.__module__.startswith("xraydet.training.hooks.")}
    assert built_in == set(SETTINGS)
    for name, (model, fields) in SETTINGS.items():
        assert set(fields) == set(hook_parameters(name)) - NOT_JOB_SETTINGS.get(name, set()), name
        if model is not TrainJob:  # a section holds nothing but its switch and the hook's parameters
            assert set(model.model_fields) - SECTION_ONLY == set(fields.values()), name
    assert len(RANGED) >= 12  # the ranges are found (an annotation change that hid them would empty this)


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_the_job_and_the_hook_have_the_same_defaults(name: str) -> None:
    model, fields = SETTINGS[name]
    for param, field in fields.items():
        hook_default = hook_parameters(name)[param].default
        job_default = model.model_fields[field].get_default(call_default_factory=True)
        if (name, param) == ("decision_gate", "decision_epoch"):  # None: the hook's, halved for short runs
            assert job_default is None
            assert GateConfig().resolved_epoch(2 * hook_default) == hook_default
            assert GateConfig().resolved_epoch(10 * hook_default) == hook_default
        elif hook_default is inspect.Parameter.empty:  # the job leaves the hook off unless set
            assert job_default is None, (name, param)
        elif isinstance(hook_default, tuple):
            assert job_default == list(hook_default), (name, param)
        else:
            assert job_default == hook_default and type(job_default) is type(hook_default), (name, param)


@pytest.mark.parametrize(
    ("name", "param", "bound"), RANGED, ids=[f"{n}.{p}-{type(b).__name__}" for n, p, b in RANGED]
)
def test_the_job_and_the_hook_refuse_the_same_values(name: str, param: str, bound: Any) -> None:
    model, fields = SETTINGS[name]
    kind = bounds_of(name, param)[0]
    outside, on = outside_and_on(bound, kind)
    companions = COMPANIONS.get((name, param), {})

    with pytest.raises(ValidationError) as job_err:
        job_settings(model, fields[param], outside, **companions)
    job_msg = job_err.value.errors()[0]["msg"]
    assert str(limit(bound)) in job_msg  # names the bound
    with pytest.raises(ConfigError) as hook_err:
        build_hook(name, {**companions, param: outside})
    assert str(hook_err.value) == f"hook '{name}': parameter '{param}': {job_msg}"

    assert getattr(job_settings(model, fields[param], on, **companions), fields[param]) == on
    assert getattr(build_hook(name, {**companions, param: on}), param) == on
