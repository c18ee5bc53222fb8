"""Promotion through the real gate and a real comparison on the same images, and rollback (SQLite store)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from xraydet.errors import ConfigError
from xraydet.registry import (
    RegistryError,
    champion,
    champion_history,
    list_versions,
    promote,
    register_model,
    rollback,
)
from xraydet.registry.store import client


def tags(version: str) -> dict[str, str]:
    return next(v.tags for v in list_versions("xray") if v.version == version)


def test_promote_refuse_force_and_roll_back(registry_home, tiny_model, trigger_happy_model, lenient_policy,
                                            eval_args):
    good = register_model(tiny_model, "xray")
    bad = register_model(trigger_happy_model, "xray")
    same = register_model(tiny_model, "xray")  # same weights, a new version

    first = promote("xray", good, policy=lenient_policy, **eval_args)
    assert (first.decision, first.promoted, first.champion_version) == ("promoted", True, None)
    assert "no champion yet" in first.reasons[0]
    assert champion("xray") == good

    # Reports threats on every threat-free bag: the gate (switched off) passes, the comparison refuses.
    worse = promote("xray", bad, policy=lenient_policy, **eval_args)
    assert (worse.decision, worse.promoted, worse.champion_version) == ("refused", False, good)
    far = next(c for c in worse.comparisons if c.metric == "false_alarm_rate")
    assert far.passed is False and far.candidate == 1.0 and far.candidate > far.champion + far.tolerance
    assert any("false_alarm_rate" in r and "1.0000" in r for r in worse.reasons)
    assert worse.candidate_metrics["false_alarm_rate"] == 1.0
    assert champion("xray") == good
    assert tags(bad)["decision"] == "refused"
    assert json.loads(tags(bad)["decision_reasons"]) == worse.reasons

    # The same model again is not worse on the same images: promoted.
    equal = promote("xray", same, policy=lenient_policy, **eval_args)
    assert (equal.decision, equal.champion_version) == ("promoted", good)
    assert all(c.passed and c.candidate == c.champion for c in equal.comparisons)
    assert champion("xray") == same and champion_history("xray") == [good]

    # Forcing overrides the failed comparison and records the reason.
    forced = promote("xray", bad, policy=lenient_policy, force_reason="drill: verify rollback", **eval_args)
    assert (forced.decision, forced.promoted) == ("forced", True)
    assert champion("xray") == bad and champion_history("xray") == [good, same]
    assert tags(bad)["decision"] == "forced"
    assert tags(bad)["decision_force_reason"] == "drill: verify rollback"
    assert tags(same)["replaced_by"] == bad
    decision_file = json.loads((registry_home / tags(bad)["decision_report"] / "decision.json").read_text())
    assert decision_file["decision"] == "forced"
    assert (registry_home / tags(bad)["decision_report"] / "candidate" / "report.json").is_file()
    run_artifacts = [a.path for a in client().list_artifacts(list_versions("xray")[1].run_id, "promotion")]
    assert len(run_artifacts) == 2  # the refused and the forced decision, each with its reports

    # Already the champion: nothing to do, nothing evaluated.
    assert promote("xray", bad, policy=lenient_policy, **eval_args).decision == "unchanged"

    # Rollback walks back one champion per call, then says clearly there is none left.
    assert rollback("xray") == same
    assert champion("xray") == same and champion_history("xray") == [good]
    assert tags(same)["rollback_from"] == bad and tags(bad)["rolled_back_to"] == same
    assert rollback("xray") == good
    assert champion("xray") == good and champion_history("xray") == []
    with pytest.raises(RegistryError, match=r"no previous champion to roll back to \(champion is v1"):
        rollback("xray")


def test_failed_gate_is_never_forced(registry_home, tiny_model, lenient_policy, eval_args):
    version = register_model(tiny_model, "xray")
    strict = lenient_policy.model_copy(update={"min_map50": 0.5})
    decision = promote("xray", version, policy=strict, force_reason="ship it", **eval_args)
    assert (decision.decision, decision.promoted, decision.gate_passed) == ("refused", False, False)
    failed = [c for c in decision.gate_criteria if not c.passed]
    assert [c.name for c in failed] == ["mAP50"] and failed[0].value < 0.5
    assert any(r.startswith("gate: mAP50 failed") for r in decision.reasons)
    assert any("force does not override" in r for r in decision.reasons)
    assert champion("xray") is None
    assert tags(version)["decision_gate_passed"] == "False"


def test_default_gate_policy_refuses_a_weak_model(registry_home, tiny_model, eval_args):
    version = register_model(tiny_model, "xray")
    decision = promote("xray", version, **eval_args)  # the seed's production policy
    assert decision.decision == "refused"
    failed = {c.name for c in decision.gate_criteria if not c.passed}
    assert {"mAP50", "threat detection rate", "predictions reviewed"} <= failed


def test_promote_and_rollback_errors(registry_home, tiny_model, lenient_policy, eval_args):
    with pytest.raises(RegistryError, match="no registered model 'xray'"):
        rollback("xray")
    register_model(tiny_model, "xray")
    with pytest.raises(RegistryError, match=r"no previous champion to roll back to \(no champion is set"):
        rollback("xray")
    with pytest.raises(RegistryError, match=r"has no version 9"):
        promote("xray", "9", policy=lenient_policy, **eval_args)
    with pytest.raises(ConfigError, match="non-empty reason"):
        promote("xray", "1", policy=lenient_policy, force_reason="   ", **eval_args)
    with pytest.raises(ConfigError, match="policy file not found"):
        promote("xray", "1", policy=registry_home / "missing.yaml", **eval_args)


def test_promote_from_an_existing_candidate_report(registry_home, tiny_model, trigger_happy_model,
                                                   tiny_report, lenient_policy, eval_args):
    first = register_model(tiny_model, "xray")
    assert promote("xray", first, policy=lenient_policy, **eval_args).promoted
    second = register_model(tiny_model, "xray")
    # tiny_report evaluated 4 scans + 4 threat-free bags: the champion must be evaluated on exactly those.
    decision = promote("xray", second, None, policy=lenient_policy, candidate_report=tiny_report, plots=False)
    assert decision.decision == "promoted", decision.reasons
    assert decision.evaluation["max_images"] == 4
    assert decision.evaluation["negatives"] == [str(eval_args["negatives"])]
    assert decision.evaluation["candidate_report"] == str(tiny_report)
    out = registry_home / tags(second)["decision_report"]
    assert not (out / "candidate").exists()  # the candidate was not evaluated again
    champion_report = json.loads((out / "champion" / "report.json").read_text())
    candidate_report = json.loads((tiny_report / "report.json").read_text())
    for key in ("n_images", "n_negative_images", "dataset", "seed", "conf"):
        assert champion_report[key] == candidate_report[key], key

    other = register_model(trigger_happy_model, "xray")
    with pytest.raises(RegistryError, match="sha256 differs"):
        promote("xray", other, None, policy=lenient_policy, candidate_report=tiny_report)
    third = register_model(tiny_model, "xray")
    with pytest.raises(ConfigError, match="drop --dataset"):
        promote("xray", third, eval_args["negatives"], policy=lenient_policy, candidate_report=tiny_report)
    with pytest.raises(ConfigError, match="--dataset"):
        promote("xray", second, None, policy=lenient_policy)


def test_a_registry_reference_report_of_another_version_is_refused(registry_home, tiny_model,
                                                                   trigger_happy_model, lenient_policy,
                                                                   eval_args, tmp_path):
    """The documented workflow: `xraydet eval xray/1 ...` writes model "xray/1"; that report may back a
    promotion of v1 (or of the same weights registered again), never of another version."""
    from xraydet.evaluation import evaluate
    from xraydet.registry.store import get_version

    first = register_model(tiny_model, "xray")
    other = register_model(trigger_happy_model, "xray")
    report_dir = tmp_path / "v1"
    report = evaluate("xray/1", eval_args["dataset"], negatives=[eval_args["negatives"]], max_images=4,
                      out_dir=report_dir, latency_samples=2, plots=False)
    assert report.model == "xray/1"
    assert report.model_sha256 == get_version("xray", first).tags["sha256"]  # the bytes evaluated

    with pytest.raises(RegistryError) as err:
        promote("xray", other, None, policy=lenient_policy, candidate_report=report_dir, plots=False)
    message = str(err.value)
    assert str(report_dir / "report.json") in message and "not xray v2" in message
    assert "registered as xray v1" in message and report.model_sha256[:12] in message
    assert get_version("xray", other).tags["sha256"][:12] in message
    assert champion("xray") is None

    same = register_model(tiny_model, "xray")  # the same weights as v1, registered again
    decision = promote("xray", same, None, policy=lenient_policy, candidate_report=report_dir, plots=False)
    assert decision.promoted, decision.reasons


def test_a_report_on_the_registered_onnx_export_backs_its_version(registry_home, tiny_model,
                                                                   trigger_happy_model, lenient_policy,
                                                                   eval_args, tmp_path):
    """The plan evaluates the ONNX export as the API serves it, then registers the .pt with that export beside
    it: the export's SHA-256 is a tag of the version, so its report backs that version and no other."""
    import shutil

    from xraydet.evaluation import evaluate
    from xraydet.inference.export import export_onnx
    from xraydet.io import sha256_file
    from xraydet.registry.store import get_version

    weights = tmp_path / "model.pt"
    shutil.copy2(tiny_model, weights)
    onnx = export_onnx(weights, 160, tmp_path / "model.onnx")
    version = register_model(weights, "xray")
    assert get_version("xray", version).tags["onnx_sha256"] == sha256_file(onnx)
    report_dir = tmp_path / "onnx-report"
    report = evaluate(onnx, eval_args["dataset"], negatives=[eval_args["negatives"]], max_images=4,
                      out_dir=report_dir, latency_samples=2, plots=False)
    assert report.model_sha256 == sha256_file(onnx) != sha256_file(weights)

    other = register_model(trigger_happy_model, "xray")
    with pytest.raises(RegistryError, match="sha256 differs"):
        promote("xray", other, None, policy=lenient_policy, candidate_report=report_dir, plots=False)
    decision = promote("xray", version, None, policy=lenient_policy, candidate_report=report_dir, plots=False)
    assert decision.promoted, decision.reasons


