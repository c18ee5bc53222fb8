"""Run a plan: walk its steps from the first, skip the finished ones whose outputs are intact, execute the
rest, follow transitions, and keep ``state.json``, the decision log and the report up to date.

The walk always starts at the first step and replays recorded outcomes through the transitions, so a resume
after an interruption at any point (Ctrl-C, a crash, ``kill -9`` mid-training) takes the same path and picks
up at the first unfinished step. A step re-run because its outputs changed makes every later step on the path
re-run too (their inputs may have changed). An interrupted training step resumes its run from ``last.pt``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from xraydet.io import TextDecodeError, atomic_write_yaml, decode_text
from xraydet.plan.schema import Plan, PlanError, PlannedStep, parse_plan
from xraydet.plan.state import (
    PLAN_SNAPSHOT,
    STATE_FILE,
    PlanState,
    Session,
    StepRecord,
    fingerprint_files,
    load_state,
    now,
    outputs_intact,
)
from xraydet.plan.steps import StepContext, get_step_kind
from xraydet.plan.transitions import END, TERMINALS, decide

log = logging.getLogger(__name__)

EventKind = Literal["start", "skip", "done", "failed", "interrupted", "goto", "finish", "note"]


@dataclass
class PlanEvent:
    """Something the runner did, for progress lines (the CLI prints these)."""

    kind: EventKind
    step: str | None
    message: str
    record: StepRecord | None = None


Listener = Callable[[PlanEvent], None]


def run_plan(
    plan: Plan,
    state_dir: str | Path,
    *,
    plan_file: str | Path | None = None,
    base_dir: str | Path | None = None,
    overrides: list[str] | None = None,
    on_event: Listener | None = None,
) -> PlanState:
    """Execute ``plan`` with its state in ``state_dir``; returns the final state.

    Running again on a state dir of the same plan continues it (like :func:`resume_plan`); a state dir of a
    different plan is refused. Relative input paths resolve against ``base_dir`` (default: the current
    folder), which is recorded so a later resume resolves them the same way.

    Raises:
        PlanError: the plan is invalid, the state dir belongs to another plan, or a step failed.
        KeyboardInterrupt: passed on after the interrupted step is recorded.
    """
    state_dir = Path(state_dir).resolve()
    if (state_dir / STATE_FILE).is_file():
        state = load_state(state_dir)
        plan = _with_files_inlined(plan.with_base_dir(state.base_dir))
        if state.plan_fingerprint != plan.fingerprint():
            raise PlanError(
                [
                    f"this state dir holds another plan ('{state.plan_name}', or the same plan changed, "
                    "its job or policy files included); use `xraydet plan resume` to go on with it as it "
                    "started, or a new --state-dir"
                ],
                state_dir,
            )
        steps = plan.steps()
    else:
        resolved_base = str(Path(base_dir or Path.cwd()).resolve())
        plan = _with_files_inlined(plan.with_base_dir(resolved_base))
        state = PlanState(
            plan_name=plan.name,
            plan_fingerprint=plan.fingerprint(),
            plan_file=None if plan_file is None else str(Path(plan_file).resolve()),
            base_dir=resolved_base,
            overrides=list(overrides or []),
        )
        steps = plan.steps()  # checked with relative paths resolved as the steps will resolve them
        _check_new_state_dir(state_dir)
        state_dir.mkdir(parents=True, exist_ok=True)
        # by alias: a condition's `not` is the field `not_`, which the snapshot must spell as a plan file does
        snapshot = plan.model_dump(mode="json", by_alias=True)
        atomic_write_yaml(state_dir / PLAN_SNAPSHOT, snapshot)
    state.sessions.append(Session(action="run", started_at=now(), pid=os.getpid()))
    return _walk(plan, steps, state, state_dir, on_event or _log_event)


def _check_new_state_dir(state_dir: Path) -> None:
    """A new state dir must be missing or empty: the plan writes plan.yaml, state.json, steps/ and report/
    there, which would overwrite a person's own files of those names."""
    if state_dir.exists() and not state_dir.is_dir():
        raise PlanError(["exists and is not a folder; give a new or empty folder for the state"], state_dir)
    if state_dir.is_dir() and any(state_dir.iterdir()):
        raise PlanError(
            [f"not empty and holds no plan state ({STATE_FILE}); give a new or empty folder for the state"],
            state_dir,
        )


