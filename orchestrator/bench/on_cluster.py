"""`orch bench --inventory`: the driver runs inside the head node's container.

The controller picks the nodes that can run the backend, then runs
``orch bench --cluster-nodes ...`` in the head container with ``docker exec``
over SSH (``orchestrator.deploy.remote.exec_in_head``). That driver joins the
deployed Ray cluster from the head's cluster address, places one worker per
node (one per GPU on GPU nodes) and writes the run directory under
``/data/runs/`` on the head; its progress arrives here as prefixed JSON lines
on stderr and is drawn as the same live view; the run directory is then
copied back to ``--out`` on the controller, ``run.json`` last.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from orchestrator.bench import config as cfg
from orchestrator.bench.cluster import PROFILE_BACKENDS
from orchestrator.bench.runner import check_out, default_out
from orchestrator.bench.view import PROGRESS_PREFIX, RemoteProgress
from orchestrator.errors import InputError, RunError


def choose_nodes(inventory: Any, backend: str, nodes: int | None, *, source: str) -> list[str]:
    """The nodes of ``inventory`` that run this bench, in inventory order.

    Args:
        inventory: a loaded ``orchestrator.inventory.Inventory``.
        backend: a backend name, or ``auto`` (every node, each with its profile's backend).
        nodes: how many (None: every node that can run the backend).
        source: the inventory file, for messages.

    Raises:
        InputError: fewer nodes than asked can run the backend.
    """
    capable = [n.name for n in inventory.nodes if backend == "auto" or PROFILE_BACKENDS.get(n.profile) == backend]
    wanted = len(capable) if nodes is None else nodes
    if wanted < 1 or len(capable) < wanted:
        able = ", ".join(capable) or "none"
        raise InputError(
            f"--nodes {wanted}: {source} has {len(capable)} node(s) that can run backend {backend} ({able})",
            hint="lower --nodes, or pick the backend with --backend (auto follows each node's profile)",
        )
    return capable[:wanted]


def driver_argv(conf: cfg.BenchConfig, nodes: list[str], remote_out: str) -> list[str]:
    """The `orch bench` command line run inside the head container."""
    argv = [
        "orch", "bench", "--json", "--progress", "jsonl", "--force",
        "--cluster-nodes", ",".join(nodes),
        "--backend", conf.backend, "--scenario", conf.scenario,
        "--mode", conf.mode, "--execution", conf.execution,
        "--model", conf.model, "--batch-size", str(conf.batch_size),
        "--out", remote_out,
        "--precision", conf.precision, "--workers-per-node", str(conf.workers_per_node),
        "--given", ",".join(sorted(conf.given)),
    ]  # fmt: skip
    # The driver applies (or ignores, saying why) the controller's tuned layout: it knows the model and data.
    argv += ["--tuned-layout", conf.tuned] if conf.tuned not in ("off", "auto") else ["--no-tuned"]
    optional = {
        "--count": conf.count,
        "--threads": conf.threads,
        "--chunk-size": conf.chunk_size,
        "--target-qps": conf.target_qps,
        "--submitter": conf.submitter,
        "--system-name": conf.system_name,
    }
    for flag, value in optional.items():
        if value is not None:
            argv += [flag, str(value)]
    if conf.mode == "submission":
        argv += ["--division", conf.division]
    return argv


def run_on_inventory(conf: cfg.BenchConfig, inventory_path: Path, *, live: bool = True, debug: bool = False) -> dict[str, Any]:
    """Run the bench on a deployed cluster and bring its run directory back.

    Raises:
        InputError: bad inventory or flags; RunError: the remote run failed.
    """
    from orchestrator.deploy.remote import exec_in_head, fetch_run_dir
    from orchestrator.inventory import load_inventory
    from orchestrator.ssh.paramiko_transport import ParamikoTransport

    if conf.nodes is not None and conf.nodes < 1:
        raise InputError(f"--nodes must be at least 1 (got {conf.nodes})")
    if conf.dataset or conf.vocab:
        raise InputError("--dataset/--vocab with --inventory: the nodes use what orch deploy shipped",
                         hint="pass them to orch deploy instead")
    inventory = load_inventory(inventory_path)
    nodes = choose_nodes(inventory, conf.backend, conf.nodes, source=str(inventory_path))
    conf = dataclasses.replace(conf, nodes=len(nodes))
    if conf.tuned == "auto":
        from orchestrator.tune.apply import controller_record

        profiles = sorted({n.profile for n in inventory.nodes if n.name in nodes})
        # Several profiles: the driver says no tuned layout applies (it is per profile).
        conf = dataclasses.replace(conf, tuned=controller_record(inventory.cluster, profiles[0]) if len(profiles) == 1 else "{}")
    out = (conf.out or default_out(conf.mode)).resolve()
    check_out(out, conf.force)
    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{conf.mode}"
    remote_out = f"/data/runs/{run_id}"
    argv = driver_argv(conf, nodes, remote_out)
    if debug:
        argv.insert(2, "--debug")

    progress = RemoteProgress()
    stdout: list[str] = []
    pending = {"stderr": ""}
    errors: list[str] = []

    def on_output(stream: str, text: str) -> None:
        if stream == "stdout":
            stdout.append(text)
            return
        pending["stderr"] += text
        *lines, pending["stderr"] = pending["stderr"].split("\n")
        for line in lines:
            if line.startswith(PROGRESS_PREFIX):
                try:
                    progress.latest = json.loads(line[len(PROGRESS_PREFIX):])
                except ValueError:
                    pass
            elif line.strip():
                if line.startswith("orch: error:"):
                    errors.append(line[len("orch: error:"):].strip())
                if debug or line.startswith("orch: error:"):
                    sys.stderr.write(line + "\n")

    transport = ParamikoTransport.from_inventory(inventory)
    view = None
    try:
        if live:
            from rich.console import Console
            from rich.live import Live

            view = Live(progress, console=Console(stderr=True), refresh_per_second=4)
            view.start()
        try:
            # Test hooks (ORCH_TEST_*) travel to the driver like the flags do.
            hooks = {k: v for k, v in os.environ.items() if k.startswith("ORCH_TEST_")}
            result = exec_in_head(inventory, argv, transport=transport, on_output=on_output, env=hooks)
        finally:
            if view is not None:
                view.stop()
        if result.returncode != 0:
            why = errors[-1] if errors else f"exit code {result.returncode}"
            raise RunError(f"the bench on {inventory.head} (head of {inventory_path}) failed: {why}")
        try:
            summary = json.loads("".join(stdout))
        except ValueError as exc:
            raise RunError(f"the bench on {inventory.head} printed no result", hint="run again with --debug") from exc
        fetch_run_dir(inventory, remote_out, out, transport=transport)
    finally:
        transport.close()
    return _relocate(summary, remote_out, out, shlex.join(["orch", *sys.argv[1:]]))


def _relocate(summary: dict[str, Any], remote_out: str, out: Path, command: str) -> dict[str, Any]:
    """Point the summary's run directories at the local copy."""

    def fix(value: Any) -> Any:
        if isinstance(value, str) and value.startswith(remote_out):
            return str(out) + value[len(remote_out):]
        if isinstance(value, dict):
            return {k: fix(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fix(v) for v in value]
        return value

    local = fix(summary)
    local["controller_command"] = command
    local["remote_run_dir"] = remote_out
    return local
