"""Hooks on recorded metric histories: real results.csv files and hand-made ones whose answers are known."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import pytest

from xraydet.errors import ConfigError
from xraydet.training.history import read_results_csv
from xraydet.training.hooks import (
    DecisionGate,
    HookBase,
    HookList,
    LoaderStarvedFlag,
    NanLossFlag,
    OscillationFlag,
    OverfitFlag,
    PeriodicCheckpoint,
    PlateauFlag,
    Timeout,
    TrainContext,
    Verdict,
    build_hook,
)
from xraydet.training.hooks.decision_gate import decide
from xraydet.training.hooks.red_flags import epochs_since_best, oscillation, slope

FIXTURES = Path(__file__).parent / "fixtures"
REAL_6 = FIXTURES / "opixray_n64_160px_6ep.csv"
REAL_20 = FIXTURES / "opixray_n64_160px_sgd_20ep.csv"
SYNTH_30 = FIXTURES / "synth_n96_160px_sgd_30ep.csv"  # mAP50 0 until epoch 19, then up to 0.42 at 30
SYNTH_HOT = FIXTURES / "synth_n96_160px_sgd_lr0.3_20ep.csv"  # same data, lr0 0.3: val loss swings 0 .. 8e8
RUN_D_WAITS = FIXTURES / "h200_pair_loader_wait.csv"  # per-epoch loader wait of two GPU jobs (README)


def feed(hook: HookBase, history: list[dict[str, Any]], tmp_path: Path | None = None) -> list[Verdict]:
    """Feed ``history`` epoch by epoch, as the bridge does, and collect the verdicts."""
    ctx = TrainContext(run_dir=tmp_path or Path("."), epochs=len(history))
    out: list[Verdict] = []
    for record in history:
        ctx.epoch = int(record["epoch"])
        ctx.history.append(record)
        out.extend(HookList([hook]).call("after_fit_epoch", ctx, record))
    return out


def series(key: str, values: list[float], **other: list[float]) -> list[dict[str, Any]]:
    rows = []
    for i, v in enumerate(values):
        row = {"epoch": i + 1, key: v}
        row.update({k: vals[i] for k, vals in other.items()})
        rows.append(row)
    return rows


# --- decision gate ---


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.55, "continue"),
        (0.40, "continue"),  # the seed: "> 0.40 continue"; the boundary counts as on track
        (0.3999, "warn"),
        (0.35, "warn"),
        (0.30, "warn"),  # "0.30-0.40: continue, may reach 0.45+"
        (0.2999, "stop"),
        (0.0, "stop"),
        (float("nan"), "stop"),
    ],
)
def test_decide_follows_the_seed_thresholds(value: float, expected: str) -> None:
    assert decide(value, continue_above=0.40, stop_below=0.30)[0] == expected


def test_gate_fires_once_at_its_epoch_with_the_numbers() -> None:
    history = series("map50", [0.05, 0.20, 0.36, 0.45, 0.10])
    verdicts = feed(DecisionGate(decision_epoch=3), history)
    assert len(verdicts) == 1
    v = verdicts[0]
    assert (v.hook, v.epoch, v.decision) == ("decision_gate", 3, "warn")
    assert v.values["map50"] == pytest.approx(0.36)
    assert "0.36" in v.reason


def test_gate_on_a_real_history_stops_a_stuck_run() -> None:
    history = read_results_csv(REAL_20)
    verdicts = feed(DecisionGate(decision_epoch=10), history)
    assert [(v.epoch, v.decision) for v in verdicts] == [(10, "stop")]
    assert verdicts[0].values["map50"] == history[9]["map50"]


@pytest.mark.parametrize(("epoch", "expected"), [(25, "stop"), (28, "warn"), (30, "continue"), (10, "stop")])
def test_gate_on_a_real_learning_curve(epoch: int, expected: str) -> None:
    history = read_results_csv(SYNTH_30)
    verdicts = feed(DecisionGate(decision_epoch=epoch), history)
    assert [(v.epoch, v.decision) for v in verdicts] == [(epoch, expected)]


def test_gate_on_stop_warn_downgrades_and_keeps_going() -> None:
    verdicts = feed(DecisionGate(decision_epoch=1, on_stop="warn"), series("map50", [0.1, 0.2]))
    assert [v.decision for v in verdicts] == ["warn"]


def test_gate_state_round_trip_prevents_a_second_verdict() -> None:
    gate = DecisionGate(decision_epoch=2)
    feed(gate, series("map50", [0.1, 0.5]))
    restored = DecisionGate(decision_epoch=2)
    restored.load_state_dict(gate.state_dict())
    assert restored.verdict is not None and restored.verdict.decision == "continue"
    assert feed(restored, series("map50", [0.1, 0.5, 0.6])) == []


def test_gate_missing_metric_names_it() -> None:
    with pytest.raises(KeyError, match="map50"):
        feed(DecisionGate(decision_epoch=1), series("recall", [0.3]))


# --- measurements ---


@pytest.mark.parametrize(
    ("values", "ratio", "amplitude"),
    [
        ([1, 2, 1, 2, 1], 1.0, 1 / 1.4),  # every step reverses; mean |step| 1 over mean level 1.4
        ([1, 2, 3, 4], 0.0, 1 / 2.5),
        ([2, 2, 2, 2], 0.0, 0.0),
        ([1, 2, 3, 2, 1], 1 / 3, 1 / 1.8),
        ([5.0], 0.0, 0.0),
    ],
)
def test_oscillation_measure(values: list[float], ratio: float, amplitude: float) -> None:
    got_ratio, got_amp = oscillation(values)
    assert got_ratio == pytest.approx(ratio)
    assert got_amp == pytest.approx(amplitude)


@pytest.mark.parametrize(
    ("values", "expected"),
    [([1, 2, 3], 1.0), ([3, 2, 1], -1.0), ([1, 1, 1], 0.0), ([0, 2, 1, 3], 0.8), ([7], 0.0)],
)
def test_slope(values: list[float], expected: float) -> None:
    assert slope(values) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("values", "min_delta", "expected"),
    [
        ([0.1, 0.2, 0.3], 0.0, 0),
        ([0.3, 0.2, 0.1], 0.0, 2),
        ([0.1, 0.3, 0.3, 0.29], 0.0, 2),
        ([0.1, 0.3, 0.3005], 0.001, 1),  # +0.0005 is not a new best with min_delta 0.001
        ([0.0, 0.0, 0.0, 0.0], 0.0, 3),
    ],
)
def test_epochs_since_best(values: list[float], min_delta: float, expected: int) -> None:
    assert epochs_since_best(values, min_delta) == expected


# --- red flags on histories ---

ZIGZAG = [0.20, 0.30, 0.18, 0.33, 0.17, 0.31, 0.19, 0.34]
SMOOTH = [0.10, 0.15, 0.20, 0.24, 0.27, 0.30, 0.32, 0.33]
NOISY_PLATEAU = [0.400, 0.402, 0.399, 0.401, 0.400, 0.402, 0.399, 0.401]  # flips sign, but only 0.5 %


@pytest.mark.parametrize(
    ("values", "fires_at"),
    [(ZIGZAG, [4]), (SMOOTH, []), (NOISY_PLATEAU, [])],
)
def test_oscillation_flag(values: list[float], fires_at: list[int]) -> None:
    flag = OscillationFlag(metrics=["map50"], window=4, min_sign_change_ratio=0.6, min_rel_amplitude=0.1)
    verdicts = feed(flag, series("map50", values))
    assert [v.epoch for v in verdicts] == fires_at  # once per episode, not every epoch
    for v in verdicts:
        assert v.decision == "warn"
        assert v.values["sign_change_ratio"] >= 0.6 and v.values["rel_amplitude"] >= 0.1


def test_oscillation_flag_rearms_after_calm_and_can_stop() -> None:
    values = [1, 2, 1, 2, 3, 4, 5, 6, 7, 6, 7, 6]
    flag = OscillationFlag(metrics=["val_loss"], window=4, min_rel_amplitude=0.05, action="stop")
    verdicts = feed(flag, series("val_loss", values))
    assert [v.epoch for v in verdicts] == [4, 11]  # calm from epoch 5, zigzag again by epoch 11
    assert all(v.decision == "stop" and not v.immediate for v in verdicts)


@pytest.mark.parametrize(
    ("values", "patience", "fires_at"),
    [
        ([0.1, 0.2, 0.3, 0.3, 0.3, 0.3], 3, [6]),
        ([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], 3, []),
        ([0.1, 0.1, 0.1, 0.2, 0.2, 0.2, 0.2], 2, [3, 6]),  # re-armed by the new best at epoch 4
    ],
)
def test_plateau_flag(values: list[float], patience: int, fires_at: list[int]) -> None:
    verdicts = feed(PlateauFlag(patience=patience, min_delta=0.0), series("map50", values))
    assert [v.epoch for v in verdicts] == fires_at


@pytest.mark.parametrize(
    ("values", "fires_at"),
    [
        ([5.0, 4.0, 3.0, 2.0, 1.5, 1.2], []),  # a falling loss improves every epoch
        ([5.0, 4.0, 4.0, 4.1, 4.2, 3.0], [5]),  # stuck at 4.0 from epoch 2, a new (lower) best at 6
    ],
)
def test_plateau_on_a_loss_counts_the_lowest_value_as_the_best(
    values: list[float], fires_at: list[int]
) -> None:
    verdicts = feed(PlateauFlag(metric="val_loss", patience=3, min_delta=0.0), series("val_loss", values))
    assert [v.epoch for v in verdicts] == fires_at
    for v in verdicts:
        assert (v.values["best"], v.values["best_epoch"]) == (4.0, 2)


def test_plateau_fires_on_the_real_stuck_run() -> None:
    history = read_results_csv(REAL_20)
    assert max(r["map50"] for r in history) == 0.0  # the recorded run never found an object
    verdicts = feed(PlateauFlag(patience=5), history)
    assert [v.epoch for v in verdicts] == [6]
    assert verdicts[0].values["epochs_since_best"] == 5


def test_real_learning_curve_flags() -> None:
    """Epochs 4-17 of the recorded synth run: train loss falls while val loss creeps up (+2.5 %), then both
    fall once the model starts finding objects. mAP50 is 0.0 for epochs 1-19."""
    history = read_results_csv(SYNTH_30)
    overfit = feed(OverfitFlag(), history)  # defaults: window 10, min_val_rise 2 %
    assert len(overfit) == 1 and 10 <= overfit[0].epoch <= 17
    assert overfit[0].values["val_rel_rise"] >= 0.02 and overfit[0].values["train_loss_slope"] < 0
    plateau = feed(PlateauFlag(patience=10), history)
    assert [v.epoch for v in plateau] == [11]  # ten epochs after the first 0.0, re-armed by epoch 20's best
    assert feed(OscillationFlag(), history) == []  # a rising curve with two small dips does not oscillate


def test_oscillation_fires_on_a_real_run_with_a_far_too_high_learning_rate() -> None:
    history = read_results_csv(SYNTH_HOT)
    assert all(math.isfinite(r["val_loss"]) for r in history)  # not a NaN case: finite but wild
    verdicts = [v for v in feed(OscillationFlag(), history) if v.values["metric"] == "val_loss"]
    assert verdicts and verdicts[0].epoch <= 14
    assert verdicts[0].values["sign_change_ratio"] >= 0.6 and verdicts[0].values["rel_amplitude"] > 1.0
    assert feed(NanLossFlag(), history) == []


OVERFIT_TRAIN = [3.0, 2.8, 2.6, 2.4, 2.2, 2.0, 1.8]
OVERFIT_VAL = [3.0, 2.9, 2.85, 2.9, 3.0, 3.1, 3.2]
HEALTHY_VAL = [3.0, 2.9, 2.8, 2.7, 2.6, 2.5, 2.4]


@pytest.mark.parametrize(
    ("train", "val", "fires_at"),
    [
        (OVERFIT_TRAIN, OVERFIT_VAL, [5]),
        (OVERFIT_TRAIN, HEALTHY_VAL, []),
        (list(reversed(OVERFIT_TRAIN)), OVERFIT_VAL, []),
    ],
)
def test_overfit_flag(train: list[float], val: list[float], fires_at: list[int]) -> None:
    flag = OverfitFlag(window=4, min_val_rise=0.02)
    verdicts = feed(flag, series("train_loss", train, val_loss=val))
    assert [v.epoch for v in verdicts] == fires_at
    for v in verdicts:
        assert v.values["train_loss_slope"] < 0 < v.values["val_loss_slope"]


@pytest.mark.parametrize("path", [REAL_6, REAL_20])
def test_overfit_and_oscillation_stay_quiet_on_real_runs_with_falling_val_loss(path: Path) -> None:
    history = read_results_csv(path)
    assert feed(OverfitFlag(window=5), history) == []
    assert feed(OscillationFlag(window=5), history) == []


# --- starved data loader ---


def run_d_history(job: str) -> list[dict[str, Any]]:
    with RUN_D_WAITS.open() as f:
        rows = [r for r in csv.DictReader(f) if r["job"] == job]
    return [{"epoch": int(r["epoch"]), "loader_wait_frac": float(r["loader_wait_frac"])} for r in rows]


def test_loader_flag_fires_on_the_gpu_job_whose_loader_could_not_keep_up() -> None:
    starved = feed(LoaderStarvedFlag(), run_d_history("pair-s-xray"))
    # epoch 1 (start-up) left out; the median of epochs 2-6; once only, though epochs 11-13 after the
    # validation at epoch 10 were fed (the workers filled their queues during it)
    assert [v.epoch for v in starved] == [6]
    assert starved[0].decision == "warn"
    assert starved[0].values["median_wait_frac"] == pytest.approx(0.3966)
    assert "epochs 2-6" in starved[0].reason and "40%" in starved[0].reason
    assert feed(LoaderStarvedFlag(), run_d_history("pair-s-recipe")) == []  # 24% wait in epoch 1 only


@pytest.mark.parametrize(
    ("waits", "window", "fires_at"),
    [
        ([0.9, 0.1, 0.1, 0.1], 2, []),  # the start-up epoch alone never counts
        ([0.9, 0.3, 0.3, 0.1, 0.1, 0.1], 2, [3]),
        ([0.0, 0.3, 0.3, 0.1, 0.1, 0.3, 0.3], 2, [3]),  # once per training process
        ([0.0, 0.24, 0.24, 0.24, 0.24], 3, []),  # below the 25% threshold
        ([0.0, 0.5, 0.1, 0.5, 0.1, 0.5], 3, [4]),  # a median: one quick epoch does not hide a starved loader
        ([0.0, 0.1, 0.5, 0.1, 0.1, 0.5, 0.1], 3, []),  # nor does one slow epoch in three make one
    ],
)
def test_loader_flag(waits: list[float], window: int, fires_at: list[int]) -> None:
    verdicts = feed(LoaderStarvedFlag(window=window, max_wait_frac=0.25), series("loader_wait_frac", waits))
    assert [v.epoch for v in verdicts] == fires_at


def test_loader_flag_rearms_in_each_training_process_and_leaves_out_its_first_epoch() -> None:
    flag = LoaderStarvedFlag(window=2, advice="raise `workers` (4 now)", action="stop")
    ctx = TrainContext(run_dir=Path("."), epochs=20)
    verdicts: list[Verdict] = []

    def train(epochs: list[tuple[int, float]]) -> None:
        HookList([flag]).call("before_train", ctx)
        for epoch, wait in epochs:
            ctx.epoch = epoch
            ctx.history.append({"epoch": epoch, "loader_wait_frac": wait})
            verdicts.extend(HookList([flag]).call("after_fit_epoch", ctx, ctx.history[-1]))

    train([(1, 0.0), (2, 0.4), (3, 0.4), (4, 0.4)])
    state = flag.state_dict()  # what state.json keeps for a resume
    flag = LoaderStarvedFlag(window=2, advice="raise `workers` (4 now)", action="stop")
    flag.load_state_dict(state)
    ctx.start_epoch = 4  # resumed after epoch 4: epoch 5 is its start-up epoch
    train([(5, 0.9), (6, 0.1), (7, 0.3), (8, 0.5)])
    assert [(v.epoch, v.decision) for v in verdicts] == [(3, "stop"), (8, "stop")]
    assert verdicts[0].values["median_wait_frac"] == pytest.approx(0.4)
    assert verdicts[1].values["median_wait_frac"] == pytest.approx(0.4)  # epochs 7-8; 6-7 was 0.2
    assert verdicts[1].reason.endswith("; raise `workers` (4 now)")


@pytest.mark.parametrize(
    ("loss", "fires"), [(1.25, False), (float("nan"), True), (float("inf"), True), (None, False)]
)
def test_nan_flag_on_batch_loss_stops_at_once(loss: float | None, fires: bool) -> None:
    ctx = TrainContext(run_dir=Path("."), epochs=3, epoch=2, batch_index=5, loss=loss)
    verdict = NanLossFlag().after_batch(ctx)
    assert (verdict is not None) == fires
    if verdict is not None:
        assert verdict.decision == "stop" and verdict.immediate and verdict.epoch == 2
        assert verdict.values["batch"] == 5


def test_nan_flag_on_epoch_losses_and_warn_mode() -> None:
    history = series("train_loss", [2.0, math.nan], val_loss=[2.0, 2.1])
    verdicts = feed(NanLossFlag(action="warn"), history)
    assert [(v.epoch, v.decision, v.immediate) for v in verdicts] == [(2, "warn", False)]
    assert "train_loss" in verdicts[0].reason


def test_nan_flag_warns_once_per_episode_and_re_arms_after_a_finite_epoch() -> None:
    """With ``warn``, a run Ultralytics recovers from may blow up again: that second episode warns too, but
    the NaN batches of one episode warn once, and an epoch with a NaN batch does not end it."""
    flag, nan = NanLossFlag(action="warn"), math.nan
    ctx = TrainContext(run_dir=Path("."), epochs=9)
    # epoch: (batch losses, the epoch's train_loss)
    epochs = {1: ([2.0, 1.9], 1.95), 2: ([1.8, nan, nan], nan), 3: ([nan, 1.7], nan), 4: ([1.6, nan], 1.6),
              5: ([nan, 1.5], 1.5), 6: ([1.5, 1.4], 1.45), 7: ([nan, nan], nan), 8: ([1.3], 1.3)}  # fmt: skip
    verdicts: list[Verdict] = []
    for epoch, (batches, train_loss) in epochs.items():
        ctx.epoch = epoch
        for i, loss in enumerate(batches):
            ctx.batch_index, ctx.loss = i, loss
            verdicts += HookList([flag]).call("after_batch", ctx)
        record = {"epoch": epoch, "train_loss": train_loss, "val_loss": 2.0}
        ctx.history.append(record)
        verdicts += HookList([flag]).call("after_fit_epoch", ctx, record)
    fired = [(v.epoch, v.values.get("batch"), v.decision) for v in verdicts]
    assert fired == [(2, 1, "warn"), (7, 0, "warn")]  # batch 1 of epoch 2, batch 0 of epoch 7
    assert not flag.active["nan"]  # epoch 8 ended the second episode


# --- checkpoints, timeout ---


def test_periodic_checkpoint_copies_last_every_n_epochs(tmp_path: Path) -> None:
    weights = tmp_path / "weights"
    weights.mkdir()
    hook = PeriodicCheckpoint(every=2)
    ctx = TrainContext(run_dir=tmp_path, epochs=5)
    for epoch in range(1, 6):
        (weights / "last.pt").write_bytes(f"weights after epoch {epoch}".encode())
        ctx.epoch = epoch
        hook.after_save(ctx)
    assert sorted(p.name for p in weights.glob("epoch*.pt")) == ["epoch002.pt", "epoch004.pt"]
    assert (weights / "epoch004.pt").read_bytes() == b"weights after epoch 4"
    assert hook.state_dict() == {"saved": ["epoch002.pt", "epoch004.pt"]}
    assert not list(weights.glob(".*partial"))


def started_timeout(timeout_s: float, epochs: int) -> tuple[Timeout, TrainContext]:
    """A timeout hook at the start of epoch 1 of a fresh training process."""
    hook = Timeout(timeout_s=timeout_s)
    ctx = TrainContext(run_dir=Path("."), epochs=epochs, epoch=1)
    hook.before_train(ctx)
    hook.before_epoch(ctx)
    return hook, ctx


def test_timeout_stops_at_the_deadline_and_before_an_epoch_that_would_not_fit() -> None:
    hook, ctx = started_timeout(100, epochs=10)
    ctx.elapsed_s = 30.0
    assert hook.after_batch(ctx) is None
    assert hook.after_fit_epoch(ctx, {"epoch": 1, "map50": 0.1}) is None  # 30 s used, next ~30 s fits
    ctx.epoch, ctx.elapsed_s = 2, 30.0
    hook.before_epoch(ctx)
    ctx.elapsed_s = 75.0  # this epoch took 45 s; mean 37.5 s; 75 + 37.5 > 100
    verdict = hook.after_fit_epoch(ctx, {"epoch": 2, "map50": 0.2})
    assert verdict is not None and verdict.decision == "stop" and verdict.status == "timed_out"
    assert verdict.values["timeout_s"] == 100


def test_timeout_never_ends_a_run_at_an_epochs_end_on_an_unvalidated_epoch() -> None:
    """val_every > 1: needs_validation said the next epoch fits, but the checkpoint after it ran long."""
    hook, ctx = started_timeout(10, epochs=10)
    ctx.elapsed_s = 4.0
    assert not hook.needs_validation(ctx)  # 4 + 1.25 x 4 < 10: not asked to validate epoch 1
    ctx.elapsed_s = 6.5  # the checkpoint took 2.5 s: 6.5 + mean 6.5 > 10
    assert hook.after_fit_epoch(ctx, {"epoch": 1, "train_loss": 3.0}) is None  # goes on, unvalidated
    ctx.epoch = 2
    hook.before_epoch(ctx)
    ctx.elapsed_s = 10.2
    verdict = hook.after_batch(ctx)  # the deadline ends epoch 2, which Ultralytics validates on a stop
    assert verdict is not None and verdict.epoch == 2 and verdict.status == "timed_out"


def test_timeout_hard_deadline_inside_an_epoch() -> None:
    hook, ctx = started_timeout(10, epochs=3)
    ctx.elapsed_s = 10.5
    verdict = hook.after_batch(ctx)
    assert verdict is not None and verdict.status == "timed_out" and not verdict.immediate
    assert hook.after_batch(ctx) is None  # one verdict per process


# --- registry and hook list ---


def test_registry_errors_list_valid_names_and_parameters() -> None:
    with pytest.raises(ConfigError, match=r"unknown hook 'gate'.*decision_gate"):
        build_hook("gate")
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) \['window'\].*decision_epoch"):
        build_hook("decision_gate", {"window": 3})
    assert isinstance(build_hook("plateau", {"patience": 4}), PlateauFlag)


def test_registry_checks_parameter_types_against_the_constructor() -> None:
    with pytest.raises(
        ConfigError, match=r"hook 'plateau': parameter 'patience': Input should be a valid integer"
    ):
        build_hook("plateau", {"patience": "soon"})
    with pytest.raises(ConfigError, match=r"hook 'oscillation': parameter 'metrics'"):
        build_hook("oscillation", {"metrics": 7})
    timeout = build_hook("timeout", {"timeout_s": 5})
    assert isinstance(timeout, Timeout) and timeout.timeout_s == 5.0


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("plateau", {"metric": "mAP50"}, r"parameter 'metric'.*unknown metric 'mAP50' \(did you mean"),
        ("oscillation", {"metrics": ["map50", "nope"]}, r"parameter 'metrics.1'.*unknown metric 'nope'"),
        ("plateau", {"action": "explode"}, r"parameter 'action': Input should be 'warn' or 'stop'"),
        ("decision_gate", {"on_stop": "halt"}, r"parameter 'on_stop': Input should be 'stop' or 'warn'"),
        (
            "decision_gate",
            {"continue_above": 40},  # a percentage: the gate could never continue
            r"parameter 'continue_above': Input should be less than or equal to 1",
        ),
        ("timeout", {"timeout_s": True}, r"parameter 'timeout_s': expected a number, got the boolean true"),
        # the ranges of the job's settings (red_flags.*, gate.*, timeout_s, checkpoint_every)
        ("plateau", {"patience": 0}, r"parameter 'patience': Input should be greater than or equal to 1"),
        (
            "plateau",
            {"min_delta": -0.1},
            r"parameter 'min_delta': Input should be greater than or equal to 0",
        ),
        ("oscillation", {"window": 2}, r"parameter 'window': Input should be greater than or equal to 3"),
        (
            "oscillation",
            {"min_sign_change_ratio": 1.5},
            r"parameter 'min_sign_change_ratio': Input should be less than or equal to 1",
        ),
        (
            "oscillation",
            {"min_rel_amplitude": -1.0},
            r"parameter 'min_rel_amplitude': Input should be greater than or equal to 0",
        ),
        ("overfitting", {"window": 2}, r"parameter 'window': Input should be greater than or equal to 3"),
        (
            "overfitting",
            {"min_val_rise": -0.5},
            r"parameter 'min_val_rise': Input should be greater than or equal to 0",
        ),
        ("loader_starved", {"window": 1}, r"parameter 'window': Input should be greater than or equal to 2"),
        (
            "loader_starved",
            {"max_wait_frac": 0.0},
            r"parameter 'max_wait_frac': Input should be greater than 0",
        ),
        (
            "loader_starved",
            {"max_wait_frac": 1.5},
            r"parameter 'max_wait_frac': Input should be less than or equal to 1",
        ),
        ("timeout", {"timeout_s": -5}, r"parameter 'timeout_s': Input should be greater than 0"),
        ("timeout", {"timeout_s": 0}, r"parameter 'timeout_s': Input should be greater than 0"),
        ("checkpoints", {"every": -1}, r"parameter 'every': Input should be greater than or equal to 0"),
        (
            "decision_gate",
            {"decision_epoch": 0},
            r"parameter 'decision_epoch': Input should be greater than or equal to 1",
        ),
        (
            "decision_gate",
            {"metric": "val_loss"},
            r"parameter 'metric'.*'val_loss' is not a metric where higher is better",
        ),
    ],
)
def test_extra_hooks_are_held_to_the_rules_of_the_same_settings_in_the_job(
    name: str, params: dict[str, Any], message: str
) -> None:
    """``hooks: [{name: plateau, params: ...}]`` is checked as strictly as ``red_flags.plateau``."""
    with pytest.raises(ConfigError, match=message):
        build_hook(name, params)


def test_an_extra_gate_is_held_to_the_order_of_its_thresholds() -> None:
    """As ``gate.stop_below`` must not exceed ``gate.continue_above`` (a constructor rule: two parameters)."""
    with pytest.raises(ValueError, match=r"stop_below \(0.5\) must not exceed continue_above \(0.4\)"):
        build_hook("decision_gate", {"stop_below": 0.5})
    assert build_hook("decision_gate", {"stop_below": 0.4}).stop_below == 0.4  # type: ignore[attr-defined]


def test_hook_list_refuses_duplicate_names() -> None:
    with pytest.raises(ConfigError, match="plateau"):
        HookList([PlateauFlag(), PlateauFlag()])


def test_after_train_runs_for_every_hook_even_if_one_raises() -> None:
    calls: list[str] = []

    class Boom(HookBase):
        name = "boom"

        def after_train(self, ctx: TrainContext) -> None:
            calls.append(self.name)
            raise RuntimeError("boom")

    class Quiet(HookBase):
        name = "quiet"

        def after_train(self, ctx: TrainContext) -> None:
            calls.append(self.name)

    with pytest.raises(RuntimeError, match="boom"):
        HookList([Boom(), Quiet()]).after_train(TrainContext(run_dir=Path("."), epochs=1))
    assert calls == ["boom", "quiet"]
