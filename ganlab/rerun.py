"""Re-run one saved run exactly, optionally changed: `python -m ganlab.rerun RUN_DIR [overrides]`.

The run's composed config (`RUN_DIR/.hydra/config.yaml`) is the starting point, so the
re-run does not depend on today's `conf/` files: with no overrides it repeats the run, and
on CPU its weights and metrics equal the original's bit for bit. Overrides are `key=value`
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
from ganlab.configure import load_config
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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    try:
        cfg = load_config(args.run_dir, args.overrides)
        # outside any sweep dir, so that a re-run never joins the sweep's comparison
        name = "_".join(p for p in args.run_dir.resolve().parts[-2:] if p)
        out = args.out or free_dir(Path("outputs") / "reruns" / name)
        # an existing --out must be this re-run itself (it then resumes; another config is
        # refused by ganlab.train.run), never some other folder
        if out.exists() and any(out.iterdir()) and not (out / ".hydra" / "config.yaml").exists():
            raise ConfigError(f"--out {out} exists, is not empty and holds no run; choose a "
                              "new directory")
        print(f"re-running {args.run_dir} into {out}", file=sys.stderr)
        result = run(cfg, out, overrides=args.overrides)
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


if __name__ == "__main__":
    sys.exit(main())
