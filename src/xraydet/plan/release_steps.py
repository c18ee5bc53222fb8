"""Release step kinds: ``evaluate`` (pick the candidate, export ONNX, evaluate as a screener, optionally
through the real API), ``gate`` (the readiness gate) and ``deploy`` (register; promote when the gate passed
and the candidate is not worse than the champion, else keep the current model). Both outcomes are logged.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from xraydet.config import NotBool
from xraydet.errors import ConfigError
from xraydet.inference.tta import TTA
from xraydet.io import sha256_file
from xraydet.plan.steps import (
    StepContext,
    StepFailed,
    StepResult,
    reference_problems,
    register_step_kind,
    resolve_against,
)
from xraydet.plan.transitions import MISSING, logged, lookup

if TYPE_CHECKING:
    from xraydet.plan.schema import Plan
    from xraydet.plan.state import StepRecord

log = logging.getLogger(__name__)

HEADLINE = {
    "mAP50": "box.map50",
    "mAP75": "box.map75",
    "mAP50-95": "box.map50_95",
    "precision": "box.precision",
    "recall": "box.recall",
    "threat detection rate": "screening.threat_detection_rate",
    "threat detection rate (any box)": "screening.threat_detection_rate_any",
    "false-alarm rate": "screening.false_alarm_rate",
    "accuracy (seed's)": "screening.accuracy",
    "threats found": "screening.threats_found",
    "avg detections": "screening.avg_detections",
    "latency p50 (ms)": "latency.p50_ms",
    "latency p95 (ms)": "latency.p95_ms",
    "images/s": "latency.images_per_s",
}


# ------------------------------------------------------------------------------------------------ evaluate


class EvaluateParams(BaseModel):
    """``evaluation:`` the candidate (best phase by ``choose_by``, the last phase or a phase id) on data."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(..., description="path or @name")
    split: str = "val"
    negatives: list[str] = Field(default_factory=list, description="threat-free folders / data sets (@names)")
    conf: Annotated[float, NotBool] = Field(0.25, gt=0, lt=1)
    max_images: Annotated[int | None, NotBool] = Field(None, ge=1)
    seed: Annotated[int, NotBool] = 0
    via: Literal["api", "onnx", "pt"] = Field(
        "api", description="api: start the real server on loopback and evaluate through HTTP; onnx/pt: direct"
    )
    candidate: str = Field("best", description="best | last | a phase id")
    choose_by: str = Field("best.map50", description="outcome value that ranks phases for candidate: best")
    imgsz: Annotated[int | None, NotBool] = Field(
        None, ge=32, description="ONNX input size (default: the training imgsz)"
    )
    tta: TTA = Field(
        "off", description="test-time augmentation: hflip (2 model calls per scan) or flips (4), boxes fused"
    )
    latency_samples: Annotated[int, NotBool] = Field(30, ge=1)


def _evaluate_check(params: EvaluateParams, plan: Plan) -> list[str]:
    problems = reference_problems([params.dataset], plan, "dataset")
    problems += reference_problems(list(params.negatives), plan, "negatives")
    phases = {p.id for p in plan.phases}
    if params.candidate not in ("best", "last") and params.candidate not in phases:
        problems.append(
            f"candidate: '{params.candidate}' is not best, last or a phase id ({', '.join(phases)})"
        )
    return problems


