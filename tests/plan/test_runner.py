"""The runner on step kinds of our own (registered by the ``test_kinds`` fixture): paths through the plan,
skipping finished steps, re-running changed ones, interruptions, failures, the decision log and the report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from xraydet.io import atomic_write_text
from xraydet.plan import PlanError, parse_plan, plan_status, resume_plan, run_plan
from xraydet.plan.runner import PlanEvent, load_snapshot
from xraydet.plan.steps import StepContext, StepResult, register_step_kind, unregister_step_kind

pytestmark = pytest.mark.usefixtures("test_kinds")


def calls(state_dir: Path) -> list[dict[str, str]]:
    """Every executor call the test kinds made in ``state_dir``, in order (see conftest)."""
    path = state_dir / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def plan_of(first: float, second: float, extra: list[dict[str, Any]] | None = None) -> Any:
    """Two scored 'phases' with the seed's rule, then a last step, as data steps of our own kinds."""
    return parse_plan(
        {
            "name": "fake",
            "cost": {"price_per_gpu_hour": 3600.0, "billed_kinds": ["score"]},
            "data": [
                {
                    "id": "p1",
                    "kind": "score",
                    "value": first,
                    "status": "stopped" if first < 0.3 else "completed",
                    "transitions": [
                        {
                            "when": {"metric": "status", "op": "==", "value": "stopped"},
                            "goto": "p2",
                            "note": "add data",
                        },
                        {"when": {"metric": "final.map50", "op": "<", "value": 0.40}, "goto": "p2"},
                        {"goto": "last"},
                    ],
                },
                {
                    "id": "p2",
                    "kind": "score",
                    "value": second,
                    "transitions": [
                        {
                            "when": {
                                "metric": "final.map50",
                                "op": ">",
                                "value": {"step": "p1", "metric": "final.map50"},
                            },
                            "goto": (extra or [{"id": "last"}])[0]["id"],
                        },
                        {"goto": "fail", "note": "no better than p1"},
                    ],
                },
                *(extra or []),
                {"id": "last", "kind": "score", "value": 1.0},
            ],
        }
    )


def test_path_follows_the_rules_and_log_has_the_numbers(tmp_path: Path) -> None:
    events: list[PlanEvent] = []
    state = run_plan(plan_of(0.12, 0.45), tmp_path, on_event=events.append)
    assert state.status == "finished" and state.end == "end"
    assert state.trail == ["p1", "p2", "last"]
    assert [c["step"] for c in calls(tmp_path)] == ["p1", "p2", "last"]

    log = json.loads((tmp_path / "decisions.json").read_text())
    p1, p2 = log["steps"][0], log["steps"][1]
    assert p1["transition"]["branch"] == "p2" and p1["transition"]["rule"] == 0
    assert p1["transition"]["numbers_read"] == {"status": "stopped"}
    assert p1["transition"]["note"] == "add data"
    assert p2["transition"]["numbers_read"] == {"final.map50": 0.45, "p1.final.map50": 0.12}
    assert p2["transition"]["rule_fired"] == "final.map50 > p1.final.map50"
    assert p1["decisions"] == [{"what": "score", "decision": "measured", "values": {"value": 0.12}}]
    # cost: wall time in hours x price; at 3600 per hour the cost equals the seconds
    for entry in log["steps"]:
        assert entry["cost"] == pytest.approx(entry["wall_time_s"], abs=0.05)
    markdown = (tmp_path / "decisions.md").read_text()
    assert "`status == 'stopped'` -> **p2**" in markdown and "p1.final.map50 = 0.12" in markdown
    assert [e.kind for e in events if e.step == "p1"] == ["start", "done", "goto"]


