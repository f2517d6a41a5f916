"""SSH to the nodes: one injected ``Transport``, parallel fan-out, quoted commands.

``ParamikoTransport`` is the real one (paramiko is imported only when it
connects); ``RecordingTransport`` records exact commands for tests.
"""

from orchestrator.ssh.factory import open_transport
from orchestrator.ssh.fanout import NodeFailures, NodeResult, failures, fan_out, raise_failures
from orchestrator.ssh.paramiko_transport import ParamikoTransport, SshTarget, targets_from_inventory
from orchestrator.ssh.recording import Call, RecordingTransport
from orchestrator.ssh.transport import Result, Transport, check, remote_cmd

__all__ = [
    "Call",
    "NodeFailures",
    "NodeResult",
    "ParamikoTransport",
    "RecordingTransport",
    "Result",
    "SshTarget",
    "Transport",
    "check",
    "failures",
    "fan_out",
    "open_transport",
    "raise_failures",
    "remote_cmd",
    "targets_from_inventory",
]
