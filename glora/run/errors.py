"""Errors a user can fix. Jobs print their message (no stack trace) and exit with 1."""
from __future__ import annotations

__all__ = ["JobError", "DataError", "CheckpointError", "TrainingError"]


class JobError(RuntimeError):
    """Bad input to a job: the message names the field and the fix."""


class DataError(JobError):
    """Missing, empty or inconsistent data."""


class CheckpointError(JobError):
    """A checkpoint that is missing, corrupt, or for another model or space."""


class TrainingError(JobError):
    """Training cannot go on (e.g. a non-finite loss); the last good checkpoint is kept."""
