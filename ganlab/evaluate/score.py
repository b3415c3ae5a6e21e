"""Scoring a generator: fresh seeded samples, the evaluator's metrics, batch coupling, and a
picture of the samples. The training loop and `python -m ganlab.evaluate` both score here.

Samples come from a generator of their own, seeded by the run's seed and the step, so an
evaluation never perturbs training and every evaluation of a resumed or re-scored run sees
the same z as the uninterrupted run.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ganlab.assemble import derive_seed
from ganlab.evaluate.coupling import batch_coupling
from ganlab.plots import save_samples
from ganlab.stops import Progress

# the keys `score` adds to every evaluator's (ganlab.metrics has their entries)
SCORE_KEYS = ("eval/coupling",)


class EvaluationStopped(Exception):
    """A stop request arrived during an evaluation, which is left undone (the run's
    checkpoint is taken after the same round: a relaunch evaluates it first)."""


def score(gan, evaluator, *, seed: int, step: int, final: bool, eval_cfg, coupling_batch: int,
          picture: Path, title: str, stop=None) -> tuple[dict, int]:
    """(metrics, number of generated samples) of G now; saves its samples to `picture`.

    `eval_cfg` gives the generation batch size and the grid size; `coupling_batch` is the
    minibatch size batch coupling is measured at (the training batch size). Samples are
    drawn and scored in chunks of whole generation batches (the same latents as one pass),
    so memory stays bounded; `stop()` is asked between chunks (EvaluationStopped)."""
    gen = torch.Generator().manual_seed(derive_seed(seed, f"eval{step}"))
    n = evaluator.num_samples(final)
    # a conditional G is asked for every class in turn (per-class scores, tidy grids)
    labels = torch.arange(n) % gan.num_classes if gan.labels.conditional_g else None
    unit = math.lcm(eval_cfg.batch_size, getattr(evaluator, "align", 1))
    chunk = unit * max(1, evaluator.chunk_samples // unit)
    tally, shown = evaluator.tally(), None
    # the final score (10,000 samples by default) is long enough to show its progress
    with Progress(n, f"step {step}: scoring", "samples", enabled=final and n > chunk
                  ) as progress:
        for start in range(0, n, chunk):
            if stop is not None and stop():
                raise EvaluationStopped(f"the evaluation at step {step} was stopped")
            part_labels = None if labels is None else labels[start:start + chunk]
            part = gan.generate(min(chunk, n - start), gen, eval_cfg.batch_size, part_labels)
            tally.add(part, part_labels)
            progress.update(len(part))
            if shown is None:  # the picture shows the first chunk
                shown = part
    metrics = tally.result()
    metrics["eval/coupling"] = batch_coupling(gan, coupling_batch, gen)  # SCORE_KEYS
    save_samples(shown, gan.data, picture, title, eval_cfg.grid_size, eval_cfg.hq_std)
    return metrics, n
