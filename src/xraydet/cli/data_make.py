"""``xraydet data synth | convert | doctor``: a thin CLI over :mod:`xraydet.data.synth`, ``convert`` and
``doctor`` (the logic lives there; this module only parses options and prints)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from xraydet.cli.checks import output_folder
from xraydet.cli.progress import counting_progress, progress, stdout_to_stderr

console = Console()
err_console = Console(stderr=True)


def _split_list(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


# ------------------------------------------------------------------------------------------------ synth
def synth_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (must not exist unless --overwrite)."),
    n_train: int = typer.Option(200, "--n-train", help="Train images."),
    n_val: int = typer.Option(50, "--n-val", help="Val images."),
    imgsz: int = typer.Option(320, "--imgsz", help="Image side in pixels."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same bytes."),
    threat_free_fraction: float = typer.Option(
        0.2, "--threat-free-fraction", help="Share of bags without threats."
    ),
    max_threats: int = typer.Option(2, "--max-threats", help="Threats per threat bag: 1..N."),
    bottle_probability: float = typer.Option(
        0.4, "--bottle-probability", help="Chance of a (labelled) bottle."
    ),
    clutter: float = typer.Option(1.0, "--clutter", help="Amount of clutter (0 = objects on a blank belt)."),
    image_format: str = typer.Option("jpg", "--format", help="jpg or png."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output folder."),
) -> None:
    """Generate a synthetic dual-energy X-ray baggage data set with pixel-exact YOLO labels."""
    from pydantic import ValidationError

    from xraydet.config import validation_problems
    from xraydet.data.synth import NAMES, THREATS, SynthConfig, generate
    from xraydet.errors import ConfigError

    try:
        cfg = SynthConfig(
            n_train=n_train,
            n_val=n_val,
            imgsz=imgsz,
            seed=seed,
            threat_free_fraction=threat_free_fraction,
            max_threats=max_threats,
            bottle_probability=bottle_probability,
            clutter=clutter,
            image_format=image_format,  # type: ignore[arg-type]
        )
    except ValidationError as err:
        problems = validation_problems(err, as_flags=True, flags={"image_format": "--format"})
        raise ConfigError(f"invalid synth options ({problems})") from err
    output_folder(out)
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} already exists; pass --overwrite to replace it")
    with counting_progress("rendering bags") as (advance, set_total):
        set_total(cfg.n_train + cfg.n_val)
        data_yaml = generate(cfg, out, overwrite=overwrite, progress=advance)
    console.print(
        f"wrote {cfg.n_train} train + {cfg.n_val} val scans ({cfg.imgsz} px) to [bold]{escape(str(out))}"
    )
    console.print(
        f"classes: {', '.join(f'{i} {n}' for i, n in enumerate(NAMES))}; threats: {', '.join(THREATS)}"
    )
    console.print(f"data.yaml: {escape(str(data_yaml))}")


# ---------------------------------------------------------------------------------------------- convert
def convert_cmd(
    src: Path = typer.Argument(
        ..., help="Annotation file, or a folder of them (splits from train/valid/test)."
    ),
    from_fmt: str = typer.Option(..., "--from", help="Source format: coco, voc or loctoken."),
    to_fmt: str = typer.Option("yolo", "--to", help="Target format (yolo)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output YOLO data set folder."),
    classes: str | None = typer.Option(None, "--classes", help="Explicit class order, comma-separated."),
    images: Path | None = typer.Option(
        None,
        "--images",
        exists=True,
        file_okay=False,
        help="Folder with the images, if not beside the labels.",
    ),
    bins: int = typer.Option(1024, "--bins", help="Loc-token bins per image side (PaliGemma: 1024)."),
    split: str | None = typer.Option(
        None, "--split", help="Put everything into this split: train, val or test."
    ),
    threats: str | None = typer.Option(
        None, "--threats", help="Classes to list as threats, comma-separated."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output folder."),
) -> None:
    """Convert COCO / Pascal VOC / loc-token JSONL annotations to YOLO; the class order is printed."""
    from xraydet.data.convert import SOURCE_FORMATS, convert
    from xraydet.data.dataset import SPLIT_NAMES
    from xraydet.errors import ConfigError

    if to_fmt != "yolo":
        raise ConfigError(f"--to {to_fmt}: only 'yolo' is supported")
    if from_fmt not in SOURCE_FORMATS:
        raise ConfigError(f"--from {from_fmt}: choose from {', '.join(SOURCE_FORMATS)}")
    if bins < 2:
        raise ConfigError("--bins must be at least 2")
    if split is not None and split not in SPLIT_NAMES:
        raise ConfigError(
            f"--split {split}: choose from {', '.join(SPLIT_NAMES)} (data.yaml has no other splits)"
        )
    output_folder(out)
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} already exists; pass --overwrite to replace it")
    with progress("converting") as update:
        result = convert(
            src,
            from_fmt,
            out,
            classes=_split_list(classes),
            images=images,
            bins=bins,
            split=split,
            threats=_split_list(threats),
            overwrite=overwrite,
            progress=update,
        )
    table = Table(title="Class order written to data.yaml", title_justify="left")
    table.add_column("YOLO id", justify="right")
    table.add_column("class")
    table.add_column("from")
    for i, (name, line) in enumerate(zip(result.names, result.mapping, strict=True)):
        table.add_row(str(i), escape(name), escape(line))
    console.print(table)
    for note in result.notes[:20]:
        console.print(f"[yellow]note:[/] {escape(note)}")
    if len(result.notes) > 20:
        console.print(f"[yellow]note:[/] ... {len(result.notes) - 20} more in conversion.json")
    for name, s in result.splits.items():
        console.print(f"{name}: {s.images} images, {s.boxes} boxes")
    console.print(f"data.yaml: {escape(str(result.data_yaml))}")


# ----------------------------------------------------------------------------------------------- doctor
def doctor_cmd(
    dataset: Path = typer.Argument(..., help="data.yaml or a folder with one."),
    split: str | None = typer.Option(None, "--split", help="Split to check (default: val, else train)."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Folder for doctor.json, scores.png, contact sheets."
    ),
    max_images: int = typer.Option(
        300, "--max-images", min=1, help="Labelled images sampled for the scores."
    ),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the image sample (>= 0)."),
    probe: bool = typer.Option(
        False, "--probe", help="Also run the quick overfit probe (trains on a temp copy)."
    ),
    probe_images: int = typer.Option(24, "--probe-images", min=1, help="Images the probe trains on."),
    probe_epochs: int = typer.Option(40, "--probe-epochs", min=1, help="Probe epochs (from scratch, CPU)."),
    probe_imgsz: int = typer.Option(160, "--probe-imgsz", min=32),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON instead of a table."),
) -> None:
    """Do the boxes sit on objects? Scores the labels against transposed/shifted/rescaled/rebinned copies.

    Exits 1 when the labels are flagged (or the probe's train-set mAP does not climb).
    """
    from xraydet.data.doctor import doctor

    # with --json, stdout carries the JSON only: the probe's Ultralytics log goes to stderr
    with stdout_to_stderr(json_out), progress("scoring labels") as update:
        report = doctor(
            dataset,
            split,
            out_dir=out,
            max_images=max_images,
            seed=seed,
            probe=probe,
            probe_images=probe_images,
            probe_epochs=probe_epochs,
            probe_imgsz=probe_imgsz,
            progress=update,
        )
    if json_out:
        typer.echo(json.dumps(report.model_dump(mode="json"), indent=2))
    else:
        table = Table(
            title=f"Label-content scores ({report.n_images} images, {report.n_boxes} boxes, "
            f"split {report.split})",
            title_justify="left",
        )
        for col in ("labels", "judged on", "contrast", "fit", "extent", "t", "given wins", "verdict"):
            table.add_column(col, justify="left" if col in ("labels", "judged on", "verdict") else "right")
        given = (report.given_contrast, report.given_fit, report.given_extent)
        table.add_row("given", "", *(f"{v:.3f}" for v in given), "", "", "")
        for p in report.perturbations:
            table.add_row(
                p.name,
                p.decided_by,
                f"{p.contrast:.3f}",
                f"{p.fit:.3f}",
                f"{p.extent:.3f}",
                f"{p.t_stat:+.1f}",
                f"{p.win_rate:.0%}",
                {
                    "flagged": "[red]beats the given: FLAG",
                    "inconclusive": "[yellow]cannot tell",
                    "ok": "[green]given wins: ok",
                }[p.decision],
            )
        console.print(table)
        if report.probe is not None:
            colour = "green" if report.probe.climbed else "red"
            console.print(f"probe: [{colour}]{escape(report.probe.verdict)}[/]")
        if out is not None:
            console.print(f"report, plot and contact sheets in [bold]{escape(str(out))}")
    if report.unreadable:
        shown = ", ".join(report.unreadable[:5]) + (" ..." if len(report.unreadable) > 5 else "")
        err_console.print(
            f"[yellow]skipped {len(report.unreadable)} image(s) that cannot be opened:[/] {escape(shown)} "
            "(run `xraydet data check`)"
        )
    if report.verdict == "no-labels":
        err_console.print("[yellow]no labelled images in this split: nothing to score")
    elif report.verdict == "flagged":
        err_console.print(f"[bold red]flagged:[/] labels look {' / '.join(report.faults)}")
    else:
        err_console.print("[bold green]pass:[/] no perturbation beats the given boxes")
    if report.inconclusive:
        err_console.print(
            f"[yellow]could not tell the given boxes from: {', '.join(report.inconclusive)}[/] "
            "(scores too close on this data: look at the contact sheets)"
        )
    if report.flagged:
        raise typer.Exit(1)


def register(data_app: typer.Typer) -> None:
    """Add ``synth``, ``convert`` and ``doctor`` to the ``xraydet data`` group."""
    data_app.command("synth")(synth_cmd)
    data_app.command("convert")(convert_cmd)
    data_app.command("doctor")(doctor_cmd)
