"""Typed, versioned records for everything that crosses a process or lands in a file.

Every writer and every reader of these files goes through the models here:

- ``BenchConfig``: one ``orch bench`` as asked for (also what the controller
  sends the driver in the head container, inside ``DriverConfig``);
- ``DriverConfig`` / ``DriverResult``: the remote driver's input and its one
  structured answer (errors included: type, message, hint);
- ``RunRecord``: ``run.json``, written last into a run directory;
- ``Calibration``: a measured throughput that sizes a valid run's query;
- ``DeployRecord``: ``deploy.json``, what ``orch deploy`` leaves on each node;
- ``RunMarker``: ``.orch-run.json``, the mark that a directory is orch's run.

Each file carries ``record`` (its kind) and ``version``. A file of another
kind, of an unknown version, or with fields this orch does not know is
refused in one line naming the file (``RecordError``); nothing is guessed.
Models are frozen: a record is built once, complete, then written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestrator import __version__
from orchestrator.errors import OrchError
from orchestrator.fileio import atomic_write
from orchestrator.hardware import DEFAULT_BACKEND


class RecordError(OrchError):
    """A record file is missing, unreadable, of another kind or version, or malformed."""


class Record(BaseModel):
    """Base of every record: frozen, unknown fields refused, kind and version on disk."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    KIND: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1

    def to_dict(self) -> dict[str, Any]:
        """The record as plain JSON data, with its kind and version first."""
        return {"record": self.KIND, "version": self.VERSION, **self.model_dump(mode="json")}

    def to_json(self) -> str:
        """The record as one JSON document."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def write(self, path: Path | str) -> Path:
        """Write the record atomically to ``path``."""
        return atomic_write(path, self.to_json())

    @classmethod
    def from_json(cls: type[R], text: str, *, source: str) -> R:
        """Parse ``to_json``'s text (kind and version checked).

        Raises:
            RecordError: not JSON, or not this kind of record.
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RecordError(f"{source}: not JSON ({exc.msg})") from exc
        return parse_record(cls, data, source=source)


R = TypeVar("R", bound=Record)


def parse_record(cls: type[R], data: Any, *, source: str) -> R:
    """Build a ``cls`` from decoded JSON, checking kind and version.

    Raises:
        RecordError: another kind, another version, or fields that do not fit.
    """
    if not isinstance(data, dict):
        raise RecordError(f"{source}: not a JSON object, so not an orch {cls.KIND} record")
    kind, version = data.get("record"), data.get("version")
    if kind != cls.KIND:
        found = f"a {kind!r} record" if kind else "no orch record (no \"record\" field)"
        raise RecordError(f"{source}: expected an orch {cls.KIND} record, found {found}",
                          hint="was it written by this version of orch?")
    if version != cls.VERSION:
        newer = isinstance(version, int) and version > cls.VERSION
        raise RecordError(
            f"{source}: {cls.KIND} record version {version!r}, this orch ({__version__}) reads version {cls.VERSION}",
            hint="upgrade orch to read it" if newer else "it was written by an older orch: make it again with this one",
        )
    body = {k: v for k, v in data.items() if k not in ("record", "version")}
    try:
        return cls.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "(top)"
        raise RecordError(f"{source}: {cls.KIND} field {where}: {first.get('msg')} ({exc.error_count()} problem(s))") from exc


