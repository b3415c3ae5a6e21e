"""Evaluation of a generator: the metrics that fit its data, computed on fresh samples.

`evaluate_samples` is called by the training loop every `eval.every` steps and returns flat
`eval/...` metrics. 2-D mixtures get mode coverage; image metrics (FID/IS/KID) plug in here.
"""

from __future__ import annotations

import torch

from ganlab.evaluate.modes import mode_metrics


def evaluate_samples(samples: torch.Tensor, data, eval_cfg) -> dict[str, float | int | None]:
    if data.kind == "toy2d":
        metrics = mode_metrics(samples, data.modes, data.std, eval_cfg.hq_std,
                               eval_cfg.mode_min_count)
        return {f"eval/{k}": v for k, v in metrics.items()}
    return {}


def protocol(data_kind: str, eval_cfg) -> dict:
    """What a score depends on besides the model: the comparer compares equal protocols only."""
    if data_kind == "toy2d":
        return {"metrics": "modes2d", "num_samples": eval_cfg.num_samples,
                "hq_std": eval_cfg.hq_std, "mode_min_count": eval_cfg.mode_min_count,
                "g_mode": "eval"}
    return {"metrics": "none", "num_samples": eval_cfg.num_samples, "g_mode": "eval"}
