"""The training job: a typed, validated YAML file that says what to train, how long, and what to watch.

A job file holds our own keys (below), the seed plan's job keys (``MODEL_NAME``, ``EPOCHS``, ``BATCH_SIZE``,
``TIMEOUT``, ``DATASET``; string values such as ``"200"`` are accepted) and, at the top level or under
``overrides:``, any Ultralytics train argument (``lr0: 0.001``). Any other key is an error that names it.

Resolution order of the Ultralytics arguments: Ultralytics defaults < preset < job fields < ``overrides``.

Example:
    >>> job = TrainJob(data="data.yaml", epochs=3)
    >>> job.gate.resolved_epoch(job.epochs)  # the seed's epoch-100 decision, scaled for a 3-epoch run
    2
"""

from __future__ import annotations

import copy
import difflib
import re
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from xraydet.config import NotBool, number_from_text, read_yaml_mapping, set_key_path
from xraydet.errors import ConfigError
from xraydet.training.history import check_record_key
from xraydet.training.hooks.checkpoints import CHECKPOINT_EVERY, CheckpointEvery
from xraydet.training.hooks.decision_gate import (
    CONTINUE_ABOVE,
    DECISION_EPOCH,
    GATE_METRIC,
    ON_STOP,
    STOP_BELOW,
    DecisionEpoch,
    GateThreshold,
    OnStop,
    check_gate_metric,
    check_gate_thresholds,
    scaled_decision_epoch,
)
from xraydet.training.hooks.red_flags import (
    FLAG_ACTION,
    LOADER_WINDOW,
    MAX_WAIT_FRAC,
    MIN_REL_AMPLITUDE,
    MIN_SIGN_CHANGE_RATIO,
    MIN_VAL_RISE,
    NAN_ACTION,
    OSCILLATION_METRICS,
    OSCILLATION_WINDOW,
    OVERFIT_WINDOW,
    PLATEAU_METRIC,
    PLATEAU_MIN_DELTA,
    PLATEAU_PATIENCE,
    Action,
    LoaderWindow,
    MetricWindow,
    MinDelta,
    MinValRise,
    Patience,
    RelAmplitude,
    SignChangeRatio,
    WaitFraction,
)
from xraydet.training.hooks.timeout import TimeoutSeconds

SEED_KEYS = {
    "MODEL_NAME": "model",
    "EPOCHS": "epochs",
    "BATCH_SIZE": "batch",
    "TIMEOUT": "timeout_s",
    "DATASET": "data",
}
# Ultralytics arguments that xraydet manages itself, with where to set them instead.
RESERVED_ARGS = {
    "model": "the job's `model`",
    "data": "the job's `data`",
    "mode": "nothing (always train)",
    "task": "nothing (always detect)",
    "resume": "`xraydet train --resume RUN_DIR`",
    "project": "`--run-dir`",
    "name": "the job's `name` / `--run-dir`",
    "exist_ok": "nothing (xraydet owns the run folder)",
    "save_period": "the job's `checkpoint_every`",
    "val": "the job's `val_every`",
    "save": "the job's `save_every` (resume, the OOM retry and best.pt need checkpoints)",
    "cfg": "the job file itself",
}


def ultralytics_train_keys() -> set[str]:
    """Every argument Ultralytics' ``default.yaml`` knows."""
    from ultralytics.cfg import DEFAULT_CFG_DICT

    return set(DEFAULT_CFG_DICT)


def check_ultralytics_keys(args: dict[str, Any], where: str) -> None:
    """Raise naming the first key of ``args`` that Ultralytics does not know or that xraydet reserves."""
    valid = ultralytics_train_keys()
    for key in args:
        if key in RESERVED_ARGS:
            raise ConfigError(f"{where}: '{key}' is managed by xraydet; use {RESERVED_ARGS[key]} instead")
        if key not in valid:
            raise ConfigError(
                f"{where}: unknown Ultralytics train argument '{key}'{_did_you_mean(key, valid)}"
            )


