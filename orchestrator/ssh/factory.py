"""The one way orch's commands open SSH to an inventory's nodes.

``orch deploy``, ``orch status``, ``orch teardown`` and ``orch bench
--inventory`` all call ``open_transport``: the same host-key rules
(``known_hosts`` from the inventory, a new host trusted only with
``--trust-new-hosts``, a changed key always refused), the same checks of the
controller's files before the first connection, and paramiko's own logging
kept quiet unless ``--debug`` (it logs a traceback for every failed connection
attempt, which would bury orch's one line per node).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from orchestrator.errors import InputError
from orchestrator.ssh.paramiko_transport import ParamikoTransport, SshTarget, targets_from_inventory

_quiet_handler = logging.NullHandler()


def quiet_paramiko(debug: bool = False) -> None:
    """Keep paramiko's log records (tracebacks of failed connections) off stderr, unless ``debug``."""
    logger = logging.getLogger("paramiko")
    if debug:
        logger.removeHandler(_quiet_handler)
        logger.propagate = True
    else:
        if _quiet_handler not in logger.handlers:
            logger.addHandler(_quiet_handler)  # a handler, so Python's last-resort one stays silent
        logger.propagate = False


def check_controller_files(targets: dict[str, SshTarget], *, trust_new_hosts: bool) -> None:
    """Check what the controller needs before it connects: identity files, known_hosts and each node's key in it.

    Args:
        targets: the nodes (``targets_from_inventory``).
        trust_new_hosts: a node missing from known_hosts (or a missing
            known_hosts file) is fine: its key will be added on first connection.

    Raises:
        InputError: one line naming the file and the nodes concerned, with the fix.
    """
    for target in targets.values():
        if target.identity_file is not None:
            path = target.identity_file.expanduser()
            if not path.is_file():
                raise InputError(
                    f"node {target.name}: identity_file {path} does not exist",
                    hint="fix ssh.identity_file (or the node's identity_file) in the inventory",
                )
    if trust_new_hosts:
        return
    by_file: dict[Any, list[SshTarget]] = {}
    for target in targets.values():
        by_file.setdefault(target.known_hosts.expanduser(), []).append(target)
    for path, group in by_file.items():
        if not path.is_file():
            raise InputError(
                f"known_hosts file {path} does not exist (ssh.known_hosts), so no node's host key can be verified",
                hint="add the nodes' keys to it (ssh-keyscan), or run again with --trust-new-hosts",
            )
        keys = _load_host_keys(path)
        missing = [t for t in group if keys.lookup(t.known_hosts_name) is None]
        if missing:
            names = ", ".join(f"{t.name} ({t.known_hosts_name})" for t in missing)
            raise InputError(
                f"{path} has no host key for node{'s' if len(missing) > 1 else ''} {names}",
                hint="check the key and add it (ssh-keyscan -p PORT HOST >> known_hosts), or run again with --trust-new-hosts",
            )


def _load_host_keys(path: Any) -> Any:
    import paramiko

    keys = paramiko.HostKeys()
    try:
        keys.load(str(path))
    except (OSError, paramiko.SSHException, ValueError) as exc:
        raise InputError(f"known_hosts file {path} cannot be read: {exc}") from None
    return keys


def open_transport(
    inventory: Any,
    *,
    trust_new_hosts: bool = False,
    notice: Callable[[str], None] | None = None,
    debug: bool = False,
) -> ParamikoTransport:
    """A transport to every node of ``inventory``, after checking the controller's side of SSH.

    Connects to nothing: connections open on first use.

    Args:
        inventory: the validated ``Inventory``.
        trust_new_hosts: add unknown host keys to known_hosts (and say so through ``notice``).
        notice: called with one line for each thing worth telling the user.
        debug: let paramiko's log records through.

    Raises:
        InputError: an identity file or known_hosts is missing, or a node's
            host key is not in known_hosts (without ``trust_new_hosts``).
    """
    targets = targets_from_inventory(inventory)
    check_controller_files(targets, trust_new_hosts=trust_new_hosts)
    quiet_paramiko(debug)
    return ParamikoTransport(targets, trust_new_hosts=trust_new_hosts, notice=notice)
