"""Evaluation of a generator: the metrics that fit its data, under a declared protocol.

`build_evaluator(cfg, data, device)` returns an evaluator with `protocol()` (everything a
score depends on besides the model; it goes into result.json's `comparability.eval`, and the
comparer compares equal protocols only) and `__call__(samples, labels) -> {"eval/...": v}`.

- 2-D mixtures: mode coverage above a uniform cloud's chance level, PacGAN's count beside it
  (ganlab.evaluate.modes).
- Images: FID, IS, KID and precision/recall in the feature space of `eval.features`, against
  cached features of a fixed real reference set (`eval.real_split`, `eval.real_num_samples`),
  plus per-class FID when G is conditional.
"""

from __future__ import annotations

import logging

import torch

from ganlab.config import eval_settings
from ganlab.data import DATASETS, load_split
from ganlab.evaluate.features import (
    EXTRACTOR_BATCH,
    ClassifierRecipe,
    Extractor,
    load_or_train_classifier,
)
from ganlab.evaluate.inception import load_inception
from ganlab.evaluate.modes import CHANCE, add_counts, metrics_from_counts, mode_counts
from ganlab.evaluate.reference import RealReference
from ganlab.memory import EVAL_CHUNK_SAMPLES
from ganlab.registry import Registry

log = logging.getLogger(__name__)

# eval.features: name -> (cfg, device) -> the feature extractor of image metrics, or None
# for no image metrics (`auto`: the dataset's own default, DatasetSpec.features)
FEATURES: Registry = Registry("eval.features")
FEATURES.register("classifier")(lambda cfg, device: load_or_train_classifier(
    ClassifierRecipe(cfg.data.name, epochs=cfg.eval.classifier_epochs),
    lambda split: load_split(cfg.data, split), device))
FEATURES.register("inception")(lambda cfg, device: load_inception(cfg.eval.inception_weights,
                                                                  device))
FEATURES.register("none")(lambda cfg, device: None)


protocol_settings = eval_settings  # the `eval.*` keys of a protocol (ganlab.config)
IMAGE_CHUNK_SAMPLES = 2048  # images generated and featurised at a time


class ModeEvaluator:
    def __init__(self, data, eval_cfg, settings: dict):
        self.data, self.cfg, self.settings = data, eval_cfg, settings

    def protocol(self) -> dict:
        # modes_rule: how a mode counts as covered (above a uniform cloud's chance level);
        # records without it counted a mode with mode_min_count samples, and never compare
        return {**self.settings, "metrics": "modes2d", "features": None, "g_mode": "eval",
                "modes_rule": "above_uniform_chance", "modes_chance": CHANCE}

    def num_samples(self, final: bool) -> int:
        return self.cfg.num_samples

    # samples scored at a time (ganlab.evaluate.score): memory stays bounded at any
    # eval.num_samples, and a stop request is seen between chunks
    chunk_samples = EVAL_CHUNK_SAMPLES
    # the keys it returns; each has its entry in ganlab.metrics (a test checks)
    keys = ("eval/modes_covered", "eval/modes_pacgan", "eval/hq_pct", "eval/reverse_kl")

    def tally(self) -> ModeTally:
        return ModeTally(self)

    def __call__(self, samples: torch.Tensor, labels: torch.Tensor | None = None) -> dict:
        tally = self.tally()
        tally.add(samples, labels)
        return tally.result()


