"""orch's long-lived container on one node: the one place ``docker exec`` is spelled.

Every node runs one container ``orch-<cluster>-<node>`` (host network,
data_dir at ``/data``) that idles until work arrives by ``docker exec``:
``ray start``/``ray stop``, the Ray membership query, the GPU check and the
bench driver. ``Container`` builds those commands (and the container's own
``docker run``/``inspect``/``rm``) and runs them over the transport.
"""

from __future__ import annotations

from collections.abc import Mapping

from orchestrator import hardware
from orchestrator.deploy.commands import CLUSTER_LABEL, CONTAINER_CACHE, CONTAINER_DATA, NODE_LABEL
from orchestrator.inventory import Inventory, Node
from orchestrator.ssh.transport import OutputCallback, Result, Transport, remote_cmd

# Ray's object store lives in /dev/shm; Docker's 64 MB default makes it spill to disk.
SHM_SIZE = "2g"


class Container:
    """orch's container on ``node`` of ``inventory``.

    Args:
        inventory: the validated inventory (the cluster name makes the container's).
        node: the node it runs on.
    """

    def __init__(self, inventory: Inventory, node: Node) -> None:
        self.inventory = inventory
        self.node = node
        self.name = inventory.container_name(node)

    def exec_command(self, *argv: object, env: Mapping[str, str] | None = None) -> str:
        """``docker exec [-e K=V ...] <container> argv...``, every value quoted for the node's shell."""
        if not argv:
            raise ValueError("a command to run in the container is needed")
        args: list[object] = ["docker", "exec"]
        for key, value in sorted((env or {}).items()):
            args += ["-e", f"{key}={value}"]
        return remote_cmd(*args, self.name, *argv)

    def run(
        self,
        transport: Transport,
        *argv: object,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        on_output: OutputCallback | None = None,
    ) -> Result:
        """Run ``argv`` in the container and wait for it (a non-zero exit is returned, not raised).

        Raises:
            RemoteError: the node cannot be reached or the command timed out.
        """
        return transport.run(self.node.name, self.exec_command(*argv, env=env), timeout=timeout, on_output=on_output)

    def inspect_command(self) -> str:
        """Prints ``<status> <image id>`` of the container (exit 1 when absent); see ``commands.parse_container``."""
        return remote_cmd("docker", "inspect", "--type", "container", "--format", "{{.State.Status}} {{.Image}}", self.name)

    def remove_command(self) -> str:
        """Removes the container, running or not."""
        return remote_cmd("docker", "rm", "-f", self.name)

    def start_command(self, image_tag: str) -> str:
        """``docker run -d`` of the container: host network, data_dir at /data, the profile's flags (GPUs)."""
        node = self.node
        argv: list[str] = [
            "docker", "run", "-d",
            "--name", self.name,
            "--label", f"{CLUSTER_LABEL}={self.inventory.cluster}",
            "--label", f"{NODE_LABEL}={node.name}",
            "--network", "host",
            "--shm-size", SHM_SIZE,
            "--restart", "no",
            "-e", f"ORCH_CACHE_DIR={CONTAINER_CACHE}",
            "-e", f"ORCH_NODE={node.name}",
            "-e", "RAY_USAGE_STATS_ENABLED=0",
            "-v", f"{node.data_dir}:{CONTAINER_DATA}",
            *hardware.PROFILES[node.profile].container_flags,
            # Whatever the image's entrypoint, the container idles; work arrives by docker exec.
            "--entrypoint", "sleep", image_tag, "infinity",
        ]  # fmt: skip
        return remote_cmd(*argv)