def read_record(cls: type[R], path: Path | str) -> R:
    """Read and check a record file.

    Raises:
        RecordError: the file is missing, not JSON, or not a valid ``cls``.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise RecordError(f"{path}: missing") from exc
    except OSError as exc:
        raise RecordError(f"{path}: cannot read ({exc.strerror})") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from exc
    return parse_record(cls, data, source=str(path))


# --- the bench configuration -------------------------------------------------------

Mode = Literal["performance", "accuracy", "submission"]
RunMode = Literal["performance", "accuracy"]
Execution = Literal["test", "valid"]


class BenchConfig(Record):
    """One ``orch bench`` as asked for; checked by ``orchestrator.bench.config.check``.

    Paths are the controller's (or, inside ``DriverConfig``, the head's).
    ``system_meta`` holds the *content* of ``--system-meta`` (read and
    checked on the controller), so it reaches a remote driver too.
    """

    KIND: ClassVar[str] = "bench-config"

    nodes: int | None = None  # None: 1 locally, every capable node of an inventory
    backend: str = DEFAULT_BACKEND
    scenario: str = "Offline"
    mode: Mode = "performance"
    execution: Execution = "test"
    count: int | None = None
    duration: float | None = None  # test mode, performance: a query of about this many seconds
    partial_accuracy: bool = False  # accuracy on --count samples only, marked PARTIAL
    # Test-mode performance: the QSL is the whole data set and the query --count samples that
    # loadgen draws from all of it (a calibration: a prefix of the data set has other lengths).
    whole_qsl: bool = False
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
    allow_invalid: bool = False  # submission mode: package an INVALID or test run, marked
    # The nodes of a deployed cluster this run uses (set by the controller for the driver).
    cluster_nodes: tuple[str, ...] | None = None
    # Submission mode.
    submitter: str | None = None
    system_name: str | None = None
    division: str = "open"
    system_meta: dict[str, Any] | None = None
    system_meta_source: str | None = None  # where system_meta was read from, for messages
    # Stop a valid run's automatic re-run from recursing (set on the re-run itself).
    is_rerun: bool = False
    # Precision and tuned layouts (orchestrator.tune): fp32 | int8 | int8-dynamic | int8-per-token | int8-static | fp16.
    precision: str = "fp32"
    workers_per_node: int = 1  # on a deployed cluster: CPU workers per node (locally, --nodes is the workers)
    tuned: str = "off"  # off | auto (the stored tuned layout) | the decision's JSON (controller -> driver, parent -> child)
    given: tuple[str, ...] = ()  # the layout flags given on the command line (they beat a tuned layout)

    def replace(self, **changes: Any) -> "BenchConfig":
        """A copy with ``changes`` applied and validated."""
        return BenchConfig.model_validate({**self.model_dump(), **changes})


class Faults(Record):
    """Faults a test injects into a run (never read from the environment by the core).

    Attributes:
        kill_worker_after: worker name -> chunks it answers before it SIGKILLs itself.
        chunk_delay: seconds each worker sleeps per chunk (to make a run last).
        log_all_responses: loadgen logs every completed sample of a performance
            run (mlperf_log_accuracy.json), so a test can count completions in
            loadgen's own log.
    """

    KIND: ClassVar[str] = "faults"

    kill_worker_after: dict[str, int] = Field(default_factory=dict)
    chunk_delay: float = 0.0
    log_all_responses: bool = False  # loadgen logs every completed sample of a performance run


class DriverConfig(Record):
    """What the controller sends the driver in the head container (a file under /data/runs)."""

    KIND: ClassVar[str] = "driver-config"

    bench: BenchConfig
    remote_out: str  # the run directory inside the container
    debug: bool = False
    faults: Faults = Field(default_factory=Faults)


class DriverError(BaseModel):
    """An ``OrchError`` as it travels back from the driver."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: str
    message: str
    hint: str | None = None
    exit_code: int = 2


class DriverResult(Record):
    """The driver's one answer: the summary, or the error it raised."""

    KIND: ClassVar[str] = "driver-result"

    ok: bool
    summary: dict[str, Any] | None = None
    error: DriverError | None = None
    run_dir: str | None = None  # inside the container: the run, or what a failed run left


# --- run.json ----------------------------------------------------------------------


class NodeRun(Record):
    """One node's part in a run (several local workers share one machine: one node)."""

    KIND: ClassVar[str] = "node-run"

    name: str
    node_ip: str
    backend: str
    workers: list[str]
    samples: int
    seconds: float
    device: dict[str, Any] = Field(default_factory=dict)
    facts: dict[str, Any] = Field(default_factory=dict)


class LostWorker(Record):
    """A worker lost mid-run; its unfinished chunks were run by the others."""

    KIND: ClassVar[str] = "lost-worker"

    name: str
    node: str
    reason: str | None = None


class TargetQps(Record):
    """How a run's target_qps was chosen, so a reader can judge the sizing."""

    KIND: ClassVar[str] = "target-qps"

    value: float
    source: Literal["flag", "calibration", "test-sizing", "rerun", "accuracy", "duration"]
    detail: str = ""


class Rerun(Record):
    """A valid performance run that loadgen called INVALID for its size, run again once."""

    KIND: ClassVar[str] = "rerun"

    first_result: str  # e.g. "INVALID (min duration satisfied: no)"
    first_samples_per_second: float | None
    first_target_qps: float
    first_seconds: float
    new_target_qps: float
    # Where the first attempt's logs were kept, relative to this run.json's folder (a path that
    # stays true when the run folder is renamed from .NAME.partial to NAME, or moved).
    first_run_dir: str


class AccuracyScore(Record):
    """EM/F1 of an accuracy run, and what they cover."""

    KIND: ClassVar[str] = "accuracy-score"

    exact_match: float | None
    f1: float | None
    examples_scored: int
    examples_total: int
    log_sha256: str
    partial: bool  # fewer samples than the data set: not the data set's EM/F1
    note: str | None = None


