"""The exact remote commands of deploy, status and teardown, and parsers for their output.

Nothing here connects anywhere: each function maps inventory values (already
validated) and image facts to a command string (or, for what runs inside
orch's container, an argv that ``orchestrator.deploy.container.Container``
wraps in ``docker exec``), or a command's output to facts.
"""

from __future__ import annotations

import ipaddress
import json
import shlex
from typing import Any

from orchestrator import hardware
from orchestrator.errors import InputError
from orchestrator.fileio import sha256_text
from orchestrator.inventory import Inventory, Node
from orchestrator.ssh.transport import remote_cmd

# Everything orch creates on a node carries this label (teardown filters on it).
CLUSTER_LABEL = "org.orch.cluster"
NODE_LABEL = "org.orch.node"
# Inside orch's container: the node's data_dir, and orch's cache within it.
CONTAINER_DATA = "/data"
CONTAINER_CACHE = "/data/cache"
# Bookkeeping inside data_dir: what orch shipped there (and so may remove).
STATE_DIR = ".orch"
MANIFEST = ".orch/manifest.json"
IMAGES_LOADED = ".orch/images"
DEPLOY_JSON = "deploy.json"
# Folders orch owns inside data_dir (teardown --data removes exactly these).
OWNED = ("cache", "files", "runs", DEPLOY_JSON, STATE_DIR)

# uname -m -> Docker's architecture name.
MACHINE_TO_DOCKER_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def data_path(node: Node, relative: str) -> str:
    """An absolute path inside the node's data_dir."""
    return f"{node.data_dir}/{relative}" if relative else node.data_dir


# -- preflight -------------------------------------------------------------------


def preflight_commands(inventory: Inventory, node: Node) -> dict[str, str]:
    """The read-only checks run on a node before anything is planned, by name.

    ``docker_root`` is needed to check free disk where images land; ``df`` is
    planned separately (``df_command``) once it is known.
    """
    commands = {
        "uname": "uname -m",
        "docker": "docker version --format '{{.Server.Version}}'",
        "docker_root": "docker info --format '{{.DockerRootDir}}'",
    }
    if node.ray_ip is None and inventory.ray.interface is not None and not _is_ip(node.host):
        commands["ray_ip"] = remote_cmd("ip", "-4", "-o", "addr", "show", "dev", inventory.ray.interface)
    if inventory.ray.firewall:
        commands["iptables"] = "command -v iptables"
    if hardware.PROFILES[node.profile].gpus:
        commands["nvidia_smi"] = "nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits"
        commands["runtimes"] = "docker info --format '{{json .Runtimes}}'"
        # `docker run --gpus` works through the toolkit's hook even when no
        # "nvidia" runtime is registered (CDI setups): accept either.
        commands["gpu_hook"] = "command -v nvidia-container-runtime-hook nvidia-container-toolkit || true"
    return commands


def df_command(node: Node, docker_root: str) -> str:
    """Free bytes on the data_dir's and Docker root's file systems.

    data_dir may not exist yet (it is made when files are copied, never while
    facts are read): ``df`` then looks at its nearest existing parent.
    """
    nearest = f"d={remote_cmd(node.data_dir)}; while [ ! -d \"$d\" ]; do d=$(dirname \"$d\"); done"
    return f"{nearest}; {remote_cmd('df', '-P', '-B1')} \"$d\" {remote_cmd(docker_root)}"


def mkdir_state_command(node: Node) -> str:
    """Creates data_dir and orch's bookkeeping folder in it."""
    return remote_cmd("mkdir", "-p", data_path(node, STATE_DIR))


def parse_df(stdout: str) -> list[int]:
    """Available bytes per path from ``df -P -B1`` output, in argument order."""
    rows = [line.split() for line in stdout.strip().splitlines()[1:] if line.strip()]
    return [int(row[3]) for row in rows if len(row) >= 6 and row[3].isdigit()]


def parse_ip_addr(stdout: str) -> str | None:
    """The first IPv4 address in ``ip -4 -o addr show dev X`` output."""
    for line in stdout.splitlines():
        parts = line.split()
        if "inet" in parts:
            return parts[parts.index("inet") + 1].split("/")[0]
    return None


