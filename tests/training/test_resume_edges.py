"""Resume edges: MLflow epochs across a rewind (a checkpoint older than the run's state), extensions, and stop
verdicts on record (a plain resume stays stopped, an extension trains on, timeouts excepted).

Most tests drive the real ``run_training``/``resume_training``/``execute``, hooks and MLflow store with a
scripted stand-in for Ultralytics (``ScriptedBridge``: same order of work per epoch, values that differ per
training call so a retrained epoch is told from the old one), so they take a second each. Two tiny real
trainings check the same rules against Ultralytics itself.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from training_support import StopAt, tiny_job  # also registers the test hooks (test_stamp)

from xraydet.errors import XrayDetError
from xraydet.training import job_from_dict, load_run_result, resume_training, run_training
from xraydet.training import trainer as trainer_module
from xraydet.training.history import normalize_row, read_results_csv
from xraydet.training.hooks import HookBase, TrainContext, Verdict, register_hook
from xraydet.training.state import RunState
from xraydet.training.trainer import stop_verdict_on_record
from xraydet.training.ultralytics_bridge import TrainOutcome, UltralyticsBridge

NO_FLAGS = {
    "oscillation": {"enabled": False},
    "plateau": {"enabled": False},
    "overfitting": {"enabled": False},
}
WARN_GATE = {"decision_epoch": 2, "continue_above": 1.0, "stop_below": 0.0}  # judges epoch 2, never stops


def stop_gate(epoch: int) -> dict[str, Any]:
    return {"decision_epoch": epoch, "continue_above": 1.0, "stop_below": 1.0}  # every value < 1.0: stop


def loop_figures(call: int, epoch: int) -> dict[str, float]:
    """The scripted training-loop figures of ``epoch`` in the ``call``-th training call."""
    return {"train_images_per_s": 100.0 * epoch + call, "loader_wait_frac": 0.1}


def map50(call: int, epoch: int) -> float:
    """The scripted mAP50 of ``epoch`` in the ``call``-th training call of a test."""
    return round(0.1 * epoch + 0.01 * call, 4)


@dataclass
class Script:
    """What the scripted trainer does, and what each of its ``train`` calls saw."""

    root: Path  # state.json snapshots, outside the run folder
    fail_at: tuple[int, int] | None = None  # (call, epoch): fail after its results row and checkpoint
    epoch_s: float = 1.0  # seconds each epoch adds to ctx.elapsed_s (what the Timeout hook reads)
    calls: list[dict[str, Any]] = field(default_factory=list)

    def snapshot(self, call: int, epoch: int) -> Path:
        """``state.json`` as written after ``epoch`` of ``call`` (what ``kill -9`` right after it leaves)."""
        return self.root / f"state-{call}-{epoch}.json"


class ScriptedBridge(UltralyticsBridge):
    """The real bridge with a scripted ``train``: Ultralytics' order of work per epoch (a ``results.csv`` row,
    ``last.pt``, ``after_save``, where the checkpoint hook copies ``epochNNN.pt``, ``after_fit_epoch``,
    ``on_epoch``). A resume starts after the prepared checkpoint's epoch and runs to its
    ``train_args["epochs"]``, as Ultralytics does; the loop's end keeps ``resume.pt``, strips ``last.pt``."""

    script: Script

    def train(self, model_source: Any, args: dict[str, Any], resume_from: Path | None = None) -> TrainOutcome:
        script, ctx = self.script, self.ctx
        call = len(script.calls)
        weights = ctx.weights_dir
        weights.mkdir(parents=True, exist_ok=True)
        if resume_from is not None:
            ckpt = torch.load(resume_from, weights_only=False)
            train_args, start = dict(ckpt["train_args"]), int(ckpt["epoch"]) + 1
        else:
            train_args, start = dict(args), 0
        seen: dict[str, Any] = {
            "start": start,
            "epochs": [],
            "state": json.loads((ctx.run_dir / "state.json").read_text()),  # as the trainer saved it
        }
        script.calls.append(seen)
        outcome = TrainOutcome(epochs_done=start)
        ctx.elapsed_s = 0.0
        self.hooks.call("before_train", ctx)
        try:
            for epoch in range(start + 1, int(train_args["epochs"]) + 1):
                ctx.epoch, ctx.epochs = epoch, int(train_args["epochs"])  # as the bridge reads them
                self.hooks.call("before_epoch", ctx)
                ctx.elapsed_s += script.epoch_s
                row = _row(epoch, map50(call, epoch))
                _append_row(ctx.run_dir / "results.csv", row)
                last = {"epoch": epoch - 1, "optimizer": {"step": epoch}, "train_args": train_args}
                torch.save(last, weights / "last.pt")
                self.hooks.call("after_save", ctx)
                if script.fail_at == (call, epoch):
                    raise RuntimeError(f"scripted failure in epoch {epoch}")
                record = {**normalize_row(row), **loop_figures(call, epoch)}  # as the bridge's records
                ctx.history.append(record)
                outcome.epochs_done = epoch
                seen["epochs"].append(epoch)
                verdicts = self.hooks.call("after_fit_epoch", ctx, record)
                if self.on_epoch is not None:
                    self.on_epoch(ctx, record, verdicts)
                shutil.copyfile(ctx.run_dir / "state.json", script.snapshot(call, epoch))
                stop = next((v for v in verdicts if v.decision == "stop"), None)
                if stop is not None:
                    outcome.stop_verdict = stop
                    break
            if seen["epochs"]:  # the loop ended: keep a resumable copy, then strip last.pt as final_eval does
                shutil.copyfile(weights / "last.pt", weights / "resume.pt")
                stripped = {
                    **torch.load(weights / "last.pt", weights_only=False),
                    "epoch": -1,
                    "optimizer": None,
                }
                torch.save(stripped, weights / "last.pt")
        finally:
            self.hooks.after_train(ctx)
        return outcome


