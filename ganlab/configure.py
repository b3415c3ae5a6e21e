"""A run's configuration as a whole: the full schema, composing it, loading a saved one, and
checking it against what the parts support.

- `schema()`: ganlab.config's schema with its `extras` section typed by the plug-ins of
  ganlab.extras, so `extras.<name>.<option>=...` is typed and a typo fails at composition.
- `compose(overrides)`: the config `python -m ganlab.train OVERRIDES` runs.
- `load_config(run_dir, overrides)`: a run's saved config (`.hydra/config.yaml`), not
  today's `conf/`, with overrides applied (for re-running and re-scoring).
- `check(cfg)`: `ganlab.config.validate` plus every name against its registry, and the
  data/model pairing each model family declares.
- `check_overrides(args)`: command-line overrides against conf/ and the schema, so that a
  typo or a wrong type ends in one line (with a "did you mean") before Hydra composes.
"""

from __future__ import annotations

import difflib
import functools
import re
import typing
from dataclasses import field, fields, make_dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ganlab.config import (
    CONF_DIR,
    FIXED_CHOICES,
    Config,
    ConfigError,
    Role,
    bounds,
    check_bound,
    choice,
    flatten,
    group_options,
    select,
    validate,
)
from ganlab.data import DATASETS
from ganlab.extras import options_schema, resolve_options
from ganlab.labels import LABEL_MODES
from ganlab.losses import LOSSES
from ganlab.nets import MODELS
from ganlab.nets.norm import NORMS
from ganlab.tracking import TRACKERS


@functools.cache
def schema() -> type:
    """The run config's schema: ganlab.config.Config with every plug-in's typed options.

    One class per set of plug-ins, importable as `ganlab.configure.RunConfig`, so that a
    composed config pickled to a launcher's worker and back refers to it by name: a class
    pickled by value comes back (cloudpickle 2) with dataclass fields the next schema built
    in that process no longer recognises."""
    extras = options_schema()
    key = tuple(f.name for f in fields(extras))
    if key not in _SCHEMAS:
        cls = make_dataclass("RunConfig", [("extras", extras, field(
            default_factory=extras, metadata={"role": Role.TRICK}))], bases=(Config,))
        cls.__module__ = __name__
        _SCHEMAS[key] = cls
    return _SCHEMAS[key]


_SCHEMAS: dict[tuple[str, ...], type] = {}


def __getattr__(name: str):
    if name == "RunConfig":  # the schema, by name (see `schema`)
        return schema()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def register_configs() -> None:
    from hydra.core.config_store import ConfigStore

    # One schema for the whole tree: each group's YAML merges into its typed field, so an
    # unknown key or a wrong type fails at composition.
    ConfigStore.instance().store(name="config_schema", node=schema())


