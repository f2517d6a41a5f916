"""Measured throughput that sizes a valid run's Offline query (target_qps).

Loadgen sends one Offline query of max(10,833, 1.1 x 600 s x target_qps)
samples, and the run is VALID only if it lasts 600 s. A target_qps below
about 91% of the real rate ends the query early: INVALID after minutes of
work. So a calibration must fit the run it sizes, and the margin errs long:

- it is keyed by the system, the layout (backend, model file, precision,
  nodes, workers, threads, batch, chunk) and the data set's features key;
- it is kept only when it is steady (``MIN_SECONDS`` or ``MIN_SAMPLES``) and
  the machine was not busy before it started (1-minute load average below
  ``BUSY_LOAD`` per CPU); a run that is not kept says why, never silently;
- a valid run asks for ``MARGIN`` x the measured rate: a query about 10%
  longer than the minimum, and still valid if the rate was measured up to
  ~17% high.
"""

from __future__ import annotations

import datetime as dt
import os

from orchestrator.fileio import sha256_text
from orchestrator.paths import cache_subdir
from orchestrator.records import Calibration, Layout, RecordError, read_record

MIN_SECONDS = 30.0
MIN_SAMPLES = 1000
BUSY_LOAD = 0.5  # load average per CPU before the run above which it was contended
MARGIN = 1.1
# Samples of the calibration run a valid run makes when none fits (at least MIN_SAMPLES).
CALIBRATION_SAMPLES = 1024


def _path(system: str, layout: Layout, dataset_key: str):
    key = sha256_text(f"{system}|{layout.to_json()}|{dataset_key}")[:24]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in system)[:40]
    return cache_subdir("calibration") / f"{safe}-{layout.backend}-{key}.json"


def load(system: str, layout: Layout, dataset_key: str) -> Calibration | None:
    """The stored calibration for exactly this system, layout and data set, or None.

    A file that cannot be read as a calibration (an older orch's) counts as none.
    """
    try:
        return read_record(Calibration, _path(system, layout, dataset_key))
    except RecordError:
        return None


def load_average() -> float | None:
    """The 1-minute load average now (None where the OS has none)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def why_not_kept(
    samples: int, seconds: float, load_before: float | None, cpus: int | None,
    qsl_samples: int | None = None, total: int | None = None,
) -> str | None:
    """Why a measurement must not size a valid run (None when it may)."""
    if qsl_samples is not None and total is not None and qsl_samples < total:
        # A valid run draws from every feature; the first N have other lengths (the first 1,200
        # of the 10,833-feature file ran at 24.9 samples/s, the whole file at about 15).
        return (f"it drew from the first {qsl_samples:,} of the data set's {total:,} features, "
                "and a valid run draws from all of them (other lengths, another rate)")
    if seconds < MIN_SECONDS and samples < MIN_SAMPLES:
        return (f"{samples} samples in {seconds:.1f} s is too short to be steady "
                f"(needs {MIN_SAMPLES} samples or {MIN_SECONDS:.0f} s)")
    if load_before is not None and cpus and load_before > BUSY_LOAD * cpus:
        return f"the machine was busy before the run (load {load_before:.2f} on {cpus} CPUs)"
    return None


def store(
    system: str,
    layout: Layout,
    dataset_key: str,
    *,
    samples_per_second: float,
    samples: int,
    seconds: float,
    source: str,
    command: str = "",
    load_before: float | None = None,
    cpus: int | None = None,
    qsl_samples: int | None = None,
    total: int | None = None,
) -> tuple[Calibration | None, str]:
    """Keep a measured throughput when it is fit to size a valid run.

    Returns:
        (the stored calibration or None, one line saying what was done and why).
    """
    reason = why_not_kept(samples, seconds, load_before, cpus, qsl_samples, total)
    if reason is not None:
        return None, f"not kept as a calibration: {reason}"
    cal = Calibration(
        system=system,
        layout=layout,
        dataset_sha256=dataset_key,
        samples_per_second=samples_per_second,
        samples=samples,
        seconds=seconds,
        measured_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        source=source,
        run_command=command,
        load_before=load_before,
        cpus=cpus,
        qsl_samples=qsl_samples,
    )
    cal.write(_path(system, layout, dataset_key))
    return cal, f"kept as the calibration for valid runs of this layout ({samples_per_second:.2f} samples/s)"


def target_qps(cal: Calibration) -> float:
    """The target_qps a valid run asks for, from a calibration (errs long)."""
    return cal.samples_per_second * MARGIN


def describe(cal: Calibration) -> str:
    """One line: what measured it, for the table and run.json."""
    busy = f", load {cal.load_before:.2f} before it" if cal.load_before is not None else ""
    return (f"{MARGIN:g} x {cal.samples_per_second:.2f} samples/s measured by a {cal.source} "
            f"({cal.samples} samples, {cal.seconds:.1f} s, {cal.measured_at}{busy})")
