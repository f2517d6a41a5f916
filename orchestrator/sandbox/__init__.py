"""``orch sandbox``: a real multi-node cluster on one machine.

Each node is a network namespace on a private bridge with its own sshd,
its own Docker engine and, when asked, its own CPUs. ``plan`` computes
every name, address and command (pure, unit-tested); ``netns`` and
``daemons`` execute them; ``state`` records what was created so that
``down`` removes exactly that; ``lifecycle`` ties them together.
"""
