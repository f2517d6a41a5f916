"""`orch`, with test faults injected: ``python -m tests.helpers.orch_with_faults FAULTS_JSON ARGS...``.

The core never reads faults from the environment; tests pass them to
``orchestrator.cli.main`` from here (kill a worker after N chunks, slow every
chunk down so a run lasts long enough to interrupt or to kill a node).
"""

from __future__ import annotations

import json
import sys

from orchestrator.cli import main
from orchestrator.records import Faults

if __name__ == "__main__":
    faults = Faults(**json.loads(sys.argv[1]))
    sys.argv = ["orch", *sys.argv[2:]]
    sys.exit(main(faults=faults, handle_signals=True))
