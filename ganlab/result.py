"""The per-run `result.json`: what a run was (trick, comparability, hparams) and what it got.

The file is rewritten atomically once a launch is accepted, at every evaluation and at the
end, so a run that crashes, diverges, is interrupted or killed leaves a readable record with
its status. A file that is not such a record raises RecordError naming it.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ganlab.config import VARIANT_ROLES, Role, keys_with_role
from ganlab.storage import atomic_write_json

STATUSES = ("completed", "diverged", "failed", "interrupted", "running")
TERMINAL = ("completed", "diverged")  # re-launching such a run does nothing
REQUIRED = ("status", "seed", "trick", "comparability", "metrics", "history")


class RecordError(ValueError):
    """A result.json that cannot be read as a run's record; the message names it."""


def trick_dict(cfg: DictConfig) -> dict[str, Any]:
    """Every trick toggle of the run (ganlab.config's role `trick`), by its config key."""
    return keys_with_role(cfg, {Role.TRICK})


def hparams_dict(cfg: DictConfig) -> dict[str, Any]:
    """Everything else that shapes what is trained; runs of one variant agree on it."""
    return keys_with_role(cfg, VARIANT_ROLES - {Role.TRICK})


def comparability_dict(cfg: DictConfig, eval_protocol: dict | None) -> dict[str, Any]:
    """What decides whether two runs may be compared at all: label use (the tutorial's rule:
    models trained with labels are compared with each other only), the data and model
    family (role `class`), and the evaluation protocol the scores were computed under."""
    from ganlab.labels import LABEL_MODES  # torch: training time only, never the comparer's

    labelled = LABEL_MODES.choose(cfg.labels.name).uses_labels
    return {"labels": "labelled" if labelled else "none",
            **keys_with_role(cfg, {Role.CLASS}), "eval": eval_protocol}


def study_record(cfg: DictConfig) -> dict[str, Any]:
    """result.json's `study`: the preset's question and baselines, and the sequential design
    of a sweep with `fanout.seeds=auto` (`design`: the looks the comparer analyses at)."""
    study = OmegaConf.to_container(cfg.study, resolve=True)
    fan = cfg.fanout
    if fan.seeds == "auto":
        study["design"] = {"min": fan.seeds_min, "step": fan.seeds_step, "max": fan.seeds_max}
    return study


def defaults_record(data: str) -> dict[str, Any]:
    """result.json's `defaults`: the trick and hparam values of the default config of
    `data` (what "the trick off" means for a sweep over it)."""
    return dict(_defaults(data))


@functools.cache
def _defaults(data: str) -> tuple:
    from ganlab.configure import compose  # training time only: Hydra composes conf/

    cfg = compose([f"data={data}"])
    return tuple({**trick_dict(cfg), **hparams_dict(cfg)}.items())


def seedless(overrides: list[str] | None) -> list[str] | None:
    """A launch's overrides without its seed (and the seeds a stacked job trains)."""
    if overrides is None:
        return None
    return [o for o in overrides
            if o.split("=", 1)[0].lstrip("+~") not in ("seed", "fanout.group_seeds")]


def count_statuses(results: list[dict]) -> Counter:
    """Runs by status (the one count behind the sweep line, the comparer and the report)."""
    return Counter(r["status"] for r in results)


def read_result(run_dir: Path | str) -> dict | None:
    """The run's record; None if it has none; RecordError if the file is not a record."""
    path = Path(run_dir) / "result.json"
    if not path.exists():
        return None
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise RecordError(f"{path} is unreadable ({e})") from None
    return parse_result(path, raw)


def parse_result(path: Path, raw: bytes) -> dict:
    """The record in `raw`, the bytes of `path`; RecordError if they are not a record."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RecordError(f"{path} is unreadable ({e})") from None
    missing = [k for k in REQUIRED if not isinstance(data, dict) or k not in data]
    if missing:
        raise RecordError(f"{path} is not a complete run record (no {', '.join(missing)})")
    if data["status"] not in STATUSES:
        raise RecordError(f"{path} has an unknown status {data['status']!r}")
    return data


class ResultFile:
    """The run's result.json, kept in memory and rewritten whole on every update.

    With `live=False` updates stay in memory until `go_live()`: a relaunch writes nothing
    over the previous record until it has been accepted."""

    def __init__(self, path: Path, live: bool = True, **fields: Any):
        self.path, self.live = path, live
        self.data: dict[str, Any] = {"status": "running", "error": None, "seed": None,
                                     "trick": {}, "comparability": {}, "hparams": {},
                                     "metrics": {}, "history": [], "step": 0,
                                     "study": {}, "host": {},
                                     # the config group options the run was launched with
                                     "choices": {},
                                     # the protocol the history was evaluated under, where
                                     # a re-scoring changed `comparability.eval` since
                                     "history_eval": None,
                                     # the eval.* settings, so that a run that failed before
                                     # its protocol was resolved finds its class
                                     "eval_settings": None,
                                     # the launch's overrides without the seed: what runs
                                     # another seed of this variant (compare --plan)
                                     "overrides": None,
                                     # the trick and hparam values a run of this data gets
                                     # by default: the comparer's "off" variant, without
                                     # composing today's conf/
                                     "defaults": None,
                                     # where the run logs to W&B (ganlab.tracking: project,
                                     # entity, mode, id, group, sweep, name, job type)
                                     "wandb": None, **fields}

    # the launches of the run before this one (`host.launches` keeps one entry per launch:
    # where it ran, its threads, Adam kernel, seed stack, device, and the steps it trained);
    # None: a record of its own (no launch history)
    launches_before: list[dict] | None = None

    def update(self, **fields: Any) -> None:
        unknown = set(fields) - set(self.data)
        assert not unknown, f"unknown result.json keys {unknown}"
        if "status" in fields:
            assert fields["status"] in STATUSES, fields["status"]
        self.data.update(fields)
        if self.live:
            self._write()

    def go_live(self) -> None:
        self.live = True
        self._write()

    def _write(self) -> None:
        if self.launches_before is not None:
            host = {k: v for k, v in self.data["host"].items() if k != "launches"}
            self.data["host"] = {**host, "launches": [*self.launches_before,
                                                      _launch(host, self.data)]}
        atomic_write_json(self.path, self.data)


def launches_of(record: dict | None) -> list[dict]:
    """A record's launches (`host.launches`), oldest first; a record written before launches
    were kept has its one `host`."""
    if not record:
        return []
    host = record.get("host") or {}
    if not isinstance(host, dict):
        return []
    if "launches" in host:  # a hand-damaged entry (not a mapping) names nothing
        launches = host["launches"]
        return [e for e in launches if isinstance(e, dict)] if isinstance(launches, list) else []
    return [_launch(host, record)] if host else []


def launch_values(record: dict | None, *keys: str) -> list[str]:
    """The distinct values a record's launches name, oldest first, each launch read at the
    first of `keys` it has (("gpu", "cpu"): the GPU's name, else the CPU model): one value
    for a run trained in one place, ["A", "B"] for one begun on A and resumed on B."""
    seen = (next((str(e[k]) for k in keys if e.get(k)), None) for e in launches_of(record))
    return list(dict.fromkeys(v for v in seen if v is not None))


def _launch(host: dict, record: dict) -> dict:
    """One entry of `host.launches`: where and how a launch ran, and how far it got."""
    return {**host, "status": record.get("status"), "to_step": record.get("step")}
