"""Checks that need a CUDA device (run by `make gpu-check`; skipped elsewhere)."""

from __future__ import annotations

import pytest
import torch

from ganlab.train import run
from tests.helpers import write_fake_fashion

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

TINY = ["train.steps=4", "train.batch_size=16", "eval.num_samples=64", "eval.every=2"]


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_mlp_and_dcgan_train_on_cuda(make_cfg, tmp_path, norm):
    root = write_fake_fashion(tmp_path / "data")
    for overrides in (["data=ring8", "model=mlp"],
                      ["data=fashion_mnist", "model=dcgan", f"data.root={root}"]):
        cfg = make_cfg(*overrides, *TINY, "train.device=cuda", f"norm.g={norm}",
                       f"norm.d={norm}")
        result = run(cfg, tmp_path / overrides[0])
        assert result["status"] == "completed", result["error"]


def test_a_cuda_run_resumes_on_cpu(make_cfg, tmp_path):
    run(make_cfg(*TINY, "train.device=cuda"), tmp_path / "r")
    longer = [a if a != "train.steps=4" else "train.steps=8" for a in TINY]
    result = run(make_cfg(*longer, "train.device=cpu"), tmp_path / "r")
    assert result["status"] == "completed" and result["step"] == 8
    assert [h["step"] for h in result["history"]] == [2, 4, 6, 8]


def test_same_seed_same_latents_on_cpu_and_cuda(make_cfg, tmp_path):
    # z is drawn on the CPU from the run's own stream, so both devices see the same latents
    from ganlab.result import ResultFile
    from ganlab.train import Trainer

    zs = []
    for device in ("cpu", "cuda"):
        cfg = make_cfg(*TINY, f"train.device={device}")
        trainer = Trainer(cfg, tmp_path / device, ResultFile(tmp_path / device / "r.json"))
        zs.append(trainer.gan.sample_z(8).cpu())
    assert torch.equal(zs[0], zs[1])
