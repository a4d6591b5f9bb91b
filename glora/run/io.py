"""The one atomic write: every file a run leaves is written to a hidden temp file beside
it and renamed over the target, so a crash at any instant leaves the old file or the new
one, never half of either."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from .errors import JobError

__all__ = ["TEMP_SUFFIX", "atomic_write", "ensure_writable", "remove_temp_files", "write_json_atomic", "write_text_atomic"]

TEMP_SUFFIX = ".tmp"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Run ``write(tmp_path)``, then rename the temp file onto ``path``. The file gets the
    user's umask (``mkstemp`` alone would make it 0600, unreadable to the other nodes of
    a multi-node run on a shared filesystem)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def remove_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the temp files that killed writes left in ``folder`` (``.<name>.<random>.tmp``);
    call it only where no other process is writing."""
    removed = []
    for path in Path(folder).glob(f".*{TEMP_SUFFIX}"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def ensure_writable(folder: str | os.PathLike) -> None:
    """Fail at start, not at export, when an output dir cannot be written."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as err:
        raise JobError(f"output dir {folder} is not writable ({err.strerror}); point paths.runs or hydra.run.dir elsewhere") from None
