"""Hooks: small objects that watch a training run and may ask it to stop (detectron2's HookBase, for YOLO).

Order of calls for one run (the Ultralytics bridge feeds them from its callbacks)::

    before_train(ctx)
    for each epoch:  before_epoch(ctx) -> after_batch(ctx)* -> [needs_validation(ctx)] -> after_save(ctx)
                     -> after_fit_epoch(ctx, record)
    after_train(ctx)              # always, also when training raised (called from a ``finally``)

``needs_validation`` is asked only when the job validates every N > 1 epochs: a hook that judges an epoch's
metrics (the decision gate) says yes for that epoch. Records of epochs that were not validated carry no metric
or ``val_*`` keys (:func:`xraydet.training.history.is_validated`).

``after_batch`` and ``after_fit_epoch`` return verdicts (or None). A verdict whose decision is ``"stop"`` ends
the run: at the end of the current epoch (graceful: validation, checkpoint and final evaluation still happen),
or at once when ``immediate`` is set (e.g. a NaN loss: nothing after it is worth saving). Every hook can
``state_dict()``/``load_state_dict()`` so that a resumed run continues with the same memory.
"""

from __future__ import annotations

import inspect
import logging
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from xraydet.errors import ConfigError

log = logging.getLogger(__name__)

Decision = Literal["continue", "warn", "stop"]


class Verdict(BaseModel):
    """One hook's judgement at one epoch, with the numbers that led to it."""

    hook: str
    epoch: int
    decision: Decision
    reason: str
    values: dict[str, Any] = Field(default_factory=dict)
    immediate: bool = False
    status: str | None = None  # run status a "stop" leads to: "stopped" unless set ("timed_out" for timeout)

    @property
    def judged(self) -> bool:
        """False for a hook's note that it never judged (a decision gate whose run ended before its epoch):
        not a decision, though it is on record."""
        return self.values.get("judged") is not False


@dataclass
class TrainContext:
    """What hooks may read about the run. Filled by the bridge; hooks never see the Ultralytics trainer."""

    run_dir: Path
    epochs: int
    epoch: int = 0  # 1-based epoch in progress (or just finished in after_fit_epoch)
    start_epoch: int = 0  # epochs already done when this training process started
    batch_index: int = -1
    loss: float | None = None  # the latest batch's total loss
    batch_size: int | None = None  # in use (Ultralytics halves it on running out of memory in epoch 1)
    history: list[dict[str, Any]] = field(default_factory=list)
    elapsed_s: float = 0.0  # since this process's first before_train (CUDA OOM retries keep counting)
    attempt: int = 1
    replay: bool = False  # True while a resumed run re-feeds epochs its hooks missed

    @property
    def weights_dir(self) -> Path:
        return self.run_dir / "weights"


