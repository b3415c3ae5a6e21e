"""torch's Adam for ganlab: the same update, without importing torch._dynamo, and with the
kernel chosen by this launch rather than by the checkpoint it resumes.

torch.optim guards an optimiser's step, `add_param_group`, `zero_grad` and its state dict
against tracing by torch.compile; each guard imports torch._dynamo on first use, about a
second of every run's start (most of a short run's fixed cost). ganlab compiles no optimiser
step, so `Adam` calls the guarded functions directly (`inspect.unwrap`): the update, its hooks,
the state and the state dict are torch.optim.Adam's own. Where a torch release stops exposing
them (`functools.wraps`' `__wrapped__`), or outside the releases this was checked against
(`CHECKED_TORCH`), Adam keeps torch's guarded methods (`UNGUARDED` is False).

`load_state_dict` keeps the kernel flags (`fused`, `foreach`, `capturable`) this optimiser was
built with, where torch's would take the checkpoint's: `train.optimizer_impl`,
`train.cuda_graphs` and `train.device` may change when a run is relaunched, and the step
count is moved to where the kernel keeps it (the device for fused or capturable, else the CPU).
"""

from __future__ import annotations

import inspect

import torch

KERNEL_FLAGS = ("fused", "foreach", "capturable")
_GUARDED = ("add_param_group", "zero_grad", "state_dict")
# the torch releases whose guarded methods this was checked against; outside them (or where
# the guards are not plain wrappers) Adam keeps torch.optim.Adam's guarded methods
CHECKED_TORCH = ((2, 4), (2, 14))


def unguarded_ok(version: str = torch.__version__) -> bool:
    """Whether calling torch.optim.Adam's methods past their guards is known to be safe in
    torch `version` (and the guards here are plain wrappers)."""
    try:
        major_minor = tuple(int(x) for x in version.split("+")[0].split(".")[:2])
    except ValueError:
        return False
    low, high = CHECKED_TORCH
    wrapped = all(hasattr(getattr(torch.optim.Adam, n), "__wrapped__")
                  for n in (*_GUARDED, "load_state_dict"))
    return low <= major_minor <= high and wrapped


UNGUARDED = unguarded_ok()
# resolved once: creating a torch.optim.Adam re-wraps its class's step (profiling hooks)
_STEP = inspect.unwrap(torch.optim.Adam.__dict__["step"])
_LOAD_STATE_DICT = (inspect.unwrap(torch.optim.Adam.load_state_dict) if UNGUARDED
                    else torch.optim.Adam.load_state_dict)


class Adam(torch.optim.Adam):
    if UNGUARDED:
        def step(self, closure=None):
            # the guard's grad mode (on only for a differentiable optimiser), without its
            # import
            with torch.set_grad_enabled(self.defaults["differentiable"]):
                return _STEP(self, closure)

    def load_state_dict(self, state_dict: dict) -> None:
        kernels = [{k: group[k] for k in KERNEL_FLAGS} for group in self.param_groups]
        _LOAD_STATE_DICT(self, state_dict)
        for group, flags in zip(self.param_groups, kernels, strict=True):
            group.update(flags)
            on_device = bool(group["capturable"] or group["fused"])
            for p in group["params"]:
                state = self.state.get(p)
                if state and torch.is_tensor(state.get("step")):
                    state["step"] = (state["step"].to(dtype=torch.float32, device=p.device)
                                     if on_device else state["step"].to("cpu"))


if UNGUARDED:
    for _name in _GUARDED:
        setattr(Adam, _name, inspect.unwrap(getattr(torch.optim.Adam, _name)))
