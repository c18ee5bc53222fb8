"""Data step kinds: ``synth``, ``check``, ``convert`` and ``merge``, each a thin call into
:mod:`xraydet.data`.

Steps that make a data set output ``data_yaml`` (use it elsewhere as ``@<step id>``) and fingerprint the
data set's folder, so a resumed plan notices a data set that was changed or deleted and makes it again.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from xraydet.config import NotBool
from xraydet.plan.steps import StepContext, StepFailed, StepResult, reference_problems, register_step_kind

if TYPE_CHECKING:
    from xraydet.plan.schema import Plan


class SynthParams(BaseModel):
    """``synth``: generate a synthetic X-ray data set (any :class:`xraydet.data.synth.SynthConfig` key)."""

    model_config = ConfigDict(extra="allow")

    out: str | None = Field(None, description="output folder (relative: under the state dir)")


def _synth_check(params: SynthParams, plan: Plan) -> list[str]:
    from pydantic import ValidationError

    from xraydet.data.synth import SynthConfig
    from xraydet.plan.schema import format_validation_error

    try:
        SynthConfig.model_validate(params.model_extra or {})
    except ValidationError as err:
        return format_validation_error(err)
    return []


def _fresh(ctx: StepContext, path: Path) -> Path:
    """Remove what an earlier attempt left under the state dir (outputs are rebuilt whole).

    A folder outside the state dir is never removed: the data tools then refuse to overwrite it.
    """
    if path.exists() and path.resolve().is_relative_to(ctx.state_dir.resolve()):
        shutil.rmtree(path)
    return path


@register_step_kind("synth", SynthParams, "generate a synthetic X-ray data set", _synth_check)
def run_synth(ctx: StepContext, params: SynthParams) -> StepResult:
    from xraydet.data.synth import SynthConfig, generate

    cfg = SynthConfig.model_validate(params.model_extra or {})
    out = _fresh(ctx, ctx.output_path(params.out, "data"))
    data_yaml = generate(cfg, out)
    return StepResult(
        outputs={"data_yaml": data_yaml},
        files={"dataset": out},
        outcome={"n_train": cfg.n_train, "n_val": cfg.n_val, "imgsz": cfg.imgsz},
    )


class CheckParams(BaseModel):
    """``check``: check a data set; by default the plan stops on errors (warnings are logged)."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(..., description="a path or @name")
    deep: bool = False
    fail_on_errors: bool = True


def _refs_check(*keys: str) -> Any:
    def check(params: BaseModel, plan: Plan) -> list[str]:
        problems = []
        for key in keys:
            value = getattr(params, key)
            refs = value if isinstance(value, list) else [value]
            problems += reference_problems(refs, plan, key)
        return problems

    return check


@register_step_kind("check", CheckParams, "check a data set (xraydet data check)", _refs_check("dataset"))
def run_check(ctx: StepContext, params: CheckParams) -> StepResult:
    from xraydet.data.check import check_dataset
    from xraydet.io import atomic_write_json

    source = ctx.resolve_data(params.dataset)
    report = check_dataset(source, deep=params.deep)
    path = atomic_write_json(ctx.work_dir / "check.json", report.model_dump(mode="json"))
    errors = [f"{p.where}: {p.message}" if p.where else p.message for p in report.errors]
    if errors and params.fail_on_errors:
        shown = "; ".join(errors[:5]) + (f" (and {len(errors) - 5} more)" if len(errors) > 5 else "")
        raise StepFailed(f"{source}: {len(errors)} data errors ({shown}); full report in {path}")
    return StepResult(
        outputs={"dataset": str(source), "report": path},
        files={"report": path},
        outcome={
            "ok": report.ok,
            "errors": len(report.errors),
            "warnings": len(report.warnings),
            "images": report.n_images,
        },
        decisions=[
            {
                "what": f"data check of {source.name}",
                "decision": "ok" if report.ok else "errors",
                "reason": f"{len(report.errors)} errors, {len(report.warnings)} warnings",
                "values": {
                    "images": report.n_images,
                    "errors": len(report.errors),
                    "warnings": len(report.warnings),
                },
            }
        ],
    )


