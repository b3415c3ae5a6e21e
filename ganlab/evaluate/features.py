"""Feature extractors for image metrics, chosen by `eval.features`.

- `classifier`: a small CNN that ganlab trains on the dataset's own training split the first
  time it is needed (seeded, deterministic), then caches by a content hash of its recipe and
  training data, with its test accuracy recorded. Its logits feed IS; its penultimate layer
  feeds FID, KID and precision/recall. The default for MNIST-like data and the only choice
  offline.
- `inception`: the FID-standard InceptionV3 of torch-fidelity, through torchmetrics (the
  standard for CIFAR-10 and up). Weights are downloaded on first use, or read from
  `eval.inception_weights`. Where neither works the error says how to provide them; there
  is never a silent fallback to another extractor.

An extractor maps images in [-1, 1], (N, C, H, W), to (features (N, d), logits (N, K)).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ganlab.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ganlab.config import ConfigError
from ganlab.data.images import to_signed_unit
from ganlab.optim import Adam

log = logging.getLogger(__name__)

INCEPTION_WEIGHTS_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                         "weights-inception-2015-12-05-6726825d.pth")


def cache_dir() -> Path:
    return Path(os.path.expanduser(os.environ.get("GANLAB_CACHE", "~/.cache/ganlab")))


def tensor_sha256(tensors) -> str:
    digest = hashlib.sha256()
    for t in tensors:
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@contextmanager
def file_lock(path: Path):
    """An exclusive lock so that concurrent runs build a cache entry once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def cached(path: Path, build, what: str) -> dict:
    """The cache entry at `path`, built once (under a file lock, so concurrent runs build it
    once) when it is missing or damaged."""
    with file_lock(path.with_suffix(".lock")):
        if path.exists():
            try:
                return load_checkpoint(path)
            except CheckpointError as e:
                log.warning("%s; rebuilding it", e)
        log.info("%s (once; cached at %s)", what, path)
        state = build()
        save_checkpoint(state, path)
        return state


@dataclass
class Extractor:
    name: str
    net: nn.Module  # images -> (features, logits)
    sha256: str  # of the weights: part of every score's protocol
    preprocessing: str
    info: dict = field(default_factory=dict)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, batch_size: int = 500
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        device = next(self.net.parameters()).device
        feats, logits = [], []
        for start in range(0, len(images), batch_size):
            f, lg = self.net(images[start:start + batch_size].to(device))
            feats.append(f.double().cpu())
            logits.append(lg.double().cpu())
        return torch.cat(feats), torch.cat(logits)

    def protocol(self) -> dict:
        return {"features": self.name, "extractor_sha256": self.sha256,
                "preprocessing": self.preprocessing, **self.info}


# -- the classifier ----------------------------------------------------------------------------
class SmallCNN(nn.Module):
    """Two conv blocks (with batch norm, for fast convergence) and a 128-unit feature
    layer; used in eval mode only once trained."""

    def __init__(self, channels: int, image_size: int, num_classes: int, width: int = 16):
        super().__init__()
        s = image_size // 4
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(2 * width * s * s, 128), nn.ReLU())
        self.logits = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x)
        return h, self.logits(h)


@dataclass(frozen=True)
class ClassifierRecipe:
    dataset: str
    epochs: int = 2
    batch_size: int = 128
    lr: float = 3e-3  # peak of a one-cycle schedule: 99.2 % on MNIST in two epochs
    width: int = 16
    seed: int = 0


def _accuracy(net: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    net.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(images), 1000):
            _, logits = net(images[start:start + 1000])
            correct += int((logits.argmax(1) == labels[start:start + 1000]).sum())
    return correct / len(images)


