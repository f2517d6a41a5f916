"""The cluster inventory: which nodes orch deploys to and how to reach them.

An inventory is a YAML file (see ``inventory/example.yaml``; its JSON schema,
generated from these models, is ``inventory/schema.json``). It is validated
completely before orch opens a single connection: YAML errors, unknown keys,
duplicate node names or hosts, bad ports, unknown profiles and a head that
is not a node each raise one ``InputError`` line naming the file, the node
and the key.

Regenerate the schema with ``python -m orchestrator.inventory > inventory/schema.json``.
"""

from __future__ import annotations

import ipaddress
import json
import re
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from orchestrator import hardware
from orchestrator.errors import InputError

# Names end up in container names, Docker labels and Ray resources: keep them plain.
NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
# A DNS name or an IPv4/IPv6 literal; nothing a shell would interpret.
HOST_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9.:_-]{0,252}$"
USER_PATTERN = r"^[a-z_][a-z0-9_.-]{0,31}$"
LABEL_KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"


def _unknown_profile(value: str) -> str:
    return f"unknown profile {value!r}; choose one of: {', '.join(hardware.PROFILES)}"


def _check_profile(value: str) -> str:
    if value not in hardware.PROFILES:
        raise ValueError(_unknown_profile(value))
    return value


# The profiles come from the hardware catalog when the schema is made, so
# a profile added there is in the schema and the checks at once.
def _profile_schema(schema: dict[str, Any]) -> None:
    schema["enum"] = list(hardware.PROFILES)
    schema["description"] = "Image profile the node runs: " + ", ".join(hardware.PROFILES) + "."
    schema["title"] = "Profile"


def _images_schema(schema: dict[str, Any]) -> None:
    schema["propertyNames"] = {"enum": list(hardware.PROFILES)}


def _expand_local_path(value: Path | None, info: ValidationInfo) -> Path | None:
    """A controller-side path: ``~`` expanded, relative ones taken from the inventory's folder."""
    if value is None:
        return None
    path = Path(value).expanduser()
    base = (info.context or {}).get("base_dir")
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    return path


def _no_password(data: Any) -> Any:
    if isinstance(data, dict) and ("password" in data or "passphrase" in data):
        key = "password" if "password" in data else "passphrase"
        raise ValueError(
            f"{key}: passwords are not supported; use an SSH key (identity_file) or ssh-agent"
        )
    return data


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SshDefaults(_Frozen):
    """How to reach every node unless the node says otherwise. Key or agent auth only."""

    user: str = Field("root", pattern=USER_PATTERN, description="Login user on the nodes.")
    port: int = Field(22, ge=1, le=65535, description="sshd port on the nodes.")
    identity_file: Path | None = Field(
        None, description="Private key file on the controller (else ssh-agent and ~/.ssh keys are tried)."
    )
    known_hosts: Path = Field(
        Path("~/.ssh/known_hosts"),
        description="known_hosts file the node host keys are verified against "
        "(relative paths are taken from the inventory's folder).",
    )
    connect_timeout: float = Field(10.0, gt=0, le=600, description="Seconds to wait for a TCP/SSH connection.")
    keepalive: int = Field(15, ge=0, le=3600, description="Seconds between SSH keepalives (0: off).")
    retries: int = Field(3, ge=0, le=20, description="Extra connection attempts on transient failures.")

    _refuse_password = model_validator(mode="before")(_no_password)
    _paths = field_validator("identity_file", "known_hosts")(_expand_local_path)


class Node(_Frozen):
    """One machine of the cluster."""

    name: str = Field(pattern=NAME_PATTERN, description="Short unique name (used in container names).")
    host: str = Field(pattern=HOST_PATTERN, description="Address or DNS name SSH connects to.")
    port: int | None = Field(None, ge=1, le=65535, description="sshd port (default: ssh.port).")
    user: str | None = Field(None, pattern=USER_PATTERN, description="Login user (default: ssh.user).")
    identity_file: Path | None = Field(None, description="Private key (default: ssh.identity_file).")
    profile: str = Field(json_schema_extra=_profile_schema)
    gpus: int = Field(0, ge=0, le=64, description="GPUs orch uses on this node (cuda profile: at least 1).")
    cpus: int | None = Field(
        None, ge=1, le=4096, description="CPUs Ray may use on this node (default: all it detects)."
    )
    labels: dict[str, str] = Field(default_factory=dict, description="Free-form labels, shown by orch status.")
    data_dir: str = Field(
        "/var/lib/orch", description="Absolute folder on the node for the model and features (mounted at /data)."
    )
    ray_ip: str | None = Field(
        None,
        description="Address of this node on the cluster network that Ray binds to "
        "(default: host when it is an IP address, else the address of ray.interface).",
    )

    _refuse_password = model_validator(mode="before")(_no_password)
    _paths = field_validator("identity_file")(_expand_local_path)

    _profile = field_validator("profile")(_check_profile)

    @field_validator("labels")
    @classmethod
    def _label_keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not re.match(LABEL_KEY_PATTERN, key):
                raise ValueError(f"label key {key!r} must match {LABEL_KEY_PATTERN}")
        return value

    @field_validator("data_dir")
    @classmethod
    def _absolute_dir(cls, value: str) -> str:
        if not value.startswith("/") or "\n" in value or "\x00" in value:
            raise ValueError("must be an absolute path on the node, e.g. /var/lib/orch")
        stripped = value.rstrip("/")
        if stripped in ("", "/usr", "/etc", "/var", "/home", "/root", "/bin", "/lib", "/boot", "/proc", "/sys", "/dev"):
            raise ValueError(f"{value!r} is a system folder; give orch a folder of its own, e.g. /var/lib/orch")
        return stripped

    @field_validator("ray_ip")
    @classmethod
    def _ip(cls, value: str | None) -> str | None:
        if value is not None:
            ipaddress.ip_address(value)
        return value

    @model_validator(mode="after")
    def _gpus_for_gpu_profiles(self) -> Node:
        if hardware.PROFILES[self.profile].gpus and self.gpus < 1:
            raise ValueError(f"gpus: a {self.profile} node needs gpus >= 1")
        return self


