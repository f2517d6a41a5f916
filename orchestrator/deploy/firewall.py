"""Each node's Ray firewall: run the plan's firewall steps, and remove orch's rules at teardown.

The commands come from ``orchestrator.deploy.commands``; what to change is
decided by ``orchestrator.deploy.plan`` from the rules ``facts.read_firewall``
read, so a deploy with nothing changed runs no iptables command that writes.
"""

from __future__ import annotations

from orchestrator.deploy import commands as cmd
from orchestrator.deploy.facts import ROOT_HINT, read_firewall
from orchestrator.deploy.plan import ApplyFirewall, RemoveFirewall
from orchestrator.inventory import Inventory, Node
from orchestrator.ssh.transport import Transport, check


def _iptables(transport: Transport, node: Node, command: str, what: str, hint: str | None = None) -> None:
    check(transport.run(node.name, command, timeout=60), host=node.name, command=command, what=what, hint=hint)


def apply_firewall(transport: Transport, inventory: Inventory, node: Node, step: ApplyFirewall) -> None:
    """Make ``node``'s INPUT send TCP for Ray's ports to orch's chain, which admits only ``step.addresses``.

    Raises:
        RemoteError: an iptables command failed on the node.
    """
    if step.fill:
        _iptables(transport, node, cmd.firewall_fill_command(inventory, list(step.addresses), exists=step.chain_exists),
                  f"setting up iptables chain {step.chain}", ROOT_HINT)
    # Stale jumps (Ray's ports changed since) go first, then the wanted one.
    for spec in step.delete_jumps:
        _iptables(transport, node, cmd.firewall_jump_delete_command(list(spec)), "removing an old jump")
    if step.insert_jump:
        _iptables(transport, node, cmd.firewall_jump_insert_command(inventory), "adding the INPUT jump to orch's chain",
                  ROOT_HINT)


def remove_firewall(transport: Transport, inventory: Inventory, node: Node, step: RemoveFirewall) -> None:
    """Remove orch's jumps from INPUT, then orch's chain; nothing else.

    Raises:
        RemoteError: an iptables command failed on the node.
    """
    for spec in step.delete_jumps:
        _iptables(transport, node, cmd.firewall_jump_delete_command(list(spec)), "removing orch's jump")
    if step.remove_chain:
        _iptables(transport, node, cmd.firewall_remove_chain_command(inventory), f"removing iptables chain {step.chain}")


def teardown_firewall(transport: Transport, inventory: Inventory, node: Node, *, strict: bool) -> bool:
    """Read orch's rules on ``node`` and remove them (teardown).

    Args:
        strict: a failed read of INPUT is an error (the firewall is on); when
            False (maybe no root or no iptables) it means nothing to remove.

    Returns:
        True when something was removed.
    """
    facts = read_firewall(transport, inventory, node, strict=strict, check_jump=False)
    if not facts.jumps and facts.chain is None:
        return False
    remove_firewall(transport, inventory, node,
                    RemoveFirewall(cmd.firewall_chain(inventory), facts.jumps, remove_chain=facts.chain is not None))
    return True
