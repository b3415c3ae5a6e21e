"""torch's Adam for ganlab: the same update, without importing torch._dynamo.

torch.optim guards an optimiser's step, `add_param_group`, `zero_grad` and its state dict
against tracing by torch.compile; each guard imports torch._dynamo on first use, about a
second of every run's start (most of a short run's fixed cost). ganlab compiles no optimiser
step, so `Adam` calls the guarded functions directly: the update, the state and the state
dict are torch.optim.Adam's own. Where a torch release stops exposing them
(`functools.wraps`' `__wrapped__`), the guarded methods are used as they are.
"""

from __future__ import annotations

import torch
from torch.optim.optimizer import Optimizer

_GUARDED = ("add_param_group", "zero_grad", "state_dict", "load_state_dict")


class Adam(torch.optim.Adam):
    def step(self, closure=None):
        unguarded = getattr(torch.optim.Adam.step, "__wrapped__", None)
        if unguarded is None:
            return super().step(closure)
        with torch.no_grad():  # what the guard sets (the step is not differentiable here)
            return unguarded(self, closure)


for _name in _GUARDED:
    _unguarded = getattr(getattr(Optimizer, _name), "__wrapped__", None)
    if _unguarded is not None:
        setattr(Adam, _name, _unguarded)
