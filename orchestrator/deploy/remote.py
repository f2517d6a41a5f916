"""``orch status``, ``orch teardown`` and running things in the head container.

``exec_in_head`` and ``fetch_run_dir`` are what ``orch bench --inventory``
uses: the benchmark driver runs inside the head node's container (a
``docker exec`` over SSH, its output streamed back), writes its run
directory under ``/data/runs``, and the controller copies it back.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from orchestrator.deploy import commands as cmd
from orchestrator.deploy.container import Container
from orchestrator.deploy.firewall import teardown_firewall
from orchestrator.deploy.local_images import image_tag
from orchestrator.errors import InputError, RemoteError
from orchestrator.inventory import Inventory, Node
from orchestrator.ssh.fanout import NodeResult, fan_out
from orchestrator.ssh.transport import OutputCallback, Result, Transport, check, remote_cmd


@dataclass
class NodeStatus:
    """One row of ``orch status``."""

    name: str
    host: str
    profile: str
    reachable: bool = False
    error: str = ""
    image: str = ""  # tag
    image_id: str = ""  # on the node, "" when absent
    container: str = ""  # docker status ("running", "exited", ...) or "" when absent
    container_current: bool = False  # runs the image the tag names now
    ray_ip: str = ""
    ray_alive: bool = False
    resources: dict[str, float] = field(default_factory=dict)

    def problem(self) -> str | None:
        """Why this node is not ready to bench (one phrase), or None when it is."""
        if not self.reachable:
            # Transport errors start with "node <name> (user@host:port): ..."; the caller names the node.
            reason = self.error.removeprefix(f"node {self.name}").removeprefix(":").strip()
            return f"unreachable {reason}" if reason.startswith("(") else f"unreachable: {reason or 'no answer'}"
        if not self.image_id:
            return f"image {self.image} is not on the node (run orch deploy)"
        if not self.container:
            return "orch's container is absent (run orch deploy)"
        if self.container != "running":
            return f"orch's container is {self.container} (run orch deploy)"
        if not self.container_current:
            return f"orch's container runs an older image than {self.image} (run orch deploy)"
        if not self.ray_alive:
            return f"not in the Ray cluster at {self.ray_ip or 'an unknown address'} (run orch deploy)"
        return None


def _status_node(transport: Transport, inventory: Inventory, node: Node) -> NodeStatus:
    try:
        tag = image_tag(inventory, node.profile)
    except InputError:
        tag = f"(no {node.profile} image built here)"
    status = NodeStatus(node.name, node.host, node.profile, image=tag, ray_ip=cmd.ray_ip(node) or "")
    try:
        got = transport.run(node.name, cmd.image_id_command(tag), timeout=60)
        if tag.startswith("("):
            got = Result(1, "", "")
    except RemoteError as exc:
        status.error = str(exc)
        return status
    status.reachable = True
    status.image_id = got.stdout.strip() if got.ok else ""
    got = transport.run(node.name, Container(inventory, node).inspect_command(), timeout=60)
    state = cmd.parse_container(got.ok, got.stdout)
    if state is not None:
        status.container = state[0]
        status.container_current = bool(status.image_id) and state[1] == status.image_id
    if not status.ray_ip:
        deployed = transport.run(node.name, remote_cmd("cat", cmd.data_path(node, cmd.DEPLOY_JSON)), timeout=60)
        if deployed.ok:
            from orchestrator.records import DeployRecord, RecordError

            try:
                record = DeployRecord.from_json(deployed.stdout, source=f"{node.name}:{cmd.DEPLOY_JSON}")
                status.ray_ip = next((n.ray_ip or "" for n in record.nodes if n.name == node.name), "")
            except RecordError:
                pass  # an older orch's deploy.json: the address is unknown until deploy runs again
    return status


def status(inventory: Inventory, transport: Transport) -> list[NodeStatus]:
    """Every node's state: reachable, image, container, and (from the head) Ray membership and resources.

    Never raises for a node's failure: an unreachable node is a row with its error.
    """
    results = fan_out(inventory.nodes, lambda n: _status_node(transport, inventory, n))
    rows = []
    for node in inventory.nodes:
        result = results[node.name]
        if result.ok:
            rows.append(result.value)
        else:
            rows.append(NodeStatus(node.name, node.host, node.profile, error=str(result.error)))
    by_name = {row.name: row for row in rows}
    head = by_name[inventory.head]
    if head.reachable and head.container == "running" and head.ray_ip:
        got = Container(inventory, inventory.head_node).run(transport, *cmd.ray_nodes_argv(inventory, head.ray_ip),
                                                            timeout=90)
        alive, _error = cmd.parse_ray_nodes(got.stdout) if got.ok else ({}, got.stderr)
        for row in rows:
            info = alive.get(row.ray_ip)
            if info is not None:
                row.ray_alive = True
                row.resources = {k: v for k, v in info.get("resources", {}).items() if k in ("CPU", "GPU", "memory")}
    return rows


@dataclass
class TeardownReport:
    """What teardown removed on one node."""

    containers: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    data: bool = False
    firewall: bool = False  # orch's iptables chain and its jump were removed


def _teardown_node(transport: Transport, inventory: Inventory, node: Node, images: bool, data: bool) -> TeardownReport:
    host = node.name
    report = TeardownReport()
    listed = transport.run(host, cmd.list_containers_command(inventory), timeout=60)
    check(listed, host=host, command=cmd.list_containers_command(inventory), what="docker ps")
    names = [line.strip() for line in listed.stdout.splitlines() if line.strip()]
    if names:
        command = cmd.remove_containers_command(names)
        check(transport.run(host, command, timeout=180), host=host, command=command, what="removing containers")
        report.containers = names
    # After the containers: Ray is gone, so closing nothing that still serves.
    # Also with ray.firewall off now: a chain from an earlier deploy is still orch's.
    report.firewall = teardown_firewall(transport, inventory, node, strict=inventory.ray.firewall)
    if images:
        loaded = transport.run(host, cmd.loaded_images_command(node), timeout=60)
        for image_id, tag in cmd.parse_loaded_images(loaded.stdout if loaded.ok else ""):
            now = transport.run(host, cmd.image_id_command(tag), timeout=60)
            # Only when the tag still names the image orch loaded: a newer one is not ours.
            if now.ok and now.stdout.strip() == image_id:
                command = cmd.remove_image_command(tag)
                check(transport.run(host, command, timeout=180), host=host, command=command, what=f"removing {tag}")
                report.images.append(tag)
    if data:
        # Only a data_dir orch manages (it holds orch's manifest) is cleaned.
        if transport.run(host, cmd.manifest_exists_command(node), timeout=60).ok:
            command = cmd.remove_data_command(node)
            check(transport.run(host, command, timeout=300), host=host, command=command, what="removing data")
            report.data = True
    return report


def teardown(
    inventory: Inventory, transport: Transport, *, images: bool = False, data: bool = False
) -> dict[str, NodeResult[TeardownReport]]:
    """Remove what orch created on every node: its containers and Ray firewall; with ``images`` the images it
    loaded (while their tag still names them); with ``data`` its entries in data_dir.

    Returns:
        node name -> result; the caller reports failed nodes (``raise_failures``).
    """
    return fan_out(inventory.nodes, lambda n: _teardown_node(transport, inventory, n, images, data))


def _own_transport(inventory: Inventory, transport: Transport | None) -> tuple[Transport, bool]:
    if transport is not None:
        return transport, False
    from orchestrator.ssh.factory import open_transport

    return open_transport(inventory), True


def exec_in_head(
    inventory: Inventory,
    argv: list[str],
    *,
    stream: bool = True,
    transport: Transport | None = None,
    env: dict[str, str] | None = None,
    on_output: OutputCallback | None = None,
    timeout: float | None = None,
) -> Result:
    """Run ``argv`` inside the head node's orch container (``docker exec`` over SSH).

    Args:
        inventory: the deployed cluster.
        argv: the command and its arguments (each quoted for the remote shell).
        stream: copy the command's output to this process's stdout/stderr as it
            arrives (ignored when ``on_output`` is given).
        transport: an open transport (default: a new ``ParamikoTransport``, closed after).
        env: extra environment variables for the command.
        on_output: called with ("stdout"|"stderr", text) as output arrives.
        timeout: seconds before the command is abandoned (None: no limit).

    Returns:
        The command's exit status and output.
    """
    if not argv:
        raise InputError("exec_in_head needs a command")
    head = Container(inventory, inventory.head_node)
    if on_output is None and stream:
        def on_output(stream_name: str, text: str) -> None:
            target = sys.stdout if stream_name == "stdout" else sys.stderr
            target.write(text)
            target.flush()

    transport, owned = _own_transport(inventory, transport)
    try:
        return head.run(transport, *argv, env=env, timeout=timeout, on_output=on_output)
    finally:
        if owned:
            transport.close()


def host_path(node: Node, container_path: str) -> str:
    """The path on the node of a path inside orch's container (``/data/...`` -> ``<data_dir>/...``).

    Raises:
        InputError: the path is not under /data (only that is shared with the node).
    """
    path = PurePosixPath(container_path)
    data = PurePosixPath(cmd.CONTAINER_DATA)
    if not path.is_absolute():
        path = data / path
    if ".." in path.parts or (path != data and data not in path.parents):
        raise InputError(f"{container_path} is not under {cmd.CONTAINER_DATA}, so it cannot be fetched from the node")
    return node.data_dir + "/" + str(path.relative_to(data)) if path != data else node.data_dir


def fetch_run_dir(
    inventory: Inventory,
    remote_dir: str,
    local_dir: Path,
    *,
    transport: Transport | None = None,
    last: str = "run.json",
) -> Path:
    """Copy a run directory written in the head container back to this machine.

    Args:
        inventory: the deployed cluster.
        remote_dir: the run directory as the container sees it (``/data/runs/<id>``),
            or relative to ``/data``.
        local_dir: where to put it (created).
        transport: an open transport (default: a new one, closed after).
        last: the file copied last, so its presence marks a complete copy.

    Returns:
        ``local_dir``.

    Raises:
        RemoteError: the directory is missing or a copy failed.
    """
    head = inventory.head_node
    source = host_path(head, remote_dir)
    transport, owned = _own_transport(inventory, transport)
    try:
        command = remote_cmd("find", source, "-type", "f", "-printf", "%P\\n")
        listed = check(transport.run(head.name, command, timeout=120), host=head.name, command=command,
                       what=f"listing {source}")
        names = sorted(line for line in listed.stdout.splitlines() if line and ".." not in line.split("/"))
        if not names:
            raise RemoteError(f"node {head.name}: run directory {source} is empty", host=head.name)
        names.sort(key=lambda n: n == last)
        local_dir = Path(local_dir)
        local_dir.mkdir(parents=True, exist_ok=True)
        for name in names:
            transport.get(head.name, f"{source}/{name}", local_dir / name)
        return local_dir
    finally:
        if owned:
            transport.close()


def describe(results: dict[str, NodeResult[Any]]) -> dict[str, str]:
    """node -> error line, for the failed nodes of a fan-out."""
    return {name: str(r.error) for name, r in results.items() if not r.ok}
