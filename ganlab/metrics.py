"""What every metric means to a reader, in one place: its direction (is higher better?), its
scale (compare differences, or ratios on a log scale), its feasible range, whether it only
takes whole numbers, the smallest effect a study should care about, and how to print it.

The comparer, the report and the W&B summaries read it; every evaluator declares the keys it
returns (`keys`), and each has an entry here (tests/test_metrics_declared.py checks). `eval/fid_class/<k>` is FID; `*_std` entries are spreads and are never
compared.

- Range: `lower` and `upper` bound the metric's true value. `upper="classes"` is the number of
  classes (modes) of the run's data, read from the comparison class (`data.num_classes`): 8
  modes on ring8, IS at most 10 on MNIST. No interval the comparer reports leaves the range.
- Log scale: values span orders of magnitude and are compared as ratios (geometric means, Δ as
  a factor). A ratio needs positive values: a table with an exact zero (or KID's unbiased
  estimate at or below zero) is compared on the linear scale instead, and says so.
- Smallest effect of interest (`smallest_effect`): "1" is an absolute change in the metric's
  units (one mode), "5%" a change relative to the baseline's mean (a factor of 1.05 on a log
  scale). A variant whose interval lies inside ±δ is "equivalent within δ". Overridden per
  study (`study.smallest_effect`) or on the command line (`compare --delta fid=3%`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from ganlab.registry import Registry

SCALES = ("linear", "log")


@dataclass(frozen=True)
class Effect:
    """A smallest effect of interest: `size` in the metric's units, or in % of the baseline."""

    size: float
    relative: bool = False

    @classmethod
    def parse(cls, text: str | float) -> Effect:
        raw = str(text).strip()
        relative = raw.endswith("%")
        try:
            size = float(raw.rstrip("%").strip())
        except ValueError:
            size = math.nan
        if not math.isfinite(size) or size <= 0:
            raise ValueError(f"smallest effect {raw!r}: give a positive number (an absolute "
                             "change, e.g. 1) or a percentage of the baseline (e.g. 5%)")
        return cls(size, relative)

    def __str__(self) -> str:
        return f"{self.size:g}%" if self.relative else f"{self.size:g}"


@dataclass(frozen=True)
class Metric:
    name: str
    label: str  # how a reader calls it
    direction: int  # +1: higher is better; -1: lower is better; 0: neither (not compared)
    scale: str = "linear"  # linear: compare differences; log: compare ratios
    fmt: str = ".4g"  # how its values print
    lower: float | None = None  # the smallest value its true value can take
    upper: float | str | None = None  # the largest; "classes": the data's number of classes
    discrete: bool = False  # takes whole numbers only (modes covered)
    smallest_effect: str | None = None  # "1" (absolute) or "5%" (of the baseline's mean)
    # scored on the evaluation's generated samples (eval.num_samples); False: measured
    # otherwise, so a sample count says nothing about it (coupling: 8 latents in two batches)
    from_samples: bool = True

    @property
    def better(self) -> str:
        return {1: "higher", -1: "lower", 0: "neither"}[self.direction]

    def format(self, value: float | None) -> str:
        return "—" if value is None else format(value, self.fmt)

    def bounds(self, comparability: dict | None = None) -> tuple[float, float]:
        """The feasible range (-inf/inf where unbounded) for runs of this comparison class."""
        upper = self.upper
        if upper == "classes":
            classes = (comparability or {}).get("data.num_classes")
            upper = float(classes) if classes else None
        return (-math.inf if self.lower is None else float(self.lower),
                math.inf if upper is None else float(upper))

    def effect(self) -> Effect | None:
        return None if self.smallest_effect is None else Effect.parse(self.smallest_effect)

    def to_scale(self, value: float) -> float:
        """The value on the scale comparisons are made on (log: positive values only)."""
        return math.log(value) if self.scale == "log" else value

    def from_scale(self, value: float) -> float:
        return math.exp(value) if self.scale == "log" else value


METRICS: Registry[Metric] = Registry("metric")
for _m in (
    Metric("eval/fid", "FID", -1, fmt=".2f", lower=0, smallest_effect="5%"),
    Metric("eval/is", "IS", +1, fmt=".3f", lower=1, upper="classes", smallest_effect="5%"),
    Metric("eval/kid", "KID", -1, "log", ".3g", lower=0, smallest_effect="25%"),
    Metric("eval/precision", "precision", +1, fmt=".3f", lower=0, upper=1,
           smallest_effect="0.05"),
    Metric("eval/recall", "recall", +1, fmt=".3f", lower=0, upper=1, smallest_effect="0.05"),
    Metric("eval/modes_covered", "modes covered", +1, fmt=".3g", lower=0, upper="classes",
           discrete=True, smallest_effect="1"),
    Metric("eval/modes_pacgan", "modes with a high-quality sample (PacGAN's count)", +1,
           fmt=".3g", lower=0, upper="classes", discrete=True, smallest_effect="1"),
    Metric("eval/hq_pct", "% high-quality samples", +1, fmt=".3g", lower=0, upper=100,
           smallest_effect="5"),
    Metric("eval/reverse_kl", "reverse KL of the mode histogram", -1, "log", ".3g", lower=0,
           smallest_effect="25%"),
    Metric("eval/coupling", "batch coupling", -1, "log", ".3g", lower=0,
           smallest_effect="100%", from_samples=False),
):
    METRICS.register(_m.name)(_m)


def registered(name: str) -> bool:
    """Whether a metric key has its entry: its own, FID's for `fid_class/<k>`, or a spread
    (`*_std`, never compared)."""
    name = metric_key(name)
    return (name in METRICS or name.endswith("_std")
            or ("/fid_class/" in name and name.split("/fid_class/")[0] + "/fid" in METRICS))


def metric_key(name: str) -> str:
    return name if "/" in name else f"eval/{name}"


def metric_info(name: str, scale: str | None = None) -> Metric:
    """The registry's entry for a metric key (`fid` or `eval/fid`), `scale` overriding."""
    name = metric_key(name)
    base = name.split("/fid_class/")[0] + "/fid" if "/fid_class/" in name else name
    if base in METRICS:
        entry = replace(METRICS[base], name=name)
    elif name.endswith("_std"):
        entry = Metric(name, f"spread of {name.removesuffix('_std')}", 0, lower=0)
    else:
        entry = Metric(name, name, 0)
    if scale is not None and scale != entry.scale:
        if scale not in SCALES:
            raise ValueError(f"scale {scale!r}: choose one of {', '.join(SCALES)}")
        entry = replace(entry, scale=scale)
    return entry
