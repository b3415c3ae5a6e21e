"""Reading runs and grouping them: the one grouping behind every view of the comparer.

Every result.json under the given dirs is read once; files that are not readable records
are listed (`Runs.unreadable`) and skipped. Runs are grouped into comparison classes by
their `comparability` dict (label use, data, model family, evaluation protocol) and, within
a class, into variants: runs whose trick toggles and hyper-parameters agree, i.e. that
differ only by seed. A run that failed before its evaluator existed has no protocol; it is
counted in the class it would have joined. A seed that two runs of one variant trained (the
same sweep launched twice into different dirs, or a seed listed twice) is one sample, not
two: the first run by run dir path is used, the others are kept aside (`Variant.duplicates`)
for every view to name.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from ganlab.config import DEFAULT_SUBDIR, sweep_cell
from ganlab.result import RecordError, read_result
from ganlab.sweepdir import sweep_axes


class Runs(list):
    """The records read, with the files that could not be read (`unreadable`: messages), the
    swept keys of the sweeps they came from (`sweep_axes`, in the command's order) and the
    cells their sweeps' latest launches planned that have no readable record yet (`pending`:
    cell dirs; a look mid-sweep, before a row's first run has ended)."""

    def __init__(self, records=(), unreadable=(), sweep_axes=None, pending=()):
        super().__init__(records)
        self.unreadable = list(unreadable)
        self.sweep_axes: dict[str, list[str]] = dict(sweep_axes or {})
        self.pending: list[str] = list(pending)


def load_results(dirs: list[Path]) -> Runs:
    runs, seen, planned = Runs(), set(), {}
    for d in dirs:
        for path in sorted(Path(d).rglob("multirun.yaml")):
            for k, values in sweep_axes(path.parent).items():
                runs.sweep_axes.setdefault(k, values)
            for cell in planned_cells(path.parent) or []:
                planned.setdefault((path.parent / cell).resolve(), path.parent / cell)
        for path in sorted(Path(d).rglob("result.json")):
            run_dir = path.parent.resolve()
            if run_dir in seen:  # overlapping dirs: count each run once
                continue
            seen.add(run_dir)
            try:
                result = read_result(run_dir)
            except RecordError as e:
                runs.unreadable.append(str(e))
                continue
            if result is not None:
                result["run_dir"] = str(run_dir)
                runs.append(result)
    read = {Path(r["run_dir"]) for r in runs}
    runs.pending = [str(shown) for cell, shown in planned.items()
                    if not any(cell in run_dir.parents for run_dir in read)]
    return runs


def planned_cells(sweep_dir: Path) -> list[str] | None:
    """The cell folders (ganlab.config.sweep_cell) the sweep's latest launch planned: its
    sweeper params and command-line overrides expanded as Hydra's basic sweeper expands them
    (conf/config.yaml's subdir names a job's folder `<cell>/seed=N`). None where that cannot
    be known: no readable multirun.yaml, another `hydra.sweep.subdir`, or a sweep only a
    config loader expands (`glob(...)`)."""
    # Hydra's parser only here: reading records needs no Hydra (nor does `--help`)
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        hydra = OmegaConf.to_container(OmegaConf.load(Path(sweep_dir) / "multirun.yaml").hydra,
                                       resolve=False)  # the subdir, as written, unresolved
        if hydra["sweep"]["subdir"] != DEFAULT_SUBDIR:
            return None
        params = hydra.get("sweeper", {}).get("params") or {}
        task = hydra["overrides"]["task"] or []
        lines = [f"{k}={v}" for k, v in params.items()] + [str(o) for o in task]
        (jobs,) = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(lines),
                                               None)
    except Exception:  # no file, not one of Hydra's, or a sweep this parser cannot expand
        return None
    return list(dict.fromkeys(sweep_cell(job) for job in jobs))


def key(d: dict) -> str:
    """A hashable, order-free identity of a dict."""
    return json.dumps(d, sort_keys=True, default=str)


def variant_settings(run: dict) -> dict:
    """Everything that makes a variant: trick toggles and other hyper-parameters, no seed."""
    return {**run.get("hparams", {}), **run["trick"]}


@dataclass
class Duplicate:
    """A seed that more than one run of a variant trained: the same seed and settings are
    not independent samples, so `used` (the first by run dir path) stands for the seed and
    `left_out` is in no statistic."""
    seed: int
    used: dict
    left_out: list[dict]

    @property
    def run_dirs(self) -> list[str | None]:
        return [r.get("run_dir") for r in (self.used, *self.left_out)]