@pytest.mark.parametrize(
    ("model", "candidate", "accepted"),
    [("xray/1", "1", True), ("xray/3", "1", True), ("xray/1", "2", False), ("xray@champion", "1", False),
     ("xray", "1", False), ("gone/weights.pt", "1", False), ("http://127.0.0.1:9/v1", "1", False)],
    ids=["same-version", "same-weights", "other-version", "alias", "bare-name", "missing-file", "url"],
)
def test_an_older_report_without_sha256_needs_a_provable_model(registry_home, tiny_model, trigger_happy_model,
                                                                lenient_policy, tiny_report, tmp_path, model,
                                                                candidate, accepted):
    """Reports written before model_sha256 existed: an explicit registry version is checked by name and
    version (or the same weights); an alias may have moved since, and a missing file proves nothing."""
    import shutil

    register_model(tiny_model, "xray")
    register_model(trigger_happy_model, "xray")
    register_model(tiny_model, "xray")
    folder = Path(shutil.copytree(tiny_report, tmp_path / "old"))
    data = json.loads((folder / "report.json").read_text())
    data.pop("model_sha256", None)
    data["model"] = model
    (folder / "report.json").write_text(json.dumps(data))
    if accepted:
        decision = promote("xray", candidate, None, policy=lenient_policy, candidate_report=folder,
                           plots=False)
        assert decision.promoted, decision.reasons
        return
    with pytest.raises(RegistryError, match=str(folder / "report.json")) as err:
        promote("xray", candidate, None, policy=lenient_policy, candidate_report=folder, plots=False)
    assert f"not xray v{candidate}" in str(err.value) or "cannot tell which model" in str(err.value)
    assert champion("xray") is None


