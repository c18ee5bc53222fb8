"""The end-of-plan report: the phases side by side with their val mAP50 curves on one plot, the evaluation's
final metrics, the readiness gate's table and what was deployed or kept. Markdown, JSON and a PNG, in
``<state_dir>/report/``. It is rewritten whenever the plan stops, so a half-run plan has a partial report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xraydet.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from xraydet.plan.schema import Plan
from xraydet.plan.state import PlanState, StepRecord

CURVE_FILE = "map50_per_epoch.png"
PHASE_COLUMNS = (
    "phase",
    "status",
    "epochs",
    "decision",
    "best mAP50",
    "final mAP50",
    "final mAP50-95",
    "wall time",
    "images/s",
    "cost",
)


def _on_path(state: PlanState, kind: str) -> list[StepRecord]:
    ids = list(state.trail) + ([state.current] if state.current and state.current not in state.trail else [])
    return [state.records[i] for i in ids if i in state.records and state.records[i].kind == kind]


def phase_rows(state: PlanState) -> list[dict[str, Any]]:
    """One row per training phase on the plan's path."""
    rows = []
    for rec in _on_path(state, "train"):
        out = rec.outcome
        rows.append(
            {
                "phase": rec.id,
                "title": rec.title,
                "status": out.get("status", rec.status),
                "stop_reason": out.get("stop_reason"),
                "epochs_completed": out.get("epochs_completed"),
                "epochs_planned": out.get("epochs_planned"),
                "decision": out.get("decision"),
                "decision_epoch": out.get("decision_epoch"),
                "best_map50": (out.get("best") or {}).get("map50"),
                "final": out.get("final") or {},
                "model": (rec.inputs.get("job") or {}).get("model") or out.get("model"),
                "data": out.get("data"),
                "next": rec.transition.goto if rec.transition else None,
                "wall_time_s": rec.wall_time_s,
                "images_per_s": (out.get("throughput") or {}).get("train_images_per_s"),
                "cost": rec.cost,
                "history": rec.details.get("history", []),
            }
        )
    return rows


def plot_curves(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Val mAP50 per epoch of every phase on one plot (PNG); None when no phase has a history yet."""
    curves = [r for r in rows if r["history"]]
    if not curves:
        return None
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for row in curves:
        points: dict[int, float] = {
            int(h["epoch"]): float(h["map50"]) for h in row["history"] if h.get("map50") is not None
        }
        if not points:
            continue
        (line,) = ax.plot(list(points), list(points.values()), marker="o", markersize=3, label=row["phase"])
        epoch = row.get("decision_epoch")
        if epoch in points:  # where the decision gate judged this phase, and what it said
            ax.plot(
                [epoch], [points[epoch]], marker="D", markersize=8, color=line.get_color(), fillstyle="none"
            )
            ax.annotate(
                row["decision"],
                (epoch, points[epoch]),
                textcoords="offset points",
                xytext=(6, -12),
                fontsize=8,
                color=line.get_color(),
            )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("val mAP50")
    ax.set_title("Validation mAP50 per epoch, all phases")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def build_report(plan: Plan, state: PlanState) -> dict[str, Any]:
    rows = phase_rows(state)
    evaluation = next(iter(_on_path(state, "evaluate")), None)
    gate = next(iter(_on_path(state, "gate")), None)
    deploy = next(iter(_on_path(state, "deploy")), None)
    return {
        "plan": plan.name,
        "status": state.status,
        "ended_with": state.end,
        "phases": rows,
        "evaluation": None
        if evaluation is None
        else {
            "status": evaluation.status,
            **evaluation.outputs,
            "metrics": evaluation.details.get("summary", {}),
        },
        "gate": None
        if gate is None
        else {
            "status": gate.status,
            "passed": gate.outcome.get("passed"),
            "criteria": gate.details.get("criteria", []),
        },
        "deployment": None if deploy is None else {"status": deploy.status, **deploy.outcome},
        "total_cost": round(sum(state.records[s].cost for s in state.trail), 4),
        "currency": plan.cost.currency,
    }


def render_markdown(report: dict[str, Any], curve: Path | None) -> str:
    lines = [
        f"# Plan report: {report['plan']}",
        "",
        f"Status: **{report['status']}**, total cost {report['total_cost']:.2f} {report['currency']}.",
        "",
        "## Phases",
        "",
    ]
    if report["phases"]:
        lines += ["| " + " | ".join(PHASE_COLUMNS) + " | next |", "|" + "---|" * (len(PHASE_COLUMNS) + 1)]
        for r in report["phases"]:
            final = r["final"]
            lines.append(
                f"| {r['phase']} | {r['status']} "
                f"| {r['epochs_completed']}/{r['epochs_planned']} | {r['decision'] or '-'} "
                f"| {_f(r['best_map50'])} "
                f"| {_f(final.get('map50'))} | {_f(final.get('map50_95'))} | {r['wall_time_s']:.0f}s "
                f"| {_f(r['images_per_s'], '.0f')} | {r['cost']:.2f} | {r['next'] or '-'} |"
            )
    else:
        lines.append("No phase has run yet.")
    if curve is not None:
        lines += ["", f"![val mAP50 per epoch]({curve.name})"]
    lines += ["", "## Final evaluation", ""]
    ev = report["evaluation"]
    if ev and ev.get("metrics"):
        lines += [
            f"Candidate: {ev.get('candidate', '?')} ({ev.get('model', '')}), evaluated via "
            f"{ev.get('via', '?')}; full report in `{ev.get('report_dir', '')}`.",
            "",
            "| metric | value |",
            "|---|---|",
        ]
        lines += [f"| {k} | {_f(v)} |" for k, v in ev["metrics"].items()]
    else:
        lines.append("Not evaluated.")
    lines += ["", "## Readiness gate", ""]
    gate = report["gate"]
    if gate and gate.get("criteria"):
        lines += [
            f"Gate: **{'PASS' if gate['passed'] else 'FAIL'}**",
            "",
            "| criterion | value | limit | result | detail |",
            "|---|---|---|---|---|",
        ]
        for c in gate["criteria"]:
            skipped = c.get("skipped")
            limit = "off" if skipped else f"{c.get('op', '')} {_f(c.get('limit'))}"
            result = "skipped" if skipped else ("PASS" if c.get("passed") else "FAIL")
            lines.append(
                f"| {c.get('name')} | {_f(c.get('value'))} | {limit} | {result} | {c.get('detail') or ''} |"
            )
    else:
        lines.append("Gate not checked.")
    lines += ["", "## Deployment", ""]
    dep = report["deployment"]
    if dep and dep.get("action"):
        lines.append(f"**{dep['action']}**: {dep.get('reason', '')}")
        lines.append(
            f"Model `{dep.get('model_name')}` version {dep.get('version')}; champion before: "
            f"{dep.get('champion_before') or 'none'}, after: {dep.get('champion_after') or 'none'}."
        )
    else:
        lines.append("Nothing deployed.")
    return "\n".join(lines) + "\n"


def write_report(plan: Plan, state: PlanState, state_dir: Path) -> Path:
    """Write ``report/report.md``, ``report/report.json`` and the mAP50 plot; returns the Markdown path."""
    folder = state_dir / "report"
    report = build_report(plan, state)
    curve = plot_curves(report["phases"], folder / CURVE_FILE)
    report["curve_png"] = None if curve is None else str(curve)
    atomic_write_json(folder / "report.json", report)
    return atomic_write_text(folder / "report.md", render_markdown(report, curve))


def _f(value: Any, spec: str = ".3f") -> str:
    if isinstance(value, float):
        return f"{value:{spec}}"
    return "-" if value is None else str(value)