def _row(epoch: int, m: float) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "train/box_loss": 1.5,
        "train/cls_loss": 2.5,
        "train/dfl_loss": 1.25,
        "metrics/precision(B)": m,
        "metrics/recall(B)": m,
        "metrics/mAP50(B)": m,
        "metrics/mAP50-95(B)": m / 2,
        "val/box_loss": 1.75,
        "val/cls_loss": 2.75,
        "val/dfl_loss": 1.5,
        "lr/pg0": 0.001,
    }


def _append_row(path: Path, row: dict[str, Any]) -> None:
    new = not path.is_file() or not path.read_text().strip()
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


@pytest.fixture
def script(mlflow_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Script:
    """Trainings in this test run on the scripted bridge (and the test's MLflow store)."""
    s = Script(root=tmp_path / "script")
    s.root.mkdir()
    monkeypatch.setattr(trainer_module, "UltralyticsBridge", type("Bridge", (ScriptedBridge,), {"script": s}))
    return s


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A data.yaml stand-in: the scripted bridge reads no images."""
    path = tmp_path / "data" / "data.yaml"
    (path.parent / "images").mkdir(parents=True)
    path.write_text("names: [object]\ntrain: images\nval: images\n")
    return path


def job(data: Path, **extra: Any) -> Any:
    body = tiny_job(data, gate=WARN_GATE, red_flags=NO_FLAGS, hooks=[{"name": "test_stamp"}])
    body.update(extra)
    return job_from_dict(body)


def map50_in_mlflow(run_id: str | None) -> dict[int, list[float]]:
    """Every map50 value MLflow holds, per step (a step logged twice has two values)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    steps: dict[int, list[float]] = {}
    for metric in client.get_metric_history(str(run_id), "map50"):
        steps.setdefault(metric.step, []).append(metric.value)
    return {step: sorted(values) for step, values in sorted(steps.items())}


def tear(run_dir: Path, *names: str) -> None:
    """Cut checkpoints short, as a kill while writing them would."""
    for name in names:
        path = run_dir / "weights" / name
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


def killed_after(run_dir: Path, state: Path, rows: int, checkpoint: int) -> dict[str, Any]:
    """Make ``run_dir`` what ``kill -9`` leaves: ``state`` as state.json, ``rows`` epochs in results.csv, the
    ``epochNNN.pt`` of ``checkpoint`` as newest checkpoint (``last.pt``), no summary. Returns the state."""
    shutil.copyfile(state, run_dir / "state.json")
    lines = (run_dir / "results.csv").read_text().splitlines()
    (run_dir / "results.csv").write_text("\n".join(lines[: rows + 1]) + "\n")
    weights = run_dir / "weights"
    for path in weights.glob("*.pt"):
        if path.name == "resume.pt" or (path.name.startswith("epoch") and int(path.stem[5:]) > checkpoint):
            path.unlink()
    shutil.copyfile(weights / f"epoch{checkpoint:03d}.pt", weights / "last.pt")
    for summary in (run_dir / "summary.json", weights / "summary.json"):
        summary.unlink(missing_ok=True)
    return json.loads(state.read_text())


def hook_epochs(verdicts: list[Verdict] | list[dict[str, Any]], hook: str) -> list[int]:
    items = [v if isinstance(v, dict) else v.model_dump() for v in verdicts]
    return [int(v["epoch"]) for v in items if v["hook"] == hook]


# --- a rewind: the checkpoint is older than the state ---


@pytest.mark.parametrize("kept", [1, 2])
def test_a_rewind_forgets_the_later_epochs_and_replaces_their_mlflow_values(
    script: Script, data: Path, tmp_path: Path, kept: int
) -> None:
    run_dir = tmp_path / "run"
    first = run_training(job(data), run_dir)
    assert first.status == "completed", first.stop_reason
    assert map50_in_mlflow(first.mlflow_run_id) == {e: [map50(0, e)] for e in (1, 2, 3)}
    tear(run_dir, "last.pt", "resume.pt", *(f"epoch{e:03d}.pt" for e in range(kept + 1, 4)))

    again = resume_training(run_dir)

    assert again.status == "completed", again.stop_reason
    assert again.resumes[-1] == {
        "checkpoint": f"epoch{kept:03d}.pt",
        "from_epoch": kept,
        "epochs": 3,
        "extended": False,
    }
    resumed = script.calls[-1]
    assert (resumed["start"], resumed["epochs"]) == (kept, list(range(kept + 1, 4)))
    # The state the retraining starts from (saved before it) holds nothing of the epochs after the checkpoint.
    assert resumed["state"]["epoch"] == kept
    assert resumed["state"]["mlflow_epochs"] == list(range(1, kept + 1))
    assert sorted(map(int, resumed["state"]["loop_figures"])) == list(range(1, kept + 1))
    assert hook_epochs(resumed["state"]["verdicts"], "test_stamp") == list(range(1, kept + 1))
    # Each epoch judged once: the kept ones by the first training, the others by the retraining.
    assert hook_epochs(again.verdicts, "test_stamp") == [1, 2, 3]
    assert hook_epochs(again.verdicts, "decision_gate") == [2]
    assert [r["map50"] for r in again.history] == [map50(0 if e <= kept else 1, e) for e in (1, 2, 3)]
    speeds = [loop_figures(0 if e <= kept else 1, e)["train_images_per_s"] for e in (1, 2, 3)]
    assert [r["train_images_per_s"] for r in again.history] == speeds
    # MLflow: each epoch once, as in results.csv: a retrained epoch's old value is dropped for the new one
    assert map50_in_mlflow(again.mlflow_run_id) == {e: [map50(0 if e <= kept else 1, e)] for e in (1, 2, 3)}
    assert RunState.load(run_dir).mlflow_epochs == [1, 2, 3]


def test_an_extension_must_exceed_the_epochs_trained_not_only_the_checkpoints(
    script: Script, data: Path, tmp_path: Path
) -> None:
    """Three epochs trained, the newest usable checkpoint is epoch 1's: ``--epochs 3`` trains none."""
    run_dir = tmp_path / "run"
    run_training(job(data), run_dir)
    tear(run_dir, "last.pt", "resume.pt", "epoch002.pt", "epoch003.pt")
    with pytest.raises(XrayDetError, match="--epochs 3 must exceed the 3 epochs already done"):
        resume_training(run_dir, epochs=3)
    assert [r["epoch"] for r in read_results_csv(run_dir / "results.csv")] == [1, 2, 3]  # nothing cut back
    assert resume_training(run_dir, epochs=4).epochs_completed == 4


def test_a_failed_retraining_after_a_rewind_still_logs_the_epoch_it_wrote(
    script: Script, data: Path, tmp_path: Path
) -> None:
    """The retrained epoch 2 reaches results.csv and a checkpoint, then training fails before the epoch is
    logged: the summary's epoch 2 must be in MLflow all the same (not only the pre-rewind epoch 2)."""
    run_dir = tmp_path / "run"
    first = run_training(job(data), run_dir)
    tear(run_dir, "last.pt", "resume.pt", "epoch003.pt", "epoch002.pt")
    script.fail_at = (1, 2)

    failed = resume_training(run_dir)

    assert failed.status == "failed" and "scripted failure in epoch 2" in (failed.stop_reason or "")
    assert [r["map50"] for r in failed.history] == [map50(0, 1), map50(1, 2)]
    # as results.csv: the old epochs 2 and 3 dropped when the resume started, the retrained epoch 2 logged
    assert map50_in_mlflow(first.mlflow_run_id) == {1: [map50(0, 1)], 2: [map50(1, 2)]}
    assert RunState.load(run_dir).mlflow_epochs == [1, 2]

    final = resume_training(run_dir)  # from the retrained epoch 2's checkpoint: nothing logged twice

    assert final.status == "completed" and script.calls[-1]["epochs"] == [3]
    assert hook_epochs(final.verdicts, "test_stamp") == [1, 2, 3]
    assert map50_in_mlflow(first.mlflow_run_id) == {1: [map50(0, 1)], 2: [map50(1, 2)], 3: [map50(2, 3)]}
    assert RunState.load(run_dir).mlflow_epochs == [1, 2, 3]


# --- no rewind: the checkpoint is as new as the state, or newer ---


def test_a_checkpoint_as_new_as_the_state_keeps_the_hooks_memory(
    script: Script, data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Killed during epoch 3: state and checkpoint both at epoch 2. Nothing is rewound or replayed."""
    run_dir = tmp_path / "run"
    run_training(job(data), run_dir)
    killed = killed_after(run_dir, script.snapshot(0, 2), rows=2, checkpoint=2)
    assert killed["epoch"] == 2 and killed["hooks"]["checkpoints"]["saved"] == ["epoch001.pt", "epoch002.pt"]

    with caplog.at_level(logging.WARNING, logger="xraydet"):
        again = resume_training(run_dir)

    assert again.status == "completed" and "older than the run's record" not in caplog.text
    resumed = script.calls[-1]
    assert (resumed["start"], resumed["epochs"]) == (2, [3])
    assert resumed["state"]["hooks"] == killed["hooks"]  # the hooks go on with their own memory
    assert resumed["state"]["verdicts"] == killed["verdicts"]
    assert hook_epochs(again.verdicts, "test_stamp") == [1, 2, 3]


def test_a_checkpoint_newer_than_the_state_replays_and_records_the_missed_epoch(
    script: Script, data: Path, tmp_path: Path
) -> None:
    """Killed after epoch 2's checkpoint, before its state write: epoch 2 is replayed into the hooks and the
    gate's verdict there is recorded, not trained again."""
    run_dir = tmp_path / "run"
    run_training(job(data), run_dir)
    killed = killed_after(run_dir, script.snapshot(0, 1), rows=2, checkpoint=2)
    assert killed["epoch"] == 1 and hook_epochs(killed["verdicts"], "decision_gate") == []

    again = resume_training(run_dir)

    assert again.status == "completed", again.stop_reason
    resumed = script.calls[-1]
    assert (resumed["start"], resumed["epochs"]) == (2, [3])
    assert resumed["state"]["epoch"] == 2
    assert hook_epochs(resumed["state"]["verdicts"], "decision_gate") == [2]  # replayed before training
    assert hook_epochs(again.verdicts, "decision_gate") == [2]
    assert hook_epochs(again.verdicts, "test_stamp") == [1, 2, 3]


# --- extensions ---


def test_an_extension_keeps_the_logged_epochs_and_appends_the_new_ones(
    script: Script, data: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    first = run_training(job(data, epochs=2), run_dir)
    with pytest.raises(XrayDetError, match="must exceed the 2 epochs"):
        resume_training(run_dir, epochs=2)

    extended = resume_training(run_dir, epochs=4)

    assert extended.status == "completed", extended.stop_reason
    assert (extended.epochs_completed, extended.epochs_planned) == (4, 4)
    assert extended.resumes == [{"checkpoint": "resume.pt", "from_epoch": 2, "epochs": 4, "extended": True}]
    assert (script.calls[-1]["start"], script.calls[-1]["epochs"]) == (2, [3, 4])
    assert extended.history[:2] == first.history
    assert map50_in_mlflow(first.mlflow_run_id) == {
        1: [map50(0, 1)],
        2: [map50(0, 2)],
        3: [map50(1, 3)],
        4: [map50(1, 4)],
    }
    state = RunState.load(run_dir)
    assert state.mlflow_epochs == [1, 2, 3, 4]
    # The run's new target, for a later plain resume (state first, job.yaml if the state lacks it).
    assert state.train_args["epochs"] == 4
    assert yaml.safe_load((run_dir / "job.yaml").read_text())["epochs"] == 4

    summary = run_dir / "summary.json"
    written = summary.stat().st_mtime_ns
    assert resume_training(run_dir) == extended  # all 4 epochs done: nothing to do, nothing rewritten
    assert len(script.calls) == 2 and summary.stat().st_mtime_ns == written
    with pytest.raises(XrayDetError, match="must exceed the 4 epochs"):
        resume_training(run_dir, epochs=4)


def test_a_stopped_run_stays_stopped_until_extended_and_its_extension_resumes(
    script: Script, data: Path, tmp_path: Path
) -> None:
    """The gate stops the run at epoch 1. A plain resume keeps it stopped without training; an extension
    trains on; the extension fails in epoch 3, and a plain resume of it goes on (the stop was before it)."""
    run_dir = tmp_path / "run"
    first = run_training(job(data, gate=stop_gate(1)), run_dir)
    assert first.status == "stopped" and script.calls[0]["epochs"] == [1]
    (run_dir / "summary.json").unlink()  # killed after the stop, before the summary

    again = resume_training(run_dir)

    assert again.status == "stopped" and (again.stop_reason or "").startswith("decision_gate at epoch 1")
    assert len(script.calls) == 1  # not trained

    script.fail_at = (1, 3)
    extended = resume_training(run_dir, epochs=4)

    assert extended.status == "failed" and script.calls[1]["epochs"] == [2]
    assert extended.resumes[-1] == {"checkpoint": "resume.pt", "from_epoch": 1, "epochs": 4, "extended": True}

    final = resume_training(run_dir)

    assert final.status == "completed", final.stop_reason
    assert (script.calls[2]["start"], script.calls[2]["epochs"]) == (3, [4])
    assert [r["epoch"] for r in final.history] == [1, 2, 3, 4]
    assert hook_epochs(final.verdicts, "test_stamp") == [1, 2, 3, 4]
    assert map50_in_mlflow(first.mlflow_run_id) == {
        1: [map50(0, 1)],
        2: [map50(1, 2)],
        3: [map50(1, 3)],  # written before the failure, logged when the failed extension ended
        4: [map50(2, 4)],
    }


def test_a_plain_resume_of_a_stopped_run_gives_the_reason_it_stopped_for(
    script: Script, data: Path, tmp_path: Path
) -> None:
    """The gate and a second hook both stop epoch 1: the run stops for the gate (the first); a plain resume of
    it, killed before its summary, must say the same."""
    run_dir = tmp_path / "run"
    hooks = [{"name": "test_stamp"}, {"name": StopAt.name, "params": {"epoch": 1}}]
    first = run_training(job(data, gate=stop_gate(1), hooks=hooks), run_dir)
    assert first.status == "stopped" and (first.stop_reason or "").startswith("decision_gate at epoch 1")
    (run_dir / "summary.json").unlink()

    again = resume_training(run_dir)

    assert len(script.calls) == 1
    assert (again.status, again.stop_reason) == (first.status, first.stop_reason)


def test_a_timeout_on_record_does_not_stop_a_plain_resume(script: Script, data: Path, tmp_path: Path) -> None:
    script.epoch_s = 1000.0  # one epoch fits the 1500 s budget, two do not
    run_dir = tmp_path / "run"
    first = run_training(job(data, timeout_s=1500, gate={"enabled": False}), run_dir)
    assert first.status == "timed_out" and [v.status for v in first.verdicts if v.decision == "stop"] == [
        "timed_out"
    ]

    again = resume_training(run_dir)  # a fresh budget: one more epoch

    assert again.status == "timed_out" and script.calls[-1]["epochs"] == [2]


@pytest.mark.parametrize(
    ("resumes", "stop_epoch", "stopped"),
    [
        ([], 2, True),
        ([{"from_epoch": 2, "extended": False}], 2, True),  # a plain resume keeps the stop
        ([{"from_epoch": 2, "extended": True}], 2, False),  # the stop came before the extension
        ([{"from_epoch": 2, "extended": True}], 3, True),  # ... this one during it
        ([{"from_epoch": 3, "extended": True}, {"from_epoch": 1, "extended": True}], 3, False),
    ],
)
def test_stop_verdict_on_record_counts_stops_since_the_latest_extension(
    resumes: list[dict[str, Any]], stop_epoch: int, stopped: bool
) -> None:
    stop = Verdict(hook="decision_gate", epoch=stop_epoch, decision="stop", reason="low")
    timeout = Verdict(
        hook="timeout", epoch=stop_epoch + 1, decision="stop", reason="late", status="timed_out"
    )
    state = RunState(verdicts=[stop, timeout], resumes=resumes)
    assert stop_verdict_on_record(state) == (stop if stopped else None)


# --- a run killed after its last epoch, before its summary ---


def test_a_run_killed_after_its_last_epoch_is_finished_as_it_would_have_ended(
    script: Script, data: Path, tmp_path: Path
) -> None:
    """The gate says stop at the last epoch: nothing is cut short, so the run is ``completed``, killed before
    its summary or not."""
    run_dir = tmp_path / "run"
    first = run_training(job(data, epochs=2, gate=stop_gate(2)), run_dir)
    assert first.status == "completed" and first.stop_reason is None
    assert hook_epochs([v for v in first.verdicts if v.decision == "stop"], "decision_gate") == [2]
    for summary in (run_dir / "summary.json", run_dir / "weights" / "summary.json"):
        summary.unlink()
    with pytest.raises(XrayDetError, match="must exceed the 2 epochs"):
        resume_training(run_dir, epochs=2)
    assert not (run_dir / "summary.json").exists()

    again = resume_training(run_dir)

    assert (again.status, again.stop_reason) == (first.status, first.stop_reason)
    assert len(script.calls) == 1 and again.history == first.history
    assert load_run_result(run_dir) == again
    assert map50_in_mlflow(first.mlflow_run_id) == {1: [map50(0, 1)], 2: [map50(0, 2)]}


def test_a_run_killed_while_writing_its_last_checkpoint_trains_the_last_epoch_again(
    script: Script, data: Path, tmp_path: Path
) -> None:
    """Ultralytics writes an epoch's results.csv row, then its last.pt: killed in between (last.pt torn, no
    resume.pt, no summary), the run's weights are epoch 2's. Finishing it as ``completed`` would pass them off
    as epoch 3's; epoch 3 is trained again from the newest checkpoint instead."""
    run_dir = tmp_path / "run"
    run_training(job(data), run_dir)
    killed_after(run_dir, script.snapshot(0, 2), rows=3, checkpoint=2)
    tear(run_dir, "last.pt")

    again = resume_training(run_dir)

    assert again.status == "completed", again.stop_reason
    assert len(script.calls) == 2 and (script.calls[-1]["start"], script.calls[-1]["epochs"]) == (2, [3])
    assert again.resumes[-1]["checkpoint"] == "epoch002.pt"
    assert [r["map50"] for r in again.history] == [map50(0, 1), map50(0, 2), map50(1, 3)]
    assert hook_epochs(again.verdicts, "test_stamp") == [1, 2, 3]


def test_a_run_killed_before_its_first_checkpoint_resumes_from_the_start(
    script: Script, data: Path, tmp_path: Path
) -> None:
    """Killed in epoch 2 of a run that validates and writes ``last.pt`` every 2 epochs: epoch 1 (not
    validated, so never saved) is in results.csv, state.json and MLflow, and there are no weights at all. The
    resume trains from the start in the same folder and MLflow run (the OOM retry's rule when there is no
    checkpoint yet), not an error."""
    run_dir = tmp_path / "run"
    first = run_training(job(data, save_every=2, val_every=2), run_dir)
    shutil.copyfile(script.snapshot(0, 1), run_dir / "state.json")
    header, row = (run_dir / "results.csv").read_text().splitlines()[:2]
    unvalidated = [
        "nan" if name.strip().startswith(("metrics/", "val/")) else value
        for name, value in zip(header.split(","), row.split(","), strict=True)
    ]
    (run_dir / "results.csv").write_text(f"{header}\n{','.join(unvalidated)}\n")
    shutil.rmtree(run_dir / "weights")
    (run_dir / "summary.json").unlink()
    moved = tmp_path / "moved"
    run_dir.rename(moved)  # Ultralytics must write to the folder where the run is now

    again = resume_training(moved)

    assert again.status == "completed", again.stop_reason
    assert (script.calls[-1]["start"], script.calls[-1]["epochs"]) == (0, [1, 2, 3])
    assert again.resumes == [{"checkpoint": None, "from_epoch": 0, "epochs": 3, "extended": False}]
    assert [r["map50"] for r in again.history] == [map50(1, e) for e in (1, 2, 3)]
    assert hook_epochs(again.verdicts, "test_stamp") == [1, 2, 3]
    assert again.mlflow_run_id == first.mlflow_run_id
    assert map50_in_mlflow(again.mlflow_run_id) == {e: [map50(1, e)] for e in (1, 2, 3)}
    assert again.train_args["project"] == str(tmp_path) and again.train_args["name"] == "moved"


def test_a_run_whose_saved_weights_were_moved_away_is_not_restarted(
    script: Script, data: Path, tmp_path: Path
) -> None:
    """A validated epoch was written to ``last.pt``: weights missing now were moved or deleted (to register
    best.pt, say), and training the run again from scratch would overwrite its record."""
    run_dir = tmp_path / "run"
    run_training(job(data), run_dir)
    before = (run_dir / "results.csv").read_text()
    shutil.rmtree(run_dir / "weights")
    with pytest.raises(XrayDetError, match=r"no resumable checkpoint in weights/.*moved"):
        resume_training(run_dir, epochs=5)
    assert (run_dir / "results.csv").read_text() == before


def test_a_run_whose_weights_are_all_torn_is_not_restarted(
    script: Script, data: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    run_training(job(data), run_dir)
    tear(run_dir, *(p.name for p in (run_dir / "weights").glob("*.pt")))
    with pytest.raises(XrayDetError, match="no resumable checkpoint in weights/"):
        resume_training(run_dir, epochs=4)
    assert len(script.calls) == 1


class Killed(BaseException):
    """``kill -9``: not an ``Exception``, so nothing ends the run as failed (its MLflow run stays RUNNING)."""


def mlflow_status(run_id: str | None) -> str:
    from mlflow.tracking import MlflowClient

    return str(MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"]).get_run(str(run_id)).info.status)


@pytest.mark.parametrize("how", ["extended", "rewound"])
def test_a_resume_killed_before_its_summary_is_finished_not_answered_by_the_old_summary(
    script: Script, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """A finished run (its summary written) is trained again: extended from 2 to 3 epochs, or rewound to epoch
    1's checkpoint (epoch 2 retrained). Every epoch trained, the resume is killed before its summary (in the
    final validation): the old summary still stands. A plain resume must finish the run, not answer with the
    old summary (old epochs and metrics) and leave the MLflow run RUNNING."""
    run_dir = tmp_path / "run"
    first = run_training(job(data, epochs=2), run_dir)
    assert first.status == "completed", first.stop_reason
    if how == "rewound":
        tear(run_dir, "last.pt", "resume.pt", "epoch002.pt")
    with monkeypatch.context() as m:
        m.setattr(trainer_module, "write_run_result", lambda result: (_ for _ in ()).throw(Killed()))
        with pytest.raises(Killed):
            resume_training(run_dir, epochs=3 if how == "extended" else None)
    trained = 3 if how == "extended" else 2
    shutil.copyfile(script.snapshot(1, trained), run_dir / "state.json")  # as after its last epoch
    assert load_run_result(run_dir) == first and mlflow_status(first.mlflow_run_id) == "RUNNING"

    again = resume_training(run_dir)

    assert len(script.calls) == 2  # nothing trained again
    assert (again.status, again.stop_reason) == ("completed", None)
    assert (again.epochs_completed, again.epochs_planned) == (trained, trained)
    expected = [map50(0, 1), map50(0, 2), map50(1, 3)] if how == "extended" else [map50(0, 1), map50(1, 2)]
    assert [r["map50"] for r in again.history] == expected
    assert again.resumes == RunState.load(run_dir).resumes and len(again.resumes) == 1
    assert hook_epochs(again.verdicts, "test_stamp") == list(range(1, trained + 1))
    assert load_run_result(run_dir) == again == load_run_result(run_dir / "weights" / "summary.json")
    assert mlflow_status(again.mlflow_run_id) == "FINISHED"

    summary = run_dir / "summary.json"
    written = summary.stat().st_mtime_ns
    assert resume_training(run_dir) == again  # now current: returned as it is, nothing rewritten
    assert len(script.calls) == 2 and summary.stat().st_mtime_ns == written


# --- a kill while Ultralytics writes best.pt (in place, right after last.pt, with the same bytes) ---


def torn_best(run_dir: Path, source: str) -> bytes:
    """Write ``weights/best.pt`` as a kill during its write leaves it: a third of ``source``'s bytes (the
    checkpoint Ultralytics was writing to best.pt too). Returns the whole bytes."""
    whole = (run_dir / "weights" / source).read_bytes()
    (run_dir / "weights" / "best.pt").write_bytes(whole[: len(whole) // 3])
    return whole


def make_best(run_dir: Path, epoch: int) -> None:
    """Make ``epoch`` the best validated epoch of results.csv (highest mAP50-95)."""
    path = run_dir / "results.csv"
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        if int(row["epoch"]) == epoch:
            row["metrics/mAP50-95(B)"] = "0.9"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@register_hook
class TearBest(HookBase):
    """Writes a torn ``weights/best.pt`` after ``epoch``'s checkpoint (as a best.pt write cut short would)."""

    name = "test_tear_best"

    def __init__(self, epoch: int = 1) -> None:
        self.epoch = epoch

    def after_save(self, ctx: TrainContext) -> None:
        if ctx.epoch == self.epoch:
            torn_best(ctx.run_dir, "last.pt")


def test_a_run_that_ends_with_a_torn_best_pt_restores_it_from_a_checkpoint_of_its_epoch(
    script: Script, data: Path, tmp_path: Path
) -> None:
    """No resume: the run's own end finds best.pt unloadable; its summary never points at the torn file."""
    run_dir = tmp_path / "run"
    result = run_training(
        job(data, hooks=[{"name": "test_stamp"}, {"name": "test_tear_best", "params": {"epoch": 3}}]), run_dir
    )

    assert (result.status, result.best_epoch) == ("completed", 3)
    assert result.best_weights == run_dir / "weights" / "best.pt"
    assert result.best_weights.read_bytes() == (run_dir / "weights" / "resume.pt").read_bytes()


def test_a_best_pt_torn_at_the_last_epoch_is_restored_from_last_pt_when_the_run_is_finished(
    script: Script, data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Killed while writing best.pt in its last epoch, before the summary: last.pt holds that epoch, so the
    summary's best.pt is a copy of it, never the torn file."""
    run_dir = tmp_path / "run"
    run_training(job(data), run_dir)
    killed_after(run_dir, script.snapshot(0, 3), rows=3, checkpoint=3)
    whole = torn_best(run_dir, "last.pt")

    with caplog.at_level(logging.WARNING, logger="xraydet"):
        again = resume_training(run_dir)

    assert again.status == "completed" and len(script.calls) == 1  # only finished
    assert (again.best_epoch, again.best_weights) == (3, run_dir / "weights" / "best.pt")
    assert (run_dir / "weights" / "best.pt").read_bytes() == whole
    assert "restored from last.pt" in caplog.text
    assert not list((run_dir / "weights").glob(".best.pt.*"))  # written through a temp file


def test_a_best_pt_torn_in_an_earlier_epoch_is_restored_before_the_resume_trains_on(
    script: Script, data: Path, tmp_path: Path
) -> None:
    """Killed while writing epoch 2's best.pt: last.pt holds epoch 2 until training goes on and overwrites it;
    epoch 3 is no better, so best.pt must be epoch 2's, restored before the resume."""
    run_dir = tmp_path / "run"
    run_training(job(data), run_dir)
    killed_after(run_dir, script.snapshot(0, 2), rows=2, checkpoint=2)
    (run_dir / "weights" / "epoch002.pt").unlink()  # no periodic copy: last.pt is the only one of epoch 2
    make_best(run_dir, 2)
    whole = torn_best(run_dir, "last.pt")

    again = resume_training(run_dir)

    assert again.status == "completed" and script.calls[-1]["epochs"] == [3]
    assert (again.best_epoch, again.best_weights) == (2, run_dir / "weights" / "best.pt")
    assert (run_dir / "weights" / "best.pt").read_bytes() == whole


def test_a_torn_best_pt_no_checkpoint_holds_is_refused_naming_what_is_lost_and_intact(
    script: Script, data: Path, tmp_path: Path
) -> None:
    """Torn while final_eval stripped it (last.pt stripped already, resume.pt of epoch 3), its epoch (2) in no
    intact checkpoint: finishing the run raises instead of writing a summary that points at the torn file;
    the extension the message advises sets the torn file aside and trains on."""
    run_dir = tmp_path / "run"
    run_training(job(data), run_dir)
    make_best(run_dir, 2)
    (run_dir / "weights" / "epoch002.pt").unlink()
    torn_best(run_dir, "epoch001.pt")
    for summary in (run_dir / "summary.json", run_dir / "weights" / "summary.json"):
        summary.unlink()

    with pytest.raises(XrayDetError) as caught:
        resume_training(run_dir)

    message = str(caught.value)
    assert f"{run_dir / 'weights' / 'best.pt'} is torn" in message
    assert "lost: the weights of its best epoch (2)" in message
    assert "intact: weights/resume.pt (epoch 3)" in message
    assert f"`xraydet train --resume {run_dir} --epochs N` (N above 3)" in message
    assert not (run_dir / "summary.json").exists() and len(script.calls) == 1

    extended = resume_training(run_dir, epochs=4)

    assert extended.status == "completed" and script.calls[-1]["epochs"] == [4]
    assert extended.best_weights is None and (run_dir / "weights" / "best.pt.torn").is_file()


# --- the command line ---


@pytest.mark.parametrize(
    "extra",
    [["--run-dir", "elsewhere"], ["job.yaml"], ["--set", "epochs=5"]],
    ids=["run-dir", "job-file", "set"],
)
def test_resume_refuses_the_options_of_a_new_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: list[str]
) -> None:
    """A resume continues the run in its own folder with its own job.yaml: ``--run-dir`` (like a job file or
    ``--set``) would be silently ignored, so it is refused before anything is resumed."""
    from typer.testing import CliRunner

    import xraydet.training
    from xraydet.cli.main import app

    resumed: list[Path] = []
    monkeypatch.setattr(xraydet.training, "resume_training", lambda run, epochs=None: resumed.append(run))
    monkeypatch.chdir(tmp_path)

    result = CliRunner().invoke(app, ["train", "--resume", "run", *extra])

    assert isinstance(result.exception, XrayDetError), result.output
    option = {"--run-dir": "--run-dir", "--set": "--set"}.get(extra[0], "job file")
    assert option in str(result.exception) and resumed == []


# --- the same against Ultralytics (tiny CPU trainings) ---


@pytest.mark.slow
def test_real_rewind_logs_the_retrained_epoch_in_place_of_the_old_one(
    tiny_data: Path, mlflow_home: Path, tmp_path: Path
) -> None:
    body = tiny_job(tiny_data, epochs=2, gate={"enabled": False}, red_flags=NO_FLAGS)
    run_dir = tmp_path / "run"
    first = run_training(job_from_dict(body), run_dir)
    assert first.status == "completed", first.stop_reason
    tear(run_dir, "last.pt", "resume.pt", "epoch002.pt")  # epoch001.pt is left

    again = resume_training(run_dir)

    assert again.status == "completed" and again.resumes[-1]["checkpoint"] == "epoch001.pt"
    assert [r["epoch"] for r in read_results_csv(run_dir / "results.csv")] == [1, 2]
    logged = map50_in_mlflow(again.mlflow_run_id)
    assert logged[1] == [pytest.approx(first.history[0]["map50"])]
    assert logged[2] == [pytest.approx(again.history[1]["map50"])]  # the retrained one only
    assert sorted(logged) == [1, 2]
    assert RunState.load(run_dir).mlflow_epochs == [1, 2]


@pytest.mark.slow
def test_real_stop_at_the_last_epoch_killed_before_the_summary(
    tiny_data: Path, mlflow_home: Path, tmp_path: Path
) -> None:
    body = tiny_job(tiny_data, epochs=2, gate=stop_gate(2), red_flags=NO_FLAGS)
    run_dir = tmp_path / "run"
    first = run_training(job_from_dict(body), run_dir)
    assert (first.status, first.epochs_completed) == ("completed", 2), first.stop_reason
    assert first.verdict("decision_gate").decision == "stop"  # type: ignore[union-attr]
    (run_dir / "summary.json").unlink()
    mtime = (run_dir / "weights" / "best.pt").stat().st_mtime_ns

    again = resume_training(run_dir)

    assert (again.status, again.stop_reason) == ("completed", None)
    assert (run_dir / "weights" / "best.pt").stat().st_mtime_ns == mtime  # not trained again
    assert again.history == first.history


@pytest.mark.slow
def test_real_timeout_in_the_last_epoch_killed_before_the_summary(
    tiny_data: Path, mlflow_home: Path, tmp_path: Path
) -> None:
    """The deadline passes during the last epoch (cut short, so ``timed_out``); killed before its summary,
    the run is finished as it would have ended: ``timed_out``, not ``completed``."""
    body = tiny_job(tiny_data, epochs=1, timeout_s=0.5, gate={"enabled": False}, red_flags=NO_FLAGS)
    run_dir = tmp_path / "run"
    first = run_training(job_from_dict(body), run_dir)
    assert (first.status, first.epochs_completed) == ("timed_out", 1), first.stop_reason
    for summary in (run_dir / "summary.json", run_dir / "weights" / "summary.json"):
        summary.unlink()

    again = resume_training(run_dir)

    assert (again.status, again.stop_reason) == (first.status, first.stop_reason)
    assert again.history == first.history and load_run_result(run_dir) == again


@pytest.mark.slow
def test_real_best_pt_torn_before_the_summary_is_restored_from_its_epochs_checkpoint(
    tiny_data: Path, mlflow_home: Path, tmp_path: Path
) -> None:
    """Against Ultralytics' own checkpoints (their best fitness checked too): a best.pt torn by a kill before
    the summary is replaced by the intact checkpoint of its epoch, which YOLO loads."""
    from ultralytics import YOLO

    body = tiny_job(tiny_data, epochs=2, gate={"enabled": False}, red_flags=NO_FLAGS)
    run_dir = tmp_path / "run"
    first = run_training(job_from_dict(body), run_dir)
    assert first.status == "completed" and first.best_weights is not None, first.stop_reason
    (run_dir / "summary.json").unlink()
    best = run_dir / "weights" / "best.pt"
    best.write_bytes(best.read_bytes()[: best.stat().st_size // 3])

    again = resume_training(run_dir)

    assert (again.status, again.best_weights, again.best_epoch) == ("completed", best, first.best_epoch)
    held = torch.load(best, map_location="cpu", weights_only=False)
    assert held["epoch"] + 1 == first.best_epoch and held["best_fitness"] == held["train_metrics"]["fitness"]
    YOLO(str(best))
