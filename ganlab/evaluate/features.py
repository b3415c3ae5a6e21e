"""Feature extractors for image metrics, chosen by `eval.features`.

- `classifier`: a small CNN trained on the dataset's own training split (seeded, on one
  thread: the same weights at any thread setting). For MNIST its weights are part of the
  package (`weights/classifier_mnist.pt`, with `classifier_mnist.json` holding their
  sha256, recipe, training-data hash and test accuracy), made by

      python -m ganlab.evaluate.features train-classifier --dataset mnist   # make classifier

  and checked against that sha256 on every load, so every machine scores with the same
  extractor. A dataset without committed weights (or a recipe other than the committed one)
  trains its classifier the first time it is needed and caches it by a content hash of its
  recipe and training data. Its logits feed IS; its penultimate layer feeds FID, KID and
  precision/recall. The default for MNIST-like data and the only choice offline.
- `inception`: the FID-standard InceptionV3 of torch-fidelity, through torchmetrics (the
  standard for CIFAR-10 and up). Weights are downloaded on first use, or read from
  `eval.inception_weights`. Where neither works the error says how to provide them; there
  is never a silent fallback to another extractor.

An extractor maps images in [-1, 1], (N, C, H, W), to (features (N, d), logits (N, K)).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import io
import json
import logging
import os
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ganlab.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ganlab.config import ConfigError
from ganlab.data.images import to_signed_unit
from ganlab.optim import Adam
from ganlab.stops import Progress
from ganlab.storage import StorageError, atomic_write

log = logging.getLogger(__name__)



def cache_dir() -> Path:
    return Path(os.path.expanduser(os.environ.get("GANLAB_CACHE", "~/.cache/ganlab")))


# the classifier weights that ship with the package, one .pt (state dict) and .json per dataset
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
# datasets whose classifier must come from WEIGHTS_DIR (a missing file is an error, never a
# classifier trained on this machine instead)
COMMITTED = ("mnist",)
TRAIN_COMMAND = "python -m ganlab.evaluate.features train-classifier --dataset {dataset}"
# intra-op threads of classifier training and CPU feature extraction: CPU kernels split their
# reductions by thread count, so the bits of weights and features would depend on it
THREADS = 1
# images an extractor takes at a time (its features of an image do not depend on it; the
# evaluator's chunks are whole batches all the same)
EXTRACTOR_BATCH = 500


@contextmanager
def single_thread():
    """torch on THREADS intra-op thread(s) inside, the caller's setting restored after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


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
    # the forward on one CPU thread (single_thread), so that no thread setting can change
    # the features (the classifier's: a guard that costs it nothing measurable)
    one_thread: bool = False

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, batch_size: int = EXTRACTOR_BATCH,
                 what: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, logits) of [-1, 1] images; `what` names the work in its progress."""
        device = next(self.net.parameters()).device
        feats, logits = [], []
        with (single_thread() if self.one_thread and device.type == "cpu" else nullcontext(),
              Progress(len(images), what or "", enabled=what is not None) as progress):
            for start in range(0, len(images), batch_size):
                f, lg = self.net(images[start:start + batch_size].to(device))
                feats.append(f.double().cpu())
                logits.append(lg.double().cpu())
                progress.update(len(f))
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
    """Train deterministically (fixed seed, fixed shuffles, one thread whatever the caller's
    setting, which is restored after); images in [-1, 1]."""
    with single_thread():
        return _train_classifier(recipe, train_x, train_y, test_x, test_y)


def _train_classifier(recipe: ClassifierRecipe, train_x: torch.Tensor, train_y: torch.Tensor,
                      test_x: torch.Tensor, test_y: torch.Tensor) -> tuple[nn.Module, float]:
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


def build_classifier(recipe: ClassifierRecipe, load_split) -> dict:
    """Train the classifier of `recipe` on its dataset: the state that a cache entry holds and
    that `train-classifier` writes (weights, recipe, training-data hash, test accuracy)."""
    train_u8, train_y = load_split("train")
    test_u8, test_y = load_split("test")
    net, acc = train_classifier(recipe, to_signed_unit(train_u8), train_y,
                                to_signed_unit(test_u8), test_y)
    return {"state_dict": net.state_dict(), "recipe": recipe.__dict__,
            "train_data_sha256": tensor_sha256([train_u8, train_y]), "test_accuracy": acc,
            "num_classes": net.logits.out_features, "shape": list(train_u8.shape[1:])}


# -- committed weights -------------------------------------------------------------------------
def committed_paths(dataset: str) -> tuple[Path, Path]:
    """(weights, record) of the classifier committed for `dataset` (they may not exist)."""
    return (WEIGHTS_DIR / f"classifier_{dataset}.pt",
            WEIGHTS_DIR / f"classifier_{dataset}.json")


def _regenerate(dataset: str) -> str:
    how = TRAIN_COMMAND.format(dataset=dataset)
    return f"`make classifier` ({how})" if dataset == "mnist" else f"`{how}`"


def committed_record(dataset: str) -> dict | None:
    """The record (.json) of the committed classifier of `dataset`, None without one."""
    weights, record = committed_paths(dataset)
    if dataset not in COMMITTED and not weights.exists() and not record.exists():
        return None
    fix = (f"Restore both files from the repository, or regenerate them with "
           f"{_regenerate(dataset)}")
    try:
        saved = json.loads(record.read_text())
        ClassifierRecipe(**saved["recipe"])
        missing = {"sha256", "test_accuracy", "num_classes", "shape"} - set(saved)
        if missing:
            raise KeyError(f"no {', '.join(sorted(missing))}")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{record} (the record of the committed {dataset} feature "
                              f"classifier) is missing or damaged ({type(e).__name__}: {e}). "
                              f"{fix}") from None
    return saved


def load_committed(dataset: str) -> dict:
    """The committed classifier of `dataset` (record and state dict), its weights checked
    against the sha256 its record holds."""
    saved = committed_record(dataset)
    if saved is None:
        raise CheckpointError(f"no committed {dataset} feature classifier; make one with "
                              f"{_regenerate(dataset)}")
    weights, record = committed_paths(dataset)
    fix = (f"Restore both files from the repository, or regenerate them with "
           f"{_regenerate(dataset)} (new weights are a new extractor identity: their scores "
           "are never compared with scores of the old ones)")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as e:  # missing, truncated or foreign
        raise CheckpointError(f"{weights} (the committed {dataset} feature classifier) cannot "
                              f"be loaded ({str(e).splitlines()[0]}). {fix}") from None
    sha = tensor_sha256(state.values()) if isinstance(state, dict) else "not a state dict"
    if sha != saved["sha256"]:
        raise CheckpointError(f"{weights} does not match {record.name}: its weights hash to "
                              f"{sha[:16]}, the record says {saved['sha256'][:16]}. {fix}")
    return {**saved, "state_dict": state}


def write_committed(state: dict, weights: Path) -> dict:
    """Write a built classifier as committed weights: the state dict (fp32) at `weights`,
    its record beside it (.json). Returns the record."""
    dataset = state["recipe"]["dataset"]
    record = {"dataset": dataset, "sha256": tensor_sha256(state["state_dict"].values()),
              "recipe": state["recipe"], "train_data_sha256": state["train_data_sha256"],
              "test_accuracy": state["test_accuracy"], "num_classes": state["num_classes"],
              "shape": state["shape"], "torch": torch.__version__.split("+")[0],
              "threads": THREADS, "command": TRAIN_COMMAND.format(dataset=dataset)}
    buffer = io.BytesIO()
    torch.save(state["state_dict"], buffer)
    atomic_write(weights, buffer.getvalue())
    atomic_write(weights.with_suffix(".json"), (json.dumps(record, indent=2) + "\n").encode())
    return record


def load_or_train_classifier(recipe: ClassifierRecipe, load_split, device: torch.device
                             ) -> Extractor:
    """The classifier for `recipe`: the committed one where the package holds one made by the
    same recipe (no training, no cache), else the cached one, trained on first use.
    `load_split(split)` gives (uint8 images, labels) of the dataset's train or test split."""
    committed = committed_record(recipe.dataset)
    if committed is not None and ClassifierRecipe(**committed["recipe"]) == recipe:
        saved = load_committed(recipe.dataset)
    else:
        if committed is not None:
            log.info("the committed %s feature classifier has another recipe (%s); using a "
                     "cached one trained with %s", recipe.dataset, committed["recipe"],
                     recipe.__dict__)
        train_u8, train_y = load_split("train")
        # THREADS is part of the key: entries trained before training ran on one thread
        # depend on the thread setting of whoever filled the cache and are never reused
        key = hashlib.sha256(json.dumps({**recipe.__dict__, "threads": THREADS},
                                        sort_keys=True).encode()
                             + tensor_sha256([train_u8, train_y]).encode()).hexdigest()[:16]
        path = cache_dir() / "extractors" / f"classifier_{recipe.dataset}_{key}.pt"

        def splits(split: str):  # the training split, loaded once
            return (train_u8, train_y) if split == "train" else load_split(split)

        saved = cached(path, lambda: build_classifier(recipe, splits),
                       f"training the {recipe.dataset} feature classifier")
    return classifier_extractor(saved, device)


