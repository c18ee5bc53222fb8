"""Numbers in a job file are numbers: YAML's ``true``/``yes``/``on`` is refused, naming the key, where
pydantic's lax mode would read it as 1 (``epochs: true`` trained one epoch). What YAML and ``--set`` give
for numbers today is still accepted: ints, floats, ints for float settings, numeric text."""

from __future__ import annotations

from pathlib import Path

import pytest

from xraydet.errors import ConfigError
from xraydet.training import load_job
from xraydet.training.hooks import build_hook

# every numeric setting of the job and its sections, with a value it accepts
NUMERIC = {
    "epochs": 3,
    "batch": 8,
    "imgsz": 64,
    "workers": 0,
    "seed": 1,
    "timeout_s": 60,
    "val_every": 1,
    "save_every": 1,
    "checkpoint_every": 0,
    "min_batch": 2,
    "gate.decision_epoch": 2,
    "gate.continue_above": 1,
    "gate.stop_below": 0,
    "red_flags.oscillation.window": 3,
    "red_flags.oscillation.min_sign_change_ratio": 1,
    "red_flags.oscillation.min_rel_amplitude": 0,
    "red_flags.plateau.patience": 1,
    "red_flags.plateau.min_delta": 0,
    "red_flags.overfitting.window": 3,
    "red_flags.overfitting.min_val_rise": 0,
    "red_flags.loader_starved.window": 2,
    "red_flags.loader_starved.max_wait_frac": 1,
    "xray_augment.rot90": 1,
    "xray_augment.threat_projection": 0,
    "xray_augment.threat_free": 0,
    "xray_augment.projection_classes": "[0]",
}


def _job(tmp_path: Path, data_yaml: Path, text: str = "") -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(f"data: {data_yaml}\nepochs: 2\nimgsz: 64\n{text}")
    return path


@pytest.mark.parametrize("key", sorted(NUMERIC))
@pytest.mark.parametrize("word", ["true", "false", "yes", "on"])
def test_a_boolean_for_a_number_is_refused_naming_the_key(
    tmp_path: Path, data_yaml: Path, key: str, word: str
) -> None:
    path = _job(tmp_path, data_yaml)
    with pytest.raises(ConfigError) as err:
        load_job(path, [f"{key}={word}"])
    message = str(err.value)
    assert message.startswith(f"{path}: key '{key}"), message
    assert "expected a number, got the boolean" in message


def test_a_boolean_in_the_job_file_is_refused_as_with_set(tmp_path: Path, data_yaml: Path) -> None:
    path = _job(
        tmp_path, data_yaml, "gate: {decision_epoch: 1}\nxray_augment: {projection_classes: [true]}\n"
    )
    with pytest.raises(ConfigError, match=r"key 'xray_augment.projection_classes.0': expected a number"):
        load_job(path)
    path.write_text(f"data: {data_yaml}\nEPOCHS: yes\n")  # a seed key too, named as written
    with pytest.raises(ConfigError, match=r"key 'EPOCHS': expected a number, got the boolean true"):
        load_job(path)


def test_numbers_as_yaml_and_set_give_them_are_still_accepted(tmp_path: Path, data_yaml: Path) -> None:
    sets = [f"{key}={value}" for key, value in NUMERIC.items()]
    job = load_job(
        _job(tmp_path, data_yaml), [*sets, "timeout_s=1e3", "imgsz=64.0", "red_flags.plateau.min_delta=1e-3"]
    )
    assert (job.epochs, job.batch, job.timeout_s, job.imgsz) == (3, 8, 1000.0, 64)
    assert job.gate.continue_above == 1.0 and job.xray_augment.rot90 == 1.0  # ints for floats
    assert job.xray_augment.projection_classes == [0] and job.red_flags.plateau.min_delta == 0.001
    path = _job(tmp_path, data_yaml, "timeout_s: 1e3\nbatch: '8'\n")  # YAML 1.1 text, quoted numbers
    assert (load_job(path).timeout_s, load_job(path).batch) == (1000.0, 8)


