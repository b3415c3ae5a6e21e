"""Writing files so that a failure never leaves half a file, and says what to do.

Every file ganlab writes goes through `atomic_write`: a temporary beside the target,
fsync, rename. A write that fails (disk full, read-only disk, no permission) removes its
temporary and raises StorageError, whose one-line message names the path and what to do.
"""

from __future__ import annotations

import errno
import io
import json
import math
import os
from pathlib import Path
from typing import Any

TMP_SUFFIX = ".tmp"
ELSEWHERE = "write elsewhere: hydra.run.dir=... for a run, --out for ganlab.rerun / ganlab.compare"


class StorageError(RuntimeError):
    """A file could not be written; the message names the path and what to do, `strerror`
    the system's reason (for a caller that words its own message)."""

    def __init__(self, message: str, strerror: str | None = None) -> None:
        super().__init__(message)
        self.strerror = strerror


def explain(err: OSError, path: Path) -> str:
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left to write {path}: free some space, or {ELSEWHERE}"
    if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"{path} cannot be written ({err.strerror}): {ELSEWHERE}"
    return f"could not write {path} ({err.strerror or err}): {ELSEWHERE}"


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write(path: Path | str, data: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_file(tmp, data)
        os.replace(tmp, path)
    except OSError as e:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise StorageError(explain(e, path), e.strerror or str(e)) from None


def json_safe(value: Any) -> Any:
    """NaN and infinities become null: result files stay strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def atomic_write_json(path: Path | str, data: Any) -> None:
    atomic_write(path, json.dumps(json_safe(data), indent=2, allow_nan=False).encode())


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporaries a killed writer left under `folder`; returns them."""
    stale = sorted(folder.rglob(f"*{TMP_SUFFIX}")) if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def save_figure(fig, path: Path) -> None:
    """A matplotlib figure as a PNG, written atomically."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    atomic_write(path, buffer.getvalue())


def lock_holder(path: Path) -> dict | None:
    """The holder ({"pid", "host", "since"}, or {} when unreadable) of the flock on `path`
    (a run dir's `.lock`), or None when no process holds it."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return read_holder(fd)
    finally:
        os.close(fd)  # closing releases a lock this check took
    return None


def read_holder(fd: int) -> dict:
    """What a lock file open at `fd` says of its holder ({} when unreadable)."""
    try:
        holder = json.loads(os.read(fd, 4096).decode(errors="replace"))
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def check_writable(target: Path) -> None:
    """`target` (a run or sweep dir, made or not) must take a folder: a read-only or full disk
    ends in one line (StorageError) before anything starts, not in a traceback later."""
    import tempfile

    existing = next(p for p in [target, *target.absolute().parents] if p.exists())
    try:
        tempfile.TemporaryDirectory(dir=existing, prefix=".ganlab-probe-").cleanup()
    except OSError as e:
        raise StorageError(explain(e, target)) from None