def parse_gpus(stdout: str) -> list[dict[str, Any]]:
    """GPUs from ``nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits``."""
    gpus = []
    for line in stdout.strip().splitlines():
        name, _, mem = line.rpartition(",")
        if name:
            gpus.append({"model": name.strip(), "memory_bytes": int(float(mem.strip()) * 1024 * 1024)})
    return gpus


def has_nvidia_runtime(stdout: str) -> bool:
    """True when ``docker info --format '{{json .Runtimes}}'`` lists the nvidia runtime."""
    try:
        runtimes = json.loads(stdout or "{}")
    except json.JSONDecodeError:
        return False
    return any("nvidia" in name for name in runtimes)


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


# Run in orch's container: lists the GPUs it sees (one ``GPU n: ...`` line each).
GPUS_IN_CONTAINER = ("nvidia-smi", "-L")


def count_gpu_lines(stdout: str) -> int:
    return sum(1 for line in stdout.splitlines() if line.startswith("GPU "))


def ray_ip(node: Node, looked_up: str | None = None) -> str | None:
    """The address Ray binds to on ``node``: ray_ip, else host when it is an IP, else the interface's."""
    if node.ray_ip:
        return node.ray_ip
    if _is_ip(node.host):
        return node.host
    return looked_up


# -- image -----------------------------------------------------------------------


def image_id_command(tag: str) -> str:
    """Prints the id of ``tag`` on the node (exit 1 when absent)."""
    return remote_cmd("docker", "image", "inspect", "--format", "{{.Id}}", tag)


def image_load_command() -> str:
    """Reads a ``docker save`` tar on stdin."""
    return "docker load"


def record_image_command(node: Node, image_id: str, tag: str) -> str:
    """Remembers that orch loaded this image, so ``teardown --images`` may remove it."""
    line = remote_cmd("printf", "%s %s\\n", image_id, tag)
    return f"{line} >> {remote_cmd(data_path(node, IMAGES_LOADED))}"


# -- container -------------------------------------------------------------------


def parse_container(result_ok: bool, stdout: str) -> tuple[str, str] | None:
    """(status, image id) of a container (``Container.inspect_command``), or None when it does not exist."""
    if not result_ok:
        return None
    parts = stdout.strip().split()
    return (parts[0], parts[1]) if len(parts) >= 2 else None


# -- ray -------------------------------------------------------------------------


def _ray_common(inventory: Inventory, node: Node, ip: str) -> list[str]:
    ray = inventory.ray
    argv = [
        f"--node-ip-address={ip}",
        f"--object-manager-port={ray.object_manager_port}",
        f"--node-manager-port={ray.node_manager_port}",
        f"--min-worker-port={ray.min_worker_port}",
        f"--max-worker-port={ray.max_worker_port}",
        # Left out, Ray 2.60 picks these at random; fixed, the firewall can name them.
        f"--dashboard-agent-grpc-port={ray.dashboard_agent_grpc_port}",
        f"--dashboard-agent-listen-port={ray.dashboard_agent_listen_port}",
        f"--runtime-env-agent-port={ray.runtime_env_agent_port}",
        f"--metrics-export-port={ray.metrics_export_port}",
        f"--num-gpus={node.gpus}",
        "--disable-usage-stats",
    ]
    if node.cpus is not None:
        argv.append(f"--num-cpus={node.cpus}")
    return argv


def ray_head_argv(inventory: Inventory, node: Node, ip: str) -> list[str]:
    """``ray start --head`` (run in the head node's container), bound to its cluster address."""
    ray = inventory.ray
    argv = ["ray", "start", "--head", f"--port={ray.port}"]
    argv += _ray_common(inventory, node, ip)
    if ray.dashboard:
        argv += ["--include-dashboard=true", f"--dashboard-host={ip}", f"--dashboard-port={ray.dashboard_port}"]
    else:
        argv += ["--include-dashboard=false"]
    return argv


def ray_worker_argv(inventory: Inventory, node: Node, ip: str, head_ip: str) -> list[str]:
    """``ray start --address=<head>`` (run in a worker node's container)."""
    return ["ray", "start", f"--address={head_ip}:{inventory.ray.port}", *_ray_common(inventory, node, ip)]


# Run in orch's container: stops a raylet left from an earlier cluster.
RAY_STOP = ("ray", "stop", "--force")


