"""The pruned layout search: finds the best, stops early, never measures what the guard refused."""

from __future__ import annotations

import itertools

from orchestrator.tune.layout import Layout
from orchestrator.tune.sweep import Space, planned_size, sweep


def _speed(layout: Layout) -> float:
    """A made-up node: 2 workers x 1 thread beats 1 x 2; batch 4 is best; int8 doubles; chunk 16 helps 3%."""
    base = 100.0 if layout.workers == 2 else 80.0
    base *= {1: 0.9, 2: 0.97, 4: 1.0, 8: 0.93, 16: 0.8}[layout.batch_size]
    base *= 2.0 if layout.precision.startswith("int8") else 1.0
    base *= 1.03 if layout.chunk_size == 16 else 1.0
    return base


def test_pruned_search_finds_the_grid_best_with_fewer_trials():
    space = Space(cpus=2, precisions=("fp32", "int8-dynamic"))
    measured = []

    def measure(layout):
        measured.append(layout)
        return _speed(layout)

    result = sweep(space, measure, lambda p, b: (True, {"meets": "bert-99"}))
    full = sweep(space, _speed, lambda p, b: (True, {"meets": "bert-99"}), full=True)
    assert result.best.layout == full.best.layout == Layout(2, 1, 4, 16, "int8-dynamic", "onnxruntime")
    assert len(measured) < len(full.trials) == planned_size(space, full=True)
    assert len(set(measured)) == len(measured)  # no layout measured twice


def test_batch_sizes_stop_after_two_losses_in_a_row():
    space = Space(cpus=2, precisions=("fp32",), batch_sizes=(1, 2, 4, 8, 16, 32, 64), chunk_sizes=(None,))
    speeds = {1: 90, 2: 97, 4: 100, 8: 90, 16: 80, 32: 120, 64: 10}
    tried = []

    def measure(layout):
        tried.append(layout.batch_size)
        return speeds[layout.batch_size] * (1.0 if layout.workers == 1 else 0.5)

    result = sweep(space, measure, lambda p, b: (True, {}))
    batch_trials = [t.layout.batch_size for t in result.trials if t.stage == "batch size"]
    # 8 and 16 both lose by more than 5%: 32 and 64 are never run (the pruning's price: 32 was faster).
    assert batch_trials == [1, 4, 8, 16]  # 2 was measured in the earlier stages already
    assert 32 not in tried and 64 not in tried
    assert result.best.layout.batch_size == 4


def test_a_precision_refused_by_the_guard_is_never_measured():
    space = Space(cpus=2, precisions=("fp32", "int8-dynamic", "int8-static"))
    measured = []

    def guard(precision, backend):
        if precision == "int8-static":
            return False, {"meets": None, "reason": "F1 80.0 is 90.00% of the fp32 F1: below bert-99 (99%)"}
        return True, {"meets": "bert-99"}

    result = sweep(space, lambda lay: measured.append(lay) or _speed(lay), guard)
    assert all(lay.precision != "int8-static" for lay in measured)
    refused = [t for t in result.trials if t.layout.precision == "int8-static"]
    assert len(refused) == 1 and "accuracy guard" in refused[0].error and refused[0].samples_per_second is None
    assert result.best.layout.precision == "int8-dynamic"

    full = sweep(space, _speed, guard, full=True)
    assert not [t for t in full.trials if t.layout.precision == "int8-static" and t.samples_per_second is not None]


def test_a_failing_layout_is_shown_and_the_sweep_goes_on():
    space = Space(cpus=2, precisions=("fp32",), chunk_sizes=(None,))

    def measure(layout):
        if layout.batch_size == 8:
            raise RuntimeError("worker ran out of memory")
        return _speed(layout)

    result = sweep(space, measure, lambda p, b: (True, {}))
    failed = [t for t in result.trials if t.error]
    assert [t.layout.batch_size for t in failed] == [8] and failed[0].error == "worker ran out of memory"
    assert result.best.samples_per_second == max(t.samples_per_second for t in result.trials if t.samples_per_second)


def test_deepsparse_gets_no_dynamic_int8_and_cpus_split_evenly():
    space = Space(cpus=4, precisions=("fp32", "int8-dynamic", "int8-static", "fp16"), backends=("onnxruntime", "deepsparse"))
    assert space.pairs() == [
        ("fp32", "onnxruntime"), ("fp32", "deepsparse"), ("int8-dynamic", "onnxruntime"),
        ("int8-static", "onnxruntime"), ("int8-static", "deepsparse"),
    ]  # fmt: skip
    assert space.splits() == [(1, 4), (2, 2), (4, 1)]
    assert list(itertools.chain(*Space(cpus=3).splits())) == [1, 3, 3, 1]
