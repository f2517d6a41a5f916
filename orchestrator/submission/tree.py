"""Assemble an MLPerf Inference submission tree from orch run directories.

Layout (``--version v6.1``, open division)::

    <out>/open/<Submitter>/systems/<system>.json
    <out>/open/<Submitter>/src/README.md
    <out>/open/<Submitter>/results/<system>/bert-99/Offline/
        README.md, user.conf, measurements.json,
        performance/run_1/{mlperf_log_summary.txt, mlperf_log_detail.txt},
        accuracy/{mlperf_log_summary.txt, mlperf_log_detail.txt,
                  mlperf_log_accuracy.json (truncated), accuracy.txt}
    <out>/full_logs/<system>/bert-99/Offline/accuracy/mlperf_log_accuracy.json
    <out>/mlperf_submission.tar.gz   (the open/ tree)
    <out>/summary.csv, <out>/summary.json

Everything is built in a temporary folder beside ``out`` and renamed into
place at the end, so a failure never leaves a half tree that looks complete.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator import __version__
from orchestrator.errors import SubmissionError
from orchestrator.submission import runs as runs_mod
from orchestrator.submission.runs import ACCURACY_LOG, DETAIL, MODEL, SCENARIO, SUMMARY, Run
from orchestrator.fileio import sha256_file
from orchestrator.submission.system_desc import measurements, system_description

TARBALL = "mlperf_submission.tar.gz"
# truncate_accuracy_log.py (mlcommons/inference tools/submission): logs over
# 10 KiB keep their first and last 4 KiB around "\n\n...\n\n".
MAX_ACCURACY_LOG_SIZE = 10 * 1024
VIEWABLE_SIZE = 4096
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
SUMMARY_FIELDS = (
    "submitter", "division", "system", "model", "scenario", "result", "units",
    "accuracy", "nodes", "framework", "device", "valid", "notes",
)  # fmt: skip


@dataclass
class SubmissionResult:
    """What ``assemble`` built.

    Attributes:
        out: the output folder.
        tree_root: the division folder (``<out>/open``) that the tarball holds.
        submitter_dir: ``<out>/open/<Submitter>``.
        system_json: the written system description.
        tarball: ``<out>/mlperf_submission.tar.gz``.
        summary_csv, summary_json: one row per result.
        full_accuracy_log: the untruncated accuracy log, outside the tree.
        rows: the summary rows.
        valid: False when ``--allow-invalid`` let invalid runs through.
        invalid_reasons: why (empty when valid).
    """

    out: Path
    tree_root: Path
    submitter_dir: Path
    system_json: Path
    tarball: Path
    summary_csv: Path
    summary_json: Path
    full_accuracy_log: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    valid: bool = True
    invalid_reasons: list[str] = field(default_factory=list)


def assemble(
    run_dirs: list[Path],
    *,
    out: Path,
    submitter: str,
    system_name: str,
    division: str = "open",
    system_meta: dict[str, Any] | None = None,
    allow_invalid: bool = False,
    force: bool = False,
    command: str = "",
) -> SubmissionResult:
    """Check the runs and write the submission tree, tarball and summary.

    Args:
        run_dirs: run directories written by ``orch bench``; exactly one
            performance run and one accuracy run (by run.json "mode").
        out: the output folder (must not exist, or be empty, unless ``force``).
        submitter: the submitting organisation (a directory name).
        system_name: the system's name (file and directory name).
        division: "open"; "closed" is refused until compliance runs exist.
        system_meta: system-description overrides, as ``load_system_meta`` read
            them from ``--system-meta``.
        allow_invalid: package runs that are not valid MLPerf results
            (test runs, loadgen INVALID), marking them so everywhere.
        force: replace an existing output folder.
        command: the ``orch submit`` command line, recorded in src/README.md.

    Returns:
        A ``SubmissionResult``.

    Raises:
        SubmissionError: the runs are unusable or invalid (and not allowed),
            or a name is unusable.
        InputError: ``out`` holds something that is not an orch submission,
            or an earlier one and ``force`` is false.
    """
    if division == "closed":
        raise SubmissionError(
            "--division closed needs TEST01 compliance runs, which orch does not produce yet",
            hint="use --division open (the default)",
        )
    if division != "open":
        raise SubmissionError(f"--division {division!r} is not supported", hint="use --division open")
    for flag, value in (("--submitter", submitter), ("--system-name", system_name)):
        if not NAME_RE.match(value or ""):
            raise SubmissionError(
                f"{flag} {value!r} is not a usable directory name",
                hint="use letters, digits, '.', '_' and '-' (no spaces or slashes)",
            )
    from orchestrator.bench.rundir import check_out

    out = Path(out).resolve()
    run_dirs = runs_mod.expand_run_dirs([Path(p) for p in run_dirs])
    for run_dir in run_dirs:
        # --force replaces out: it must not take the runs down with it.
        if Path(run_dir).resolve().is_relative_to(out):
            raise SubmissionError(f"--out {out} contains the run directory {run_dir}", hint="choose another --out")
    check_out(out, force)
    meta = system_meta or {}

    perf, acc = runs_mod.pick_runs(run_dirs)
    faults = runs_mod.check_runs(perf, acc)
    if faults:
        raise SubmissionError(f"cannot package these runs: {faults[0]}" + (f" (and {len(faults) - 1} more: {'; '.join(faults[1:])})" if len(faults) > 1 else ""))
    reasons = perf.reasons + acc.reasons
    if reasons and not allow_invalid:
        raise SubmissionError(
            f"not a valid MLPerf result: {'; '.join(reasons)}",
            hint="pass --allow-invalid to package it anyway, marked invalid",
        )

    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    work.chmod(0o755)  # mkdtemp makes it private; the tree is meant to be shared
    try:
        result = _build(work, perf, acc, submitter=submitter, system_name=system_name, division=division,
                        meta=meta, reasons=reasons, command=command)  # fmt: skip
        _mark(work, command)
        _replace(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return _relocate(result, work, out)


def _build(
    work: Path,
    perf: Run,
    acc: Run,
    *,
    submitter: str,
    system_name: str,
    division: str,
    meta: dict[str, Any],
    reasons: list[str],
    command: str,
) -> SubmissionResult:
    sub = work / division / submitter
    results = sub / "results" / system_name / MODEL / SCENARIO
    for folder in (sub / "systems", sub / "src", results / "performance" / "run_1", results / "accuracy"):
        folder.mkdir(parents=True)

    system = system_description(
        perf.meta.get("per_node") or [], submitter=submitter, division=division,
        system_name=system_name, backend=str(perf.meta.get("backend")), meta=meta,
    )  # fmt: skip
    system_json = sub / "systems" / f"{system_name}.json"
    _write_json(system_json, system)

    shutil.copyfile(perf.path / "user.conf", results / "user.conf")
    _write_json(results / "measurements.json", measurements(perf.meta, meta.get("measurements")))
    for name in (SUMMARY, DETAIL):
        shutil.copyfile(perf.path / name, results / "performance" / "run_1" / name)
        shutil.copyfile(acc.path / name, results / "accuracy" / name)

    full_log = work / "full_logs" / system_name / MODEL / SCENARIO / "accuracy" / ACCURACY_LOG
    full_log.parent.mkdir(parents=True)
    shutil.copyfile(acc.path / ACCURACY_LOG, full_log)
    digest = sha256_file(full_log)
    # The reference accuracy-squad.py line, unrounded (the checker compares F1 to the target).
    accuracy_line = json.dumps({"exact_match": float(acc.record.exact_match), "f1": float(acc.record.f1)})
    (results / "accuracy" / "accuracy.txt").write_text(f"{accuracy_line}\nhash={digest}\n")
    truncate_accuracy_log(full_log, results / "accuracy" / ACCURACY_LOG)

    valid = not reasons
    (results / "README.md").write_text(_results_readme(perf, acc, system_name, reasons))
    (sub / "src" / "README.md").write_text(_src_readme(perf, acc, command, reasons))

    result_value = perf.log.values.get("result_samples_per_second", perf.meta.get("samples_per_second"))
    row = {
        "submitter": submitter,
        "division": division,
        "system": system_name,
        "model": MODEL,
        "scenario": SCENARIO,
        "result": result_value,
        "units": "Samples/s",
        "accuracy": f"EM={float(acc.record.exact_match):.3f} F1={float(acc.record.f1):.3f}",
        "nodes": int(system["number_of_nodes"]),  # machines, as the system JSON counts them
        "framework": system["framework"],
        "device": _device(system),
        "valid": valid,
        "notes": "INVALID: " + "; ".join(reasons) if reasons else "",
    }
    summary_csv, summary_json = work / "summary.csv", work / "summary.json"
    with summary_csv.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=SUMMARY_FIELDS)
        writer.writeheader()
        writer.writerow(row)
    _write_json(summary_json, {"orch_version": __version__, "valid": valid, "invalid_reasons": reasons, "results": [row]})

    tarball = work / TARBALL
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(work / division, arcname=division)
    return SubmissionResult(
        out=work, tree_root=work / division, submitter_dir=sub, system_json=system_json, tarball=tarball,
        summary_csv=summary_csv, summary_json=summary_json, full_accuracy_log=full_log,
        rows=[row], valid=valid, invalid_reasons=list(reasons),
    )  # fmt: skip


def truncate_accuracy_log(src: Path, dst: Path) -> None:
    """Write ``src`` truncated the way the reference ``truncate_accuracy_log.py`` does.

    A log larger than 10 KiB keeps its first and last 4 KiB with
    ``"\\n\\n...\\n\\n"`` between; a smaller one is already within the
    checker's limit and is copied whole (the reference would read past its start).
    """
    size = src.stat().st_size
    if size <= MAX_ACCURACY_LOG_SIZE:
        shutil.copyfile(src, dst)
        return
    with src.open("rb") as fh:
        start = fh.read(VIEWABLE_SIZE)
        fh.seek(size - VIEWABLE_SIZE)
        end = fh.read(VIEWABLE_SIZE)
    dst.write_bytes(start + b"\n\n...\n\n" + end)


def _mark(work: Path, command: str) -> None:
    """The marker that lets a later ``--force`` replace this folder (and nothing orch did not make)."""
    import datetime as dt

    from orchestrator.bench.rundir import MARKER
    from orchestrator.records import RunMarker

    RunMarker(orch_version=__version__, kind="submission", state="complete", command=command,
              created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")).write(work / MARKER)


def _replace(work: Path, out: Path) -> None:
    """Move the finished tree into place; an old ``out`` is removed only after."""
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
        try:
            work.rename(out)
        except BaseException:
            old.rename(out)
            raise
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    else:
        work.rename(out)


def _relocate(result: SubmissionResult, work: Path, out: Path) -> SubmissionResult:
    def moved(path: Path) -> Path:
        return out / path.relative_to(work)

    for name in ("out", "tree_root", "submitter_dir", "system_json", "tarball", "summary_csv", "summary_json", "full_accuracy_log"):
        setattr(result, name, moved(getattr(result, name)))
    return result


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def _device(system: dict[str, str]) -> str:
    if system["accelerator_model_name"] != "N/A":
        return f"{system['accelerators_per_node']}x {system['accelerator_model_name']} per node"
    return f"CPU: {system['host_processor_model_name']}"


def _invalid_block(reasons: list[str]) -> str:
    if not reasons:
        return ""
    lines = "\n".join(f"- {r}" for r in reasons)
    return (
        "\n**NOT A VALID MLPERF RESULT.** Packaged with `--allow-invalid`; the official checker "
        f"will reject it or it must not be published as a result:\n\n{lines}\n"
    )


def _per_node_backends(perf: Run) -> str:
    """Each node's backend, e.g. ' (node1: deepsparse, node2: onnxruntime)', for a --backend auto run; else ''."""
    nodes = perf.meta.get("per_node") or []
    if perf.meta.get("backend") != "auto" or not nodes:
        return ""
    return " (" + ", ".join(f"{n.get('name')}: `{n.get('backend')}`" for n in nodes) + ")"


