"""The plan file: a typed, validated description of data steps, phases, evaluation, gate and deployment.

A plan is YAML. Its sections compile into one ordered list of steps (data steps, then each phase's
``prepare`` steps and its training, then evaluation, gate and deploy); every step has a ``kind`` looked up in
:mod:`xraydet.plan.steps`, parameters validated by that kind, and ``transitions`` saying where to go next.
Without a matching transition a step goes on to the next one in order. ``goto`` only jumps forward, so a plan
always ends. Every error names the key path (``phases[1].job.epochs``) and, for kinds, lists the valid ones.

Example:
    >>> plan = load_plan("src/xraydet/plans/cpu-demo.yaml")  # doctest: +SKIP
    >>> [s.id for s in plan.steps()][:3]  # doctest: +SKIP
    ['synth-original', 'synth-extra', 'check-original']
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from xraydet.config import NotBool, load_yaml, set_key_path
from xraydet.errors import ConfigError
from xraydet.io import TextDecodeError, decode_text
from xraydet.plan.transitions import TERMINALS, Transition, referenced_steps

ID_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]*$"
# Keys every step accepts; everything else is a parameter of its kind.
COMMON_KEYS = ("id", "kind", "title", "transitions")


class PlanError(ConfigError):
    """A plan that does not validate (or cannot run); lists every problem with its key path."""

    def __init__(self, problems: Sequence[str], source: Path | str | None = None) -> None:
        self.problems = list(problems)
        where = f"{source}: " if source else ""
        if len(self.problems) == 1:
            super().__init__(f"{where}{self.problems[0]}")
        else:
            super().__init__(f"{where}{len(self.problems)} problems:\n  - " + "\n  - ".join(self.problems))


class CostConfig(BaseModel):
    """How wall time becomes money: GPU-hours of the billed step kinds times a price."""

    model_config = ConfigDict(extra="forbid")

    price_per_gpu_hour: Annotated[float, NotBool] = Field(
        default=0.5, ge=0, description="price of one accelerator hour"
    )
    currency: str = "USD"
    gpus: Annotated[int, NotBool] = Field(
        default=1, ge=0, description="accelerators held while a billed step runs"
    )
    billed_kinds: list[str] = Field(default_factory=lambda: ["train"], description="step kinds that use them")


class StepSpec(BaseModel):
    """A data step (or a phase's ``prepare`` step): ``id``, ``kind`` and the kind's own keys."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(..., pattern=ID_PATTERN)
    kind: str
    title: str = ""
    transitions: list[Transition] = Field(default_factory=list)

    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Phase(BaseModel):
    """One training phase: optional preparation steps, a training job (helper C's TrainJob) and transitions.

    ``job`` holds TrainJob keys inline (``data: "@merged"`` names a data set or a data step's output);
    ``job_file`` points to a job YAML instead (inline keys then override it).
    """

    model_config = ConfigDict(extra="forbid")

    id: str = Field(..., pattern=ID_PATTERN)
    title: str = ""
    prepare: list[StepSpec] = Field(default_factory=list)
    job: dict[str, Any] = Field(default_factory=dict)
    job_file: str | None = None
    transitions: list[Transition] = Field(default_factory=list)


class SectionSpec(BaseModel):
    """evaluation / gate / deploy sections: fixed kind, the kind's keys, transitions."""

    model_config = ConfigDict(extra="allow")

    id: str | None = Field(None, pattern=ID_PATTERN)
    title: str = ""
    transitions: list[Transition] = Field(default_factory=list)

    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Plan(BaseModel):
    """A whole plan. Build one with :func:`load_plan` or :func:`parse_plan`; run it with ``run_plan``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., pattern=ID_PATTERN)
    description: str = ""
    cost: CostConfig = Field(default_factory=lambda: CostConfig())
    datasets: dict[str, str] = Field(default_factory=dict, description="named input data sets (paths)")
    data: list[StepSpec] = Field(default_factory=list)
    phases: list[Phase] = Field(default_factory=list)
    evaluation: SectionSpec | None = None
    gate: SectionSpec | None = None
    deploy: SectionSpec | None = None
    _base_dir: Path | None = PrivateAttr(default=None)

    @property
    def base_dir(self) -> Path | None:
        """The folder relative input paths resolve against when checking steps (None: the current folder)."""
        return self._base_dir

    def with_base_dir(self, base_dir: str | Path | None) -> Plan:
        """A copy of this plan whose steps are checked with relative paths resolved against ``base_dir``."""
        plan = self.model_copy()
        plan._base_dir = None if base_dir is None else Path(base_dir).resolve()
        return plan

    def steps(self) -> list[PlannedStep]:
        """The plan as an ordered list of steps with validated parameters (raises :class:`PlanError`)."""
        return compile_plan(self)

    def fingerprint(self) -> str:
        """A short hash of the plan's content (a state dir belongs to one plan)."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class PlannedStep:
    """One executable step: where it sits in the file, its kind, validated params and transitions."""

    id: str
    kind: str
    params: BaseModel
    transitions: list[Transition]
    where: str
    title: str = ""
    phase: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)


