"""The comparer: like with like, paired by seed, with intervals.

    python -m ganlab.compare DIR... [--baseline KEY=VALUE ...] [--metric NAME]
                             [--match final|g_steps|images_seen|wall_s] [--out DIR] [--brief]

- runs.py: read every result.json; group runs into comparison classes and variants (the one
  grouping every view uses).
- stats.py: intervals, the paired test, Holm's correction.
- tables.py: one table per class and metric, paired with the baseline by seed; text views.
- report.py: report.md / report.html (tables, charts, curves, samples) and the W&B table.
"""

__all__ = ["CompareError", "build_tables", "group_runs", "load_results"]


def __getattr__(name: str):
    """The package's names, imported on first use (`python -m ganlab.compare --help` needs
    none of them)."""
    if name in ("group_runs", "load_results"):
        from ganlab.compare import runs

        return getattr(runs, name)
    if name in ("CompareError", "build_tables"):
        from ganlab.compare import tables

        return getattr(tables, name)
    raise AttributeError(f"module 'ganlab.compare' has no attribute {name!r}")