def test_rule_to_fail_ends_the_plan_failed(tmp_path: Path) -> None:
    state = run_plan(plan_of(0.5, 0.1), tmp_path)  # p1 good -> last; p2 never runs
    assert state.trail == ["p1", "last"] and state.status == "finished"
    state = run_plan(plan_of(0.35, 0.2), tmp_path / "b")  # p1 weak -> p2, p2 worse -> fail
    assert state.trail == ["p1", "p2"] and state.end == "fail" and state.status == "failed"
    assert state.records["last"].status == "pending"


def test_finished_steps_are_skipped_while_their_outputs_are_intact(tmp_path: Path) -> None:
    plan = plan_of(0.12, 0.45)
    run_plan(plan, tmp_path)
    score_file = Path(plan_status(tmp_path).records["p1"].outputs["score_file"])
    mtime = score_file.stat().st_mtime_ns

    state = resume_plan(tmp_path)
    assert len(calls(tmp_path)) == 3  # nothing ran again
    assert all(state.records[s].reused for s in state.trail)
    assert score_file.stat().st_mtime_ns == mtime

    # a changed output makes its step, and every later one, run again
    Path(state.records["p2"].outputs["score_file"]).write_text("tampered\n")
    events: list[PlanEvent] = []
    state = resume_plan(tmp_path, on_event=events.append)
    assert [c["step"] for c in calls(tmp_path)][3:] == ["p2", "last"]
    assert any("output 'score' changed" in e.message for e in events)
    assert state.records["p1"].attempts == 1 and state.records["p2"].attempts == 2


def test_redo_runs_a_finished_step_and_those_after_it(tmp_path: Path) -> None:
    run_plan(plan_of(0.12, 0.45), tmp_path)
    resume_plan(tmp_path, redo=["p2"])
    assert [c["step"] for c in calls(tmp_path)] == ["p1", "p2", "last", "p2", "last"]
    with pytest.raises(PlanError, match="--redo p9: no such step"):
        resume_plan(tmp_path, redo=["p9"])


def test_interrupted_step_resumes_without_redoing_earlier_ones(tmp_path: Path) -> None:
    plan = plan_of(0.12, 0.45, extra=[{"id": "slow", "kind": "ctrl-c"}])
    with pytest.raises(KeyboardInterrupt):
        run_plan(plan, tmp_path)
    state = plan_status(tmp_path)
    assert state.status == "interrupted" and state.current == "slow"
    assert state.records["slow"].status == "interrupted"
    assert (tmp_path / "decisions.md").is_file()  # a partial log is there

    state = resume_plan(tmp_path)
    assert state.status == "finished"
    assert [c["step"] for c in calls(tmp_path)] == ["p1", "p2", "slow", "slow", "last"]
    assert calls(tmp_path)[3]["previous"] == "interrupted"
    assert state.records["slow"].outcome == {"resumed_after": "interrupted"}


def test_killed_run_leaves_a_running_record_that_resume_retries(tmp_path: Path) -> None:
    """What kill -9 leaves behind: a step marked running (nothing could record its end)."""
    plan = plan_of(0.12, 0.45)
    run_plan(plan, tmp_path)
    state = plan_status(tmp_path)
    state.records["p2"].status = "running"
    state.status, state.current = "running", "p2"
    state.save(tmp_path)
    resume_plan(tmp_path)
    assert [c["step"] for c in calls(tmp_path)][3:] == ["p2", "last"]
    assert calls(tmp_path)[3]["previous"] == "running"


def test_failed_step_stops_the_plan_and_resume_retries_it(tmp_path: Path) -> None:
    plan = plan_of(
        0.12, 0.45, extra=[{"id": "flaky", "kind": "explode", "message": "disk full", "once": True}]
    )
    with pytest.raises(PlanError, match="step 'flaky' \\(explode\\) failed: disk full"):
        run_plan(plan, tmp_path)
    state = plan_status(tmp_path)
    assert state.status == "failed" and state.records["flaky"].error == "RuntimeError: disk full"
    state = resume_plan(tmp_path)
    assert state.status == "finished" and state.records["flaky"].attempts == 2
    assert state.records["p1"].attempts == 1


