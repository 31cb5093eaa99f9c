"""The DAG as text (Mermaid or DOT, for a terminal or a Markdown page) and as HTML (Jupyter),
with each step's status when a run is given."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from raymlp import _spec
from raymlp.pipelines._dsl import input_deps

__all__ = ["html_table", "render"]

FORMATS = ("mermaid", "dot")
_COLORS = {"SUCCEEDED": "#c8e6c9", "CACHED": "#bbdefb", "FAILED": "#ffcdd2",
           "SKIPPED": "#eeeeee", "NOT_RUN": "#eeeeee", "RUNNING": "#fff9c4",
           "RETRYING": "#ffe0b2", "PENDING": "#ffffff"}


def _edges(spec: Mapping[str, Any]) -> list[tuple[str, str]]:
    out = []
    for name, task in spec["tasks"].items():
        deps = set(task.get("after", []))
        for inp in task["inputs"].values():
            deps.update(input_deps(inp))
        gid = task["group"]
        while gid is not None:  # what the enclosing conditions and loops read
            group = spec["groups"][gid]
            for term in group.get("conditions", []):
                deps.update(input_deps(term["left"]) + input_deps(term["right"]))
            if group["kind"] == "loop":
                deps.update(input_deps(group["items"]))
            gid = group["parent"]
        out.extend((d, name) for d in sorted(deps))
    return out


def _status_of(task: str, steps: Mapping[str, Any] | None) -> str | None:
    if not steps:
        return None
    found = [r["status"] for n, r in steps.items() if r["task"] == task]
    if not found:
        return "PENDING"
    if len(found) == 1:
        return found[0]
    counts: dict[str, int] = {}
    for s in found:
        counts[s] = counts.get(s, 0) + 1
    return " ".join(f"{k}:{v}" for k, v in sorted(counts.items()))


def _label(task: str, spec: Mapping[str, Any], steps) -> str:
    group = spec["groups"].get(spec["tasks"][task]["group"], {})
    where = {"loop": " (loop)", "condition": " (if)"}.get(group.get("kind"), "")
    status = _status_of(task, steps)
    return f"{task}{where}" + (f" [{status}]" if status else "")


def render(spec: Mapping[str, Any], *, format: str = "mermaid",
           steps: Mapping[str, Any] | None = None) -> str:
    """The graph of a compiled spec as Mermaid (``flowchart TD``) or DOT text."""
    _spec.choice("graph.format", format, FORMATS)
    ids = {name: f"s{i}" for i, name in enumerate(spec["tasks"])}
    if format == "mermaid":
        lines = ["flowchart TD"]
        lines += [f'    {ids[n]}["{_label(n, spec, steps)}"]' for n in spec["tasks"]]
        lines += [f"    {ids[a]} --> {ids[b]}" for a, b in _edges(spec)]
        return "\n".join(lines)
    lines = [f'digraph "{spec["name"]}" {{', "    node [shape=box];"]
    for n in spec["tasks"]:
        status = _status_of(n, steps)
        color = _COLORS.get(status or "", "#ffffff")
        lines.append(f'    {ids[n]} [label="{_label(n, spec, steps)}", style=filled, '
                     f'fillcolor="{color}"];')
    lines += [f"    {ids[a]} -> {ids[b]};" for a, b in _edges(spec)]
    lines.append("}")
    return "\n".join(lines)


def html_table(spec: Mapping[str, Any], steps: Mapping[str, Any]) -> str:
    """Each step in dependency order with its status, colored (Jupyter)."""
    rows = []
    for name, rec in steps.items():
        status = rec["status"]
        extra = rec.get("error") or (f"{rec.get('duration_s') or 0:.2f} s"
                                     if status in ("SUCCEEDED", "CACHED") else "")
        rows.append(f"<tr style='background:{_COLORS.get(status, '#fff')}'>"
                    f"<td>{html.escape(name)}</td><td>{html.escape(status)}</td>"
                    f"<td>{html.escape(str(extra))[:300]}</td></tr>")
    deps = "".join(f"<li>{html.escape(a)} &rarr; {html.escape(b)}</li>" for a, b in _edges(spec))
    return (f"<table><tr><th>step</th><th>status</th><th></th></tr>{''.join(rows)}</table>"
            f"<details><summary>graph</summary><ul>{deps}</ul></details>")