def choose_candidate(records: list[StepRecord], how: str, choose_by: str) -> StepRecord:
    """The training record to release: ``best`` (highest ``choose_by``, later wins ties), ``last``, an id."""
    usable = [r for r in records if r.outputs.get("best_weights") or r.outputs.get("last_weights")]
    if not usable:
        raise StepFailed("no finished training phase with weights on this path of the plan")
    if how == "last":
        return usable[-1]
    if how != "best":
        found = [r for r in usable if r.id == how]
        if not found:
            raise StepFailed(f"phase '{how}' did not run (or left no weights) on this path of the plan")
        return found[0]

    def score(r: StepRecord) -> float:
        value = lookup(r.outcome, choose_by)
        return float(value) if isinstance(value, int | float) and value is not MISSING else float("-inf")

    best = usable[0]
    for r in usable[1:]:
        if score(r) >= score(best):
            best = r
    return best


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.contextmanager
def serve_model(
    model: str | Path, imgsz: int | None = None, tta: TTA = "off", timeout_s: float = 120.0
) -> Iterator[str]:
    """Run the real xraydet API (FastAPI + uvicorn, ONNX Runtime) on a free loopback port; yields its URL.

    ``model`` is a weights file or a registry name (its champion), as for ``xraydet serve --model``; ``tta``
    as for ``xraydet serve --tta``.
    """
    import uvicorn

    from xraydet.serving.app import create_app
    from xraydet.serving.settings import ServeSettings

    settings = ServeSettings(model=str(model), backend="onnx", imgsz=imgsz, tta=tta, poll_s=0, port=0)
    app = create_app(settings)
    try:  # loaded here, as `xraydet serve` does: a refused setting is the step's error, not a log line
        app.state.holder.start()
    except ConfigError as err:
        raise StepFailed(f"the API for {model} did not start: {err}") from err
    sock = _free_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="xraydet-plan-api", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + timeout_s
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise StepFailed(f"the API for {model} did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def _report_summary(report: Any) -> dict[str, Any]:
    data = report.model_dump(mode="json")
    summary = {}
    for label, path in HEADLINE.items():
        value = lookup(data, path)
        summary[label] = None if value is MISSING else value
    return summary


@register_step_kind("evaluate", EvaluateParams, "evaluate the candidate as a screener", _evaluate_check)
def run_evaluate(ctx: StepContext, params: EvaluateParams) -> StepResult:
    from xraydet.evaluation import evaluate
    from xraydet.inference.export import checkpoint_info, export_onnx

    chosen = choose_candidate(ctx.done_on_this_walk("train"), params.candidate, params.choose_by)
    source = Path(chosen.outputs.get("best_weights") or chosen.outputs["last_weights"])
    ctx.work_dir.mkdir(parents=True, exist_ok=True)
    weights = ctx.work_dir / "model.pt"
    shutil.copy2(source, weights)
    imgsz = params.imgsz or int(checkpoint_info(weights)["imgsz"] or 640)
    onnx = export_onnx(weights, imgsz, ctx.work_dir / "model.onnx")
    dataset = ctx.resolve_data(params.dataset)
    negatives = [ctx.resolve_data(n) for n in params.negatives]
    report_dir = ctx.work_dir / "report"
    kwargs: dict[str, Any] = dict(
        split=params.split,
        negatives=negatives or None,
        conf=params.conf,
        out_dir=report_dir,
        max_images=params.max_images,
        seed=params.seed,
        latency_samples=params.latency_samples,
    )
    if params.via == "api":
        with serve_model(onnx, imgsz, params.tta) as url:
            log.info("evaluating %s through the API at %s", chosen.id, url)
            report = evaluate(url, dataset, **kwargs)
    else:
        report = evaluate(
            onnx if params.via == "onnx" else weights, dataset, imgsz=imgsz, tta=params.tta, **kwargs
        )
    data = report.model_dump(mode="json")
    summary = _report_summary(report)
    return StepResult(
        outputs={
            "candidate": chosen.id,
            "via": params.via,
            "model": onnx,
            "weights": weights,
            "report_dir": report_dir,
            "dataset": str(dataset),
            "negatives": [str(n) for n in negatives],
            "mlflow_run_id": chosen.outputs.get("mlflow_run_id"),
            "imgsz": imgsz,
            "tta": report.tta,
        },
        files={"weights": weights, "onnx": onnx, "report": report_dir / "report.json"},
        outcome={
            "candidate": chosen.id,
            "box": data["box"],
            "screening": data["screening"],
            "latency": data["latency"],
            "n_images": data["n_images"],
            "n_negative_images": data["n_negative_images"],
        },
        decisions=[
            {
                "what": "candidate",
                "decision": chosen.id,
                "reason": f"{params.candidate} phase by {params.choose_by}"
                if params.candidate == "best"
                else f"candidate: {params.candidate}",
                # a phase stopped before its first validation (e.g. a NaN loss) has no value to rank by
                "values": {
                    r.id: logged(lookup(r.outcome, params.choose_by)) for r in ctx.done_on_this_walk("train")
                },
            }
        ],
        details={"summary": summary},
    )


# ---------------------------------------------------------------------------------------------------- gate


class GateParams(BaseModel):
    """``gate:`` the readiness gate on the evaluation's report (policy inline, from a file, or the seed's)."""

    model_config = ConfigDict(extra="forbid")

    evaluation: str = Field("evaluate", description="id of the evaluate step whose report is checked")
    policy: dict[str, Any] | None = Field(None, description="GatePolicy keys; omitted: the seed's policy")
    policy_file: str | None = None
    review_dir: str | None = Field(None, description="human review verdicts (default: <report>/review)")


def _gate_check(params: GateParams, plan: Plan) -> list[str]:
    from xraydet.plan.schema import compile_ids, format_validation_error

    problems = []
    if params.evaluation not in compile_ids(plan):
        problems.append(f"evaluation: no step '{params.evaluation}' in the plan")
    try:
        gate_policy(params, plan.base_dir or Path.cwd())
    except ConfigError as err:  # the policy file: missing, not YAML, a bad key (its message names the file)
        problems.append(f"policy_file: {err}")
    except ValidationError as err:
        problems += format_validation_error(err, "policy")
    return problems


def gate_policy(params: GateParams, base_dir: Path) -> Any:
    """The policy the gate checks: ``policy_file``'s (relative to ``base_dir``) under the inline keys."""
    from xraydet.evaluation.gate import GatePolicy, load_policy

    if params.policy_file:
        base = load_policy(resolve_against(base_dir, params.policy_file)).model_dump()
        return GatePolicy.model_validate({**base, **(params.policy or {})})
    return GatePolicy.model_validate(params.policy or {})


@register_step_kind("gate", GateParams, "check the production readiness gate", _gate_check)
def run_gate(ctx: StepContext, params: GateParams) -> StepResult:
    from xraydet.evaluation.gate import check_gate
    from xraydet.io import atomic_write_json

    evaluation = ctx.record_on_this_walk(params.evaluation)
    if evaluation is None:
        raise StepFailed(f"the gate needs step '{params.evaluation}' to have run on this path of the plan")
    policy = gate_policy(params, ctx.base_dir)
    review_dir = ctx.resolve_path(params.review_dir) if params.review_dir else None
    result = check_gate(Path(evaluation.outputs["report_dir"]), policy, review_dir=review_dir)
    path = atomic_write_json(ctx.work_dir / "gate.json", result.model_dump(mode="json"))
    criteria = [c.model_dump(mode="json") for c in result.criteria]
    failed = [c.name for c in result.criteria if not c.passed]
    return StepResult(
        outputs={"gate_json": path, "policy": policy.model_dump(mode="json")},
        files={"gate": path},
        outcome={
            "passed": result.passed,
            "failed": failed,
            "criteria": {
                c.name: {"value": c.value, "limit": c.limit, "passed": c.passed} for c in result.criteria
            },
        },
        decisions=[
            {
                "what": "readiness gate",
                "decision": "pass" if result.passed else "fail",
                "reason": "all criteria met" if result.passed else f"failed: {', '.join(failed)}",
                "values": {c.name: c.value for c in result.criteria if not c.skipped},
            }
        ],
        details={"criteria": criteria},
    )


# -------------------------------------------------------------------------------------------------- deploy


class DeployParams(BaseModel):
    """``deploy:`` register the candidate; promote it when the gate passed (and it beats the champion)."""

    model_config = ConfigDict(extra="forbid")

    model_name: str = Field("xray-threats", description="registered model name")
    evaluation: str = "evaluate"
    gate: str = "gate"
    promote: bool = Field(True, description="try to promote when the gate passed")


def _deploy_check(params: DeployParams, plan: Plan) -> list[str]:
    from xraydet.plan.schema import compile_ids

    ids = compile_ids(plan)
    return [
        f"{key}: no step '{value}' in the plan"
        for key, value in (("evaluation", params.evaluation), ("gate", params.gate))
        if value not in ids
    ]


@register_step_kind("deploy", DeployParams, "register, then promote or keep the current model", _deploy_check)
def run_deploy(ctx: StepContext, params: DeployParams) -> StepResult:
    from xraydet.registry import champion, promote, register_model
    from xraydet.registry.store import report_tags, set_version_tags

    evaluation, gate = ctx.record_on_this_walk(params.evaluation), ctx.record_on_this_walk(params.gate)
    if evaluation is None or gate is None:
        raise StepFailed(
            f"deploy needs steps '{params.evaluation}' and '{params.gate}' to have run on this path of "
            "the plan"
        )
    retry = ctx.previous is not None and ctx.previous.status != "done" and ctx.previous.outputs.get("version")
    weights = Path(evaluation.outputs["weights"])
    if retry:  # a retry after an interruption does not register the same model twice
        assert ctx.previous is not None
        version, before = ctx.previous.outputs["version"], ctx.previous.outputs.get("champion_before")
    elif (same := _registered_before(ctx, params.model_name, weights)) is not None:
        # `plan resume --redo deploy` (after a person's review, say): the same weights keep their version,
        # whose eval tags follow the report as it is now
        version, before = same, champion(params.model_name)
        set_version_tags(params.model_name, version, report_tags(evaluation.outputs["report_dir"]))
        ctx.save_progress({"version": version, "champion_before": before})
        log.info("%s v%s already holds these weights: not registering them again", params.model_name, version)
    else:
        before = champion(params.model_name) if _registered(params.model_name) else None
        version = register_model(
            weights,
            params.model_name,
            report=Path(evaluation.outputs["report_dir"]),
            run_id=evaluation.outputs.get("mlflow_run_id"),
        )
        ctx.save_progress({"version": version, "champion_before": before})
    decisions: list[dict[str, Any]] = []
    if gate.outcome.get("passed") and params.promote:
        gate_step = next(s for s in ctx.plan.steps() if s.id == params.gate)
        policy = gate_policy(gate_step.params, ctx.base_dir)  # type: ignore[arg-type]
        ev = evaluation.inputs
        decision = promote(
            params.model_name,
            version,
            evaluation.outputs["dataset"],
            policy=policy,
            negatives=evaluation.outputs.get("negatives") or None,
            split=ev.get("split", "val"),
            conf=ev.get("conf", 0.25),
            seed=ev.get("seed", 0),
            max_images=ev.get("max_images"),
            imgsz=evaluation.outputs.get("imgsz"),
            # Gate the report the plan already made (and a person may have reviewed, as the seed policy
            # requires) instead of evaluating the candidate again without its review.
            candidate_report=Path(evaluation.outputs["report_dir"]),
            out_dir=ctx.work_dir / "promotion",
        )
        action = "promoted" if decision.promoted else "kept"
        reason = "; ".join(decision.reasons)
        decisions.append(
            {
                "what": "promotion",
                "decision": decision.decision,
                "reason": reason,
                "values": {"candidate": decision.candidate_metrics, "champion": decision.champion_metrics},
            }
        )
    else:
        action = "kept"
        why = (
            "promotion switched off"
            if not params.promote
            else (f"readiness gate failed ({', '.join(gate.outcome.get('failed', []))})")
        )
        reason = f"{why}; " + (
            f"v{before} stays the champion" if before else "no champion yet: nothing is served"
        )
        decisions.append({"what": "promotion", "decision": "not attempted", "reason": reason, "values": {}})
    after = champion(params.model_name)
    return StepResult(
        outputs={"version": version, "model_name": params.model_name},
        outcome={
            "action": action,
            "promoted": action == "promoted",
            "version": version,
            "model_name": params.model_name,
            "champion_before": before,
            "champion_after": after,
            "reason": reason,
        },
        decisions=decisions,
    )


def _registered_before(ctx: StepContext, name: str, weights: Path) -> str | None:
    """The version an earlier run of this deploy step registered, if it is still there with these weights."""
    from xraydet.registry.store import TAG_SHA256, RegistryError, get_version

    version = ctx.previous.outputs.get("version") if ctx.previous is not None else None
    if not version:
        return None
    try:
        registered = get_version(name, str(version))
    except RegistryError:  # deleted since, or the model itself
        return None
    return str(version) if (registered.tags or {}).get(TAG_SHA256) == sha256_file(weights) else None


def _registered(name: str) -> bool:
    from xraydet.registry import list_models

    return any(m.name == name for m in list_models())