class FlakyClient:
    """The real MLflow client, with one kind of write failing once (fault injection between the two writes
    of a champion change)."""

    def __init__(self, fail: str) -> None:
        self.real, self.fail = client(), fail

    def __getattr__(self, attr: str):
        return getattr(self.real, attr)

    def _once(self, what: str) -> None:
        if self.fail == what:
            self.fail = ""
            raise ConnectionError(f"tracking server hiccup while writing the {what} (injected)")

    def set_registered_model_alias(self, *args, **kwargs):
        self._once("alias")
        return self.real.set_registered_model_alias(*args, **kwargs)

    def set_registered_model_tag(self, *args, **kwargs):
        self._once("history")
        return self.real.set_registered_model_tag(*args, **kwargs)


def walk_back(name: str) -> list[str]:
    """The champion, then every version repeated rollbacks reach."""
    seen = [champion(name)]
    while True:
        try:
            seen.append(rollback(name))
        except RegistryError:
            return seen


@pytest.mark.parametrize("fail", ["alias", "history"])
def test_a_failed_write_during_rollback_loses_no_champion(registry_home, tiny_model, monkeypatch, fail):
    from xraydet.registry import lifecycle
    from xraydet.registry.promotion import push_history
    from xraydet.registry.store import set_champion

    for _ in range(3):
        register_model(tiny_model, "xray")
    set_champion("xray", "1", [])
    set_champion("xray", "2", push_history([], "1"))
    set_champion("xray", "3", push_history(["1"], "2"))  # promotions 1 -> 2 -> 3, as _apply writes them
    flaky = FlakyClient(fail)
    with monkeypatch.context() as patch, pytest.raises(ConnectionError):
        patch.setattr(lifecycle, "client", lambda: flaky)
        rollback("xray")
    # Whichever write failed, walking back still goes 3 -> 2 -> 1 from where the champion is now.
    chain = ["3", "2", "1"]
    now = champion("xray")
    assert walk_back("xray") == chain[chain.index(now):], (fail, now)