def _results_readme(perf: Run, acc: Run, system_name: str, reasons: list[str]) -> str:
    return f"""# bert-99 Offline on {system_name}
{_invalid_block(reasons)}
Produced with orch {perf.meta.get('orch_version', '?')} (MLPerf Inference, loadgen {perf.log.values.get('loadgen_version', '?')}),
backend `{perf.meta.get('backend')}`{_per_node_backends(perf)}, model `{perf.meta.get('model')}` ({Path(str(perf.meta.get('model_path'))).name}),
{perf.meta.get('nodes', len(perf.meta.get('per_node') or []))} node(s).

## How to reproduce

Install orch on the controller, describe the cluster in an inventory, then run the same
commands (`orch fetch` first for the official model and data set):

```
{perf.meta.get('command', '')}
{acc.meta.get('command', '')}
```

The first is the performance run (`performance/run_1`), the second the accuracy run
(`accuracy/`); `user.conf` is the one the performance run used.

- Performance: {perf.log.values.get('result_samples_per_second', perf.meta.get('samples_per_second'))} samples/s
  (loadgen: {perf.log.values.get('result_validity', '?')}), {perf.meta.get('count')} samples of {perf.meta.get('total_sample_count')}.
- Accuracy: exact_match {acc.record.exact_match}, f1 {acc.record.f1} over {acc.meta.get('count')} samples.
"""


def _src_readme(perf: Run, acc: Run, command: str, reasons: list[str]) -> str:
    return f"""# Source

These results were produced with orch {perf.meta.get('orch_version', __version__)}, a tool that runs the
MLPerf Inference BERT-99 Offline benchmark across a cluster (loadgen in one process, inference
spread over the nodes with Ray), from the MLPerf reference harness design (language/bert).
{_invalid_block(reasons)}
Commands recorded in the runs' run.json:

- performance run: `{perf.meta.get('command', '')}`
- accuracy run: `{acc.meta.get('command', '')}`
- this tree: `{command or 'orch submit (called from orch bench)'}`

Packaged by orch {__version__} for MLPerf Inference v6.1 (loadgen 6.0.17 carries the v6.1 seeds).
To check it, unpack mlperf_submission.tar.gz into an empty folder (it holds only `open/`) and run
the MLCommons checker there (`tools/submission` of mlcommons/inference) with `--version v6.1`.
"""
