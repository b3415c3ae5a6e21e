"""CUDA graphs for a training round (`train.cuda_graphs=true`).

A small GAN's round on a GPU is dozens of tiny kernels, each launched from Python. A
`GraphedRound` runs the GAN's round eagerly a few times on a side stream (the optimisers
create their state), captures the next round in one CUDA graph (`torch.cuda.graph`), and from
then on replays it: one launch per round. Every round, warm-up and captured ones included, is a
real training round, in order, so a graphed run is the eager run up to float rounding.

A round can be captured when nothing in it is decided on the host while it runs: its random
numbers come from the run's device generators (registered with the graph, so each replay
draws new numbers), Adam keeps its step count on the device (`capturable`), and the data are
drawn fresh on the device. `uncapturable` names what is not: a fixed training set or image
data (their epoch position lives on the host), a plug-in with state updated between steps
(historical averaging), and seeds stacked by fanout.vectorize_seeds. A graph holds the
addresses of the state it was captured with: a Trainer captures anew after each `start`
(after a checkpoint is restored).
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from ganlab.config import ConfigError
from ganlab.gan import GAN

WARMUP_ROUNDS = 3  # eager rounds before the capture (as torch's whole-network example)


def refuse_uncapturable(cfg: DictConfig, device: torch.device) -> None:
    """ConfigError (one line) when `train.cuda_graphs=true` asks for a round this config
    cannot capture."""
    problems = uncapturable(cfg, device) if cfg.train.cuda_graphs else []
    if problems:
        raise ConfigError("train.cuda_graphs=true cannot capture this config's round: "
                          f"{'; '.join(problems)}")


def uncapturable(cfg: DictConfig, device: torch.device) -> list[str]:
    """The settings of `cfg` that keep its round out of a CUDA graph (empty: it can be)."""
    from ganlab.data import DATASETS
    from ganlab.extras import EXTRAS, resolve_options, stateful

    problems = []
    if device.type != "cuda":
        problems.append(f"train.device={cfg.train.device} (runs on {device.type}; CUDA graphs "
                        "need a CUDA device)")
    if DATASETS.choose(cfg.data.name).kind != "toy2d":
        problems.append(f"data={cfg.data.name} (image data are visited in epochs counted on "
                        "the host)")
    elif cfg.data.train_size > 0:
        problems.append(f"data.train_size={cfg.data.train_size} (a fixed training set is "
                        "visited in epochs counted on the host; 0 draws fresh samples)")
    problems += [f"extras.{name} (its state is updated by Python between steps)"
                 for name, options in resolve_options(cfg.extras).items()
                 if EXTRAS[name].active(options) and stateful(EXTRAS[name])]
    if cfg.eval.ema > 0:
        problems.append(f"eval.ema={cfg.eval.ema} (the average's decay warms up by a count "
                        "kept on the host)")
    if len(cfg.fanout.group_seeds) > 1:
        problems.append(f"fanout.group_seeds={list(cfg.fanout.group_seeds)} (stacked seeds are "
                        "not captured yet)")
    return problems


class GraphedRound:
    """`gan.train_step`, captured once in a CUDA graph and replayed (see the module doc).

    Call it where the loop would call `gan.train_step()`; it returns the round's stats (the
    graph's output tensors, overwritten by the next replay: read them before that)."""

    def __init__(self, gan: GAN, warmup: int = WARMUP_ROUNDS):
        self.gan, self.warmup = gan, warmup
        self.rounds = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.stats: dict[str, torch.Tensor] = {}
        self.side = torch.cuda.Stream(device=gan.device)

    def _eager(self) -> dict[str, torch.Tensor]:
        self.side.wait_stream(torch.cuda.current_stream(self.gan.device))
        with torch.cuda.stream(self.side):
            stats = self.gan.train_step()
        torch.cuda.current_stream(self.gan.device).wait_stream(self.side)
        return stats

    def _capture(self) -> None:
        graph = torch.cuda.CUDAGraph()
        for generator in (self.gan.noise, getattr(self.gan.data, "generator", None)):
            if generator is not None and generator.device.type == "cuda":
                graph.register_generator_state(generator)
        # gradients are allocated by the captured backward passes, in the graph's own pool
        self.gan.opt_d.zero_grad(set_to_none=True)
        self.gan.opt_g.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph):
            self.stats = self.gan.train_step()
        self.graph = graph

    def __call__(self) -> dict[str, torch.Tensor]:
        self.rounds += 1
        if self.rounds <= self.warmup:
            return self._eager()
        if self.graph is None:
            self._capture()  # records the round without running it
        self.graph.replay()
        return self.stats
