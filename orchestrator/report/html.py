"""The report page: one HTML file with its styles and figures inline, nothing fetched.

Plain functions from already-read runs and already-drawn figures to text;
every value that comes from a file goes through ``html.escape``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from html import escape
from typing import Any, Sequence

from orchestrator import __version__
from orchestrator.report.runs import RunData

CSS = """
:root { color-scheme: light; --ok: #1e7b34; --bad: #b3261e; --warn: #8a5a00; --line: #d8d8d8; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: #1d1d1d;
       margin: 0 auto; max-width: 1120px; padding: 1rem 1.2rem 3rem; }
h1 { font-size: 1.6rem; margin: .2rem 0; } h2 { font-size: 1.3rem; margin-top: 2.2rem; border-bottom: 2px solid #333; }
h3 { font-size: 1.05rem; margin: 1.4rem 0 .4rem; }
nav ul { padding-left: 1.2rem; margin: .3rem 0; }
.table-wrap { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: .3rem 0; }
th, td { border-bottom: 1px solid var(--line); padding: .28rem .6rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.kv th { width: 13rem; background: none; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; background: #f5f5f5; padding: .55rem .7rem; border-radius: 4px;
      font-size: .86rem; }
figure.fig { margin: 1.2rem 0 1.8rem; }
figure.fig svg { display: block; width: 100%; max-width: 100%; height: auto; }
figcaption { font-size: .9rem; color: #444; margin-top: .3rem; }
.badge { display: inline-block; color: #fff; border-radius: 3px; padding: 0 .45rem; font-size: .8rem; vertical-align: middle; }
.badge.ok { background: var(--ok); } .badge.bad { background: var(--bad); } .badge.warn { background: var(--warn); }
.banner { border-left: 5px solid var(--bad); background: #fbeceb; padding: .5rem .8rem; margin: .6rem 0; }
.banner.warn { border-color: var(--warn); background: #fbf3e2; }
.muted { color: #666; }
@media (max-width: 640px) {
  body { font-size: 14px; padding: .6rem .6rem 2rem; }
  th, td { padding: .22rem .35rem; }
  table.kv th { width: auto; }
  h2 { font-size: 1.15rem; }
}
@media print {
  body { max-width: none; padding: 0; font-size: 11pt; }
  nav, .png-link { display: none; }
  section.run { break-before: page; }
  figure.fig { break-before: page; break-inside: avoid; page-break-inside: avoid; }
  table, pre { break-inside: avoid; }
  a { color: inherit; text-decoration: none; }
}
"""


@dataclasses.dataclass(frozen=True)
class DrawnFigure:
    """A figure ready for the page: its inline SVG, its PNG's relative path, its caption."""

    key: str  # e.g. "r0-gantt": the <figure>'s id is "fig-<key>"
    title: str
    svg: str
    png: str
    caption: str


@dataclasses.dataclass
class RunSection:
    """What the page shows for one run."""

    index: int
    data: RunData
    figures: list[DrawnFigure]
    notes: list[str]  # why a figure is missing, clock corrections, ...


def page(sections: Sequence[RunSection], *, comparison: tuple[list[dict[str, Any]], DrawnFigure | None] | None,
         command: str | None, title: str) -> str:
    """The whole HTML document."""
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    nav = "".join(f'<li><a href="#run-{s.index}">{escape(s.data.label)}</a> {_verdict_badge(s.data)}</li>' for s in sections)
    if comparison is not None:
        nav = '<li><a href="#comparison">comparison</a></li>' + nav
    body = [
        f"<header><h1>{escape(title)}</h1>",
        f'<p class="muted">made by orch {escape(__version__)} on {escape(now)} from {len(sections)} run(s)</p>',
        f"<nav><ul>{nav}</ul></nav></header>",
    ]
    if comparison is not None:
        body.append(_comparison(*comparison))
    body += [_run_section(s, command if len(sections) == 1 or s.data.submission else None) for s in sections]
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def verdict(data: RunData) -> tuple[str, str]:
    """(text, css class) of a run's headline verdict."""
    if data.run is None:
        return "FAILED (no run.json)", "bad"
    if data.get("mode") == "accuracy":
        return "accuracy run", "ok" if (data.get("accuracy") or {}).get("f1") is not None else "warn"
    valid = data.get("result_valid")
    if valid is None and data.loadgen is not None:
        valid = data.loadgen.result_valid
    text = "VALID" if valid else "INVALID" if valid is False else "no verdict"
    if data.get("execution") == "test":
        return text + ", TEST MODE", "warn" if valid else "bad"
    return text, "ok" if valid else "bad"


def _verdict_badge(data: RunData) -> str:
    text, cls = verdict(data)
    return f'<span class="badge {cls}">{escape(text)}</span>'


def _table(rows: Sequence[Sequence[Any]], head: Sequence[str] | None = None, *, cls: str = "", numeric: Sequence[int] = ()) -> str:
    out = [f'<div class="table-wrap"><table class="{cls}">']
    if head:
        out.append("<tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>")
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            text = cell if isinstance(cell, _Raw) else escape("-" if cell is None else str(cell))
            tag = "th" if cls == "kv" and i == 0 else "td"
            cells.append(f'<{tag}{" class=num" if i in numeric else ""}>{text}</{tag}>')
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "".join(out) + "</table></div>"


class _Raw(str):
    """Markup made here, not to be escaped again."""


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _result_rows(data: RunData) -> list[tuple[str, Any]]:
    run, lg = data.run or {}, data.loadgen
    rows: list[tuple[str, Any]] = []
    sps = run.get("samples_per_second", lg.samples_per_second if lg else None)
    source = run.get("samples_per_second_source") or ("loadgen" if lg and lg.samples_per_second else None)
    rows.append(("samples/s", f"{_fmt(sps)} ({source})" if sps is not None else "-"))
    text, cls = verdict(data)
    reasons = run.get("invalid_reasons") or (lg.invalid_reasons if lg else [])
    why = f": {'; '.join(reasons)}" if reasons else ""
    if run.get("execution") == "test" and not reasons:
        why = " (against the shortened test-mode settings only: never valid for a submission)"
    rows.append(("loadgen result", _Raw(f'<span class="badge {cls}">{escape(text)}</span>{escape(why)}')))
    errors = run.get("loadgen_errors") or (lg.errors if lg else [])
    if errors:
        rows.append(("loadgen errors", "; ".join(errors)))
    accuracy = run.get("accuracy") or {}
    if run.get("mode") == "accuracy" or accuracy:
        if accuracy.get("f1") is not None:
            scored = f" ({accuracy.get('examples_scored')} of {accuracy.get('examples_total')} questions scored)"
            partial = "PARTIAL: " if accuracy.get("partial") else ""
            rows.append(("accuracy", f"{partial}exact_match {accuracy['exact_match']:.3f}, F1 {accuracy['f1']:.3f}{scored}"))
        else:
            rows.append(("accuracy", accuracy.get("note") or "not scored"))
    rows += [
        ("mode", f"{run.get('mode', '-')}, {run.get('execution', '-')} execution, {run.get('scenario', 'Offline')}"),
        ("model", run.get("model")),
    ]
    if run.get("model_note"):
        rows.append(("model note", run["model_note"]))
    backends = run.get("backends") or []
    rows.append(("backend", f"{run.get('backend', '-')}" + (f" ({', '.join(backends)})" if run.get("backend") == "auto" else "")))
    rows.append(("samples", f"{run.get('count', '-')} in the QSL, {run.get('issued_samples', '-')} issued, "
                            f"{run.get('rerun_samples', 0)} re-run after a lost worker"))
    lost = run.get("lost_workers") or []
    if lost:
        rows.append(("lost workers", "; ".join(f"{a['name']} on {a['node']}: {a.get('reason') or ''}" for a in lost)))
    rows.append(("started / finished", f"{run.get('started_at', '-')} / {run.get('finished_at', '-')}"))
    if data.submission is not None:
        sub = data.submission
        sub_verdict = "valid" if sub.get("valid") else "NOT valid: " + "; ".join(sub.get("invalid_reasons") or [])
        rows.append(("submission", sub_verdict))
    return rows


def _layout_rows(data: RunData) -> tuple[list[str], list[list[Any]]]:
    timeline = data.timeline
    header_workers = {w.name: w for w in timeline.workers} if timeline else {}
    per_node = data.get("per_node") or []
    head = ["node", "workers", "backend", "device", "CPUs", "threads", "samples", "busy s", "samples/s busy", "address"]
    rows = []
    if per_node:
        for node in per_node:
            workers = node.get("workers") or []
            cpus = sum(float(header_workers[w].cpus or 0) for w in workers if w in header_workers) or None
            device = node.get("device") or {}
            rate = node["samples"] / node["seconds"] if node.get("seconds") else None
            rows.append([node["name"], ", ".join(workers), node.get("backend"),
                         device.get("device") or ", ".join(device.get("providers") or []) or None,
                         _fmt(cpus, 1) if cpus else None, device.get("threads"), node.get("samples"),
                         _fmt(node.get("seconds"), 1), _fmt(rate, 1), node.get("node_ip")])
    elif timeline:
        for w in timeline.workers:
            rows.append([w.node, w.name, w.backend, None, _fmt(w.cpus, 1) if w.cpus else None, w.threads,
                         None, None, None, w.host])
    return head, rows


def _system_rows(data: RunData) -> tuple[list[str], list[list[Any]]]:
    head = ["node", "CPU", "cores / threads", "memory", "accelerators", "OS / kernel", "Python", "frameworks"]
    rows = []
    for node in data.get("per_node") or []:
        f = node.get("facts") or {}
        memory = f"{f['memory_bytes'] / 2**30:.1f} GiB" if f.get("memory_bytes") else None
        accel = ", ".join(a.get("name", str(a)) if isinstance(a, dict) else str(a) for a in f.get("accelerators") or []) or "none"
        frameworks = ", ".join(f"{k} {v}" for k, v in (f.get("frameworks") or {}).items())
        rows.append([node["name"], f.get("cpu_model"), f"{f.get('cores', '-')} / {f.get('threads', '-')}", memory, accel,
                     f"{f.get('os', '-')} / {f.get('kernel', '-')}", f.get("python"), frameworks])
    return head, rows


def _figure(fig: DrawnFigure) -> str:
    return (
        f'<figure class="fig" id="fig-{escape(fig.key)}">{fig.svg}'
        f"<figcaption><b>{escape(fig.title)}.</b> {escape(fig.caption)} "
        f'<a class="png-link" href="{escape(fig.png)}">PNG</a></figcaption></figure>'
    )


def _run_section(section: RunSection, command: str | None) -> str:
    data = section.data
    parts = [f'<section class="run" id="run-{section.index}">',
             f"<h2>{escape(data.label)} {_verdict_badge(data)}</h2>",
             f'<p class="muted">{escape(str(data.path))}</p>']
    if data.run is None:
        ended = data.timeline.ended if data.timeline else None
        why = f": {ended['error']}" if ended and ended.get("error") else ""
        parts.append(f'<div class="banner">This run did not complete{escape(why)}. Its run directory has no run.json; '
                     "what is shown comes from its timeline and loadgen's logs.</div>")
    if data.get("execution") == "test":
        parts.append('<div class="banner warn">TEST MODE: a shortened run on a subset of the data; '
                     "NOT valid for an MLPerf submission.</div>")
    for note in section.notes:
        parts.append(f'<div class="banner warn">{escape(note)}</div>')
    parts.append("<h3>Result</h3>" + _table(_result_rows(data), cls="kv"))
    if data.loadgen is not None:
        parts.append(f"<details><summary>loadgen's summary</summary><pre>{escape(data.loadgen.text)}</pre></details>")
    parts += [_figure(f) for f in section.figures]
    head, rows = _layout_rows(data)
    if rows:
        parts.append("<h3>Layout</h3>" + _table(rows, head, numeric=(4, 5, 6, 7, 8)))
    head, rows = _system_rows(data)
    if rows:
        parts.append("<h3>System</h3>" + _table(rows, head))
    parts.append("<h3>Command</h3>")
    if command and command != data.get("command"):
        parts.append(f"<pre>{escape(command)}</pre>")
        if data.get("command"):
            parts.append(f'<p class="muted">run by the driver as:</p><pre>{escape(data.get("command"))}</pre>')
    else:
        parts.append(f"<pre>{escape(data.get('command') or command or 'not recorded (the run has no run.json)')}</pre>")
    parts.append("</section>")
    return "\n".join(parts)


def _comparison(rows: list[dict[str, Any]], figure: DrawnFigure | None) -> str:
    head = ["run", "mode", "execution", "nodes", "workers", "backend", "model", "samples/s", "efficiency", "verdict"]
    body = [[r["label"], r["mode"], r["execution"], r["nodes"], r["workers"], r["backend"], r["model"],
             _fmt(r["samples_per_second"]), "-" if r["efficiency"] is None else f"{r['efficiency'] * 100:.0f} %",
             r["verdict"]] for r in rows]
    parts = ['<section id="comparison"><h2>Comparison</h2>',
             "<p>Efficiency: each run's samples/s per node against the run with the fewest nodes of the same "
             "mode, backend and model (100 % is perfect scaling).</p>",
             _table(body, head, numeric=(3, 4, 7, 8))]
    if figure is not None:
        parts.append(_figure(figure))
    return "\n".join(parts) + "</section>"
