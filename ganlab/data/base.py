"""What every data source provides, and what every dataset of the registry declares.

A source has `kind` ("toy2d" or "image"), `num_classes`, `sample_shape`,
`sample(batch_size) -> (x, y)` (y = UNLABELLED where a label is hidden),
`reference_batch(n, gen)` for reference/virtual norm, and `state_dict()` /
`load_state_dict()` for exact resume.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

UNLABELLED = -1  # the label of a real sample whose label is hidden (labels.fraction < 1)


@dataclass(frozen=True)
class DatasetSpec:
    kind: str  # "toy2d" (2-D mixtures, scored by mode coverage) or "image"
    # images: (root, split, download) -> (uint8 images (N, C, H, W), labels)
    load_split: Callable | None = None
    # images: the feature space `eval.features=auto` scores them in (a classifier trained on
    # the dataset for MNIST-like data; the FID-standard InceptionV3 for natural images)
    features: str | None = None
