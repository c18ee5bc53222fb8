"""The MLflow model registry, as xraydet uses it: registering weights, aliases, tags and the champion history.

The store is whatever :func:`xraydet.tracking.tracking_uri` names: a SQLite file under the runs folder by
default, a tracking server when ``MLFLOW_TRACKING_URI`` is set. Promotion uses the ``champion`` alias
(MLflow's registry stages are deprecated); the ordered list of earlier champions is a registered-model tag,
``previous_champion`` (a JSON list, oldest first), so a rollback can walk back more than one step.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from xraydet.errors import XrayDetError
from xraydet.io import sha256_file
from xraydet.registry.promotion import report_meta, report_metrics
from xraydet.tracking import configure_mlflow, ensure_experiment, sqlite_lock, tracking_uri

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

# MLflow draws a tqdm bar on every artifact download; the CLI shows its own progress.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

log = logging.getLogger(__name__)

EXPERIMENT = "xraydet-registry"
CHAMPION = "champion"
HISTORY_TAG = "previous_champion"
TAG_SHA256 = "sha256"
TAG_WEIGHTS = "weights"
TAG_ONNX = "onnx"
TAG_ONNX_SHA256 = "onnx_sha256"  # an evaluation of the ONNX export (as served) is one of this version
MODEL_ARTIFACT_DIR = "model"
WEIGHT_SUFFIXES = (".pt", ".onnx")
# MLflow caps tag values (5000 characters for registry tags on some stores); stay well under.
MAX_TAG_CHARS = 4000
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class RegistryError(XrayDetError):
    """A registry request that cannot be met (unknown model/version/alias, bad reference, bad file)."""


class VersionInfo(BaseModel):
    """One registered model version as ``xraydet registry list`` shows it."""

    name: str
    version: str
    aliases: list[str] = Field(default_factory=list)
    created: int | None = None
    run_id: str | None = None
    source: str = ""
    sha256: str | None = None
    weights: str | None = None
    decision: str | None = None
    #: Eval metrics: of the latest promotion evaluation, else of the report given at registration.
    metrics: dict[str, float] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)


class ModelInfo(BaseModel):
    """One registered model: its champion, its versions and the champion history."""

    name: str
    champion: str | None
    latest: str | None
    n_versions: int
    history: list[str] = Field(default_factory=list)


def client() -> MlflowClient:
    """An MLflow client on the project's tracking/registry URI."""
    from mlflow import MlflowClient

    uri = configure_mlflow()
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def validate_name(name: str) -> str:
    """Reject names that would clash with reference syntax (``name@alias``, ``name/3``)."""
    if not _NAME_RE.match(name or ""):
        raise RegistryError(
            f"invalid model name {name!r}: use letters, digits, '_', '-' and '.', starting with a letter "
            "or digit "
            "('/' and '@' are reserved for references like name/3 and name@champion)"
        )
    return name


def _is_missing(err: Exception) -> bool:
    return getattr(err, "error_code", "") == "RESOURCE_DOES_NOT_EXIST"


def _known_models(c: MlflowClient) -> str:
    names = sorted(m.name for m in c.search_registered_models())
    return ", ".join(names) if names else "none registered yet"


def get_model(name: str, c: MlflowClient | None = None) -> Any:
    """The registered model ``name``; a clear error listing the known names when it does not exist."""
    from mlflow.exceptions import MlflowException

    c = c or client()
    try:
        return c.get_registered_model(name)
    except MlflowException as err:
        if _is_missing(err):
            raise RegistryError(f"no registered model {name!r} (known: {_known_models(c)})") from err
        raise


def get_version(name: str, version: str | int, c: MlflowClient | None = None) -> ModelVersion:
    """Model version ``name/version``; a clear error listing the versions that exist."""
    from mlflow.exceptions import MlflowException

    c = c or client()
    get_model(name, c)
    try:
        return c.get_model_version(name, str(version))
    except MlflowException as err:
        if _is_missing(err):
            versions = ", ".join(str(v.version) for v in _versions(c, name)) or "none"
            raise RegistryError(f"model {name!r} has no version {version} (versions: {versions})") from err
        raise


def alias_version(name: str, alias: str = CHAMPION, c: MlflowClient | None = None) -> str | None:
    """The version an alias points to, or ``None`` when the alias is not set."""
    aliases = get_model(name, c).aliases or {}
    value = aliases.get(alias)
    return str(value) if value is not None else None


def _versions(c: MlflowClient, name: str) -> list[ModelVersion]:
    found = c.search_model_versions(f"name='{name}'")
    return sorted(found, key=lambda v: int(v.version))


