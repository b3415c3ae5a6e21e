"""Checkpoints that a crash or a damaged file cannot take away.

`save_checkpoint` serialises the state once, writes it atomically with its SHA-256 beside
it (`last.pt.sha256`), and, with `keep_previous`, first moves the checkpoint it replaces to
`prev.pt` (hash and all). `load_checkpoint` verifies the hash before loading (a hash that
a save stopped half-way left beside the other file's name counts too: the content is what
it vouches for). `load_latest`
returns the newest checkpoint of a folder that verifies and loads, warning with the file's
name when it has to fall back to the previous one, and raises CheckpointError naming the
files when none does.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from pathlib import Path

import torch

from ganlab.storage import StorageError, atomic_write, explain

log = logging.getLogger(__name__)
LAST, PREVIOUS = "last.pt", "prev.pt"


class CheckpointError(RuntimeError):
    """No usable checkpoint; the message names the files and what to do."""


def _hash_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def save_checkpoint(state: dict, path: Path, keep_previous: bool = False) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    if keep_previous and path.exists():
        previous = path.with_name(PREVIOUS)
        try:
            os.replace(path, previous)
            if _hash_path(path).exists():
                os.replace(_hash_path(path), _hash_path(previous))
        except OSError as e:
            raise StorageError(explain(e, previous)) from None
    atomic_write(path, data)
    atomic_write(_hash_path(path), hashlib.sha256(data).hexdigest().encode())


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict:
    """The state in `path`, after checking it against its hash (when it has one)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{path} cannot be read ({e.strerror})") from None
    hash_file = _hash_path(path)
    if hash_file.exists():
        digest = hashlib.sha256(data).hexdigest()
        # a save stopped between moving last.pt to prev.pt and moving its hash leaves the
        # hash beside the other name: any hash of the folder vouches for the content
        if digest != hash_file.read_text().strip() and digest not in _folder_hashes(path):
            raise CheckpointError(f"{path} is damaged: its content does not match "
                                  f"{hash_file.name}")
    try:
        # Only tensors, numbers, strings and containers are stored, so weights_only holds.
        return torch.load(io.BytesIO(data), map_location=device, weights_only=True)
    except Exception as e:  # truncated or foreign file
        raise CheckpointError(f"{path} is damaged: {str(e).splitlines()[0]}") from None


def _folder_hashes(path: Path) -> set[str]:
    hashes = set()
    for name in (LAST, PREVIOUS):
        try:
            hashes.add(_hash_path(path.with_name(name)).read_text().strip())
        except OSError:
            continue
    return hashes


def load_latest(folder: Path, device: torch.device | str = "cpu") -> dict | None:
    """The newest good checkpoint in `folder` (`last.pt`, else `prev.pt`); None if the
    folder holds none at all."""
    candidates = [folder / LAST, folder / PREVIOUS]
    problems = []
    for path in candidates:
        if not path.exists():
            continue
        try:
            state = load_checkpoint(path, device)
        except CheckpointError as e:
            problems.append(str(e))
            continue
        if problems:
            log.warning("%s; resuming from %s instead (step %s)", "; ".join(problems), path,
                        state.get("counters", {}).get("step"))
        return state
    if problems:
        raise CheckpointError(f"no usable checkpoint in {folder}: {'; '.join(problems)}. "
                              "Move the folder away to start this run over")
    return None