def train_classifier(recipe: ClassifierRecipe, train_x: torch.Tensor, train_y: torch.Tensor,
                     test_x: torch.Tensor, test_y: torch.Tensor) -> tuple[nn.Module, float]:
    """Train deterministically (fixed seed, fixed shuffles); images in [-1, 1]."""
    with torch.random.fork_rng(devices=[]):  # the caller's global RNG stays as it was
        torch.manual_seed(recipe.seed)
        net = SmallCNN(train_x.shape[1], train_x.shape[2], int(train_y.max()) + 1,
                       recipe.width)
    gen = torch.Generator().manual_seed(recipe.seed)
    opt = Adam(net.parameters(), lr=recipe.lr)
    steps_per_epoch = len(train_x) // recipe.batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr,
                                                total_steps=max(1, steps_per_epoch * recipe.epochs))
    total, start = steps_per_epoch * recipe.epochs, time.perf_counter()
    report_every = max(1, steps_per_epoch // 4)  # long work shows progress: 4 lines an epoch
    for epoch in range(recipe.epochs):
        net.train()
        order = torch.randperm(len(train_x), generator=gen)
        for i in range(steps_per_epoch):
            idx = order[i * recipe.batch_size:(i + 1) * recipe.batch_size]
            _, logits = net(train_x[idx])
            loss = F.cross_entropy(logits, train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            done = epoch * steps_per_epoch + i + 1
            if (i + 1) % report_every == 0 and i + 1 < steps_per_epoch:
                elapsed = time.perf_counter() - start
                log.info("classifier epoch %d/%d: %d%%, loss %.3f (%.0f s, about %.0f s left)",
                         epoch + 1, recipe.epochs, 100 * (i + 1) // steps_per_epoch,
                         loss.item(), elapsed, elapsed * (total - done) / done)
        log.info("classifier epoch %d/%d: test accuracy %.4f (%.0f s)", epoch + 1,
                 recipe.epochs, _accuracy(net, test_x, test_y), time.perf_counter() - start)
    net.eval()
    return net, _accuracy(net, test_x, test_y)


def load_or_train_classifier(recipe: ClassifierRecipe, load_split, device: torch.device
                             ) -> Extractor:
    """The cached classifier for `recipe`, trained on first use. `load_split(split)` gives
    (uint8 images, labels) of the dataset's train or test split."""
    train_u8, train_y = load_split("train")
    key = hashlib.sha256(json.dumps(recipe.__dict__, sort_keys=True).encode()
                         + tensor_sha256([train_u8, train_y]).encode()).hexdigest()[:16]
    path = cache_dir() / "extractors" / f"classifier_{recipe.dataset}_{key}.pt"

    def train() -> dict:
        test_u8, test_y = load_split("test")
        net, acc = train_classifier(recipe, to_signed_unit(train_u8), train_y,
                                    to_signed_unit(test_u8), test_y)
        return {"state_dict": net.state_dict(), "recipe": recipe.__dict__,
                "test_accuracy": acc, "num_classes": net.logits.out_features,
                "shape": list(train_u8.shape[1:])}

    saved = cached(path, train, f"training the {recipe.dataset} feature classifier")
    c, s, _ = saved["shape"]
    net = SmallCNN(c, s, saved["num_classes"], recipe.width)
    net.load_state_dict(saved["state_dict"])
    net.eval().requires_grad_(False).to(device)
    sha = tensor_sha256(saved["state_dict"].values())
    return Extractor("classifier", net, sha,
                     preprocessing=f"[-1, 1] float, {c}x{s}x{s}, no resize",
                     info={"extractor_test_accuracy": round(saved["test_accuracy"], 5)})


# -- InceptionV3 ---------------------------------------------------------------------------------
INCEPTION_HELP = (
    "eval.features=inception needs (1) the inception extra, torch-fidelity importable "
    "beside your torch (`pip install 'ganlab[inception]'`; it needs a torchvision built for "
    "the same torch), and "
    "(2) the FID InceptionV3 weights: downloaded on first use from " + INCEPTION_WEIGHTS_URL
    + ", or, offline, downloaded elsewhere and given as eval.inception_weights=/path/to/"
    "weights-inception-2015-12-05-6726825d.pth. To score offline without them, use "
    "eval.features=classifier (scores are then comparable only with other classifier scores)."
)


class _InceptionNet(nn.Module):
    """[-1, 1] images -> torch-fidelity InceptionV3 (uint8 RGB, resized inside to 299x299).

    torchmetrics' `NoTrainInceptionV3.forward` returns only the first requested feature;
    its `_torch_fidelity_forward` returns all of them (pool features and logits) in one pass.
    """

    def __init__(self, inception: nn.Module):
        super().__init__()
        self.inception = inception

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u8 = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        if u8.shape[1] == 1:
            u8 = u8.expand(-1, 3, -1, -1)
        feats, logits = self.inception._torch_fidelity_forward(u8)
        return feats.reshape(len(x), -1), logits.reshape(len(x), -1)


def load_inception(weights: str | None, device: torch.device) -> Extractor:
    try:
        import torch_fidelity  # noqa: F401
        from torchmetrics.image.fid import NoTrainInceptionV3
    except Exception as e:
        raise ConfigError(f"{INCEPTION_HELP} (import failed: {type(e).__name__}: {e})") from None
    if weights and not Path(weights).is_file():
        raise ConfigError(f"eval.inception_weights={weights!r} is not a file. {INCEPTION_HELP}")
    try:
        # antialias=False: torch-fidelity's TF1-compatible resize, the FID standard
        net = NoTrainInceptionV3(name="inception-v3-compat",
                                 features_list=["2048", "logits_unbiased"],
                                 feature_extractor_weights_path=weights or None,
                                 antialias=False)
    except Exception as e:  # no network, a blocked download, a corrupt file
        raise ConfigError(f"could not load the InceptionV3 weights ({type(e).__name__}: {e}). "
                          f"{INCEPTION_HELP}") from None
    net = _InceptionNet(net).eval().requires_grad_(False).to(device)
    return Extractor("inception", net, tensor_sha256(net.state_dict().values()),
                     preprocessing="uint8 RGB (grey repeated), resized to 299x299 by "
                                   "torch-fidelity's TF1-compatible bilinear interpolation")
