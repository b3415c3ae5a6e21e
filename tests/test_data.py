"""Data sources: toy mixtures, the IDX reader and loader, the in-memory image sampler."""

from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import math
import struct
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from ganlab.config import ConfigError
from ganlab.data import build_data
from ganlab.data.images import (
    IDX_DATASETS,
    ImageDataset,
    load_idx_dataset,
    read_idx,
    to_signed_unit,
)
from ganlab.data.toy import GaussianMixture2D, grid_modes, ring_modes

CPU = torch.device("cpu")


# -- toy mixtures ----------------------------------------------------------------------


def test_ring_modes():
    modes = ring_modes()
    assert modes.shape == (8, 2) and modes.dtype == torch.float32
    angles = 2 * np.pi * np.arange(8) / 8
    expected = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    np.testing.assert_allclose(modes.numpy(), expected, atol=1e-7)
    # spot values: mode 0 is (1, 0), mode 2 is (0, 1), mode 5 is (-1/sqrt2, -1/sqrt2)
    assert modes[0].tolist() == pytest.approx([1.0, 0.0], abs=1e-7)
    assert modes[2].tolist() == pytest.approx([0.0, 1.0], abs=1e-7)
    assert modes[5].tolist() == pytest.approx([-math.sqrt(0.5)] * 2, abs=1e-7)


def test_grid_modes():
    modes = grid_modes()
    assert modes.shape == (25, 2)
    points = {tuple(p) for p in modes.tolist()}
    axis = (-4.0, -2.0, 0.0, 2.0, 4.0)
    assert points == set(itertools.product(axis, axis))


@pytest.mark.parametrize("name, num_modes, std", [("ring8", 8, 0.01), ("grid25", 25, 0.05)])
def test_mixture_samples_sit_on_their_modes(name, num_modes, std):
    data = GaussianMixture2D(name, seed=0, device=CPU)
    assert (data.kind, data.num_classes, data.sample_shape) == ("toy2d", num_modes, (2,))
    n = 20_000
    x, y = data.sample(n)
    assert x.shape == (n, 2) and y.shape == (n,)
    assert y.min() >= 0 and y.max() < num_modes
    # uniform mixture: every mode holds about n / M samples (binomial sd is < 1 % of n)
    counts = torch.bincount(y, minlength=num_modes).double()
    assert (counts / n - 1 / num_modes).abs().max() < 0.02
    residual = (x - data.modes[y]).double()
    # isotropic noise of the stated std around the labelled mode
    assert residual.std(dim=0).tolist() == pytest.approx([std, std], rel=0.03)
    assert residual.mean(dim=0).abs().max() < 5 * std / math.sqrt(n)
    # and the label is the nearest mode: the modes are far apart compared with std
    nearest = torch.cdist(x.double(), data.modes.double()).argmin(dim=1)
    assert torch.equal(nearest, y)


def test_mixture_same_seed_same_stream():
    a = GaussianMixture2D("ring8", seed=7, device=CPU)
    b = GaussianMixture2D("ring8", seed=7, device=CPU)
    c = GaussianMixture2D("ring8", seed=8, device=CPU)
    for _ in range(3):
        (xa, ya), (xb, yb), (xc, _) = a.sample(64), b.sample(64), c.sample(64)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert not torch.equal(xa, xc)


def test_mixture_state_dict_resumes_the_stream():
    a = GaussianMixture2D("grid25", seed=3, device=CPU)
    a.sample(10)
    state = a.state_dict()
    expected = [a.sample(16) for _ in range(3)]
    b = GaussianMixture2D("grid25", seed=999, device=CPU)
    b.load_state_dict(state)
    for x, y in expected:
        xb, yb = b.sample(16)
        assert torch.equal(x, xb) and torch.equal(y, yb)


def test_build_data_gives_a_mixture_for_toy_names(make_cfg):
    data = build_data(make_cfg("data=grid25").data, seed=1, device=CPU)
    assert isinstance(data, GaussianMixture2D)
    assert data.name == "grid25" and data.std == 0.05


