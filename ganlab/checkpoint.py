"""Atomic checkpoints: a crash mid-write never leaves a truncated `last.pt`."""

from __future__ import annotations

import os
from pathlib import Path

import torch


def save_checkpoint(state: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict:
    # Only tensors, numbers, strings and containers are stored, so weights_only holds.
    return torch.load(path, map_location=device, weights_only=True)
