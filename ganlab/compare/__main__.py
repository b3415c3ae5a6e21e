"""`python -m ganlab.compare DIR...`: print the verdict and write the report.

Every result.json under the dirs is read. Runs are grouped into comparison classes by their
`comparability` dict (label use, data, model family, evaluation protocol) and a class is
never mixed with another. Within a class, a variant is a run's trick toggles and
hyper-parameters (everything but the seed); runs are paired with the baseline variant by
seed. The console shows the primary metric's table and one sentence per variant; the report
(report.json, report.md, report.html) has every evaluation metric. `--brief` prints a plain
mean ± std per variant of every metric instead, and writes nothing. `--seeds-for DELTA`
prints how many seeds would detect DELTA (a ratio for log-scale metrics). `--plan` prints
what the sequential rule would run next (`--json`: one JSON object on stdout) and writes
nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# --match choices (ganlab.compare.tables.MATCHES; a test keeps them equal)
MATCHES = ("final", "g_steps", "images_seen", "wall_s")


def _not_pairs_after_baseline(argv: list[str]) -> str | None:
    """The first word a `--baseline` would take that is not KEY=VALUE (argparse would make
    it a baseline and then miss the directories)."""
    taking = False
    for word in argv:
        if word.startswith("-"):
            taking = word == "--baseline"
        elif taking and "=" not in word:
            return word
    return None


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, then run the comparer (imported only now: --help and a
    typo answer at once)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    misplaced = _not_pairs_after_baseline(argv)
    if misplaced:
        print(f"ganlab.compare: --baseline takes KEY=VALUE pairs and {misplaced!r} is not one; "
              "if it is a directory, put the directories first: python -m ganlab.compare "
              f"DIR ... --baseline KEY=VALUE", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog="python -m ganlab.compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dirs", nargs="+", type=Path)
    parser.add_argument("--baseline", nargs="+", action="append", metavar="KEY=VALUE",
                        help="the baseline variant (repeat the flag for one per class)")
    parser.add_argument("--metric", default=None,
                        help="the primary metric, e.g. fid, is, kid, modes_covered (default: "
                             "the preset's study.metric, else fid, else modes_covered)")
    parser.add_argument("--match", default="final", choices=MATCHES)
    parser.add_argument("--scale", action="append", metavar="METRIC=SCALE",
                        help="compare METRIC on another scale (linear|log), e.g. fid=log")
    parser.add_argument("--seeds-for", type=float, default=None, metavar="DELTA",
                        help="print the seeds each variant would need to detect DELTA")
    parser.add_argument("--delta", action="append", metavar="METRIC=SIZE",
                        help="the smallest effect of interest: an absolute change or a "
                             "percentage of the baseline, e.g. modes_covered=1, fid=5%% "
                             "(default: the study's, else the metric registry's)")
    parser.add_argument("--plan", action="store_true",
                        help="print what the sequential rule runs next; write nothing")
    parser.add_argument("--json", action="store_true",
                        help="with --plan: one JSON object on stdout")
    for name, what in (("min", "the first analysis"), ("step", "seeds added per stage"),
                       ("max", "the most paired seeds")):
        parser.add_argument(f"--seeds-{name}", type=int, default=None, metavar="N",
                            help=f"the sequential design: {what} (default: the design the "
                                 "sweep recorded)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where report.json/md/html go (default: the first DIR)")
    parser.add_argument("--no-wandb", action="store_true", help="do not log to W&B")
    parser.add_argument("--wandb-project", default=None,
                        help="the comparison run's W&B project (default: the runs' own)")
    parser.add_argument("--wandb-entity", default=None,
                        help="its W&B entity (default: the runs' own)")
    parser.add_argument("--wandb-mode", choices=("offline", "online"), default=None,
                        help="offline or online (default: $WANDB_MODE, else the runs' own)")
    parser.add_argument("--brief", action="store_true",
                        help="a quick look: mean ± std per variant, no tests, no report")
    parser.add_argument("--strict", action="store_true",
                        help="an unreadable result.json is an error (default: listed, skipped)")
    args = parser.parse_args(argv)
    from ganlab.compare.cli import run

    return run(args)


if __name__ == "__main__":
    sys.exit(main())