# Runs inside the head container: prints one JSON list of Ray's nodes. A plain
# TCP probe first, so a head without Ray answers at once instead of after
# ray.init's connection retries.
RAY_NODES_SCRIPT = """
import json, socket, sys, os
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
ip, port = sys.argv[1], int(sys.argv[2])
try:
    socket.create_connection((ip, port), timeout=3).close()
except OSError as exc:
    print(json.dumps({"error": "no Ray head at %s:%d (%s)" % (ip, port, exc)}))
    sys.exit(0)
import logging
import ray
ray.init(address="%s:%d" % (ip, port), _node_ip_address=ip, logging_level=logging.ERROR,
         log_to_driver=False, configure_logging=False)
nodes = [{"ip": n["NodeManagerAddress"], "alive": bool(n["Alive"]), "node_id": n["NodeID"],
          "resources": n.get("Resources", {})} for n in ray.nodes()]
print(json.dumps({"nodes": nodes}))
"""


def ray_nodes_argv(inventory: Inventory, head_ip: str) -> list[str]:
    """Lists Ray's nodes as JSON (run in the head container)."""
    return ["python", "-c", RAY_NODES_SCRIPT, head_ip, str(inventory.ray.port)]


def parse_ray_nodes(stdout: str) -> tuple[dict[str, dict[str, Any]], str | None]:
    """(alive nodes by IP -> {node_id, resources}, error or None) from the script's output."""
    line = next((ln for ln in reversed(stdout.strip().splitlines()) if ln.startswith("{")), "")
    try:
        data = json.loads(line)
    except json.JSONDecodeError:
        return {}, f"unexpected output: {stdout.strip()[-200:]!r}"
    if "error" in data:
        return {}, str(data["error"])
    alive = {n["ip"]: n for n in data.get("nodes", []) if n.get("alive")}
    return alive, None


def ray_resources_ok(node: Node, resources: dict[str, float]) -> bool:
    """True when a Ray node offers what the inventory says it should."""
    if node.cpus is not None and int(resources.get("CPU", 0)) != node.cpus:
        return False
    if int(resources.get("GPU", 0)) != node.gpus:
        return False
    return True


# -- firewall --------------------------------------------------------------------
#
# Ray 2.60 binds its servers on all interfaces whatever --node-ip-address says,
# so each node's host network namespace (where the host-network container's
# Ray listens) gets a chain that lets only loopback and the cluster's Ray
# addresses reach Ray's ports. INPUT jumps to it for TCP to those ports only.

IPTABLES = ("iptables", "-w")  # -w: wait for the xtables lock instead of failing
NOT_FOUND = 127  # a shell's "command not found": no iptables on the node, so no orch rules either
CHAIN_MAX = 28  # iptables' limit on a chain name
LOOPBACK = "127.0.0.0/8"


def firewall_chain(inventory: Inventory) -> str:
    """``ORCH-<cluster>``; a name past iptables' 28 characters is cut and given a hash suffix."""
    name = f"ORCH-{inventory.cluster}"
    if len(name) <= CHAIN_MAX:
        return name
    digest = sha256_text(inventory.cluster)[:8]
    return f"{name[: CHAIN_MAX - 9]}-{digest}"


def firewall_ports(inventory: Inventory) -> str:
    """Ray's TCP ports as one ``multiport --dports`` list: the fixed ones, then the worker range."""
    ray = inventory.ray
    ports = sorted(set(ray.fixed_ports().values()))
    return ",".join([*map(str, ports), f"{ray.min_worker_port}:{ray.max_worker_port}"])


def _jump(inventory: Inventory) -> list[str]:
    return ["-p", "tcp", "-m", "multiport", "--dports", firewall_ports(inventory), "-j", firewall_chain(inventory)]


def firewall_sources(addresses: list[str]) -> list[str]:
    """The sources allowed in: loopback, then each distinct cluster address as a /32.

    Raises:
        InputError: an address is not IPv4 (the chain is an iptables one).
    """
    sources = [LOOPBACK]
    for address in addresses:
        ip = ipaddress.ip_address(address)
        if ip.version != 4:
            raise InputError(
                f"ray.firewall supports IPv4 cluster addresses only, {address} is not; set ray.firewall: false"
            )
        if f"{ip}/32" not in sources:
            sources.append(f"{ip}/32")
    return sources


