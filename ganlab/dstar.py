"""Equation 15 made visible: the optimal discriminator under label smoothing.

`python -m ganlab.dstar [smoothing=... | smoothing.real_target=A smoothing.fake_target=B]
[--steps N] [--out DIR]` trains D to optimality against a *fixed* pair of 1-D densities,
p_data = N(0, 1) and p_model = N(2, 1), with D's smoothed targets, and compares the measured
D(x) with the analytic optimum

    D*(x) = ((1 - alpha) p_data(x) + beta p_model(x)) / (p_data(x) + p_model(x)).

Where p_model is large and p_data small, D* tends to beta: with beta > 0 D rewards G for the
very samples it should stop making (the tutorial's reason for one-sided smoothing). The
command writes `dstar.json` (max and mean absolute error, the bump's measured and analytic
height) and `dstar.png` (both curves over the densities, with the bump region shaded).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ganlab.config import ConfigError, validate
from ganlab.configure import compose
from ganlab.losses import GANLoss
from ganlab.plots import save_figure
from ganlab.storage import StorageError, atomic_write_json

P_DATA = (0.0, 1.0)  # mean, std
P_MODEL = (2.0, 1.0)
GRID = (-2.5, 4.5)  # where the densities have mass; outside it D is unconstrained
BUMP_RATIO = 0.01  # the bump region: p_data / (p_data + p_model) < BUMP_RATIO


def normal_pdf(x: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    return torch.exp(-0.5 * ((x - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))


def analytic_dstar(x: torch.Tensor, real_target: float, fake_target: float) -> torch.Tensor:
    pd, pm = normal_pdf(x, *P_DATA), normal_pdf(x, *P_MODEL)
    return (real_target * pd + fake_target * pm) / (pd + pm)


@dataclass
class DStarFit:
    real_target: float
    fake_target: float
    max_abs_error: float  # over the grid
    mean_abs_error: float
    bump_measured: float  # mean D over the bump region
    bump_analytic: float  # mean D* over the bump region
    grid: list[float]
    measured: list[float]
    analytic: list[float]


def fit_dstar(real_target: float, fake_target: float, steps: int = 3000, batch: int = 1024,
              seed: int = 0, points: int = 281, progress=None) -> DStarFit:
    """D trained to optimality against the fixed densities; `progress(step, loss)` is called
    every tenth of the way."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    D = nn.Sequential(nn.Linear(1, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(),
                      nn.Linear(64, 1))
    opt = torch.optim.Adam(D.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)  # settle on the optimum
    loss = GANLoss(real_target, fake_target)  # the same cost D minimises in training
    for step in range(1, steps + 1):
        real = P_DATA[0] + P_DATA[1] * torch.randn(batch, 1, generator=gen)
        fake = P_MODEL[0] + P_MODEL[1] * torch.randn(batch, 1, generator=gen)
        terms = loss.d_loss(D(real).squeeze(1), D(fake).squeeze(1))
        opt.zero_grad()
        terms.total.backward()
        opt.step()
        sched.step()
        if progress is not None and step % max(1, steps // 10) == 0:
            progress(step, float(terms.total))
    x = torch.linspace(*GRID, points)
    with torch.no_grad():
        measured = torch.sigmoid(D(x.unsqueeze(1)).squeeze(1))
    analytic = analytic_dstar(x, real_target, fake_target)
    pd, pm = normal_pdf(x, *P_DATA), normal_pdf(x, *P_MODEL)
    bump = pd / (pd + pm) < BUMP_RATIO
    err = (measured - analytic).abs()
    return DStarFit(real_target, fake_target, float(err.max()), float(err.mean()),
                    float(measured[bump].mean()), float(analytic[bump].mean()),
                    x.tolist(), measured.tolist(), analytic.tolist())


def plot_dstar(fit: DStarFit, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = torch.tensor(fit.grid)
    pd, pm = normal_pdf(x, *P_DATA), normal_pdf(x, *P_MODEL)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    scale = 1 / float(torch.maximum(pd, pm).max())
    ax.fill_between(x, 0, pd * scale, color="tab:green", alpha=0.15, label="p_data (scaled)")
    ax.fill_between(x, 0, pm * scale, color="tab:orange", alpha=0.15, label="p_model (scaled)")
    bump = (pd / (pd + pm) < BUMP_RATIO).numpy()
    ax.axvspan(float(x[bump].min()), float(x[bump].max()), color="tab:red", alpha=0.07,
               label="p_model >> p_data")
    ax.plot(x, fit.analytic, "k--", lw=1.5, label="analytic D*")
    ax.plot(x, fit.measured, color="tab:blue", lw=2, alpha=0.8, label="measured D")
    ax.plot(x, analytic_dstar(x, fit.real_target, 0.0), ":", color="grey",
            label="D* with beta = 0")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("x")
    ax.set_title(f"optimal D, real_target={fit.real_target:g} (1-alpha), "
                 f"fake_target={fit.fake_target:g} (beta)\nbump height: measured "
                 f"{fit.bump_measured:.3f}, analytic {fit.bump_analytic:.3f};  "
                 f"max |D - D*| = {fit.max_abs_error:.3f}", fontsize=9)
    ax.legend(fontsize=7, loc="center left")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ganlab.dstar", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="smoothing overrides, as for ganlab.train")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("outputs/dstar"))
    args = parser.parse_args(argv)
    try:
        cfg = compose(args.overrides)
        validate(cfg)
    except ConfigError as e:
        print(f"ganlab.dstar: config error: {e}", file=sys.stderr)
        return 2
    print(f"training D to optimality ({args.steps} steps) for real_target="
          f"{cfg.smoothing.real_target:g}, fake_target={cfg.smoothing.fake_target:g}; "
          f"writing to {args.out}", flush=True)
    start = time.perf_counter()

    def progress(step: int, loss: float) -> None:
        print(f"  step {step}/{args.steps}  D's cost {loss:.4f}  "
              f"({time.perf_counter() - start:.0f} s)", flush=True)

    fit = fit_dstar(cfg.smoothing.real_target, cfg.smoothing.fake_target, args.steps,
                    seed=args.seed, progress=progress)
    try:
        atomic_write_json(args.out / "dstar.json", asdict(fit))
        plot_dstar(fit, args.out / "dstar.png")
    except (StorageError, OSError) as e:
        print(f"ganlab.dstar: {e}", file=sys.stderr)
        return 2
    print(f"real_target={fit.real_target:g} fake_target={fit.fake_target:g}  "
          f"max|D-D*|={fit.max_abs_error:.4f} mean|D-D*|={fit.mean_abs_error:.4f}  "
          f"bump: measured {fit.bump_measured:.4f}, analytic {fit.bump_analytic:.4f}\n"
          f"wrote {args.out / 'dstar.json'} and {args.out / 'dstar.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