def one_per_seed(runs: list[dict]) -> tuple[list[dict], list[Duplicate]]:
    """A variant's runs with one run per seed (in their order), and the seeds that had more.
    The run used is the first by run dir path, whatever its status or score, so the choice
    never depends on the outcome nor on the order the dirs were given in."""
    by_seed: dict[int, list[dict]] = defaultdict(list)
    for r in runs:
        if r["seed"] is not None:
            by_seed[r["seed"]].append(r)
    duplicates, left = [], set()
    for seed, same in by_seed.items():
        if len(same) > 1:
            first, *rest = sorted(same, key=lambda r: str(r.get("run_dir") or ""))
            duplicates.append(Duplicate(seed, first, rest))
            left.update(id(r) for r in rest)
    return [r for r in runs if id(r) not in left], duplicates


@dataclass
class Variant:
    settings: dict
    runs: list[dict]  # one per seed: a duplicated seed's other runs are in `duplicates`
    label: str = ""  # the preset option's name where one tells the variants apart
    detail: str = ""  # the varying settings, when the label is an option's name
    duplicates: list[Duplicate] = field(default_factory=list)

    @property
    def left_out(self) -> int:
        """Runs in no statistic because another run of the variant has their seed."""
        return sum(len(d.left_out) for d in self.duplicates)


@dataclass
class ComparisonClass:
    comparability: dict
    runs: list[dict]  # the variants' runs: one per seed of each variant
    varying: list[str]  # the setting keys that differ between the class's variants
    variants: list[Variant] = field(default_factory=list)
    label: str = ""  # class_label, told apart from any class that would read the same

    @property
    def study(self) -> dict:
        return self.runs[0].get("study") or {}


def class_label(comparability: dict) -> str:
    """The class's data, model family, label use and a short name of its protocol."""
    protocol = comparability.get("eval")
    if protocol is None:
        proto = "none (failed before evaluating)"
    else:
        named = [str(protocol[k]) for k in ("metrics", "features")
                 if protocol.get(k) not in (None, "none")]
        proto = " on ".join(named) if len(named) == 2 else "".join(named) or "none"
        # image metrics take final_num_samples at the end; 2-D metrics always num_samples
        images = protocol.get("features") not in (None, "none")
        n = protocol.get("final_num_samples") if images else None
        proto += f", n={n or protocol.get('num_samples')}"
    shown = {k: v for k, v in comparability.items() if k not in ("eval", "data.num_classes",
                                                                  "data.channels")}
    return ", ".join([*(f"{k}={v}" for k, v in shown.items()), f"eval={proto}"])


def _tell_apart(classes: list[ComparisonClass]) -> None:
    """Class labels, with the protocol settings that differ where two would read alike."""
    by_label: dict[str, list[ComparisonClass]] = defaultdict(list)
    for c in classes:
        c.label = class_label(c.comparability)
        by_label[c.label].append(c)
    for alike in by_label.values():
        if len(alike) < 2:
            continue
        protocols = [c.comparability.get("eval") or {} for c in alike]
        differ = sorted(k for k in {k for p in protocols for k in p}
                        if len({key({"v": p.get(k)}) for p in protocols}) > 1)
        for c, p in zip(alike, protocols, strict=True):
            c.label += " (" + ", ".join(f"eval.{k}={p.get(k)}" for k in differ) + ")"


def variant_label(settings: dict, varying: list[str]) -> str:
    """A preset's row name where there is one, else the varying settings (short keys where
    that is unambiguous: real_target=0.9, d_steps=2, loss=minimax for loss.name)."""
    if settings.get("study.variant"):
        return str(settings["study.variant"])
    short = [k.split(".")[-2] if k.endswith(".name") else k.split(".")[-1] for k in varying]
    names = short if len(set(short)) == len(short) else varying
    return ", ".join(f"{n}={settings.get(k)}" for n, k in zip(names, varying, strict=True)) \
        or "(one variant)"


def option_labels(variants: list[Variant]) -> list[str] | None:
    """Names for the variants from the config group options their runs were launched with
    (result.json's `choices`: `one_sided` rather than `real_target=0.9`), when the groups
    whose option differs tell every variant apart; else None."""
    chosen = []
    for v in variants:
        each = [r.get("choices") or {} for r in v.runs]
        chosen.append({g.split("@")[0]: c for g, c in each[0].items()
                       if all(x.get(g) == c for x in each)})
    groups = sorted({g for c in chosen for g in c})
    telling = [g for g in groups if len({str(c.get(g)) for c in chosen}) > 1]
    if not telling:
        return None
    labels = [", ".join(str(c.get(g)) if len(telling) == 1 else f"{g}={c.get(g)}"
                        for g in telling) for c in chosen]
    return labels if len(set(labels)) == len(labels) else None


