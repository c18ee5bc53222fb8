"""Errors name a seed-style key as the job wrote it; ``--set`` picks list items by index (``hooks.0`` or
``hooks[0]``), as the plan runner's ``--set`` does, and names the path of an index out of range."""

from __future__ import annotations

from pathlib import Path

import pytest
from training_support import StopAt  # noqa: F401  (registers test_stop_at)

from xraydet.errors import ConfigError
from xraydet.training import load_job
from xraydet.training.job import apply_sets


def _job(tmp_path: Path, data_yaml: Path, body: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(f"data: {data_yaml}\n{body}")
    return path


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("TIMEOUT: true\n", "key 'TIMEOUT': expected a number, got the boolean true"),
        ("TIMEOUT: soon\n", "key 'TIMEOUT': expected a number of seconds, got 'soon'"),
        ("TIMEOUT: -5\n", "key 'TIMEOUT': "),
        ("EPOCHS: yes\n", "key 'EPOCHS': expected a number, got the boolean true"),
        ("EPOCHS: many\n", "key 'EPOCHS': Input should be a valid integer"),
        ("BATCH_SIZE: 0\n", "key 'BATCH_SIZE': Input should be greater than or equal to 1"),
        ("MODEL_NAME: yolov8x.pt\n", "key 'MODEL_NAME': Value error, 'yolov8x.pt' is not a local file"),
    ],
)
def test_an_error_in_a_seed_key_names_the_key_as_written(
    tmp_path: Path, data_yaml: Path, body: str, message: str
) -> None:
    path = _job(tmp_path, data_yaml, body)
    with pytest.raises(ConfigError) as err:
        load_job(path)
    assert str(err.value).startswith(f"{path}: {message}"), str(err.value)


def test_a_missing_dataset_names_dataset(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("DATASET: nowhere/data.yaml\nEPOCHS: 2\n")
    with pytest.raises(ConfigError, match=r"key 'DATASET': nowhere/data.yaml does not exist"):
        load_job(path)
    (tmp_path / "empty").mkdir()
    path.write_text(f"DATASET: {tmp_path / 'empty'}\n")
    with pytest.raises(ConfigError, match=r"key 'DATASET': .*empty"):
        load_job(path)


def test_our_key_is_named_when_set_replaces_the_seed_key(tmp_path: Path, data_yaml: Path) -> None:
    path = _job(tmp_path, data_yaml, "EPOCHS: 3\n")
    with pytest.raises(ConfigError, match=r"key 'epochs': expected a number, got the boolean true"):
        load_job(path, ["epochs=true"])


HOOKS = "hooks: [{name: test_stop_at, params: {epoch: 3}}, {name: timeout, params: {timeout_s: 60}}]\n"


@pytest.mark.parametrize("key", ["hooks[0].params.epoch", "hooks.0.params.epoch"])
def test_set_reaches_into_a_list_item_by_index(tmp_path: Path, data_yaml: Path, key: str) -> None:
    job = load_job(_job(tmp_path, data_yaml, HOOKS), [f"{key}=7", "hooks[-1].params.timeout_s=90"])
    assert [(h.name, h.params) for h in job.hooks] == [
        ("test_stop_at", {"epoch": 7}),
        ("timeout", {"timeout_s": 90}),
    ]


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("hooks[2].params.epoch=1", "--set hooks[2].params.epoch: hooks[2] is out of range (hooks has 2"),
        ("hooks.-3.name=x", "--set hooks.-3.name: hooks[-3] is out of range (hooks has 2 items)"),
        ("hooks.plateau.params.x=1", "--set hooks.plateau.params.x: hooks is a list: pick an item by index"),
        ("hooks[0]..patience=1", "--set hooks[0]..patience: empty part in the key"),
    ],
)
def test_set_names_the_path_of_a_bad_index(tmp_path: Path, data_yaml: Path, item: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_job(_job(tmp_path, data_yaml, HOOKS), [item])
    assert str(err.value).startswith(message), str(err.value)


def test_set_on_a_list_the_job_does_not_have_names_the_path(tmp_path: Path, data_yaml: Path) -> None:
    message = r"--set hooks\[0\].name: hooks\[0\] is out of range \(no hooks list\)"
    with pytest.raises(ConfigError, match=message):
        load_job(_job(tmp_path, data_yaml, ""), ["hooks[0].name=plateau"])


def test_set_leaves_the_mapping_it_was_given_alone() -> None:
    raw = {"hooks": [{"name": "plateau", "params": {"patience": 3}}]}
    assert apply_sets(raw, ["hooks.0.params.patience=4"])["hooks"][0]["params"] == {"patience": 4}
    assert raw == {"hooks": [{"name": "plateau", "params": {"patience": 3}}]}
    assert apply_sets({"hooks": [{"name": "x"}]}, ["hooks.0.params.a.b=1"])["hooks"][0] == {
        "name": "x",
        "params": {"a": {"b": 1}},
    }


def test_the_cli_sets_a_list_item(tmp_path: Path, data_yaml: Path) -> None:
    """`xraydet train JOB --set hooks[5]...`: the error (exit 2, one line) names the path."""
    from xraydet.cli.train import train

    path = _job(tmp_path, data_yaml, HOOKS)
    with pytest.raises(ConfigError, match=r"hooks\[5\] is out of range \(hooks has 2 items\)"):
        train(path, ["hooks[5].params.epoch=1"], None, None, None, False)
