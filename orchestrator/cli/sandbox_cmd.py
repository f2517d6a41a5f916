"""``orch sandbox up|down|status``: a multi-node cluster on this machine."""

from __future__ import annotations

from pathlib import Path

import typer

from orchestrator.cli import app
from orchestrator.sandbox.plan import DEFAULT_NAME, format_cpus

sandbox_app = typer.Typer(
    help="A real multi-node cluster on this machine (netns + sshd + dockerd per node), for rehearsal and tests.",
    no_args_is_help=True,
)
app.add_typer(sandbox_app, name="sandbox")

NAME_OPTION = typer.Option(DEFAULT_NAME, "--name", help="Sandbox name (several can run side by side).")


@sandbox_app.command("up")
def up_cmd(
    nodes: int = typer.Option(..., "--nodes", help="Number of nodes (1-32)."),
    cpus_per_node: int | None = typer.Option(
        None, "--cpus-per-node", help="Pin this many CPUs to each node (cgroup cpuset); default: no pinning."
    ),
    name: str = NAME_OPTION,
    inventory: Path | None = typer.Option(
        None, "--inventory", help="Where to write the inventory for orch deploy (default: in the sandbox folder)."
    ),
) -> None:
    """Start NODES nodes, each with its own address, sshd, Docker engine (and CPUs), and write an inventory."""
    from rich.console import Console

    from orchestrator.sandbox.lifecycle import up

    from orchestrator.errors import is_interrupt
    from orchestrator.sandbox.state import load_state

    console = Console()
    try:
        with console.status(f"starting sandbox {name} ({nodes} nodes)..."):
            result = up(nodes, name=name, cpus_per_node=cpus_per_node, inventory_path=inventory)
    except BaseException as exc:
        if is_interrupt(exc):
            # up removes what it made on any failure; say whether that finished.
            left = load_state(name) is not None
            Console(stderr=True).print(
                f"sandbox {name}: interrupted; what up had made is still there: run orch sandbox down --name {name}"
                if left else f"sandbox {name}: interrupted; everything up had made was removed",
                markup=False, soft_wrap=True,
            )
        raise
    plan = result.plan
    console.print(f"sandbox [bold]{plan.name}[/bold] up in {result.seconds:.1f} s: {len(plan.nodes)} nodes on {plan.bridge} ({plan.network})")
    for node in plan.nodes:
        cpus = f"cpus {format_cpus(node.cpus)}" if node.cpus else "cpus not pinned"
        console.print(f"  {node.name}  {node.address}  {cpus}  docker {result.engine_ids[node.name][:14]}")
    if result.enabled_cpuset_controller:
        console.print("  (enabled the cpuset controller in the cgroup v2 root; it stays enabled)")
    console.print(f"inventory: {plan.inventory_path}", soft_wrap=True)
    console.print(f"log in:    ssh -F {plan.ssh_config} node1", soft_wrap=True)
    console.print(f"remove:    orch sandbox down --name {plan.name}", soft_wrap=True)


@sandbox_app.command("down")
def down_cmd(
    name: str = NAME_OPTION,
    any_cache: bool = typer.Option(
        False, "--any-cache", help="Also remove a sandbox of this name made with another ORCH_CACHE_DIR."
    ),
) -> None:
    """Remove everything the sandbox created (processes, namespaces, bridge, rules, files); safe to repeat."""
    import time

    from rich.console import Console

    from orchestrator.sandbox.lifecycle import down

    console = Console()
    started = time.monotonic()
    removed = down(name, any_cache=any_cache)
    if not removed:
        console.print(f"sandbox {name}: nothing to remove")
        return
    for line in removed:
        text = line if line.startswith("kept ") else f"removed {line}"
        console.print(f"  {text}", soft_wrap=True, markup=False)
    console.print(f"sandbox {name} down in {time.monotonic() - started:.1f} s")


@sandbox_app.command("status")
def status_cmd(name: str = NAME_OPTION) -> None:
    """Show the sandbox's nodes: namespace, running, SSH port open; bridge and FORWARD rules."""
    from rich.console import Console
    from rich.table import Table

    from orchestrator.sandbox.lifecycle import status

    console = Console()
    st = status(name)
    table = Table(title=f"sandbox {name} ({st.status}) on {st.plan.bridge} {st.plan.network}")
    for column in ("node", "address", "cpus", "netns", "running", "ssh"):
        table.add_column(column)
    yes_no = {True: "yes", False: "NO"}
    for node in st.nodes:
        cpus = format_cpus(node.cpus) if node.cpus else "-"
        table.add_row(node.name, node.address, cpus, yes_no[node.netns], yes_no[node.running], yes_no[node.ssh])
    console.print(table)
    console.print(f"bridge: {yes_no[st.bridge]}   FORWARD rules: {st.firewall_rules}   inventory: {st.plan.inventory_path}", soft_wrap=True)
    healthy = st.bridge and all(n.netns and n.running and n.ssh for n in st.nodes)
    if not healthy:
        raise typer.Exit(1)
