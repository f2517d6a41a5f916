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
from rich.console import Console

from orchestrator.cli import app, state


@app.command()
def bench(
    nodes: Optional[int] = typer.Option(None, "--nodes", help="Nodes to run on (default: 1 locally, every capable node of --inventory); locally, N workers sharing this machine's CPUs."),
    backend: Optional[str] = typer.Option(None, "--backend", help="onnxruntime | onnxruntime-cuda | deepsparse | auto (each node's profile; default with --inventory, else onnxruntime)."),
    inventory: Optional[Path] = typer.Option(None, "--inventory", "-i", help="Run on the cluster `orch deploy` set up from this inventory."),
    scenario: str = typer.Option("Offline", "--scenario", help="MLPerf scenario (Offline)."),
    mode: str = typer.Option("performance", "--mode", help="performance | accuracy | submission (accuracy then performance, then the submission tree)."),
    execution: str = typer.Option("test", "--execution", help="test (short, --count samples, never valid) | valid (official rules: 600 s, 10,833 samples)."),
    count: Optional[int] = typer.Option(None, "--count", help="Samples in test mode (default: the whole data set, at most 1024)."),
    model: str = typer.Option("demo", "--model", help="demo | bert-large | bert-large-int8 | PATH to an ONNX file."),
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="SQuAD v1.1 JSON (default: the model's)."),
    vocab: Optional[Path] = typer.Option(None, "--vocab", help="BERT vocab.txt (default: the model's)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Samples per inference batch."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Inference threads per worker (default: its share of the CPUs)."),
    chunk_size: Optional[int] = typer.Option(None, "--chunk-size", help="Samples per dispatched chunk (default: 4 batches)."),
    precision: str = typer.Option("fp32", "--precision", help="fp32 | int8 | int8-dynamic | int8-static | fp16 (CUDA) | bf16 (refused: no backend runs it)."),
    workers_per_node: int = typer.Option(1, "--workers-per-node", help="With --inventory: workers on each CPU node (locally, --nodes is the workers)."),
    tuned: bool = typer.Option(True, "--tuned/--no-tuned", help="Use the layout `orch tune` stored for this system (flags given override it)."),
    target_qps: Optional[float] = typer.Option(None, "--target-qps", help="Expected samples/s (default: measured by the last test run on this system)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory (default: ./orch-runs/<time>-<mode>)."),
    force: bool = typer.Option(False, "--force", help="Replace an earlier run in --out."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Join a running Ray cluster instead of starting one here."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout instead of tables."),
    submitter: Optional[str] = typer.Option(None, "--submitter", help="Submission mode: the submitting organisation."),
    system_name: Optional[str] = typer.Option(None, "--system-name", help="Submission mode: the system's name (default: <host>_<N>node_<backend>)."),
    division: str = typer.Option("open", "--division", help="Submission mode: open (closed needs compliance runs)."),
    system_meta: Optional[Path] = typer.Option(None, "--system-meta", help="Submission mode: YAML overriding system description fields."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and Ray's logs."),
    cluster_nodes: Optional[str] = typer.Option(None, "--cluster-nodes", hidden=True, help="(internal) on a deployed head: the nodes to use."),
    progress: Optional[str] = typer.Option(None, "--progress", hidden=True, help="(internal) jsonl: progress as JSON lines on stderr."),
    tuned_layout: Optional[str] = typer.Option(None, "--tuned-layout", hidden=True, help="(internal) the controller's tuned layout record, JSON."),
    given: Optional[str] = typer.Option(None, "--given", hidden=True, help="(internal) the layout flags given to the controller."),
) -> None:
    """Run MLPerf BERT-99 Offline: one loadgen SUT, the query sharded over Ray workers."""
    from orchestrator.bench.config import BenchConfig
    from orchestrator.bench.runner import run_bench
    from orchestrator.bench.view import jsonl_view, live_view
    from orchestrator.tune.layout import given_flags

    conf = BenchConfig(
        nodes=nodes,
        backend=backend or ("auto" if inventory else "onnxruntime"),
        scenario=scenario,
        mode=mode,
        execution=execution,
        count=count,
        model=model,
        dataset=dataset.expanduser().resolve() if dataset else None,
        vocab=vocab.expanduser().resolve() if vocab else None,
        batch_size=batch_size,
        threads=threads,
        chunk_size=chunk_size,
        target_qps=target_qps,
        out=out,
        force=force,
        ray_address=ray_address,
        command=shlex.join(["orch", *sys.argv[1:]]),
        submitter=submitter,
        system_name=system_name,
        division=division,
        system_meta=system_meta.expanduser().resolve() if system_meta else None,
        cluster_nodes=tuple(cluster_nodes.split(",")) if cluster_nodes else None,
        precision=precision,
        workers_per_node=workers_per_node,
        tuned=tuned_layout or ("auto" if tuned else "off"),
        given=frozenset(given.split(",")) if given is not None else given_flags(),
    )
    live = functools.partial(jsonl_view if progress == "jsonl" else live_view, **({} if progress == "jsonl" else {"transient": as_json}))
    if inventory is not None:
        from orchestrator.bench.on_cluster import run_on_inventory

        summary = run_on_inventory(conf, inventory, live=True, debug=state.debug or debug)
        _print(summary, as_json)
        return
    if as_json:
        # Ray's raylet and loadgen may write to fd 1: keep stdout for the JSON alone.
        with _stdout_to_stderr():
            summary = run_bench(conf, debug=state.debug or debug, live=live)
    else:
        summary = run_bench(conf, debug=state.debug or debug, live=live)
    _print(summary, as_json)


def _print(summary: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(_json_view(summary), indent=2))
        return
    from orchestrator.bench.view import results_table

    console = Console()
    for run in summary.get("runs", [summary]):
        console.print(results_table(run))
    if "submission" in summary:
        sub = summary["submission"]
        verdict = "valid" if sub["valid"] else "NOT valid (" + "; ".join(sub["invalid_reasons"]) + ")"
        console.print(f"submission: {sub['tarball']} ({verdict})")


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
    """The --json object: run.json minus the bulky per-node facts."""

    def slim(run: dict) -> dict:
        view = dict(run)
        view["per_node"] = [{k: v for k, v in node.items() if k != "facts"} for node in run["per_node"]]
        return view

    if "runs" in summary:
        return {**summary, "runs": [slim(r) for r in summary["runs"]]}
    return slim(summary)
