"""What every metric means to a reader, in one place: its direction (is higher better?),
its scale (compare differences, or ratios on a log scale) and how to print it.

The comparer, the report and the W&B summaries read it; the evaluator's metrics all have an
entry (a test checks). `eval/fid_class/<k>` is FID; `*_std` entries are spreads and are
never compared. Log-scale metrics are positive and span orders of magnitude: values at or
below the metric's `floor` (an exact zero, KID's unbiased estimate at or below zero) count
as the floor, which the report states.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from ganlab.registry import Registry

SCALES = ("linear", "log")


@dataclass(frozen=True)
class Metric:
    name: str
    label: str  # how a reader calls it
    direction: int  # +1: higher is better; -1: lower is better; 0: neither (not compared)
    scale: str = "linear"  # linear: compare differences; log: compare ratios
    fmt: str = ".4g"  # how its values print
    floor: float | None = None  # log scale: the smallest value it takes

    @property
    def better(self) -> str:
        return {1: "higher", -1: "lower", 0: "neither"}[self.direction]

    def format(self, value: float | None) -> str:
        return "—" if value is None else format(value, self.fmt)

    def to_scale(self, value: float) -> float:
        """The value on the scale comparisons are made on."""
        return math.log(max(value, self.floor or 0.0)) if self.scale == "log" else value

    def from_scale(self, value: float) -> float:
        return math.exp(value) if self.scale == "log" else value


METRICS: Registry[Metric] = Registry("metric")
for _m in (
    Metric("eval/fid", "FID", -1, fmt=".2f"),
    Metric("eval/is", "IS", +1, fmt=".3f"),
    Metric("eval/kid", "KID", -1, "log", ".3g", floor=1e-6),
    Metric("eval/precision", "precision", +1, fmt=".3f"),
    Metric("eval/recall", "recall", +1, fmt=".3f"),
    Metric("eval/modes_covered", "modes covered", +1, fmt=".3g"),
    Metric("eval/hq_pct", "% high-quality samples", +1, fmt=".3g"),
    Metric("eval/reverse_kl", "reverse KL of the mode histogram", -1, "log", ".3g", floor=1e-4),
    Metric("eval/coupling", "batch coupling", -1, "log", ".3g", floor=1e-12),
):
    METRICS.register(_m.name)(_m)


def metric_key(name: str) -> str:
    return name if "/" in name else f"eval/{name}"


def metric_info(name: str, scale: str | None = None) -> Metric:
    """The registry's entry for a metric key (`fid` or `eval/fid`), `scale` overriding."""
    name = metric_key(name)
    base = name.split("/fid_class/")[0] + "/fid" if "/fid_class/" in name else name
    if base in METRICS:
        entry = replace(METRICS[base], name=name)
    elif name.endswith("_std"):
        entry = Metric(name, f"spread of {name.removesuffix('_std')}", 0)
    else:
        entry = Metric(name, name, 0)
    if scale is not None and scale != entry.scale:
        if scale not in SCALES:
            raise ValueError(f"scale {scale!r}: choose one of {', '.join(SCALES)}")
        entry = replace(entry, scale=scale, floor=entry.floor or 1e-12)
    return entry
