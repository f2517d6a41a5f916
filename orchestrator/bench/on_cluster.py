"""`orch bench --inventory`: the driver runs inside the head node's container.

The controller checks everything it can (flags, inventory, backend), picks
the nodes that can run the backend, writes the driver's configuration as a
``DriverConfig`` record on the head (under ``/data/runs``) and starts
``orch driver`` there with ``docker exec`` over SSH. That driver joins the
deployed Ray cluster from the head's cluster address, places the workers and
writes the run directory under ``/data/runs/`` on the head; its progress
arrives here as prefixed JSON lines on stderr and is drawn as the same live
view. Its answer is one ``DriverResult`` record: on success the run directory
is copied back to ``--out`` (built under a temporary name, renamed into
place); on failure the same error is raised here, and what the failed run
left is copied back to ``<out>.failed-<time>``. Ctrl-C / SIGTERM here stop
the driver there too.
"""

from __future__ import annotations

import json
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from orchestrator.bench import config as cfg
from orchestrator.bench.driver import config_path, pid_path, result_path
from orchestrator.bench.rundir import RunDir, check_out, repoint
from orchestrator.bench.runner import default_out
from orchestrator.bench.session import as_interrupt
from orchestrator.hardware import runs_backend
from orchestrator.bench.view import PROGRESS_PREFIX, RemoteProgress
from orchestrator.errors import InputError, Interrupted, RunError, rebuild_error
from orchestrator.records import BenchConfig, DriverConfig, DriverResult, Faults, RecordError

# Seconds the driver has to stop after Ctrl-C here before the controller gives up on it.
STOP_GRACE = 20.0


def choose_nodes(inventory: Any, backend: str, nodes: int | None, *, source: str) -> list[str]:
    """The nodes of ``inventory`` that run this bench, in inventory order.

    Args:
        inventory: a loaded ``orchestrator.inventory.Inventory``.
        backend: a backend name, or ``auto`` (every node, each with its profile's backend).
        nodes: how many (None: every node that can run the backend).
        source: the inventory file, for messages.

    Raises:
        InputError: fewer nodes than asked can run the backend.
    """
    capable = [n.name for n in inventory.nodes if runs_backend(n.profile, backend)]
    wanted = len(capable) if nodes is None else nodes
    if wanted < 1 or len(capable) < wanted:
        able = ", ".join(capable) or "none"
        raise InputError(
            f"--nodes {wanted}: {source} has {len(capable)} node(s) that can run backend {backend} ({able})",
            hint="lower --nodes, or pick the backend with --backend (auto follows each node's profile)",
        )
    return capable[:wanted]


def driver_config(conf: BenchConfig, nodes: list[str], remote_out: str, *, debug: bool = False,
                  faults: Faults | None = None) -> DriverConfig:
    """The record the driver in the head container runs (every configuration field travels)."""
    return DriverConfig(
        bench=conf.replace(nodes=len(nodes), cluster_nodes=tuple(nodes), out=None, force=True),
        remote_out=remote_out,
        debug=debug,
        faults=faults or Faults(),
    )


def run_on_inventory(
    conf: BenchConfig,
    inventory_path: Path,
    *,
    live: bool = True,
    debug: bool = False,
    trust_new_hosts: bool = False,
    faults: Faults | None = None,
) -> dict[str, Any]:
    """Run the bench on a deployed cluster and bring its run directory back.

    Raises:
        InputError: bad inventory or flags (before any connection).
        Interrupted: Ctrl-C / SIGTERM (the driver on the head is stopped too).
        OrchError: the error the driver raised, as its own class.
    """
    from orchestrator.backends.base import check_backend
    from orchestrator.inventory import load_inventory
    from orchestrator.ssh.factory import open_transport

    if conf.nodes is not None and conf.nodes < 1:
        raise InputError(f"--nodes must be at least 1 (got {conf.nodes})")
    if conf.dataset or conf.vocab:
        raise InputError("--dataset/--vocab with --inventory: the nodes use what orch deploy shipped",
                         hint="pass them to orch deploy instead")
    if conf.ray_address:
        raise InputError("--ray-address with --inventory: the driver joins the deployed cluster's Ray itself")
    if conf.backend != "auto":
        check_backend(conf.backend, installed=False)
    inventory = load_inventory(inventory_path)
    nodes = choose_nodes(inventory, conf.backend, conf.nodes, source=str(inventory_path))
    cfg.check(conf.replace(nodes=len(nodes), cluster_nodes=tuple(nodes)))
    if conf.tuned == "auto":
        from orchestrator.tune.apply import controller_record

        profiles = sorted({n.profile for n in inventory.nodes if n.name in nodes})
        # The driver applies (or ignores, saying why) the controller's tuned layout: it knows the model and data.
        # Several profiles: no tuned layout applies (it is per profile).
        conf = conf.replace(tuned=controller_record(inventory.cluster, profiles[0]) if len(profiles) == 1 else "{}")
    out = (conf.out or default_out(conf.mode)).absolute()
    check_out(out, conf.force)
    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{conf.mode}"
    remote_out = f"/data/runs/{run_id}"
    record = driver_config(conf, nodes, remote_out, debug=debug, faults=faults)

    transport = open_transport(inventory, trust_new_hosts=trust_new_hosts, debug=debug,
                               notice=lambda line: sys.stderr.write(f"orch: {line}\n"))
    try:
        result = _drive(inventory, transport, record, live=live, debug=debug)
        local = RunDir(out, kind="submission-run" if conf.mode == "submission" else "run", force=conf.force,
                       command=conf.command)
        local.create()
        source = result.run_dir
        if source:
            _fetch(inventory, transport, source, local.path)
        if not result.ok:
            error = result.error
            failed = local.fail(error.message if error else "the driver failed")
            hint = (error.hint or "") if error else ""
            hint = hint.replace(f"what it wrote is in {source}", "").strip("; ")  # said below, with the local copy
            exc = rebuild_error(error.type, error.message, hint or None, error.exit_code) if error else RunError("the driver failed")
            where = f"what it wrote is in {failed}" + (f" (and {source} on {inventory.head})" if source else "")
            exc.hint = f"{hint}; {where}" if hint else where
            raise exc
        final = local.commit()
    finally:
        transport.close()
    return _relocate(result.summary or {}, remote_out, final, shlex.join(["orch", *sys.argv[1:]]))


