"""Plug-in tricks: the one extension point for tricks that add a layer to D or a term to a
player's cost (Salimans et al. 2016's minibatch discrimination, historical averaging,
feature matching, ...).

A plug-in is one module in this package that registers a subclass of `Extra` in `EXTRAS`
under its config name. Its `Options` dataclass is its typed config (`extras.<name>.*`; the
defaults mean off), and it overrides only the hooks it needs:

- `d_layer(in_features)`: a layer on D's features, between its trunk and its head;
- `separate_real_fake`: D must see real and generated samples as separate batches;
- `g_reads_real`: its G term reads `step.real()` (a real batch is drawn for each G update);
- `bind(G, D)`: called once the networks are built (e.g. to snapshot parameters);
- `d_terms(step)`, `g_terms(step)`: named terms added to D's or G's cost in one update, from
  `step.fake` / `step.real()` (ganlab.gan.Step: D's outputs on this update's batches);
- `after_update(who)`: after each optimiser step of "d" or "g";
- `state_dict()` / `load_state_dict()`: whatever resuming needs.

Modules here are found and imported automatically: adding a plug-in is one new module and
one option file under conf/extras/, with no edit to the loop, the GAN or the schema.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from dataclasses import field, fields, make_dataclass
from typing import Any, ClassVar

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ganlab.config import ConfigError
from ganlab.registry import Registry


class Extra:
    Options: ClassVar[type]  # a dataclass of the plug-in's options; its defaults mean off
    separate_real_fake: ClassVar[bool] = False
    g_reads_real: ClassVar[bool] = False

    def __init__(self, name: str, options: Any):
        self.name, self.options = name, options

    @classmethod
    def active(cls, options: Any) -> bool:
        """Whether these options switch the plug-in on (default: a weight above 0)."""
        return options.weight > 0

    @classmethod
    def check(cls, options: Any, key: str) -> None:
        """Raise ConfigError for options no run can use (default: a weight below 0)."""
        if getattr(options, "weight", 0) < 0:
            raise ConfigError(f"{key}.weight={options.weight!r} is not allowed; "
                              "it must be >= 0 (0: off)")

    def d_layer(self, in_features: int) -> nn.Module | None:
        return None

    def bind(self, G: nn.Module, D: nn.Module) -> None:
        pass

    def d_terms(self, step) -> dict[str, torch.Tensor]:
        return {}

    def g_terms(self, step) -> dict[str, torch.Tensor]:
        return {}

    def after_update(self, who: str) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


EXTRAS: Registry[type[Extra]] = Registry("extras")
# the hooks through which a plug-in keeps state outside the networks
STATEFUL_HOOKS = ("bind", "after_update", "state_dict", "load_state_dict")


def stateful(cls: type[Extra]) -> bool:
    """Whether a plug-in keeps state outside the networks, updated by Python between
    optimiser steps (a stack of seeds or a CUDA graph cannot carry it)."""
    return any(getattr(cls, hook) is not getattr(Extra, hook) for hook in STATEFUL_HOOKS)


def options_schema() -> type:
    """The `extras` section of the config schema: every plug-in's Options, by name; one class
    per set of plug-ins, importable as `ganlab.extras.PluginOptions` (pickled by name)."""
    key = tuple(sorted(EXTRAS))
    if key not in _OPTIONS:
        cls = make_dataclass("PluginOptions", [(name, EXTRAS[name].Options,
                                                field(default_factory=EXTRAS[name].Options))
                                               for name in key])
        cls.__module__ = __name__
        _OPTIONS[key] = cls
    return _OPTIONS[key]


_OPTIONS: dict[tuple[str, ...], type] = {}


def __getattr__(name: str):
    if name == "PluginOptions":  # the extras section, by name (see `options_schema`)
        return options_schema()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def resolve_options(extras_cfg: DictConfig | dict | None) -> dict[str, Any]:
    """Every plug-in's typed options (defaults where the config says nothing), checked."""
    given = (OmegaConf.to_container(extras_cfg, resolve=True) if isinstance(extras_cfg, DictConfig)
             else dict(extras_cfg or {}))
    for name in given:
        if name not in EXTRAS:
            raise ConfigError(f"extras.{name} is not a plug-in{_did_you_mean(name, EXTRAS)}; "
                              f"choose from: {', '.join(sorted(EXTRAS))}")
    resolved = {}
    for name, cls in sorted(EXTRAS.items()):
        known = {f.name for f in fields(cls.Options)}
        values = given.get(name) or {}
        for key in values:
            if key not in known:
                raise ConfigError(f"extras.{name}.{key} is not an option of {name}"
                                  f"{_did_you_mean(key, known)}; options: "
                                  f"{', '.join(sorted(known))}")
        options = cls.Options(**values)
        cls.check(options, f"extras.{name}")
        resolved[name] = options
    return resolved


def build_extras(extras_cfg: DictConfig | dict | None) -> list[Extra]:
    """The active plug-ins of a run, in name order (their terms are summed in this order)."""
    return [EXTRAS[name](name, options) for name, options in resolve_options(extras_cfg).items()
            if EXTRAS[name].active(options)]


def _did_you_mean(name: str, choices) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
