"""What a sweep dir says about its sweep: the keys it swept (Hydra's multirun.yaml, written
before its first job), read by a run (its W&B tags) and by the comparer (its variant order)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf


def sweep_axes(sweep_dir: Path) -> dict[str, list[str]]:
    """The keys a sweep swept (seed aside) and their values in the order its command listed
    them: the preset's sweeper params, then comma lists on the command line (Hydra's
    multirun.yaml). Empty where there is no readable multirun.yaml."""
    try:
        conf = OmegaConf.load(Path(sweep_dir) / "multirun.yaml")
        params = OmegaConf.select(conf, "hydra.sweeper.params") or {}
        task = OmegaConf.select(conf, "hydra.overrides.task") or []
    except Exception:  # no file, or not one of Hydra's
        return {}
    listed = [(str(k), str(v)) for k, v in params.items()]
    listed += [tuple(str(o).split("=", 1)) for o in task if "=" in str(o)]
    axes = {}
    for k, v in listed:
        if "," in v and not v.lstrip().startswith(("[", "{")) and "(" not in v:
            axes[k.lstrip("+~")] = [x.strip() for x in v.split(",")]
    axes.pop("seed", None)
    return axes

