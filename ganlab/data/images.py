"""Image datasets held in memory as uint8 tensors, served as [-1, 1] floats.

MNIST and Fashion-MNIST are read straight from their IDX files (gzipped or not) under
`<root>/MNIST/raw` and `<root>/FashionMNIST/raw` (torchvision's layout), so the core needs
no torchvision. Missing files are downloaded where the network allows; otherwise the error
says where to put them. CIFAR-10 goes through torchvision, only where it is installed.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
import struct
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import torch

from ganlab.config import ConfigError
from ganlab.data.base import UNLABELLED, restore_stream, stream_state

SPLIT_PREFIX = {"train": "train", "test": "t10k"}

# folder under root, download mirrors, and the published MD5 of each .gz file
IDX_DATASETS = {
    "mnist": (
        "MNIST",
        ("https://ossci-datasets.s3.amazonaws.com/mnist/",
         "http://yann.lecun.com/exdb/mnist/"),
        {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    ),
    "fashion_mnist": (
        "FashionMNIST",
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    ),
}

_IDX_DTYPES = {0x08: np.uint8}


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file (big-endian header: magic with dtype and rank, then dims)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (EOFError, gzip.BadGzipFile) as e:  # an interrupted copy or download
        raise ValueError(f"{path} is a damaged gzip file ({e}); replace it") from None
    if len(raw) < 4:
        raise ValueError(f"{path} is truncated inside its IDX header")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes")
    if len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{path} is truncated inside its IDX header")
    dims = struct.unpack(f">{ndim}i", raw[4:4 + 4 * ndim])
    payload = np.frombuffer(raw, dtype=_IDX_DTYPES[dtype_code], offset=4 + 4 * ndim)
    expected = int(np.prod(dims))
    if payload.size != expected:
        what = "truncated" if payload.size < expected else "longer than its header says"
        raise ValueError(f"{path} is {what}: header says {dims}, found {payload.size} values")
    return payload.reshape(dims)


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download(url: str, target: Path, md5: str) -> None:
    tmp = target.with_suffix(target.suffix + ".part")
    with urllib.request.urlopen(url, timeout=30) as response, open(tmp, "wb") as out:
        shutil.copyfileobj(response, out)
    if _md5(tmp) != md5:
        tmp.unlink()
        raise OSError(f"checksum mismatch for {url}")
    tmp.replace(target)


def _find_or_fetch(name: str, raw_dir: Path, gz_name: str, download: bool) -> Path:
    for candidate in (raw_dir / gz_name, raw_dir / gz_name[:-3]):
        if candidate.exists():
            return candidate
    _, mirrors, md5s = IDX_DATASETS[name]
    failures = []
    if download:
        raw_dir.mkdir(parents=True, exist_ok=True)
        for mirror in mirrors:
            try:
                _download(mirror + gz_name, raw_dir / gz_name, md5s[gz_name])
                return raw_dir / gz_name
            except (urllib.error.URLError, OSError, TimeoutError) as e:
                failures.append(f"{mirror}: {e}")
    how = ("download failed (" + "; ".join(failures) + ")") if download else "data.download=false"
    raise ConfigError(
        f"data={name}: {gz_name} (or its gunzipped form) is missing from {raw_dir} and {how}. "
        f"Copy the four IDX files there, or point data.root (or GANLAB_DATA_ROOT) at the folder "
        f"that holds {raw_dir.parent.name}/raw/."
    )


def load_idx_dataset(name: str, root: str, split: str, download: bool
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    folder = IDX_DATASETS[name][0]
    raw_dir = Path(root) / folder / "raw"
    prefix = SPLIT_PREFIX[split]
    images = read_idx(_find_or_fetch(name, raw_dir, f"{prefix}-images-idx3-ubyte.gz", download))
    labels = read_idx(_find_or_fetch(name, raw_dir, f"{prefix}-labels-idx1-ubyte.gz", download))
    if len(images) != len(labels):
        raise ValueError(f"{raw_dir}: {len(images)} images but {len(labels)} labels")
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def load_cifar10(root: str, split: str, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        from torchvision.datasets import CIFAR10
    except Exception as e:  # ImportError, or a torchvision built for another torch
        raise ConfigError(f"data=cifar10 needs a working torchvision ({e}); install one that "
                          "matches your torch, or choose data=mnist|fashion_mnist") from None
    ds = CIFAR10(root, train=(split == "train"), download=download)
    images = torch.from_numpy(np.asarray(ds.data)).permute(0, 3, 1, 2).contiguous()
    return images, torch.as_tensor(ds.targets, dtype=torch.int64)


class ImageDataset:
    """Shuffled epochs over an in-memory uint8 image tensor; resumable."""

    kind = "image"

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, num_classes: int,
                 seed: int, device: torch.device, label_fraction: float = 1.0):
        assert images.dtype == torch.uint8 and images.ndim == 4, images.shape
        self.images = images.to(device)
        self.true_labels = labels.to(device)
        self.labels = self.true_labels
        if label_fraction < 1:
            # Semi-supervised: a fixed, seeded subset of the images keeps its label.
            keep = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed + 1))
            hidden = torch.ones(len(labels), dtype=torch.bool)
            hidden[keep[:round(label_fraction * len(labels))]] = False
            self.labels = self.true_labels.masked_fill(hidden.to(device), UNLABELLED)
        self.num_classes = num_classes
        self.sample_shape = tuple(images.shape[1:])
        self.device = device
        # the epoch order is drawn on the training device (no copy per batch); a CUDA run
        # shuffles differently from a CPU run with the same seed
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self._order = self._shuffled()
        self._pos = 0

    def _shuffled(self) -> torch.Tensor:
        return torch.randperm(len(self.images), generator=self.generator, device=self.device)

    def __len__(self) -> int:
        return len(self.images)

    def sample(self, batch_size: int, labels: bool = True
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A batch in [-1, 1] and its labels (None when `labels` is false)."""
        if self._pos + batch_size > len(self._order):  # drop the ragged tail, start an epoch
            self._order = self._shuffled()
            self._pos = 0
        idx = self._order[self._pos:self._pos + batch_size]
        self._pos += batch_size
        return to_signed_unit(self.images[idx]), (self.labels[idx] if labels else None)

    def reference_batch(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A fixed batch for reference/virtual norm, drawn from `gen` (the stream untouched)."""
        idx = torch.randperm(len(self.images), generator=gen)[:n].to(self.device)
        return to_signed_unit(self.images[idx]), self.true_labels[idx]

    def state_dict(self) -> dict:
        return {"generator": stream_state(self.generator), "order": self._order.clone(),
                "pos": self._pos}

    def load_state_dict(self, state: dict) -> None:
        restore_stream(self.generator, state["generator"])
        self._order = state["order"].to(self.device, copy=True)
        self._pos = int(state["pos"])


def to_signed_unit(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return images_uint8.float().div_(127.5).sub_(1.0)
