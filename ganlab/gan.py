"""One GAN: its two networks, their optimisers, the game's costs and one training round.

`train_step()` is one round of the tutorial's simultaneous game as practised: `d_steps` (k)
updates of D, each on a fresh real batch and fresh z, then `g_steps` updates of G. It never
synchronises with the device; the loop reads the returned (detached) tensors when it logs.
"""

from __future__ import annotations

import torch
from torch import nn

from ganlab.losses import GANLoss


class GAN:
    def __init__(self, G: nn.Module, D: nn.Module, loss: GANLoss, data, *,
                 z_dim: int, batch_size: int, d_steps: int, g_steps: int,
                 lr_g: float, lr_d: float, betas_g, betas_d,
                 split_real_fake: bool, noise_seed: int, device: torch.device):
        self.G, self.D, self.loss, self.data = G.to(device), D.to(device), loss, data
        self.z_dim, self.batch_size = z_dim, batch_size
        self.d_steps, self.g_steps = d_steps, g_steps
        self.split_real_fake = split_real_fake
        self.device = device
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=lr_g, betas=tuple(betas_g))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=lr_d, betas=tuple(betas_d))
        # z is drawn on the CPU from its own generator: the same seed gives the same latent
        # stream on every device, and the stream's state is saved for exact resume.
        self.noise = torch.Generator().manual_seed(noise_seed)

    def sample_z(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.z_dim, generator=self.noise).to(self.device)

    def discriminate(self, real: torch.Tensor, fake: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.split_real_fake:
            return self.D(real), self.D(fake)
        logits = self.D(torch.cat([real, fake]))  # one batch: BN statistics are shared
        return logits[:len(real)], logits[len(real):]

    def d_step(self) -> dict[str, torch.Tensor]:
        real, _ = self.data.sample(self.batch_size)
        with torch.no_grad():
            fake = self.G(self.sample_z(self.batch_size))
        real_logits, fake_logits = self.discriminate(real, fake)
        terms = self.loss.d_loss(real_logits, fake_logits)
        self.opt_d.zero_grad(set_to_none=True)
        terms.total.backward()
        self.opt_d.step()
        # Logits, not D(x): the means are taken only when the loop reads the stats.
        return {"loss_d": terms.total.detach(), "real_logits": real_logits.detach(),
                "fake_logits": fake_logits.detach(), **terms.parts}

    def g_step(self) -> dict[str, torch.Tensor]:
        fake_logits = self.D(self.G(self.sample_z(self.batch_size)))
        terms = self.loss.g_loss(fake_logits)
        self.opt_g.zero_grad(set_to_none=True)
        terms.total.backward()
        self.opt_g.step()
        return {"loss_g": terms.total.detach(), **terms.parts}

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
    def generate(self, n: int, generator: torch.Generator, batch_size: int) -> torch.Tensor:
        """n samples in eval mode from a caller's generator (training streams untouched)."""
        was_training = self.G.training
        self.G.eval()
        out = []
        for start in range(0, n, batch_size):
            m = min(batch_size, n - start)
            z = torch.randn(m, self.z_dim, generator=generator).to(self.device)
            out.append(self.G(z).float().cpu())
        self.G.train(was_training)
        return torch.cat(out)

    def state_dict(self) -> dict:
        return {"G": self.G.state_dict(), "D": self.D.state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                "noise": self.noise.get_state(), "data": self.data.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.noise.set_state(state["noise"])
        self.data.load_state_dict(state["data"])
