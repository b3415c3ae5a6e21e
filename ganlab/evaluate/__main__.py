"""Re-score a finished run from its checkpoint, without retraining.

    python -m ganlab.evaluate RUN_DIR [eval.num_samples=50000] [eval.features=...] ...

Builds G from the run's saved config (`.hydra/config.yaml`) and loads it from
`checkpoints/last.pt`, applies the overrides (evaluation, schedule and infrastructure keys
only: e.g. `eval.*`, `data.root`, `train.device`), scores G once under that protocol and
updates `result.json`: its `eval/...` metrics and `comparability.eval` (the protocol the new
scores were computed under). Training history is kept as it was. An `eval.num_samples`
override sets the number of generated samples of this final score. A run that logged to W&B
gets the new scores in the same W&B run (its id is in the run dir; offline, the next
`wandb sync` carries them): the summary's final values and the config's protocol.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from omegaconf import OmegaConf

from ganlab.checkpoint import CheckpointError
from ganlab.config import ConfigError, flatten
from ganlab.evaluate import build_evaluator
from ganlab.evaluate.saved import load_trained
from ganlab.evaluate.score import score
from ganlab.result import RecordError, ResultFile, comparability_dict, read_result
from ganlab.rundir import RunDirBusy, RunDirLock
from ganlab.storage import StorageError
from ganlab.tracking import RunIdentity, build_tracker


def rescore(run_dir: Path, overrides: list[str]) -> dict:
    if not (run_dir / "result.json").exists():
        raise ConfigError(f"{run_dir} has no result.json")
    with RunDirLock(run_dir):  # not while the run trains, nor twice at once
        return _rescore(run_dir, overrides)


def _rescore(run_dir: Path, overrides: list[str]) -> dict:
    previous = read_result(run_dir)
    cfg, gan, step = load_trained(run_dir, overrides)
    if step != previous["step"]:  # e.g. last.pt damaged and prev.pt older than the record
        raise CheckpointError(
            f"{run_dir}'s record is at step {previous['step']} but its newest good checkpoint "
            f"is at step {step}; scores of that G would not be the run's. `python -m "
            f"ganlab.rerun {run_dir} --out {run_dir}` trains it back to its record's step "
            "(bit for bit on CPU; the record is left as it is), then re-score")
    evaluator = build_evaluator(cfg, gan.data, gan.device)
    metrics, n = score(gan, evaluator, seed=cfg.seed, step=step, final=True, eval_cfg=cfg.eval,
                       coupling_batch=cfg.train.batch_size,
                       picture=run_dir / "samples" / f"evaluate_step_{step:07d}.png",
                       title=f"{cfg.data.name}  step {step} (re-scored)")
    # result.json changes only now that the new scores exist
    kept = {k: v for k, v in previous["metrics"].items() if not k.startswith("eval/")}
    protocol = json.loads(json.dumps(evaluator.protocol()))  # as result.json holds it
    history_eval = previous.get("history_eval") or previous["comparability"]["eval"]
    comparability = comparability_dict(cfg, protocol)
    ResultFile(run_dir / "result.json", **previous).update(
        metrics={**kept, **metrics}, comparability=comparability,
        history_eval=None if history_eval == protocol else history_eval)
    _update_wandb(cfg, run_dir, previous, metrics, comparability)
    return {"step": step, "num_samples": n, **metrics}


def _update_wandb(cfg, run_dir: Path, record: dict, metrics: dict, comparability: dict) -> None:
    """The run's own W&B run (where its record says it logged) shows the new scores."""
    where = record.get("wandb") or {}
    logger = OmegaConf.merge(cfg.logger, {k: where[k] for k in ("project", "entity")
                                          if where.get(k)})
    # resumed, the W&B run keeps its own name, group and job type
    tracker = build_tracker(logger, run_dir=run_dir, identity=RunIdentity(name=run_dir.name),
                            config={}, resume_only=True)
    tracker.summary({**metrics, "rescored_at_step": record["step"]})
    tracker.config(flatten(comparability, "comparability/"))
    tracker.finish()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ganlab.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("overrides", nargs="*", help="eval.* overrides, e.g. eval.num_samples=50000")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    try:
        scores = rescore(args.run_dir, args.overrides)
    except (ConfigError, RecordError, CheckpointError, RunDirBusy, StorageError) as e:
        print(f"ganlab.evaluate: {e}", file=sys.stderr)
        return 2
    width = max(len(k) for k in scores)
    for key, value in scores.items():
        print(f"{key:<{width}}  {value:.6g}" if isinstance(value, float) else
              f"{key:<{width}}  {value}")
    print(f"updated {args.run_dir / 'result.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
