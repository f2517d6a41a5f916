"""orch report on synthetic timelines: the numbers behind the figures, the figures' elements, the page."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from orchestrator.bench.timeline import TIMELINE_FILE, read_timeline
from orchestrator.errors import InputError
from orchestrator.report import analysis, figures, make_report

SVG = "{http://www.w3.org/2000/svg}"


def write_timeline(folder: Path, *, workers, chunks, losses=(), skew=None, end=True, loadgen=(0.0, None)) -> Path:
    """A timeline.jsonl from plain tuples: chunks are (id, worker, start, end, samples, mean_length[, rerun]).

    Each chunk is handed out 0.05 s before it starts and comes back 0.02 s after
    it ends (driver clock); ``skew`` shifts a worker's own clock by that many seconds.
    """
    skew = skew or {}
    folder.mkdir(parents=True, exist_ok=True)
    records = [{"format": "orch-timeline", "version": 1, "t0": 1_800_000_000.0, "mode": "performance",
                "workers": [{"name": w, "node": n, "cpus": c, "gpus": 0.0} for w, n, c in workers]}]
    events = []
    if loadgen[0] is not None:
        events.append((loadgen[0], {"e": "loadgen_start"}))
    for chunk in chunks:
        cid, worker, start, stop, n, mean, *rest = chunk
        rerun = bool(rest and rest[0])
        events.append((start - 0.05, {"e": "submit", "c": cid, "w": worker, **({"rerun": True} if rerun else {})}))
        off = skew.get(worker, 0.0)
        events.append((stop + 0.02, {"e": "done", "c": cid, "w": worker, "start": start + off, "end": stop + off,
                                      "busy": stop - start, "n": n, "len": [int(mean) - 5, mean, int(mean) + 5]}))
    for worker, t, requeued, held_since in losses:
        for cid in requeued:
            events.append((held_since, {"e": "submit", "c": cid, "w": worker}))
        events.append((t, {"e": "lost", "w": worker, "reason": "actor died", "requeued": list(requeued)}))
    last = max(t for t, _ in events)
    if loadgen[1] is not None:
        events.append((loadgen[1], {"e": "loadgen_end"}))
    if end:
        events.append((last + 0.1, {"e": "end", "ok": True, "error": None}))
    events.sort(key=lambda e: e[0])
    records += [{**ev, "t": t} for t, ev in events]
    path = folder / TIMELINE_FILE
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


TWO_NODES = [("w1", "n1", 2.0), ("w2", "n2", 2.0)]


def lost_run(folder: Path) -> Path:
    """w2 does two chunks, dies at 2.5 s holding chunks 4 and 5; w1 re-runs them."""
    chunks = [
        (0, "w1", 0.0, 1.0, 8, 380.0), (1, "w2", 0.0, 1.2, 8, 370.0), (2, "w1", 1.0, 2.0, 8, 300.0),
        (3, "w2", 1.2, 2.2, 8, 290.0), (6, "w1", 2.0, 2.6, 8, 200.0), (4, "w1", 2.6, 3.2, 8, 150.0, True),
        (5, "w1", 3.2, 3.6, 4, 100.0, True),
    ]
    return write_timeline(folder, workers=TWO_NODES, chunks=chunks, losses=[("w2", 2.5, (4, 5), 2.2)], loadgen=(0.0, 3.8))


def test_clock_offsets_find_a_skewed_worker_and_leave_agreeing_clocks_alone(tmp_path):
    chunks = [(i, w, i * 1.0, i * 1.0 + 0.9, 4, 200.0) for i, w in enumerate(["w1", "w2"] * 3)]
    line = read_timeline(write_timeline(tmp_path, workers=TWO_NODES, chunks=chunks, skew={"w2": 5.0}))
    offsets = analysis.clock_offsets(line)
    assert offsets["w1"] == 0.0
    # w2's clock is 5 s ahead: every bound says subtract between 5.05 and 4.98 s.
    assert -5.06 <= offsets["w2"] <= -4.97
    an = analysis.analyse(line)
    bars = {b.chunk: b for lane in an.lanes for b in lane.bars}
    assert bars[1].start == pytest.approx(1.0, abs=0.06) and bars[1].end == pytest.approx(1.9, abs=0.06)


def test_analysis_of_a_run_with_a_lost_worker(tmp_path):
    line = read_timeline(lost_run(tmp_path))
    an = analysis.analyse(line)
    lanes = {lane.worker: lane for lane in an.lanes}
    assert list(lanes) == ["w1", "w2"] and an.nodes == ["n1", "n2"]
    assert [b.chunk for b in lanes["w1"].bars] == [0, 2, 6, 4, 5]
    assert [b.chunk for b in lanes["w2"].bars] == [1, 3]
    assert lanes["w2"].lost_at == 2.5 and lanes["w1"].lost_at is None
    # What w2 held dies with it: from its last answer's end to the loss.
    assert lanes["w2"].lost_work == [(2.2, 2.5), (2.2, 2.5)]
    assert an.reruns == 2 and an.chunks == 7 and an.samples == 52
    assert an.idle_at_end["w2"] is None
    assert an.idle_at_end["w1"] == pytest.approx(3.62 - 3.6)
    assert an.loadgen_start == 0.0 and an.loadgen_end == 3.8 and an.dispatch_end == pytest.approx(3.62)
    shares = {s.node: s for s in an.shares}
    assert shares["n1"].samples == 36 and shares["n2"].samples == 16
    assert sum(s.sample_share for s in an.shares) == pytest.approx(1.0)
    assert sum(s.capacity_share for s in an.shares) == pytest.approx(1.0)
    assert shares["n1"].rate == pytest.approx(36 / 3.6) and shares["n2"].rate == pytest.approx(16 / 2.2)
    assert shares["n1"].cpu_share == 0.5


def test_throughput_keeps_every_sample_and_nodes_add_up(tmp_path):
    line = read_timeline(lost_run(tmp_path))
    an = analysis.analyse(line)
    tp = analysis.throughput(line, an, bins=25)
    width = np.diff(tp.edges)
    assert (tp.overall * width).sum() == pytest.approx(52)
    assert sum(tp.per_node.values()) == pytest.approx(tp.overall)
    assert (tp.per_node["n2"] * width).sum() == pytest.approx(16)
    assert tp.answered.sum() == 52
    # n2 computes nothing after it was lost.
    assert tp.per_node["n2"][tp.edges[:-1] >= 2.3].sum() == 0


def test_length_points_follow_the_chunks(tmp_path):
    line = read_timeline(lost_run(tmp_path))
    points = analysis.length_points(line, analysis.analyse(line))
    assert len(points) == 7
    first = next(p for p in points if p.mean == 380.0)
    assert (first.node, first.low, first.high, first.samples, first.t) == ("n1", 375, 385, 8, pytest.approx(0.5))


def test_scaling_efficiency_against_the_fewest_nodes_of_the_same_kind():
    rows = [analysis.RunFigures("a", "performance", 1, "onnxruntime", "demo", 10.0),
            analysis.RunFigures("b", "performance", 2, "onnxruntime", "demo", 18.0),
            analysis.RunFigures("c", "performance", 3, "onnxruntime", "demo", None),
            analysis.RunFigures("d", "performance", 2, "deepsparse", "demo", 30.0)]
    assert analysis.scaling_efficiency(rows) == [1.0, pytest.approx(0.9), None, 1.0]


def _groups(svg: str) -> dict[str, ET.Element]:
    root = ET.fromstring(svg)
    return {g.get("id"): g for g in root.iter(f"{SVG}g") if g.get("id")}


def _paths(group: ET.Element) -> int:
    return sum(1 for _ in group.iter(f"{SVG}path"))


def test_gantt_has_one_lane_per_worker_and_one_bar_per_chunk(tmp_path):
    line = read_timeline(lost_run(tmp_path))
    an = analysis.analyse(line)
    svg, png = figures.render(figures.gantt(an, "r0-"), salt="t")
    groups = _groups(svg)
    assert _paths(groups["r0-gantt-lane-w1"]) == 3 and _paths(groups["r0-gantt-rerun-w1"]) == 2
    assert _paths(groups["r0-gantt-lane-w2"]) == 2 and "r0-gantt-rerun-w2" not in groups
    assert "r0-gantt-lost-w2" in groups and "r0-gantt-lost-w1" not in groups
    assert _paths(groups["r0-gantt-lostwork-w2"]) == 2
    assert {"r0-loadgen-start", "r0-loadgen-end"} <= set(groups)
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert "<?xml" not in svg and "<metadata" not in svg and svg.startswith("<svg")


def test_gantt_png_shows_each_node_color(tmp_path):
    from PIL import Image
    import io

    line = read_timeline(lost_run(tmp_path))
    an = analysis.analyse(line)
    _, png = figures.render(figures.gantt(an), salt="t")
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3)
    colors = figures.node_colors(an.nodes)
    for node in an.nodes:
        rgb = np.array([int(colors[node][i:i + 2], 16) for i in (1, 3, 5)])
        assert (np.abs(pixels.astype(int) - rgb).sum(axis=1) < 10).sum() > 2000, node


def test_other_figures_carry_their_ids(tmp_path):
    line = read_timeline(lost_run(tmp_path))
    an = analysis.analyse(line)
    tp = analysis.throughput(line, an)
    groups = _groups(figures.render(figures.throughput(an, tp, "p-"), salt="a")[0])
    assert {"p-throughput-overall", "p-throughput-node-n1", "p-throughput-node-n2", "p-throughput-answered"} <= set(groups)
    groups = _groups(figures.render(figures.balance(an, "p-"), salt="b")[0])
    assert {"p-share-samples-n1", "p-share-capacity-n2", "p-share-cpus-n1", "p-idle-w1", "p-idle-w2"} <= set(groups)
    groups = _groups(figures.render(figures.lengths(an, analysis.length_points(line, an), "p-"), salt="c")[0])
    assert {"p-lengths-node-n1", "p-lengths-node-n2", "p-lengths-hist-n1"} <= set(groups)
    rows = [analysis.RunFigures("1n", "performance", 1, "ort", "demo", 10.0), analysis.RunFigures("2n", "performance", 2, "ort", "demo", 19.0)]
    groups = _groups(figures.render(figures.comparison(rows, "c-"), salt="d")[0])
    assert {"c-compare-sps-0", "c-compare-sps-1", "c-compare-efficiency"} <= set(groups)


def test_many_chunks_are_rasterized_into_one_image(tmp_path):
    n = figures.VECTOR_BARS_MAX + 500
    chunks = [(i, "w1" if i % 2 else "w2", i * 0.01, i * 0.01 + 0.02, 32, 200.0) for i in range(n)]
    line = read_timeline(write_timeline(tmp_path, workers=TWO_NODES, chunks=chunks))
    svg, _ = figures.render(figures.gantt(analysis.analyse(line)), salt="r")
    assert "<image" in svg and len(svg) < 1_500_000


def run_json(**over) -> dict:
    """A run.json as orch writes it (through its record), with ``over`` applied."""
    from orchestrator.records import LostWorker, NodeRun, RunRecord, TargetQps

    base = dict(
        orch_version="0.1.0", command="orch bench --nodes 2", scenario="Offline", mode="performance",
        execution="test", backend="onnxruntime", backends=["onnxruntime"], model="demo", model_path="/m.onnx",
        vocab_path="/v.txt", dataset_path="/d.json", dataset_sha256="d", features_key="k", total_sample_count=52,
        count=52, target_qps=TargetQps(value=47.0, source="test-sizing"), samples_per_second=14.4,
        samples_per_second_source="loadgen", result_valid=True, invalid_reasons=[], loadgen_errors=[], system="t",
        nodes=2, workers=2,
        per_node=[NodeRun(name="n1", workers=["w1"], samples=36, seconds=3.6, backend="onnxruntime", node_ip="10.0.0.1",
                          device={"device": "cpu", "threads": 2},
                          facts={"cpu_model": "Test CPU", "cores": 2, "threads": 4, "memory_bytes": 2**33}),
                  NodeRun(name="n2", workers=["w2"], samples=16, seconds=2.2, backend="onnxruntime", node_ip="10.0.0.2")],
        lost_workers=[LostWorker(name="w2", node="n2", reason="actor died")], rerun_samples=12, issued_samples=52,
        startup_seconds=1.0, dispatch_seconds=3.6, started_at="2026-12-01T00:00:00+00:00",
        finished_at="2026-12-01T00:00:04+00:00",
    )
    return RunRecord(**{**base, **over}).to_dict()


def test_the_page_is_self_contained_and_shows_every_part(tmp_path):
    run = tmp_path / "run"
    lost_run(run)
    (run / "run.json").write_text(json.dumps(run_json(command="orch bench --nodes 2 --out '<b>x</b>'")))
    report = make_report([run], run / "report.html")
    page = report.html.read_text()
    for fig in ("gantt", "throughput", "balance", "lengths"):
        assert f'id="fig-r0-{fig}"' in page
        assert (run / "report-figures" / f"r0-{fig}.png").is_file()
        assert f'href="report-figures/r0-{fig}.png"' in page
    # Nothing to fetch: every src/href is relative or a fragment; styles inline, no script.
    refs = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert refs and not [r for r in refs if re.match(r"[a-z]+:", r) and not r.startswith("data:")]
    assert "<link" not in page and "<script" not in page and "@import" not in page
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page  # file content is escaped
    assert "TEST MODE" in page and "14.40 (loadgen)" in page and "w2 on n2: actor died" in page
    assert "Test CPU" in page and "@media print" in page and "max-width: 640px" in page
    assert len(report.figures) == 4


def test_a_failed_run_without_run_json_still_gets_its_figures(tmp_path):
    run = tmp_path / "out.failed-123"
    path = lost_run(run)
    text = path.read_text().splitlines()
    path.write_text("\n".join(line for line in text if '"e": "end"' not in line) + '\n{"e": "done", "t": 9')
    page = make_report([run], tmp_path / "failed.html").html.read_text()
    assert "This run did not complete" in page and "FAILED (no run.json)" in page
    assert "last line was cut short" in page and 'id="fig-r0-gantt"' in page
    assert (tmp_path / "failed-figures" / "r0-gantt.png").is_file()


def test_a_worker_lost_before_any_answer_still_gets_its_timeline(tmp_path):
    """The only worker died holding its first chunk: no chunk came back, but the Gantt shows the loss."""
    run = tmp_path / "out.failed-124"
    write_timeline(run, workers=[("local-1", "vm", 2.0)], chunks=[], losses=[("local-1", 1.5, (0,), 0.2)])
    page = make_report([run], tmp_path / "lost.html").html.read_text()
    assert 'id="fig-r0-gantt"' in page and 'id="r0-gantt-lost-local-1"' in page
    assert "no chunk was answered" in page and 'id="fig-r0-throughput"' not in page


def test_a_submission_directory_reads_as_its_two_runs_and_compares_them(tmp_path):
    out = tmp_path / "sub"
    lost_run(out / "accuracy")
    lost_run(out / "performance")
    (out / "accuracy" / "run.json").write_text(json.dumps(run_json(
        mode="accuracy", result_valid=None,
        accuracy={"exact_match": 0.25, "f1": 0.5, "examples_scored": 3, "examples_total": 3, "log_sha256": "a", "partial": False})))
    (out / "performance" / "run.json").write_text(json.dumps(run_json()))
    (out / "submission").mkdir()
    (out / "submission" / "summary.json").write_text(json.dumps({"valid": False, "invalid_reasons": ["test mode"]}))
    page = make_report([out], out / "report.html").html.read_text()
    assert 'id="run-0"' in page and 'id="run-1"' in page and 'id="comparison"' in page
    assert "exact_match 0.250, F1 0.500" in page and "NOT valid: test mode" in page
    assert 'id="cmp-compare-sps-0"' in page


def test_several_runs_compare_samples_per_second_and_efficiency(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    write_timeline(one, workers=[("w1", "n1", 2.0)], chunks=[(0, "w1", 0.0, 1.0, 8, 200.0)])
    (one / "run.json").write_text(json.dumps(run_json(nodes=1, samples_per_second=10.0, per_node=[], lost_workers=[])))
    lost_run(two)
    (two / "run.json").write_text(json.dumps(run_json(nodes=2, samples_per_second=18.0)))
    page = make_report([one, two], tmp_path / "cmp.html").html.read_text()
    assert "90 %" in page and "100 %" in page and 'id="fig-compare"' in page


def test_a_run_without_timeline_says_why_there_are_no_figures(tmp_path):
    run = tmp_path / "old"
    run.mkdir()
    (run / "run.json").write_text(json.dumps(run_json()))
    report = make_report([run], run / "report.html")
    assert "No figures: no timeline.jsonl" in report.html.read_text() and report.figures == []


def test_bad_run_directories_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="is not a directory"):
        make_report([tmp_path / "absent"], tmp_path / "r.html")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no orch run"):
        make_report([tmp_path / "empty"], tmp_path / "r.html")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "run.json").write_text("{cut")
    with pytest.raises(InputError, match="run.json: not JSON"):
        make_report([tmp_path / "bad"], tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_orch_report_cli_one_line_exit_2(tmp_path, capsys):
    from orchestrator.cli import main

    assert main(["report", str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "RUN_DIR" in err[0] and "absent" in err[0]


def test_orch_report_cli_writes_the_page_and_says_where(tmp_path, capsys):
    from orchestrator.cli import main

    lost_run(tmp_path / "run")
    assert main(["report", str(tmp_path / "run"), "--out", str(tmp_path / "x" / "mine.html")]) == 0
    out = capsys.readouterr().out
    assert f"report: {tmp_path / 'x' / 'mine.html'}" in out and (tmp_path / "x" / "mine-figures" / "r0-gantt.png").is_file()


def test_a_report_failure_after_bench_is_one_line_not_a_failed_run(tmp_path, capsys):
    from orchestrator.cli.report_cmd import report_after_bench

    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text("{cut")
    assert report_after_bench({"run_dir": str(run)}) is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("orch: the run is complete, but its report was not written:")