def _did_you_mean(key: str, candidates: set[str] | list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, sorted(candidates), n=3)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def check_ultralytics_values(args: dict[str, Any], where: str) -> dict[str, Any]:
    """Ultralytics' own type and range checks (``check_cfg``) now, not when training starts.

    Returns a copy of ``args`` with the numeric text of numeric arguments (``lr0: 1e-3``) made a number.
    Errors name the key.
    """
    from ultralytics.cfg import CFG_FLOAT_KEYS, CFG_FRACTION_KEYS, CFG_INT_KEYS, check_cfg

    numeric = CFG_FLOAT_KEYS | CFG_FRACTION_KEYS | CFG_INT_KEYS | {"scale"}
    out: dict[str, Any] = {}
    for key, value in args.items():
        if isinstance(value, bool) and key in numeric:  # check_cfg takes a bool for an int: `time: yes` = 1 h
            word = str(value).lower()
            raise ConfigError(f"{where}: key '{key}': expected a number, got the boolean {word}")
        if isinstance(value, str) and key in numeric:
            value = number_from_text(value)
            if key in CFG_INT_KEYS and isinstance(value, float) and value.is_integer():
                value = int(value)
        try:
            check_cfg({key: value}, hard=True)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{where}: key '{key}': {err}") from err
        out[key] = value
    return out


def known_metrics_when_on(value: str | list[str], info: ValidationInfo) -> str | list[str]:
    """A field validator: the metric name(s) of a hook that is switched on are record keys; an off hook's
    settings are never used, so they are not judged. ``enabled`` must be declared before the field."""
    if not info.data.get("enabled", True):
        return value
    if isinstance(value, str):
        return check_record_key(value)
    for i, name in enumerate(value):
        try:
            check_record_key(name)
        except ValueError as err:
            raise ValueError(f"item {i}: {err}") from None
    return value


# Numbers a job gives as numbers: a YAML `true` (or `yes`, `on`) is refused, not read as 1.
Count = Annotated[int, NotBool]
Probability = Annotated[float, NotBool]


# The ranges and defaults of the gate's and red flags' settings (and of `checkpoint_every`, `timeout_s`) are
# the parameter types and defaults of their hooks (training/hooks/), defined there once: an extra hook named
# in `hooks:` is held to the same rules, and the two cannot drift apart.


