"""The state file of a sandbox: everything ``up`` created, so ``down`` removes exactly that.

It lives at ``cache_subdir("sandbox")/<name>/state.json`` beside the
sandbox's keys and node folders. ``up`` writes it before creating anything
and updates it after each step, so an interrupted ``up`` can still be
taken down.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from orchestrator.errors import InputError
from orchestrator.fileio import atomic_write
from orchestrator.paths import cache_subdir
from orchestrator.sandbox.plan import NodePlan, SandboxPlan

STATE_VERSION = 1


def sandbox_root() -> Path:
    """The folder holding every sandbox (``<orch cache>/sandbox``)."""
    return cache_subdir("sandbox")


@dataclass
class NodeProcess:
    """The launcher process of a node (``unshare``; the node's PID 1 is its child)."""

    pid: int
    start_time: int  # field 22 of /proc/<pid>/stat: tells a reused pid apart


@dataclass
class SandboxState:
    """What exists of a sandbox, as far as orch created it."""

    plan: SandboxPlan
    status: str = "creating"  # creating | up | failed
    created_mountpoints: list[str] = field(default_factory=list)
    enabled_cpuset_controller: bool = False
    processes: dict[str, NodeProcess] = field(default_factory=dict)
    inventory_sha256: str | None = None
    started_at: str | None = None
    up_seconds: float | None = None

    def to_json(self) -> dict:
        """A JSON-serialisable dict (paths as strings)."""
        plan = asdict(self.plan)
        return {
            "version": STATE_VERSION,
            "status": self.status,
            "plan": _stringify(plan),
            "created_mountpoints": list(self.created_mountpoints),
            "enabled_cpuset_controller": self.enabled_cpuset_controller,
            "processes": {name: asdict(proc) for name, proc in self.processes.items()},
            "inventory_sha256": self.inventory_sha256,
            "started_at": self.started_at,
            "up_seconds": self.up_seconds,
        }

    @classmethod
    def from_json(cls, data: dict, *, path: Path) -> SandboxState:
        """Rebuild a state from ``to_json``'s output.

        Raises:
            InputError: the file is from another orch version or is damaged.
        """
        try:
            if data.get("version") != STATE_VERSION:
                raise ValueError(f"version {data.get('version')!r}, expected {STATE_VERSION}")
            raw = dict(data["plan"])
            nodes = tuple(
                NodePlan(**{**n, "cpus": tuple(n["cpus"]), "dir": Path(n["dir"])}) for n in raw.pop("nodes")
            )
            plan = SandboxPlan(
                **{
                    **raw,
                    "dir": Path(raw["dir"]),
                    "inventory_path": Path(raw["inventory_path"]),
                    "host_mountpoints": tuple(raw.get("host_mountpoints", ())),
                    "nodes": nodes,
                }
            )
            return cls(
                plan=plan,
                status=data["status"],
                created_mountpoints=list(data.get("created_mountpoints", [])),
                enabled_cpuset_controller=bool(data.get("enabled_cpuset_controller", False)),
                processes={k: NodeProcess(**v) for k, v in data.get("processes", {}).items()},
                inventory_sha256=data.get("inventory_sha256"),
                started_at=data.get("started_at"),
                up_seconds=data.get("up_seconds"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(
                f"sandbox state file {path} is unreadable ({exc}); remove what is left by hand "
                "(ip netns, the bridge, the folder) or with the orch version that created it"
            ) from None

    def save(self) -> None:
        """Write the state file atomically (a crash never leaves half a file)."""
        path = self.plan.state_file
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(self.to_json(), indent=2) + "\n")


def _stringify(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: _stringify(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_stringify(v) for v in value]
    return value


def state_path(name: str, root: Path | None = None) -> Path:
    """Where sandbox ``name``'s state file is (it may not exist)."""
    return (root or sandbox_root()) / name / "state.json"


def load_state(name: str, root: Path | None = None) -> SandboxState | None:
    """The state of sandbox ``name``, or None when it has none.

    Raises:
        InputError: the state file exists but cannot be read.
    """
    path = state_path(name, root)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"sandbox state file {path} is not valid JSON ({exc.msg}); remove it by hand") from None
    return SandboxState.from_json(data, path=path)


def list_sandboxes(root: Path | None = None) -> list[str]:
    """Names of the sandboxes with a state file, sorted."""
    base = root or sandbox_root()
    return sorted(p.parent.name for p in base.glob("*/state.json"))
