"""What one `orch bench` is asked to do, checked before anything starts, and its user.conf.

The configuration itself is the typed record ``orchestrator.records.BenchConfig``;
this module holds the rules about it: ``check`` (every flag, before any file
is read or Ray starts), the sample count, the chunk size, and the user.conf
text loadgen reads.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

from orchestrator.errors import InputError
from orchestrator.records import BenchConfig, DeployRecord, RecordError, read_record

__all__ = ["BenchConfig", "check", "sample_count", "query_count", "effective_chunk_size", "user_conf", "read_deploy_record"]

MODES = ("performance", "accuracy", "submission")
EXECUTIONS = ("test", "valid")
SCENARIOS = ("Offline",)
DIVISIONS = ("open", "closed")

# Test mode: a short run, sized by --count, that is never valid for submission.
TEST_MIN_DURATION_MS = 1000
# Default --count of a test-mode performance run when the data set is larger.
TEST_DEFAULT_COUNT_CAP = 1024
# The official BERT Offline minimum query size (mlperf.conf, compiled into loadgen).
OFFICIAL_MIN_QUERY_COUNT = 10833
# What the official checker accepts as a directory name (submitter, system).
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def check(conf: BenchConfig) -> None:
    """Reject unusable flag values with one line naming the flag.

    Raises:
        InputError: a flag's value cannot be used.
    """
    if conf.backend == "auto" and not conf.cluster_nodes:
        raise InputError("--backend auto follows the node profiles of an inventory", hint="add --inventory FILE or name a backend")
    if conf.nodes is not None and conf.nodes < 1:
        raise InputError(f"--nodes must be at least 1 (got {conf.nodes})")
    if conf.scenario not in SCENARIOS:
        raise InputError(f"--scenario {conf.scenario!r} is not supported yet", hint="use --scenario Offline")
    if conf.count is not None and conf.count < 1:
        raise InputError(f"--count must be at least 1 (got {conf.count})")
    if conf.count is not None and conf.execution == "valid":
        raise InputError("--count is for --execution test", hint="a valid run uses the whole data set")
    if conf.duration is not None:
        if not conf.duration > 0:
            raise InputError(f"--duration must be a positive number of seconds (got {conf.duration})")
        if conf.execution == "valid" or conf.mode != "performance" or conf.count is not None:
            raise InputError("--duration is for --execution test --mode performance, without --count",
                             hint="a valid run lasts 600 s by the official rules; an accuracy run answers the data set once")
    if conf.backend.partition(":")[0] == "synthetic":
        from orchestrator.backends.synthetic import parse_spec

        parse_spec(conf.backend)  # a bad spec fails here, before Ray starts
        if conf.mode == "submission":
            raise InputError("--backend synthetic answers without inference: its runs are never a submission",
                             hint="use --mode performance or accuracy")
    if conf.count is not None and conf.mode == "accuracy" and not conf.partial_accuracy:
        raise InputError(
            "--count with --mode accuracy: an accuracy run covers the whole data set (MLPerf and the checker require it)",
            hint="drop --count, or add --partial-accuracy for a subset marked PARTIAL",
        )
    if conf.partial_accuracy and conf.mode == "performance":
        raise InputError("--partial-accuracy is for --mode accuracy", hint="drop it, or use --mode accuracy")
    if conf.partial_accuracy and conf.count is None:
        raise InputError("--partial-accuracy needs --count N (the samples to score)")
    if conf.partial_accuracy and conf.execution == "valid":
        raise InputError("--partial-accuracy with --execution valid: a valid accuracy run covers the whole data set")
    if conf.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1 (got {conf.batch_size})")
    if conf.threads is not None and conf.threads < 1:
        raise InputError(f"--threads must be at least 1 (got {conf.threads})")
    if conf.chunk_size is not None and conf.chunk_size < 1:
        raise InputError(f"--chunk-size must be at least 1 (got {conf.chunk_size})")
    if conf.target_qps is not None and conf.target_qps <= 0:
        raise InputError(f"--target-qps must be positive (got {conf.target_qps})")
    if conf.workers_per_node < 1:
        raise InputError(f"--workers-per-node must be at least 1 (got {conf.workers_per_node})")
    from orchestrator.models.precision import canonical, check_precision

    if conf.backend == "auto":
        canonical(conf.precision)  # each node's backend is checked once the nodes are known
    else:
        check_precision(conf.precision, conf.backend)
    if conf.division not in DIVISIONS:
        raise InputError(f"--division {conf.division!r} is unknown", hint="choose open or closed")
    if conf.mode == "submission":
        if not conf.submitter:
            raise InputError("--mode submission needs --submitter NAME (the submitting organisation)")
        for flag, value in (("--submitter", conf.submitter), ("--system-name", conf.system_name)):
            if value is not None and not NAME_RE.match(value):
                raise InputError(f"{flag} {value!r}: use letters, digits, '.', '_' and '-' only (it names a folder of the tree)")
        if conf.division == "closed":
            raise InputError("--division closed needs TEST01 compliance runs, which orch does not make yet",
                             hint="submit to the open division (--division open)")
    elif conf.allow_invalid:
        raise InputError("--allow-invalid is for --mode submission (and orch submit)")


def sample_count(conf: BenchConfig, available: int, *, dataset: Path, mode: str) -> int:
    """How many QSL samples a ``mode`` run uses, given the data set's feature count.

    An accuracy run answers the whole data set (``--count`` samples only with
    ``--partial-accuracy``; in submission mode ``--count`` sizes the
    performance run alone). A test-mode performance run uses ``--count``
    (default: the data set, at most ``TEST_DEFAULT_COUNT_CAP``); a larger
    ``--count`` or a ``--duration`` keeps the whole data set as the QSL and
    loadgen repeats samples in the query (``query_count``), as a valid run does.

    Raises:
        InputError: --count is larger than the data set in accuracy mode.
    """
    if conf.execution == "valid" or (mode == "accuracy" and not conf.partial_accuracy):
        return available
    if mode == "performance" and (conf.duration is not None or conf.whole_qsl):
        return available
    if conf.count is None:
        return available if mode == "accuracy" else min(available, TEST_DEFAULT_COUNT_CAP)
    if conf.count > available and mode == "performance":
        return available
    if conf.count > available:
        raise InputError(
            f"--count {conf.count} is larger than the data set {dataset} ({available} samples)",
            hint=f"use --count {available} or less (more is for --mode performance: samples repeat)",
        )
    return conf.count


def query_count(conf: BenchConfig, qsl_count: int, mode: str) -> int | None:
    """Samples in a test-mode performance query (``--count`` may exceed the QSL), or None
    when loadgen sizes it (valid mode, ``--duration``, accuracy runs)."""
    if mode != "performance" or conf.execution == "valid" or conf.duration is not None:
        return None
    if conf.whole_qsl and conf.count:
        return conf.count  # drawn at random from the whole data set, fewer samples than it holds
    return max(conf.count or 0, qsl_count)


def effective_chunk_size(conf: BenchConfig, samples: int, workers: int) -> int:
    """Samples per dispatched chunk.

    A few batches, so a chunk amortises the Ray round trip, but small enough
    that every worker gets several chunks of a short run.
    """
    if conf.chunk_size:
        return conf.chunk_size
    return max(1, min(conf.batch_size * 4, -(-samples // (workers * 4))))


def user_conf(
    *, execution: str, count: int, target_qps: float, query_count: int | None = None, duration: float | None = None
) -> str:
    """The user.conf text for a run (model key ``bert``: loadgen's own name for it).

    Valid mode only sets target_qps, so every official rule compiled into
    loadgen applies untouched. Test mode shrinks the run to a QSL of ``count``
    samples, a query of ``query_count`` samples (default ``count``; larger
    repeats samples) and a short minimum duration, or with ``duration`` a
    query of about that many seconds at ``target_qps``; it says so in the file.
    """
    lines = ["# user.conf written by orch"]
    if execution == "test":
        min_duration = int(round(duration * 1000)) if duration else TEST_MIN_DURATION_MS
        lines += [
            "# TEST MODE: a short run on a subset; NOT valid for an MLPerf submission.",
            f"bert.Offline.target_qps = {_fmt(target_qps)}",
            f"bert.Offline.min_duration = {min_duration}",
            f"bert.Offline.min_query_count = {count if duration else (query_count or count)}",
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


DEPLOY_JSON = "/data/deploy.json"


def read_deploy_record() -> DeployRecord:
    """What `orch deploy` wrote for the bench on a node (``$ORCH_DEPLOY_JSON``, default /data/deploy.json).

    Raises:
        InputError: the file is missing (this is not a deployed node) or is not
            a deploy record this orch reads.
    """
    path = Path(os.environ.get("ORCH_DEPLOY_JSON", DEPLOY_JSON))
    try:
        return read_record(DeployRecord, path)
    except RecordError as exc:
        raise InputError(str(exc), hint="run orch deploy (with this orch) first") from exc


def host_name() -> str:
    """This machine's name, safe for file and system names."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in socket.gethostname()) or "localhost"
