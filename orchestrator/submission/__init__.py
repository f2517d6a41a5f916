"""The MLPerf submission tree: checks runs, writes the tree, tarball and summary."""

from orchestrator.submission.tree import SubmissionResult, assemble

__all__ = ["SubmissionResult", "assemble"]
