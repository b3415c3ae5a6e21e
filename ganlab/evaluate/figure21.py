"""The tutorial's Figure 21 for trained runs: the same latents rendered inside two different
minibatches, side by side, one panel per run.

    python -m ganlab.evaluate.figure21 RUN_DIR [RUN_DIR ...] [--out FILE] [--n 8] [--batch B]

Each run's G is rebuilt from its saved config and checkpoint and run in train mode (the
mode it trains in) on two minibatches of its training batch size that share their first
`--n` latents and differ in every other member (a third block shows the difference,
amplified). With batch norm the shared samples change with their batch-mates; with
reference or virtual batch norm (or none) they do not. The same latents are used for every run of a model family; each panel's title gives the run's
`norm.g` and its measured coupling (ganlab.evaluate.coupling).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ganlab.checkpoint import CheckpointError
from ganlab.config import ConfigError
from ganlab.evaluate.coupling import coupled_outputs, relative_change
from ganlab.evaluate.saved import load_trained
from ganlab.plots import image_grid, save_figure
from ganlab.storage import StorageError

DIFF_GAIN = 10  # the difference block shows |A - B| times this


def panel(run_dir: Path, n: int, seed: int, batch: int | None = None) -> dict:
    """One run's two renderings of the shared latents and what to call them; `batch`: the
    minibatch size (default: the run's training batch size)."""
    cfg, gan, step = load_trained(run_dir, [])
    gen = torch.Generator().manual_seed(seed)
    first, second = coupled_outputs(gan, batch or cfg.train.batch_size, gen, n)
    return {"norm": cfg.norm.g, "seed": cfg.seed, "step": step,
            "coupling": relative_change(first, second),
            "first": first.cpu(), "second": second.cpu(), "image": first.dim() == 4}


def draw(panels: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 2.2 * len(panels)), dpi=110,
                             squeeze=False)
    for ax, p in zip(axes[:, 0], panels, strict=True):
        if p["image"]:
            # |A - B| on the images' [-1, 1] scale, amplified, as a third block
            diff = ((p["first"] - p["second"]).abs() * DIFF_GAIN - 1).clamp(-1, 1)
            strip = _side_by_side(_side_by_side(image_grid(p["first"]),
                                                image_grid(p["second"])), image_grid(diff))
            ax.imshow(strip.squeeze(-1) if strip.shape[-1] == 1 else strip, cmap="gray",
                      vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
        else:
            a, b = p["first"].numpy(), p["second"].numpy()
            ax.scatter(a[:, 0], a[:, 1], s=30, label="in minibatch A")
            ax.scatter(b[:, 0], b[:, 1], s=30, marker="x", label="in minibatch B")
            for u, v in zip(a, b, strict=True):
                ax.plot([u[0], v[0]], [u[1], v[1]], color="grey", lw=0.8)
            ax.legend(fontsize=8)
        ax.set_title(f"norm.g={p['norm']} (seed {p['seed']}, step {p['step']}): coupling "
                     f"{p['coupling']:.3g}", fontsize=11)
    fig.suptitle(f"the same z inside two minibatches: minibatch A | minibatch B | "
                 f"|A - B| x {DIFF_GAIN}", fontsize=12)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def _side_by_side(left, right, gap: int = 12):
    import numpy as np

    height = max(left.shape[0], right.shape[0])
    pad = np.full((height, gap, left.shape[2]), 255, dtype=left.dtype)
    return np.concatenate([left, pad, right], axis=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ganlab.evaluate.figure21",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("figure21.png"))
    parser.add_argument("--n", type=int, default=8, help="shared latents per minibatch")
    parser.add_argument("--seed", type=int, default=0, help="seed of the latents")
    parser.add_argument("--batch", type=int, default=None,
                        help="minibatch size (default: the run's train.batch_size)")
    args = parser.parse_args(argv)
    try:
        panels = [panel(d, args.n, args.seed, args.batch) for d in args.run_dirs]
        draw(panels, args.out)
    except (ConfigError, CheckpointError, StorageError) as e:
        print(f"ganlab.evaluate.figure21: {e}", file=sys.stderr)
        return 2
    for d, p in zip(args.run_dirs, panels, strict=True):
        print(f"{d}: norm.g={p['norm']} coupling {p['coupling']:.4g}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