class DoctorParams(BaseModel):
    """``doctor``: do the boxes sit on the objects? Stops the plan when the labels look transposed (the seed's
    real fault), shifted, mis-scaled or rebinned (read over 1000 bins), before any GPU time is spent."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(..., description="a path or @name")
    split: str | None = None
    max_images: Annotated[int, NotBool] = Field(300, ge=1)
    seed: Annotated[int, NotBool] = Field(0, ge=0)
    fail_on_flag: bool = True


@register_step_kind(
    "doctor", DoctorParams, "check that labels sit on objects (xraydet data doctor)", _refs_check("dataset")
)
def run_doctor(ctx: StepContext, params: DoctorParams) -> StepResult:
    from xraydet.data.doctor import doctor

    source = ctx.resolve_data(params.dataset)
    report = doctor(
        source, params.split, out_dir=ctx.work_dir / "doctor", max_images=params.max_images, seed=params.seed
    )
    path = ctx.work_dir / "doctor" / "doctor.json"
    worst = max(report.perturbations, key=lambda p: p.contrast, default=None)
    values: dict[str, Any] = {"images": report.n_images, "boxes": report.n_boxes}
    values["given_contrast"] = round(report.given_contrast, 3)
    if worst is not None:
        values[f"best_perturbed_contrast ({worst.name})"] = round(worst.contrast, 3)
    if report.flagged and params.fail_on_flag:
        raise StepFailed(f"{source}: labels look wrong ({'; '.join(report.faults)}); see {path}")
    return StepResult(
        outputs={"dataset": str(source), "report": path},
        files={"report": path},
        outcome={
            "verdict": report.verdict,
            "faults": len(report.faults),
            "images": report.n_images,
            "boxes": report.n_boxes,
            "given_contrast": values["given_contrast"],
        },
        decisions=[
            {
                "what": f"label sanity (doctor) of {source.name}",
                "decision": report.verdict,
                "reason": "; ".join(report.faults) or "the given boxes score above every perturbed copy",
                "values": values,
            }
        ],
    )


class MergeParams(BaseModel):
    """``merge``: merge data sets into one (union of classes by name, threats kept)."""

    model_config = ConfigDict(extra="forbid")

    sources: list[str] = Field(..., min_length=1, description="paths or @names, in order")
    out: str | None = None
    renames: dict[str, str] = Field(default_factory=dict)
    map_file: str | None = None
    case_insensitive: bool = False
    link: bool = False
    keep_leaks: bool = Field(False, description="keep val/test copies of images also in train (a leak)")


@register_step_kind("merge", MergeParams, "merge data sets (xraydet data merge)", _refs_check("sources"))
def run_merge(ctx: StepContext, params: MergeParams) -> StepResult:
    from xraydet.data.merge import merge_datasets

    sources = [ctx.resolve_data(s) for s in params.sources]
    out = _fresh(ctx, ctx.output_path(params.out, "data"))
    result = merge_datasets(
        sources,
        out,
        renames=params.renames or None,
        map_file=ctx.resolve_path(params.map_file) if params.map_file else None,
        case_insensitive=params.case_insensitive,
        link=params.link,
        keep_leaks=params.keep_leaks,
    )
    return StepResult(
        outputs={"data_yaml": out / "data.yaml"},
        files={"dataset": out},
        outcome={
            "classes": len(result.names),
            "threats": result.threats,
            "sources": len(sources),
            "leaks_dropped": result.leaks_dropped,
            "leaks_kept": result.leaks_kept,
        },
        details={"names": result.names},
    )


class ConvertParams(BaseModel):
    """``convert``: convert COCO / VOC / loc-token annotations to a YOLO data set."""

    model_config = ConfigDict(extra="forbid")

    src: str
    format: Literal["coco", "voc", "loctoken"]
    out: str | None = None
    classes: list[str] | None = None
    images: str | None = None
    split: str | None = None
    threats: list[str] | None = None


@register_step_kind("convert", ConvertParams, "convert annotations to YOLO (xraydet data convert)")
def run_convert(ctx: StepContext, params: ConvertParams) -> StepResult:
    from xraydet.data.convert import convert

    out = _fresh(ctx, ctx.output_path(params.out, "data"))
    result = convert(
        ctx.resolve_path(params.src),
        params.format,
        out,
        classes=params.classes,
        images=ctx.resolve_path(params.images) if params.images else None,
        split=params.split,
        threats=params.threats,
    )
    if not (out / "data.yaml").is_file():
        raise StepFailed(f"conversion wrote no data.yaml in {out}")
    return StepResult(
        outputs={"data_yaml": out / "data.yaml"},
        files={"dataset": out},
        outcome={"classes": len(getattr(result, "names", []) or [])},
    )
