"""`python -m ganlab.summary` is gone: its table is `python -m ganlab.compare DIR --brief`."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    where = " ".join(args) or "SWEEP_DIR"
    print(f"ganlab.summary is now part of the comparer: python -m ganlab.compare {where} --brief "
          "(mean ± sd per variant), or without --brief for the verdicts", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
