"""Composition of every config group, and validation errors that name key, value and rule."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ganlab import config as C
from ganlab.config import ConfigError, validate
from ganlab.data import TOY
from ganlab.losses import LOSSES
from ganlab.nets import MODEL_BUILDERS
from ganlab.nets.norm import NORM_LAYERS

REPO = Path(__file__).resolve().parents[1]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml"))


def test_config_groups_match_the_declared_choices():
    assert _options("data") == sorted(C.DATASETS)
    assert _options("model") == sorted(C.MODELS)
    assert _options("loss") == sorted(C.LOSSES)
    assert _options("labels") == sorted(C.LABEL_MODES)
    assert _options("logger") == sorted(C.LOGGERS)
    # and the registries the code builds from agree with them
    assert sorted(LOSSES) == sorted(C.LOSSES)
    assert sorted(MODEL_BUILDERS) == sorted(C.MODELS)
    assert sorted(NORM_LAYERS) == sorted(C.NORMS)


@pytest.mark.parametrize("data", C.DATASETS)
def test_every_data_option_composes_and_validates(make_cfg, data):
    model = "mlp" if data in TOY else "dcgan"
    cfg = make_cfg(f"data={data}", f"model={model}")
    assert cfg.data.name == data
    validate(cfg)


@pytest.mark.parametrize("group", ["loss", "smoothing", "labels", "logger"])
def test_every_option_of_a_group_composes(make_cfg, group):
    for option in _options(group):
        cfg = make_cfg(f"{group}={option}")
        assert cfg[group].name == option
        validate(cfg)


def test_smoothing_presets_carry_alpha_and_beta(make_cfg):
    values = {s: (make_cfg(f"smoothing={s}").smoothing.real_target,
                  make_cfg(f"smoothing={s}").smoothing.fake_target)
              for s in ("none", "one_sided", "two_sided")}
    assert values == {"none": (1.0, 0.0), "one_sided": (0.9, 0.0), "two_sided": (0.9, 0.1)}


def test_defaults_are_the_documented_ones(make_cfg):
    cfg = make_cfg()
    assert (cfg.data.name, cfg.model.name, cfg.loss.name) == ("ring8", "mlp", "non_saturating")
    assert (cfg.norm.g, cfg.norm.d, cfg.labels.name) == ("none", "none", "none")
    assert cfg.eval.num_samples == 2500
    assert C.compose().logger.mode == "offline"  # W&B never needs a login by default


@pytest.mark.parametrize("overrides, key, fragment", [
    (["smoothing.real_target=1.5"], "smoothing.real_target=1.5", "(0, 1]"),
    (["smoothing.real_target=0"], "smoothing.real_target=0", "(0, 1]"),
    (["smoothing.fake_target=-0.1"], "smoothing.fake_target=-0.1", "[0, 1)"),
    (["smoothing.real_target=0.6", "smoothing.fake_target=0.7"],
     "smoothing.fake_target=0.7", "beta must be < 1 - alpha"),
    (["train.d_steps=0"], "train.d_steps=0", ">= 1"),
    (["train.g_steps=0"], "train.g_steps=0", ">= 1"),
    (["model.g_width=-3"], "model.g_width=-3", ">= 1"),
    (["model.d_width=0"], "model.d_width=0", ">= 1"),
    (["train.batch_size=0"], "train.batch_size=0", ">= 1"),
    (["train.lr_d=0"], "train.lr_d=0", "> 0"),
    (["train.betas_g=[0.5,1.0]"], "train.betas_g=[0.5, 1.0]", "[0, 1)"),
    (["norm.g=layer"], "norm.g='layer'", "none, batch"),
    (["norm.d=spectral"], "norm.d='spectral'", "none, batch"),
    (["data.name=celeba"], "data='celeba'", "ring8, grid25, mnist"),
    (["logger.mode=sometimes"], "logger.mode='sometimes'", "offline, online, disabled"),
    (["model=dcgan"], "model='dcgan'", "needs model=mlp"),
    (["data=mnist"], "model='mlp'", "needs model=dcgan"),
    (["train.device=tpu"], "train.device='tpu'", "auto, cpu, cuda"),
    (["norm.g=batch", "train.batch_size=1"], "train.batch_size=1", ">= 2"),
])
def test_validation_errors_name_key_value_and_rule(make_cfg, overrides, key, fragment):
    with pytest.raises(ConfigError) as info:
        validate(make_cfg(*overrides))
    message = str(info.value)
    assert key in message and fragment in message


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ganlab.train", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_cli_invalid_value_exits_nonzero_with_one_line_and_no_traceback(tmp_path):
    out = _cli("smoothing.real_target=1.5", "logger=none", f"hydra.run.dir={tmp_path / 'r'}",
               cwd=REPO)
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert lines == ["ganlab: config error: smoothing.real_target=1.5 is not allowed; "
                     "it is 1 - alpha and must be in (0, 1]"]
    assert "Traceback" not in out.stdout + out.stderr
    # nothing is lost: the refused run still says why in its result.json
    assert '"status": "failed"' in (tmp_path / "r" / "result.json").read_text()


def test_cli_unknown_group_option_lists_the_allowed_ones(tmp_path):
    out = _cli("data=celeba", "logger=none", f"hydra.run.dir={tmp_path / 'r'}", cwd=REPO)
    assert out.returncode != 0
    assert "Could not find 'data/celeba'" in out.stderr
    for name in ("ring8", "grid25", "mnist"):
        assert name in out.stderr
    assert "Traceback" not in out.stderr


def test_cli_wrong_type_names_the_key(tmp_path):
    out = _cli("train.d_steps=abc", "logger=none", f"hydra.run.dir={tmp_path / 'r'}", cwd=REPO)
    assert out.returncode != 0
    assert "train.d_steps" in out.stderr and "Traceback" not in out.stderr
