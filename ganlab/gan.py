"""One GAN: its two networks, their optimisers, the game's costs and one training round.

`train_step()` is one round of the tutorial's simultaneous game as practised: `d_steps` (k)
updates of D, each on a fresh real batch and fresh z, then `g_steps` updates of G. The label
mode adds its terms to each cost; each network's penalties (historical averaging) add theirs.
It never synchronises with the device; the loop reads the returned (detached) tensors when
it logs.
"""

from __future__ import annotations

import torch
from torch import nn

from ganlab.extras import HistoricalAverage
from ganlab.labels import LabelMode
from ganlab.losses import GANLoss


class GAN:
    def __init__(self, G: nn.Module, D: nn.Module, loss: GANLoss, data, label_mode: LabelMode,
                 *, z_dim: int, batch_size: int, d_steps: int, g_steps: int,
                 lr_g: float, lr_d: float, betas_g, betas_d, split_real_fake: bool,
                 historical_averaging: float, noise_seed: int, device: torch.device):
        self.G, self.D, self.loss, self.data = G.to(device), D.to(device), loss, data
        self.labels = label_mode
        self.num_classes = data.num_classes
        self.z_dim, self.batch_size = z_dim, batch_size
        self.d_steps, self.g_steps = d_steps, g_steps
        self.split_real_fake = split_real_fake or getattr(D, "separate_real_fake", False)
        self.device = device
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=lr_g, betas=tuple(betas_g))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=lr_d, betas=tuple(betas_d))
        self.penalties = ({"g": HistoricalAverage(self.G, historical_averaging),
                           "d": HistoricalAverage(self.D, historical_averaging)}
                          if historical_averaging > 0 else {})
        # z (and G's labels) are drawn on the CPU from their own generator: the same seed
        # gives the same latent stream on every device, and its state is saved for resume.
        self.noise = torch.Generator().manual_seed(noise_seed)

    def sample_z(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.z_dim, generator=self.noise).to(self.device)

    def sample_fake_labels(self, n: int) -> torch.Tensor | None:
        """Labels for G to generate (uniform over classes) when the label mode conditions G."""
        if not self.labels.conditional_g:
            return None
        return torch.randint(self.num_classes, (n,), generator=self.noise).to(self.device)

    def discriminate(self, real, y_real, fake, y_fake):
        """D's (adv_logits, class_logits) on real and on fake samples."""
        if self.split_real_fake:
            return self.D(real, y_real), self.D(fake, y_fake)
        y = None if y_fake is None or y_real is None else torch.cat([y_real, y_fake])
        adv, cls = self.D(torch.cat([real, fake]), y)  # one batch: BN statistics are shared
        n = len(real)
        return ((adv[:n], None if cls is None else cls[:n]),
                (adv[n:], None if cls is None else cls[n:]))

    def _apply(self, who: str, total: torch.Tensor, parts: dict, opt) -> None:
        if who in self.penalties:
            penalty = self.penalties[who].penalty()
            parts[f"penalty_{who}_hist_avg"] = penalty.detach()
            total = total + penalty
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        if who in self.penalties:
            self.penalties[who].update()

    def d_step(self) -> dict[str, torch.Tensor]:
        real, y_real = self.data.sample(self.batch_size)
        y_fake = self.sample_fake_labels(self.batch_size)
        with torch.no_grad():
            fake = self.G(self.sample_z(self.batch_size), y_fake)
        d_sees_y = self.labels.conditional_d
        (real_adv, real_cls), (fake_adv, fake_cls) = self.discriminate(
            real, y_real if d_sees_y else None, fake, y_fake if d_sees_y else None)
        terms = self.loss.d_loss(real_adv, fake_adv)
        extra = self.labels.d_terms(real_cls, y_real, fake_cls, y_fake)
        total = terms.total + sum(extra.values()) if extra else terms.total
        parts = {**terms.parts, **{k: v.detach() for k, v in extra.items()}}
        self._apply("d", total, parts, self.opt_d)
        # Logits, not D(x): the means are taken only when the loop reads the stats.
        return {"loss_d": total.detach(), "real_logits": real_adv.detach(),
                "fake_logits": fake_adv.detach(), **parts}

    def g_step(self) -> dict[str, torch.Tensor]:
        y_fake = self.sample_fake_labels(self.batch_size)
        fake = self.G(self.sample_z(self.batch_size), y_fake)
        fake_adv, fake_cls = self.D(fake, y_fake if self.labels.conditional_d else None)
        terms = self.loss.g_loss(fake_adv)
        extra = self.labels.g_terms(fake_cls, y_fake)
        total = terms.total + sum(extra.values()) if extra else terms.total
        parts = {**terms.parts, **{k: v.detach() for k, v in extra.items()}}
        self._apply("g", total, parts, self.opt_g)
        return {"loss_g": total.detach(), **parts}

    def train_step(self) -> dict[str, torch.Tensor]:
        """One round: k D updates then g_steps G updates; the last values of each.

        Both networks must be in train mode (the loop sets it once; `generate` restores it).
        """
        stats: dict[str, torch.Tensor] = {}
        for _ in range(self.d_steps):
            stats.update(self.d_step())
        for _ in range(self.g_steps):
            stats.update(self.g_step())
        return stats

    @staticmethod
    def read_stats(stats: dict[str, torch.Tensor]) -> dict[str, float]:
        """Python numbers from a round's stats (synchronises with the device)."""
        values = {k: float(v) for k, v in stats.items() if not k.endswith("_logits")}
        for side in ("real", "fake"):
            if f"{side}_logits" in stats:
                values[f"d_{side}"] = float(torch.sigmoid(stats[f"{side}_logits"]).mean())
        return values

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
                "noise": self.noise.get_state(), "data": self.data.state_dict(),
                "penalties": {k: p.state_dict() for k, p in self.penalties.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.noise.set_state(state["noise"])
        self.data.load_state_dict(state["data"])
        for k, p in self.penalties.items():
            p.load_state_dict(state["penalties"][k])
