"""ganlab.optim.Adam: torch's Adam update, without the import of torch._dynamo."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from ganlab.optim import Adam

from .conftest import REPO


def _train(cls, impl: str, steps: int = 6):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 1))
    opt = cls(net.parameters(), lr=1e-2, betas=(0.5, 0.99), fused=impl == "fused" or None,
              foreach=impl == "foreach")
    x = torch.randn(32, 5)
    for i in range(steps):
        if i == steps // 2:  # a checkpoint round trip on the way
            state = opt.state_dict()
            opt = cls(net.parameters(), lr=1e-2, betas=(0.5, 0.99),
                      fused=impl == "fused" or None, foreach=impl == "foreach")
            opt.load_state_dict(state)
        opt.zero_grad(set_to_none=True)
        net(x).square().mean().backward()
        opt.step()
    return net, opt


@pytest.mark.parametrize("impl", ["fused", "foreach", "loop"])
def test_the_update_and_state_are_torch_adams_to_the_bit(impl):
    ours, ours_opt = _train(Adam, impl)
    theirs, theirs_opt = _train(torch.optim.Adam, impl)
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a, b)
    a, b = ours_opt.state_dict(), theirs_opt.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for key in a["state"]:
        assert all(torch.equal(a["state"][key][k], b["state"][key][k]) for k in a["state"][key])


def test_a_training_round_never_imports_torch_dynamo():
    # torch.optim's own guards import it (about a second of every run's start)
    code = """
import sys, torch
from ganlab.assemble import build_gan
from ganlab.configure import compose
gan = build_gan(compose(["logger=none", "train.device=cpu"]), torch.device("cpu"))
for _ in range(3):
    gan.train_step()
gan.load_state_dict(gan.state_dict())
print("torch._dynamo" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"
