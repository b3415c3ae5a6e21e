"""`python -m tests.kill_after STEP ARGS...`: `python -m ganlab.train ARGS...` with a SIGKILL
injected right after round STEP's evaluation/checkpoint writes, a real kill at a known
point for the resume tests (the loop itself carries no such hook)."""

from __future__ import annotations

import os
import signal
import sys


def kill_after(step: int) -> None:
    """Make every Trainer of this process SIGKILL it once a write at round >= `step` ends."""
    from ganlab import loop

    write = loop.Trainer.write

    def write_then_die(self, eval_due: bool, ckpt_due: bool) -> None:
        write(self, eval_due, ckpt_due)
        if self.counters.step >= step:
            os.kill(os.getpid(), signal.SIGKILL)

    loop.Trainer.write = write_then_die


if __name__ == "__main__":
    kill_after(int(sys.argv.pop(1)))
    from ganlab.train import main

    main()