@pytest.mark.parametrize("fail", ["alias", "history"])
def test_a_failed_write_during_promotion_loses_no_champion(registry_home, tiny_model, fail):
    from xraydet.registry.promotion import push_history
    from xraydet.registry.store import set_champion

    for _ in range(3):
        register_model(tiny_model, "xray")
    set_champion("xray", "1", [])
    set_champion("xray", "2", push_history([], "1"))
    with pytest.raises(ConnectionError):
        set_champion("xray", "3", push_history(champion_history("xray"), "2"), FlakyClient(fail))
    chain = ["3", "2", "1"]
    now = champion("xray")
    assert walk_back("xray") == chain[chain.index(now):], (fail, now)


def test_the_champion_is_evaluated_with_the_candidate_reports_augmentation(
        registry_home, tiny_model, lenient_policy, eval_args, tmp_path):
    """A report made with test-time augmentation is compared against a champion evaluated the same way,
    never against a plain evaluation of it; a different --tta beside that report is refused."""
    from xraydet.evaluation import evaluate

    first = register_model(tiny_model, "xray")
    assert promote("xray", first, policy=lenient_policy, **eval_args).promoted
    second = register_model(tiny_model, "xray")
    report_dir = tmp_path / "hflip"
    evaluate(tiny_model, eval_args["dataset"], negatives=[eval_args["negatives"]], max_images=4, tta="hflip",
             out_dir=report_dir, latency_samples=2, plots=False)
    for other in ("flips", "off"):  # an explicit --tta off too: only leaving it out takes the report's
        with pytest.raises(ConfigError, match=rf"evaluated otherwise: --tta {other} \(the report's: hflip\)"):
            promote("xray", second, None, policy=lenient_policy, candidate_report=report_dir, tta=other)
    out = tmp_path / "promotion"
    decision = promote("xray", second, None, policy=lenient_policy, candidate_report=report_dir, out_dir=out,
                       plots=False)
    assert decision.promoted, decision.reasons
    assert decision.evaluation["tta"] == "hflip"
    assert json.loads((out / "champion" / "report.json").read_text())["tta"] == "hflip"

    third = register_model(tiny_model, "xray")
    out = tmp_path / "plain-flags"
    decision = promote("xray", third, policy=lenient_policy, tta="flips", out_dir=out, **eval_args)
    for label in ("candidate", "champion"):
        assert json.loads((out / label / "report.json").read_text())["tta"] == "flips", label


