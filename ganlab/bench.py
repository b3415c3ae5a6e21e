"""Benchmarks: what the harness costs over a bare PyTorch loop on the same nets and data.

`python -m ganlab.bench [--device cpu|cuda] [--steps N] [--repeats R]` times the training
loop of `ganlab.train` (logging and evaluation off: only its training clock is read) against
a bare loop written inline here, on identical networks, optimisers and data tensors, in one
process, alternating the two R times and comparing medians. It prints one line per case and
the harness/bare ratio (1.00 = no overhead).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ganlab.config import ConfigError, compose
from ganlab.result import ResultFile
from ganlab.train import Trainer

CASES = {
    "mlp/ring8": ["data=ring8", "model=mlp", "train.batch_size=256"],
    "dcgan/mnist": ["data=mnist", "model=dcgan", "train.batch_size=64"],
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def harness_seconds(trainer: Trainer, steps: int) -> float:
    """Time `steps` steps of the real training loop (its own training clock)."""
    trainer.cfg.train.steps = trainer.counters.step + steps
    before = trainer.counters.wall_s
    trainer.fit()
    return trainer.counters.wall_s - before


def bare_seconds(G, D, data_images: torch.Tensor | None, toy, steps: int, batch: int,
                 z_dim: int, device: torch.device, lr: float, betas) -> float:
    """The same GAN round written as plainly as PyTorch allows."""
    opt_g = torch.optim.Adam(G.parameters(), lr=lr, betas=betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=betas)
    ones = torch.ones(batch, device=device)
    zeros = torch.zeros(batch, device=device)
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        if toy is not None:
            idx = torch.randint(len(toy.modes), (batch,))
            real = (toy.modes[idx] + toy.std * torch.randn(batch, 2)).to(device)
        else:
            idx = torch.randint(len(data_images), (batch,)).to(device)
            real = data_images[idx].float().div_(127.5).sub_(1.0)
        with torch.no_grad():
            fake = G(torch.randn(batch, z_dim).to(device))
        logits = D(torch.cat([real, fake]))
        loss_d = 0.5 * (F.binary_cross_entropy_with_logits(logits[:batch], ones)
                        + F.binary_cross_entropy_with_logits(logits[batch:], zeros))
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        loss_g = 0.5 * F.softplus(-D(G(torch.randn(batch, z_dim).to(device)))).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
    _sync(device)
    return time.perf_counter() - start


def bench_case(name: str, overrides: list[str], device: str, steps: int, repeats: int,
               workdir: Path) -> dict:
    cfg = compose(overrides + ["logger=none", f"train.device={device}", "train.progress=false",
                               "eval.every=0", "train.checkpoint_every=0",
                               f"train.log_every={10**9}", "eval.num_samples=64"])
    run_dir = workdir / name.replace("/", "_")
    trainer = Trainer(cfg, run_dir, ResultFile(run_dir / "result.json"))
    G, D = copy.deepcopy(trainer.gan.G), copy.deepcopy(trainer.gan.D)
    data = trainer.data
    toy = data if data.kind == "toy2d" else None
    images = None if toy else data.images
    t = cfg.train
    harness_seconds(trainer, 5)  # warm-up both paths
    bare_seconds(G, D, images, toy, 5, t.batch_size, cfg.model.z_dim, trainer.device,
                 t.lr_g, tuple(t.betas_g))
    harness, bare = [], []
    for _ in range(repeats):
        harness.append(harness_seconds(trainer, steps) / steps)
        bare.append(bare_seconds(G, D, images, toy, steps, t.batch_size, cfg.model.z_dim,
                                 trainer.device, t.lr_g, tuple(t.betas_g)) / steps)
    h, b = statistics.median(harness), statistics.median(bare)
    return {"case": name, "device": str(trainer.device), "harness_ms": 1e3 * h,
            "bare_ms": 1e3 * b, "ratio": h / b}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ganlab.bench", description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=30, help="steps per timed repeat")
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cases:
            try:
                rows.append(bench_case(name, CASES[name], args.device, args.steps,
                                       args.repeats, Path(tmp)))
            except ConfigError as e:
                print(f"{name}: skipped ({e})", file=sys.stderr)
                continue
            r = rows[-1]
            print(f"{r['case']:<12} {r['device']:<5} harness {r['harness_ms']:8.3f} ms/step   "
                  f"bare {r['bare_ms']:8.3f} ms/step   ratio {r['ratio']:.3f}", flush=True)
    if rows:
        print("\ncase          device  harness/bare  (target <= 1.05)")
        for r in rows:
            print(f"{r['case']:<13} {r['device']:<7} {r['ratio']:.3f}"
                  f"{'' if r['ratio'] <= 1.05 else '  ABOVE TARGET'}")
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