@pytest.mark.parametrize("key", ["time", "lr0", "close_mosaic", "warmup_epochs"])
def test_a_boolean_for_a_numeric_ultralytics_argument_is_refused(
    tmp_path: Path, data_yaml: Path, key: str
) -> None:
    """Ultralytics' own check takes a bool for a number: `time: yes` would be a one-hour budget."""
    with pytest.raises(ConfigError, match=rf"key '{key}': expected a number, got the boolean true"):
        load_job(_job(tmp_path, data_yaml), [f"{key}=yes"])
    assert load_job(_job(tmp_path, data_yaml), ["plots=false"]).overrides == {"plots": False}


def test_an_extra_hook_refuses_a_boolean_for_a_number() -> None:
    with pytest.raises(ConfigError, match=r"parameter 'timeout_s': expected a number, got the boolean true"):
        build_hook("timeout", {"timeout_s": True})
    assert build_hook("timeout", {"timeout_s": 3}).timeout_s == 3.0  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("value", "given"),
    [("banana", "'banana'"), ("cuda:x", "'cuda:x'"), ("gpu", "'gpu'"), ("0;1", "'0;1'"), ("1.5", "1.5")],
)
def test_a_device_ultralytics_cannot_read_is_refused_naming_the_forms(
    tmp_path: Path, data_yaml: Path, value: str, given: str
) -> None:
    """`device=banana` was accepted: Ultralytics refused it after the run folder and MLflow run existed."""
    path = _job(tmp_path, data_yaml)
    with pytest.raises(ConfigError) as err:
        load_job(path, [f"device={value}"])
    message = str(err.value)
    assert message.startswith(f"{path}: key 'device': {given} is not a device"), message
    assert "cpu, mps, a CUDA index or indices (0 or 0,1" in message and "cuda:0" in message


@pytest.mark.parametrize("word", ["true", "no"])
def test_a_boolean_device_is_refused(tmp_path: Path, data_yaml: Path, word: str) -> None:
    path = _job(tmp_path, data_yaml, f"device: {word}\n")
    with pytest.raises(ConfigError, match=r"key 'device': expected a device \(cpu, .*got the boolean"):
        load_job(path)


@pytest.mark.parametrize(
    ("text", "device"),
    [
        ("device: cpu", "cpu"),
        ("device: 0", "0"),
        ("device: '0,1'", "0,1"),
        ("device: [0, 1]", "0,1"),
        ("device: cuda:1", "cuda:1"),
        ("device: cuda", "cuda"),
        ("device: mps", "mps"),
        ("device: -1", "-1"),
        ("device: ''", None),
        ("", None),
    ],
)
def test_the_devices_ultralytics_reads_are_accepted(
    tmp_path: Path, data_yaml: Path, text: str, device: str | None
) -> None:
    assert load_job(_job(tmp_path, data_yaml, text + "\n")).device == device


def test_train_refuses_a_bad_device_before_any_run_folder_or_mlflow_run(
    tmp_path: Path, data_yaml: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from xraydet.cli.main import app

    monkeypatch.setenv("XRAYDET_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}")
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(
        app, ["train", str(_job(tmp_path, data_yaml)), "--set", "device=banana", "--run-dir", str(run_dir)]
    )
    assert isinstance(result.exception, ConfigError), result.output
    assert "key 'device': 'banana' is not a device" in str(result.exception)
    assert not run_dir.exists() and not (tmp_path / "home").exists()


def test_train_refuses_a_gpu_this_machine_lacks_before_any_run_folder_or_mlflow_run(
    tmp_path: Path, data_yaml: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`device: cuda:7` is a well-formed device: the job loads anywhere, but training on a machine without
    that GPU stops before it makes a run folder or an MLflow run (Ultralytics refused it only after both)."""
    import torch
    from typer.testing import CliRunner

    from xraydet.cli.main import app

    if torch.cuda.device_count() > 7:
        pytest.skip("this machine has a GPU 7")
    monkeypatch.setenv("XRAYDET_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}")
    run_dir = tmp_path / "run"
    job = _job(tmp_path, data_yaml, "device: cuda:7\n")
    assert load_job(job).device == "cuda:7"
    result = CliRunner().invoke(app, ["train", str(job), "--run-dir", str(run_dir)])
    assert isinstance(result.exception, ConfigError), result.output
    assert "the job's device cuda:7: not usable here" in str(result.exception)
    assert not run_dir.exists() and not (tmp_path / "home").exists()
