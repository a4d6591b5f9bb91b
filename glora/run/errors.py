"""Errors a user can fix. Jobs print their message (no stack trace) and exit with 1."""
from __future__ import annotations

import math

__all__ = ["JobError", "DataError", "CheckpointError", "ConfigError", "TrainingError", "param_count", "require"]


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


def param_count(value: object, field: str, fix: str, minimum: int = 1) -> int:
    """A number of trainable params given as a number (``2e4`` reads as a float): a whole,
    finite number ≥ ``minimum``, returned as an int, so it is converted once, where it is
    read; 0.5, inf, nan or a string is one ``ConfigError``."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value == int(value) and value >= minimum
    require(ok, field, value, fix)
    return int(value)
