"""Re-score a finished run from its checkpoint, without retraining.

    python -m ganlab.evaluate RUN_DIR [eval.num_samples=50000] [eval.features=...] ...

Loads the run's saved config (`.hydra/config.yaml`) and `checkpoints/last.pt`, applies the
`eval.*` overrides (and `data.root`, `train.device`), scores G once under that protocol and
updates `result.json`: its `eval/...` metrics and `comparability.eval` (the protocol the
new scores were computed under). Training history is kept as it was. An `eval.num_samples`
override sets the number of generated samples of this final score.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from ganlab.config import ConfigError, validate
from ganlab.result import ResultFile, read_result

ALLOWED = ("eval.", "data.root", "data.download", "train.device")


def load_run_config(run_dir: Path, overrides: list[str]):
    from ganlab.rerun import load_config  # the saved config plus checked overrides

    bad = [o for o in overrides if not o.split("=", 1)[0].startswith(ALLOWED)]
    if bad:
        raise ConfigError(f"{', '.join(bad)}: only {', '.join(ALLOWED)} may change when "
                          "re-scoring a run (anything else would describe another model)")
    cfg = load_config(run_dir, overrides)
    if any(o.startswith("eval.num_samples=") for o in overrides):
        cfg.eval.final_num_samples = cfg.eval.num_samples
    validate(cfg)
    return cfg


def rescore(run_dir: Path, overrides: list[str]) -> dict:
    from ganlab.train import Trainer

    previous = read_result(run_dir)
    if previous is None:
        raise ConfigError(f"{run_dir} has no result.json")
    cfg = load_run_config(run_dir, overrides)
    if not (run_dir / "checkpoints" / "last.pt").exists():
        raise ConfigError(f"{run_dir} has no checkpoint to score")
    # The trainer writes its protocol as it is built: give it a scratch record, so that
    # result.json changes only once the new scores exist.
    with tempfile.TemporaryDirectory() as scratch:
        trainer = Trainer(cfg, run_dir, ResultFile(Path(scratch) / "result.json", **previous))
        trainer.try_resume(check_config=False)
        step = trainer.counters.step
        metrics, n = trainer.score(final=True,
                                   path=run_dir / "samples" / f"evaluate_step_{step:07d}.png")
        comparability = trainer.result.data["comparability"]
    kept = {k: v for k, v in previous["metrics"].items() if not k.startswith("eval/")}
    ResultFile(run_dir / "result.json", **previous).update(
        metrics={**kept, **metrics}, comparability=comparability)
    return {"step": step, "num_samples": n, **metrics}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ganlab.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("overrides", nargs="*", help="eval.* overrides, e.g. eval.num_samples=50000")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    try:
        scores = rescore(args.run_dir, args.overrides)
    except ConfigError as e:
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
