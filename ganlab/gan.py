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

from ganlab.average import WeightAverage
from ganlab.config import D_BATCHES
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
    d_batches: str = "separate"  # how D's batch statistics see real and fake (norm.d_batches)
    d_couples: bool = False  # D normalises with its minibatch's statistics (batch norm)


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


def logged_values(stats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What the loop logs of a round's stats, still on the device: the losses, and D's mean
    output on real and on fake (from its logits, averaged over the last dimension, so a
    stack of seeds' stats gives one value per seed)."""
    values = {k: v for k, v in stats.items() if not k.endswith("_logits")}
    for side in ("real", "fake"):
        if f"{side}_logits" in stats:
            values[f"d_{side}"] = torch.sigmoid(stats[f"{side}_logits"]).mean(-1)
    return values


def play_round(schedule: Schedule, d_step: Callable[[], dict], g_step: Callable[[], dict]
               ) -> dict[str, torch.Tensor]:
    """The shape of a round: `d_steps` D updates, then `g_steps` G updates; the last stats
    of each (for one GAN, or for a stack of seeds: ganlab.vectorize)."""
    stats: dict[str, torch.Tensor] = {}
    for _ in range(schedule.d_steps):
        stats.update(d_step())
    for _ in range(schedule.g_steps):
        stats.update(g_step())
    return stats


class GAN:
    def __init__(self, G: nn.Module, D: nn.Module, opt_g: torch.optim.Optimizer,
                 opt_d: torch.optim.Optimizer, game: Game, data, schedule: Schedule, *,
                 noise_seed: int, device: torch.device, ema: float = 0.0):
        """G and D already on `device`, with their optimisers; `ema` > 0 keeps an average
        of G's weights with that decay (ganlab.average), which evaluation then scores."""
        self.G, self.D, self.opt_g, self.opt_d = G, D, opt_g, opt_d
        # copied before the plug-ins bind to G: the average is G's network alone
        self.average = WeightAverage(G, ema) if ema > 0 else None
        self.loss, self.labels, self.extras = game.loss, game.labels, game.extras
        self.data, self.schedule, self.device = data, schedule, device
        self.z_dim, self.num_classes = G.z_dim, data.num_classes
        self.batch_size = schedule.batch_size
        self.round_images = 0  # real samples drawn in the latest round (the loop counts them)
        if schedule.d_batches not in D_BATCHES:
            raise ValueError(f"norm.d_batches={schedule.d_batches!r}; choose one of: "
                             f"{', '.join(D_BATCHES)}")
        # what actually runs: a plug-in may need separate batches whatever norm.* says
        separate = any(e.separate_real_fake for e in self.extras)
        self.d_batches = "separate" if separate else schedule.d_batches
        # Without batch statistics in D the modes compute the same function: D then takes
        # real and fake in one call (one kernel per layer), and a G update fakes alone.
        couples = schedule.d_couples or separate  # a plug-in's minibatch features couple too
        self.joint_d = not (couples and self.d_batches == "separate")
        # the consistent joint mode: a G update also normalises fakes among real samples
        self.joint_g = couples and self.d_batches == "joint"
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

    def discriminate(self, D, real, y_real, fake, y_fake) -> tuple[DOutput, DOutput]:
        """D's outputs on real and on fake samples: two batches, or one joint batch whose
        norm statistics both halves share (norm.d_batches)."""
        if not self.joint_d:
            return D(real, y_real), D(fake, y_fake)
        y = None if y_fake is None or y_real is None else torch.cat([y_real, y_fake])
        out = D(torch.cat([real, fake]), y)  # one batch: norm statistics are shared
        n = len(real)
        return (DOutput(*(None if t is None else t[:n] for t in out)),
                DOutput(*(None if t is None else t[n:] for t in out)))

    def _total(self, who: str, total: torch.Tensor, extra: dict[str, torch.Tensor]
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """A player's whole cost and the (detached) terms it logs."""
        if extra:
            total = total + sum(extra.values())
        return total, {f"loss_{who}": total.detach(), **{k: v.detach() for k, v in extra.items()}}

    def _update(self, who: str, total: torch.Tensor, opt: torch.optim.Optimizer) -> None:
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        for plugin in self.extras:
            plugin.after_update(who)

    def _real_batch(self):
        self.round_images += self.batch_size
        return self.data.sample(self.batch_size, labels=self.real_labels)

    # A D or G update is its inputs, drawn from the run's streams (`d_inputs`, `g_inputs`),
    # then its cost, a function of the networks and those inputs only (`d_cost`, `g_cost`):
    # ganlab.vectorize runs the same cost functions for a stack of seeds.
    def d_inputs(self) -> tuple:
        """(real, y_real, z, y_fake) for one D update, in the streams' order."""
        real, y_real = self._real_batch()
        y_fake = self.sample_fake_labels(self.batch_size)
        return real, y_real, self.sample_z(self.batch_size), y_fake

    def d_cost(self, G, D, real, y_real, z, y_fake
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """D's cost on one update's inputs, and what it logs."""
        with torch.no_grad():
            fake = G(z, y_fake)
        d_sees_y = self.labels.conditional_d
        out_real, out_fake = self.discriminate(D, real, y_real if d_sees_y else None,
                                               fake, y_fake if d_sees_y else None)
        terms = self.loss.d_loss(out_real.adv, out_fake.adv)
        extra = self.labels.d_terms(out_real.cls, y_real, out_fake.cls, y_fake)
        step = Step(out_fake, out_real)
        for plugin in self.extras:
            extra.update(plugin.d_terms(step))
        total, stats = self._total("d", terms.total, extra)
        # Logits, not D(x): the means are taken only when the loop reads the stats.
        return total, {**stats, **terms.parts, "real_logits": out_real.adv.detach(),
                       "fake_logits": out_fake.adv.detach()}

    def d_step(self) -> dict[str, torch.Tensor]:
        total, stats = self.d_cost(self.G, self.D, *self.d_inputs())
        self._update("d", total, self.opt_d)
        return stats

    @property
    def g_reads_real(self) -> bool:
        """Whether a G update draws a real batch (a plug-in's term reads D on it, or D
        normalises the fakes among real samples: norm.d_batches=joint)."""
        return self.joint_g or any(e.g_reads_real for e in self.extras)

    def g_inputs(self, real_too: bool = False) -> tuple:
        """(z, y_fake) for one G update; with `real_too`, also the real batch a plug-in's
        term may read (drawn here rather than when the term asks: it comes from the data
        stream, the others from the noise stream, so each stream's order is unchanged)."""
        y_fake = self.sample_fake_labels(self.batch_size)
        z = self.sample_z(self.batch_size)
        return (z, y_fake, *(self._real_batch() if real_too else ()))

    def g_cost(self, G, D, z, y_fake, draw_real: Callable[[], tuple]
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """G's cost on one update's inputs; `draw_real()` gives (real, y_real) when a term
        reads D on real data, or when D's batch norm sees real and fake as one batch: then
        the fakes pass through D inside a joint real+fake batch, as in D's update, and G's
        cost is that of the fake half (gradients reach G through the shared statistics too)."""
        fake = G(z, y_fake)
        d_sees_y = self.labels.conditional_d
        if self.joint_g:
            real, y_real = draw_real()
            out_real, out_fake = self.discriminate(D, real, y_real if d_sees_y else None,
                                                   fake, y_fake if d_sees_y else None)
            # a plug-in reads D on real data as a constant for G
            step = Step(out_fake, DOutput(*(None if t is None else t.detach()
                                            for t in out_real)))
        else:
            out_fake = D(fake, y_fake if d_sees_y else None)

            def real_output() -> DOutput:
                real, y_real = draw_real()
                with torch.no_grad():
                    return D(real, y_real if d_sees_y else None)

            step = Step(out_fake, _draw_real=real_output)
        terms = self.loss.g_loss(out_fake.adv)
        extra = self.labels.g_terms(out_fake.cls, y_fake)
        for plugin in self.extras:
            extra.update(plugin.g_terms(step))
        total, stats = self._total("g", terms.total, extra)
        return total, {**stats, **terms.parts}

    def g_step(self) -> dict[str, torch.Tensor]:
        total, stats = self.g_cost(self.G, self.D, *self.g_inputs(), draw_real=self._real_batch)
        self._update("g", total, self.opt_g)
        if self.average is not None:
            self.average.update(self.G)
        return stats

    @property
    def scored(self) -> nn.Module:
        """The generator evaluation scores: the average of G's weights where the run keeps
        one (eval.ema), else G."""
        return self.G if self.average is None else self.average.net

    def train_step(self) -> dict[str, torch.Tensor]:
        """One round: k D updates then g_steps G updates; the last values of each.

        Both networks must be in train mode (the loop sets it once; `generate` restores it).
        """
        self.round_images = 0
        return play_round(self.schedule, self.d_step, self.g_step)

    @staticmethod
    def read_stats(stats: dict[str, torch.Tensor]) -> dict[str, float]:
        """Python numbers from a round's stats, in one copy from the device (one sync)."""
        scalars = logged_values(stats)
        if not scalars:
            return {}
        values = torch.stack([v.detach().float().reshape(()) for v in scalars.values()])
        return dict(zip(scalars, values.tolist(), strict=True))

    @torch.no_grad()
    def generate(self, n: int, generator: torch.Generator, batch_size: int,
                 labels: torch.Tensor | None = None) -> torch.Tensor:
        """n samples of the scored generator (`scored`) in eval mode, from a caller's
        generator (training streams untouched).

        A conditional G gets `labels` (or uniform labels from `generator`)."""
        G = self.scored
        was_training = G.training
        G.eval()
        out = []
        for start in range(0, n, batch_size):
            m = min(batch_size, n - start)
            z = torch.randn(m, self.z_dim, generator=generator).to(self.device)
            y = None
            if self.labels.conditional_g:
                y = (labels[start:start + m] if labels is not None
                     else torch.randint(self.num_classes, (m,), generator=generator))
                y = y.to(self.device)
            out.append(G(z, y).float().cpu())
        G.train(was_training)
        return torch.cat(out)

    def state_dict(self) -> dict:
        return {"G": self.G.state_dict(), "D": self.D.state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                "noise": stream_state(self.noise), "data": self.data.state_dict(),
                "extras": {e.name: e.state_dict() for e in self.extras},
                **({} if self.average is None else {"G_average": self.average.state_dict()})}

    def load_state_dict(self, state: dict) -> None:
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        restore_stream(self.noise, state["noise"])
        self.data.load_state_dict(state["data"])
        for extra in self.extras:
            extra.load_state_dict(state["extras"][extra.name])
        if self.average is not None:
            if "G_average" not in state:
                raise ValueError("the checkpoint holds no average of G's weights (its run "
                                 "had eval.ema=0)")
            self.average.load_state_dict(state["G_average"])
