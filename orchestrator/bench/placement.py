"""Where a run happens: the embedded local Ray, a Ray address, or a deployed inventory.

One ``Placement`` per run, built from the configuration (and, on the head of a
deployed cluster, its deploy record). It starts or joins Ray, places the
workers (``slots``), names the system (for calibrations and the submission),
and resolves the inputs as the nodes see them.
"""

from __future__ import annotations

from orchestrator.bench import cluster
from orchestrator.bench.cluster import Slot
from orchestrator.bench.config import host_name, read_deploy_record
from orchestrator.bench.inputs import Inputs, resolve_inputs
from orchestrator.records import BenchConfig, DeployRecord


class Placement:
    """The local embedded cluster: ``--nodes N`` is N workers sharing this machine's CPUs."""

    kind = "local"

    def __init__(self, conf: BenchConfig) -> None:
        self.conf = conf

    @property
    def system(self) -> str:
        """The system a calibration belongs to."""
        return host_name()

    def default_system_name(self) -> str:
        """The submission's system name when --system-name is not given (hardware, not layout)."""
        return f"{host_name()}_{self.conf.backend}"

    def resolve_inputs(self) -> Inputs:
        return resolve_inputs(self.conf)

    def start(self, *, debug: bool = False) -> str:
        """Start (or join) Ray; says how ("embedded", "orch up", "address")."""
        return cluster.start_ray(None, debug=debug)

    def slots(self) -> list[Slot]:
        """The workers of this run, with their node, CPUs, threads and backend."""
        return cluster.local_slots(self.conf.nodes or 1, self.conf.threads, host_name())

    def stop(self) -> None:
        cluster.stop_ray()


class AddressPlacement(Placement):
    """A running Ray cluster at ``--ray-address``: one worker on each of N alive nodes."""

    kind = "ray-address"

    @property
    def system(self) -> str:
        return str(self.conf.ray_address)

    def default_system_name(self) -> str:
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in str(self.conf.ray_address))
        return f"ray_{safe}_{self.conf.nodes or 1}node_{self.conf.backend}"

    def start(self, *, debug: bool = False) -> str:
        return cluster.start_ray(self.conf.ray_address, debug=debug)

    def slots(self) -> list[Slot]:
        return cluster.cluster_slots(self.conf.nodes or 1, self.conf.threads)


class DeployedPlacement(Placement):
    """The driver on the head of a cluster that ``orch deploy`` set up."""

    kind = "deployed"

    def __init__(self, conf: BenchConfig, deploy: DeployRecord) -> None:
        super().__init__(conf)
        self.deploy = deploy

    @property
    def system(self) -> str:
        return f"{self.deploy.cluster}:{','.join(self.conf.cluster_nodes or ())}"

    def default_system_name(self) -> str:
        return f"{self.deploy.cluster}_{self.conf.nodes}node_{self.conf.backend}"

    def resolve_inputs(self) -> Inputs:
        return resolve_inputs(self.conf, self.deploy)

    def start(self, *, debug: bool = False) -> str:
        me = self.deploy.me()
        # A driver must join from an address on the cluster network.
        return cluster.start_ray(self.deploy.ray_address, debug=debug, node_ip=me.ray_ip if me else None)

    def slots(self) -> list[Slot]:
        slots = cluster.deployed_slots(self.deploy, list(self.conf.cluster_nodes or ()), self.conf.backend,
                                       self.conf.threads, self.conf.workers_per_node)
        from orchestrator.models.precision import check_precision

        for backend in {s.backend or self.conf.backend for s in slots}:
            check_precision(self.conf.precision, backend)  # --backend auto: each node's own
        return slots


def placement_for(conf: BenchConfig) -> Placement:
    """The placement a configuration asks for.

    Raises:
        InputError: on a deployed head, deploy.json is missing or unreadable.
    """
    if conf.cluster_nodes:
        return DeployedPlacement(conf, read_deploy_record())
    if conf.ray_address:
        return AddressPlacement(conf)
    return Placement(conf)
