"""A run's configuration as a whole: the full schema, composing it, loading a saved one, and
checking it against what the parts support.

- `schema()`: ganlab.config's schema with its `extras` section typed by the plug-ins of
  ganlab.extras, so `extras.<name>.<option>=...` is typed and a typo fails at composition.
- `compose(overrides)`: the config `python -m ganlab.train OVERRIDES` runs.
- `load_config(run_dir, overrides)`: a run's saved config (`.hydra/config.yaml`), not
  today's `conf/`, with overrides applied (for re-running and re-scoring).
- `check(cfg)`: `ganlab.config.validate` plus every name against its registry, and the
  data/model pairing each model family declares.
"""

from __future__ import annotations

import functools
from dataclasses import field, make_dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ganlab.config import CONF_DIR, Config, ConfigError, Role, flatten, select, validate
from ganlab.data import DATASETS
from ganlab.extras import options_schema, resolve_options
from ganlab.labels import LABEL_MODES
from ganlab.losses import LOSSES
from ganlab.nets import MODELS
from ganlab.nets.norm import NORMS
from ganlab.tracking import TRACKERS


@functools.cache
def schema() -> type:
    """The run config's schema: ganlab.config.Config with every plug-in's typed options."""
    extras = options_schema()
    return make_dataclass("Config", [("extras", extras, field(default_factory=extras,
                                                               metadata={"role": Role.TRICK}))],
                          bases=(Config,))


def register_configs() -> None:
    from hydra.core.config_store import ConfigStore

    # One schema for the whole tree: each group's YAML merges into its typed field, so an
    # unknown key or a wrong type fails at composition.
    ConfigStore.instance().store(name="config_schema", node=schema())


def compose(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """The config `python -m ganlab.train OVERRIDES` would run (for tests, benches, tools)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))


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
    for key in ("norm.g", "norm.d"):
        NORMS.choose(select(cfg, key), key)
    LOSSES.choose(cfg.loss.name)
    LABEL_MODES.choose(cfg.labels.name)
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
        cfg = OmegaConf.merge(OmegaConf.structured(schema()), OmegaConf.load(path))
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
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([override]))
        except Exception as e:  # unknown key, wrong type
            raise ConfigError(f"{override}: {e}".splitlines()[0]) from None
    return cfg


def _apply_group_choice(cfg: DictConfig, group: str, override: str) -> DictConfig:
    value = override.partition("=")[2]
    folder = Path(CONF_DIR) / group
    options = sorted(p.stem for p in folder.glob("*.yaml"))
    for wanted in (v.strip() for v in value.strip("[]").split(",")):
        if wanted and wanted not in options:
            raise ConfigError(f"{group}={wanted!r} is not allowed; choose one of: "
                              f"{', '.join(options)}")
    if group not in _primary_groups():  # e.g. ablation rows: added to the defaults list
        package = "@_global_" if _is_global(folder / f"{value}.yaml") else ""
        override = f"+{group}{package}={value}"
    defaults, chosen = flatten(compose([])), compose([override])
    changed = {k: v for k, v in flatten(chosen).items() if defaults.get(k) != v}
    if group in cfg:  # the group's own section is replaced as a whole
        cfg = OmegaConf.merge(cfg, {group: chosen[group]})
    return OmegaConf.merge(cfg, _unflatten(changed))


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
