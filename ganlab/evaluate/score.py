"""Scoring a generator: fresh seeded samples, the evaluator's metrics, batch coupling, and a
picture of the samples. The training loop and `python -m ganlab.evaluate` both score here.

Samples come from a generator of their own, seeded by the run's seed and the step, so an
evaluation never perturbs training and every evaluation of a resumed or re-scored run sees
the same z as the uninterrupted run.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ganlab.assemble import derive_seed
from ganlab.evaluate.coupling import batch_coupling
from ganlab.plots import save_samples


def score(gan, evaluator, *, seed: int, step: int, final: bool, eval_cfg, coupling_batch: int,
          picture: Path, title: str) -> tuple[dict, int]:
    """(metrics, number of generated samples) of G now; saves its samples to `picture`.

    `eval_cfg` gives the generation batch size and the grid size; `coupling_batch` is the
    minibatch size batch coupling is measured at (the training batch size)."""
    gen = torch.Generator().manual_seed(derive_seed(seed, f"eval{step}"))
    n = evaluator.num_samples(final)
    # a conditional G is asked for every class in turn (per-class scores, tidy grids)
    labels = torch.arange(n) % gan.num_classes if gan.labels.conditional_g else None
    samples = gan.generate(n, gen, eval_cfg.batch_size, labels)
    metrics = evaluator(samples, labels)
    metrics["eval/coupling"] = batch_coupling(gan, coupling_batch, gen)
    save_samples(samples, gan.data, picture, title, eval_cfg.grid_size)
    return metrics, n