def test_billed_steps_cost_every_attempt_on_every_gpu(tmp_path: Path) -> None:
    plan = plan_of(
        0.12, 0.45, extra=[{"id": "flaky", "kind": "explode", "message": "disk full", "once": True}]
    )
    plan.cost.gpus, plan.cost.billed_kinds = 2, ["score", "explode"]
    with pytest.raises(PlanError):
        run_plan(plan, tmp_path)
    first = plan_status(tmp_path).records["flaky"].wall_time_s
    assert first > 0
    state = resume_plan(tmp_path)
    flaky = state.records["flaky"]
    assert flaky.attempts == 2 and flaky.wall_time_s > first  # the failed attempt is still paid for
    for record in (flaky, state.records["p1"]):
        assert record.gpu_hours == pytest.approx(record.wall_time_s / 3600 * 2)
        assert record.cost == pytest.approx(record.gpu_hours * 3600.0)


def test_a_state_dir_belongs_to_one_plan(tmp_path: Path) -> None:
    run_plan(plan_of(0.5, 0.5), tmp_path)
    run_plan(plan_of(0.5, 0.5), tmp_path)  # the same plan again: continues (nothing to do)
    assert len(calls(tmp_path)) == 2
    with pytest.raises(PlanError, match="holds another plan"):
        run_plan(plan_of(0.6, 0.5), tmp_path)
    with pytest.raises(PlanError, match="no plan state here"):
        resume_plan(tmp_path / "elsewhere")


def test_resume_uses_the_recorded_plan_and_base_dir(tmp_path: Path) -> None:
    """Relative paths resolve against the folder the plan was started in, also when resumed elsewhere."""
    plan = plan_of(0.12, 0.45, extra=[{"id": "slow", "kind": "ctrl-c"}])
    start = tmp_path / "start"
    start.mkdir()
    with pytest.raises(KeyboardInterrupt):
        run_plan(plan, tmp_path / "state", base_dir=start)
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        state = resume_plan(tmp_path / "state")
    finally:
        os.chdir(cwd)
    assert state.base_dir == str(start.resolve()) and state.status == "finished"


def test_resume_elsewhere_checks_relative_job_paths_against_the_base_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A train step's relative preset/model are checked (on resume too) where the plan was started."""
    start = tmp_path / "start"
    start.mkdir()
    (start / "mine.yaml").write_text("args: {lr0: 0.005}\n")
    raw = {
        "name": "relative",
        "data": [{"id": "first", "kind": "score", "value": 0.5, "transitions": [{"goto": "end"}]}],
        "phases": [{"id": "phase1", "job": {"data": "@first", "preset": "mine.yaml", "epochs": 1}}],
    }
    monkeypatch.chdir(start)
    run_plan(parse_plan(raw), tmp_path / "state")
    monkeypatch.chdir(tmp_path)
    state = resume_plan(tmp_path / "state")
    assert state.status == "finished" and state.trail == ["first"]
    assert plan_status(tmp_path / "state").base_dir == str(start.resolve())


def test_report_has_phases_curves_and_totals(tmp_path: Path) -> None:
    run_plan(plan_of(0.12, 0.45), tmp_path)
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    # our fake kind is not "train", so no phase rows; the plot is only drawn for training phases
    assert report["phases"] == [] and report["curve_png"] is None
    assert report["total_cost"] > 0
    assert "No phase has run yet." in (tmp_path / "report" / "report.md").read_text()


HOLD_LOCK = """
import sys
from pathlib import Path
from xraydet.plan.runner import _lock
with _lock(Path(sys.argv[1])):
    print("held", flush=True)
    sys.stdin.read()
"""


