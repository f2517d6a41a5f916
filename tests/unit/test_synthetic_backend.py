"""The synthetic backend: its spec, its modelled clock, its answers, and that a submission refuses it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from orchestrator.backends import get_backend
from orchestrator.backends.synthetic import DEFAULT_RATE, ModelledClock, SyntheticSpec, is_synthetic, parse_spec
from orchestrator.errors import BackendError


def test_spec_defaults_to_one_h200_and_parses_options():
    assert parse_spec("synthetic") == SyntheticSpec(rate=DEFAULT_RATE, overhead_ms=0.0, per_node=1)
    spec = parse_spec("synthetic:rate=25000,overhead_ms=0.5,per_node=8")
    assert (spec.rate, spec.overhead_ms, spec.per_node) == (25000.0, 0.5, 8)
    assert spec.seconds(25000, 10) == pytest.approx(1.0 + 0.005)
    assert is_synthetic("synthetic:rate=1") and is_synthetic("synthetic") and not is_synthetic("onnxruntime")


@pytest.mark.parametrize("name, needle", [
    ("synthetic:rate=-1", "rate must be a positive"),
    ("synthetic:rate=abc", "is not a number"),
    ("synthetic:overhead_ms=-2", "overhead_ms must be >= 0"),
    ("synthetic:per_node=1.5", "per_node must be a whole number"),
    ("synthetic:gpus=8", "is not one of rate=, overhead_ms=, per_node="),
])
def test_bad_spec_names_the_flag(name, needle):
    with pytest.raises(BackendError, match=needle) as info:
        parse_spec(name)
    assert "--backend" in str(info.value)


def test_registry_builds_it_with_its_spec_and_refuses_options_elsewhere():
    backend = get_backend("synthetic:rate=1000")
    assert backend.name == "synthetic" and backend.spec.rate == 1000.0
    with pytest.raises(BackendError, match="takes no options"):
        get_backend("onnxruntime:rate=3")
    with pytest.raises(BackendError, match="unknown backend"):
        get_backend("tensorflow")


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_modelled_clock_queues_work_on_the_device_and_keeps_its_rate():
    t = FakeTime()
    clock = ModelledClock(SyntheticSpec(rate=1000.0, overhead_ms=2.0), clock=t.clock, sleep=t.sleep)
    assert clock.spend(1000, 4) == pytest.approx((100.0, 101.008))  # 1 s + 4 x 2 ms
    assert t.now == pytest.approx(101.008) and t.slept == [pytest.approx(1.008)]
    # The next chunk, handed over while the first was on the device (two at a time), queues behind it:
    t.now = 100.4
    assert clock.spend(500, 1) == pytest.approx((101.008, 101.51))
    assert t.now == pytest.approx(101.51)
    # An idle device starts the next chunk when it arrives.
    t.now = 111.51
    assert clock.spend(100, 1) == pytest.approx((111.51, 111.612))


def test_answers_have_the_mlperf_shape_and_follow_the_input():
    backend = get_backend("synthetic:rate=1000000")
    backend.load("/nonexistent/model.onnx", batch_size=4)  # the model file is not read
    mask = np.zeros((3, 150), dtype=np.int64)
    mask[:, :90] = 1
    start, end = backend.run(np.ones_like(mask), mask, np.zeros_like(mask))
    assert start.shape == end.shape == (3, 150) and start.dtype == np.float32
    assert np.array_equal(start, mask.astype(np.float32))
    start, end = backend.serve(np.full(10_000, 100))  # 10 ms on the modelled device
    assert end - start == pytest.approx(0.01, abs=1e-6)
    info = backend.device_info()
    assert info["device"] == "synthetic" and "never a submission" in info["note"]


def test_it_needs_no_onnxruntime():
    script = (
        "import sys\n"
        "for name in ('onnxruntime', 'onnx', 'deepsparse', 'torch'):\n"
        "    sys.modules[name] = None\n"
        "from orchestrator.backends import get_backend\n"
        "b = get_backend('synthetic:rate=5000')\n"
        "b.load('/x.onnx', batch_size=8)\n"
        "start, end = b.serve(__import__('numpy').arange(50))\n"
        "print(end - start)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert float(proc.stdout) == pytest.approx(50 / 5000, rel=1e-3)


def test_a_submission_refuses_a_synthetic_run(tmp_path):
    from orchestrator.loadgen_log import LoadgenLog
    from orchestrator.submission.runs import Run, loadgen_faults
    from tests.helpers.records import run_record

    log = LoadgenLog(run_dir=tmp_path, summary="", values={"x": 1})
    for changes in ({"backend": "synthetic:rate=9500", "backends": ["synthetic:rate=9500"]},
                    {"backend": "auto", "backends": ["onnxruntime", "synthetic"]}):
        faults = loadgen_faults(Run(path=tmp_path, record=run_record(**changes), log=log))
        assert any("synthetic backend" in f and "never a result" in f for f in faults), (changes, faults)
    assert loadgen_faults(Run(path=tmp_path, record=run_record(), log=log)) == []
