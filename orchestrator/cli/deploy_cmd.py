"""``orch deploy``, ``orch status`` and ``orch teardown``: the cluster described by an inventory."""

from __future__ import annotations

from pathlib import Path

import typer

from orchestrator.cli import app

_INVENTORY = typer.Option(..., "--inventory", "-i", help="The cluster inventory YAML (see inventory/example.yaml).")


def _console():
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console.width = max(console.width, 160)  # logs and pipes: do not fold the tables
    return console


def _transport(inventory, trust_new_hosts: bool, console):
    from orchestrator.ssh import ParamikoTransport

    return ParamikoTransport.from_inventory(
        inventory, trust_new_hosts=trust_new_hosts, notice=lambda line: console.print(f"[yellow]{line}[/]")
    )


@app.command("deploy")
def deploy_command(
    inventory_path: Path = _INVENTORY,
    model: str = typer.Option("demo", "--model", help="demo, bert-large, bert-large-int8 or a path to an .onnx file."),
    vocab: Path = typer.Option(None, "--vocab", help="vocab.txt to use instead of the model's.", show_default=False),
    dataset: Path = typer.Option(None, "--dataset", help="SQuAD v1.1 JSON instead of the model's.", show_default=False),
    no_files: bool = typer.Option(False, "--no-files", help="Ship only images and start Ray (no model or features)."),
    trust_new_hosts: bool = typer.Option(
        False, "--trust-new-hosts", help="Add the host key of a node missing from known_hosts to that file (and say so)."
    ),
    skip_unreachable: bool = typer.Option(
        False, "--skip-unreachable", help="Go on with the reachable nodes and name the ones left out."
    ),
    ray_timeout: float = typer.Option(180.0, "--ray-timeout", help="Seconds to wait for every node to join Ray."),
    json_out: Path = typer.Option(None, "--json", help="Also write the deploy report (timings, bytes) here.",
                                  show_default=False),
) -> None:
    """Ship each node its image, the model and the prepared features, start its container and join one Ray cluster.

    Running it again with nothing changed ships nothing and restarts nothing.
    """
    from orchestrator.deploy import LocalImages, build_payload, deploy
    from orchestrator.deploy.runner import report_json
    from orchestrator.deploy.view import DeployView
    from orchestrator.inventory import load_inventory

    inventory = load_inventory(inventory_path)
    console = _console()
    payload = None if no_files else build_payload(model, vocab=vocab, dataset=dataset)
    with _transport(inventory, trust_new_hosts, console) as transport:
        with DeployView([n.name for n in inventory.nodes]) as view:
            report = deploy(
                inventory, transport, LocalImages(), payload=payload, skip_unreachable=skip_unreachable,
                listener=view, ray_timeout=ray_timeout,
            )
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
    if json_out is not None:
        json_out.write_text(report_json(report) + "\n", encoding="utf-8")


@app.command("status")
def status_command(
    inventory_path: Path = _INVENTORY,
    trust_new_hosts: bool = typer.Option(False, "--trust-new-hosts", help="Add unknown host keys to known_hosts."),
) -> None:
    """One row per node: reachable, image, container, Ray membership and resources."""
    from rich.table import Table

    from orchestrator.deploy import status
    from orchestrator.inventory import load_inventory

    inventory = load_inventory(inventory_path)
    console = _console()
    with _transport(inventory, trust_new_hosts, console) as transport:
        rows = status(inventory, transport)
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
            row.name, row.host, "yes" if row.reachable else f"no: {row.error}", image, container,
            f"alive {row.ray_ip}" if row.ray_alive else "no", resources,
        )
    console.print(table)


@app.command("teardown")
def teardown_command(
    inventory_path: Path = _INVENTORY,
    images: bool = typer.Option(False, "--images", help="Also remove the images orch loaded on the nodes."),
    data: bool = typer.Option(False, "--data", help="Also remove the model, features and runs orch put in data_dir."),
    trust_new_hosts: bool = typer.Option(False, "--trust-new-hosts", help="Add unknown host keys to known_hosts."),
) -> None:
    """Stop and remove orch's containers (labelled with the cluster); never anything orch did not create."""
    from orchestrator.deploy import teardown
    from orchestrator.inventory import load_inventory
    from orchestrator.ssh import raise_failures

    inventory = load_inventory(inventory_path)
    console = _console()
    with _transport(inventory, trust_new_hosts, console) as transport:
        results = teardown(inventory, transport, images=images, data=data)
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