def _with_files_inlined(plan: Plan) -> Plan:
    """``plan`` (validated, with its base folder) with each phase's ``job_file`` and the gate's
    ``policy_file`` read into it, their inline keys still on top.

    The run, its snapshot and its fingerprint then hold the files as they were when the plan started: a later
    edit cannot change the phases left behind the finished ones' back (``plan run`` sees another plan;
    ``plan resume`` goes on as the plan started), and ``plan status`` never needs the files again.
    """
    from xraydet.plan.release_steps import GateParams, gate_policy
    from xraydet.plan.train_step import TrainParams, job_keys

    has_policy_file = plan.gate is not None and bool(plan.gate.params().get("policy_file"))
    if not has_policy_file and not any(phase.job_file for phase in plan.phases):
        return plan
    base_dir = plan.base_dir or Path.cwd()
    plan.steps()  # the files are checked (and named) in the plan's own terms before they are read here
    phases = [
        phase.model_copy(
            update={
                "job": job_keys(TrainParams(job=phase.job, job_file=phase.job_file), base_dir)[0],
                "job_file": None,
            }
        )
        if phase.job_file
        else phase
        for phase in plan.phases
    ]
    gate = plan.gate
    if gate is not None and has_policy_file:
        policy = gate_policy(GateParams.model_validate(gate.params()), base_dir).model_dump(mode="json")
        keys = {k: v for k, v in gate.model_dump(mode="json", by_alias=True).items() if k != "policy_file"}
        gate = type(gate).model_validate({**keys, "policy": policy})
    return plan.model_copy(update={"phases": phases, "gate": gate})


def resume_plan(
    state_dir: str | Path, *, redo: Sequence[str] = (), on_event: Listener | None = None
) -> PlanState:
    """Go on with the plan recorded in ``state_dir`` (its own snapshot, so edits to the file don't matter).

    ``redo`` names steps to run again even though they finished (e.g. ``gate`` after a human review); every
    later step on the path runs again too.
    """
    state_dir = Path(state_dir).resolve()
    state = load_state(state_dir)
    plan = load_snapshot(state_dir, base_dir=state.base_dir)
    steps = plan.steps()
    unknown = [s for s in redo if s not in {step.id for step in steps}]
    if unknown:
        known = ", ".join(s.id for s in steps)
        raise PlanError([f"--redo {', '.join(unknown)}: no such step (steps: {known})"])
    state.sessions.append(Session(action="resume", started_at=now(), pid=os.getpid()))
    return _walk(plan, steps, state, state_dir, on_event or _log_event, set(redo))


def plan_status(state_dir: str | Path) -> PlanState:
    """The recorded state (no step is run)."""
    return load_state(Path(state_dir).resolve())


def load_snapshot(state_dir: Path, base_dir: str | Path | None = None) -> Plan:
    """The plan recorded in ``state_dir``, checked against its recorded base folder (or ``base_dir``)."""
    path = state_dir / PLAN_SNAPSHOT
    if not path.is_file():
        raise PlanError(
            [f"{PLAN_SNAPSHOT} missing: this state dir was not made by `xraydet plan run`"], state_dir
        )
    if base_dir is None and (state_dir / STATE_FILE).is_file():
        base_dir = load_state(state_dir).base_dir
    try:
        raw = yaml.safe_load(decode_text(path.read_bytes(), path))
    except TextDecodeError as err:
        raise _damaged_snapshot(state_dir, f"not UTF-8 text (byte {err.offset}) at line {err.line}") from err
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise _damaged_snapshot(state_dir, f"not valid YAML{line}: {getattr(err, 'problem', err)}") from err
    if not isinstance(raw, dict):
        raise _damaged_snapshot(state_dir, "not a plan mapping")
    return parse_plan(raw, path, base_dir=base_dir)


def _damaged_snapshot(state_dir: Path, problem: str) -> PlanError:
    """A snapshot xraydet wrote that no longer reads: say which file and how to get going again."""
    return PlanError(
        [
            f"{PLAN_SNAPSHOT} is damaged ({problem}); it is xraydet's own copy of the plan this state dir "
            f"runs: restore it from a backup, or remove {state_dir} and start again with "
            "`xraydet plan run PLAN`"
        ],
        state_dir,
    )


