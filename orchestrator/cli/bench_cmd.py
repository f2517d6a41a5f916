"""`orch bench`: one MLPerf loadgen SUT, the Offline query sharded over Ray workers."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Optional

import typer

from orchestrator.cli import app, state


@app.command()
def bench(
    ctx: typer.Context,
    nodes: Optional[int] = typer.Option(None, "--nodes", help="Nodes to run on (default: 1 locally, every capable node of --inventory); locally, N workers sharing this machine's CPUs."),
    backend: Optional[str] = typer.Option(None, "--backend", help="onnxruntime | onnxruntime-cuda | deepsparse | synthetic[:rate=9500,overhead_ms=0,per_node=1] (modelled answer times, no inference, never a submission) | auto (each node's profile; default with --inventory, else onnxruntime)."),
    inventory: Optional[Path] = typer.Option(None, "--inventory", "-i", help="Run on the cluster `orch deploy` set up from this inventory."),
    trust_new_hosts: bool = typer.Option(False, "--trust-new-hosts", help="With --inventory: add the host key of a node missing from known_hosts (and say so)."),
    scenario: str = typer.Option("Offline", "--scenario", help="MLPerf scenario (Offline)."),
    mode: str = typer.Option("performance", "--mode", help="performance | accuracy | submission (accuracy then performance, then the submission tree)."),
    execution: str = typer.Option("test", "--execution", help="test (short, --count samples, never valid) | valid (official rules: 600 s, 10,833 samples)."),
    count: Optional[int] = typer.Option(None, "--count", help="Test mode: samples of the performance run (default: the data set, at most 1024; more repeats samples). Accuracy runs cover the whole data set."),
    duration: Optional[float] = typer.Option(None, "--duration", help="Test mode, performance: a query of about SECONDS at the expected rate (--target-qps, the synthetic model, or a stored calibration)."),
    partial_accuracy: bool = typer.Option(False, "--partial-accuracy", help="Accuracy on --count samples only, marked PARTIAL everywhere (never a submission's)."),
    model: str = typer.Option("demo", "--model", help="demo | bert-large | bert-large-int8 | PATH to an ONNX file."),
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="SQuAD v1.1 JSON (default: the model's)."),
    vocab: Optional[Path] = typer.Option(None, "--vocab", help="BERT vocab.txt (default: the model's)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Samples per inference batch."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Inference threads per worker (default: its share of the CPUs)."),
    chunk_size: Optional[int] = typer.Option(None, "--chunk-size", help="Samples per dispatched chunk (default: sized for each worker's rate)."),
    precision: str = typer.Option("fp32", "--precision", help="fp32 | int8 | int8-dynamic | int8-per-token | int8-static | fp16 (CUDA) | bf16 (refused: no backend runs it)."),
    workers_per_node: int = typer.Option(1, "--workers-per-node", help="With --inventory: workers on each CPU node (locally, --nodes is the workers)."),
    tuned: bool = typer.Option(True, "--tuned/--no-tuned", help="Use the layout `orch tune` stored for this system (flags given override it)."),
    target_qps: Optional[float] = typer.Option(None, "--target-qps", help="Expected samples/s of a valid run (default: measured, see README)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory (default: ./orch-runs/<time>-<mode>)."),
    force: bool = typer.Option(False, "--force", help="Replace an earlier orch run in --out (never a folder orch did not make)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Join a running Ray cluster instead of starting one here."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout instead of tables."),
    submitter: Optional[str] = typer.Option(None, "--submitter", help="Submission mode: the submitting organisation."),
    system_name: Optional[str] = typer.Option(None, "--system-name", help="Submission mode: the system's name (default: <host>_<backend>, or <cluster>_<N>node_<backend>)."),
    division: str = typer.Option("open", "--division", help="Submission mode: open (closed needs compliance runs)."),
    system_meta: Optional[Path] = typer.Option(None, "--system-meta", help="Submission mode: YAML overriding system description fields."),
    allow_invalid: bool = typer.Option(False, "--allow-invalid", help="Submission mode: package an INVALID run anyway, marked invalid everywhere (test runs always are)."),
    no_report: bool = typer.Option(False, "--no-report", help="Do not write report.html into the run directory."),
) -> None:
    """Run MLPerf BERT-99 Offline: one loadgen SUT, the query sharded over Ray workers."""
    from orchestrator.hardware import DEFAULT_BACKEND
    from orchestrator.records import BenchConfig

    meta = None
    if system_meta is not None:
        from orchestrator.submission.system_desc import load_system_meta

        meta = load_system_meta(system_meta.expanduser())
    conf = BenchConfig(
        nodes=nodes,
        backend=backend or ("auto" if inventory else DEFAULT_BACKEND),
        scenario=scenario,
        mode=_choice("--mode", mode, ("performance", "accuracy", "submission")),
        execution=_choice("--execution", execution, ("test", "valid")),
        count=count,
        partial_accuracy=partial_accuracy,
        duration=duration,
        model=model,
        dataset=dataset.expanduser().resolve() if dataset else None,
        vocab=vocab.expanduser().resolve() if vocab else None,
        batch_size=batch_size,
        threads=threads,
        chunk_size=chunk_size,
        target_qps=target_qps,
        out=out.expanduser().absolute() if out else None,
        force=force,
        ray_address=ray_address,
        command=shlex.join(["orch", *sys.argv[1:]]),
        submitter=submitter,
        system_name=system_name,
        division=division,
        system_meta=meta,
        system_meta_source=str(system_meta) if system_meta else None,
        allow_invalid=allow_invalid,
        precision=precision,
        workers_per_node=workers_per_node,
        tuned="auto" if tuned else "off",
        given=_given_flags(ctx),
    )
    if inventory is not None:
        from orchestrator.bench.on_cluster import run_on_inventory

        summary = run_on_inventory(conf, inventory, live=not as_json, debug=state.debug,
                                   trust_new_hosts=trust_new_hosts, faults=state.faults)
        _report(summary, no_report)
        _print(summary, as_json)
        return
    if trust_new_hosts:
        from orchestrator.errors import InputError

        raise InputError("--trust-new-hosts is for --inventory (the nodes' SSH host keys)")
    from orchestrator.bench.runner import run_bench
    from orchestrator.bench.view import live_view

    live = functools.partial(live_view)
    if as_json:
        # Ray's raylet and loadgen may write to fd 1: keep stdout for the JSON alone.
        with _stdout_to_stderr():
            summary = run_bench(conf, debug=state.debug, live=live, faults=state.faults)
    else:
        summary = run_bench(conf, debug=state.debug, live=live, faults=state.faults)
    _report(summary, no_report)
    _print(summary, as_json)


def _report(summary: dict, skip: bool) -> None:
    if not skip:
        from orchestrator.cli.report_cmd import report_after_bench

        summary["report"] = report_after_bench(summary, command=summary.get("controller_command"))


def _given_flags(ctx) -> tuple[str, ...]:
    """The layout flags given on the command line (they beat a tuned layout), from the parser's own record."""
    from orchestrator.tune.layout import CLUSTER_FLAGS, FLAGS

    wanted = set(FLAGS.values()) | set(CLUSTER_FLAGS.values())
    given = []
    for param in ctx.command.params:
        flag = param.opts[0] if param.opts else None
        source = ctx.get_parameter_source(param.name)
        if flag in wanted and source is not None and source.name != "DEFAULT":
            given.append(flag)
    return tuple(sorted(given))


def _choice(flag: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        from orchestrator.errors import InputError

        raise InputError(f"{flag} {value!r} is unknown", hint=f"choose one of: {', '.join(allowed)}")
    return value


@app.command("driver", hidden=True)
def driver(config: Path = typer.Argument(..., help="(internal) the DriverConfig record the controller wrote.")) -> None:
    """(internal) The bench driver on the head of a deployed cluster: reads its configuration
    record, runs, and prints one DriverResult record on stdout (errors included)."""
    from orchestrator.bench.driver import drive

    code = drive(config)
    raise typer.Exit(code)


def _print(summary: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(_json_view(summary), indent=2))
        return
    from orchestrator.bench.view import print_summary

    print_summary(summary)


@contextlib.contextmanager
def _stdout_to_stderr():
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _json_view(summary: dict) -> dict:
    """The --json object: the run records minus the bulky per-node facts."""

    def slim(run: dict) -> dict:
        view = dict(run)
        view["per_node"] = [{k: v for k, v in node.items() if k != "facts"} for node in run["per_node"]]
        return view

    if "runs" in summary:
        return {**summary, "runs": [slim(r) for r in summary["runs"]]}
    return slim(summary)
