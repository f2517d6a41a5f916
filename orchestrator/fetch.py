"""Download (or import) the MLPerf BERT artifacts into orch's cache, verified.

One table, ``ARTIFACTS``, says where each file comes from and what its
checksum is. ``fetch`` downloads into ``<cache>/<name>/<filename>``: bytes go
to ``<filename>.part``, an interrupted download resumes with an HTTP Range
request, the finished file is verified and only then renamed into place, so a
file at ``artifact_path(name)`` is always a complete one. ``import_from`` does
the same from a folder already on disk (air-gapped sites).

Checksums: sha256 wherever it is known. The two MLPerf ONNX models are
published with md5 only (MLCommons' own download scripts carry md5); for
those the md5 is verified instead, never skipped.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import os
import re
import shutil
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import ChecksumError, InputError, OrchError
from orchestrator.paths import cache_subdir


@dataclass(frozen=True)
class Artifact:
    """One file orch can fetch.

    Attributes:
        name: the key users type (``orch fetch NAME``).
        filename: the file's name in the cache and in an import folder.
        url: where it is downloaded from (http or https).
        sha256: expected sha256 (hex), or None when the publisher gives none.
        size: expected size in bytes, or None when not published.
        description: one line for ``orch fetch --help`` and messages.
        md5: expected md5 (hex); verified only when ``sha256`` is None.
        requires: names fetched along with this one by the CLI.
    """

    name: str
    filename: str
    url: str
    sha256: str | None
    size: int | None
    description: str
    md5: str | None = None
    requires: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Never an artifact that cannot be verified.
        if not (self.sha256 or self.md5):
            raise ValueError(f"artifact {self.name!r} has neither sha256 nor md5")


ARTIFACTS: dict[str, Artifact] = {
    a.name: a
    for a in (
        Artifact(
            name="bert-large",
            filename="model.onnx",
            url="https://zenodo.org/records/3733910/files/model.onnx?download=1",
            sha256=None,
            size=None,
            # md5 from mlcommons/cm4mlops script/get-ml-model-bert-large-squad (onnx,fp32).
            md5="819b25b19cd8e59080c10892689750ca",
            description="MLPerf BERT-large fp32 ONNX model (F1 90.874), zenodo 3733910",
            requires=("vocab", "squad-dev"),
        ),
        Artifact(
            name="bert-large-int8",
            filename="bert_large_v1_1_fake_quant.onnx",
            url="https://zenodo.org/records/3750364/files/bert_large_v1_1_fake_quant.onnx?download=1",
            sha256=None,
            size=None,
            # md5 from mlcommons/cm4mlops script/get-ml-model-bert-large-squad (onnx,int8).
            md5="45f88ffb2915362242703c85c38ec2d4",
            description="MLPerf BERT-large int8 fake-quant ONNX model (F1 90.067), zenodo 3750364",
            requires=("vocab", "squad-dev"),
        ),
        Artifact(
            name="vocab",
            filename="vocab.txt",
            url="https://zenodo.org/records/3733868/files/vocab.txt?download=1",
            # The standard BERT uncased vocab; md5 64800d5d... is the one MLCommons
            # lists for this URL, the sha256 was computed from an identical copy.
            sha256="07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
            size=231_508,
            md5="64800d5d8528ce344256daf115d4965e",
            description="BERT uncased WordPiece vocabulary, zenodo 3733868",
        ),
        Artifact(
            name="squad-dev",
            filename="dev-v1.1.json",
            url="https://rajpurkar.github.io/SQuAD-explorer/dataset/dev-v1.1.json",
            sha256="95aa6a52d5d6a735563366753ca50492a658031da74f301ac5238b03966972c9",
            size=4_854_279,
            description="SQuAD v1.1 dev set (10,570 questions, 10,833 features)",
        ),
    )
}

# Network behaviour; module-level so tests can shorten them.
CHUNK_BYTES = 1 << 20
TIMEOUT_S = 60.0
RETRIES = 5
RETRY_WAIT_S = 2.0

_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


class _Interrupted(Exception):
    """The connection ended before the whole body came (retry with Range)."""


def _lookup(names: Iterable[str], artifacts: Mapping[str, Artifact]) -> list[Artifact]:
    chosen = []
    for name in names:
        if name not in artifacts:
            valid = ", ".join(artifacts)
            raise InputError(f"unknown artifact {name!r} (valid names: {valid})")
        chosen.append(artifacts[name])
    return chosen


def with_requirements(names: Iterable[str], artifacts: Mapping[str, Artifact] = ARTIFACTS) -> list[str]:
    """The names plus what they require (``bert-large`` brings ``vocab`` and ``squad-dev``).

    Args:
        names: artifact names as the user typed them.
        artifacts: the artifact table.

    Returns:
        Names in order, each once.

    Raises:
        InputError: a name is not in the table.
    """
    out: list[str] = []
    for artifact in _lookup(names, artifacts):
        for name in (artifact.name, *artifact.requires):
            if name not in out:
                out.append(name)
    _lookup(out, artifacts)
    return out


def _root(cache_dir: Path | str | None) -> Path:
    if cache_dir is None:
        return cache_subdir("downloads")
    return Path(cache_dir).expanduser().resolve()


def artifact_path(name: str, cache_dir: Path | str | None = None, *, artifacts: Mapping[str, Artifact] = ARTIFACTS) -> Path:
    """Where an artifact lives in the cache (the file may not exist yet).

    Args:
        name: a key of ``artifacts``.
        cache_dir: the download cache; default ``cache_subdir("downloads")``.
        artifacts: the artifact table.

    Returns:
        ``<cache_dir>/<name>/<filename>``.

    Raises:
        InputError: the name is unknown.
    """
    (artifact,) = _lookup([name], artifacts)
    return _root(cache_dir) / artifact.name / artifact.filename


def _digest(path: Path, algorithm: str) -> str:
    from orchestrator.fileio import sha256_file

    return sha256_file(path, algorithm)


def _check(artifact: Artifact, path: Path) -> tuple[str, str, str] | None:
    """None when ``path`` is the artifact, else (what, expected, got)."""
    size = path.stat().st_size
    if artifact.size is not None and size != artifact.size:
        return "size", f"{artifact.size} bytes", f"{size} bytes"
    algorithm, expected = ("sha256", artifact.sha256) if artifact.sha256 else ("md5", artifact.md5)
    actual = _digest(path, algorithm)
    if actual != expected.lower():
        return algorithm, expected.lower(), actual
    return None


def _verify_or_delete(artifact: Artifact, path: Path, source: str, *, hint: str) -> None:
    bad = _check(artifact, path)
    if bad is None:
        return
    what, expected, actual = bad
    path.unlink(missing_ok=True)
    raise ChecksumError(
        f"{artifact.filename} from {source} has {what} {actual}, expected {expected}; the bad copy {path} was deleted",
        path=str(path),
        expected=expected,
        actual=actual,
        hint=hint,
    )


def _say(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


class _Bar:
    """A rich progress bar with bytes and speed, or nothing when disabled."""

    def __init__(self, enabled: bool) -> None:
        self._progress = None
        if enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            )

    def __enter__(self) -> _Bar:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, exc_type, *exc: object) -> None:
        if self._progress is not None:
            if exc_type is not None:
                # A failed or interrupted fetch: clear the bars, the error line says it all.
                self._progress.live.transient = True
            self._progress.stop()

    def task(self, description: str, total: int | None, done: int) -> object:
        if self._progress is None:
            return None
        return self._progress.add_task(description, total=total, completed=done)

    def reset(self, task: object, total: int | None, done: int) -> None:
        if self._progress is not None and task is not None:
            self._progress.update(task, total=total, completed=done)

    def advance(self, task: object, n: int) -> None:
        if self._progress is not None and task is not None:
            self._progress.advance(task, n)


def _one_request(artifact: Artifact, part: Path, bar: _Bar, task: object) -> None:
    """Fetch the rest of ``artifact`` into ``part``, resuming from its current size.

    Raises _Interrupted when the body stopped short (worth a retry).
    """
    offset = part.stat().st_size if part.exists() else 0
    if artifact.size is not None and offset > artifact.size:
        part.unlink()
        offset = 0
    request = urllib.request.Request(artifact.url, headers={"User-Agent": "orch-fetch"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            return  # nothing left to send: the .part is whole (verified next)
        if exc.code == 429 or exc.code >= 500:
            # Busy or failing server (zenodo rate-limits): worth another try.
            raise _Interrupted(f"HTTP {exc.code} {exc.reason} for {artifact.url}") from None
        raise OrchError(
            f"downloading {artifact.name} failed: HTTP {exc.code} {exc.reason} for {artifact.url}",
            hint="check the URL is reachable from this machine, or use: orch fetch --from DIR",
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if _permanent(reason):
            # No name, or nothing listening: trying again in seconds changes nothing.
            host = urllib.parse.urlsplit(artifact.url).hostname
            raise OrchError(
                f"downloading {artifact.name} failed: cannot reach {host} ({_describe(reason)})",
                hint="check this machine's network and DNS, or copy the files here and use: orch fetch --from DIR",
            ) from None
        raise _Interrupted(f"cannot connect to {artifact.url}: {reason}") from None
    with response:
        mode = "ab"
        if offset and response.status == 206:
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != offset:
                # A range we did not ask for: start again rather than guess.
                response.close()
                part.unlink()
                raise _Interrupted(f"server sent an unexpected Content-Range for {artifact.url}")
        elif offset:
            # The server ignored Range and sends the whole file: restart.
            mode, offset = "wb", 0
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        total = offset + expected if expected is not None else artifact.size
        bar.reset(task, total, offset)
        received = 0
        with open(part, mode) as out:
            while True:
                # Only read errors mean a dropped connection; a write error
                # (disk full) must surface as itself.
                try:
                    chunk = response.read(CHUNK_BYTES)
                except (http.client.HTTPException, OSError) as exc:
                    raise _Interrupted(f"connection to {artifact.url} dropped: {exc}") from None
                if not chunk:
                    break
                out.write(chunk)
                received += len(chunk)
                bar.advance(task, len(chunk))
        if expected is not None and received < expected:
            raise _Interrupted(f"connection to {artifact.url} ended after {offset + received} of {total} bytes")


def _permanent(reason: object) -> bool:
    """A connection error that a retry cannot fix: no such host, or connection refused."""
    import socket

    return isinstance(reason, (socket.gaierror, ConnectionRefusedError))


def _describe(reason: object) -> str:
    import socket

    if isinstance(reason, socket.gaierror):
        return f"the name does not resolve: {reason.strerror or reason}"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    return str(reason)


def _download(artifact: Artifact, dest: Path, bar: _Bar) -> None:
    part = dest.with_name(dest.name + ".part")
    done = part.stat().st_size if part.exists() else 0
    task = bar.task(f"{artifact.name} ({artifact.filename})", artifact.size, done)
    last: str = ""
    for attempt in range(RETRIES + 1):
        if attempt:
            time.sleep(RETRY_WAIT_S * attempt)
        try:
            _one_request(artifact, part, bar, task)
            break
        except _Interrupted as exc:
            last = str(exc)
    else:
        kept = part.stat().st_size if part.exists() else 0
        again = (f"run orch fetch {artifact.name} again to resume from {part} ({kept} bytes kept)" if kept
                 else f"run orch fetch {artifact.name} again")
        raise OrchError(
            f"downloading {artifact.name} failed after {RETRIES + 1} tries: {last}",
            hint=f"{again}, or use: orch fetch --from DIR",
        )
    _verify_or_delete(
        artifact, part, artifact.url, hint=f"run: orch fetch {artifact.name} to download it again, or use --from DIR"
    )
    os.replace(part, dest)


@contextlib.contextmanager
def _locked(dest: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``<dest>.lock``: two fetches into one cache must not
    append to the same ``.part`` (the second waits, then finds the file present).

    The lock file is removed when released. A waiter that then holds a lock on
    the removed file sees that its inode is gone from the path and takes the
    lock again, on the path's current file.
    """
    path = dest.with_name(dest.name + ".lock")
    while True:
        lock = open(path, "a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                same = os.fstat(lock.fileno()).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
        except BaseException:
            lock.close()
            raise
        lock.close()  # the holder before us removed it: lock the path's file now
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


def _present(artifact: Artifact, dest: Path) -> bool:
    """True when ``dest`` holds the verified artifact; a bad copy is removed (and said)."""
    if not dest.exists():
        return False
    bad = _check(artifact, dest)
    if bad is None:
        return True
    what, expected, actual = bad
    _say(f"orch: {dest} has {what} {actual}, expected {expected}: replacing it")
    dest.unlink()
    return False


def fetch(
    names: Iterable[str],
    *,
    cache_dir: Path | str | None = None,
    artifacts: Mapping[str, Artifact] = ARTIFACTS,
    progress: bool = True,
) -> list[Path]:
    """Download artifacts into the cache, verified; files already there and good are kept.

    Exactly the names given are fetched; use ``with_requirements`` to add
    what a model needs.

    Args:
        names: keys of ``artifacts``.
        cache_dir: the download cache; default ``cache_subdir("downloads")``.
        artifacts: the artifact table (tests pass their own).
        progress: show a rich progress bar on stderr.

    Returns:
        The verified paths, in the order of ``names``.

    Raises:
        InputError: an unknown name.
        ChecksumError: a downloaded file does not match its checksum (it is deleted).
        OrchError: the download failed (HTTP error, or the connection kept dropping).
    """
    chosen = _lookup(names, artifacts)
    paths = []
    with _Bar(progress) as bar:
        for artifact in chosen:
            dest = artifact_path(artifact.name, cache_dir, artifacts=artifacts)
            dest.parent.mkdir(parents=True, exist_ok=True)
            with _locked(dest):
                if not _present(artifact, dest):
                    _download(artifact, dest, bar)
            paths.append(dest)
    return paths


def _find_in(directory: Path, artifact: Artifact) -> Path:
    # A flat folder of files, or a copy of another machine's download cache.
    for candidate in (directory / artifact.filename, directory / artifact.name / artifact.filename):
        if candidate.is_file():
            return candidate
    raise InputError(
        f"--from {directory}: no {artifact.filename} for {artifact.name} "
        f"(looked for {artifact.filename} and {artifact.name}/{artifact.filename})",
        hint=f"download it from {artifact.url} on a connected machine and copy it there",
    )


def import_from(
    directory: Path | str,
    names: Iterable[str],
    *,
    cache_dir: Path | str | None = None,
    artifacts: Mapping[str, Artifact] = ARTIFACTS,
) -> list[Path]:
    """Copy artifacts from a folder on disk into the cache, verified (``orch fetch --from DIR``).

    Each file is looked for as ``DIR/<filename>`` or ``DIR/<name>/<filename>``;
    it is copied to a ``.part`` file, verified, then renamed into place.

    Args:
        directory: the folder holding the files.
        names: keys of ``artifacts``.
        cache_dir: the download cache; default ``cache_subdir("downloads")``.
        artifacts: the artifact table.

    Returns:
        The verified paths in the cache, in the order of ``names``.

    Raises:
        InputError: an unknown name, a missing folder or file.
        ChecksumError: a file does not match its checksum (the copy is deleted,
            the source is left alone).
    """
    source_dir = Path(directory).expanduser().resolve()
    if not source_dir.is_dir():
        raise InputError(f"--from {directory}: not a folder", hint="give the folder holding the downloaded files")
    chosen = _lookup(names, artifacts)
    paths = []
    for artifact in chosen:
        source = _find_in(source_dir, artifact)
        dest = artifact_path(artifact.name, cache_dir, artifacts=artifacts)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with _locked(dest):
            if source.resolve() == dest.resolve():
                _verify_or_delete(artifact, dest, str(source), hint=f"run: orch fetch {artifact.name}")
            elif not _present(artifact, dest):
                part = dest.with_name(dest.name + ".part")
                shutil.copyfile(source, part)
                hint = f"copy a good {artifact.filename} from {artifact.url}, or run: orch fetch {artifact.name}"
                _verify_or_delete(artifact, part, str(source), hint=hint)
                os.replace(part, dest)
        paths.append(dest)
    return paths