def compose(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """The config `python -m ganlab.train OVERRIDES` would run (for tests, benches, tools)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    check_overrides(overrides)
    register_configs()
    if GlobalHydra.instance().is_initialized():  # inside a Hydra app (a launched job)
        return hydra_compose(config_name="config", overrides=list(overrides))
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))


# -- overrides ---------------------------------------------------------------------------------
# launchers outside the core install: the extra that brings each, and what it imports
LAUNCHER_EXTRAS = {
    "local": ("ray", "hydra_plugins.hydra_ray_launcher"),
    "ray": ("ray", "hydra_plugins.hydra_ray_launcher"),
    "slurm": ("slurm", "hydra_plugins.hydra_submitit_launcher"),
    "slurm_cpu": ("slurm", "hydra_plugins.hydra_submitit_launcher"),
    "submitit_local": ("slurm", "hydra_plugins.hydra_submitit_launcher"),
}


def check_launcher_installed(option: str) -> None:
    """launcher=OPTION needs its extra installed: else one line naming it."""
    import importlib.util

    if option not in LAUNCHER_EXTRAS:
        return
    extra, module = LAUNCHER_EXTRAS[option]
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        found = False
    if not found:
        raise ConfigError(f"launcher={option} needs the {extra} extra: pip install "
                          f"'ganlab[{extra}]' (or `pip install -e \".[{extra}]\"` in a checkout)")


def _unreadable(parser, tokens: list[str], error: str) -> str:
    """The override Hydra cannot read, named, and how to quote a value that holds `=`, `,`
    or a space (a path such as a sweep cell's folder does)."""
    from hydra.errors import HydraException

    for token in tokens:
        try:
            parser.parse_overrides([token])
        except HydraException:
            key, _, value = token.partition("=")
            if any(c in value for c in "=, "):
                return (f"cannot read {token}: {error}; a value holding '=', ',' or a space "
                        f"is quoted: \"{key}='{value}'\"")
            return f"cannot read {token}: {error}"
    return f"cannot read the overrides: {error}"


def check_overrides(args: list[str] | tuple[str, ...]) -> None:
    """Raise ConfigError (one line) for an override that names no config group option, no
    schema key (`+key=` included), no Hydra run/sweep/job key, gives a value of the wrong
    type or an interpolation of no key, deletes a key (`~key`), or sets a group that is not
    in the defaults without `+`; flags are left alone."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import Glob
    from hydra.errors import HydraException

    tokens = [a for a in args if "=" in a and not a.startswith("-") or a.startswith("~")]
    parser = OverridesParser.create()
    try:
        overrides = parser.parse_overrides(tokens)
    except HydraException as e:
        raise ConfigError(_unreadable(parser, tokens, str(e).splitlines()[0])) from None
    presets = any(o.key_or_group == "experiment" for o in overrides)
    for o in overrides:
        key = o.key_or_group
        if o.is_hydra_override():
            if not o.is_delete():
                _check_hydra_key(key)
            continue
        if o.is_delete():
            raise ConfigError(f"~{key} would remove a key that every run needs; set it with "
                              f"{key}=VALUE instead")
        group = Path(CONF_DIR) / key
        if group.is_dir():
            options = group_options(key)
            if isinstance(o.value(), Glob):
                if not o.value().filter(options):
                    raise ConfigError(f"{key}={o.input_line.partition('=')[2]} picks no option;"
                                      f" choose from: {', '.join(options)}")
                continue
            values = list(o.sweep_iterator()) if o.is_sweep_override() else [o.value()]
            for value in values:
                for option in value if isinstance(value, list) else [value]:
                    _check_option(key, option)
                    if key == "launcher":
                        check_launcher_installed(str(option))
            if not (o.is_add() or presets or key in _primary_groups()):
                raise ConfigError(f"{key} is not in the defaults list; add it with "
                                  f"+{key}={o.input_line.partition('=')[2]}")
            continue
        if isinstance(o.value(), Glob):
            raise ConfigError(f"{key}: glob() picks config group options, and {key} is a key")
        values = list(o.sweep_iterator()) if o.is_sweep_override() else [o.value()]
        for value in values:
            check_key_value(key, value)


def repeated_keys(args: list[str] | tuple[str, ...]) -> list[str]:
    """A line for each key a command line gives more than once (Hydra keeps the last one,
    silently)."""
    seen: dict[str, list[str]] = {}
    for arg in args:
        if not arg.startswith("-") and "=" in arg:
            seen.setdefault(arg.split("=", 1)[0].lstrip("+~"), []).append(arg)
    return [f"{key} is given {len(given)} times ({', '.join(given)}): the last one, "
            f"{given[-1]}, is used" for key, given in seen.items() if len(given) > 1]


# the Hydra sections whose keys are fixed (launchers, sweepers and loggers have their own)
_HYDRA_CHECKED = ("run", "sweep", "job", "output_subdir", "mode", "verbose")
_HYDRA_OPEN = ("job.env_set", "job.env_copy", "job.config")


def _check_hydra_key(key: str) -> None:
    from hydra.conf import HydraConf

    inner = key.removeprefix("hydra.")
    if inner.split(".")[0] not in _HYDRA_CHECKED or inner.startswith(_HYDRA_OPEN):
        return
    known = tuple(f"hydra.{k}" for k in flatten(OmegaConf.to_container(
        OmegaConf.structured(HydraConf), resolve=False, throw_on_missing=False))
        if k.split(".")[0] in _HYDRA_CHECKED)
    if key not in known:
        raise ConfigError(f"{key} is not a Hydra setting{_did_you_mean(key, known)}")


def _check_option(group: str, option) -> None:
    options = group_options(group)
    if option is not None and str(option) not in options:
        raise ConfigError(f"{group}={option!r} is not allowed; choose one of: "
                          f"{', '.join(options)}{_did_you_mean(str(option), options)}")


def schema_default(key: str):
    """The schema's default of a dotted key (None for a key it does not have)."""
    return OmegaConf.select(_defaults(), key, default=None)


@functools.cache
def _defaults() -> DictConfig:
    return OmegaConf.structured(schema())


@functools.cache
def _schema_keys() -> tuple[str, ...]:
    base = OmegaConf.structured(schema())
    sections = [k for k in base if OmegaConf.is_config(base[k])]
    return tuple(sorted(set(flatten(OmegaConf.to_container(base, resolve=False))) | set(sections)))


def check_key_value(key: str, value) -> None:
    """One override `key=value` against the typed schema."""
    keys = _schema_keys()
    if key not in keys:
        raise ConfigError(f"{key} is not a config key{_did_you_mean(key, keys)}; "
                          "`python -m ganlab.train --cfg job` prints them all")
    if isinstance(value, str) and "${" in value:
        for ref in re.findall(r"\$\{([\w.]+)\}", value):  # resolvers (${now:...}) pass
            if ref not in keys:
                raise ConfigError(f"{key}={value}: ${{{ref}}} is not a config key"
                                  f"{_did_you_mean(ref, keys)}")
        return  # an interpolation: typed when resolved
    try:
        OmegaConf.update(OmegaConf.structured(schema()), key, value, merge=True)
    except OmegaConfBaseException:
        raise ConfigError(f"{key}={value!r} is not allowed; {key} takes "
                          f"{_type_name(_field_type(key))}") from None
    if key in FIXED_CHOICES:
        choice(key, value, FIXED_CHOICES[key])
    if key in bounds() and value is not None:
        check_bound(key, value, *bounds()[key])


def _field_type(key: str):
    cls = schema()
    for part in key.split("."):
        cls = typing.get_type_hints(cls)[part]
    return cls


def _type_name(kind) -> str:
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    optional = " (or null)" if type(None) in typing.get_args(kind) else ""
    if typing.get_origin(kind) is list:
        return f"a list of {_type_name(args[0]).removeprefix('a ').removeprefix('an ')}s"
    if args and optional:
        return _type_name(args[0]) + optional
    return {int: "an integer", float: "a number", bool: "true or false",
            str: "a string"}.get(kind, str(kind))


def _did_you_mean(name: str, choices) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.7)
    return f" (did you mean {close[0]}?)" if close else ""


def check(cfg: DictConfig) -> None:
    """Everything `validate` checks, plus every choice against the registry that implements
    it; raise ConfigError naming the key, the value and what is allowed."""
    validate(cfg)
    data = DATASETS.choose(cfg.data.name)
    model = MODELS.choose(cfg.model.name)
    if model.data_kind != data.kind:
        fitting = [name for name, m in MODELS.items() if m.data_kind == data.kind]
        raise ConfigError(f"model={cfg.model.name!r} does not fit data={cfg.data.name!r}; "
                          f"{data.kind} data needs model={' or '.join(fitting)}")
    if model.image_sizes and cfg.data.image_size not in model.image_sizes:
        raise ConfigError(f"data.image_size={cfg.data.image_size!r} is not allowed with "
                          f"model={cfg.model.name}; it supports "
                          f"{', '.join(map(str, model.image_sizes))}")
    norms = {key: NORMS.choose(select(cfg, key), key) for key in ("norm.g", "norm.d")}
    batch_norms = [f"{k}={select(cfg, k)}" for k, n in norms.items() if n.batch_statistics]
    if batch_norms and cfg.train.batch_size < 2:
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} is not allowed with "
                          f"{', '.join(batch_norms)}; it must be >= 2")
    loss = LOSSES.choose(cfg.loss.name)
    smoothed = (cfg.smoothing.real_target, cfg.smoothing.fake_target) != (1.0, 0.0)
    if smoothed and not loss.uses_targets:
        taking = [name for name, kind in LOSSES.items() if kind.uses_targets]
        raise ConfigError(f"smoothing.real_target={cfg.smoothing.real_target}, "
                          f"smoothing.fake_target={cfg.smoothing.fake_target} is not allowed "
                          f"with loss={cfg.loss.name}: its D cost takes no targets, and would "
                          f"ignore them; use smoothing=none, or loss={' or '.join(taking)}")
    mode = LABEL_MODES.choose(cfg.labels.name)
    labels, fraction = cfg.labels.name, cfg.labels.fraction
    if mode.uses_labels and cfg.data.num_classes < 2:
        raise ConfigError(f"labels={labels!r} needs a labelled dataset, and data={cfg.data.name!r} "
                          f"has data.num_classes={cfg.data.num_classes}; use labels=none")
    if fraction < 1 and not mode.partial_labels:
        partial = [name for name, m in LABEL_MODES.items() if m.partial_labels]
        raise ConfigError(f"labels.fraction={fraction!r} is not allowed with labels={labels!r}; "
                          f"only labels={' or '.join(partial)} trains with partly labelled data")
    TRACKERS.choose(cfg.logger.name)
    resolve_options(cfg.extras)


