"""Every refusal a config can get, before anything is written.

`preflight(cfg)` is what a launch checks before Hydra makes a run dir (`python -m
ganlab.train`), before the first job of a sweep launches (ganlab's sweeper checks every cell
of the sweep), and before `run()` opens a dir: the names and cross-key rules
(ganlab.configure.check), the device and the Adam kernel, CUDA-graph capture, D's
reference batch against its data, and the memory the run needs against the memory free
(ganlab.memory; on a GPU that is checked again where the run trains). A refused launch
leaves nothing behind: no run dir, no record for the comparer to pick up.
"""

from __future__ import annotations

from omegaconf import DictConfig

from ganlab.assemble import resolve_device, resolve_optimizer_impl
from ganlab.configure import check
from ganlab.graphs import refuse_uncapturable
from ganlab.memory import check_fits, refuse_oversized_reference


def preflight(cfg: DictConfig, at_once: int = 1, stack: int | None = None) -> None:
    """Raise ConfigError (one line naming the key) if `cfg` cannot run here; `at_once` runs
    share the machine (a sweep's joblib jobs), `stack` seeds train as one stacked model
    (default: the config's own `fanout.group_seeds`)."""
    check(cfg)
    device = resolve_device(cfg.train.device)
    resolve_optimizer_impl(cfg.train.optimizer_impl, device)
    refuse_uncapturable(cfg, device)
    refuse_oversized_reference(cfg)
    if stack is None:
        stack = max(1, len(cfg.fanout.group_seeds))
    if device.type == "cpu":
        check_fits(cfg, device, stack=stack, at_once=at_once)