class RayConfig(_Frozen):
    """Where the Ray cluster listens. Ray binds to each node's cluster address, never 0.0.0.0."""

    port: int = Field(6379, ge=1, le=65535, description="GCS port of the head node.")
    interface: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.:@-]{1,15}$",
        description="Network interface on the nodes whose IPv4 address Ray uses when a node's host is a DNS name.",
    )
    object_manager_port: int = Field(8076, ge=1, le=65535)
    node_manager_port: int = Field(8077, ge=1, le=65535)
    min_worker_port: int = Field(10002, ge=1, le=65535)
    max_worker_port: int = Field(10999, ge=1, le=65535)
    # Ray picks these at random unless told: fixed, so the firewall can name them.
    dashboard_agent_grpc_port: int = Field(8078, ge=1, le=65535, description="Each node's dashboard agent gRPC port.")
    runtime_env_agent_port: int = Field(8079, ge=1, le=65535, description="Each node's runtime-env agent port.")
    metrics_export_port: int = Field(8081, ge=1, le=65535, description="Each node's Prometheus metrics port.")
    dashboard_agent_listen_port: int = Field(52365, ge=1, le=65535, description="Each node's dashboard agent HTTP port.")
    dashboard: bool = Field(False, description="Start the Ray dashboard (bound to the head's cluster address).")
    dashboard_port: int = Field(8265, ge=1, le=65535)
    firewall: bool = Field(
        True,
        description="On each node, an iptables chain ORCH-<cluster> lets only 127.0.0.0/8 and the cluster's Ray "
        "addresses reach Ray's ports (Ray binds all interfaces); needs root and iptables on the nodes.",
    )

    def fixed_ports(self) -> dict[str, int]:
        """Ray's single listening ports by key (the dashboard's only when it is on)."""
        keys = ["port", "object_manager_port", "node_manager_port", "dashboard_agent_grpc_port",
                "runtime_env_agent_port", "metrics_export_port", "dashboard_agent_listen_port"]
        if self.dashboard:
            keys.append("dashboard_port")
        return {key: getattr(self, key) for key in keys}

    @model_validator(mode="after")
    def _worker_range(self) -> RayConfig:
        if self.min_worker_port > self.max_worker_port:
            raise ValueError("min_worker_port: must not exceed max_worker_port")
        # Two Ray servers on one port fail at ray start on the node: refuse it here.
        seen: dict[int, str] = {}
        for key, port in self.fixed_ports().items():
            if port in seen:
                raise ValueError(f"{key}: {port} is also {seen[port]}; give each Ray port its own number")
            if self.min_worker_port <= port <= self.max_worker_port:
                raise ValueError(f"{key}: {port} lies in the worker port range {self.min_worker_port}-{self.max_worker_port}")
            seen[port] = key
        return self