def firewall_chain_rules(inventory: Inventory, addresses: list[str]) -> list[str]:
    """The chain exactly as ``iptables -S <chain>`` prints it when it is as orch wants it."""
    chain = firewall_chain(inventory)
    rules = [f"-N {chain}"]
    rules += [f"-A {chain} -s {source} -j ACCEPT" for source in firewall_sources(addresses)]
    rules.append(f"-A {chain} -j DROP")
    return rules


def parse_rules(stdout: str) -> list[str]:
    """``iptables -S`` output as a list of its non-empty lines."""
    return [line.strip() for line in stdout.splitlines() if line.strip()]


def firewall_read_chain_command(inventory: Inventory) -> str:
    """Prints orch's chain in ``-S`` form (exit 1 when it does not exist)."""
    return remote_cmd(*IPTABLES, "-S", firewall_chain(inventory))


def firewall_fill_command(inventory: Inventory, addresses: list[str], *, exists: bool) -> str:
    """Creates orch's chain (or empties it when it ``exists``) and appends its rules, in one command."""
    chain = firewall_chain(inventory)
    steps = [remote_cmd(*IPTABLES, "-F" if exists else "-N", chain)]
    steps += [remote_cmd(*IPTABLES, *rule.split()) for rule in firewall_chain_rules(inventory, addresses)[1:]]
    return " && ".join(steps)


def firewall_read_input_command() -> str:
    """Prints the INPUT chain in ``-S`` form (to find jumps to orch's chain)."""
    return remote_cmd(*IPTABLES, "-S", "INPUT")


def parse_jumps(inventory: Inventory, stdout: str) -> list[list[str]]:
    """The rule specs (after ``-A INPUT``) of every INPUT rule jumping to orch's chain."""
    chain = firewall_chain(inventory)
    jumps = []
    for line in parse_rules(stdout):
        argv = shlex.split(line)
        if argv[:2] == ["-A", "INPUT"] and argv[-2:] == ["-j", chain]:
            jumps.append(argv[2:])
    return jumps


def firewall_jump_check_command(inventory: Inventory) -> str:
    """Exit 0 when INPUT already jumps to orch's chain for Ray's current ports."""
    return remote_cmd(*IPTABLES, "-C", "INPUT", *_jump(inventory))


def firewall_jump_insert_command(inventory: Inventory) -> str:
    """Puts the jump first in INPUT, so no earlier ACCEPT lets the world in."""
    return remote_cmd(*IPTABLES, "-I", "INPUT", "1", *_jump(inventory))


def firewall_jump_delete_command(spec: list[str]) -> str:
    """Deletes one INPUT rule given as ``parse_jumps`` returns it."""
    return remote_cmd(*IPTABLES, "-D", "INPUT", *spec)


def firewall_remove_chain_command(inventory: Inventory) -> str:
    """Empties and deletes orch's chain (its jumps must be gone first)."""
    chain = firewall_chain(inventory)
    return f"{remote_cmd(*IPTABLES, '-F', chain)} && {remote_cmd(*IPTABLES, '-X', chain)}"


# -- status and teardown ---------------------------------------------------------


def list_containers_command(inventory: Inventory) -> str:
    """Names of every container orch created for this cluster on the node (running or not)."""
    return remote_cmd(
        "docker", "ps", "-a", "--filter", f"label={CLUSTER_LABEL}={inventory.cluster}", "--format", "{{.Names}}"
    )


def remove_containers_command(names: list[str]) -> str:
    return remote_cmd("docker", "rm", "-f", *names)


def loaded_images_command(node: Node) -> str:
    """Prints ``<id> <tag>`` lines of the images orch loaded on the node."""
    return remote_cmd("cat", data_path(node, IMAGES_LOADED))


def parse_loaded_images(stdout: str) -> list[tuple[str, str]]:
    pairs = []
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and (parts[0], parts[1]) not in pairs:
            pairs.append((parts[0], parts[1]))
    return pairs


def remove_image_command(tag: str) -> str:
    return remote_cmd("docker", "image", "rm", tag)


def manifest_exists_command(node: Node) -> str:
    return remote_cmd("test", "-f", data_path(node, MANIFEST))


def remove_data_command(node: Node) -> str:
    """Removes only the entries orch owns in data_dir, then data_dir itself if that left it empty."""
    paths = [data_path(node, name) for name in OWNED]
    return f"{remote_cmd('rm', '-rf', '--', *paths)} && {remote_cmd('rmdir', '--ignore-fail-on-non-empty', node.data_dir)}"
