"""A finished run's G, rebuilt from its saved config and checkpoint (no Trainer): what
re-scoring (`python -m ganlab.evaluate`) and the coupling figure
(`python -m ganlab.evaluate.figure21`) start from."""

from __future__ import annotations

from pathlib import Path

from ganlab.assemble import build_gan, resolve_device
from ganlab.checkpoint import CheckpointError, load_latest
from ganlab.config import RESCORE_ROLES, ConfigError, role_of
from ganlab.configure import check, load_config


def load_run_config(run_dir: Path, overrides: list[str]):
    """The run's saved config with evaluation, schedule or infrastructure overrides only."""
    bad = [o for o in overrides if role_of(o.split("=", 1)[0]) not in RESCORE_ROLES]
    if bad:
        raise ConfigError(f"{', '.join(bad)}: only evaluation, schedule and infrastructure "
                          "keys (eval.*, data.root, train.device, ...) may change when "
                          "re-scoring a run; anything else would describe another model")
    saved = load_config(run_dir, [])
    cfg = load_config(run_dir, overrides)
    if cfg.eval.ema != saved.eval.ema:
        raise ConfigError(f"eval.ema={cfg.eval.ema} is not allowed when re-scoring {run_dir}: "
                          "the average of G's weights is built during training, and this run "
                          + (f"built it with eval.ema={saved.eval.ema}" if saved.eval.ema else
                             "kept none (eval.ema=0)") + "; to score another average, train "
                          f"it: python -m ganlab.rerun {run_dir} eval.ema={cfg.eval.ema}")
    if any(o.startswith("eval.num_samples=") for o in overrides):
        cfg.eval.final_num_samples = cfg.eval.num_samples
    check(cfg)
    return cfg


def load_trained(run_dir: Path, overrides: list[str]):
    """(config, GAN with the checkpoint's weights, the checkpoint's step)."""
    cfg = load_run_config(run_dir, overrides)
    try:
        state = load_latest(Path(run_dir) / "checkpoints")
    except CheckpointError as e:  # every checkpoint damaged
        state, why = None, f" ({e})"
    else:
        why = ""
    if state is None:
        raise ConfigError(f"{run_dir} has no good checkpoint left to score (none was written, "
                          f"or all are damaged or deleted{why}); its record stands as it is. "
                          "To score this config again, train it anew: python -m ganlab.rerun "
                          f"{run_dir}")
    gan = build_gan(cfg, resolve_device(cfg.train.device))
    gan.load_state_dict(state["gan"])
    return cfg, gan, state["counters"]["step"]
