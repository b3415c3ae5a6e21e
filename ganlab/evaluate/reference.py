"""The real side of image metrics, computed once and cached.

Per (dataset, split and its content hash, extractor weights hash, count) the features, logits and labels of a
fixed reference set (the first `count` images of a seed-0 permutation of the split) are
stored under `$GANLAB_CACHE/refstats/`. Every run and every sweep reuses them; the entry is
written atomically under a file lock, so concurrent runs compute it once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ganlab.data import load_split
from ganlab.data.images import to_signed_unit
from ganlab.evaluate.features import Extractor, cache_dir, cached, tensor_sha256

log = logging.getLogger(__name__)


@dataclass
class RealReference:
    split: str
    count: int
    features: torch.Tensor  # (count, d) float64
    logits: torch.Tensor  # (count, K) float64
    labels: torch.Tensor  # (count,)

    @staticmethod
    def compute(images: torch.Tensor, labels: torch.Tensor, count: int,
                extractor: Extractor, what: str = "real reference features") -> dict:
        idx = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:count]
        feats, logits = extractor(to_signed_unit(images[idx]), what=what)
        return {"features": feats, "logits": logits, "labels": labels[idx].clone()}

    @classmethod
    def load_or_compute(cls, data_cfg, split: str, count: int, extractor: Extractor
                        ) -> RealReference:
        images, labels = load_split(data_cfg, split)
        # the split's content is part of the key: another copy of the data is another entry
        content = tensor_sha256([images, labels])[:12]
        name = (f"{data_cfg.name}_{split}-{content}_{extractor.name}-{extractor.sha256[:12]}"
                f"_{count}.pt")
        saved = cached(cache_dir() / "refstats" / name,
                       lambda: cls.compute(images, labels, count, extractor,
                                           f"{data_cfg.name} {split}: real features"),
                       f"computing the real reference features of {data_cfg.name} {split}")
        return cls(split, len(saved["labels"]), saved["features"], saved["logits"],
                   saved["labels"])