def champion_history(name: str, c: MlflowClient | None = None) -> list[str]:
    """Earlier champions of ``name``, oldest first (from the ``previous_champion`` tag)."""
    raw = (get_model(name, c).tags or {}).get(HISTORY_TAG)
    if not raw:
        return []
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as err:
        raise RegistryError(f"tag {HISTORY_TAG!r} of model {name!r} is not a JSON list: {raw!r}") from err
    if not isinstance(value, list):
        raise RegistryError(f"tag {HISTORY_TAG!r} of model {name!r} is not a JSON list: {raw!r}")
    return [str(v) for v in value]


@contextlib.contextmanager
def champion_lock(name: str) -> Iterator[None]:
    """Hold ``name``'s champion for one read-check-write (a promotion's or a rollback's) at a time.

    On a SQLite store this is an OS lock beside the database, so two promotions finishing together cannot
    both read the old champion and both move the alias. A tracking server offers no lock: there the
    re-check before the move narrows the window but does not close it.
    """
    uri = tracking_uri()
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(uri.removeprefix("sqlite:///"))
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    with sqlite_lock(db.with_name(f"{db.name}.champion-{slug}")):
        yield


def set_champion(name: str, version: str, history: list[str], c: MlflowClient | None = None) -> None:
    """Point the ``champion`` alias at ``version`` and store the history of earlier champions.

    The two writes are not atomic, so they are ordered for a failure between them to lose no champion from
    the history. A history that only adds versions (a promotion) is written before the alias: a failed alias
    write leaves the old champion both in the alias and at the end of the history. A history that drops
    versions (a rollback) is written after the alias: a failed history write leaves the restored champion at
    the end of the history. Either way the next rollback skips the entry equal to the current champion.
    """
    c = c or client()
    try:
        grows = set(champion_history(name, c)) <= set(history)
    except RegistryError:  # an unreadable stored history: replace it first
        grows = True
    while len(json.dumps(history)) > MAX_TAG_CHARS:  # forget the oldest champions, keep valid JSON
        history = history[1:]
    if grows:
        c.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
    c.set_registered_model_alias(name, CHAMPION, str(version))
    if not grows:
        c.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))


def set_version_tags(name: str, version: str, tags: dict[str, Any], c: MlflowClient | None = None) -> None:
    """Set ``tags`` on ``name/version``; a ``None`` value removes the tag (a later decision has none)."""
    c = c or client()
    for key, value in tags.items():
        if value is None:
            existing = get_version(name, str(version), c).tags or {}
            if key in existing:
                c.delete_model_version_tag(name, str(version), key)
            continue
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        c.set_model_version_tag(name, str(version), key, text[:MAX_TAG_CHARS])


def _read_report(report: Path) -> tuple[Path, dict[str, float], dict[str, str]]:
    """An eval report's folder, headline metrics and meta (``report``: the folder with report.json, or it)."""
    report = Path(report)
    report_file = report / "report.json" if report.is_dir() else report
    if not report_file.is_file():
        raise RegistryError(f"eval report not found: {report_file} (pass the folder evaluation wrote)")
    from xraydet.evaluation.report import load_report

    data = load_report(report_file)  # its errors name the file and the bad field
    metrics = {k: v for k, v in report_metrics(data).items() if v is not None}
    meta = {k: str(v) for k in ("dataset", "split", "n_images", "conf", "tta")
            if (v := report_meta(data, k)) is not None}
    return report_file.parent, metrics, meta


def _eval_tags(metrics: dict[str, float], meta: dict[str, str]) -> dict[str, str]:
    tags = {f"eval.{k}": f"{v:.6g}" for k, v in metrics.items()}
    return {**tags, **{f"eval.{k}": v for k, v in meta.items()}}


def report_tags(report: str | Path) -> dict[str, str]:
    """The ``eval.*`` version tags of an eval report: its headline metrics and what it was run on."""
    _, metrics, meta = _read_report(Path(report))
    return _eval_tags(metrics, meta)


