"""The per-run `result.json`: what a run was (trick, comparability, hparams) and what it got.

The file is rewritten atomically at start, at every evaluation and at the end, so a run that
crashes, diverges or is killed always leaves a readable record with its status.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

STATUSES = ("running", "completed", "diverged", "failed")
TERMINAL = ("completed", "diverged")  # re-launching such a run does nothing

# result key -> config key: every trick toggle, named as in the config
TRICK_KEYS = {
    "labels": "labels.name",
    "labels.fraction": "labels.fraction",
    "loss": "loss.name",
    "smoothing.real_target": "smoothing.real_target",
    "smoothing.fake_target": "smoothing.fake_target",
    "norm.g": "norm.g",
    "norm.d": "norm.d",
    "norm.split_real_fake": "norm.split_real_fake",
    "norm.ref_batch_size": "norm.ref_batch_size",
    "train.d_steps": "train.d_steps",
    "train.g_steps": "train.g_steps",
    "model.g_width": "model.g_width",
    "model.d_width": "model.d_width",
    "extras.minibatch_discrimination.kernels": "extras.minibatch_discrimination.kernels",
    "extras.minibatch_discrimination.dims": "extras.minibatch_discrimination.dims",
    "extras.historical_averaging": "extras.historical_averaging",
}
# keys left out of `hparams`: the seed, what `comparability` already holds (data, model
# family, evaluation), and what does not change what a run computes (paths, logging)
NON_HPARAM_KEYS = ("seed", "data.", "eval.", "model.name", "train.device", "train.progress",
                   "train.log_every", "train.checkpoint_every", "logger.", "smoothing.name",
                   "fanout.", "study.name", "study.question", "study.baselines")


def flatten(cfg: DictConfig | dict, prefix: str = "") -> dict[str, Any]:
    container = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    flat: dict[str, Any] = {}
    for key, value in container.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def trick_dict(cfg: DictConfig) -> dict[str, Any]:
    return {name: OmegaConf.select(cfg, key) for name, key in TRICK_KEYS.items()}


def hparams_dict(cfg: DictConfig) -> dict[str, Any]:
    """Everything else that shapes the experiment; runs of one variant should agree on it."""
    tricks = set(TRICK_KEYS.values())
    return {k: v for k, v in flatten(cfg).items()
            if k not in tricks and not k.startswith(NON_HPARAM_KEYS)}


def comparability_dict(cfg: DictConfig, eval_protocol: dict | None) -> dict[str, Any]:
    """What decides whether two runs may be compared at all."""
    return {
        # The tutorial's rule: models trained with labels are compared with each other only.
        "labels": "none" if cfg.labels.name == "none" else "labelled",
        "dataset": cfg.data.name,
        "split": cfg.data.split,
        "resolution": cfg.data.image_size or "2d",
        "model": cfg.model.name,
        "eval": eval_protocol,
    }


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
