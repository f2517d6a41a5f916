"""``orch deploy``, ``orch status`` and ``orch teardown``: the cluster described by an inventory."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import typer

from orchestrator.cli import app, error_line, state

_INVENTORY = typer.Option(..., "--inventory", "-i", help="The cluster inventory YAML (see inventory/example.yaml).")
_TRUST = typer.Option(
    False, "--trust-new-hosts", help="Add the host key of a node missing from known_hosts to that file (and say so)."
)
_JSON = typer.Option(False, "--json", help="Print one JSON object on stdout instead of tables.")


def _console(stderr: bool = False):
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True, stderr=stderr)
    if not console.is_terminal:
        console.width = max(console.width, 160)  # logs and pipes: do not fold the tables
    return console


def _open(inventory_path: Path, trust_new_hosts: bool, console):
    """The inventory and a transport to its nodes, both checked before any connection."""
    from orchestrator.inventory import load_inventory
    from orchestrator.ssh import open_transport

    inventory = load_inventory(inventory_path)
    transport = open_transport(
        inventory, trust_new_hosts=trust_new_hosts, debug=state.debug,
        notice=lambda line: console.print(f"[yellow]{line}[/]"),
    )  # fmt: skip
    return inventory, transport


def _say_interrupted(progress, console) -> None:
    """Name what an interrupt left half done on each node, before the CLI's one ``interrupted`` line."""
    running = progress.running()
    if not progress.started:
        console.print("deploy interrupted while reading the nodes' facts: nothing was changed", markup=False)
        return
    for node, step in running.items():
        console.print(f"{node}: interrupted during: {step.summary()} ({step.if_interrupted})", markup=False)
    console.print("run orch deploy again: it ships only what is missing and keeps what is done", markup=False)


@app.command("deploy")
def deploy_command(
    inventory_path: Path = _INVENTORY,
    model: str = typer.Option("demo", "--model", help="demo, bert-large, bert-large-int8 or a path to an .onnx file."),
    vocab: Path = typer.Option(None, "--vocab", help="vocab.txt to use instead of the model's.", show_default=False),
    dataset: Path = typer.Option(None, "--dataset", help="SQuAD v1.1 JSON instead of the model's.", show_default=False),
    no_files: bool = typer.Option(False, "--no-files", help="Ship only images and start Ray (no model or features)."),
    dry_run: bool = typer.Option(
        False, "--dry-run",
        help="Print the plan (each node's steps) and change nothing: facts are read over SSH with read-only "
        "commands (docker inspect, df, cat, iptables -S, a Ray query); nothing is shipped, started or written.",
    ),  # fmt: skip
    trust_new_hosts: bool = _TRUST,
    skip_unreachable: bool = typer.Option(
        False, "--skip-unreachable", help="Go on with the reachable nodes and name the ones left out."
    ),
    ray_timeout: float = typer.Option(180.0, "--ray-timeout", help="Seconds to wait for every node to join Ray."),
    as_json: bool = _JSON,
) -> None:
    """Ship each node its image, the model and the prepared features, start its container and join one Ray cluster.

    Deploy reads every node's facts, plans the steps each node needs, then runs them. Running it again with
    nothing changed ships nothing and restarts nothing.
    """
    from orchestrator.deploy import LocalImages, Progress, build_bundle, execute, prepare
    from orchestrator.deploy.runner import report_json
    from orchestrator.deploy.view import DeployView
    from orchestrator.errors import is_interrupt

    started = time.monotonic()  # the report's seconds cover the facts, the plan and the steps
    console = _console(stderr=as_json)
    inventory, transport = _open(inventory_path, trust_new_hosts, console)
    bundle = None if no_files else build_bundle(model, vocab=vocab, dataset=dataset)
    images = LocalImages()
    progress = Progress()
    try:
        with DeployView([n.name for n in inventory.nodes]) as view:
            plan = prepare(inventory, transport, images, bundle=bundle, skip_unreachable=skip_unreachable,
                           listener=view, ray_timeout=ray_timeout)
            if not dry_run:
                report = execute(plan, transport, images, listener=view, progress=progress, started=started)
    except BaseException as exc:
        if is_interrupt(exc):
            _say_interrupted(progress, _console(stderr=True))
        raise
    finally:
        transport.close()  # also ends what fan-out threads still do on the nodes
    if dry_run:
        _print_plan(plan, console, as_json)
        return
    if as_json:
        sys.stdout.write(report_json(report) + "\n")
        return
    from rich.table import Table

    table = Table(title=f"cluster {inventory.cluster}: deployed in {report.seconds:.1f} s")
    for column in ("node", "ray ip", "image", "MiB", "MiB/s", "files", "container", "ray", "firewall"):
        table.add_column(column)
    for name, r in report.nodes.items():
        shipped = r.image_bytes + r.files_bytes
        seconds = r.image_seconds + r.files_seconds
        table.add_row(
            name, r.ray_ip, r.image or "-", f"{shipped / 2**20:.1f}", f"{shipped / 2**20 / seconds:.1f}" if seconds else "-",
            f"{r.files_sent} sent" if r.files_sent else "up to date", r.container, r.ray, r.firewall,
        )
    console.print(table)
    for name, reason in report.left_out.items():
        console.print(f"[yellow]left out {name}: {reason}[/]")


