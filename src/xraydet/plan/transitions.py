"""Where a plan goes after a step: typed conditions on the step's outcome, evaluated without ``eval()``.

A step's *outcome* is a nested dict of the numbers and words it produced (``status``, ``final.map50``,
``decision``, ``red_flags``...). A condition reads one value by dotted path and compares it with a constant or
with another step's value; ``all``/``any``/``not`` combine conditions. A transition is ``when`` (a condition,
or none for the default) plus ``goto`` (a step id, ``end`` or ``fail``). The first transition whose condition
holds wins; every value read is kept so the decision log can show the numbers behind each decision.

Example:
    >>> cond = Compare(metric="final.map50", op="<", value=0.40)
    >>> check = evaluate_condition(cond, {"final": {"map50": 0.31}}, {})
    >>> check.holds, check.reads
    (True, {'final.map50': 0.31})
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from xraydet.config import number_from_text

END = "end"
FAIL = "fail"
TERMINALS = (END, FAIL)

Op = Literal["<", "<=", ">", ">=", "==", "!=", "in", "not in", "exists", "missing"]

_ORDER_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


class _Missing:
    """The value of a path that the outcome does not have (shown as ``missing`` in logs)."""

    def __repr__(self) -> str:
        return "missing"


MISSING: Any = _Missing()


class Ref(BaseModel):
    """A value taken from a step's outcome, e.g. ``{step: phase1, metric: final.map50}``."""

    model_config = ConfigDict(extra="forbid")

    step: str | None = Field(None, description="step whose outcome is read; the current step when omitted")
    metric: str = Field(..., description="dotted path in that outcome, e.g. final.map50")


class Compare(BaseModel):
    """``metric <op> value``: compare one outcome value with a constant or with another step's value."""

    model_config = ConfigDict(extra="forbid")

    step: str | None = Field(None, description="step whose outcome is read; the current step when omitted")
    metric: str = Field(..., description="dotted path in the outcome, e.g. final.map50, status, decision")
    op: Op = ">="
    value: float | int | bool | str | list[float | int | bool | str] | Ref | None = None

    @model_validator(mode="after")
    def _value_fits_op(self) -> Compare:
        """Every op but exists/missing needs a value: a number (or Ref) to order; in: a list, or one value."""
        op, value = self.op, self.value
        if op in ("exists", "missing") or isinstance(value, Ref):
            return self
        if value is None:
            raise ValueError(f"op '{op}' needs a value to compare {self.metric} with")
        if op in _ORDER_OPS:
            if isinstance(value, str):  # YAML 1.1 reads 5e-2 as text; a number is meant
                self.value = value = number_from_text(value)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(
                    f"op '{op}' compares numbers: value must be a number or {{step, metric}}, got {value!r}"
                )
        elif op in ("in", "not in") and not isinstance(value, list):
            self.value = [value]  # `in: stopped` means `in: [stopped]`
        return self


class All(BaseModel):
    model_config = ConfigDict(extra="forbid")
    all: list[Condition] = Field(..., min_length=1)


class Any_(BaseModel):
    model_config = ConfigDict(extra="forbid")
    any: list[Condition] = Field(..., min_length=1)