# -- IDX files ---------------------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes: 0x0000, type 0x08, rank, big-endian int32 dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray) -> Path:
    raw = idx_bytes(array)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


@pytest.mark.parametrize("filename", ["images-idx3-ubyte", "images-idx3-ubyte.gz"])
def test_read_idx_images(tmp_path, filename):
    array = np.arange(3 * 2 * 4, dtype=np.uint8).reshape(3, 2, 4) * 10
    out = read_idx(write_idx(tmp_path / filename, array))
    assert out.dtype == np.uint8 and out.shape == (3, 2, 4)
    np.testing.assert_array_equal(out, array)
    assert out[2, 1, 3] == 230  # the last value, (3*2*4 - 1) * 10


def test_read_idx_labels(tmp_path):
    out = read_idx(write_idx(tmp_path / "labels.gz", np.array([5, 0, 4, 1, 9, 255])))
    assert out.shape == (6,)
    assert out.tolist() == [5, 0, 4, 1, 9, 255]


def test_read_idx_truncated_payload(tmp_path):
    path = tmp_path / "short"
    path.write_bytes(idx_bytes(np.zeros((4, 3, 3), np.uint8))[:-5])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(path)


@pytest.mark.parametrize("header", [
    b"\x01\x00\x08\x01",  # the two leading bytes must be zero
    b"\x00\x01\x08\x01",
    b"\x00\x00\x0d\x01",  # type 0x0D (float32) is not unsigned bytes
])
def test_read_idx_wrong_magic(tmp_path, header):
    path = tmp_path / "bad"
    path.write_bytes(header + struct.pack(">i", 3) + b"\x01\x02\x03")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(path)


@pytest.mark.parametrize("name, cut", [
    ("empty", 0),  # nothing at all
    ("in_dims", 8),  # magic and one of three dims
    ("cut.gz", -10),  # a gzip stream cut short (an interrupted copy)
])
def test_read_idx_truncated_anywhere_is_a_value_error(tmp_path, name, cut):
    raw = idx_bytes(np.zeros((4, 3, 3), np.uint8))
    if name.endswith(".gz"):
        raw = gzip.compress(raw)
    path = tmp_path / name
    path.write_bytes(raw[:cut])
    with pytest.raises(ValueError, match=name):  # the message names the file
        read_idx(path)


# -- loading a dataset from its raw folder ------------------------------------------------

IMAGES = np.arange(4 * 28 * 28, dtype=np.int64).reshape(4, 28, 28) % 256
LABELS = np.array([3, 1, 4, 1])


def write_fashion(root: Path, split: str = "train", gz_labels: bool = True) -> Path:
    """Synthetic Fashion-MNIST files in torchvision's layout under root."""
    raw = root / "FashionMNIST" / "raw"
    prefix = {"train": "train", "test": "t10k"}[split]
    write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", IMAGES)
    write_idx(raw / (f"{prefix}-labels-idx1-ubyte" + (".gz" if gz_labels else "")), LABELS)
    return raw


@pytest.mark.parametrize("split", ["train", "test"])
def test_load_idx_dataset_reads_the_split(tmp_path, split):
    # labels left gunzipped: either form is accepted
    write_fashion(tmp_path, split, gz_labels=False)
    images, labels = load_idx_dataset("fashion_mnist", str(tmp_path), split, download=False)
    assert images.dtype == torch.uint8 and images.shape == (4, 1, 28, 28)
    assert torch.equal(images[:, 0], torch.from_numpy(IMAGES.astype(np.uint8)))
    assert labels.dtype == torch.int64 and labels.tolist() == [3, 1, 4, 1]


def test_load_idx_dataset_count_mismatch(tmp_path):
    raw = write_fashion(tmp_path)
    write_idx(raw / "train-labels-idx1-ubyte.gz", np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="4 images but 3 labels"):
        load_idx_dataset("fashion_mnist", str(tmp_path), "train", download=False)