class GateConfig(BaseModel):
    """The seed's decision at epoch 100: continue (>= continue_above), warn (between), stop (< stop_below)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    decision_epoch: Annotated[DecisionEpoch | None, NotBool] = Field(
        default=None,
        description=(
            f"1-based epoch of the decision; None = {DECISION_EPOCH}, or half the run when epochs < "
            f"{2 * DECISION_EPOCH}"
        ),
    )
    continue_above: GateThreshold = CONTINUE_ABOVE
    stop_below: GateThreshold = STOP_BELOW
    metric: str = GATE_METRIC
    on_stop: OnStop = ON_STOP

    def resolved_epoch(self, epochs: int) -> int:
        """The decision epoch for a run of ``epochs`` (the seed's 100 of 200, scaled down for short runs)."""
        if self.decision_epoch is not None:
            return self.decision_epoch
        return scaled_decision_epoch(epochs)

    _metric = field_validator("metric")(known_metrics_when_on)

    @field_validator("metric")
    @classmethod
    def _judgeable(cls, value: str, info: ValidationInfo) -> str:
        return check_gate_metric(value) if info.data.get("enabled", True) else value

    @model_validator(mode="after")
    def _ordered(self) -> GateConfig:
        if self.enabled:  # also when one of them is the default
            check_gate_thresholds(self.stop_below, self.continue_above)
        return self


class OscillationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    metrics: list[str] = Field(default_factory=lambda: list(OSCILLATION_METRICS))
    window: MetricWindow = OSCILLATION_WINDOW
    min_sign_change_ratio: SignChangeRatio = MIN_SIGN_CHANGE_RATIO
    min_rel_amplitude: RelAmplitude = MIN_REL_AMPLITUDE
    action: Action = FLAG_ACTION

    _metrics = field_validator("metrics")(known_metrics_when_on)


class PlateauConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    metric: str = PLATEAU_METRIC
    patience: Patience = PLATEAU_PATIENCE
    min_delta: MinDelta = PLATEAU_MIN_DELTA
    action: Action = FLAG_ACTION

    _metric = field_validator("metric")(known_metrics_when_on)


class OverfitConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    window: MetricWindow = OVERFIT_WINDOW
    min_val_rise: MinValRise = MIN_VAL_RISE
    action: Action = FLAG_ACTION


class LoaderStarvedConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    window: LoaderWindow = LOADER_WINDOW
    max_wait_frac: WaitFraction = MAX_WAIT_FRAC
    action: Action = FLAG_ACTION


class NanConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    action: Action = NAN_ACTION


class RedFlagConfig(BaseModel):
    """The seed's red flags; only NaN/inf loss stops by default, the others warn."""

    model_config = ConfigDict(extra="forbid")

    nan: NanConfig = Field(default_factory=NanConfig)
    oscillation: OscillationConfig = Field(default_factory=OscillationConfig)
    plateau: PlateauConfig = Field(default_factory=PlateauConfig)
    overfitting: OverfitConfig = Field(default_factory=OverfitConfig)
    loader_starved: LoaderStarvedConfig = Field(default_factory=LoaderStarvedConfig)


class XrayAugmentConfig(BaseModel):
    """X-ray augmentations Ultralytics lacks (training/xray_augment.py); per-scan probabilities, 0 = off."""

    model_config = ConfigDict(extra="forbid")

    rot90: Probability = Field(default=0.0, ge=0, le=1, description="turn a scan by 90, 180 or 270 degrees")
    threat_projection: Probability = Field(
        default=0.0, ge=0, le=1, description="project a threat cut from another scan into the bag (TIP)"
    )
    projection_classes: Annotated[list[Count] | None, NotBool] = Field(
        default=None, description="class ids that may be projected (all if unset): the threats of a mixed set"
    )
    threat_free: Probability = Field(
        default=0.0, ge=0, le=1, description="replace a scan by a threat-free bag cut from it (no labels)"
    )

    def augment(self) -> Any:
        """The :class:`~xraydet.training.xray_augment.XrayAugment` these settings describe."""
        from xraydet.training.xray_augment import XrayAugment

        classes = tuple(self.projection_classes) if self.projection_classes is not None else None
        return XrayAugment(self.rot90, self.threat_projection, classes, self.threat_free)


class HookSpec(BaseModel):
    """An extra hook looked up by name in the hook registry, with its keyword arguments."""

    model_config = ConfigDict(extra="forbid")

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class TrainJob(BaseModel):
    """A validated training job; :func:`load_job` resolves relative paths against the job file's folder."""

    model_config = ConfigDict(extra="forbid")

    name: str = "train"
    model: str = "yolov8n.yaml"
    data: Path
    preset: str = "improved"
    epochs: Count = Field(default=100, ge=1)
    batch: Annotated[Count | None, NotBool] = Field(
        default=None, ge=1, description="None = the preset's batch"
    )
    imgsz: Count = Field(default=640, ge=32)
    device: str | None = None
    workers: Annotated[Count | None, NotBool] = Field(default=None, ge=0)
    seed: Count = 0
    timeout_s: Annotated[TimeoutSeconds | None, NotBool] = None
    val_every: Count = Field(
        default=1,
        ge=1,
        description="validate every N epochs (and at the gate's epoch and the last): faster, coarser curve",
    )
    xray_augment: XrayAugmentConfig = Field(default_factory=XrayAugmentConfig)
    checkpoint_every: CheckpointEvery = CHECKPOINT_EVERY
    save_every: Count = Field(
        default=1,
        ge=1,
        description=(
            "write last.pt every N epochs (and at every validated, checkpoint_every and last epoch): faster; "
            "a resume redoes at most N-1 epochs"
        ),
    )
    min_batch: Count = Field(default=4, ge=1, description="CUDA OOM retries halve the batch down to this")
    experiment: str = "xraydet-train"
    gate: GateConfig = Field(default_factory=GateConfig)
    red_flags: RedFlagConfig = Field(default_factory=RedFlagConfig)
    hooks: list[HookSpec] = Field(default_factory=list)
    overrides: dict[str, Any] = Field(default_factory=dict)

    @field_validator("model")
    @classmethod
    def _model_offline(cls, v: str) -> str:
        return check_model_source(v)

    @field_validator("experiment")
    @classmethod
    def _experiment_named(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must name an MLflow experiment (got an empty name)")
        return v

    @field_validator("device", mode="before")
    @classmethod
    def _device_known(cls, v: Any) -> str | None:
        return check_device_form(v)

    @field_validator("overrides")
    @classmethod
    def _overrides_known(cls, v: dict[str, Any]) -> dict[str, Any]:
        typed = set(TrainJob.model_fields)
        for key in v:
            if key in typed:
                raise ValueError(f"'{key}' is a job field: set it at the top level, not under overrides")
        check_ultralytics_keys(v, where="overrides")
        return v

    def time_budget(self) -> bool:
        """Whether Ultralytics' ``time`` budget (from the preset or the overrides) plans the run's epochs."""
        try:
            args = self.train_args()
        except ConfigError:  # a preset file that cannot be found from here: the job's own overrides
            args = self.overrides
        return bool(args.get("time"))

    def gate_epoch(self) -> int | None:
        """The decision gate's epoch: the job's, or the seed's scaled to ``epochs``; None (the gate follows
        the epochs Ultralytics plans) when a ``time`` budget re-plans them and the job sets none."""
        if self.gate.decision_epoch is None and self.time_budget():
            return None
        return self.gate.resolved_epoch(self.epochs)

    def train_args(self, base_dir: Path | None = None) -> dict[str, Any]:
        """The Ultralytics train arguments this job resolves to (preset < job fields < overrides).

        The run folder, callbacks and logging switches are added by the trainer, not here.
        """
        from xraydet.training.presets import load_preset

        args: dict[str, Any] = dict(load_preset(self.preset, base_dir).args)
        args.update(
            model=self.model, data=str(self.data), epochs=self.epochs, imgsz=self.imgsz, seed=self.seed
        )
        for key in ("batch", "device", "workers"):
            value = getattr(self, key)
            if value is not None:
                args[key] = value
        args.update(self.overrides)
        return args


# What Ultralytics' ``parse_device`` / ``select_device`` read (``cuda:`` and spaces dropped, ``-1`` = an idle
# GPU). Only the form is judged here (a job may be written on one machine and trained on another); whether
# this machine has that device, run_training checks before it makes the run folder.
DEVICE_FORMS = (
    "cpu, mps, a CUDA index or indices (0 or 0,1; -1 picks an idle GPU), cuda, cuda:0, npu:0 or xpu:0"
)
_DEVICE = re.compile(r"cpu|mps(:0)?|cuda|(cuda:)?(\d+|-1)(,(\d+|-1))*|(npu|xpu)(:\d+(,\d+)*)?")


def check_device_form(value: Any) -> str | None:
    """A job's ``device`` as text for Ultralytics (None: Ultralytics picks), or an error naming the forms.

    YAML gives ``device: 0`` as a number and ``device: [0, 1]`` as a list; both are read as Ultralytics would.

    Example:
        >>> check_device_form(0), check_device_form([0, 1]), check_device_form(" cuda:1 ")
        ('0', '0,1', 'cuda:1')
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise PydanticCustomError(
            "device_bool",
            "expected a device ({forms}), got the boolean {value}",
            {"forms": DEVICE_FORMS, "value": str(value).lower()},
        )
    if isinstance(value, list | tuple) and all(type(i) is int for i in value):
        value = ",".join(map(str, value))
    text = str(value).strip() if isinstance(value, str | int) else None
    if text is None or not (text == "" or _DEVICE.fullmatch(text.lower().replace(" ", ""))):
        raise PydanticCustomError(
            "device",
            "{value} is not a device Ultralytics can train on; give {forms}",
            {"value": repr(value), "forms": DEVICE_FORMS},
        )
    return text or None


def check_model_source(model: str) -> str:
    """Accept a model YAML (built-in or local) or a local ``.pt``; never a name that would be downloaded."""
    path = Path(model).expanduser()
    if path.suffix == ".pt":
        if not path.is_file():
            stem = re.sub(r"\.pt$", "", path.name)
            raise ValueError(
                f"'{model}' is not a local file and xraydet never downloads weights; train from scratch with "
                f"'{stem}.yaml', or give the path of a .pt you have"
            )
        return str(path.resolve())
    if path.suffix in {".yaml", ".yml"}:
        if path.is_file():
            return str(path.resolve())
        try:
            from ultralytics.nn.tasks import yaml_model_load

            yaml_model_load(model)
        except Exception as err:  # Ultralytics raises several types for an unknown config
            raise ValueError(f"'{model}' is neither a local file nor an Ultralytics model config") from err
        return model
    raise ValueError(f"model must be a .yaml config (e.g. 'yolov8n.yaml') or a local .pt file, got '{model}'")


def seed_key_names(raw: dict[str, Any]) -> dict[str, str]:
    """Our field -> the seed key ``raw`` gives it by (``{"timeout_s": "TIMEOUT"}``), so that an error names
    the key as the user wrote it. A field given both ways (with the same value) is named as ours.

    Example:
        >>> seed_key_names({"EPOCHS": "200", "TIMEOUT": 60, "timeout_s": 60})
        {'epochs': 'EPOCHS'}
    """
    return {ours: seed for seed, ours in SEED_KEYS.items() if seed in raw and ours not in raw}


def _coerce_seed_keys(raw: dict[str, Any], where: str) -> dict[str, Any]:
    out = dict(raw)
    for seed_key, ours in SEED_KEYS.items():
        if seed_key not in out:
            continue
        value = out.pop(seed_key)
        if ours in {"epochs", "batch"} and isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        elif ours == "timeout_s" and isinstance(value, str):
            try:
                value = float(value)
            except ValueError as err:
                raise ConfigError(
                    f"{where}: key 'TIMEOUT': expected a number of seconds, got {value!r}"
                ) from err
        if ours in out and out[ours] != value:
            raise ConfigError(
                f"{where}: both '{seed_key}' ({value!r}) and '{ours}' ({out[ours]!r}) are set; keep one"
            )
        out[ours] = value
    return out


def _split_ultralytics_keys(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """Move top-level Ultralytics arguments under ``overrides``; any other unknown key is an error."""
    ours = set(TrainJob.model_fields)
    valid = ultralytics_train_keys()
    out: dict[str, Any] = {}
    given = raw.get("overrides") or {}
    if not isinstance(given, dict):
        raise ConfigError(
            f"{where}: key 'overrides': expected a mapping of Ultralytics train arguments (e.g. "
            f"'overrides: {{lr0: 0.001}}'), got {type(given).__name__}"
        )
    overrides = dict(given)
    for key, value in raw.items():
        if key in ours:
            out[key] = value
        elif key in RESERVED_ARGS:
            raise ConfigError(f"{where}: '{key}' is managed by xraydet; use {RESERVED_ARGS[key]} instead")
        elif key in valid:
            overrides[key] = value
        else:
            candidates = ours | valid | set(SEED_KEYS)
            raise ConfigError(f"{where}: unknown key '{key}'{_did_you_mean(key, candidates)}")
    if overrides:
        out["overrides"] = overrides
    return out


def apply_sets(raw: dict[str, Any], sets: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply ``key=value`` overrides to a copy of ``raw`` (values parsed as YAML; paths follow
    :func:`xraydet.config.set_key_path`, as the plan runner's ``--set`` does: dotted keys reach into sections,
    an integer picks a list item, ``hooks.0.params.patience=5`` or ``hooks[0].params.patience=5``, and so does
    the ``id`` of an item that has one).

    Unquoted numeric text is a number (``lr0=1e-3``, which YAML 1.1 reads as text); quoted text stays text
    (``name='2026'``, in a shell ``--set "name='2026'"``), as in YAML.

    Example:
        >>> apply_sets({}, ["lr0=1e-3", "name='2026'", "gate.metric=map50"])
        {'lr0': 0.001, 'name': '2026', 'gate': {'metric': 'map50'}}
        >>> apply_sets({"hooks": [{"name": "h", "params": {}}]}, ["hooks[0].params.x=1"])["hooks"]
        [{'name': 'h', 'params': {'x': 1}}]
    """
    out = copy.deepcopy(raw)
    for item in sets:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {key}: value is not valid YAML: {err}") from err
        quoted = text.strip()[:1] in ("'", '"')
        if isinstance(value, str) and not quoted:  # YAML 1.1 reads 1e-3 as text; typed bare, it is a number
            value = number_from_text(value)
        for seed_key, ours in SEED_KEYS.items():  # `--set epochs=3` on a seed-style job replaces EPOCHS
            if key.strip() == ours:
                out.pop(seed_key, None)
        out = set_key_path(out, key, value)
    return out


def job_from_dict(
    raw: dict[str, Any], where: str = "job", base_dir: Path | None = None, *, check_classes: bool = True
) -> TrainJob:
    """Validate a job mapping; relative ``data``/``model``/``preset`` paths resolve against ``base_dir``.

    Everything that can be checked before training starts is: Ultralytics' own argument checks, the hooks
    (built once), the preset. ``check_classes=False`` skips checking ``xray_augment.projection_classes``
    against the data set's classes (plan validation, whose ``data`` is a stand-in).
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of job keys, got {type(raw).__name__}")
    named = seed_key_names(raw)
    body = _split_ultralytics_keys(_coerce_seed_keys(raw, where), where)
    if isinstance(body.get("overrides"), dict):
        body["overrides"] = check_ultralytics_values(body["overrides"], where)
    if base_dir is not None:
        for key in ("data", "model"):
            value = body.get(key)
            if (
                isinstance(value, str | Path)
                and not Path(value).is_absolute()
                and (base_dir / value).exists()
            ):
                body[key] = str((base_dir / value).resolve())
        preset = body.get("preset")
        if isinstance(preset, str) and preset.endswith((".yaml", ".yml")) and not Path(preset).is_absolute():
            body["preset"] = str((base_dir / preset).resolve())
    try:
        job = TrainJob.model_validate(body)
    except ValidationError as err:
        first = err.errors()[0]
        loc = [str(p) for p in first["loc"]]
        key = ".".join([named.get(loc[0], loc[0]), *loc[1:]]) if loc else "root"
        more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
        raise ConfigError(f"{where}: key '{key}': {first['msg']}{more}") from err
    data_key = named.get("data", "data")
    if base_dir is not None and not job.data.is_absolute() and not job.data.exists():
        raise ConfigError(
            f"{where}: key '{data_key}': {job.data} does not exist beside the job ({base_dir.resolve()}) "
            f"or in the current folder ({Path.cwd()}); give a data.yaml or a folder holding one"
        )
    data_yaml, names = _data_yaml(job.data, f"{where}: key '{data_key}'")
    job = job.model_copy(update={"data": data_yaml})
    if check_classes:
        _check_projection_classes(job.xray_augment.projection_classes, names, where)
    try:
        args = job.train_args(base_dir)  # validates the preset now rather than at training time
    except ConfigError as err:
        raise ConfigError(f"{where}: key 'preset': {err}") from err
    check_ultralytics_values(args, where)
    _check_hooks(job, where)
    return job


def _check_hooks(job: TrainJob, where: str) -> None:
    """Build the job's extra hooks now: unknown names, bad parameters and clashing names are errors here."""
    from xraydet.training.hooks import HOOKS, build_hook
    from xraydet.training.trainer import build_job_hooks

    taken = {hook.name for hook in build_job_hooks(job.model_copy(update={"hooks": []})).hooks}
    for i, spec in enumerate(job.hooks):
        key = f"hooks[{i}]"
        if spec.name not in HOOKS:
            raise ConfigError(
                f"{where}: key '{key}.name': unknown hook '{spec.name}'"
                f"{_did_you_mean(spec.name, set(HOOKS))}; registered hooks: {', '.join(sorted(HOOKS))}"
            )
        try:
            hook = build_hook(spec.name, spec.params)
        except ConfigError as err:
            raise ConfigError(f"{where}: key '{key}.params': {err}") from err
        except Exception as err:  # the hook's own constructor refusing a value
            raise ConfigError(f"{where}: key '{key}.params': {type(err).__name__}: {err}") from err
        if hook.name in taken:
            raise ConfigError(
                f"{where}: key '{key}.name': the job already has a hook named '{hook.name}' "
                "(a built-in one, or an earlier entry); turn that one off or drop this entry"
            )
        taken.add(hook.name)


def _check_projection_classes(wanted: list[int] | None, names: list[str], where: str) -> None:
    if not wanted:
        return
    unknown = sorted(set(wanted) - set(range(len(names))))
    if unknown:
        raise ConfigError(
            f"{where}: key 'xray_augment.projection_classes': class id(s) {unknown} are not in the data set "
            f"(ids 0-{len(names) - 1}: {', '.join(names)})"
        )


def _data_yaml(data: Path, where: str) -> tuple[Path, list[str]]:
    """The data.yaml Ultralytics will read (``data`` itself or the one in the folder ``data``, checked now),
    and the data set's class names. ``where`` names the file and the key (``job.yaml: key 'DATASET'``)."""
    from xraydet.data.dataset import DatasetError, load_dataset, ultralytics_yaml
    from xraydet.tracking import runs_root

    if not data.exists():
        raise ConfigError(f"{where}: {data} does not exist (a data.yaml or a folder holding one)")
    try:
        dataset = load_dataset(data)
    except DatasetError as err:
        raise ConfigError(f"{where}: {err}") from err
    if dataset.yaml_path is None:
        raise ConfigError(f"{where}: {data} has no data.yaml (class names and splits are needed)")
    return ultralytics_yaml(dataset, runs_root() / "data-yaml"), dataset.names


def load_job(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> TrainJob:
    """Read and validate a job YAML file, applying ``--set key=value`` overrides first.

    Raises:
        ConfigError: the message names the file and the key at fault.
    """
    path = Path(path)
    raw = read_yaml_mapping(path, "job", example="model: yolov8n.yaml")
    return job_from_dict(apply_sets(raw, overrides), where=str(path), base_dir=path.parent.resolve())
