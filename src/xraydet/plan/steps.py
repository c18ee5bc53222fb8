"""The registry of step kinds: the name a plan file writes (``kind: merge``) -> params model + executor.

An executor is a plain function ``(ctx, params) -> StepResult``. It calls the other packages (data, training,
evaluation, registry, serving) and reports three things: ``outputs`` (values later steps use: paths, ids),
``files`` (the outputs whose fingerprints decide whether a finished step can be skipped on resume) and
``outcome`` (the numbers and words transitions read). New kinds register with :func:`register_step_kind`;
tests register their own the same way.

Example:
    >>> from pydantic import BaseModel
    >>> class Echo(BaseModel):
    ...     text: str
    >>> @register_step_kind("echo-doc", Echo, "says something")
    ... def echo(ctx, params):
    ...     return StepResult(outcome={"said": params.text})
    >>> get_step_kind("echo-doc").description
    'says something'
    >>> unregister_step_kind("echo-doc")
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from xraydet.errors import XrayDetError

if TYPE_CHECKING:
    from xraydet.plan.schema import Plan, PlannedStep
    from xraydet.plan.state import PlanState, StepRecord

log = logging.getLogger(__name__)

# Modules holding the built-in kinds; imported on first lookup so `import xraydet.plan` stays light.
BUILTIN_MODULES = ("xraydet.plan.data_steps", "xraydet.plan.train_step", "xraydet.plan.release_steps")


class StepFailed(XrayDetError):
    """A step could not do its job (bad data set, failed gate input...): the plan stops, resume retries it."""


def resolve_against(base_dir: Path, value: str | Path) -> Path:
    """An input path of the plan: ``~`` expanded, a relative one taken from ``base_dir``.

    Example:
        >>> str(resolve_against(Path("/plans"), "jobs/a.yaml"))
        '/plans/jobs/a.yaml'
    """
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base_dir / path).resolve()


@dataclass
class StepResult:
    """What a step produced.

    Attributes:
        outputs: values later steps read (paths as strings, versions, ids); kept in the state.
        files: output paths to fingerprint; the step is skipped on resume only while they are intact.
        outcome: nested numbers/words that transitions and the decision log read (``final.map50``...).
        decisions: decisions taken inside the step (a hook's verdict, a promotion), each a dict with at least
            ``what`` and ``decision`` and the ``values`` it read.
        details: anything else the report wants (curves, tables).
    """

    outputs: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    outcome: dict[str, Any] = field(default_factory=dict)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


Executor = Callable[["StepContext", Any], StepResult]
Checker = Callable[[Any, "Plan"], list[str]]


@dataclass
class StepKind:
    """A registered kind: its name, parameter model, executor and an optional plan-level check."""

    name: str
    params: type[BaseModel]
    run: Executor
    description: str = ""
    checker: Checker | None = None

    def check(self, params: BaseModel, plan: Plan) -> list[str]:
        """Problems beyond the params model (e.g. a reference to a step that does not exist)."""
        return self.checker(params, plan) if self.checker else []


_REGISTRY: dict[str, StepKind] = {}
_builtins_loaded = False


def register_step_kind(
    name: str, params: type[BaseModel], description: str = "", check: Checker | None = None
) -> Callable[[Executor], Executor]:
    """Decorator registering an executor under ``name`` (an existing name is an error)."""

    def decorate(fn: Executor) -> Executor:
        if name in _REGISTRY and _REGISTRY[name].run is not fn:
            raise ValueError(f"step kind '{name}' is already registered")
        _REGISTRY[name] = StepKind(
            name, params, fn, description or (fn.__doc__ or "").strip().split("\n")[0], check
        )
        return fn

    return decorate


def unregister_step_kind(name: str) -> None:
    _REGISTRY.pop(name, None)


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        for module in BUILTIN_MODULES:
            importlib.import_module(module)


def step_kind_names() -> list[str]:
    """Every registered kind, sorted."""
    _load_builtins()
    return sorted(_REGISTRY)


def get_step_kind(name: str) -> StepKind:
    """The kind called ``name``; an unknown name raises listing the valid ones."""
    _load_builtins()
    if name not in _REGISTRY:
        from xraydet.plan.schema import PlanError

        raise PlanError([f"unknown step kind '{name}' (valid kinds: {', '.join(sorted(_REGISTRY))})"])
    return _REGISTRY[name]


@dataclass
class StepContext:
    """What an executor may use: the plan, the state, folders and reference resolution.

    Relative input paths resolve against ``base_dir`` (the folder ``plan run`` was started in); relative
    output paths against ``state_dir``. ``@name`` names an entry of the plan's ``datasets`` or a data step
    whose ``data_yaml`` output it means.
    """

    step: PlannedStep
    plan: Plan
    state: PlanState
    state_dir: Path
    base_dir: Path
    previous: StepRecord | None
    save_progress: Callable[[dict[str, Any]], None]
    trail: list[str]

    @property
    def work_dir(self) -> Path:
        return self.state_dir / "steps" / self.step.id

    def resolve_path(self, value: str | Path) -> Path:
        return resolve_against(self.base_dir, value)

    def output_path(self, value: str | Path | None, default: str) -> Path:
        if value is None:
            return self.work_dir / default
        path = Path(value).expanduser()
        return path if path.is_absolute() else (self.state_dir / path).resolve()

    def resolve_data(self, ref: str) -> Path:
        """A data set reference: ``@name`` (datasets entry or a step's ``data_yaml``) or a path."""
        if not ref.startswith("@"):
            return self.resolve_path(ref)
        name = ref[1:]
        if name in self.plan.datasets:
            return self.resolve_path(self.plan.datasets[name])
        record = self.record_on_this_walk(name)
        if record is None:
            raise StepFailed(
                f"{self.step.where}: '{ref}' refers to step '{name}', which has not run yet on this path "
                "of the plan"
            )
        produced = record.outputs.get("data_yaml") or record.outputs.get("dataset")
        if not produced:
            raise StepFailed(f"{self.step.where}: step '{name}' produced no data set to use as '{ref}'")
        return Path(produced)

    def outcome(self, step_id: str) -> dict[str, Any]:
        record = self.record_on_this_walk(step_id)
        return record.outcome if record else {}

    def record_on_this_walk(self, step_id: str) -> StepRecord | None:
        """``step_id``'s record if it finished on the current walk, before this step, else None
        (:meth:`PlanState.done_on_walk`)."""
        return self.state.done_on_walk(step_id, self.trail)

    def done_on_this_walk(self, kind: str) -> list[StepRecord]:
        """Finished records of ``kind`` reached on the current path through the plan, in order."""
        records = [self.state.records[s] for s in self.trail if s in self.state.records]
        return [r for r in records if r.kind == kind and r.status == "done"]


def reference_problems(refs: list[str | None], plan: Plan, key: str) -> list[str]:
    """Checks that ``@name`` references name a data set or a step of the plan."""
    from xraydet.plan.schema import compile_ids

    known = set(plan.datasets) | compile_ids(plan)
    problems = []
    for ref in refs:
        if ref and ref.startswith("@") and ref[1:] not in known:
            problems.append(f"{key}: '{ref}' names no data set or step (known: {', '.join(sorted(known))})")
    return problems