# -- a saved run's config -------------------------------------------------------------------
def load_config(run_dir: Path, overrides: list[str]) -> DictConfig:
    """The run's saved config with `overrides` applied: `key=value`, or a config group choice
    (`smoothing=two_sided`, `ablation=minus_ls`), which sets what composing that choice
    sets: its own section wholesale, and whatever else it changes from the defaults."""
    path = Path(run_dir) / ".hydra" / "config.yaml"
    if not path.exists():
        raise ConfigError(f"{run_dir} has no saved config ({path}); is it a ganlab run dir?")
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(schema()), _upgrade(OmegaConf.load(path)))
    except Exception as e:  # a damaged or foreign file
        raise ConfigError(f"{path} is not a readable ganlab config "
                          f"({str(e).splitlines()[0]})") from None
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep:
            raise ConfigError(f"override {override!r} is not key=value")
        group = key.split("@")[0]
        if (Path(CONF_DIR) / group).is_dir():
            cfg = _apply_group_choice(cfg, group, override)
            continue
        parsed = OmegaConf.from_dotlist([override])
        check_key_value(key, OmegaConf.select(parsed, key))
        cfg = OmegaConf.merge(cfg, parsed)
    return cfg


def _upgrade(saved: DictConfig) -> DictConfig:
    """A config saved by an earlier release, in today's keys, meaning what it ran:
    `norm.split_real_fake` (true: separate batches; false: D's update on one joint batch,
    G's on fakes alone) became `norm.d_batches`."""
    norm = saved.get("norm")
    if isinstance(norm, DictConfig) and "split_real_fake" in norm:
        split = norm.pop("split_real_fake")
        norm.d_batches = "separate" if split else "joint_inconsistent"
    return saved


