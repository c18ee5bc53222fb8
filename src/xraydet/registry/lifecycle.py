"""Promotion and rollback: evaluate, decide (:mod:`xraydet.registry.promotion`), then move the champion alias.

Every decision is written as tags on the candidate version (``decision``, ``decision_reasons``,
``decision_time``, ...) and as ``decision.json`` beside the two evaluation reports, which are also logged to
the candidate's MLflow run under ``promotion/<time>/``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from xraydet.errors import ConfigError, XrayDetError
from xraydet.inference.tta import TTA
from xraydet.io import atomic_write_json, check_output_dir, sha256_file
from xraydet.registry.promotion import (
    ComparisonPolicy,
    PromotionDecision,
    compare_reports,
    decide,
    pop_history,
    push_history,
    report_metrics,
    same_evaluation_problems,
)
from xraydet.registry.refs import fetch_version, parse_ref
from xraydet.registry.store import (
    TAG_ONNX_SHA256,
    TAG_SHA256,
    RegistryError,
    alias_version,
    champion_history,
    champion_lock,
    client,
    get_model,
    get_version,
    set_champion,
    set_version_tags,
)
from xraydet.tracking import runs_root

log = logging.getLogger(__name__)

# Latency is not compared at promotion; a few timed images keep the report complete without the cost.
LATENCY_SAMPLES = 5


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _evaluation_api() -> tuple[Any, Any, Any, Any]:
    try:
        from xraydet.evaluation import evaluate
        from xraydet.evaluation.gate import GatePolicy, check_gate, load_policy
    except ImportError as err:
        raise XrayDetError(f"promotion needs the evaluation package (xraydet.evaluation): {err}") from err
    return evaluate, check_gate, GatePolicy, load_policy


def _gate_policy(policy: Any, gate_policy_cls: Any, load_policy: Any) -> Any:
    if policy is None:
        return gate_policy_cls()
    if isinstance(policy, str | Path):
        path = Path(policy)
        if not path.is_file():
            raise ConfigError(f"gate policy file not found: {path}")
        return load_policy(path)
    return policy


def champion(name: str) -> str | None:
    """The version the ``champion`` alias of ``name`` points to (``None`` when there is none yet)."""
    return alias_version(name)


class EvalSettings(BaseModel):
    """The evaluation set both models are measured on (recorded in the decision)."""

    dataset: str
    split: str = "val"
    negatives: list[str] = Field(default_factory=list)
    conf: float = 0.25
    seed: int = 0
    max_images: int | None = None
    tta: TTA = "off"


def _refuse_other_settings(report_path: str | Path, settings: EvalSettings, **given: Any) -> None:
    """With a candidate report the champion is evaluated as the report was: an option given beside it that
    says otherwise is refused (naming it) rather than silently not used."""
    problems = []
    for key, value in given.items():
        if value is None or (key == "negatives" and not value):
            continue
        if key == "negatives":
            wanted = [os.path.abspath(n) for n in ([value] if isinstance(value, str | Path) else value)]
            if sorted(wanted) != sorted(os.path.abspath(n) for n in settings.negatives):
                problems.append(f"--negatives {' '.join(wanted)} (the report's: "
                                f"{' '.join(settings.negatives) or 'none'})")
        elif value != getattr(settings, key):
            problems.append(f"--{key} {value} (the report's: {getattr(settings, key)})")
    if problems:
        raise ConfigError(f"{report_path} was evaluated otherwise: {'; '.join(problems)}. The champion is "
                          "evaluated as the candidate report was: leave these options out, or evaluate again")


def settings_of_report(report: Any) -> EvalSettings:
    """The settings that reproduce ``report``'s image selection (``max_images`` from its image counts)."""
    from xraydet.data.dataset import load_dataset
    from xraydet.evaluation.runner import negative_images

    n_split = len(load_dataset(report.dataset).images(report.split))
    n_neg = len(negative_images(report.negatives)) if report.negatives else 0
    sampled = report.n_images < n_split or report.n_negative_images < n_neg
    return EvalSettings(dataset=report.dataset, split=report.split, negatives=list(report.negatives),
                        conf=report.conf, seed=report.seed,
                        max_images=max(report.n_images, report.n_negative_images) if sampled else None,
                        tta=report.tta)


def _registered_as(name: str, digest: str, c: Any) -> str:
    """``", registered as xray v1"``: the versions of ``name`` whose weights have this SHA-256, if any."""
    try:
        found = [str(v.version) for v in c.search_model_versions(f"name='{name}'")
                 if (v.tags or {}).get(TAG_SHA256) == digest]
    except Exception:  # only a hint for the error message
        return ""
    return f", registered as {name} v{', v'.join(sorted(found, key=int))}" if found else ""


def _check_provenance(report: Any, report_file: Path, mv: Any, c: Any) -> None:
    """Refuse unless ``report`` evaluated the weights of ``mv`` (by SHA-256, or by registry name and version).

    A report records the SHA-256 of the file it evaluated (the weights, or the ONNX export registered with
    them: what an API serves); older reports are matched by their model file (when
    it still exists) or by an explicit registry version (``xray/3``). An alias (``xray``, ``xray@champion``)
    may have moved since the evaluation, so without a recorded SHA-256 it proves nothing.
    """
    wanted = f"{mv.name} v{mv.version}"
    expected = (mv.tags or {}).get(TAG_SHA256)
    onnx_sha = (mv.tags or {}).get(TAG_ONNX_SHA256)  # the export registered with the weights, as served

    def registered_sha() -> str:
        return expected or sha256_file(fetch_version(mv))

    def refuse(evaluated: str, digest: str | None) -> RegistryError:
        theirs = f"sha256 {digest[:12]}...{_registered_as(mv.name, digest, c)}" if digest else "no sha256"
        return RegistryError(
            f"{report_file}: this report evaluated {evaluated} ({theirs}), not {wanted} (sha256 "
            f"{registered_sha()[:12]}...): the sha256 differs; evaluate {mv.name}/{mv.version} and pass "
            "that report"
        )

    digest = report.model_sha256
    if digest is None and Path(report.model).is_file():
        digest = sha256_file(Path(report.model))
    if digest is not None:
        if digest != registered_sha() and digest != onnx_sha:
            raise refuse(report.model, digest)
        return
    try:
        spec = parse_ref(report.model)
    except RegistryError:
        spec = None
    if spec is not None and spec.version not in (None, "latest"):
        try:
            evaluated = get_version(spec.name, str(spec.version), c)
        except RegistryError as err:
            raise RegistryError(
                f"{report_file}: cannot tell which model this report evaluated ({report.model}): {err}"
            ) from err
        if (evaluated.name, str(evaluated.version)) == (mv.name, str(mv.version)):
            return
        theirs = (evaluated.tags or {}).get(TAG_SHA256)
        if theirs is not None and theirs == registered_sha():
            return  # the same weights registered twice
        raise refuse(f"{evaluated.name} v{evaluated.version}", theirs)
    raise RegistryError(
        f"{report_file}: cannot tell which model this report evaluated: it records no sha256 and its model "
        f"{report.model!r} is neither an existing file nor a registry version such as {mv.name}/{mv.version} "
        f"(an alias may have moved since); evaluate {mv.name}/{mv.version} and pass that report"
    )


def _reviewed_report(path: str | Path, mv: Any, dataset: str | Path | None, c: Any) -> tuple[Any, Path]:
    """Load an existing evaluation of the candidate and check it evaluated this very model and data set."""
    from xraydet.data.dataset import load_dataset
    from xraydet.evaluation.report import REPORT_JSON, load_report, report_folder

    report = load_report(path)
    folder = report_folder(path)
    _check_provenance(report, folder / REPORT_JSON if Path(path).is_dir() else Path(path), mv, c)
    if dataset is not None:
        wanted = load_dataset(dataset)
        if str(wanted.yaml_path or wanted.root) != report.dataset:
            raise ConfigError(f"{folder}: the report evaluated {report.dataset}, not {dataset}; "
                              "drop --dataset or evaluate again")
    return report, folder


def _fixed_size_onnx(weights: str | Path) -> bool:
    """Whether ``weights`` is an ONNX file with a fixed input size (it runs at that size only)."""
    if Path(weights).suffix != ".onnx":
        return False
    from xraydet.inference.onnx_backend import fixed_input_size

    return fixed_input_size(weights) is not None


def promote(
    name: str,
    version: str | int,
    dataset: str | Path | None,
    policy: Any = None,
    negatives: str | Path | list[str | Path] | None = None,
    *,
    comparison: ComparisonPolicy | None = None,
    force_reason: str | None = None,
    split: str | None = None,
    conf: float | None = None,
    seed: int | None = None,
    max_images: int | None = None,
    backend: str = "auto",
    imgsz: int | None = None,
    tta: TTA | None = None,
    review_dir: str | Path | None = None,
    candidate_report: str | Path | None = None,
    out_dir: str | Path | None = None,
    plots: bool = True,
    progress: Callable[[str, int, int], None] | None = None,
) -> PromotionDecision:
    """Make ``name/version`` the champion if it passes the readiness gate and is not worse than the champion.

    The candidate and the current champion are evaluated on the same images (``dataset`` split ``split``, the
    threat-free ``negatives`` folders, same ``seed``, ``conf`` and ``max_images``).

    Args:
        name: registered model name.
        version: candidate version.
        dataset: evaluation data set (data.yaml or its folder); may be ``None`` with ``candidate_report``.
        policy: a ``GatePolicy``, a policy YAML path, or ``None`` for the default (the seed's) policy.
        negatives: folder(s) of threat-free images, for the false-alarm rate.
        comparison: what "not worse" means (default: mAP50, threat detection rate, false-alarm rate, 0.005).
        force_reason: promote despite a worse comparison, recording this reason. Never overrides the gate.
        review_dir: the human review for the gate (default with ``candidate_report``: its ``review/``).
        candidate_report: an existing evaluation of the candidate (typically one a person has reviewed, as the
            default policy requires): the gate is checked on it and the champion is evaluated with its
            settings, instead of evaluating the candidate again.
        out_dir: where the reports and ``decision.json`` go
            (default ``<runs>/promotions/<name>-v<version>-<time>``).
        plots: draw the evaluation plots in the report folders.
        progress: called with ``("candidate" | "champion", done, total)`` while evaluating.

    Returns:
        The decision; ``decision.promoted`` tells whether the alias moved.
    """
    if force_reason is not None and not force_reason.strip():
        raise ConfigError("--force-reason needs a non-empty reason; it is recorded on the model version")
    if dataset is None and candidate_report is None:
        raise ConfigError("promote needs an evaluation data set (--dataset) or a --candidate-report")
    from xraydet.inference import check_backend, check_tta

    check_backend(backend)
    if tta is not None:
        check_tta(tta)
    c = client()
    version = str(version)
    candidate = get_version(name, version, c)
    current = alias_version(name, c=c)
    if current == version:
        return decide(name, version, None, champion_version=current)

    evaluate, check_gate, gate_policy_cls, load_policy = _evaluation_api()
    gate_policy = _gate_policy(policy, gate_policy_cls, load_policy)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(out_dir) if out_dir else runs_root() / "promotions" / f"{name}-v{version}-{stamp}"
    # its candidate/ and champion/ reports are replaced: refuse a folder that is not an earlier promotion
    check_output_dir(out, ("decision.json", "candidate", "champion"), "promotion folder")

    def run_eval(mv: Any, label: str, settings: EvalSettings) -> Any:
        log.info("evaluating %s v%s (%s) on %s", name, mv.version, label, settings.dataset)
        step = (lambda done, total: progress(label, done, total)) if progress else None
        weights = fetch_version(mv)
        # a champion registered as a fixed-size ONNX file is judged as it is served, at its own size
        size = None if label == "champion" and _fixed_size_onnx(weights) else imgsz
        return evaluate(weights, settings.dataset, split=settings.split,
                        negatives=settings.negatives or None, conf=settings.conf, out_dir=out / label,
                        max_images=settings.max_images, seed=settings.seed, backend=backend, imgsz=size,
                        tta=settings.tta, latency_samples=LATENCY_SAMPLES, plots=plots, progress=step)

    if candidate_report is not None:
        cand_report, report_dir = _reviewed_report(candidate_report, candidate, dataset, c)
        settings = settings_of_report(cand_report)
        _refuse_other_settings(candidate_report, settings, negatives=negatives, split=split, conf=conf,
                               seed=seed, tta=tta)
        gate = check_gate(report_dir, gate_policy, review_dir=review_dir)
    else:
        assert dataset is not None
        negative_dirs = [negatives] if isinstance(negatives, str | Path) else list(negatives or [])
        settings = EvalSettings(dataset=str(dataset), split=split or "val",
                                negatives=[str(n) for n in negative_dirs],
                                conf=0.25 if conf is None else conf, seed=seed or 0, max_images=max_images,
                                tta=tta or "off")
        cand_report = run_eval(candidate, "candidate", settings)
        gate = check_gate(cand_report, gate_policy, review_dir=review_dir)
    champ_report = None
    comparisons: list[Any] = []
    problems: list[str] = []
    # A failed gate cannot be overridden, so the champion need not be evaluated then.
    if current is not None and gate.passed:
        champ_report = run_eval(get_version(name, current, c), "champion", settings)
        comparisons = compare_reports(cand_report, champ_report, comparison)
        problems = same_evaluation_problems(cand_report, champ_report)
    decision = decide(name, version, gate, champion_version=current, comparisons=comparisons,
                      evaluation_problems=problems, force_reason=force_reason)
    decision.candidate_metrics = report_metrics(cand_report)
    decision.champion_metrics = report_metrics(champ_report) if champ_report is not None else {}
    report_path = str(candidate_report or out / "candidate")
    decision.evaluation = settings.model_dump() | {"candidate_report": report_path}
    _apply(decision, current, c)
    _record(decision, out, candidate.run_id, c)
    log.info("promotion of %s v%s: %s", name, version, decision.decision)
    return decision