class RunRecord(Record):
    """``run.json``: what one loadgen run did, written last into its run directory."""

    KIND: ClassVar[str] = "run"

    orch_version: str
    command: str
    scenario: str
    mode: RunMode
    execution: Execution
    backend: str
    backends: list[str]
    model: str
    model_note: str | None = None
    model_path: str
    vocab_path: str
    dataset_path: str
    dataset_sha256: str
    features_key: str
    total_sample_count: int
    count: int
    target_qps: TargetQps
    samples_per_second: float | None
    samples_per_second_source: str | None
    result_valid: bool | None
    invalid_reasons: list[str]
    loadgen_errors: list[str]
    accuracy: AccuracyScore | None = None
    system: str  # the calibration system name (host, address or cluster:nodes)
    nodes: int  # machines that took part
    workers: int
    per_node: list[NodeRun]
    lost_workers: list[LostWorker]
    rerun_samples: int
    issued_samples: int
    startup_seconds: float  # from the process's start to loadgen's start (Ray, workers, inputs)
    startup: dict[str, Any] = Field(default_factory=dict)  # the marks of that start-up (driver_stats.Startup)
    driver: dict[str, Any] = Field(default_factory=dict)  # what the driver itself cost (driver_stats.driver_record)
    synthetic: dict[str, Any] | None = None  # the synthetic backend's model, when it answered
    dispatch_seconds: float
    started_at: str
    finished_at: str
    calibration_stored: str | None = None  # why a test run was or was not kept as a calibration
    rerun: Rerun | None = None
    precision: str = "fp32"
    model_variant: dict[str, Any] | None = None  # the reduced-precision file that ran (models.precision)
    layout: dict[str, Any] = Field(default_factory=dict)  # workers, threads, batch, chunk and where they came from
    accuracy_target: dict[str, Any] | None = None  # the accuracy guard's verdict (tune.guard.judge)

    @property
    def exact_match(self) -> float | None:
        return self.accuracy.exact_match if self.accuracy else None

    @property
    def f1(self) -> float | None:
        return self.accuracy.f1 if self.accuracy else None


# --- calibration -------------------------------------------------------------------


class Layout(Record):
    """What a throughput depends on besides the system: how the work is laid out."""

    KIND: ClassVar[str] = "layout"

    backend: str
    model_sha256: str
    precision: str = "fp32"
    nodes: int
    workers_per_node: int = 1
    threads: int | None
    batch_size: int
    chunk_size: int | None


class Calibration(Record):
    """A measured samples/s that sizes a valid run's Offline query, with what made it."""

    KIND: ClassVar[str] = "calibration"

    system: str
    layout: Layout
    dataset_sha256: str
    samples_per_second: float
    samples: int
    seconds: float
    measured_at: str
    source: str  # "calibration run", "test run", "valid run"
    run_command: str = ""
    load_before: float | None = None  # 1-minute load average before the run (busy machines)
    cpus: int | None = None
    qsl_samples: int | None = None  # the features loadgen drew the query from (the whole data set)


# --- one loadgen run handed to a process of its own ---------------------------------


class RunJob(Record):
    """One loadgen run for a (spawned) process: loadgen reads one user.conf per process.

    Attributes:
        run_dir: an existing folder to write the run into (its life belongs to the caller).
        target: the target_qps decided by the caller, or None for test-mode sizing.
        rerun: set on the automatic re-run of a valid performance run.
        load_before: the load average before the bench started (calibrations).
    """

    KIND: ClassVar[str] = "run-job"

    conf: BenchConfig
    mode: RunMode
    run_dir: str
    target: TargetQps | None = None
    rerun: Rerun | None = None
    load_before: float | None = None
    debug: bool = False
    faults: Faults = Field(default_factory=Faults)


# --- deploy.json ---------------------------------------------------------------------


class DeployedNode(Record):
    """One node as ``orch deploy`` left it."""

    KIND: ClassVar[str] = "deployed-node"

    name: str
    ray_ip: str | None  # None: left out (--skip-unreachable), the bench must not count on it
    profile: str
    gpus: int = 0
    cpus: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)


class DeployRecord(Record):
    """``/data/deploy.json``: what the bench inside a node's container needs to know."""

    KIND: ClassVar[str] = "deploy"

    cluster: str
    node: str  # the node this copy is on
    head: str
    model: str
    model_path: str
    vocab_path: str
    dataset_path: str
    cache_dir: str
    ray_address: str
    nodes: list[DeployedNode]

    def me(self) -> DeployedNode | None:
        return next((n for n in self.nodes if n.name == self.node), None)


# --- the run directory's marker --------------------------------------------------------


class RunMarker(Record):
    """``.orch-run.json``: this directory is an orch run (so ``--force`` may replace it)."""

    KIND: ClassVar[str] = "run-marker"

    orch_version: str
    kind: Literal["run", "submission-run", "submission"]
    created_at: str
    command: str = ""
    state: Literal["partial", "complete", "failed"] = "partial"
    reason: str | None = None  # why it failed
