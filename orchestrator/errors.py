"""The one root exception of orch and its subclasses.

The CLI turns every ``OrchError`` into one line on stderr and exit code 2;
the traceback is printed only with ``--debug``.
"""

from __future__ import annotations


class OrchError(Exception):
    """Root of every error orch reports to its user.

    Args:
        message: one sentence saying what is wrong, naming the file, node or
            flag concerned.
        hint: what the user can do about it (appended after the message).
    """

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if not self.hint:
            return self.message
        return f"{self.message.rstrip('.')}; {self.hint}"

    def lines(self) -> list[str]:
        """What the CLI prints, one ``orch: error:`` line each (several for an error of several nodes)."""
        return [str(self)]


def is_interrupt(exc: BaseException) -> bool:
    """True for Ctrl-C (``KeyboardInterrupt``) and for the CLI's SIGTERM error (it carries ``signal_name``)."""
    return isinstance(exc, KeyboardInterrupt) or hasattr(exc, "signal_name")


class InputError(OrchError):
    """A flag, file or value given by the user is unusable."""


class DatasetError(InputError):
    """A SQuAD data set or vocabulary file is missing or malformed."""


class ModelError(InputError):
    """A model file is missing or does not match the MLPerf BERT interface."""


class BackendError(OrchError):
    """A backend is unknown, not installed, or cannot run as asked."""


class ChecksumError(OrchError):
    """A downloaded or imported file does not have the expected sha256."""

    def __init__(self, message: str, *, path: str, expected: str, actual: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.path = path
        self.expected = expected
        self.actual = actual


class RunError(OrchError):
    """A benchmark run could not be started or completed."""


class SubmissionError(OrchError):
    """A submission tree cannot be assembled from the given runs."""


class RemoteError(OrchError):
    """A command on a remote node failed.

    Attributes carry what is needed to report it: the node, the command,
    its exit code and the last lines of its stderr.
    """

    def __init__(
        self,
        message: str,
        *,
        host: str,
        command: str | None = None,
        returncode: int | None = None,
        stderr_tail: str = "",
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.host = host
        self.command = command
        self.returncode = returncode
        self.stderr_tail = stderr_tail


class BuildError(OrchError):
    """A Docker image build failed; ``build_log`` holds the tail of its log."""

    def __init__(self, message: str, *, build_log: str = "", hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.build_log = build_log


class Interrupted(OrchError):
    """The user stopped orch (Ctrl-C / SIGINT, or SIGTERM): exit 130 or 143.

    Raised from the SIGTERM handler, and by the core where it turns a
    KeyboardInterrupt into an orderly stop (a run left as ``<out>.failed-<time>``).
    """

    def __init__(self, message: str = "interrupted", *, signal_name: str = "SIGINT", hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.signal_name = signal_name
        self.exit_code = 143 if signal_name == "SIGTERM" else 130


def error_class(name: str) -> type[OrchError]:
    """The ``OrchError`` subclass called ``name`` (``OrchError`` itself when unknown)."""
    pending: list[type[OrchError]] = [OrchError]
    while pending:
        cls = pending.pop()
        if cls.__name__ == name:
            return cls
        pending.extend(cls.__subclasses__())
    return OrchError


def rebuild_error(name: str, message: str, hint: str | None = None, exit_code: int = 2) -> OrchError:
    """An error that travelled as (type, message, hint) between processes, as its own class.

    Subclasses that carry more data (a host, a path) are rebuilt with the
    message and hint only; their extra attributes are not part of the record.
    """
    cls = error_class(name)
    if cls is Interrupted:
        return Interrupted(message, signal_name="SIGTERM" if exit_code == 143 else "SIGINT", hint=hint)
    error = cls.__new__(cls)
    OrchError.__init__(error, message, hint=hint)
    if exit_code != cls.exit_code:
        error.exit_code = exit_code
    return error