def _lock_holder(state_dir: Path) -> subprocess.Popen[str]:
    """Another process holding the state dir's lock (xraydet's own), until its stdin closes."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(state_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    return holder


def test_one_process_per_state_dir(tmp_path: Path) -> None:
    run_plan(plan_of(0.5, 0.5), tmp_path)
    assert not (tmp_path / "lock").exists()  # released at the end
    holder = _lock_holder(tmp_path)
    try:
        with pytest.raises(PlanError, match=f"another process \\(pid {holder.pid}\\) is running this plan"):
            resume_plan(tmp_path)
    finally:
        holder.communicate("")
    assert resume_plan(tmp_path).status == "finished"  # the holder ended: the lock is free again


RACE_FOR_LOCK = """
import os, sys, time
from pathlib import Path
from xraydet.plan.runner import _lock
from xraydet.plan.schema import PlanError
state_dir, start, log = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
time.sleep(max(0.0, start - time.time()))
try:
    with _lock(state_dir):
        with open(log, "a") as f:
            f.write(f"in {os.getpid()}\\n")
        time.sleep(0.3)
        with open(log, "a") as f:
            f.write(f"out {os.getpid()}\\n")
except PlanError:
    pass
"""


def test_runs_started_together_never_hold_the_lock_at_once(tmp_path: Path) -> None:
    """Six processes ask for one state dir's lock at the same instant: at most one holds it at a time."""
    log = tmp_path / "holders.log"
    start = time.time() + 3  # past every process's start-up, so they ask together
    racers = [
        subprocess.Popen([sys.executable, "-c", RACE_FOR_LOCK, str(tmp_path), str(start), str(log)])
        for _ in range(6)
    ]
    assert all(racer.wait(timeout=60) == 0 for racer in racers)
    lines = log.read_text().splitlines()
    assert lines and len(lines) % 2 == 0
    for enter, leave in zip(lines[::2], lines[1::2], strict=True):  # in/out pairs of one pid, never nested
        assert enter.startswith("in ") and leave == "out " + enter.removeprefix("in ")


def test_a_walk_reads_the_state_again_once_it_holds_the_lock(tmp_path: Path) -> None:
    """State read before the lock is taken may be stale (a run that ended while this one started): the walk
    goes on from what is on disk, so the other run's record is not overwritten."""
    from xraydet.plan.runner import _walk
    from xraydet.plan.state import Session, load_state, now

    plan = plan_of(0.5, 0.5)
    run_plan(plan, tmp_path)
    stale = load_state(tmp_path)
    resume_plan(tmp_path)  # another run, after this one read the state
    stale.sessions.append(Session(action="resume", started_at=now(), pid=os.getpid()))
    _walk(plan, plan.steps(), stale, tmp_path, lambda event: None)
    assert [s.action for s in load_state(tmp_path).sessions] == ["run", "resume", "resume"]


def test_a_lock_left_by_a_killed_process_is_free(tmp_path: Path) -> None:
    run_plan(plan_of(0.5, 0.5), tmp_path)
    holder = _lock_holder(tmp_path)
    holder.kill()  # SIGKILL: no clean-up, the lock file stays with its pid
    holder.wait()
    assert (tmp_path / "lock").read_text() == f"{holder.pid}\n"
    assert resume_plan(tmp_path).status == "finished"
    assert not (tmp_path / "lock").exists()


def test_a_live_pid_in_an_unheld_lock_file_does_not_block(tmp_path: Path) -> None:
    """The OS lock decides, not the pid written in the file: a live process (ours) that holds nothing."""
    run_plan(plan_of(0.5, 0.5), tmp_path)
    (tmp_path / "lock").write_text(f"{os.getppid()}\n")
    assert resume_plan(tmp_path).status == "finished"


