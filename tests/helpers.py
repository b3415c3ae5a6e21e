"""Helpers shared by the tests: tiny synthetic IDX datasets, weight comparison, the CLI."""

from __future__ import annotations

import gzip
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def write_idx(path: Path, array: np.ndarray) -> None:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}i",
                                                                     *array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def write_fake_fashion(root: Path, n: int = 256, seed: int = 0) -> Path:
    """A tiny Fashion-MNIST-shaped dataset in torchvision's layout; returns root."""
    rng = np.random.default_rng(seed)
    raw = root / "FashionMNIST" / "raw"
    for prefix in ("train", "t10k"):
        write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    return root


def build_nets_for(cfg, data, ref_seed: int = 0):
    """(G, D) of a config, as a run builds them (label mode and plug-ins from the config)."""
    from ganlab.assemble import build_nets
    from ganlab.extras import build_extras
    from ganlab.labels import LABEL_MODES

    mode = LABEL_MODES.choose(cfg.labels.name)(cfg.labels.class_weight)
    return build_nets(cfg, data, mode, build_extras(cfg.extras), ref_seed)


def load_weights(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["gan"]


def assert_same_tensors(a, b, path: str = "") -> None:
    """Bit-for-bit equality of nested dicts/lists of tensors and numbers."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, path
        assert torch.equal(a, b), f"tensors differ at {path}"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_same_tensors(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_tensors(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def run_cli(*args: str, env: dict | None = None, module: str = "ganlab.train",
            timeout: int = 300) -> subprocess.CompletedProcess:
    import os

    full_env = {**os.environ, "WANDB_MODE": "offline", **(env or {})}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