def _apply_group_choice(cfg: DictConfig, group: str, override: str) -> DictConfig:
    """Set every key the group's options decide (those any option sets away from the
    defaults) to what composing this choice gives: a row that puts a key back to its
    default puts it back here too."""
    value = override.partition("=")[2]
    options = group_options(group)
    for wanted in (v.strip() for v in value.strip("[]").split(",")):
        if wanted and wanted not in options:
            raise ConfigError(f"{group}={wanted!r} is not allowed; choose one of: "
                              f"{', '.join(options)}")
    chosen = flatten(compose([_as_override(group, value)]))
    decided = _keys_decided_by(group)
    if group in cfg:  # the group's own section is replaced as a whole
        decided |= {k for k in chosen if k.startswith(f"{group}.")}
    return OmegaConf.merge(cfg, _unflatten({k: chosen[k] for k in decided if k in chosen}))


def _as_override(group: str, value: str) -> str:
    if group in _primary_groups():
        return f"{group}={value}"
    # e.g. ablation rows: added to the defaults list, in their own package
    package = "@_global_" if _is_global(Path(CONF_DIR) / group / f"{value}.yaml") else ""
    return f"+{group}{package}={value}"


@functools.cache
def _keys_decided_by(group: str) -> frozenset[str]:
    defaults = flatten(compose([]))
    decided: set[str] = set()
    for option in group_options(group):
        composed = flatten(compose([_as_override(group, option)]))
        decided |= {k for k, v in composed.items() if defaults.get(k) != v}
    return frozenset(decided)


@functools.cache
def _primary_groups() -> frozenset[str]:
    defaults = OmegaConf.to_container(OmegaConf.load(Path(CONF_DIR) / "config.yaml"))["defaults"]
    return frozenset(k.split("@")[0].lstrip("/") for d in defaults if isinstance(d, dict)
                     for k in d if not k.startswith("override"))


def _is_global(option: Path) -> bool:
    return option.exists() and option.read_text().startswith("# @package _global_")


def _unflatten(flat: dict) -> dict:
    nested: dict = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested
