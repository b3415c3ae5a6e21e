"""Equation 15 made visible: the optimal discriminator under label smoothing.

`python -m ganlab.dstar [smoothing=... | smoothing.real_target=A smoothing.fake_target=B |
experiment=eq15] [--steps N] [--out DIR]` trains D to optimality against a *fixed* pair of 1-D densities,
p_data = N(0, 1) and p_model = N(2, 1), with D's smoothed targets, and compares the measured
D(x) with the analytic optimum

    D*(x) = ((1 - alpha) p_data(x) + beta p_model(x)) / (p_data(x) + p_model(x)).

Where p_model is large and p_data small, D* tends to beta: with beta > 0 D rewards G for the
very samples it should stop making (the tutorial's reason for one-sided smoothing). The
command writes `dstar.json` (max and mean absolute error, the bump's measured and analytic
height) and `dstar.png` (both curves over the densities, with the bump region shaded). A
preset's `study.cases` ("real_target,fake_target" each; `experiment=eq15`) runs every case:
one figure with all of them and the bump's height against beta, and `dstar.md` (the table).
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
from ganlab.eq15 import GRID, P_DATA, P_MODEL, analytic_dstar, normal_pdf
from ganlab.losses import GANLoss
from ganlab.optim import Adam
from ganlab.plots import save_figure
from ganlab.storage import StorageError, atomic_write, atomic_write_json

BUMP_RATIO = 0.01  # the bump region: p_data / (p_data + p_model) < BUMP_RATIO


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
    opt = Adam(D.parameters(), lr=3e-3)
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
            progress(step, float(terms.total.detach()))
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


def _draw(ax, fit: DStarFit, legend: bool = True, small: bool = False) -> None:
    x = torch.tensor(fit.grid)
    pd, pm = normal_pdf(x, *P_DATA), normal_pdf(x, *P_MODEL)
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
    head = (f"1-alpha = {fit.real_target:g}, beta = {fit.fake_target:g}" if small else
            f"optimal D, real_target={fit.real_target:g} (1-alpha), "
            f"fake_target={fit.fake_target:g} (beta)")
    ax.set_title(f"{head}\nbump: measured {fit.bump_measured:.3f}, analytic "
                 f"{fit.bump_analytic:.3f}; max |D - D*| = {fit.max_abs_error:.3f}",
                 fontsize=10 if small else 9)
    if legend:
        ax.legend(fontsize=7, loc="center left")


def plot_dstar(fit: DStarFit, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    _draw(ax, fit)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def plot_cases(fits: list[DStarFit], path: Path) -> None:
    """Every case in one figure, and the bump's height against beta (measured, analytic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 3
    rows = math.ceil((len(fits) + 1) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), dpi=90,
                             squeeze=False)
    flat = list(axes.flat)
    for i, (ax, fit) in enumerate(zip(flat, fits, strict=False)):
        _draw(ax, fit, legend=i == 0, small=True)
    ax = flat[len(fits)]
    betas = [f.fake_target for f in fits]
    ax.plot(betas, [f.bump_analytic for f in fits], "k--", marker="s", label="analytic D*")
    ax.plot(betas, [f.bump_measured for f in fits], "o", color="tab:blue", ms=8,
            label="measured D")
    ax.set_xlabel("beta (smoothing.fake_target)")
    ax.set_ylabel("mean D where p_model >> p_data")
    ax.set_title("the spurious bump's height against beta", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    for extra in flat[len(fits) + 1:]:
        extra.axis("off")
    fig.suptitle("Eq. 15: optimal D under label smoothing, p_data = N(0, 1), "
                 "p_model = N(2, 1)", fontsize=12)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def parse_cases(cases: list[str]) -> list[tuple[float, float]]:
    """`study.cases` entries "real_target,fake_target", each checked as the config would."""
    pairs = []
    for case in cases:
        try:
            real, fake = (float(v) for v in case.split(","))
        except ValueError:
            raise ConfigError(f"study.cases entry {case!r} is not 'real_target,fake_target' "
                              "(two numbers)") from None
        validate(compose([f"smoothing.real_target={real}", f"smoothing.fake_target={fake}"]))
        pairs.append((real, fake))
    return pairs


def case_table(fits: list[DStarFit]) -> str:
    """The cases as a markdown table."""
    lines = ["| 1 − α | β | max abs(D − D*) | mean abs(D − D*) | bump, measured | bump, D* |",
             "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {f.real_target:g} | {f.fake_target:g} | {f.max_abs_error:.4f} | "
              f"{f.mean_abs_error:.4f} | {f.bump_measured:.4f} | {f.bump_analytic:.4f} |"
              for f in fits]
    return "\n".join(lines)


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
        cases = parse_cases(list(cfg.study.cases)) if cfg.study.cases else [
            (cfg.smoothing.real_target, cfg.smoothing.fake_target)]
    except ConfigError as e:
        print(f"ganlab.dstar: config error: {e}", file=sys.stderr)
        return 2
    start = time.perf_counter()

    def progress(step: int, loss: float) -> None:
        print(f"  step {step}/{args.steps}  D's cost {loss:.4f}  "
              f"({time.perf_counter() - start:.0f} s)", flush=True)

    fits = []
    for i, (real, fake) in enumerate(cases, 1):
        print(f"case {i}/{len(cases)}: training D to optimality ({args.steps} steps) for "
              f"real_target={real:g}, fake_target={fake:g}; writing to {args.out}", flush=True)
        fits.append(fit_dstar(real, fake, args.steps, seed=args.seed, progress=progress))
    try:
        if len(fits) == 1:
            atomic_write_json(args.out / "dstar.json", asdict(fits[0]))
            plot_dstar(fits[0], args.out / "dstar.png")
        else:
            atomic_write_json(args.out / "dstar.json", {
                "study": cfg.study.name, "question": cfg.study.question, "steps": args.steps,
                "seed": args.seed, "seconds": round(time.perf_counter() - start, 1),
                "cases": [asdict(f) for f in fits]})
            plot_cases(fits, args.out / "dstar.png")
            atomic_write(args.out / "dstar.md", (case_table(fits) + "\n").encode())
    except (StorageError, OSError) as e:
        print(f"ganlab.dstar: {e}", file=sys.stderr)
        return 2
    for fit in fits:
        print(f"real_target={fit.real_target:g} fake_target={fit.fake_target:g}  "
              f"max|D-D*|={fit.max_abs_error:.4f} mean|D-D*|={fit.mean_abs_error:.4f}  "
              f"bump: measured {fit.bump_measured:.4f}, analytic {fit.bump_analytic:.4f}")
    print(f"wrote {args.out / 'dstar.json'} and {args.out / 'dstar.png'}"
          + (f" and {args.out / 'dstar.md'}" if len(fits) > 1 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