class HookBase:
    """No-op base; override what you need. ``name`` is the registry key and the verdicts' ``hook`` field."""

    name: ClassVar[str] = "hook"

    def before_train(self, ctx: TrainContext) -> None:
        """Called once per training process (also after a resume or an OOM retry)."""

    def before_epoch(self, ctx: TrainContext) -> None:
        """Called at the start of each epoch."""

    def after_batch(self, ctx: TrainContext) -> list[Verdict] | Verdict | None:
        """Called after each training batch; keep it cheap."""
        return None

    def needs_validation(self, ctx: TrainContext) -> bool:
        """Whether this hook must see a validated record for ``ctx.epoch`` (asked when ``val_every`` > 1)."""
        return False

    def needs_checkpoint(self, ctx: TrainContext) -> bool:
        """Whether ``last.pt`` must be written for ``ctx.epoch`` (asked when ``save_every`` > 1)."""
        return False

    def after_save(self, ctx: TrainContext) -> None:
        """Called after Ultralytics wrote ``weights/last.pt`` (and maybe ``best.pt``) for ``ctx.epoch``."""

    def after_fit_epoch(self, ctx: TrainContext, record: dict[str, Any]) -> list[Verdict] | Verdict | None:
        """Called after validation and checkpointing of each epoch with its metric record."""
        return None

    def after_train(self, ctx: TrainContext) -> None:
        """Always called last, even when training raised."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


def as_verdicts(result: list[Verdict] | Verdict | None) -> list[Verdict]:
    if result is None:
        return []
    return [result] if isinstance(result, Verdict) else list(result)


# --- registry ---

HOOKS: dict[str, type[HookBase]] = {}


def register_hook(cls: type[HookBase]) -> type[HookBase]:
    """Class decorator: make a hook nameable from a job file (``hooks: [{name: ..., params: {...}}]``)."""
    if cls.name in HOOKS and HOOKS[cls.name] is not cls:
        raise ValueError(f"a hook named '{cls.name}' is already registered ({HOOKS[cls.name].__qualname__})")
    HOOKS[cls.name] = cls
    return cls


def build_hook(name: str, params: dict[str, Any] | None = None) -> HookBase:
    """Instantiate a registered hook; unknown names and parameters raise listing the valid ones, and values
    that do not fit the constructor's type annotations raise naming the parameter."""
    if name not in HOOKS:
        raise ConfigError(f"unknown hook '{name}'; registered hooks: {', '.join(sorted(HOOKS)) or 'none'}")
    cls = HOOKS[name]
    params = dict(params or {})
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = [k for k in params if k not in accepted]
    if unknown:
        raise ConfigError(f"hook '{name}': unknown parameter(s) {unknown}; accepted: {', '.join(accepted)}")
    return cls(**_typed_params(cls, name, params))


def _typed_params(cls: type[HookBase], name: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` checked (and converted, e.g. 3 -> 3.0) against the annotations of ``cls.__init__``."""
    try:
        hints = typing.get_type_hints(cls.__init__, include_extras=True)  # keep Annotated validators
    except Exception:  # an annotation that cannot be resolved: leave the values to the constructor
        return params
    fields: dict[str, Any] = {}
    for param in inspect.signature(cls.__init__).parameters.values():
        if param.name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (hints.get(param.name, Any), default)
    # Strict: a job file's `true` is not a timeout of 1 s, nor "20" a number (YAML gives numbers as numbers).
    model = create_model(
        f"{cls.__name__}Params", __config__=ConfigDict(arbitrary_types_allowed=True, strict=True), **fields
    )
    try:
        checked = model.model_validate(params)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"hook '{name}': parameter '{where}': {first['msg']}") from err
    return {key: getattr(checked, key, value) for key, value in params.items()}


class HookList:
    """Runs hooks in order; collects verdicts; duplicate names are refused (state is keyed by name)."""

    def __init__(self, hooks: Iterable[HookBase]) -> None:
        self.hooks = list(hooks)
        self.interrupted: list[Verdict] = []  # see call()
        names = [h.name for h in self.hooks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"hook name(s) used twice: {dupes}")

    def need_validation(self, ctx: TrainContext) -> bool:
        return any(hook.needs_validation(ctx) for hook in self.hooks)

    def need_checkpoint(self, ctx: TrainContext) -> bool:
        return any(hook.needs_checkpoint(ctx) for hook in self.hooks)

    def call(self, method: str, ctx: TrainContext, *args: Any) -> list[Verdict]:
        """Call ``method`` of every hook in order; their verdicts. When a hook raises, the verdicts the hooks
        before it gave are kept in :attr:`interrupted` (the caller never gets them otherwise)."""
        verdicts: list[Verdict] = []
        self.interrupted = verdicts
        for hook in self.hooks:
            fn: Callable[..., Any] = getattr(hook, method)
            verdicts.extend(as_verdicts(fn(ctx, *args)))
        return verdicts

    def after_train(self, ctx: TrainContext) -> None:
        """Call every hook's ``after_train``, even if one of them raises (the first error is re-raised)."""
        first: BaseException | None = None
        for hook in self.hooks:
            try:
                hook.after_train(ctx)
            except Exception as err:
                log.exception("hook %s failed in after_train", hook.name)
                first = first or err
        if first is not None:
            raise first

    def state_dict(self) -> dict[str, Any]:
        return {h.name: h.state_dict() for h in self.hooks}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for hook in self.hooks:
            if hook.name in state:
                hook.load_state_dict(state[hook.name])
