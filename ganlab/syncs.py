"""Count the calls that would block on a GPU, on any device (the CPU included).

On CUDA a host read of a device tensor (`float(t)`, `.item()`, `.tolist()`, `.cpu()`), a
host-to-device copy (`.to(device)` of a CPU tensor, `torch.tensor(data, device=...)`) and
data-dependent shapes (boolean indexing, `nonzero`) each wait for the device. On the CPU
none of them costs anything, so a CPU test cannot time them; `SyncCounter` counts them as
they are called instead. `torch.cuda.set_sync_debug_mode("error")` is the check on a GPU.
"""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager

import torch
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)
from torch.overrides import TorchFunctionMode

# Tensor methods and torch functions that read a tensor's value on the host, or copy one there
HOST_READS = frozenset({
    "item", "__float__", "__int__", "__bool__", "__index__", "__complex__", "tolist",
    "numpy", "cpu", "nonzero", "masked_select", "unique", "unique_consecutive",
    "argwhere", "repeat_interleave",
})
# Tensor construction from host data: a host-to-device copy on a GPU
HOST_WRITES = frozenset({"tensor", "as_tensor", "from_numpy"})
# Methods whose device argument (when one is given) moves a tensor
MOVES = frozenset({"to", "cuda", "copy_", "pin_memory"})


def _names_a_device(args: tuple, kwargs: dict) -> bool:
    if "device" in kwargs:
        return True
    return any(isinstance(a, (torch.device, str)) or (isinstance(a, torch.Tensor))
               for a in args[1:])


def _bool_index(args: tuple) -> bool:
    index = args[1] if len(args) > 1 else None
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts)


class SyncCounter(TorchFunctionMode):
    """A context that counts would-be device synchronisations by the name of the call.

    `with SyncCounter() as syncs: ...` then `syncs.total` and `syncs.calls` (a Counter).
    Calls inside an optimiser's `step()` are not counted: unless fused, torch keeps its step
    counts on the host, where reading them waits for nothing."""

    def __init__(self):
        super().__init__()
        self.calls: Counter[str] = Counter()
        self._quiet = 0
        self._hooks = []

    def __enter__(self):
        def enter(*_):
            self._quiet += 1

        def leave(*_):
            self._quiet -= 1

        self._hooks = [register_optimizer_step_pre_hook(enter),
                       register_optimizer_step_post_hook(leave)]
        return super().__enter__()

    def __exit__(self, *exc):
        for hook in self._hooks:
            hook.remove()
        return super().__exit__(*exc)

    @contextmanager
    def paused(self):
        """Leave a stretch of code uncounted (e.g. an evaluation inside a counted loop)."""
        self._quiet += 1
        try:
            yield
        finally:
            self._quiet -= 1

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self._quiet:
            return func(*args, **kwargs)
        name = getattr(func, "__name__", str(func))
        if name in HOST_READS or name in HOST_WRITES:
            self.calls[name] += 1
        elif name in MOVES and (name != "to" or _names_a_device(args, kwargs)):
            self.calls[name] += 1
        elif name == "__getitem__" and _bool_index(args):
            self.calls["boolean index"] += 1
        return func(*args, **kwargs)
