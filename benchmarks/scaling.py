"""Scaling across sandbox nodes: 1 node against 2 nodes, one CPU each, in one run.

Brings up a 2-node `orch sandbox` with one pinned CPU per node, deploys the
cpu-onnxruntime image and the demo model (timing a cold and a warm deploy and
the MB/s shipped), then runs `orch bench --inventory` in performance mode with
--nodes 1 and --nodes 2 on the same samples, and prints both throughputs and
the parallel efficiency (goal: 2-node >= 1.8x 1-node). Needs root, Docker and
the sandbox's tools; builds the image if missing.

    sudo python benchmarks/scaling.py [--count 240] [--dataset ../shared/data/squad-v1.1-dev-part.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
NAME = "scaling"


def orch(*args: str, timeout: int = 3600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "orchestrator", *args], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"orch {' '.join(args)} failed with exit code {proc.returncode}")
    return proc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=240, help="samples per run (test mode)")
    parser.add_argument("--batch-size", type=int, default=8)
    shared = ROOT.parent / "shared" / "data" / "squad-v1.1-dev-part.json"
    parser.add_argument("--dataset", type=Path, default=shared if shared.exists() else None,
                        help="SQuAD JSON to deploy (default: the real SQuAD part beside the project, else the demo data)")
    args = parser.parse_args()

    from orchestrator.images.base import build_base
    from orchestrator.images.build import build_image, docker_client
    from orchestrator.images.plan import DEFAULT_BASE_IMAGE
    from orchestrator.sandbox import lifecycle

    client = docker_client()
    image = build_image("cpu-onnxruntime", base_image=build_base(DEFAULT_BASE_IMAGE, client=client).tag, client=client).plan.tag
    figures: dict = {"command": "python benchmarks/scaling.py " + " ".join(sys.argv[1:]), "image": image}
    with tempfile.TemporaryDirectory() as tmp, lifecycle.running(2, name=NAME, cpus_per_node=1,
                                                                  inventory_path=Path(tmp) / "sandbox.yaml") as up:
        data = yaml.safe_load(up.plan.inventory_path.read_text())
        data["images"] = {"cpu-onnxruntime": image}
        inventory = Path(tmp) / "inventory.yaml"
        inventory.write_text(yaml.safe_dump(data, sort_keys=False))
        deploy_args = ["deploy", "-i", str(inventory)]
        if args.dataset:
            deploy_args += ["--dataset", str(args.dataset.resolve())]
        for phase in ("cold", "warm"):
            report = Path(tmp) / f"{phase}.json"
            started = time.monotonic()
            orch(*deploy_args, "--json", str(report))
            seconds = time.monotonic() - started
            nodes = json.loads(report.read_text())["nodes"]
            figures[f"deploy_{phase}_seconds"] = round(seconds, 1)
            figures[f"deploy_{phase}_per_node"] = {
                name: {k: r.get(k) for k in ("image", "image_bytes", "image_seconds", "image_mib_per_s", "files_bytes", "files_sent", "files_mib_per_s")}
                for name, r in nodes.items()
            }
        figures["dataset"] = str(args.dataset) if args.dataset else "demo"
        rates = {}
        for nodes in (1, 2):
            out = Path(tmp) / f"run-{nodes}"
            proc = orch("bench", "-i", str(inventory), "--nodes", str(nodes), "--mode", "performance",
                        "--count", str(args.count), "--batch-size", str(args.batch_size), "--json", "--out", str(out))
            result = json.loads(proc.stdout)
            rates[nodes] = result["samples_per_second"]
            figures[f"nodes_{nodes}"] = {
                "samples_per_second": round(result["samples_per_second"], 2),
                "per_node": [{k: n[k] for k in ("name", "samples", "seconds")} for n in result["per_node"]],
            }
        figures["speedup_2_over_1"] = round(rates[2] / rates[1], 2)
        figures["parallel_efficiency"] = round(rates[2] / (2 * rates[1]), 2)
        figures["goal"] = "2-node >= 1.8x 1-node"
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    sys.exit(main())
