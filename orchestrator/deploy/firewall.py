"""Each node's Ray firewall: apply it (deploy), remove it (teardown, or deploy with it off).

The commands come from ``orchestrator.deploy.plan``; this module runs them
through a transport, reading the node's rules first so that a deploy with
nothing changed changes nothing.
"""

from __future__ import annotations

from orchestrator.deploy import plan
from orchestrator.inventory import Inventory, Node
from orchestrator.ssh.transport import Transport, check

# A shell's "command not found": no iptables on the node, so no orch rules either.
NOT_FOUND = 127
ROOT_HINT = "the firewall needs root on the node (ssh user root) and iptables; or set ray.firewall: false"


def ensure_firewall(transport: Transport, inventory: Inventory, node: Node, addresses: list[str]) -> str:
    """Make ``node``'s INPUT send TCP for Ray's ports to orch's chain, which admits only ``addresses``.

    Args:
        transport: how to reach the node.
        inventory: the validated inventory (cluster name, Ray's ports).
        node: the node to configure.
        addresses: every cluster node's Ray address (IPv4), the node's own included.

    Returns:
        ``"kept"`` when chain and jump were already as wanted, else ``"applied"``.

    Raises:
        InputError: an address is not IPv4.
        RemoteError: an iptables command failed on the node.
    """
    host = node.name
    wanted = plan.firewall_chain_rules(inventory, addresses)
    changed = False
    got = transport.run(host, plan.firewall_read_chain_command(inventory), timeout=60)
    if not got.ok or plan.parse_rules(got.stdout) != wanted:
        command = plan.firewall_fill_command(inventory, addresses, exists=got.ok)
        check(transport.run(host, command, timeout=60), host=host, command=command,
              what=f"setting up iptables chain {plan.firewall_chain(inventory)}", hint=ROOT_HINT)
        changed = True
    command = plan.firewall_read_input_command()
    listed = check(transport.run(host, command, timeout=60), host=host, command=command,
                   what="listing iptables INPUT", hint=ROOT_HINT)
    jumps = plan.parse_jumps(inventory, listed.stdout)
    # -C, not a text match of -S output, decides whether the one jump is the wanted one.
    current = len(jumps) == 1 and transport.run(host, plan.firewall_jump_check_command(inventory), timeout=60).ok
    if not current:
        # Stale jumps (Ray's ports changed since) go first, then the wanted one.
        for spec in jumps:
            command = plan.firewall_jump_delete_command(spec)
            check(transport.run(host, command, timeout=60), host=host, command=command, what="removing an old jump")
        command = plan.firewall_jump_insert_command(inventory)
        check(transport.run(host, command, timeout=60), host=host, command=command,
              what="adding the INPUT jump to orch's chain", hint=ROOT_HINT)
        changed = True
    return "applied" if changed else "kept"


def remove_firewall(transport: Transport, inventory: Inventory, node: Node, *, strict: bool) -> bool:
    """Remove orch's jumps from INPUT and orch's chain on ``node``; nothing else.

    Args:
        transport: how to reach the node.
        inventory: the validated inventory.
        node: the node to clean.
        strict: raise when the rules cannot be read (firewall on); when False
            (firewall off, maybe no root or no iptables) a failed read means
            there is nothing orch can or did set up.

    Returns:
        True when something was removed.

    Raises:
        RemoteError: an iptables command failed (reading only when ``strict``).
    """
    host = node.name
    command = plan.firewall_read_input_command()
    listed = transport.run(host, command, timeout=60)
    if not listed.ok:
        if strict and listed.returncode != NOT_FOUND:
            check(listed, host=host, command=command, what="listing iptables INPUT", hint=ROOT_HINT)
        return False
    removed = False
    for spec in plan.parse_jumps(inventory, listed.stdout):
        command = plan.firewall_jump_delete_command(spec)
        check(transport.run(host, command, timeout=60), host=host, command=command, what="removing orch's jump")
        removed = True
    if transport.run(host, plan.firewall_read_chain_command(inventory), timeout=60).ok:
        command = plan.firewall_remove_chain_command(inventory)
        check(transport.run(host, command, timeout=60), host=host, command=command,
              what=f"removing iptables chain {plan.firewall_chain(inventory)}")
        removed = True
    return removed
