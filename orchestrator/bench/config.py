"""What one `orch bench` is asked to do, checked before anything starts, and its user.conf."""

from __future__ import annotations

import dataclasses
import json
import socket
from pathlib import Path

from orchestrator.errors import InputError
from orchestrator.paths import cache_subdir

MODES = ("performance", "accuracy", "submission")
EXECUTIONS = ("test", "valid")
SCENARIOS = ("Offline",)

# Test mode: a short run, sized by --count, that is never valid for submission.
TEST_MIN_DURATION_MS = 1000
# Default --count in test mode when the data set is larger than this.
TEST_DEFAULT_COUNT_CAP = 1024
# Samples of the short test run that measures target_qps before a valid run.
CALIBRATION_COUNT = 1024
# The official BERT Offline minimum query size (mlperf.conf, compiled into loadgen).
OFFICIAL_MIN_QUERY_COUNT = 10833


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """One benchmark run as asked for on the command line."""

    nodes: int | None = None  # None: 1 locally, every capable node of an inventory
    backend: str = "onnxruntime"
    scenario: str = "Offline"
    mode: str = "performance"
    execution: str = "test"
    count: int | None = None
    model: str = "demo"
    dataset: Path | None = None
    vocab: Path | None = None
    batch_size: int = 8
    threads: int | None = None
    chunk_size: int | None = None
    out: Path | None = None
    force: bool = False
    target_qps: float | None = None
    ray_address: str | None = None
    command: str = ""
    # Set by the controller when the driver runs on the head of a deployed cluster.
    cluster_nodes: tuple[str, ...] | None = None
    # Submission mode only.
    submitter: str | None = None
    system_name: str | None = None
    division: str = "open"
    system_meta: Path | None = None
    # Precision and tuned layouts (orchestrator.tune): fp32 | int8 | int8-dynamic | int8-static | fp16.
    precision: str = "fp32"
    workers_per_node: int = 1  # on a deployed cluster: CPU workers per node (locally, --nodes is the workers)
    tuned: str = "off"  # off | auto (the stored tuned layout) | a record's JSON (sent by the controller)
    given: frozenset[str] = frozenset()  # the layout flags given on the command line (they beat a tuned layout)

    def check(self) -> None:
        """Reject unusable values with one line naming the flag.

        Raises:
            InputError: a flag's value cannot be used.
        """
        if self.backend == "auto" and not self.cluster_nodes:
            raise InputError("--backend auto follows the node profiles of an inventory", hint="add --inventory FILE or name a backend")
        if self.nodes is not None and self.nodes < 1:
            raise InputError(f"--nodes must be at least 1 (got {self.nodes})")
        if self.scenario not in SCENARIOS:
            raise InputError(f"--scenario {self.scenario!r} is not supported yet", hint="use --scenario Offline")
        if self.mode not in MODES:
            raise InputError(f"--mode {self.mode!r} is unknown", hint=f"choose one of: {', '.join(MODES)}")
        if self.execution not in EXECUTIONS:
            raise InputError(f"--execution {self.execution!r} is unknown", hint="choose test or valid")
        if self.count is not None and self.count < 1:
            raise InputError(f"--count must be at least 1 (got {self.count})")
        if self.count is not None and self.execution == "valid":
            raise InputError("--count is for --execution test", hint="a valid run uses the whole data set")
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be at least 1 (got {self.batch_size})")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"--threads must be at least 1 (got {self.threads})")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise InputError(f"--chunk-size must be at least 1 (got {self.chunk_size})")
        if self.mode == "submission" and not self.submitter:
            raise InputError("--mode submission needs --submitter NAME (the submitting organisation)")
        if self.target_qps is not None and self.target_qps <= 0:
            raise InputError(f"--target-qps must be positive (got {self.target_qps})")
        if self.workers_per_node < 1:
            raise InputError(f"--workers-per-node must be at least 1 (got {self.workers_per_node})")
        from orchestrator.models.precision import canonical, check_precision

        if self.backend == "auto":
            canonical(self.precision)  # each node's backend is checked once the nodes are known
        else:
            check_precision(self.precision, self.backend)

    def sample_count(self, available: int, *, dataset: Path) -> int:
        """How many QSL samples this run uses, given the data set's feature count.

        Raises:
            InputError: --count is larger than the data set.
        """
        if self.execution == "valid":
            return available
        if self.count is None:
            return min(available, TEST_DEFAULT_COUNT_CAP)
        if self.count > available:
            raise InputError(
                f"--count {self.count} is larger than the data set {dataset} ({available} samples)",
                hint=f"use --count {available} or less",
            )
        return self.count

    def effective_chunk_size(self, samples: int, workers: int) -> int:
        """Samples per dispatched chunk.

        A few batches, so a chunk amortises the Ray round trip, but small
        enough that every worker gets several chunks of a short run.
        """
        if self.chunk_size:
            return self.chunk_size
        return max(1, min(self.batch_size * 4, -(-samples // (workers * 4))))


def user_conf(*, execution: str, count: int, target_qps: float) -> str:
    """The user.conf text for a run (model key ``bert``: loadgen's own name for it).

    Valid mode only sets target_qps, so every official rule compiled into
    loadgen applies untouched. Test mode shrinks the run to ``count`` samples
    and a short minimum duration, and says so in the file.
    """
    lines = ["# user.conf written by orch"]
    if execution == "test":
        lines += [
            "# TEST MODE: a short run on a subset; NOT valid for an MLPerf submission.",
            f"bert.Offline.target_qps = {_fmt(target_qps)}",
            f"bert.Offline.min_duration = {TEST_MIN_DURATION_MS}",
            f"bert.Offline.min_query_count = {count}",
            f"bert.Offline.performance_sample_count_override = {count}",
        ]
    else:
        lines.append(f"bert.Offline.target_qps = {_fmt(target_qps)}")
    return "\n".join(lines) + "\n"


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def test_target_qps(count: int) -> float:
    """A target_qps for test mode that keeps the Offline query at ``count`` samples.

    Loadgen sends max(min_query_count, 1.1 x min_duration x target_qps)
    samples; this keeps the second term under ``count``.
    """
    return max(1.0, count / (1.1 * TEST_MIN_DURATION_MS / 1000.0) * 0.99)


# --- target_qps calibration, stored per system -------------------------------------


def calibration_key(system: str, backend: str, model: str, nodes: int, batch_size: int, precision: str = "fp32") -> str:
    """The name under which a measured throughput is stored."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in system)
    suffix = "" if precision == "fp32" else f"__{precision}"
    return f"{safe}__{backend}__{model}__{nodes}n__b{batch_size}{suffix}"


DEPLOY_JSON = "/data/deploy.json"


def read_deploy_json() -> dict:
    """What `orch deploy` wrote for the bench on a node (``$ORCH_DEPLOY_JSON``, default /data/deploy.json).

    Raises:
        InputError: the file is missing: this is not a deployed node.
    """
    import os

    path = Path(os.environ.get("ORCH_DEPLOY_JSON", DEPLOY_JSON))
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} is missing or unreadable ({exc})", hint="run orch deploy first") from exc


def default_system_name(backend: str, nodes: int) -> str:
    """A system name for a submission when --system-name is not given."""
    host = "".join(c if c.isalnum() or c in "-_" else "_" for c in socket.gethostname())
    return f"{host}_{nodes}node_{backend}"


def local_system_name() -> str:
    """The system name of the embedded local cluster."""
    return socket.gethostname()


def load_calibration(key: str) -> float | None:
    """The stored samples/s for ``key``, or None."""
    path = cache_subdir("calibration") / f"{key}.json"
    try:
        return float(json.loads(path.read_text())["samples_per_second"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def store_calibration(key: str, samples_per_second: float, *, samples: int) -> Path:
    """Remember a measured throughput so the next valid run sizes its query right."""
    path = cache_subdir("calibration") / f"{key}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"samples_per_second": samples_per_second, "samples": samples}, indent=2))
    tmp.replace(path)
    return path