def _drive(inventory, transport, record: DriverConfig, *, live: bool, debug: bool) -> DriverResult:
    """Start the driver on the head, draw its progress, stop it on an interrupt; its result record."""
    from orchestrator.deploy.remote import exec_in_head, host_path

    head = inventory.head_node
    remote_out = record.remote_out
    with tempfile.TemporaryDirectory(prefix="orch-driver-") as tmp:
        local_config = Path(tmp) / "driver.json"
        record.write(local_config)
        mkdir = f"mkdir -p {shlex.quote(host_path(head, '/data/runs'))}"
        transport.run(head.name, mkdir, timeout=60)
        transport.put(head.name, local_config, host_path(head, config_path(remote_out)))

    progress = RemoteProgress()
    pending = {"stderr": ""}

    def on_output(stream: str, text: str) -> None:
        if stream == "stdout":
            return  # the result is read from its file
        pending["stderr"] += text
        *lines, pending["stderr"] = pending["stderr"].split("\n")
        for line in lines:
            driver_line(line, progress, debug=debug, write=sys.stderr.write)

    view = None
    interrupt: BaseException | None = None
    if live:
        from rich.console import Console
        from rich.live import Live

        view = Live(progress, console=Console(stderr=True), refresh_per_second=4, transient=True)
        view.start()
    try:
        try:
            exec_in_head(inventory, ["orch", "driver", config_path(remote_out)], transport=transport, on_output=on_output)
        except BaseException as exc:  # Ctrl-C / SIGTERM here: stop the driver there, then wait for its record
            if not isinstance(exc, (KeyboardInterrupt, Interrupted)):
                raise
            interrupt = exc
            signal_name = as_interrupt(exc).signal_name
            stop = f"kill -{'TERM' if signal_name == 'SIGTERM' else 'INT'} $(cat {shlex.quote(pid_path(remote_out))})"
            exec_in_head(inventory, ["sh", "-c", stop], transport=transport, stream=False, timeout=30)
            _wait_for_result(transport, head, host_path(head, result_path(remote_out)), STOP_GRACE)
    finally:
        if view is not None:
            view.stop()
    got = transport.run(head.name, f"cat {shlex.quote(host_path(head, result_path(remote_out)))}", timeout=60)
    if not got.ok:
        if interrupt is not None:
            raise as_interrupt(interrupt)
        raise RunError(f"the bench driver on {inventory.head} left no result ({got.stderr.strip()[:200]})",
                       hint="run again with --debug to see its output")
    try:
        result = DriverResult.from_json(got.stdout, source=f"{inventory.head}:{result_path(remote_out)}")
    except RecordError as exc:
        raise RunError(str(exc), hint="do the controller and the image run the same orch? (orch images build, orch deploy)") from exc
    if interrupt is not None and result.ok:
        raise as_interrupt(interrupt)
    return result


# Lines of the head node's driver shown without --debug: what it says before the run
# (e.g. that the planned rate exceeds the driver's measured ceiling, docs/scaling.md).
SHOWN_PREFIXES = ("orch: warning:",)


def driver_line(line: str, progress: Any, *, debug: bool, write) -> None:
    """One stderr line of the head node's driver: a progress snapshot, a warning shown, or its log (--debug)."""
    if line.startswith(PROGRESS_PREFIX):
        try:
            progress.latest = json.loads(line[len(PROGRESS_PREFIX):])
        except ValueError:
            pass
    elif line.startswith(SHOWN_PREFIXES) or (line.strip() and debug):
        write(line + "\n")


def _wait_for_result(transport, head, path: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if transport.run(head.name, f"test -f {shlex.quote(path)}", timeout=30).ok:
            return
        time.sleep(0.5)


def _fetch(inventory, transport, remote_dir: str, local_dir: Path) -> None:
    from orchestrator.deploy.remote import fetch_run_dir

    fetch_run_dir(inventory, remote_dir, local_dir, transport=transport)


def _relocate(summary: dict[str, Any], remote_out: str, out: Path, command: str) -> dict[str, Any]:
    """Point the summary's run directories at the local copy."""
    local = repoint(summary, remote_out, str(out))
    local["controller_command"] = command
    local["remote_run_dir"] = remote_out
    return local
