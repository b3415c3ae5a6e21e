"""Each trick does what the tutorial says, end to end through the training loop."""

from __future__ import annotations

import json

import pytest
import torch

from ganlab.dstar import fit_dstar
from ganlab.evaluate.modes import nearest_modes
from ganlab.nets.norm import NORMS
from ganlab.result import ResultFile
from ganlab.train import Trainer, run
from tests.helpers import assert_same_tensors, load_weights, run_here, write_fake_fashion

TINY = ["train.steps=2", "train.batch_size=8", "eval.num_samples=64", "eval.grid_size=16",
        "eval.final_num_samples=64", "eval.classifier_epochs=1",
        "norm.ref_batch_size=6"]


def _family(data: str, tmp_path) -> list[str]:
    if data == "ring8":
        return ["data=ring8", "model=mlp"]
    return ["data=fashion_mnist", "model=dcgan", f"data.root={write_fake_fashion(tmp_path)}",
            "data.download=false"]


@pytest.mark.parametrize("data", ["ring8", "fashion"])
@pytest.mark.parametrize("norm", [n for n, spec in NORMS.items() if spec.reference])
def test_reference_and_virtual_norm_train_in_g_and_d(make_cfg, tmp_path, data, norm):
    cfg = make_cfg(*_family(data, tmp_path), *TINY, f"norm.g={norm}", f"norm.d={norm}")
    result = run(cfg, tmp_path / "run")
    assert result["status"] == "completed", result["error"]
    assert result["trick"]["norm.g"] == norm and result["trick"]["norm.ref_batch_size"] == 6
    # the fixed reference inputs are saved with the weights
    weights = load_weights(tmp_path / "run")
    assert weights["G"]["ref_inputs"].shape[0] == 6 and weights["D"]["ref_inputs"].shape[0] == 6


@pytest.mark.parametrize("norm, coupled", [("none", False), ("batch", True),
                                           ("reference", False), ("virtual", False)])
def test_coupling_metric_is_zero_unless_batch_norm(make_cfg, tmp_path, norm, coupled):
    cfg = make_cfg("train.steps=20", "train.batch_size=32", "eval.every=10",
                   "eval.num_samples=100", f"norm.g={norm}")
    result = run(cfg, tmp_path / "run")
    values = [h["metrics"]["eval/coupling"] for h in result["history"]]
    assert len(values) == 2
    if coupled:
        assert min(values) > 0.01
    else:
        assert max(values) < 1e-5


def test_coupling_measurement_leaves_batch_norm_statistics_alone(make_cfg, tmp_path):
    # Same run with evaluation (which measures coupling in train mode) every 5 steps or
    # only at the end: the weights and running statistics must come out identical.
    args = ["train.steps=10", "train.batch_size=32", "norm.g=batch", "eval.num_samples=100"]
    run(make_cfg(*args, "eval.every=5"), tmp_path / "a")
    run(make_cfg(*args, "eval.every=0"), tmp_path / "b")
    assert_same_tensors(load_weights(tmp_path / "a")["G"], load_weights(tmp_path / "b")["G"])


def _follow_rate(trainer: Trainer) -> float:
    labels = torch.arange(8).repeat_interleave(50)
    samples = trainer.gan.generate(400, torch.Generator().manual_seed(1), 400, labels=labels)
    idx, _ = nearest_modes(samples, trainer.data.modes)
    return float((idx == labels).float().mean())


@pytest.mark.parametrize("labels", ["conditional", "auxiliary", "none"])
def test_conditional_samples_follow_the_requested_class(make_cfg, tmp_path, labels):
    # ring8's label is the mode index: a conditional G asked for class k must land on mode k
    cfg = make_cfg(f"labels={labels}", "train.steps=300", "train.batch_size=128",
                   "train.lr_g=1e-3", "train.lr_d=1e-3", "eval.every=0",
                   "eval.num_samples=100", "model.g_width=64", "model.d_width=64")
    trainer = Trainer(cfg, tmp_path / "run", ResultFile(tmp_path / "run" / "result.json"))
    trainer.fit()
    rate = _follow_rate(trainer)
    if labels == "none":  # the control: an unconditional G ignores the request
        assert rate < 0.5
    else:
        assert rate > 0.9


@pytest.mark.parametrize("real_target, fake_target", [(1.0, 0.0), (0.9, 0.0), (0.9, 0.1),
                                                      (0.8, 0.2)])
def test_measured_d_matches_eq15_and_bumps_exactly_when_beta_positive(real_target,
                                                                      fake_target):
    fit = fit_dstar(real_target, fake_target, steps=800, batch=512)
    assert fit.mean_abs_error < 0.01 and fit.max_abs_error < 0.04
    # where p_model >> p_data, D* -> beta: the spurious bump of two-sided smoothing
    assert abs(fit.bump_analytic - fake_target) < 0.01
    assert abs(fit.bump_measured - fit.bump_analytic) < 0.02
    if fake_target > 0:
        assert fit.bump_measured > 0.5 * fake_target
    else:
        assert fit.bump_measured < 0.02


def test_dstar_command_writes_json_and_plot(tmp_path):
    out = run_here("smoothing=two_sided", "--steps", "200", "--out", str(tmp_path),
                  module="ganlab.dstar")
    assert out.returncode == 0, out.stderr
    fit = json.loads((tmp_path / "dstar.json").read_text())
    assert (fit["real_target"], fit["fake_target"]) == (0.9, 0.1)
    assert (tmp_path / "dstar.png").stat().st_size > 10_000
    bad = run_here("smoothing.real_target=0.9", "smoothing.fake_target=0.95", "--out",
                  str(tmp_path / "bad"), module="ganlab.dstar")
    assert bad.returncode == 2 and "smoothing.fake_target=0.95" in bad.stderr
    assert not (tmp_path / "bad").exists()


def test_eq15_study_runs_every_case_into_one_table_and_figure(tmp_path):
    out = run_here("experiment=eq15", "--steps", "60", "--out", str(tmp_path),
                  module="ganlab.dstar")
    assert out.returncode == 0, out.stderr
    doc = json.loads((tmp_path / "dstar.json").read_text())
    assert doc["study"] == "eq15" and doc["steps"] == 60
    assert [(c["real_target"], c["fake_target"]) for c in doc["cases"]] == [
        (1.0, 0.0), (0.9, 0.0), (0.8, 0.0), (0.9, 0.1), (0.7, 0.3)]
    # the analytic bump is beta, whatever the training budget
    assert [round(c["bump_analytic"], 1) for c in doc["cases"]] == [0.0, 0.0, 0.0, 0.1, 0.3]
    table = (tmp_path / "dstar.md").read_text().splitlines()
    assert len(table) == 2 + 5 and table[5].startswith("| 0.9 | 0.1 | ")
    assert (tmp_path / "dstar.png").stat().st_size > 50_000


def test_a_malformed_case_is_named():
    from ganlab.config import ConfigError
    from ganlab.dstar import parse_cases

    assert parse_cases(["0.9,0.1"]) == [(0.9, 0.1)]
    with pytest.raises(ConfigError, match=r"study.cases entry '0.9' is not "
                                          r"'real_target,fake_target'"):
        parse_cases(["0.9"])
    with pytest.raises(ConfigError, match="smoothing.fake_target=0.95 is not allowed"):
        parse_cases(["0.9,0.95"])