def _walk(
    plan: Plan,
    steps: list[PlannedStep],
    state: PlanState,
    state_dir: Path,
    emit: Listener,
    redo: set[str] | None = None,
) -> PlanState:
    with _lock(state_dir):
        return _walk_locked(plan, steps, _as_left(state, state_dir), state_dir, emit, redo or set())


def _as_left(state: PlanState, state_dir: Path) -> PlanState:
    """``state`` as the last holder of the lock left it: read again now that the lock is ours (a run that
    ended while this one waited has moved on), with this session's entry."""
    if not (state_dir / STATE_FILE).is_file():
        return state
    left = load_state(state_dir)
    left.sessions.append(state.sessions[-1])
    return left


LOCK_FILE = "lock"


@contextlib.contextmanager
def _lock(state_dir: Path) -> Iterator[None]:
    """One process per state dir: an OS lock on ``state_dir/lock``, which also holds the runner's pid.

    The OS drops the lock when its process dies (even by ``kill -9``), so a lock file left behind is free, and
    taking it is atomic: two runs started together cannot both pass the check. The file is removed while still
    locked; a run that opened it just before finds the path gone or new and tries again on the new file.
    """
    import fcntl

    lock = state_dir / LOCK_FILE
    while True:
        handle = open(lock, "a+", encoding="utf-8", errors="replace")  # noqa: SIM115 (held for the walk)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read(64).strip() or "unknown"
            handle.close()
            raise PlanError(
                [f"another process (pid {holder}) is running this plan; wait for it or stop it"], state_dir
            ) from None
        except OSError as err:  # no locks on this file system (ENOLCK on some NFS mounts)
            handle.close()
            raise PlanError([f"cannot lock {lock}: {err.strerror or err}"], state_dir) from err
        if _same_file(handle, lock):
            break
        handle.close()  # its holder removed it between our open and lock: take the current file instead
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        lock.unlink(missing_ok=True)
        handle.close()


def _same_file(handle: Any, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(handle.fileno()), path.stat())
    except FileNotFoundError:
        return False


def _walk_locked(
    plan: Plan, steps: list[PlannedStep], state: PlanState, state_dir: Path, emit: Listener, redo: set[str]
) -> PlanState:
    index = {s.id: i for i, s in enumerate(steps)}
    for step in steps:
        state.records.setdefault(
            step.id, StepRecord(id=step.id, kind=step.kind, title=step.title, phase=step.phase)
        )
    state.status, state.trail, state.end = "running", [], None
    state.save(state_dir)
    position, stale = 0, False
    try:
        while True:
            step = steps[position]
            state.current = step.id
            record = state.records[step.id]
            reuse, why = _can_reuse(record, stale or step.id in redo)
            if reuse:
                record.reused = True
                emit(PlanEvent("skip", step.id, f"{step.id}: already done ({why})", record))
            else:
                if record.status == "done":
                    emit(PlanEvent("note", step.id, f"{step.id}: running again ({why})", record))
                stale = True
                record = _execute(plan, step, state, state_dir, emit)
            fallthrough = steps[position + 1].id if position + 1 < len(steps) else END
            # only steps this walk reached: a record an earlier run left done, on a path not taken now (or
            # not reached yet), would make the replay decide differently from the run it replays
            walked = [*state.trail, step.id]
            others = {k: r.outcome for k in walked if (r := state.done_on_walk(k, walked)) is not None}
            decision = decide(step.transitions, record.outcome, others, fallthrough)
            record.transition = decision
            state.trail.append(step.id)
            state.save(state_dir)
            numbers = ", ".join(f"{k}={_short(v)}" for k, v in decision.reads.items())
            emit(
                PlanEvent(
                    "goto",
                    step.id,
                    f"{step.id} -> {decision.goto}: {decision.rule_text}"
                    + (f" [{numbers}]" if numbers else ""),
                    record,
                )
            )
            if decision.goto in TERMINALS:
                state.end = decision.goto
                break
            position = index[decision.goto]
        state.status = "finished" if state.end == END else "failed"
        state.current = None
        state.save(state_dir)
    except KeyboardInterrupt:
        state.status = "interrupted"
        state.save(state_dir)
        _write_outputs(plan, state, state_dir)
        raise
    except BaseException:
        state.status = "failed"
        state.save(state_dir)
        _write_outputs(plan, state, state_dir)
        raise
    _write_outputs(plan, state, state_dir)
    emit(PlanEvent("finish", None, f"plan {plan.name} {state.status} (ended with '{state.end}')"))
    return state


