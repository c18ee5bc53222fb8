"""Job files and presets: seed keys, Ultralytics arguments, unknown keys, --set, offline model rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from xraydet.errors import ConfigError
from xraydet.training import TrainJob, job_from_dict, list_presets, load_job, load_preset
from xraydet.training.hooks import HookBase, register_hook
from xraydet.training.job import GateConfig, apply_sets

REPO = Path(__file__).resolve().parents[2]

# Issue 3's two presets, copied from the seed plan's Phase 1 table (old / new columns).
BASELINE = {
    "optimizer": "SGD", "lr0": 0.01, "lrf": 0.01, "momentum": 0.937, "weight_decay": 0.0005,
    "warmup_epochs": 3, "warmup_momentum": 0.8, "degrees": 15, "translate": 0.1, "scale": 0.5, "shear": 5,
    "mosaic": 1.0, "mixup": 0.1, "hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.4, "batch": 16,
}  # fmt: skip
IMPROVED = {
    "optimizer": "AdamW", "lr0": 0.002, "lrf": 0.001, "momentum": 0.95, "weight_decay": 0.0001,
    "warmup_epochs": 5, "warmup_momentum": 0.9, "degrees": 10, "translate": 0.05, "scale": 0.3, "shear": 3,
    "mosaic": 0.8, "mixup": 0.0, "hsv_h": 0.01, "hsv_s": 0.5, "hsv_v": 0.3, "batch": 8,
}  # fmt: skip


@register_hook
class Picky(HookBase):
    """A hook whose constructor refuses a value its annotation allows."""

    name = "test_picky"

    def __init__(self, every: int = 1) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.every = every


def write_job(tmp_path: Path, body: dict[str, Any]) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


@pytest.mark.parametrize(("name", "expected"), [("baseline", BASELINE), ("improved", IMPROVED)])
def test_presets_hold_exactly_the_issue_values(name: str, expected: dict[str, Any]) -> None:
    assert load_preset(name).args == expected


def test_unknown_preset_lists_the_valid_ones() -> None:
    assert {"baseline", "improved"} <= set(list_presets())
    with pytest.raises(
        ConfigError, match=r"unknown preset 'improvd' \(did you mean 'improved'\?\).*baseline"
    ):
        load_preset("improvd")


def test_a_preset_file_is_a_preset_and_is_checked(tmp_path: Path) -> None:
    good = tmp_path / "mine.yaml"
    good.write_text("description: mine\nargs: {lr0: 0.005, cos_lr: true}\n")
    assert load_preset(good).args == {"lr0": 0.005, "cos_lr": True}
    bad = tmp_path / "bad.yaml"
    bad.write_text("args: {lr_0: 0.005}\n")
    with pytest.raises(
        ConfigError, match=r"bad.yaml: args: unknown Ultralytics train argument 'lr_0'.*'lr0'"
    ):
        load_preset(bad)


def test_seed_job_keys_with_string_values(tmp_path: Path, data_yaml: Path) -> None:
    path = write_job(
        tmp_path,
        {
            "MODEL_NAME": "yolov8x.yaml",
            "EPOCHS": "200",
            "BATCH_SIZE": "8",
            "TIMEOUT": 14400,
            "DATASET": "data.yaml",
        },
    )
    job = load_job(path)
    assert (job.model, job.epochs, job.batch, job.timeout_s) == ("yolov8x.yaml", 200, 8, 14400.0)
    assert job.data == data_yaml.resolve()
    assert job.gate.resolved_epoch(job.epochs) == 100  # the seed's decision epoch for its 200-epoch run


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"epochz": 3}, r"unknown key 'epochz' \(did you mean 'epochs'"),
        ({"EPOCH": 3}, r"unknown key 'EPOCH' \(did you mean 'EPOCHS'"),
        ({"lr_0": 0.1}, r"unknown key 'lr_0' \(did you mean 'lr0'"),
        ({"save_period": 5}, r"'save_period' is managed by xraydet; use the job's `checkpoint_every`"),
        ({"resume": True}, r"'resume' is managed by xraydet; use `xraydet train --resume RUN_DIR`"),
        ({"EPOCHS": "10", "epochs": 20}, r"both 'EPOCHS' \(10\) and 'epochs' \(20\)"),
        ({"epochs": "many"}, r"key 'epochs'"),
        (
            {"gate": {"stop_below": 0.5}},
            r"key 'gate'.*stop_below \(0.5\) must not exceed continue_above \(0.4\)",
        ),
        # the order is checked against defaults too
        (
            {"gate": {"continue_above": 0.2}},
            r"key 'gate'.*stop_below \(0.3\) must not exceed continue_above \(0.2\)",
        ),
        (
            {"gate": {"metric": "mAP50"}},
            r"key 'gate.metric'.*unknown metric 'mAP50' \(did you mean 'map50'.*val_loss",
        ),
        ({"red_flags": {"plateau": {"metric": "map5095"}}}, r"key 'red_flags.plateau.metric'.*'map50_95'"),
        (
            {"red_flags": {"oscillation": {"metrics": ["map50", "val_los"]}}},
            r"key 'red_flags.oscillation.metrics'.*item 1: unknown metric 'val_los' \(did you mean",
        ),
        ({"lr0": "fast"}, r"key 'lr0': 'lr0=fast' is of invalid type str"),
        ({"overrides": {"mosaic": 1.5}}, r"key 'mosaic': 'mosaic=1.5' is an invalid value"),
        ({"close_mosaic": 2.5}, r"key 'close_mosaic'.*must be an int"),
        (
            {"hooks": [{"name": "nope"}]},
            r"key 'hooks\[0\].name': unknown hook 'nope'.*registered hooks: .*plateau",
        ),
        (
            {"hooks": [{"name": "timeout", "params": {"timeout_s": "soon"}}]},
            r"key 'hooks\[0\].params': hook 'timeout': parameter 'timeout_s': Input should be a valid number",
        ),
        (
            {"hooks": [{"name": "test_picky", "params": {"every": 0}}]},
            r"key 'hooks\[0\].params': ValueError: every must be >= 1",
        ),
        (  # with the built-in plateau off, an extra one is held to red_flags.plateau's ranges
            {
                "red_flags": {"plateau": {"enabled": False}},
                "hooks": [{"name": "plateau", "params": {"patience": 0}}],
            },
            r"key 'hooks\[0\].params': hook 'plateau': parameter 'patience': Input should be greater than or "
            r"equal to 1",
        ),
        (
            {"timeout_s": None, "hooks": [{"name": "timeout", "params": {"timeout_s": -5}}]},
            r"key 'hooks\[0\].params': hook 'timeout': parameter 'timeout_s': Input should be greater than 0",
        ),
        (
            {"gate": {"enabled": False}, "hooks": [{"name": "decision_gate", "params": {"stop_below": 0.5}}]},
            r"key 'hooks\[0\].params': ValueError: stop_below \(0.5\) must not exceed continue_above",
        ),
        (
            {"hooks": [{"name": "plateau"}]},
            r"key 'hooks\[0\].name': the job already has a hook named 'plateau'",
        ),
        ({"experiment": ""}, r"key 'experiment'.*empty"),
        (
            {"red_flags": {"loader_starved": {"max_wait_frac": 0}}},
            r"key 'red_flags.loader_starved.max_wait_frac'.*greater than 0",
        ),
        ({"gate": {"decison_epoch": 5}}, r"key 'gate.decison_epoch'"),
        (
            {"gate": {"metric": "val_loss"}},  # higher is better at the gate: a loss would stop the learners
            r"key 'gate.metric'.*'val_loss' is not a metric where higher is better.*map50, map50_95",
        ),
        ({"overrides": {"batch": 4}}, r"'batch' is a job field"),
        ({"overrides": ["lr0"]}, r"key 'overrides': expected a mapping.*got list"),
        ({"overrides": 5}, r"key 'overrides': expected a mapping.*got int"),
        ({"overrides": "lr0=0.1"}, r"key 'overrides': expected a mapping.*got str"),
        ({"overrides": {"lr_0": 4}}, r"unknown Ultralytics train argument 'lr_0'"),
        ({"model": "yolov8x.pt"}, r"'yolov8x.pt' is not a local file.*never downloads.*'yolov8x.yaml'"),
        ({"model": "not-a-model.yaml"}, r"neither a local file nor an Ultralytics model config"),
        ({"preset": "fast"}, r"unknown preset 'fast'"),
        (
            {"data": "missing/data.yaml"},
            r"key 'data': missing/data.yaml does not exist beside the job \(.*\) or in the current folder",
        ),
    ],
)
def test_bad_jobs_name_the_file_and_key(
    tmp_path: Path, data_yaml: Path, body: dict[str, Any], message: str
) -> None:
    path = write_job(tmp_path, {"data": "data.yaml", **body})
    with pytest.raises(ConfigError, match=message) as err:
        load_job(path)
    assert str(err.value).startswith(str(path))


def test_settings_of_a_switched_off_gate_or_flag_are_not_judged(tmp_path: Path, data_yaml: Path) -> None:
    """An off gate or red flag never reads its settings: a job that switches one off stays valid."""
    body = {
        "data": "data.yaml",
        "gate": {"enabled": False, "continue_above": 0.2, "metric": "fitness"},
        "red_flags": {
            "plateau": {"enabled": False, "metric": "fitness"},
            "oscillation": {"enabled": False, "metrics": ["fitness"]},
        },
    }
    job = load_job(write_job(tmp_path, body))
    assert not job.gate.enabled and job.red_flags.plateau.metric == "fitness"
    body["red_flags"]["plateau"]["enabled"] = True
    with pytest.raises(ConfigError, match=r"key 'red_flags.plateau.metric'.*unknown metric 'fitness'"):
        load_job(write_job(tmp_path, body))


def test_a_job_warns_of_a_starved_loader_by_default_and_names_its_own_fix(data_yaml: Path) -> None:
    from xraydet.training.trainer import build_job_hooks

    job = job_from_dict({"data": str(data_yaml), "workers": 3, "xray_augment": {"threat_projection": 0.5}})
    (flag,) = [h for h in build_job_hooks(job).hooks if h.name == "loader_starved"]
    assert (flag.action, flag.window, flag.max_wait_frac) == ("warn", 5, 0.25)
    assert "raise `workers` (3 now)" in flag.advice and "threat_projection 0.5" in flag.advice
    assert "rot90" not in flag.advice
    off = job_from_dict({"data": str(data_yaml), "red_flags": {"loader_starved": {"enabled": False}}})
    assert "loader_starved" not in {h.name for h in build_job_hooks(off).hooks}


def test_the_starved_loader_advice_fits_the_resolved_train_arguments(data_yaml: Path) -> None:
    """Advice is judged on what Ultralytics will get: the RAM cache the recipe's preset already sets is not
    advised again, and on the CPU, where Ultralytics sets ``workers`` to 0, more workers are not advised."""
    from xraydet.training.trainer import loader_advice

    recipe = job_from_dict({"data": str(data_yaml), "preset": "xray-fast", "workers": 14})
    assert loader_advice(recipe) == "raise `workers` (14 now)"
    uncached = job_from_dict({"data": str(data_yaml), "preset": "xray-fast", "overrides": {"cache": "disk"}})
    assert "`cache: ram`" in loader_advice(uncached)
    assert "(Ultralytics' default 8 now)" in loader_advice(uncached)
    cpu = job_from_dict({"data": str(data_yaml), "device": "cpu", "workers": 0})
    assert "raise `workers`" not in loader_advice(cpu)
    assert "`workers` has no effect" in loader_advice(cpu) and "`cache: ram`" in loader_advice(cpu)


def test_numbers_yaml_reads_as_text_are_numbers(tmp_path: Path, data_yaml: Path) -> None:
    """YAML 1.1 reads ``1e-3`` as a string; Ultralytics would refuse it when training starts."""
    path = tmp_path / "job.yaml"
    path.write_text("data: data.yaml\nlr0: 1e-3\nclose_mosaic: 1e1\noverrides: {weight_decay: 5e-4}\n")
    assert yaml.safe_load(path.read_text())["lr0"] == "1e-3"
    job = load_job(path)
    assert job.overrides == {"lr0": 0.001, "close_mosaic": 10, "weight_decay": 0.0005}
    preset = tmp_path / "mine.yaml"
    preset.write_text("args: {lr0: 2e-3}\n")
    assert load_preset(preset).args == {"lr0": 0.002}
    preset.write_text("args: {lr0: fast}\n")
    with pytest.raises(ConfigError, match=r"mine.yaml: args: key 'lr0'.*invalid type str"):
        load_preset(preset)


def test_ultralytics_args_at_top_level_go_to_overrides_and_win_over_the_preset(
    tmp_path: Path, data_yaml: Path
) -> None:
    job = load_job(
        write_job(tmp_path, {"data": "data.yaml", "preset": "baseline", "lr0": 0.001, "cos_lr": True})
    )
    assert job.overrides == {"lr0": 0.001, "cos_lr": True}
    args = job.train_args()
    assert args["lr0"] == 0.001 and args["cos_lr"] is True
    assert args["optimizer"] == "SGD" and args["batch"] == 16  # the rest of the preset stays
    job8 = load_job(write_job(tmp_path, {"data": "data.yaml", "preset": "baseline", "batch": 8}))
    assert job8.train_args()["batch"] == 8  # a job field beats the preset


def test_a_local_pt_is_a_valid_start(tmp_path: Path, data_yaml: Path) -> None:
    weights = tmp_path / "start.pt"
    weights.write_bytes(b"not inspected here")
    job = load_job(write_job(tmp_path, {"data": "data.yaml", "model": "start.pt"}))
    assert job.model == str(weights.resolve())


def test_set_overrides_parse_yaml_and_reach_into_sections(tmp_path: Path, data_yaml: Path) -> None:
    path = write_job(tmp_path, {"data": "data.yaml", "gate": {"continue_above": 0.5}})
    job = load_job(path, ["epochs=7", "gate.decision_epoch=3", "red_flags.plateau.action=stop", "lr0=1e-3"])
    assert job.epochs == 7 and job.gate.decision_epoch == 3 and job.gate.continue_above == 0.5
    assert job.red_flags.plateau.action == "stop"
    assert job.overrides["lr0"] == pytest.approx(0.001)
    with pytest.raises(ConfigError, match="key=value"):
        apply_sets({}, ["epochs"])


def test_set_reads_bare_numeric_text_as_a_number_and_quoted_text_as_text(
    tmp_path: Path, data_yaml: Path
) -> None:
    """YAML 1.1 reads ``1e-3`` as text: typed bare it is a number; quoted, any value stays text, so a text
    field can be given ``2026`` or ``1e3``, which bare would be numbers (and refused as names)."""
    path = write_job(tmp_path, {"data": "data.yaml"})
    job = load_job(path, ["lr0=1e-3", "epochs=1e1", "name='2026'", 'experiment="1e3"'])
    assert (job.overrides["lr0"], job.epochs, job.name, job.experiment) == (0.001, 10, "2026", "1e3")
    with pytest.raises(ConfigError, match=r"key 'name': Input should be a valid string"):
        load_job(path, ["name=2026"])
    assert apply_sets({}, ["x=1e3", "y='1e3'", "z=007"]) == {"x": 1000.0, "y": "1e3", "z": 7}


@pytest.mark.parametrize(
    ("epochs", "explicit", "expected"),
    [(200, None, 100), (300, None, 100), (199, None, 100), (100, None, 50), (3, None, 2), (2, None, 1),
     (1, None, 1), (10, 4, 4)],
)  # fmt: skip
def test_decision_epoch_scales_for_short_runs(epochs: int, explicit: int | None, expected: int) -> None:
    assert GateConfig(decision_epoch=explicit).resolved_epoch(epochs) == expected


@pytest.mark.parametrize("name", ["phase1.yaml", "smoke.yaml", "baseline.yaml"])
def test_example_jobs_validate(name: str, data_yaml: Path) -> None:
    job = load_job(REPO / "examples" / "jobs" / name, [f"data={data_yaml}"])
    assert isinstance(job, TrainJob)
    assert job.preset in list_presets()


def test_data_may_be_a_folder_and_a_broken_data_yaml_is_named(tmp_path: Path, data_yaml: Path) -> None:
    job = job_from_dict({"data": str(data_yaml.parent)})
    assert job.data == data_yaml.resolve()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "data.yaml").write_text("train: images/train\n")  # no names
    with pytest.raises(ConfigError, match=r"key 'data': .*bad/data.yaml.*names"):
        job_from_dict({"data": str(bad)}, where="plan.yaml")
    (tmp_path / "images_only").mkdir()
    with pytest.raises(ConfigError, match=r"has no data\.yaml"):
        job_from_dict({"data": str(tmp_path / "images_only")})


def test_job_from_dict_without_a_file(data_yaml: Path) -> None:
    job = job_from_dict({"data": str(data_yaml), "EPOCHS": "3", "mosaic": 0.0})
    assert job.epochs == 3 and job.train_args()["mosaic"] == 0.0