def _without_eval(comparability: dict) -> str:
    return key({k: v for k, v in comparability.items() if k != "eval"})


def _as_listed(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _sweep_rank(variant: Variant, axes: dict[str, list[str]]) -> list[int]:
    """Where a variant's values stand in its sweep's lists (a value not listed goes last)."""
    run = variant.runs[0]
    choices = {g.split("@")[0]: c for g, c in (run.get("choices") or {}).items()}
    rank = []
    for axis, values in axes.items():
        group = axis.split("@")[0]
        value = choices[group] if group in choices else variant.settings.get(axis)
        shown = _as_listed(value)
        rank.append(values.index(shown) if shown in values else len(values))
    return rank


def group_runs(results: list[dict]) -> list[ComparisonClass]:
    """Comparison classes (sorted by label), each with its variants in the order their sweep
    listed them (`Runs.sweep_axes`), else sorted by label."""
    axes = getattr(results, "sweep_axes", {})
    by_class: dict[str, list[dict]] = defaultdict(list)
    no_protocol = []
    for r in results:
        if r["comparability"].get("eval") is None:
            no_protocol.append(r)
        else:
            by_class[key(r["comparability"])].append(r)
    for r in no_protocol:
        # a run that failed before its evaluator existed joins the one class it belongs to:
        # same data, model and labels, a protocol resolved from the same eval.* settings
        homes = [k for k, runs in by_class.items()
                 if runs[0]["comparability"].get("eval") is not None  # not such a run's own
                 and _without_eval(runs[0]["comparability"]) == _without_eval(r["comparability"])
                 and _settings_fit(r.get("eval_settings"), runs[0]["comparability"]["eval"])]
        by_class[homes[0] if len(homes) == 1 else key(r["comparability"])].append(r)
    classes = []
    for runs in by_class.values():
        settings = [variant_settings(r) for r in runs]
        keys = sorted({k for s in settings for k in s})
        varying = [k for k in keys if len({key({"v": s.get(k)}) for s in settings}) > 1]
        groups: dict[str, list[int]] = defaultdict(list)
        for i, s in enumerate(settings):
            groups[key({k: s.get(k) for k in varying})].append(i)
        comparability = next((r["comparability"] for r in runs
                              if r["comparability"].get("eval") is not None),
                             runs[0]["comparability"])
        group = ComparisonClass(comparability, runs, varying)
        for idx in groups.values():
            s = settings[idx[0]]
            used, duplicates = one_per_seed([runs[i] for i in idx])
            group.variants.append(Variant(s, used, variant_label(s, varying),
                                          duplicates=duplicates))
        left = {id(r) for v in group.variants for d in v.duplicates for r in d.left_out}
        group.runs = [r for r in runs if id(r) not in left]
        # a preset's named rows keep their names; else the group options tell them apart
        named = all(v.settings.get("study.variant") for v in group.variants)
        options = None if named else option_labels(group.variants)
        if options is not None:
            for variant, label in zip(group.variants, options, strict=True):
                variant.label, variant.detail = label, variant.label
        group.variants.sort(key=lambda v: (_sweep_rank(v, axes), v.label))
        classes.append(group)
    _name_lone_variants(classes)
    _tell_apart(classes)
    classes.sort(key=lambda c: c.label)
    return classes


def _name_lone_variants(classes: list[ComparisonClass]) -> None:
    """A class of one variant (the unlabelled baseline of a labels sweep) is named by the
    group option that sets it apart from the other classes' variants (`none`)."""
    everyone = [v for c in classes for v in c.variants]
    names = option_labels(everyone) if len(everyone) > 1 else None
    if names is None:
        return
    for variant, name in zip(everyone, names, strict=True):
        if variant.label == "(one variant)":
            variant.label = name


def _settings_fit(settings: dict | None, protocol: dict) -> bool:
    """Whether a resolved protocol came from these eval.* settings (records written before
    settings were kept have none, and fit any; `auto`, e.g. eval.features, fits whatever the
    evaluator resolved it to)."""
    return settings is None or all(key({"v": protocol.get(k)}) == key({"v": v})
                                   for k, v in settings.items()
                                   if k in protocol and v != "auto")
