"""Errors a user can fix. Jobs print their message (no stack trace) and exit with 1."""
from __future__ import annotations

__all__ = ["JobError", "DataError", "CheckpointError", "ConfigError", "TrainingError", "require"]


class JobError(RuntimeError):
    """Bad input to a job: the message names the field and the fix."""


class DataError(JobError):
    """Missing, empty or inconsistent data."""


class CheckpointError(JobError):
    """A checkpoint that is missing, corrupt, or for another model or space."""


class TrainingError(JobError):
    """Training cannot go on (e.g. a non-finite loss); the last good checkpoint is kept."""


class ConfigError(JobError):
    """A setting outside the range it can work in."""


def require(ok: bool, field: str, value: object, fix: str) -> None:
    """One range check of a config field: ``ConfigError`` naming the field, its value and the fix."""
    if not ok:
        raise ConfigError(f"{field}={value!r} cannot work: {fix}")