def _apply(decision: PromotionDecision, current: str | None, c: Any) -> None:
    """Move the alias for a positive decision, unless another promotion moved it meanwhile."""
    if not decision.promoted:
        return
    name, version = decision.name, decision.version
    with champion_lock(name):
        now_champion = alias_version(name, c=c)
        if now_champion != current:
            decision.decision, decision.promoted = "refused", False
            decision.reasons = [f"the champion changed from v{current} to v{now_champion} during evaluation; "
                                "run promote again"]
            return
        set_champion(name, version, push_history(champion_history(name, c), current), c)
    if current is not None:
        set_version_tags(name, current, {"replaced_by": version, "replaced_time": decision.decided_at}, c)


def _record(decision: PromotionDecision, out: Path, run_id: str | None, c: Any) -> None:
    atomic_write_json(out / "decision.json", decision.model_dump(mode="json"))
    set_version_tags(decision.name, decision.version, {
        "decision": decision.decision,
        "decision_reasons": decision.reasons,
        "decision_time": decision.decided_at,
        "decision_gate_passed": str(decision.gate_passed),
        "decision_champion_before": decision.champion_version or "none",
        "decision_force_reason": decision.force_reason,
        "decision_metrics": {k: v for k, v in decision.candidate_metrics.items() if v is not None},
        "decision_report": str(out),
    }, c)
    if run_id:
        try:
            c.log_artifacts(run_id, str(out), f"promotion/{decision.decided_at.replace(':', '')}")
        except Exception as err:  # the tags and the local folder already hold the decision
            log.warning("could not log the promotion reports to run %s: %s", run_id, err)


def rollback(name: str) -> str:
    """Point ``champion`` back at the previous champion; return that version.

    Walks back one step per call through the ``previous_champion`` history, skipping versions that were
    deleted since or whose weights can no longer be fetched (files gone from the artifact store, or not
    matching their registered SHA-256): a server could not load them. The restored version's weights are
    fetched into the model cache on the way.
    """
    c = client()
    get_model(name, c)
    with champion_lock(name):
        return _rollback(name, c)


def _rollback(name: str, c: Any) -> str:
    current = alias_version(name, c=c)
    history = champion_history(name, c)
    target, rest = pop_history(history)
    skipped: list[str] = []
    while target is not None:
        why = _unusable(name, target, current, c)
        if why is None:
            break
        log.warning("skipping v%s in the champion history of %s: %s", target, name, why)
        if target != current:
            skipped.append(f"v{target}")
        target, rest = pop_history(rest)
    if target is None:
        where = f"champion is v{current}" if current else "no champion is set"
        left = (f"; {', '.join(skipped)} in its history deleted or their weights gone" if skipped
                else ", history empty")
        raise RegistryError(f"model {name!r} has no previous champion to roll back to ({where}{left})")
    set_champion(name, target, rest, c)
    now = _now()
    set_version_tags(name, target, {"rollback_time": now, "rollback_from": current or "none"}, c)
    if current is not None:
        set_version_tags(name, current, {"rolled_back_time": now, "rolled_back_to": target}, c)
    log.info("rolled %s back from v%s to v%s", name, current, target)
    return target


def _unusable(name: str, version: str, current: str | None, c: Any) -> str | None:
    """Why ``version`` cannot be rolled back to (the current champion, deleted, weights gone), else ``None``.

    Only a :class:`RegistryError` (no such version, a weights file missing or with the wrong SHA-256) makes
    a version unusable; any other failure (the tracking server unreachable) propagates, so a transient error
    never skips a good version.
    """
    if version == current:
        return "it is the current champion"
    try:
        fetch_version(get_version(name, version, c))
    except RegistryError as err:
        return str(err)
    return None