def test_two_promotions_finishing_together_move_the_champion_once(registry_home, tiny_model, lenient_policy,
                                                                  eval_args, monkeypatch):
    """Both promotions evaluate against champion v1; whichever moves the alias first wins, and the other,
    re-checking under the champion lock, finds v1 gone and is refused. The move waits (up to 3 s) for the
    other promotion to arrive at its own move: without the lock both would get there and both be promoted."""
    import contextlib
    import threading

    from xraydet.registry import lifecycle

    first = register_model(tiny_model, "xray")
    assert promote("xray", first, policy=lenient_policy, **eval_args).promoted
    candidates = [register_model(tiny_model, "xray") for _ in range(2)]
    both_at_the_move = threading.Barrier(2)
    real_set_champion = lifecycle.set_champion

    def slow_set_champion(*args, **kwargs):
        # broken when the other one waits for the lock instead: as it should
        with contextlib.suppress(threading.BrokenBarrierError):
            both_at_the_move.wait(timeout=3)
        real_set_champion(*args, **kwargs)

    monkeypatch.setattr(lifecycle, "set_champion", slow_set_champion)
    decisions = {}

    def run(version):
        decisions[version] = promote("xray", version, policy=lenient_policy, **eval_args)

    threads = [threading.Thread(target=run, args=(v,)) for v in candidates]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    promoted = [v for v, d in decisions.items() if d.promoted]
    refused = [d for d in decisions.values() if not d.promoted]
    assert len(promoted) == 1 and len(refused) == 1, {v: d.reasons for v, d in decisions.items()}
    assert "the champion changed from v1" in refused[0].reasons[0]
    assert champion("xray") == promoted[0]
    assert champion_history("xray") == [first]


def test_options_beside_a_candidate_report_must_agree_with_it(registry_home, tiny_model, tiny_report,
                                                              lenient_policy, eval_args, tmp_path):
    """The champion is evaluated as the report was: an option that says otherwise is refused by name, not
    silently left unused; the same values (as the plan passes them) are accepted."""
    first = register_model(tiny_model, "xray")
    assert promote("xray", first, policy=lenient_policy, **eval_args).promoted
    second = register_model(tiny_model, "xray")
    other_bags = tmp_path / "other-bags"
    other_bags.mkdir()
    for options, named in [
        ({"negatives": [other_bags]}, "--negatives"),
        ({"conf": 0.5}, "--conf 0.5 (the report's: 0.25)"),
        ({"split": "train"}, "--split train (the report's: val)"),
        ({"seed": 3, "conf": 0.4}, "--conf 0.4 (the report's: 0.25); --seed 3 (the report's: 0)"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(named)):
            promote("xray", second, None, policy=lenient_policy, candidate_report=tiny_report, **options)
    agreeing = {"negatives": [eval_args["negatives"]], "conf": 0.25, "split": "val", "seed": 0}
    decision = promote("xray", second, None, policy=lenient_policy, candidate_report=tiny_report,
                       out_dir=tmp_path / "agreeing", plots=False, **agreeing)
    assert decision.promoted, decision.reasons


def test_a_fixed_size_onnx_champion_is_evaluated_at_its_own_size(registry_home, tiny_model, onnx_model,
                                                                lenient_policy, eval_args, tmp_path):
    """The candidate's imgsz (128) is not the size the champion was exported at (160): the champion is judged
    as it is served, instead of the whole promotion being refused for a size nobody asked of it."""
    assert promote("xray", register_model(onnx_model, "xray"), policy=lenient_policy, **eval_args).promoted
    candidate = register_model(tiny_model, "xray")
    decision = promote("xray", candidate, policy=lenient_policy, imgsz=128, out_dir=tmp_path / "promotion",
                       **eval_args)
    assert decision.decision in {"promoted", "refused"} and decision.comparisons
    reports = {label: json.loads((tmp_path / "promotion" / label / "report.json").read_text())
               for label in ("candidate", "champion")}
    assert (reports["candidate"]["imgsz"], reports["champion"]["imgsz"]) == (128, 160)
