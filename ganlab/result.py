"""The per-run `result.json`: what a run was (trick, comparability, hparams) and what it got.

The file is rewritten atomically at start, at every evaluation and at the end, so a run that
crashes, diverges or is killed always leaves a readable record with its status.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from ganlab.config import Role, keys_with_role

STATUSES = ("completed", "diverged", "failed", "running")
TERMINAL = ("completed", "diverged")  # re-launching such a run does nothing


def trick_dict(cfg: DictConfig) -> dict[str, Any]:
    """Every trick toggle of the run (ganlab.config's role `trick`), by its config key."""
    return keys_with_role(cfg, {Role.TRICK})


def hparams_dict(cfg: DictConfig) -> dict[str, Any]:
    """Everything else that shapes what is trained; runs of one variant agree on it."""
    return keys_with_role(cfg, {Role.HPARAM, Role.BUDGET})


def comparability_dict(cfg: DictConfig, eval_protocol: dict | None) -> dict[str, Any]:
    """What decides whether two runs may be compared at all: label use (the tutorial's rule:
    models trained with labels are compared with each other only), the data and model
    family (role `class`), and the evaluation protocol the scores were computed under."""
    return {"labels": "none" if cfg.labels.name == "none" else "labelled",
            **keys_with_role(cfg, {Role.CLASS}), "eval": eval_protocol}


def count_statuses(results: list[dict]) -> Counter:
    """Runs by status (the one count behind the sweep line, the comparer and the report)."""
    return Counter(r["status"] for r in results)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(_json_safe(data), f, indent=2, allow_nan=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_result(run_dir: Path | str) -> dict | None:
    path = Path(run_dir) / "result.json"
    if not path.exists():
        return None
    with open(path) as f:
        return json.load(f)


class ResultFile:
    """The run's result.json, kept in memory and rewritten whole on every update."""

    def __init__(self, path: Path, **fields: Any):
        self.path = path
        self.data: dict[str, Any] = {"status": "running", "error": None, "seed": None,
                                     "trick": {}, "comparability": {}, "hparams": {},
                                     "metrics": {}, "history": [], "step": 0,
                                     "study": {}, "host": {}, **fields}

    def update(self, **fields: Any) -> None:
        unknown = set(fields) - set(self.data)
        assert not unknown, f"unknown result.json keys {unknown}"
        if "status" in fields:
            assert fields["status"] in STATUSES, fields["status"]
        self.data.update(fields)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path, self.data)
