"""What every data source provides, and what every dataset of the registry declares.

A source has `kind` ("toy2d" or "image"), `num_classes`, `sample_shape`,
`sample(batch_size, labels=True) -> (x, y)` on the training device (y = UNLABELLED where a
label is hidden, None when `labels` is false), `reference_batch(n, gen)` for
reference/virtual norm, and `state_dict()` / `load_state_dict()` for exact resume.

Random streams live on the training device (`stream_state` / `restore_stream` save and
restore them), so drawing a batch never copies from the host.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

UNLABELLED = -1  # the label of a real sample whose label is hidden (labels.fraction < 1)


def stream_state(gen: torch.Generator) -> dict:
    """A generator's state, with the device type it belongs to."""
    return {"device": gen.device.type, "state": gen.get_state()}


def restore_stream(gen: torch.Generator, saved: dict | torch.Tensor) -> None:
    """Put `gen` back in a saved state (`stream_state`; a bare tensor is a CPU state).

    A CPU and a CUDA generator's states are not interchangeable: a run resumed on another
    device type continues from a seed derived from the saved state, reproducibly, but not
    with the numbers the first device would have drawn."""
    if isinstance(saved, torch.Tensor):
        saved = {"device": "cpu", "state": saved}
    if saved["device"] == gen.device.type:
        gen.set_state(saved["state"])
        return
    digest = hashlib.sha256(saved["state"].cpu().numpy().tobytes()).digest()
    gen.manual_seed(int.from_bytes(digest[:8], "little") >> 1)


@dataclass(frozen=True)
class DatasetSpec:
    kind: str  # "toy2d" (2-D mixtures, scored by mode coverage) or "image"
    # images: (root, split, download) -> (uint8 images (N, C, H, W), labels)
    load_split: Callable | None = None
    # images: the feature space `eval.features=auto` scores them in (a classifier trained on
    # the dataset for MNIST-like data; the FID-standard InceptionV3 for natural images)
    features: str | None = None
    # images: the number of samples in each split, so that a config can be checked against
    # them before anything is loaded (a reference batch cannot be larger than its split)
    split_sizes: dict = field(default_factory=dict)
