"""One GAN: its two networks and optimisers, the game's costs, and one training round.

`train_step()` is one round of the tutorial's simultaneous game as practised: `d_steps` (k)
updates of D, each on a fresh real batch and fresh z, then `g_steps` updates of G. Each
player's cost is the GAN loss, plus the label mode's terms, plus the terms of every active
plug-in (ganlab.extras), which read the update's D outputs through a `Step`. The round never
synchronises with the device: latents, labels and data are drawn where the networks are
(tests/test_gan.py counts it with ganlab.syncs); the loop reads the returned (detached)
tensors in one copy when it logs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ganlab.data.base import restore_stream, stream_state
from ganlab.extras import Extra
from ganlab.labels import LabelMode
from ganlab.losses import GANLoss
from ganlab.nets import DOutput


@dataclass
class Game:
    """The costs: the GAN loss (with smoothing), the label mode's terms, the plug-ins'."""

    loss: GANLoss
    labels: LabelMode
    extras: list[Extra] = field(default_factory=list)


@dataclass(frozen=True)
class Schedule:
    """The shape of a round."""

    batch_size: int
    d_steps: int = 1  # k: D updates per round
    g_steps: int = 1  # G updates per round
    split_real_fake: bool = False  # D sees real and fake as separate batches (norm statistics)


@dataclass
class Step:
    """What one update's cost terms read: D's outputs on this update's batches.

    In a D update both are there; in a G update `real()` draws a real batch through the
    current D the first time a term asks for it (without gradients: a constant for G)."""

    fake: DOutput
    _real: DOutput | None = None
    _draw_real: Callable[[], DOutput] | None = None

    def real(self) -> DOutput:
        if self._real is None:
            self._real = self._draw_real()
        return self._real


class GAN:
    def __init__(self, G: nn.Module, D: nn.Module, opt_g: torch.optim.Optimizer,
                 opt_d: torch.optim.Optimizer, game: Game, data, schedule: Schedule, *,
                 noise_seed: int, device: torch.device):
        """G and D already on `device`, with their optimisers."""
        self.G, self.D, self.opt_g, self.opt_d = G, D, opt_g, opt_d
        self.loss, self.labels, self.extras = game.loss, game.labels, game.extras
        self.data, self.schedule, self.device = data, schedule, device
        self.z_dim, self.num_classes = G.z_dim, data.num_classes
        self.batch_size = schedule.batch_size
        self.round_images = 0  # real samples drawn in the latest round (the loop counts them)
        # what actually runs: a plug-in may need separate batches whatever norm.* says
        self.split_real_fake = schedule.split_real_fake or any(
            e.separate_real_fake for e in self.extras)
        for extra in self.extras:
            extra.bind(G, D)
        # real labels are gathered only for a label mode that reads them
        self.real_labels = self.labels.uses_labels
        # z (and G's labels) are drawn on the training device from their own generator, so
        # a round copies nothing from the host; its state is saved for resume. The same
        # seed gives the same stream on every CPU, but a CUDA run draws other numbers.
        self.noise = torch.Generator(device=device).manual_seed(noise_seed)

    def sample_z(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.z_dim, generator=self.noise, device=self.device)

    def sample_fake_labels(self, n: int) -> torch.Tensor | None:
        """Labels for G to generate (uniform over classes) when the label mode conditions G."""
        if not self.labels.conditional_g:
            return None
        return torch.randint(self.num_classes, (n,), generator=self.noise, device=self.device)

    def discriminate(self, real, y_real, fake, y_fake) -> tuple[DOutput, DOutput]:
        """D's outputs on real and on fake samples."""
        if self.split_real_fake:
            return self.D(real, y_real), self.D(fake, y_fake)
        y = None if y_fake is None or y_real is None else torch.cat([y_real, y_fake])
        out = self.D(torch.cat([real, fake]), y)  # one batch: norm statistics are shared
        n = len(real)
        return (DOutput(*(None if t is None else t[:n] for t in out)),
                DOutput(*(None if t is None else t[n:] for t in out)))

    def _update(self, who: str, total: torch.Tensor, extra: dict[str, torch.Tensor],
                opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
        if extra:
            total = total + sum(extra.values())
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        for plugin in self.extras:
            plugin.after_update(who)
        return {f"loss_{who}": total.detach(), **{k: v.detach() for k, v in extra.items()}}

    def _real_batch(self):
        self.round_images += self.batch_size
        return self.data.sample(self.batch_size, labels=self.real_labels)

    def d_step(self) -> dict[str, torch.Tensor]:
        real, y_real = self._real_batch()
        y_fake = self.sample_fake_labels(self.batch_size)
        with torch.no_grad():
            fake = self.G(self.sample_z(self.batch_size), y_fake)
        d_sees_y = self.labels.conditional_d
        out_real, out_fake = self.discriminate(real, y_real if d_sees_y else None,
                                               fake, y_fake if d_sees_y else None)
        terms = self.loss.d_loss(out_real.adv, out_fake.adv)
        extra = self.labels.d_terms(out_real.cls, y_real, out_fake.cls, y_fake)
        step = Step(out_fake, out_real)
        for plugin in self.extras:
            extra.update(plugin.d_terms(step))
        stats = self._update("d", terms.total, extra, self.opt_d)
        # Logits, not D(x): the means are taken only when the loop reads the stats.
        return {**stats, **terms.parts, "real_logits": out_real.adv.detach(),
                "fake_logits": out_fake.adv.detach()}

    def _real_output(self) -> DOutput:
        real, y_real = self._real_batch()
        with torch.no_grad():
            return self.D(real, y_real if self.labels.conditional_d else None)

    def g_step(self) -> dict[str, torch.Tensor]:
        y_fake = self.sample_fake_labels(self.batch_size)
        fake = self.G(self.sample_z(self.batch_size), y_fake)
        out_fake = self.D(fake, y_fake if self.labels.conditional_d else None)
        terms = self.loss.g_loss(out_fake.adv)
        extra = self.labels.g_terms(out_fake.cls, y_fake)
        step = Step(out_fake, _draw_real=self._real_output)
        for plugin in self.extras:
            extra.update(plugin.g_terms(step))
        return {**self._update("g", terms.total, extra, self.opt_g), **terms.parts}

    def train_step(self) -> dict[str, torch.Tensor]:
        """One round: k D updates then g_steps G updates; the last values of each.

        Both networks must be in train mode (the loop sets it once; `generate` restores it).
        """
        stats: dict[str, torch.Tensor] = {}
        self.round_images = 0
        for _ in range(self.schedule.d_steps):
            stats.update(self.d_step())
        for _ in range(self.schedule.g_steps):
            stats.update(self.g_step())
        return stats

    @staticmethod
    def read_stats(stats: dict[str, torch.Tensor]) -> dict[str, float]:
        """Python numbers from a round's stats, in one copy from the device (one sync)."""
        scalars = {k: v for k, v in stats.items() if not k.endswith("_logits")}
        for side in ("real", "fake"):
            if f"{side}_logits" in stats:
                scalars[f"d_{side}"] = torch.sigmoid(stats[f"{side}_logits"]).mean()
        if not scalars:
            return {}
        values = torch.stack([v.detach().float().reshape(()) for v in scalars.values()])
        return dict(zip(scalars, values.tolist(), strict=True))

    @torch.no_grad()
    def generate(self, n: int, generator: torch.Generator, batch_size: int,
                 labels: torch.Tensor | None = None) -> torch.Tensor:
        """n samples in eval mode from a caller's generator (training streams untouched).

        A conditional G gets `labels` (or uniform labels from `generator`)."""
        was_training = self.G.training
        self.G.eval()
        out = []
        for start in range(0, n, batch_size):
            m = min(batch_size, n - start)
            z = torch.randn(m, self.z_dim, generator=generator).to(self.device)
            y = None
            if self.labels.conditional_g:
                y = (labels[start:start + m] if labels is not None
                     else torch.randint(self.num_classes, (m,), generator=generator))
                y = y.to(self.device)
            out.append(self.G(z, y).float().cpu())
        self.G.train(was_training)
        return torch.cat(out)

    def state_dict(self) -> dict:
        return {"G": self.G.state_dict(), "D": self.D.state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                "noise": stream_state(self.noise), "data": self.data.state_dict(),
                "extras": {e.name: e.state_dict() for e in self.extras}}

    def load_state_dict(self, state: dict) -> None:
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        restore_stream(self.noise, state["noise"])
        self.data.load_state_dict(state["data"])
        for extra in self.extras:
            extra.load_state_dict(state["extras"][extra.name])