SECTION_KINDS = {"evaluation": "evaluate", "gate": "gate", "deploy": "deploy"}


class Entry(NamedTuple):
    """A step as :func:`compile_plan` collects it, before its params are validated against its kind."""

    id: str
    kind: str
    params: dict[str, Any]
    transitions: list[Transition]
    where: str
    title: str
    phase: str | None


def compile_plan(plan: Plan) -> list[PlannedStep]:
    """Turn the plan's sections into ordered steps; collect every problem before raising."""
    from xraydet.plan.steps import get_step_kind, step_kind_names

    problems: list[str] = []
    entries: list[Entry] = []
    for i, spec in enumerate(plan.data):
        entries.append(
            Entry(spec.id, spec.kind, spec.params(), spec.transitions, f"data[{i}]", spec.title, None)
        )
    for p, phase in enumerate(plan.phases):
        for i, spec in enumerate(phase.prepare):
            where = f"phases[{p}].prepare[{i}]"
            entries.append(
                Entry(spec.id, spec.kind, spec.params(), spec.transitions, where, spec.title, phase.id)
            )
        params = {"job": phase.job, "job_file": phase.job_file}
        entries.append(
            Entry(phase.id, "train", params, phase.transitions, f"phases[{p}]", phase.title, phase.id)
        )
    for section, kind in SECTION_KINDS.items():
        spec = getattr(plan, section)
        if spec is not None:
            entries.append(
                Entry(spec.id or kind, kind, spec.params(), spec.transitions, section, spec.title, None)
            )

    steps: list[PlannedStep] = []
    seen: dict[str, str] = {}
    for step_id, kind, params, transitions, where, title, phase_id in entries:
        if step_id in seen:
            problems.append(f"{where}.id: '{step_id}' is already used by {seen[step_id]}")
        if step_id in plan.datasets:
            problems.append(f"{where}.id: '{step_id}' is also a name in datasets; use another id")
        if step_id in TERMINALS:
            problems.append(f"{where}.id: '{step_id}' is reserved (goto targets 'end' and 'fail')")
        seen[step_id] = where
        valid = step_kind_names()
        if kind not in valid:
            problems.append(f"{where}.kind: unknown step kind '{kind}' (valid kinds: {', '.join(valid)})")
            continue
        step_kind = get_step_kind(kind)
        try:
            model = step_kind.params.model_validate(params)
        except ValidationError as err:
            problems.extend(format_validation_error(err, where))
            continue
        problems.extend(f"{where}.{msg}" for msg in step_kind.check(model, plan))
        steps.append(PlannedStep(step_id, kind, model, transitions, where, title, phase_id, params))
    if not plan.phases and not plan.data:
        problems.append("phases: a plan needs at least one phase or data step")
    problems.extend(_check_transitions(entries))
    problems.extend(_check_reference_order(entries))
    if problems:
        raise PlanError(problems)
    return steps


def _check_transitions(entries: list[Entry]) -> list[str]:
    order = {entry.id: i for i, entry in enumerate(entries)}
    problems = []
    for i, entry in enumerate(entries):
        transitions, where = entry.transitions, entry.where
        for t, rule in enumerate(transitions):
            key = f"{where}.transitions[{t}]"
            if rule.goto not in order and rule.goto not in TERMINALS:
                problems.append(f"{key}.goto: no step '{rule.goto}' (steps: {', '.join(order)}, end, fail)")
            elif rule.goto in order and order[rule.goto] <= i:
                problems.append(
                    f"{key}.goto: '{rule.goto}' is not after this step; transitions only jump forward"
                )
            for ref in referenced_steps(rule.when):
                if ref not in order:
                    problems.append(f"{key}.when: reads step '{ref}', which the plan does not have")
                elif order[ref] > i:  # never run yet when this rule is checked: it would read nothing
                    problems.append(
                        f"{key}.when: reads step '{ref}', which comes after this step (it has not run yet)"
                    )
            if rule.when is None and t != len(transitions) - 1:
                problems.append(f"{key}: a rule without 'when' must be the last one (later rules never fire)")
    return problems


