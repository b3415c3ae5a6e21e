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


def run_here(*args: str, module: str = "ganlab.train") -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS` as run_cli does, in this process: no cold start of torch, for
    tests whose subject is not the process boundary (signals, SIGKILL, exit without teardown
    stay with run_cli). The command's exit code, stdout and stderr come back the same way;
    what it changes in the process (Hydra's global state, logging, signal handlers, the
    environment, torch's threads) is put back."""
    import contextlib
    import importlib
    import io
    import logging
    import os
    import signal

    from hydra.core.global_hydra import GlobalHydra

    out, err = io.StringIO(), io.StringIO()
    loggers = [logging.getLogger(), *(v for v in logging.Logger.manager.loggerDict.values()
                                      if isinstance(v, logging.Logger))]
    saved_loggers = [(lg, lg.level, lg.handlers[:], lg.propagate, lg.disabled) for lg in loggers]
    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)
    saved_signals = {s: signal.getsignal(s) for s in handled}
    saved_env, saved_threads, saved_argv = dict(os.environ), torch.get_num_threads(), sys.argv
    found = importlib.import_module(module)
    main = getattr(found, "main", None) or importlib.import_module(f"{module}.__main__").main
    train = importlib.import_module("ganlab.train")
    exit_now = train.exit_now

    def raise_exit(code: int) -> None:
        raise SystemExit(code)

    train.exit_now = raise_exit
    sys.argv = [module, *args]
    code: int | str | None = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main() if module == "ganlab.train" else main(list(args))
            except SystemExit as e:
                code = e.code
    finally:
        train.exit_now, sys.argv = exit_now, saved_argv
        GlobalHydra.instance().clear()
        for lg, level, handlers, propagate, disabled in saved_loggers:
            for h in lg.handlers:
                if h not in handlers:
                    h.close()
            lg.setLevel(level)
            lg.handlers[:] = handlers
            lg.propagate, lg.disabled = propagate, disabled
        for s, h in saved_signals.items():
            signal.signal(s, h)
        os.environ.clear()
        os.environ.update(saved_env)
        torch.set_num_threads(saved_threads)
        reusable = sys.modules.get("joblib.externals.loky.reusable_executor")
        if getattr(reusable, "_executor", None) is not None:  # a joblib sweep's idle workers
            reusable._executor.shutdown(wait=True, kill_workers=True)
    if isinstance(code, str):  # sys.exit("message")
        err.write(code + "\n")
        code = 1
    return subprocess.CompletedProcess([module, *args], int(code or 0), out.getvalue(),
                                       err.getvalue())
