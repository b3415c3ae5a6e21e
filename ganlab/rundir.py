"""A run directory has one owner, and a launch that fails never spoils what it holds.

- `RunDirLock`: an OS lock (flock on `<run dir>/.lock`, released by the OS if the process
  dies); a second launch into a busy dir stops at once, naming the holder's pid and host.
- `read_previous`: the record a relaunch finds; an unreadable one is moved aside
  (`result.damaged-<time>.json`), never silently overwritten.
- `write_failure`: what a launch that failed before it was accepted leaves beside the
  previous record (`result.failed-<time>.json`), which stays as it was; the sweep summary
  counts these attempts.
- `save_config`: the composed config (`.hydra/config.yaml`, `.hydra/overrides.yaml`), written
  once a launch is accepted.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ganlab.result import RecordError, read_result
from ganlab.storage import (
    StorageError,
    atomic_write,
    atomic_write_json,
    explain,
    lock_holder,
    read_holder,
)

log = logging.getLogger(__name__)
LOCK_NAME = ".lock"


class RunDirBusy(RuntimeError):
    """Another process holds the run dir; the message names it."""


def _stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + f"-{os.getpid()}"


class RunDirLock:
    """Exclusive ownership of a run dir for the life of a launch."""

    def __init__(self, run_dir: Path):
        self.run_dir, self.fd = Path(run_dir), None

    def __enter__(self) -> RunDirLock:
        path = self.run_dir / LOCK_NAME
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise StorageError(explain(e, path)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = read_holder(fd)
            os.close(fd)
            raise RunDirBusy(f"{self.run_dir} is in use by {_describe_holder(holder)}; wait "
                             "for it to end, or launch into another hydra.run.dir") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def held_by_another(run_dir: Path) -> str | None:
    """Who holds `run_dir`'s lock now (another process), or None when it is free."""
    holder = lock_holder(Path(run_dir) / LOCK_NAME)
    return None if holder is None else _describe_holder(holder)


def _describe_holder(holder: dict) -> str:
    try:
        return f"pid {holder['pid']} on {holder['host']} (since {holder['since']})"
    except KeyError:
        return "another process"


def read_previous(run_dir: Path) -> dict | None:
    """The run dir's record before this launch; a damaged one is moved aside, kept."""
    try:
        return read_result(run_dir)
    except RecordError as e:
        aside = Path(run_dir) / f"result.damaged-{_stamp()}.json"
        os.replace(Path(run_dir) / "result.json", aside)
        log.warning("%s; moved it to %s and starting a new record", e, aside)
        return None


def write_failure(run_dir: Path, record: dict, kind: str = "failed") -> Path:
    """`result.<kind>-<time>.json`: `failed` for a launch refused before it was accepted,
    `replaced` for a record that a relaunch took the place of."""
    path = Path(run_dir) / f"result.{kind}-{_stamp()}.json"
    atomic_write_json(path, record)
    return path


def save_config(run_dir: Path, cfg: DictConfig, overrides: list[str] | None) -> None:
    hydra_dir = Path(run_dir) / ".hydra"
    atomic_write(hydra_dir / "config.yaml", OmegaConf.to_yaml(cfg).encode())
    if overrides is not None:
        atomic_write(hydra_dir / "overrides.yaml", OmegaConf.to_yaml(list(overrides)).encode())