def _print_plan(plan, console, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(plan.to_json(), indent=2, sort_keys=True) + "\n")
        return
    title = f"orch deploy --dry-run: cluster {plan.inventory.cluster}, {len(plan.nodes)} node(s)"
    console.print(f"{title}; facts read over SSH, nothing changed", markup=False)
    for line in plan.describe():
        console.print(line, markup=False)
    if plan.empty:
        console.print("nothing to do: every node is deployed as the inventory says", markup=False)


@app.command("status")
def status_command(
    inventory_path: Path = _INVENTORY,
    trust_new_hosts: bool = _TRUST,
    as_json: bool = _JSON,
) -> None:
    """One row per node: reachable, image, container, Ray membership and resources.

    Exits 1, with one line per node on stderr, when a node is unreachable or not ready to bench.
    """
    from rich.table import Table

    from orchestrator.deploy import status

    console = _console(stderr=as_json)
    inventory, transport = _open(inventory_path, trust_new_hosts, console)
    try:
        rows = status(inventory, transport)
    finally:
        transport.close()
    if as_json:
        out = {r.name: {**r.__dict__, "problem": r.problem()} for r in rows}
        sys.stdout.write(json.dumps({"cluster": inventory.cluster, "nodes": out}, indent=2, sort_keys=True) + "\n")
    else:
        table = Table(title=f"cluster {inventory.cluster} (head {inventory.head})")
        for column in ("node", "host", "reachable", "image", "container", "ray", "resources"):
            table.add_column(column)
        for row in rows:
            image = f"{row.image} {row.image_id.removeprefix('sha256:')[:12]}" if row.image_id else f"{row.image} (absent)"
            container = row.container or "absent"
            if row.container and not row.container_current:
                container += " (old image)"
            resources = ", ".join(f"{k} {v:g}" if k != "memory" else f"mem {v / 2**30:.1f} GiB"
                                  for k, v in sorted(row.resources.items()))
            table.add_row(
                row.name, row.host, "yes" if row.reachable else "no", image if row.reachable else "-",
                container if row.reachable else "-", f"alive {row.ray_ip}" if row.ray_alive else "no", resources,
            )
        console.print(table)
    problems = {row.name: row.problem() for row in rows if row.problem()}
    for name, problem in problems.items():
        error_line(f"node {name}: {problem}")
    if problems:
        raise typer.Exit(1)


@app.command("teardown")
def teardown_command(
    inventory_path: Path = _INVENTORY,
    images: bool = typer.Option(False, "--images", help="Also remove the images orch loaded on the nodes."),
    data: bool = typer.Option(False, "--data", help="Also remove the model, features and runs orch put in data_dir."),
    trust_new_hosts: bool = _TRUST,
) -> None:
    """Stop and remove orch's containers (labelled with the cluster); never anything orch did not create."""
    from orchestrator.deploy import teardown
    from orchestrator.ssh import raise_failures

    console = _console()
    inventory, transport = _open(inventory_path, trust_new_hosts, console)
    try:
        results = teardown(inventory, transport, images=images, data=data)
    finally:
        transport.close()
    for name, result in results.items():
        if result.ok:
            r = result.value
            done = [f"containers: {', '.join(r.containers) or 'none'}"]
            if images:
                done.append(f"images: {', '.join(r.images) or 'none'}")
            if data:
                done.append("data removed" if r.data else "no orch data")
            done.append("firewall removed" if r.firewall else "no orch firewall")
            console.print(f"{name}: " + "; ".join(done))
    raise_failures(results, "teardown")