def register_model(
    weights: str | Path, name: str, report: str | Path | None = None, run_id: str | None = None
) -> str:
    """Register a weights file as a new version of model ``name``; return the version.

    The weights (plus the ``.onnx`` export beside them, if there is one: its SHA-256 is a tag too, so a report
    on the export, as the API serves it, counts as one of this version) are logged as artifacts of an MLflow
    run, in the ``xraydet-registry`` experiment, or of the training run ``run_id`` when given; the eval report
    folder, if given, is logged under ``eval/`` and its headline metrics become ``eval.*`` tags.

    Example:
        >>> register_model("runs/train/weights/best.pt", "xray", report="runs/eval/best")  # doctest: +SKIP
        '1'
    """
    validate_name(name)
    weights = Path(weights)
    if not weights.is_file():
        raise RegistryError(f"weights file not found: {weights}")
    if weights.suffix not in WEIGHT_SUFFIXES:
        raise RegistryError(f"weights must be a .pt or .onnx file, got {weights.name}")
    report_dir, metrics, meta = _read_report(Path(report)) if report is not None else (None, {}, {})
    digest = sha256_file(weights)
    onnx = weights.with_suffix(".onnx") if weights.suffix == ".pt" else None
    onnx = onnx if onnx is not None and onnx.is_file() else None
    c = client()

    own_run = run_id is None
    if own_run:
        experiment_id = ensure_experiment(c, EXPERIMENT)
        run = c.create_run(experiment_id, run_name=f"register-{name}", tags={"xraydet.kind": "registry"})
        artifact_dir = MODEL_ARTIFACT_DIR
    else:
        from mlflow.exceptions import MlflowException

        try:
            run = c.get_run(str(run_id))
        except MlflowException as err:
            if not _is_missing(err):
                raise
            raise RegistryError(f"--run-id {run_id}: no such MLflow run in {c.tracking_uri}") from err
        artifact_dir = f"registry/{name}-{digest[:12]}"
    rid = run.info.run_id
    try:
        c.log_artifact(rid, str(weights), artifact_dir)
        if onnx is not None:
            c.log_artifact(rid, str(onnx), artifact_dir)
        if report_dir is not None:
            c.log_artifacts(rid, str(report_dir), "eval" if own_run else f"{artifact_dir}-eval")
        if own_run:
            c.log_param(rid, "weights", str(weights.resolve()))
            c.log_param(rid, "sha256", digest)
            for key, value in metrics.items():
                c.log_metric(rid, f"eval.{key}", value)
    except BaseException:
        if own_run:
            c.set_terminated(rid, status="FAILED")
        raise
    if own_run:
        c.set_terminated(rid)

    from mlflow.exceptions import MlflowException

    try:
        c.create_registered_model(name, description="xraydet threat detector")
    except MlflowException as err:
        if getattr(err, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
            raise
    tags = {TAG_SHA256: digest, TAG_WEIGHTS: weights.name, "source_path": str(weights.resolve()),
            **_eval_tags(metrics, meta)}
    if onnx is not None:
        tags[TAG_ONNX] = onnx.name
        tags[TAG_ONNX_SHA256] = sha256_file(onnx)
    mv = c.create_model_version(name, source=f"{run.info.artifact_uri}/{artifact_dir}", run_id=rid, tags=tags)
    log.info("registered %s version %s (sha256 %s...)", name, mv.version, digest[:12])
    return str(mv.version)


def _version_info(mv: ModelVersion, aliases: dict[str, Any]) -> VersionInfo:
    tags = dict(mv.tags or {})
    metrics = {}
    for key, value in tags.items():
        if key.startswith("eval."):
            with contextlib.suppress(ValueError):
                metrics[key[5:]] = float(value)
    # The latest promotion evaluation is newer than the registration report.
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        metrics.update({k: float(v) for k, v in json.loads(tags.get("decision_metrics", "{}")).items()})
    return VersionInfo(
        name=mv.name, version=str(mv.version),
        aliases=sorted(a for a, v in aliases.items() if str(v) == str(mv.version)),
        created=mv.creation_timestamp, run_id=mv.run_id, source=mv.source or "", sha256=tags.get(TAG_SHA256),
        weights=tags.get(TAG_WEIGHTS), decision=tags.get("decision"), metrics=metrics, tags=tags,
    )


def list_versions(name: str) -> list[VersionInfo]:
    """Every version of ``name`` (oldest first) with its aliases, tags and eval metrics."""
    c = client()
    model = get_model(name, c)
    return [_version_info(mv, model.aliases or {}) for mv in _versions(c, name)]


def list_models() -> list[ModelInfo]:
    """Every registered model with its champion, latest version and champion history."""
    c = client()
    out = []
    for model in sorted(c.search_registered_models(), key=lambda m: m.name):
        versions = _versions(c, model.name)
        champion = (model.aliases or {}).get(CHAMPION)
        out.append(ModelInfo(
            name=model.name, champion=str(champion) if champion is not None else None,
            latest=str(versions[-1].version) if versions else None, n_versions=len(versions),
            history=champion_history(model.name, c),
        ))
    return out
