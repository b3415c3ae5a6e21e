"""Reading runs and grouping them: the one grouping behind every view of the comparer.

Every result.json under the given dirs is read once. Runs are grouped into comparison
classes by their `comparability` dict (label use, data, model family, evaluation protocol)
and, within a class, into variants: runs whose trick toggles and hyper-parameters agree,
i.e. that differ only by seed.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ganlab.result import read_result


def load_results(dirs: list[Path]) -> list[dict]:
    results, seen = [], set()
    for d in dirs:
        for path in sorted(Path(d).rglob("result.json")):
            run_dir = path.parent.resolve()
            if run_dir in seen:  # overlapping dirs: count each run once
                continue
            seen.add(run_dir)
            result = read_result(run_dir)
            if result is not None:
                result["run_dir"] = str(run_dir)
                results.append(result)
    return results


def key(d: dict) -> str:
    """A hashable, order-free identity of a dict."""
    return json.dumps(d, sort_keys=True, default=str)


def variant_settings(run: dict) -> dict:
    """Everything that makes a variant: trick toggles and other hyper-parameters, no seed."""
    return {**run.get("hparams", {}), **run["trick"]}


@dataclass
class Variant:
    settings: dict
    runs: list[dict]
    label: str = ""


@dataclass
class ComparisonClass:
    comparability: dict
    runs: list[dict]
    varying: list[str]  # the setting keys that differ between the class's variants
    variants: list[Variant] = field(default_factory=list)

    @property
    def study(self) -> dict:
        return self.runs[0].get("study") or {}


def class_label(comparability: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in comparability.items() if k != "eval")


def variant_label(settings: dict, varying: list[str]) -> str:
    """A preset's row name where there is one, else the varying settings (short keys where
    that is unambiguous: real_target=0.9, d_steps=2, loss=minimax for loss.name)."""
    if settings.get("study.variant"):
        return str(settings["study.variant"])
    short = [k.split(".")[-2] if k.endswith(".name") else k.split(".")[-1] for k in varying]
    names = short if len(set(short)) == len(short) else varying
    return ", ".join(f"{n}={settings.get(k)}" for n, k in zip(names, varying, strict=True)) \
        or "(one variant)"


def group_runs(results: list[dict]) -> list[ComparisonClass]:
    """Comparison classes (sorted by label), each with its variants (sorted by label)."""
    by_class: dict[str, list[dict]] = defaultdict(list)
    for r in results:
        by_class[key(r["comparability"])].append(r)
    classes = []
    for runs in by_class.values():
        settings = [variant_settings(r) for r in runs]
        keys = sorted({k for s in settings for k in s})
        varying = [k for k in keys if len({key({"v": s.get(k)}) for s in settings}) > 1]
        groups: dict[str, list[int]] = defaultdict(list)
        for i, s in enumerate(settings):
            groups[key({k: s.get(k) for k in varying})].append(i)
        group = ComparisonClass(runs[0]["comparability"], runs, varying)
        for idx in groups.values():
            s = settings[idx[0]]
            group.variants.append(Variant(s, [runs[i] for i in idx], variant_label(s, varying)))
        group.variants.sort(key=lambda v: v.label)
        classes.append(group)
    classes.sort(key=lambda c: class_label(c.comparability))
    return classes
