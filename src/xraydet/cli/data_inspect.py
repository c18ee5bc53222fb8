"""``xraydet data check | stats | split | merge``: a thin CLI over :mod:`xraydet.data.check`, ``stats``,
``split`` and ``merge`` (the logic lives there; this module only parses options and prints)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from xraydet.cli.checks import output_folder
from xraydet.cli.progress import counting_progress
from xraydet.data.stats import BoxSizeStats, DatasetStats

if TYPE_CHECKING:
    from xraydet.data.merge import MergeResult

LINK_HELP = (
    "Hard-link images instead of copying (symlink across file systems). The files are then shared with "
    "the source: anything that rewrites them in place (Ultralytics re-saves corrupt JPEGs) changes it too."
)
console = Console(soft_wrap=True)  # long paths stay on one line (copy-paste, grep)
err_console = Console(stderr=True)


# ---------------------------------------------------------------------------------------------- rendering


def stats_table(stats: DatasetStats, title: str = "Images / instances per class and split") -> Table:
    """Rows: classes (images/instances per split and in total), then background images and totals."""
    table = Table(title=title, title_justify="left")
    table.add_column("id", justify="right")
    table.add_column("class", no_wrap=True)
    splits = list(stats.splits)
    for split in splits:
        table.add_column(f"{split}\nimages / inst.", justify="right")
    table.add_column("total\nimages / inst.", justify="right")
    img_total, inst_total = stats.images_per_class(), stats.instances_per_class()
    for i, name in enumerate(stats.names):
        cells = [f"{stats.splits[s].images_per_class[i]} / {stats.splits[s].instances[i]}" for s in splits]
        style = "yellow" if inst_total[i] == 0 else None
        table.add_row(str(i), escape(name), *cells, f"{img_total[i]} / {inst_total[i]}", style=style)
    table.add_section()
    table.add_row(
        "",
        "background",
        *[str(stats.splits[s].background) for s in splits],
        str(sum(s.background for s in stats.splits.values())),
    )
    table.add_row(
        "",
        "[bold]all",
        *[f"{stats.splits[s].images} / {stats.splits[s].n_instances}" for s in splits],
        f"{stats.n_images} / {stats.n_instances}",
    )
    return table


def box_table(stats: DatasetStats) -> Table:
    """COCO size buckets and relative-area quantiles, overall and per class."""
    table = Table(
        title="Box sizes (COCO: small < 32² px, medium < 96² px; rel. = box / image area)",
        title_justify="left",
    )
    for col in ("class", "boxes", "small", "medium", "large", "rel. p05", "rel. p50", "rel. p95"):
        table.add_column(col, justify="left" if col == "class" else "right")

    def row(label: str, b: BoxSizeStats) -> list[str]:
        sized = b.small + b.medium + b.large
        pct = [f"{n / sized:.0%}" if sized else "-" for n in (b.small, b.medium, b.large)]
        q = [
            f"{b.rel_area_quantiles[k]:.4f}" if k in b.rel_area_quantiles else "-"
            for k in ("p05", "p50", "p95")
        ]
        return [label, str(b.boxes), *pct, *q]

    for name, b in zip(stats.names, stats.class_box_sizes, strict=False):
        table.add_row(*row(name, b))
    table.add_section()
    table.add_row(*row("[bold]all", stats.box_sizes))
    return table


def _emit_json(obj: dict, json_out: Path | None, to_stdout: bool) -> None:
    from xraydet.io import atomic_write_json

    if json_out:
        atomic_write_json(json_out, obj)
        err_console.print(f"wrote {escape(str(json_out))}")
    if to_stdout:
        typer.echo(json.dumps(obj, indent=2))


# ---------------------------------------------------------------------------------------------- commands


def check_cmd(
    dataset: Path = typer.Argument(
        ..., help="data.yaml or a folder holding one (or an images/<split> tree)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON to stdout (no tables)."),
    json_out: Path | None = typer.Option(None, "--json-out", help="Also write the JSON report to this file."),
    deep: bool = typer.Option(
        False, "--deep", help="Decode every pixel (slower) instead of header + end marker."
    ),
    split: list[str] = typer.Option([], "--split", "-s", help="Only these splits (repeatable)."),
    workers: int | None = typer.Option(
        None, "--workers", min=1, help="Threads (default: 2 per core, at most 8)."
    ),
    limit: int = typer.Option(10, "--limit", min=0, help="Problems listed per code in the table (0 = all)."),
) -> None:
    """Check images and labels; exit 1 on errors, 0 on warnings only.

    Errors: unreadable/truncated images, unparsable lines, class ids outside names, boxes outside [0,1] or of
    zero size, the same image in two splits (leakage). Warnings: background images without a label file,
    orphan label files, duplicates within a split, class imbalance, tiny boxes.
    """
    from xraydet.data.check import CODES, check_dataset
    from xraydet.errors import ConfigError

    if json_out is not None and json_out.is_dir():  # refused before the work, not after it
        raise ConfigError(f"--json-out {json_out}: is a folder; give the path of a .json file")
    with counting_progress("checking") as (advance, set_total):
        report = check_dataset(
            dataset, deep=deep, splits=split or None, workers=workers, progress=advance, on_start=set_total
        )
    body = report.model_dump(mode="json")
    _emit_json(body, json_out, as_json)
    if not as_json:
        out = console
        out.print(
            f"[bold]{escape(report.dataset)}[/]: {report.n_images} images, {len(report.names)} classes, "
            f"splits {', '.join(report.splits)}" + (" (deep decode)" if deep else "")
        )
        out.print(stats_table(report.stats))
        out.print(box_table(report.stats))
        counts = report.counts_by_code()
        if counts:
            summary = Table(title="Problems by code", title_justify="left")
            for col in ("severity", "code", "count", "meaning"):
                summary.add_column(col, justify="right" if col == "count" else "left")
            for code, n in counts.items():
                sev = CODES[code][0].value
                summary.add_row(_sev(sev), code, str(n), CODES[code][1])
            out.print(summary)
            # One line per problem, "file:line: message" as compilers print it: editors and grep follow it.
            out.print("[bold]Problems[/]")
            shown: dict[str, int] = {}
            for p in report.problems:
                shown[p.code] = shown.get(p.code, 0) + 1
                if limit and shown[p.code] > limit:
                    continue
                where = escape(p.where or report.dataset)
                out.print(f"{_sev(p.severity.value)} {p.code}: {where}: {escape(p.message)}", soft_wrap=True)
            hidden = sum(max(0, n - limit) for n in counts.values()) if limit else 0
            if hidden:
                out.print(f"({hidden} more not listed; --limit 0 lists all, --json gives every one)")
        colour = "red" if report.errors else ("yellow" if report.warnings else "green")
        out.print(
            f"[{colour}]{report.n_errors} errors, {report.n_warnings} warnings[/] - {report.n_images} "
            f"images in {report.elapsed_s:.2f} s ({report.images_per_s:,.0f} images/s)"
        )
    if report.errors:
        raise typer.Exit(1)


def _sev(severity: str) -> str:
    return f"[red]{severity}[/]" if severity == "error" else f"[yellow]{severity}[/]"


def stats_cmd(
    dataset: Path = typer.Argument(..., help="data.yaml or a folder holding one."),
    as_json: bool = typer.Option(False, "--json", help="Print the statistics as JSON to stdout."),
    plot: Path | None = typer.Option(
        None, "--plot", help="Write a PNG: instances per class/split + box sizes."
    ),
    split: list[str] = typer.Option([], "--split", "-s", help="Only these splits (repeatable)."),
) -> None:
    """Images and instances per class and split, and the box-size distribution."""
    from xraydet.data.stats import dataset_stats, plot_stats

    stats = dataset_stats(dataset, splits=split or None)
    if as_json:
        typer.echo(json.dumps(stats.model_dump(mode="json"), indent=2))
    else:
        console.print(stats_table(stats))
        console.print(box_table(stats))
    if plot:
        plot_stats(stats, plot, title=str(dataset))
        err_console.print(f"wrote {escape(str(plot))}")


def split_cmd(
    source: Path = typer.Argument(..., help="data.yaml or folder; all its splits are pooled."),
    out: Path = typer.Option(
        ..., "--out", "-o", help="New data-set folder (must not exist unless --overwrite)."
    ),
    val: float = typer.Option(0.15, "--val", help="Share of images for val."),
    test: float = typer.Option(0.0, "--test", help="Share of images for test (0: no test split)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Random seed (>= 0); same seed, same split."),
    link: bool = typer.Option(False, "--link", help=LINK_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists."),
) -> None:
    """Stratified (by each image's rarest class), seeded split into a new YOLO folder."""
    from xraydet.data.split import split_dataset

    output_folder(out)
    with counting_progress("splitting") as (advance, _):
        result = split_dataset(
            source, out, val=val, test=test, seed=seed, link=link, overwrite=overwrite, progress=advance
        )
    console.print(stats_table(result.stats, title=f"{escape(str(out))} (seed {seed})"))
    console.print(
        f"[green]wrote {escape(str(out / 'data.yaml'))}[/]: "
        + ", ".join(f"{k} {v}" for k, v in result.counts.items())
    )
    if result.duplicate_groups:
        console.print(
            f"kept {result.duplicate_groups} group(s) of identical images ({result.duplicate_images} images) "
            "together: each group is in one split, so no copy leaks from train into val/test"
        )


def merge_cmd(
    sources: list[Path] = typer.Argument(
        ..., help="Data sets (data.yaml or folders); the first one's classes first."
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Merged data-set folder (must not exist unless --overwrite)."
    ),
    rename: list[str] = typer.Option(
        [], "--rename", help="OLD=NEW class rename before the union (repeatable)."
    ),
    map_file: Path | None = typer.Option(
        None, "--map-file", help="YAML: rename: {old: new}, sources: {name: {..}}."
    ),
    case_insensitive: bool = typer.Option(
        False, "--case-insensitive", help="Match class names ignoring case."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan and counts; write nothing."),
    link: bool = typer.Option(False, "--link", help=LINK_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists."),
    keep_leaks: bool = typer.Option(
        False,
        "--keep-leaks",
        help="Keep the val/test copy of an image whose bytes are also in train (default: drop that copy).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON to stdout."),
) -> None:
    """Merge data sets: one class list (union by name), ids remapped in every label, threats united.

    An image found in two splits (the same bytes, e.g. in A's train and B's val) would leak into validation:
    its val/test copy is dropped with a warning naming both files (--keep-leaks keeps it).
    """
    from xraydet.data.merge import merge_datasets, parse_renames

    output_folder(out)
    with counting_progress("merging") as (advance, _):
        result = merge_datasets(
            sources,
            out,
            renames=parse_renames(rename),
            map_file=map_file,
            case_insensitive=case_insensitive,
            dry_run=dry_run,
            link=link,
            overwrite=overwrite,
            keep_leaks=keep_leaks,
            progress=advance,
        )
    if as_json:
        typer.echo(json.dumps(result.model_dump(mode="json"), indent=2))
        return
    for src in result.sources:
        mapping = Table(title=escape(f"source {src.name}: {src.path}"), title_justify="left")
        for col in ("id", "class", "-> merged id", "merged class"):
            mapping.add_column(col)
        for i, (name, new) in enumerate(zip(src.names, src.id_map, strict=True)):
            mapping.add_row(str(i), escape(name), str(new), escape(result.names[new]))
        console.print(mapping)
        console.print(stats_table(src.stats, title=f"{src.name}: images / instances"))
        if src.renamed_files:
            console.print(f"{src.renamed_files} file(s) renamed to {src.name}__<name> (name already taken)")
    console.print(stats_table(result.stats, title="merged: images / instances"))
    console.print(escape(f"merged classes ({len(result.names)}): {', '.join(result.names)}"))
    console.print(escape(f"threats: {', '.join(result.threats) or 'none'}"))
    _print_duplicates(result)
    verb = "would write" if dry_run else "wrote"
    console.print(
        f"[green]{verb} {escape(str(out))}[/] ({result.stats.n_images} images)"
        + (" - dry run, nothing written" if dry_run else "")
    )


def _print_duplicates(result: MergeResult) -> None:
    """A line per kind of identical image found (each logged naming both files; all listed in merge.json)."""
    if result.leaks_dropped:
        console.print(
            f"[yellow]{result.leaks_dropped} image(s) also in an earlier split (same bytes): their val/test "
            "copy left out, so the merged set does not leak (--keep-leaks keeps them)"
        )
    if result.leaks_kept:
        console.print(
            f"[red]{result.leaks_kept} image(s) in two splits kept (--keep-leaks): the merged set leaks; "
            "`xraydet data check` reports them as split-leak"
        )
    if result.duplicates_in_split:
        console.print(f"[yellow]{result.duplicates_in_split} identical copy(ies) kept within one split")
    lost = sum(d.labels_differ and d.dropped for d in result.duplicates)
    if lost:
        console.print(
            f"[red]{lost} left-out copy(ies) had other labels than the copy kept: their boxes are not in the "
            "merged set (each pair is in merge.json with labels_differ: true)"
        )


def register(data_app: typer.Typer) -> None:
    """Add ``check``, ``stats``, ``split`` and ``merge`` to the ``xraydet data`` group."""
    from xraydet.data.problems import codes_help

    data_app.command("check", epilog=escape(codes_help()))(check_cmd)
    data_app.command("stats")(stats_cmd)
    data_app.command("split")(split_cmd)
    data_app.command("merge")(merge_cmd)
