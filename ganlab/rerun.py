"""Re-run one saved run exactly, optionally changed: `python -m ganlab.rerun RUN_DIR [overrides]`.

The run's composed config (`RUN_DIR/.hydra/config.yaml`) is the starting point, so the
re-run does not depend on today's `conf/` files: with no overrides it repeats the run, and
on CPU its weights and metrics equal the original's bit for bit on the CPU model and torch
version the record names (on others the re-run says so: other kernels round differently, and
training amplifies that). Overrides are `key=value`
(e.g. `train.steps=5000`, `seed=7`) or a group choice (e.g. `smoothing=two_sided`). The new
run goes to `--out` (default: outputs/reruns/<sweep cell>_<run>, numbered if taken; never
inside the sweep, whose comparison it would otherwise join). Re-running into an existing
`--out` resumes that re-run (the same config) or is refused (another config).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ganlab.config import ConfigError
from ganlab.configure import load_config, repeated_keys
from ganlab.result import (
    TERMINAL,
    RecordError,
    launch_values,
    launches_of,
    read_result,
    seedless,
)
from ganlab.train import USER_ERRORS, Interrupted, run


def free_dir(base: Path) -> Path:
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}{n}")
    return candidate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ganlab.rerun", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--out", type=Path, default=None, help="the new run directory")
    parser.add_argument("--alone", action="store_true",
                        help="a seed trained in a stack: train it by itself (faster; equal to "
                             "float rounding, not bit for bit)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    try:
        for line in repeated_keys(args.overrides):
            print(f"ganlab.rerun: {line}", file=sys.stderr)
        cfg = load_config(args.run_dir, args.overrides)
        # outside any sweep dir, so that a re-run never joins the sweep's comparison
        name = "_".join(p for p in args.run_dir.resolve().parts[-2:] if p)
        out = args.out or free_dir(Path("outputs") / "reruns" / name)
        # an existing --out must be this re-run itself (it then resumes; another config is
        # refused by ganlab.train.run), never some other folder
        if out.exists() and any(out.iterdir()) and not (out / ".hydra" / "config.yaml").exists():
            raise ConfigError(f"--out {out} exists, is not empty and holds no run; choose a "
                              "new directory")
        record = _record(args.run_dir)
        _same_threads(record)
        if note := machine_change(record):
            print(f"ganlab.rerun: {note}", file=sys.stderr)
        stack = _stack_of(record)
        identity = _identity(record, args.overrides)
        if stack and not args.alone and "seed" not in {o.split("=", 1)[0] for o in
                                                       args.overrides}:
            print(f"{args.run_dir} was trained stacked with seeds {stack} "
                  "(fanout.vectorize_seeds): re-running that stack into "
                  f"{_stack_dir(out)}, so that seed {cfg.seed} is reproduced bit for bit on CPU "
                  "(--alone trains it by itself: equal to about 1e-8 after 20 rounds, not bit "
                  "for bit, and growing with the rounds)", file=sys.stderr)
            result = rerun_stacked(cfg, stack, out, args.overrides, identity)
        else:
            print(f"re-running {args.run_dir} into {out}", file=sys.stderr)
            result = run(cfg, out, overrides=args.overrides, identity=identity(cfg.seed))
    except ConfigError as e:
        print(f"ganlab.rerun: config error: {e}", file=sys.stderr)
        return 2
    except USER_ERRORS as e:
        print(f"ganlab.rerun: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:
        print(f"ganlab.rerun: {e}; run the same command with --out {out} to resume",
              file=sys.stderr)
        return 128 + e.signum
    print(f"{out}: {result['status']}" + (f" ({result['error']})" if result["error"] else ""))
    return 0 if result["status"] != "failed" else 1


def _identity(record: dict, overrides: list[str]):
    """How the re-run appears in W&B: in the group of the run it repeats (said once), named
    after it, job type `rerun`; (seed) -> identity, for each seed of a re-run stack."""
    from ganlab.tracking import RunIdentity

    where = record.get("wandb") or {}
    if where.get("group"):
        print(f"W&B: the re-run joins group {where['group']!r} of the run it repeats "
              "(job type rerun)", file=sys.stderr)
    base = (where.get("name") or "").rsplit("/seed=", 1)[0]
    changed = " ".join(seedless(overrides))

    def identity(seed: int) -> RunIdentity:
        name = f"{base}/seed={seed}" if base else f"seed={seed}"
        return RunIdentity(name=f"{name} rerun" + (f" {changed}" if changed else ""),
                           group=where.get("group"), sweep=where.get("sweep"),
                           job_type="rerun", tags=("rerun",))

    return identity


def _record(run_dir: Path) -> dict:
    try:
        return read_result(run_dir) or {}
    except RecordError:
        return {}


def _same_threads(record: dict) -> None:
    """Train on the CPU threads the run had (its record says), where this machine has them."""
    import torch

    from ganlab.cores import available_cores

    threads = (record.get("host") or {}).get("threads")
    if isinstance(threads, int) and 0 < threads <= available_cores():
        torch.set_num_threads(threads)


def machine_change(record: dict) -> str | None:
    """What differs between where the run trained and this machine that changes a re-run's
    last bits: the CPU model or torch version of any of its launches (records written before
    they were kept name neither; None where nothing differs or nothing is known)."""
    import torch

    from ganlab.cores import cpu_model

    here = {"cpu": cpu_model(), "torch": torch.__version__}
    changed = []
    for key, label in (("cpu", "CPU"), ("torch", "torch")):
        then = launch_values(record, key)
        if then and then != [here[key]]:
            changed.append(f"{label} {' then '.join(repr(t) for t in then)} "
                           f"(here: {here[key]!r})")
    if not changed:
        return None
    return ("the run trained with " + "; ".join(changed) + ": the re-run repeats its settings, "
            "not necessarily its last bits (other kernels round differently, and training "
            "amplifies that), so expect scores from the same distribution, not the same numbers")


def _stack_of(record: dict) -> list[int] | None:
    """The seeds this run was last trained stacked with (None: it trained alone)."""
    launches = launches_of(record)
    stack = launches[-1].get("seed_stack") if launches else None
    return list(stack) if stack and len(stack) > 1 else None


def _stack_dir(out: Path) -> Path:
    return out.with_name(f"{out.name}.stack")


def rerun_stacked(cfg, stack: list[int], out: Path, overrides: list[str],
                  identity=None) -> dict:
    """Re-run the stack of seeds `stack` as one stacked model into `<out>.stack/seed=*`, then
    move this seed's run to `out`; the stack dir stays while any of its runs is unfinished,
    so the same command resumes it."""
    import shutil

    from omegaconf import open_dict

    from ganlab.train import run_group

    work = _stack_dir(out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out {out} exists and is not empty; choose a new directory")
    leader = cfg.copy()
    with open_dict(leader):
        leader.seed = stack[0]
        leader.fanout.group_seeds = list(stack)
    records = run_group(leader, work / f"seed={stack[0]}",
                        overrides=[*seedless(overrides), f"seed={stack[0]}"], identity=identity)
    if any(r["status"] not in TERMINAL for r in records):
        ours = next((r for r in records if r["seed"] == cfg.seed), records[0])
        return ours
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.rmdir()
    (work / f"seed={cfg.seed}").rename(out)
    shutil.rmtree(work)
    return read_result(out)


if __name__ == "__main__":
    sys.exit(main())