class ModeTally:
    """Mode counts over chunks of samples; `result()` is mode_metrics of all of them."""

    def __init__(self, evaluator: ModeEvaluator):
        self.e, self.counts = evaluator, None

    def add(self, samples: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        e = self.e
        self.counts = add_counts(self.counts, mode_counts(samples, e.data.modes, e.data.std,
                                                          e.cfg.hq_std))

    def result(self) -> dict:
        e = self.e
        m = metrics_from_counts(self.counts, e.data.modes, e.data.std, e.cfg.hq_std,
                                e.cfg.mode_min_count)
        return {f"eval/{k}": v for k, v in m.items()}


class NoImageMetrics(ModeEvaluator):
    """`eval.features=none`: sample grids only (fast runs, smoke tests, benchmarks)."""

    def protocol(self) -> dict:
        return {**self.settings, "metrics": "none", "g_mode": "eval"}

    keys = ()

    def tally(self) -> NoTally:
        return NoTally()


class NoTally:
    def add(self, samples: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        pass

    def result(self) -> dict:
        return {}


class ImageEvaluator:
    def __init__(self, extractor: Extractor, reference: RealReference, eval_cfg,
                 settings: dict):
        self.extractor, self.reference, self.cfg = extractor, reference, eval_cfg
        self.settings = settings

    def protocol(self) -> dict:
        # the settings, then what they resolved to: the extractor's identity and weights
        # hash, and the size of the real reference set actually used
        return {**self.settings, "metrics": "fid,is,kid,precision_recall",
                **self.extractor.protocol(), "real_split": self.reference.split,
                "real_num_samples": self.reference.count, "g_mode": "eval"}

    def num_samples(self, final: bool) -> int:
        return self.cfg.final_num_samples if final else self.cfg.num_samples

    chunk_samples = IMAGE_CHUNK_SAMPLES  # images generated at a time; their features stay
    # the keys it returns (`fid_class/<k>` per class of a conditional G: FID's entry)
    keys = ("eval/fid", "eval/is", "eval/is_std", "eval/kid", "eval/kid_std",
            "eval/precision", "eval/recall", "eval/fid_class/<k>")
    align = EXTRACTOR_BATCH  # chunks are whole batches of the extractor's

    def tally(self) -> ImageTally:
        return ImageTally(self)

    def __call__(self, samples: torch.Tensor, labels: torch.Tensor | None = None) -> dict:
        tally = self.tally()
        tally.add(samples, labels)
        return tally.result()

    def metrics(self, feats: torch.Tensor, logits: torch.Tensor,
                labels: torch.Tensor | None) -> dict:
        # imported here: torchmetrics costs a second of start-up that 2-D runs never need
        from ganlab.evaluate.image_metrics import fid, inception_score, kid, precision_recall

        e, ref = self.cfg, self.reference
        is_mean, is_std = inception_score(logits, e.is_splits)
        kid_mean, kid_std = kid(ref.features, feats, e.kid_subsets, e.kid_subset_size)
        precision, recall = precision_recall(ref.features, feats, e.pr_k)
        metrics = {"eval/fid": fid(ref.features, feats), "eval/is": is_mean,
                   "eval/is_std": is_std, "eval/kid": kid_mean, "eval/kid_std": kid_std,
                   "eval/precision": precision, "eval/recall": recall}
        if labels is not None:  # a conditional G: how well does each class match its own?
            for c in labels.unique().tolist():
                mine, theirs = feats[labels == c], ref.features[ref.labels == c]
                if len(mine) >= 2 and len(theirs) >= 2:
                    metrics[f"eval/fid_class/{c}"] = fid(theirs, mine)
        return metrics


class ImageTally:
    """The features and logits of chunks of images (the images themselves are not kept);
    `result()` is the evaluator's metrics of all of them."""

    def __init__(self, evaluator: ImageEvaluator):
        self.e, self.feats, self.logits, self.labels = evaluator, [], [], []

    def add(self, samples: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        f, lg = self.e.extractor(samples)
        self.feats.append(f)
        self.logits.append(lg)
        if labels is not None:
            self.labels.append(labels)

    def result(self) -> dict:
        labels = torch.cat(self.labels) if self.labels else None
        return self.e.metrics(torch.cat(self.feats), torch.cat(self.logits), labels)


EVALUATORS = (ModeEvaluator, NoImageMetrics, ImageEvaluator)


def resolve_features(name: str, dataset: str) -> str:
    """`auto`: the dataset's own feature space (none for 2-D data, scored by modes)."""
    return (DATASETS.choose(dataset).features or "none") if name == "auto" else name


def build_evaluator(cfg, data, device: torch.device):
    """The evaluator for a run's data: mode coverage (2-D) or image metrics."""
    make_extractor = FEATURES.choose(resolve_features(cfg.eval.features, cfg.data.name))
    settings = protocol_settings(cfg)
    if data.kind == "toy2d":
        return ModeEvaluator(data, cfg.eval, settings)
    extractor = make_extractor(cfg, device)
    if extractor is None:
        return NoImageMetrics(data, cfg.eval, settings)
    reference = RealReference.load_or_compute(cfg.data, cfg.eval.real_split,
                                              cfg.eval.real_num_samples, extractor)
    return ImageEvaluator(extractor, reference, cfg.eval, settings)
