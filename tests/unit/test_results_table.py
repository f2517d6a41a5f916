"""The table printed after a bench says which backend each node ran."""

from __future__ import annotations

from rich.console import Console

from orchestrator.bench.view import results_table


def _render(summary) -> str:
    console = Console(width=200, record=True)
    console.print(results_table(summary))
    return console.export_text()


def test_mixed_run_shows_each_nodes_backend_and_figures():
    summary = {
        "mode": "performance", "execution": "test", "samples_per_second": 26.2, "samples_per_second_source": "loadgen",
        "result_valid": False, "invalid_reasons": [], "backend": "auto", "backends": ["deepsparse", "onnxruntime"],
        "model": "demo", "run_dir": "/r", "lost_actors": [],
        "per_node": [
            {"name": "node1", "backend": "deepsparse", "samples": 24, "seconds": 2.0},
            {"name": "node2", "backend": "onnxruntime", "samples": 34, "seconds": 2.0},
        ],
    }  # fmt: skip
    text = _render(summary)
    assert "auto (deepsparse, onnxruntime) / demo" in text
    assert "deepsparse, 1 worker(s): 24 samples, 2.0 s busy, 12.0 samples/s" in text
    assert "onnxruntime, 1 worker(s): 34 samples, 2.0 s busy, 17.0 samples/s" in text
