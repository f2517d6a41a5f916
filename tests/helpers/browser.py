"""Debian's headless chromium, driven from its command line, for tests of the HTML report.

What a test gets: the DOM the browser built (``--dump-dom``), the layout it
computed (the same page with a small script that writes the boxes of the
figures and of their plotted groups into an attribute, dumped the same
way; the page itself has no script), a screenshot (``--screenshot``) and a
PDF print (``--print-to-pdf``). Every call starts chromium with a new empty
profile and the flags that keep it off the network (without them it tries
to reach its services, which this closed network refuses).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--force-device-scale-factor=1",
]  # fmt: skip

# Boxes (page coordinates, CSS pixels) of each figure's SVG and of each plotted
# group whose id starts with a run prefix (r0-, cmp-): those orch puts on them.
LAYOUT_SCRIPT = """<script>
(function () {
  const box = (el) => { const r = el.getBoundingClientRect();
                        return [r.left + scrollX, r.top + scrollY, r.width, r.height]; };
  const out = {height: document.documentElement.scrollHeight, scrollWidth: document.documentElement.scrollWidth,
               viewport: innerWidth, figures: {}, groups: {}};
  for (const f of document.querySelectorAll('figure.fig')) out.figures[f.id] = box(f.querySelector('svg'));
  for (const g of document.querySelectorAll('figure.fig svg g[id]'))
    if (/^(r[0-9]+|cmp)-/.test(g.id)) out.groups[g.id] = box(g);
  document.body.setAttribute('data-layout', JSON.stringify(out));
})();
</script>"""


def chromium() -> str | None:
    """The chromium executable, or None when none is installed."""
    for candidate in (os.environ.get("ORCH_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


class Browser:
    """One chromium executable; each method is one headless run of it."""

    def __init__(self, executable: str) -> None:
        self.executable = executable

    def _run(self, url: str, *args: str, width: int, height: int, timeout: int = 120) -> subprocess.CompletedProcess:
        with tempfile.TemporaryDirectory(prefix="orch-chromium-") as profile:
            proc = subprocess.run(
                [self.executable, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}", *args, url],
                capture_output=True, timeout=timeout,
            )  # fmt: skip
        if proc.returncode != 0:
            raise AssertionError(f"chromium exited {proc.returncode}: {proc.stderr.decode(errors='replace')[-2000:]}")
        return proc

    def dump_dom(self, page: Path, *, width: int = 1280, height: int = 900) -> str:
        """The DOM chromium built from ``page``, serialized after load."""
        return self._run(page.resolve().as_uri(), "--dump-dom", width=width, height=height).stdout.decode()

    def layout(self, page: Path, *, width: int, height: int = 900) -> dict:
        """The boxes chromium laid out for ``page`` at this window size (see LAYOUT_SCRIPT)."""
        probe = page.with_name(f".{page.stem}.layout.html")
        probe.write_text(page.read_text().replace("</body>", LAYOUT_SCRIPT + "</body>", 1))
        try:
            dom = self.dump_dom(probe, width=width, height=height)
        finally:
            probe.unlink()
        found = re.search(r'<body[^>]*data-layout="([^"]*)"', dom)
        if not found:
            raise AssertionError("the layout probe did not run (no data-layout on <body>)")
        return json.loads(html.unescape(found.group(1)))

    def screenshot(self, page: Path, out: Path, *, width: int, height: int) -> Path:
        """A PNG of the window (``width`` x ``height``, from the top of the page)."""
        self._run(page.resolve().as_uri(), f"--screenshot={out}", width=width, height=height)
        if not out.is_file():
            raise AssertionError(f"chromium wrote no screenshot {out}")
        return out

    def print_pdf(self, page: Path, out: Path) -> Path:
        """The page printed to PDF as a reader's "print to PDF" would (no header or footer)."""
        self._run(page.resolve().as_uri(), f"--print-to-pdf={out}", "--no-pdf-header-footer", width=1280, height=900)
        if not out.is_file():
            raise AssertionError(f"chromium wrote no PDF {out}")
        return out


def full_page(browser: Browser, page: Path, out: Path, *, width: int) -> tuple[Path, dict]:
    """A screenshot of the whole page at ``width`` and the layout it was taken with."""
    height = browser.layout(page, width=width)["height"]
    layout = browser.layout(page, width=width, height=height)
    return browser.screenshot(page, out, width=width, height=layout["height"]), layout


def pdf_pages(pdf: Path) -> int:
    """Pages of a PDF chromium printed (its page objects are not compressed)."""
    return len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", pdf.read_bytes()))


def artifacts_dir() -> Path:
    """Where tests keep files for people to look at: ``$ORCH_ARTIFACTS_DIR``, default ``artifacts/`` at the repo root."""
    root = Path(__file__).resolve().parents[2]
    folder = Path(os.environ.get("ORCH_ARTIFACTS_DIR") or root / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder
