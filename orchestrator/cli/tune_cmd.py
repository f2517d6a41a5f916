"""`orch tune`: a short measured sweep of layouts; the best one becomes `orch bench`'s default."""

from __future__ import annotations

import contextlib
import json
import shlex
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from orchestrator.cli import app, state


def _ints(text: str, flag: str, *, allow_default: bool = False) -> tuple:
    from orchestrator.errors import InputError

    values: list = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        if allow_default and part in ("default", "auto"):
            values.append(None)
            continue
        try:
            values.append(int(part))
        except ValueError:
            raise InputError(f"{flag} {text!r}: {part!r} is not an integer", hint=f"e.g. {flag} 1,2,4") from None
    return tuple(values)


@app.command()
def tune(
    inventory: Optional[Path] = typer.Option(None, "--inventory", "-i", help="Tune each node profile of the cluster `orch deploy` set up."),
    model: str = typer.Option("demo", "--model", help="demo | bert-large | bert-large-int8 | PATH to an ONNX file."),
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="SQuAD v1.1 JSON (default: the model's)."),
    vocab: Optional[Path] = typer.Option(None, "--vocab", help="BERT vocab.txt (default: the model's)."),
    count: int = typer.Option(600, "--count", help="Samples per performance trial (test mode)."),
    accuracy_count: Optional[int] = typer.Option(None, "--accuracy-count", help="Samples of the accuracy guard's runs, fp32 and each reduced precision on the same ones (default: the whole data set; fewer: PARTIAL runs)."),
    precisions: str = typer.Option("fp32,int8-per-token,int8-dynamic,int8-static", "--precisions", help="Precisions to try (fp32 is the guard's reference)."),
    backends: Optional[str] = typer.Option(None, "--backends", help="Backends to try locally (default: every installed CPU backend); a cluster uses each profile's."),
    batch_sizes: str = typer.Option("1,2,4,8,16", "--batch-sizes", help="Batch sizes to try, in increasing order."),
    chunk_sizes: str = typer.Option("default,16,64", "--chunk-sizes", help="Chunk sizes to try (default: orch's own rule)."),
    full: bool = typer.Option(False, "--full", help="Measure the whole grid instead of the pruned search (slow; to check the search)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout instead of tables."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and Ray's logs."),
) -> None:
    """Measure layouts (workers x threads x batch x chunk x precision x backend) and store the best for `orch bench`."""
    from orchestrator.tune.run import TuneConfig, tune_inventory, tune_local

    conf = TuneConfig(
        model=model,
        dataset=dataset.expanduser().resolve() if dataset else None,
        vocab=vocab.expanduser().resolve() if vocab else None,
        count=count,
        accuracy_count=accuracy_count,
        precisions=tuple(p.strip() for p in precisions.split(",") if p.strip()),
        backends=tuple(b.strip() for b in backends.split(",") if b.strip()) if backends else None,
        batch_sizes=_ints(batch_sizes, "--batch-sizes"),
        chunk_sizes=_ints(chunk_sizes, "--chunk-sizes", allow_default=True),
        full=full,
        inventory=inventory.expanduser().resolve() if inventory else None,
        command=shlex.join(["orch", *sys.argv[1:]]),
        debug=state.debug or debug,
    )
    conf.check()  # bad flags: one line before anything starts
    from orchestrator.cli.bench_cmd import _stdout_to_stderr
    from orchestrator.tune.view import TuneProgress

    with TuneProgress(Console(stderr=True)) as progress, (_stdout_to_stderr() if as_json else contextlib.nullcontext()):
        if conf.inventory is not None:
            results = tune_inventory(conf, on_trial=progress.trial, on_plan=progress.plan)
        else:
            results = [tune_local(conf, on_trial=progress.trial, on_plan=progress.plan)]
    if as_json:
        print(json.dumps(results[0] if conf.inventory is None else {"profiles": results}, indent=2))
        return
    from orchestrator.tune.view import tune_table

    out = Console()
    for result in results:
        out.print(tune_table(result))
