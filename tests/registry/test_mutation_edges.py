"""Edges a mutation audit found untested: a rollback skips champions deleted since, and a promotion is refused
when another promotion moved the champion while this one was evaluating. Real SQLite store per test."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from xraydet.registry import (
    RegistryError,
    champion,
    champion_history,
    list_versions,
    promote,
    register_model,
    resolve_model,
    rollback,
)
from xraydet.registry.promotion import push_history
from xraydet.registry.store import client, set_champion


def tags(version: str) -> dict[str, str]:
    return next(v.tags for v in list_versions("xray") if v.version == version)


def promoted_in_turn(versions: list[str]) -> None:
    """Make each version champion in turn, with the history a promotion writes."""
    current: str | None = None
    for version in versions:
        set_champion("xray", version, push_history(champion_history("xray"), current))
        current = version


@pytest.fixture
def four_versions(registry_home: Path, tmp_path: Path) -> list[str]:
    """Versions 1-4 of "xray" (stand-in weights: a rollback fetches, never loads them), promoted 1 to 4."""
    versions = []
    for i in range(1, 5):
        weights = tmp_path / f"w{i}" / "best.pt"
        weights.parent.mkdir()
        weights.write_bytes(f"weights {i}".encode())
        versions.append(register_model(weights, "xray"))
    assert versions == ["1", "2", "3", "4"]
    promoted_in_turn(versions)
    assert (champion("xray"), champion_history("xray")) == ("4", ["1", "2", "3"])
    return versions


# ------------------------------------------------------------------------------------------------- rollback
def test_rollback_skips_a_deleted_previous_champion(four_versions):
    client().delete_model_version("xray", "3")
    assert rollback("xray") == "2"  # not the deleted v3
    assert champion("xray") == "2" and champion_history("xray") == ["1"]
    assert tags("2")["rollback_from"] == "4" and tags("4")["rolled_back_to"] == "2"
    assert rollback("xray") == "1"


def test_rollback_skips_the_current_champion_and_then_a_deleted_one(four_versions):
    # The history a rollback whose history write failed leaves: the current champion is its last entry.
    set_champion("xray", "3", ["1", "2", "3"])
    client().delete_model_version("xray", "2")
    assert rollback("xray") == "1"
    assert champion("xray") == "1" and champion_history("xray") == []


def artifact_folder(version: str) -> Path:
    """The local folder of the MLflow run that holds a version's weights (the default SQLite store's)."""
    from urllib.parse import urlparse

    c = client()
    folder = Path(urlparse(c.get_run(c.get_model_version("xray", version).run_id).info.artifact_uri).path)
    assert folder.is_dir(), folder
    return folder


def test_rollback_skips_a_previous_champion_whose_weights_are_gone(four_versions):
    shutil.rmtree(artifact_folder("3"))  # registered, but its files deleted from the artifact store
    assert rollback("xray") == "2"
    assert champion("xray") == "2" and champion_history("xray") == ["1"]
    assert resolve_model("xray").read_bytes() == b"weights 2"  # what a server would now load


def test_rollback_skips_a_previous_champion_whose_weights_were_replaced(four_versions):
    (weights,) = artifact_folder("3").rglob("best.pt")
    weights.write_bytes(b"not the registered weights")  # fails the recorded sha256, as serving checks
    assert rollback("xray") == "2"
    assert champion("xray") == "2"


def test_a_registry_it_cannot_reach_fails_the_rollback_and_skips_nothing(four_versions, monkeypatch):
    from xraydet.registry import lifecycle

    def unreachable(mv):
        raise ConnectionError("tracking server restarting (injected)")

    monkeypatch.setattr(lifecycle, "fetch_version", unreachable)
    with pytest.raises(ConnectionError):
        rollback("xray")
    assert champion("xray") == "4" and champion_history("xray") == ["1", "2", "3"]


def test_rollback_with_only_deleted_champions_left_fails_and_changes_nothing(four_versions):
    for version in ("1", "2", "3"):
        client().delete_model_version("xray", version)
    why = r"no previous champion to roll back to \(champion is v4; v3, v2, v1 in its history deleted"
    with pytest.raises(RegistryError, match=why):
        rollback("xray")
    assert champion("xray") == "4"
    assert "rollback_time" not in tags("4")


# ------------------------------------------------------------------------------------------------ promotion
def test_promotion_is_refused_when_the_champion_moved_during_evaluation(
    registry_home, tiny_model, lenient_policy, eval_args
):
    # Four registrations of the same weights: a candidate is exactly as good as the champion, so without the
    # concurrent move it is promoted (the last assertions check that).
    for _ in range(4):
        register_model(tiny_model, "xray")
    set_champion("xray", "1", [])
    moved = []

    def another_promotion_meanwhile(label: str, done: int, total: int) -> None:
        if label == "champion" and not moved:  # while the champion (v1) is being evaluated, v3 is promoted
            set_champion("xray", "3", push_history(champion_history("xray"), "1"))
            moved.append(label)

    decision = promote("xray", "2", policy=lenient_policy, progress=another_promotion_meanwhile, **eval_args)
    assert moved
    assert decision.gate_passed and decision.champion_version == "1"
    assert (decision.decision, decision.promoted) == ("refused", False)
    assert decision.reasons == ["the champion changed from v1 to v3 during evaluation; run promote again"]
    assert champion("xray") == "3" and champion_history("xray") == ["1"]  # the other promotion stands
    assert tags("2")["decision"] == "refused" and "during evaluation" in tags("2")["decision_reasons"]
    assert "replaced_by" not in tags("1") and "replaced_by" not in tags("3")

    # The same promotion against an unmoved champion goes through.
    again = promote("xray", "4", policy=lenient_policy, **eval_args)
    assert (again.decision, again.promoted, again.champion_version) == ("promoted", True, "3")
    assert champion("xray") == "4" and champion_history("xray") == ["1", "3"]
