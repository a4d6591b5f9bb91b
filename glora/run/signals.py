"""Graceful stops. A scheduler ends a job with SIGTERM (SLURM sends SIGUSR1 first when it is
about to preempt one, with ``--signal=USR1@<seconds>``); dying there loses the epoch and may
leave a temp file half-written. Inside :class:`StopRequest` these signals only set a flag:
the training loop finishes its step, writes a checkpoint of that step and raises
:class:`Stopped`, which the job prints as one line and exits with 128 + the signal number."""
from __future__ import annotations

import signal
import threading
from typing import Optional

from .errors import JobError

__all__ = ["STOP_SIGNALS", "StopRequest", "Stopped"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Stopped(JobError):
    """Training stopped on a signal after writing a checkpoint of its last step."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


class StopRequest:
    """While entered (in the main thread), SIGTERM and SIGUSR1 set ``signum`` instead of
    killing the process; the previous handlers come back on exit."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame) -> None:
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""