def classifier_extractor(saved: dict, device: torch.device) -> Extractor:
    c, s, _ = saved["shape"]
    net = SmallCNN(c, s, saved["num_classes"], saved["recipe"]["width"])
    net.load_state_dict(saved["state_dict"])
    net.eval().requires_grad_(False).to(device)
    sha = tensor_sha256(saved["state_dict"].values())
    return Extractor("classifier", net, sha,
                     preprocessing=f"[-1, 1] float, {c}x{s}x{s}, no resize",
                     info={"extractor_test_accuracy": round(saved["test_accuracy"], 5)},
                     one_thread=True)


# -- the command ---------------------------------------------------------------------------------
def train_command(dataset: str, out: Path | None = None, data_root: str | None = None,
                  epochs: int = ClassifierRecipe.epochs, seed: int = ClassifierRecipe.seed
                  ) -> dict:
    """Train the classifier of `dataset` on its training split and write it as committed
    weights (default: the package's weights/classifier_<dataset>.pt, record beside it)."""
    from ganlab.configure import compose
    from ganlab.data import DATASETS, load_split

    if DATASETS.choose(dataset).kind != "image":
        raise ConfigError(f"--dataset {dataset}: not an image dataset (2-D data is scored by "
                          "mode coverage, without a feature classifier)")
    cfg = compose([f"data={dataset}"] + ([f"data.root={data_root}"] if data_root else []))
    out = out or committed_paths(dataset)[0]
    try:
        previous = json.loads(out.with_suffix(".json").read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        previous = None
    recipe = ClassifierRecipe(dataset, epochs=epochs, seed=seed)
    start = time.perf_counter()
    state = build_classifier(recipe, lambda split: load_split(cfg.data, split))
    seconds = time.perf_counter() - start
    record = write_committed(state, out)
    sha = record["sha256"]
    print(f"{dataset} feature classifier: test accuracy {record['test_accuracy']:.4f}, "
          f"sha256 {sha[:16]}, trained in {seconds:.1f} s on {THREADS} thread(s)\n"
          f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB) and {out.with_suffix('.json').name}")
    if previous == sha:
        print("the same weights as before")
    elif previous is not None:
        print(f"a new extractor identity (it replaces {previous[:16]}): scores made with the "
              "two are never compared")
    return {**record, "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ganlab.evaluate.features",
        description="Feature extractors of image metrics.")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser(
        "train-classifier",
        help="train a dataset's feature classifier deterministically and write its weights "
             "with their record (sha256, recipe, training-data hash, test accuracy)")
    train.add_argument("--dataset", required=True, help="e.g. mnist")
    train.add_argument("--out", type=Path, default=None,
                       help="weights file (.pt), its record written beside it (.json); "
                            "default: the package's weights/classifier_<dataset>.pt, which "
                            "scoring then uses")
    train.add_argument("--data-root", default=None,
                       help="folder holding the dataset (default: data.root, i.e. "
                            "$GANLAB_DATA_ROOT or ~/.cache/ganlab/data)")
    train.add_argument("--epochs", type=int, default=ClassifierRecipe.epochs)
    train.add_argument("--seed", type=int, default=ClassifierRecipe.seed)
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        train_command(args.dataset, args.out, args.data_root, args.epochs, args.seed)
    except (ConfigError, CheckpointError, StorageError, ValueError) as e:
        print(f"train-classifier: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
