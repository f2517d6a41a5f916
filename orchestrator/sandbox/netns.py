"""Create and remove a sandbox's bridge, network namespaces, veth pairs and FORWARD rules.

Every function here is idempotent on removal: it checks what exists and
removes only that, so ``down`` can run any number of times.
"""

from __future__ import annotations

import ipaddress
import json
import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path

from orchestrator.errors import OrchError
from orchestrator.sandbox.plan import SandboxPlan, cgroup_name_re, firewall_comment, firewall_rules, network_up_commands

NETNS_DIR = Path("/run/netns")
SYS_NET = Path("/sys/class/net")


def run(command: Sequence[str], *, what: str, timeout: float = 60) -> str:
    """Run a host command, returning its stdout.

    Raises:
        OrchError: it failed; the line names ``what`` was being done, the
            command and the last line of its stderr.
    """
    try:
        proc = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise OrchError(f"sandbox: {what}: {command[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise OrchError(f"sandbox: {what}: `{shlex.join(command)}` did not finish in {timeout:.0f} s") from None
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no stderr)"])[-1]
        raise OrchError(f"sandbox: {what}: `{shlex.join(command)}` failed (exit {proc.returncode}): {tail}")
    return proc.stdout


def used_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Every network this machine routes to or has an address in (default routes left out)."""
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for family in ("-4", "-6"):
        try:
            out = run(["ip", "-j", family, "route", "show", "table", "all"], what="reading routes")
        except OrchError:
            if family == "-6":
                continue  # IPv6 disabled on this machine: nothing to clash with
            raise
        routes = json.loads(out or "[]")
        for route in routes:
            dst = route.get("dst", "")
            if dst in ("", "default") or route.get("type") in ("broadcast", "multicast"):
                continue
            try:
                nets.append(ipaddress.ip_network(dst, strict=False))
            except ValueError:
                continue
    for link in json.loads(run(["ip", "-j", "addr", "show"], what="reading addresses") or "[]"):
        for info in link.get("addr_info", []):
            try:
                nets.append(ipaddress.ip_network(f"{info['local']}/{info['prefixlen']}", strict=False))
            except (KeyError, ValueError):
                continue
    return nets


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def link_exists(name: str) -> bool:
    return (SYS_NET / name).exists()


def sandbox_netns(name: str) -> list[str]:
    """The network namespaces of sandbox ``name`` that exist now (found by name, not by state)."""
    if not NETNS_DIR.is_dir():
        return []
    pattern = cgroup_name_re(name)
    return sorted(p.name for p in NETNS_DIR.iterdir() if pattern.match(p.name))


def netns_pids(netns: str) -> list[int]:
    """Pids of every process in network namespace ``netns`` (none when it does not exist)."""
    if not netns_exists(netns):
        return []
    out = run(["ip", "netns", "pids", netns], what=f"listing processes of {netns}")
    return [int(word) for word in out.split()]


def netns_owner(netns: str) -> Path | None:
    """The sandbox folder whose node runs in ``netns`` (from its init.sh path), or None.

    Sandbox names are machine-wide (netns, bridge, cgroups) while sandbox
    folders live in each user's orch cache: this tells whose a netns is.
    """
    for pid in netns_pids(netns):
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        for arg in args:
            if arg.endswith(b"/init.sh"):
                return Path(arg.decode(errors="replace")).parent.parent
    return None


def create_network(plan: SandboxPlan) -> None:
    """Create the bridge, the namespaces and the veth pairs (``plan.network_up_commands``)."""
    for command in network_up_commands(plan):
        run(command, what="creating the node network")


def delete_network(plan: SandboxPlan | None, name: str, bridge: str | None) -> list[str]:
    """Delete the sandbox's namespaces, veths and bridge, whichever exist.

    Namespaces are found both from the plan and by name, so a sandbox whose
    state file is gone is still cleaned. Call after the node processes are
    gone (a live process keeps its namespace, and so its veth, alive).

    Returns:
        What was removed, for the report.
    """
    removed: list[str] = []
    names = set(sandbox_netns(name))
    veths: list[str] = []
    if plan is not None:
        names |= {node.netns for node in plan.nodes}
        veths = [node.veth for node in plan.nodes]
    for netns in sorted(names):
        if netns_exists(netns):
            run(["ip", "netns", "delete", netns], what=f"deleting namespace {netns}")
            removed.append(f"netns {netns}")
    for veth in veths:
        if link_exists(veth):
            try:
                run(["ip", "link", "delete", veth], what=f"deleting {veth}")
            except OrchError:
                if link_exists(veth):
                    raise
                # the kernel removed it with its namespace in the meantime
            removed.append(f"veth {veth}")
    if bridge and link_exists(bridge):
        run(["ip", "link", "delete", bridge], what=f"deleting bridge {bridge}")
        removed.append(f"bridge {bridge}")
    return removed


def _iptables(args: Sequence[str], *, what: str) -> str:
    # -w: wait for the xtables lock rather than fail when dockerd holds it
    return run(["iptables", "-w", *args], what=what)


def add_firewall(plan: SandboxPlan) -> None:
    """Insert the sandbox's FORWARD rules at the top of the chain."""
    for rule in firewall_rules(plan):
        chain, *match = rule
        _iptables(["-I", chain, "1", *match], what="adding the FORWARD rules of the bridge")


def sandbox_rules(name: str) -> list[list[str]]:
    """The FORWARD rules carrying sandbox ``name``'s comment, as ``iptables -S`` prints them."""
    marker = firewall_comment(name)
    rules = []
    for line in _iptables(["-S", "FORWARD"], what="listing FORWARD rules").splitlines():
        words = shlex.split(line)
        if words[:1] == ["-A"] and marker in words:
            index = words.index(marker)
            if index > 0 and words[index - 1] == "--comment":
                rules.append(words[1:])
    return rules


def delete_firewall(name: str) -> list[str]:
    """Delete every FORWARD rule marked with the sandbox's comment (found by comment, not by state)."""
    removed = []
    for rule in sandbox_rules(name):
        _iptables(["-D", *rule], what="deleting the FORWARD rules of the bridge")
        removed.append("iptables " + " ".join(rule))
    return removed