def _check_reference_order(entries: list[Entry]) -> list[str]:
    """``@step`` must name a step before this one: steps run in order, so a later one has made nothing yet."""
    order = {entry.id: i for i, entry in enumerate(entries)}
    problems = []
    for i, entry in enumerate(entries):
        for key, ref in _references(entry.params):
            name = ref[1:]
            if order.get(name, -1) >= i:
                what = "this step itself" if name == entry.id else f"step '{name}', which comes after it"
                problems.append(
                    f"{entry.where}.{key}: '{ref}' names {what}; a step uses what earlier steps made"
                )
    return problems


def _references(value: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """Every ``@name`` text in a step's parameters, with its key path (``job.data``, ``sources[1]``)."""
    if isinstance(value, str) and value.startswith("@"):
        yield key, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _references(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, list):
        for j, v in enumerate(value):
            yield from _references(v, f"{key}[{j}]")


def format_validation_error(err: ValidationError, prefix: str = "") -> list[str]:
    """Pydantic errors as ``key.path: message`` lines (union tags dropped, list items as ``[i]``)."""
    lines = []
    for e in err.errors():
        path = prefix
        loc = list(e["loc"])
        for k, part in enumerate(loc):
            if part == "compare" or (
                part in ("all", "any", "not") and k + 1 < len(loc) and loc[k + 1] == part
            ):
                continue  # union tags, not keys the user wrote
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        message = e["msg"]
        if e["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; see docs/plan.md for the valid keys)"
        lines.append(f"{path or 'plan'}: {message}")
    return lines


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides (values parsed as YAML) to a copy of a raw plan mapping.

    Paths follow :func:`xraydet.config.set_key_path`: list items are picked by their ``id`` or by index, so
    ``phases.phase1.job.epochs=3`` and ``phases[0].job.epochs=3`` both work.

    Example:
        >>> apply_overrides({"phases": [{"id": "p1", "job": {"epochs": 9}}]}, ["phases.p1.job.epochs=3"])
        {'phases': [{'id': 'p1', 'job': {'epochs': 3}}]}
    """
    data = copy.deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise PlanError([f"--set {item!r}: expected key.path=value"])
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:  # e.g. "@merged" (YAML reserves "@"): take the text as it is
            value = text
        try:
            data = set_key_path(data, key, value)
        except ConfigError as err:
            raise PlanError([str(err)]) from err
    return data


def parse_plan(
    raw: Any,
    source: Path | str | None = None,
    overrides: Sequence[str] = (),
    base_dir: str | Path | None = None,
) -> Plan:
    """Validate a raw mapping (e.g. parsed YAML) into a :class:`Plan` and compile its steps.

    ``base_dir``: the folder relative input paths (a job's ``preset``, ``model``) resolve against; the current
    folder when None, as for ``plan run``.
    """
    if not isinstance(raw, dict):
        raise PlanError(["expected a mapping with name, data, phases, evaluation, gate, deploy"], source)
    raw = apply_overrides(raw, overrides) if overrides else raw
    try:
        plan = Plan.model_validate(raw).with_base_dir(base_dir)
    except ValidationError as err:
        raise PlanError(format_validation_error(err), source) from err
    try:
        plan.steps()
    except PlanError as err:
        raise PlanError(err.problems, source) from err
    return plan


def load_plan(path: str | Path, overrides: Sequence[str] = (), base_dir: str | Path | None = None) -> Plan:
    """Read and validate a plan file; ``overrides`` are ``key.path=value`` strings (``--set``).

    A bare name (``cpu-demo``) finds a plan shipped with xraydet (see :func:`bundled_plans`).
    """
    path = Path(path)
    if not path.exists() and path.suffix == "" and path.name in bundled_plans():
        path = bundled_plans()[path.name]
    if not path.is_file():
        shipped = ", ".join(bundled_plans())
        raise PlanError([f"no such plan file (plans shipped with xraydet: {shipped})"], path)
    try:
        raw = load_yaml(decode_text(path.read_bytes(), path))
    except TextDecodeError as err:  # worded as read_utf8_text's ConfigError, plus the line
        raise PlanError([f"not UTF-8 text (byte {err.offset}) at line {err.line}"], path) from err
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise PlanError([f"not valid YAML{line}: {getattr(err, 'problem', err)}"], path) from err
    return parse_plan(raw, path, overrides, base_dir)


def bundled_plans() -> dict[str, Path]:
    """Plans shipped inside the package (``xraydet/plans/*.yaml``) by name."""
    folder = Path(__file__).resolve().parents[1] / "plans"
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def compile_ids(plan: Plan) -> set[str]:
    """Every step id the plan defines (without validating the steps)."""
    ids = {s.id for s in plan.data}
    for phase in plan.phases:
        ids |= {s.id for s in phase.prepare} | {phase.id}
    for section, kind in SECTION_KINDS.items():
        spec = getattr(plan, section)
        if spec is not None:
            ids.add(spec.id or kind)
    return ids