class Inventory(_Frozen):
    """A whole cluster: SSH defaults, nodes, the head node and Ray's ports."""

    cluster: str = Field(pattern=NAME_PATTERN, description="Cluster name (labels orch's containers).")
    ssh: SshDefaults = Field(default_factory=SshDefaults)
    head: str = Field(description="Name of the node that runs the Ray head and the benchmark driver.")
    ray: RayConfig = Field(default_factory=RayConfig)
    images: dict[str, str] = Field(
        default_factory=dict,
        description="Image tag per profile (default: orch's own tag for that profile).",
        json_schema_extra=_images_schema,
    )
    nodes: list[Node] = Field(min_length=1)

    @field_validator("images")
    @classmethod
    def _image_profiles(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            _check_profile(key)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Inventory:
        seen_names: set[str] = set()
        seen_hosts: dict[str, str] = {}
        for node in self.nodes:
            if node.name in seen_names:
                raise _NodeError(node.name, "name", f"duplicate node name {node.name!r}")
            seen_names.add(node.name)
            if node.host in seen_hosts:
                raise _NodeError(
                    node.name, "host", f"host {node.host!r} is already used by node {seen_hosts[node.host]!r}"
                )
            seen_hosts[node.host] = node.name
            if node.ray_ip is None and self.ray.interface is None:
                try:
                    ipaddress.ip_address(node.host)
                except ValueError:
                    raise _NodeError(
                        node.name,
                        "ray_ip",
                        f"host {node.host!r} is not an IP address: set ray_ip on the node or ray.interface",
                    ) from None
        if self.head not in seen_names:
            raise _NodeError(None, "head", f"{self.head!r} is not a node (nodes: {', '.join(sorted(seen_names))})")
        return self

    # -- convenience -------------------------------------------------------------

    def node(self, name: str) -> Node:
        """The node called ``name``.

        Raises:
            InputError: no such node.
        """
        for node in self.nodes:
            if node.name == name:
                return node
        raise InputError(f"no node {name!r} in the inventory of cluster {self.cluster!r}")

    @property
    def head_node(self) -> Node:
        """The node that runs the Ray head."""
        return self.node(self.head)

    def container_name(self, node: Node | str) -> str:
        """The name of orch's container on ``node``: ``orch-<cluster>-<node>``."""
        name = node if isinstance(node, str) else node.name
        return f"orch-{self.cluster}-{name}"

    def ssh_user(self, node: Node) -> str:
        return node.user or self.ssh.user

    def ssh_port(self, node: Node) -> int:
        return node.port or self.ssh.port

    def identity_file(self, node: Node) -> Path | None:
        return node.identity_file or self.ssh.identity_file


class _NodeError(ValueError):
    """A cross-node check failed; carries the node and key for the error line."""

    def __init__(self, node: str | None, key: str, message: str) -> None:
        super().__init__(message)
        self.node = node
        self.key = key
        self.message = message


def _describe_location(loc: tuple[Any, ...], raw: Any) -> str:
    """``node 'n2' key 'profile'`` (or ``key 'ray.port'``) from a pydantic error location."""
    parts = [str(p) for p in loc if not str(p).startswith(("function-", "literal[", "constrained-"))]
    if len(loc) >= 2 and loc[0] == "nodes" and isinstance(loc[1], int):
        index = loc[1]
        name = None
        if isinstance(raw, dict) and isinstance(raw.get("nodes"), list) and index < len(raw["nodes"]):
            entry = raw["nodes"][index]
            if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                name = entry["name"]
        who = f"node {name!r}" if name else f"node #{index + 1}"
        rest = ".".join(str(p) for p in loc[2:])
        return f"{who} key {rest!r}" if rest else who
    return f"key {'.'.join(parts)!r}" if parts else "top level"


def _error_line(path: Path, exc: ValidationError, raw: Any) -> str:
    err = exc.errors(include_url=False)[0]
    original = err.get("ctx", {}).get("error")
    if isinstance(original, _NodeError):
        where = f"node {original.node!r} key {original.key!r}" if original.node else f"key {original.key!r}"
        return f"{path}: {where}: {original.message}"
    loc = tuple(err.get("loc", ()))
    message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    if err.get("type") == "extra_forbidden":
        message = "unknown key (check the spelling; see inventory/example.yaml)"
    elif err.get("type") == "missing":
        message = "required key is missing"
    # Model-level checks (passwords, gpus, worker ports) start their message
    # with the key they are about: move it into the location.
    match = re.match(r"^([a-z_]+): (.*)$", message)
    if match:
        loc = loc + (match.group(1),)
        message = match.group(2)
    where = _describe_location(loc, raw)
    more = len(exc.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{path}: {where}: {message}{suffix}"


def parse_inventory(data: Any, *, path: Path, base_dir: Path | None = None) -> Inventory:
    """Validate already-parsed YAML/JSON data as an inventory.

    Args:
        data: the parsed document.
        path: the file it came from (named in error messages).
        base_dir: folder relative controller-side paths are taken from
            (default: ``path``'s folder).

    Raises:
        InputError: one line naming the file, the node and the key.
    """
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping with cluster, head and nodes at the top level")
    try:
        return Inventory.model_validate(data, context={"base_dir": base_dir or path.parent})
    except ValidationError as exc:
        raise InputError(_error_line(path, exc, data)) from None


def load_inventory(path: str | Path) -> Inventory:
    """Read and validate an inventory file; connects to nothing.

    Args:
        path: the YAML (or JSON) inventory file.

    Returns:
        The validated, frozen inventory; controller-side paths (identity
        files, known_hosts) are absolute.

    Raises:
        InputError: the file is missing, is not valid YAML, or does not
            validate (one line naming the file, node and key).
    """
    import yaml

    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"inventory file {path} does not exist (--inventory)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"inventory file {path} cannot be read: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"{path}:{where}: not valid YAML: {problem}") from None
    return parse_inventory(data, path=path.resolve())


def inventory_schema() -> dict[str, Any]:
    """The JSON schema of the inventory file (what ``inventory/schema.json`` holds)."""
    schema = Inventory.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "orch cluster inventory"
    return schema


def schema_text() -> str:
    """``inventory_schema()`` as the exact text of ``inventory/schema.json``."""
    return json.dumps(inventory_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":  # pragma: no cover
    sys.stdout.write(schema_text())
