"""The decision log: for every step on the plan's path, what went in, what came out, the decisions taken
inside it (a decision gate's verdict, a promotion) and between steps (the transition rule that fired and the
numbers it read), wall time and cost. Written as ``decisions.json`` and ``decisions.md`` in the state dir.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xraydet.io import atomic_write_json, atomic_write_text
from xraydet.plan.schema import Plan
from xraydet.plan.state import PlanState, StepRecord


def build_decision_log(plan: Plan, state: PlanState) -> dict[str, Any]:
    """The log as a JSON-ready dict: plan, status, totals and one entry per step on the path (in order)."""
    entries = [_entry(state.records[s]) for s in _path(state)]
    total_s = sum(state.records[s].wall_time_s for s in _path(state))
    total_cost = sum(state.records[s].cost for s in _path(state))
    gpu_hours = sum(state.records[s].gpu_hours for s in _path(state))
    return {
        "plan": plan.name,
        "description": plan.description,
        "status": state.status,
        "ended_with": state.end,
        "current": state.current,
        "path": _path(state),
        "totals": {
            "wall_time_s": round(total_s, 1),
            "gpu_hours": round(gpu_hours, 4),
            "cost": round(total_cost, 4),
            "currency": plan.cost.currency,
            "price_per_gpu_hour": plan.cost.price_per_gpu_hour,
            "billed_kinds": plan.cost.billed_kinds,
        },
        "steps": entries,
    }


def _path(state: PlanState) -> list[str]:
    """Steps on the path: the trail, plus the step in progress when the plan stopped mid-way."""
    path = list(state.trail)
    if state.current and state.current not in path:
        path.append(state.current)
    return path


def _entry(record: StepRecord) -> dict[str, Any]:
    transition = record.transition
    return {
        "id": record.id,
        "kind": record.kind,
        "title": record.title,
        "status": record.status,
        "reused": record.reused,
        "attempts": record.attempts,
        "inputs": record.inputs,
        "outputs": record.outputs,
        "outcome": record.outcome,
        "decisions": record.decisions,
        "transition": None
        if transition is None
        else {
            "rule": transition.rule,
            "rule_fired": transition.rule_text,
            "note": transition.note,
            "numbers_read": transition.reads,
            "conditions_checked": [c.model_dump() for c in transition.checked],
            "branch": transition.goto,
        },
        "wall_time_s": round(record.wall_time_s, 1),
        "gpu_hours": round(record.gpu_hours, 5),
        "cost": round(record.cost, 4),
        "error": record.error,
    }


def render_markdown(log: dict[str, Any]) -> str:
    """The log as Markdown: a summary table, then each step's decisions with their numbers."""
    cur = log["totals"]["currency"]
    lines = [
        f"# Decision log: {log['plan']}",
        "",
        log["description"].strip(),
        "",
        f"Status: **{log['status']}**"
        + (f" (ended with `{log['ended_with']}`)" if log["ended_with"] else ""),
        f"Path: {' -> '.join(log['path']) or '(nothing run yet)'}",
        f"Total wall time {_duration(log['totals']['wall_time_s'])}, "
        f"{log['totals']['gpu_hours']:.3f} GPU-hours, "
        f"cost {log['totals']['cost']:.2f} {cur} at {log['totals']['price_per_gpu_hour']} {cur} per GPU-hour "
        f"(billed kinds: {', '.join(log['totals']['billed_kinds'])}).",
        "",
        "| step | kind | status | decision | next | wall time | cost |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in log["steps"]:
        t = e["transition"] or {}
        status = e["status"] + (" (reused)" if e["reused"] else "")
        lines.append(
            f"| {e['id']} | {e['kind']} | {status} | {t.get('rule_fired', '')} | {t.get('branch', '')} "
            f"| {_duration(e['wall_time_s'])} | {e['cost']:.2f} |"
        )
    for e in log["steps"]:
        lines += ["", f"## {e['id']} ({e['kind']}){': ' + e['title'] if e['title'] else ''}", ""]
        lines.append(
            f"- status: {e['status']}{' (outputs intact, not run again)' if e['reused'] else ''}, "
            f"attempts: {e['attempts']}, wall time {_duration(e['wall_time_s'])}, "
            f"{e['gpu_hours']:.4f} GPU-hours, cost {e['cost']:.2f} {cur}"
        )
        if e["error"]:
            lines.append(f"- error: {e['error']}")
        lines.append(f"- inputs: {_inline(e['inputs'])}")
        if e["outputs"]:
            lines.append(f"- outputs: {_inline(e['outputs'])}")
        for d in e["decisions"]:
            values = ", ".join(f"{k}={_num(v)}" for k, v in (d.get("values") or {}).items())
            lines.append(
                f"- decision: {d.get('what', '')}: **{d.get('decision', '')}**"
                + (f" — {d['reason']}" if d.get("reason") else "")
                + (f" ({values})" if values else "")
            )
        t = e["transition"]
        if t:
            numbers = ", ".join(f"{k} = {_num(v)}" for k, v in t["numbers_read"].items()) or "none"
            lines.append(
                f"- transition: {_rule(t['rule'])} fired: "
                f"`{t['rule_fired']}` -> **{t['branch']}**" + (f" ({t['note']})" if t["note"] else "")
            )
            lines.append(f"- numbers read: {numbers}")
            for c in t["conditions_checked"]:
                lines.append(f"  - `{c['text']}`: {'true' if c['holds'] else 'false'}")
    return "\n".join(lines) + "\n"


def write_decision_log(plan: Plan, state: PlanState, state_dir: Path) -> tuple[Path, Path]:
    """Write ``decisions.json`` and ``decisions.md`` into ``state_dir``."""
    log = build_decision_log(plan, state)
    return (
        atomic_write_json(state_dir / "decisions.json", log),
        atomic_write_text(state_dir / "decisions.md", render_markdown(log)),
    )


def _rule(index: int | None) -> str:
    return "no rule" if index is None else f"rule {index + 1}"


def _duration(seconds: float) -> str:
    seconds = float(seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _num(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _inline(mapping: dict[str, Any], limit: int = 400) -> str:
    text = ", ".join(
        f"{k}={_num(v) if not isinstance(v, dict | list) else v}"
        for k, v in mapping.items()
        if v not in (None, [], {})
    )
    return text if len(text) <= limit else text[: limit - 3] + "..."


def headline(record: StepRecord) -> str:
    """The few numbers that say how a step went, for status tables (e.g. ``final mAP50 0.31, gate stop``)."""
    out = record.outcome
    parts: list[str] = []
    if record.kind == "train":
        final = out.get("final") or {}
        if "map50" in final:
            parts.append(f"final mAP50 {final['map50']:.3f}")
        if out.get("status"):
            parts.append(f"{out['status']} {out.get('epochs_completed')}/{out.get('epochs_planned')} ep")
        if out.get("decision") not in (None, "none"):
            parts.append(f"decision {out['decision']}@{out.get('decision_epoch')}")
        if out.get("red_flags"):
            parts.append(f"red flags: {', '.join(out.get('red_flag_hooks', []))}")
    elif record.kind == "evaluate":
        box, screening = out.get("box") or {}, out.get("screening") or {}
        if box:
            parts.append(f"{out.get('candidate')}: mAP50 {box.get('map50', 0):.3f}")
        if screening.get("threat_detection_rate") is not None:
            parts.append(f"detection {screening['threat_detection_rate']:.0%}")
        if screening.get("false_alarm_rate") is not None:
            parts.append(f"false alarms {screening['false_alarm_rate']:.0%}")
    elif record.kind == "gate" and "passed" in out:
        parts.append("PASS" if out["passed"] else f"FAIL ({', '.join(out.get('failed', []))})")
    elif record.kind == "deploy" and out.get("action"):
        after = out.get("champion_after")
        champion = f"champion: v{after}" if after not in (None, "", "none") else "no champion"
        parts.append(f"{out['action']} v{out.get('version')} ({champion})")
    elif record.kind == "check" and "errors" in out:
        parts.append(f"{out.get('images')} images, {out['errors']} errors, {out.get('warnings')} warnings")
    elif record.kind == "doctor" and "verdict" in out:
        parts.append(str(out["verdict"]) + (f" ({out['faults']} faults)" if out.get("faults") else ""))
        if "images" in out:  # state written before the doctor recorded its counts has only the verdict
            parts.append(
                f"{out['images']} images, {out['boxes']} boxes, contrast {out['given_contrast']:.3f}"
            )
    elif record.kind == "synth" and "n_train" in out:
        parts.append(f"{out['n_train']} train / {out['n_val']} val at {out['imgsz']} px")
    elif record.kind in ("merge", "convert") and "classes" in out:
        parts.append(f"{out['classes']} classes")
    if record.error:
        parts.append(record.error[:80])
    return "; ".join(parts)
