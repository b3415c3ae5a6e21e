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


def test_the_step_never_goes_through_torchs_guard(monkeypatch):
    import torch._dynamo

    torch.optim.Adam(torch.nn.Linear(2, 2).parameters())  # re-wraps torch's Adam.step
    calls = []
    monkeypatch.setattr(torch._dynamo, "graph_break", lambda: calls.append(1))
    net = torch.nn.Linear(2, 2)
    ours, theirs = Adam(net.parameters()), torch.optim.Adam(net.parameters())
    net(torch.ones(1, 2)).sum().backward()
    ours.step()
    assert calls == []
    theirs.step()  # torch's own goes through its guard
    assert calls


def test_the_step_runs_in_the_guards_grad_mode(monkeypatch):
    import ganlab.optim

    seen = []
    monkeypatch.setattr(ganlab.optim, "_STEP", lambda self, closure: seen.append(
        torch.is_grad_enabled()))
    for differentiable in (False, True):
        Adam(torch.nn.Linear(2, 2).parameters(), differentiable=differentiable).step()
    assert seen == [False, True]


@pytest.mark.parametrize(("saved", "now"), [("fused", "foreach"), ("foreach", "fused"),
                                            ("fused", "loop")])
def test_a_resumed_optimiser_keeps_the_kernel_it_was_built_with(saved, now):
    net, opt = _train(Adam, saved)
    state = opt.state_dict()
    resumed = Adam(net.parameters(), lr=1e-2, fused=now == "fused" or None,
                   foreach=now == "foreach")
    resumed.load_state_dict(state)
    group = resumed.param_groups[0]
    assert (group["fused"], group["foreach"]) == (now == "fused" or None, now == "foreach")
    steps = [s["step"] for s in resumed.state.values()]
    assert all(s.device.type == "cpu" and float(s) == 6 for s in steps)
    net(torch.randn(4, 5)).square().mean().backward()
    resumed.step()  # the chosen kernel runs on the restored state
    assert all(float(s["step"]) == 7 for s in resumed.state.values())


def test_an_unchecked_torch_release_keeps_torchs_guards():
    from ganlab.optim import UNGUARDED, unguarded_ok

    assert UNGUARDED  # this torch is one the unguarded calls were checked against
    assert not unguarded_ok("3.0.0") and not unguarded_ok("2.1.0") and not unguarded_ok("x")
    assert unguarded_ok("2.13.0+cpu")