class Not(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    not_: Condition = Field(..., alias="not")


def _condition_tag(value: Any) -> str | None:
    """Pick the condition type from its keys so a bad condition gets one clear error, not four."""
    if isinstance(value, BaseModel):
        return {Compare: "compare", All: "all", Any_: "any", Not: "not"}.get(type(value))
    if isinstance(value, Mapping):
        for key in ("all", "any", "not"):
            if key in value:
                return key
        return "compare"
    return None


Condition = Annotated[
    Union[  # noqa: UP007 (a forward-referenced recursive union)
        Annotated[Compare, Tag("compare")],
        Annotated[All, Tag("all")],
        Annotated[Any_, Tag("any")],
        Annotated[Not, Tag("not")],
    ],
    Discriminator(
        _condition_tag,
        custom_error_type="condition",
        custom_error_message="a condition is {metric, op, value} or {all: [...]}, {any: [...]}, {not: ...}",
    ),
]
All.model_rebuild()
Any_.model_rebuild()
Not.model_rebuild()


class Transition(BaseModel):
    """``goto`` when ``when`` holds (always, when ``when`` is omitted)."""

    model_config = ConfigDict(extra="forbid")

    when: Condition | None = None
    goto: str = Field(..., description="id of the step to run next, or 'end' / 'fail'")
    note: str = Field("", description="why, in words, for the decision log")


class ConditionCheck(BaseModel):
    """The result of one condition: whether it holds, its text and every value it read."""

    holds: bool
    text: str
    reads: dict[str, Any] = Field(default_factory=dict)


class TransitionDecision(BaseModel):
    """Which rule fired (index into the step's transitions, None: fell through) and where the plan went."""

    goto: str
    rule: int | None
    rule_text: str
    note: str = ""
    checked: list[ConditionCheck] = Field(default_factory=list)

    @property
    def reads(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for check in self.checked:
            merged.update(check.reads)
        return merged


def lookup(outcome: Mapping[str, Any], path: str) -> Any:
    """The value at dotted ``path`` in a nested mapping (list items by index), or :data:`MISSING`.

    Example:
        >>> lookup({"final": {"map50": 0.5}}, "final.map50"), lookup({}, "final.map50")
        (0.5, missing)
    """
    node: Any = outcome
    for part in path.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node):
            node = node[int(part)]
        else:
            return MISSING
    return node


def condition_text(cond: Condition) -> str:
    """A one-line human reading of a condition, e.g. ``final.map50 < 0.4``."""
    if isinstance(cond, Compare):
        subject = cond.metric if cond.step is None else f"{cond.step}.{cond.metric}"
        if cond.op in ("exists", "missing"):
            return f"{subject} {cond.op}"
        value = cond.value
        if isinstance(value, Ref):
            shown = f"{value.step}.{value.metric}" if value.step else value.metric
        else:
            shown = repr(value) if isinstance(value, str) else str(value)
        return f"{subject} {cond.op} {shown}"
    if isinstance(cond, All):
        return "(" + " and ".join(condition_text(c) for c in cond.all) + ")"
    if isinstance(cond, Any_):
        return "(" + " or ".join(condition_text(c) for c in cond.any) + ")"
    return f"not {condition_text(cond.not_)}"


def _compare(op: str, left: Any, right: Any) -> bool:
    if op == "exists":
        return left is not MISSING and left is not None
    if op == "missing":
        return left is MISSING or left is None
    if left is MISSING or left is None or right is MISSING:
        return False  # an absent number satisfies no comparison; a default transition catches it
    if isinstance(left, float) and math.isnan(left):
        return False
    if op in ("in", "not in"):
        members = right if isinstance(right, list) else [right]
        return (left in members) == (op == "in")
    if op == "==":
        return bool(left == right)
    if op == "!=":
        return bool(left != right)
    try:
        return bool(_ORDER_OPS[op](left, right))
    except TypeError:
        return False


def evaluate_condition(
    cond: Condition, outcome: Mapping[str, Any], others: Mapping[str, Mapping[str, Any]]
) -> ConditionCheck:
    """Evaluate ``cond`` on the current step's ``outcome`` (``others``: outcomes of earlier steps by id)."""

    def read(step: str | None, metric: str, reads: dict[str, Any]) -> Any:
        source = outcome if step is None else others.get(step, {})
        value = lookup(source, metric)
        reads[metric if step is None else f"{step}.{metric}"] = value
        return value

    reads: dict[str, Any] = {}
    if isinstance(cond, Compare):
        left = read(cond.step, cond.metric, reads)
        right = read(cond.value.step, cond.value.metric, reads) if isinstance(cond.value, Ref) else cond.value
        holds = _compare(cond.op, left, right)
        return ConditionCheck(holds=holds, text=condition_text(cond), reads=_jsonable(reads))
    if isinstance(cond, Not):
        inner = evaluate_condition(cond.not_, outcome, others)
        return ConditionCheck(holds=not inner.holds, text=condition_text(cond), reads=inner.reads)
    parts = cond.all if isinstance(cond, All) else cond.any
    checks = [evaluate_condition(c, outcome, others) for c in parts]
    for check in checks:
        reads.update(check.reads)
    holds = all(c.holds for c in checks) if isinstance(cond, All) else any(c.holds for c in checks)
    return ConditionCheck(holds=holds, text=condition_text(cond), reads=reads)


def decide(
    transitions: list[Transition],
    outcome: Mapping[str, Any],
    others: Mapping[str, Mapping[str, Any]],
    fallthrough: str,
) -> TransitionDecision:
    """Pick the first transition whose condition holds; ``fallthrough`` when none does.

    Example:
        >>> rules = [Transition(when=Compare(metric="status", op="==", value="stopped"), goto="phase2"),
        ...          Transition(goto="evaluate")]
        >>> decide(rules, {"status": "stopped"}, {}, "end").goto
        'phase2'
    """
    checked: list[ConditionCheck] = []
    for index, rule in enumerate(transitions):
        if rule.when is None:
            return TransitionDecision(
                goto=rule.goto, rule=index, rule_text="otherwise", note=rule.note, checked=checked
            )
        check = evaluate_condition(rule.when, outcome, others)
        checked.append(check)
        if check.holds:
            return TransitionDecision(
                goto=rule.goto, rule=index, rule_text=check.text, note=rule.note, checked=checked
            )
    text = "no rule matched: next step in order" if transitions else "next step in order"
    return TransitionDecision(goto=fallthrough, rule=None, rule_text=text, checked=checked)


def referenced_steps(cond: Condition | None) -> set[str]:
    """Step ids a condition reads from other steps (for validation)."""
    if cond is None:
        return set()
    if isinstance(cond, Compare):
        found = {cond.step} if cond.step else set()
        if isinstance(cond.value, Ref) and cond.value.step:
            found.add(cond.value.step)
        return found
    if isinstance(cond, Not):
        return referenced_steps(cond.not_)
    parts = cond.all if isinstance(cond, All) else cond.any
    return set().union(*(referenced_steps(c) for c in parts))


def logged(value: Any) -> Any:
    """A looked-up value as the logs keep it: :data:`MISSING` becomes ``"missing"`` (it is not JSON).

    Example:
        >>> logged(lookup({}, "best.map50")), logged(0.5)
        ('missing', 0.5)
    """
    return "missing" if value is MISSING else value


def _jsonable(reads: dict[str, Any]) -> dict[str, Any]:
    return {k: logged(v) for k, v in reads.items()}
