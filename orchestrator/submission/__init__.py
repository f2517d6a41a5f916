"""The MLPerf submission tree: checks runs, writes the tree, tarball and summary."""

from orchestrator.submission.assemble import SubmissionResult, assemble

__all__ = ["SubmissionResult", "assemble"]
