"""One ``--set`` path-setter for plans and jobs (``xraydet.config.set_key_path``): the same syntax (dotted
keys, ``a.0.b``, ``a[0].b``, an item's ``id``) and the same errors, naming the key, the part that failed and
what was expected; the mapping it was given is never changed, not even half-way."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from xraydet.config import key_path_parts, set_key_path
from xraydet.errors import ConfigError
from xraydet.plan import PlanError
from xraydet.plan.schema import apply_overrides
from xraydet.training.job import apply_sets

RAW: dict[str, Any] = {
    "phases": [
        {"id": "phase1", "job": {"epochs": 4, "hooks": [{"name": "plateau", "params": {"patience": 3}}]}},
        {"id": "phase2", "job": {"epochs": 4}},
    ],
    "gate": None,
    "name": "mini",
}


def job_set(raw: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    return apply_sets(raw, [f"{key}={value}"])


def plan_set(raw: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    return apply_overrides(raw, [f"{key}={value}"])


SETTERS = [pytest.param(job_set, id="job"), pytest.param(plan_set, id="plan")]


@pytest.mark.parametrize("setter", SETTERS)
@pytest.mark.parametrize(
    "key",
    ["phases.phase2.job.epochs", "phases.1.job.epochs", "phases[1].job.epochs", "phases[-1].job.epochs"],
)
def test_both_callers_take_ids_dotted_and_bracketed_indexes(setter: Any, key: str) -> None:
    out = setter(RAW, key, 9)
    assert out["phases"][1]["job"]["epochs"] == 9
    assert RAW["phases"][1]["job"]["epochs"] == 4


@pytest.mark.parametrize("setter", SETTERS)
def test_nested_lists_and_new_or_null_mappings(setter: Any) -> None:
    out = setter(RAW, "phases.phase1.job.hooks[0].params.patience", 5)
    assert out["phases"][0]["job"]["hooks"][0]["params"] == {"patience": 5}
    out = setter(RAW, "gate.policy.min_map50", 0.5)  # `gate:` written empty is null: a mapping is made
    assert out["gate"] == {"policy": {"min_map50": 0.5}}
    assert setter(RAW, "phases.phase2", "{id: p, job: {}}")["phases"][1] == {"id": "p", "job": {}}


def test_the_job_setter_picks_an_item_by_id() -> None:
    """Before, a job's ``--set`` refused anything but an index in a list."""
    assert job_set(RAW, "phases.phase2.job.epochs", 7)["phases"][1]["job"]["epochs"] == 7


def test_the_plan_setter_picks_an_item_by_bracketed_index() -> None:
    """Before, ``phases[1]`` was a new top-level key (and an 'unknown key' only at validation)."""
    out = plan_set(RAW, "phases[1].job.epochs", 7)
    assert out["phases"][1]["job"]["epochs"] == 7 and "phases[1]" not in out


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (
            "phases.phase7.job.epochs",
            "--set phases.phase7.job.epochs: phases has no item 'phase7' (ids: phase1, phase2; "
            "or an index, phases has 2 items)",
        ),
        (
            "phases[2].job.epochs",
            "--set phases[2].job.epochs: phases[2] is out of range (phases has 2 items; ids: phase1, phase2)",
        ),
        (
            "phases.phase1.job.hooks.plateau.params.x",
            "--set phases.phase1.job.hooks.plateau.params.x: phases.phase1.job.hooks is a list: pick an item "
            "by index, not 'plateau' (phases.phase1.job.hooks.0 or phases.phase1.job.hooks[0]; "
            "phases.phase1.job.hooks has 1 item)",
        ),
        (
            "phases.0.job.epochs.x",
            "--set phases.0.job.epochs.x: phases[0].job.epochs is 4, not a mapping or list (no 'x' in it; "
            "set phases[0].job.epochs itself)",
        ),
        ("phases.1.job.hooks[0].name", "--set phases.1.job.hooks[0].name: phases[1].job.hooks[0] is out of "
         "range (no phases[1].job.hooks list)"),
        ("phases..job", "--set phases..job: empty part in the key (use a.b, a.0.b or a[0].b)"),
        ("phases[0]job.epochs", "--set phases[0]job.epochs: stray bracket in 'phases[0]job'"),
        ("phases[0.job", "--set phases[0.job: stray bracket in 'phases[0'"),
    ],
)  # fmt: skip
@pytest.mark.parametrize(
    ("setter", "error"), [(job_set, ConfigError), (plan_set, PlanError)], ids=["job", "plan"]
)
def test_errors_name_the_key_the_part_and_what_was_expected(
    setter: Any, error: type[Exception], key: str, message: str
) -> None:
    before = copy.deepcopy(RAW)
    with pytest.raises(error) as info:
        setter(RAW, key, 1)
    assert type(info.value) is error
    assert str(info.value).startswith(message), str(info.value)
    assert before == RAW


def test_no_half_way_change_on_error() -> None:
    """The path is followed in a copy: a mapping made on the way (``gate``) is not left in the input."""
    raw: dict[str, Any] = {"gate": None, "hooks": []}
    for key in ("gate.policy.x.0", "gate.policy.x[0].y", "hooks.0.name"):
        with pytest.raises(ConfigError):
            set_key_path(raw, key, 1)
        assert raw == {"gate": None, "hooks": []}
    before = copy.deepcopy(RAW)
    with pytest.raises(PlanError):  # the first override applied, the second failed: the input is untouched
        apply_overrides(RAW, ["name=other", "phases.phase1.job.epochs=2", "phases.phase9.job.epochs=1"])
    with pytest.raises(ConfigError):
        apply_sets(RAW, ["name=other", "phases.phase9.job.epochs=1"])
    assert before == RAW


def test_set_key_path_returns_a_copy() -> None:
    out = set_key_path(RAW, "phases.phase1.job.epochs", 2)
    assert out is not RAW and out["phases"][1] is not RAW["phases"][1]
    assert out["phases"][0]["job"]["epochs"] == 2 and RAW["phases"][0]["job"]["epochs"] == 4


def test_an_item_without_an_id_is_not_picked_by_none() -> None:
    raw: dict[str, Any] = {"steps": [{"kind": "check"}, {"id": None}, {"id": "b"}]}
    with pytest.raises(ConfigError, match=r"steps has no item 'None' \(ids: b;"):
        set_key_path(raw, "steps.None.kind", "x")
    assert set_key_path(raw, "steps.b.kind", "x")["steps"][2] == {"id": "b", "kind": "x"}


@pytest.mark.parametrize(
    ("key", "parts"),
    [
        ("hooks[1].params.x", ["hooks", "1", "params", "x"]),
        (" hooks.1 . params ", ["hooks", "1", "params"]),
        ("a[0][1]", ["a", "0", "1"]),
        ("phases[phase1].job", ["phases", "phase1", "job"]),
    ],
)
def test_key_path_parts(key: str, parts: list[str]) -> None:
    assert key_path_parts(key) == parts