def _can_reuse(record: StepRecord, stale: bool) -> tuple[bool, str]:
    if record.status != "done":
        return False, record.status
    if stale:
        return False, "asked to redo it, or an earlier step ran again"
    return outputs_intact(record)


def _execute(plan: Plan, step: PlannedStep, state: PlanState, state_dir: Path, emit: Listener) -> StepRecord:
    kind = get_step_kind(step.kind)
    previous = state.records[step.id].model_copy(deep=True)
    record = state.records[step.id]
    record.status, record.attempts, record.reused = "running", record.attempts + 1, False
    record.started_at, record.finished_at, record.error = now(), None, None
    record.inputs = step.params.model_dump(mode="json")
    record.outcome, record.decisions, record.details, record.fingerprints = {}, [], {}, {}
    state.save(state_dir)

    def save_progress(outputs: dict[str, Any]) -> None:
        record.outputs.update({k: str(v) if isinstance(v, Path) else v for k, v in outputs.items()})
        state.save(state_dir)

    ctx = StepContext(
        step=step,
        plan=plan,
        state=state,
        state_dir=state_dir,
        base_dir=Path(state.base_dir),
        previous=previous if previous.status != "pending" else None,
        save_progress=save_progress,
        trail=list(state.trail),
    )
    emit(
        PlanEvent(
            "start", step.id, f"{step.id} ({step.kind}){': ' + step.title if step.title else ''}", record
        )
    )
    started = time.monotonic()
    try:
        result = kind.run(ctx, step.params)
        fingerprints = fingerprint_files(result.files)
    except KeyboardInterrupt:
        _account(plan, record, time.monotonic() - started)
        record.status, record.error = "interrupted", "interrupted (Ctrl-C)"
        emit(
            PlanEvent(
                "interrupted", step.id, f"{step.id}: interrupted; `xraydet plan resume` goes on", record
            )
        )
        raise
    except Exception as err:
        _account(plan, record, time.monotonic() - started)
        record.status, record.error = "failed", f"{type(err).__name__}: {err}"
        state.save(state_dir)
        emit(PlanEvent("failed", step.id, f"{step.id} failed: {err}", record))
        raise PlanError([f"step '{step.id}' ({step.kind}) failed: {err}"]) from err
    _account(plan, record, time.monotonic() - started)
    record.outputs.update({k: str(v) if isinstance(v, Path) else v for k, v in result.outputs.items()})
    record.outputs.update({k: str(v) for k, v in result.files.items()})
    record.fingerprints = fingerprints
    record.outcome, record.decisions, record.details = result.outcome, result.decisions, result.details
    record.status, record.finished_at = "done", now()
    state.save(state_dir)
    emit(PlanEvent("done", step.id, f"{step.id}: done in {record.wall_time_s:.0f}s", record))
    return record


def _account(plan: Plan, record: StepRecord, seconds: float) -> None:
    """Add an attempt's wall time; billed kinds turn it into GPU-hours and cost."""
    record.wall_time_s += seconds
    if record.kind in plan.cost.billed_kinds:
        record.gpu_hours = record.wall_time_s / 3600 * plan.cost.gpus
        record.cost = record.gpu_hours * plan.cost.price_per_gpu_hour


def _write_outputs(plan: Plan, state: PlanState, state_dir: Path) -> None:
    """Decision log and report; a problem writing them must not hide the plan's own outcome."""
    from xraydet.plan.decisions import write_decision_log
    from xraydet.plan.report import write_report

    for writer in (write_decision_log, write_report):
        try:
            writer(plan, state, state_dir)
        except Exception:  # the state is saved; the log/report can be rebuilt with `plan status`
            log.exception("could not write %s", writer.__name__)


def _log_event(event: PlanEvent) -> None:
    log.info(event.message)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
