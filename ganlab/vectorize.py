"""Vectorised seeds: runs that differ only by seed, trained as one stacked model.

`SeedStack` plays the round of every member GAN at once. Each member keeps its own data and
latent streams (its inputs are drawn from them in the single-run order and stacked); the
networks' weights, buffers and Adam moments are stacked along a leading seed dimension
(`torch.func.stack_module_state`), and each update is the member's own cost function
(`GAN.d_cost`, `GAN.g_cost`) under `torch.func.vmap`, so one batched kernel serves all
seeds. Adam is elementwise, so one optimiser over the stacked parameters updates each seed
exactly as its own optimiser would, and a seed whose loss turns NaN cannot touch the others.

The members' own networks and optimisers are left behind during training; `unstack(i)`
copies seed i's state back into them before anything reads them (evaluation, checkpoints),
so a member's checkpoint is exactly a single run's and `rerun` of one seed runs it alone.
The average of G's weights (`eval.ema`) is stacked the same way and moves after each G
update exactly as a single run's (ganlab.average).

Which configs can be stacked is decided by `unsupported` (one line naming what cannot).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from omegaconf import DictConfig
from torch.func import functional_call, stack_module_state, vmap

from ganlab.average import decay_at, move_toward
from ganlab.gan import GAN, logged_values, play_round
from ganlab.optim import Adam


def unsupported(cfg: DictConfig) -> list[str]:
    """The settings of `cfg` that vectorised seeds do not support (empty: it can stack)."""
    from ganlab.extras import EXTRAS, resolve_options, stateful
    from ganlab.nets import MODELS

    problems = []
    if not MODELS.choose(cfg.model.name).vectorizable:
        families = [name for name, spec in MODELS.items() if spec.vectorizable]
        problems.append(f"model={cfg.model.name} (supported: {', '.join(families)})")
    problems += [f"extras.{name}" for name, options in resolve_options(cfg.extras).items()
                 if EXTRAS[name].active(options) and stateful(EXTRAS[name])]
    return problems


class SeedStack:
    """The GANs of runs that differ only by seed, trained together (see the module doc)."""

    def __init__(self, gans: Sequence[GAN]):
        if len(gans) < 1:
            raise ValueError("a SeedStack needs at least one GAN")
        self.gans = list(gans)
        lead = self.gans[0]
        self.lead, self.schedule = lead, lead.schedule
        # the nets `functional_call` runs with the stack's tensors swapped in: their own
        # tensors are never read, so they hold none (meta device)
        self.templates = {"G": copy.deepcopy(lead.G).to("meta"),
                          "D": copy.deepcopy(lead.D).to("meta")}
        self.state: dict[str, tuple[dict, dict]] = {}
        self.opts: dict[str, torch.optim.Optimizer] = {}
        for net, opt in (("G", "opt_g"), ("D", "opt_d")):
            params, buffers = stack_module_state([getattr(g, net) for g in self.gans])
            self.state[net] = (params, buffers)
            member_opt = getattr(lead, opt)
            stacked = Adam(list(params.values()), **member_opt.defaults)
            self._stack_moments(stacked, [getattr(g, opt) for g in self.gans],
                                [getattr(g, net) for g in self.gans])
            self.opts[net] = stacked
        self.g_reads_real = lead.g_reads_real
        # the average of G's weights (eval.ema): stacked, updated after each G update
        self.average = None
        if lead.average is not None:
            members = [g.average for g in self.gans]
            if len({a.updates for a in members}) > 1:
                raise ValueError("members of a seed stack must have averaged G equally often")
            params, buffers = stack_module_state([a.net for a in members])
            self.average = ({k: v.detach() for k, v in params.items()},
                            {k: v.detach() for k, v in buffers.items()})
            self.average_updates = members[0].updates

    def _stack_moments(self, stacked: torch.optim.Optimizer, opts, nets) -> None:
        """Adam's state of resumed members, stacked (they stepped equally often)."""
        members = [list(net.parameters()) for net in nets]
        for i, p in enumerate(stacked.param_groups[0]["params"]):
            states = [opt.state.get(ps[i]) for opt, ps in zip(opts, members, strict=True)]
            if all(s is None for s in states):
                continue
            if any(s is None for s in states) or len({float(s["step"]) for s in states}) > 1:
                raise ValueError("members of a seed stack must have taken the same number of "
                                 "optimiser steps")
            stacked.state[p] = {"step": states[0]["step"].clone(),
                                **{k: torch.stack([s[k] for s in states])
                                   for k in states[0] if k != "step"}}

    def _net(self, name: str, params: dict, buffers: dict):
        template = self.templates[name]
        return lambda *args: functional_call(template, (params, buffers), args)

    def _update(self, name: str, cost, inputs: list[tuple]) -> dict[str, torch.Tensor]:
        """One update of net `name` for every member: `cost(G, D, *member_inputs)`."""
        stacked = [None if parts[0] is None else torch.stack(parts)
                   for parts in zip(*inputs, strict=True)]
        (pg, bg), (pd, bd) = self.state["G"], self.state["D"]

        def one_seed(pg, bg, pd, bd, *xs):
            return cost(self._net("G", pg, bg), self._net("D", pd, bd), *xs)

        in_dims = (0, 0, 0, 0, *(None if x is None else 0 for x in stacked))
        totals, stats = vmap(one_seed, in_dims=in_dims, randomness="error")(
            pg, bg, pd, bd, *stacked)
        opt = self.opts[name]
        opt.zero_grad(set_to_none=True)
        totals.sum().backward()  # each seed's parameters get its own cost's gradient
        opt.step()
        return stats

    def _d_step(self) -> dict[str, torch.Tensor]:
        return self._update("D", self.lead.d_cost, [g.d_inputs() for g in self.gans])

    def _g_step(self) -> dict[str, torch.Tensor]:
        inputs = [g.g_inputs(real_too=self.g_reads_real) for g in self.gans]

        def cost(G, D, z, y_fake, real=None, y_real=None):
            return self.lead.g_cost(G, D, z, y_fake, draw_real=lambda: (real, y_real))

        stats = self._update("G", cost, inputs)
        if self.average is not None:
            self._update_average()
        return stats

    def _update_average(self) -> None:
        """Every member's average one step toward its G (ganlab.average.WeightAverage)."""
        (params, buffers), (avg_params, avg_buffers) = self.state["G"], self.average
        move_toward(avg_params.values(), [params[k].detach() for k in avg_params],
                    avg_buffers.values(), [buffers[k] for k in avg_buffers],
                    decay_at(self.lead.average.decay, self.average_updates))
        self.average_updates += 1

    def train_step(self) -> dict[str, torch.Tensor]:
        """One round for every member; each stat stacked along the seed dimension."""
        for g in self.gans:
            g.round_images = 0
        return play_round(self.schedule, self._d_step, self._g_step)

    def stats_reader(self, stats: dict[str, torch.Tensor]):
        """`read(i)`: member i's stats as Python numbers (GAN.read_stats' names); the first
        call copies every member's from the device in one transfer."""
        values: list[dict[str, float]] = []

        def read(i: int) -> dict[str, float]:
            if not values:
                scalars = logged_values(stats)
                table = torch.stack([v.detach().float().reshape(len(self.gans))
                                     for v in scalars.values()], dim=1).tolist()
                values.extend(dict(zip(scalars, row, strict=True)) for row in table)
            return values[i]

        return read

    @torch.no_grad()
    def unstack(self, i: int) -> None:
        """Copy member i's networks and Adam state out of the stack into its own GAN."""
        gan = self.gans[i]
        for name, opt_name in (("G", "opt_g"), ("D", "opt_d")):
            net = getattr(gan, name)
            _copy_member(net, *self.state[name], i)
            if name == "G" and self.average is not None:
                _copy_member(gan.average.net, *self.average, i)
                gan.average.updates = self.average_updates
            opt, stacked = getattr(gan, opt_name), self.opts[name]
            for p, sp in zip(net.parameters(), stacked.param_groups[0]["params"], strict=True):
                state = stacked.state.get(sp)
                if state:
                    opt.state[p] = {k: v.clone() if k == "step" else v[i].clone()
                                    for k, v in state.items()}


def _copy_member(net, params: dict, buffers: dict, i: int) -> None:
    """Member i's slice of stacked weights and buffers into its own network."""
    for key, p in net.named_parameters():
        p.copy_(params[key][i])
    for key, b in net.named_buffers():
        b.copy_(buffers[key][i])