def test_missing_files_without_download(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    with pytest.raises(ConfigError) as err:
        load_idx_dataset("fashion_mnist", str(tmp_path), "train", download=False)
    message = str(err.value)
    assert "train-images-idx3-ubyte.gz" in message
    assert str(raw) in message
    assert "data.download=false" in message


def test_missing_labels_named_when_images_exist(tmp_path):
    raw = write_fashion(tmp_path)
    (raw / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(ConfigError, match="train-labels-idx1-ubyte.gz"):
        load_idx_dataset("fashion_mnist", str(tmp_path), "train", download=False)


def test_download_without_network_gives_a_clear_error(tmp_path, monkeypatch):
    calls = []

    def unreachable(url, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", unreachable)
    raw = tmp_path / "MNIST" / "raw"
    with pytest.raises(ConfigError) as err:
        load_idx_dataset("mnist", str(tmp_path), "test", download=True)
    message = str(err.value)
    assert "t10k-images-idx3-ubyte.gz" in message and str(raw) in message
    assert "download failed" in message and "Name or service not known" in message
    # every mirror was tried, for the first missing file, and nothing half-written is left
    mirrors = IDX_DATASETS["mnist"][1]
    assert calls == [m + "t10k-images-idx3-ubyte.gz" for m in mirrors]
    assert list(raw.iterdir()) == []


def _serve(monkeypatch, files: dict[str, bytes]) -> None:
    """Stand-in for the network: urlopen returns the bytes for a known file name."""
    def fake_urlopen(url, *args, **kwargs):
        return io.BytesIO(files[url.rsplit("/", 1)[-1]])

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)


def test_download_fetches_and_verifies(tmp_path, monkeypatch):
    files = {"train-images-idx3-ubyte.gz": gzip.compress(idx_bytes(IMAGES)),
             "train-labels-idx1-ubyte.gz": gzip.compress(idx_bytes(LABELS))}
    folder, mirrors, md5s = IDX_DATASETS["fashion_mnist"]
    md5s = dict(md5s, **{k: hashlib.md5(v).hexdigest() for k, v in files.items()})
    monkeypatch.setitem(IDX_DATASETS, "fashion_mnist", (folder, mirrors, md5s))
    _serve(monkeypatch, files)
    images, labels = load_idx_dataset("fashion_mnist", str(tmp_path), "train", download=True)
    assert images.shape == (4, 1, 28, 28) and labels.tolist() == [3, 1, 4, 1]
    raw = tmp_path / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(files)
    assert (raw / "train-labels-idx1-ubyte.gz").read_bytes() == files["train-labels-idx1-ubyte.gz"]


def test_download_with_wrong_checksum_is_rejected(tmp_path, monkeypatch):
    # the real checksums stay in place, so these synthetic bytes cannot match them
    _serve(monkeypatch, {"train-images-idx3-ubyte.gz": gzip.compress(idx_bytes(IMAGES))})
    with pytest.raises(ConfigError, match="checksum mismatch"):
        load_idx_dataset("fashion_mnist", str(tmp_path), "train", download=True)
    assert list((tmp_path / "FashionMNIST" / "raw").iterdir()) == []


def test_build_data_on_synthetic_fashion(tmp_path, make_cfg):
    write_fashion(tmp_path)
    cfg = make_cfg("data=fashion_mnist", "model=dcgan", f"data.root={tmp_path}",
                   "data.download=false")
    data = build_data(cfg.data, seed=0, device=CPU)
    assert isinstance(data, ImageDataset)
    assert (len(data), data.sample_shape, data.num_classes) == (4, (1, 28, 28), 10)
    # the config's image size must agree with the files
    bad = make_cfg("data=fashion_mnist", "model=dcgan", f"data.root={tmp_path}",
                   "data.download=false", "data.image_size=32")
    with pytest.raises(ValueError, match=r"images are \(1, 28, 28\), config says \(1, 32, 32\)"):
        build_data(bad.data, seed=0, device=CPU)


# -- the image sampler -------------------------------------------------------------------


def tiny_images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n distinct 1x2x2 images; image i is filled with the value i (its own label)."""
    values = torch.arange(n, dtype=torch.uint8)
    return values.view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous(), values.long()


def test_to_signed_unit_endpoints():
    out = to_signed_unit(torch.tensor([0, 51, 255], dtype=torch.uint8))
    assert out.dtype == torch.float32
    assert out.tolist() == pytest.approx([-1.0, 51 / 127.5 - 1, 1.0], abs=1e-7)
    assert out[0].item() == -1.0 and out[2].item() == 1.0


def test_image_batches_are_signed_unit_floats():
    images = torch.tensor([0, 255, 51, 204], dtype=torch.uint8).view(4, 1, 1, 1).expand(4, 1, 2, 2)
    ds = ImageDataset(images.contiguous(), torch.arange(4), 4, seed=0, device=CPU)
    x, y = ds.sample(4)
    assert x.dtype == torch.float32 and x.shape == (4, 1, 2, 2)
    assert x.min().item() == -1.0 and x.max().item() == 1.0
    # each image still matches its label after shuffling
    pixel = {0: -1.0, 1: 1.0, 2: 51 / 127.5 - 1, 3: 204 / 127.5 - 1}
    for img, label in zip(x, y.tolist(), strict=True):
        assert img.flatten().tolist() == pytest.approx([pixel[label]] * 4, abs=1e-6)


def test_each_epoch_visits_every_image_once():
    images, labels = tiny_images(6)
    ds = ImageDataset(images, labels, 6, seed=0, device=CPU)
    orders = []
    for _epoch in range(3):
        seen = torch.cat([ds.sample(2)[1] for _ in range(3)])
        assert sorted(seen.tolist()) == list(range(6))
        orders.append(seen.tolist())
    assert len({tuple(o) for o in orders}) > 1  # reshuffled between epochs


def test_ragged_tail_is_dropped():
    # 6 images, batches of 4: each batch starts a fresh permutation, so no image repeats
    images, labels = tiny_images(6)
    ds = ImageDataset(images, labels, 6, seed=1, device=CPU)
    for _ in range(5):
        _, y = ds.sample(4)
        assert len(set(y.tolist())) == 4


def test_image_sampler_seeding():
    images, labels = tiny_images(50)
    a, b, c = (ImageDataset(images, labels, 50, seed=s, device=CPU) for s in (5, 5, 6))
    ya, yb, yc = (torch.cat([d.sample(10)[1] for _ in range(8)]) for d in (a, b, c))
    assert torch.equal(ya, yb)
    assert not torch.equal(ya, yc)


def test_image_sampler_state_dict_resumes_exactly():
    images, labels = tiny_images(10)
    a = ImageDataset(images, labels, 10, seed=0, device=CPU)
    a.sample(3)  # mid-epoch
    state = a.state_dict()
    # 3 + 6*3 crosses two epoch boundaries, so the generator state matters too
    expected = [a.sample(3) for _ in range(6)]
    b = ImageDataset(images, labels, 10, seed=42, device=CPU)
    b.load_state_dict(state)
    for x, y in expected:
        xb, yb = b.sample(3)
        assert torch.equal(x, xb) and torch.equal(y, yb)


# -- the real MNIST files (skipped where they are absent) ---------------------------------


def _mnist(make_cfg, mnist_root, *extra):
    cfg = make_cfg("data=mnist", "model=dcgan", f"data.root={mnist_root}",
                   "data.download=false", *extra)
    return build_data(cfg.data, seed=0, device=CPU)


def test_mnist_train_split(make_cfg, mnist_root):
    data = _mnist(make_cfg, mnist_root)
    assert len(data) == 60_000 and data.sample_shape == (1, 28, 28)
    assert data.images.dtype == torch.uint8
    assert data.labels[:5].tolist() == [5, 0, 4, 1, 9]
    # the published class counts and mean pixel intensity (0.1307) of the training set
    assert torch.bincount(data.labels).tolist() == [
        5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert data.images.double().mean().item() / 255 == pytest.approx(0.1307, abs=1e-4)


def test_mnist_test_split(make_cfg, mnist_root):
    data = _mnist(make_cfg, mnist_root, "data.split=test")
    assert len(data) == 10_000 and data.sample_shape == (1, 28, 28)
    assert data.labels[:5].tolist() == [7, 2, 1, 0, 4]
    assert torch.bincount(data.labels).tolist() == [
        980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