@pytest.mark.usefixtures("branch_kinds")
def test_rules_read_only_steps_on_this_walk(tmp_path: Path) -> None:
    """A rule reading another step sees only what this walk reached: a step this path jumped over is missing,
    even when an earlier session left it done. Otherwise a resume on another branch would decide on a stale
    outcome. (A rule reading a step not reached yet, a later one, is refused when the plan is validated.)"""
    plan = parse_plan(
        {
            "name": "ahead",
            "data": [
                {
                    "id": "first",
                    "kind": "t-switch",
                    "file": "switch.txt",
                    "transitions": [
                        {"when": {"metric": "switch", "op": "==", "value": "off"}, "goto": "last"}
                    ],
                },
                {
                    "id": "extra",
                    "kind": "score",
                    "value": 0.7,
                    "transitions": [  # naming its own step reads its own outcome
                        {
                            "when": {"step": "extra", "metric": "final.map50", "op": "<", "value": 0.5},
                            "goto": "fail",
                        }
                    ],
                },
                {
                    "id": "last",
                    "kind": "score",
                    "value": 1.0,
                    "transitions": [
                        {"when": {"step": "extra", "metric": "final.map50", "op": "exists"}, "goto": "end"},
                        {"goto": "fail", "note": "extra did not run on this path"},
                    ],
                },
            ],
        }
    )
    state_dir = tmp_path / "state"
    (tmp_path / "switch.txt").write_text("on\n")
    state = run_plan(plan, state_dir, base_dir=tmp_path)
    assert state.trail == ["first", "extra", "last"] and state.end == "end"
    assert state.records["extra"].transition.reads == {"extra.final.map50": 0.7}  # type: ignore[union-attr]
    assert state.records["last"].transition.reads == {"extra.final.map50": 0.7}  # type: ignore[union-attr]

    state = run_plan(plan, state_dir, base_dir=tmp_path)  # finished: replays the same path, runs nothing
    assert state.trail == ["first", "extra", "last"] and len(calls(state_dir)) == 2

    (tmp_path / "switch.txt").write_text("off\n")
    state = resume_plan(state_dir, redo=["first"])  # the other branch: extra is done, but not on this walk
    assert state.trail == ["first", "last"] and state.end == "fail"
    assert state.records["last"].transition.reads == {"extra.final.map50": "missing"}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"name: fake\ndata: [{id: p1\n", r"not valid YAML at line \d+"),
        (b"name: caf\xe9\n", r"not UTF-8 text \(byte 9\) at line 1"),
        (b"- a\n- list\n", r"not a plan mapping"),
        (b"", r"not a plan mapping"),
    ],
    ids=["truncated-yaml", "not-utf8", "a-list", "empty"],
)
def test_a_damaged_snapshot_names_the_file_and_what_to_do(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    """plan.yaml is xraydet's own copy of the plan: damaged, it is a PlanError saying so, not a traceback."""
    run_plan(plan_of(0.5, 0.5), tmp_path)
    (tmp_path / "plan.yaml").write_bytes(content)
    message = rf"plan\.yaml is damaged \({problem}.*restore it .* or remove {tmp_path}"
    with pytest.raises(PlanError, match=message):
        resume_plan(tmp_path)
    with pytest.raises(PlanError, match=message):  # what `plan status` reads
        load_snapshot(tmp_path)


@pytest.mark.parametrize(
    "content", [b'{"plan_name": "caf\xe9"', b"\xff\xfe{}", b"[]"], ids=["not-utf8", "bom", "list"]
)
def test_a_damaged_state_file_is_a_plan_error(tmp_path: Path, content: bytes) -> None:
    run_plan(plan_of(0.5, 0.5), tmp_path)
    (tmp_path / "state.json").write_bytes(content)
    with pytest.raises(PlanError, match=r"state\.json is damaged"):
        resume_plan(tmp_path)


@pytest.mark.parametrize(
    "content",
    ["0\n", "-1\n", f"-{os.getpgrp()}\n", "garbage\n", "", "99999999999999999999\n"],
    ids=["pid-0", "pid-minus-1", "own-process-group", "garbage", "empty", "beyond-c-int"],
)
def test_a_lock_without_a_real_pid_is_stale(tmp_path: Path, content: str) -> None:
    """os.kill(0 or -n, 0) probes a process group (-1: every process), so it succeeds: no holder, though."""
    run_plan(plan_of(0.5, 0.5), tmp_path)
    (tmp_path / "lock").write_text(content)
    assert resume_plan(tmp_path).status == "finished"
    assert not (tmp_path / "lock").exists()


class _SwitchParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file: str


class _DataParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str = ""


@pytest.fixture
def branch_kinds() -> Iterator[None]:
    """``t-switch`` reports a file's word; ``t-make-data`` writes a data.yaml; ``t-use-data`` resolves one."""

    def switch(ctx: StepContext, params: _SwitchParams) -> StepResult:
        return StepResult(outcome={"switch": ctx.resolve_path(params.file).read_text().strip()})

    def make_data(ctx: StepContext, params: _DataParams) -> StepResult:
        out = atomic_write_text(ctx.work_dir / "data.yaml", f"made by {ctx.step.id}\n")
        return StepResult(outputs={"data_yaml": out}, files={"data_yaml": out})

    def use_data(ctx: StepContext, params: _DataParams) -> StepResult:
        return StepResult(outcome={"data": str(ctx.resolve_data(params.dataset))})

    register_step_kind("t-switch", _SwitchParams)(switch)
    register_step_kind("t-make-data", _DataParams)(make_data)
    register_step_kind("t-use-data", _DataParams)(use_data)
    yield
    for name in ("t-switch", "t-make-data", "t-use-data"):
        unregister_step_kind(name)


@pytest.mark.usefixtures("branch_kinds", "xraydet_home")
@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("consumer", r"'@extra' refers to step 'extra', which has not run yet on this path of the plan"),
        ("gate", r"the gate needs step 'extra' to have run on this path of the plan"),
        ("deploy", r"deploy needs steps 'extra' and 'checked' to have run on this path of the plan"),
    ],
    ids=["at-step-reference", "gate", "deploy"],
)
def test_steps_use_only_records_made_on_this_walk(tmp_path: Path, target: str, message: str) -> None:
    """A step this walk jumped over is not there for `@step`, the gate or deploy, even when an earlier session
    left it done: a resume on the other branch fails as a fresh run of that branch does, instead of using the
    earlier branch's stale data set, report or weights."""
    plan = parse_plan(
        {
            "name": "branches",
            "data": [
                {
                    "id": "first",
                    "kind": "t-switch",
                    "file": "switch.txt",
                    "transitions": [
                        {"when": {"metric": "switch", "op": "==", "value": "off"}, "goto": target}
                    ],
                },
                {"id": "extra", "kind": "t-make-data"},
                {"id": "checked", "kind": "score", "value": 0.5},
                {
                    "id": "consumer",
                    "kind": "t-use-data",
                    "dataset": "@extra",
                    "transitions": [{"goto": "end"}],
                },
            ],
            "gate": {"evaluation": "extra"},
            "deploy": {"evaluation": "extra", "gate": "checked"},
        }
    )
    switch = tmp_path / "switch.txt"
    switch.write_text("on\n")
    state = run_plan(plan, tmp_path / "state", base_dir=tmp_path)
    assert state.trail == ["first", "extra", "checked", "consumer"] and state.status == "finished"
    made = state.records["extra"].outputs["data_yaml"]
    assert state.records["consumer"].outcome == {"data": made}
    state = resume_plan(tmp_path / "state", redo=["consumer"])  # a step reused on this walk is there to use
    assert state.records["extra"].reused and state.records["consumer"].outcome == {"data": made}

    switch.write_text("off\n")
    with pytest.raises(PlanError, match=message) as fresh:
        run_plan(plan, tmp_path / "fresh", base_dir=tmp_path)
    with pytest.raises(PlanError, match=message) as resumed:
        resume_plan(tmp_path / "state", redo=["first"])
    assert str(resumed.value) == str(fresh.value)
    assert plan_status(tmp_path / "state").trail == ["first"]
