"""A fake cluster behind RecordingTransport: nodes with Docker images, containers and Ray."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field

from orchestrator.deploy.facts import ImageFacts
from orchestrator.ssh import RecordingTransport, Result

IMAGE = ImageFacts(
    tag="orch/cpu-onnxruntime:latest", id="sha256:" + "a" * 64, arch="amd64", size=1000,
    labels={"org.orch.python": "3.11", "org.orch.ray": "2.60.0"},
)  # fmt: skip


@dataclass
class FakeNode:
    ip: str
    cpus: int = 2
    arch: str = "x86_64"
    images: dict = field(default_factory=dict)  # tag -> id
    containers: dict = field(default_factory=dict)  # name -> [status, image id, cluster label or None]
    ray: str = ""  # "" | "head" | "worker"
    free: int = 10**12
    gpus: int = 0  # GPUs nvidia-smi lists on the host
    nvidia_runtime: bool = False
    gpus_in_container: int | None = None  # None: as many as the host has
    ray_id: str = ""
    iptables: bool = True  # installed on the node
    chains: dict = field(default_factory=dict)  # user chain -> its rules, each an argv after "-A <chain>"
    input: list = field(default_factory=list)  # INPUT's rules, each an argv after "-A INPUT"


class FakeImages:
    def __init__(self, facts=IMAGE, payload=b"tar" * 1000):
        self._facts = facts
        self.payload = payload
        self.saved = 0

    def facts(self, tag, profile=None):
        assert tag == self._facts.tag
        return self._facts

    def save(self, tag):
        self.saved += 1
        return iter([self.payload[:1000], self.payload[1000:]])


class FakeCluster:
    """Answers the commands deploy, status and teardown send, keeping node state."""

    def __init__(self, nodes: dict[str, FakeNode], head: str, image: ImageFacts = IMAGE):
        self.nodes = nodes
        self.head = head
        self.image = image
        self.transport = RecordingTransport(responder=self.respond)
        self.starts = 0

    def _file(self, host, path):
        return self.transport.remote_files.get((host, path))

    def _iptables(self, node: FakeNode, argv: list[str]) -> Result:  # noqa: C901 - a small iptables
        """iptables -w -S/-N/-F/-X/-A/-C/-I/-D, as far as the firewall uses them."""
        if not node.iptables:
            return Result(127, "", "sh: 1: iptables: not found\n")
        assert argv[:2] == ["iptables", "-w"], argv
        op, chain, rest = argv[2], argv[3], argv[4:]
        rules = node.input if chain == "INPUT" else node.chains.get(chain)
        if op == "-N":
            if rules is not None:
                return Result(1, "", "iptables: Chain already exists.\n")
            node.chains[chain] = []
            return Result(0, "", "")
        if rules is None:
            return Result(1, "", f"iptables: No chain/target/match by that name ({chain}).\n")
        if op == "-S":
            head = ["-P INPUT ACCEPT"] if chain == "INPUT" else [f"-N {chain}"]
            return Result(0, "".join(f"{line}\n" for line in head + [" ".join(["-A", chain, *r]) for r in rules]), "")
        if op == "-F":
            rules.clear()
        elif op == "-X":
            if rules or any(r[-1] == chain for r in node.input):
                return Result(1, "", "iptables: Directory not empty.\n")
            del node.chains[chain]
        elif op == "-A":
            rules.append(rest)
        elif op == "-I":
            rules.insert(int(rest[0]) - 1, rest[1:])
        elif op in ("-C", "-D"):
            if rest not in rules:
                return Result(1, "", "iptables: Bad rule (does a matching rule exist in that chain?).\n")
            if op == "-D":
                rules.remove(rest)
        else:
            raise AssertionError(f"fake iptables: unexpected {argv}")
        return Result(0, "", "")

    def respond(self, host: str, command: str) -> Result:  # noqa: C901 - a small shell
        node = self.nodes[host]
        if command.startswith("iptables "):
            for part in command.split(" && "):
                result = self._iptables(node, shlex.split(part))
                if not result.ok:
                    return result
            return result
        if command == "command -v iptables":
            return Result(0, "/usr/sbin/iptables\n", "") if node.iptables else Result(1, "", "")
        if "; df -P -B1 " in command:  # df of data_dir's nearest existing folder and of Docker's root
            rows = "".join(f"/dev/x 1 1 {node.free} 1% /\n" for _ in range(2))
            return Result(0, "Filesystem 1-blocks Used Available Capacity Mounted on\n" + rows, "")
        argv = shlex.split(command.split(" 2>/dev/null")[0].split(" >> ")[0].split(" && ")[0])
        if command == "uname -m":
            return Result(0, node.arch + "\n", "")
        if argv[:2] == ["docker", "version"]:
            return Result(0, "24.0.7\n", "")
        if argv[:2] == ["docker", "info"] and "Runtimes" in command:
            runtimes = {"runc": {}, **({"nvidia": {"path": "nvidia-container-runtime"}} if node.nvidia_runtime else {})}
            return Result(0, json.dumps(runtimes) + "\n", "")
        if argv[:2] == ["docker", "info"]:
            return Result(0, "/var/lib/docker\n", "")
        if argv[0] == "nvidia-smi":
            if not node.gpus:
                return Result(127, "", "sh: nvidia-smi: not found\n")
            return Result(0, "".join("NVIDIA H100 80GB HBM3, 81559\n" for _ in range(node.gpus)), "")
        if command.startswith("command -v nvidia-container-runtime-hook"):
            return Result(0, "", "")
        if argv[:2] == ["docker", "exec"] and argv[3:5] == ["nvidia-smi", "-L"]:
            n = node.gpus if node.gpus_in_container is None else node.gpus_in_container
            return Result(0, "".join(f"GPU {i}: NVIDIA H100 80GB HBM3 (UUID: GPU-{i})\n" for i in range(n)), "")
        if argv[:3] == ["docker", "image", "inspect"]:
            tag = argv[-1]
            return Result(0, node.images[tag] + "\n", "") if tag in node.images else Result(1, "", f"Error: No such image: {tag}\n")
        if command == "docker load":
            node.images[self.image.tag] = self.image.id
            return Result(0, f"Loaded image: {self.image.tag}\n", "")
        if argv[:3] == ["docker", "image", "rm"]:
            node.images.pop(argv[3], None)
            return Result(0, "", "")
        if argv[0] == "cat":
            data = self._file(host, argv[1])
            return Result(0, data.decode(), "") if data is not None else Result(1, "", "cat: No such file\n")
        if argv[0] == "find":
            paths = argv[1 : argv.index("-maxdepth")]
            lines = "".join(f"{len(self._file(host, p))} {p}\n" for p in paths if self._file(host, p) is not None)
            return Result(0, lines, "")
        if argv[:2] == ["docker", "inspect"]:
            state = node.containers.get(argv[-1])
            return Result(0, f"{state[0]} {state[1]}\n", "") if state else Result(1, "", "Error: No such container\n")
        if argv[:3] == ["docker", "rm", "-f"]:
            for name in argv[3:]:
                node.containers.pop(name, None)
                node.ray = ""
            return Result(0, "", "")
        if argv[:2] == ["docker", "run"]:
            name = argv[argv.index("--name") + 1]
            label = argv[argv.index("--label") + 1].split("=", 1)[1]
            node.containers[name] = ["running", node.images[argv[-2]], label]
            return Result(0, "f00d\n", "")
        if argv[:2] == ["docker", "ps"]:
            wanted = argv[argv.index("--filter") + 1].split("=", 2)[2]
            return Result(0, "".join(f"{n}\n" for n, c in node.containers.items() if c[2] == wanted), "")
        if argv[:2] == ["docker", "exec"] and argv[3:5] == ["ray", "start"]:
            node.ray = "head" if "--head" in argv else "worker"
            self.starts += 1
            node.ray_id = f"{host}-{self.starts}"
            return Result(0, "Ray runtime started.\n", "")
        if argv[:2] == ["docker", "exec"] and argv[3:5] == ["ray", "stop"]:
            node.ray = ""
            return Result(0, "", "")
        if argv[:2] == ["docker", "exec"] and argv[3:5] == ["python", "-c"]:
            head = self.nodes[self.head]
            if head.ray != "head":
                return Result(0, json.dumps({"error": "no Ray head"}) + "\n", "")
            alive = [
                {"ip": n.ip, "alive": True, "node_id": n.ray_id,
                 "resources": {"CPU": float(n.cpus), "memory": 1e9, **({"GPU": float(n.gpus)} if n.gpus else {})}}
                for name, n in self.nodes.items()
                if n.ray
            ]
            return Result(0, json.dumps({"nodes": alive}) + "\n", "")
        if argv[0] == "printf":
            target = shlex.split(command.split(" >> ")[1])[0]
            line = (argv[1].replace("\\n", "\n") % tuple(argv[2:])).encode()
            self.transport.remote_files[(host, target)] = (self._file(host, target) or b"") + line
            return Result(0, "", "")
        if argv[0] in ("mkdir", "test", "rm", "true"):
            if argv[0] == "test":
                return Result(0 if self._file(host, argv[-1]) is not None else 1, "", "")
            return Result(0, "", "")
        raise AssertionError(f"fake cluster: unexpected command on {host}: {command}")


def redact(commands: list[str]) -> list[str]:
    """Commands with the long inline Python script shortened (it is checked in test_deploy_plan)."""
    return [re.sub(r"python -c '.*?' ", "python -c SCRIPT ", c, flags=re.S) for c in commands]
