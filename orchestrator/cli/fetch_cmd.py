"""``orch fetch``: download or import the MLPerf BERT model, vocabulary and SQuAD dev set."""

from __future__ import annotations

from pathlib import Path

import typer

from orchestrator.cli import app
from orchestrator.fetch import ARTIFACTS, fetch, import_from, with_requirements

_NAMES_HELP = "; ".join(f"{a.name}: {a.description}" for a in ARTIFACTS.values())


@app.command("fetch")
def fetch_command(
    names: list[str] = typer.Argument(
        None,
        help=(
            "What to fetch (default: all). A model name (bert-large, bert-large-int8) "
            "also fetches vocab and squad-dev, which it needs. " + _NAMES_HELP
        ),
        show_default=False,
    ),
    from_dir: Path = typer.Option(
        None,
        "--from",
        help="Copy the files from this folder instead of downloading (air-gapped sites); "
        "each is looked for as DIR/<file> or DIR/<name>/<file> and verified.",
        show_default=False,
    ),
    cache_dir: Path = typer.Option(
        None,
        "--cache-dir",
        help="Where the files go (default: <orch cache>/downloads, see ORCH_CACHE_DIR).",
        show_default=False,
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout (name -> path) instead of lines."),
) -> None:
    """Download (or import with --from) the MLPerf BERT-large models, vocab.txt and SQuAD dev-v1.1.json.

    Every file is checked (sha256, or the md5 MLCommons publishes for the two
    ONNX models); a download resumes where it stopped.
    """
    wanted = with_requirements(names or list(ARTIFACTS))
    if from_dir is not None:
        paths = import_from(from_dir, wanted, cache_dir=cache_dir)
    else:
        paths = fetch(wanted, cache_dir=cache_dir, progress=progress and not as_json)
    import json
    import sys

    if as_json:
        print(json.dumps({"files": {name: str(path) for name, path in zip(wanted, paths)}}, indent=2))
        return
    for name, path in zip(wanted, paths):
        sys.stdout.write(f"{name}: {path}\n")  # whole paths, never folded
