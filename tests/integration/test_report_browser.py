"""The report of a real 2-worker demo run, opened in real headless chromium: the figures were drawn.

Checks the DOM chromium built (one Gantt lane per worker, one bar per chunk
of the run's timeline) and the pixels of its screenshot (each figure's box
is not blank; each lane's box is filled with its node's color), at laptop
and phone widths, and that it prints to PDF with the figures on pages of
their own. Screenshots and the PDF go to ``$ORCH_ARTIFACTS_DIR`` (default
``artifacts/``) for people to look at; their paths are printed.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from orchestrator.bench.timeline import TIMELINE_FILE, read_timeline
from tests.helpers.browser import Browser, artifacts_dir, chromium, full_page, pdf_pages

FIGURES = ("gantt", "throughput", "balance", "lengths")


def orch(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ))


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """`orch bench --nodes 2`, as a user types it (report.html by default)."""
    out = tmp_path_factory.mktemp("report") / "run"
    proc = orch("bench", "--nodes", "2", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"report: {out / 'report.html'}" in proc.stdout, proc.stdout[-2000:]
    return out


@pytest.fixture(scope="module")
def browser():
    exe = chromium()
    if exe is None:
        pytest.skip("no chromium installed (Debian: apt-get install chromium); CI installs it")
    return Browser(exe)


def _pixels(png: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png.read_bytes())).convert("RGB")).astype(int)


def _crop(pixels: np.ndarray, box) -> np.ndarray:
    x, y, w, h = (int(round(v)) for v in box)
    return pixels[max(0, y): y + h, max(0, x): x + w]


def _rgb(color: str) -> np.ndarray:
    return np.array([int(color[i: i + 2], 16) for i in (1, 3, 5)])


def test_the_run_directory_has_its_timeline_and_report(demo_run):
    line = read_timeline(demo_run / TIMELINE_FILE)
    run = json.loads((demo_run / "run.json").read_text())
    assert [w.name for w in line.workers] == ["local-1", "local-2"] and line.ok is True
    assert sum(c.samples for c in line.chunks) == run["count"] and len({c.chunk for c in line.chunks}) == len(line.chunks)
    assert line.loadgen_start < line.query < min(c.back for c in line.chunks) <= max(c.back for c in line.chunks) < line.loadgen_end
    for name in FIGURES:
        assert (demo_run / "report-figures" / f"r0-{name}.png").stat().st_size > 10_000


def test_chromium_draws_one_lane_per_worker_and_one_bar_per_chunk(demo_run, browser):
    from orchestrator.report.figures import node_colors

    page = demo_run / "report.html"
    line = read_timeline(demo_run / TIMELINE_FILE)
    dom = browser.dump_dom(page)
    lanes = re.findall(r'<g id="r0-gantt-lane-([^"]+)"', dom)
    assert lanes == ["local-1", "local-2"]
    for worker in lanes:
        group = re.search(rf'<g id="r0-gantt-lane-{worker}">(.*?)</g>', dom, re.S).group(1)
        mine = [c for c in line.chunks if c.worker == worker]
        assert mine and group.count("<path") == len(mine), worker
    for name in FIGURES:
        assert f'id="fig-r0-{name}"' in dom
    assert 'id="r0-throughput-overall"' in dom and 'id="r0-loadgen-start"' in dom and 'id="r0-loadgen-end"' in dom

    folder = artifacts_dir()
    shot, layout = full_page(browser, page, folder / "report-laptop-1280.png", width=1280)
    print(f"\nscreenshot: {shot}")
    pixels = _pixels(shot)
    assert pixels.shape[1] == 1280 and pixels.shape[0] == layout["height"]
    for name in FIGURES:
        area = _crop(pixels, layout["figures"][f"fig-r0-{name}"])
        ink = (np.abs(area - 255).sum(axis=2) > 60).mean()
        assert area.size and ink > 0.03, (name, ink)  # drawn, not a blank box
        assert len(np.unique(area.reshape(-1, 3), axis=0)) > 20, name
    node_of = {w.name: w.node for w in line.workers}  # local workers share one node: this machine
    colors = node_colors(list(dict.fromkeys(node_of.values())))
    for worker in lanes:
        area = _crop(pixels, layout["groups"][f"r0-gantt-lane-{worker}"])
        filled = (np.abs(area - _rgb(colors[node_of[worker]])).sum(axis=2) < 30).mean()
        assert filled > 0.5, (worker, filled)  # the lane's bars are painted in its node's color


def test_readable_at_phone_width_and_prints_a_page_per_figure(demo_run, browser):
    page = demo_run / "report.html"
    folder = artifacts_dir()
    # 500 CSS px: the narrowest window headless chromium opens; the page's phone layout starts below 640.
    shot, layout = full_page(browser, page, folder / "report-phone-500.png", width=500)
    print(f"\nscreenshot: {shot}")
    assert layout["scrollWidth"] <= layout["viewport"], layout  # nothing sticks out sideways
    pixels = _pixels(shot)
    for name in FIGURES:
        x, y, w, h = layout["figures"][f"fig-r0-{name}"]
        assert 0 <= x and x + w <= layout["viewport"] + 0.5 and w > 0.8 * layout["viewport"], (name, layout["figures"])
        assert (np.abs(_crop(pixels, (x, y, w, h)) - 255).sum(axis=2) > 60).mean() > 0.03, name
    pdf = browser.print_pdf(page, folder / "report.pdf")
    print(f"pdf: {pdf}")
    # Page breaks before every figure: the run's summary page, then at least one page per figure.
    assert pdf_pages(pdf) >= 1 + len(FIGURES)


def test_no_report_skips_it(tmp_path):
    out = tmp_path / "run"
    proc = orch("bench", "--count", "8", "--no-report", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "run.json").is_file() and (out / TIMELINE_FILE).is_file()
    assert not (out / "report.html").exists() and "report:" not in proc.stdout


def test_orch_report_compares_runs_and_reads_a_submission_directory(demo_run, tmp_path, browser):
    sub = tmp_path / "sub"
    proc = orch("bench", "--mode", "submission", "--submitter", "Test", "--count", "16", "--out", str(sub), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (sub / "report.html").is_file() and f"report: {sub / 'report.html'}" in proc.stdout
    assert (sub / "accuracy" / TIMELINE_FILE).is_file() and (sub / "performance" / TIMELINE_FILE).is_file()
    out = tmp_path / "cmp.html"
    proc = orch("report", str(demo_run), str(sub), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    dom = browser.dump_dom(out)
    # Three runs (the demo run, the submission's accuracy and performance runs) and their comparison.
    assert [m for m in re.findall(r'<section class="run" id="(run-\d+)"', dom)] == ["run-0", "run-1", "run-2"]
    assert 'id="comparison"' in dom and 'id="cmp-compare-sps-2"' in dom
    assert re.findall(r'<g id="r(\d)-gantt-lane-local-1"', dom) == ["0", "1", "2"]
    shutil.copy(out, artifacts_dir() / "report-compare.html")


def test_a_failed_run_keeps_its_timeline_and_gets_a_report(tmp_path):
    # The only worker SIGKILLs itself at its second chunk: the run fails, its directory stays as .failed-<time>.
    out = tmp_path / "run"
    from tests.helpers.cli import orch as orch_faults

    proc = orch_faults("bench", "--count", "16", "--chunk-size", "4", "--out", str(out),
                       faults={"kill_worker_after": {"local-1": 1}})
    assert proc.returncode == 2 and "every worker was lost" in proc.stderr, proc.stderr[-3000:]
    [failed] = tmp_path.glob("run.failed-*")
    assert not (failed / "run.json").exists()
    line = read_timeline(failed / TIMELINE_FILE)
    assert line.ok is False and "every worker was lost" in line.ended["error"]
    # (Whether local-1's first answer arrives before Ray reports the actor dead is a race: not asserted.)
    assert [loss.worker for loss in line.losses] == ["local-1"]
    report = orch("report", str(failed))
    assert report.returncode == 0, report.stderr
    page = (failed / "report.html").read_text()
    assert "This run did not complete: every worker was lost" in page and 'id="r0-gantt-lost-local-1"' in page
